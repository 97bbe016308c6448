// The seam between flotilla's control plane and Raft (design principle 4, after swarmkit's
// proposer.go). API handlers, the scheduler and the control loops hand commands to a
// `Proposer`; the Raft-backed implementation (elsewhere) encodes them, proposes them, waits
// until the entry is committed and applied, and resolves with the state machine's result.
// ClusterState never sees Raft, and tests can drive everything with `LocalProposer`.
//
// Pure module: no IO, no clocks, no timers.

import { FlotillaError } from '../protocol/errors.js';
import type { ApplyResult, ClusterState, Command } from './state.js';

export interface ProposeOptions {
  /** Give up waiting (the command may still commit later: callers must be idempotent). */
  signal?: AbortSignal;
}

export interface Proposer {
  /**
   * Replicate `cmd` and resolve with the result of applying it (`{ ok: false }` results are
   * resolved, not thrown). Rejects with a FlotillaError: `not_leader` when this manager cannot
   * propose, `unavailable`/`timeout` when the outcome is unknown, or when `signal` aborts.
   *
   * Leader decisions must carry `term: proposer.term()` as read when they were decided.
   */
  propose(cmd: Command, opts?: ProposeOptions): Promise<ApplyResult>;
  /** Whether this manager is the leader right now. */
  isLeader(): boolean;
  /** The current term (what leader decisions are tagged with). */
  term(): number;
}

/**
 * A Proposer that applies straight to a ClusterState, as if it were the leader of a one-node
 * log: entry indexes follow `state.appliedIndex`, every entry gets `term`. For tests and
 * single-process tools; `setTerm`/`setLeader` simulate elections and deposed leaders.
 */
export class LocalProposer implements Proposer {
  private currentTerm: number;
  private leader = true;

  constructor(
    private readonly state: ClusterState,
    term = 1,
  ) {
    this.currentTerm = term;
  }

  async propose(cmd: Command, opts: ProposeOptions = {}): Promise<ApplyResult> {
    if (opts.signal?.aborted === true) {
      throw new FlotillaError('unavailable', 'Cannot propose as the request was aborted', { cause: opts.signal.reason });
    }
    if (!this.leader) throw new FlotillaError('not_leader', 'Cannot propose as this manager is not the leader', { leader: null });
    return this.state.apply(cmd, { index: this.state.appliedIndex + 1, term: this.currentTerm });
  }

  isLeader(): boolean {
    return this.leader;
  }

  term(): number {
    return this.currentTerm;
  }

  setTerm(term: number): void {
    this.currentTerm = term;
  }

  setLeader(leader: boolean): void {
    this.leader = leader;
  }
}
