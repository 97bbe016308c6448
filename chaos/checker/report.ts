// Rendering checker results: a human summary (text) and a JSON-serialisable object. PURE.

import type { LinearizabilityResult } from './linearizability.js';
import type { LostWritesResult } from './lost-writes.js';
import type { RaftCheckResult, RaftNodeSummary, RaftViolation } from './raft.js';
import type { TasksResult, TaskViolation } from './tasks.js';
import type { ServicesResult, ServiceViolation } from './services.js';
import type { MeshResult } from './mesh.js';
import type { DownDeclaration, WorkersResult } from './workers.js';
import type { AuthProbe, AuthResult, WipeRecord, WipesResult, WipeViolation } from './wipes.js';
import { describeOp, type KvVersioned, type Op } from './types.js';

export type Verdict = 'pass' | 'fail' | 'unknown';

export interface CheckResults {
  linearizability?: LinearizabilityResult;
  lostWrites?: LostWritesResult;
  tasks?: TasksResult;
  raft?: RaftCheckResult;
  workers?: WorkersResult;
  /** Acknowledged large values (the grow nemesis), judged like lostWrites on digests. */
  largeValues?: LostWritesResult & { refusedQuota?: number };
  wipes?: WipesResult & { records?: WipeRecord[] };
  auth?: AuthResult;
  services?: ServicesResult;
  mesh?: MeshResult;
}

export interface ReportJson {
  verdict: Verdict;
  linearizability?:
    | { verdict: 'pass'; checked: number; plainWrites?: number }
    | { verdict: 'fail'; key: string; reason: string; window: Op[]; windowText: string[]; witness?: string }
    | { verdict: 'unknown'; reason: string; key?: string };
  lostWrites?: {
    verdict: Verdict;
    checked: number;
    plainWrites?: number;
    lost: { key: string; opId: Op['id']; reason: string; final: KvVersioned | null }[];
    unexplained: { key: string; final: KvVersioned; reason: string }[];
    unchecked: string[];
  };
  tasks?: { verdict: Verdict; tasks: number; violations: TaskViolation[]; orphanOverlaps?: number };
  largeValues?: { verdict: Verdict; checked: number; refusedQuota: number; lost: { key: string; opId: Op['id']; reason: string }[]; unexplained: { key: string; reason: string }[]; unchecked: number };
  wipes?: { verdict: Verdict; wipes: number; refused: number; violations: WipeViolation[]; records: WipeRecord[] };
  auth?: { verdict: Verdict; probes: AuthProbe[]; violations: string[] };
  /** Service invariants (chaos/checker/services.ts). */
  services?: Omit<ServicesResult, 'ok' | 'violations'> & { verdict: Verdict; violations: ServiceViolation[] };
  /** The routing mesh's promises (chaos/checker/mesh.ts). */
  mesh?: Omit<MeshResult, 'ok'> & { verdict: Verdict };
  /** No healthy worker declared down (chaos/checker/workers.ts). */
  workers?: { verdict: Verdict; workers: number; excused: number; violations: DownDeclaration[] };
  raft?: {
    verdict: Verdict;
    reason?: string;
    /** Records read per node (and process lives, cut lines, highest commit/applied index). */
    nodes: RaftNodeSummary[];
    /** Leaders per term. */
    leaders: { term: number; nodes: string[] }[];
    committed: RaftCheckResult['committed'];
    violations: RaftViolation[];
    moreViolations: number;
  };
}

function linVerdict(r: LinearizabilityResult): Verdict {
  return r.ok === true ? 'pass' : r.ok === false ? 'fail' : 'unknown';
}

function combine(vs: Verdict[]): Verdict {
  if (vs.includes('fail')) return 'fail';
  if (vs.includes('unknown')) return 'unknown';
  return 'pass';
}

export function reportJson(r: CheckResults): ReportJson {
  const verdicts: Verdict[] = [];
  const out: ReportJson = { verdict: 'pass' };
  if (r.linearizability !== undefined) {
    const l = r.linearizability;
    verdicts.push(linVerdict(l));
    if (l.ok === true) out.linearizability = { verdict: 'pass', checked: l.checked, ...(l.plainWrites === undefined ? {} : { plainWrites: l.plainWrites }) };
    else if (l.ok === false) {
      out.linearizability = { verdict: 'fail', key: l.key, reason: l.reason, window: l.minimalWindow, windowText: l.minimalWindow.map(describeOp) };
      if (l.witness !== undefined) out.linearizability.witness = l.witness;
    } else {
      out.linearizability = { verdict: 'unknown', reason: l.reason };
      if (l.key !== undefined) out.linearizability.key = l.key;
    }
  }
  if (r.lostWrites !== undefined) {
    const w = r.lostWrites;
    const v: Verdict = w.ok ? 'pass' : 'fail';
    verdicts.push(v);
    out.lostWrites = {
      verdict: v,
      checked: w.checked,
      ...(w.plainWrites === undefined ? {} : { plainWrites: w.plainWrites }),
      lost: w.lost.map((x) => ({ key: x.key, opId: x.op.id, reason: x.reason, final: x.final })),
      unexplained: w.unexplained,
      unchecked: w.unchecked,
    };
  }
  if (r.tasks !== undefined) {
    const v: Verdict = r.tasks.ok ? 'pass' : 'fail';
    verdicts.push(v);
    out.tasks = { verdict: v, tasks: r.tasks.tasks, violations: r.tasks.violations, ...(r.tasks.orphanOverlaps === undefined ? {} : { orphanOverlaps: r.tasks.orphanOverlaps }) };
  }
  if (r.raft !== undefined) {
    const x = r.raft;
    const v: Verdict = x.ok === true ? 'pass' : x.ok === false ? 'fail' : 'unknown';
    verdicts.push(v);
    out.raft = { verdict: v, nodes: x.nodes, leaders: x.leaders, committed: x.committed, violations: x.violations, moreViolations: x.moreViolations };
    if (x.reason !== undefined) out.raft.reason = x.reason;
  }
  if (r.workers !== undefined) {
    const v: Verdict = r.workers.ok ? 'pass' : 'fail';
    verdicts.push(v);
    out.workers = { verdict: v, workers: r.workers.workers, excused: r.workers.excused, violations: r.workers.violations };
  }
  if (r.largeValues !== undefined) {
    const g = r.largeValues;
    // Large values not read back after healing leave the check inconclusive.
    const v: Verdict = !g.ok ? 'fail' : g.unchecked.length > 0 ? 'unknown' : 'pass';
    verdicts.push(v);
    out.largeValues = {
      verdict: v,
      checked: g.checked,
      refusedQuota: g.refusedQuota ?? 0,
      lost: g.lost.map((x) => ({ key: x.key, opId: x.op.id, reason: x.reason })),
      unexplained: g.unexplained.map((x) => ({ key: x.key, reason: x.reason })),
      unchecked: g.unchecked.length,
    };
  }
  if (r.wipes !== undefined) {
    const v: Verdict = r.wipes.ok ? 'pass' : 'fail';
    verdicts.push(v);
    out.wipes = { verdict: v, wipes: r.wipes.wipes, refused: r.wipes.refused, violations: r.wipes.violations, records: r.wipes.records ?? [] };
  }
  if (r.auth !== undefined) {
    const v: Verdict = r.auth.ok === true ? 'pass' : r.auth.ok === false ? 'fail' : 'unknown';
    verdicts.push(v);
    out.auth = { verdict: v, probes: r.auth.probes, violations: r.auth.violations };
  }
  if (r.services !== undefined) {
    const { ok, violations, ...rest } = r.services;
    const v: Verdict = ok ? 'pass' : 'fail';
    verdicts.push(v);
    out.services = { verdict: v, ...rest, violations };
  }
  if (r.mesh !== undefined) {
    const { ok, ...rest } = r.mesh;
    const v: Verdict = ok === true ? 'pass' : ok === false ? 'fail' : 'unknown';
    verdicts.push(v);
    out.mesh = { verdict: v, ...rest };
  }
  out.verdict = combine(verdicts);
  return out;
}

const LIST_LIMIT = 20;

export function reportText(r: CheckResults): string {
  const j = reportJson(r);
  const lines: string[] = [`chaos check: ${j.verdict.toUpperCase()}`];
  const l = j.linearizability;
  if (l !== undefined) {
    if (l.verdict === 'pass') lines.push(`  linearizability: pass (${l.checked} ops checked${l.plainWrites === undefined ? '' : `, ${l.plainWrites} acknowledged writes of plain clients among them`})`);
    else if (l.verdict === 'unknown') lines.push(`  linearizability: UNKNOWN — ${l.reason}${l.key === undefined ? '' : ` (key ${JSON.stringify(l.key)})`}`);
    else {
      lines.push(`  linearizability: FAIL on key ${JSON.stringify(l.key)}`, `    ${l.reason}`, '    ops:');
      for (const t of l.windowText) lines.push(`      ${t}`);
      if (l.witness !== undefined) for (const t of l.witness.split('\n')) lines.push(`    ${t}`);
    }
  }
  const w = j.lostWrites;
  if (w !== undefined) {
    const plain = w.plainWrites === undefined ? '' : ` (${w.plainWrites} of plain clients, no x-request-id)`;
    lines.push(`  lost writes: ${w.verdict === 'pass' ? 'pass' : 'FAIL'} (${w.checked} acknowledged writes checked${plain}, ${w.lost.length} lost)`);
    for (const x of w.lost.slice(0, LIST_LIMIT)) lines.push(`    lost ${x.reason}`);
    if (w.lost.length > LIST_LIMIT) lines.push(`    … and ${w.lost.length - LIST_LIMIT} more`);
    for (const x of w.unexplained) lines.push(`    key ${JSON.stringify(x.key)}: ${x.reason}`);
    if (w.unchecked.length > 0) lines.push(`    not checked (no final value): ${w.unchecked.map((k) => JSON.stringify(k)).join(', ')}`);
  }
  const t = j.tasks;
  if (t !== undefined) {
    lines.push(`  tasks: ${t.verdict === 'pass' ? 'pass' : 'FAIL'} (${t.tasks} tasks, ${t.violations.length} violations${t.orphanOverlaps === undefined ? '' : `; ${t.orphanOverlaps} overlaps with a dead worker's orphans, within the bound`})`);
    for (const v of t.violations.slice(0, LIST_LIMIT)) lines.push(`    ${v.kind}: ${v.message}`);
    if (t.violations.length > LIST_LIMIT) lines.push(`    … and ${t.violations.length - LIST_LIMIT} more`);
  }
  const wk = j.workers;
  if (wk !== undefined) {
    lines.push(`  healthy workers: ${wk.verdict === 'pass' ? 'pass' : 'FAIL'} (${wk.workers} workers, ${wk.violations.length} declared down without a fault${wk.excused > 0 ? `, ${wk.excused} down declarations of crashed/restarted workers` : ''})`);
    for (const d of wk.violations.slice(0, LIST_LIMIT)) lines.push(`    ${d.manager} declared ${d.node} down: ${d.reason}`);
    if (wk.violations.length > LIST_LIMIT) lines.push(`    … and ${wk.violations.length - LIST_LIMIT} more`);
  }
  const g = j.largeValues;
  if (g !== undefined) {
    lines.push(`  large values: ${g.verdict === 'pass' ? 'pass' : g.verdict === 'fail' ? 'FAIL' : 'UNKNOWN'} (${g.checked} acknowledged large writes checked by length+digest, ${g.lost.length} lost; ${g.refusedQuota} refused by the quota)`);
    for (const x of g.lost.slice(0, LIST_LIMIT)) lines.push(`    lost ${x.reason}`);
    for (const x of g.unexplained.slice(0, LIST_LIMIT)) lines.push(`    key ${JSON.stringify(x.key)}: ${x.reason}`);
    if (g.unchecked > 0) lines.push(`    not checked (no final value): ${g.unchecked} keys`);
  }
  const wp = j.wipes;
  if (wp !== undefined) {
    lines.push(`  wiped managers: ${wp.verdict === 'pass' ? 'pass' : 'FAIL'} (${wp.wipes} wipes, ${wp.refused} refused to start, ${wp.violations.length} violations)`);
    for (const v of wp.violations.slice(0, LIST_LIMIT)) lines.push(`    ${v.kind}: ${v.message}`);
  }
  const au = j.auth;
  if (au !== undefined) {
    const head = au.verdict === 'pass' ? 'pass' : au.verdict === 'fail' ? 'FAIL' : 'UNKNOWN (a manager did not answer)';
    lines.push(`  tokens after healing: ${head} (anonymous PUT: ${au.probes.map((p) => `${p.manager} ${p.status ?? 'no answer'}`).join(', ')})`);
    for (const v of au.violations) lines.push(`    ${v}`);
  }
  const sv = j.services;
  if (sv !== undefined) {
    const conv = Object.entries(sv.convergedAfter)
      .map(([k, ms]) => `${k} ${ms === null ? 'never' : `${(ms / 1000).toFixed(1)}s`}`)
      .join(', ');
    const ex = sv.excused;
    lines.push(
      `  services: ${sv.verdict === 'pass' ? 'pass' : 'FAIL'} (${sv.services} services, ${sv.samples} samples, ${sv.updatesSeen} updates seen in ${sv.updateSamples} samples, ${sv.processes} process runs; ${sv.violations.length} violations; excused: ${ex.downOverlaps} overlaps with a down worker, ${ex.startFirstOverlaps} start-first old+new, ${ex.availabilityWhileDown} availability dips near a down worker or a scale; converged after healing: ${conv || 'not checked'})`,
    );
    for (const v of sv.violations.slice(0, LIST_LIMIT)) lines.push(`    ${v.kind}: ${v.message}`);
    if (sv.violations.length > LIST_LIMIT) lines.push(`    … and ${sv.violations.length - LIST_LIMIT} more`);
  }
  const me = j.mesh;
  if (me !== undefined) {
    const head = me.verdict === 'pass' ? 'pass' : me.verdict === 'fail' ? 'FAIL' : `UNKNOWN — ${me.reason ?? '?'}`;
    const fz = me.freezes;
    const worst = fz.reduce((m, f) => Math.max(m, f.maxPerClientAddr), 0);
    const spans = fz.reduce((m, f) => Math.max(m, f.maxSpansPerAddr), 0);
    lines.push(
      `  mesh: ${head} (${me.requests} requests by ${me.clients} clients through ${me.addrs.length} worker addresses, ${me.failed} failed; ` +
        `${me.judged} judged outside worker and replica faults, ${me.violations.filter((v) => v.kind === 'mesh-failure').length} of them failed; ` +
        `${fz.length} frozen replicas: ${me.inFreezes.failed}/${me.inFreezes.requests} failed during the freezes, at most ${worst} per client and address and ${spans} spans of stalls per address (allowed ${fz.length === 0 ? '-' : Math.min(...fz.map((f) => f.allowed))}); ` +
        `not judged: ${me.toDownWorker.failed}/${me.toDownWorker.requests} failed to a down worker, ${me.settling.failed}/${me.settling.requests} while settling; ${me.violations.length + me.moreViolations} violations)`,
    );
    for (const v of me.violations.slice(0, LIST_LIMIT)) lines.push(`    ${v.kind}: ${v.message}`);
    const rest = me.violations.length - Math.min(LIST_LIMIT, me.violations.length) + me.moreViolations;
    if (rest > 0) lines.push(`    … and ${rest} more`);
  }
  const ra = j.raft;
  if (ra !== undefined) {
    const records = ra.nodes.reduce((n, x) => n + x.records, 0);
    const lives = ra.nodes.reduce((n, x) => n + x.lives, 0);
    const cut = ra.nodes.reduce((n, x) => n + x.partialLines, 0);
    const bad = ra.nodes.reduce((n, x) => n + x.malformedLines, 0);
    const what = `${ra.nodes.length} nodes, ${lives} process lives, ${records} records${cut > 0 ? `, ${cut} cut lines skipped` : ''}${bad > 0 ? `, ${bad} MALFORMED lines skipped` : ''}`;
    const n = ra.violations.length + ra.moreViolations;
    const head = ra.verdict === 'pass' ? 'pass' : ra.verdict === 'fail' ? 'FAIL' : `UNKNOWN — ${ra.reason ?? '?'}`;
    lines.push(`  raft: ${head} (${what}; ${ra.leaders.length} terms with a leader; terms of ${ra.committed.indexes} committed indexes, ${ra.committed.crossChecked} cross-checked; ${n} violations)`);
    for (const v of ra.violations.slice(0, LIST_LIMIT)) lines.push(`    ${v.kind}: ${v.message}`);
    const rest = ra.violations.length - Math.min(LIST_LIMIT, ra.violations.length) + ra.moreViolations;
    if (rest > 0) lines.push(`    … and ${rest} more`);
  }
  return lines.join('\n');
}

export function renderReport(r: CheckResults): { text: string; json: ReportJson } {
  return { text: reportText(r), json: reportJson(r) };
}
