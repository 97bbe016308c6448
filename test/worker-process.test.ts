// The process driver with real processes: pods, logs, stop (TERM then KILL), exit codes, pod
// failure, adoption by a new driver on the same state dir, and no shell injection.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { parseTaskSpec, type TaskSpec } from '../src/protocol/spec.js';
import type { DriverTaskStatus, LogLine } from '../src/worker/driver.js';
import { DEFAULT_ORPHAN_GRACE_MS, ProcessDriver, readProcStat, taskDirName } from '../src/worker/drivers/process.js';
import { CLI, TestCluster, consecutiveFreePorts, eventually, runCli } from './helpers/cluster.js';

const dirs: string[] = [];
const drivers: ProcessDriver[] = [];
const groups = new Set<number>();

function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'flotilla-proc-'));
  dirs.push(d);
  return d;
}

function driver(dir: string, opts: { podFailureGraceMs?: number } = {}): ProcessDriver {
  const d = new ProcessDriver({ dir, pollMs: 50, ...opts });
  drivers.push(d);
  return d;
}

function spec(containers: { command: string[]; args?: string[]; env?: Record<string, string>; name?: string; workdir?: string }[], name = 'pod'): TaskSpec {
  return parseTaskSpec({ name, driver: 'process', containers });
}

const sh = (script: string) => ({ command: ['/bin/sh', '-c', script] });

/** Remember every process group a driver reports, so afterEach can kill what is left. */
async function track(d: ProcessDriver): Promise<DriverTaskStatus[]> {
  const all = await d.list();
  for (const s of all) for (const c of s.containers ?? []) if (c.pid !== undefined) groups.add(c.pid);
  return all;
}

function alive(pid: number): boolean {
  const st = readProcStat(pid);
  return st !== null && st.state !== 'Z';
}

async function waitFor<T>(fn: () => T | Promise<T>, what: string, timeoutMs = 15_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function stateOf(d: ProcessDriver, id: string): Promise<DriverTaskStatus> {
  const s = await d.inspect(id);
  if (s === null) throw new Error(`no task ${id}`);
  return s;
}

async function collect(it: AsyncIterable<LogLine>): Promise<LogLine[]> {
  const out: LogLine[] = [];
  for await (const l of it) out.push(l);
  return out;
}

/** Wrapper processes (by command line) running for a task dir + container. */
function wrappersFor(base: string): number[] {
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const argv = readFileSync(`/proc/${e}/cmdline`, 'utf8').split('\0');
      // The wrapper leads its group; a child it forked has not exec'd yet shares its argv.
      if (argv.includes('flotilla-wrap') && argv.includes(base) && alive(Number(e)) && readProcStat(Number(e))?.pgrp === Number(e)) out.push(Number(e));
    } catch {
      // gone
    }
  }
  return out;
}

afterEach(async () => {
  for (const d of drivers.splice(0)) {
    await track(d).catch(() => undefined);
    await d.close();
  }
  for (const g of groups) {
    try {
      process.kill(-g, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  groups.clear();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('process driver', () => {
  it('runs a pod of two containers, logs their output and stops it', async () => {
    const d = driver(tmp());
    const events: DriverTaskStatus[] = [];
    await d.start('t1', spec([sh('echo hi from c0; echo oops >&2; sleep 30'), sh('echo hi from c1; sleep 30')]), (s) => events.push(s));
    const [st] = await track(d);
    expect(st!.state).toBe('running');
    expect(st!.containers!.map((c) => c.name)).toEqual(['c0', 'c1']);
    const pids = st!.containers!.map((c) => c.pid!);
    expect(pids.every(alive)).toBe(true);
    expect(st!.pid).toBe(pids[0]);
    // own process groups, not the test's
    for (const p of pids) expect(readProcStat(p)!.pgrp).toBe(p);

    const lines = await waitFor(async () => {
      const l = await collect(d.logs('t1'));
      return l.length >= 3 ? l : null;
    }, 'log lines');
    expect(lines).toContainEqual({ container: 'c0', stream: 'stdout', line: 'hi from c0' });
    expect(lines).toContainEqual({ container: 'c0', stream: 'stderr', line: 'oops' });
    expect(lines).toContainEqual({ container: 'c1', stream: 'stdout', line: 'hi from c1' });
    expect(await collect(d.logs('t1', { container: 'c1' }))).toEqual([{ container: 'c1', stream: 'stdout', line: 'hi from c1' }]);
    await expect(collect(d.logs('t1', { container: 'nope' }))).rejects.toThrow(/no container 'nope'/);
    await expect(collect(d.logs('nope'))).rejects.toThrow(/not on this worker/);

    await d.stop('t1', 5000);
    const done = await stateOf(d, 't1');
    expect(done.state).toBe('stopped');
    expect(pids.some(alive)).toBe(false);
    // Every change is an event (detail changes too); the states go forward only.
    expect(events.map((e) => e.state).filter((s, i, a) => s !== a[i - 1])).toEqual(['starting', 'running', 'stopped']);

    await d.remove('t1');
    expect(await d.inspect('t1')).toBeNull();
    expect(await d.list()).toEqual([]);
    expect(existsSync(join(d.dir, 'tasks', 't1'))).toBe(false);
  });

  it('stop sends SIGTERM to the group, then SIGKILL after the grace period', async () => {
    const d = driver(tmp());
    // c0 ignores TERM (keeps looping), c1 dies of it.
    await d.start('t-term', spec([sh("trap 'echo got TERM' TERM; echo ready; while :; do sleep 0.05; done"), sh('echo ready; sleep 30')]));
    const [st] = await track(d);
    const [p0, p1] = st!.containers!.map((c) => c.pid!);
    // (A TERM that lands while a wrapper is still forking its program is lost: SIGKILL after
    // the grace period covers that. Wait until both programs run.)
    await waitFor(async () => (await collect(d.logs('t-term'))).filter((l) => l.line === 'ready').length === 2, 'ready');

    const grace = 1500;
    const t0 = Date.now();
    const stopping = d.stop('t-term', grace);
    await waitFor(async () => (await collect(d.logs('t-term', { container: 'c0' }))).some((l) => l.line === 'got TERM'), 'TERM to reach c0');
    expect(alive(p0!)).toBe(true); // survived SIGTERM
    await stopping;
    expect(Date.now() - t0).toBeGreaterThanOrEqual(grace - 50); // SIGKILL is never sent before the grace ends
    const done = await stateOf(d, 't-term');
    expect(done.state).toBe('stopped');
    expect(done.containers!.find((c) => c.name === 'c0')!.exitCode).toBe(137);
    expect(done.containers!.find((c) => c.name === 'c1')!.exitCode).toBe(143); // 128 + SIGTERM
    expect(alive(p0!) || alive(p1!)).toBe(false);
  });

  it('a stepped wall clock neither hastens nor delays the SIGKILL after a stop (+1 h, then -1 h)', async () => {
    const d = driver(tmp());
    await d.start('t-step', spec([sh("trap 'echo got TERM' TERM; echo ready; while :; do sleep 0.05; done")]));
    const [st] = await track(d);
    const pid = st!.containers![0]!.pid!;
    await waitFor(async () => (await collect(d.logs('t-step'))).some((l) => l.line === 'ready'), 'ready');
    const realNow = Date.now.bind(Date);
    let offset = 0;
    const spy = vi.spyOn(Date, 'now').mockImplementation(() => realNow() + offset);
    try {
      const stopping = d.stop('t-step', 4000);
      await waitFor(async () => (await collect(d.logs('t-step'))).some((l) => l.line === 'got TERM'), 'TERM to reach the program');
      // Someone sets the clock an hour ahead: the grace is not over.
      offset = 3_600_000;
      await new Promise((r) => setTimeout(r, 1000));
      expect(alive(pid), 'killed at once after a forward step').toBe(true);
      expect((await stateOf(d, 't-step')).state).not.toBe('stopped');
      // And an hour back: the grace still ends (not an hour later).
      offset = -3_600_000;
      const ended = await Promise.race([stopping.then(() => 'stopped'), new Promise((r) => setTimeout(() => r('still running 20 s later'), 20_000))]);
      expect(ended).toBe('stopped');
      const done = await stateOf(d, 't-step');
      expect(done.state).toBe('stopped');
      expect(done.containers![0]!.exitCode).toBe(137);
    } finally {
      spy.mockRestore();
    }
  }, 40_000);

  it('an adopting driver honours the kill deadline its predecessor recorded, whatever the wall clock says', async () => {
    const dir = tmp();
    const a = driver(dir);
    await a.start('t-adopt', spec([sh("trap 'echo got TERM' TERM; echo ready; while :; do sleep 0.05; done")]));
    const [st] = await track(a);
    const pid = st!.containers![0]!.pid!;
    await waitFor(async () => (await collect(a.logs('t-adopt'))).some((l) => l.line === 'ready'), 'ready');
    void a.stop('t-adopt', 4000).catch(() => undefined);
    await waitFor(async () => (await collect(a.logs('t-adopt'))).some((l) => l.line === 'got TERM'), 'TERM to reach the program');
    await a.close(); // the worker restarts mid-grace
    const realNow = Date.now.bind(Date);
    const spy = vi.spyOn(Date, 'now').mockImplementation(() => realNow() + 3_600_000); // and its clock was set an hour ahead
    try {
      const b = driver(dir);
      await track(b);
      await new Promise((r) => setTimeout(r, 800));
      expect(alive(pid), 'killed at adoption: the deadline was read as past').toBe(true);
      const done = await waitFor(async () => {
        const s = await stateOf(b, 't-adopt');
        return s.state === 'stopped' ? s : null;
      }, 'the adopted stop to end', 20_000);
      expect(done.containers![0]!.exitCode).toBe(137);
      expect(alive(pid)).toBe(false);
    } finally {
      spy.mockRestore();
    }
  }, 40_000);

  it('reports exit codes: exit 3 fails the task with exitCode 3; all zero succeeds', async () => {
    const d = driver(tmp());
    await d.start('bad', spec([sh('echo bye; exit 3')]));
    await d.start('good', spec([sh('exit 0'), sh('sleep 0.2; exit 0')]));
    await track(d);
    const bad = await waitFor(async () => {
      const s = await stateOf(d, 'bad');
      return s.state === 'failed' ? s : null;
    }, 'bad to fail');
    expect(bad.exitCode).toBe(3);
    expect(bad.reason).toMatch(/container 'c0' exited with code 3/);
    expect(bad.finishedAt).toBeTypeOf('number');
    const good = await waitFor(async () => {
      const s = await stateOf(d, 'good');
      return s.state === 'succeeded' ? s : null;
    }, 'good to succeed');
    expect(good.exitCode).toBe(0);
    // Logs of a finished task are still there; follow ends by itself once the task is over.
    expect((await collect(d.logs('bad', { follow: true }))).map((l) => l.line)).toEqual(['bye']);
    // Starting a finished task again is a conflict until it is removed.
    await expect(d.start('bad', spec([sh('echo bye; exit 3')]))).rejects.toThrow(/remove it first/);
    await d.remove('bad');
    await d.start('bad', spec([sh('echo bye; exit 3')]));
    await track(d);
    await waitFor(async () => (await stateOf(d, 'bad')).state === 'failed', 'bad to fail again');
  });

  it('fails the pod when one container fails and stops the others', async () => {
    const d = driver(tmp(), { podFailureGraceMs: 2000 });
    const events: DriverTaskStatus[] = [];
    d.watch((s) => events.push(s));
    await d.start('pod', spec([sh('sleep 30'), sh('sleep 0.3; exit 4')]));
    const [st] = await track(d);
    const p0 = st!.containers![0]!.pid!;
    const done = await waitFor(async () => {
      const s = await stateOf(d, 'pod');
      return s.state === 'failed' ? s : null;
    }, 'pod to fail');
    expect(done.exitCode).toBe(4);
    expect(done.reason).toMatch(/'c1' exited with code 4/);
    expect(done.containers!.map((c) => c.exitCode)).toEqual([143, 4]);
    expect(alive(p0)).toBe(false);
    expect(events.at(-1)!.state).toBe('failed');
    expect(events.filter((e) => e.state === 'failed')).toHaveLength(1);
  });

  it('follows logs as they are written and honours tail', async () => {
    const d = driver(tmp());
    await d.start('logs', spec([sh('for i in 1 2 3 4 5; do echo line $i; sleep 0.1; done; printf partial')]));
    await track(d);
    const lines = (await collect(d.logs('logs', { follow: true }))).map((l) => l.line);
    expect(lines).toEqual(['line 1', 'line 2', 'line 3', 'line 4', 'line 5', 'partial']);
    expect((await collect(d.logs('logs', { tail: 2 }))).map((l) => l.line)).toEqual(['line 5', 'partial']);
    expect((await collect(d.logs('logs', { tail: 0 }))).map((l) => l.line)).toEqual([]);
    expect((await collect(d.logs('logs', { tail: 100 }))).length).toBe(6);

    // An aborted follow ends quietly.
    await d.start('long', spec([sh('echo one; sleep 30')]));
    await track(d);
    const ac = new AbortController();
    const got: string[] = [];
    const reading = (async () => {
      for await (const l of d.logs('long', { follow: true, signal: ac.signal })) got.push(l.line);
    })();
    await waitFor(() => got.length === 1, 'first followed line');
    ac.abort();
    await reading;
    expect(got).toEqual(['one']);
  });

  it('adopts running tasks after the driver is dropped, without duplicates', async () => {
    const dir = tmp();
    const a = driver(dir);
    await a.start('keep', spec([sh('echo started; sleep 30'), sh('sleep 30')]));
    const [before] = await track(a);
    const pids = before!.containers!.map((c) => c.pid!);
    await a.close(); // the worker "dies": nothing is stopped

    const b = driver(dir);
    const [after] = await track(b);
    expect(after!.taskId).toBe('keep');
    expect(after!.state).toBe('running');
    expect(after!.pid).toBe(before!.pid);
    expect(after!.containers!.map((c) => c.pid)).toEqual(pids);
    expect(pids.every(alive)).toBe(true);

    // Starting it again (same spec) is a no-op: same pids, one wrapper per container.
    await b.start('keep', spec([sh('echo started; sleep 30'), sh('sleep 30')]));
    expect((await stateOf(b, 'keep')).containers!.map((c) => c.pid)).toEqual(pids);
    expect(wrappersFor(join(b.dir, 'tasks', 'keep', 'c0'))).toEqual([pids[0]]);
    expect(wrappersFor(join(b.dir, 'tasks', 'keep', 'c1'))).toEqual([pids[1]]);
    // A different spec under the same id is refused.
    await expect(b.start('keep', spec([sh('sleep 1')]))).rejects.toThrow(/different spec/);
    // Logs written before the "restart" are still readable.
    expect((await collect(b.logs('keep'))).map((l) => l.line)).toContain('started');

    // The adopting driver can stop it.
    await b.stop('keep', 2000);
    expect((await stateOf(b, 'keep')).state).toBe('stopped');
    expect(pids.some(alive)).toBe(false);
  });

  it('reports the real exit code of a task that exited while no driver watched', async () => {
    const dir = tmp();
    const a = driver(dir);
    await a.start('gone', spec([sh('sleep 0.3; exit 7')]));
    await a.start('fine', spec([sh('sleep 0.3')]));
    await track(a);
    await a.close();
    const taskDir = join(dir, 'tasks', taskDirName('gone'));
    await waitFor(() => existsSync(join(taskDir, 'c0.exit')) && existsSync(join(dir, 'tasks', 'fine', 'c0.exit')), 'exit files');

    const b = driver(dir);
    const events: DriverTaskStatus[] = [];
    b.watch((s) => events.push(s));
    const gone = await stateOf(b, 'gone');
    expect(gone.state).toBe('failed');
    expect(gone.exitCode).toBe(7);
    expect((await stateOf(b, 'fine')).state).toBe('succeeded');
    expect(events.map((e) => `${e.taskId}:${e.state}`).sort()).toEqual(['fine:succeeded', 'gone:failed']);
  });

  it('does not mistake a recycled pid for the task', async () => {
    const dir = tmp();
    const a = driver(dir);
    await a.start('rec', spec([sh('sleep 30')]));
    const [st] = await track(a);
    await a.close();
    const pid = st!.pid!;
    process.kill(-pid, 'SIGKILL'); // the whole group dies: no exit file
    await waitFor(() => !alive(pid), 'group to die');
    // Pretend the pid was recycled: point the record at a live process that is not ours.
    const file = join(dir, 'tasks', 'rec', 'task.json');
    const rec = JSON.parse(readFileSync(file, 'utf8'));
    rec.containers[0].pid = process.pid;
    rec.containers[0].procStart = readProcStat(process.pid)!.start;
    writeFileSync(file, JSON.stringify(rec));

    const b = driver(dir);
    const s = await stateOf(b, 'rec');
    expect(s.state).toBe('failed');
    expect(s.exitCode).toBeUndefined();
    expect(s.reason).toMatch(/killed/);
    await b.remove('rec'); // must not signal the test process' group
    expect(alive(process.pid)).toBe(true);
  });

  it('adopts a container whose pid only the wrapper recorded; fails one that never started', async () => {
    const dir = tmp();
    const a = driver(dir);
    await a.start('mid', spec([sh('sleep 30'), sh('sleep 30')]));
    const [st] = await track(a);
    await a.close();
    // The worker "died" after launching c0 but before recording anything, and before c1.
    const file = join(dir, 'tasks', 'mid', 'task.json');
    const rec = JSON.parse(readFileSync(file, 'utf8'));
    delete rec.containers[0].pid;
    delete rec.containers[0].procStart;
    delete rec.containers[1].pid;
    delete rec.containers[1].procStart;
    writeFileSync(file, JSON.stringify(rec));
    // The wrapper writes c1.pid once it runs, which may be just after start() returned.
    const c1pid = join(dir, 'tasks', 'mid', 'c1.pid');
    await waitFor(async () => (existsSync(c1pid) ? true : null), 'c1.pid written');
    rmSync(c1pid);
    const p1 = st!.containers![1]!.pid!;
    process.kill(-p1, 'SIGKILL'); // (c1 "never ran")

    const b = driver(dir);
    const s = await waitFor(async () => {
      const x = await stateOf(b, 'mid');
      return x.state === 'failed' ? x : null;
    }, 'mid to fail');
    expect(s.reason).toMatch(/'c1' was never started/);
    // c0 was found through its pid file, and stopped as the pod failed.
    expect(s.containers![0]!.pid).toBe(st!.containers![0]!.pid);
    expect(s.containers![0]!.exitCode).toBe(143);
  });

  it('a stop that arrives while the pod is starting launches nothing more', async () => {
    const d = driver(tmp());
    const starting = d.start('early', spec([sh('sleep 30'), sh('sleep 30'), sh('sleep 30')]));
    const stopping = d.stop('early', 1000);
    await Promise.all([starting, stopping]);
    const s = await stateOf(d, 'early');
    await track(d);
    expect(s.state).toBe('stopped');
    for (const c of s.containers!) if (c.pid !== undefined) expect(alive(c.pid)).toBe(false);
    expect(s.containers!.filter((c) => c.pid === undefined).length).toBeGreaterThan(0);
  });

  it('a SIGTERM sent while a wrapper is still starting its program is not lost', async () => {
    const d = driver(tmp());
    const ids = Array.from({ length: 12 }, (_, i) => `race-${i}`);
    // Start and stop at once, staggered by a few ms, so some TERMs land in the fork/exec window.
    await Promise.all(
      ids.map(async (id, i) => {
        await d.start(id, spec([sh('sleep 30'), { command: ['/bin/sleep', '30'] }]));
        await new Promise((r) => setTimeout(r, i % 4));
        await d.stop(id, 20_000);
      }),
    );
    await track(d);
    for (const id of ids) {
      const s = await stateOf(d, id);
      expect(s.state).toBe('stopped');
      // 143: the program got the TERM; undefined: the wrapper died of it before running the
      // program. Never 137 (the TERM was lost and the grace period ran out).
      for (const c of s.containers!) expect([143, undefined], `${id}/${c.name}`).toContain(c.exitCode);
    }
  }, 30_000);

  it('passes args and env literally (no shell injection)', async () => {
    const dir = tmp();
    const marker = join(dir, 'pwned');
    const tricky = [`a b`, `"quoted"`, `'single'`, `$(touch ${marker})`, `\`touch ${marker}\``, `; touch ${marker}`, `$HOME`, `\\n`, ''];
    const d = driver(dir);
    await d.start(
      'inj',
      spec([
        { name: 'args', command: ['printf', '[%s]\\n'], args: tricky },
        { name: 'env', command: ['/usr/bin/env'], env: { TRICKY: tricky.join('|'), PATH: '/usr/bin:/bin' } },
      ]),
    );
    await track(d);
    await waitFor(async () => (await stateOf(d, 'inj')).state === 'succeeded', 'inj to succeed');
    const argLines = (await collect(d.logs('inj', { container: 'args' }))).map((l) => l.line);
    expect(argLines).toEqual(tricky.map((t) => `[${t}]`));
    const env = (await collect(d.logs('inj', { container: 'env' }))).map((l) => l.line);
    expect(env).toContain(`TRICKY=${tricky.join('|')}`);
    expect(env).toContain('FLOTILLA_TASK_ID=inj');
    expect(env).toContain('FLOTILLA_CONTAINER=env');
    expect(env.some((l) => l.startsWith('PATH=/usr/bin:/bin'))).toBe(true);
    expect(existsSync(marker)).toBe(false);

    // A task id that is not a safe file name still works.
    await d.start('../../evil id $(x)', spec([sh('exit 0')]));
    await track(d);
    await waitFor(async () => (await stateOf(d, '../../evil id $(x)')).state === 'succeeded', 'odd id');
    expect(readdirSync(join(dir, 'tasks')).every((n) => !n.includes('/') && !n.startsWith('.'))).toBe(true);
  });

  it('fails (does not throw) when the executable or workdir is missing', async () => {
    const d = driver(tmp());
    await d.start('noexe', spec([sh('sleep 30'), { command: ['no-such-program-xyz'] }]));
    const s = await stateOf(d, 'noexe');
    expect(s.state).toBe('failed');
    expect(s.reason).toMatch(/container 'c1'.*'no-such-program-xyz' was not found/);
    expect(s.containers!.every((c) => c.pid === undefined)).toBe(true); // nothing was launched

    await d.start('nodir', spec([{ command: ['/bin/true'], workdir: '/definitely/not/here' }]));
    expect((await stateOf(d, 'nodir')).reason).toMatch(/workdir '\/definitely\/not\/here' is not a directory/);

    // A relative workdir is relative to the task's scratch dir; the default is that dir.
    await d.start('pwd', spec([{ command: ['/bin/sh', '-c', 'mkdir -p sub && pwd'] }]));
    await waitFor(async () => (await stateOf(d, 'pwd')).state === 'succeeded', 'pwd');
    expect((await collect(d.logs('pwd'))).map((l) => l.line)).toEqual([join(d.dir, 'tasks', 'pwd', 'work')]);

    await expect(d.start('docker', parseTaskSpec({ name: 'x', containers: [{ image: 'busybox' }] }))).rejects.toThrow(/must be 'process'/);
  });
});

// ---------------------------------------------------------------------------------------------
// Tasks die with their worker (issue 18 part 5): the keeper stops them once the worker has been
// gone for orphanGraceMs without a successor; `flotilla up`'s Ctrl-C stops them at once.

const DIST_PROCESS = join(import.meta.dirname, '..', 'dist', 'src', 'worker', 'drivers', 'process.js');

/** A worker stand-in: another node process whose driver starts one task; resolves with its pids. */
async function workerProcess(dir: string, taskId: string, orphanGraceMs: number): Promise<{ child: ChildProcess; pids: number[] }> {
  const script = `
    import { ProcessDriver } from ${JSON.stringify(DIST_PROCESS)};
    import { parseTaskSpec } from ${JSON.stringify(join(import.meta.dirname, '..', 'dist', 'src', 'protocol', 'spec.js'))};
    const d = new ProcessDriver({ dir: ${JSON.stringify(dir)}, pollMs: 50, podFailureGraceMs: 1000, orphanGraceMs: ${orphanGraceMs} });
    await d.start(${JSON.stringify(taskId)}, parseTaskSpec({ name: 'p', driver: 'process', containers: [
      { command: ['/bin/sh', '-c', 'sleep 300'] },
      { command: ['/bin/sh', '-c', 'trap "" TERM; while :; do sleep 0.2; done'] },
    ] }));
    const s = await d.inspect(${JSON.stringify(taskId)});
    console.log(JSON.stringify(s.containers.map((c) => c.pid)));
    setInterval(() => {}, 1000);
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  const line = await waitFor(() => (out.includes('\n') ? out.split('\n')[0] : null), 'the worker stand-in to start its task');
  const pids = JSON.parse(line) as number[];
  for (const p of pids) groups.add(p);
  return { child, pids };
}

async function sigkill(child: ChildProcess): Promise<void> {
  const done = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await done;
}

/** Every process (pid) whose process group is one of `pgids`. */
function groupMembers(pgids: number[]): number[] {
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const st = readProcStat(Number(e));
    if (st !== null && st.state !== 'Z' && pgids.includes(st.pgrp)) out.push(Number(e));
  }
  return out;
}

describe('tasks die with their worker', () => {
  it('a SIGKILLed worker: its task processes are stopped once orphanGraceMs passed (TERM, then KILL); a later driver reports the task stopped', async () => {
    const dir = tmp();
    const { child, pids } = await workerProcess(dir, 'orphan', 1500);
    const killedAt = Date.now();
    await sigkill(child);
    expect(pids.every(alive)).toBe(true); // not at once: a restarting worker gets the window
    await waitFor(() => groupMembers(pids).length === 0, 'every process of the task to be gone', 20_000);
    console.log(`task processes gone ${Date.now() - killedAt} ms after the worker's SIGKILL (orphanGraceMs 1500, kill grace 1000)`);
    const b = driver(dir);
    const s = await stateOf(b, 'orphan');
    expect(s.state).toBe('stopped');
    expect(s.reason).toMatch(/worker was gone for more than 2 s/);
  });

  it('a successor driver within the window takes the tasks over: nothing is stopped', async () => {
    const dir = tmp();
    const { child, pids } = await workerProcess(dir, 'kept', 1500);
    await sigkill(child);
    const b = driver(dir);
    expect((await stateOf(b, 'kept')).state).toBe('running');
    await new Promise((r) => setTimeout(r, 4000)); // past the old keeper's grace + kill grace
    expect(pids.every(alive)).toBe(true);
    expect((await stateOf(b, 'kept')).state).toBe('running');
    await b.stop('kept', 500);
    expect(groupMembers(pids)).toEqual([]);
  });

  it('a real worker killed with SIGKILL: its task processes are gone within the default window', async () => {
    const cluster = await TestCluster.managers(1, ['--node-grace', '2000', '--worker-heartbeat', '300']);
    try {
      const client = cluster.client(undefined, 30_000);
      cluster.startWorker('w1');
      await eventually(async () => (await client.get<{ nodes: { status: string }[] }>('/v1/nodes')).nodes.some((n) => n.status === 'ready'), 30_000, 'worker ready');
      const created = await client.post<{ tasks: { id: string }[] }>('/v1/tasks', [0, 1, 2].map((i) => ({ name: `s${i}`, driver: 'process', containers: [{ command: ['/bin/sleep', '600'] }] })));
      const pidFiles = created.tasks.map((t) => join(cluster.dir, 'w1', 'process', 'tasks', taskDirName(t.id), 'c0.pid'));
      const pids = await eventually(() => (pidFiles.every((f) => existsSync(f)) ? pidFiles.map((f) => Number(readFileSync(f, 'utf8').trim())) : null), 30_000, 'task pids');
      for (const p of pids) groups.add(p);
      expect(pids.every(alive)).toBe(true);
      const t0 = Date.now();
      await cluster.killAndWait('w1');
      await waitFor(() => groupMembers(pids).length === 0, 'the dead worker\'s task processes to be gone', DEFAULT_ORPHAN_GRACE_MS + 20_000);
      console.log(`SIGKILLed worker: its ${pids.length} task processes gone after ${Date.now() - t0} ms (default orphan grace ${DEFAULT_ORPHAN_GRACE_MS} ms)`);
    } finally {
      await cluster.stop();
    }
  }, 90_000);

  it('Ctrl-C on `flotilla up --driver process` leaves no task process alive, and says so', async () => {
    const upDir = mkdtempSync(join(tmpdir(), 'flotilla-upk-'));
    dirs.push(upDir);
    const port = await consecutiveFreePorts(2);
    const up = spawn(process.execPath, [CLI, 'up', '--driver', 'process', '--managers', '1', '--workers', '2', '--insecure', '--port', String(port), '--dir', upDir], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    up.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    up.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => up.once('exit', (code) => r(code)));
    try {
      await eventually(() => out.includes('flotilla is up'), 60_000, 'flotilla up');
      const env = { FLOTILLA_DIR: upDir, FLOTILLA_MANAGERS: '' };
      for (let i = 0; i < 4; i++) {
        const r = await runCli(['run', '-d', '--name', `s${i}`, '--', '/bin/sh', '-c', 'sleep 600'], { env });
        expect(r.status, r.stderr).toBe(0);
      }
      const pidFiles = (): string[] =>
        ['w1', 'w2'].flatMap((w) => {
          const t = join(upDir, w, 'process', 'tasks');
          return existsSync(t) ? readdirSync(t).map((d) => join(t, d, 'c0.pid')).filter((f) => existsSync(f)) : [];
        });
      const pids = await eventually(() => (pidFiles().length === 4 ? pidFiles().map((f) => Number(readFileSync(f, 'utf8').trim())) : null), 30_000, '4 task processes');
      for (const p of pids) groups.add(p);
      expect(pids.every(alive)).toBe(true);
      up.kill('SIGINT');
      expect(await exited).toBe(0);
      expect(groupMembers(pids)).toEqual([]);
      expect(out).toMatch(/stopped 4 task processes \(pids [\d ]+\)/);
    } finally {
      if (up.exitCode === null && up.signalCode === null) up.kill('SIGKILL');
    }
  }, 120_000);
});
