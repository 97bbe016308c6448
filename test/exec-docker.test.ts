// `flotilla exec` with the docker driver (issue 24): real CLI processes against a real cluster
// (one manager, one docker worker) whose pod of two containers runs on the Docker engine.
// Everything it creates is scoped to its own cluster id (its own secret) and removed after.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import WebSocket from 'ws';
import { eventually, runCli } from './helpers/cluster.js';
import { DockerTestCluster, dockerAvailable, dockerClient, removeClusterContainers, TEST_IMAGE } from './helpers/docker.js';

const docker = await dockerAvailable();

describe('docker engine for the exec tests', () => {
  it('is available (under CI it must be: run scripts/docker-setup.sh)', () => {
    if (process.env.CI === 'true') expect(docker.ok, docker.reason).toBe(true);
    else if (!docker.ok) console.warn(`skipping docker exec tests: ${docker.reason}`);
  });
});

describe.skipIf(!docker.ok)('flotilla exec (docker driver)', () => {
  let cluster: DockerTestCluster;
  let managers: string;
  let taskId: string;
  const cli = (args: string[], opts: { input?: string } = {}) =>
    runCli(['--managers', managers, ...args], { ...opts, env: { FLOTILLA_MANAGERS: '', FLOTILLA_DIR: join(cluster.dir, 'no-up-dir'), FLOTILLA_CONFIG: join(cluster.dir, 'config.json'), FLOTILLA_CONTEXT: '', FLOTILLA_TOKEN: '', FLOTILLA_TOKEN_FILE: '', FLOTILLA_CA: '' } });

  beforeAll(async () => {
    cluster = await DockerTestCluster.start(1);
    managers = cluster.addrs().join(',');
    cluster.startWorker('w1');
    const c = cluster.client(undefined, 30_000);
    await eventually(async () => (await c.get<{ nodes: { status: string; drivers: string[] }[] }>('/v1/nodes')).nodes.some((n) => n.status === 'ready' && n.drivers.includes('docker')), 30_000, 'docker worker ready');
    const t = await c.post<{ id: string }>('/v1/tasks', {
      name: 'dbox',
      driver: 'docker',
      containers: [
        { name: 'first', image: TEST_IMAGE, command: ['sleep', '600'], env: { WHO: 'first' }, workdir: '/tmp' },
        { name: 'second', image: TEST_IMAGE, command: ['sleep', '600'], env: { WHO: 'second' } },
      ],
      resources: { cpu: 10, memory: '16m' },
    });
    taskId = t.id;
    await eventually(async () => (await c.get<{ state: string }>(`/v1/tasks/${taskId}`)).state === 'running', 60_000, 'pod running');
  }, 120_000);

  afterAll(async () => {
    const id = cluster?.workerClusterId('w1');
    await cluster?.stop();
    if (id) await removeClusterContainers(dockerClient(), id);
  });

  it("runs in the pod's first container by default, -c picks another; the exit status passes through", async () => {
    const first = await cli(['exec', 'dbox', '--', 'sh', '-c', 'echo "$WHO $(pwd) $(hostname)"; echo err >&2']);
    expect(first.status, first.stderr).toBe(0);
    expect(first.stdout).toBe('first /tmp dbox\n');
    expect(first.stderr).toBe('err\n');
    const second = await cli(['exec', '-c', 'second', taskId, '--', 'sh', '-c', 'echo $WHO']);
    expect(second.stdout).toBe('second\n');
    const code = await cli(['exec', 'dbox', '--', 'sh', '-c', 'exit 5']);
    expect(code.status).toBe(5);
  });

  it('-i passes piped input through; -t gives a terminal', async () => {
    const cat = await cli(['exec', '-i', 'dbox', '--', 'cat'], { input: 'from a pipe\n' });
    expect(cat.status, cat.stderr).toBe(0);
    expect(cat.stdout).toBe('from a pipe\n');
    const tty = await cli(['exec', '-t', 'dbox', '--', 'sh', '-c', 'test -t 0 && test -t 1 && echo TTY']);
    expect(tty.status, tty.stderr).toBe(0);
    expect(tty.stdout).toMatch(/^TTY\r?\n$/);
    const none = await cli(['exec', 'dbox', '--', 'sh', '-c', 'test -t 1 && echo TTY || echo NOTTY']);
    expect(none.stdout).toBe('NOTTY\n');
  });

  it("without TLS the worker's exec door still wants the node credential only managers hold", async () => {
    const nodes = await cluster.client().get<{ nodes: { id: string; addr: string }[] }>('/v1/nodes');
    const addr = nodes.nodes.find((n) => n.id === 'w1')!.addr;
    const status = (headers: Record<string, string>) =>
      new Promise<number>((res) => {
        const w = new WebSocket(`ws://${addr}/v1/exec?task=${taskId}&cmd=true`, { headers });
        w.once('unexpected-response', (_q, r) => res(r.statusCode ?? 0));
        w.once('open', () => {
          w.terminate();
          res(101);
        });
        w.once('error', () => res(-1));
      });
    expect(await status({})).toBe(401);
    expect(await status({ authorization: 'Bearer flt_guess' })).toBe(401);
  });

  it('clear errors: unknown container, missing program', async () => {
    const ctr = await cli(['exec', '-c', 'third', 'dbox', '--', 'true']);
    expect(ctr.status).toBe(1);
    expect(ctr.stderr).toMatch(/no container 'third' \(it has 'first', 'second'\)/);
    const prog = await cli(['exec', 'dbox', '--', 'no-such-program-xyz']);
    expect(prog.status).toBeGreaterThanOrEqual(126);
    expect(prog.stdout + prog.stderr).toMatch(/no-such-program-xyz/);
  });
});
