// A paused manager (SIGSTOP) must never take healthy work down: not the paused leader itself
// when it resumes (its own stall is nobody's silence), and not the new leader (workers find it
// well within its failover grace). Real manager and worker processes, process driver.
import { afterEach, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestCluster, eventually, runCli, sleep, killTaskProcesses } from './helpers/cluster.js';
import type { FlotillaClient } from '../src/client/client.js';

interface TaskView {
  id: string;
  state: string;
  node: string | null;
  attempt: number;
  history: { state: string; reason: string }[];
}
interface NodeView {
  id: string;
  status: string;
}

let cluster: TestCluster | null = null;
let pidDir = '';
afterEach(async () => {
  if (!cluster) return;
  killTaskProcesses(pidDir);
  await cluster.stop();
  cluster = null;
});

const sleeper = (name: string) => ({
  name,
  driver: 'process',
  containers: [{ command: ['/bin/sh', '-c', `touch "${pidDir}/$FLOTILLA_TASK_ID.$$"; exec sleep 600`] }],
  resources: { cpu: 10, memory: '8m' },
});

async function setup(managers: number, workers: string[], flags: string[], taskCount: number, leader?: string): Promise<{ c: TestCluster; client: FlotillaClient; before: TaskView[] }> {
  const c = await TestCluster.managers(managers, flags);
  cluster = c;
  pidDir = join(c.dir, 'pids');
  mkdirSync(pidDir);
  const client = c.client(undefined, 20_000);
  if (leader !== undefined) {
    await client.post(`/v1/managers/${leader}/transfer-leader`, {});
    expect(await c.waitForLeader()).toBe(leader);
  }
  for (const w of workers) c.startWorker(w, ['--cpu', '4000', '--memory', '4g']);
  await eventually(async () => (await client.get<{ nodes: NodeView[] }>('/v1/nodes')).nodes.filter((n) => n.status === 'ready').length === workers.length, 30_000, 'workers ready');
  await client.post('/v1/tasks', Array.from({ length: taskCount }, (_, i) => sleeper(`p-${i}`)));
  const before = await eventually(async () => {
    const ts = (await client.get<{ tasks: TaskView[] }>('/v1/tasks')).tasks;
    return ts.length === taskCount && ts.every((t) => t.state === 'running') ? ts : null;
  }, 30_000, 'tasks running');
  return { c, client, before };
}

async function expectNothingLost(c: TestCluster, client: FlotillaClient, before: TaskView[]): Promise<void> {
  const nodes = (await client.get<{ nodes: NodeView[] }>('/v1/nodes')).nodes;
  expect(nodes.map((n) => `${n.id}:${n.status}`).sort()).toEqual(nodes.map((n) => `${n.id}:ready`).sort());
  const after = (await client.get<{ tasks: TaskView[] }>('/v1/tasks')).tasks;
  expect(after).toHaveLength(before.length);
  for (const t of after) {
    const b = before.find((x) => x.id === t.id)!;
    expect(`${t.id} ${t.state} attempt ${t.attempt} on ${t.node}`).toBe(`${t.id} running attempt ${b.attempt} on ${b.node}`);
    expect(t.history.filter((h) => h.state === 'lost')).toEqual([]);
  }
  for (const m of c.managers.values()) expect(readFileSync(m.logFile, 'utf8')).not.toMatch(/node \S+ is down/);
}

describe('pauses (real processes)', () => {
  it('a single manager stopped for 6 s (4× the node grace) declares no worker down when it resumes', async () => {
    const { c, client, before } = await setup(1, ['w1'], ['--node-grace', '1500', '--worker-heartbeat', '300'], 4);
    const m = c.managers.get('m1')!.proc!;
    m.kill('SIGSTOP');
    await sleep(6000);
    m.kill('SIGCONT');
    // The worker comes back; give the monitor many rounds past the grace.
    await sleep(4000);
    await expectNothingLost(c, client, before);
    // The stall was seen and credited, not blamed on the worker.
    expect(readFileSync(c.managers.get('m1')!.logFile, 'utf8')).toMatch(/could not run; node graces extended/);
  }, 120_000);

  it('the leader stopped for 20 s under load: workers reach the new leader within its failover grace; every task keeps its attempt', async () => {
    // Failover grace 6 s with 500 ms worker heartbeats: a worker needs ~3 s to notice the
    // silence, so it has about 3 s to find the new leader — no room for a handshake timeout
    // on the frozen manager. The leader is m2 when the workers start: each tries m1 first, is
    // redirected to m2, and after losing m2 would go down its list — to m2 again.
    const { c, client, before } = await setup(3, ['w1', 'w2', 'w3'], ['--worker-heartbeat', '500', '--failover-grace', '6000'], 12, 'm2');
    expect(await c.waitForLeader()).toBe('m2');
    const others = c.client(['m1', 'm3'], 20_000);
    let stop = false;
    let writes = 0;
    const load = (async () => {
      for (let i = 0; !stop; i++) {
        try {
          await others.put(`/v1/kv/load-${i % 50}`, `v${i}`, { timeoutMs: 5000 });
          writes++;
        } catch {
          await sleep(50);
        }
      }
    })();
    const leader = c.managers.get('m2')!.proc!;
    leader.kill('SIGSTOP');
    await sleep(20_000);
    leader.kill('SIGCONT');
    await eventually(async () => {
      const s = await c.status('m2');
      return s && s.role === 'follower';
    }, 20_000, 'old leader following');
    await sleep(3000);
    stop = true;
    await load;
    expect(writes).toBeGreaterThan(0);
    await expectNothingLost(c, client, before);
  }, 180_000);
});

describe('chaos: long-pause and clock-step nemeses, the healthy-worker checker', () => {
  it('plans long pauses past the failover grace and bounded, seeded clock steps', async () => {
    const { planSchedule } = await import('../chaos/nemesis.js');
    const base = { seed: 11, faults: ['long-pause', 'clock-step'] as const, intervalMs: 2000, durationMs: 120_000, managers: 3, workers: 2, allowQuorumLoss: false, failoverGraceMs: 8000 };
    const a = planSchedule({ ...base, faults: [...base.faults] });
    expect(planSchedule({ ...base, faults: [...base.faults] })).toEqual(a);
    const faults = a.filter((s) => s.action.kind !== 'heal').map((s) => s.action);
    expect(new Set(faults.map((f) => f.kind))).toEqual(new Set(['long-pause', 'clock-step']));
    for (const f of faults) {
      if (f.kind === 'long-pause') expect(f.ms).toBeGreaterThanOrEqual(10_000), expect(f.ms).toBeLessThanOrEqual(14_000);
      if (f.kind === 'clock-step') expect(Math.abs(f.offsetMs)).toBeGreaterThanOrEqual(60_000), expect(Math.abs(f.offsetMs)).toBeLessThanOrEqual(3_600_000);
    }
    const steps = faults.filter((f) => f.kind === 'clock-step').map((f) => (f as { offsetMs: number }).offsetMs);
    expect(steps.some((x) => x > 0) && steps.some((x) => x < 0)).toBe(true);
  });

  it('the checker fails a down declaration of a worker no fault touched, excuses a restarted one, reads text and JSON logs', async () => {
    const { checkNoHealthyWorkerDown, parseDownDeclarations, reportText } = await import('../chaos/checker/index.js');
    const json = [
      JSON.stringify({ t: '2026-01-01T00:00:00.000Z', level: 'warn', node: 'm1', term: 3, msg: 'node w1 is down: no heartbeat for 3600 s' }),
      '{"t":"2026-01-01T00:00:01.000Z","level":"warn","node":"m1","msg":"node w2 is do', // cut by SIGKILL
      JSON.stringify({ level: 'info', node: 'm1', msg: 'worker w2 registered' }),
    ].join('\n');
    const pretty = '00:00:02.000 m2 t4 warn  node w2 is down: no heartbeat for 6 s\n';
    const decl = [...parseDownDeclarations('m1', json), ...parseDownDeclarations('m2', pretty)];
    expect(decl.map((d) => [d.manager, d.node, d.reason])).toEqual([
      ['m1', 'w1', 'no heartbeat for 3600 s'],
      ['m2', 'w2', 'no heartbeat for 6 s'],
    ]);
    const bad = checkNoHealthyWorkerDown({ workers: ['w1', 'w2'], harmed: ['w2'], declarations: decl });
    expect(bad.ok).toBe(false);
    expect(bad.violations.map((d) => d.node)).toEqual(['w1']);
    expect(bad.excused).toBe(1);
    expect(reportText({ workers: bad })).toContain('healthy workers: FAIL (2 workers, 1 declared down without a fault');
    expect(reportText({ workers: bad })).toContain('m1 declared w1 down: no heartbeat for 3600 s');
    const good = checkNoHealthyWorkerDown({ workers: ['w1', 'w2'], harmed: ['w1', 'w2'], declarations: decl });
    expect(good.ok).toBe(true);
    expect(checkNoHealthyWorkerDown({ workers: ['w1'], harmed: [], declarations: [] }).ok).toBe(true);
  });
});

describe('chaos run with clock steps and long leader pauses (real processes)', () => {
  it('passes every checker, "no healthy worker declared down" included, with both faults injected', async () => {
    const out = mkdtempSync(join(tmpdir(), 'flotilla-chaos-time-'));
    try {
      // Seed 2: a -60 min step on a follower, a 13.3 s pause of the leader, a +57 min step of
      // the (new) leader's clock, then a 15.7 s pause of that leader.
      const args = ['chaos', 'run', '--duration', '40s', '--managers', '3', '--workers', '2', '--faults', 'clock-step,long-pause', '--interval', '3s', '--seed', '2', '--out', out];
      const r = await runCli(args, { timeoutMs: 240_000 });
      if (r.status !== 0) console.error(r.stdout, r.stderr.slice(-4000));
      const report = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8')) as {
        verdict: string;
        checks: { workers?: { verdict: string; workers: number; violations: unknown[] } };
      };
      const nemesis = readFileSync(join(out, 'nemesis.log'), 'utf8');
      expect(nemesis).toMatch(/long-pause start \[m\d\]: SIGSTOP m\d \(leader\) for 1\d\.\d s/);
      expect(nemesis).toMatch(/clock-step start \[m\d\]: wall clock of m\d \(leader\) \+\d+ min/);
      expect(report.checks.workers).toMatchObject({ verdict: 'pass', workers: 2, violations: [] });
      expect(report.verdict).toBe('pass');
      expect(r.status).toBe(0);
      expect(r.stdout).toContain('healthy workers: pass (2 workers, 0 declared down without a fault)');
    } finally {
      if (!process.env.KEEP_TEST_DIRS) rmSync(out, { recursive: true, force: true });
    }
  }, 260_000);
});
