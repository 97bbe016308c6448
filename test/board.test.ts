// `flotilla board`: the pure rendering functions against odd data, then the real board in a
// real tmux pane against a real cluster (3 manager processes, 1 worker with the process driver).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, TestCluster, eventually, sleep } from './helpers/cluster.js';
import type { FlotillaClient } from '../src/client/client.js';
import {
  ASCII_GLYPHS,
  describeEvent,
  fitColumns,
  hasLeader,
  managerColumns,
  nodeColumns,
  normalizeCluster,
  normalizeNodes,
  normalizeTasks,
  renderEvents,
  renderHeader,
  renderList,
  taskColumns,
  taskMatches,
  type HeaderInput,
} from '../src/cli/board.js';

/** What a tagged blessed line shows. */
function plain(line: string): string {
  return line
    .replace(/\{open\}/g, '\u0001')
    .replace(/\{close\}/g, '\u0002')
    .replace(/\{[^{}]*\}/g, '')
    .replace(/\u0001/g, '{')
    .replace(/\u0002/g, '}');
}

const ODD: unknown[] = [
  null,
  undefined,
  42,
  'nope',
  [],
  { managers: 'x', nodes: {}, tasks: 7 },
  { managers: [null, 3, 'm', { id: {} }, { id: 'm1', role: 'leader\x1b[31m', term: 'x', lag: Infinity, healthy: 'yes' }] },
  {
    leader: 'm1',
    term: 5,
    nodes: [null, { id: 'w{1}', usage: { cpu: -5, memory: 1e30 }, resources: { cpu: 0, memory: -1 } }, { id: 'w2', usage: null, resources: 'big' }],
    tasks: [
      null,
      { id: 'a'.repeat(2000), name: '\u{1F600}emoji\u200b', state: 'running', reason: 'line1\nline2\tand {bold}tags{/bold}', createdAt: 'yesterday', restarts: NaN },
      { id: 't2', name: 'x', state: 'weird', node: 12, createdAt: Date.now() + 1e9 },
    ],
  },
];

describe('board rendering (no terminal)', () => {
  it('normalizes odd data without throwing, and shows only printable single-width text', () => {
    for (const raw of ODD) {
      const c = normalizeCluster(raw);
      const n = normalizeNodes(raw);
      const t = normalizeTasks(raw);
      for (const s of [...c.managers.flatMap((m) => [m.id, m.role]), ...n.map((x) => x.id), ...t.flatMap((x) => [x.id, x.name, x.reason])]) {
        expect(s).toMatch(/^[\x20-\x7e\xa0-\xff]*$/);
      }
    }
    const t = normalizeTasks(ODD[7]);
    expect(t.map((x) => x.state).sort()).toEqual(['?', 'running', 'weird']);
    expect(normalizeCluster(ODD[6]).managers.find((m) => m.id === 'm1')).toMatchObject({ term: null, lag: null, healthy: false });
  });

  it('renders every panel at exactly the given width, from 0 to 400 columns, with odd data', () => {
    const now = Date.now();
    for (const raw of ODD) {
      const c = normalizeCluster(raw);
      const nodes = normalizeNodes(raw);
      const tasks = normalizeTasks(raw);
      for (const g of [undefined, ASCII_GLYPHS]) {
        for (const w of [0, 1, 3, 7, 20, 36, 38, 78, 158, 400]) {
          for (const h of [0, 1, 2, 5, 30]) {
            const lists = [
              renderList(managerColumns(c.leader, g), c.managers, w, h, -1, 0, false, g),
              renderList(nodeColumns(g), nodes, w, h, 0, 0, true, g),
              renderList(taskColumns(now), tasks, w, h, 1, 5, false, g),
            ];
            for (const { lines } of lists) {
              expect(lines.length).toBeLessThanOrEqual(Math.max(0, h));
              for (const l of lines) expect(plain(l).length, `width ${w}: ${JSON.stringify(l)}`).toBe(w);
            }
            const ev = renderEvents([{ at: NaN, text: 'x{y}\n\u{1F600}'.repeat(50), color: 'bogus color}' }], w, h, 0, g);
            for (const l of ev) expect(plain(l).length).toBe(w);
          }
          const input: HeaderInput = { now, cluster: raw === null ? null : c, clusterAt: now, via: '127.0.0.1:1', reconnecting: false, problem: null, eventsFrom: null, nodes, tasks, staleSince: null };
          const [h1, h2] = renderHeader(input, w, g);
          expect(plain(h1).length).toBeLessThanOrEqual(Math.max(w, 0));
          expect(plain(h2).length).toBeLessThanOrEqual(Math.max(w, 0));
        }
      }
    }
  });

  it('drops the least important columns first when narrow', () => {
    const tasks = normalizeTasks({ tasks: [{ id: 'web-1234abcd', name: 'web', state: 'running', node: 'w1', reason: 'running', restarts: 0, createdAt: 0 }] });
    const narrow = fitColumns(taskColumns(Date.now()), tasks, 30).map((f) => f.col.title);
    expect(narrow).toContain('NAME');
    expect(narrow).toContain('STATE');
    expect(narrow).not.toContain('REASON');
    const wide = fitColumns(taskColumns(Date.now()), tasks, 150);
    expect(wide.map((f) => f.col.title)).toEqual(['NAME', 'ID', 'STATE', 'NODE', 'RESTARTS', 'AGE', 'REASON']);
    expect(wide.reduce((s, f) => s + f.w, 0) + wide.length - 1).toBe(150);
  });

  it('describes every event type, and ignores hello frames', () => {
    const task = { id: 'web-1', name: 'web', state: 'running', node: 'w1', reason: 'running', attempt: 1 };
    expect(describeEvent({ kind: 'hello', lastSeq: 3 })).toBeNull();
    expect(describeEvent({ kind: 'reset', lastSeq: 3, oldestSeq: 2 })?.text).toMatch(/reset/);
    expect(describeEvent({ seq: 1, type: 'cluster.leader', leader: 'm2', term: 4, at: 0 })?.text).toBe('leader elected: m2 (term 4)');
    expect(describeEvent({ seq: 2, type: 'task.updated', change: 'state', prevState: 'assigned', task, at: 0 })?.text).toBe('task web-1 assigned -> running on w1 (running)');
    expect(describeEvent({ seq: 3, type: 'task.updated', change: 'desired', task: { ...task, reason: 'stopped by user' }, at: 0 })?.text).toMatch(/stop requested: stopped by user/);
    expect(describeEvent({ seq: 4, type: 'node.updated', change: 'status', prevStatus: 'ready', node: { id: 'w1', status: 'down', statusReason: 'no heartbeat' }, at: 0 })?.text).toBe('node w1 ready -> down (no heartbeat)');
    expect(describeEvent({ seq: 5, type: 'node.updated', change: 'availability', node: { id: 'w1', availability: 'drain' }, at: 0 })?.text).toBe('node w1 availability -> drain');
    for (const odd of [...ODD, { type: 'mystery' }, { type: 'task.updated', task: 'nope' }, { type: 'node.updated', node: [1] }]) {
      expect(() => describeEvent(odd)).not.toThrow();
    }
  });

  it('knows when there is no leader, and filters tasks by words', () => {
    expect(hasLeader(null)).toBe(false);
    expect(hasLeader(normalizeCluster({ leader: null, managers: [{ id: 'm1', role: 'follower' }] }))).toBe(false);
    // A manager still naming a leader that no longer acts as one.
    expect(hasLeader(normalizeCluster({ leader: 'm1', managers: [{ id: 'm1', role: 'unreachable' }] }))).toBe(false);
    expect(hasLeader(normalizeCluster({ leader: 'm1', managers: [{ id: 'm1', role: 'leader' }] }))).toBe(true);
    const now = Date.now();
    const c = normalizeCluster({ leader: null, term: 3, managers: [{ id: 'm1', role: 'candidate' }] });
    const [h1, h2] = renderHeader({ now, cluster: c, clusterAt: now, via: 'x:1', reconnecting: false, problem: null, eventsFrom: null, nodes: [], tasks: [], staleSince: now - 5000 }, 120);
    expect(plain(h1)).toContain('no leader');
    expect(plain(h2)).toMatch(/NO LEADER.*stale/);
    const [t] = normalizeTasks({ tasks: [{ id: 'web-1', name: 'web', state: 'running', node: 'w1' }] });
    expect(taskMatches(t!, '')).toBe(true);
    expect(taskMatches(t!, 'WEB run')).toBe(true);
    expect(taskMatches(t!, 'web db')).toBe(false);
  });
});

// ---- the real board in tmux

const HAS_TMUX = spawnSync('tmux', ['-V'], { stdio: 'ignore' }).status === 0;
const IN_CI = process.env.CI === 'true';
if (!HAS_TMUX && !IN_CI) console.log('board.test.ts: skipping the tmux tests: tmux is not installed (apt-get install -y tmux)');

it.runIf(!HAS_TMUX && IN_CI)('tmux is installed (required under CI)', () => {
  throw new Error('tmux is not installed, and CI=true: install it (apt-get install -y tmux) to run the board tests');
});

describe.skipIf(!HAS_TMUX)('flotilla board in tmux', () => {
  const SOCK = `flotilla-test-${process.pid}`;
  const SESSION = 'board';
  let cluster: TestCluster;
  let client: FlotillaClient;
  let statusFile: string;
  let socketPath = '';
  let web: { id: string };
  let db: { id: string };

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
  const type = (text: string) => tmux('send-keys', '-t', SESSION, '-l', text);
  async function waitScreen(pred: (s: string) => boolean, what: string, timeoutMs = 10_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    let s = '';
    while (Date.now() < deadline) {
      s = screen();
      if (pred(s)) return s;
      await sleep(100);
    }
    throw new Error(`timed out after ${timeoutMs} ms waiting for the board to show ${what}; the screen was:\n${s}`);
  }
  /** A row of the tasks table: name, id and state in adjacent columns. */
  const taskRow = (name: string, id: string, state: string) => new RegExp(`${name}\\s+${id}\\s+${state}\\s`);

  function sleeper(name: string) {
    return { name, driver: 'process', containers: [{ command: ['/bin/sh', '-c', 'exec sleep 600'] }], resources: { cpu: 10, memory: '8m' } };
  }
  async function taskState(id: string): Promise<{ state: string; desired: string }> {
    return client.get(`/v1/tasks/${id}`);
  }

  beforeAll(async () => {
    cluster = await TestCluster.managers(3, ['--node-grace', '1500', '--worker-heartbeat', '300', '--failover-grace', '4000']);
    client = cluster.client(undefined, 20_000);
    cluster.startWorker('w1', ['--cpu', '2000', '--memory', '2g']);
    await eventually(async () => (await client.get<{ nodes: { status: string }[] }>('/v1/nodes')).nodes.some((n) => n.status === 'ready'), 20_000, 'worker w1 ready');
    web = await client.post('/v1/tasks', sleeper('web'));
    db = await client.post('/v1/tasks', sleeper('db'));
    await eventually(async () => (await taskState(web.id)).state === 'running' && (await taskState(db.id)).state === 'running', 20_000, 'tasks running');

    statusFile = join(cluster.dir, 'board-status');
    const script = join(cluster.dir, 'board.sh');
    writeFileSync(script, `"${process.execPath}" "${CLI}" --managers ${cluster.addrs().join(',')} board --interval 300\necho $? > "${statusFile}"\n`);
    tmux('-f', '/dev/null', 'new-session', '-d', '-x', '160', '-y', '45', '-s', SESSION, `sh '${script}'`);
    socketPath = tmux('display-message', '-p', '-t', SESSION, '#{socket_path}').trim();
  }, 90_000);

  afterAll(async () => {
    try {
      tmux('kill-server');
    } catch {}
    // The server has exited (kill-server, or its last session ended); drop its socket file.
    if (socketPath.includes(SOCK)) rmSync(socketPath, { force: true });
    await cluster?.stop();
  });

  it('shows the managers with the leader, the worker, and a task submitted through the API as running', async () => {
    const leader = await cluster.waitForLeader();
    // Panels fill in as their own requests complete: wait for all of them.
    const checks = [
      (s: string) => s.includes(`leader ${leader}`),
      (s: string) => new RegExp(`\\*${leader}\\s+leader\\s`).test(s),
      (s: string) => /w1\s+ready\s+active\s/.test(s),
      (s: string) => taskRow('web', web.id, 'running').test(s),
      (s: string) => taskRow('db', db.id, 'running').test(s),
    ];
    await waitScreen((s) => checks.every((c) => c(s)), 'the leader, the worker and both tasks running');
    // The events pane has the task's history from the stream.
    await waitScreen((s) => s.includes(`task ${web.id} created`), 'the task created event');
  });

  it('/ filters the task list', async () => {
    keys('/');
    type('db');
    keys('Enter');
    const s = await waitScreen((s) => s.includes('tasks 1/2 matching "db"'), 'the filtered task count');
    expect(s).toMatch(taskRow('db', db.id, 'running'));
    expect(s).not.toMatch(taskRow('web', web.id, '\\w+'));
    keys('Escape');
    await waitScreen((s) => taskRow('web', web.id, 'running').test(s) && taskRow('db', db.id, 'running').test(s), 'both tasks again after clearing the filter');
  });

  it('s then y stops the selected task', async () => {
    keys('/');
    type(web.id);
    keys('Enter');
    await waitScreen((s) => s.includes('tasks 1/2 matching') && taskRow('web', web.id, 'running').test(s), 'only the web task');
    keys('s');
    await waitScreen((s) => s.includes(`Stop task ${web.id}? [y/N]`), 'the stop confirmation');
    keys('y');
    await eventually(async () => {
      const t = await taskState(web.id);
      return t.desired === 'shutdown' && t.state === 'stopped';
    }, 20_000, 'the web task stopped');
    keys('Escape');
    // Stopped tasks leave the default task list; db keeps running.
    await waitScreen((s) => !taskRow('web', web.id, 'running').test(s) && taskRow('db', db.id, 'running').test(s), 'web no longer running, db still running');
    expect((await taskState(db.id)).state).toBe('running');
  });

  it('tab to the nodes panel, then p / a pause and activate the selected node', async () => {
    const availability = async () => (await client.get<{ nodes: { id: string; availability: string }[] }>('/v1/nodes')).nodes.find((n) => n.id === 'w1')?.availability;
    keys('Tab');
    keys('p');
    await eventually(async () => (await availability()) === 'pause', 10_000, 'w1 paused');
    await waitScreen((s) => /w1\s+ready\s+pause\s/.test(s), 'w1 shown as paused');
    keys('a');
    await eventually(async () => (await availability()) === 'active', 10_000, 'w1 active again');
    await waitScreen((s) => /w1\s+ready\s+active\s/.test(s), 'w1 shown as active');
    // Back to the tasks panel (tasks -> nodes -> events -> tasks).
    keys('Tab');
    keys('Tab');
  });

  it('fits an 80x24 terminal', async () => {
    tmux('resize-window', '-t', SESSION, '-x', '80', '-y', '24');
    try {
      // Wait for the board's own redraw (tmux first reflows the old 160-column screen).
      const fits = (s: string) => {
        const lines = s.replace(/\n+$/, '').split('\n');
        return (
          lines.length <= 24 &&
          /^flotilla\s+leader m\d\s+term \d+.*\d\d:\d\d:\d\d$/.test(lines[0] ?? '') &&
          /^┌─ managers ─+┐┌─ nodes 1 ─+┐$/.test(lines[2] ?? '') &&
          /^└─+┘$/.test(lines[lines.length - 2] ?? '') &&
          taskRow('db', db.id, 'running').test(s) &&
          s.includes('events')
        );
      };
      const s = await waitScreen(fits, 'the board redrawn at 80x24');
      for (const l of s.split('\n')) expect(l.length).toBeLessThanOrEqual(80);
    } finally {
      tmux('resize-window', '-t', SESSION, '-x', '160', '-y', '45');
    }
  });

  it('shows the new leader within a few seconds after the leader is killed', async () => {
    const old = await cluster.waitForLeader();
    await waitScreen((s) => s.includes(`leader ${old}`), `leader ${old}`);
    await cluster.killAndWait(old);
    const next = await cluster.waitForLeader(20_000, [old]);
    await waitScreen(
      (s) => s.includes(`leader ${next}`) && new RegExp(`\\*${next}\\s+leader\\s`).test(s) && new RegExp(`\\s${old}\\s+down\\s`).test(s),
      `the new leader ${next}, and ${old} down`,
      10_000,
    );
    await waitScreen((s) => s.includes(`leader elected: ${next}`), 'the election in the events pane', 10_000);
  });

  it('q quits with status 0 and ends the pane', async () => {
    keys('q');
    const status = await eventually(() => existsSync(statusFile) && readFileSync(statusFile, 'utf8').trim(), 10_000, 'the board to exit');
    expect(status).toBe('0');
    await eventually(() => spawnSync('tmux', ['-L', SOCK, 'has-session', '-t', SESSION], { env: env(), stdio: 'ignore' }).status !== 0, 5000, 'the tmux session to end');
  });
});
