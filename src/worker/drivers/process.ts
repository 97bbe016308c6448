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
// FLOTILLA_TASK_NAME, FLOTILLA_CONTAINER, FLOTILLA_NODE_HOST (the node's address), FLOTILLA_DNS (host:port of the node's DNS server), then the spec's `env` over them. Nothing else of
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
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { hostname } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { FlotillaError } from '../../protocol/errors.js';
import { bootId, bootMonoNow } from '../../clock.js';
import { silentLogger, type Logger } from '../../log.js';
import type { ContainerSpec, TaskSpec } from '../../protocol/spec.js';
import type { ProbeOptions, ProbeResult } from '../driver.js';
import { runLocal } from './exec-local.js';
import {
  isFinished,
  type Driver,
  type DriverContainerStatus,
  type DriverEventListener,
  type DriverStartOptions,
  type DriverTaskState,
  type DriverTaskStatus,
  type ExecOptions,
  type ExecProcess,
  type LogLine,
  type LogOptions,
  type TaskUsageRaw,
} from '../driver.js';
import { DriverBase, specHash, type TrackedTask } from './base.js';
import { readLogFiles } from './log-files.js';
import { processExec } from './process-exec.js';
import { processTreeUsage, type TaskRoots } from './proc-usage.js';
import { LogStamps } from './log-times.js';
import { removeSecretFiles, writeSecretFiles } from '../secret-files.js';
import { ensureProcessVolume, removeProcessVolume, volumeEnvName } from '../volumes.js';
import {
  DEFAULT_PATH,
  KEEPER_ARGV0,
  KEEPER_SCRIPT,
  WRAPPER_ARGV0,
  WRAPPER_SCRIPT,
  childrenOf,
  killGroup,
  killKeeper,
  readCmdline,
  readExitFile,
  readProcStat,
  resolveExecutable,
  writeJsonAtomic,
} from './proc.js';

// Kept importable from here (tests, the CLI, the chaos harness).
export { DEFAULT_PATH, KEEPER_SCRIPT, WRAPPER_SCRIPT, readProcStat, resolveExecutable, stopTasksInDir, type ProcStat } from './proc.js';
export { specHash, stableStringify } from './base.js';

export interface ProcessDriverOptions {
  /** Directory for task state and logs (created if missing). */
  dir: string;
  /** How often running tasks are checked (ms). Default 200. */
  pollMs?: number;
  /** When one container fails, how long the others get between SIGTERM and SIGKILL. Default 5000. */
  podFailureGraceMs?: number;
  /** This node's host (advertised address), given to tasks as FLOTILLA_NODE_HOST: where to listen to be reached from other nodes. */
  nodeHost?: string;
  /** host:port of the node's DNS server (worker/dns.ts), given to tasks as FLOTILLA_DNS. */
  dns?: string;
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

interface LiveTask extends TrackedTask {
  rec: TaskRecord;
  dir: string;
}

// ---------------------------------------------------------------------------------------------
// Small helpers (exported for tests)

/** The environment a container runs with (and an exec health check in it). */
function containerEnv(taskId: string, spec: TaskSpec, c: ContainerSpec, extraEnv: Record<string, string>): Record<string, string> {
  return {
    PATH: DEFAULT_PATH,
    HOME: process.env.HOME ?? '/',
    HOSTNAME: hostname(),
    FLOTILLA_TASK_ID: taskId,
    FLOTILLA_TASK_NAME: spec.name,
    FLOTILLA_CONTAINER: c.name,
    ...extraEnv,
    ...c.env,
  };
}

/** A container's working directory: its workdir (relative ones in the scratch dir), else the scratch dir. */
function containerCwd(dir: string, c: ContainerSpec): string {
  const scratch = join(dir, 'work');
  return c.workdir === undefined ? scratch : isAbsolute(c.workdir) ? c.workdir : resolve(scratch, c.workdir);
}

/** A file-system-safe directory name for a task id (ids are any string up to 128 characters). */
export function taskDirName(taskId: string): string {
  if (/^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$/.test(taskId)) return taskId;
  return '_' + createHash('sha256').update(taskId).digest('hex').slice(0, 40);
}

function errMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** The process driver's own spec rules (see DriverBase.checkSpec). */
const PROCESS_SPEC_RULES = {
  pod: (spec: TaskSpec, bad: (path: string, message: string) => never): void => {
    if (Array.isArray(spec.mounts) && spec.mounts.length > 0) bad('mounts', 'must be empty for the process driver');
  },
  after: (c: TaskSpec['containers'][number], i: number, bad: (path: string, message: string) => never): void => {
    for (const s of [...c.command, ...c.args]) if (s.includes('\0')) bad(`containers[${i}]`, 'must not contain NUL characters in command or args');
  },
};

// ---------------------------------------------------------------------------------------------

export class ProcessDriver extends DriverBase<LiveTask> implements Driver {
  readonly name = 'process' as const;
  readonly dir: string;
  private readonly tasksDir: string;
  private readonly pollMs: number;
  private readonly podFailureGraceMs: number;
  private readonly shell: string;
  private loaded: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private readonly orphanGraceMs: number | null;
  /** This instance's keeper and the pipe whose end tells it the worker is gone. */
  private keeper: ChildProcess | null = null;

  private readonly nodeHost: string | undefined;
  private readonly dns: string | undefined;

  private nodeEnv(): Record<string, string> {
    return { ...(this.nodeHost !== undefined ? { FLOTILLA_NODE_HOST: this.nodeHost } : {}), ...(this.dns !== undefined ? { FLOTILLA_DNS: this.dns } : {}) };
  }

  constructor(opts: ProcessDriverOptions) {
    super(opts.log ?? silentLogger, 'process driver');
    this.dir = resolve(opts.dir);
    this.tasksDir = join(this.dir, 'tasks');
    this.pollMs = opts.pollMs ?? 200;
    this.podFailureGraceMs = opts.podFailureGraceMs ?? 5000;
    this.shell = opts.shell ?? '/bin/sh';
    this.nodeHost = opts.nodeHost;
    this.dns = opts.dns;
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
  protected ready(): Promise<void> {
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
      else removeSecretFiles(join(dir, 'secrets')); // it ended while no worker watched
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
      // When the output was written (log-times.ts); a last sample as the task ends.
      const logs = t.rec.containers.flatMap((c) => [join(t.dir, `${c.name}.out.log`), join(t.dir, `${c.name}.err.log`)]);
      for (const f of logs) this.stamps.sample(f);
      if (t.rec.final !== undefined) this.stamps.forget(logs);
    }
  }
  private readonly stamps = new LogStamps();

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    // The keeper's wait starts now: a successor within orphanGraceMs takes the tasks over.
    this.keeper?.stdin?.destroy();
    this.keeper = null;
    this.releaseAll();
  }

  // ---- the Driver API

  /** An exec health check: `command` with the container's environment and working directory. */
  async probe(taskId: string, container: string, command: string[], opts: ProbeOptions): Promise<ProbeResult> {
    const t = this.tasks.get(taskId);
    if (t === undefined || t.removed || t.rec.final !== undefined) throw new FlotillaError('not_found', `task '${taskId}' does not run on this worker`);
    const spec = t.rec.spec;
    const c = spec.containers.find((x) => x.name === container);
    if (c === undefined) throw new FlotillaError('bad_request', `task '${taskId}' has no container '${container}'`);
    const extraEnv: Record<string, string> = this.nodeEnv();
    if (spec.secrets !== undefined) extraEnv.FLOTILLA_SECRETS_DIR = join(t.dir, 'secrets');
    for (const v of spec.volumes ?? []) extraEnv[volumeEnvName(v.name)] = ensureProcessVolume(this.dir, v.name);
    return runLocal(command, { ...opts, env: containerEnv(taskId, spec, c, extraEnv), cwd: containerCwd(t.dir, c) });
  }

  /** Deletes this node's copy of a named volume (`flotilla volume rm`). */
  /** CPU and memory of the running tasks' process trees (one /proc scan; see proc-usage.ts). */
  async usage(): Promise<Map<string, TaskUsageRaw>> {
    if (this.closed) return new Map();
    await this.ready();
    const tasks = new Map<string, TaskRoots>();
    for (const t of this.tasks.values()) {
      if (t.rec.final !== undefined || t.removed) continue;
      const roots = t.rec.containers.filter((c) => c.pid !== undefined && c.exit === undefined).map((c) => ({ pid: c.pid!, start: c.procStart }));
      if (roots.length > 0) tasks.set(t.rec.taskId, { attempt: t.rec.attempt ?? 1, roots });
    }
    return processTreeUsage(tasks);
  }

  async removeVolume(name: string): Promise<void> {
    removeProcessVolume(this.dir, name);
  }

  async start(taskId: string, spec: TaskSpec, onEvent?: DriverEventListener, opts: DriverStartOptions = {}): Promise<void> {
    await this.ready();
    const attempt = this.checkStartArgs(taskId, opts.attempt);
    this.checkSpec(taskId, spec, 'process', PROCESS_SPEC_RULES);
    const hash = specHash(spec);
    if (this.joinExisting(taskId, attempt, hash, onEvent)) return; // already starting/running: never a duplicate

    const dir = join(this.tasksDir, taskDirName(taskId));
    this.stamps.forgetDir(dir); // the previous attempt's log files go with the directory
    rmSync(dir, { recursive: true, force: true }); // leftovers of a removed task with this name
    mkdirSync(join(dir, 'work'), { recursive: true });
    // Secrets: one 0400 file each in <task>/secrets (0700), deleted when the task ends. Named
    // volumes: directories under the driver's own, kept from one task to the next.
    const extraEnv: Record<string, string> = this.nodeEnv();
    let setupProblem: string | null = null;
    try {
      if (spec.secrets !== undefined) {
        writeSecretFiles(join(dir, 'secrets'), opts.secrets ?? []);
        extraEnv.FLOTILLA_SECRETS_DIR = join(dir, 'secrets');
      }
      for (const v of spec.volumes ?? []) extraEnv[volumeEnvName(v.name)] = ensureProcessVolume(this.dir, v.name);
    } catch (e) {
      setupProblem = `cannot prepare its secrets or volumes: ${(e as Error).message}`;
    }
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

    if (setupProblem !== null) {
      this.failLaunch(t, setupProblem);
      return;
    }
    // Resolve every container first: a pod either launches completely or not at all.
    const plans: { exe: string; argv: string[]; env: Record<string, string>; cwd: string }[] = [];
    for (const c of spec.containers) {
      const env = containerEnv(taskId, spec, c, extraEnv);
      const cwd = containerCwd(dir, c);
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

  /** Where a task's ports are reached from other nodes: the node's address (FLOTILLA_NODE_HOST); null when unknown. */
  async podAddress(_taskId: string): Promise<string | null> {
    return this.nodeHost ?? null;
  }

  async inspect(taskId: string): Promise<DriverTaskStatus | null> {
    await this.ready();
    const t = this.tasks.get(taskId);
    return t === undefined ? null : this.statusOf(t);
  }

  /** `flotilla exec`: a command in a running container's environment (process-exec.ts). */
  async exec(taskId: string, opts: ExecOptions): Promise<ExecProcess> {
    await this.ready();
    const t = this.tasks.get(taskId);
    if (t !== undefined && t.rec.final === undefined) this.refresh(t);
    return processExec(taskId, t === undefined ? null : this.statusOf(t), opts);
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
    this.tasks.delete(taskId);
    this.forget(t);
    this.stamps.forgetDir(t.dir);
    rmSync(t.dir, { recursive: true, force: true });
    this.log.info('process driver: removed task', { taskId });
  }

  // ---- internals

  protected isOver(t: LiveTask): boolean {
    return t.rec.final !== undefined;
  }

  protected runOf(t: LiveTask): { attempt: number; specHash: string; final?: { state: string } } {
    return t.rec;
  }

  private failLaunch(t: LiveTask, reason: string): void {
    const now = Date.now();
    for (const c of t.rec.containers) if (c.exit === undefined) c.exit = { at: now, reason };
    t.rec.final = { state: 'failed', reason, finishedAt: now };
    removeSecretFiles(join(t.dir, 'secrets'));
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
      removeSecretFiles(join(t.dir, 'secrets'));
      this.log.info('process driver: task finished', { taskId: rec.taskId, state: rec.final.state, exitCode: rec.final.exitCode ?? null });
    }
    if (changed) this.persist(t);
    this.emitIfChanged(t);
    if (rec.final !== undefined) this.wake(t);
  }

  protected statusOf(t: LiveTask): DriverTaskStatus {
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

  protected async *readLogs(taskId: string, opts: LogOptions): AsyncGenerator<LogLine> {
    await this.ready();
    const t = this.logTask(taskId);
    const names = t.rec.containers.map((c) => c.name);
    this.checkLogArgs(taskId, names, opts);
    const streams: ('stdout' | 'stderr')[] = opts.stream !== undefined ? [opts.stream] : ['stdout', 'stderr'];
    const files = (opts.container !== undefined ? [opts.container] : names).flatMap((name) =>
      streams.map((stream) => {
        const path = join(t.dir, `${name}.${stream === 'stdout' ? 'out' : 'err'}.log`);
        return { container: name, stream, path, ...(opts.timestamps || opts.since !== undefined ? { timesPath: `${path}.times` } : {}) };
      }),
    );
    yield* readLogFiles(files, {
      follow: opts.follow,
      tail: opts.tail,
      signal: opts.signal,
      isOver: () => t.removed || this.closed || isFinished(this.statusOf(t).state),
      pollMs: this.pollMs,
    });
  }
}

function exitReason(container: string, code: number): string {
  if (code > 128 && code < 160) return `container '${container}' exited with code ${code} (signal ${code - 128})`;
  return `container '${container}' exited with code ${code}`;
}
