// Live usage, the arithmetic and the bounds: /proc and Docker stats fixtures, the process tree
// of a task (a fake /proc), the worker's sampler, the session message's validation, and the
// leader's rings.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { nodeMillicores, parseMeminfo, parseProcStat, rateMillicores, UsageSampler } from '../src/worker/usage.js';
import { parseProcStatLine, parseVmRss, processTreeUsage, scanProcs, taskProcesses } from '../src/worker/drivers/proc-usage.js';
import { containerUsage, podUsage, type DockerStats } from '../src/worker/drivers/docker-usage.js';
import { decodeSessionFrame, encodeSessionFrame, MAX_USAGE_TASKS, parseUsageMessage, type UsageMessage } from '../src/protocol/frames.js';
import { UsageRing, UsageStore } from '../src/manager/usage.js';
import type { Driver, TaskUsageRaw } from '../src/worker/driver.js';
import { silentLogger } from '../src/log.js';
import { sparkline } from '../src/cli/usage-format.js';

const fx = (name: string): string => readFileSync(join(import.meta.dirname, 'fixtures', 'usage', name), 'utf8');
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A /proc/<pid>/stat line: fields 1-24 as the kernel writes them. */
function statLine(pid: number, comm: string, ppid: number, pgrp: number, t: [number, number, number, number], start: string, state = 'S'): string {
  return `${pid} (${comm}) ${state} ${ppid} ${pgrp} ${pgrp} 0 -1 4194304 10 0 0 0 ${t[0]} ${t[1]} ${t[2]} ${t[3]} 20 0 1 0 ${start} 1000000 250 18446744073709551615 0 0 0\n`;
}

function fakeProc(procs: { pid: number; comm: string; ppid: number; pgrp: number; t: [number, number, number, number]; start: string; rssKb: number; state?: string }[]): string {
  const root = mkdtempSync(join(tmpdir(), 'flotilla-proc-'));
  dirs.push(root);
  for (const p of procs) {
    mkdirSync(join(root, String(p.pid)));
    writeFileSync(join(root, String(p.pid), 'stat'), statLine(p.pid, p.comm, p.ppid, p.pgrp, p.t, p.start, p.state));
    writeFileSync(join(root, String(p.pid), 'status'), `Name:\t${p.comm}\nState:\tS (sleeping)\nVmPeak:\t  99999 kB\nVmRSS:\t${String(p.rssKb).padStart(8)} kB\nThreads:\t1\n`);
  }
  mkdirSync(join(root, 'self')); // not a pid: skipped
  return root;
}

describe('node usage from /proc', () => {
  it('CPU: busy share of the ticks between two /proc/stat reads, times the CPUs', () => {
    const a = parseProcStat(fx('proc-stat-a.txt'))!;
    const b = parseProcStat(fx('proc-stat-b.txt'))!;
    expect(a.cpus).toBe(2);
    // +100 user, +50 system, +50 idle: 150 of 200 ticks busy on 2 CPUs.
    expect(b.total - a.total).toBe(200);
    expect(nodeMillicores(a, b)).toBe(1500);
    expect(nodeMillicores(b, b)).toBe(0);
    expect(parseProcStat('intr 1 2 3\n')).toBeNull();
  });

  it('memory: MemTotal − MemAvailable', () => {
    const m = parseMeminfo(fx('meminfo.txt'))!;
    expect(m.total).toBe(24683748 * 1024);
    expect(m.total - m.available).toBe((24683748 - 20480000) * 1024);
    // An old kernel without MemAvailable: free + cache + buffers count as available.
    const old = parseMeminfo('MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 250 kB\n')!;
    expect(old.available).toBe(400 * 1024);
    expect(parseMeminfo('nothing')).toBeNull();
  });

  it('reads this machine', () => {
    const a = parseProcStat(readFileSync('/proc/stat', 'utf8'))!;
    expect(a.cpus).toBeGreaterThan(0);
    expect(parseMeminfo(readFileSync('/proc/meminfo', 'utf8'))!.total).toBeGreaterThan(0);
  });
});

describe('process driver usage from a /proc tree', () => {
  it('parses a stat line whose command holds spaces and parentheses', () => {
    const e = parseProcStatLine(statLine(4242, 'my (weird) prog', 7, 4242, [300, 100, 50, 5], '98765'))!;
    expect(e).toMatchObject({ pid: 4242, ppid: 7, pgrp: 4242, ticks: 455, start: '98765', state: 'S' });
    expect(parseProcStatLine('garbage')).toBeNull();
    const self = parseProcStatLine(readFileSync('/proc/self/stat', 'utf8'))!;
    expect(self.pid).toBe(process.pid);
    expect(parseVmRss(readFileSync('/proc/self/status', 'utf8'))).toBeGreaterThan(1024 * 1024);
    expect(parseVmRss('Name:\tkthreadd\nState:\tS\n')).toBe(0);
  });

  it('a task is its wrappers\' process groups and descendants; a recycled root pid is not counted', () => {
    const root = fakeProc([
      { pid: 100, comm: 'flotilla-wrap', ppid: 1, pgrp: 100, t: [10, 5, 0, 0], start: '5000', rssKb: 1000 },
      { pid: 101, comm: 'node', ppid: 100, pgrp: 100, t: [300, 100, 50, 0], start: '5001', rssKb: 50_000 },
      // moved to a group of its own, still a descendant
      { pid: 102, comm: 'worker thread (x)', ppid: 101, pgrp: 102, t: [20, 0, 0, 0], start: '5002', rssKb: 2000 },
      // a daemon re-parented to init, still in the group
      { pid: 103, comm: 'daemon', ppid: 1, pgrp: 100, t: [30, 0, 0, 0], start: '5003', rssKb: 3000 },
      { pid: 200, comm: 'other', ppid: 1, pgrp: 200, t: [999, 0, 0, 0], start: '100', rssKb: 9999 },
      { pid: 300, comm: 'recycled', ppid: 1, pgrp: 300, t: [777, 0, 0, 0], start: '9999', rssKb: 7777 },
      { pid: 400, comm: 'zombie', ppid: 1, pgrp: 400, t: [5, 0, 0, 0], start: '6000', rssKb: 0, state: 'Z' },
    ]);
    const procs = scanProcs(root);
    expect(procs.size).toBe(7);
    expect(taskProcesses(procs, [100])).toEqual([100, 101, 102, 103]);
    const u = processTreeUsage(
      new Map([
        ['t1', { attempt: 2, roots: [{ pid: 100, start: '5000' }] }],
        ['t2', { attempt: 1, roots: [{ pid: 300, start: '4000' }] }],
        ['t3', { attempt: 1, roots: [{ pid: 400 }] }],
        ['t4', { attempt: 1, roots: [{ pid: 555 }] }],
      ]),
      root,
    );
    expect([...u.keys()]).toEqual(['t1']);
    expect(u.get('t1')).toEqual({ attempt: 2, cpuSeconds: (15 + 450 + 20 + 30) / 100, memory: (1000 + 50_000 + 2000 + 3000) * 1024 });
  });

  it('CPU rate: the difference of cumulative seconds over the elapsed time, never negative', () => {
    expect(rateMillicores(5.15, 7.65, 5000)).toBe(500);
    expect(rateMillicores(5.15, 5.15, 5000)).toBe(0);
    expect(rateMillicores(9, 5, 5000)).toBe(0); // a process left the tree
    expect(rateMillicores(1, 2, 0)).toBe(0);
  });
});

describe('docker usage from stats', () => {
  it('cgroup v1: cores from the cpu_stats/precpu_stats delta, memory without the inactive page cache', () => {
    const u = containerUsage(JSON.parse(fx('docker-stats-v1-busy.json')) as DockerStats);
    // 0.5 s of CPU over 2 s of host time (2 CPUs × 1 s): half a core.
    expect(u.cores).toBeCloseTo(0.5, 6);
    expect(u.memory).toBe(10485760 - 1048576);
    expect(u.cpuSeconds).toBeCloseTo(2.057807797, 6);
  });

  it('cgroup v2, first read without a window: no cores (the sampler uses the cumulative seconds)', () => {
    const u = containerUsage(JSON.parse(fx('docker-stats-v2-first.json')) as DockerStats);
    expect(u.cores).toBeNull();
    expect(u.cpuSeconds).toBeCloseTo(0.3, 9);
    expect(u.memory).toBe(5242880 - 2097152);
  });

  it('a pod sums its containers', () => {
    const busy = JSON.parse(fx('docker-stats-v1-busy.json')) as DockerStats;
    const p = podUsage(3, [busy, busy]);
    expect(p.attempt).toBe(3);
    expect(p.cores).toBeCloseTo(1, 6);
    expect(p.memory).toBe(2 * (10485760 - 1048576));
    expect(podUsage(1, [busy, JSON.parse(fx('docker-stats-v2-first.json')) as DockerStats]).cores).toBeUndefined();
    expect(containerUsage({}).memory).toBe(0);
  });
});

describe('the worker sampler', () => {
  it('sends node and task usage; a task needs two reads of cumulative CPU (or the driver\'s own window)', async () => {
    const root = mkdtempSync(join(tmpdir(), 'flotilla-proc-'));
    dirs.push(root);
    writeFileSync(join(root, 'stat'), fx('proc-stat-a.txt'));
    writeFileSync(join(root, 'meminfo'), fx('meminfo.txt'));
    let cpuSeconds = 10;
    const raws = (): Map<string, TaskUsageRaw> =>
      new Map<string, TaskUsageRaw>([
        ['proc-task', { attempt: 1, cpuSeconds, memory: 4096 }],
        ['docker-task', { attempt: 1, cores: 0.25, cpuSeconds: 3, memory: 8192 }],
      ]);
    const driver = { name: 'process', usage: async () => raws() } as unknown as Driver;
    const sent: unknown[] = [];
    const s = new UsageSampler({ intervalMs: 1000, drivers: [driver], log: silentLogger, procRoot: root, channel: () => (m) => sent.push(m) > 0 });
    expect(await s.sample()).toBeNull(); // the node needs a previous read
    writeFileSync(join(root, 'stat'), fx('proc-stat-b.txt'));
    cpuSeconds = 10.5;
    await new Promise((r) => setTimeout(r, 200));
    const m = (await s.sample())!;
    expect(m.t).toBe('usage');
    expect(m.node).toEqual({ cpu: 1500, memory: (24683748 - 20480000) * 1024, cpuCapacity: 2000, memoryTotal: 24683748 * 1024 });
    const byId = new Map(m.tasks.map((t) => [t.taskId, t]));
    expect(byId.get('docker-task')).toEqual({ taskId: 'docker-task', attempt: 1, cpu: 250, memory: 8192 });
    // 0.5 s of CPU in ~0.2 s of wall time: more than a core, less than three.
    expect(byId.get('proc-task')!.cpu).toBeGreaterThan(1000);
    expect(byId.get('proc-task')!.cpu).toBeLessThanOrEqual(2500);
    // The message passes the session codec and its validation.
    expect(parseUsageMessage(decodeSessionFrame(encodeSessionFrame(m)))).toMatchObject({ t: 'usage', tasks: expect.any(Array) });
  });
});

describe('the usage message', () => {
  const good: UsageMessage = { t: 'usage', at: 1, intervalMs: 5000, node: { cpu: 1, memory: 2, cpuCapacity: 2000, memoryTotal: 4 }, tasks: [{ taskId: 't1', attempt: 1, cpu: 0, memory: 0 }] };

  it('is bounded and validated', () => {
    expect(parseUsageMessage({ ...good })).toMatchObject({ t: 'usage' });
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ ...good, node: undefined }, /'node'/],
      [{ ...good, node: { ...good.node, cpu: -1 } }, /'node.cpu'/],
      [{ ...good, tasks: [{ taskId: '', attempt: 1, cpu: 0, memory: 0 }] }, /'tasks.0.taskId'/],
      [{ ...good, tasks: [{ taskId: 't', attempt: 0, cpu: 0, memory: 0 }] }, /'tasks.0.attempt'/],
      [{ ...good, tasks: Array.from({ length: MAX_USAGE_TASKS + 1 }, () => good.tasks[0]) }, /'tasks'/],
      [{ ...good, intervalMs: 1 }, /'intervalMs'/],
      [{ ...good, node: { ...good.node, memory: Number.POSITIVE_INFINITY } }, /'node.memory'/],
    ];
    for (const [msg, why] of bad) expect(() => parseUsageMessage(msg)).toThrow(why);
  });
});

describe('the leader\'s rings', () => {
  const msg = (cpu: number, tasks: { taskId: string; attempt?: number; cpu: number }[] = []): UsageMessage => ({
    t: 'usage',
    at: 0,
    intervalMs: 1000,
    node: { cpu, memory: cpu * 10, cpuCapacity: 2000, memoryTotal: 1e9 },
    tasks: tasks.map((t) => ({ taskId: t.taskId, attempt: t.attempt ?? 1, cpu: t.cpu, memory: t.cpu * 100 })),
  });
  const state = (placed: Record<string, string>) => ({ getTask: (id: string) => (placed[id] ? ({ id, node: placed[id] } as never) : undefined) });

  it('a ring keeps the newest `capacity` points, oldest first, and drops old ones', () => {
    const r = new UsageRing(3);
    for (let i = 1; i <= 200; i++) r.push({ at: i, cpu: i, memory: i }, i);
    expect(r.length).toBe(3);
    expect(r.points().map((p) => p.cpu)).toEqual([198, 199, 200]);
    r.dropBefore(200);
    expect(r.points().map((p) => p.cpu)).toEqual([200]);
    r.dropBefore(1000);
    expect(r.length).toBe(0);
    expect(r.last()).toBeUndefined();
  });

  it('keeps the window, thins out fast workers, speaks only for a node\'s own tasks, starts a new history per attempt', () => {
    const s = new UsageStore({ state: state({ a: 'w1', b: 'w2' }), id: 'm1' }, { windowMs: 10_000, minSpacingMs: 1000 });
    let t = 1_000_000;
    expect(s.record('w1', msg(100, [{ taskId: 'a', cpu: 500 }, { taskId: 'b', cpu: 900 }, { taskId: 'ghost', cpu: 1 }]), t, 1)).toBe(true);
    expect(s.record('w1', msg(999), t + 10, 2)).toBe(false); // too soon after the last one
    for (let i = 1; i <= 30; i++) s.record('w1', msg(100 + i, [{ taskId: 'a', cpu: 500 + i }]), (t += 1000), 100 + i);
    const r = s.report({}, t);
    expect(r.leader).toBe('m1');
    expect(r.nodes).toHaveLength(1);
    const n = r.nodes[0]!;
    expect(n).toMatchObject({ node: 'w1', cpu: 130, memory: 1300, cpuCapacity: 2000, ageMs: 0, intervalMs: 1000 });
    // 10 s of window at one sample a second: 11 points at most (both ends).
    expect(n.history!.length).toBeLessThanOrEqual(11);
    expect(n.history!.at(-1)).toEqual({ at: 130, cpu: 130, memory: 1300 });
    expect(r.tasks.map((x) => x.task)).toEqual(['a']); // b is w2's, ghost does not exist
    expect(r.tasks[0]).toMatchObject({ node: 'w1', cpu: 530, current: true });
    // A report without the task: no longer current, its last sample stays for the window.
    s.record('w1', msg(50), (t += 1000), 200);
    expect(s.report({ history: false }, t).tasks[0]).toMatchObject({ task: 'a', cpu: 530, current: false });
    expect(s.report({ history: false }, t).tasks[0]!.history).toBeUndefined();
    // A new attempt starts its own history.
    s.record('w1', msg(50, [{ taskId: 'a', attempt: 2, cpu: 7 }]), (t += 1000), 300);
    expect(s.report({ task: 'a' }, t).tasks[0]).toMatchObject({ attempt: 2, cpu: 7, history: [{ at: 300, cpu: 7, memory: 700 }] });
    expect(s.report({ node: 'w2' }, t)).toMatchObject({ nodes: [], tasks: [] });
    // Silent past the window: forgotten.
    expect(s.report({}, t + 20_000)).toMatchObject({ nodes: [], tasks: [] });
  });

  it('a new leadership starts empty and says since when it collects', async () => {
    const s = new UsageStore({ state: state({}), id: 'm2' });
    s.record('w1', msg(1));
    const before = s.report().since;
    await new Promise((r) => setTimeout(r, 5));
    s.stop();
    s.start();
    const r = s.report();
    expect(r.nodes).toEqual([]);
    expect(r.since).toBeGreaterThan(before);
  });

  it('bounds the number of task rings', () => {
    const placed: Record<string, string> = {};
    for (let i = 0; i < 50; i++) placed[`t${i}`] = 'w1';
    const s = new UsageStore({ state: state(placed), id: 'm1' }, { maxTasks: 10 });
    s.record('w1', msg(1, Object.keys(placed).map((taskId) => ({ taskId, cpu: 1 }))));
    expect(s.report().tasks).toHaveLength(10);
  });
});

describe('sparklines', () => {
  it('eight heights scaled to the largest value (or a given top)', () => {
    expect(sparkline([0, 1, 2, 3, 4, 5, 6, 7])).toBe('▁▂▃▄▅▆▇█');
    expect(sparkline([0, 0, 0])).toBe('▁▁▁');
    expect(sparkline([500, 1000], 20, 2000)).toBe('▃▅');
    expect(sparkline([1, 2, 3, 4], 2)).toBe('▆█');
    expect(sparkline([])).toBe('');
  });
});
