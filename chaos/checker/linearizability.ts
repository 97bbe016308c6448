// Linearizability checker for histories of the replicated kv store (read / write / cas with
// versions), in the spirit of Knossos / Porcupine. PURE: no IO, no clocks, no randomness.
//
// =============================================================================================
// The specification (what "linearizable" means here)
//
// Per key, the store is a register holding `absent` or `(value, version)`. A history is
// linearizable iff each key's sub-history is (P-compositionality: linearizability is local, so
// keys are checked independently), and a key's sub-history is linearizable iff there is a total
// order of (a subset of) its operations such that
//   (R1) it contains every `ok` op, no `fail` op, and any subset of the `unknown` write/cas ops
//        (those may have taken effect or not); `unknown`/`fail` reads are left out (no effect,
//        nothing observed);
//   (R2) it respects real time: if a.complete < b.invoke then a comes first (`unknown` ops
//        complete at +∞; equal timestamps count as concurrent, the permissive choice);
//   (R3) it is a legal run of the sequential register for SOME assignment of integer versions to
//        the writes whose version is not reported (unknown ops; ok ops whose result lacks it):
//        - the versions of the writes, in order, strictly increase and are all >= 1 (the real
//          version is the Raft log index of the write, so this is a necessary condition);
//        - a cas succeeds only if the current version equals `expectVersion` (0 = absent);
//        - a read returns the current value, and the current version when it reports one;
//        - an ok write/cas with a reported version sets exactly that version.
// The real system satisfies more (versions are globally unique Raft indices, across keys too,
// and a `fail`ed cas really saw another version); leaving those out only makes the checker more
// permissive, so a "not linearizable" verdict is never caused by them.
//
// =============================================================================================
// The model used by the search (versions of unknown writes, handled symbolically)
//
// The search walks linearizations and keeps the register as
//     (value, exact, ver)      exact = 1: the version is `ver`;
//                              exact = 0: the version is some integer >= `ver`, not yet pinned.
// Steps (each returns the new state or "illegal"):
//   read (x, v)     value must equal x. If v is reported: exact → ver must equal v;
//                   inexact → v >= ver is required and the state becomes exact v ("binding").
//   write / cas     cas: exact → ver must equal e; inexact → e >= ver is required (binding the
//                   unknown version to e). Let cur = e for a cas, else ver. New state: if the op
//                   reports version w: w > cur required, state (value, exact, w); otherwise
//                   (value, inexact, cur + 1).
// Claim: a sequence of ops is accepted by the model iff (R3) holds for it.
//   (⇐) every check the model makes is implied by (R3): an inexact `ver` is always a lower
//       bound of the real version (it is the previous lower bound + 1, versions strictly
//       increase), so the real versions pass every `>=` / `>` test, and reads/cas see the
//       real version.
//   (⇒) given an accepted sequence, pick for each inexact version the value it was bound to
//       (by the read or cas that pinned it) or, if never pinned, its lower bound `ver`. A symbolic
//       version only ever appears in the current state, so every constraint on it is checked
//       while it is current: its lower bound (prev + 1) when created, the pin (>= lower bound),
//       and the next write (w > ver, or a further inexact cur + 1). Hence the chosen integers
//       strictly increase, and all reads and cas see exactly what the model saw.
// So the model decides (R3) exactly: every verdict of the search is exact for the spec above.
//
// Sound pre-checks and reductions run before the search (each proven where it is made):
//   - cheap necessary conditions with precise messages: a read of a value never written, or
//     read before any write of it was invoked; two writes with one version; two ok cas expecting
//     the same version (lost update); versions going backwards in real time (stale reads);
//   - an `unknown` write/cas whose value no ok read returned is dropped ("unobserved");
//   - an `unknown` write/cas (or ok one without reported version) whose value is written by no
//     other op and which an ok read returned with version v gets its version pinned to v;
//   - a read without reported version of a value with a single writer of known version gets
//     that version (it can only have seen that writer's state).
//
// =============================================================================================
// The search (Wing & Gong, with Lowe's memoisation, as in Porcupine)
//
// Call and return events of a key's ops are sorted by time in a doubly linked list. A DFS
// repeatedly tries the pending calls (those before the first return still in the list), in list
// order: if the model accepts the op in the current state and (linearized-set, state) was not
// seen before, the op is "lifted" (its call and return leave the list) and the search restarts
// from the head; reaching a return event means that op had to be linearized before this point:
// backtrack. Success = all ok ops are linearized (unknown ops have their return at +∞, so they
// never force a backtrack and may stay unlinearized). The cache of (bitset, state) pairs bounds
// the work by the number of distinct configurations (Lowe's improvement); bitsets are hashed
// incrementally (Zobrist) so a step costs O(1) unless a new configuration is stored (O(n/32)).
//
// Version order: versions seen/produced never decrease along an accepted sequence, so an op with
// a known version v is only tried once every ok op with a known version < v is linearized. This
// makes acknowledged writes (which report their version) fall into place in version order.
//
// Unobservable values: reads are the only ops that look at the value, so a state value that no
// unlinearized read returns is replaced by a placeholder; configurations that differ only in such
// values share a cache entry (concurrent blind writes no longer multiply the states).
//
// Partial-order reduction for reads: a read that the model accepts WITHOUT changing the state
// ("pure") is looked for first after every step, and linearized greedily: if C·read has no
// completion, neither has C (any completion of C that linearizes the read later can move it to the front:
// the state it sees is unchanged by moving — it is pure here and changes nothing — and real time
// allows it because the read is already invoked and no unlinearized op returned before this
// point). So when such a read is backtracked, or its configuration is already in the cache (=
// already proven to fail), the search backtracks further instead of trying alternatives.
//
// Complexity: O(n log n) preparation and pre-checks; the search is O(S · c) model steps where S
// is the number of distinct configurations visited and c the number of pending calls (≈ the
// concurrency, plus observed unknown ops not yet linearized). Because reported versions order
// the writes, reads are pinned to one write and are greedy, S stays close to n for real
// histories; the worst case (NP-complete problem) is bounded by `maxStates` / `timeoutSteps`,
// giving `ok: 'unknown'`. Memory: O(S · n/32) words for the memoised bitsets.

import { describeOp, plainAcknowledgedWrites, type KvVersioned, type Op } from './types.js';

export interface LinearizabilityOptions {
  /**
   * Max distinct configurations memoised, per key. Default 200,000, lowered for very long keys
   * so that the memoised bitsets stay under ~256 MB (each takes n/8 bytes).
   */
  maxStates?: number;
  /** Max search steps (model steps + backtracks), per key (default 20,000,000). */
  timeoutSteps?: number;
  /** Contents of keys before the history started (default: every key absent). */
  initial?: ReadonlyMap<string, KvVersioned | null>;
}

export type LinearizabilityResult =
  /**
   * `checked`: ops that constrained the check (ok ops, and unknown write/cas not dropped);
   * `plainWrites`: of those, acknowledged writes/cas of plain clients (present when any).
   */
  | { ok: true; checked: number; plainWrites?: number }
  | { ok: false; key: string; reason: string; minimalWindow: Op[]; witness?: string }
  | { ok: 'unknown'; reason: 'search limit reached'; key?: string };

export const DEFAULT_MAX_STATES = 200_000;
export const DEFAULT_TIMEOUT_STEPS = 20_000_000;

const READ = 0;
/** Search-state value standing for "a value no remaining read returns". */
const UNSEEN = -1;
const WRITE = 1;
const CAS = 2;

/** An op of one key, normalised for the search. */
interface Prepared {
  op: Op;
  kind: 0 | 1 | 2;
  /** read: returned value; write/cas: written value. Interned, 0 = absent. */
  vid: number;
  /** read: returned version; write/cas: new version (reported or pinned). -1 = unknown. */
  ver: number;
  /** cas only. */
  expect: number;
  /** ok ops must be linearized; unknown write/cas may be. */
  required: boolean;
  invoke: number;
  /** +∞ for unknown ops. */
  complete: number;
}

type KeyVerdict =
  | { ok: true; checked: number }
  | { ok: false; reason: string; window: Op[]; witness?: string }
  | { ok: 'unknown' };

// ---------------------------------------------------------------------------------------------
// Entry point

export function checkLinearizable(history: readonly Op[], opts: LinearizabilityOptions = {}): LinearizabilityResult {
  const maxStates = opts.maxStates;
  const timeoutSteps = opts.timeoutSteps ?? DEFAULT_TIMEOUT_STEPS;
  const byKey = new Map<string, Op[]>();
  for (const op of history) {
    validate(op);
    let list = byKey.get(op.key);
    if (list === undefined) byKey.set(op.key, (list = []));
    list.push(op);
  }
  for (const k of opts.initial?.keys() ?? []) if (!byKey.has(k)) byKey.set(k, []);
  let checked = 0;
  let limited: string | undefined;
  for (const [key, ops] of byKey) {
    const v = checkKey(ops, opts.initial?.get(key) ?? null, maxStates, timeoutSteps);
    if (v.ok === true) checked += v.checked;
    else if (v.ok === false) {
      const r: LinearizabilityResult = { ok: false, key, reason: v.reason, minimalWindow: v.window };
      if (v.witness !== undefined) r.witness = v.witness;
      return r;
    } else limited ??= key;
  }
  if (limited !== undefined) return { ok: 'unknown', reason: 'search limit reached', key: limited };
  const plainWrites = plainAcknowledgedWrites(history);
  return plainWrites > 0 ? { ok: true, checked, plainWrites } : { ok: true, checked };
}

function validate(op: Op): void {
  const bad = (why: string): never => {
    throw new TypeError(`checkLinearizable: malformed op ${JSON.stringify(op)}: ${why}`);
  };
  if (typeof op.key !== 'string') bad('key must be a string');
  if (op.type !== 'read' && op.type !== 'write' && op.type !== 'cas') bad('unknown type');
  if (op.outcome !== 'ok' && op.outcome !== 'fail' && op.outcome !== 'unknown') bad('unknown outcome');
  if (!Number.isFinite(op.invoke)) bad('invoke must be a finite number');
  if (op.outcome === 'ok') {
    if (op.complete === null || !(op.complete >= op.invoke)) bad('an ok op needs complete >= invoke');
    if (op.type === 'read' && (op.result === undefined || (op.result.value !== null && typeof op.result.value !== 'string'))) {
      bad('an ok read needs result.value');
    }
  }
  if (op.type !== 'read' && op.outcome !== 'fail' && typeof op.value !== 'string') bad('a write/cas needs a string value');
  if (op.type === 'cas' && op.outcome !== 'fail' && !(typeof op.expectVersion === 'number' && op.expectVersion >= 0)) {
    bad('a cas needs expectVersion >= 0');
  }
}

// ---------------------------------------------------------------------------------------------
// One key

function checkKey(ops: readonly Op[], initial: KvVersioned | null, maxStatesOpt: number | undefined, timeoutSteps: number): KeyVerdict {
  // Interned values: 0 = absent.
  const vids = new Map<string, number>();
  const names: (string | null)[] = [null];
  const intern = (v: string): number => {
    let id = vids.get(v);
    if (id === undefined) {
      id = names.length;
      vids.set(v, id);
      names.push(v);
    }
    return id;
  };
  if (initial !== null && !(initial.version >= 1)) throw new TypeError(`checkLinearizable: initial version of a present key must be >= 1`);
  const initVid = initial === null ? 0 : intern(initial.value);
  const initVer = initial === null ? 0 : initial.version;

  const reads: Prepared[] = [];
  const writes: Prepared[] = []; // ok and unknown write/cas
  for (const op of ops) {
    if (op.outcome === 'fail') continue; // definitely did not happen
    const complete = op.outcome === 'unknown' || op.complete === null ? Infinity : op.complete;
    if (op.type === 'read') {
      if (op.outcome !== 'ok') continue; // no effect, observed nothing
      const r = op.result!;
      const vid = r.value === null ? 0 : intern(r.value);
      reads.push({ op, kind: READ, vid, ver: vid === 0 || r.version === null || r.version === undefined ? -1 : r.version, expect: 0, required: true, invoke: op.invoke, complete });
    } else {
      const ver = op.outcome === 'ok' && op.result?.version !== null && op.result?.version !== undefined ? op.result.version : -1;
      writes.push({
        op,
        kind: op.type === 'cas' ? CAS : WRITE,
        vid: intern(op.value!),
        ver,
        expect: op.type === 'cas' ? op.expectVersion! : 0,
        required: op.outcome === 'ok',
        invoke: op.invoke,
        complete,
      });
    }
  }

  const pre = preChecks(reads, writes, initVid, initVer, names);
  if (pre !== undefined) return pre;

  // Reduction 1: drop unobserved unknown write/cas ops.
  //   Let D = unknown write/cas whose value no ok read returned. If every ok cas and every
  //   unknown cas outside D expects a version in K ∪ {0} (K = versions reported by ok ops, and
  //   the initial version), D is dropped. Proof that this keeps the verdict sound: take a real
  //   linearization L of the key (with the real, unique Raft indices) and delete D from it.
  //   Every remaining read saw a state not written by D (no read returned a D value), and that
  //   state's writer is still the last write before it. Every remaining cas saw a version in
  //   K ∪ {0}; a D op's version is not in K (a Raft index differs from other ops' indices, and no
  //   read saw a D state), so its state's writer is not in D either. Versions along L minus D
  //   still increase and real-time order is kept. So L minus D is a valid linearization of the
  //   reduced history: reduced not linearizable ⇒ original not linearizable.
  const observed = new Set<number>();
  const known = new Set<number>([initVer, 0]);
  for (const r of reads) {
    if (r.vid !== 0) observed.add(r.vid);
    if (r.ver >= 0) known.add(r.ver);
  }
  for (const w of writes) if (w.required && w.ver >= 0) known.add(w.ver);
  const unobserved = (w: Prepared): boolean => !w.required && !observed.has(w.vid);
  const casSafe = writes.every((w) => w.kind !== CAS || unobserved(w) || known.has(w.expect));
  const kept = casSafe ? writes.filter((w) => !unobserved(w)) : writes;

  // Reduction 2: pin versions. If value x is written by exactly one op W (and is not the initial
  // value) and an ok read returned (x, v), then in every valid linearization that read sees W's
  // state, so W's version is v: fixing it removes no valid linearization.
  const writers = new Map<number, number>();
  for (const w of writes) writers.set(w.vid, (writers.get(w.vid) ?? 0) + 1);
  const seenVer = new Map<number, number>();
  for (const r of reads) if (r.vid !== 0 && r.ver >= 0 && !seenVer.has(r.vid)) seenVer.set(r.vid, r.ver);
  const all: Prepared[] = [];
  for (const w of kept) {
    const pin = seenVer.get(w.vid);
    if (w.ver < 0 && pin !== undefined && writers.get(w.vid) === 1 && w.vid !== initVid) all.push({ ...w, ver: pin });
    else all.push(w);
  }
  // Reduction 3: infer read versions. A read of x without a reported version, x being written by
  // exactly one op W whose version is known (reported or pinned) and not the initial value, sees
  // W's state, so it sees W's version; a read of the initial value, which no op writes, sees the
  // initial version (0 for absent). Requiring a version the read must have seen anyway removes no
  // valid linearization; it lets the version-order pruning of the search apply to the read.
  const verOfValue = new Map<number, number>();
  for (const w of all) if (w.ver >= 0 && writers.get(w.vid) === 1 && w.vid !== initVid) verOfValue.set(w.vid, w.ver);
  if (!writers.has(initVid)) verOfValue.set(initVid, initVer);
  for (const r of reads) {
    const v = r.ver < 0 ? verOfValue.get(r.vid) : undefined;
    all.push(v === undefined ? r : { ...r, ver: v });
  }
  all.sort((a, b) => a.invoke - b.invoke);

  const maxStates = maxStatesOpt ?? Math.min(DEFAULT_MAX_STATES, Math.max(10_000, Math.floor(2 ** 31 / Math.max(1, all.length))));
  const s = search(all, names.length, initVid, initVer, maxStates, timeoutSteps);
  if (s.result === 'ok') return { ok: true, checked: all.length };
  if (s.result === 'limit') return { ok: 'unknown' };
  return explainSearchFailure(all, s.deepest, names, initVid);
}

// ---------------------------------------------------------------------------------------------
// Pre-checks: cheap necessary conditions with precise explanations. Each failure below implies
// that the key is not linearizable (proofs inline); the search would also find all of them.

function preChecks(reads: Prepared[], writes: Prepared[], initVid: number, initVer: number, names: (string | null)[]): KeyVerdict | undefined {
  const show = (vid: number): string => (vid === 0 ? 'absent' : JSON.stringify(names[vid]));
  const writersOf = new Map<number, Prepared[]>();
  for (const w of writes) {
    let l = writersOf.get(w.vid);
    if (l === undefined) writersOf.set(w.vid, (l = []));
    l.push(w);
  }

  // P1/P2: a read must see the initial value or the value of a write that had been invoked.
  //   (its state was produced by a write linearized before it, hence invoked before it completed)
  for (const r of reads) {
    if (r.vid === 0 || r.vid === initVid) continue;
    const ws = writersOf.get(r.vid) ?? [];
    if (ws.length === 0) {
      return fail(`read of a value that was never written: #${r.op.id} returned ${show(r.vid)}, which no write or cas wrote`, [r]);
    }
    if (ws.every((w) => w.invoke > r.complete)) {
      return fail(`read observed a value before it was written: #${r.op.id} returned ${show(r.vid)}, but the write of it (#${ws[0]!.op.id}) was invoked only at ${ws[0]!.invoke}, after the read completed at ${r.complete}`, [r, ...ws.slice(0, 3)]);
    }
  }

  // P3: two ok writes reporting the same version (versions strictly increase along writes).
  const byVer = new Map<number, Prepared>();
  for (const w of writes) {
    if (!w.required || w.ver < 0) continue;
    const other = byVer.get(w.ver);
    if (other !== undefined) return fail(`two writes got the same version v${w.ver}: #${other.op.id} and #${w.op.id}`, [other, w]);
    byVer.set(w.ver, w);
  }

  // P4: lost update — two ok cas expecting the same version. The first one linearized moves the
  //   version above e, and versions never decrease, so the second cannot see e.
  const byExpect = new Map<number, Prepared>();
  for (const w of writes) {
    if (!w.required || w.kind !== CAS) continue;
    const other = byExpect.get(w.expect);
    if (other !== undefined) {
      const base = w.expect === 0 ? undefined : writes.find((x) => x.ver === w.expect) ?? reads.find((x) => x.ver === w.expect);
      return fail(`lost update: cas #${other.op.id} and cas #${w.op.id} both succeeded expecting version v${w.expect}`, base === undefined ? [other, w] : [base, other, w]);
    }
    byExpect.set(w.expect, w);
  }

  // P5: a read returning (x, v) whose only writer reported another version (the read sees that
  //   writer's state, x being written by no one else and not initial).
  for (const r of reads) {
    if (r.vid === 0 || r.ver < 0 || r.vid === initVid) continue;
    const ws = writersOf.get(r.vid)!;
    if (ws.length === 1 && ws[0]!.required && ws[0]!.ver >= 0 && ws[0]!.ver !== r.ver) {
      return fail(`read #${r.op.id} returned ${show(r.vid)} v${r.ver}, but the write of that value (#${ws[0]!.op.id}) produced v${ws[0]!.ver}`, [ws[0]!, r]);
    }
  }

  // P6: real-time monotonicity of versions. Every ok op with a reported version observes (read)
  //   or produces (write/cas) a state with that version; a read of absent observes version 0
  //   when the key started absent. If a.complete < b.invoke, a is linearized before b, versions
  //   never decrease along the linearization and strictly increase at a write, so
  //   ver(a) <= ver(b) for a read b and ver(a) < ver(b) for a write b.
  const points: { p: Prepared; ver: number }[] = [];
  for (const r of reads) {
    if (r.ver >= 0) points.push({ p: r, ver: r.ver });
    else if (r.vid === 0 && initVid === 0) points.push({ p: r, ver: 0 });
  }
  for (const w of writes) if (w.required && w.ver >= 0) points.push({ p: w, ver: w.ver });
  const byComplete = [...points].sort((a, b) => a.p.complete - b.p.complete);
  const byInvoke = [...points].sort((a, b) => a.p.invoke - b.p.invoke);
  let j = 0;
  let max: { p: Prepared; ver: number } | undefined;
  for (const b of byInvoke) {
    while (j < byComplete.length && byComplete[j]!.p.complete < b.p.invoke) {
      const a = byComplete[j++]!;
      if (max === undefined || a.ver > max.ver) max = a;
    }
    if (max === undefined) continue;
    const a = max;
    const bad = b.p.kind === READ ? b.ver < a.ver : b.ver <= a.ver;
    if (!bad) continue;
    const whatB = b.p.kind === READ ? (b.p.vid === 0 ? 'returned absent' : `returned ${show(b.p.vid)} v${b.ver}`) : `${b.p.kind === CAS ? 'cas' : 'write'} got v${b.ver}`;
    const whatA = a.p.kind === READ ? `read #${a.p.op.id} had returned ${show(a.p.vid)} v${a.ver}` : `${a.p.kind === CAS ? 'cas' : 'write'} #${a.p.op.id} had written ${show(a.p.vid)} v${a.ver}`;
    const window: Prepared[] = [a, b].map((x) => x.p);
    if (b.p.kind === READ && b.p.vid !== 0) {
      const w = (writersOf.get(b.p.vid) ?? []).find((x) => x.ver === b.ver || x.ver < 0);
      if (w !== undefined) window.unshift(w);
    }
    if (a.p.kind === READ && a.p.vid !== 0) {
      const w = (writersOf.get(a.p.vid) ?? []).find((x) => x.ver === a.ver || x.ver < 0);
      if (w !== undefined) window.unshift(w);
    }
    const kind = b.p.kind === READ ? 'stale read' : 'version went backwards';
    return fail(
      `${kind}: #${b.p.op.id} ${whatB} (invoked at ${b.p.invoke}), but ${whatA} (completed at ${a.p.complete}, before it)`,
      window,
    );
  }
  return undefined;
}

function fail(reason: string, ps: readonly Prepared[], witness?: string): KeyVerdict {
  const seen = new Set<Op>();
  const window: Op[] = [];
  for (const p of ps) {
    if (seen.has(p.op)) continue;
    seen.add(p.op);
    window.push(p.op);
  }
  window.sort((a, b) => a.invoke - b.invoke);
  const v: KeyVerdict = { ok: false, reason, window };
  if (witness !== undefined) v.witness = witness;
  return v;
}

// ---------------------------------------------------------------------------------------------
// Search

/** The deepest configuration a failed search reached: where it got stuck. */
interface Deepest {
  /** Index (into ops) of the op whose return was reached unlinearized. */
  stuck: number;
  linearized: number;
  vid: number;
  exact: number;
  ver: number;
  /** Op index that wrote the current state, -1 = initial. */
  writer: number;
  /** The last linearized op indexes, oldest first. */
  tail: number[];
  /** Pending (invoked, unlinearized) op indexes at that point. */
  pending: number[];
}

type SearchResult = { result: 'ok' } | { result: 'limit' } | { result: 'fail'; deepest: Deepest | undefined };

function mix32(x: number): number {
  // splitmix32-style finaliser: a fixed, deterministic pseudo-random function of x.
  x = (x + 0x9e3779b9) | 0;
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) | 0;
}

interface CacheEntry {
  h2: number;
  bits: Uint32Array;
  vid: number;
  exact: number;
  ver: number;
}

function search(ops: readonly Prepared[], nValues: number, initVid: number, initVer: number, maxStates: number, timeoutSteps: number): SearchResult {
  const n = ops.length;
  let requiredLeft = 0;
  for (const p of ops) if (p.required) requiredLeft++;
  const requiredTotal = requiredLeft;
  if (requiredLeft === 0) return { result: 'ok' };

  // Flat op data.
  const kind = new Uint8Array(n);
  const vidOf = new Int32Array(n);
  const verOf = new Float64Array(n);
  const expectOf = new Float64Array(n);
  const required = new Uint8Array(n);
  // Unlinearized reads per returned value. A state value that no unlinearized read returns can
  // never be observed again from this configuration (reads are the only ops that look at the
  // value), so it is replaced by UNSEEN: configurations differing only in such values are
  // equivalent and share one cache entry. This is what keeps blind concurrent writes cheap.
  const readsLeft = new Int32Array(nValues);
  for (let i = 0; i < n; i++) {
    const p = ops[i]!;
    if (p.kind === READ) readsLeft[p.vid]++;
    kind[i] = p.kind;
    vidOf[i] = p.vid;
    verOf[i] = p.ver;
    expectOf[i] = p.expect;
    required[i] = p.required ? 1 : 0;
  }

  // Events: 2i = call of op i, 2i+1 = its return. Sorted by time; at equal times calls first
  // (concurrent), then returns of ok ops, then returns of unknown ops (all at +∞).
  const order: number[] = [];
  for (let e = 0; e < 2 * n; e++) order.push(e);
  const time = (e: number): number => ((e & 1) === 0 ? ops[e >> 1]!.invoke : ops[e >> 1]!.complete);
  const rank = (e: number): number => ((e & 1) === 0 ? 0 : required[e >> 1] ? 1 : 2);
  order.sort((a, b) => time(a) - time(b) || rank(a) - rank(b) || a - b);
  const HEAD = 2 * n;
  const TAIL = 2 * n + 1;
  const next = new Int32Array(2 * n + 2);
  const prev = new Int32Array(2 * n + 2);
  let last = HEAD;
  for (const e of order) {
    next[last] = e;
    prev[e] = last;
    last = e;
  }
  next[last] = TAIL;
  prev[TAIL] = last;
  next[TAIL] = TAIL;
  prev[HEAD] = HEAD;

  const lift = (c: number): void => {
    const r = c + 1;
    next[prev[c]!] = next[c]!;
    prev[next[c]!] = prev[c]!;
    next[prev[r]!] = next[r]!;
    prev[next[r]!] = prev[r]!;
  };
  const unlift = (c: number): void => {
    const r = c + 1;
    next[prev[r]!] = r;
    prev[next[r]!] = r;
    next[prev[c]!] = c;
    prev[next[c]!] = c;
  };

  // Linearized set: bitset + two independent Zobrist hashes.
  const words = (n + 31) >>> 5;
  const bits = new Uint32Array(words);
  const z1 = new Int32Array(n);
  const z2 = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    z1[i] = mix32(2 * i);
    z2[i] = mix32(2 * i + 1 + 0x5bd1e995);
  }
  let h1 = 0;
  let h2 = 0;
  const cache = new Map<number, CacheEntry[]>();
  let cached = 0;
  const stateHash = (vid: number, exact: number, ver: number): number => mix32(Math.imul(vid, 0x27d4eb2d) ^ mix32((ver >>> 0) ^ (exact << 31)));
  /** Store the current configuration (bits, h1, h2) with the given state; false if known. */
  const cacheAdd = (vid: number, exact: number, ver: number): boolean => {
    const key = h1 ^ stateHash(vid, exact, ver);
    let bucket = cache.get(key);
    if (bucket === undefined) cache.set(key, (bucket = []));
    else {
      outer: for (const c of bucket) {
        if (c.h2 !== h2 || c.vid !== vid || c.exact !== exact || c.ver !== ver) continue;
        for (let w = 0; w < words; w++) if (c.bits[w] !== bits[w]) continue outer;
        return false;
      }
    }
    bucket.push({ h2, bits: bits.slice(), vid, exact, ver });
    cached++;
    return true;
  };

  // Version order. In every sequence the model accepts, the versions seen or produced never
  // decrease (they strictly increase at writes). So an op with a known version v can only be
  // linearized once every ok op with a known version < v is: an ok op of version u < v placed
  // after it would have to see or produce u below the current version. `byVer` lists the ok
  // ops with known versions in version order; `vp` is the first one not linearized yet.
  const byVer: number[] = [];
  for (let i = 0; i < n; i++) if (required[i] && verOf[i]! >= 0) byVer.push(i);
  byVer.sort((a, b) => verOf[a]! - verOf[b]!);
  const byVerPos = new Int32Array(n).fill(-1);
  byVer.forEach((i, pos) => (byVerPos[i] = pos));
  const byVerVer = Float64Array.from(byVer, (i) => verOf[i]!);
  const nByVer = byVer.length;
  let vp = 0;
  const isLinearized = (i: number): boolean => (bits[i >>> 5]! & (1 << (i & 31))) !== 0;
  /** Lowest known version among ok ops not linearized yet (+∞ if none). */
  const minPendingVer = (): number => (vp < nByVer ? byVerVer[vp]! : Infinity);

  // Current state and the stack of linearized ops (with the state before each).
  let sVid = readsLeft[initVid]! > 0 ? initVid : UNSEEN;
  let sExact = 1;
  let sVer = initVer;
  let sWriter = -1;
  const fEntry = new Int32Array(n);
  const fVid = new Int32Array(n);
  const fExact = new Uint8Array(n);
  const fVer = new Float64Array(n);
  const fWriter = new Int32Array(n);
  const fPure = new Uint8Array(n);
  let depth = 0;
  cacheAdd(sVid, sExact, sVer);

  let deepest: Deepest | undefined;
  let steps = 0;
  let cursor = next[HEAD]!;
  let restart = true;

  /** Undo linearized ops until one that is not a greedy read; false if none is left. */
  const backtrack = (): boolean => {
    for (;;) {
      if (depth === 0) return false;
      depth--;
      const c = fEntry[depth]!;
      const i = c >> 1;
      unlift(c);
      bits[i >>> 5]! &= ~(1 << (i & 31));
      h1 ^= z1[i]!;
      h2 ^= z2[i]!;
      sVid = fVid[depth]!;
      sExact = fExact[depth]!;
      sVer = fVer[depth]!;
      sWriter = fWriter[depth]!;
      if (required[i]) requiredLeft++;
      if (kind[i] === READ) readsLeft[vidOf[i]!]++;
      const pos = byVerPos[i]!;
      if (pos >= 0 && pos < vp) vp = pos;
      if (!fPure[depth]) {
        cursor = next[c]!;
        return true;
      }
    }
  };

  for (;;) {
    if (++steps > timeoutSteps) return { result: 'limit' };
    if (restart) {
      // Reads first: a pending read that fits the current state without changing it is taken
      // greedily (see the partial-order reduction above), before any write is tried.
      restart = false;
      const minVer = minPendingVer();
      for (let e = next[HEAD]!; e !== TAIL && (e & 1) === 0; e = next[e]!) {
        const i = e >> 1;
        if (kind[i] !== READ || vidOf[i] !== sVid) continue;
        const rv = verOf[i]!;
        if (rv > minVer) continue;
        if (sVid === 0 || rv < 0 || (sExact && rv === sVer)) {
          cursor = e;
          break;
        }
      }
    }
    if (cursor === TAIL || (cursor & 1) === 1) {
      // A return reached before its op was linearized (or the end: cannot happen while ok ops
      // are left, as their returns precede the end). Record the deepest point for diagnostics.
      const done = requiredTotal - requiredLeft;
      if (cursor !== TAIL && (deepest === undefined || done > deepest.linearized)) {
        const tail: number[] = [];
        for (let d = Math.max(0, depth - 6); d < depth; d++) tail.push(fEntry[d]! >> 1);
        const pending: number[] = [];
        for (let e = next[HEAD]!; e !== cursor && e !== TAIL && pending.length < 24; e = next[e]!) if ((e & 1) === 0) pending.push(e >> 1);
        deepest = { stuck: cursor >> 1, linearized: done, vid: sVid, exact: sExact, ver: sVer, writer: sWriter, tail, pending };
      }
      if (!backtrack()) return { result: 'fail', deepest };
      continue;
    }
    // A call: try to linearize op i now.
    const i = cursor >> 1;
    let nVid = sVid;
    let nExact = sExact;
    let nVer = sVer;
    let legal: boolean;
    const k = kind[i]!;
    if (k === READ) {
      const rv = verOf[i]!;
      if (vidOf[i] !== sVid) legal = false;
      else if (sVid === 0 || rv < 0) legal = true;
      else if (sExact) legal = rv === sVer;
      else if (rv < sVer) legal = false;
      else {
        legal = true;
        nExact = 1;
        nVer = rv;
      }
    } else {
      let cur = sVer;
      legal = true;
      if (k === CAS) {
        const e = expectOf[i]!;
        if (sExact ? e !== sVer : e < sVer) legal = false;
        cur = e;
      }
      if (legal) {
        nVid = vidOf[i]!;
        const w = verOf[i]!;
        if (w >= 0) {
          if (w <= cur) legal = false;
          nExact = 1;
          nVer = w;
        } else {
          nExact = 0;
          nVer = cur + 1;
        }
      }
    }
    if (legal && verOf[i]! > minPendingVer()) legal = false;
    if (!legal) {
      cursor = next[cursor]!;
      continue;
    }
    // Pure = the read leaves the (semantic) state unchanged; replacing an unobservable value by
    // UNSEEN is only a change of representation.
    const pure = k === READ && nExact === sExact && nVer === sVer;
    if (k === READ) readsLeft[nVid]--;
    if (readsLeft[nVid]! === 0) nVid = UNSEEN;
    bits[i >>> 5]! |= 1 << (i & 31);
    h1 ^= z1[i]!;
    h2 ^= z2[i]!;
    if (cacheAdd(nVid, nExact, nVer)) {
      fEntry[depth] = cursor;
      fVid[depth] = sVid;
      fExact[depth] = sExact;
      fVer[depth] = sVer;
      fWriter[depth] = sWriter;
      fPure[depth] = pure ? 1 : 0;
      depth++;
      if (k !== READ) sWriter = i;
      sVid = nVid;
      sExact = nExact;
      sVer = nVer;
      lift(cursor);
      if (byVerPos[i] === vp) while (vp < nByVer && isLinearized(byVer[vp]!)) vp++;
      if (required[i] && --requiredLeft === 0) return { result: 'ok' };
      if (cached > maxStates) return { result: 'limit' };
      cursor = next[HEAD]!;
      restart = true;
      continue;
    }
    bits[i >>> 5]! &= ~(1 << (i & 31));
    h1 ^= z1[i]!;
    h2 ^= z2[i]!;
    if (k === READ) readsLeft[vidOf[i]!]++;
    if (pure) {
      // Greedy read whose configuration is already known to fail: so does this one.
      if (!backtrack()) return { result: 'fail', deepest };
      continue;
    }
    cursor = next[cursor]!;
  }
}

// ---------------------------------------------------------------------------------------------
// Explaining a failed search

function explainSearchFailure(ops: readonly Prepared[], d: Deepest | undefined, names: (string | null)[], initVid: number): KeyVerdict {
  if (d === undefined) return fail('no linearization exists', ops.slice(0, 10));
  const show = (vid: number): string => (vid === 0 ? 'absent' : JSON.stringify(names[vid]));
  const vid = d.vid === UNSEEN ? (d.writer >= 0 ? ops[d.writer]!.vid : initVid) : d.vid;
  const stateText = `${show(vid)}${vid === 0 ? '' : d.exact ? ` v${d.ver}` : ` v>=${d.ver}`}${d.writer >= 0 ? ` (written by #${ops[d.writer]!.op.id})` : vid !== 0 ? ' (initial)' : ''}`;
  const stuck = ops[d.stuck]!;
  let why: string;
  if (stuck.kind === READ) {
    why = `read #${stuck.op.id} returned ${show(stuck.vid)}${stuck.ver >= 0 ? ` v${stuck.ver}` : ''}`;
  } else if (stuck.kind === CAS) {
    why = `cas #${stuck.op.id} succeeded expecting v${stuck.expect}${stuck.ver >= 0 ? ` (new v${stuck.ver})` : ''}`;
  } else {
    why = `write #${stuck.op.id} of ${show(stuck.vid)}${stuck.ver >= 0 ? ` got v${stuck.ver}` : ''}`;
  }
  const reason = `not linearizable: ${why}, but it fits no linearization; the longest linearizable prefix (${d.linearized} ok ops) leaves the register at ${stateText}`;

  // Window: the stuck op, the writer of the current state, writers of what a stuck read saw,
  // the last linearized ops and the ops pending at that point. Capped to stay readable.
  const picks: Prepared[] = [stuck];
  if (d.writer >= 0) picks.push(ops[d.writer]!);
  if (stuck.kind === READ && stuck.vid !== 0) for (const p of ops) if (p.kind !== READ && p.vid === stuck.vid) picks.push(p);
  for (const i of [...d.tail].reverse().slice(0, 4)) picks.push(ops[i]!);
  for (const i of d.pending) picks.push(ops[i]!);
  const window = picks.slice(0, 12);

  const lines = [
    `longest linearizable prefix: ${d.linearized} ok ops; it ends with:`,
    ...d.tail.map((i) => `  ${describeOp(ops[i]!.op)}`),
    `register then: ${stateText}`,
    `must be linearized before it completes, but cannot be: ${describeOp(stuck.op)}`,
  ];
  const others = d.pending.filter((i) => i !== d.stuck);
  if (others.length > 0) lines.push('other pending ops at that point:', ...others.slice(0, 10).map((i) => `  ${describeOp(ops[i]!.op)}`));
  return fail(reason, window, lines.join('\n'));
}
