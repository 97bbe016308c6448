// Safety and liveness checkers for the Raft simulator. Pure and cheap: each hook is O(1) or
// O(entries touched), except the leader-completeness scan which runs once per election.
//
// Every checker reports through a `Report` callback, so each one can be driven directly with a
// fabricated trace (see test/sim.test.ts) and shown able to fail.
import { hashNum, hashString } from './prng.js';
import type { NodeId } from '../types.js';

export type Property =
  | 'election-safety'
  | 'log-matching'
  | 'leader-completeness'
  | 'state-machine-safety'
  | 'linearizable-reads'
  | 'durability'
  | 'commit-quorum'
  | 'leader-match'
  | 'append-commit'
  | 'liveness'
  | 'exception';

export interface Violation {
  property: Property;
  seed: number;
  tick: number;
  detail: string;
}

export type Report = (property: Property, detail: string) => void;

/** A printable, comparable key for an entry's payload: `<type>:<data as latin1>`. */
export function entryKey(type: number, data: Uint8Array): string {
  if (data.length === 0) return type === 0 ? '0:' : `${type}:`;
  let s = `${type}:`;
  // Payloads in the simulator are short ASCII/JSON strings.
  for (let i = 0; i < data.length; i++) s += String.fromCharCode(data[i]!);
  return s;
}

/** The state-machine hash chain: state after applying (index, term, key) on top of `h`. */
export function chainHash(h: number, index: number, term: number, key: string): number {
  return hashString(key, hashNum(hashNum(h, index), term));
}

// ------------------------------------------------------------------ election safety

/** At most one leader per term. */
export class ElectionSafety {
  readonly leaders = new Map<number, NodeId>();
  constructor(private readonly report: Report) {}

  onLeader(node: NodeId, term: number): void {
    const prev = this.leaders.get(term);
    if (prev === undefined) this.leaders.set(term, node);
    else if (prev !== node) this.report('election-safety', `term ${term} has two leaders: ${prev} and ${node}`);
  }
}

// ------------------------------------------------------------------ log matching

/**
 * Log matching, checked inductively on every entry any node persists: an entry (index, term)
 * is created once by the leader of `term`, so over all time and all nodes it must always carry
 * the same payload and follow an entry with the same term. By induction on the index, two logs
 * holding the same (index, term) are then identical up to it.
 */
export class LogMatching {
  private readonly seen = new Map<number, { key: string; prevTerm: number; node: NodeId }>();
  constructor(private readonly report: Report) {}

  /** `prevTerm`: term of the entry at index-1 in the same log (snapshot term at the boundary, 0 at index 1). */
  onPersist(node: NodeId, index: number, term: number, prevTerm: number, key: string): void {
    const k = index * 1_000_003 + term;
    const s = this.seen.get(k);
    if (s === undefined) {
      this.seen.set(k, { key, prevTerm, node });
      return;
    }
    if (s.key !== key) {
      this.report('log-matching', `entry (${index}, term ${term}) differs: ${s.node} has ${trunc(s.key)}, ${node} has ${trunc(key)}`);
    } else if (s.prevTerm !== prevTerm) {
      this.report(
        'log-matching',
        `entry (${index}, term ${term}) follows term ${s.prevTerm} on ${s.node} but term ${prevTerm} on ${node}`,
      );
    }
  }
}

// ------------------------------------------------------------------ leader completeness

/**
 * Every entry committed by the leader of term U is in the log of every leader of a term > U.
 * Leaders report their commit index (with the term of each newly committed entry, read from
 * their own log); when a node becomes leader of term T its log is checked against everything
 * committed by leaders of terms < T.
 */
export class LeaderCompleteness {
  /** Per index: term of the committed entry, and the smallest leader term that committed it. */
  readonly entryTerm: number[] = [];
  readonly byTerm: number[] = [];
  maxCommitted = 0;
  constructor(private readonly report: Report) {}

  onCommit(leader: NodeId, leaderTerm: number, index: number, entryTerm: number): void {
    const t = this.entryTerm[index];
    if (t === undefined) {
      this.entryTerm[index] = entryTerm;
      this.byTerm[index] = leaderTerm;
      if (index > this.maxCommitted) this.maxCommitted = index;
      return;
    }
    if (t !== entryTerm) {
      this.report(
        'state-machine-safety',
        `index ${index} committed with term ${t} (by the leader of term ${this.byTerm[index]}) and with term ${entryTerm} (by ${leader}, leader of term ${leaderTerm})`,
      );
    }
    if (leaderTerm < this.byTerm[index]!) this.byTerm[index] = leaderTerm;
  }

  /**
   * `termAt(i)`: the new leader's log (undefined = missing); entries at or below `snapIndex`
   * are covered by its snapshot (their content is checked by the state machine hash).
   */
  onLeader(leader: NodeId, term: number, snapIndex: number, snapTerm: number, termAt: (i: number) => number | undefined): void {
    for (let i = Math.max(1, snapIndex); i <= this.maxCommitted; i++) {
      const t = this.entryTerm[i];
      if (t === undefined || this.byTerm[i]! >= term) continue;
      const have = i === snapIndex ? snapTerm : termAt(i);
      if (have !== t) {
        this.report(
          'leader-completeness',
          `${leader} became leader of term ${term} without entry (${i}, term ${t}) committed by the leader of term ${this.byTerm[i]} (it has ${have === undefined ? 'nothing' : `term ${have}`} there)`,
        );
        return;
      }
    }
  }
}

// ------------------------------------------------------------------ state machine safety

/**
 * Every node applies a prefix of one global history: the first application of an index fixes
 * it; any later application (by any node) must match. Applications must be contiguous, and a
 * snapshot restored on a node must carry the hash of the global history at its index.
 */
export class StateMachineSafety {
  readonly terms: number[] = [0];
  readonly keys: string[] = [''];
  readonly firstBy: NodeId[] = [''];
  /** hashes[i] = chain hash of history 1..i (defined while the history is gap-free). */
  readonly hashes: number[] = [0];
  constructor(private readonly report: Report) {}

  get length(): number {
    return this.keys.length - 1;
  }

  /** `prevApplied`: the node's applied index before this entry. */
  onApply(node: NodeId, prevApplied: number, index: number, term: number, key: string): void {
    if (index !== prevApplied + 1) {
      this.report('state-machine-safety', `${node} applied index ${index} right after ${prevApplied}`);
      return;
    }
    const k = this.keys[index];
    if (k === undefined) {
      this.terms[index] = term;
      this.keys[index] = key;
      this.firstBy[index] = node;
      this.extendHashes();
      return;
    }
    if (k !== key || this.terms[index] !== term) {
      this.report(
        'state-machine-safety',
        `index ${index}: ${this.firstBy[index]} applied ${trunc(k)} (term ${this.terms[index]}), ${node} applied ${trunc(key)} (term ${term})`,
      );
    }
  }

  onRestore(node: NodeId, index: number, hash: number): void {
    const h = this.hashes[index];
    if (h === undefined) {
      if (index > this.length) this.report('state-machine-safety', `${node} restored a snapshot at ${index}, beyond anything applied (${this.length})`);
      return;
    }
    if (h !== hash) this.report('state-machine-safety', `${node} restored a snapshot at ${index} whose state differs from the history`);
  }

  private extendHashes(): void {
    while (this.hashes.length < this.keys.length && this.keys[this.hashes.length] !== undefined) {
      const i = this.hashes.length;
      this.hashes.push(chainHash(this.hashes[i - 1]!, i, this.terms[i]!, this.keys[i]!));
    }
  }
}

// ------------------------------------------------------------------ linearizable reads

/**
 * A ReadIndex read started after a write was acknowledged must observe it: the applied index
 * the read is served at must cover every write acknowledged before the read started.
 * (State machine safety makes "applied index covers the write's index" equivalent to "the
 * observed state contains the write".)
 */
export class LinearizableReads {
  private ackedMax = 0;
  private ackedMaxId = '';
  private readonly reads = new Map<string, { node: NodeId; need: number; needId: string; start: number }>();
  constructor(private readonly report: Report) {}

  onWriteAck(id: string, index: number): void {
    if (index > this.ackedMax) {
      this.ackedMax = index;
      this.ackedMaxId = id;
    }
  }

  onReadStart(ctx: string, node: NodeId, tick: number): void {
    this.reads.set(ctx, { node, need: this.ackedMax, needId: this.ackedMaxId, start: tick });
  }

  /** `readIndex`: the index the core returned; `observed`: the node's applied index when served. */
  onReadServed(ctx: string, node: NodeId, readIndex: number, observed: number): void {
    const r = this.reads.get(ctx);
    if (r === undefined) return; // a read not started by this client (duplicate answer)
    this.reads.delete(ctx);
    if (observed < readIndex) {
      this.report('linearizable-reads', `read ${ctx} on ${node} served at applied ${observed} below its read index ${readIndex}`);
    } else if (observed < r.need) {
      this.report(
        'linearizable-reads',
        `stale read ${ctx} on ${node} (started tick ${r.start}): observed applied ${observed} (read index ${readIndex}) but write ${r.needId} at index ${r.need} was acknowledged before it started`,
      );
    }
  }

  onReadLost(ctx: string): void {
    this.reads.delete(ctx);
  }
}

// ------------------------------------------------------------------ durability

export interface AckedWrite {
  id: string;
  index: number;
  term: number;
}

/** Every acknowledged write is in the final history, and every live member applied it. */
export function checkDurability(
  report: Report,
  acked: Iterable<AckedWrite>,
  history: StateMachineSafety,
  finalApplied: ReadonlyMap<NodeId, number>,
): void {
  let minApplied = Infinity;
  let minNode = '';
  for (const [n, a] of finalApplied) {
    if (a < minApplied) {
      minApplied = a;
      minNode = n;
    }
  }
  for (const w of acked) {
    const key = history.keys[w.index];
    if (key !== `0:${w.id}` || history.terms[w.index] !== w.term) {
      report('durability', `acknowledged write ${w.id} at (${w.index}, term ${w.term}) is not in the final history (found ${key === undefined ? 'nothing' : trunc(key)})`);
      return;
    }
    if (w.index > minApplied) {
      report('durability', `acknowledged write ${w.id} at index ${w.index} is not applied on ${minNode} (applied ${minApplied})`);
      return;
    }
  }
}

// ------------------------------------------------------------------ commit quorum

/**
 * When a leader's commit index moves to `index`, a quorum of voters has (index, term) on
 * stable storage. `voterSets`: the leader's configuration before and after the step that moved
 * it (one of them counted; with one change at a time their quorums overlap); `holds(id)`:
 * whether that node's disk has the entry (or a snapshot covering it).
 */
export function checkCommitQuorum(
  report: Report,
  leader: NodeId,
  index: number,
  term: number,
  voterSets: readonly (readonly NodeId[])[],
  holds: (id: NodeId) => boolean,
): boolean {
  let best = '';
  for (const voters of voterSets) {
    if (voters.length === 0) continue;
    const have = voters.filter(holds);
    if (have.length >= Math.floor(voters.length / 2) + 1) return true;
    best ||= `${have.length} of {${voters.join(',')}}${have.length ? ` (${have.join(',')})` : ''}`;
  }
  if (best === '') return true;
  report('commit-quorum', `${leader} committed (${index}, term ${term}) with only ${best} having it on disk`);
  return false;
}

// ------------------------------------------------------------------ liveness

export interface ConvergenceView {
  /** The (newest) leader, with its commit, last index and members (voters and learners). */
  leader: { id: NodeId; commit: number; lastIndex: number; members: NodeId[] } | null;
  /** Client writes not yet acknowledged. */
  unacked: string[];
  /** Every member's liveness and applied index. */
  nodes: ReadonlyMap<NodeId, { alive: boolean; applied: number }>;
}

/**
 * Liveness after faults stop: a leader, its whole log committed, every client write
 * acknowledged, every member up and applied to the leader's commit. Returns '' when converged,
 * else why not; the run reports 'liveness' if this is not '' within the heal budget.
 */
export function convergence(v: ConvergenceView): string {
  const l = v.leader;
  if (!l) return 'no leader';
  if (l.commit !== l.lastIndex) return `leader ${l.id} commit ${l.commit} < last ${l.lastIndex}`;
  if (v.unacked.length > 0) return `${v.unacked.length} writes unacknowledged (e.g. ${v.unacked[0]})`;
  for (const id of l.members) {
    const n = v.nodes.get(id);
    if (!n || !n.alive) return `member ${id} down`;
    if (n.applied !== l.commit) return `member ${id} applied ${n.applied} != leader commit ${l.commit}`;
  }
  return '';
}

// ------------------------------------------------------------------ the suite

/** All checkers for one run; collects violations with the current tick. */
export class Checkers {
  tick = 0;
  readonly violations: Violation[] = [];
  readonly report: Report;
  readonly election: ElectionSafety;
  readonly logMatching: LogMatching;
  readonly completeness: LeaderCompleteness;
  readonly stateMachine: StateMachineSafety;
  readonly reads: LinearizableReads;

  constructor(readonly seed: number) {
    this.report = (property, detail) => {
      this.violations.push({ property, seed: this.seed, tick: this.tick, detail });
    };
    this.election = new ElectionSafety(this.report);
    this.logMatching = new LogMatching(this.report);
    this.completeness = new LeaderCompleteness(this.report);
    this.stateMachine = new StateMachineSafety(this.report);
    this.reads = new LinearizableReads(this.report);
  }

  get failed(): boolean {
    return this.violations.length > 0;
  }
}

function trunc(s: string): string {
  const p = JSON.stringify(s);
  return p.length > 60 ? `${p.slice(0, 57)}..."` : p;
}
