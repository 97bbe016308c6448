// The routing mesh in front of docker replicas, on the real engine: one manager, two docker
// workers on different loopback addresses (127.0.0.2, 127.0.0.3). The engine publishes each
// replica's target port on a dynamic host port, the worker reports the binding and the leader's
// table sends connections there: a 2-replica busybox httpd service answers on EVERY worker's
// published port from BOTH replicas; a replica's container killed (`docker kill` of this
// test's own container) costs nothing through the mesh after one health interval. Every
// container is this test's cluster's own (its own secret, so its own cluster id label).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import { eventually, freePorts } from './helpers/cluster.js';
import { DockerTestCluster, containersWith, dockerAvailable, dockerClient, removeClusterContainers, TEST_IMAGE } from './helpers/docker.js';
import { LABELS } from '../src/worker/drivers/docker.js';
import type { FlotillaClient } from '../src/client/client.js';
import type { ServiceInspect, TaskView } from '../src/protocol/api.js';

const docker = await dockerAvailable();
const HOSTS = { w1: '127.0.0.2', w2: '127.0.0.3' } as const;
const HEALTH_INTERVAL_MS = 1000;
// Each replica serves its own task id on port 80 of its pod.
const HTTPD = ['/bin/sh', '-c', 'mkdir -p /www && echo "$FLOTILLA_TASK_ID" > /www/index.html && exec httpd -f -p 80 -h /www'];

/** One request on a fresh connection: the task id that answered, or null on any failure. */
function get(host: string, port: number): Promise<string | null> {
  return new Promise((resolve) => {
    const req = http.get({ host, port, path: '/', agent: false, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve(res.statusCode === 200 ? body.trim() : null));
      res.on('error', () => resolve(null));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(null));
  });
}

describe('docker engine for the docker mesh test', () => {
  it('is available (under CI it must be: run scripts/docker-setup.sh)', () => {
    if (process.env.CI === 'true') expect(docker.ok, docker.reason).toBe(true);
    else if (!docker.ok) console.warn(`skipping the docker mesh test: ${docker.reason}`);
  });
});

describe.skipIf(!docker.ok)('routing mesh in front of docker replicas (1 manager, 2 docker workers on 127.0.0.2 and 127.0.0.3)', () => {
  let cluster: DockerTestCluster;
  let client: FlotillaClient;
  let clusterId: string | null = null;
  let published: number;
  const dk = dockerClient();

  const ready = async (): Promise<TaskView[]> => {
    const s = await client.get<ServiceInspect>('/v1/services/web');
    return s.tasks.filter((t) => t.desired === 'running' && t.state === 'running' && t.health?.status === 'healthy');
  };

  beforeAll(async () => {
    [published] = await freePorts(1);
    cluster = await DockerTestCluster.start(1, ['--node-grace', '2000', '--worker-heartbeat', '300', '--failover-grace', '8000']);
    client = cluster.client(undefined, 30_000);
    for (const [w, host] of Object.entries(HOSTS)) cluster.startWorker(w, ['--cpu', '2000', '--memory', '2g', '--listen', `${host}:0`]);
    await eventually(
      async () => (await client.get<{ nodes: { status: string; drivers: string[] }[] }>('/v1/nodes')).nodes.filter((n) => n.status === 'ready' && n.drivers.includes('docker')).length === 2,
      30_000,
      '2 docker workers ready',
    );
    clusterId = await eventually(() => cluster.workerClusterId('w1'), 10_000, 'the cluster id');
  }, 90_000);

  afterAll(async () => {
    await cluster?.stop();
    if (clusterId !== null) await removeClusterContainers(dk, clusterId);
  });

  it('each worker serves the published port and reaches both replicas at the ports the engine picked', async () => {
    await client.post('/v1/services', {
      name: 'web',
      driver: 'docker',
      replicas: 2,
      containers: [{ name: 'app', image: TEST_IMAGE, command: HTTPD }],
      resources: { cpu: 50, memory: '16m' },
      restart: { policy: 'always', backoffMs: 200, maxBackoffMs: 1000 },
      publish: [`${published}:80`],
      health: { type: 'http', port: 80, path: '/', intervalMs: HEALTH_INTERVAL_MS, timeoutMs: 1000, retries: 1 },
    });
    const tasks = await eventually(async () => {
      const ts = await ready();
      return ts.length === 2 ? ts : null;
    }, 90_000, '2 healthy replicas');
    expect(new Set(tasks.map((t) => t.node)).size).toBe(2);
    for (const host of Object.values(HOSTS)) {
      const seen = new Set<string>();
      await eventually(async () => {
        const id = await get(host, published);
        if (id !== null) seen.add(id);
        return seen.size === 2;
      }, 30_000, `both replicas through ${host}:${published}`);
      expect([...seen].sort()).toEqual(tasks.map((t) => t.id).sort());
    }
    // The endpoints are each replica's node address and the host port Docker chose for port 80.
    const view = await client.get<ServiceInspect>('/v1/services/web');
    // The container that owns each pod's network (an infra, or a one-container pod's own
    // container): the one carrying the containers label.
    const owners = (await containersWith(dk, `${LABELS.cluster}=${clusterId}`, LABELS.containers)).filter((c) => c.State === 'running');
    for (const t of tasks) {
      const owner = owners.find((c) => c.Labels[LABELS.task] === t.id)!;
      const bound = owner.Ports.find((p) => p.PrivatePort === 80 && p.Type === 'tcp' && p.PublicPort !== undefined);
      expect(bound, `${t.id} publishes port 80`).toBeDefined();
      const ep = view.endpoints?.find((e) => e.taskId === t.id);
      expect(ep?.addr).toBe(`${HOSTS[t.node as keyof typeof HOSTS]}:${bound!.PublicPort}`);
      expect(ep?.ready).toBe(true);
    }
  }, 150_000);

  it('a replica killed (docker kill of its container): requests through both workers keep succeeding after one health interval', async () => {
    const tasks = await ready();
    const victim = tasks[0]!;
    const app = (await containersWith(dk, `${LABELS.cluster}=${clusterId}`, `${LABELS.task}=${victim.id}`, `${LABELS.role}=app`)).find((c) => c.State === 'running')!;
    expect(app).toBeDefined();
    const hosts = Object.values(HOSTS);
    let ok = 0;
    const failedAt: number[] = [];
    let killedAt = -1;
    const start = Date.now();
    for (let i = 0; i < 5000 && Date.now() - start < 6000; i++) {
      if (killedAt < 0 && Date.now() - start >= 1000) {
        await dk.getContainer(app.Id).kill();
        killedAt = Date.now() - start;
      }
      const at = Date.now() - start;
      if ((await get(hosts[i % hosts.length]!, published)) === null) failedAt.push(at);
      else ok++;
    }
    const after = failedAt.filter((t) => t > killedAt + HEALTH_INTERVAL_MS).length;
    console.log(`mesh-docker: replica ${victim.name} killed at ${killedAt} ms: ${ok} ok, ${failedAt.length} failed (${after} after one health interval)`);
    expect(killedAt).toBeGreaterThanOrEqual(0);
    expect(ok).toBeGreaterThan(20);
    expect(after).toBe(0);
    // Its restart comes back into the table: both replicas answer again.
    await eventually(async () => (await ready()).length === 2, 60_000, '2 healthy replicas again');
  }, 120_000);
});
