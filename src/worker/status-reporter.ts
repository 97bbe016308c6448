// Status reporting: what the worker tells the leader about its tasks. Changes are batched —
// at most one `status` frame per `batchMs` (50 ms) — and kept (the latest per task) while no
// session is welcomed; a new session's `register` carries every task, so what it carries is
// dropped from the batch.

import type { TaskStatusReport } from '../protocol/session.js';
import type { DriverTaskStatus } from './driver.js';
import { monoNow, wallNow, type Timers } from '../clock.js';
import { nodeTimers } from './ports.js';

/** The report of a task as the agent holds it. */
export function reportOf(t: { taskId: string; attempt: number; status: DriverTaskStatus; health?: TaskStatusReport['health'] }): TaskStatusReport {
  const s = t.status;
  const r: TaskStatusReport = { taskId: t.taskId, attempt: t.attempt, state: s.state, at: wallNow() };
  if (s.reason !== undefined) r.reason = s.reason.slice(0, 4096);
  if (s.exitCode !== undefined) r.exitCode = s.exitCode;
  if (s.detail !== undefined) r.detail = s.detail.slice(0, 4096);
  if (t.health !== undefined) r.health = t.health;
  if (s.ports !== undefined && s.ports.length > 0) r.ports = s.ports.map((p) => ({ ...p }));
  return r;
}

/** Reports per frame: keeps frames far below the session frame bound. */
const REPORTS_PER_FRAME = 500;

export interface StatusReporterOptions {
  batchMs: number;
  /** Whether the worker is closing (nothing is scheduled any more). */
  closed: () => boolean;
  /**
   * Where to send now: a function sending one `status` frame's reports (false: the session
   * ended), or null while no session is welcomed (reports are kept).
   */
  channel: () => ((reports: TaskStatusReport[]) => boolean) | null;
  /** Default: Node timers. */
  timers?: Timers;
}

export class StatusReporter {
  private readonly pending = new Map<string, TaskStatusReport>();
  private flushTimer: (() => void) | null = null;
  private lastFlush = 0;
  private readonly opts: StatusReporterOptions;

  constructor(opts: StatusReporterOptions) {
    this.opts = opts;
  }

  /** Queue a report (replacing an unsent one of the same task); sent within the batch window. */
  queue(r: TaskStatusReport): void {
    this.pending.set(r.taskId, r);
    if (this.flushTimer !== null || this.opts.closed()) return;
    const wait = Math.max(0, this.lastFlush + this.opts.batchMs - monoNow());
    this.flushTimer = (this.opts.timers ?? nodeTimers).after(wait, () => {
      this.flushTimer = null;
      this.flush();
    });
  }

  /** Forget a task's unsent report (a register carries it, or the task left the scope). */
  drop(taskId: string): void {
    this.pending.delete(taskId);
  }

  /** Send what is pending, if a session is welcomed (else it is kept until one is). */
  flush(): void {
    const send = this.opts.channel();
    if (send === null || this.pending.size === 0) return; // kept until welcomed
    const reports = [...this.pending.values()];
    this.pending.clear();
    this.lastFlush = monoNow();
    for (let i = 0; i < reports.length; i += REPORTS_PER_FRAME) {
      if (!send(reports.slice(i, i + REPORTS_PER_FRAME))) return;
    }
  }

  /** Stop the batch timer. */
  close(): void {
    if (this.flushTimer !== null) this.flushTimer();
    this.flushTimer = null;
  }
}
