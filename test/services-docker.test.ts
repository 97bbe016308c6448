// Services on real Docker: a manager and three workers with the docker driver, every container
// of the test's own cluster (its own secret, so its own cluster id label). 4 replicas run as
// containers; a SIGKILLed worker's replicas run again on the other two; an update to a command
// that exits at once rolls back by itself and the old template's containers are what runs.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually } from './helpers/cluster.js';
import { DockerTestCluster, containersWith, dockerAvailable, dockerClient, removeClusterContainers, TEST_IMAGE } from './helpers/docker.js';
import { LABELS } from '../src/worker/drivers/docker.js';
import type { FlotillaClient } from '../src/client/client.js';
import type { ServiceInfo, ServiceInspect, TaskView } from '../src/protocol/api.js';

const docker = await dockerAvailable();
const WORKERS = ['w1', 'w2', 'w3'];
const OLD_CMD = ['/bin/sh', '-c', 'echo serving; exec sleep 600'];

function webSpec(extra: Record<string, unknown> = {}) {
  return {
    name: 'web',
    driver: 'docker',
    replicas: 4,
    containers: [{ name: 'app', image: TEST_IMAGE, command: OLD_CMD }],
    resources: { cpu: 50, memory: '16m' },
    restart: { policy: 'on-failure', backoffMs: 200, maxBackoffMs: 1000 },
    update: { parallelism: 1, monitorMs: 1000, failureAction: 'rollback' },
    ...extra,
  };
}

describe('docker engine for the services test', () => {
  it('is available (under CI it must be: run scripts/docker-setup.sh)', () => {
    if (process.env.CI === 'true') expect(docker.ok, docker.reason).toBe(true);
    else if (!docker.ok) console.warn(`skipping the docker services test: ${docker.reason}`);
  });
});

describe.skipIf(!docker.ok)('services on real Docker (1 manager, 3 docker workers)', () => {
  let cluster: DockerTestCluster;
  let client: FlotillaClient;
  let clusterId: string | null = null;
  const dk = dockerClient();

  const inspect = () => client.get<ServiceInspect>('/v1/services/web');

  /** Every slot 1..n has exactly one running task (all passing `pred`) and the service counts n ready. */
  async function runningSlots(n: number, pred: (t: TaskView) => boolean = () => true): Promise<Map<number, TaskView> | null> {
    const s = await inspect();
    const bySlot = new Map<number, TaskView>();
    for (const t of s.tasks.filter((x) => x.desired === 'running')) {
      if (t.state !== 'running' || !pred(t) || bySlot.has(t.service!.slot)) return null;
      bySlot.set(t.service!.slot, t);
    }
    if (bySlot.size !== n || [...bySlot.keys()].some((k) => k < 1 || k > n)) return null;
    return s.ready === n ? bySlot : null;
  }

  /** The running app containers of this cluster for the given task runs (id and attempt), as Docker sees them. */
  async function appContainers(tasks: TaskView[]): Promise<{ task: string; node: string; cmd: string[] }[]> {
    const cs = await containersWith(dk, `${LABELS.cluster}=${clusterId}`);
    const out: { task: string; node: string; cmd: string[] }[] = [];
    for (const c of cs) {
      const task = c.Labels[LABELS.task];
      const run = tasks.find((t) => t.id === task && String(t.attempt) === c.Labels[LABELS.attempt]);
      if (c.State !== 'running' || c.Labels[LABELS.role] !== 'app' || run === undefined) continue;
      const info = await dk.getContainer(c.Id).inspect();
      // command → Entrypoint, args → Cmd (src/worker/drivers/docker-config.ts)
      const entry = info.Config.Entrypoint;
      out.push({ task: run.id, node: c.Labels[LABELS.node]!, cmd: [...(Array.isArray(entry) ? entry : entry ? [entry] : []), ...(info.Config.Cmd ?? [])] });
    }
    return out;
  }

  beforeAll(async () => {
    cluster = await DockerTestCluster.start(1, ['--node-grace', '2000', '--worker-heartbeat', '300', '--failover-grace', '8000']);
    client = cluster.client(undefined, 30_000);
    for (const w of WORKERS) cluster.startWorker(w, ['--cpu', '2000', '--memory', '2g']);
    await eventually(
      async () => (await client.get<{ nodes: { status: string; drivers: string[] }[] }>('/v1/nodes')).nodes.filter((n) => n.status === 'ready' && n.drivers.includes('docker')).length === 3,
      30_000,
      '3 docker workers ready',
    );
    clusterId = await eventually(() => cluster.workerClusterId('w1'), 10_000, 'the cluster id');
  }, 90_000);

  afterAll(async () => {
    await cluster?.stop();
    // Only this cluster's containers (the killed worker's are still running: Docker keeps them).
    if (clusterId !== null) await removeClusterContainers(dk, clusterId);
  });

  it('4 replicas as containers; a SIGKILLed worker\'s replicas run elsewhere; a failing update rolls back to the old template', async () => {
    const created = await client.post<ServiceInfo>('/v1/services', webSpec());
    expect(created).toMatchObject({ name: 'web', replicas: 4, templateVersion: 1 });
    const four = await eventually(() => runningSlots(4), 90_000, '4 replicas running');
    expect([...four.values()].map((t) => t.name).sort()).toEqual(['web.1', 'web.2', 'web.3', 'web.4']);
    // Docker runs one app container per replica, with the template's command.
    const first = await appContainers([...four.values()]);
    expect(first.map((c) => c.task).sort()).toEqual([...four.values()].map((t) => t.id).sort());
    for (const c of first) expect(c.cmd).toEqual(OLD_CMD);

    // SIGKILL the worker that runs the most replicas: 4 ready again on the other two.
    const counts = new Map<string, number>();
    for (const t of four.values()) counts.set(t.node!, (counts.get(t.node!) ?? 0) + 1);
    const victim = [...counts.entries()].sort((a, b) => b[1] - a[1])[0]![0];
    await cluster.killAndWait(victim);
    const healed = await eventually(() => runningSlots(4, (t) => t.node !== victim), 90_000, '4 replicas on the other workers');
    const moved = [...healed.values()].filter((t) => four.get(t.service!.slot)!.node === victim);
    expect(moved.length).toBe(counts.get(victim));
    // a new run of the slot (a new task, or the lost task's next attempt), not the dead worker's
    for (const t of moved) expect(t.id !== four.get(t.service!.slot)!.id || t.attempt > four.get(t.service!.slot)!.attempt).toBe(true);
    const live = await appContainers([...healed.values()]);
    expect(live.map((c) => c.task).sort()).toEqual([...healed.values()].map((t) => t.id).sort());
    expect(live.every((c) => c.node !== victim)).toBe(true);
    // (The dead worker's own containers keep running in Docker: nothing is left to stop them;
    // afterAll removes this cluster's containers.)

    // An update to a command that exits at once: rolled back by itself, the old template runs.
    const beforeIds = new Map([...healed].map(([k, t]) => [k, t.id]));
    const bad = webSpec({ containers: [{ name: 'app', image: TEST_IMAGE, command: ['/bin/sh', '-c', 'exit 3'] }] });
    // Ready replicas while it runs: stop-first by one may leave 3 of 4 ready; fewer only if a
    // worker was declared down meanwhile (a live worker's heartbeats late on a loaded host:
    // its tasks are then lost and replaced), which the tasks' history shows.
    const updateAt = Date.now();
    const started = await client.put<ServiceInfo>('/v1/services/web', JSON.stringify(bad));
    expect(started.update).toMatchObject({ state: 'updating', target: 2, from: 1 });
    let minReady = 4;
    const trace: string[] = [];
    const rolled = await eventually(async () => {
      const [s, nodes] = await Promise.all([inspect(), client.get<{ nodes: { id: string; status: string }[] }>('/v1/nodes')]);
      const down = nodes.nodes.filter((n) => n.id !== victim && n.status !== 'ready').map((n) => `${n.id}:${n.status}`);
      trace.push(`ready ${s.ready} ${s.update.state} [${s.tasks.filter((t) => t.desired === 'running' || t.state === 'running').map((t) => `${t.service!.slot}:v${t.service!.version}:${t.state}@${t.node}`).join(' ')}]${down.length > 0 ? ` not ready: ${down.join(',')}` : ''}`);
      minReady = Math.min(minReady, s.ready);
      return s.update.state === 'rolled_back' ? s : null;
    }, 120_000, 'automatic rollback');
    expect(rolled.templateVersion).toBe(1);
    expect(rolled.update.message).toMatch(/rolled back/);
    const lostMeanwhile = (await client.get<ServiceInspect>('/v1/services/web?all=true')).tasks.some((t) => t.history.some((h) => h.state === 'lost' && h.at >= updateAt));
    if (!lostMeanwhile) expect(minReady, trace.join('\n')).toBeGreaterThanOrEqual(3); // stop-first, parallelism 1
    const after = await eventually(() => runningSlots(4, (t) => t.service!.version === 1 && t.node !== victim), 90_000, 'the old template in every slot');
    for (const t of after.values()) expect(t.spec.containers[0]!.command).toEqual(OLD_CMD);
    // Only the slot the update replaced got a new task; the others kept theirs.
    expect([...after].filter(([k, t]) => beforeIds.get(k) !== t.id).map(([k]) => k)).toHaveLength(1);
    // The new template's task really ran in Docker and failed (exit 3).
    const all = await client.get<ServiceInspect>('/v1/services/web?all=true');
    expect(all.tasks.some((t) => t.service!.version === 2 && (t.exitCode === 3 || t.history.some((h) => h.state === 'failed' && h.exitCode === 3)))).toBe(true);
    // And Docker runs exactly the 4 old-template containers of the live tasks.
    const final = await eventually(async () => {
      const cs = await appContainers([...after.values()]);
      return cs.length === 4 ? cs : null;
    }, 30_000, '4 app containers');
    for (const c of final) expect(c.cmd).toEqual(OLD_CMD);
  }, 420_000);
});
