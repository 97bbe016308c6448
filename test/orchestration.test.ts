// The leader schedules, monitors and reruns tasks on workers that follow it — real manager and
// worker processes on loopback, tasks run by the process driver.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { TestCluster, eventually, sleep, killTaskProcesses } from './helpers/cluster.js';
import type { FlotillaClient } from '../src/client/client.js';

interface TaskView {
  id: string;
  name: string;
  state: string;
  desired: string;
  node: string | null;
  reason: string;
  attempt: number;
  restarts: number;
  pendingReason?: string;
  history: { state: string; reason: string; node: string | null }[];
}
interface NodeView {
  id: string;
  status: string;
  availability: string;
}

let cluster: TestCluster;
let client: FlotillaClient;
let pidDir: string;

const GRACE = ['--node-grace', '1500', '--worker-heartbeat', '300', '--failover-grace', '8000'];

/** A task whose process records its pid in pidDir as <taskId>.<pid>, then sleeps. */
function sleeper(name: string, extra: Record<string, unknown> = {}) {
  return {
    name,
    driver: 'process',
    containers: [{ command: ['/bin/sh', '-c', `touch "${pidDir}/$FLOTILLA_TASK_ID.$$"; exec sleep 600`] }],
    resources: { cpu: 10, memory: '8m' },
    ...extra,
  };
}

function pidsOf(taskId: string): number[] {
  return readdirSync(pidDir)
    .filter((f) => f.startsWith(`${taskId}.`))
    .map((f) => Number(f.slice(taskId.length + 1)));
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

async function tasks(q = ''): Promise<TaskView[]> {
  return (await client.get<{ tasks: TaskView[] }>(`/v1/tasks${q}`)).tasks;
}
async function nodes(): Promise<NodeView[]> {
  return (await client.get<{ nodes: NodeView[] }>('/v1/nodes')).nodes;
}
async function submit(spec: unknown): Promise<TaskView> {
  return client.post<TaskView>('/v1/tasks', spec);
}
async function stopAll(): Promise<void> {
  for (const t of await tasks()) if (t.desired === 'running') await client.delete(`/v1/tasks/${t.id}`);
  await eventually(async () => (await tasks()).every((t) => ['stopped', 'succeeded', 'failed'].includes(t.state)), 20_000, 'all tasks stopped');
}

beforeAll(async () => {
  cluster = await TestCluster.managers(3, GRACE);
  pidDir = join(cluster.dir, 'pids');
  mkdirSync(pidDir);
  client = cluster.client(undefined, 20_000);
  for (const w of ['w1', 'w2', 'w3']) cluster.startWorker(w, ['--labels', `zone=${w === 'w3' ? 'b' : 'a'}`, '--cpu', '2000', '--memory', '2g']);
  await eventually(async () => (await nodes()).filter((n) => n.status === 'ready').length === 3, 20_000, '3 workers ready');
}, 60_000);

afterAll(async () => {
  // Kill task processes the workers left behind (they outlive workers on purpose).
  killTaskProcesses(pidDir);
  await cluster.stop();
});

describe('orchestration (real managers and workers)', () => {
  it('runs 50 tasks spread across 3 workers; stopping them stops their processes', async () => {
    const t0 = Date.now();
    const created = await client.post<{ tasks: TaskView[] }>('/v1/tasks', Array.from({ length: 50 }, (_, i) => sleeper(`spread-${i}`)));
    expect(created.tasks).toHaveLength(50);
    const running = await eventually(async () => {
      const ts = (await tasks()).filter((t) => t.name.startsWith('spread-'));
      return ts.length === 50 && ts.every((t) => t.state === 'running' && pidsOf(t.id).length === 1) ? ts : null;
    }, 30_000, '50 tasks running');
    console.log(`50 tasks submitted → all running in ${Date.now() - t0} ms`);
    const perNode = new Map<string, number>();
    for (const t of running) perNode.set(t.node!, (perNode.get(t.node!) ?? 0) + 1);
    expect([...perNode.keys()].sort()).toEqual(['w1', 'w2', 'w3']);
    for (const n of perNode.values()) expect(n).toBeGreaterThanOrEqual(15);
    const pids = running.flatMap((t) => pidsOf(t.id));
    expect(pids).toHaveLength(50);
    expect(pids.every(alive)).toBe(true);
    await stopAll();
    await eventually(() => pids.every((p) => !alive(p)), 10_000, 'task processes gone');
  });

  it('a task that exits non-zero is restarted per its policy; the restart count survives a leader change', async () => {
    const t = await submit({
      name: 'flaky',
      driver: 'process',
      containers: [{ command: ['/bin/sh', '-c', 'sleep 0.3; exit 3'] }],
      restart: { policy: 'on-failure', maxAttempts: 2, backoffMs: 200 },
      resources: { cpu: 10, memory: '8m' },
    });
    await eventually(async () => (await client.get<TaskView>(`/v1/tasks/${t.id}`)).restarts >= 1, 20_000, 'first restart');
    const leader = await cluster.waitForLeader();
    await cluster.killAndWait(leader);
    try {
      await cluster.waitForLeader(20_000, [leader]);
      const done = await eventually(async () => {
        const v = await client.get<TaskView>(`/v1/tasks/${t.id}`);
        return v.state === 'failed' && v.restarts === 2 && v.attempt === 3 ? v : null;
      }, 30_000, 'restart limit reached');
      expect(done.history.filter((h) => h.state === 'failed').length).toBeGreaterThanOrEqual(3);
    } finally {
      // Bring the manager back whatever happened, so later tests keep a quorum.
      cluster.restart(leader);
      await cluster.waitForLeader();
    }
  });

  it('SIGKILL of the leader: running tasks keep their processes, no node goes down, nothing is rescheduled', async () => {
    const created = await client.post<{ tasks: TaskView[] }>('/v1/tasks', Array.from({ length: 6 }, (_, i) => sleeper(`steady-${i}`)));
    const ids = created.tasks.map((t) => t.id);
    // `running` means started; wait until each process has also recorded its pid.
    const before = await eventually(async () => {
      const ts = (await tasks()).filter((t) => ids.includes(t.id));
      return ts.every((t) => t.state === 'running' && pidsOf(t.id).length === 1) ? ts : null;
    }, 20_000, 'steady tasks running');
    const pidsBefore = new Map(ids.map((id) => [id, pidsOf(id)]));
    const leader = await cluster.waitForLeader();
    await cluster.killAndWait(leader);
    const newLeader = await cluster.waitForLeader(20_000, [leader]);
    // Past the failover grace period: workers re-register with the new leader in time.
    await sleep(9000);
    const after = (await tasks()).filter((t) => ids.includes(t.id));
    for (const t of after) {
      const b = before.find((x) => x.id === t.id)!;
      expect(t.state).toBe('running');
      expect(t.attempt).toBe(b.attempt);
      expect(t.node).toBe(b.node);
      expect(pidsOf(t.id)).toEqual(pidsBefore.get(t.id));
      expect(pidsOf(t.id).every(alive)).toBe(true);
    }
    expect((await nodes()).every((n) => n.status === 'ready')).toBe(true);
    const events = await cluster.client([newLeader]).get<{ tasks: TaskView[] }>('/v1/tasks');
    expect(events.tasks.filter((t) => t.history.some((h) => h.state === 'lost'))).toHaveLength(0);
    // New submissions work under the new leader.
    const fresh = await submit(sleeper('after-failover'));
    await eventually(async () => (await client.get<TaskView>(`/v1/tasks/${fresh.id}`)).state === 'running', 20_000, 'new task running');
    cluster.restart(leader);
    await cluster.waitForLeader();
    await stopAll();
  });

  it('SIGKILL of a worker: its tasks are rescheduled after the grace period; restarted, it runs no duplicates', async () => {
    const created = await client.post<{ tasks: TaskView[] }>('/v1/tasks', Array.from({ length: 9 }, (_, i) => sleeper(`move-${i}`)));
    const ids = created.tasks.map((t) => t.id);
    const placed = await eventually(async () => {
      const ts = (await tasks()).filter((t) => ids.includes(t.id));
      return ts.every((t) => t.state === 'running' && pidsOf(t.id).length === 1) ? ts : null;
    }, 20_000, 'tasks running');
    const victim = 'w2';
    const onVictim = placed.filter((t) => t.node === victim).map((t) => t.id);
    expect(onVictim.length).toBeGreaterThan(0);
    const oldPids = onVictim.flatMap(pidsOf);
    await cluster.killAndWait(victim);
    const killedAt = Date.now();
    await eventually(async () => (await nodes()).find((n) => n.id === victim)?.status === 'down', 20_000, 'worker down');
    const moved = await eventually(async () => {
      const ts = (await tasks()).filter((t) => onVictim.includes(t.id));
      return ts.every((t) => t.state === 'running' && t.node !== victim) ? ts : null;
    }, 20_000, 'tasks rescheduled');
    console.log(`worker SIGKILL → its ${moved.length} tasks running elsewhere in ${Date.now() - killedAt} ms`);
    for (const t of moved) expect(t.attempt).toBe(2);
    // The killed worker's task processes outlived it; once it is back it must stop them.
    cluster.restart(victim);
    await eventually(async () => (await nodes()).find((n) => n.id === victim)?.status === 'ready', 20_000, 'worker back');
    await eventually(() => oldPids.every((p) => !alive(p)), 15_000, 'stale copies stopped');
    for (const id of onVictim) expect(pidsOf(id).filter(alive)).toHaveLength(1);
    await stopAll();
  });

  it('drain moves tasks, pause stops new placements, constraints and resources are respected', async () => {
    const created = await client.post<{ tasks: TaskView[] }>('/v1/tasks', Array.from({ length: 6 }, (_, i) => sleeper(`drain-${i}`)));
    const ids = created.tasks.map((t) => t.id);
    await eventually(async () => (await tasks()).filter((t) => ids.includes(t.id)).every((t) => t.state === 'running'), 20_000, 'running');
    await client.patch('/v1/nodes/w1', { availability: 'drain' });
    await eventually(async () => {
      const ts = (await tasks()).filter((t) => ids.includes(t.id));
      return ts.every((t) => t.state === 'running' && t.node !== 'w1');
    }, 20_000, 'drained');
    await client.patch('/v1/nodes/w3', { availability: 'pause' });
    const p = await submit(sleeper('while-paused'));
    const pv = await eventually(async () => {
      const v = await client.get<TaskView>(`/v1/tasks/${p.id}`);
      return v.state === 'running' ? v : null;
    }, 20_000, 'placed while w1 drains and w3 pauses');
    expect(pv.node).toBe('w2');
    // Constraint: zone==b is only w3, which is paused → pending with a reason; activate → runs there.
    const c = await submit(sleeper('zone-b', { constraints: ['zone==b'] }));
    const pending = await eventually(async () => {
      const v = await client.get<TaskView>(`/v1/tasks/${c.id}`);
      return v.state === 'pending' && v.pendingReason ? v : null;
    }, 10_000, 'pending reason');
    expect(pending.pendingReason).toMatch(/zone==b|paused|draining/);
    await client.patch('/v1/nodes/w3', { availability: 'active' });
    const cv = await eventually(async () => {
      const v = await client.get<TaskView>(`/v1/tasks/${c.id}`);
      return v.state === 'running' ? v : null;
    }, 20_000, 'constrained task placed');
    expect(cv.node).toBe('w3');
    // Resources: a task bigger than any node stays pending with a reason that says so.
    const big = await submit(sleeper('too-big', { resources: { cpu: 10, memory: '64g' } }));
    const bv = await eventually(async () => {
      const v = await client.get<TaskView>(`/v1/tasks/${big.id}`);
      return v.pendingReason ? v : null;
    }, 10_000, 'too-big reason');
    expect(bv.state).toBe('pending');
    expect(bv.pendingReason).toMatch(/memory/);
    await client.patch('/v1/nodes/w1', { availability: 'active' });
    await stopAll();
  });

  it('bad specs get 400 with the field and the reason; nothing is written', async () => {
    const before = (await tasks('?all=true')).length;
    const addr = cluster.addrs()[0]!;
    const cases: [unknown, RegExp][] = [
      [{ name: 'x', driver: 'process', containers: [] }, /containers/],
      [{ name: 'Bad Name!', driver: 'process', containers: [{ command: ['true'] }] }, /name/],
      [{ name: 'x', driver: 'process', containers: [{ command: ['true'] }], resources: { cpu: 'lots' } }, /resources\.cpu/],
      [{ name: 'x', driver: 'warp', containers: [{ command: ['true'] }] }, /driver/],
      [{ name: 'x', driver: 'process', containers: [{ command: ['true'] }], extra: 1 }, /extra/],
      [[sleeper('ok-one'), { name: 'x', containers: [{ image: '' }] }], /\[1\]|image/],
    ];
    for (const [body, re] of cases) {
      const r = await fetch(`http://${addr}/v1/tasks`, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
      expect(r.status).toBe(400);
      const j = (await r.json()) as { error: { code: string; message: string; details?: { path: string }[] } };
      expect(j.error.code).toBe('bad_request');
      expect(j.error.message + JSON.stringify(j.error.details ?? [])).toMatch(re);
    }
    const notJson = await fetch(`http://${addr}/v1/tasks`, { method: 'POST', body: '{', headers: { 'content-type': 'application/json' } });
    expect(notJson.status).toBe(400);
    const badPatch = await fetch(`http://${addr}/v1/nodes/w1`, { method: 'PATCH', body: JSON.stringify({ availability: 'sleepy' }) });
    expect(badPatch.status).toBe(400);
    expect((await tasks('?all=true')).length).toBe(before);
    expect((await nodes()).find((n) => n.id === 'w1')!.availability).toBe('active');
  });
});


