// Real multi-process clusters for integration tests: managers and workers are separate OS
// processes (the built CLI), with real LevelDB directories and loopback sockets.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdtempSync, mkdirSync, readdirSync, readFileSync, writeFileSync, rmSync, createWriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { FlotillaClient } from '../../src/client/client.js';
import { workerToken } from '../../src/manager/auth.js';

export const ROOT = join(import.meta.dirname, '..', '..');
export const CLI = join(ROOT, 'dist', 'src', 'cli', 'main.js');
export const SECRET = 'test-cluster-secret-0123456789abcdef';

export async function freePorts(n: number): Promise<number[]> {
  const servers: net.Server[] = [];
  const ports: number[] = [];
  for (let i = 0; i < n; i++) {
    const s = net.createServer();
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
    ports.push((s.address() as net.AddressInfo).port);
    servers.push(s);
  }
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

export interface ProcInfo {
  id: string;
  addr: string;
  proc: ChildProcess | null;
  args: string[];
  logFile: string;
}

export class TestCluster {
  readonly dir: string;
  readonly managers = new Map<string, ProcInfo>();
  readonly workers = new Map<string, ProcInfo>();
  readonly secretFile: string;
  readonly tokenFile: string;
  /** With TLS: the directory `flotilla init` filled (CA, secret, join tokens) and the CA PEM. */
  caDir: string | null = null;
  caPem: string | undefined;

  constructor(prefix = 'flotilla-it-') {
    this.dir = mkdtempSync(join(tmpdir(), prefix));
    this.secretFile = join(this.dir, 'secret');
    writeFileSync(this.secretFile, SECRET, { mode: 0o600 });
    this.tokenFile = join(this.dir, 'worker-token');
  }

  /** Turns mutual TLS on for the managers and workers started from now on (a CA as `flotilla init` makes it). */
  async enableTls(): Promise<void> {
    const { initCluster } = await import('../../src/cli/init-cmd.js');
    this.caDir = join(this.dir, 'cluster');
    mkdirSync(this.caDir, { recursive: true });
    writeFileSync(join(this.caDir, 'secret'), SECRET, { mode: 0o600 });
    const r = await initCluster(this.caDir);
    this.caPem = readFileSync(r.caCert, 'utf8');
  }

  /** Environment for runCli against this cluster (its CA when TLS is on). */
  cliEnv(): Record<string, string> {
    return this.caDir ? { FLOTILLA_CA: join(this.caDir, 'ca.crt') } : {};
  }

  static async managers(n: number, extra: string[] = [], opts: { tls?: boolean } = {}): Promise<TestCluster> {
    const c = new TestCluster();
    if (opts.tls) await c.enableTls();
    const ports = await freePorts(n);
    const members = ports.map((p, i) => `m${i + 1}=127.0.0.1:${p}`).join(',');
    for (let i = 0; i < n; i++) c.startManager(`m${i + 1}`, `127.0.0.1:${ports[i]}`, ['--bootstrap', members, ...extra]);
    await c.waitForLeader();
    return c;
  }

  startManager(id: string, addr: string, extra: string[] = []): ProcInfo {
    const mode = extra.some((a) => a === '--insecure' || a === '--ca' || a === '--join-token-file') ? [] : this.caDir ? ['--ca', this.caDir] : ['--insecure'];
    const args = [CLI, 'manager', '--id', id, '--listen', addr, '--data', join(this.dir, id), '--secret-file', this.secretFile, ...mode, ...extra];
    const info: ProcInfo = { id, addr, proc: null, args, logFile: join(this.dir, `${id}.log`) };
    this.managers.set(id, info);
    this.spawn(info);
    return info;
  }

  private spawn(info: ProcInfo): void {
    const out = createWriteStream(info.logFile, { flags: 'a' });
    const p = spawn(process.execPath, info.args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, FLOTILLA_LOG_LEVEL: process.env.FLOTILLA_LOG_LEVEL ?? 'info' } });
    p.stdout!.pipe(out);
    p.stderr!.pipe(out);
    info.proc = p;
  }

  restart(id: string): void {
    const info = this.managers.get(id) ?? this.workers.get(id)!;
    if (info.proc && info.proc.exitCode === null && info.proc.signalCode === null) throw new Error(`${id} is still running`);
    this.spawn(info);
  }

  kill(id: string, signal: NodeJS.Signals = 'SIGKILL'): void {
    const info = this.managers.get(id) ?? this.workers.get(id)!;
    info.proc?.kill(signal);
  }

  async killAndWait(id: string): Promise<void> {
    const info = this.managers.get(id) ?? this.workers.get(id)!;
    const p = info.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const done = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await done;
  }

  /** Starts a worker process (process driver) following every manager. */
  startWorker(id: string, extra: string[] = []): ProcInfo {
    writeFileSync(this.tokenFile, this.caDir ? readFileSync(join(this.caDir, 'worker-token'), 'utf8') : workerToken(SECRET));
    const args = [
      CLI, 'worker', '--id', id, '--managers', this.addrs().join(','), '--token-file', this.tokenFile,
      '--driver', 'process', '--state-dir', join(this.dir, id), '--listen', '127.0.0.1:0', '--stop-grace', '2000', ...extra,
    ];
    const info: ProcInfo = { id, addr: '', proc: null, args, logFile: join(this.dir, `${id}.log`) };
    this.workers.set(id, info);
    this.spawn(info);
    return info;
  }

  addrs(ids?: string[]): string[] {
    return [...this.managers.values()].filter((m) => !ids || ids.includes(m.id)).map((m) => m.addr);
  }

  /** A client of the managers; with TLS it authenticates as admin by the cluster's admin client certificate (the API of a TLS cluster is never open). */
  client(ids?: string[], timeoutMs = 15_000): FlotillaClient {
    return new FlotillaClient(this.addrs(ids), { timeoutMs, ca: this.caPem, ...(this.adminCert() ?? {}) });
  }

  /** The admin client certificate `flotilla init` wrote (TLS only). */
  adminCert(): { cert: string; key: string } | undefined {
    if (!this.caDir) return undefined;
    return { cert: readFileSync(join(this.caDir, 'admin.crt'), 'utf8'), key: readFileSync(join(this.caDir, 'admin.key'), 'utf8') };
  }

  async status(id: string): Promise<Record<string, any> | null> {
    const info = this.managers.get(id)!;
    try {
      return await new FlotillaClient([info.addr], { timeoutMs: 1000, attemptTimeoutMs: 1000, ca: this.caPem }).get('/v1/status', { pinned: true, timeoutMs: 1000 });
    } catch {
      return null;
    }
  }

  /** Waits until the live managers agree on one leader; returns its id. */
  async waitForLeader(timeoutMs = 20_000, exclude: string[] = []): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const ids = [...this.managers.keys()].filter((id) => !exclude.includes(id));
      const sts = await Promise.all(ids.map((id) => this.status(id)));
      const leaders = sts.filter((s) => s && s.role === 'leader');
      if (leaders.length === 1) {
        const l = leaders[0]!;
        const agree = sts.filter((s) => s && s.leader === l.id && s.term === l.term).length;
        if (agree > ids.length / 2) return l.id as string;
      }
      await sleep(50);
    }
    throw new Error(`no leader within ${timeoutMs} ms; logs in ${this.dir}`);
  }

  async stop(): Promise<void> {
    const all = [...this.workers.values(), ...this.managers.values()];
    await Promise.all(
      all.map(async (i) => {
        const p = i.proc;
        if (!p || p.exitCode !== null || p.signalCode !== null) return;
        const done = new Promise((r) => p.once('exit', r));
        try {
          p.kill('SIGCONT');
        } catch {}
        p.kill('SIGKILL');
        await done;
      }),
    );
    if (!process.env.KEEP_TEST_DIRS) rmSync(this.dir, { recursive: true, force: true });
  }

  mkdir(name: string): string {
    const d = join(this.dir, name);
    mkdirSync(d, { recursive: true });
    return d;
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function eventually<T>(fn: () => Promise<T | undefined | null | false> | T | undefined | null | false, timeoutMs = 15_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v as T;
    } catch (e) {
      last = e;
    }
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
}

/** Runs the built CLI without blocking this process; resolves with its exit status and output. */
export function runCli(args: string[], opts: { env?: Record<string, string>; timeoutMs?: number; input?: string } = {}): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: opts.timeoutMs ?? 90_000, env: { ...process.env, ...opts.env } }, (err, stdout, stderr) => {
      const status = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0;
      resolve({ status, stdout, stderr });
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** A first port p such that p…p+n-1 are all free on 127.0.0.1 (for `flotilla up --port p`). */
export async function consecutiveFreePorts(n: number): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * 40_000);
    const servers: net.Server[] = [];
    let ok = true;
    for (let i = 0; i < n && ok; i++) {
      const s = net.createServer();
      ok = await new Promise<boolean>((r) => {
        s.once('error', () => r(false));
        s.listen(base + i, '127.0.0.1', () => r(true));
      });
      if (ok) servers.push(s);
    }
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
    if (ok) return base;
  }
  throw new Error(`no ${n} consecutive free ports found`);
}

/**
 * SIGKILLs the task processes recorded in `pidDir` (files named `<task>.<pid>`), by process
 * group first: task processes of the process driver outlive their worker for a bounded window.
 */
export function killTaskProcesses(pidDir: string): void {
  for (const f of readdirSync(pidDir)) {
    const pid = Number(f.split('.').pop());
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {}
    }
  }
}

/** The pids recorded in `pidDir` for one task (files `<task>.<pid>`, written by the task itself). */
export function taskPids(pidDir: string, taskId: string): number[] {
  return readdirSync(pidDir)
    .filter((f) => f.startsWith(`${taskId}.`))
    .map((f) => Number(f.slice(taskId.length + 1)));
}

/**
 * SIGKILLs one task's recorded processes. A task writes its pid file when its command starts,
 * which can be a moment after the worker reports it running, so this waits for the file and
 * fails if none comes: a kill that found nothing must not pass for one that happened.
 */
export async function killTaskByPidFile(pidDir: string, taskId: string, timeoutMs = 20_000): Promise<number[]> {
  const pids = await eventually(() => {
    const ps = taskPids(pidDir, taskId);
    return ps.length > 0 ? ps : null;
  }, timeoutMs, `the pid file of ${taskId}`);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {}
  }
  return pids;
}
