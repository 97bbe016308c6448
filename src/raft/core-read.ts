// Linearizable reads of the Raft core (etcd's read_only): the leader's queue of ReadIndex
// requests waiting for a quorum of heartbeat acknowledgements, and those that arrived before it
// committed an entry of its term. Pure: no IO.
import type { NodeId } from './types.js';

export interface PendingRead {
  context: string;
  index: number;
  /** Where the answer goes: this node, or a follower that forwarded the request. */
  from: NodeId;
  acks: Set<NodeId>;
}

export interface DeferredRead {
  context: string;
  from: NodeId;
}

export class ReadQueue {
  private pending: PendingRead[] = [];
  /** ReadIndex requests that arrived before the leader committed an entry in its term. */
  private deferred: DeferredRead[] = [];

  /** The newest pending read's context (heartbeats carry it), if any. */
  lastContext(): string | undefined {
    return this.pending.length > 0 ? this.pending[this.pending.length - 1]!.context : undefined;
  }

  add(r: PendingRead): void {
    this.pending.push(r);
  }

  defer(r: DeferredRead): void {
    this.deferred.push(r);
  }

  hasDeferred(): boolean {
    return this.deferred.length > 0;
  }

  /** Hands back (and forgets) the deferred requests. */
  takeDeferred(): DeferredRead[] {
    const reads = this.deferred;
    this.deferred = [];
    return reads;
  }

  /**
   * `from` acknowledged the heartbeat that carried `context`. Once the members for which
   * `counts` holds reach `quorum` acknowledgements, that read and every earlier one are
   * confirmed: they are removed and returned (oldest first).
   */
  ack(context: string, from: NodeId, counts: (id: NodeId) => boolean, quorum: number): PendingRead[] {
    const at = this.pending.findIndex((r) => r.context === context);
    if (at < 0) return [];
    const r = this.pending[at]!;
    if (counts(from)) r.acks.add(from);
    let n = 0;
    for (const id of r.acks) if (counts(id)) n++;
    if (n < quorum) return [];
    return this.pending.splice(0, at + 1);
  }

  /** Drops the pending reads (a new leadership; the deferred ones stay). */
  clearPending(): void {
    this.pending = [];
  }

  /** Drops everything (stepping down). */
  clear(): void {
    this.pending = [];
    this.deferred = [];
  }
}
