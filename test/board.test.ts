// `flotilla board`: the pure rendering functions against odd data, then the real board in a
// real tmux pane against a real cluster (3 manager processes, 1 worker with the process driver),
// then K and R against a cluster started by `flotilla up --driver process`.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, TestCluster, consecutiveFreePorts, eventually, sleep } from './helpers/cluster.js';
import { FlotillaClient } from '../src/client/client.js';
import { pidRunsNode, readProcesses, type ProcessesFile } from '../src/cli/up.js';
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
  nodeDetailSections,
  renderDetails,
  renderEvents,
  renderHeader,
  renderList,
  taskColumns,
  taskDetailSections,
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

/** Drives one tmux pane on a private server (-L sock): send keys, read the screen, wait for text. */
function tmuxPane(sock: string, session: string, o: { timeoutMs: number; unset?: string[]; context?: () => string }) {
  const env = (): NodeJS.ProcessEnv => {
    const e: NodeJS.ProcessEnv = { ...process.env, LANG: 'C.UTF-8' };
    for (const k of ['TMUX', ...(o.unset ?? [])]) delete e[k];
    return e;
  };
  const tmux = (...args: string[]): string => execFileSync('tmux', ['-L', sock, ...args], { encoding: 'utf8', env: env(), stdio: ['ignore', 'pipe', 'pipe'] });
  const screen = (): string => {
    try {
      return tmux('capture-pane', '-p', '-t', session);
    } catch {
      return '';
    }
  };
  const keys = (...k: string[]) => tmux('send-keys', '-t', session, ...k);
  const type = (text: string) => tmux('send-keys', '-t', session, '-l', text);
  async function waitScreen(pred: (s: string) => boolean, what: string, timeoutMs = o.timeoutMs): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    let s = '';
    while (Date.now() < deadline) {
      s = screen();
      if (pred(s)) return s;
      await sleep(100);
    }
    const extra = o.context ? `\n${o.context()}` : '';
    throw new Error(`timed out after ${timeoutMs} ms waiting for the board to show ${what}; the screen was:\n${s}${extra}`);
  }
  return { env, tmux, screen, keys, type, waitScreen };
}

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

  it('renders task and node details at exactly the given width, with odd data, in one or two columns', () => {
    const now = Date.now();
    const task = {
      id: 'web-1',
      name: 'web',
      state: 'running',
      desired: 'running',
      node: 'w1',
      attempt: 2,
      restarts: 1,
      spec: { name: 'web', containers: [{ name: 'c0', command: ['/bin/sh', '-c', 'echo {hi}; '.repeat(40)] }], resources: { cpu: 100 }, restart: { policy: 'always' } },
      history: [{ state: 'running', at: now, node: 'w1', attempt: 2, reason: 'running' }, null, 7],
    };
    const events = [{ at: now, text: 'task web-1 created', color: 'gray-fg' }];
    const variants = [
      taskDetailSections({ value: task, error: null, at: now }, events, { value: 'c0 | hello {bold}\n\tc0 | \u{1F600} tab\n', error: null, at: now }, now),
      taskDetailSections(null, [], null, now),
      taskDetailSections({ value: null, error: 'boom', at: now }, [], { value: null, error: 'no node', at: now }, now),
      ...ODD.map((raw) => taskDetailSections({ value: raw, error: null, at: now }, [], { value: '', error: null, at: now }, now)),
      nodeDetailSections('node', { id: 'w1', labels: { zone: 'a' } }, [{ text: 'pid 1', color: 'green-fg' }], normalizeTasks(ODD[7]), now),
      nodeDetailSections('manager', undefined, null, [], now),
    ];
    for (const secs of variants) {
      for (const g of [undefined, ASCII_GLYPHS]) {
        for (const w of [0, 1, 5, 40, 80, 109, 110, 158, 300]) {
          for (const h of [0, 1, 3, 20, 60]) {
            for (const scroll of [0, 3, 1e9]) {
              const { lines, maxScroll } = renderDetails(secs, w, h, scroll, g);
              expect(lines.length).toBeLessThanOrEqual(Math.max(0, h));
              expect(maxScroll).toBeGreaterThanOrEqual(0);
              for (const l of lines) {
                expect(plain(l).length, `width ${w}: ${JSON.stringify(l)}`).toBe(w);
                expect(plain(l)).toMatch(/^[\x20-\x7e\xa0-\xff│…]*$/);
              }
            }
          }
        }
      }
    }
    // Wide: spec on the left, events and the logs tail on the right; everything is there.
    const wide = renderDetails(variants[0]!, 158, 60, 0).lines.map(plain).join('\n');
    for (const want of ['TASK', 'SPEC', 'HISTORY', 'EVENTS', 'LOGS', 'state    running (desired running)', 'attempt  2 (restarts 1)', 'policy: always', 'task web-1 created', 'c0 | hello {bold}']) {
      expect(wide).toContain(want);
    }
    // Narrow and short: one column that scrolls down to the logs.
    const narrow = renderDetails(variants[0]!, 60, 10, 0);
    expect(narrow.maxScroll).toBeGreaterThan(0);
    expect(narrow.lines.map(plain).join('\n')).not.toContain('c0 | hello');
    expect(renderDetails(variants[0]!, 60, 10, narrow.maxScroll).lines.map(plain).join('\n')).toContain('c0 | hello');
    expect(renderDetails(variants[2]!, 158, 20, 0).lines.map(plain).join('\n')).toMatch(/cannot read the task: boom[\s\S]*cannot read the logs: no node/);
  });
});

describe('flotilla up process records', () => {
  it('pidRunsNode accepts the recorded process and refuses any other pid or node id', async () => {
    const argv = [process.execPath, '-e', 'setTimeout(() => {}, 60000)', '--', 'worker', '--id', 'w9', '--state-dir', '/tmp/x y'];
    const p = spawn(argv[0]!, argv.slice(1), { stdio: 'ignore' });
    try {
      await eventually(() => p.pid !== undefined && pidRunsNode(p.pid, { argv, node: 'w9' }), 5000, 'the process to show its command line');
      expect(pidRunsNode(p.pid!, { argv, node: 'w8' })).toBe(false);
      expect(pidRunsNode(p.pid!, { argv: [...argv.slice(0, -1), '/tmp/other'], node: 'w9' })).toBe(false);
      // This test process, pid 1 and a pid that does not exist are not node w9.
      expect(pidRunsNode(process.pid, { argv, node: 'w9' })).toBe(false);
      expect(pidRunsNode(1, { argv, node: 'w9' })).toBe(false);
      expect(pidRunsNode(2 ** 22 + 12345, { argv, node: 'w9' })).toBe(false);
    } finally {
      const gone = new Promise((r) => p.once('exit', r));
      p.kill('SIGKILL');
      await gone;
    }
    expect(pidRunsNode(p.pid!, { argv, node: 'w9' })).toBe(false);
  });

  it('readProcesses: none, a valid file, and a file that is not one', () => {
    const dir = mkdtempSync(join(tmpdir(), 'flotilla-procs-'));
    try {
      expect(readProcesses(dir)).toBeNull();
      const f: ProcessesFile = { version: 1, dir, up: { pid: 1, control: '127.0.0.1:1', token: 't' }, managers: ['127.0.0.1:7001'], processes: [] };
      writeFileSync(join(dir, 'processes.json'), JSON.stringify(f));
      expect(readProcesses(dir)).toEqual(f);
      writeFileSync(join(dir, 'processes.json'), JSON.stringify({ managers: 'x' }));
      expect(() => readProcesses(dir)).toThrow(/not a processes file/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
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

  const { env, tmux, screen, keys, type, waitScreen } = tmuxPane(SOCK, SESSION, { timeoutMs: 10_000 });
  /** A row of the tasks table: name, id and state in adjacent columns. */
  const taskRow = (name: string, id: string, state: string) => new RegExp(`${name}\\s+${id}\\s+${state}\\s`);

  function sleeper(name: string, say = '') {
    return { name, driver: 'process', containers: [{ command: ['/bin/sh', '-c', `${say ? `echo ${say}; ` : ''}exec sleep 600`] }], resources: { cpu: 10, memory: '8m' } };
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
    db = await client.post('/v1/tasks', sleeper('db', 'db-ready-on-5432'));
    await eventually(async () => (await taskState(web.id)).state === 'running' && (await taskState(db.id)).state === 'running', 20_000, 'tasks running');

    statusFile = join(cluster.dir, 'board-status');
    const script = join(cluster.dir, 'board.sh');
    // FLOTILLA_DIR names a directory without processes.json: this cluster was not started by `flotilla up`.
    writeFileSync(script, `FLOTILLA_DIR="${cluster.dir}" "${process.execPath}" "${CLI}" --managers ${cluster.addrs().join(',')} board --interval 300\necho $? > "${statusFile}"\n`);
    tmux('-f', '/dev/null', 'new-session', '-d', '-x', '160', '-y', '45', '-s', SESSION, `sh '${script}'`);
    socketPath = tmux('display-message', '-p', '-t', SESSION, '#{socket_path}').trim();
  }, 90_000);

  afterAll(async () => {
    try {
      tmux('kill-server');
    } catch {}
    // The server has exited (kill-server, or its last session ended); drop its socket file.
    if (socketPath.includes(SOCK)) rmSync(socketPath, { force: true });
    // Process-driver tasks outlive their worker by design: stop them before the cluster goes.
    try {
      for (const t of [web, db]) if (t) await client.delete(`/v1/tasks/${t.id}`).catch(() => {});
      await eventually(async () => {
        for (const t of [web, db]) if (t && (await taskState(t.id)).state !== 'stopped') return false;
        return true;
      }, 15_000, 'the tasks to stop');
    } catch {}
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
      // The key help in the footer.
      (s: string) => /enter details .*K\/R kill\/restart node .*\? help\s*$/.test(s),
    ];
    await waitScreen((s) => checks.every((c) => c(s)), 'the leader, the worker, both tasks running and the key help');
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

  it('enter on a task shows its spec, state, events and logs tail; esc, enter and q close it', async () => {
    keys('/');
    type(db.id);
    keys('Enter');
    await waitScreen((s) => s.includes('tasks 1/2 matching') && taskRow('db', db.id, 'running').test(s), 'only the db task');
    const open = async () => {
      keys('Enter');
      return waitScreen(
        (s) =>
          s.includes(`task ${db.id} (db)`) &&
          /state\s+running \(desired running\)/.test(s) &&
          s.includes('- echo db-ready-on-5432; exec sleep 600') &&
          s.includes(`task ${db.id} created`) &&
          s.includes('c0 | db-ready-on-5432'),
        'the details of the db task with its spec, events and logs',
      );
    };
    const closed = (s: string) => !s.includes(`task ${db.id} (db)`) && taskRow('db', db.id, 'running').test(s) && s.includes('events');
    const s = await open();
    expect(s).toMatch(/node\s+w1/);
    expect(s).toMatch(/attempt\s+1 \(restarts 0\)/);
    expect(s).toMatch(/cpu: 10\b/);
    keys('Escape');
    await waitScreen(closed, 'the board again after esc');
    await open();
    keys('Enter');
    await waitScreen(closed, 'the board again after enter');
    await open();
    keys('q');
    await waitScreen(closed, 'the board again after q (q closes the details, not the board)');
    expect(existsSync(statusFile)).toBe(false);
    keys('Escape');
    await waitScreen((s) => taskRow('web', web.id, 'running').test(s), 'both tasks again');
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
    keys('Tab'); // managers
    keys('Tab'); // nodes
    keys('p');
    await eventually(async () => (await availability()) === 'pause', 10_000, 'w1 paused');
    await waitScreen((s) => /w1\s+ready\s+pause\s/.test(s), 'w1 shown as paused');
    keys('a');
    await eventually(async () => (await availability()) === 'active', 10_000, 'w1 active again');
    await waitScreen((s) => /w1\s+ready\s+active\s/.test(s), 'w1 shown as active');
    // Back to the tasks panel (tasks -> managers -> nodes -> events -> tasks).
    keys('Tab');
    keys('Tab');
  });

  it('enter on a manager shows its fields; K and R say they need a cluster started by flotilla up', async () => {
    keys('BTab'); // events
    keys('BTab'); // nodes
    keys('BTab'); // managers
    keys('Home');
    keys('Enter');
    const s = await waitScreen((s) => /manager m\d/.test(s) && s.includes('"role": "') && s.includes('"commitIndex": '), 'the details of a manager');
    expect(s).toContain('K/R are only available for clusters started by `flotilla up`');
    keys('Escape');
    await waitScreen((s) => !s.includes('"commitIndex": ') && taskRow('db', db.id, 'running').test(s), 'the board again');
    keys('K');
    await waitScreen((s) => /^K \(kill\) is only available for clusters started by `flotilla up` \(no .*processes\.json/m.test(s), 'K refused in the status line');
    keys('R');
    await waitScreen((s) => /^R \(restart\) is only available for clusters started by `flotilla up` \(no .*processes\.json/m.test(s), 'R refused in the status line');
    // No confirmation is pending: y does nothing, and every manager still runs.
    keys('y');
    for (const m of cluster.managers.values()) expect(m.proc?.exitCode ?? null).toBeNull();
    keys('Tab'); // nodes
    keys('Tab'); // events
    keys('Tab'); // tasks
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

describe.skipIf(!HAS_TMUX)('K and R on a cluster started by flotilla up (tmux)', () => {
  const SOCK = `flotilla-test-up-${process.pid}`;
  const SESSION = 'board';
  let dir: string;
  let upDir: string;
  let up: ChildProcess | null = null;
  let upOut = '';
  let upExit: Promise<number | null>;
  let client: FlotillaClient;
  let statusFile: string;
  let socketPath = '';
  /** Every pid `flotilla up` recorded for a node, over the whole test. */
  const seen = new Map<number, { argv: string[]; node: string }>();

  const { env, tmux, screen, keys, waitScreen } = tmuxPane(SOCK, SESSION, { timeoutMs: 15_000, unset: ['FLOTILLA_MANAGERS'], context: () => `flotilla up said:\n${upOut.slice(-3000)}` });
  const procs = (): ProcessesFile => {
    const f = readProcesses(upDir);
    if (!f) throw new Error(`no processes.json in ${upDir}`);
    for (const p of f.processes) if (p.pid !== null) seen.set(p.pid, { argv: p.argv, node: p.node });
    return f;
  };
  const rec = (node: string) => procs().processes.find((p) => p.node === node)!;
  const alive = (pid: number): boolean => {
    try {
      process.kill(pid, 0);
      return true;
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === 'EPERM';
    }
  };
  /** A manager row of the board: id (with the leader mark), role, and the health column. */
  const mgrRow = (id: string, role: string, health: 'ok' | 'DOWN') => new RegExp(`[ *]${id}\\s+${role}\\s.*\\s${health}\\s`);
  async function leaderId(): Promise<string> {
    return eventually(async () => (await client.get<{ leader: string | null }>('/v1/status')).leader, 20_000, 'a leader');
  }
  /** Selects a manager in the managers panel (tab order: tasks, managers, nodes, events). */
  async function selectManager(id: string): Promise<void> {
    const order = (await client.get<{ managers: { id: string }[] }>('/v1/cluster')).managers.map((m) => m.id);
    const i = order.indexOf(id);
    expect(i).toBeGreaterThanOrEqual(0);
    keys('Home');
    for (let k = 0; k < i; k++) keys('Down');
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'flotilla-board-up-'));
    upDir = join(dir, '.flotilla');
    const port = await consecutiveFreePorts(3);
    up = spawn(process.execPath, [CLI, 'up', '--driver', 'process', '--workers', '1', '--port', String(port), '--dir', upDir], {
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: env(),
    });
    upExit = new Promise((r) => up!.once('exit', (code) => r(code)));
    up.stdout!.on('data', (d) => (upOut += d));
    up.stderr!.on('data', (d) => (upOut += d));
    await eventually(() => upOut.includes('flotilla is up'), 60_000, 'flotilla up to start the cluster');
    const token = readFileSync(join(upDir, 'admin-token'), 'utf8').trim();
    client = new FlotillaClient([0, 1, 2].map((i) => `127.0.0.1:${port + i}`), { timeoutMs: 20_000, token, ca: readFileSync(join(upDir, 'ca.crt'), 'utf8') });
    expect(procs().processes.map((p) => `${p.node}:${p.kind}`)).toEqual(['m1:manager', 'm2:manager', 'm3:manager', 'w1:worker']);
    for (const p of procs().processes) expect(pidRunsNode(p.pid!, p), `${p.node} pid ${p.pid}`).toBe(true);

    // The board finds the cluster, its token and processes.json through FLOTILLA_DIR alone.
    statusFile = join(dir, 'board-status');
    const script = join(dir, 'board.sh');
    writeFileSync(script, `cd "${dir}" && FLOTILLA_DIR="${upDir}" "${process.execPath}" "${CLI}" board --interval 300\necho $? > "${statusFile}"\n`);
    tmux('-f', '/dev/null', 'new-session', '-d', '-x', '160', '-y', '45', '-s', SESSION, `sh '${script}'`);
    socketPath = tmux('display-message', '-p', '-t', SESSION, '#{socket_path}').trim();
  }, 120_000);

  afterAll(async () => {
    try {
      tmux('kill-server');
    } catch {}
    if (socketPath.includes(SOCK)) rmSync(socketPath, { force: true });
    if (up && up.exitCode === null && up.signalCode === null) {
      up.kill('SIGINT');
      await Promise.race([upExit, sleep(15_000)]);
    }
    // Whatever a failed test left behind: only processes that still run a recorded node.
    for (const [pid, r] of seen) if (pidRunsNode(pid, r)) process.kill(pid, 'SIGKILL');
    if (!process.env.KEEP_TEST_DIRS) rmSync(dir, { recursive: true, force: true });
  }, 30_000);

  it('shows the cluster of flotilla up, with the up process in a manager details pane', async () => {
    const leader = await leaderId();
    await waitScreen((s) => s.includes(`leader ${leader}`) && mgrRow(leader, 'leader', 'ok').test(s) && /w1\s+ready\s+active\s/.test(s), `leader ${leader} and w1 ready`);
    keys('Tab'); // managers
    await selectManager(leader);
    keys('Enter');
    const r = rec(leader);
    // The pane is drawn in pieces: wait for its last line too, not only the pid.
    const s = await waitScreen((s) => s.includes(`manager ${leader}`) && s.includes(`pid      ${r.pid} (running)`) && s.includes('up       pid '), `the details of ${leader} with its pid and flotilla up's`);
    expect(s).toContain('PROCESS (FLOTILLA UP)');
    expect(s).toContain(`up       pid ${up!.pid}, control 127.0.0.1:`);
    keys('Escape');
    await waitScreen((s) => !s.includes(`pid      ${r.pid}`) && mgrRow(leader, 'leader', 'ok').test(s), 'the board again');
  });

  it('K kills the leader process (SIGKILL, after confirming): the board shows it down and a new leader', async () => {
    const old = await leaderId();
    const before = rec(old);
    const pid = before.pid!;
    await selectManager(old);
    keys('K');
    await waitScreen((s) => s.includes(`Kill manager ${old} (SIGKILL to pid ${pid})? [y/N]`), 'the kill confirmation with the recorded pid');
    expect(alive(pid)).toBe(true);
    keys('y');
    await eventually(() => !alive(pid), 10_000, `pid ${pid} to be gone`);
    await eventually(() => rec(old).pid === null && rec(old).exit?.signal === 'SIGKILL', 10_000, 'flotilla up to record the exit');
    const s = await waitScreen(
      (s) => {
        const m = /leader (m\d)\s/.exec(s.split('\n')[0] ?? '');
        return !!m && m[1] !== old && mgrRow(m[1]!, 'leader', 'ok').test(s) && mgrRow(old, 'down', 'DOWN').test(s);
      },
      `a new leader and ${old} down`,
      20_000,
    );
    expect(s).toContain(`board: killed ${old} (SIGKILL to pid ${pid})`);
    expect(upOut).toMatch(new RegExp(`${old}\\s*\\S*\\s*│ exited \\(SIGKILL\\)`));
  });

  it('R restarts the killed manager through flotilla up: the board shows it up again', async () => {
    const killed = procs().processes.find((p) => p.kind === 'manager' && p.pid === null)!;
    expect(killed).toBeDefined();
    // The selection stays on the killed manager.
    keys('R');
    const pid = await eventually(() => rec(killed.node).pid, 20_000, `flotilla up to start ${killed.node} again`);
    expect(rec(killed.node).starts).toBe(2);
    expect(pidRunsNode(pid, rec(killed.node))).toBe(true);
    await waitScreen((s) => mgrRow(killed.node, 'follower', 'ok').test(s) && s.includes(`board: restarted ${killed.node} through flotilla up (pid ${pid})`), `${killed.node} back as a follower`, 30_000);
    expect(upOut).toContain(`started again (pid ${pid})`);
  });

  it('R on a running worker asks first, then flotilla up stops and starts it', async () => {
    const before = rec('w1');
    keys('Tab'); // nodes
    keys('Home');
    keys('R');
    await waitScreen((s) => s.includes(`Restart worker w1 (stop pid ${before.pid}, then start it again)? [y/N]`), 'the restart confirmation');
    keys('y');
    const pid = await eventually(() => rec('w1').pid !== before.pid && rec('w1').pid, 20_000, 'a new w1 process');
    expect(alive(before.pid!)).toBe(false);
    expect(rec('w1').starts).toBe(2);
    await waitScreen((s) => s.includes(`board: restarted w1 through flotilla up (pid ${pid})`) && /w1\s+ready\s+active\s/.test(s), 'w1 restarted and ready');
    await eventually(async () => (await client.get<{ nodes: { id: string; status: string }[] }>('/v1/nodes')).nodes.find((n) => n.id === 'w1')?.status === 'ready', 20_000, 'w1 ready');
  });

  it('q quits the board; Ctrl-C on flotilla up then stops every process, the restarted ones included', async () => {
    const last = procs();
    keys('q');
    const status = await eventually(() => existsSync(statusFile) && readFileSync(statusFile, 'utf8').trim(), 10_000, 'the board to exit');
    expect(status).toBe('0');
    // Two starts each for one manager and w1: six node processes over the test, four running.
    expect(seen.size).toBe(6);
    expect(last.processes.filter((p) => p.pid !== null && alive(p.pid))).toHaveLength(4);
    up!.kill('SIGINT');
    expect(await upExit).toBe(0);
    expect(upOut).toContain('stopped.');
    for (const [pid, r] of seen) {
      expect(alive(pid), `${r.node} pid ${pid}`).toBe(false);
    }
    expect(existsSync(join(upDir, 'processes.json'))).toBe(false);
  });
});

describe.skipIf(!HAS_TMUX)('flotilla board and its terminal', () => {
  it('exits when its terminal goes away (tmux server killed) instead of spinning on a dead tty', async () => {
    const sock = `flotilla-hup-${process.pid}`;
    const tm = (...args: string[]) => execFileSync('tmux', ['-L', sock, ...args], { encoding: 'utf8' });
    tm('new-session', '-d', '-x', '100', '-y', '30', `exec "${process.execPath}" "${CLI}" --managers 127.0.0.1:1 board --interval 300`);
    const pid = Number(tm('list-panes', '-F', '#{pane_pid}').trim());
    expect(pid).toBeGreaterThan(1);
    await eventually(() => readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('board'), 10_000, 'the board running');
    await sleep(1000);
    tm('kill-server');
    await eventually(() => !existsSync(`/proc/${pid}`) || /^\d+ \([^)]*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8')), 10_000, 'the board to exit after its terminal closed');
  }, 30_000);
});
