// The docker driver against a real Docker engine and the offline image flotilla/busybox:test
// (both set up by `scripts/docker-setup.sh`): pods sharing localhost, published ports, labels,
// adoption by a new driver instance (a restarted worker), exit codes, pod failure, OOM kills,
// stop with a grace period, remove, logs, a failed pull, and probe().
//
// Without an engine these tests are skipped with a warning, except under CI=true where they
// fail (CI must run scripts/docker-setup.sh first).
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FlotillaError } from '../src/protocol/errors.js';
import { parseTaskSpec, type TaskSpec } from '../src/protocol/spec.js';
import type { DriverTaskStatus, LogLine } from '../src/worker/driver.js';
import { DockerDriver, LABELS, PullProgress, normalizeImage, type DockerDriverOptions } from '../src/worker/drivers/docker.js';
import { SOCKET_PATH, TEST_IMAGE, containersWith, dockerAvailable, dockerClient, freePort, removeClusterContainers, startFakeRegistry, type FakeRegistry } from './helpers/docker.js';

const availability = await dockerAvailable();
const inCI = process.env.CI === 'true';
if (!availability.ok && !inCI) console.warn(`docker driver tests skipped: ${availability.reason}`);

const NODE = `t${process.pid}-${Date.now().toString(36)}`;
/** This file's own cluster: the driver touches only containers labelled with it. */
const CLUSTER = `test-${process.pid}-${Date.now().toString(36)}`;
const VERSION = (JSON.parse(readFileSync(join(import.meta.dirname, '..', 'package.json'), 'utf8')) as { version: string }).version;
const drivers: DockerDriver[] = [];

function driver(opts: Partial<DockerDriverOptions> = {}): DockerDriver {
  // Several instances with this node id run side by side on purpose (no node lock).
  const d = new DockerDriver({ nodeId: NODE, clusterId: CLUSTER, exclusive: false, socketPath: SOCKET_PATH, reconcileMs: 500, podFailureGraceMs: 1000, ...opts });
  drivers.push(d);
  return d;
}

interface C {
  name?: string;
  image?: string;
  command?: string[];
  args?: string[];
  env?: Record<string, string>;
  ports?: unknown[];
  workdir?: string;
}

function spec(name: string, containers: C[], extra: Record<string, unknown> = {}): TaskSpec {
  return parseTaskSpec({ name, driver: 'docker', containers: containers.map((c) => ({ image: TEST_IMAGE, ...c })), ...extra });
}

const sh = (script: string, extra: C = {}): C => ({ command: ['sh', '-c', script], ...extra });

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

async function collect(it: AsyncIterable<LogLine>): Promise<LogLine[]> {
  const out: LogLine[] = [];
  for await (const l of it) out.push(l);
  return out;
}

const lines = (ls: LogLine[], container: string, stream?: 'stdout' | 'stderr'): string[] =>
  ls.filter((l) => l.container === container && (stream === undefined || l.stream === stream)).map((l) => l.line);

describe('DockerDriver helpers (no engine needed)', () => {
  it('aggregates pull progress over layers', () => {
    const p = new PullProgress();
    expect(p.update({ id: 'a', status: 'Pulling fs layer' })).toBeUndefined();
    expect(p.update({ id: 'a', status: 'Downloading', progressDetail: { current: 50, total: 100 } })).toBe(50);
    expect(p.update({ id: 'b', status: 'Downloading', progressDetail: { current: 0, total: 300 } })).toBe(12);
    expect(p.update({ id: 'a', status: 'Download complete' })).toBe(25);
    expect(p.update({ id: 'b', status: 'Pull complete' })).toBe(100);
  });

  it('normalises image references', () => {
    expect(normalizeImage('busybox')).toBe('busybox:latest');
    expect(normalizeImage('flotilla/busybox:test')).toBe('flotilla/busybox:test');
    expect(normalizeImage('localhost:5000/app')).toBe('localhost:5000/app:latest');
    expect(normalizeImage('app@sha256:abc')).toBe('app@sha256:abc');
  });

  it('probe() with a wrong socket path fails with a clear error', async () => {
    const err = await DockerDriver.probe({ nodeId: 'probe', socketPath: '/tmp/flotilla-no-such-docker.sock' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FlotillaError);
    expect((err as FlotillaError).code).toBe('unavailable');
    expect((err as Error).message).toMatch(/^Docker engine not reachable at \/tmp\/flotilla-no-such-docker\.sock: .*ENOENT/);
  });
});

describe.skipIf(!availability.ok && !inCI)('Docker engine', () => {
  it('is reachable, with the image flotilla/busybox:test (run scripts/docker-setup.sh otherwise)', async () => {
    expect(availability.ok, availability.reason).toBe(true);
    const d = await DockerDriver.probe({ nodeId: NODE, clusterId: CLUSTER, exclusive: false, socketPath: SOCKET_PATH });
    drivers.push(d);
    expect(await d.list()).toEqual([]);
  });
});

describe.skipIf(!availability.ok && !inCI)('DockerDriver with a real engine', () => {
  const docker = dockerClient();

  beforeAll(() => {
    if (!availability.ok) throw new Error(`CI=true needs a Docker engine: ${availability.reason}`);
  });

  afterAll(async () => {
    for (const d of drivers) await d.close();
    if (availability.ok) await removeClusterContainers(docker, CLUSTER);
  });

  it('runs a 2-container pod: shared localhost, a published port, labels and limits', async () => {
    const d = driver();
    const port = await freePort();
    const events: DriverTaskStatus[] = [];
    const s = spec(
      'web',
      [
        sh('mkdir -p /www && echo "hello from $FLOTILLA_CONTAINER of $FLOTILLA_TASK_NAME" > /www/index.html && exec httpd -f -p 8080 -h /www', {
          name: 'server',
          ports: [{ container: 8080, host: port }],
        }),
        sh('until wget -qO- http://127.0.0.1:8080/; do sleep 0.2; done; echo "GREETING=$GREETING"; exec sleep 3600', { name: 'client', env: { GREETING: 'hi there' } }),
      ],
      { resources: { cpu: '250m', memory: '48Mi' } },
    );
    await d.start('pod-net', s, (e) => events.push(e));
    const st = await waitState(d, 'pod-net', ['running']);
    expect(st.attempt).toBe(1);
    expect(st.containers?.map((c) => [c.name, c.state])).toEqual([
      ['server', 'running'],
      ['client', 'running'],
    ]);
    expect(events[0]?.state).toBe('starting');
    expect(events.some((e) => e.state === 'running')).toBe(true);

    // The client reached the server on the pod's localhost.
    const clientLines = await waitFor(async () => {
      const ls = lines(await collect(d.logs('pod-net', { container: 'client' })), 'client', 'stdout');
      return ls.includes('GREETING=hi there') ? ls : null;
    }, 'the client to reach the server');
    expect(clientLines).toContain('hello from server of web');

    // The published port answers on the host.
    const body = await waitFor(async () => {
      try {
        const r = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(2000) });
        return r.ok ? await r.text() : null;
      } catch {
        return null;
      }
    }, 'the published port');
    expect(body.trim()).toBe('hello from server of web');

    // Labels, network mode, limits, restart policy.
    const cs = await containersWith(docker, `${LABELS.node}=${NODE}`, `${LABELS.task}=pod-net`);
    expect(cs).toHaveLength(3);
    const infra = cs.find((c) => c.Labels[LABELS.role] === 'infra')!;
    expect(infra).toBeDefined();
    expect(JSON.parse(infra.Labels[LABELS.containers]!)).toEqual(['server', 'client']);
    const infraInfo = await docker.getContainer(infra.Id).inspect();
    expect(infraInfo.HostConfig.PortBindings).toEqual({ '8080/tcp': [{ HostIp: '', HostPort: String(port) }] });
    for (const name of ['server', 'client']) {
      const c = cs.find((x) => x.Labels[LABELS.container] === name && x.Labels[LABELS.role] === 'app')!;
      expect(c.Labels).toMatchObject({
        [LABELS.task]: 'pod-net',
        [LABELS.attempt]: '1',
        [LABELS.pod]: 'web',
        [LABELS.container]: name,
        [LABELS.node]: NODE,
        [LABELS.cluster]: CLUSTER,
        [LABELS.version]: VERSION,
        [LABELS.role]: 'app',
      });
      const info = await docker.getContainer(c.Id).inspect();
      expect(info.HostConfig.NetworkMode).toBe(`container:${infra.Id}`);
      expect(info.HostConfig.RestartPolicy?.Name).toBe('no');
      expect(info.HostConfig.Memory).toBe(48 * 1024 * 1024);
      expect(info.HostConfig.NanoCpus).toBe(250_000_000);
      expect(info.Config.Env).toContain('FLOTILLA_TASK_ID=pod-net');
    }
    expect(infra.Labels).toMatchObject({ [LABELS.role]: 'infra', [LABELS.task]: 'pod-net', [LABELS.node]: NODE, [LABELS.version]: VERSION });

    await d.remove('pod-net');
    expect(await containersWith(docker, `${LABELS.node}=${NODE}`, `${LABELS.task}=pod-net`)).toEqual([]);
    expect(await d.inspect('pod-net')).toBeNull();
  });

  it('cluster scope: nothing before the cluster id is known; another cluster with the same node id never sees, stops or removes our pods', async () => {
    const unscoped = driver({ clusterId: undefined });
    await expect(unscoped.list()).rejects.toMatchObject({ code: 'unavailable', message: expect.stringMatching(/cluster id/) });
    await expect(unscoped.start('x', spec('x', [sh('true')]))).rejects.toMatchObject({ code: 'unavailable' });
    expect(() => new DockerDriver({ nodeId: NODE, clusterId: 'bad id!' })).toThrow(/cluster id/);

    const mine = driver();
    await mine.start('scoped', spec('scoped', [sh('exec sleep 3600')]));
    await waitState(mine, 'scoped', ['running']);
    const ours = await containersWith(docker, `${LABELS.cluster}=${CLUSTER}`, `${LABELS.task}=scoped`);
    expect(ours).toHaveLength(1); // a one-container pod has no infra

    // Same node id and task id, other cluster: lists nothing of ours, its remove() leaves ours.
    const otherCluster = `${CLUSTER}-other`;
    const other = driver({ clusterId: otherCluster });
    expect((await other.list()).map((t) => t.taskId)).not.toContain('scoped');
    await other.start('scoped', spec('scoped', [sh('exec sleep 3600')]));
    await waitState(other, 'scoped', ['running']);
    await other.remove('scoped');
    const after = await containersWith(docker, `${LABELS.task}=scoped`);
    expect(after.map((c) => c.Id).sort()).toEqual(ours.map((c) => c.Id).sort());
    expect(after.every((c) => c.State === 'running')).toBe(true);

    // A driver moved to another cluster forgets ours without touching them.
    unscoped.watch(() => undefined);
    await unscoped.setCluster(CLUSTER);
    expect((await unscoped.list()).map((t) => t.taskId)).toContain('scoped');
    await unscoped.setCluster(otherCluster);
    expect((await unscoped.list()).map((t) => t.taskId)).not.toContain('scoped');
    expect((await containersWith(docker, `${LABELS.task}=scoped`)).filter((c) => c.State === 'running')).toHaveLength(1);
    await removeClusterContainers(docker, otherCluster);
    await mine.remove('scoped');
  });

  it('node lock: a second live driver with the same cluster and node id is refused; the lock of a SIGKILLed holder is not', async () => {
    const cluster = `${CLUSTER}-lock`;
    const first = driver({ clusterId: cluster, exclusive: true });
    expect(await first.list()).toEqual([]);
    const locks = await containersWith(docker, `${LABELS.cluster}=${cluster}`, `${LABELS.role}=lock`);
    expect(locks).toHaveLength(1);
    const second = driver({ clusterId: cluster, exclusive: true, lockWaitMs: 1500 });
    const err = (await second.list().catch((e: unknown) => e)) as FlotillaError;
    expect(err).toMatchObject({ code: 'conflict' });
    expect(err.message).toMatch(/same node id/);
    expect(err.message).toContain(`pid ${process.pid}`);
    // Another node id of that cluster is fine.
    const w2 = driver({ clusterId: cluster, nodeId: `${NODE}-b`, exclusive: true });
    expect(await w2.list()).toEqual([]);
    await w2.close();
    // Released on close: the second one gets it now.
    await first.close();
    expect(await second.list()).toEqual([]);
    await second.close();

    // A holder killed with SIGKILL: its lock goes away with its connection.
    const script = `
      import { DockerDriver } from ${JSON.stringify(join(import.meta.dirname, '..', 'dist', 'src', 'worker', 'drivers', 'docker.js'))};
      const d = new DockerDriver({ nodeId: ${JSON.stringify(NODE)}, clusterId: ${JSON.stringify(cluster)}, socketPath: ${JSON.stringify(SOCKET_PATH)} });
      await d.list();
      console.log('locked');
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await waitFor(() => new Promise<boolean>((res) => child.stdout!.once('data', (b: Buffer) => res(b.toString().includes('locked')))), 'the child to take the lock');
      const busy = driver({ clusterId: cluster, exclusive: true, lockWaitMs: 1000 });
      await expect(busy.list()).rejects.toMatchObject({ code: 'conflict' });
      child.kill('SIGKILL');
      const next = driver({ clusterId: cluster, exclusive: true, lockWaitMs: 10_000 });
      expect(await next.list()).toEqual([]);
      await next.close();
    } finally {
      child.kill('SIGKILL');
    }
    // Released on close (the engine may still be removing the last one for a moment).
    await waitFor(async () => (await containersWith(docker, `${LABELS.cluster}=${cluster}`)).length === 0, 'no lock container left', 10_000);
  });

  it('a new driver instance (a restarted worker) adopts the running pod and never starts a duplicate', async () => {
    const d1 = driver();
    const s = spec('adoptee', [sh('exec sleep 3600', { name: 'a' }), sh('trap "exit 0" TERM; while :; do sleep 0.1; done', { name: 'b' })]);
    await d1.start('adopt', s, undefined, { attempt: 2 });
    await waitState(d1, 'adopt', ['running']);
    await d1.close();

    const d2 = driver();
    const listed = (await d2.list()).find((x) => x.taskId === 'adopt');
    expect(listed).toMatchObject({ taskId: 'adopt', attempt: 2, state: 'running' });
    expect(listed?.containers?.map((c) => c.state)).toEqual(['running', 'running']);
    const count = async () => (await containersWith(docker, `${LABELS.node}=${NODE}`, `${LABELS.task}=adopt`)).length;
    expect(await count()).toBe(3);

    await d2.start('adopt', s, undefined, { attempt: 2 }); // no-op
    expect(await count()).toBe(3);
    await expect(d2.start('adopt', s, undefined, { attempt: 3 })).rejects.toMatchObject({ code: 'conflict' });
    await expect(d2.start('adopt', spec('other', [sh('true')]), undefined, { attempt: 2 })).rejects.toMatchObject({ code: 'conflict' });
    expect(await count()).toBe(3);

    // A stop is recorded in the engine: a third instance reports `stopped`, not `failed`.
    await d2.stop('adopt', 1000);
    expect((await d2.inspect('adopt'))?.state).toBe('stopped');
    const d3 = driver();
    const again = (await d3.list()).find((x) => x.taskId === 'adopt');
    expect(again).toMatchObject({ state: 'stopped', attempt: 2, reason: 'stopped on request' });
    await expect(d3.start('adopt', s, undefined, { attempt: 2 })).rejects.toMatchObject({ code: 'conflict' });
    await d3.remove('adopt');
    expect(await count()).toBe(0);
  });

  it('exit code 3 fails the pod with exitCode 3; all exits 0 succeed', async () => {
    const d = driver();
    await d.start('exit3', spec('exit3', [sh('echo bye; exit 3')]));
    const st = await waitState(d, 'exit3', ['failed', 'succeeded']);
    expect(st).toMatchObject({ state: 'failed', exitCode: 3, reason: "container 'c0' exited with code 3" });
    expect(st.containers).toEqual([{ name: 'c0', state: 'failed', exitCode: 3 }]);
    // A restarted worker reads the same outcome back from the engine.
    expect((await driver().list()).find((x) => x.taskId === 'exit3')).toMatchObject({ state: 'failed', exitCode: 3, reason: "container 'c0' exited with code 3" });

    await d.start('ok', spec('ok', [sh('exit 0'), sh('sleep 0.3')]));
    const ok = await waitState(d, 'ok', ['failed', 'succeeded']);
    expect(ok).toMatchObject({ state: 'succeeded', exitCode: 0 });
    // Nothing of either pod runs (the infra containers were stopped too).
    const running = await docker.listContainers({ filters: { label: [`${LABELS.node}=${NODE}`] } });
    expect(running.filter((c) => ['exit3', 'ok'].includes(c.Labels[LABELS.task]!))).toEqual([]);
    // A finished task cannot be started again before remove().
    await expect(d.start('ok', spec('ok', [sh('exit 0'), sh('sleep 0.3')]))).rejects.toMatchObject({ code: 'conflict' });
    await d.remove('exit3');
    await d.remove('ok');
  });

  it('one failing container fails the pod and stops the others', async () => {
    const d = driver({ podFailureGraceMs: 1000 });
    // 'stubborn' is PID 1 without a TERM handler: it ignores SIGTERM and is killed after the grace.
    const events: DriverTaskStatus[] = [];
    await d.start('podfail', spec('podfail', [sh('exec sleep 3600', { name: 'stubborn' }), sh('sleep 0.5; exit 4', { name: 'bad' })]), (e) => events.push(e));
    const st = await waitState(d, 'podfail', ['failed', 'succeeded', 'stopped']);
    expect(st).toMatchObject({ state: 'failed', exitCode: 4, reason: "container 'bad' exited with code 4" });
    expect(st.containers).toEqual([
      { name: 'stubborn', state: 'failed', exitCode: 137 },
      { name: 'bad', state: 'failed', exitCode: 4 },
    ]);
    expect(events.some((e) => e.reason?.startsWith('failing: '))).toBe(true);
    const running = await docker.listContainers({ filters: { label: [`${LABELS.node}=${NODE}`, `${LABELS.task}=podfail`] } });
    expect(running).toEqual([]);
    await d.remove('podfail');
  });

  it('the infra container dying fails the pod', async () => {
    const d = driver({ podFailureGraceMs: 500 });
    // Two containers: a one-container pod has no infra (docker-solo.test.ts).
    const loop = sh('trap "exit 0" TERM; while :; do sleep 0.1; done');
    await d.start('noinfra', spec('noinfra', [loop, loop]));
    await waitState(d, 'noinfra', ['running']);
    const [infra] = await containersWith(docker, `${LABELS.node}=${NODE}`, `${LABELS.task}=noinfra`, `${LABELS.role}=infra`);
    await docker.getContainer(infra!.Id).kill();
    const st = await waitState(d, 'noinfra', ['failed', 'succeeded', 'stopped']);
    expect(st).toMatchObject({ state: 'failed', exitCode: 137, reason: "the pod's network (infra) container exited unexpectedly (code 137)" });
    await d.remove('noinfra');
  });

  it('a host port already in use fails the second pod with a clear reason', async () => {
    const d = driver();
    const port = await freePort();
    await d.start('port-a', spec('port-a', [sh('exec sleep 3600', { ports: [`${port}:80`] })]));
    await waitState(d, 'port-a', ['running']);
    await d.start('port-b', spec('port-b', [sh('exec sleep 3600', { ports: [`${port}:80`] })]));
    const st = await waitState(d, 'port-b', ['failed', 'running']);
    expect(st.state).toBe('failed');
    // A one-container pod publishes its ports on its own container (no infra).
    expect(st.reason).toMatch(/^container 'c0' failed to start: .*(already allocated|address already in use)/);
    await d.remove('port-a');
    await d.remove('port-b');
    expect(await containersWith(docker, `${LABELS.node}=${NODE}`, `${LABELS.task}=port-b`)).toEqual([]);
  });

  it('a container allocating beyond its memory limit is OOM killed', async () => {
    const d = driver();
    await d.start('oom', spec('oom', [sh('head -c 200m /dev/zero | tail')], { resources: { memory: '32Mi' } }));
    const st = await waitState(d, 'oom', ['failed', 'succeeded']);
    const [c] = await containersWith(docker, `${LABELS.node}=${NODE}`, `${LABELS.task}=oom`, `${LABELS.role}=app`);
    const info = await docker.getContainer(c!.Id).inspect();
    expect(info.HostConfig.Memory).toBe(32 * 1024 * 1024);
    expect(info.HostConfig.MemorySwap).toBe(32 * 1024 * 1024);
    expect(info.State.OOMKilled).toBe(true);
    expect(st.state).toBe('failed');
    expect(st.exitCode).toBe(137);
    expect(st.reason).toBe("container 'c0' exited with code 137 (signal 9): out of memory (OOM killed)");
    await d.remove('oom');
  });

  it('stop(): a container trapping SIGTERM exits at once, one ignoring it is killed after the grace', async () => {
    const d = driver();
    await d.start('polite', spec('polite', [sh('trap "echo got TERM; exit 0" TERM; echo ready; while :; do sleep 0.1; done')]));
    await d.start('rude', spec('rude', [sh('trap "" TERM; echo ready; while :; do sleep 0.1; done')]));
    for (const id of ['polite', 'rude']) {
      await waitState(d, id, ['running']);
      await waitFor(async () => lines(await collect(d.logs(id)), 'c0').includes('ready'), `${id} to trap TERM`);
    }

    let t0 = Date.now();
    await d.stop('polite', 20_000);
    const politeMs = Date.now() - t0;
    const polite = await d.inspect('polite');
    expect(polite).toMatchObject({ state: 'stopped', reason: 'stopped on request' });
    expect(polite?.containers).toEqual([{ name: 'c0', state: 'exited', exitCode: 0 }]);
    expect(politeMs).toBeLessThan(8000);
    expect(lines(await collect(d.logs('polite')), 'c0', 'stdout')).toContain('got TERM');

    t0 = Date.now();
    await d.stop('rude', 2000);
    const rudeMs = Date.now() - t0;
    const rude = await d.inspect('rude');
    expect(rude).toMatchObject({ state: 'stopped' });
    expect(rude?.containers).toEqual([{ name: 'c0', state: 'failed', exitCode: 137 }]);
    expect(rudeMs).toBeGreaterThanOrEqual(1900);
    expect(rudeMs).toBeLessThan(10_000);

    await d.stop('rude', 0); // finished: no-op
    await d.stop('nope', 0); // unknown: no-op
    await d.remove('polite');
    await d.remove('rude');
    expect(await containersWith(docker, `${LABELS.node}=${NODE}`, `${LABELS.task}=polite`)).toEqual([]);
  });

  it('remove() of a running pod kills it and leaves no container behind', async () => {
    const d = driver();
    await d.start('gone', spec('gone', [sh('exec sleep 3600'), sh('exec sleep 3600')], { }));
    await waitState(d, 'gone', ['running']);
    expect(await containersWith(docker, `${LABELS.node}=${NODE}`, `${LABELS.task}=gone`)).toHaveLength(3);
    await d.remove('gone');
    expect(await containersWith(docker, `${LABELS.node}=${NODE}`, `${LABELS.task}=gone`)).toEqual([]);
    expect(await d.inspect('gone')).toBeNull();
    expect((await d.list()).map((s) => s.taskId)).not.toContain('gone');
    await d.remove('gone'); // unknown: no-op
  });

  it('logs(): both containers and streams, filters, tail, errors', async () => {
    const d = driver();
    await d.start(
      'logs',
      spec('logs', [
        sh('echo a-out-1; echo a-err-1 >&2; echo a-out-2; printf "a-no-newline"', { name: 'a' }),
        sh('echo b-out-1; echo b-err-1 >&2; echo b-err-2 >&2', { name: 'b' }),
      ]),
    );
    await waitState(d, 'logs', ['succeeded', 'failed']);
    const all = await collect(d.logs('logs'));
    expect(lines(all, 'a', 'stdout')).toEqual(['a-out-1', 'a-out-2', 'a-no-newline']);
    expect(lines(all, 'a', 'stderr')).toEqual(['a-err-1']);
    expect(lines(all, 'b', 'stdout')).toEqual(['b-out-1']);
    expect(lines(all, 'b', 'stderr')).toEqual(['b-err-1', 'b-err-2']);
    expect(await collect(d.logs('logs', { container: 'b', stream: 'stderr' }))).toEqual([
      { container: 'b', stream: 'stderr', line: 'b-err-1' },
      { container: 'b', stream: 'stderr', line: 'b-err-2' },
    ]);
    const tail = await collect(d.logs('logs', { tail: 1 }));
    expect(lines(tail, 'a', 'stdout')).toEqual(['a-no-newline']);
    expect(lines(tail, 'a', 'stderr')).toEqual(['a-err-1']);
    expect(lines(tail, 'b', 'stderr')).toEqual(['b-err-2']);
    expect(await collect(d.logs('logs', { tail: 0 }))).toEqual([]);
    await expect(collect(d.logs('logs', { container: 'zz' }))).rejects.toMatchObject({ code: 'bad_request' });
    await expect(collect(d.logs('no-such-task'))).rejects.toMatchObject({ code: 'not_found' });
    await d.remove('logs');
  });

  it('logs({ follow }) streams until the task ends; an abort ends it early', async () => {
    const d = driver();
    await d.start('follow', spec('follow', [sh('for i in 1 2 3 4 5; do echo tick$i; sleep 0.2; done', { name: 'a' }), sh('sleep 0.5; echo done-b >&2', { name: 'b' })]));
    const t0 = Date.now();
    const got = await collect(d.logs('follow', { follow: true }));
    expect(Date.now() - t0).toBeGreaterThanOrEqual(500);
    expect(lines(got, 'a', 'stdout')).toEqual(['tick1', 'tick2', 'tick3', 'tick4', 'tick5']);
    expect(lines(got, 'b', 'stderr')).toEqual(['done-b']);
    expect((await waitState(d, 'follow', ['succeeded', 'failed'], 5000)).state).toBe('succeeded');
    // follow + tail on a finished task: the last lines, then the end.
    expect(lines(await collect(d.logs('follow', { follow: true, tail: 2, container: 'a' })), 'a')).toEqual(['tick4', 'tick5']);

    await d.start('forever', spec('forever', [sh('i=0; while :; do i=$((i+1)); echo line$i; sleep 0.1; done')]));
    await waitState(d, 'forever', ['running']);
    const ac = new AbortController();
    const seen: string[] = [];
    const reading = (async () => {
      for await (const l of d.logs('forever', { follow: true, signal: ac.signal })) {
        seen.push(l.line);
        if (seen.length === 3) ac.abort();
      }
    })();
    await reading;
    expect(seen.slice(0, 3)).toEqual(['line1', 'line2', 'line3']);
    await d.remove('forever');
  });

  it('an image that is missing and cannot be pulled fails the task with a clear reason', async () => {
    const d = driver({ pullTimeoutMs: 20_000 });
    const events: DriverTaskStatus[] = [];
    await d.start('nopull', spec('nopull', [{ image: 'flotilla/no-such-image:v1', command: ['true'] }]), (e) => events.push(e));
    const st = await waitState(d, 'nopull', ['failed', 'running', 'succeeded']);
    expect(st.state).toBe('failed');
    expect(st.reason).toMatch(/^image flotilla\/no-such-image:v1 not found locally and pull failed: .+/);
    expect(events.some((e) => e.detail?.startsWith('pulling flotilla/no-such-image:v1'))).toBe(true);
    expect(await containersWith(docker, `${LABELS.node}=${NODE}`, `${LABELS.task}=nopull`)).toEqual([]);
    await d.remove('nopull');
    expect(await d.inspect('nopull')).toBeNull();
  });

  describe('pulls (from a fake registry on 127.0.0.1: Docker pulls from localhost over HTTP)', () => {
    let reg: FakeRegistry | undefined;
    beforeAll(async () => {
      reg = await startFakeRegistry();
    });
    afterAll(async () => {
      await reg?.close();
      if (reg !== undefined) await docker.getImage(reg.slowImage).remove({ force: true }).catch(() => undefined);
    });

    it('pulls a missing image, reporting progress as the detail, then runs it', async () => {
      const d = driver();
      const events: DriverTaskStatus[] = [];
      const t0 = Date.now();
      await d.start('pull', spec('pull', [{ image: reg!.slowImage, command: ['sh', '-c', 'echo pulled and ran'] }]), (e) => events.push(e));
      // start() resolves once the pull began, not when it ends.
      expect(Date.now() - t0).toBeLessThan(5000);
      const st = await waitState(d, 'pull', ['succeeded', 'failed'], 40_000);
      expect(st.state, st.reason).toBe('succeeded');
      const details = events.map((e) => e.detail ?? '');
      expect(details.some((x) => x === `pulling ${reg!.slowImage}` || /^pulling \S+ \d+%$/.test(x))).toBe(true);
      const pcts = details.map((x) => /^pulling \S+ (\d+)%$/.exec(x)?.[1]).filter((x) => x !== undefined).map(Number);
      expect(pcts.some((p) => p > 0 && p < 100)).toBe(true);
      expect(pcts).toEqual([...pcts].sort((a, b) => a - b)); // never goes back
      expect(events.every((e) => e.state === 'starting' || !e.detail?.startsWith('pulling'))).toBe(true);
      expect(lines(await collect(d.logs('pull')), 'c0')).toEqual(['pulled and ran']);
      await d.remove('pull');
    });

    it('stop() during a pull that hangs ends the task stopped, with no container created', async () => {
      const d = driver();
      await d.start('hang', spec('hang', [{ image: reg!.hangingImage, command: ['true'] }]));
      const st = await d.inspect('hang');
      expect(st).toMatchObject({ state: 'starting', detail: `pulling ${reg!.hangingImage}` });
      const t0 = Date.now();
      await d.stop('hang', 5000);
      expect(Date.now() - t0).toBeLessThan(3000);
      expect(await d.inspect('hang')).toMatchObject({ state: 'stopped', reason: 'stopped on request' });
      expect(await containersWith(docker, `${LABELS.node}=${NODE}`, `${LABELS.task}=hang`)).toEqual([]);
      await d.remove('hang');
    });

    it('a pull longer than pullTimeoutMs fails the task', async () => {
      const d = driver({ pullTimeoutMs: 1500 });
      await d.start('slowpull', spec('slowpull', [{ image: reg!.hangingImage, command: ['true'] }]));
      const st = await waitState(d, 'slowpull', ['failed', 'running', 'succeeded'], 40_000);
      expect(st.state).toBe('failed');
      expect(st.reason).toBe(`image ${reg!.hangingImage} not found locally and pull failed: timed out after 1500 ms`);
      await d.remove('slowpull');
    });
  });

  it('an executable missing from the image, or a config the engine refuses, fails the pod', async () => {
    const d = driver();
    await d.start('noexe', spec('noexe', [sh('exec sleep 3600', { name: 'ok' }), { name: 'broken', command: ['/no/such/program'] }]));
    const st = await waitState(d, 'noexe', ['failed', 'succeeded']);
    expect(st.state).toBe('failed');
    expect(st.reason).toMatch(/^container 'broken' failed to start: .*no such file or directory/);
    expect(st.containers?.[0]).toMatchObject({ name: 'ok', state: 'failed', exitCode: 137 });
    await d.remove('noexe');

    // A config the engine refuses (a relative workdir): nothing of the pod is started.
    await d.start('badcfg', spec('badcfg', [sh('exec sleep 3600', { name: 'first' }), sh('true', { name: 'second', workdir: 'relative/dir' })]));
    const bad = await waitState(d, 'badcfg', ['failed'], 30_000);
    expect(bad.state).toBe('failed');
    expect(bad.reason).toMatch(/^cannot create container 'second': .*absolute path/);
    expect(bad.containers?.map((c) => c.state)).toEqual(['failed', 'failed']);
    const running = await docker.listContainers({ filters: { label: [`${LABELS.node}=${NODE}`, `${LABELS.task}=badcfg`] } });
    expect(running).toEqual([]);
    await d.remove('badcfg');
  });

  it('rejects misuse: another driver, a missing image field, a bad task id', async () => {
    const d = driver();
    await expect(d.start('x', parseTaskSpec({ name: 'x', driver: 'process', containers: [{ command: ['true'] }] }))).rejects.toMatchObject({ code: 'bad_request' });
    await expect(d.start('', spec('x', [sh('true')]))).rejects.toMatchObject({ code: 'bad_request' });
    await expect(d.start('x', spec('x', [sh('true')]), undefined, { attempt: 0 })).rejects.toMatchObject({ code: 'bad_request' });
  });
});
