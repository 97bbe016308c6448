// Pods on real Docker through a real cluster: 3 managers + 2 workers with the docker driver.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { eventually, sleep } from './helpers/cluster.js';
import { DockerTestCluster, dockerAvailable, dockerClient, removeClusterContainers } from './helpers/docker.js';
import type { FlotillaClient } from '../src/client/client.js';

const docker = await dockerAvailable();
const IMAGE = 'flotilla/busybox:test';

interface TaskView {
  id: string;
  state: string;
  node: string | null;
  attempt: number;
  restarts: number;
  reason: string;
  exitCode?: number;
}

function containers(filter: string): { id: string; name: string; state: string }[] {
  const out = execFileSync('docker', ['ps', '-a', '--no-trunc', '--filter', `label=${filter}`, '--format', '{{.ID}} {{.Names}} {{.State}}'], { encoding: 'utf8' });
  return out
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [id, name, state] = l.split(' ');
      return { id: id!, name: name!, state: state! };
    });
}

describe('docker engine for the cluster tests', () => {
  it('is available (under CI it must be: run scripts/docker-setup.sh)', () => {
    if (process.env.CI === 'true') expect(docker.ok, docker.reason).toBe(true);
    else if (!docker.ok) console.warn(`skipping docker cluster tests: ${docker.reason}`);
  });
});

describe.skipIf(!docker.ok)('docker driver in a cluster (3 managers, 2 workers)', () => {
  let cluster: DockerTestCluster;
  let client: FlotillaClient;
  const task = async (id: string) => client.get<TaskView>(`/v1/tasks/${id}`);

  beforeAll(async () => {
    // Its own secret, so its own cluster id: it sees only its own containers.
    cluster = await DockerTestCluster.start(3, ['--node-grace', '2000', '--worker-heartbeat', '300', '--failover-grace', '10000']);
    client = cluster.client(undefined, 30_000);
    for (const w of ['w1', 'w2']) cluster.startWorker(w);
    await eventually(
      async () => (await client.get<{ nodes: { status: string; drivers: string[] }[] }>('/v1/nodes')).nodes.filter((n) => n.status === 'ready' && n.drivers.includes('docker')).length === 2,
      30_000,
      '2 docker workers ready',
    );
  }, 90_000);

  afterAll(async () => {
    const ids = new Set(['w1', 'w2'].map((w) => cluster?.workerClusterId(w)).filter((id): id is string => typeof id === 'string'));
    await cluster?.stop();
    // Remove whatever this cluster left behind (and nothing of any other cluster).
    for (const id of ids) await removeClusterContainers(dockerClient(), id);
  });

  it('a pod of two containers shares localhost; the leader SIGKILL leaves containers untouched', async () => {
    const t0 = Date.now();
    const t = await client.post<TaskView>('/v1/tasks', {
      name: 'web',
      driver: 'docker',
      containers: [
        { name: 'server', image: IMAGE, command: ['/bin/sh', '-c', 'mkdir -p /www && echo pod-ok > /www/index.html && exec httpd -f -p 8080 -h /www'] },
        { name: 'client', image: IMAGE, command: ['/bin/sh', '-c', 'sleep 1; while :; do wget -qO- http://127.0.0.1:8080/ && sleep 1 || sleep 0.2; done'] },
      ],
      resources: { cpu: 100, memory: '48m' },
    });
    await eventually(async () => (await task(t.id)).state === 'running', 60_000, 'pod running');
    console.log(`docker pod submit → running: ${Date.now() - t0} ms`);
    const logs = await eventually(async () => {
      const r = await fetch(`http://${cluster.addrs()[0]}/v1/tasks/${t.id}/logs?container=client`);
      const text = await r.text();
      return text.includes('pod-ok') ? text : null;
    }, 30_000, 'the client container reached the server on localhost');
    expect(logs).toContain('pod-ok');
    const before = containers(`io.flotilla.task=${t.id}`).filter((c) => c.state === 'running');
    expect(before.length).toBe(3); // infra + 2 app containers
    // Memory limit applied, visible in docker inspect.
    const mem = execFileSync('docker', ['inspect', '--format', '{{.HostConfig.Memory}}', before[0]!.id], { encoding: 'utf8' }).trim();
    expect(Number(mem)).toBe(48 * 1024 * 1024);

    const leader = await cluster.waitForLeader();
    await cluster.killAndWait(leader);
    await cluster.waitForLeader(20_000, [leader]);
    await sleep(11_000); // past the failover grace (the production default, 10 s)
    const after = containers(`io.flotilla.task=${t.id}`).filter((c) => c.state === 'running');
    expect(after.map((c) => c.id).sort()).toEqual(before.map((c) => c.id).sort());
    const v = await task(t.id);
    expect(v.state).toBe('running');
    expect(v.attempt).toBe(1);
    cluster.restart(leader);
    await cluster.waitForLeader();
    await client.delete(`/v1/tasks/${t.id}`);
    await eventually(async () => (await task(t.id)).state === 'stopped', 30_000, 'stopped');
  });

  it('SIGKILL of a worker: its pods move after the grace period; back, it removes its stale containers', async () => {
    const created = await client.post<{ tasks: TaskView[] }>('/v1/tasks', [0, 1, 2, 3].map((i) => ({ name: `sleeper-${i}`, driver: 'docker', containers: [{ image: IMAGE, command: ['sleep', '600'] }], resources: { cpu: 10, memory: '16m' } })));
    const ids = created.tasks.map((t) => t.id);
    const placed = await eventually(async () => {
      const ts = await Promise.all(ids.map(task));
      return ts.every((t) => t.state === 'running') ? ts : null;
    }, 60_000, 'sleepers running');
    const victim = placed[0]!.node!;
    const onVictim = placed.filter((t) => t.node === victim).map((t) => t.id);
    await cluster.killAndWait(victim);
    // Its containers keep running in Docker while the worker process is dead.
    expect(containers(`io.flotilla.node=${victim}`).filter((c) => c.state === 'running').length).toBeGreaterThan(0);
    await eventually(async () => {
      const ts = await Promise.all(onVictim.map(task));
      return ts.every((t) => t.state === 'running' && t.node !== victim);
    }, 60_000, 'pods rescheduled on the other worker');
    cluster.restart(victim);
    await eventually(() => onVictim.every((id) => containers(`io.flotilla.task=${id}`).every((c) => !c.name.includes(victim) || c.state !== 'running')), 60_000, 'stale containers removed');
    for (const id of onVictim) {
      const running = containers(`io.flotilla.task=${id}`).filter((c) => c.state === 'running');
      // One pod on the new node (one container: a one-container pod has no infra), none on the old one.
      expect(running.length).toBe(1);
    }
    for (const id of ids) await client.delete(`/v1/tasks/${id}`);
  });

  it('a container exiting 1 is restarted per policy; a missing image is a clear failure', async () => {
    const t = await client.post<TaskView>('/v1/tasks', {
      name: 'crasher',
      driver: 'docker',
      containers: [{ image: IMAGE, command: ['/bin/sh', '-c', 'sleep 0.5; exit 1'] }],
      restart: { policy: 'on-failure', maxAttempts: 2, backoffMs: 200 },
      resources: { cpu: 10, memory: '16m' },
    });
    const done = await eventually(async () => {
      const v = await task(t.id);
      return v.state === 'failed' && v.restarts === 2 ? v : null;
    }, 60_000, 'restarts exhausted');
    expect(done.exitCode).toBe(1);
    const missing = await client.post<TaskView>('/v1/tasks', { name: 'ghost', driver: 'docker', containers: [{ image: 'flotilla/no-such-image:1', command: ['true'] }], restart: { policy: 'never' } });
    const failed = await eventually(async () => {
      const v = await task(missing.id);
      return v.state === 'failed' ? v : null;
    }, 90_000, 'missing image fails');
    expect(failed.reason).toMatch(/no-such-image/);
    expect(failed.reason).toMatch(/pull|not found/i);
  });
});
