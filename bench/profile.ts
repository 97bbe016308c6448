// `profile` (not part of "all"): the three managers run under `node --cpu-prof` while the raft
// benchmark's load (writes, then linearizable reads, to the leader) runs; then the profiles
// are reduced to the top frames by self time and by inclusive time, mapped back to the
// TypeScript sources (file:line) through the source maps in dist/. Then a second cluster under
// the profiler takes the schedule benchmark's load (10,000 tasks onto 1,000 simulated workers,
// BENCH_PROFILE_SCHEDULE=0 skips it) and its first leader's profile is reduced the same way.
//
//   node dist/bench/profile.js FILE.cpuprofile   prints the same tables for any profile
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { SourceMap } from 'node:module';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FlotillaCluster, member } from './lib/systems.js';
import { KEYS, VALUE, keyOf, point, type RaftPoint } from './raft.js';
import { newAgent } from './lib/load.js';
import { QUICK, ROOT, envNum, log, round, sleep } from './lib/util.js';
import { schedulePoint } from './schedule.js';
import type { BenchOutput } from './types.js';

interface CpuProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  hitCount?: number;
  children?: number[];
}
interface CpuProfile {
  nodes: CpuProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface Frame {
  fn: string;
  where: string;
  ms: number;
  percent: number;
}

const maps = new Map<string, SourceMap | null>();

/** file:///…/dist/src/x.js:L:C (0-based) → src/x.ts:line (1-based) when a source map says so. */
function locate(url: string, line: number, col: number): string {
  if (!url) return '';
  if (!url.startsWith('file://')) return url.startsWith('node:') ? url : `${url}:${line + 1}`;
  const file = fileURLToPath(url);
  let sm = maps.get(file);
  if (sm === undefined) {
    sm = null;
    try {
      if (existsSync(file + '.map')) sm = new SourceMap(JSON.parse(readFileSync(file + '.map', 'utf8')));
    } catch {
      sm = null;
    }
    maps.set(file, sm);
  }
  if (sm) {
    const e = sm.findEntry(line, col) as { originalSource?: string; originalLine?: number };
    if (e && e.originalSource !== undefined && e.originalLine !== undefined) {
      const src = e.originalSource.startsWith('file://') ? fileURLToPath(e.originalSource) : join(file, '..', e.originalSource);
      return `${relative(ROOT, src)}:${e.originalLine + 1}`;
    }
  }
  const rel = relative(ROOT, file);
  return `${rel.startsWith('..') ? file.replace(/.*node_modules\//, 'node_modules/') : rel}:${line + 1}`;
}

export function analyzeProfile(path: string, top = 15): { totalMs: number; self: Frame[]; inclusive: Frame[]; byFile: Frame[] } {
  const p = JSON.parse(readFileSync(path, 'utf8')) as CpuProfile;
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const key = (n: CpuProfileNode) => {
    const cf = n.callFrame;
    return `${cf.functionName || '(anonymous)'}\u0000${locate(cf.url, cf.lineNumber, cf.columnNumber)}`;
  };
  const keyOfId = new Map<number, string>();
  for (const n of p.nodes) keyOfId.set(n.id, key(n));
  const self = new Map<string, number>();
  const incl = new Map<string, number>();
  const files = new Map<string, number>();
  let total = 0;
  let busy = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const dt = (p.timeDeltas[i] ?? 0) / 1000;
    const id = p.samples[i]!;
    total += dt;
    const k = keyOfId.get(id)!;
    if (k.startsWith('(idle)')) continue;
    busy += dt;
    self.set(k, (self.get(k) ?? 0) + dt);
    const file = k.split('\u0000')[1]!.replace(/:\d+$/, '') || k.split('\u0000')[0]!;
    files.set(file, (files.get(file) ?? 0) + dt);
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const kk = keyOfId.get(cur)!;
      if (seen.has(kk)) continue;
      seen.add(kk);
      incl.set(kk, (incl.get(kk) ?? 0) + dt);
    }
  }
  const frames = (m: Map<string, number>, filter: (k: string) => boolean = () => true) =>
    [...m.entries()]
      .filter(([k]) => filter(k))
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([k, ms]) => {
        const [fn, where = ''] = k.split('\u0000') as [string, string?];
        return { fn, where, ms: round(ms, 0), percent: round((100 * ms) / Math.max(1, busy), 1) };
      });
  const ours = (k: string) => /\u0000(src|bench)\//.test(k);
  return {
    totalMs: round(total, 0),
    self: frames(self),
    inclusive: frames(incl, (k) => ours(k)),
    byFile: frames(files),
  };
}

export async function benchProfile(): Promise<BenchOutput> {
  const seconds = envNum('BENCH_SECONDS', QUICK ? 2 : 10);
  const dir = mkdtempSync(join(tmpdir(), 'flotilla-prof-'));
  const cluster = new FlotillaCluster({ nodeFlags: ['--cpu-prof', '--cpu-prof-dir', dir] });
  const points: RaftPoint[] = [];
  let leaderId = '';
  try {
    log(`profile: 3 managers under --cpu-prof (profiles in ${dir})`);
    await cluster.start();
    leaderId = await cluster.leader();
    const agent = newAgent(32);
    const l = member(cluster, leaderId);
    for (let i = 0; i < KEYS; i += 32) await Promise.all(Array.from({ length: Math.min(32, KEYS - i) }, (_, j) => cluster.put(agent, l.addr, keyOf(i + j), VALUE)));
    agent.destroy();
    points.push(await point(cluster, 'write', 'leader', 256, seconds * 1000, 500));
    points.push(await point(cluster, 'write', 'leader', 16, seconds * 1000, 500));
    points.push(await point(cluster, 'read', 'leader', 256, seconds * 1000, 500));
    await sleep(200);
  } finally {
    // SIGTERM: the manager closes and exits, and node writes the profile.
    await cluster.stop('SIGTERM');
  }
  const files = readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'));
  const pidOf = (f: string) => Number(f.split('.')[3]); // CPU.date.time.PID.tid.seq.cpuprofile
  const profiles: Record<string, ReturnType<typeof analyzeProfile>> = {};
  for (const m of cluster.members) {
    const f = files.find((x) => pidOf(x) === m.proc.pid);
    if (!f) continue;
    profiles[`${m.id}${m.id === leaderId ? ' (leader)' : ' (follower)'}`] = analyzeProfile(join(dir, f));
  }
  if (!process.env.BENCH_KEEP_DIRS) rmSync(dir, { recursive: true, force: true });
  const lead = Object.entries(profiles).find(([k]) => k.includes('leader'));
  if (lead) {
    log(`profile: leader, top frames by self time:`);
    for (const f of lead[1].self.slice(0, 10)) log(`  ${String(f.percent).padStart(5)}%  ${f.fn}  ${f.where}`);
  }
  const schedule = process.env.BENCH_PROFILE_SCHEDULE === '0' ? null : await scheduleProfile();
  return {
    parameters: { seconds, phases: ['write 256 clients', 'write 16 clients', 'read 256 clients'], profiler: 'node --cpu-prof (1 ms sampling)', ...(schedule ? { schedule: schedule.parameters } : {}) },
    peers: {},
    results: { points, profiles, ...(schedule ? { schedule: schedule.results } : {}) },
  };
}

/** The schedule benchmark's load on managers under the profiler; the first leader's profile. */
async function scheduleProfile(): Promise<{ parameters: Record<string, number>; results: { point: Record<string, unknown>; leader: ReturnType<typeof analyzeProfile> | null } }> {
  const parameters = { workers: envNum('BENCH_WORKERS', QUICK ? 200 : 1000), tasks: envNum('BENCH_TASKS', QUICK ? 2000 : 10_000), batch: 1000, inflight: envNum('BENCH_SCHEDULE_INFLIGHT', 4) };
  const dir = mkdtempSync(join(tmpdir(), 'flotilla-prof-schedule-'));
  log(`profile: the schedule load (${parameters.tasks} tasks, ${parameters.workers} simulated workers) on 3 managers under --cpu-prof (profiles in ${dir})`);
  const point = await schedulePoint(parameters.workers, parameters.tasks, parameters.batch, parameters.inflight, ['--cpu-prof', '--cpu-prof-dir', dir]);
  const f = readdirSync(dir).find((x) => x.endsWith('.cpuprofile') && Number(x.split('.')[3]) === point.leaderPid);
  const leader = f ? analyzeProfile(join(dir, f)) : null;
  if (!process.env.BENCH_KEEP_DIRS) rmSync(dir, { recursive: true, force: true });
  if (leader) {
    log(`profile: schedule leader, top frames by self time:`);
    for (const fr of leader.self.slice(0, 10)) log(`  ${String(fr.percent).padStart(5)}%  ${fr.fn}  ${fr.where}`);
  } else log('profile: no profile of the schedule leader was written');
  return { parameters, results: { point, leader } };
}

// Stand-alone: node dist/bench/profile.js FILE.cpuprofile
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1] && process.argv[2]) {
  const a = analyzeProfile(process.argv[2], 25);
  for (const [title, fr] of [['self', a.self], ['inclusive (project code)', a.inclusive], ['by file', a.byFile]] as const) {
    console.log(`\n== ${title}`);
    for (const f of fr) console.log(`${String(f.percent).padStart(5)}%  ${String(f.ms).padStart(7)} ms  ${f.fn}  ${f.where}`);
  }
}
