// The `process` driver (like Nomad's raw_exec): every container of a pod is a local process.
//
// How a container runs
//   The executable is `command[0]` (or `image` when `command` is empty), resolved against
//   the PATH of the container's environment (or against its workdir when it contains a '/');
//   its arguments are `command[1..]` followed by `args`. It runs through a tiny `/bin/sh`
//   wrapper, as a positional parameter — never pasted into a script, so nothing in a spec is
//   ever interpreted by a shell:
//
//     /bin/sh -c WRAPPER flotilla-wrap <taskDir>/<container> <exe> <args…>
//
//   The wrapper writes its pid to `<container>.pid`, runs `"$@"` and writes the exit status
//   to `<container>.exit` (128+n when killed by signal n). It traps TERM/INT/HUP/QUIT (a
//   caught signal is reset to the default in the program it runs), so a SIGTERM to the
//   process group reaches the program and the wrapper survives to record its status. A
//   SIGKILL of the group (after the grace period) kills the wrapper too: the status is then
//   137 ("killed"). A SIGTERM that lands while the wrapper is still forking its program is
//   caught by the shell and lost to the program: the driver notices (the wrapper has no
//   child yet, or a child that has not exec'd) and sends it again once the program runs.
//
//   The wrapper runs detached, in a session and process group of its own (pgid = its pid),
//   stdin from /dev/null, stdout/stderr appended to `<container>.out.log` /
//   `<container>.err.log` (files, never pipes to the worker), so the pod survives a SIGKILL
//   of the worker (for the keeper's window, below) and its exit status is known even if it
//   exited while no worker watched.
//
// Environment: PATH (a standard one), HOME (the worker's), HOSTNAME, FLOTILLA_TASK_ID,
// FLOTILLA_TASK_NAME, FLOTILLA_CONTAINER, then the spec's `env` over them. Nothing else of
// the worker's environment leaks in. Workdir: the spec's `workdir` (a relative one is taken
// relative to the task's scratch directory), default the task's scratch directory
// `<taskDir>/work` (deleted by `remove()`).
//
// Not enforced by this driver: resources (no cgroups), ports (the process binds what it
// binds), privileged/user (processes run as the worker's user), mounts (rejected by the spec).
//
// State on disk, one directory per task: `<dir>/tasks/<task>/`
//   task.json            spec, spec hash, per container pid + /proc start time + start ms,
//                        and the pod's stop/failure/final records (written atomically)
//   <c>.pid <c>.exit     written by the wrapper
//   <c>.out.log <c>.err.log
//   work/                default workdir
// A restarted driver reads every task.json back (adoption): a container whose wrapper still
// runs — same pid, same /proc start time, same command line — is running; one whose wrapper
// is gone is exited with the status in its `.exit` file (at that file's mtime).
//
// Tasks die with their worker, after a window: every driver instance starts a keeper (see
// KEEPER_SCRIPT) that stops the tasks once the worker has been gone for `orphanGraceMs`
// without a successor driver taking over; a pod it stopped is adopted as `stopped`.
//
// Pod semantics: the pod runs while any container runs. The first container that exits
// non-zero (or is killed) fails the pod: the others get SIGTERM, SIGKILL after
// `podFailureGraceMs`, and the pod ends `failed` with that container's exit code. All exit
// 0 → `succeeded`. After `stop()` the pod ends `stopped` (unless it had already failed).
// When the pod ends, whatever is left in its process groups (daemons a container forked) is
// killed.

import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  accessSync,
  closeSync,
  constants as fsConstants,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import { delimiter, isAbsolute, join, resolve } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { FlotillaError } from '../../protocol/errors.js';
import { bootId, bootMonoNow, monoNow } from '../../clock.js';
import { silentLogger, type Logger } from '../../log.js';
import type { TaskSpec } from '../../protocol/spec.js';
import {
  isFinished,
  type Driver,
  type DriverContainerStatus,
  type DriverEventListener,
  type DriverStartOptions,
  type DriverTaskState,
  type DriverTaskStatus,
  type LogLine,
  type LogOptions,
} from '../driver.js';

export interface ProcessDriverOptions {
  /** Directory for task state and logs (created if missing). */
  dir: string;
  /** How often running tasks are checked (ms). Default 200. */
  pollMs?: number;
  /** When one container fails, how long the others get between SIGTERM and SIGKILL. Default 5000. */
  podFailureGraceMs?: number;
  /** The shell that runs the wrapper. Default /bin/sh. */
  shell?: string;
  log?: Logger;
  /**
   * How long the tasks outlive their worker (ms): once the worker has been gone this long
   * without a successor taking over, the keeper stops them (SIGTERM, SIGKILL after
   * `podFailureGraceMs`). Default 10000 (FLOTILLA_ORPHAN_GRACE_MS overrides the default);
   * `null`: no keeper, tasks outlive the worker for good.
   */
  orphanGraceMs?: number | null;
}

/** Default of `orphanGraceMs`. */
export const DEFAULT_ORPHAN_GRACE_MS = 10_000;

/**
 * The keeper: one small detached shell per driver instance. $1 = the driver's directory,
 * $2 = seconds the tasks outlive the worker, $3 = seconds between SIGTERM and SIGKILL, $4 =
 * the reason recorded. Its stdin is a pipe from the worker, so `cat` returns when the worker
 * closes the driver or its process ends (SIGKILL included: the kernel closes the pipe). A
 * successor driver kills the keeper (its process group) during the wait; otherwise it stops
 * every container whose wrapper still runs — identified by its pid file and a command line
 * naming that very file's base path — and marks the task `orphan-stop` (read at adoption:
 * the pod ends `stopped` with that reason).
 */
export const KEEPER_SCRIPT = [
  'd=$1; g=$2; k=$3; r=$4',
  'cat >/dev/null',
  'sleep "$g"',
  'each() {',
  '  for f in "$d"/tasks/*/*.pid; do',
  '    [ -f "$f" ] || continue',
  '    b=${f%.pid}',
  '    p=$(cat "$f" 2>/dev/null) || continue',
  '    case $p in ""|*[!0-9]*) continue ;; esac',
  '    tr "\\000" "\\n" < "/proc/$p/cmdline" 2>/dev/null | grep -qxF -- "$b" || continue',
  '    if [ "$1" = TERM ] && [ ! -f "${f%/*}/orphan-stop" ]; then echo "$r" > "${f%/*}/orphan-stop"; fi',
  '    kill -s "$1" -- "-$p" 2>/dev/null',
  '  done',
  '}',
  'each TERM',
  'sleep "$k"',
  'each KILL',
].join('\n');
const KEEPER_ARGV0 = 'flotilla-keeper';

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** The wrapper script: $1 = base path of the container's files, then the program and its args. */
export const WRAPPER_SCRIPT = [
  'trap : TERM INT HUP QUIT',
  'b=$1',
  'shift',
  'echo $$ > "$b.pid"',
  '"$@"',
  's=$?',
  'echo $s > "$b.exit"',
].join('\n');
const WRAPPER_ARGV0 = 'flotilla-wrap';

const CONTAINER_NAME_RE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
/** Longest partial line kept in memory by `logs()`; longer lines are split. */
const MAX_LINE = 64 * 1024;
const READ_CHUNK = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// Persisted records

interface ContainerRecord {
  name: string;
  /** Wrapper pid (= its process group and session id). */
  pid?: number;
  /** Field 22 of /proc/<pid>/stat (clock ticks since boot): tells a recycled pid apart. */
  procStart?: string;
  startedAt?: number;
  /**
   * A SIGTERM was sent while the wrapper had not exec'd the program yet: the shell catches it
   * (its trap) and the program, exec'd later, never sees it. Sent again once the program runs.
   */
  termPending?: boolean;
  /** Set once the container is over (or could not be launched). */
  exit?: { code?: number; at: number; reason: string };
}

interface TaskRecord {
  v: 1;
  taskId: string;
  attempt: number;
  specHash: string;
  spec: TaskSpec;
  createdAt: number;
  startedAt?: number;
  containers: ContainerRecord[];
  /**
   * The boot (kernel boot id) whose monotonic clock the `killAt` deadlines below are counted
   * on. Deadlines must survive a worker restart (its successor adopts the task and must send
   * the SIGKILL on time), so they cannot be process-relative (`monoNow`) nor wall-clock (a
   * stepped clock would kill at once or never): they are `bootMonoNow()` values, the system's
   * CLOCK_MONOTONIC, which every process of one boot shares. A record from another boot (or
   * written before this field existed, with wall-clock deadlines) is re-based at adoption.
   */
  boot?: string;
  /** stop() was asked (or the keeper stopped the pod): the pod ends `stopped`. `at` is wall time (display); `killAt` see `boot`. */
  stop?: { at: number; killAt: number; reason?: string };
  /** The first container failure: the pod ends `failed`. `at` is wall time (display); `killAt` see `boot`. */
  failure?: { container: string; exitCode?: number; reason: string; at: number; killAt: number };
  /** SIGKILL was sent to every group (after a grace period). */
  killedAt?: number;
  /** The pod is over: nothing of it runs any more. */
  final?: { state: 'succeeded' | 'failed' | 'stopped'; exitCode?: number; reason: string; finishedAt: number };
}

interface LiveTask {
  rec: TaskRecord;
  dir: string;
  listeners: Set<DriverEventListener>;
  /** Key of the last status emitted (to emit on change only). */
  lastKey: string;
  waiters: (() => void)[];
  removed: boolean;
}

// ---------------------------------------------------------------------------------------------
// Small helpers (exported for tests and the docker driver's reuse)

/** JSON with sorted object keys: stable across key orders. */
export function stableStringify(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableStringify).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${stableStringify(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}

export function specHash(spec: TaskSpec): string {
  return createHash('sha256').update(stableStringify(spec)).digest('hex');
}

/** A file-system-safe directory name for a task id (ids are any string up to 128 characters). */
export function taskDirName(taskId: string): string {
  if (/^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$/.test(taskId)) return taskId;
  return '_' + createHash('sha256').update(taskId).digest('hex').slice(0, 40);
}

export interface ProcStat {
  state: string;
  ppid: number;
  pgrp: number;
  session: number;
  /** Field 22: start time in clock ticks since boot. */
  start: string;
}

/** Parse /proc/<pid>/stat; null when the process does not exist. */
export function readProcStat(pid: number): ProcStat | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // "pid (comm) S ppid pgrp session …": comm may hold spaces and parentheses.
  const close = text.lastIndexOf(')');
  if (close < 0) return null;
  const f = text.slice(close + 2).split(' ');
  // f[0] is field 3 (state), so field n is f[n - 3].
  if (f.length < 20) return null;
  return { state: f[0]!, ppid: Number(f[1]), pgrp: Number(f[2]), session: Number(f[3]), start: f[19]! };
}

function readCmdline(pid: number): string[] | null {
  try {
    const raw = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return raw.split('\0');
  } catch {
    return null;
  }
}

/** Child pids of a process (from /proc/<pid>/task/<pid>/children, or a scan of /proc). */
function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    const out: number[] = [];
    let entries: string[] = [];
    try {
      entries = readdirSync('/proc');
    } catch {
      return out;
    }
    for (const e of entries) if (/^\d+$/.test(e) && readProcStat(Number(e))?.ppid === pid) out.push(Number(e));
    return out;
  }
}

function readExitFile(path: string): { code: number; at: number } | null {
  try {
    const text = readFileSync(path, 'utf8');
    const m = /^(\d{1,3})\n$/.exec(text);
    if (m === null) return null; // not (completely) written yet
    return { code: Number(m[1]), at: Math.round(statSync(path).mtimeMs) };
  } catch {
    return null;
  }
}

function writeJsonAtomic(path: string, value: unknown): void {
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, JSON.stringify(value, null, 1) + '\n');
  renameSync(tmp, path);
}

function killGroup(pgid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch {
    return false; // ESRCH: nothing left in the group
  }
}

/** Kill the keeper recorded in `<dir>/keeper.json` (its process group), if it still runs. */
function killKeeper(dir: string): void {
  try {
    const k = JSON.parse(readFileSync(join(dir, 'keeper.json'), 'utf8')) as { pid?: unknown; start?: unknown };
    const pid = typeof k.pid === 'number' ? k.pid : -1;
    const st = pid > 1 ? readProcStat(pid) : null;
    const argv = st !== null && st.start === k.start ? readCmdline(pid) : null;
    if (argv !== null && argv.includes(KEEPER_ARGV0) && argv.includes(dir)) killGroup(pid, 'SIGKILL');
  } catch {
    // no keeper
  }
}

/**
 * Stop every task process a process driver directory holds, now (for `flotilla up` stopping
 * its cluster after its workers have exited): the keeper is killed, each container whose
 * wrapper still runs gets SIGTERM on its process group, SIGKILL after `graceMs`; the task is
 * marked so a later worker reports it `stopped` with `reason`. Returns the process group ids
 * signalled and those that needed SIGKILL.
 */
export async function stopTasksInDir(dir: string, graceMs: number, reason: string): Promise<{ groups: number[]; killed: number[] }> {
  const root = resolve(dir);
  killKeeper(root);
  const found: { pid: number; argvBase: string }[] = [];
  let names: string[] = [];
  try {
    names = readdirSync(join(root, 'tasks'));
  } catch {
    return { groups: [], killed: [] };
  }
  const ours = (pid: number, base: string): boolean => {
    const st = readProcStat(pid);
    if (st === null || st.state === 'Z' || st.state === 'X') return false;
    const argv = readCmdline(pid);
    return argv !== null && argv.includes(WRAPPER_ARGV0) && argv.includes(base);
  };
  for (const name of names) {
    const tdir = join(root, 'tasks', name);
    let files: string[] = [];
    try {
      files = readdirSync(tdir).filter((f) => f.endsWith('.pid'));
    } catch {
      continue;
    }
    let marked = false;
    for (const f of files) {
      const base = join(tdir, f.slice(0, -'.pid'.length));
      const pid = Number(readFileSync(join(tdir, f), 'utf8').trim());
      if (!Number.isSafeInteger(pid) || pid <= 1 || !ours(pid, base)) continue;
      if (!marked && !existsSync(join(tdir, 'orphan-stop'))) writeFileSync(join(tdir, 'orphan-stop'), reason + '\n');
      marked = true;
      killGroup(pid, 'SIGTERM');
      found.push({ pid, argvBase: base });
    }
  }
  const deadline = monoNow() + Math.max(0, graceMs);
  while (found.some((g) => ours(g.pid, g.argvBase)) && monoNow() < deadline) await new Promise((r) => setTimeout(r, 50));
  const killed: number[] = [];
  for (const g of found) {
    // Whatever is left in the group (the wrapper, or daemons its program forked) — unless
    // that pid now runs something else (then the group is not ours any more).
    const st = readProcStat(g.pid);
    const stillOurs = ours(g.pid, g.argvBase);
    if (st !== null && st.state !== 'Z' && !stillOurs) continue;
    if (killGroup(g.pid, 'SIGKILL') && stillOurs) killed.push(g.pid);
  }
  return { groups: found.map((g) => g.pid), killed };
}

function errMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Resolves after `ms`, or early (without rejecting) when `signal` aborts. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((res) => {
    if (signal?.aborted) return res();
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      res();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** Find an executable: a name with '/' is taken relative to `cwd`; otherwise searched in PATH. */
export function resolveExecutable(name: string, pathVar: string, cwd: string): string | null {
  const isExec = (p: string): boolean => {
    try {
      if (!statSync(p).isFile()) return false;
      accessSync(p, fsConstants.X_OK);
      return true;
    } catch {
      return false;
    }
  };
  if (name.includes('/')) {
    const p = resolve(cwd, name);
    return isExec(p) ? p : null;
  }
  for (const dir of pathVar.split(delimiter)) {
    if (dir === '') continue;
    const p = resolve(cwd, dir, name);
    if (isExec(p)) return p;
  }
  return null;
}

// ---------------------------------------------------------------------------------------------

export class ProcessDriver implements Driver {
  readonly name = 'process' as const;
  readonly dir: string;
  private readonly tasksDir: string;
  private readonly pollMs: number;
  private readonly podFailureGraceMs: number;
  private readonly shell: string;
  private readonly log: Logger;
  private readonly tasks = new Map<string, LiveTask>();
  private readonly watchers = new Set<DriverEventListener>();
  private loaded: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly orphanGraceMs: number | null;
  /** This instance's keeper and the pipe whose end tells it the worker is gone. */
  private keeper: ChildProcess | null = null;

  constructor(opts: ProcessDriverOptions) {
    this.dir = resolve(opts.dir);
    this.tasksDir = join(this.dir, 'tasks');
    this.pollMs = opts.pollMs ?? 200;
    this.podFailureGraceMs = opts.podFailureGraceMs ?? 5000;
    this.shell = opts.shell ?? '/bin/sh';
    this.log = opts.log ?? silentLogger;
    const envGrace = Number(process.env.FLOTILLA_ORPHAN_GRACE_MS);
    this.orphanGraceMs = opts.orphanGraceMs !== undefined ? opts.orphanGraceMs : Number.isFinite(envGrace) && envGrace >= 0 ? envGrace : DEFAULT_ORPHAN_GRACE_MS;
  }

  /**
   * Take over from the keeper of an earlier instance (it was waiting for a successor: kill
   * it) and start this instance's own. See KEEPER_SCRIPT.
   */
  private startKeeper(): void {
    killKeeper(this.dir);
    if (this.orphanGraceMs === null) return;
    try {
      const graceS = Math.max(0, Math.ceil(this.orphanGraceMs / 1000));
      const killS = Math.max(1, Math.ceil(this.podFailureGraceMs / 1000));
      const child = spawn(this.shell, ['-c', KEEPER_SCRIPT, KEEPER_ARGV0, this.dir, String(graceS), String(killS), `stopped: its worker was gone for more than ${graceS} s`], {
        cwd: '/',
        detached: true,
        stdio: ['pipe', 'ignore', 'ignore'],
      });
      child.on('error', (e) => this.log.warn('process driver: keeper error', { error: errMessage(e) }));
      child.stdin!.on('error', () => undefined);
      child.unref();
      (child.stdin as unknown as { unref?: () => void }).unref?.();
      if (child.pid === undefined) throw new Error(`could not run ${this.shell}`);
      writeJsonAtomic(join(this.dir, 'keeper.json'), { pid: child.pid, start: readProcStat(child.pid)?.start ?? '' });
      this.keeper = child;
    } catch (e) {
      this.log.warn('process driver: cannot start the keeper; tasks will outlive the worker', { error: errMessage(e) });
    }
  }

  // ---- lifecycle

  /** Loads (adopts) the tasks on disk once; every public method waits for it. */
  private ready(): Promise<void> {
    if (this.closed) return Promise.reject(new FlotillaError('unavailable', 'Cannot use the process driver as it is closed'));
    this.loaded ??= Promise.resolve().then(() => this.adopt());
    return this.loaded;
  }

  private adopt(): void {
    mkdirSync(this.tasksDir, { recursive: true });
    this.startKeeper();
    for (const name of readdirSync(this.tasksDir)) {
      const dir = join(this.tasksDir, name);
      let rec: TaskRecord;
      try {
        rec = JSON.parse(readFileSync(join(dir, 'task.json'), 'utf8')) as TaskRecord;
        if (rec.v !== 1 || typeof rec.taskId !== 'string' || !Array.isArray(rec.containers)) throw new Error('unknown format');
      } catch (e) {
        this.log.warn('process driver: skipping an unreadable task directory', { dir, error: errMessage(e) });
        continue;
      }
      if (this.tasks.has(rec.taskId)) continue;
      this.rebaseDeadlines(rec);
      // Stopped by a keeper (or `flotilla up` stopping) while no worker watched.
      if (rec.final === undefined && rec.stop === undefined) {
        try {
          const reason = readFileSync(join(dir, 'orphan-stop'), 'utf8').trim() || 'stopped: its worker was gone';
          const at = Math.round(statSync(join(dir, 'orphan-stop')).mtimeMs);
          // The keeper marked it at `at` (wall time, a file's mtime): what is left of the grace,
          // bounded to [0, grace] so a stepped wall clock can neither skip nor stretch it.
          const left = Math.min(this.podFailureGraceMs, Math.max(0, at + this.podFailureGraceMs - Date.now()));
          rec.stop = { at, killAt: bootMonoNow() + left, reason };
          rec.boot = bootId();
        } catch {
          // not stopped
        }
      }
      // The worker may have died between launching a wrapper and recording its pid: the
      // wrapper's own pid file tells.
      for (const c of rec.containers) {
        if (c.pid !== undefined || c.exit !== undefined) continue;
        try {
          const pid = Number(readFileSync(join(dir, `${c.name}.pid`), 'utf8').trim());
          if (Number.isSafeInteger(pid) && pid > 1) c.pid = pid;
        } catch {
          // never launched
        }
        if (c.pid === undefined) c.exit = { at: Date.now(), reason: `container '${c.name}' was never started (the worker stopped while starting the task)` };
      }
      if (rec.final === undefined) rec.startedAt ??= rec.createdAt;
      const t: LiveTask = { rec, dir, listeners: new Set(), lastKey: '', waiters: [], removed: false };
      this.tasks.set(rec.taskId, t);
      this.log.info('process driver: adopted task', { taskId: rec.taskId, final: rec.final?.state ?? null });
      this.refresh(t);
    }
    this.ensureTimer();
  }

  /**
   * Deadlines of a record written on another boot, or before they were monotonic (wall-clock
   * ms, no `boot`): counted again from now. Nothing of another boot still runs, so its
   * deadlines are simply due; a wall-clock deadline keeps what was left of it, at most the grace.
   */
  private rebaseDeadlines(rec: TaskRecord): void {
    const boot = bootId();
    if (rec.boot === boot) return;
    const mono = bootMonoNow();
    const wall = Date.now();
    const rebase = (killAt: number): number =>
      rec.boot === undefined ? mono + Math.min(this.podFailureGraceMs, Math.max(0, killAt - wall)) : mono;
    if (rec.stop) rec.stop.killAt = rebase(rec.stop.killAt);
    if (rec.failure) rec.failure.killAt = rebase(rec.failure.killAt);
    rec.boot = boot;
  }

  private ensureTimer(): void {
    if (this.timer !== null || this.closed) return;
    this.timer = setInterval(() => this.pollAll(), this.pollMs);
    this.timer.unref();
  }

  private pollAll(): void {
    for (const t of this.tasks.values()) {
      if (t.rec.final !== undefined) continue;
      try {
        this.refresh(t);
      } catch (e) {
        this.log.error('process driver: poll failed', { taskId: t.rec.taskId, error: errMessage(e) });
      }
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    // The keeper's wait starts now: a successor within orphanGraceMs takes the tasks over.
    this.keeper?.stdin?.destroy();
    this.keeper = null;
    this.watchers.clear();
    for (const t of this.tasks.values()) {
      t.listeners.clear();
      this.wake(t);
    }
  }

  watch(listener: DriverEventListener): () => void {
    this.watchers.add(listener);
    return () => this.watchers.delete(listener);
  }

  // ---- the Driver API

  async start(taskId: string, spec: TaskSpec, onEvent?: DriverEventListener, opts: DriverStartOptions = {}): Promise<void> {
    await this.ready();
    if (typeof taskId !== 'string' || taskId.length === 0 || taskId.length > 128) {
      throw new FlotillaError('bad_request', "Cannot start task as 'taskId' must be a string of 1 to 128 characters");
    }
    const attempt = opts.attempt ?? 1;
    if (!Number.isSafeInteger(attempt) || attempt < 1) {
      throw new FlotillaError('bad_request', `Cannot start task '${taskId}' as 'attempt' must be a whole number >= 1`);
    }
    this.checkSpec(taskId, spec);
    const hash = specHash(spec);
    const existing = this.tasks.get(taskId);
    if (existing !== undefined) {
      if (existing.rec.attempt !== attempt) {
        throw new FlotillaError('conflict', `Cannot start attempt ${attempt} of task '${taskId}' as attempt ${existing.rec.attempt} is here; stop and remove it first`);
      }
      if (existing.rec.specHash !== hash) {
        throw new FlotillaError('conflict', `Cannot start task '${taskId}' as it already exists here with a different spec`);
      }
      if (existing.rec.final !== undefined) {
        throw new FlotillaError('conflict', `Cannot start task '${taskId}' as it already ran here (${existing.rec.final.state}); remove it first`);
      }
      if (onEvent !== undefined) existing.listeners.add(onEvent);
      return; // already starting/running: never a duplicate
    }

    const dir = join(this.tasksDir, taskDirName(taskId));
    rmSync(dir, { recursive: true, force: true }); // leftovers of a removed task with this name
    mkdirSync(join(dir, 'work'), { recursive: true });
    const now = Date.now();
    const rec: TaskRecord = {
      v: 1,
      taskId,
      attempt,
      specHash: hash,
      spec,
      createdAt: now,
      boot: bootId(),
      containers: spec.containers.map((c) => ({ name: c.name })),
    };
    const t: LiveTask = { rec, dir, listeners: new Set(onEvent ? [onEvent] : []), lastKey: '', waiters: [], removed: false };
    this.tasks.set(taskId, t);
    this.persist(t); // before any process exists: a crash from here on leaves a record
    this.emitIfChanged(t); // starting

    // Resolve every container first: a pod either launches completely or not at all.
    const plans: { exe: string; argv: string[]; env: Record<string, string>; cwd: string }[] = [];
    for (const c of spec.containers) {
      const env: Record<string, string> = {
        PATH: DEFAULT_PATH,
        HOME: process.env.HOME ?? '/',
        HOSTNAME: hostname(),
        FLOTILLA_TASK_ID: taskId,
        FLOTILLA_TASK_NAME: spec.name,
        FLOTILLA_CONTAINER: c.name,
        ...c.env,
      };
      const scratch = join(dir, 'work');
      const cwd = c.workdir === undefined ? scratch : isAbsolute(c.workdir) ? c.workdir : resolve(scratch, c.workdir);
      let problem: string | null = null;
      let exe: string | null = null;
      const program = c.command[0] ?? c.image;
      if (!existsSync(cwd) || !statSync(cwd).isDirectory()) {
        problem = `workdir '${cwd}' is not a directory`;
      } else if (program === undefined || program === '') {
        problem = 'it has no command to run';
      } else {
        exe = resolveExecutable(program, env.PATH ?? '', cwd);
        if (exe === null) {
          problem = program.includes('/') ? `'${program}' is not an executable file` : `executable '${program}' was not found in PATH (${env.PATH})`;
        }
      }
      if (problem !== null) {
        this.failLaunch(t, `failed to start container '${c.name}': ${problem}`);
        return;
      }
      plans.push({ exe: exe!, argv: [...c.command.slice(c.command.length > 0 ? 1 : 0), ...c.args], env, cwd });
    }

    rec.startedAt = Date.now();
    for (let i = 0; i < spec.containers.length; i++) {
      // spawn() blocks the event loop while the kernel forks and execs (tens of ms on a busy
      // machine): yield between containers so heartbeats and other tasks are not starved.
      await new Promise<void>((res) => setImmediate(res));
      if (t.removed || this.closed || rec.stop !== undefined || rec.failure !== undefined) break; // stopped while starting
      const c = rec.containers[i]!;
      const plan = plans[i]!;
      const base = join(dir, c.name);
      let out: number | undefined;
      let err: number | undefined;
      let child: ChildProcess;
      try {
        out = openSync(`${base}.out.log`, 'a');
        err = openSync(`${base}.err.log`, 'a');
        child = spawn(this.shell, ['-c', WRAPPER_SCRIPT, WRAPPER_ARGV0, base, plan.exe, ...plan.argv], {
          cwd: plan.cwd,
          env: plan.env,
          detached: true,
          stdio: ['ignore', out, err],
        });
      } catch (e) {
        c.exit = { at: Date.now(), reason: `failed to start container '${c.name}': ${errMessage(e)}` };
        this.persist(t);
        break;
      } finally {
        if (out !== undefined) closeSync(out);
        if (err !== undefined) closeSync(err);
      }
      child.on('error', (e) => this.log.warn('process driver: spawn error', { taskId, container: c.name, error: errMessage(e) }));
      child.on('exit', () => setImmediate(() => !t.removed && t.rec.final === undefined && this.refresh(t)));
      child.unref();
      if (child.pid === undefined) {
        c.exit = { at: Date.now(), reason: `failed to start container '${c.name}': could not run ${this.shell}` };
        this.persist(t);
        break;
      }
      c.pid = child.pid;
      c.startedAt = Date.now();
      c.procStart = readProcStat(child.pid)?.start;
      this.persist(t);
    }
    if (t.removed) return;
    // Containers after a launch failure (or a stop during the start) never ran.
    for (const c of rec.containers) {
      if (c.pid === undefined && c.exit === undefined) c.exit = { at: Date.now(), reason: `container '${c.name}' was not started` };
    }
    if (this.closed) return; // the successor adopts it
    this.persist(t);
    this.log.info('process driver: started task', { taskId, attempt, pids: rec.containers.map((c) => c.pid ?? null) });
    this.refresh(t);
    this.ensureTimer();
  }

  async stop(taskId: string, graceMs: number): Promise<void> {
    await this.ready();
    const t = this.tasks.get(taskId);
    if (t === undefined) return;
    this.refresh(t); // a container that failed before the stop still fails the pod
    if (t.rec.final !== undefined) return;
    const now = Date.now();
    const killAt = bootMonoNow() + Math.max(0, graceMs);
    t.rec.boot ??= bootId();
    if (t.rec.stop === undefined) {
      t.rec.stop = { at: now, killAt };
      this.persist(t);
      this.log.info('process driver: stopping task', { taskId, graceMs });
      this.signalAll(t, 'SIGTERM');
      this.persist(t);
    } else if (killAt < t.rec.stop.killAt) {
      t.rec.stop.killAt = killAt;
      this.persist(t);
    }
    this.refresh(t);
    await this.whenFinished(t);
  }

  async inspect(taskId: string): Promise<DriverTaskStatus | null> {
    await this.ready();
    const t = this.tasks.get(taskId);
    return t === undefined ? null : this.statusOf(t);
  }

  async list(): Promise<DriverTaskStatus[]> {
    await this.ready();
    return [...this.tasks.values()].map((t) => this.statusOf(t));
  }

  async remove(taskId: string): Promise<void> {
    await this.ready();
    const t = this.tasks.get(taskId);
    if (t === undefined) return;
    if (t.rec.final === undefined) {
      this.signalAll(t, 'SIGKILL');
    } else {
      this.killLeftovers(t);
    }
    t.removed = true;
    this.tasks.delete(taskId);
    t.listeners.clear();
    this.wake(t);
    rmSync(t.dir, { recursive: true, force: true });
    this.log.info('process driver: removed task', { taskId });
  }

  logs(taskId: string, opts: LogOptions = {}): AsyncIterable<LogLine> {
    return this.readLogs(taskId, opts);
  }

  // ---- internals

  private checkSpec(taskId: string, spec: TaskSpec): void {
    const bad = (path: string, message: string): never => {
      throw new FlotillaError('bad_request', `Cannot start task '${taskId}' as '${path}' ${message}`, { details: [{ path, message }] });
    };
    if (spec === null || typeof spec !== 'object' || !Array.isArray(spec.containers) || spec.containers.length === 0) {
      bad('containers', 'must have at least 1 container');
    }
    if (spec.driver !== 'process') bad('driver', `must be 'process' for the process driver (got '${String(spec.driver)}')`);
    if (Array.isArray(spec.mounts) && spec.mounts.length > 0) bad('mounts', 'must be empty for the process driver');
    const seen = new Set<string>();
    spec.containers.forEach((c, i) => {
      if (typeof c.name !== 'string' || !CONTAINER_NAME_RE.test(c.name)) bad(`containers[${i}].name`, 'must be a DNS label');
      if (seen.has(c.name)) bad(`containers[${i}].name`, 'must be unique');
      seen.add(c.name);
      if (!Array.isArray(c.command) || !c.command.every((s) => typeof s === 'string')) bad(`containers[${i}].command`, 'must be an array of strings');
      if (!Array.isArray(c.args) || !c.args.every((s) => typeof s === 'string')) bad(`containers[${i}].args`, 'must be an array of strings');
      if (c.env === null || typeof c.env !== 'object' || !Object.values(c.env).every((s) => typeof s === 'string')) bad(`containers[${i}].env`, 'must map names to strings');
      for (const [k, v] of Object.entries(c.env)) {
        if (k.includes('=') || k.includes('\0') || k === '' || v.includes('\0')) bad(`containers[${i}].env`, `has an invalid variable '${k}'`);
      }
      for (const s of [...c.command, ...c.args]) if (s.includes('\0')) bad(`containers[${i}]`, 'must not contain NUL characters in command or args');
    });
  }

  private failLaunch(t: LiveTask, reason: string): void {
    const now = Date.now();
    for (const c of t.rec.containers) if (c.exit === undefined) c.exit = { at: now, reason };
    t.rec.final = { state: 'failed', reason, finishedAt: now };
    this.persist(t);
    this.log.warn('process driver: task failed to start', { taskId: t.rec.taskId, reason });
    this.emitIfChanged(t);
    this.wake(t);
  }

  private persist(t: LiveTask): void {
    if (t.removed) return;
    try {
      writeJsonAtomic(join(t.dir, 'task.json'), t.rec);
    } catch (e) {
      this.log.error('process driver: cannot write task state', { taskId: t.rec.taskId, error: errMessage(e) });
    }
  }

  /** Whether the container's wrapper still runs (same pid, start time and command line). */
  private wrapperAlive(t: LiveTask, c: ContainerRecord): boolean {
    if (c.pid === undefined) return false;
    const st = readProcStat(c.pid);
    if (st === null || st.state === 'Z' || st.state === 'X') return false;
    if (c.procStart !== undefined && st.start !== c.procStart) return false; // recycled pid
    const argv = readCmdline(c.pid);
    if (argv === null) return false;
    return argv.includes(join(t.dir, c.name)) && argv.includes(WRAPPER_ARGV0);
  }

  /** Signal every container's process group, where the group is (still) ours. */
  private signalAll(t: LiveTask, signal: NodeJS.Signals): void {
    for (const c of t.rec.containers) {
      if (c.pid === undefined) continue;
      if (c.exit !== undefined && signal !== 'SIGKILL') continue;
      this.signalGroup(t, c, signal);
      if (signal === 'SIGTERM' && c.exit === undefined && !this.programRuns(c)) c.termPending = true;
    }
  }

  /**
   * Whether the wrapper's program has been exec'd (so it received a SIGTERM sent now). False
   * while the wrapper has not forked yet, or its child is still the shell (same command line)
   * between fork and exec: a signal then is caught by the shell's trap and lost to the program.
   */
  private programRuns(c: ContainerRecord): boolean {
    if (c.pid === undefined) return false;
    const own = readCmdline(c.pid)?.join('\0');
    if (own === undefined) return true; // the wrapper is gone: nothing to resend to
    const kids = childrenOf(c.pid);
    if (kids.length === 0) return false;
    return kids.every((k) => {
      const argv = readCmdline(k);
      return argv !== null && argv.join('\0') !== own;
    });
  }

  private signalGroup(t: LiveTask, c: ContainerRecord, signal: NodeJS.Signals): void {
    if (c.pid === undefined) return;
    // The group id is the wrapper's pid. While any member of the group lives, Linux does not
    // hand that pid to a new process; if a process with that pid exists and is not our
    // wrapper, the pid was recycled and the group is not ours.
    const st = readProcStat(c.pid);
    if (st !== null && st.state !== 'Z' && !this.wrapperAlive(t, c)) return;
    if (killGroup(c.pid, signal)) this.log.debug('process driver: signalled group', { taskId: t.rec.taskId, container: c.name, signal });
  }

  /** Kill what a finished container left behind in its group (forked daemons). */
  private killLeftovers(t: LiveTask): void {
    for (const c of t.rec.containers) this.signalGroup(t, c, 'SIGKILL');
  }

  /** Re-read the task's processes and files, advance its state, emit on change. */
  private refresh(t: LiveTask): void {
    if (t.removed || this.closed) return; // a closed driver leaves the task to its successor
    const rec = t.rec;
    if (rec.final !== undefined) {
      this.emitIfChanged(t);
      this.wake(t);
      return;
    }
    const now = Date.now(); // wall: exit and kill times shown to people
    const mono = bootMonoNow(); // the kill deadlines (see TaskRecord.boot)
    let changed = false;
    for (const c of rec.containers) {
      if (c.termPending !== true) continue;
      if (c.exit !== undefined || rec.killedAt !== undefined) {
        delete c.termPending;
      } else if (this.programRuns(c)) {
        delete c.termPending;
        this.log.debug('process driver: program started after the SIGTERM; sending it again', { taskId: rec.taskId, container: c.name });
        this.signalGroup(t, c, 'SIGTERM');
      }
    }
    for (const c of rec.containers) {
      if (c.exit !== undefined || c.pid === undefined) continue;
      const exitFile = join(t.dir, `${c.name}.exit`);
      let ex = readExitFile(exitFile);
      if (ex === null && !this.wrapperAlive(t, c)) {
        ex = readExitFile(exitFile); // it may have written it just before exiting
        if (ex === null) {
          c.exit = rec.killedAt !== undefined
            ? { code: 137, at: now, reason: `container '${c.name}' was killed after the grace period` }
            : { at: now, reason: `container '${c.name}' was killed (its exit status is unknown)` };
          changed = true;
          continue;
        }
      }
      if (ex !== null) {
        c.exit = { code: ex.code, at: ex.at, reason: ex.code === 0 ? `container '${c.name}' exited with code 0` : exitReason(c.name, ex.code) };
        changed = true;
      }
    }

    // The first failure fails the pod (unless it is being stopped: then exits are expected).
    if (rec.failure === undefined && rec.stop === undefined) {
      const failed = rec.containers
        .filter((c) => c.exit !== undefined && c.exit.code !== 0)
        .sort((a, b) => a.exit!.at - b.exit!.at)[0];
      if (failed !== undefined) {
        rec.boot ??= bootId();
        rec.failure = { container: failed.name, exitCode: failed.exit!.code, reason: failed.exit!.reason, at: now, killAt: mono + this.podFailureGraceMs };
        changed = true;
        this.persist(t);
        this.log.info('process driver: container failed, stopping the pod', { taskId: rec.taskId, container: failed.name, exitCode: failed.exit!.code ?? null });
        this.signalAll(t, 'SIGTERM');
      }
    }

    const running = rec.containers.filter((c) => c.exit === undefined);
    const killAt = Math.min(rec.stop?.killAt ?? Infinity, rec.failure?.killAt ?? Infinity);
    if (running.length > 0 && rec.killedAt === undefined && mono >= killAt) {
      rec.killedAt = now;
      changed = true;
      this.persist(t);
      this.log.info('process driver: grace period over, killing', { taskId: rec.taskId });
      this.signalAll(t, 'SIGKILL');
    }

    if (running.length === 0) {
      this.killLeftovers(t);
      const finishedAt = Math.max(...rec.containers.map((c) => c.exit!.at), rec.startedAt ?? rec.createdAt);
      if (rec.failure !== undefined && (rec.stop === undefined || rec.failure.at <= rec.stop.at)) {
        rec.final = { state: 'failed', reason: rec.failure.reason, finishedAt };
        if (rec.failure.exitCode !== undefined) rec.final.exitCode = rec.failure.exitCode;
      } else if (rec.stop !== undefined) {
        rec.final = { state: 'stopped', reason: rec.stop.reason ?? 'stopped on request', finishedAt };
      } else {
        rec.final = { state: 'succeeded', exitCode: 0, reason: 'all containers exited with code 0', finishedAt };
      }
      changed = true;
      this.log.info('process driver: task finished', { taskId: rec.taskId, state: rec.final.state, exitCode: rec.final.exitCode ?? null });
    }
    if (changed) this.persist(t);
    this.emitIfChanged(t);
    if (rec.final !== undefined) this.wake(t);
  }

  private statusOf(t: LiveTask): DriverTaskStatus {
    const rec = t.rec;
    const containers: DriverContainerStatus[] = rec.containers.map((c) => {
      const s: DriverContainerStatus = {
        name: c.name,
        state: c.exit !== undefined ? (c.exit.code === 0 ? 'exited' : 'failed') : c.pid !== undefined ? 'running' : 'starting',
      };
      if (c.exit?.code !== undefined) s.exitCode = c.exit.code;
      if (c.pid !== undefined) s.pid = c.pid;
      return s;
    });
    let state: DriverTaskState;
    if (rec.final !== undefined) state = rec.final.state;
    else state = rec.containers.every((c) => c.pid !== undefined || c.exit !== undefined) && rec.startedAt !== undefined ? 'running' : 'starting';
    const status: DriverTaskStatus = { taskId: rec.taskId, attempt: rec.attempt ?? 1, state, containers };
    if (rec.final !== undefined) {
      status.reason = rec.final.reason;
      if (rec.final.exitCode !== undefined) status.exitCode = rec.final.exitCode;
      status.finishedAt = rec.final.finishedAt;
    } else if (rec.stop !== undefined) {
      status.reason = 'stopping';
    } else if (rec.failure !== undefined) {
      status.reason = `failing: ${rec.failure.reason}`;
    }
    status.detail = containers
      .map((c) => `${c.name} ${c.state === 'running' || c.state === 'starting' ? c.state : c.exitCode !== undefined ? `exited ${c.exitCode}` : 'killed'}`)
      .join(', ');
    const pid = rec.containers[0]?.pid;
    if (pid !== undefined) status.pid = pid;
    if (rec.startedAt !== undefined) status.startedAt = rec.startedAt;
    return status;
  }

  private emitIfChanged(t: LiveTask): void {
    if (t.removed) return;
    const s = this.statusOf(t);
    const key = stableStringify([s.state, s.exitCode, s.reason, s.detail]);
    if (key === t.lastKey) return;
    t.lastKey = key;
    for (const l of [...t.listeners, ...this.watchers]) {
      try {
        l(s);
      } catch (e) {
        this.log.error('process driver: event listener threw', { taskId: t.rec.taskId, error: errMessage(e) });
      }
    }
  }

  private whenFinished(t: LiveTask): Promise<void> {
    if (t.rec.final !== undefined || t.removed || this.closed) return Promise.resolve();
    return new Promise((res) => t.waiters.push(res));
  }

  private wake(t: LiveTask): void {
    const ws = t.waiters.splice(0);
    for (const w of ws) w();
  }

  private async *readLogs(taskId: string, opts: LogOptions): AsyncGenerator<LogLine> {
    await this.ready();
    const t = this.tasks.get(taskId);
    if (t === undefined) throw new FlotillaError('not_found', `Cannot read the logs of task '${taskId}' as it is not on this worker`);
    const names = t.rec.containers.map((c) => c.name);
    if (opts.container !== undefined && !names.includes(opts.container)) {
      throw new FlotillaError('bad_request', `Cannot read the logs of task '${taskId}' as it has no container '${opts.container}' (it has ${names.map((n) => `'${n}'`).join(', ')})`);
    }
    if (opts.tail !== undefined && (!Number.isSafeInteger(opts.tail) || opts.tail < 0)) {
      throw new FlotillaError('bad_request', `Cannot read the logs of task '${taskId}' as 'tail' must be a whole number >= 0`);
    }
    const streams: ('stdout' | 'stderr')[] = opts.stream !== undefined ? [opts.stream] : ['stdout', 'stderr'];
    interface Source {
      container: string;
      stream: 'stdout' | 'stderr';
      path: string;
      fh: FileHandle | null;
      offset: number;
      partial: string;
      decoder: StringDecoder;
      tailPending: boolean;
    }
    const sources: Source[] = [];
    for (const name of opts.container !== undefined ? [opts.container] : names) {
      for (const stream of streams) {
        const path = join(t.dir, `${name}.${stream === 'stdout' ? 'out' : 'err'}.log`);
        sources.push({ container: name, stream, path, fh: null, offset: 0, partial: '', decoder: new StringDecoder('utf8'), tailPending: opts.tail !== undefined });
      }
    }
    const buf = Buffer.alloc(READ_CHUNK);
    const signal = opts.signal;
    try {
      for (;;) {
        if (signal?.aborted) return;
        const finishedBefore = t.removed || this.closed || isFinished(this.statusOf(t).state);
        let got = false;
        for (const s of sources) {
          if (s.fh === null) {
            try {
              s.fh = await open(s.path, 'r');
            } catch {
              continue; // not created yet (or removed)
            }
            if (s.tailPending) {
              s.offset = await tailOffset(s.fh, opts.tail!);
              s.tailPending = false;
            }
          }
          for (;;) {
            const { bytesRead } = await s.fh.read(buf, 0, buf.length, s.offset);
            if (bytesRead === 0) break;
            got = true;
            s.offset += bytesRead;
            s.partial += s.decoder.write(buf.subarray(0, bytesRead));
            let nl: number;
            while ((nl = s.partial.indexOf('\n')) >= 0) {
              yield { container: s.container, stream: s.stream, line: s.partial.slice(0, nl) };
              s.partial = s.partial.slice(nl + 1);
            }
            while (s.partial.length > MAX_LINE) {
              yield { container: s.container, stream: s.stream, line: s.partial.slice(0, MAX_LINE) };
              s.partial = s.partial.slice(MAX_LINE);
            }
            if (signal?.aborted) return;
          }
        }
        if (!opts.follow || (finishedBefore && !got)) break;
        if (!got) await sleep(Math.min(this.pollMs, 250), signal);
      }
      for (const s of sources) {
        s.partial += s.decoder.end();
        if (s.partial.length > 0) yield { container: s.container, stream: s.stream, line: s.partial };
        s.partial = '';
      }
    } finally {
      for (const s of sources) await s.fh?.close().catch(() => undefined);
    }
  }
}

function exitReason(container: string, code: number): string {
  if (code > 128 && code < 160) return `container '${container}' exited with code ${code} (signal ${code - 128})`;
  return `container '${container}' exited with code ${code}`;
}

/** Byte offset where the last `lines` lines of a file start. */
async function tailOffset(fh: FileHandle, lines: number): Promise<number> {
  const size = (await fh.stat()).size;
  if (lines === 0) return size;
  if (size === 0) return 0;
  const buf = Buffer.alloc(READ_CHUNK);
  let end = size;
  // A final '\n' ends the last line; it does not start a new one.
  const last = Buffer.alloc(1);
  await fh.read(last, 0, 1, size - 1);
  if (last[0] === 0x0a) end = size - 1;
  let seen = 0;
  while (end > 0) {
    const start = Math.max(0, end - buf.length);
    const { bytesRead } = await fh.read(buf, 0, end - start, start);
    for (let i = bytesRead - 1; i >= 0; i--) {
      if (buf[i] === 0x0a) {
        seen++;
        if (seen === lines) return start + i + 1;
      }
    }
    end = start;
  }
  return 0;
}
