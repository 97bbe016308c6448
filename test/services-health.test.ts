// Health checks on a real cluster (manager and worker processes on loopback, process driver):
// a service with an http check served by the task itself is ready only once the check passes;
// an update to a template whose check never passes is rolled back by itself and the old
// template keeps running; a plain task's failing check gets it restarted by its restart
// policy, with the check's output as the reason; a start-first update with an http check never drops the ready count
// while a client polls the service and its ready tasks.
//
// The process driver runs tasks in the node's network (one loopback here for every worker), so
// a service whose tasks listen on a fixed port runs one replica per port: the http tests use
// one replica (the start-first update moves to another port); the multi-replica rollback uses
// an exec check, which runs in each task's own working directory.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer } from 'node:net';
import { mkdirSync } from 'node:fs';
import { get } from 'node:http';
import { join } from 'node:path';
import { TestCluster, eventually, killTaskProcesses, runCli, sleep, ROOT } from './helpers/cluster.js';
import type { FlotillaClient } from '../src/client/client.js';
import type { ServiceInfo, ServiceInspect, TaskView } from '../src/protocol/api.js';

let cluster: TestCluster;
let client: FlotillaClient;
let pidDir: string;

const GRACE = ['--node-grace', '1500', '--worker-heartbeat', '300', '--failover-grace', '8000'];
const SERVER = join(ROOT, 'test', 'fixtures', 'health-server.mjs');

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** GET http://127.0.0.1:port/healthz → status code (0 when nothing answers). */
function probe(port: number): Promise<number> {
  return new Promise((resolve) => {
    const req = get({ host: '127.0.0.1', port, path: '/healthz', timeout: 2000 }, (res) => {
      res.resume();
      res.once('end', () => resolve(res.statusCode ?? 0));
    });
    req.once('timeout', () => req.destroy());
    req.once('error', () => resolve(0));
  });
}

/** A one-replica service whose task serves /healthz on `port` (503 for `readyAfterMs`, then 200). */
function httpSpec(name: string, port: number, readyAfterMs: number | 'never', extra: Record<string, unknown> = {}) {
  return {
    name,
    driver: 'process',
    replicas: 1,
    containers: [
      {
        command: ['/bin/sh', '-c', `touch "${pidDir}/$FLOTILLA_TASK_ID.$$"; exec "${process.execPath}" "${SERVER}"`],
        env: { PORT: String(port), READY_AFTER_MS: String(readyAfterMs) },
      },
    ],
    resources: { cpu: 10, memory: '8m' },
    restart: { policy: 'on-failure', backoffMs: 200, maxBackoffMs: 1000 },
    // The start period covers the warm-up: its 503s do not count.
    health: { type: 'http', port, path: '/healthz', intervalMs: 200, timeoutMs: 1000, retries: 3, startPeriodMs: '15s' },
    ...extra,
  };
}

/** Ready by the rule a load balancer would follow: running, and healthy when it has a check. */
const isReady = (t: TaskView): boolean => t.state === 'running' && t.desired === 'running' && (t.spec.health === undefined || t.health?.status === 'healthy');

beforeAll(async () => {
  cluster = await TestCluster.managers(1, GRACE);
  pidDir = join(cluster.dir, 'pids');
  mkdirSync(pidDir);
  client = cluster.client(undefined, 20_000);
  for (const w of ['w1', 'w2']) cluster.startWorker(w, ['--cpu', '2000', '--memory', '2g']);
  await eventually(async () => (await client.get<{ nodes: { status: string }[] }>('/v1/nodes')).nodes.filter((n) => n.status === 'ready').length === 2, 20_000, '2 workers ready');
}, 60_000);

afterAll(async () => {
  killTaskProcesses(pidDir);
  await cluster.stop();
});

describe('health checks (real managers, workers and task processes)', () => {
  it('a service with an http check is ready only once the check passes; ps and inspect show it', async () => {
    const port = await freePort();
    const cli = (...args: string[]) => runCli(['--managers', cluster.addrs().join(','), ...args], { env: cluster.cliEnv() });
    // As a user writes it: the CLI's health flags.
    const created = await cli(
      'service', 'create', 'hweb', '--driver', 'process', '--replicas', '1', '--cpu', '10m', '--memory', '8m',
      '-e', `PORT=${port}`, '-e', 'READY_AFTER_MS=2500',
      '--health-http', `${port}/healthz`, '--health-interval', '200ms', '--health-timeout', '1s', '--health-start-period', '15s', '-d',
      '--', '/bin/sh', '-c', `touch "${pidDir}/$FLOTILLA_TASK_ID.$$"; exec "${process.execPath}" "${SERVER}"`,
    );
    expect(created.status, created.stderr).toBe(0);
    expect(created.stderr).not.toMatch(/do not run health checks/);
    // Sample until ready: never ready before the worker reported it healthy, and seen running-but-not-ready.
    let runningNotReady = 0;
    let served503 = false;
    const ready = await eventually(async () => {
      const s = await client.get<ServiceInspect>('/v1/services/hweb');
      const t = s.tasks.find((x) => x.desired === 'running');
      if (t?.state === 'running' && s.ready === 0) {
        runningNotReady++;
        if ((await probe(port)) === 503) served503 = true;
      }
      if (s.ready > 0) expect(t?.health?.status).toBe('healthy');
      return s.ready === 1 ? { s, t: t! } : null;
    }, 30_000, 'hweb ready');
    expect(runningNotReady).toBeGreaterThan(0);
    expect(served503).toBe(true);
    expect(await probe(port)).toBe(200);
    expect(ready.t.health).toMatchObject({ status: 'healthy', failingStreak: 0 });
    expect(ready.t.spec.health).toMatchObject({ type: 'http', port, path: '/healthz' });

    const ps = await cli('ps');
    expect(ps.stdout).toMatch(/hweb\.1\s+running \(healthy\)/);
    const sps = await cli('service', 'ps', 'hweb');
    expect(sps.stdout).toMatch(/hweb\.1\s+1\s+running \(healthy\)/);
    const insp = await cli('inspect', ready.t.id);
    expect(insp.stdout).toMatch(/Health:\s+healthy since/);
    expect(insp.stdout).toMatch(/Check:\s+http :\d+\/healthz every 200ms/);
    const ls = await cli('service', 'ls');
    expect(ls.stdout).toMatch(/hweb\s+1\/1/);
    await client.delete('/v1/services/hweb');
  }, 60_000);

  it('an update to a template whose check never passes is rolled back; the old template keeps running', async () => {
    // Exec check: a file the task writes into its own working directory.
    const spec = (cmd: string) => ({
      name: 'cweb',
      driver: 'process',
      replicas: 3,
      containers: [{ command: ['/bin/sh', '-c', `touch "${pidDir}/$FLOTILLA_TASK_ID.$$"; ${cmd}`] }],
      resources: { cpu: 10, memory: '8m' },
      restart: { policy: 'on-failure', backoffMs: 200, maxBackoffMs: 1000 },
      update: { parallelism: 1, monitorMs: 1000, failureAction: 'rollback' },
      health: { type: 'exec', command: ['/bin/sh', '-c', 'test -f ready && echo ready || { echo not ready; exit 1; }'], intervalMs: 200, timeoutMs: 1000, retries: 2 },
    });
    await client.post('/v1/services', spec('touch ready; exec sleep 600'));
    const before = await eventually(async () => {
      const s = await client.get<ServiceInspect>('/v1/services/cweb');
      return s.ready === 3 ? s : null;
    }, 30_000, 'cweb 3 ready');
    const beforeIds = before.tasks.filter((t) => t.desired === 'running').map((t) => t.id).sort();

    // v2 runs, but never becomes healthy.
    const started = await client.put<ServiceInfo>('/v1/services/cweb', JSON.stringify(spec('exec sleep 600')));
    expect(started.update).toMatchObject({ state: 'updating', target: 2 });
    let minReady = 3;
    const rolled = await eventually(async () => {
      const s = await client.get<ServiceInfo>('/v1/services/cweb');
      minReady = Math.min(minReady, s.ready);
      return s.update.state === 'rolled_back' || s.update.state === 'completed' ? s : null;
    }, 60_000, 'the update to end');
    expect(rolled.update.state).toBe('rolled_back');
    expect(rolled.templateVersion).toBe(1);
    expect(before.tasks.filter((t) => t.desired === 'running').every((t) => t.health?.status === 'healthy' && t.health.output === 'ready')).toBe(true);
    expect(minReady).toBeGreaterThanOrEqual(2); // stop-first, parallelism 1
    const after = await eventually(async () => {
      const s = await client.get<ServiceInspect>('/v1/services/cweb');
      const live = s.tasks.filter((t) => t.desired === 'running');
      return s.ready === 3 && live.length === 3 && live.every((t) => t.service!.version === 1 && isReady(t)) ? s : null;
    }, 30_000, 'the old template in every slot, 3 ready');
    // Two of the three old tasks were never touched.
    const kept = after.tasks.filter((t) => t.desired === 'running' && beforeIds.includes(t.id));
    expect(kept.length).toBe(2);
    // The v2 task failed its check: the worker stopped it as failed, saying why.
    const all = await client.get<ServiceInspect>('/v1/services/cweb?all=true');
    const bad = all.tasks.filter((t) => t.service!.version === 2);
    expect(bad.length).toBeGreaterThan(0);
    expect(bad.some((t) => t.history.some((h) => h.state === 'failed' && /^health check failed 2 times: (exit 1: )?not ready/.test(h.reason)))).toBe(true);
    await client.delete('/v1/services/cweb');
  }, 120_000);

  it('a plain task may have a check: tcp healthy; an exec check that fails gets the task restarted by its policy', async () => {
    const port = await freePort();
    const ok = await client.post<TaskView>('/v1/tasks', {
      name: 'plain-ok',
      driver: 'process',
      containers: [{ command: ['/bin/sh', '-c', `touch "${pidDir}/$FLOTILLA_TASK_ID.$$"; exec "${process.execPath}" "${SERVER}"`], env: { PORT: String(port), READY_AFTER_MS: '0' } }],
      resources: { cpu: 10, memory: '8m' },
      health: { type: 'tcp', port, intervalMs: 200, startPeriodMs: '10s' },
    });
    await eventually(async () => (await client.get<TaskView>(`/v1/tasks/${ok.id}`)).health?.status === 'healthy', 20_000, 'plain task healthy');

    const bad = await client.post<TaskView>('/v1/tasks', {
      name: 'plain-bad',
      driver: 'process',
      containers: [{ command: ['/bin/sh', '-c', `touch "${pidDir}/$FLOTILLA_TASK_ID.$$"; exec sleep 600`] }],
      resources: { cpu: 10, memory: '8m' },
      restart: { policy: 'on-failure', maxAttempts: 1, backoffMs: 100 },
      health: { type: 'exec', command: 'echo "no such thing"; exit 4', intervalMs: 200, retries: 2 },
    });
    const ended = await eventually(async () => {
      const t = await client.get<TaskView>(`/v1/tasks/${bad.id}`);
      return t.state === 'failed' && t.attempt === 2 && t.nextRestartAt === undefined ? t : null;
    }, 30_000, 'two failed attempts, then the restart limit');
    expect(ended.reason).toBe('health check failed 2 times: exit 4: no such thing');
    expect(ended.health).toMatchObject({ status: 'unhealthy', failingStreak: 2 });
    expect(ended.history.filter((h) => h.state === 'failed').map((h) => h.attempt)).toEqual([1, 2]);
    expect(ended.detail).toMatch(/restart limit reached/);
    await client.delete(`/v1/tasks/${ok.id}`);
  }, 60_000);

  it('a start-first update with an http check keeps every sample ready while a client polls', async () => {
    const [p1, p2] = [await freePort(), await freePort()];
    const update = { parallelism: 1, order: 'start-first', monitorMs: 500, failureAction: 'rollback' };
    await client.post('/v1/services', httpSpec('sweb', p1, 300, { update }));
    await eventually(async () => (await client.get<ServiceInfo>('/v1/services/sweb')).ready === 1, 30_000, 'sweb ready');

    // The new template warms up for 2 s (503) on another port.
    let stop = false;
    const samples: { ready: number; codes: number[] }[] = [];
    const poller = (async () => {
      for (let i = 0; i < 2000 && !stop; i++) {
        const s = await client.get<ServiceInspect>('/v1/services/sweb');
        const codes = await Promise.all(s.tasks.filter(isReady).map((t) => probe(Number(t.spec.containers[0]!.env.PORT))));
        samples.push({ ready: s.ready, codes });
        await sleep(50);
      }
    })();
    await client.put('/v1/services/sweb', JSON.stringify(httpSpec('sweb', p2, 2000, { update })));
    const done = await eventually(async () => {
      const s = await client.get<ServiceInspect>('/v1/services/sweb');
      return s.update.state === 'completed' && s.ready === 1 && s.tasks.filter((t) => t.desired === 'running').every((t) => t.service!.version === 2) ? s : null;
    }, 60_000, 'the update to complete');
    await sleep(300);
    stop = true;
    await poller;
    expect(done.templateVersion).toBe(2);
    expect(samples.length).toBeGreaterThan(10);
    expect(Math.min(...samples.map((s) => s.ready))).toBeGreaterThanOrEqual(1);
    // Every task the service counted ready answered 200 (no request went to a warming task).
    const bad = samples.filter((s) => s.codes.length === 0 || s.codes.some((c) => c !== 200));
    expect(bad).toEqual([]);
    expect(await probe(p2)).toBe(200);
    await client.delete('/v1/services/sweb');
  }, 120_000);
});
