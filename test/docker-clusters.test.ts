// Two clusters on one Docker engine, with the same worker ids (w1, w2): the second must never
// see, adopt, stop or remove the first one's containers (issue 17 part 2). And a second live
// worker of one cluster claiming a node id already in use on the engine is refused.
import { afterAll, describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SECRET, TestCluster, eventually, sleep } from './helpers/cluster.js';
import { workerClusterId } from '../src/manager/dispatcher.js';
import { workerToken } from '../src/manager/auth.js';
import { WorkerAgent } from '../src/worker/agent.js';
import type { Driver, DriverTaskStatus, LogLine } from '../src/worker/driver.js';
import { DockerTestCluster, containersWith, dockerAvailable, dockerClient, removeClusterContainers } from './helpers/docker.js';
import { LABELS } from '../src/worker/drivers/docker.js';
import type { FlotillaClient } from '../src/client/client.js';

const docker = await dockerAvailable();
const IMAGE = 'flotilla/busybox:test';

interface TaskView {
  id: string;
  state: string;
  node: string | null;
  attempt: number;
}

describe('docker engine for the two-cluster test', () => {
  it('is available (under CI it must be: run scripts/docker-setup.sh)', () => {
    if (process.env.CI === 'true') expect(docker.ok, docker.reason).toBe(true);
    else if (!docker.ok) console.warn(`skipping the two-cluster docker test: ${docker.reason}`);
  });
});

describe.skipIf(!docker.ok)('two clusters with the same worker ids on one Docker engine', () => {
  const engine = dockerClient();
  const clusters: DockerTestCluster[] = [];
  const clusterIds = new Set<string>();

  afterAll(async () => {
    for (const c of clusters) for (const w of c.workers.keys()) {
      const id = c.workerClusterId(w);
      if (id !== null) clusterIds.add(id);
    }
    await Promise.all(clusters.map((c) => c.stop()));
    // Only these clusters' containers.
    for (const id of clusterIds) await removeClusterContainers(engine, id);
  });

  async function up(): Promise<{ c: DockerTestCluster; client: FlotillaClient }> {
    const c = await DockerTestCluster.start(1, ['--node-grace', '3000', '--worker-heartbeat', '300']);
    clusters.push(c);
    const client = c.client(undefined, 30_000);
    c.startWorker('w1');
    c.startWorker('w2');
    await eventually(
      async () => (await client.get<{ nodes: { id: string; status: string; drivers: string[] }[] }>('/v1/nodes')).nodes.filter((n) => n.status === 'ready' && n.drivers.includes('docker')).length === 2,
      60_000,
      '2 docker workers ready',
    );
    return { c, client };
  }

  async function sleepers(client: FlotillaClient, n: number, prefix: string): Promise<string[]> {
    const created = await client.post<{ tasks: TaskView[] }>(
      '/v1/tasks',
      Array.from({ length: n }, (_, i) => ({ name: `${prefix}-${i}`, driver: 'docker', containers: [{ image: IMAGE, command: ['sleep', '600'] }], resources: { cpu: 10, memory: '16m' } })),
    );
    const ids = created.tasks.map((t) => t.id);
    await eventually(async () => (await Promise.all(ids.map((id) => client.get<TaskView>(`/v1/tasks/${id}`)))).every((t) => t.state === 'running'), 90_000, `${prefix} running`);
    return ids;
  }

  /** Containers of these tasks (found by task id, whatever else they are labelled with). */
  async function podContainers(taskIds: string[]): Promise<{ id: string; state: string; cluster: string | undefined }[]> {
    const out: { id: string; state: string; cluster: string | undefined }[] = [];
    for (const t of taskIds) {
      for (const c of await containersWith(engine, `${LABELS.task}=${t}`)) out.push({ id: c.Id, state: c.State, cluster: c.Labels[LABELS.cluster] });
    }
    return out.sort((x, y) => x.id.localeCompare(y.id));
  }

  it("the second cluster's workers w1/w2 leave the first one's containers alone for 20 s; a duplicate w1 is refused", async () => {
    const a = await up();
    const aTasks = await sleepers(a.client, 4, 'a');
    const before = await podContainers(aTasks);
    expect(before).toHaveLength(4); // one container per pod (a one-container pod has no infra)
    expect(before.every((c) => c.state === 'running')).toBe(true);
    const aId = a.c.workerClusterId('w1');
    expect(aId).not.toBeNull();
    expect(new Set(before.map((c) => c.cluster))).toEqual(new Set([aId]));
    console.log(`cluster a (${aId}) containers before: ${before.map((c) => c.id.slice(0, 12)).join(' ')}`);

    const b = await up();
    const bTasks = await sleepers(b.client, 2, 'b');
    const bId = b.c.workerClusterId('w1');
    expect(bId).not.toBeNull();
    expect(bId).not.toBe(aId);
    await sleep(20_000);

    const after = await podContainers(aTasks);
    console.log(`cluster a (${aId}) containers after 20 s of cluster b (${bId}): ${after.map((c) => `${c.id.slice(0, 12)}:${c.state}`).join(' ')}`);
    expect(after.map((c) => c.id)).toEqual(before.map((c) => c.id));
    expect(after.every((c) => c.state === 'running')).toBe(true);
    for (const id of aTasks) expect(await a.client.get<TaskView>(`/v1/tasks/${id}`)).toMatchObject({ state: 'running', attempt: 1 });
    // b runs its own pods, labelled with its own cluster id.
    const bContainers = await podContainers(bTasks);
    expect(bContainers).toHaveLength(2);
    expect(bContainers.every((c) => c.cluster === bId && c.state === 'running')).toBe(true);

    // A second live w1 of cluster a (another state dir) is refused with a clear error.
    const dup = a.c.startWorker('w1-dup', [], 'w1');
    const code = await new Promise<number | null | 'running'>((r) => {
      const t = setTimeout(() => r('running'), 60_000);
      dup.proc!.once('exit', (c) => {
        clearTimeout(t);
        r(c);
      });
    });
    expect(code).not.toBe(0);
    expect(readFileSync(dup.logFile, 'utf8')).toMatch(/another worker of cluster \S+ with the same node id .* is running there/);
    // …and it touched nothing.
    expect((await podContainers(aTasks)).map((c) => c.id)).toEqual(before.map((c) => c.id));
  }, 300_000);
});

// The worker agent's side, with a stub scoped driver (no engine needed): nothing is listed
// before the manager's welcome names the cluster; a changed cluster id forgets the old
// cluster's tasks without stopping them.
describe('worker agent: cluster scope of its drivers', () => {
  class ScopedStub implements Driver {
    readonly name = 'docker' as const;
    cluster: string | null = null;
    readonly calls: string[] = [];
    /** Tasks per cluster id. */
    constructor(private readonly byCluster: Record<string, DriverTaskStatus[]>) {}
    async setCluster(id: string): Promise<void> {
      this.calls.push(`setCluster ${id}`);
      this.cluster = id;
    }
    async list(): Promise<DriverTaskStatus[]> {
      if (this.cluster === null) throw new Error('listed before the cluster id was known');
      this.calls.push(`list ${this.cluster}`);
      return this.byCluster[this.cluster] ?? [];
    }
    async start(): Promise<void> {
      this.calls.push('start');
    }
    async stop(taskId: string): Promise<void> {
      this.calls.push(`stop ${taskId}`);
    }
    async inspect(): Promise<DriverTaskStatus | null> {
      return null;
    }
    async remove(taskId: string): Promise<void> {
      this.calls.push(`remove ${taskId}`);
    }
    logs(): AsyncIterable<LogLine> {
      return (async function* () {})();
    }
    watch(): () => void {
      return () => undefined;
    }
    async close(): Promise<void> {}
  }

  it('scopes the driver to the welcome\'s cluster id, keeps it, and leaves another cluster\'s tasks alone', async () => {
    const cluster = await TestCluster.managers(1);
    const stateDir = cluster.mkdir('agent-w7');
    // Every bootstrapped cluster has an id now (made at bootstrap); the worker scopes with it.
    const leader = await cluster.waitForLeader();
    const st = await cluster.status(leader);
    const own = (st as unknown as { clusterId: string | null }).clusterId;
    expect(own).toMatch(/^e0-/);
    const expected = workerClusterId(own, SECRET);
    expect(expected).toBe(own);
    const agents: WorkerAgent[] = [];
    const agent = (d: Driver) => {
      const a = new WorkerAgent({ id: 'w7', managers: cluster.addrs(), token: workerToken(SECRET), drivers: [d], stateDir, backoffMinMs: 20, backoffMaxMs: 200 });
      agents.push(a);
      return a;
    };
    try {
      const d1 = new ScopedStub({ [expected]: [{ taskId: 'mine', attempt: 1, state: 'running' }] });
      const a1 = agent(d1);
      await a1.start();
      expect(d1.calls).toEqual([]); // nothing before the welcome
      await eventually(() => d1.calls.includes(`list ${expected}`), 20_000, 'the cluster task listed after the welcome');
      expect(d1.calls.slice(0, 2)).toEqual([`setCluster ${expected}`, `list ${expected}`]);
      expect(a1.status().clusterId).toBe(expected);
      expect(readFileSync(join(stateDir, 'cluster-id'), 'utf8').trim()).toBe(expected);
      await a1.close();

      // The state dir now says another cluster (e.g. it was used there before): that cluster's
      // tasks are listed at start, then forgotten — not stopped — once the welcome says otherwise.
      writeFileSync(join(stateDir, 'cluster-id'), 'e1-0123456789abcdef\n');
      const d2 = new ScopedStub({ 'e1-0123456789abcdef': [{ taskId: 'theirs', attempt: 1, state: 'running' }], [expected]: [{ taskId: 'mine', attempt: 1, state: 'running' }] });
      const a2 = agent(d2);
      await a2.start();
      expect(d2.calls).toEqual(['setCluster e1-0123456789abcdef', 'list e1-0123456789abcdef']);
      expect(a2.status().tasks.map((t) => t.taskId)).toEqual(['theirs']);
      await eventually(() => a2.status().clusterId === expected && d2.calls.includes(`list ${expected}`), 20_000, 'rescoped');
      await sleep(1500); // assignments (an empty set) arrive meanwhile
      expect(a2.status().tasks.map((t) => t.taskId)).not.toContain('theirs');
      expect(a2.status().retired.map((t) => t.taskId)).not.toContain('theirs');
      // 'mine' is this cluster's and not assigned: stopped. 'theirs' is never touched.
      expect(d2.calls.filter((c) => c.startsWith('stop') || c.startsWith('remove'))).toEqual(['stop mine']);
    } finally {
      for (const a of agents) await a.close();
      await cluster.stop();
    }
  }, 60_000);
});
