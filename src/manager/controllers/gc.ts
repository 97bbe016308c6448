// Garbage collection of finished tasks: the leader removes finished (terminal) tasks beyond the
// newest `keep`, and any that finished more than `maxAgeMs` ago. Never a task that runs, waits
// for a node, or whose restart is pending, nor a service's task (services prune their own old
// tasks). Each round proposes at most `batch` removals as one fenced `tasks.gc` entry; a
// backlog is worked off a batch per round, `busyIntervalMs` apart, so no entry is huge and the
// log is never flooded. Every replica re-checks each listed task when the entry is applied.
//
// "Finished at" is the task's `updatedAt` (the wall time of its last change, replicated).
import type { Task } from '../state.js';
import { isTerminal, removeRefusal } from '../state.js';
import type { LeaderService, LeaderTerm, Logger, StateView } from '../ports.js';
import { systemTimers, wallNow, type Timers } from '../../clock.js';

export interface TaskGcOptions {
  /** Finished tasks kept (the newest ones); default 1000. */
  gcKeep?: number;
  /** Finished tasks older than this are removed whatever their number; 0 = never. Default 24 h. */
  gcMaxAgeMs?: number;
  /** How often the leader looks; default 10 s. */
  gcIntervalMs?: number;
  /** Most removals per log entry; default 500. */
  gcBatch?: number;
}

export const GC_DEFAULTS = { gcKeep: 1000, gcMaxAgeMs: 24 * 3_600_000, gcIntervalMs: 10_000, gcBatch: 500 } as const;

/** The tasks garbage collection would remove now, oldest first (pure; for the controller and tests). */
export function gcCandidates(tasks: readonly Task[], now: number, keep: number, maxAgeMs: number): Task[] {
  const finished = tasks.filter((t) => isTerminal(t.state) && removeRefusal(t) === undefined);
  finished.sort((a, b) => a.updatedAt - b.updatedAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const excess = Math.max(0, finished.length - keep);
  return finished.filter((t, i) => i < excess || (maxAgeMs > 0 && now - t.updatedAt >= maxAgeMs));
}

export class TaskGc implements LeaderService {
  readonly name = 'gc';
  private stopTimer: (() => void) | null = null;
  private busy = false;
  private readonly o: Required<TaskGcOptions>;

  constructor(
    private readonly d: { state: StateView; lead: LeaderTerm; log: Logger; timers?: Timers },
    o: TaskGcOptions = {},
  ) {
    this.o = {
      gcKeep: o.gcKeep ?? GC_DEFAULTS.gcKeep,
      gcMaxAgeMs: o.gcMaxAgeMs ?? GC_DEFAULTS.gcMaxAgeMs,
      gcIntervalMs: o.gcIntervalMs ?? GC_DEFAULTS.gcIntervalMs,
      gcBatch: Math.max(1, o.gcBatch ?? GC_DEFAULTS.gcBatch),
    };
  }

  start(): void {
    this.stop();
    this.schedule(this.o.gcIntervalMs);
  }

  caughtUp(): void {}

  stop(): void {
    this.stopTimer?.();
    this.stopTimer = null;
  }

  private schedule(ms: number): void {
    this.stopTimer?.();
    this.stopTimer = (this.d.timers ?? systemTimers).after(ms, () => {
      this.stopTimer = null;
      void this.round().then((more) => {
        if (this.d.lead.term() !== null) this.schedule(more ? Math.min(200, this.o.gcIntervalMs) : this.o.gcIntervalMs);
      });
    });
  }

  /** One round: propose one batch; true when more is left to remove. */
  private async round(): Promise<boolean> {
    if (this.busy || this.d.lead.term() === null || !this.d.lead.caughtUp()) return false;
    const due = gcCandidates(this.d.state.listTasks({}), wallNow(), this.o.gcKeep, this.o.gcMaxAgeMs);
    if (due.length === 0) return false;
    const ids = due.slice(0, this.o.gcBatch).map((t) => t.id);
    this.busy = true;
    try {
      const r = (await this.d.lead.decide((term) => [{ type: 'tasks.gc', ids, term, at: wallNow() }])) as { removed?: string[] } | undefined;
      if (r?.removed !== undefined && r.removed.length > 0) this.d.log.info('removed finished tasks', { count: r.removed.length, left: due.length - ids.length });
      return r !== undefined && due.length > ids.length;
    } finally {
      this.busy = false;
    }
  }
}
