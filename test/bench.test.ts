// Smoke runs of the benchmarks (BENCH_QUICK=1, tiny sizes): they keep working, each against its
// named peer, and write their raw results (to a temporary directory, never BENCHMARKS.md).
// The numbers are not asserted: speed targets live in `npm run bench`, not in tests.
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT } from './helpers/cluster.js';
import { dockerAvailable } from './helpers/docker.js';
import { holdEngine } from './helpers/engine-lock.js';
import { writeReport } from '../bench/report.js';

// The start, update and mesh smoke runs use the Docker engine (and swarm mode): this file takes
// the run's engine lock for its whole run, so no other Docker test file runs beside it.
await holdEngine();

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-bench-smoke-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function bench(name: string, env: Record<string, string>, timeoutMs = 240_000): Promise<{ code: number; out: string; result: any }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [join(ROOT, 'dist', 'bench', 'run.js'), name],
      { cwd: ROOT, timeout: timeoutMs, maxBuffer: 32 * 1024 * 1024, env: { ...process.env, BENCH_QUICK: '1', TMPDIR: tmp, ...env } },
      (err, stdout, stderr) => {
        const file = join(tmp, 'flotilla-bench-quick', `${name}.json`);
        const result = existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')) : null;
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr, result });
      },
    );
  });
}

describe('benchmarks (smoke)', () => {
  it('schedule: simulated workers get every task placed and running', async () => {
    const r = await bench('schedule', { BENCH_WORKERS: '20', BENCH_TASKS: '200', BENCH_LARGE_WORKERS: '30', BENCH_LARGE_TASKS: '300', BENCH_HEAP_SNAPSHOT: '1' });
    expect(r.code, r.out.slice(-3000)).toBe(0);
    expect(r.result.quick).toBe(true);
    expect(r.result.results.tasksAssigned).toBe(200);
    expect(r.result.results.tasksRunning).toBe(200);
    expect(r.result.results.placementsPerSecond).toBeGreaterThan(0);
    // Every process's CPU over the run, and the leader's heap snapshot reduced to its groups.
    expect(Object.keys(r.result.results.otherCpuSeconds)).toEqual(expect.arrayContaining(['simulated workers', 'benchmark client']));
    expect(r.result.results.leaderHeap.totalBytes).toBeGreaterThan(1024 * 1024);
    expect(r.result.results.leaderHeap.groups.length).toBeGreaterThan(5);
    // The second point (its own cluster) places and runs every task too.
    expect(r.result.results.large.tasksRunning).toBe(300);
  }, 300_000);

  it('profile: the managers under the profiler, for the write load and for the schedule load', async () => {
    const r = await bench('profile', { BENCH_SECONDS: '1', BENCH_WORKERS: '20', BENCH_TASKS: '200' });
    expect(r.code, r.out.slice(-3000)).toBe(0);
    const leader = Object.entries(r.result.results.profiles as Record<string, { self: unknown[] }>).find(([k]) => k.includes('leader'));
    expect(leader?.[1].self.length).toBeGreaterThan(0);
    expect(r.result.results.schedule.point.tasksRunning).toBe(200);
    expect(r.result.results.schedule.leader.self.length).toBeGreaterThan(0);
    expect(r.result.results.schedule.leader.inclusive.some((f: { where: string }) => f.where.startsWith('src/'))).toBe(true);
  }, 300_000);

  it('raft: flotilla and etcd side by side, same load', async () => {
    const r = await bench('raft', { BENCH_SECONDS: '1', BENCH_CLIENTS: '1,4' });
    expect(r.code, r.out.slice(-3000)).toBe(0);
    const points = r.result.results.points as { system: string; op: string; result: { ops: number; errors: number } }[];
    for (const sys of ['flotilla', 'etcd']) {
      for (const op of ['write', 'read']) {
        const p = points.filter((x) => x.system === sys && x.op === op);
        expect(p.length, `${sys} ${op}`).toBeGreaterThan(0);
        expect(p.every((x) => x.result.ops > 0 && x.result.errors === 0), `${sys} ${op}`).toBe(true);
      }
    }
  }, 300_000);

  it('failover: a leader SIGKILL under load, flotilla and etcd', async () => {
    const r = await bench('failover', { BENCH_TRIALS: '1' });
    expect(r.code, r.out.slice(-3000)).toBe(0);
    const configs = r.result.results.configs as { label: string; trials: { windowMs: number }[] }[];
    expect(configs.length).toBe(3);
    for (const c of configs) {
      expect(c.trials.length, c.label).toBe(1);
      expect(c.trials[0]!.windowMs, c.label).toBeGreaterThan(0);
    }
  }, 300_000);

  it('start: flotilla, docker run and swarm start the same container', async () => {
    const d = await dockerAvailable();
    if (!d.ok) {
      // Locally the docker part may be skipped; under CI a missing engine is a failure.
      if (process.env.CI === 'true') expect.fail(`docker is needed for the start benchmark: ${d.reason}`);
      console.log(`start benchmark smoke skipped: ${d.reason}`);
      return;
    }
    const r = await bench('start', { BENCH_START_TRIALS: '2' });
    expect(r.code, r.out.slice(-3000)).toBe(0);
    const res = r.result.results;
    expect(res.dockerRun.n).toBe(2);
    expect(res.swarm.n).toBe(2);
    expect(res.flotilla.containerUp.n).toBe(2);
  }, 300_000);

  it('update: a health-gated rolling update, flotilla beside swarm, and its row in the report', async () => {
    const d = await dockerAvailable();
    if (!d.ok) {
      if (process.env.CI === 'true') expect.fail(`docker is needed for the update benchmark: ${d.reason}`);
      console.log(`update benchmark smoke skipped: ${d.reason}`);
      return;
    }
    const swarmBefore = await new Promise<string>((resolve) => execFile('docker', ['info', '--format', '{{.Swarm.LocalNodeState}}'], (_e, out) => resolve(out.trim())));
    const r = await bench('update', { BENCH_UPDATE_TRIALS: '1', BENCH_UPDATE_REPLICAS: '3' }, 420_000);
    expect(r.code, r.out.slice(-3000)).toBe(0);
    const res = r.result.results;
    expect(res.flotilla).toMatchObject({ n: 1 });
    expect(res.swarm).toMatchObject({ n: 1 });
    // stop-first by one: at most one replica below the count, on both
    expect(res.flotilla.minReady).toBeGreaterThanOrEqual(2);
    expect(res.swarm.minReady).toBeGreaterThanOrEqual(2);
    // the engine is left as found
    const swarmAfter = await new Promise<string>((resolve) => execFile('docker', ['info', '--format', '{{.Swarm.LocalNodeState}}'], (_e, out) => resolve(out.trim())));
    expect(swarmAfter).toBe(swarmBefore);
    const md = join(tmp, 'BENCHMARKS.md');
    writeReport(join(tmp, 'flotilla-bench-quick'), md);
    expect(readFileSync(md, 'utf8')).toMatch(/### update: rolling update of 3 replicas, parallelism 1, health-gated[\s\S]*\| flotilla `PUT \/v1\/services\/NAME` \| 1 \|[\s\S]*\| swarm `docker service update --detach` \| 1 \|/);
  }, 480_000);

  it('mesh: requests through the routing mesh beside straight to a replica, swarm measured or the reason why, and its rows in the report', async () => {
    const d = await dockerAvailable();
    if (!d.ok && process.env.CI === 'true') expect.fail(`docker is needed for the swarm part of the mesh benchmark: ${d.reason}`);
    const swarmState = () => new Promise<string>((resolve) => execFile('docker', ['info', '--format', '{{.Swarm.LocalNodeState}}'], (_e, out) => resolve(String(out).trim())));
    const swarmBefore = d.ok ? await swarmState() : '';
    const r = await bench('mesh', { BENCH_CLIENTS: '1,4', BENCH_SECONDS: '1', ...(d.ok ? {} : { BENCH_MESH_SWARM: '0' }) }, 300_000);
    expect(r.code, r.out.slice(-3000)).toBe(0);
    const points = r.result.results.points as { system: string; path: string; mode: string; clients: number; result: { ops: number; errors: number } }[];
    // flotilla: both paths, both connection modes, both concurrencies, every request answered
    for (const mode of ['keepalive', 'connect']) {
      for (const path of ['mesh', 'direct']) {
        for (const c of [1, 4]) {
          const p = points.find((x) => x.system === 'flotilla' && x.path === path && x.mode === mode && x.clients === c);
          expect(p, `${path} ${mode} c=${c}`).toBeDefined();
          expect(p!.result.ops, `${path} ${mode} c=${c}`).toBeGreaterThan(0);
          expect(p!.result.errors, `${path} ${mode} c=${c}`).toBe(0);
        }
      }
    }
    // Two distinct workers serve the mesh, two replicas on two different hosts
    expect(new Set((r.result.results.flotilla.backends as string[]).map((a) => a.replace(/:\d+$/, ''))).size).toBe(2);
    expect(r.result.results.overhead.filter((o: { system: string }) => o.system === 'flotilla')).toHaveLength(4);
    // swarm: measured (every point answered), or the reason it was not, in the results
    const swarm = points.filter((x) => x.system === 'swarm');
    if (r.result.results.swarm.problem === null) {
      expect(swarm).toHaveLength(4);
      expect(swarm.every((x) => x.result.ops > 0)).toBe(true);
    } else {
      expect(swarm).toHaveLength(0);
      expect(r.result.results.swarm.problem).toMatch(/[a-z ]{20}/);
    }
    if (d.ok) expect(await swarmState()).toBe(swarmBefore);
    const md = join(tmp, 'BENCHMARKS-mesh.md');
    writeReport(join(tmp, 'flotilla-bench-quick'), md);
    const text = readFileSync(md, 'utf8');
    expect(text).toMatch(/### mesh: requests through the routing mesh vs straight to a replica[\s\S]*\| flotilla \| keep-alive \| 1 \| [\d,]+ \| [\d,]+ \|[\s\S]*\| flotilla \| new connection each \| 4 \|/);
    if (r.result.results.swarm.problem !== null) expect(text).toContain("Docker swarm's routing mesh not measured");
  }, 360_000);
});
