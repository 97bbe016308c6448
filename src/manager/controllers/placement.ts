// Placement: the scheduler loop on the leader. Pending tasks are placed by `schedule`
// (scheduler.ts: filters and scores nodes, pure) and the placements proposed as one fenced
// decision; tasks that fit nowhere get their reason recorded (`task.pending`). It runs when a
// task becomes pending (created, restarted, lost work re-queued), when a node registers or
// changes, and every second.
import { ingressPorts } from '../../protocol/service.js';
import type { SingleCommand } from '../state.js';
import { schedule } from '../scheduler.js';
import type { LeaderService, LeaderTerm, StateView } from '../ports.js';
import { systemTimers, wallNow, type Timers } from '../../clock.js';

export interface PlacementOptions {
  /** Placement strategy. */
  strategy?: 'spread' | 'binpack';
}

export class Placement implements LeaderService {
  readonly name = 'placement';
  private scheduling = false;
  private scheduleAgain = false;
  private timer: (() => void) | null = null;
  private unsubscribe: (() => void) | null = null;
  private readonly strategy: 'spread' | 'binpack';
  /** Why each pending task could not be placed (leader memory; also proposed to the log). */
  private lastUnplaced = new Map<string, string>();

  constructor(
    private readonly d: { state: StateView; lead: LeaderTerm; timers?: Timers },
    opts: PlacementOptions = {},
  ) {
    this.strategy = opts.strategy ?? 'spread';
  }

  start(): void {
    this.stop();
    this.timer = (this.d.timers ?? systemTimers).every(1000, () => this.kick());
    this.unsubscribe = this.d.state.onEvent((ev) => {
      if (ev.type === 'task.created' || (ev.type === 'task.updated' && (ev.task.state === 'pending' || ev.change === 'restart'))) this.kick();
      if (ev.type === 'node.updated' || ev.type === 'node.registered') this.kick();
    });
  }

  caughtUp(): void {
    this.kick();
  }

  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = null;
    this.timer?.();
    this.timer = null;
    this.lastUnplaced.clear();
  }

  /** Why a pending task is not placed, as this leader last found (undefined: not known here). */
  unplacedReason(taskId: string): string | undefined {
    return this.lastUnplaced.get(taskId);
  }

  /** Runs the scheduler soon (coalesced: a run in progress runs once more). */
  kick(): void {
    if (this.d.lead.term() === null || !this.d.lead.caughtUp()) return;
    if (this.scheduling) {
      this.scheduleAgain = true;
      return;
    }
    this.scheduling = true;
    (this.d.timers ?? systemTimers).soon(() => void this.run());
  }

  private async run(): Promise<void> {
    const st = this.d.state;
    try {
      do {
        this.scheduleAgain = false;
        if (this.d.lead.term() === null) return;
        const pending = st.pendingTasks();
        if (pending.length === 0) {
          this.lastUnplaced.clear();
          continue;
        }
        const nodes = st.listNodes();
        // The routing mesh holds every ingress-published port on every worker: no task may take one as a host port.
        const meshPorts = st.listServices().flatMap((svc) => ingressPorts(svc.spec).map((p) => `${p.published}/${p.protocol}`));
        const usage = new Map(nodes.map((n) => [n.id, withPorts(st.nodeUsage(n.id), meshPorts)]));
        const plan = schedule(pending, nodes, usage, { strategy: this.strategy, volumePlacement: (t) => st.volumePlacement(t.spec.volumes) });
        this.lastUnplaced = new Map(plan.unplaced.map((u) => [u.taskId, u.reason]));
        const reasons = plan.unplaced.filter((u) => st.getTask(u.taskId)?.reason !== u.reason);
        const cmds: SingleCommand[] = [];
        if (plan.placements.length > 0) cmds.push({ type: 'task.assign', placements: plan.placements, term: 0, at: wallNow() });
        if (reasons.length > 0) cmds.push({ type: 'task.pending', items: reasons.map((u) => ({ taskId: u.taskId, reason: u.reason })), term: 0, at: wallNow() });
        if (cmds.length === 0) continue;
        await this.d.lead.decide((term) => cmds.map((c) => ({ ...c, term }) as SingleCommand));
      } while (this.scheduleAgain);
    } finally {
      this.scheduling = false;
    }
  }
}

/** A node's usage with `extra` host ports counted as taken. */
function withPorts<U extends { hostPorts: string[] }>(u: U, extra: string[]): U {
  return extra.length === 0 ? u : { ...u, hostPorts: [...u.hostPorts, ...extra] };
}
