// Watches who leads: polls every manager's /v1/status (real addresses, outside the fault model)
// and records each new (leader, term) it sees.
import type { ChaosCluster } from './cluster.js';
import { sleep } from './cluster.js';

export interface LeaderObservation {
  /** Harness clock (ms since the run started). */
  at: number;
  leader: string;
  term: number;
}

export class LeaderMonitor {
  readonly observed: LeaderObservation[] = [];
  private current: { leader: string; term: number; starts: number } | null = null;

  constructor(
    private readonly cluster: ChaosCluster,
    private readonly clock: () => number,
    private readonly everyMs = 200,
  ) {}

  /** The last leader seen, if that same process is still up (not paused, killed or restarted). */
  leader(): string | null {
    const c = this.current;
    return c !== null && this.cluster.isUp(c.leader) && this.cluster.node(c.leader).starts === c.starts ? c.leader : null;
  }

  /** Polls now, then answers like leader(). */
  async freshLeader(): Promise<string | null> {
    await this.poll();
    return this.leader();
  }

  /** New leadership terms seen after the first one. */
  get changes(): number {
    return Math.max(0, this.observed.length - 1);
  }

  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      await this.poll();
      await sleep(this.everyMs, signal);
    }
  }

  async poll(): Promise<void> {
    const ids = this.cluster.managerIds.filter((m) => this.cluster.isUp(m));
    const sts = await Promise.all(ids.map((m) => this.cluster.status(m, 300)));
    const starts = ids.map((m) => this.cluster.node(m).starts);
    let best: { leader: string; term: number; starts: number } | null = null;
    for (let i = 0; i < sts.length; i++) {
      const s = sts[i];
      if (!s || s.id !== ids[i] || s.role !== 'leader') continue;
      if (best === null || s.term > best.term) best = { leader: s.id, term: s.term, starts: starts[i]! };
    }
    if (best === null) return;
    const c = this.current;
    if (c !== null && best.term < c.term) return; // a stale leader that has not noticed yet
    if (c === null || c.term !== best.term || c.leader !== best.leader) this.observed.push({ at: this.clock(), leader: best.leader, term: best.term });
    this.current = best;
  }
}
