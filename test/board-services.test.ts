// The board's services view (key S): the pure rows against odd data, then the real board in a
// real tmux pane against a real cluster (1 manager, 1 worker, process driver): the service's
// ready/desired, update state, "batch i/n" and version; s scales it (typing N), b rolls it back
// (after y); the tasks of the selected service show their health ('-' when they report none);
// a mesh-published service shows its endpoints (port, address:port, node, ready, state, health),
// and an endpoint's row goes when its replica is SIGKILLed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, ROOT, TestCluster, eventually, freePorts, killTaskByPidFile, killTaskProcesses, sleep } from './helpers/cluster.js';
import type { FlotillaClient } from '../src/client/client.js';
import type { ServiceInfo, ServiceInspect } from '../src/protocol/api.js';
import { normalizeServiceEndpoints, normalizeServices, normalizeServiceTasks, servicesLines, updateProgress } from '../src/cli/board/panes/services.js';
import { ASCII_GLYPHS } from '../src/cli/board.js';

const plain = (l: string) => l.replace(/\{open\}/g, '{').replace(/\{close\}/g, '}').replace(/\{\/?[a-z-]+\}/g, '');

describe('board services view (no terminal)', () => {
  it('normalizes odd answers, shows batch i/n and task health or -', () => {
    for (const odd of [null, 7, 'x', { services: 'no' }, { services: [null, 3, { name: {} }] }]) expect(() => normalizeServices(odd)).not.toThrow();
    expect(updateProgress({ state: 'updating', batches: 1, message: 'updating to version 2: batch 2 of 4 (slots 3)' }, 4, 1)).toBe('batch 2/4');
    expect(updateProgress({ state: 'updating', batches: 1, message: '' }, 4, 2)).toBe('batch 1/2');
    expect(updateProgress({ state: 'none', batches: 0 }, 4, 1)).toBe('');
    const tasks = normalizeServiceTasks({
      tasks: [
        { id: 'web.1-a', name: 'web.1', state: 'running', desired: 'running', node: 'w1', service: { slot: 1, version: 2 }, health: { status: 'healthy', failingStreak: 0, at: 1 } },
        { id: 'web.2-b', name: 'web.2', state: 'running', desired: 'running', node: 'w1', service: { slot: 2, version: 1 } },
        { id: 'web.3-c', name: 'web.3', state: 'running', desired: 'running', node: null, service: { slot: 3, version: 2 }, health: { status: 'unhealthy\x1b[31m' } },
      ],
    });
    expect(tasks.map((t) => t.health)).toEqual(['healthy', '-', 'unhealthy [31m']);
    const services = normalizeServices({ services: [{ name: 'web', replicas: 3, ready: 2, upToDate: 2, templateVersion: 2, previousVersion: 1, update: { state: 'updating', batches: 2, message: 'batch 2 of 3' }, spec: { update: { parallelism: 1 } } }] });
    for (const w of [0, 1, 20, 60, 120, 300]) {
      const lines = servicesLines({ width: w, height: 20, sel: 0, services, tasks, loaded: true, error: null, g: ASCII_GLYPHS }, w, 20);
      for (const l of lines) expect(plain(l).length).toBeLessThanOrEqual(Math.max(w, 0));
    }
    const wide = servicesLines({ width: 140, height: 20, sel: 0, services, tasks, loaded: true, error: null, g: ASCII_GLYPHS }, 140, 20).map(plain).join('\n');
    expect(wide).toMatch(/web\s+2\/3\s+2\s+v2\s+updating\s+batch 2\/3\s+batch 2 of 3/);
    expect(wide).toMatch(/web\.1\s+web\.1-a\s+v2\s+running\s+healthy\s+w1/);
    expect(wide).toMatch(/web\.2\s+web\.2-b\s+v1\*\s+running\s+-\s+w1/);
    // No endpoints (the service publishes no mesh port): no endpoints section.
    expect(wide).not.toMatch(/endpoints of/);
  });

  it('shows the endpoints of a mesh-published service below its tasks, ready or not, at every width', () => {
    for (const odd of [null, 7, { endpoints: 'no' }, { endpoints: [null, 3, { addr: {} }] }]) expect(() => normalizeServiceEndpoints(odd)).not.toThrow();
    expect(normalizeServiceEndpoints({ endpoints: [{ addr: {} }] })[0]).toMatchObject({ addr: '?', node: '-', ready: false, health: '-' });
    const endpoints = normalizeServiceEndpoints({
      endpoints: [
        { published: 8080, taskId: 'web.1-a', addr: '10.0.0.2:9000', ready: true, node: 'w1', state: 'running', health: 'healthy' },
        { published: 8080, taskId: 'web.2-b', addr: '10.0.0.3:9000', ready: false, node: 'w2', state: 'running', health: 'unhealthy' },
      ],
    });
    const services = normalizeServices({ services: [{ name: 'web', replicas: 2, ready: 1, upToDate: 2, templateVersion: 1, update: { state: 'none' } }] });
    const tasks = normalizeServiceTasks({ tasks: [{ id: 'web.1-a', name: 'web.1', state: 'running', desired: 'running', node: 'w1', service: { slot: 1, version: 1 } }] });
    for (const w of [0, 1, 20, 60, 120, 300]) {
      for (const h of [0, 3, 8, 20]) {
        const lines = servicesLines({ width: w, height: h, sel: 0, services, tasks, endpoints, loaded: true, error: null, g: ASCII_GLYPHS }, w, h);
        expect(lines.length).toBeLessThanOrEqual(h);
        for (const l of lines) expect(plain(l).length).toBeLessThanOrEqual(Math.max(w, 0));
      }
    }
    const wide = servicesLines({ width: 140, height: 20, sel: 0, services, tasks, endpoints, loaded: true, error: null, g: ASCII_GLYPHS }, 140, 20).map(plain).join('\n');
    expect(wide).toMatch(/tasks of web[\s\S]*web\.1\s+web\.1-a[\s\S]*endpoints of web \(routing mesh\)\s*\n\s*PORT\s+ENDPOINT\s+NODE\s+READY\s+STATE\s+HEALTH\s+TASK/);
    expect(wide).toMatch(/8080\s+10\.0\.0\.2:9000\s+w1\s+yes\s+running\s+healthy\s+web\.1-a/);
    expect(wide).toMatch(/8080\s+10\.0\.0\.3:9000\s+w2\s+no\s+running\s+unhealthy\s+web\.2-b/);
    // Narrow: the address, node and readiness stay.
    const narrow = servicesLines({ width: 40, height: 20, sel: 0, services, tasks, endpoints, loaded: true, error: null, g: ASCII_GLYPHS }, 40, 20).map(plain).join('\n');
    expect(narrow).toMatch(/8080\s+10\.0\.0\.2:9000\s+w1\s+yes/);
  });
});

const hasTmux = spawnSync('tmux', ['-V']).status === 0;

describe.skipIf(!hasTmux && !process.env.CI)('board services view in tmux (real cluster)', () => {
  const SOCK = `flotilla-svc-${process.pid}`;
  const SESSION = 'svc';
  let cluster: TestCluster;
  let client: FlotillaClient;
  let pidDir: string;
  let socketPath = '';
  const env = (): NodeJS.ProcessEnv => {
    const e: NodeJS.ProcessEnv = { ...process.env, LANG: 'C.UTF-8' };
    delete e.TMUX;
    return e;
  };
  const tmux = (...args: string[]): string => execFileSync('tmux', ['-L', SOCK, ...args], { encoding: 'utf8', env: env(), stdio: ['ignore', 'pipe', 'pipe'] });
  const screen = (): string => {
    try {
      return tmux('capture-pane', '-p', '-t', SESSION);
    } catch {
      return '';
    }
  };
  const keys = (...k: string[]) => tmux('send-keys', '-t', SESSION, ...k);
  async function waitScreen(pred: (s: string) => boolean, what: string, timeoutMs = 30_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    let s = '';
    while (Date.now() < deadline) {
      s = screen();
      if (pred(s)) return s;
      await sleep(100);
    }
    throw new Error(`timed out waiting for the board to show ${what}; the screen was:\n${s}`);
  }
  const svc = () => client.get<ServiceInfo>('/v1/services/web');
  const spec = (secs: number, replicas = 2) => ({
    name: 'web',
    driver: 'process',
    replicas,
    containers: [{ command: ['/bin/sh', '-c', `touch "${pidDir}/$FLOTILLA_TASK_ID.$$"; exec sleep ${secs}`] }],
    resources: { cpu: 10, memory: '8m' },
    update: { parallelism: 1, monitorMs: 300 },
  });

  beforeAll(async () => {
    cluster = await TestCluster.managers(1);
    client = cluster.client(undefined, 20_000);
    pidDir = cluster.mkdir('pids');
    cluster.startWorker('w1', ['--cpu', '4000', '--memory', '4g']);
    await eventually(async () => (await client.get<{ nodes: { status: string }[] }>('/v1/nodes')).nodes.some((n) => n.status === 'ready'), 20_000, 'worker ready');
    // Version 1, then version 2 (so there is a version to roll back to).
    await client.post('/v1/services', spec(600));
    await eventually(async () => (await svc()).ready === 2, 30_000, '2 ready');
    await client.put('/v1/services/web', JSON.stringify(spec(700)));
    await eventually(async () => {
      const s = await svc();
      return s.templateVersion === 2 && s.update.state === 'completed' && s.upToDate === 2 && s.ready === 2;
    }, 60_000, 'version 2 rolled out');
    const script = join(cluster.dir, 'board.sh');
    writeFileSync(script, `FLOTILLA_DIR="${cluster.dir}" "${process.execPath}" "${CLI}" --managers ${cluster.addrs().join(',')} board --interval 300\n`);
    tmux('-f', '/dev/null', 'new-session', '-d', '-x', '160', '-y', '45', '-s', SESSION, `sh '${script}'`);
    socketPath = tmux('display-message', '-p', '-t', SESSION, '#{socket_path}').trim();
  }, 150_000);

  afterAll(async () => {
    try {
      tmux('kill-server');
    } catch {}
    if (socketPath.includes(SOCK)) rmSync(socketPath, { force: true });
    if (pidDir) killTaskProcesses(pidDir);
    await cluster?.stop();
  });

  it('S shows the service: ready/desired, update state, batch i/n, version, and its tasks with health', async () => {
    await waitScreen((s) => /S services/.test(s), 'the key help naming S');
    keys('S');
    const s = await waitScreen(
      (s) => /web\s+2\/2\s+2\s+v2\s+completed\s+batch 2\/2/.test(s) && /web\.1\s+web\.1\.\S+\s+v2\s+running\s+-\s+w1/.test(s) && /web\.2\s+web\.2\.\S+\s+v2\s+running\s+-\s+w1/.test(s),
      'the service row and both tasks with health -',
    );
    expect(s).toMatch(/HEALTH/);
    expect(s).toMatch(/s scale \(asks for N\)\s+b roll back/);
  });

  it('s, then 3 and enter, scales the service to 3', async () => {
    keys('s');
    await waitScreen((s) => s.includes('Scale web to how many replicas (now 2)?'), 'the scale prompt');
    tmux('send-keys', '-t', SESSION, '-l', '3');
    keys('Enter');
    await eventually(async () => (await svc()).replicas === 3, 15_000, 'replicas 3');
    await waitScreen((s) => /web\s+3\/3\s+3\s+v2\s+completed\s+batch 2\/2\s/.test(s) && /web\.3\s+web\.3\.\S+\s+v2\s+running/.test(s), 'web 3/3 with slot 3 running', 40_000);
    // A bad number is refused in the status line and changes nothing.
    keys('s');
    await waitScreen((s) => s.includes('Scale web to how many replicas (now 3)?'), 'the scale prompt again');
    tmux('send-keys', '-t', SESSION, '-l', 'lots');
    keys('Enter');
    await waitScreen((s) => s.includes("not a number of replicas: 'lots'"), 'the refusal');
    expect((await svc()).replicas).toBe(3);
  });

  it('b, then y, rolls the service back to version 1', async () => {
    keys('b');
    await waitScreen((s) => s.includes('Roll back service web to version 1? [y/N]'), 'the rollback confirmation');
    keys('y');
    await eventually(async () => (await svc()).templateVersion === 1, 15_000, 'template version 1');
    await waitScreen((s) => /web\s+3\/3\s+3\s+v1\s+rolled_back\s/.test(s), 'web rolled back, 3/3 on v1', 90_000);
    // Esc closes the view: the tasks panel is back.
    keys('Escape');
    await waitScreen((s) => !/UP-TO-DATE/.test(s) && /tasks \d+/.test(s), 'the main board again');
  }, 120_000);

  it('a mesh-published service shows its endpoint (port, address:port, node, ready, state, health); the row goes when its replica is SIGKILLed', async () => {
    const [published, target] = await freePorts(2);
    await client.post('/v1/services', {
      name: 'www',
      driver: 'process',
      replicas: 1,
      containers: [{ command: [process.execPath, join(ROOT, 'test', 'fixtures', 'mesh-server.mjs')], env: { PORT: String(target), PID_DIR: pidDir } }],
      resources: { cpu: 10, memory: '64m' },
      publish: [`${published}:${target}`],
      // A replica that dies is replaced by a new task (a new endpoint), not restarted in place.
      restart: { policy: 'never' },
    });
    const first = await eventually(async () => {
      const s = await client.get<ServiceInspect>('/v1/services/www');
      return s.endpoints?.length === 1 && s.endpoints[0]!.ready ? s.endpoints[0]! : null;
    }, 30_000, 'the www endpoint ready');
    keys('S');
    await waitScreen((s) => /www\s+1\/1/.test(s), 'the www service row');
    keys('j');
    const row = new RegExp(`${published}\\s+127\\.0\\.0\\.1:${target}\\s+w1\\s+yes\\s+running\\s+-\\s+${first.taskId.replace(/\./g, '\\.')}`);
    const s = await waitScreen((s) => /endpoints of www \(routing mesh\)/.test(s) && row.test(s), `the endpoint row of ${first.taskId}`);
    expect(s).toMatch(/PORT\s+ENDPOINT\s+NODE\s+READY\s+STATE\s+HEALTH\s+TASK/);
    // The replica dies: its endpoint leaves the table (a replacement may come with a new task id).
    await killTaskByPidFile(pidDir, first.taskId);
    await waitScreen((s) => /tasks of www/.test(s) && !row.test(s), `the endpoint row of ${first.taskId} gone`);
    expect(((await client.get<ServiceInspect>('/v1/services/www')).endpoints ?? []).some((e) => e.taskId === first.taskId)).toBe(false);
    keys('Escape');
  }, 90_000);
});
