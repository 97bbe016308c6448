// Waiting for the Raft leader to change, without polling. A write that reaches a follower while
// there is no leader (or while the known one is dead) waits here and goes on the moment the
// node reports a new leader: polling every 20–50 ms added that much to a failover.

export class LeaderChange {
  private readonly waiters = new Set<() => void>();

  /** The node reported a leader change (to another leader or to none). */
  fire(): void {
    if (this.waiters.size === 0) return;
    const ws = [...this.waiters];
    this.waiters.clear();
    for (const w of ws) w();
  }

  /** Resolves at the next leader change, or after `ms` at the latest. */
  wait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, ms));
      this.waiters.add(done);
    });
  }

  /** Writes waiting (for metrics and tests). */
  get waiting(): number {
    return this.waiters.size;
  }
}
