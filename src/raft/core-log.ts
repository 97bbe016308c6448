// The in-memory Raft log of one core: a snapshot prefix plus the entries after it,
// with the commit, applied and stable (persisted) marks. Pure: no IO.
import type { Entry, Snapshot } from './types.js';

export class RaftLog {
  /** Index and term of the last entry covered by the snapshot (0/0 for none). */
  snapIndex = 0;
  snapTerm = 0;
  /** Latest snapshot held by this node (sent to lagging followers). */
  snapshot: Snapshot | null = null;
  /** A snapshot received from the leader that is not yet persisted and applied. */
  unstableSnapshot: Snapshot | null = null;
  /** entries[i].index === snapIndex + 1 + i */
  entries: Entry[] = [];
  committed = 0;
  applied = 0;
  /** Highest index known to be on this node's disk (entries after it are unstable). */
  stable = 0;

  constructor(snapshot: Snapshot | null, entries: Entry[], commit: number, applied: number | undefined) {
    if (snapshot) {
      this.snapshot = snapshot;
      this.snapIndex = snapshot.meta.index;
      this.snapTerm = snapshot.meta.term;
    }
    this.entries = entries.slice();
    this.stable = this.lastIndex();
    this.committed = Math.max(commit, this.snapIndex);
    this.applied = Math.max(this.snapIndex, Math.min(applied ?? this.snapIndex, this.committed));
  }

  firstIndex(): number {
    return this.snapIndex + 1;
  }

  lastIndex(): number {
    return this.snapIndex + this.entries.length;
  }

  lastTerm(): number {
    return this.term(this.lastIndex())!;
  }

  /** Term of the entry at `i`; undefined when it is compacted away or beyond the end. */
  term(i: number): number | undefined {
    if (i === this.snapIndex) return this.snapTerm;
    if (i < this.snapIndex || i > this.lastIndex()) return undefined;
    return this.entries[i - this.snapIndex - 1]!.term;
  }

  matchTerm(i: number, t: number): boolean {
    return this.term(i) === t;
  }

  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const myTerm = this.lastTerm();
    return lastTerm > myTerm || (lastTerm === myTerm && lastIndex >= this.lastIndex());
  }

  /** Entries in [lo, hi), at most maxBytes (always at least one). Undefined if lo is compacted. */
  slice(lo: number, hi: number, maxBytes = Infinity): Entry[] | undefined {
    if (lo <= this.snapIndex) return undefined;
    hi = Math.min(hi, this.lastIndex() + 1);
    const out: Entry[] = [];
    let bytes = 0;
    for (let i = lo; i < hi; i++) {
      const e = this.entries[i - this.snapIndex - 1]!;
      bytes += e.data.length + 24;
      if (out.length > 0 && bytes > maxBytes) break;
      out.push(e);
    }
    return out;
  }

  /** Appends entries, truncating any conflicting suffix. Returns the new last index. */
  append(ents: Entry[]): number {
    if (ents.length === 0) return this.lastIndex();
    const after = ents[0]!.index - 1;
    if (after < this.committed) throw new Error(`raft log: append after ${after} would overwrite committed ${this.committed}`);
    this.truncateAfter(after);
    for (const e of ents) this.entries.push(e);
    return this.lastIndex();
  }

  private truncateAfter(after: number): void {
    if (after < this.lastIndex()) {
      this.entries.length = after - this.snapIndex;
      if (this.stable > after) this.stable = after;
    }
  }

  /** The first index of `ents` whose term conflicts with ours (or is new); 0 if all already present. */
  findConflict(ents: Entry[]): number {
    for (const e of ents) {
      if (!this.matchTerm(e.index, e.term)) return e.index;
    }
    return 0;
  }

  /**
   * Largest index <= `index` whose term is <= `term` (the conflict hint used for fast backtracking),
   * with its term (0 if compacted).
   */
  findConflictByTerm(index: number, term: number): { index: number; term: number } {
    let i = Math.min(index, this.lastIndex());
    while (i > this.snapIndex) {
      const t = this.term(i)!;
      if (t <= term) return { index: i, term: t };
      i--;
    }
    return { index: i, term: i === this.snapIndex ? this.snapTerm : 0 };
  }

  /**
   * The follower side of AppendEntries. Returns the last new index on success, or null when the
   * entry at prevIndex does not match.
   */
  maybeAppend(prevIndex: number, prevTerm: number, commit: number, ents: Entry[], bugCommitPastNew = false): number | null {
    if (!this.matchTerm(prevIndex, prevTerm)) return null;
    const lastNew = prevIndex + ents.length;
    const ci = this.findConflict(ents);
    if (ci !== 0) {
      if (ci <= this.committed) throw new Error(`raft log: conflict at ${ci} <= committed ${this.committed}`);
      this.append(ents.slice(ci - prevIndex - 1));
    }
    // Only up to the last new entry: anything after it may be a stale tail from an older term.
    this.commitTo(Math.min(commit, bugCommitPastNew ? this.lastIndex() : lastNew));
    return lastNew;
  }

  commitTo(i: number): boolean {
    if (i > this.committed) {
      if (i > this.lastIndex()) throw new Error(`raft log: commit ${i} beyond last index ${this.lastIndex()}`);
      this.committed = i;
      return true;
    }
    return false;
  }

  unstableEntries(): Entry[] {
    return this.entries.slice(this.stable - this.snapIndex);
  }

  /** Committed entries that are durable here and not yet handed out for apply. */
  nextCommitted(after: number, maxBytes = Infinity): Entry[] {
    const hi = Math.min(this.committed, this.stable);
    if (hi <= after) return [];
    return this.slice(after + 1, hi + 1, maxBytes) ?? [];
  }

  /** Marks entries up to (index, term) as persisted if that entry is still in the log. */
  stableTo(index: number, term: number): void {
    if (index > this.stable && this.matchTerm(index, term)) this.stable = index;
  }

  /** Replaces the whole log by a snapshot received from the leader. */
  restore(s: Snapshot): void {
    this.snapshot = s;
    this.unstableSnapshot = s;
    this.snapIndex = s.meta.index;
    this.snapTerm = s.meta.term;
    this.entries = [];
    this.committed = s.meta.index;
    this.stable = s.meta.index;
  }

  /** Drops entries up to `index` (covered by the application's snapshot `s`). */
  compact(s: Snapshot): void {
    const index = s.meta.index;
    const drop = index - this.snapIndex;
    this.entries = this.entries.slice(drop);
    this.snapIndex = index;
    this.snapTerm = s.meta.term;
    this.snapshot = s;
  }
}
