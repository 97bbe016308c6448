// How processes end: node processes on SIGINT/SIGTERM whatever their output is (a client's
// open event stream, a closed pipe), `flotilla up` under `| tee` after tee died (no node outlives
// it) and reporting which node failed to start, CLI commands whose reader went away.
import { afterAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, consecutiveFreePorts, eventually, freePorts, sleep, TestCluster } from './helpers/cluster.js';

const dirs: string[] = [];
const procs: ChildProcess[] = [];
/** Node pids `flotilla up` started (killed at the end if a failing test left them running). */
const upPids: number[] = [];
afterAll(() => {
  for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  for (const pid of upPids) if (alivePid(pid)) process.kill(pid, 'SIGKILL');
  if (!process.env.KEEP_TEST_DIRS) for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'flotilla-signals-'));
  dirs.push(d);
  return d;
}

/** Resolves with the exit (code, signal) or 'running' after `ms`. The listener is attached now. */
function exitWithin(p: ChildProcess): (ms: number) => Promise<{ code: number | null; signal: string | null } | 'running'> {
  const exited = new Promise<{ code: number | null; signal: string | null }>((r) => {
    if (p.exitCode !== null || p.signalCode !== null) r({ code: p.exitCode, signal: p.signalCode });
    else p.once('exit', (code, signal) => r({ code, signal }));
  });
  return (ms) => Promise.race([exited, sleep(ms).then(() => 'running' as const)]);
}

function alivePid(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A manager process (--insecure, one member) with its stdout/stderr piped to this test. */
async function soloManager(dir: string): Promise<{ p: ChildProcess; port: number; out: () => string }> {
  const [port] = await freePorts(1);
  writeFileSync(join(dir, 'secret'), 'signals-test-secret-0123456789abcdef', { mode: 0o600 });
  const p = spawn(process.execPath, [CLI, 'manager', '--id', 'm1', '--listen', `127.0.0.1:${port}`, '--data', join(dir, 'm1'), '--bootstrap', `m1=127.0.0.1:${port}`, '--secret-file', join(dir, 'secret'), '--insecure'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  procs.push(p);
  let out = '';
  p.stdout!.on('data', (d) => (out += d));
  p.stderr!.on('data', (d) => (out += d));
  await eventually(() => out.includes('leader services started'), 30_000, 'the manager to lead');
  return { p, port: port!, out: () => out };
}

describe('node processes stop on SIGINT/SIGTERM', () => {
  it('a manager with a client on its event stream (WebSocket) stops on SIGTERM', async () => {
    const c = await TestCluster.managers(1);
    try {
      const m = c.managers.get('m1')!;
      const [host, port] = m.addr.split(':');
      const ws = net.connect(Number(port), host!);
      let answer = '';
      ws.on('data', (d) => (answer += d.toString('latin1')));
      ws.on('error', () => undefined);
      ws.write(
        'GET /v1/events?since=0 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
      );
      await eventually(() => answer.startsWith('HTTP/1.1 101'), 10_000, 'the WebSocket upgrade');
      const exit = exitWithin(m.proc!);
      m.proc!.kill('SIGTERM');
      // It used to wait for the stream to end (forever), deaf to SIGTERM and SIGINT alike.
      expect(await exit(15_000)).toEqual({ code: 0, signal: null });
      ws.destroy();
    } finally {
      await c.stop();
    }
  });

  it('a manager whose output pipe was closed stops cleanly (status 0) on SIGTERM, releasing its data directory', async () => {
    const dir = tempDir();
    const m = await soloManager(dir);
    const exit = exitWithin(m.p);
    // Whoever read its output went away (`| tee` after tee died).
    m.p.stdout!.destroy();
    m.p.stderr!.destroy();
    await sleep(300);
    if (m.p.exitCode === null && m.p.signalCode === null) m.p.kill('SIGTERM');
    // It used to die of the EPIPE its "stopping" line hit (status 1, stop cut short).
    expect(await exit(15_000)).toEqual({ code: 0, signal: null });
    // The data directory is free again: a new manager opens it.
    const again = await soloManager(dir);
    const exit2 = exitWithin(again.p);
    again.p.kill('SIGINT');
    expect(await exit2(15_000)).toEqual({ code: 0, signal: null });
  });
});

describe('node processes: one Ctrl-C is often two signals', () => {
  it("a manager that gets the terminal's SIGINT and its parent's SIGTERM together still stops cleanly", async () => {
    const m = await soloManager(tempDir());
    const exit = exitWithin(m.p);
    m.p.kill('SIGINT');
    m.p.kill('SIGTERM');
    expect(await exit(15_000)).toEqual({ code: 0, signal: null });
    // The two arrive together; the kernel may hand either over first. One stop, not two.
    expect(m.out()).toMatch(/SIG(INT|TERM): stopping/);
    expect(m.out().match(/: stopping"/g)).toHaveLength(1);
  });
});

describe('flotilla up', () => {
  async function startUp(dir: string, workers: number): Promise<{ up: ChildProcess; port: number; pids: number[]; data: string }> {
    const port = await consecutiveFreePorts(3);
    const data = join(dir, 'up');
    const up = spawn(process.execPath, [CLI, 'up', '--insecure', '--driver', 'process', '--workers', String(workers), '--port', String(port), '--dir', data], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    procs.push(up);
    let out = '';
    up.stdout!.on('data', (d) => (out += d));
    up.stderr!.on('data', () => undefined);
    await eventually(() => out.includes('flotilla is up'), 60_000, 'flotilla up');
    const pids = (JSON.parse(readFileSync(join(data, 'processes.json'), 'utf8')) as { processes: { node: string; pid: number }[] }).processes.map((p) => p.pid);
    upPids.push(...pids);
    expect(pids).toHaveLength(3 + workers);
    for (const pid of pids) expect(alivePid(pid)).toBe(true);
    return { up, port, pids, data };
  }

  it('Ctrl-C on `flotilla up | tee` with a board watching m1: every process exits', async () => {
    const { up, port, pids, data } = await startUp(tempDir(), 1);
    // A board (or the web page) streams m1's events over a WebSocket.
    const token = readFileSync(join(data, 'admin-token'), 'utf8').trim();
    const ws = net.connect(port, '127.0.0.1');
    let answer = '';
    ws.on('data', (d) => (answer += d.toString('latin1')));
    ws.on('error', () => undefined);
    ws.write(`GET /v1/events?since=0&token=${token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    await eventually(() => answer.startsWith('HTTP/1.1 101'), 10_000, 'the WebSocket upgrade');
    // Ctrl-C: tee dies (up's stdout is a closed pipe), and up and every node get SIGINT.
    up.stdout!.destroy();
    const exit = exitWithin(up);
    up.kill('SIGINT');
    for (const pid of pids) process.kill(pid, 'SIGINT');
    expect(await exit(20_000)).not.toBe('running');
    const gone = await eventually(() => pids.every((pid) => !alivePid(pid)) || null, 15_000, 'every node to exit').catch(() => pids.filter(alivePid));
    expect(gone).toBe(true);
    ws.destroy();
  }, 120_000);

  it('no node outlives `flotilla up`, even when up itself is killed (SIGKILL)', async () => {
    const { up, pids } = await startUp(tempDir(), 1);
    const exit = exitWithin(up);
    up.kill('SIGKILL');
    expect(await exit(10_000)).toEqual({ code: null, signal: 'SIGKILL' });
    // Each node sees its stdin (a pipe from up) end, and stops.
    const gone = await eventually(() => pids.every((pid) => !alivePid(pid)) || null, 20_000, 'every node to exit').catch(() => pids.filter(alivePid));
    expect(gone).toBe(true);
  }, 120_000);

  it('reports what really started: a manager that cannot open its data directory is named, with the reason', async () => {
    const dir = tempDir();
    const port = await consecutiveFreePorts(3);
    const data = join(dir, 'up');
    mkdirSync(data, { recursive: true });
    const upArgs = [CLI, 'up', '--insecure', '--driver', 'process', '--workers', '0', '--port', String(port), '--dir', data];
    const runUp = () => {
      const p = spawn(process.execPath, upArgs, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
      procs.push(p);
      const o = { text: '' };
      p.stdout!.on('data', (d) => (o.text += d));
      p.stderr!.on('data', (d) => (o.text += d));
      return { p, o };
    };
    // The cluster's first start (a new cluster waits for every bootstrap manager once).
    const first = runUp();
    await eventually(() => first.o.text.includes('flotilla is up'), 90_000, 'the first start');
    expect(first.o.text).toMatch(/flotilla is up: 3 managers \(leader m[123]\)/);
    const firstExit = exitWithin(first.p);
    first.p.kill('SIGINT');
    expect(await firstExit(30_000)).not.toBe('running');

    // Another process holds m1's data directory (an earlier manager that outlived its up).
    const holder = spawn(
      process.execPath,
      ['--input-type=module', '-e', `import { Level } from 'level'; const db = new Level(${JSON.stringify(join(data, 'm1'))}); await db.open(); console.log('holding'); setInterval(() => {}, 1000);`],
      { cwd: join(import.meta.dirname, '..'), stdio: ['ignore', 'pipe', 'pipe'] },
    );
    procs.push(holder);
    let holderOut = '';
    holder.stdout!.on('data', (d) => (holderOut += d));
    holder.stderr!.on('data', (d) => (holderOut += d));
    await eventually(() => holderOut.includes('holding'), 30_000, 'the holder of m1\'s LevelDB');

    const second = runUp();
    try {
      await eventually(() => second.o.text.includes('flotilla is up') || second.o.text.includes('no leader was elected'), 90_000, 'flotilla up to report');
      await eventually(() => /FAILED:/.test(second.o.text) || second.o.text.includes('stopped.'), 5_000, 'the whole report').catch(() => undefined);
      expect(second.o.text).toMatch(/flotilla is up: 2 of 3 managers \(leader m[23]\)/);
      expect(second.o.text).toMatch(/FAILED: +m1 exited \(1\): .*LevelDB lock is held/);
    } finally {
      const exit = exitWithin(second.p);
      second.p.kill('SIGINT');
      expect(await exit(20_000)).not.toBe('running');
      const hExit = exitWithin(holder);
      holder.kill('SIGTERM');
      expect(await hExit(15_000)).not.toBe('running');
    }
  }, 240_000);
});

describe('CLI commands whose reader went away end quietly, status 0', () => {
  let c: TestCluster;
  afterAll(async () => {
    await c?.stop();
  });

  /** Runs `flotilla ARGS | true` in a shell: the reader is gone before the first write. */
  function intoClosedPipe(args: string[]): Promise<{ status: number; stderr: string }> {
    return new Promise((resolve) => {
      const quoted = [process.execPath, CLI, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
      const sh = spawn('bash', ['-c', `${quoted} 2>"$ERRFILE" | true; echo "\${PIPESTATUS[0]}"`], {
        stdio: ['ignore', 'pipe', 'inherit'],
        env: { ...process.env, ERRFILE: join(errDir, `err-${args.join('-').replace(/[^a-z0-9-]/gi, '')}`) },
      });
      procs.push(sh);
      let out = '';
      sh.stdout!.on('data', (d) => (out += d));
      const t = setTimeout(() => sh.kill('SIGKILL'), 60_000);
      sh.on('exit', () => {
        clearTimeout(t);
        resolve({ status: Number(out.trim()), stderr: readFileSync(join(errDir, `err-${args.join('-').replace(/[^a-z0-9-]/gi, '')}`), 'utf8') });
      });
    });
  }
  let errDir = '';

  it('`cluster status`, `events --since 0` and `logs TASK` into a closed pipe', async () => {
    errDir = tempDir();
    c = await TestCluster.managers(3);
    c.startWorker('w1');
    const cl = c.client();
    await eventually(async () => ((await cl.get<{ nodes: { id: string; status: string }[] }>('/v1/nodes')).nodes.some((n) => n.id === 'w1' && n.status === 'ready') ? true : null), 30_000, 'w1 ready');
    const task = await cl.post<{ id: string }>('/v1/tasks', { name: 'chatty', driver: 'process', containers: [{ command: ['/bin/sh', '-c', 'for i in $(seq 1 200); do echo line $i; done; sleep 600'] }] });
    await eventually(async () => ((await cl.get<{ state: string }>(`/v1/tasks/${task.id}`)).state === 'running' ? true : null), 30_000, 'task running');
    const managers = c.addrs().join(',');
    try {
      for (const args of [
        ['--managers', managers, 'cluster', 'status'],
        ['--managers', managers, 'events', '--since', '0'],
        ['--managers', managers, 'logs', task.id],
      ]) {
        const r = await intoClosedPipe(args);
        expect({ args: args.slice(2), status: r.status, stderr: r.stderr }).toEqual({ args: args.slice(2), status: 0, stderr: '' });
      }
    } finally {
      // The task's processes outlive the worker: stop it while the worker runs.
      await cl.delete(`/v1/tasks/${task.id}`).catch(() => undefined);
      await eventually(async () => (['stopped', 'failed', 'succeeded'].includes((await cl.get<{ state: string }>(`/v1/tasks/${task.id}`)).state) ? true : null), 30_000, 'the task to stop').catch(() => undefined);
    }
  }, 150_000);
});
