// `flotilla exec` with the process driver (issue 24), as a user runs it: real CLI processes
// against a real TLS cluster (one manager, one process-driver worker), API tokens as users
// hold them; a plain WebSocket client for what the CLI never sends (bad frames) and for the
// worker's own door (which only managers may open).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, existsSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import WebSocket from 'ws';
import { TestCluster, eventually, runCli, CLI } from './helpers/cluster.js';
import { CHANNEL_STDOUT, EXEC_MAX_DATA, decodeClientFrame, decodeServerFrame, encodeControl, encodeData, execQuery, parseExecQuery } from '../src/protocol/exec.js';

let cluster: TestCluster;
let managers: string;
let admin: string;
let viewer: string;
let taskId: string;
let workdir: string;
let isolated: Record<string, string>;

const cli = (args: string[], opts: { env?: Record<string, string>; input?: string; timeoutMs?: number } = {}) =>
  runCli(['--managers', managers, ...args], { ...opts, env: { ...isolated, ...cluster.cliEnv(), FLOTILLA_TOKEN: admin, ...opts.env } });

interface TaskView {
  id: string;
  state: string;
  node: string | null;
}

beforeAll(async () => {
  cluster = await TestCluster.managers(1, [], { tls: true });
  managers = cluster.addrs().join(',');
  isolated = { FLOTILLA_MANAGERS: '', FLOTILLA_DIR: join(cluster.dir, 'no-up-dir'), FLOTILLA_CONFIG: join(cluster.dir, 'config.json'), FLOTILLA_CONTEXT: '', FLOTILLA_TOKEN_FILE: '', FLOTILLA_CA: '' };
  cluster.startWorker('w1');
  const c = cluster.client();
  admin = (await c.post<{ token: string }>('/v1/tokens', { role: 'admin' })).token;
  viewer = (await c.post<{ token: string }>('/v1/tokens', { role: 'viewer' })).token;
  await eventually(async () => (await c.get<{ nodes: { status: string }[] }>('/v1/nodes')).nodes.some((n) => n.status === 'ready'), 20_000, 'worker ready');
  workdir = realpathSync(cluster.mkdir('exec-workdir'));
  const t = await c.post<TaskView>('/v1/tasks', {
    name: 'box',
    driver: 'process',
    containers: [
      { name: 'main', image: '/bin/sh', command: ['/bin/sh', '-c', 'sleep 600'], env: { GREETING: 'hello from the task' }, workdir },
      { name: 'side', image: '/bin/sh', command: ['/bin/sh', '-c', 'sleep 600'], env: { WHICH: 'side' } },
    ],
  });
  taskId = t.id;
  await eventually(async () => (await c.get<TaskView>(`/v1/tasks/${taskId}`)).state === 'running', 20_000, 'task running');
}, 90_000);

afterAll(async () => {
  await cluster?.client().delete(`/v1/tasks/${taskId}`).catch(() => undefined);
  await cluster?.stop();
});

describe('flotilla exec (process driver)', () => {
  it("passes the command's exit status and its output through, stdout and stderr apart", async () => {
    const ok = await cli(['exec', 'box', '--', 'sh', '-c', 'echo out; echo err >&2']);
    expect(ok.status, ok.stderr).toBe(0);
    expect(ok.stdout).toBe('out\n');
    expect(ok.stderr).toBe('err\n');
    const seven = await cli(['exec', taskId, '--', 'sh', '-c', 'exit 7']);
    expect(seven.status).toBe(7);
    // Killed by a signal: 128 + n, as a shell reports it.
    const killed = await cli(['exec', 'box', '--', 'sh', '-c', 'kill -TERM $$']);
    expect(killed.status).toBe(143);
  });

  it('runs in the task environment and working directory, not the worker’s', async () => {
    const r = await cli(['exec', 'box', '--', 'sh', '-c', 'echo "$GREETING"; pwd; echo "$FLOTILLA_TASK_ID $FLOTILLA_CONTAINER"; echo "token:${FLOTILLA_TOKEN:-none}"']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe(`hello from the task\n${workdir}\n${taskId} main\ntoken:none\n`);
    // -c picks the container (its own environment).
    const side = await cli(['exec', '-c', 'side', 'box', '--', 'sh', '-c', 'echo "$WHICH $FLOTILLA_CONTAINER"']);
    expect(side.stdout).toBe('side side\n');
  });

  it('-i passes piped input through (a script: stdin not a terminal), large input included', async () => {
    const r = await cli(['exec', '-i', 'box', '--', 'cat'], { input: 'hi\nthere\n' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe('hi\nthere\n');
    // Many frames, with backpressure on the way: every byte arrives, in order.
    const big = Array.from({ length: 20_000 }, (_, i) => `line ${i}`).join('\n') + '\n';
    const wc = await cli(['exec', '-i', 'box', '--', 'sh', '-c', 'cksum'], { input: big });
    const local = await new Promise<string>((res) => {
      const p = spawn('cksum');
      let out = '';
      p.stdout.on('data', (d: Buffer) => (out += d.toString()));
      p.on('close', () => res(out));
      p.stdin.end(big);
    });
    expect(wc.stdout).toBe(local);
    // Without -i the command's input is empty.
    const none = await cli(['exec', 'box', '--', 'cat'], { input: 'not sent\n' });
    expect(none.status).toBe(0);
    expect(none.stdout).toBe('');
  });

  it('-t gives the command a terminal (without -t it has none)', async () => {
    const t = await cli(['exec', '-t', 'box', '--', 'sh', '-c', 'test -t 0 && test -t 1 && echo TTY; tty']);
    expect(t.status, t.stderr).toBe(0);
    expect(t.stdout).toMatch(/^TTY\r?\n\/dev\/pts\/\d+\r?\n$/);
    const exit = await cli(['exec', '-t', 'box', '--', 'sh', '-c', 'exit 4']);
    expect(exit.status).toBe(4);
    const plain = await cli(['exec', 'box', '--', 'sh', '-c', 'test -t 1 && echo TTY || echo NOTTY']);
    expect(plain.stdout).toBe('NOTTY\n');
    // -it: input through the terminal (the pty echoes it, as a terminal does).
    const it = await cli(['exec', '-it', 'box', '--', 'sh', '-c', 'read x; echo "got $x"'], { input: 'abc\n' });
    expect(it.status, it.stderr).toBe(0);
    expect(it.stdout).toContain('got abc');
  });

  it('a viewer token is refused (403), no token is 401; nothing runs', async () => {
    const marker = join(workdir, 'viewer-ran');
    const v = await cli(['exec', 'box', '--', 'touch', marker], { env: { FLOTILLA_TOKEN: viewer } });
    expect(v.status).toBe(1);
    expect(v.stderr).toMatch(/viewer/);
    const none = await cli(['exec', 'box', '--', 'touch', marker], { env: { FLOTILLA_TOKEN: 'flt_not-a-token' } });
    expect(none.status).toBe(1);
    expect(none.stderr).toMatch(/not valid/);
    expect(existsSync(marker)).toBe(false);
  });

  it('clear errors: unknown task, unknown container, missing program, finished task, no command', async () => {
    const help = await runCli(['exec', '--help']);
    expect(help.stdout).toMatch(/Examples:\n  flotilla exec web -- ls/);
    const task = await cli(['exec', 'no-such-task', '--', 'true']);
    expect(task.status).toBe(1);
    expect(task.stderr).toMatch(/task 'no-such-task' not found/);
    const ctr = await cli(['exec', '-c', 'nope', 'box', '--', 'true']);
    expect(ctr.status).toBe(1);
    expect(ctr.stderr).toMatch(/no container 'nope' \(it has 'main', 'side'\)/);
    const prog = await cli(['exec', 'box', '--', 'no-such-program-xyz']);
    expect(prog.status).toBe(127);
    expect(prog.stderr).toMatch(/executable 'no-such-program-xyz' was not found/);
    const c = cluster.client();
    const done = await c.post<TaskView>('/v1/tasks', { name: 'done', driver: 'process', containers: [{ name: 'c', image: '/bin/true', command: ['/bin/true'] }], restart: { policy: 'never' } });
    await eventually(async () => (await c.get<TaskView>(`/v1/tasks/${done.id}`)).state === 'succeeded', 20_000, 'task done');
    const fin = await cli(['exec', done.id, '--', 'true']);
    expect(fin.status).toBe(1);
    expect(fin.stderr).toMatch(/not running \(succeeded\)/);
    const usage = await cli(['exec', 'box']);
    expect(usage.status).toBe(2);
  });

  it('the command ends when the caller goes away (CLI SIGKILLed)', async () => {
    const pidFile = join(workdir, 'exec.pid');
    const p = spawn(process.execPath, [CLI, '--managers', managers, 'exec', 'box', '--', 'sh', '-c', `echo $$ > ${pidFile}; exec sleep 600`], {
      env: { ...process.env, ...isolated, ...cluster.cliEnv(), FLOTILLA_TOKEN: admin },
      stdio: 'ignore',
    });
    try {
      const pid = await eventually(() => (existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').trim()) : null), 20_000, 'command started');
      expect(alive(pid)).toBe(true);
      p.kill('SIGKILL');
      await eventually(() => !alive(pid), 15_000, 'the exec’d command ended');
    } finally {
      p.kill('SIGKILL');
    }
  });

  it('stopping the task ends what was exec’d in it (as a container’s end would)', async () => {
    const c = cluster.client();
    const t = await c.post<TaskView>('/v1/tasks', { name: 'short', driver: 'process', containers: [{ name: 'c', image: '/bin/sh', command: ['/bin/sh', '-c', 'sleep 600'] }] });
    await eventually(async () => (await c.get<TaskView>(`/v1/tasks/${t.id}`)).state === 'running', 20_000, 'task running');
    const p = spawn(process.execPath, [CLI, '--managers', managers, 'exec', t.id, '--', 'sh', '-c', 'echo started; exec sleep 600'], {
      env: { ...process.env, ...isolated, ...cluster.cliEnv(), FLOTILLA_TOKEN: admin },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    p.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((res) => p.once('exit', (code) => res(code)));
    try {
      await eventually(() => out.includes('started'), 20_000, 'exec running');
      await c.delete(`/v1/tasks/${t.id}`);
      const code = await Promise.race([exited, new Promise((res) => setTimeout(() => res('still running'), 30_000))]);
      expect(code).toBe(129); // SIGHUP, what a closed terminal sends
    } finally {
      p.kill('SIGKILL');
    }
  });

  it('revoking the token closes an open session (the CLI says why)', async () => {
    const c = cluster.client();
    const tok = await c.post<{ id: string; token: string }>('/v1/tokens', { role: 'admin' });
    const p = spawn(process.execPath, [CLI, '--managers', managers, 'exec', '-i', 'box', '--', 'cat'], {
      env: { ...process.env, ...isolated, ...cluster.cliEnv(), FLOTILLA_TOKEN: tok.token },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    p.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((res) => p.once('exit', (code) => res(code)));
    try {
      p.stdin!.write('ping\n');
      await eventually(() => out.includes('ping'), 20_000, 'session open');
      await c.delete(`/v1/tokens/${tok.id}`);
      const code = await Promise.race([exited, new Promise((res) => setTimeout(() => res('still running'), 20_000))]);
      expect(code).toBe(1);
      expect(err).toMatch(/unauthorized: API token .* was revoked/);
    } finally {
      p.kill('SIGKILL');
    }
  });

  it('frames are checked: a bad one closes the session with the reason', async () => {
    const ws = new WebSocket(`wss://${managers}/v1/exec?task=box&cmd=cat&stdin=1`, { ca: cluster.caPem, headers: { authorization: `Bearer ${admin}` } });
    await new Promise((res, rej) => {
      ws.once('open', res);
      ws.once('error', rej);
    });
    const closed = new Promise<{ code: number; reason: string }>((res) => ws.once('close', (code, reason) => res({ code, reason: reason.toString() })));
    ws.send(Buffer.from([7, 1, 2, 3])); // channel 7: nobody's
    const c = await closed;
    expect(c.code).toBe(4400);
    expect(c.reason).toMatch(/channel 7/);
    // A text frame that is not a known control.
    const ws2 = new WebSocket(`wss://${managers}/v1/exec?task=box&cmd=cat&stdin=1`, { ca: cluster.caPem, headers: { authorization: `Bearer ${admin}` } });
    await new Promise((res) => ws2.once('open', res));
    const closed2 = new Promise<{ code: number; reason: string }>((res) => ws2.once('close', (code, reason) => res({ code, reason: reason.toString() })));
    ws2.send(JSON.stringify({ t: 'launch-missiles' }));
    const c2 = await closed2;
    expect(c2.code).toBe(4400);
    expect(c2.reason).toMatch(/launch-missiles/);
    // A bad request is an HTTP answer before anything runs.
    const bad = await new Promise<number>((res) => {
      const w = new WebSocket(`wss://${managers}/v1/exec?task=box`, { ca: cluster.caPem, headers: { authorization: `Bearer ${admin}` } });
      w.once('unexpected-response', (_q, r) => res(r.statusCode ?? 0));
      w.once('open', () => res(101));
      w.once('error', () => res(-1));
    });
    expect(bad).toBe(400);
  });

  it("the worker's exec door is closed to everyone but managers (an admin API token is not enough)", async () => {
    const c = cluster.client();
    const nodes = await c.get<{ nodes: { id: string; addr: string }[] }>('/v1/nodes');
    const addr = nodes.nodes.find((n) => n.id === 'w1')!.addr;
    const status = await new Promise<number>((res) => {
      const w = new WebSocket(`wss://${addr}/v1/exec?task=${taskId}&cmd=true`, { ca: cluster.caPem, headers: { authorization: `Bearer ${admin}` }, checkServerIdentity: () => undefined });
      w.once('unexpected-response', (_q, r) => res(r.statusCode ?? 0));
      w.once('open', () => res(101));
      w.once('error', () => res(-1));
    });
    expect(status).toBe(403);
  });

  it('worker unreachable: a clear error', async () => {
    // Its port refuses connections; the task is still `running` in the state until the node grace ends.
    await cluster.killAndWait('w1');
    const r = await cli(['exec', 'box', '--', 'true']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/worker w1 .* is unreachable/);
  });
});

describe('exec request and frames (protocol/exec.ts)', () => {
  it('requests are bounded and checked', () => {
    const q = (s: string) => parseExecQuery(new URLSearchParams(s));
    expect(q('task=t&cmd=ls&cmd=-l&stdin=1&tty=1&cols=80&rows=24')).toEqual({ task: 't', command: ['ls', '-l'], stdin: true, tty: true, cols: 80, rows: 24 });
    expect(() => q('task=t')).toThrow(/no command/);
    expect(() => q('cmd=ls')).toThrow(/'task' is required/);
    expect(() => q('task=t&cmd=ls&cols=80&rows=24')).toThrow(/need 'tty'/);
    expect(() => q('task=t&cmd=ls&tty=1&cols=0&rows=24')).toThrow(/'cols' must be/);
    expect(() => q('task=t&cmd=ls&stdin=maybe')).toThrow(/'stdin' must be/);
    expect(() => q('task=t&cmd=ls&token=x')).toThrow(/'token' is not a known parameter/);
    expect(() => q('task=t&' + Array.from({ length: 257 }, () => 'cmd=a').join('&'))).toThrow(/at most 256/);
    expect(() => q(`task=t&cmd=${'x'.repeat(9000)}`)).toThrow(/at most 8192/);
    const r = { task: 't', container: 'c', command: ['sh', '-c', 'a&b=c'], stdin: true, tty: false };
    expect(parseExecQuery(new URLSearchParams(execQuery(r)))).toEqual(r);
  });

  it('frames are bounded and checked both ways', () => {
    const big = new Uint8Array(EXEC_MAX_DATA * 2 + 5);
    const frames = encodeData(CHANNEL_STDOUT, big);
    expect(frames.map((f) => f.length)).toEqual([EXEC_MAX_DATA + 1, EXEC_MAX_DATA + 1, 6]);
    expect(decodeServerFrame(frames[2]!, true)).toEqual({ t: 'stdout', data: Buffer.alloc(5) });
    expect(() => decodeClientFrame(frames[0]!, true)).toThrow(/channel 1/); // output is not the caller's to send
    expect(() => decodeClientFrame(Buffer.alloc(EXEC_MAX_DATA + 2), true)).toThrow(/at most 32768/);
    expect(() => decodeClientFrame(Buffer.alloc(0), true)).toThrow(/empty/);
    expect(decodeClientFrame(Buffer.from(encodeControl({ t: 'resize', cols: 100, rows: 30 })), false)).toEqual({ t: 'resize', cols: 100, rows: 30 });
    expect(() => decodeClientFrame(Buffer.from('{"t":"resize","cols":-1,"rows":3}'), false)).toThrow(/resize/);
    expect(() => decodeClientFrame(Buffer.from('{"t":"eof","x":1}'), false)).toThrow(/unknown field 'x'/);
    expect(() => decodeClientFrame(Buffer.from('not json'), false)).toThrow(/not JSON/);
    expect(() => decodeClientFrame(Buffer.from(JSON.stringify({ t: 'eof', pad: 'x'.repeat(2000) })), false)).toThrow(/at most 1024/);
    expect(() => decodeServerFrame(Buffer.from('{"t":"exit","code":300}'), false)).toThrow(/0 to 255/);
    expect(decodeServerFrame(Buffer.from(encodeControl({ t: 'exit', code: 3 })), false)).toEqual({ t: 'exit', code: 3 });
  });
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    // A zombie is not running any more.
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}
