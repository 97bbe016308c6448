// timeline.html of a chaos run: one self-contained page (inline SVG and CSS, no script, no
// external assets) showing, on the run's clock: the faults (one lane per kind), each manager's
// lane (down while killed, paused, and the terms in which it led, from its own Raft trace), and
// the latency of every kv operation (log scale, coloured by outcome), with the windows in which
// no operation succeeded shaded. PURE: a function of the recorded data.
import type { RaftTrace } from './checker/raft.js';
import type { LeaderObservation } from './monitor.js';
import type { NemesisEvent } from './nemesis.js';

export interface TimelineOp {
  invoke: number;
  complete: number | null;
  outcome: 'ok' | 'fail' | 'unknown';
  type: string;
}

export interface Interval {
  from: number;
  to: number;
}

export interface LeaderSegment extends Interval {
  node: string;
  term: number;
  /** 'trace': the node's own Raft trace; 'monitor': the harness saw it lead via /v1/status. */
  source: 'trace' | 'monitor';
}

export interface FaultMark extends Interval {
  kind: string;
  step: number | null;
  instant: boolean;
  targets: string[];
  detail: string;
}

export interface DownInterval extends Interval {
  node: string;
  why: 'killed' | 'paused' | 'crashed';
}

export interface TimelineInput {
  title: string;
  subtitle: string[];
  /** Right end of the time axis (ms on the run clock); the left end is 0. */
  endMs: number;
  /** When the workload stopped and the final heal began. */
  healAt: number | null;
  managers: string[];
  ops: TimelineOp[];
  nemesis: NemesisEvent[];
  leaders: LeaderSegment[];
  unavailable: Interval[];
  /** Per-op timeout: the top of the latency axis. */
  opTimeoutMs: number;
}

const FAULT_ORDER = ['kill', 'pause', 'long-pause', 'partition', 'restart', 'drop', 'latency', 'clock-step', 'wipe', 'disk-full', 'grow', 'kill-worker', 'worker', 'freeze-replica', 'crash'];
const FAULT_COLOR: Record<string, string> = {
  kill: '#c0392b',
  pause: '#8e44ad',
  partition: '#d35400',
  restart: '#a93226',
  drop: '#2471a3',
  latency: '#b7950b',
  'long-pause': '#5b2c6f',
  'clock-step': '#117a65',
  wipe: '#641e16',
  'disk-full': '#6e2c00',
  grow: '#1a5276',
  'kill-worker': '#4d5656',
  worker: '#7b241c',
  'freeze-replica': '#1f618d',
  crash: '#000000',
};
const TERM_COLORS = ['#1e8449', '#2e86c1', '#ca6f1e', '#7d3c98', '#17a589', '#b03a2e', '#5d6d7e', '#a04000'];
const OUTCOME_COLOR: Record<TimelineOp['outcome'], string> = { ok: '#27ae60', fail: '#e67e22', unknown: '#e74c3c' };

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const secs = (ms: number): string => `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)}s`;

/** Fault intervals: a `start` lasts until the next heal; `instant` faults and crashes are marks. */
export function faultMarks(events: NemesisEvent[], endMs: number): FaultMark[] {
  const out: FaultMark[] = [];
  const sorted = [...events].sort((a, b) => a.at - b.at);
  for (let i = 0; i < sorted.length; i++) {
    const e = sorted[i]!;
    if (e.phase === 'start') {
      const heal = sorted.slice(i + 1).find((x) => x.phase === 'heal');
      out.push({ kind: e.kind, step: e.step, instant: false, from: e.at, to: heal?.at ?? endMs, targets: e.targets, detail: e.detail });
    } else if (e.phase === 'instant' || e.kind === 'crash') {
      out.push({ kind: e.kind, step: e.step, instant: true, from: e.at, to: e.at, targets: e.targets, detail: e.detail });
    }
  }
  return out;
}

/** When each manager was down: killed or paused (until the heal that restarted/resumed it), or crashed. */
export function downIntervals(events: NemesisEvent[], endMs: number): DownInterval[] {
  const out: DownInterval[] = [];
  const sorted = [...events].sort((a, b) => a.at - b.at);
  for (let i = 0; i < sorted.length; i++) {
    const e = sorted[i]!;
    const why = (e.kind === 'kill' || e.kind === 'wipe') && e.phase === 'start' ? 'killed' : (e.kind === 'pause' || e.kind === 'long-pause') && e.phase === 'start' ? 'paused' : e.kind === 'crash' ? 'crashed' : null;
    if (why === null) continue;
    for (const node of e.targets) {
      const heal = sorted.slice(i + 1).find((x) => x.phase === 'heal' && x.targets.includes(node));
      out.push({ node, why, from: e.at, to: heal?.at ?? endMs });
    }
  }
  return out;
}

/**
 * Leadership per node from the Raft traces: from a `leader` record to the node's `stepdown`, its
 * clean stop, the kill/restart/crash that ended that process life, or its next life. Times are
 * converted to the run clock with `epochMs` (the wall-clock time of the run's zero).
 */
export function leaderSegmentsFromTraces(traces: RaftTrace[], epochMs: number, events: NemesisEvent[], endMs: number): LeaderSegment[] {
  const out: LeaderSegment[] = [];
  for (const tr of traces) {
    const deaths = events
      .filter((e) => e.targets.includes(tr.node) && (((e.kind === 'kill' || e.kind === 'wipe') && e.phase === 'start') || e.kind === 'restart' || e.kind === 'crash'))
      .map((e) => e.at)
      .sort((a, b) => a - b);
    tr.lives.forEach((life, li) => {
      const last = life.records.length > 0 ? life.records[life.records.length - 1]!.t - epochMs : -Infinity;
      const next = tr.lives[li + 1]?.startedAt;
      let lifeEnd = next !== undefined && next !== null ? next - epochMs : endMs;
      if (!life.clean) {
        const death = deaths.find((d) => d >= last);
        if (death !== undefined && death < lifeEnd) lifeEnd = death;
      }
      let open: { term: number; from: number } | null = null;
      const close = (to: number): void => {
        if (open !== null) out.push({ node: tr.node, term: open.term, from: open.from, to: Math.max(open.from, to), source: 'trace' });
        open = null;
      };
      for (const r of life.records) {
        if (r.k === 'leader') {
          close(r.t - epochMs);
          open = { term: r.term, from: r.t - epochMs };
        } else if (r.k === 'stepdown') close(r.t - epochMs);
        else if (r.k === 'stop') close(r.t - epochMs);
      }
      close(lifeEnd);
    });
  }
  return out.sort((a, b) => a.from - b.from);
}

/** Leadership as the harness monitor saw it (fallback when there is no trace). */
export function leaderSegmentsFromMonitor(observed: LeaderObservation[], endMs: number): LeaderSegment[] {
  return observed.map((o, i) => ({ node: o.leader, term: o.term, from: o.at, to: observed[i + 1]?.at ?? endMs, source: 'monitor' as const }));
}

/** Windows (within [0, endMs]) longer than `minMs` in which no operation completed `ok`. */
export function unavailableWindows(ops: TimelineOp[], endMs: number, minMs = 1000): { windows: Interval[]; longest: Interval | null } {
  const oks = ops
    .filter((o) => o.outcome === 'ok' && o.complete !== null && o.complete <= endMs)
    .map((o) => o.complete!)
    .sort((a, b) => a - b);
  const points = [0, ...oks, endMs];
  const windows: Interval[] = [];
  let longest: Interval | null = null;
  for (let i = 1; i < points.length; i++) {
    const w = { from: points[i - 1]!, to: points[i]! };
    const len = w.to - w.from;
    if (longest === null || len > longest.to - longest.from) longest = w;
    if (len >= minMs) windows.push(w);
  }
  return { windows, longest };
}

function niceStep(spanMs: number, px: number): number {
  const target = (spanMs / px) * 90; // a tick every ~90 px
  for (const s of [1000, 2000, 5000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000, 1_800_000, 3_600_000]) if (s >= target) return s;
  return 3_600_000;
}

/** The page. */
export function renderTimeline(inp: TimelineInput): string {
  const end = Math.max(1000, inp.endMs);
  const plotW = Math.round(Math.min(4000, Math.max(900, (end / 1000) * 4)));
  const left = 110;
  const right = 20;
  const width = left + plotW + right;
  const x = (ms: number): number => left + (Math.min(Math.max(ms, 0), end) / end) * plotW;
  const f1 = (n: number): string => n.toFixed(1);

  const faults = faultMarks(inp.nemesis, end);
  const down = downIntervals(inp.nemesis, end);
  const kinds = FAULT_ORDER.filter((k) => faults.some((f) => f.kind === k));
  const laneH = 20;
  let y = 40;
  const parts: string[] = [];

  // ------------------------------------------------------------------ fault lanes
  const faultTop = y;
  parts.push(`<text class="section" x="4" y="${y - 8}">faults</text>`);
  const faultY = new Map<string, number>();
  for (const k of kinds) {
    faultY.set(k, y);
    parts.push(`<rect class="lane" x="${left}" y="${y}" width="${plotW}" height="${laneH - 2}"/>`);
    parts.push(`<text class="lane-label" x="${left - 6}" y="${y + 13}">${esc(k)}</text>`);
    y += laneH;
  }
  if (kinds.length === 0) {
    parts.push(`<text class="note" x="${left}" y="${y + 13}">no faults</text>`);
    y += laneH;
  }
  for (const [i, f] of faults.entries()) {
    const ly = faultY.get(f.kind);
    if (ly === undefined) continue;
    const x0 = x(f.from);
    const w = f.instant ? 3 : Math.max(3, x(f.to) - x0);
    const label = `${f.kind}${f.targets.length > 0 ? ` ${f.targets.join(',')}` : ''}`;
    // Room for the label: up to the next mark in the same lane (instants), or the bar itself.
    const next = faults.slice(i + 1).find((g) => g.kind === f.kind);
    const room = f.instant ? (next === undefined ? left + plotW - x0 : x(next.from) - x0) : w;
    const tip = `${f.step === null ? '' : `step ${f.step}: `}${f.detail} (+${secs(f.from)}${f.instant ? '' : ` … +${secs(f.to)}`})`;
    parts.push(
      `<g class="fault" data-kind="${esc(f.kind)}"${f.step === null ? '' : ` data-step="${f.step}"`}><title>${esc(tip)}</title>` +
        `<rect x="${f1(f.instant ? x0 - 1.5 : x0)}" y="${ly + 1}" width="${f1(w)}" height="${laneH - 4}" fill="${FAULT_COLOR[f.kind] ?? '#555'}"/>` +
        (room > 6.5 * label.length + 6 ? `<text class="${f.instant ? 'fault-label-out' : 'fault-label'}" x="${f1(x0 + (f.instant ? 3 : 2))}" y="${ly + 13}">${esc(label)}</text>` : '') +
        `</g>`,
    );
  }
  y += 14;

  // ------------------------------------------------------------------ manager lanes
  parts.push(`<text class="section" x="4" y="${y - 4}">managers</text>`);
  y += 4;
  const nodeY = new Map<string, number>();
  for (const m of inp.managers) {
    nodeY.set(m, y);
    parts.push(`<rect class="lane" x="${left}" y="${y}" width="${plotW}" height="${laneH - 2}"/>`);
    parts.push(`<text class="lane-label" x="${left - 6}" y="${y + 13}">${esc(m)}</text>`);
    y += laneH;
  }
  for (const d of down) {
    const ly = nodeY.get(d.node);
    if (ly === undefined) continue;
    parts.push(
      `<rect class="down down-${d.why}" x="${f1(x(d.from))}" y="${ly + 1}" width="${f1(Math.max(2, x(d.to) - x(d.from)))}" height="${laneH - 4}"><title>${esc(`${d.node} ${d.why} +${secs(d.from)} … +${secs(d.to)}`)}</title></rect>`,
    );
  }
  for (const s of inp.leaders) {
    const ly = nodeY.get(s.node);
    if (ly === undefined || s.to < 0) continue;
    const x0 = x(s.from);
    const w = Math.max(2, x(s.to) - x0);
    const color = TERM_COLORS[s.term % TERM_COLORS.length]!;
    parts.push(
      `<g class="leader-seg" data-node="${esc(s.node)}" data-term="${s.term}"><title>${esc(`${s.node} leader of term ${s.term} (${s.source === 'trace' ? 'its Raft trace' : 'seen by the harness monitor'}) +${secs(Math.max(0, s.from))} … +${secs(s.to)}`)}</title>` +
        `<rect x="${f1(x0)}" y="${ly + 4}" width="${f1(w)}" height="${laneH - 10}" fill="${color}" fill-opacity="0.85"/>` +
        (w >= 22 ? `<text class="term-label" x="${f1(x0 + 2)}" y="${ly + 12}">t${s.term}</text>` : '') +
        `</g>`,
    );
  }
  y += 14;

  // ------------------------------------------------------------------ latency plot
  const plotTop = y + 10;
  const plotH = 260;
  parts.push(`<text class="section" x="4" y="${plotTop - 6}">op latency</text>`);
  const completed = inp.ops.filter((o) => o.complete !== null);
  let topLat = 1;
  while (topLat < inp.opTimeoutMs * 1.2) topLat *= 10;
  const lo = 0.1;
  const ly = (lat: number): number => plotTop + plotH - (Math.log10(Math.max(lo, Math.min(lat, topLat)) / lo) / Math.log10(topLat / lo)) * plotH;
  parts.push(`<rect class="plot" x="${left}" y="${plotTop}" width="${plotW}" height="${plotH}"/>`);
  for (const w of inp.unavailable) {
    parts.push(
      `<rect class="unavailable" x="${f1(x(w.from))}" y="${faultTop}" width="${f1(Math.max(1, x(w.to) - x(w.from)))}" height="${plotTop + plotH - faultTop}"><title>${esc(`no operation succeeded for ${secs(w.to - w.from)} (+${secs(w.from)} … +${secs(w.to)})`)}</title></rect>`,
    );
  }
  for (let v = lo; v <= topLat; v *= 10) {
    const yy = ly(v);
    parts.push(`<line class="grid" x1="${left}" x2="${left + plotW}" y1="${f1(yy)}" y2="${f1(yy)}"/>`);
    parts.push(`<text class="axis" x="${left - 6}" y="${f1(yy + 4)}">${v >= 1000 ? `${v / 1000} s` : `${+v.toFixed(1)} ms`}</text>`);
  }
  const timeoutY = ly(inp.opTimeoutMs);
  parts.push(`<line class="timeout" x1="${left}" x2="${left + plotW}" y1="${f1(timeoutY)}" y2="${f1(timeoutY)}"/>`);
  parts.push(`<text class="note" x="${left + plotW - 4}" y="${f1(timeoutY - 3)}" text-anchor="end">op timeout</text>`);
  // One dot per pixel and outcome (a 10-minute run has far more operations than pixels).
  const counts: Record<TimelineOp['outcome'], number> = { ok: 0, fail: 0, unknown: 0 };
  for (const outcome of ['ok', 'fail', 'unknown'] as const) {
    const seen = new Set<number>();
    const d: string[] = [];
    for (const o of completed) {
      if (o.outcome !== outcome) continue;
      counts[outcome]++;
      const px = Math.round(x(o.invoke));
      const py = Math.round(ly(o.complete! - o.invoke));
      const key = px * 100_000 + py;
      if (seen.has(key)) continue;
      seen.add(key);
      d.push(`M${px} ${py}h0`);
    }
    if (d.length > 0) parts.push(`<path class="ops ops-${outcome}" stroke="${OUTCOME_COLOR[outcome]}" d="${d.join('')}"/>`);
  }
  y = plotTop + plotH;

  // ------------------------------------------------------------------ time axis
  const step = niceStep(end, plotW);
  for (let t = 0; t <= end; t += step) {
    const xx = x(t);
    parts.push(`<line class="tick" x1="${f1(xx)}" x2="${f1(xx)}" y1="${faultTop}" y2="${y + 4}"/>`);
    parts.push(`<text class="axis-x" x="${f1(xx)}" y="${y + 17}">${t / 1000}s</text>`);
  }
  if (inp.healAt !== null) {
    const xx = x(inp.healAt);
    parts.push(`<line class="heal" x1="${f1(xx)}" x2="${f1(xx)}" y1="${faultTop - 14}" y2="${y}"/>`);
    const nearEnd = xx > left + plotW - 180;
    parts.push(`<text class="note" x="${f1(nearEnd ? xx - 3 : xx + 3)}" y="${faultTop - 16}"${nearEnd ? ' text-anchor="end"' : ''}>workload stopped, final heal</text>`);
  }
  y += 30;

  const legend = [
    ...Object.entries(OUTCOME_COLOR).map(([k, c]) => `<span><i style="background:${c}"></i>${k} (${counts[k as TimelineOp['outcome']]})</span>`),
    `<span><i class="sw-killed"></i>killed / crashed</span>`,
    `<span><i class="sw-paused"></i>paused</span>`,
    `<span><i class="sw-unavail"></i>no op succeeded (≥ 1 s)</span>`,
  ].join('');
  const faultRows = faults
    .map((f) => `<tr><td>+${secs(f.from)}</td><td>${f.instant ? '' : `+${secs(f.to)}`}</td><td>${f.step ?? ''}</td><td>${esc(f.kind)}</td><td>${esc(f.detail)}</td></tr>`)
    .join('\n');

  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${esc(inp.title)}</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 16px; color: #222; }
h1 { font-size: 18px; margin: 0 0 4px; }
.sub { color: #555; margin: 0; white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: 12px; }
.scroll { overflow-x: auto; border: 1px solid #ddd; margin: 12px 0; }
svg text { font: 11px system-ui, sans-serif; }
.section { font-weight: 600; fill: #333; }
.lane { fill: #f4f6f7; }
.lane-label, .axis { text-anchor: end; fill: #444; }
.axis-x { text-anchor: middle; fill: #444; }
.fault-label { fill: #fff; pointer-events: none; }
.fault-label-out { fill: #333; pointer-events: none; }
.term-label { fill: #fff; font-size: 9px; pointer-events: none; }
.down-killed, .down-crashed { fill: #566573; }
.down-paused { fill: #aeb6bf; }
.plot { fill: #fbfcfc; stroke: #ccc; }
.grid { stroke: #e5e8e8; }
.tick { stroke: #eee; }
.timeout { stroke: #e74c3c; stroke-dasharray: 4 3; }
.heal { stroke: #1e8449; stroke-dasharray: 2 2; }
.unavailable { fill: #e74c3c; fill-opacity: 0.12; }
.ops { stroke-width: 2.2; stroke-linecap: round; fill: none; }
.note { fill: #777; }
.legend span { margin-right: 14px; white-space: nowrap; }
.legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px; vertical-align: -1px; border-radius: 2px; }
.sw-killed { background: #566573; } .sw-paused { background: #aeb6bf; } .sw-unavail { background: rgba(231,76,60,0.25); }
table { border-collapse: collapse; font-size: 12px; }
td, th { padding: 2px 8px; border-bottom: 1px solid #eee; text-align: left; vertical-align: top; }
details { margin-top: 12px; }
</style>
</head>
<body>
<h1>${esc(inp.title)}</h1>
<p class="sub">${inp.subtitle.map(esc).join('\n')}</p>
<div class="scroll">
<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${y}" viewBox="0 0 ${width} ${y}">
${parts.join('\n')}
</svg>
</div>
<p class="legend">${legend}</p>
<p class="note">Time is the run's clock (0 = workload start). Manager lanes: grey while killed or paused; coloured bars are the terms a manager led, from its own Raft trace (hover for details). Latency: each dot is at least one operation, placed at its invoke time; unknown operations that timed out sit on the timeout line.</p>
<details><summary>${faults.length} faults</summary>
<table><tr><th>from</th><th>to</th><th>step</th><th>kind</th><th>detail</th></tr>
${faultRows}
</table></details>
</body>
</html>
`;
}
