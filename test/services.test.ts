// Services on a real cluster: manager and worker processes on loopback, tasks run by the
// process driver. 4 replicas run as slots web.1…web.4; scaling to 2 stops slots 3 and 4;
// a SIGKILLed worker's replicas run again on the others; an update to a command that exits at
// once rolls back by itself, and only the replaced slot gets a new task.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { TestCluster, eventually, killTaskProcesses, runCli, taskPids } from './helpers/cluster.js';
import type { FlotillaClient } from '../src/client/client.js';
import type { ServiceInfo, ServiceInspect, TaskView } from '../src/protocol/api.js';

let cluster: TestCluster;
let client: FlotillaClient;
let pidDir: string;

const GRACE = ['--node-grace', '1500', '--worker-heartbeat', '300', '--failover-grace', '8000'];

function webSpec(extra: Record<string, unknown> = {}) {
  return {
    name: 'web',
    driver: 'process',
    replicas: 4,
    containers: [{ command: ['/bin/sh', '-c', `touch "${pidDir}/$FLOTILLA_TASK_ID.$$"; exec sleep 600`] }],
    resources: { cpu: 10, memory: '8m' },
    restart: { policy: 'on-failure', backoffMs: 200, maxBackoffMs: 1000 },
    update: { parallelism: 1, monitorMs: 1000, failureAction: 'rollback' },
    ...extra,
  };
}

const pidsOf = (taskId: string): number[] => taskPids(pidDir, taskId);

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

async function inspect(): Promise<ServiceInspect> {
  return client.get<ServiceInspect>('/v1/services/web');
}

/** The live (desired running) tasks by slot, once every slot 1..n has exactly one running. */
async function runningSlots(n: number, pred: (t: TaskView) => boolean = () => true): Promise<Map<number, TaskView> | null> {
  const s = await inspect();
  const live = s.tasks.filter((t) => t.desired === 'running');
  const bySlot = new Map<number, TaskView>();
  for (const t of live) {
    // Running and its command has begun (the task writes its pid file first thing).
    if (t.state !== 'running' || !pred(t) || pidsOf(t.id).filter(alive).length !== 1) return null;
    if (bySlot.has(t.service!.slot)) return null;
    bySlot.set(t.service!.slot, t);
  }
  if (bySlot.size !== n || [...bySlot.keys()].some((k) => k < 1 || k > n)) return null;
  return s.ready === n ? bySlot : null;
}

beforeAll(async () => {
  cluster = await TestCluster.managers(1, GRACE);
  pidDir = join(cluster.dir, 'pids');
  mkdirSync(pidDir);
  client = cluster.client(undefined, 20_000);
  for (const w of ['w1', 'w2', 'w3']) cluster.startWorker(w, ['--cpu', '2000', '--memory', '2g']);
  await eventually(async () => (await client.get<{ nodes: { status: string }[] }>('/v1/nodes')).nodes.filter((n) => n.status === 'ready').length === 3, 20_000, '3 workers ready');
}, 60_000);

afterAll(async () => {
  killTaskProcesses(pidDir);
  await cluster.stop();
});

describe('services (real managers and workers)', () => {
  it('a bad spec is refused with field errors and creates nothing', async () => {
    const err = await client.post('/v1/services', webSpec({ replicas: -1, update: { order: 'sideways' } })).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'bad_request', httpStatus: 400 });
    const paths = ((err as { details?: { path: string }[] }).details ?? []).map((d) => d.path).sort();
    expect(paths).toEqual(['replicas', 'update.order']);
    expect((await client.get<{ services: ServiceInfo[] }>('/v1/services')).services).toEqual([]);

    // On an existing service (no replicas, so no tasks): bad updates change nothing.
    const probe = await client.post<ServiceInfo>('/v1/services', webSpec({ name: 'probe', replicas: 0 }));
    const fail = (p: Promise<unknown>) => p.then(() => null, (e: unknown) => e as { code: string; httpStatus: number; details?: { path: string }[] });
    expect(await fail(client.put('/v1/services/probe', JSON.stringify(webSpec({ name: 'probe', containers: [] }))))).toMatchObject({ httpStatus: 400, details: [{ path: 'containers' }] });
    expect(await fail(client.put('/v1/services/probe', JSON.stringify(webSpec({ name: 'other' }))))).toMatchObject({ httpStatus: 400, details: [{ path: 'name' }] });
    expect(await fail(client.post('/v1/services/probe/scale', { replicas: -1 }))).toMatchObject({ httpStatus: 400, details: [{ path: 'replicas' }] });
    expect(await fail(client.post('/v1/services/probe/rollback'))).toMatchObject({ httpStatus: 409 });
    expect(await fail(client.post('/v1/services', webSpec({ name: 'probe' })))).toMatchObject({ httpStatus: 409 });
    expect(await fail(client.put('/v1/services/nope', JSON.stringify(webSpec({ name: 'nope' }))))).toMatchObject({ httpStatus: 404 });
    expect(await fail(client.post('/v1/services/nope/scale', { replicas: 1 }))).toMatchObject({ httpStatus: 404 });
    expect(await fail(client.delete('/v1/services/nope'))).toMatchObject({ httpStatus: 404 });
    const still = await client.get<ServiceInfo>('/v1/services/probe');
    expect(still).toMatchObject({ replicas: 0, templateVersion: 1, version: probe.version, update: { state: 'none' } });
    await client.delete('/v1/services/probe');
    expect((await client.get<{ services: ServiceInfo[] }>('/v1/services')).services).toEqual([]);
  });

  it('runs 4 replicas, scales to 2 (slots 3 and 4 stop), survives a worker SIGKILL, rolls back a failing update', async () => {
    const created = await client.post<ServiceInfo>('/v1/services', webSpec());
    expect(created).toMatchObject({ name: 'web', replicas: 4, templateVersion: 1 });
    const four = await eventually(() => runningSlots(4), 30_000, '4 replicas running');
    expect([...four.values()].map((t) => t.name).sort()).toEqual(['web.1', 'web.2', 'web.3', 'web.4']);
    for (const t of four.values()) expect(pidsOf(t.id).filter(alive)).toHaveLength(1);

    // Scale to 2: slots 3 and 4 stop, 1 and 2 keep their tasks.
    const scaled = await client.post<ServiceInfo>('/v1/services/web/scale', { replicas: 2 });
    expect(scaled.replicas).toBe(2);
    const two = await eventually(() => runningSlots(2), 20_000, '2 replicas');
    expect(two.get(1)!.id).toBe(four.get(1)!.id);
    expect(two.get(2)!.id).toBe(four.get(2)!.id);
    const gone = [four.get(3)!, four.get(4)!].flatMap((t) => pidsOf(t.id));
    await eventually(() => gone.every((p) => !alive(p)), 15_000, 'slots 3 and 4 stopped');
    await eventually(async () => {
      const all = await client.get<ServiceInspect>('/v1/services/web?all=true');
      return [four.get(3)!.id, four.get(4)!.id].every((id) => all.tasks.find((t) => t.id === id)?.state === 'stopped');
    }, 15_000, 'slots 3 and 4 reported stopped');

    // Back to 4, then SIGKILL a worker that runs some: they run again on the others.
    await client.post('/v1/services/web/scale', { replicas: 4 });
    const again = await eventually(() => runningSlots(4), 30_000, '4 replicas again');
    const counts = new Map<string, number>();
    for (const t of again.values()) counts.set(t.node!, (counts.get(t.node!) ?? 0) + 1);
    const victim = [...counts.entries()].sort((a, b) => b[1] - a[1])[0]![0];
    const victimPids = [...again.values()].filter((t) => t.node === victim).flatMap((t) => pidsOf(t.id));
    await cluster.killAndWait(victim);
    // (Its task processes outlive it for a bounded while; afterAll kills what is left.)
    const healed = await eventually(() => runningSlots(4, (t) => t.node !== victim), 40_000, '4 replicas on the other workers');
    expect([...healed.values()].every((t) => t.node !== victim)).toBe(true);
    expect(victimPids.length).toBeGreaterThan(0);

    // An update to a command that exits at once rolls back by itself.
    const before = await eventually(() => runningSlots(4), 20_000, 'settled');
    const beforeIds = new Map([...before].map(([k, t]) => [k, t.id]));
    const bad = webSpec({ containers: [{ command: ['/bin/sh', '-c', 'exit 1'] }] });
    const started = await client.put<ServiceInfo>('/v1/services/web', JSON.stringify(bad));
    expect(started.update).toMatchObject({ state: 'updating', target: 2, from: 1 });
    let minReady = 4;
    const rolled = await eventually(async () => {
      const s = await inspect();
      minReady = Math.min(minReady, s.ready);
      return s.update.state === 'rolled_back' ? s : null;
    }, 60_000, 'automatic rollback');
    expect(rolled.templateVersion).toBe(1);
    expect(rolled.previousVersion).toBe(2);
    expect(rolled.update.message).toMatch(/rolled back/);
    // Stop-first with parallelism 1: at most one replica was down at a time.
    expect(minReady).toBeGreaterThanOrEqual(3);
    const after = await eventually(() => runningSlots(4, (t) => t.service!.version === 1), 30_000, 'old template running in every slot');
    for (const t of after.values()) expect(t.spec.containers[0]!.command.join(' ')).toContain('exec sleep 600');
    // Only the slot the update replaced got a new task; the others kept theirs.
    const changed = [...after].filter(([k, t]) => beforeIds.get(k) !== t.id).map(([k]) => k);
    expect(changed).toEqual([1]);
    const history = await client.get<ServiceInspect>('/v1/services/web?all=true');
    expect(history.tasks.some((t) => t.service!.version === 2 && t.history.some((h) => h.state === 'failed'))).toBe(true);

    // The CLI sees it.
    const ls = await runCli(['service', 'ls', '--managers', cluster.addrs().join(',')], { env: cluster.cliEnv() });
    expect(ls.status).toBe(0);
    expect(ls.stdout).toMatch(/web\s+4\/4\s+/);

    // Removing the service stops every task.
    const pids = [...after.values()].flatMap((t) => pidsOf(t.id));
    await client.delete('/v1/services/web');
    await eventually(() => pids.every((p) => !alive(p)), 15_000, 'tasks stopped');
    await eventually(async () => (await client.get<{ tasks: TaskView[] }>('/v1/tasks?all=true')).tasks.every((t) => t.service === undefined), 15_000, 'tasks removed');
    expect((await client.get<{ services: ServiceInfo[] }>('/v1/services')).services).toEqual([]);
  });

  it('the CLI: create, ls, ps, scale, a failing update exits 1 after rolling back, rm', async () => {
    const cli = (...args: string[]) => runCli(['--managers', cluster.addrs().join(','), ...args], { env: cluster.cliEnv(), timeoutMs: 120_000 });
    const bad = await cli('service', 'create', 'cli', '--replicas', 'many', '--', '/bin/sleep', '600');
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/--replicas must be a whole number/);
    const badSpec = await cli('service', 'create', 'cli', '--update-order', 'sideways', '--', '/bin/sleep', '600');
    expect(badSpec.status).toBe(2);
    expect(badSpec.stderr).toMatch(/update\.order: must be one of 'stop-first', 'start-first'/);

    const created = await cli('service', 'create', 'cli', '--replicas', '3', '--update-monitor', '500ms', '--memory', '8m', '--cpu', '10m', '--', '/bin/sleep', '600');
    expect(created.status, created.stderr).toBe(0);
    expect(created.stdout).toMatch(/cli\s+3\/3\s+1\s+-/);
    const ps = await cli('service', 'ps', 'cli');
    expect(ps.status).toBe(0);
    expect(ps.stdout.match(/cli\.[123]\s+1\s+running/g)).toHaveLength(3);
    const scaled = await cli('service', 'scale', 'cli=1');
    expect(scaled.status, scaled.stderr).toBe(0);
    expect((await client.get<ServiceInfo>('/v1/services/cli')).replicas).toBe(1);

    // An update to a command that exits at once: rolled back, exit status 1.
    const upd = await cli('service', 'update', 'cli', '--', '/bin/sh', '-c', 'exit 3');
    expect(upd.status, upd.stdout + upd.stderr).toBe(1);
    expect(upd.stderr).toMatch(/rolled back/);
    const after = await client.get<ServiceInfo>('/v1/services/cli');
    expect(after).toMatchObject({ templateVersion: 1, previousVersion: 2, ready: 1, update: { state: 'rolled_back' } });
    const inspect = await cli('service', 'inspect', 'cli');
    expect(JSON.parse(inspect.stdout)).toMatchObject({ name: 'cli', templateVersion: 1, spec: { replicas: 1 } });
    const rm = await cli('service', 'rm', 'cli');
    expect(rm.status).toBe(0);
    expect(rm.stdout).toMatch(/^cli/);
    const ls = await cli('service', 'ls', '-o', 'json');
    expect(JSON.parse(ls.stdout)).toEqual([]);
  });
});
