// Restarts: the leader restarts tasks that ended and whose restart policy asks for it, once
// their backoff has passed, and reschedules at once (whatever the policy, not counted as a
// restart) the work lost with a node that went down. Each restart is a fenced decision
// (`task.restart`); placement then puts the task on a node.
import type { Task } from '../state.js';
import { restartBackoff } from '../state.js';
import type { LeaderService, LeaderTerm, StateView } from '../ports.js';
import { monoNow, wallNow } from '../../clock.js';

export class Restarts implements LeaderService {
  readonly name = 'restarts';
  /** Monotonic due time of each restart waiting out its backoff, by `taskId:attempt:nextRestartAt`. */
  private restartDue = new Map<string, number>();
  private inflight = new Set<string>();
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly d: { state: StateView; lead: LeaderTerm }) {}

  start(): void {
    this.stop();
    this.timer = setInterval(() => this.loop(), 200);
    this.timer.unref();
  }

  caughtUp(): void {}

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.restartDue.clear();
  }

  /** This process could not run for `ms`: backoffs wait that much longer (see the node monitor). */
  creditStall(ms: number): void {
    for (const [k, t] of this.restartDue) this.restartDue.set(k, t + ms);
  }

  /**
   * When a restart's backoff ends, on this leader's monotonic clock. The replicated
   * `nextRestartAt` is a wall-clock timestamp from the command that ended the attempt; the
   * remaining wait is read from it once (bounded by the policy's backoff, so a stepped wall
   * clock can shorten or lengthen no wait beyond it) and then counted monotonically.
   */
  private dueAt(t: Task, now: number): number {
    const key = `${t.id}:${t.attempt}:${t.nextRestartAt}`;
    let due = this.restartDue.get(key);
    if (due === undefined) {
      const backoff = restartBackoff(t.spec.restart, t.restarts);
      const remaining = Math.min(backoff, Math.max(0, t.nextRestartAt! - wallNow()));
      due = now + remaining;
      this.restartDue.set(key, due);
    }
    return due;
  }

  private loop(): void {
    if (this.d.lead.term() === null || !this.d.lead.caughtUp()) return;
    const now = monoNow();
    // Work lost with its node is rescheduled at once, whatever the restart policy: the task
    // did not fail, its node did (this does not count as a restart).
    for (const t of this.d.state.listTasks({ state: 'lost', desired: 'running' })) {
      const key = `restart:${t.id}:${t.attempt}`;
      if (this.inflight.has(key)) continue;
      this.inflight.add(key);
      void this.d.lead.decide((term) => [{ type: 'task.restart', taskId: t.id, term, at: wallNow(), force: true, reason: `rescheduled: ${t.reason}` }]).finally(() => this.inflight.delete(key));
    }
    const waiting = new Set<string>();
    for (const t of this.d.state.tasksAwaitingRestart()) {
      if (t.state === 'lost') continue;
      if (t.nextRestartAt === undefined) continue;
      waiting.add(`${t.id}:${t.attempt}:${t.nextRestartAt}`);
      if (this.dueAt(t, now) > now) continue;
      const key = `restart:${t.id}:${t.attempt}`;
      if (this.inflight.has(key)) continue;
      this.inflight.add(key);
      void this.d.lead.decide((term) => [{ type: 'task.restart', taskId: t.id, term, at: wallNow() }]).finally(() => this.inflight.delete(key));
    }
    for (const k of this.restartDue.keys()) if (!waiting.has(k)) this.restartDue.delete(k);
  }
}
