// Health checks with the docker driver (a real engine, a real cluster): every pod has its own
// network, so 3 replicas listen on the same port; the http check reaches each on the pod's
// address (the port is not published). A start-first update to a template with an exec check
// (docker exec) and a 2 s warm-up keeps 3 replicas ready throughout.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, sleep } from './helpers/cluster.js';
import { DockerTestCluster, dockerAvailable, dockerClient, removeClusterContainers } from './helpers/docker.js';
import type { FlotillaClient } from '../src/client/client.js';
import type { ServiceInfo, ServiceInspect } from '../src/protocol/api.js';

const docker = await dockerAvailable();
const IMAGE = 'flotilla/busybox:test';

describe('docker engine for the health tests', () => {
  it('is available (under CI it must be: run scripts/docker-setup.sh)', () => {
    if (process.env.CI === 'true') expect(docker.ok, docker.reason).toBe(true);
    else if (!docker.ok) console.warn(`skipping docker health tests: ${docker.reason}`);
  });
});

describe.skipIf(!docker.ok)('health checks on docker pods', () => {
  let cluster: DockerTestCluster;
  let client: FlotillaClient;

  beforeAll(async () => {
    cluster = await DockerTestCluster.start(1, ['--node-grace', '2000', '--worker-heartbeat', '300']);
    client = cluster.client(undefined, 30_000);
    cluster.startWorker('w1');
    await eventually(async () => (await client.get<{ nodes: { status: string }[] }>('/v1/nodes')).nodes.filter((n) => n.status === 'ready').length === 1, 30_000, 'docker worker ready');
  }, 90_000);

  afterAll(async () => {
    const id = cluster?.workerClusterId('w1');
    await cluster?.stop();
    if (typeof id === 'string') await removeClusterContainers(dockerClient(), id);
  });

  const spec = (script: string, health: Record<string, unknown>) => ({
    name: 'dweb',
    driver: 'docker',
    replicas: 3,
    containers: [{ image: IMAGE, command: ['/bin/sh', '-c', `mkdir -p /www\n${script}\nexec httpd -f -p 8080 -h /www`], ports: [8080] }],
    resources: { cpu: 10, memory: '32m' },
    restart: { policy: 'on-failure', backoffMs: 200, maxBackoffMs: 1000 },
    update: { parallelism: 1, order: 'start-first', monitorMs: 500, failureAction: 'rollback' },
    health: { intervalMs: 300, timeoutMs: 2000, retries: 3, startPeriodMs: '20s', ...health },
  });

  it('3 replicas on one port are each checked on their pod address; a start-first update with an exec check keeps 3 ready', async () => {
    await client.post('/v1/services', spec('echo v1 > /www/healthz', { type: 'http', port: 8080, path: '/healthz' }));
    const ready = await eventually(async () => {
      const s = await client.get<ServiceInspect>('/v1/services/dweb');
      return s.ready === 3 ? s : null;
    }, 90_000, 'dweb 3 ready');
    const live = ready.tasks.filter((t) => t.desired === 'running');
    expect(live).toHaveLength(3);
    for (const t of live) expect(t.health).toMatchObject({ status: 'healthy', failingStreak: 0, output: 'HTTP 200: v1' });

    let stop = false;
    let minReady = 3;
    let samples = 0;
    const poller = (async () => {
      for (let i = 0; i < 5000 && !stop; i++) {
        const s = await client.get<ServiceInfo>('/v1/services/dweb');
        minReady = Math.min(minReady, s.ready);
        samples++;
        await sleep(100);
      }
    })();
    // v2 serves only after 2 s; its check runs in the container (docker exec).
    await client.put('/v1/services/dweb', JSON.stringify(spec('(sleep 2; echo v2 > /www/healthz) &', { type: 'exec', command: 'wget -qO- http://127.0.0.1:8080/healthz', timeoutMs: '10s' })));
    const done = await eventually(async () => {
      const s = await client.get<ServiceInspect>('/v1/services/dweb');
      expect(s.update.state).not.toBe('rolled_back');
      return s.update.state === 'completed' && s.ready === 3 ? s : null;
    }, 120_000, 'the update to complete');
    stop = true;
    await poller;
    expect(done.templateVersion).toBe(2);
    expect(samples).toBeGreaterThan(10);
    expect(minReady).toBeGreaterThanOrEqual(3);
    const v2 = done.tasks.filter((t) => t.desired === 'running');
    expect(v2.every((t) => t.service!.version === 2 && t.health?.status === 'healthy' && t.health.output === 'v2')).toBe(true);
    await client.delete('/v1/services/dweb');
  }, 240_000);
});
