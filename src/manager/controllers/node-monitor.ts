// The node monitor: the leader declares a worker node down when it has not heard from it for
// the node grace (`node.down`, fenced by term; the state machine marks its running work lost,
// which the restart controller reschedules elsewhere). A node this leader has not heard from
// since it took over gets the longer failover grace, counted from when the leader caught up: a
// leader change alone never takes healthy work down. Time this process could not run (blocked
// event loop, SIGSTOP) is nobody's silence: every grace is moved forward by such a stall.
import type { LeaderService, LeaderTerm, StateView } from '../ports.js';
import type { Logger } from '../../log.js';
import { monoNow, StallDetector, wallNow } from '../../clock.js';

export interface NodeMonitorOptions {
  /** A ready node that has not sent a heartbeat for this long is declared down (ms). */
  nodeGraceMs?: number;
  /** After a leader change, how long a node has to reconnect before it is declared down (ms). */
  failoverGraceMs?: number;
}

/** What the monitor needs of the worker sessions (the dispatcher). */
export interface Heartbeats {
  /** Monotonic ms this leader last heard from the node (undefined: not since it took over). */
  lastHeard(nodeId: string): number | undefined;
  /** Ends the node's session, if it has one. */
  endSession(nodeId: string, code: number, reason: string): void;
}

/** Period of the node monitor (and of the stall check it carries). */
const MONITOR_MS = 250;

export class NodeMonitor implements LeaderService {
  readonly name = 'node-monitor';
  /** Notices when this process could not run (event-loop block, SIGSTOP): that time is not a worker's silence. */
  private readonly stalls = new StallDetector(MONITOR_MS);
  private leaderSince = 0;
  private timer: NodeJS.Timeout | null = null;
  private inflight = new Set<string>();
  private readonly nodeGraceMs: number;
  private readonly failoverGraceMs: number;

  constructor(
    private readonly d: {
      state: StateView;
      lead: LeaderTerm;
      heartbeats: Heartbeats;
      log: Logger;
      /** Told each stall found, before any grace is measured (credits heartbeats and backoffs). */
      onStall?: (ms: number) => void;
    },
    opts: NodeMonitorOptions = {},
  ) {
    this.nodeGraceMs = opts.nodeGraceMs ?? 5000;
    this.failoverGraceMs = opts.failoverGraceMs ?? Math.max(10_000, this.nodeGraceMs);
  }

  start(): void {
    this.stop();
    this.leaderSince = monoNow();
    this.stalls.reset();
    this.timer = setInterval(() => this.check(), MONITOR_MS);
    this.timer.unref();
  }

  caughtUp(): void {
    // The failover grace starts now: from here on this leader can serve sessions.
    this.leaderSince = monoNow();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private check(): void {
    // Time this process could not run is nobody's silence: every node's clock (and the
    // failover grace) is moved forward by it, so a grace counts only time in which this leader
    // could have heard the node.
    const stalled = this.stalls.check();
    if (stalled > 0) this.creditStall(stalled);
    if (this.d.lead.term() === null || !this.d.lead.caughtUp()) return;
    const now = monoNow();
    for (const n of this.d.state.listNodes()) {
      if (n.status === 'down') continue;
      // A node this leader has not heard from yet is measured from when it took over, with the
      // (longer) failover grace: a leader change alone never takes healthy work down.
      const heard = this.d.heartbeats.lastHeard(n.id);
      const since = heard ?? this.leaderSince;
      const grace = heard === undefined ? Math.max(this.nodeGraceMs, this.failoverGraceMs) : this.nodeGraceMs;
      if (now - since <= grace) continue;
      const key = `down:${n.id}`;
      if (this.inflight.has(key)) continue;
      this.inflight.add(key);
      const reason = `no heartbeat for ${Math.round((now - since) / 1000)} s`;
      this.d.log.warn(`node ${n.id} is down: ${reason}`);
      void this.d.lead.decide((term) => [{ type: 'node.down', id: n.id, reason, term, at: wallNow() }]).finally(() => this.inflight.delete(key));
      this.d.heartbeats.endSession(n.id, 4010, 'declared down');
    }
  }

  private creditStall(ms: number): void {
    const now = monoNow();
    this.d.log.warn('this manager could not run; node graces extended by the stall', { stalledMs: Math.round(ms) });
    this.d.onStall?.(ms);
    this.leaderSince = Math.min(now, this.leaderSince + ms);
  }
}
