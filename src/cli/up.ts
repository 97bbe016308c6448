// `flotilla up`: a whole local cluster as separate processes (managers and workers), with its
// data, secret and join token under one directory. Ctrl-C stops everything it started.
//
// While it runs, `up` keeps <dir>/processes.json up to date: every node process it started
// (pid, argv, the environment it sets on top of its own, start/exit), and the address and
// token of its control endpoint, a small HTTP server on 127.0.0.1 through which
// `flotilla board` asks it to restart a node (POST /v1/restart {"node":"m2"}). The restarted
// process is again a child of `up`: its log joins the stream and Ctrl-C stops it with the
// rest. The board kills a node (K) itself, with SIGKILL to the recorded pid after checking
// that the pid still runs that node (see `pidRunsNode`). The file is removed on a clean stop.
//
// Stopping: Ctrl-C, SIGTERM, SIGHUP, or its own output going away (`flotilla up | tee` after
// tee died) stops every node (SIGTERM, then SIGKILL after 5 s). The nodes also watch their
// stdin, a pipe from `up` (FLOTILLA_STOP_ON_STDIN_EOF): if `up` dies without stopping them, they
// stop on their own rather than live on holding their data directories.
// Starting: the summary counts the nodes that really run (a manager that exited, e.g. because
// another process holds its data directory, is named with the reason it gave).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync, chmodSync, renameSync, rmSync } from 'node:fs';
import { randomBytes, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { FlotillaClient } from '../client/client.js';
import { monoNow } from '../clock.js';
import { action, parseIntFlag, upDir, UsageError } from './util.js';
import { REPEAT_MS } from '../signals.js';
import { checkAddressesKept, netnsForUp, netnsManagerAddrs, precheckNetns, type UpNetns } from './up-netns.js';

interface UpFlags {
  managers: string;
  workers: string;
  driver?: string;
  dir: string;
  port: string;
  host: string;
  insecure?: boolean;
  netns?: boolean;
  netnsSubnet: string;
}

export interface ClusterFile {
  managers: string[];
  workers: string[];
  driver: string;
  port: number;
  web: string;
  /** The cluster CA certificate the CLI trusts (relative to the directory); null without TLS. */
  ca?: string | null;
}

/** One node process started by `flotilla up`, as recorded in <dir>/processes.json. */
export interface ProcessRecord {
  /** The node id: m1…, w1… */
  node: string;
  kind: 'manager' | 'worker';
  /** The running process, or null once it exited. */
  pid: number | null;
  /** The full command line: [node binary, CLI script, ...arguments]. */
  argv: string[];
  /** Variables set on top of the environment of `up` itself. */
  env: Record<string, string>;
  cwd: string;
  startedAt: number;
  /** How many times it was started (1 = never restarted). */
  starts: number;
  exit?: { code: number | null; signal: string | null; at: number };
}

export interface ProcessesFile {
  version: 1;
  /** The data directory (absolute). */
  dir: string;
  /** The `flotilla up` process and its control endpoint (127.0.0.1:port, bearer token). */
  up: { pid: number; control: string; token: string };
  /** Manager addresses, to match the file to the cluster a board watches. */
  managers: string[];
  processes: ProcessRecord[];
}

export const PROCESSES_FILE = 'processes.json';

/** Reads <dir>/processes.json; null when there is none (no `flotilla up` runs there). */
export function readProcesses(dir: string): ProcessesFile | null {
  const f = join(dir, PROCESSES_FILE);
  let raw: string;
  try {
    raw = readFileSync(f, 'utf8');
  } catch {
    return null;
  }
  const v = JSON.parse(raw) as ProcessesFile;
  if (v?.version !== 1 || !Array.isArray(v.processes) || !Array.isArray(v.managers) || typeof v.up?.control !== 'string') {
    throw new Error(`${f} is not a processes file written by flotilla up`);
  }
  return v;
}

/** The command line of a live process, or null when it is gone (or cannot be read). */
export function processCmdline(pid: number): string[] | null {
  if (!Number.isInteger(pid) || pid <= 1) return null;
  try {
    const raw = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return raw.split('\0').filter((a, i, all) => a !== '' || i < all.length - 1);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' && existsSync('/proc/self/cmdline')) return null;
  }
  // No /proc (macOS, BSD): ask ps, which joins the arguments with spaces.
  try {
    const out = execFileSync('ps', ['-o', 'command=', '-p', String(pid)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return out ? out.split(' ') : null;
  } catch {
    return null;
  }
}

/**
 * True when `pid` still runs the node process that was recorded: its command line holds the
 * recorded arguments (from the CLI script on, in order), and they name that node's id. A pid
 * that was reused by anything else, or a node started differently, is refused.
 */
export function pidRunsNode(pid: number, rec: Pick<ProcessRecord, 'argv' | 'node'>): boolean {
  const cmd = processCmdline(pid);
  if (!cmd || cmd.length === 0) return false;
  const want = rec.argv.slice(1); // the node binary may show under another name
  const joined = cmd.join(' ');
  if (!joined.includes(want.join(' '))) return false;
  const i = want.indexOf('--id');
  return i >= 0 && want[i + 1] === rec.node;
}

const CLI = fileURLToPath(new URL('./main.js', import.meta.url));
const COLORS = [36, 35, 33, 32, 34, 31, 96, 95];

export function registerUp(program: Command): void {
  program
    .command('up')
    .description('start a local cluster (managers + workers as separate processes) and stream its log')
    .option('--managers <n>', 'number of managers (odd: 1, 3, 5, 7)', '3')
    .option('--workers <n>', 'number of workers', '2')
    .option('--driver <driver>', 'docker | process (default: docker when the engine answers, else process)')
    .option('--dir <dir>', 'where data, secret and token live', '.flotilla')
    .option('--port <port>', 'first manager port; managers use consecutive ports', '7001')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--insecure', 'no TLS (plain HTTP API, unencrypted links); the default is mutual TLS with a CA made under --dir')
    .option('--netns', 'multi-host test bed (root only): every node in its own network namespace on a bridge, with its own address')
    .option('--netns-subnet <cidr>', 'the private /24 of the --netns test bed (the host gets .1)', '10.213.7.0/24')
    .addHelpText(
      'after',
      `
Examples:
  flotilla up                         # 3 managers + 2 workers, web page on https://127.0.0.1:7001
  flotilla up --managers 5 --workers 3 --driver process --port 8001
A second 'flotilla up' with the same --dir restarts the same cluster with its state.`,
    )
    .action(
      action(async (flags: UpFlags, cmd: Command) => {
        // The program's global --managers (a list of addresses) takes the flag first: a count there is up's.
        const g = (cmd.parent?.opts() as { managers?: string } | undefined)?.managers;
        if (g !== undefined) {
          if (!/^\d+$/.test(g)) throw new UsageError(`--managers of \`flotilla up\` is a number of managers (1–9), got '${g}'`);
          flags.managers = g;
        }
        return up(flags);
      }),
    );
}

async function up(flags: UpFlags): Promise<void> {
  const nm = parseIntFlag('--managers', flags.managers, 1, 9);
  const nw = parseIntFlag('--workers', flags.workers, 0, 50);
  const port = parseIntFlag('--port', flags.port, 1, 65535 - nm);
  if (flags.driver !== undefined && flags.driver !== 'docker' && flags.driver !== 'process') throw new UsageError(`--driver must be docker or process, got '${flags.driver}'`);
  if (flags.netns) precheckNetns(flags);
  const dir = resolve(flags.dir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const secretFile = join(dir, 'secret');
  if (!existsSync(secretFile)) writeFileSync(secretFile, randomBytes(32).toString('hex') + '\n', { mode: 0o600 });
  chmodSync(secretFile, 0o600);
  const secret = readFileSync(secretFile, 'utf8').trim();
  const { workerToken } = await import('../manager/auth.js');
  const tokenFile = join(dir, 'worker-token');
  // Kept when present: `flotilla token rotate worker --out <dir>/worker-token` replaces it.
  if (!existsSync(tokenFile)) writeFileSync(tokenFile, workerToken(secret) + '\n', { mode: 0o600 });
  chmodSync(tokenFile, 0o600);
  // TLS (the default): the cluster CA beside the secret; managers issue their own certificates
  // from it, workers exchange the join token (which must then carry the CA fingerprint) for theirs.
  let caPem: string | undefined;
  let securityArgs = ['--insecure'];
  if (!flags.insecure) {
    const { initCluster } = await import('./init-cmd.js');
    const { caFingerprint, formatJoinToken, parseJoinToken, writeSecretFile } = await import('../tls/pki.js');
    const r = await initCluster(dir);
    caPem = readFileSync(r.caCert, 'utf8');
    const fp = caFingerprint(caPem);
    const cur = parseJoinToken(readFileSync(tokenFile, 'utf8'));
    if (cur.caFingerprint !== fp) writeSecretFile(tokenFile, formatJoinToken(fp, cur.secret) + '\n');
    securityArgs = ['--ca', dir];
  } else {
    process.stderr.write('WARNING: --insecure: plain HTTP API and unencrypted links; for local development only\n');
  }
  const scheme = caPem ? 'https' : 'http';
  const adminTokenFile = join(dir, 'admin-token');
  if (existsSync(adminTokenFile)) chmodSync(adminTokenFile, 0o600);

  // One `flotilla up` per directory: a second one would find the first one's managers on the
  // same ports, and overwrite (then remove) its processes.json.
  let running: ProcessesFile | null = null;
  try {
    running = readProcesses(dir);
  } catch {}
  const runningCmd = running && running.up.pid !== process.pid ? processCmdline(running.up.pid) : null;
  if (running && runningCmd?.includes('up') && runningCmd.some((a) => /(^|\/)(main\.js|flotilla)$/.test(a))) {
    throw new Error(`flotilla up already runs the cluster in ${dir} (pid ${running.up.pid}); stop it first (Ctrl-C in its terminal)`);
  }

  const cfgFile = join(dir, 'cluster.json');
  let previous: ClusterFile | null = null;
  if (existsSync(cfgFile)) previous = JSON.parse(readFileSync(cfgFile, 'utf8')) as ClusterFile;
  const host = flags.host;
  const ids = Array.from({ length: nm }, (_, i) => `m${i + 1}`);
  // --netns: each node its own namespace and address (src/cli/up-netns.ts); else all on --host.
  const addrs = flags.netns ? netnsManagerAddrs(flags.netnsSubnet, ids, port) : ids.map((_, i) => `${host}:${port + i}`);
  checkAddressesKept(previous?.managers, addrs, existsSync(join(dir, 'm1')), !!flags.netns, dir);
  const bed: UpNetns | null = flags.netns ? netnsForUp(flags, dir, ids, nw) : null;
  if (previous && previous.managers.length !== nm && existsSync(join(dir, 'm1'))) {
    process.stderr.write(`note: ${dir} holds a cluster of ${previous.managers.length} managers; membership comes from its data\n`);
  }
  let driver = flags.driver ?? bed?.driver;
  if (!driver) {
    driver = (await dockerAnswers()) ? 'docker' : 'process';
    process.stderr.write(`driver: ${driver} (${driver === 'docker' ? 'the Docker engine answers' : 'no Docker engine answered; pass --driver docker to insist'})\n`);
  }

  // The current process of every node (a restart replaces the entry).
  const children = new Map<string, { proc: ChildProcess; args: string[]; color: number; rec: ProcessRecord; lastLine: string }>();
  let stopping = false;
  // Our own output may go away (`flotilla up | tee log` after tee died): then write nothing more
  // and stop the cluster (below), instead of dying of EPIPE and leaving the nodes behind.
  let outputGone = false;
  const out = (s: string): void => {
    if (outputGone) return;
    try {
      process.stdout.write(s);
    } catch {
      outputGone = true;
    }
  };
  const control = { addr: '', token: randomBytes(24).toString('hex') };
  const procFile = join(dir, PROCESSES_FILE);
  const saveProcesses = () => {
    if (!control.addr) return;
    const f: ProcessesFile = {
      version: 1,
      dir,
      up: { pid: process.pid, control: control.addr, token: control.token },
      managers: addrs,
      processes: [...children.values()].map((c) => c.rec),
    };
    try {
      const tmp = `${procFile}.${process.pid}.tmp`;
      writeFileSync(tmp, JSON.stringify(f, null, 2) + '\n', { mode: 0o600 });
      renameSync(tmp, procFile);
    } catch (e) {
      process.stderr.write(`note: cannot write ${procFile}: ${(e as Error).message}\n`);
    }
  };
  const PROC_ENV = { FLOTILLA_LOG_FORMAT: 'pretty', FLOTILLA_STOP_ON_STDIN_EOF: '1' };
  const startProc = (name: string, args: string[], color: number) => {
    const argv = [process.execPath, CLI, ...args];
    // With --netns the node runs under `ip netns exec`, which execs it (same pid, same argv).
    const cmd = [...(bed?.wrap(name) ?? []), ...argv];
    // stdin: a pipe nobody writes to; it ends when this process does (the node then stops).
    const p = spawn(cmd[0]!, cmd.slice(1), {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, ...PROC_ENV },
    });
    p.stdin!.on('error', () => undefined);
    const prefix = `\x1b[${color}m${name.padEnd(3)}\x1b[0m │ `;
    const pipe = (s: NodeJS.ReadableStream) => {
      let buf = '';
      s.on('data', (d: Buffer) => {
        buf += d.toString('utf8');
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = stripNode(buf.slice(0, i), name);
          if (line.trim() !== '') {
            const c = children.get(name);
            if (c?.proc === p) c.lastLine = line;
          }
          out(prefix + line + '\n');
          buf = buf.slice(i + 1);
        }
      });
    };
    pipe(p.stdout!);
    pipe(p.stderr!);
    const prev = children.get(name);
    const rec: ProcessRecord = {
      node: name,
      kind: args[0] === 'manager' ? 'manager' : 'worker',
      pid: p.pid ?? null,
      argv,
      env: PROC_ENV,
      cwd: process.cwd(),
      startedAt: Date.now(),
      starts: (prev?.rec.starts ?? 0) + 1,
    };
    p.on('exit', (code, sig) => {
      if (!stopping) out(`${prefix}exited (${sig ?? code})\n`);
      rec.pid = null;
      rec.exit = { code, signal: sig, at: Date.now() };
      if (!stopping) saveProcesses();
    });
    p.on('error', (e) => {
      const c = children.get(name);
      if (c?.proc === p) c.lastLine = `cannot start: ${e.message}`;
      out(`${prefix}cannot start: ${e.message}\n`);
    });
    children.set(name, { proc: p, args, color, rec, lastLine: '' });
    saveProcesses();
    return p;
  };
  const alive = (p: ChildProcess) => p.exitCode === null && p.signalCode === null;

  // Restart a node (on request from `flotilla board`): stop it if it runs, start it again.
  const restarting = new Set<string>();
  const restartNode = async (name: string): Promise<{ status: number; body: Record<string, unknown> }> => {
    const c = children.get(name);
    if (!c) return { status: 404, body: { error: `no node '${name}' was started by this flotilla up (nodes: ${[...children.keys()].join(', ')})` } };
    if (stopping) return { status: 409, body: { error: 'flotilla up is stopping' } };
    if (restarting.has(name)) return { status: 409, body: { error: `${name} is already restarting` } };
    restarting.add(name);
    try {
      const prefix = `\x1b[${c.color}m${name.padEnd(3)}\x1b[0m │ `;
      out(`${prefix}restart requested${alive(c.proc) ? ` (stopping pid ${c.proc.pid})` : ''}\n`);
      if (alive(c.proc)) {
        const exited = new Promise((r) => c.proc.once('exit', r));
        c.proc.kill('SIGTERM');
        const t = setTimeout(() => c.proc.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(t);
      }
      // Ctrl-C while the old process was stopping: start nothing new.
      if (stopping) return { status: 409, body: { error: 'flotilla up is stopping' } };
      const p = startProc(name, c.args, c.color);
      out(`${prefix}started again (pid ${p.pid})\n`);
      return { status: 200, body: { node: name, pid: p.pid ?? null } };
    } finally {
      restarting.delete(name);
    }
  };
  const server = http.createServer((req, res) => {
    const reply = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body) + '\n');
    };
    const auth = String(req.headers.authorization ?? '');
    const want = Buffer.from(`Bearer ${control.token}`);
    const got = Buffer.from(auth);
    if (got.length !== want.length || !timingSafeEqual(got, want)) return reply(401, { error: 'bad or missing control token (see processes.json)' });
    if (req.method !== 'POST' || req.url !== '/v1/restart') return reply(404, { error: 'POST /v1/restart {"node": "<id>"} is the only route' });
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => {
      if (body.length < 4096) body += d;
    });
    req.on('end', () => {
      let node: unknown;
      try {
        node = (JSON.parse(body) as { node?: unknown }).node;
      } catch {
        return reply(400, { error: 'the body must be JSON: {"node": "<id>"}' });
      }
      if (typeof node !== 'string') return reply(400, { error: 'the body must be JSON: {"node": "<id>"}' });
      restartNode(node).then(
        (r) => reply(r.status, r.body),
        (e) => reply(500, { error: (e as Error).message }),
      );
    });
  });
  await new Promise<void>((ok, fail) => {
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => ok());
  });
  server.unref();
  control.addr = `127.0.0.1:${(server.address() as import('node:net').AddressInfo).port}`;

  const bootstrap = ids.map((id, i) => `${id}=${addrs[i]}`).join(',');
  ids.forEach((id, i) =>
    startProc(id, ['manager', '--id', id, '--listen', addrs[i]!, '--data', join(dir, id), '--bootstrap', bootstrap, '--secret-file', secretFile, ...securityArgs], COLORS[i % COLORS.length]!),
  );

  let stoppingSince = 0;
  const stopAll = async (why: string, exitCode = 0) => {
    if (stopping) {
      // Asked again a while later (a second Ctrl-C, not npm's echo of the first): kill what still runs and go.
      if (monoNow() - stoppingSince < REPEAT_MS) return;
      for (const c of children.values()) if (alive(c.proc)) c.proc.kill('SIGKILL');
      process.exit(130);
    }
    stopping = true;
    stoppingSince = monoNow();
    server.close();
    const procs = () => [...children.values()].map((c) => c.proc);
    out(`\n${why}: stopping ${procs().filter(alive).length} processes…\n`);
    for (const p of procs()) if (alive(p)) p.kill('SIGTERM');
    const deadline = monoNow() + 5000;
    while (procs().some(alive) && monoNow() < deadline) await sleep(50);
    for (const p of procs()) if (alive(p)) p.kill('SIGKILL');
    while (procs().some(alive) && monoNow() < deadline + 2000) await sleep(20);
    // The workers are gone; their task processes (process driver) would outlive them until
    // their keepers' grace ran out: stop them now.
    try {
      const { stopTasksInDir } = await import('../worker/drivers/process.js');
      const workers = [...children.values()].filter((c) => c.rec.kind === 'worker').map((c) => c.rec.node);
      const stopped = await Promise.all(workers.map((w) => stopTasksInDir(join(dir, w, 'process'), 3000, 'stopped: flotilla up was stopped')));
      const groups = stopped.flatMap((s) => s.groups);
      if (groups.length > 0) process.stdout.write(`stopped ${groups.length} task process${groups.length === 1 ? '' : 'es'} (pids ${groups.join(' ')})\n`);
    } catch (e) {
      process.stderr.write(`note: cannot stop the task processes: ${(e as Error).message}\n`);
    }
    rmSync(procFile, { force: true });
    bed?.teardown(out);
    const left = procs().filter(alive).map((p) => p.pid);
    out(left.length > 0 ? `could not stop pids ${left.join(', ')}\n` : 'stopped.\n');
    process.exit(left.length > 0 ? 1 : exitCode);
  };
  process.on('SIGINT', () => void stopAll('Ctrl-C'));
  process.on('SIGTERM', () => void stopAll('SIGTERM'));
  process.on('SIGHUP', () => void stopAll('SIGHUP'));
  process.stdout.removeAllListeners('error');
  process.stdout.on('error', () => {
    outputGone = true;
    if (!stopping) void stopAll('output closed');
  });
  process.stderr.on('error', () => undefined);

  const statusClient = new FlotillaClient(addrs, { timeoutMs: 30_000, ca: caPem });
  // How long to wait for a leader: 30 s, or FLOTILLA_UP_LEADER_WAIT_MS (tests on a loaded machine).
  const leaderWaitMs = Number(process.env.FLOTILLA_UP_LEADER_WAIT_MS) > 0 ? Number(process.env.FLOTILLA_UP_LEADER_WAIT_MS) : 30_000;
  const leader = await waitFor(async () => {
    const st = await statusClient.get<{ leader: string | null }>('/v1/status').catch(() => null);
    return st?.leader ?? null;
  }, leaderWaitMs);
  // What really started: a manager counts once it answered as itself while its process runs.
  const managerState = async (): Promise<{ up: string[]; failed: string[] }> => {
    const answered = new Set<string>();
    const settle = monoNow() + 10_000;
    for (;;) {
      for (const [i, id] of ids.entries()) {
        const c = children.get(id)!;
        if (answered.has(id) || !alive(c.proc)) continue;
        const st = await new FlotillaClient([addrs[i]!], { timeoutMs: 1000, attemptTimeoutMs: 1000, ca: caPem })
          .get<{ id?: string }>('/v1/status', { pinned: true, timeoutMs: 1000 })
          .catch(() => null);
        if (st?.id === id) answered.add(id);
      }
      if (monoNow() >= settle || ids.every((id) => answered.has(id) || !alive(children.get(id)!.proc))) break;
      await sleep(200);
    }
    const up = ids.filter((id) => answered.has(id) && alive(children.get(id)!.proc));
    return { up, failed: ids.filter((id) => !up.includes(id)).map((id) => describeFailure(id)) };
  };
  const describeFailure = (id: string): string => {
    const c = children.get(id)!;
    const how = alive(c.proc) ? 'does not answer' : `exited (${c.proc.signalCode ?? c.proc.exitCode})`;
    return `${id} ${how}${c.lastLine ? `: ${c.lastLine.replace(/^\d\d:\d\d:\d\d\.\d{3}( t\d+)? (error|warn|info) *\s*/, '').trim()}` : ''}`;
  };
  if (!leader) {
    const { failed } = await managerState();
    await stopAll(`no leader was elected within ${Math.round(leaderWaitMs / 1000)} s${failed.length > 0 ? ` (${failed.join('; ')})` : ''}`, 1);
    return;
  }
  // First start: create an admin API token (this turns API authentication on) for the CLI here.
  if (!existsSync(adminTokenFile)) {
    try {
      // With TLS the API is never open: the admin client certificate `flotilla init` wrote
      // beside the CA proves the right to create the first token.
      const { readAdminCert } = await import('../tls/pki.js');
      const adminCert = caPem ? readAdminCert(dir) : null;
      if (caPem && !adminCert) throw new Error(`no admin client certificate in ${dir} (admin.crt, admin.key)`);
      const creator = new FlotillaClient(addrs, { timeoutMs: 30_000, ca: caPem, ...(adminCert ?? {}) });
      const r = await creator.post<{ id: string; token: string }>('/v1/tokens', { role: 'admin' });
      writeFileSync(adminTokenFile, r.token + '\n', { mode: 0o600 });
      out(`admin API token ${r.id} written to ${adminTokenFile} (mode 0600)\n`);
    } catch (e) {
      process.stderr.write(`note: no admin API token was created (${(e as Error).message}); pass one with --token-file or FLOTILLA_TOKEN\n`);
    }
  }
  const adminToken = existsSync(adminTokenFile) ? readFileSync(adminTokenFile, 'utf8').trim() : undefined;
  const client = new FlotillaClient(addrs, { timeoutMs: 30_000, token: adminToken, ca: caPem });

  const workerIds = Array.from({ length: nw }, (_, i) => `w${i + 1}`);
  workerIds.forEach((id, i) =>
    startProc(
      id,
      ['worker', '--id', id, '--managers', addrs.join(','), '--token-file', tokenFile, '--driver', driver!, '--state-dir', join(dir, id), ...(bed ? ['--dns-port', '53'] : ['--listen', `${host}:0`]),
        // --netns: one engine in the host's namespace serves every node; it publishes on the
        // bridge's host address, which every node's namespace reaches.
        ...(bed && driver === 'docker' ? ['--publish-host', bed.bed.hostAddress] : []), '--labels', `zone=${i % 2 === 0 ? 'a' : 'b'}`],
      COLORS[(nm + i) % COLORS.length]!,
    ),
  );
  await waitFor(async () => {
    const r = await client.get<{ nodes: { id: string; status: string }[] }>('/v1/nodes').catch(() => null);
    return r && workerIds.every((w) => r.nodes.some((n) => n.id === w && n.status === 'ready'));
  }, 30_000);

  const info: ClusterFile = { managers: addrs, workers: workerIds, driver, port, web: `${scheme}://${addrs[0]}/`, ca: caPem ? 'ca.crt' : null };
  writeFileSync(cfgFile, JSON.stringify(info, null, 2) + '\n');
  const mgrs = await managerState();
  const readyWorkers = await client
    .get<{ nodes: { id: string; status: string }[] }>('/v1/nodes')
    .then((r) => workerIds.filter((w) => r.nodes.some((n) => n.id === w && n.status === 'ready') && alive(children.get(w)!.proc)))
    .catch(() => [] as string[]);
  const failedWorkers = workerIds.filter((w) => !readyWorkers.includes(w)).map((w) => describeFailure(w).replace('does not answer', 'is not ready'));
  const failed = [...mgrs.failed, ...failedWorkers];
  const count = (n: number, of: number, what: string): string => (n === of ? `${of} ${what}` : `${n} of ${of} ${what}`);
  out(
    `
flotilla is up: ${count(mgrs.up.length, nm, 'managers')} (leader ${leader ?? '?'}), ${count(readyWorkers.length, nw, 'workers')}, driver ${driver}${
      failed.length > 0 ? `\n  FAILED:     ${failed.join('\n              ')}` : ''
    }
  web page:   ${scheme}://${addrs[0]}/${caPem ? `\n              (certificate from the cluster's own CA: trust ${join(dir, 'ca.crt')} in the browser, or accept its warning)` : ''}
  CLI:        ${
    dir === resolve(upDir())
      ? 'from this directory just run `npx flotilla ps`'
      : `the CLI looks in ${resolve(upDir())}, so first export FLOTILLA_DIR=${dir} (then \`npx flotilla ps\` finds it)`
  }; elsewhere
              export FLOTILLA_MANAGERS=${addrs.join(',')} FLOTILLA_TOKEN_FILE=${adminTokenFile}${caPem ? ` FLOTILLA_CA=${join(dir, 'ca.crt')}` : ''}
  web login:  the page asks for a token: paste the one in ${adminTokenFile}
  try:        npx flotilla run --name hello ${driver === 'docker' ? 'flotilla/busybox:test ' : ''}-- /bin/sh -c 'echo hello; sleep 600'
  data:       ${dir}   (Ctrl-C stops everything; \`flotilla up\` again restarts this cluster)${bed ? `\n${bed.banner()}` : ''}

`,
  );
}

function stripNode(line: string, name: string): string {
  // Pretty logs start with "HH:MM:SS.mmm <node> <level>"; the prefix already names the node.
  return line.replace(new RegExp(`^(\\d\\d:\\d\\d:\\d\\d\\.\\d{3}) ${name} `), '$1 ');
}

async function dockerAnswers(): Promise<boolean> {
  const http = await import('node:http');
  return new Promise((resolve) => {
    const req = http.request({ socketPath: '/var/run/docker.sock', path: '/_ping', timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => {
      req.destroy();
      resolve(false);
    });
    req.end();
  });
}

async function waitFor<T>(fn: () => Promise<T | null | false | undefined>, ms: number): Promise<T | null> {
  const deadline = monoNow() + ms;
  while (monoNow() < deadline) {
    const v = await fn();
    if (v) return v;
    await sleep(100);
  }
  return null;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
