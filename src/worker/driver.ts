// The driver interface: how a worker runs the pods (tasks) the leader assigns to it.
//
// A driver owns the tasks it starts: it can find them again after the worker restarts
// (`list()`), report their state changes (`watch()` / the `onEvent` passed to `start()`), stop
// them (SIGTERM then SIGKILL after a grace period, or the driver's equivalent), stream their
// output (`logs()`) and forget them (`remove()`).
//
// Rules every driver follows:
//  * Tasks outlive the worker for a while: `close()` stops the driver's own timers and
//    watchers only; nothing a driver started is stopped because the worker stops or dies, so
//    a restarted worker adopts it. The process driver bounds this: its keeper stops the tasks
//    once the worker has been gone for `orphanGraceMs` without a successor (see
//    docs/architecture.md, "Tasks die with their agent"). Docker containers stay until a
//    worker of their cluster and node id comes back.
//  * The driver never restarts a task on its own: it reports exits, the manager decides.
//  * `start()` of a task that is already starting/running is a no-op (never a duplicate); of a
//    task that has finished it is a `conflict` (`remove()` it first).
//  * A task that cannot be launched (executable not found, bad workdir, image missing…) is not
//    an exception: `start()` resolves and the task is reported `failed` with a `reason`.
//    `start()` rejects only for misuse (bad task id, unsupported spec, duplicate with a
//    different spec, driver closed).

import type { TaskSpec } from '../protocol/spec.js';
import type { DeliveredSecret } from '../protocol/secrets.js';
import type { PublishedPort } from '../protocol/session.js';
import type { Readable, Writable } from 'node:stream';

export type DriverName = 'process' | 'docker';

export type DriverTaskState = 'starting' | 'running' | 'succeeded' | 'failed' | 'stopped';

/** What a driver observes of one container of a pod. */
export interface DriverContainerStatus {
  name: string;
  state: 'starting' | 'running' | 'exited' | 'failed';
  exitCode?: number;
  /** process driver: pid of the container's process (its process group leader). */
  pid?: number;
}

/** What a driver observes of one task (pod). */
export interface DriverTaskStatus {
  taskId: string;
  /** Which run of the task (see `DriverStartOptions.attempt`). */
  attempt?: number;
  state: DriverTaskState;
  /** The pod's exit code: 0 when it succeeded, the failing container's code when it failed. */
  exitCode?: number;
  /** Why the task is in this state, e.g. "container 'c1' exited with code 3". */
  reason?: string;
  /** Free text for people, e.g. "c0 running, c1 exited 0". */
  detail?: string;
  /** process driver: pid of the first container's process (its process group leader). */
  pid?: number;
  /** ms timestamps. */
  startedAt?: number;
  finishedAt?: number;
  /** Per-container detail, in spec order (optional for drivers that cannot tell). */
  containers?: DriverContainerStatus[];
  /** docker: the engine's bindings of the pod's published tcp ports (what the routing mesh dials). */
  ports?: PublishedPort[];
}

/**
 * What a driver measures of one running task (src/worker/usage.ts turns it into a rate).
 * At least one of `cpuSeconds` / `cores` is given.
 */
export interface TaskUsageRaw {
  attempt: number;
  /** CPU time the task used so far (seconds, cumulative): the sampler takes the difference. */
  cpuSeconds?: number;
  /** Cores used over the driver's own recent window (Docker's precpu delta), when it has one. */
  cores?: number;
  /** Resident memory, bytes. */
  memory: number;
}

export type DriverEventListener = (status: DriverTaskStatus) => void;

export interface DriverStartOptions {
  /**
   * Which run of the task this is (the manager restarts a task in place with attempt + 1).
   * The driver keeps it with the task (so it survives a worker restart) and echoes it in every
   * status. Default 1.
   */
  attempt?: number;
  /**
   * The opened values of the secrets the spec names (from the leader's assignments frame). The
   * driver shows them to the task as files only, and deletes them when the task ends.
   */
  secrets?: DeliveredSecret[];
  /**
   * Container ports (tcp) to publish on a host port the driver picks (docker: a dynamic port
   * of the engine), reported back in the status's `ports` — the routing mesh's targets.
   */
  publish?: number[];
}

/** One line of a task's output. */
export interface LogLine {
  container: string;
  stream: 'stdout' | 'stderr';
  line: string;
  /**
   * When the line was written (ms since the epoch), as the driver knows it: docker's own
   * timestamp; for the process driver the time the worker first saw the line in the log file
   * (sampled every poll, see drivers/log-times.ts). Only with `timestamps` (or `since`), and
   * absent when the driver cannot tell.
   */
  at?: number;
}

export interface LogOptions {
  /** Keep streaming new lines until the task finishes (then drain and end) or `signal` aborts. */
  follow?: boolean;
  /** Only this container (by name); default every container of the pod. */
  container?: string;
  /** Only this stream; default both. */
  stream?: 'stdout' | 'stderr';
  /** Start with the last `tail` lines of each (container, stream); default everything. */
  tail?: number;
  /** A hint: lines written before this (ms since the epoch) may be left out (callers filter by `at` too). */
  since?: number;
  /** Give each line its `at` where the driver knows it (also implied by `since`). */
  timestamps?: boolean;
  signal?: AbortSignal;
}

/** A command to run inside a running task (`flotilla exec`). */
export interface ExecOptions {
  /** The container (by name); default the pod's first. */
  container?: string;
  command: string[];
  /** The caller sends input (else the command's stdin is empty, or, with a tty, idle). */
  stdin: boolean;
  /** Run it on a terminal (stdout and stderr are then one stream). */
  tty: boolean;
  cols?: number;
  rows?: number;
}

/** A command started by `Driver.exec`. */
export interface ExecProcess {
  /** Its input (null when the caller sends none). */
  stdin: Writable | null;
  stdout: Readable;
  /** null with a tty (everything comes on `stdout`). */
  stderr: Readable | null;
  /** Its exit status (128+n when killed by signal n), once it ended and its output was read. */
  exited: Promise<number>;
  /** A new terminal size (tty only; best effort). */
  resize(cols: number, rows: number): void;
  /** The caller went away: end it (best effort; see each driver). */
  kill(): void;
}

/** A command run in a task's container (health checks: src/worker/health.ts). */
export interface ProbeOptions {
  /** Aborts the command (its processes are killed where the driver can). */
  signal: AbortSignal;
  /** Characters of output kept (stdout and stderr together, in arrival order). */
  maxOutput: number;
}

export interface ProbeResult {
  exitCode: number;
  output: string;
}

export interface Driver {
  readonly name: DriverName;
  /**
   * Launch a task. Resolves once the task is recorded (launch failures become a `failed`
   * status, see the module comment). `onEvent` receives this task's state changes; `watch()`
   * receives every task's. Starting a task that runs (or ran) here with another attempt is a
   * `conflict`: stop and `remove()` the old run first.
   */
  start(taskId: string, spec: TaskSpec, onEvent?: DriverEventListener, opts?: DriverStartOptions): Promise<void>;
  /**
   * Stop a task: ask politely (SIGTERM), force (SIGKILL) after `graceMs`. Resolves when nothing
   * of the task runs any more; the task then reports `stopped` (or the terminal state it had
   * reached before). Unknown or finished task: no-op.
   */
  stop(taskId: string, graceMs: number): Promise<void>;
  /** Current status of a task, or null when this driver does not know it. */
  inspect(taskId: string): Promise<DriverTaskStatus | null>;
  /**
   * Every task this driver has on this node (running or finished, not yet removed), including
   * tasks started by an earlier run of the worker (adopted).
   */
  list(): Promise<DriverTaskStatus[]>;
  /**
   * A task's output, line by line. Without `follow` it ends after what is there now; with
   * `follow` it ends when the task has finished and everything was read, or when
   * `signal` aborts. Rejects with `not_found` for an unknown task, `bad_request` for an
   * unknown container. Lines of different containers/streams are interleaved in the order the
   * driver reads them (no global ordering is promised).
   */
  logs(taskId: string, opts?: LogOptions): AsyncIterable<LogLine>;
  /** Forget a task and delete its files; a task still running is killed first (SIGKILL). */
  remove(taskId: string): Promise<void>;
  /** Listen to every task's state changes (started here or adopted); returns an unsubscribe. */
  watch(listener: DriverEventListener): () => void;
  /** Stop the driver's own timers and watchers. Never stops tasks. */
  close(): Promise<void>;
  /**
   * Drivers whose tasks live in a store other clusters share (a Docker engine) are scoped to
   * a cluster id: they touch nothing before this is called, then only that cluster's tasks.
   * Rejects with `conflict` when another live worker of the cluster holds the same node id.
   */
  setCluster?(clusterId: string): Promise<void>;
  /**
   * Measures the CPU and memory of the running tasks (one cheap read per task: a /proc scan,
   * one stats call per container, no stream kept open). Tasks it cannot measure are left out.
   */
  usage?(): Promise<Map<string, TaskUsageRaw>>;
  /** Deletes this node's copy of a named volume (no-op when absent). */
  removeVolume?(name: string): Promise<void>;
  /**
   * Runs a command inside a running task (`flotilla exec`). Rejects with `not_found` (task or
   * container unknown here), `conflict` (not running), `unavailable` (a tty cannot be had).
   */
  exec?(taskId: string, opts: ExecOptions): Promise<ExecProcess>;
  /**
   * Runs `command` in a running task's container (an exec health check): docker exec for the
   * docker driver; for the process driver a process with the container's environment and
   * working directory. Rejects when the task or container does not run here.
   */
  probe?(taskId: string, container: string, command: string[], opts: ProbeOptions): Promise<ProbeResult>;
  /** The address a pod's unpublished ports are reached at from this node (docker: the pod's IP); null if none. */
  podAddress?(taskId: string): Promise<string | null>;
  /** Where a pod's published tcp `port` is reached from this node (docker: its engine binding); null when not published. */
  portAddress?(taskId: string, port: number): Promise<{ host: string; port: number } | null>;
}

/** Whether a state is final (nothing of the task runs any more). */
export function isFinished(state: DriverTaskState): boolean {
  return state === 'succeeded' || state === 'failed' || state === 'stopped';
}
