// The worker agent against fake managers (ws servers on loopback speaking the session
// protocol with msgpackr frames), running real processes with the process driver.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocketServer, type WebSocket } from 'ws';
import { MAX_SESSION_FRAME, SESSION_PATH, SESSION_PROTOCOL_VERSION, type ManagerToWorker, type TaskStatusReport } from '../src/protocol/session.js';
import { FlotillaError } from '../src/protocol/errors.js';
import { parseTaskSpec, type TaskSpec } from '../src/protocol/spec.js';
import { WorkerAgent } from '../src/worker/agent.js';
import { ProcessDriver, readProcStat } from '../src/worker/drivers/process.js';
import { decodeSessionFrame, encodeSessionFrame } from '../src/protocol/frames.js';
import { parseWorkerFlags } from '../src/worker/main.js';

const root = join(import.meta.dirname, '..');
const TOKEN = 'flt-w-test-token-0123456789';

// ------------------------------------------------------------------------------------------
// A fake manager

interface Received {
  conn: WebSocket;
  msg: Record<string, unknown> & { t: string };
}

class FakeManager {
  readonly received: Received[] = [];
  readonly conns = new Set<WebSocket>();
  /** What to do with a register; default: welcome. */
  onRegister: (ws: WebSocket, msg: Received['msg']) => void = (ws) => this.welcome(ws);
  managers: string[] | null = null;
  closes = 0;
  private sessions = 0;

  private constructor(
    readonly wss: WebSocketServer,
    readonly port: number,
  ) {}

  static async start(port = 0): Promise<FakeManager> {
    const wss = new WebSocketServer({ host: '127.0.0.1', port, path: SESSION_PATH, maxPayload: MAX_SESSION_FRAME });
    await new Promise<void>((res, rej) => {
      wss.once('listening', res);
      wss.once('error', rej);
    });
    const fm = new FakeManager(wss, (wss.address() as { port: number }).port);
    wss.on('connection', (ws) => {
      fm.conns.add(ws);
      ws.on('close', () => {
        fm.conns.delete(ws);
        fm.closes++;
      });
      ws.on('error', () => undefined);
      ws.on('message', (data: Buffer) => {
        const msg = decodeSessionFrame(data) as Received['msg'];
        fm.received.push({ conn: ws, msg });
        if (msg.t === 'register') fm.onRegister(ws, msg);
      });
    });
    fakes.push(fm);
    return fm;
  }

  get addr(): string {
    return `127.0.0.1:${this.port}`;
  }

  send(ws: WebSocket, msg: ManagerToWorker | Record<string, unknown>): void {
    ws.send(encodeSessionFrame(msg as ManagerToWorker));
  }

  welcome(ws: WebSocket, heartbeatMs = 50): void {
    this.send(ws, { t: 'welcome', sessionId: `s${++this.sessions}`, heartbeatMs, managers: this.managers ?? [this.addr], term: 1 });
  }

  assign(ws: WebSocket, tasks: { taskId: string; spec: TaskSpec; desired?: 'running' | 'shutdown'; attempt?: number }[]): void {
    this.send(ws, { t: 'assignments', tasks: tasks.map((t) => ({ taskId: t.taskId, attempt: t.attempt ?? 1, spec: t.spec, desired: t.desired ?? 'running' })) });
  }

  of(t: string): Received[] {
    return this.received.filter((r) => r.msg.t === t);
  }

  /** Every task report seen (from register and status), oldest first. */
  reports(taskId?: string): TaskStatusReport[] {
    const out: TaskStatusReport[] = [];
    for (const r of this.received) {
      const list = r.msg.t === 'register' ? (r.msg.tasks as TaskStatusReport[]) : r.msg.t === 'status' ? (r.msg.reports as TaskStatusReport[]) : [];
      for (const rep of list) if (taskId === undefined || rep.taskId === taskId) out.push(rep);
    }
    return out;
  }

  async waitFor<T>(fn: () => T, what: string, timeoutMs = 15_000): Promise<NonNullable<T>> {
    return waitFor(fn, `${what} (at ${this.addr})`, timeoutMs);
  }

  /** Resolves with the connection of the next register after `after` registers were seen. */
  async nextRegister(after: number): Promise<Received> {
    return this.waitFor(() => this.of('register')[after], `register #${after + 1}`);
  }

  async close(): Promise<void> {
    for (const c of this.conns) c.terminate();
    await new Promise<void>((res) => this.wss.close(() => res()));
  }
}

// ------------------------------------------------------------------------------------------
// Helpers and cleanup

const fakes: FakeManager[] = [];
const agents: WorkerAgent[] = [];
const dirs: string[] = [];
const groups = new Set<number>();
const children: ChildProcess[] = [];

function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'flotilla-agent-'));
  dirs.push(d);
  return d;
}

async function waitFor<T>(fn: () => T | Promise<T>, what: string, timeoutMs = 15_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function alive(pid: number): boolean {
  const st = readProcStat(pid);
  return st !== null && st.state !== 'Z';
}

function spec(script: string | string[], name = 'pod'): TaskSpec {
  const scripts = Array.isArray(script) ? script : [script];
  return parseTaskSpec({ name, driver: 'process', containers: scripts.map((s) => ({ command: ['/bin/sh', '-c', s] })) });
}

async function newAgent(managers: string[], extra: { stateDir?: string; retainFinished?: number } = {}): Promise<WorkerAgent> {
  const stateDir = extra.stateDir ?? tmp();
  const agent = new WorkerAgent({
    id: 'w1',
    managers,
    token: TOKEN,
    labels: { zone: 'a' },
    resources: { cpu: 1500, memory: 1 << 30 },
    drivers: [new ProcessDriver({ dir: join(stateDir, 'process'), pollMs: 50, podFailureGraceMs: 1000 })],
    stateDir,
    listen: '127.0.0.1:0',
    stopGraceMs: 2000,
    backoffMinMs: 20,
    backoffMaxMs: 200,
    welcomeTimeoutMs: 2000,
    retainFinished: extra.retainFinished,
  });
  agents.push(agent);
  await agent.start();
  return agent;
}

function pidOf(agent: WorkerAgent, taskId: string): number | undefined {
  const t = agent.status().tasks.find((x) => x.taskId === taskId);
  for (const c of t?.containers ?? []) if (c.pid !== undefined) groups.add(c.pid);
  return t?.pid;
}

function lastReport(fm: FakeManager, taskId: string): TaskStatusReport | undefined {
  return fm.reports(taskId).at(-1);
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((res) => srv.listen(0, '127.0.0.1', res));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((res) => srv.close(() => res()));
  return port;
}

async function get(addr: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://${addr}${path}`, { headers });
  return { status: res.status, body: await res.text() };
}

afterEach(async () => {
  for (const a of agents.splice(0)) {
    for (const t of a.status().tasks) for (const c of t.containers ?? []) if (c.pid !== undefined) groups.add(c.pid);
    await a.close();
  }
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const f of fakes.splice(0)) await f.close();
  for (const g of groups) {
    try {
      process.kill(-g, 'SIGKILL');
    } catch {
      // gone
    }
  }
  groups.clear();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

// ------------------------------------------------------------------------------------------

describe('worker agent', () => {
  it('registers, heartbeats, runs assignments, reports status and serves logs', async () => {
    const fm = await FakeManager.start();
    fm.onRegister = () => undefined; // welcome by hand below
    const agent = await newAgent([fm.addr]);
    const reg = (await fm.nextRegister(0)).msg;
    expect(reg).toMatchObject({
      t: 'register',
      nodeId: 'w1',
      token: TOKEN,
      addr: agent.httpAddress,
      labels: { zone: 'a' },
      resources: { cpu: 1500, memory: 1 << 30 },
      drivers: ['process'],
      tasks: [],
    });
    expect(typeof reg.version).toBe('string');
    // No status or heartbeat before the welcome.
    await sleep(100);
    expect(fm.of('heartbeat')).toHaveLength(0);

    const conn = fm.of('register')[0]!.conn;
    fm.welcome(conn, 40);
    await fm.waitFor(() => fm.of('heartbeat').length >= 3, 'heartbeats');
    expect(agent.status()).toMatchObject({ connected: true, manager: fm.addr, sessionId: 's1', term: 1 });

    fm.assign(conn, [
      { taskId: 't-run', spec: spec('echo hello; echo warn >&2; sleep 30') },
      { taskId: 't-fail', spec: spec('exit 3') },
      { taskId: 't-ok', spec: spec(['exit 0', 'sleep 0.1']) },
    ]);
    const running = await fm.waitFor(() => fm.reports('t-run').find((r) => r.state === 'running'), 't-run running');
    expect(running.attempt).toBe(1);
    const failed = await fm.waitFor(() => fm.reports('t-fail').find((r) => r.state === 'failed'), 't-fail failed');
    expect(failed).toMatchObject({ exitCode: 3, attempt: 1 });
    expect(failed.reason).toMatch(/exited with code 3/);
    const ok = await fm.waitFor(() => fm.reports('t-ok').find((r) => r.state === 'succeeded'), 't-ok succeeded');
    expect(ok.exitCode).toBe(0);
    const pid = pidOf(agent, 't-run')!;
    expect(alive(pid)).toBe(true);
    // Reports are batched into status frames, each well-formed.
    for (const r of fm.of('status')) expect(Array.isArray(r.msg.reports)).toBe(true);

    // Logs over HTTP, with the join token.
    const addr = agent.httpAddress!;
    const auth = { authorization: `Bearer ${TOKEN}` };
    expect((await get(addr, '/healthz')).status).toBe(200);
    expect(JSON.parse((await get(addr, '/healthz')).body)).toMatchObject({ ok: true, id: 'w1', connected: true });
    expect((await get(addr, '/v1/tasks/t-run/logs')).status).toBe(401);
    expect((await get(addr, '/v1/tasks/t-run/logs', { authorization: 'Bearer nope' })).status).toBe(401);
    const nf = await get(addr, '/v1/tasks/nope/logs', auth);
    expect(nf.status).toBe(404);
    expect(JSON.parse(nf.body).error.code).toBe('not_found');
    expect((await get(addr, '/v1/tasks/t-run/logs?container=zz', auth)).status).toBe(400);
    expect((await get(addr, '/v1/tasks/t-run/logs?tail=x', auth)).status).toBe(400);
    const logs = await fm.waitFor(async () => {
      const r = await get(addr, '/v1/tasks/t-run/logs', auth);
      return r.body.includes('c0 | warn') ? r : null;
    }, 'logs');
    expect(logs.status).toBe(200);
    expect(logs.body.split('\n').filter(Boolean).sort()).toEqual(['c0 | hello', 'c0 | warn']);
    expect((await get(addr, '/v1/tasks/t-run/logs?container=c0&stream=stdout', auth)).body).toBe('hello\n');
    const nd = (await get(addr, '/v1/tasks/t-run/logs?format=ndjson&stream=stderr', auth)).body;
    expect(JSON.parse(nd.trim())).toEqual({ container: 'c0', stream: 'stderr', line: 'warn' });
    // follow=1 streams; the client going away ends it.
    const ac = new AbortController();
    const res = await fetch(`http://${addr}/v1/tasks/t-run/logs?follow=1&stream=stdout`, { headers: auth, signal: ac.signal });
    const reader = res.body!.getReader();
    const first = new TextDecoder().decode((await reader.read()).value);
    expect(first).toBe('c0 | hello\n');
    ac.abort();
    await reader.cancel().catch(() => undefined);

    // Desired shutdown stops the task, reports it stopped, and retires it (no longer reported,
    // logs still readable).
    fm.assign(conn, [
      { taskId: 't-run', spec: spec('echo hello; echo warn >&2; sleep 30'), desired: 'shutdown' },
      { taskId: 't-fail', spec: spec('exit 3') },
      { taskId: 't-ok', spec: spec(['exit 0', 'sleep 0.1']) },
    ]);
    await fm.waitFor(() => lastReport(fm, 't-run')?.state === 'stopped', 't-run stopped');
    await waitFor(() => !alive(pid), 't-run process to end');
    await waitFor(() => agent.status().tasks.every((t) => t.taskId !== 't-run'), 't-run retired');
    expect(agent.status().retired).toMatchObject([{ taskId: 't-run', state: 'stopped' }]);
    expect((await get(addr, '/v1/tasks/t-run/logs?container=c0&stream=stdout', auth)).body).toBe('hello\n');
    // Finished tasks stay (and are not restarted) while they are in the set...
    expect(agent.status().tasks.map((t) => [t.taskId, t.state]).sort()).toEqual([
      ['t-fail', 'failed'],
      ['t-ok', 'succeeded'],
    ]);
    expect(fm.reports('t-fail').filter((r) => r.state === 'running' || r.state === 'starting').length).toBeLessThanOrEqual(2);
    // ...and are retired once the manager drops them.
    fm.assign(conn, []);
    await waitFor(() => agent.status().tasks.length === 0, 'finished tasks retired');
    expect(agent.status().retired.map((t) => t.taskId).sort()).toEqual(['t-fail', 't-ok', 't-run']);
    // A new session re-reports the retired tasks' final states (the last report may not have
    // been committed before a leader change); none of them is running.
    const before = fm.of('register').length;
    conn.terminate();
    const again = await fm.nextRegister(before);
    expect(again.msg.tasks.map((t: { taskId: string }) => t.taskId).sort()).toEqual(['t-fail', 't-ok', 't-run']);
    expect(again.msg.tasks.every((t: { state: string }) => ['succeeded', 'failed', 'stopped'].includes(t.state))).toBe(true);
  });

  it('keeps the logs of a limited number of retired tasks, across restarts', async () => {
    const fm = await FakeManager.start();
    const stateDir = tmp();
    let agent = await newAgent([fm.addr], { stateDir, retainFinished: 2 });
    let conn = (await fm.nextRegister(0)).conn;
    for (const id of ['r1', 'r2', 'r3']) {
      fm.assign(conn, [{ taskId: id, spec: spec(`echo ${id}`) }]);
      await fm.waitFor(() => lastReport(fm, id)?.state === 'succeeded', `${id} succeeded`);
      fm.assign(conn, []);
      await waitFor(() => agent.status().retired.some((t) => t.taskId === id), `${id} retired`);
    }
    await waitFor(() => agent.status().retired.length === 2, 'oldest pruned');
    expect(agent.status().retired.map((t) => t.taskId).sort()).toEqual(['r2', 'r3']);
    const procDir = join(stateDir, 'process', 'tasks');
    await waitFor(() => !existsSync(join(procDir, 'r1')), 'r1 files removed');
    expect(existsSync(join(procDir, 'r3', 'c0.out.log'))).toBe(true);

    // A restarted worker still knows they are retired: only final states re-reported, logs still there.
    await agent.close();
    agents.splice(agents.indexOf(agent), 1);
    const n = fm.of('register').length;
    agent = await newAgent([fm.addr], { stateDir, retainFinished: 2 });
    const reg = await fm.nextRegister(n);
    expect(reg.msg.tasks.every((t: { state: string }) => ['succeeded', 'failed', 'stopped'].includes(t.state))).toBe(true);
    expect(agent.status().retired.map((t) => t.taskId).sort()).toEqual(['r2', 'r3']);
    const log = await get(agent.httpAddress!, '/v1/tasks/r3/logs', { authorization: `Bearer ${TOKEN}` });
    expect(log.body).toBe('c0 | r3\n');

    // The same id assigned again (a new attempt) replaces the retired run.
    conn = reg.conn;
    fm.assign(conn, [{ taskId: 'r3', spec: spec('echo second; sleep 30'), attempt: 2 }]);
    await fm.waitFor(() => fm.reports('r3').find((r) => r.state === 'running' && r.attempt === 2), 'r3 attempt 2 running');
    pidOf(agent, 'r3');
    expect(agent.status().retired.map((t) => t.taskId)).toEqual(['r2']);
    // A shutdown for a retired attempt re-reports its final state.
    fm.assign(conn, [{ taskId: 'r2', spec: spec('echo r2'), desired: 'shutdown' }, { taskId: 'r3', spec: spec('echo second; sleep 30'), attempt: 2 }]);
    await fm.waitFor(() => fm.reports('r2').filter((r) => r.state === 'succeeded').length >= 2, 'r2 re-reported');
  });

  it('follows a redirect to the leader and learns the managers', async () => {
    const leader = await FakeManager.start();
    const follower = await FakeManager.start();
    leader.managers = [follower.addr, leader.addr];
    follower.onRegister = (ws) => {
      follower.send(ws, { t: 'redirect', leader: leader.addr, managers: [follower.addr, leader.addr] });
      ws.close(4007, 'not the leader');
    };
    const agent = await newAgent([follower.addr]);
    await leader.nextRegister(0);
    await waitFor(() => agent.status().connected, 'connected to the leader');
    expect(agent.status().manager).toBe(leader.addr);
    expect(agent.status().managers).toEqual([follower.addr, leader.addr]);
    expect(follower.of('register')).toHaveLength(1);

    // `managers` updates the list.
    leader.send(leader.of('register')[0]!.conn, { t: 'managers', managers: [leader.addr, '127.0.0.1:1'] });
    await waitFor(() => agent.status().managers.includes('127.0.0.1:1'), 'managers update');
  });

  it('tries the next manager when a redirect names no leader, and retries after a reject', async () => {
    const a = await FakeManager.start();
    const b = await FakeManager.start();
    a.onRegister = (ws) => a.send(ws, { t: 'redirect', leader: null, managers: [a.addr, b.addr] });
    let rejects = 0;
    b.onRegister = (ws, msg) => {
      if (rejects++ === 0) {
        expect(msg.token).toBe(TOKEN);
        b.send(ws, { t: 'reject', reason: 'not yet' });
      } else b.welcome(ws);
    };
    const agent = await newAgent([a.addr, b.addr]);
    await waitFor(() => agent.status().connected && agent.status().manager === b.addr, 'welcomed by b after a reject');
    expect(rejects).toBeGreaterThanOrEqual(2);
  });

  it('keeps tasks running while no manager answers, then re-reports them to the next one', async () => {
    const m1 = await FakeManager.start();
    const m2port = await freePort();
    const m2addr = `127.0.0.1:${m2port}`;
    m1.managers = [m1.addr, m2addr];
    const agent = await newAgent([m1.addr]);
    const conn = (await m1.nextRegister(0)).conn;
    m1.assign(conn, [{ taskId: 'keep', spec: spec('sleep 30') }]);
    await m1.waitFor(() => lastReport(m1, 'keep')?.state === 'running', 'keep running');
    const pid = pidOf(agent, 'keep')!;

    // The manager dies: the task keeps running while the agent retries.
    await m1.close();
    await waitFor(() => !agent.status().connected, 'session to end');
    await sleep(600);
    expect(alive(pid)).toBe(true);
    expect(agent.status().tasks).toMatchObject([{ taskId: 'keep', state: 'running', pid }]);

    // Another manager comes up (learned from the welcome): the agent registers there with the task.
    const m2 = await FakeManager.start(m2port);
    m2.onRegister = () => undefined; // hold the welcome for a moment
    const reg = await m2.nextRegister(0);
    expect(reg.msg.tasks).toMatchObject([{ taskId: 'keep', state: 'running', attempt: 1 }]);
    m2.welcome(reg.conn);
    await waitFor(() => agent.status().connected, 'connected to m2');
    // No assignments yet: nothing is stopped.
    await sleep(300);
    expect(alive(pid)).toBe(true);
    // The same attempt again: no restart, same process.
    m2.assign(reg.conn, [{ taskId: 'keep', spec: spec('sleep 30') }]);
    await sleep(300);
    expect(pidOf(agent, 'keep')).toBe(pid);
    expect(alive(pid)).toBe(true);
    // Not in the set any more: stopped.
    m2.assign(reg.conn, []);
    await m2.waitFor(() => lastReport(m2, 'keep')?.state === 'stopped', 'keep stopped');
    await waitFor(() => !alive(pid), 'process to end');
  });

  it('ends the session on a bad frame, without crashing or touching tasks', async () => {
    const fm = await FakeManager.start();
    const agent = await newAgent([fm.addr]);
    let conn = (await fm.nextRegister(0)).conn;
    fm.assign(conn, [{ taskId: 'steady', spec: spec('sleep 30') }]);
    await fm.waitFor(() => lastReport(fm, 'steady')?.state === 'running', 'steady running');
    const pid = pidOf(agent, 'steady')!;

    const badFrames: [string, (ws: WebSocket) => void][] = [
      ['text frame', (ws) => ws.send('{"t":"assignments","tasks":[]}')],
      ['wrong version', (ws) => ws.send(Buffer.concat([Buffer.from([SESSION_PROTOCOL_VERSION + 1]), encodeSessionFrame({ t: 'managers', managers: [] }).subarray(1)]))],
      ['not msgpack', (ws) => ws.send(Buffer.from([SESSION_PROTOCOL_VERSION, 0xc1, 0xc1, 0xc1]))],
      ['empty', (ws) => ws.send(Buffer.alloc(0))],
      ['not an object', (ws) => ws.send(encodeSessionFrame([1, 2, 3] as unknown as Record<string, unknown>))],
      ['bad endpoints', (ws) => fm.send(ws, { t: 'endpoints', ports: [{ service: 'web', published: 0, protocol: 'tcp', backends: [] }] })],
      ['bad assignments', (ws) => fm.send(ws, { t: 'assignments', tasks: [{ taskId: 5, desired: 'maybe' }] })],
      ['too large', (ws) => ws.send(Buffer.alloc(MAX_SESSION_FRAME + 1, SESSION_PROTOCOL_VERSION))],
    ];
    for (const [what, sendBad] of badFrames) {
      const before = fm.of('register').length;
      sendBad(conn);
      const next = await fm.nextRegister(before).catch(() => {
        throw new Error(`no new session after a bad frame: ${what}`);
      });
      expect(next.msg.tasks, what).toMatchObject([{ taskId: 'steady', state: 'running' }]);
      conn = next.conn;
    }
    expect(alive(pid)).toBe(true);
    expect(pidOf(agent, 'steady')).toBe(pid);

    // A message type this worker does not know (a newer manager's) is skipped: the session goes on.
    const sessionsBefore = fm.of('register').length;
    fm.send(conn, { t: 'explode' });

    fm.send(conn, {
      t: 'assignments',
      tasks: [
        { taskId: 'steady', attempt: 1, spec: spec('sleep 30'), desired: 'running' },
        { taskId: 'broken', attempt: 1, spec: { name: 'Bad Name!', containers: [] }, desired: 'running' },
        { taskId: 'dockerish', attempt: 1, spec: parseTaskSpec({ name: 'd', containers: [{ image: 'busybox' }] }), desired: 'running' },
      ],
    });
    const broken = await fm.waitFor(() => fm.reports('broken').find((r) => r.state === 'failed'), 'broken failed');
    expect(broken.reason).toMatch(/invalid spec/);
    const docker = await fm.waitFor(() => fm.reports('dockerish').find((r) => r.state === 'failed'), 'dockerish failed');
    expect(docker.reason).toMatch(/driver 'docker' is not available/);
    expect(fm.of('register')).toHaveLength(sessionsBefore);
    expect(alive(pid)).toBe(true);
  });

  it('replaces a finished run when a new attempt is assigned, ignores stale ones', async () => {
    const fm = await FakeManager.start();
    const agent = await newAgent([fm.addr]);
    const conn = (await fm.nextRegister(0)).conn;
    const s = spec('echo run; exit 3');
    fm.assign(conn, [{ taskId: 'again', spec: s, attempt: 1 }]);
    await fm.waitFor(() => fm.reports('again').find((r) => r.state === 'failed' && r.attempt === 1), 'attempt 1 failed');
    // Same attempt again: not restarted by the worker.
    fm.assign(conn, [{ taskId: 'again', spec: s, attempt: 1, desired: 'running' }, { taskId: 'other', spec: spec('sleep 30') }]);
    await fm.waitFor(() => lastReport(fm, 'other')?.state === 'running', 'other running');
    expect(fm.reports('again').filter((r) => r.state === 'running' && r.attempt === 1).length).toBeLessThanOrEqual(1);
    // Attempt 2: a new run.
    fm.assign(conn, [{ taskId: 'again', spec: s, attempt: 2 }, { taskId: 'other', spec: spec('sleep 30') }]);
    await fm.waitFor(() => fm.reports('again').find((r) => r.state === 'failed' && r.attempt === 2), 'attempt 2 failed');
    expect(agent.status().tasks.find((t) => t.taskId === 'again')).toMatchObject({ attempt: 2, state: 'failed' });
    // A stale attempt is ignored.
    const n = fm.reports('again').length;
    fm.assign(conn, [{ taskId: 'again', spec: s, attempt: 1 }, { taskId: 'other', spec: spec('sleep 30') }]);
    await sleep(300);
    expect(fm.reports('again').slice(n).filter((r) => r.attempt === 1)).toEqual([]);
    // Shutdown of a task this worker never ran: reported stopped (once per session).
    fm.assign(conn, [{ taskId: 'ghost', spec: s, attempt: 4, desired: 'shutdown' }, { taskId: 'other', spec: spec('sleep 30') }]);
    const ghost = await fm.waitFor(() => lastReport(fm, 'ghost'), 'ghost report');
    expect(ghost).toMatchObject({ state: 'stopped', attempt: 4 });

    // Back-to-back sets: a start still queued when the next set drops the task never survives.
    fm.assign(conn, [{ taskId: 'blink', spec: spec('sleep 30') }, { taskId: 'other', spec: spec('sleep 30') }]);
    fm.assign(conn, [{ taskId: 'other', spec: spec('sleep 30') }]);
    await sleep(300);
    await waitFor(() => !agent.status().tasks.some((t) => t.taskId === 'blink'), 'blink not kept');
    const blink = agent.status().retired.find((t) => t.taskId === 'blink');
    for (const c of blink?.containers ?? []) if (c.pid !== undefined) expect(alive(c.pid)).toBe(false);
  });

  it('refuses a second worker on the same state dir', async () => {
    const fm = await FakeManager.start();
    const dir = tmp();
    await newAgent([fm.addr], { stateDir: dir });
    await expect(newAgent([fm.addr], { stateDir: dir })).rejects.toThrow(/in use/);
    // A lock naming a live pid that is not its writer (pid reused) is stale.
    const other = tmp();
    writeFileSync(join(other, 'worker.lock'), JSON.stringify({ pid: process.pid, start: 'not-the-start-time', boot: 'x' }));
    const a2 = await newAgent([fm.addr], { stateDir: other });
    expect(a2.status().id).toBe('w1');
  });

  it('tasks survive a SIGKILL of a real worker process and are adopted by the next one', async () => {
    const fm = await FakeManager.start();
    const stateDir = tmp();
    const tokenFile = join(stateDir, 'token');
    writeFileSync(tokenFile, TOKEN + '\n');
    const script = join(stateDir, 'worker.mjs');
    writeFileSync(
      script,
      `import { runWorker } from ${JSON.stringify(join(root, 'dist/src/worker/main.js'))};\n` +
        `await runWorker({ id: 'w9', managers: ${JSON.stringify(fm.addr)}, tokenFile: ${JSON.stringify(tokenFile)}, driver: 'process', stateDir: ${JSON.stringify(join(stateDir, 'w'))}, logLevel: 'warn' });\n`,
    );
    const startWorker = (): ChildProcess => {
      const c = spawn(process.execPath, [script], { stdio: ['ignore', 'inherit', 'inherit'] });
      children.push(c);
      return c;
    };

    const w1 = startWorker();
    const reg1 = await fm.nextRegister(0);
    expect(reg1.msg.nodeId).toBe('w9');
    fm.assign(reg1.conn, [{ taskId: 'survivor', spec: spec(['echo up; while [ ! -e go ]; do sleep 0.05; done; exit 5', 'sleep 30']) }]);
    const running = await fm.waitFor(() => fm.reports('survivor').find((r) => r.state === 'running'), 'survivor running');
    expect(running.attempt).toBe(1);

    w1.kill('SIGKILL');
    await new Promise((r) => w1.once('exit', r));
    await fm.waitFor(() => fm.conns.size === 0, 'connection to drop');

    const w2 = startWorker();
    const reg2 = await fm.nextRegister(1); // (welcomed by the fake's default)
    const adopted = (reg2.msg.tasks as TaskStatusReport[]).find((t) => t.taskId === 'survivor');
    expect(adopted).toMatchObject({ state: 'running', attempt: 1 });
    fm.assign(reg2.conn, [{ taskId: 'survivor', spec: spec(['echo up; while [ ! -e go ]; do sleep 0.05; done; exit 5', 'sleep 30']) }]);
    await sleep(200);
    // Let c0 finish with a code: the new worker reports the real exit code and fails the pod.
    writeFileSync(join(stateDir, 'w', 'process', 'tasks', 'survivor', 'work', 'go'), '');
    const failed = await fm.waitFor(() => fm.reports('survivor').find((r) => r.state === 'failed'), 'survivor failed');
    expect(failed.exitCode).toBe(5);
    w2.kill('SIGKILL');
  });
});

describe('runWorker flags', () => {
  const env = { FLOTILLA_JOIN_TOKEN: 'tok' };
  const parse = (flags: Parameters<typeof parseWorkerFlags>[0]) => parseWorkerFlags(flags, env);

  it('accepts a full set of flags', () => {
    const cfg = parse({ id: 'w1', managers: '127.0.0.1:7001, http://127.0.0.1:7002', driver: 'process', labels: 'zone=eu,disk=ssd', cpu: '2', memory: '4g', stateDir: '/tmp/x', listen: '127.0.0.1:0' });
    expect(cfg).toMatchObject({
      id: 'w1',
      managers: ['127.0.0.1:7001', '127.0.0.1:7002'],
      token: 'tok',
      drivers: ['process'],
      labels: { zone: 'eu', disk: 'ssd' },
      resources: { cpu: 2000, memory: 4 * 1024 ** 3 },
      stateDir: '/tmp/x',
      listen: '127.0.0.1:0',
    });
  });

  it.each([
    [{ managers: '127.0.0.1:7001' }, /'--id' is required/],
    [{ id: 'W 1', managers: '127.0.0.1:7001' }, /'--id' must be/],
    [{ id: 'w1' }, /'--managers' is required/],
    [{ id: 'w1', managers: 'localhost' }, /'--managers' must be host:port/],
    [{ id: 'w1', managers: '127.0.0.1:7001', driver: 'lxc' }, /must be 'process' or 'docker'/],
    [{ id: 'w1', managers: '127.0.0.1:7001', labels: 'zone' }, /key=value/],
    [{ id: 'w1', managers: '127.0.0.1:7001', labels: 'a=1,a=2' }, /sets 'a' twice/],
    [{ id: 'w1', managers: '127.0.0.1:7001', cpu: 'lots' }, /Cannot parse CPU/],
    [{ id: 'w1', managers: '127.0.0.1:7001', memory: '4 parsecs' }, /Cannot parse size/],
    [{ id: 'w1', managers: '127.0.0.1:7001', cpu: '0' }, /'--cpu' must be more than 0/],
    [{ id: 'w1', managers: '127.0.0.1:7001', listen: 'nope' }, /'--listen' must be host:port/],
    [{ id: 'w1', managers: '127.0.0.1:7001', tokenFile: '/no/such/file' }, /'--token-file' \/no\/such\/file cannot be read/],
    [{ id: 'w1', managers: '127.0.0.1:7001', stopGrace: '-1' }, /'--stop-grace'/],
    [{ id: 'w1', managers: '127.0.0.1:7001', meshStallTimeout: '10s' }, /'--mesh-stall-timeout' must be 0 \(off\) or whole milliseconds/],
    [{ id: 'w1', managers: '127.0.0.1:7001', meshStallTimeout: '5' }, /'--mesh-stall-timeout'/],
  ])('rejects %j', (flags, msg) => {
    let err: unknown;
    try {
      parse(flags);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(FlotillaError);
    expect((err as FlotillaError).code).toBe('bad_request');
    expect((err as FlotillaError).message).toMatch(msg);
  });

  it('takes the mesh stall timeout, 10 s by default, 0 for off', () => {
    expect(parse({ id: 'w1', managers: '127.0.0.1:7001' }).meshStallTimeoutMs).toBe(10_000);
    expect(parse({ id: 'w1', managers: '127.0.0.1:7001', meshStallTimeout: '0' }).meshStallTimeoutMs).toBe(0);
    expect(parse({ id: 'w1', managers: '127.0.0.1:7001', meshStallTimeout: '2500' }).meshStallTimeoutMs).toBe(2500);
  });

  it('takes several drivers', () => {
    expect(parse({ id: 'w1', managers: '127.0.0.1:7001', driver: 'process,docker' }).drivers).toEqual(['process', 'docker']);
    expect(parse({ id: 'w1', managers: '127.0.0.1:7001', driver: ['docker', 'process', 'docker'] }).drivers).toEqual(['docker', 'process']);
  });

  it('needs a token', () => {
    expect(() => parseWorkerFlags({ id: 'w1', managers: '127.0.0.1:7001' }, {})).toThrow(/no join token/);
  });
});
