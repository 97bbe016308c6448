// Solo pods (docker driver): a pod of one container that names no secrets runs as that one
// container, without an infra container; it owns the pod's network namespace, hostname and
// published ports. Checked against a real engine: one container with our labels, a published
// port answering, podAddress(), a health probe, exec-able, adopted by a restarted worker
// (stop mark on the container itself), removed with the task, invisible to another cluster
// on the same engine; pods with secrets or two containers keep their infra. And the driver's
// memory of images it found present (their inspect is skipped on later launches): an image
// removed behind its back is pulled again.
//
// Without an engine these tests are skipped with a warning, except under CI=true where they
// fail (CI must run scripts/docker-setup.sh first).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseTaskSpec, type TaskSpec } from '../src/protocol/spec.js';
import type { DriverTaskStatus } from '../src/worker/driver.js';
import { DockerDriver, LABELS, type DockerDriverOptions } from '../src/worker/drivers/docker.js';
import { SOCKET_PATH, TEST_IMAGE, containersWith, dockerAvailable, dockerClient, freePort, removeClusterContainers, startFakeRegistry, type FakeRegistry } from './helpers/docker.js';

const availability = await dockerAvailable();
const inCI = process.env.CI === 'true';
if (!availability.ok && !inCI) console.warn(`docker solo pod tests skipped: ${availability.reason}`);

const NODE = `solo${process.pid}-${Date.now().toString(36)}`;
/** This file's own clusters: the drivers touch only containers labelled with them. */
const CLUSTER = `test-solo-${process.pid}-${Date.now().toString(36)}`;
const OTHER = `${CLUSTER}-other`;
const drivers: DockerDriver[] = [];

function driver(opts: Partial<DockerDriverOptions> = {}): DockerDriver {
  const d = new DockerDriver({ nodeId: NODE, clusterId: CLUSTER, exclusive: false, socketPath: SOCKET_PATH, reconcileMs: 500, podFailureGraceMs: 1000, ...opts });
  drivers.push(d);
  return d;
}

function spec(name: string, containers: Record<string, unknown>[], extra: Record<string, unknown> = {}): TaskSpec {
  return parseTaskSpec({ name, driver: 'docker', containers: containers.map((c) => ({ image: TEST_IMAGE, ...c })), ...extra });
}

async function waitFor<T>(fn: () => T | Promise<T>, what: string, timeoutMs = 20_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function waitState(d: DockerDriver, id: string, states: DriverTaskStatus['state'][], timeoutMs = 20_000): Promise<DriverTaskStatus> {
  return waitFor(async () => {
    const s = await d.inspect(id);
    return s !== null && states.includes(s.state) ? s : null;
  }, `task ${id} to be ${states.join('/')}`, timeoutMs);
}

describe.skipIf(!availability.ok && !inCI)('docker driver: solo pods (one container, no infra)', { timeout: 180_000 }, () => {
  const docker = dockerClient();
  const ofTask = (id: string) => containersWith(docker, `${LABELS.cluster}=${CLUSTER}`, `${LABELS.node}=${NODE}`, `${LABELS.task}=${id}`);

  beforeAll(() => {
    if (!availability.ok) throw new Error(`CI=true needs a Docker engine: ${availability.reason}`);
  });

  afterAll(async () => {
    for (const d of drivers) await d.close();
    if (availability.ok) {
      await removeClusterContainers(docker, CLUSTER);
      await removeClusterContainers(docker, OTHER);
    }
  });

  it('a one-container pod is one container with our labels: its own hostname and published port, podAddress, probes and exec; removed with the task', async () => {
    const d = driver();
    const port = await freePort();
    const s = spec('solo-web', [
      { name: 'web', command: ['sh', '-c', 'mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www'], ports: [{ container: 8080, host: port }] },
    ]);
    await d.start('solo', s);
    const st = await waitState(d, 'solo', ['running']);
    expect(st.containers?.map((c) => [c.name, c.state])).toEqual([['web', 'running']]);

    const cs = await ofTask('solo');
    expect(cs).toHaveLength(1);
    expect(cs[0]!.Labels).toMatchObject({
      [LABELS.task]: 'solo',
      [LABELS.attempt]: '1',
      [LABELS.pod]: 'solo-web',
      [LABELS.container]: 'web',
      [LABELS.node]: NODE,
      [LABELS.cluster]: CLUSTER,
      [LABELS.role]: 'app',
      [LABELS.containers]: JSON.stringify(['web']),
    });
    const info = await docker.getContainer(cs[0]!.Id).inspect();
    expect(info.HostConfig.NetworkMode).not.toMatch(/^container:/);
    expect(info.Config.Hostname).toBe('solo-web');
    expect(info.HostConfig.PortBindings).toEqual({ '8080/tcp': [{ HostIp: '', HostPort: String(port) }] });

    // The published port answers on the host, with the pod's hostname.
    const body = await waitFor(async () => {
      try {
        const r = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(2000) });
        return r.ok ? await r.text() : null;
      } catch {
        return null;
      }
    }, 'the published port');
    expect(body.trim()).toBe('solo-web');

    // The pod's address is the container's own (health checks of unpublished ports go there).
    const addr = await d.podAddress('solo');
    expect(addr).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    expect(addr).toBe(info.NetworkSettings.IPAddress || Object.values(info.NetworkSettings.Networks)[0]?.IPAddress);
    const probe = await d.probe('solo', 'web', ['sh', '-c', 'wget -qO- http://127.0.0.1:8080/'], { signal: new AbortController().signal, maxOutput: 1000 });
    expect(probe).toEqual({ exitCode: 0, output: 'solo-web\n' });
    const ex = await d.exec('solo', { command: ['sh', '-c', 'echo "in $FLOTILLA_CONTAINER"'], stdin: false, tty: false });
    let out = '';
    ex.stdout.on('data', (b: Buffer) => (out += b.toString('utf8')));
    expect(await ex.exited).toBe(0);
    expect(out).toBe('in web\n');

    await d.remove('solo');
    expect(await ofTask('solo')).toEqual([]);
    expect(await d.inspect('solo')).toBeNull();
  });

  it('a restarted worker adopts a solo pod (no duplicate); its stop is recorded on the container; another cluster never sees it', async () => {
    const d1 = driver();
    const s = spec('solo-adopt', [{ command: ['sh', '-c', 'trap "exit 0" TERM; while :; do sleep 0.1; done'] }]);
    await d1.start('sadopt', s, undefined, { attempt: 2 });
    await waitState(d1, 'sadopt', ['running']);
    await d1.close();

    const d2 = driver();
    expect((await d2.list()).find((x) => x.taskId === 'sadopt')).toMatchObject({ attempt: 2, state: 'running', containers: [{ name: 'c0', state: 'running' }] });
    await d2.start('sadopt', s, undefined, { attempt: 2 }); // already running: no-op
    expect(await ofTask('sadopt')).toHaveLength(1);
    expect(await d2.podAddress('sadopt')).toMatch(/^\d+\.\d+\.\d+\.\d+$/);

    // Another cluster with the same node id on this engine: sees nothing, removes nothing.
    const other = driver({ clusterId: OTHER });
    expect((await other.list()).map((x) => x.taskId)).not.toContain('sadopt');
    await other.remove('sadopt');
    expect((await ofTask('sadopt')).map((c) => c.State)).toEqual(['running']);

    await d2.stop('sadopt', 1000);
    expect((await d2.inspect('sadopt'))?.state).toBe('stopped');
    expect((await ofTask('sadopt'))[0]!.Names[0]).toMatch(/\.c0\.stop-\d+-\d+$/);
    const d3 = driver();
    expect((await d3.list()).find((x) => x.taskId === 'sadopt')).toMatchObject({ state: 'stopped', attempt: 2, reason: 'stopped on request' });
    await d3.remove('sadopt');
    expect(await ofTask('sadopt')).toEqual([]);
  });

  it('a one-container pod with a secret, and a two-container pod, keep their infra container', async () => {
    const d = driver();
    await d.start('withsecret', spec('withsecret', [{ command: ['sh', '-c', 'exec sleep 600'] }], { secrets: ['tok'] }), undefined, { secrets: [{ name: 'tok', data: Buffer.from('v') }] });
    await d.start('two', spec('two', [{ command: ['sh', '-c', 'exec sleep 600'] }, { command: ['sh', '-c', 'exec sleep 600'] }]));
    for (const id of ['withsecret', 'two']) await waitState(d, id, ['running']);
    expect((await ofTask('withsecret')).map((c) => c.Labels[LABELS.role]).sort()).toEqual(['app', 'infra']);
    expect((await ofTask('two')).map((c) => c.Labels[LABELS.role]).sort()).toEqual(['app', 'app', 'infra']);
    for (const id of ['withsecret', 'two']) {
      await d.remove(id);
      expect(await ofTask(id)).toEqual([]);
    }
  });

  it('an image removed behind the driver\'s back after a launch is pulled again by the next launch', async () => {
    let reg: FakeRegistry | undefined;
    try {
      reg = await startFakeRegistry({ chunkDelayMs: 0 });
      const d = driver();
      const image = reg.slowImage;
      await d.start('img1', spec('img1', [{ image, command: ['sh', '-c', 'echo one'] }]));
      expect((await waitState(d, 'img1', ['succeeded', 'failed'], 60_000)).state).toBe('succeeded');
      await d.remove('img1');
      const manifests = () => reg!.requests.filter((r) => r.includes('/manifests/')).length;
      const pulledOnce = manifests();
      expect(pulledOnce).toBeGreaterThan(0);
      await docker.getImage(image).remove({ force: true });

      const events: DriverTaskStatus[] = [];
      await d.start('img2', spec('img2', [{ image, command: ['sh', '-c', 'echo two'] }]), (e) => events.push(e));
      const st = await waitState(d, 'img2', ['succeeded', 'failed'], 60_000);
      expect(st.state, st.reason).toBe('succeeded');
      expect(manifests()).toBeGreaterThan(pulledOnce);
      expect(events.some((e) => e.detail?.startsWith(`pulling ${image}`))).toBe(true);
      await d.remove('img2');
      expect(await ofTask('img2')).toEqual([]);
    } finally {
      await reg?.close();
      if (reg !== undefined) await docker.getImage(reg.slowImage).remove({ force: true }).catch(() => undefined);
    }
  });
});
