// The cluster under test: managers and workers as separate OS processes (the built CLI), with
// every link through a harness-controlled proxy (chaos/proxy.ts).
//
// Links (one proxy per directed link, labelled from>to):
//   mA>mB     manager A dialing manager B (Raft + write forwarding): A gets `--peer-route mB=<proxy>`
//   ext>mB    the address mB advertises (its "front"): what other managers tell workers in
//             redirects/welcomes, so worker sessions stay behind a proxy after a redirect
//   wN>mB     worker N's seed address of mB (`--managers`)
//   <client>>mB  workload client links (c1…cK, tasks)
// The harness itself (status monitor, convergence checks, task observations) talks to the
// managers' real addresses, outside the fault model.
//
// Processes are started, stopped, paused and killed by PID only. Task processes of the process
// driver run detached (they survive a worker); they are found in the workers' state dirs and
// killed by process group at the end.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { open as openAsync } from 'node:fs/promises';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { workerToken } from '../src/manager/auth.js';
import { readProcStat } from '../src/worker/drivers/process.js';
import { request } from './http.js';
import { ChaosNet } from './proxy.js';
import { clockShiftPreload, writeClockShift } from './clock-shift.js';
import { ChaosNetnsBed, NETNS_MANAGER_PORT } from './netns.js';

const here = dirname(fileURLToPath(import.meta.url));
/** The built CLI (this file is dist/chaos/cluster.js). */
export const CLI = join(here, '..', 'src', 'cli', 'main.js');

export type ProcStatus = 'running' | 'paused' | 'killed' | 'stopped';

export interface NodeProc {
  id: string;
  kind: 'manager' | 'worker';
  args: string[];
  logFile: string;
  proc: ChildProcess | null;
  pid: number | null;
  status: ProcStatus;
  starts: number;
  exited: Promise<void>;
  /** The harness stopped it (an exit otherwise is reported as unexpected). */
  expectExit: boolean;
  /** How the last process life ended. */
  lastExit: { code: number | null; signal: NodeJS.Signals | null } | null;
  /** Killed for good (the kill-worker fault): never restarted, not awaited as ready. */
  gone: boolean;
}

export interface ChaosClusterOptions {
  /** Data dirs, state dirs, secret, token. */
  dir: string;
  /** One log file per process. */
  logDir: string;
  managers: number;
  workers: number;
  /** Workload link labels (e.g. c1…c8, tasks): each gets a proxy to every manager. */
  clients: string[];
  /** Each manager appends its Raft trace (`--raft-trace`) to `<traceDir>/<id>.jsonl`. */
  traceDir?: string;
  /** Extra manager flags. */
  managerArgs?: string[];
  workerArgs?: string[];
  /** Start managers with the wall-clock shift preload (the clock-step nemesis). */
  clockShift?: boolean;
  /**
   * Give each manager's data directory its own tmpfs of this many MiB (the disk-full nemesis;
   * needs root): mounted at `<dir>/<id>-fs` by mountDisks(), unmounted by unmountDisks().
   */
  diskMiB?: number;
  /**
   * The multi-host test bed (chaos/netns.ts): every node in its own network namespace on this
   * private /24, managers and workers talking address to address (partitions are kernel rules);
   * only the workload's client links go through proxies.
   */
  netns?: { subnet: string };
  /**
   * Give worker N its own loopback address, 127.0.0.(10+N), to listen on (the routing mesh
   * listens on each worker's listen host at a service's published port, so on one host the
   * workers need distinct addresses). With `netns` every worker has its own address anyway.
   */
  distinctWorkerHosts?: boolean;
}

export interface ManagerStatus {
  id: string;
  role: string;
  leader: string | null;
  term: number;
  commitIndex: number;
  appliedIndex: number;
}

export interface TaskProcess {
  taskId: string;
  attempt: number;
  node: string;
  pid: number;
  procStart: string | undefined;
  alive: boolean;
}

const SECRET = 'chaos-harness-secret-0123456789abcdef';

/**
 * Free ports, picked BELOW the kernel's ephemeral range: a port the kernel hands out for
 * `listen(0)` or an outgoing connection elsewhere on the host can then never take one of them
 * while its owner is down (a manager killed by the nemesis, about to restart on it; a mesh
 * listener of a worker being restarted). Each is checked free on every host of `hosts` (none:
 * not checked, e.g. addresses inside network namespaces, which are fresh).
 */
export async function freePorts(n: number, hosts: readonly string[] = ['127.0.0.1'], exclude: readonly number[] = []): Promise<number[]> {
  let lo = 32768;
  try {
    lo = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || lo;
  } catch {
    /* not Linux: assume the usual range */
  }
  const top = Math.max(2048, Math.min(lo, 65536)) - 1;
  const bottom = Math.max(1024, top - 12_000);
  const ports: number[] = [];
  const freeOn = (port: number, host: string): Promise<boolean> =>
    new Promise<boolean>((resolve) => {
      const s = net.createServer();
      s.once('error', () => resolve(false));
      s.listen(port, host, () => s.close(() => resolve(true)));
    });
  for (let tries = 0; ports.length < n && tries < 1000; tries++) {
    const port = bottom + Math.floor(Math.random() * (top - bottom));
    if (ports.includes(port) || exclude.includes(port)) continue;
    let ok = true;
    for (const h of hosts) if (ok) ok = await freeOn(port, h);
    if (ok) ports.push(port);
  }
  if (ports.length < n) throw new Error(`cannot find ${n} free ports below the ephemeral range`);
  return ports;
}

export class ChaosCluster {
  readonly net = new ChaosNet();
  readonly managerIds: string[];
  readonly workerIds: string[];
  readonly nodes = new Map<string, NodeProc>();
  readonly realAddr = new Map<string, string>();
  readonly secretFile: string;
  readonly tokenFile: string;
  /** Called when a process exits without the harness asking (a crash). */
  onUnexpectedExit?: (id: string, code: number | null, signal: NodeJS.Signals | null) => void;
  /** Managers whose wall clock is stepped now (offset ms). */
  private readonly clockOffsets = new Map<string, number>();
  /** Task process groups seen (pid → /proc start time), killed at the end. */
  private readonly taskGroups = new Map<number, string | undefined>();
  /** tmpfs mount points of the managers (disk-full). */
  private readonly mounts = new Set<string>();
  /** The admin API token the harness created at setup (every harness request carries it). */
  apiToken: string | null = null;
  /** The netns test bed (`--netns`), whose rules make the partitions; null on loopback. */
  kernel: ChaosNetnsBed | null = null;

  private constructor(readonly opts: ChaosClusterOptions) {
    this.managerIds = Array.from({ length: opts.managers }, (_, i) => `m${i + 1}`);
    this.workerIds = Array.from({ length: opts.workers }, (_, i) => `w${i + 1}`);
    mkdirSync(opts.dir, { recursive: true });
    mkdirSync(opts.logDir, { recursive: true });
    this.secretFile = join(opts.dir, 'secret');
    writeFileSync(this.secretFile, SECRET, { mode: 0o600 });
    this.tokenFile = join(opts.dir, 'worker-token');
    writeFileSync(this.tokenFile, workerToken(SECRET), { mode: 0o600 });
  }

  /** Allocates ports, starts every proxy and prepares (does not start) the processes. */
  static async create(opts: ChaosClusterOptions, random?: () => number): Promise<ChaosCluster> {
    const c = new ChaosCluster(opts);
    if (opts.netns !== undefined) {
      try {
        await c.createOnNetns(opts.netns.subnet, random);
      } catch (e) {
        // Nothing of the test bed outlives a failed setup.
        await c.net.closeAll();
        c.kernel?.teardown();
        throw e;
      }
      return c;
    }
    const ports = await freePorts(opts.managers);
    c.managerIds.forEach((m, i) => c.realAddr.set(m, `127.0.0.1:${ports[i]}`));
    const real = (m: string): string => c.realAddr.get(m)!;
    for (const b of c.managerIds) {
      await c.net.add('ext', b, real(b), random);
      for (const a of c.managerIds) if (a !== b) await c.net.add(a, b, real(b), random);
      for (const w of c.workerIds) await c.net.add(w, b, real(b), random);
      for (const k of opts.clients) await c.net.add(k, b, real(b), random);
    }
    const bootstrap = c.managerIds.map((m) => `${m}=${c.net.get('ext', m).addr}`).join(',');
    for (const m of c.managerIds) {
      const routes = c.managerIds.filter((p) => p !== m).map((p) => `${p}=${c.net.get(m, p).addr}`).join(',');
      const args = [
        CLI, 'manager', '--id', m, '--listen', real(m), '--advertise', c.net.get('ext', m).addr, '--data', c.dataDir(m),
        '--bootstrap', bootstrap, '--peer-route', routes, '--secret-file', c.secretFile, '--insecure',
        ...(opts.traceDir !== undefined ? ['--raft-trace', c.traceFile(m)!] : []), ...(opts.managerArgs ?? []),
      ];
      c.nodes.set(m, c.mkNode(m, 'manager', args));
    }
    for (const w of c.workerIds) {
      const seeds = c.managerIds.map((m) => c.net.get(w, m).addr).join(',');
      const args = [
        CLI, 'worker', '--id', w, '--managers', seeds, '--token-file', c.tokenFile, '--driver', 'process',
        '--state-dir', c.stateDir(w), '--listen', `${c.workerHost(w)}:0`, '--stop-grace', '2000', ...(opts.workerArgs ?? []),
      ];
      c.nodes.set(w, c.mkNode(w, 'worker', args));
    }
    return c;
  }

  /**
   * --netns: one namespace per node (chaos/netns.ts); managers listen on their own address and
   * find each other and the workers find them there directly; the client links are proxies on
   * the host's loopback that dial those addresses.
   */
  private async createOnNetns(subnet: string, random?: () => number): Promise<void> {
    const { bed, stale } = ChaosNetnsBed.create(this.opts.dir, subnet, [...this.managerIds, ...this.workerIds]);
    this.kernel = bed;
    if (stale.length > 0) process.stderr.write(`chaos: netns: removed leftovers of an earlier run: ${stale.join(' ')}\n`);
    for (const m of this.managerIds) this.realAddr.set(m, `${bed.address(m)}:${NETNS_MANAGER_PORT}`);
    const real = (m: string): string => this.realAddr.get(m)!;
    for (const b of this.managerIds) for (const k of this.opts.clients) await this.net.add(k, b, real(b), random);
    const bootstrap = this.managerIds.map((m) => `${m}=${real(m)}`).join(',');
    for (const m of this.managerIds) {
      const args = [
        CLI, 'manager', '--id', m, '--listen', real(m), '--advertise', real(m), '--data', this.dataDir(m),
        '--bootstrap', bootstrap, '--secret-file', this.secretFile, '--insecure',
        ...(this.opts.traceDir !== undefined ? ['--raft-trace', this.traceFile(m)!] : []), ...(this.opts.managerArgs ?? []),
      ];
      this.nodes.set(m, this.mkNode(m, 'manager', args));
    }
    for (const w of this.workerIds) {
      const args = [
        CLI, 'worker', '--id', w, '--managers', this.managerIds.map(real).join(','), '--token-file', this.tokenFile, '--driver', 'process',
        '--state-dir', this.stateDir(w), '--listen', `${bed.address(w)}:0`, '--stop-grace', '2000', ...(this.opts.workerArgs ?? []),
      ];
      this.nodes.set(w, this.mkNode(w, 'worker', args));
    }
  }

  private mkNode(id: string, kind: 'manager' | 'worker', args: string[]): NodeProc {
    return { id, kind, args, logFile: join(this.opts.logDir, `${id}.log`), proc: null, pid: null, status: 'stopped', starts: 0, exited: Promise.resolve(), expectExit: false, lastExit: null, gone: false };
  }

  /** The host a worker listens on (where its routing mesh serves the published ports). */
  workerHost(w: string): string {
    if (this.kernel !== null) return this.kernel.address(w);
    const i = this.workerIds.indexOf(w);
    if (i < 0) throw new Error(`no worker ${w}`);
    return this.opts.distinctWorkerHosts === true ? `127.0.0.${11 + i}` : '127.0.0.1';
  }

  /** Headers of every harness API request (the admin token, once created). */
  authHeaders(): Record<string, string> {
    return this.apiToken === null ? {} : { authorization: `Bearer ${this.apiToken}` };
  }

  // ------------------------------------------------------------------------ data directories

  /** A manager's data directory (inside its tmpfs when the disks are mounted). */
  dataDir(m: string): string {
    return this.opts.diskMiB !== undefined ? join(this.diskDir(m), 'data') : join(this.opts.dir, m);
  }

  /** The tmpfs mount point of a manager (disk-full). */
  diskDir(m: string): string {
    return join(this.opts.dir, `${m}-fs`);
  }

  /** Mounts one tmpfs per manager (root only); throws with a clear message otherwise. */
  mountDisks(): void {
    if (this.opts.diskMiB === undefined) return;
    for (const m of this.managerIds) {
      const d = this.diskDir(m);
      mkdirSync(d, { recursive: true });
      const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${this.opts.diskMiB}m,mode=0700`, 'tmpfs', d], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`disk-full: cannot mount a ${this.opts.diskMiB} MiB tmpfs on ${d} (needs root): ${(r.stderr || r.error?.message || '').trim()}`);
      this.mounts.add(d);
    }
  }

  /** Unmounts every tmpfs the harness mounted (synchronous: also called from exit hooks). */
  unmountDisks(): string[] {
    const failed: string[] = [];
    for (const d of [...this.mounts]) {
      let r = spawnSync('umount', [d], { encoding: 'utf8' });
      if (r.status !== 0) r = spawnSync('umount', ['-l', d], { encoding: 'utf8' }); // a process still exiting
      if (r.status === 0) this.mounts.delete(d);
      else failed.push(d);
    }
    return failed;
  }

  private fillerFile(m: string): string {
    return join(this.diskDir(m), 'filler');
  }

  /** Fills a manager's tmpfs until ENOSPC (the file stays); returns the bytes written. */
  async fillDisk(m: string): Promise<number> {
    if (this.opts.diskMiB === undefined) throw new Error('disk-full needs the per-manager tmpfs');
    const chunk = Buffer.alloc(1 << 20, 0x5a);
    const fh = await openAsync(this.fillerFile(m), 'a');
    let bytes = 0;
    try {
      for (let i = 0; i < 4 * this.opts.diskMiB + 16; i++) {
        try {
          const { bytesWritten } = await fh.write(chunk);
          bytes += bytesWritten;
          if (bytesWritten < chunk.length) break;
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'ENOSPC') break;
          throw e;
        }
      }
      // The last partial page: fill byte-wise chunks until even a small write fails.
      for (const size of [65536, 4096, 512]) {
        const b = chunk.subarray(0, size);
        for (let i = 0; i < 64; i++) {
          try {
            const { bytesWritten } = await fh.write(b);
            bytes += bytesWritten;
            if (bytesWritten < size) break;
          } catch {
            break;
          }
        }
      }
    } finally {
      await fh.close();
    }
    return bytes;
  }

  /** Removes a manager's filler file; true if there was one. */
  unfillDisk(m: string): boolean {
    const f = this.fillerFile(m);
    if (!existsSync(f)) return false;
    rmSync(f, { force: true });
    return true;
  }

  private wipedAside(m: string): string {
    return `${this.dataDir(m)}.wiped-aside`;
  }

  /** Moves a (stopped) manager's data directory aside, as if the disk had been wiped. */
  wipeData(m: string): void {
    if (this.node(m).status === 'running' || this.node(m).status === 'paused') throw new Error(`${m} is running`);
    rmSync(this.wipedAside(m), { recursive: true, force: true });
    renameSync(this.dataDir(m), this.wipedAside(m));
  }

  /** Puts the original data directory back (whatever the wiped start left is removed). */
  restoreData(m: string): boolean {
    if (!existsSync(this.wipedAside(m))) return false;
    rmSync(this.dataDir(m), { recursive: true, force: true });
    renameSync(this.wipedAside(m), this.dataDir(m));
    return true;
  }

  /** A manager's Raft trace file (null when tracing is off). */
  traceFile(manager: string): string | null {
    return this.opts.traceDir === undefined ? null : join(this.opts.traceDir, `${manager}.jsonl`);
  }

  stateDir(worker: string): string {
    return join(this.opts.dir, worker);
  }

  /** The proxy address a workload client uses to reach a manager. */
  clientAddr(client: string, manager: string): string {
    return this.net.get(client, manager).addr;
  }

  node(id: string): NodeProc {
    const n = this.nodes.get(id);
    if (n === undefined) throw new Error(`no node ${id}`);
    return n;
  }

  isUp(id: string): boolean {
    return this.node(id).status === 'running';
  }

  start(id: string): void {
    const n = this.node(id);
    if (n.status === 'running' || n.status === 'paused') throw new Error(`${id} is already running`);
    const fd = openSync(n.logFile, 'a');
    writeSync(fd, `\n=== chaos: starting ${id} (start ${n.starts + 1}) at ${new Date().toISOString()}\n`);
    const level = process.env.FLOTILLA_CHAOS_LOG_LEVEL; // e.g. debug, to investigate a failure
    const args = level ? [...n.args, '--log-level', level] : n.args;
    const env: NodeJS.ProcessEnv = { ...process.env, FLOTILLA_MANAGERS: '', FLOTILLA_LOG_LEVEL: process.env.FLOTILLA_LOG_LEVEL ?? 'info' };
    const clock = this.clockFile(id);
    if (clock !== null) {
      // The offset survives restarts, as a machine's clock would.
      if (!existsSync(clock)) writeClockShift(clock, 0);
      env.NODE_OPTIONS = `${process.env.NODE_OPTIONS ?? ''} --import ${clockShiftPreload()}`.trim();
      env.FLOTILLA_CLOCK_SHIFT_FILE = clock;
    }
    // Its own session and process group: a SIGSTOPped child in the harness's group would get
    // SIGHUP + SIGCONT from the kernel when that group becomes orphaned (the shell that started
    // the harness exits), ending a pause early and killing the manager (its SIGHUP handler stops it).
    // Children are stopped by PID anyway.
    // --netns: `ip netns exec` execs node in the node's namespace (same pid: kill/pause by PID hold).
    const argv = this.kernel !== null ? [...this.kernel.wrap(id), process.execPath, ...args] : [process.execPath, ...args];
    const p = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', fd, fd], env, detached: true });
    closeSync(fd);
    n.proc = p;
    n.pid = p.pid ?? null;
    n.status = 'running';
    n.expectExit = false;
    n.starts++;
    n.exited = new Promise<void>((resolve) => {
      p.once('exit', (code, signal) => {
        if (n.proc === p) {
          n.lastExit = { code, signal };
          n.status = n.status === 'stopped' ? 'stopped' : 'killed';
          if (!n.expectExit) this.onUnexpectedExit?.(id, code, signal);
        }
        resolve();
      });
      p.once('error', () => resolve());
    });
  }

  startAll(): void {
    for (const id of [...this.managerIds, ...this.workerIds]) this.start(id);
  }

  /** SIGKILL (by PID) and wait for the exit. */
  async kill(id: string, final = false): Promise<void> {
    const n = this.node(id);
    const p = n.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) {
      n.status = final ? 'stopped' : n.status === 'running' || n.status === 'paused' ? 'killed' : n.status;
      return;
    }
    n.status = final ? 'stopped' : 'killed';
    n.expectExit = true;
    try {
      p.kill('SIGKILL');
    } catch {
      /* already gone */
    }
    await Promise.race([n.exited, sleep(5000)]);
  }

  /** The wall-clock offset file of a manager (null when clock shifting is off or for workers). */
  clockFile(id: string): string | null {
    return this.opts.clockShift && this.node(id).kind === 'manager' ? join(this.opts.dir, `${id}.clock-offset`) : null;
  }

  /** Steps a manager's wall clock by `deltaMs` (on top of any current step); false if not possible. */
  stepClock(id: string, deltaMs: number): boolean {
    const f = this.clockFile(id);
    if (f === null) return false;
    const next = (this.clockOffsets.get(id) ?? 0) + deltaMs;
    writeClockShift(f, next);
    if (next === 0) this.clockOffsets.delete(id);
    else this.clockOffsets.set(id, next);
    return true;
  }

  /** Puts every stepped wall clock back; returns the managers concerned. */
  resetClocks(): string[] {
    const ids = [...this.clockOffsets.keys()];
    for (const id of ids) writeClockShift(this.clockFile(id)!, 0);
    this.clockOffsets.clear();
    return ids;
  }

  pause(id: string): void {
    const n = this.node(id);
    if (n.status !== 'running' || !n.proc) return;
    n.proc.kill('SIGSTOP');
    n.status = 'paused';
  }

  resume(id: string): void {
    const n = this.node(id);
    if (n.status !== 'paused' || !n.proc) return;
    n.proc.kill('SIGCONT');
    n.status = 'running';
  }

  /** Kill -9 and start again at once (crash-recovery). */
  async crashRestart(id: string): Promise<void> {
    await this.kill(id);
    this.start(id);
  }

  /** SIGKILL every process (SIGCONT first for paused ones) and every task process group. */
  async stopAll(): Promise<void> {
    this.scanTaskProcesses();
    await Promise.all([...this.nodes.keys()].map((id) => this.kill(id, true)));
    this.killTaskGroups();
    await this.net.closeAll();
    this.unmountDisks();
    this.removeNetns();
  }

  /** Removes the netns test bed, rules included (idempotent; after the processes are killed). */
  removeNetns(): string[] {
    try {
      this.kernel?.killProcesses();
      return this.kernel?.teardown() ?? [];
    } catch (e) {
      process.stderr.write(`chaos: netns: cleanup failed (${(e as Error).message}); the next run of ${this.opts.dir} retries\n`);
      return [];
    }
  }

  /** Synchronous last resort (process exit / signal): kills by PID whatever is still running. */
  killAllSync(): void {
    for (const n of this.nodes.values()) {
      const p = n.proc;
      if (!p || p.exitCode !== null || p.signalCode !== null) continue;
      n.expectExit = true;
      try {
        p.kill('SIGKILL');
      } catch {
        /* gone */
      }
    }
    try {
      this.scanTaskProcesses();
    } catch {
      /* best effort */
    }
    this.killTaskGroups();
    this.unmountDisks();
    this.removeNetns();
  }

  // ---------------------------------------------------------------------------------- status

  async status(id: string, timeoutMs = 500): Promise<ManagerStatus | null> {
    try {
      const r = await request(this.realAddr.get(id)!, '/v1/status', { timeoutMs });
      return r.status === 200 ? (r.body as ManagerStatus) : null;
    } catch {
      return null;
    }
  }

  /**
   * The leader every running manager agrees on (same leader and term, and every running
   * manager has applied what the leader committed when it was asked), or null.
   */
  async converged(): Promise<string | null> {
    const ids = this.managerIds.filter((m) => this.isUp(m));
    const sts = await Promise.all(ids.map((m) => this.status(m, 1000)));
    // A status from another process on the port (not ours) does not count.
    if (sts.some((s, i) => s === null || s.id !== ids[i])) return null;
    const leader = sts.find((s) => s!.role === 'leader');
    if (!leader) return null;
    if (!sts.every((s) => s!.leader === leader.id && s!.term === leader.term)) return null;
    if (!sts.every((s) => s!.appliedIndex >= leader.commitIndex)) return null;
    return leader.id;
  }

  /** Worker ids the leader sees as ready. */
  async readyWorkers(leader: string): Promise<string[]> {
    try {
      const r = await request(this.realAddr.get(leader)!, '/v1/nodes', { timeoutMs: 2000, headers: this.authHeaders() });
      if (r.status !== 200) return [];
      return ((r.body as { nodes: { id: string; status: string }[] }).nodes ?? []).filter((n) => n.status === 'ready').map((n) => n.id);
    } catch {
      return [];
    }
  }

  /** Workers not killed for good. */
  liveWorkers(): string[] {
    return this.workerIds.filter((w) => !this.node(w).gone);
  }

  /** Waits for one agreed leader and every worker ready; returns the leader. */
  async waitReady(timeoutMs: number): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const leader = await this.converged();
      if (leader !== null) {
        const ready = await this.readyWorkers(leader);
        if (this.liveWorkers().every((w) => ready.includes(w))) return leader;
      }
      await sleep(100);
    }
    throw new Error(`the cluster did not become ready within ${timeoutMs} ms (logs in ${this.opts.logDir})`);
  }

  // --------------------------------------------------------------------------- task processes

  /** Reads every worker's process-driver records and checks which wrappers are alive. */
  scanTaskProcesses(): TaskProcess[] {
    const out: TaskProcess[] = [];
    for (const w of this.workerIds) {
      const dir = join(this.stateDir(w), 'process', 'tasks');
      if (!existsSync(dir)) continue;
      let entries: string[];
      try {
        entries = readdirSync(dir);
      } catch {
        continue;
      }
      for (const e of entries) {
        let rec: { taskId: string; attempt: number; containers: { pid?: number; procStart?: string }[] };
        try {
          rec = JSON.parse(readFileSync(join(dir, e, 'task.json'), 'utf8'));
        } catch {
          continue; // being written or removed
        }
        for (const c of rec.containers ?? []) {
          if (c.pid === undefined) continue;
          const st = readProcStat(c.pid);
          const alive = st !== null && st.state !== 'Z' && st.state !== 'X' && (c.procStart === undefined || st.start === c.procStart);
          if (alive) this.taskGroups.set(c.pid, c.procStart);
          out.push({ taskId: rec.taskId, attempt: rec.attempt, node: w, pid: c.pid, procStart: c.procStart, alive });
        }
      }
    }
    return out;
  }

  private killTaskGroups(): void {
    for (const [pid, start] of this.taskGroups) {
      const st = readProcStat(pid);
      if (st === null || (start !== undefined && st.start !== start)) {
        this.taskGroups.delete(pid);
        continue;
      }
      try {
        process.kill(-pid, 'SIGKILL'); // the wrapper leads its own process group
      } catch {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      this.taskGroups.delete(pid);
    }
  }
}

export const sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
