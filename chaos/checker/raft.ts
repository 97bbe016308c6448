// Raft invariants from the managers' own traces (`flotilla manager --raft-trace`, written by
// src/raft/trace.ts; one JSON object per line, a `start` record opening each process life). PURE.
//
// Checked:
//   (a) Election Safety: at most one node records `leader` for any term (across all nodes and
//       process lives).
//   (b) Within one process life the commit index never decreases. Across lives it may: the commit
//       index is not synced to disk (a restarted node learns it again), so a restart is checked
//       through (c) instead, whose records (terms of applied entries) are durable facts.
//   (c) Committed prefixes agree: every index that two records (any nodes, any lives) report as
//       committed — an applied `entries` range, or a `snapshot` (index, term) — has the same term
//       in both. By Log Matching, equal (index, term) means the same entry, so this is "logs agree
//       on their committed prefixes".
//
// A trace may be incomplete, never wrong: a SIGKILL loses the last unflushed records and may cut
// the last line of a life in the middle. Such a line is skipped (counted as `partialLines`);
// missing records can only hide a violation, never invent one. A line that does not parse and is
// not the last of its life is reported as malformed (and skipped).

export type RaftRecord =
  | { k: 'start'; node: string; pid: number; t: number }
  | { k: 'leader'; term: number; t: number }
  | { k: 'stepdown'; term: number; t: number }
  | { k: 'commit'; commit: number; term: number; t: number }
  | { k: 'entries'; from: number; to: number; term: number; t: number }
  | { k: 'snapshot'; index: number; term: number; from: 'disk' | 'leader'; t: number }
  | { k: 'stop'; t: number };

/** One process life of one node: from a `start` record to the next (or the end of the file). */
export interface RaftLife {
  node: string;
  /** 1-based, in file order; 0 = records before any `start` record. */
  life: number;
  pid: number | null;
  /** Wall-clock ms of the `start` record. */
  startedAt: number | null;
  records: RaftRecord[];
  /** The life's last line was cut (a SIGKILL during a write). */
  truncated: boolean;
  /** The life ended with a `stop` record (clean close). */
  clean: boolean;
}

export interface RaftTrace {
  node: string;
  lives: RaftLife[];
  records: number;
  partialLines: number;
  malformed: { line: number; text: string }[];
}

export interface RaftEntrySource {
  node: string;
  life: number;
  pid: number | null;
  term: number;
  record: 'entries' | 'snapshot';
  from: number;
  to: number;
}

export type RaftViolation =
  | { kind: 'two-leaders'; term: number; leaders: { node: string; life: number; pid: number | null; at: number }[]; message: string }
  | { kind: 'commit-decreased'; node: string; life: number; pid: number | null; from: number; to: number; at: number; message: string }
  | { kind: 'log-mismatch'; from: number; to: number; a: RaftEntrySource; b: RaftEntrySource; message: string };

export interface RaftNodeSummary {
  node: string;
  lives: number;
  records: number;
  partialLines: number;
  malformedLines: number;
  /** Terms this node recorded itself leader of. */
  leaderTerms: number[];
  /** Highest commit index recorded. */
  maxCommit: number;
  /** Highest applied index recorded (entries or snapshot). */
  maxApplied: number;
}

export interface RaftCheckResult {
  ok: boolean | 'unknown';
  /** Why the verdict is unknown (no traces, a node without any record). */
  reason?: string;
  nodes: RaftNodeSummary[];
  /** Leaders per term, ascending (more than one node = a violation). */
  leaders: { term: number; nodes: string[] }[];
  /**
   * Committed entries: distinct indexes whose term some record gives; of those, the indexes given
   * by two records or more (other nodes, or other lives of a node) and so cross-checked; the
   * index comparisons made; the highest index.
   */
  committed: { indexes: number; crossChecked: number; comparisons: number; maxIndex: number };
  violations: RaftViolation[];
  /** Violations found beyond `maxViolations`. */
  moreViolations: number;
}

export interface RaftCheckOptions {
  /** Nodes that must have a trace (a missing one makes the verdict unknown). */
  expectedNodes?: string[];
  /** Wall-clock ms of the run's time zero: messages then show `+seconds` instead of epoch ms. */
  epochMs?: number;
  /** Violations listed in full (default 50). */
  maxViolations?: number;
}

const isInt = (x: unknown): x is number => typeof x === 'number' && Number.isInteger(x);
const isNum = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x);

/** A record if `v` has the shape of one, else null. */
function asRecord(v: unknown): RaftRecord | null {
  if (typeof v !== 'object' || v === null) return null;
  const o = v as Record<string, unknown>;
  if (!isNum(o.t)) return null;
  switch (o.k) {
    case 'start':
      return typeof o.node === 'string' && isInt(o.pid) ? (o as RaftRecord) : null;
    case 'leader':
    case 'stepdown':
      return isInt(o.term) ? (o as RaftRecord) : null;
    case 'commit':
      return isInt(o.commit) && isInt(o.term) ? (o as RaftRecord) : null;
    case 'entries':
      return isInt(o.from) && isInt(o.to) && isInt(o.term) && o.from <= o.to ? (o as RaftRecord) : null;
    case 'snapshot':
      return isInt(o.index) && isInt(o.term) && (o.from === 'disk' || o.from === 'leader') ? (o as RaftRecord) : null;
    case 'stop':
      return o as RaftRecord;
    default:
      return null;
  }
}

function parseLine(line: string): RaftRecord | null {
  try {
    return asRecord(JSON.parse(line));
  } catch {
    return null;
  }
}

const START_MARK = '{"k":"start"';

/** Splits one node's trace file into process lives, tolerating cut lines. */
export function parseRaftTrace(node: string, text: string): RaftTrace {
  const out: RaftTrace = { node, lives: [], records: 0, partialLines: 0, malformed: [] };
  const lines = text.split('\n');
  let life: RaftLife | null = null;
  let lives = 0;
  const newLife = (pid: number | null, at: number | null): RaftLife => {
    const l: RaftLife = { node, life: ++lives, pid, startedAt: at, records: [], truncated: false, clean: false };
    out.lives.push(l);
    return l;
  };
  // Index of the next non-empty line after i (or -1).
  const nextNonEmpty = (i: number): number => {
    for (let j = i + 1; j < lines.length; j++) if (lines[j]!.trim() !== '') return j;
    return -1;
  };
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!;
    if (raw.trim() === '') continue;
    let rec = parseLine(raw);
    if (rec === null) {
      // A cut line directly followed (same line) by the next life's start record.
      const at = raw.lastIndexOf(START_MARK);
      const glued = at > 0 ? parseLine(raw.slice(at)) : null;
      const next = nextNonEmpty(i);
      const endOfLife = glued !== null || next === -1 || parseLine(lines[next]!)?.k === 'start' || lines[next]!.startsWith(START_MARK);
      if (endOfLife) {
        out.partialLines++;
        if (life !== null) life.truncated = true;
      } else out.malformed.push({ line: i + 1, text: raw.length > 200 ? `${raw.slice(0, 200)}…` : raw });
      if (glued === null) continue;
      rec = glued;
    }
    out.records++;
    if (rec.k === 'start') {
      life = newLife(rec.pid, rec.t);
      life.records.push(rec);
      continue;
    }
    if (life === null) {
      life = { node, life: 0, pid: null, startedAt: null, records: [], truncated: false, clean: false };
      out.lives.push(life);
    }
    life.records.push(rec);
    if (rec.k === 'stop') life.clean = true;
  }
  return out;
}

/** Checks the invariants over every node's parsed trace. */
export function checkRaft(traces: RaftTrace[], opts: RaftCheckOptions = {}): RaftCheckResult {
  const maxViolations = opts.maxViolations ?? 50;
  const violations: RaftViolation[] = [];
  let more = 0;
  const add = (v: RaftViolation): void => {
    if (violations.length < maxViolations) violations.push(v);
    else more++;
  };
  const when = (t: number): string => (opts.epochMs === undefined ? `at ${t}` : `at +${((t - opts.epochMs) / 1000).toFixed(3)}s`);
  const lifeName = (l: { node: string; life: number; pid?: number | null }): string => `${l.node} (life ${l.life}${l.pid ? `, pid ${l.pid}` : ''})`;

  const nodes: RaftNodeSummary[] = [];
  const byTerm = new Map<number, Map<string, { node: string; life: number; pid: number | null; at: number }>>();
  const sources: RaftEntrySource[] = [];

  for (const tr of traces) {
    const sum: RaftNodeSummary = {
      node: tr.node,
      lives: tr.lives.filter((l) => l.life > 0).length,
      records: tr.records,
      partialLines: tr.partialLines,
      malformedLines: tr.malformed.length,
      leaderTerms: [],
      maxCommit: 0,
      maxApplied: 0,
    };
    nodes.push(sum);
    for (const life of tr.lives) {
      let prevCommit: number | null = null;
      for (const r of life.records) {
        switch (r.k) {
          case 'leader': {
            let m = byTerm.get(r.term);
            if (m === undefined) byTerm.set(r.term, (m = new Map()));
            if (!m.has(tr.node)) m.set(tr.node, { node: tr.node, life: life.life, pid: life.pid, at: r.t });
            if (!sum.leaderTerms.includes(r.term)) sum.leaderTerms.push(r.term);
            break;
          }
          case 'commit':
            if (prevCommit !== null && r.commit < prevCommit) {
              add({
                kind: 'commit-decreased',
                node: tr.node,
                life: life.life,
                pid: life.pid,
                from: prevCommit,
                to: r.commit,
                at: r.t,
                message: `${lifeName(life)}: commit index went back from ${prevCommit} to ${r.commit} ${when(r.t)} (term ${r.term})`,
              });
            }
            prevCommit = r.commit;
            if (r.commit > sum.maxCommit) sum.maxCommit = r.commit;
            break;
          case 'entries':
            sources.push({ node: tr.node, life: life.life, pid: life.pid, term: r.term, record: 'entries', from: r.from, to: r.to });
            if (r.to > sum.maxApplied) sum.maxApplied = r.to;
            break;
          case 'snapshot':
            sources.push({ node: tr.node, life: life.life, pid: life.pid, term: r.term, record: 'snapshot', from: r.index, to: r.index });
            if (r.index > sum.maxApplied) sum.maxApplied = r.index;
            break;
          default:
            break;
        }
      }
    }
    sum.leaderTerms.sort((a, b) => a - b);
  }

  // (a) one leader per term.
  const leaders: RaftCheckResult['leaders'] = [];
  for (const term of [...byTerm.keys()].sort((a, b) => a - b)) {
    const m = byTerm.get(term)!;
    const ls = [...m.values()].sort((a, b) => a.at - b.at);
    leaders.push({ term, nodes: ls.map((l) => l.node) });
    if (ls.length > 1) {
      add({
        kind: 'two-leaders',
        term,
        leaders: ls,
        message: `term ${term} has ${ls.length} leaders: ${ls.map((l) => `${lifeName(l)} ${when(l.at)}`).join(', ')}`,
      });
    }
  }

  // (c) committed prefixes agree. Sweep the ranges by start index; `canon` holds disjoint
  // segments (each index's first-seen term), in index order, covering what was seen up to `hi`.
  // A range starting at or after a gap's end can never reach back into that gap, so each new
  // range overlaps only segments already covering its overlap, and its excess goes at the end.
  sources.sort((a, b) => a.from - b.from || a.to - b.to);
  const canon: RaftEntrySource[] = [];
  let hi = 0;
  let indexes = 0;
  let comparisons = 0;
  const overlaps: [number, number][] = [];
  for (const r of sources) {
    if (r.from <= hi) {
      const top = Math.min(r.to, hi);
      // First segment with to >= r.from (segments are disjoint and sorted, so `to` is sorted).
      let lo = 0;
      let up = canon.length;
      while (lo < up) {
        const mid = (lo + up) >> 1;
        if (canon[mid]!.to < r.from) lo = mid + 1;
        else up = mid;
      }
      for (let s = lo; s < canon.length && canon[s]!.from <= top; s++) {
        const seg = canon[s]!;
        const a = Math.max(seg.from, r.from);
        const b = Math.min(seg.to, top);
        if (b < a) continue;
        comparisons += b - a + 1;
        overlaps.push([a, b]);
        if (seg.term !== r.term) {
          const src = (x: RaftEntrySource): string =>
            `${x.term} on ${lifeName(x)} (${x.record === 'snapshot' ? `snapshot at ${x.from}` : `applied ${x.from}..${x.to}`})`;
          add({
            kind: 'log-mismatch',
            from: a,
            to: b,
            a: seg,
            b: r,
            message: `committed ${a === b ? `index ${a}` : `indexes ${a}..${b}`} disagree: term ${src(seg)}, but term ${src(r)}`,
          });
        }
      }
    }
    if (r.to > hi) {
      const from = Math.max(r.from, hi + 1);
      canon.push({ ...r, from });
      indexes += r.to - from + 1;
      hi = r.to;
    }
  }

  overlaps.sort((p, q) => p[0] - q[0]);
  let crossChecked = 0;
  let upTo = 0;
  for (const [a, b] of overlaps) {
    if (b <= upTo) continue;
    crossChecked += b - Math.max(a, upTo + 1) + 1;
    upTo = b;
  }

  const result: RaftCheckResult = {
    ok: violations.length === 0 && more === 0,
    nodes,
    leaders,
    committed: { indexes, crossChecked, comparisons, maxIndex: hi },
    violations,
    moreViolations: more,
  };
  if (result.ok === true) {
    const missing = (opts.expectedNodes ?? []).filter((n) => !traces.some((t) => t.node === n && t.records > 0));
    if (traces.every((t) => t.records === 0)) {
      result.ok = 'unknown';
      result.reason = 'no Raft trace records';
    } else if (missing.length > 0) {
      result.ok = 'unknown';
      result.reason = `no Raft trace from ${missing.join(', ')}`;
    }
  }
  return result;
}

/** Convenience: parse every node's trace text and check. */
export function checkRaftTraces(texts: Record<string, string>, opts: RaftCheckOptions = {}): RaftCheckResult {
  return checkRaft(
    Object.entries(texts).map(([node, text]) => parseRaftTrace(node, text)),
    opts,
  );
}
