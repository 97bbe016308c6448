// The `docker` driver: every container of a pod is a Docker container (through dockerode).
//
// The pod network
//   A pod's containers share one network namespace, like a Kubernetes pod. The driver first
//   creates a small "infra" container (like Kubernetes' pause container) that owns the
//   namespace and every published port (`HostConfig.PortBindings`, from every container's
//   `ports`); then each app container joins it with `NetworkMode: container:<infra id>`, so the
//   containers reach each other on 127.0.0.1, and a port with a `host` is published on the
//   node (all addresses). The infra runs `infraImage` (option; default `flotilla/busybox:test`, the image
//   scripts/docker-setup.sh builds offline — on a node with a registry use any image with `sh`
//   and `sleep`, e.g. `busybox:1.36`) with
//       sh -c 'trap "exit 0" TERM INT; while :; do sleep 3600 & wait $!; done'
//   so it exits at once on SIGTERM (`infraCommand` overrides it, e.g. `['/pause']` with a
//   Kubernetes pause image). It is pulled like any other image when missing. Ports
//   without a `host` are exposed (ExposedPorts) but not published. The infra's hostname is
//   the pod name (the app containers share it).
//
// Cluster scope
//   One engine may serve several clusters (two `flotilla up` on one machine, the test suite
//   next to `npm start`), whose workers may share node ids (w1, w2). So the driver is scoped
//   to (cluster id, node id): it does nothing at all until it knows its cluster id (option
//   `clusterId`, or `setCluster()` once the manager's welcome named it), and then sees,
//   adopts, stops and removes only containers labelled with both. Before loading it takes
//   the engine-wide lock of (cluster, node) — see `acquireLock()` — so two live workers of
//   one cluster claiming the same node id on one engine cannot both run: the second fails
//   with a `conflict` naming the holder. A new cluster id (the worker now serves another
//   cluster) forgets the old cluster's tasks without touching their containers.
//
// Containers, names and labels
//   Docker names: `flotilla.<cluster>.<node>.<task>.<attempt>.<container>` and
//   `….<attempt>._infra` (cluster: 10 hex digits of the id's sha256; node/task ids made
//   name-safe, with a short hash when they had to be changed). A name is unique in the
//   engine, so a racing second driver can never create a duplicate. Every container carries
//   labels (the engine is this driver's only state store):
//     io.flotilla.task, io.flotilla.attempt, io.flotilla.pod (spec name),
//     io.flotilla.container (spec name; `infra` for the infra), io.flotilla.node,
//     io.flotilla.cluster (the cluster id), io.flotilla.version (package version),
//     io.flotilla.role (infra | app | lock), io.flotilla.index (app: position in the spec),
//     io.flotilla.spec-hash,
//     io.flotilla.containers (infra: JSON array of the app container names, in spec order).
//   `list()` (and every first call) finds the node's containers by `io.flotilla.cluster` and
//   `io.flotilla.node` and adopts them (containers of older versions, without the cluster
//   label, are left alone): nothing is created again, `start()` of an adopted task with the same attempt
//   and spec is a no-op. A `stop()` is recorded by renaming the infra container to
//   `<name>.stop-<atMs>-<killAtMs>`, so a restarted worker still reports the pod `stopped`
//   (and not `failed` because of the SIGTERM exit codes), and finishes the stop in time. Both
//   are wall-clock ms (read by people and by a successor in another process); in memory the
//   deadline is monotonic, and a successor restarts its count: what is left of the grace by
//   the wall clock, bounded to [0, grace] so a stepped clock neither skips nor stretches it.
//
// Container config: Entrypoint = `command` when non-empty (then the image's Cmd is dropped,
// like `docker run --entrypoint`), Cmd = `args` when non-empty; Env = FLOTILLA_TASK_ID,
// FLOTILLA_TASK_NAME, FLOTILLA_CONTAINER, then the spec's `env`; WorkingDir = `workdir`
// (must be absolute); `privileged`, `mounts` (binds) as given. Resources: the pod's
// `resources` apply to EACH app container (NanoCpus = millicores × 10⁶, clamped to
// [10m, the engine's CPUs]; 0 = no limit. Memory = bytes with MemorySwap = Memory, i.e. no
// swap; 0 = unlimited). Docker's restart policy is `no`: flotilla decides restarts. Logs:
// json-file, 3 × 10 MB per container.
//
// Lifecycle: `start()` records the task and launches it: ensure every image (pull when
// missing, progress as `detail` "pulling <image> 43%"; a failed pull fails the task with
// "image <x> not found locally and pull failed: …"), create + start the infra, create every
// app container, then start them in order. `start()` resolves when the launch is over, or as
// soon as a pull begins (the task then reports `starting` with the pull progress). Launch
// failures (pull, a port already allocated, a bad workdir, an executable not found…) are
// `failed` statuses, never exceptions.
//
// Watching: `docker.getEvents()` filtered on this node's label (reconnects on error) plus a
// periodic reconcile (`reconcileMs`, inspect of every unfinished task) as a fallback.
// Pod semantics (as the process driver): the pod runs while any app container runs. The
// first app container that exits non-zero (or that cannot start, or dies of OOM: reason
// "…: out of memory (OOM killed)") fails the pod: the others are stopped (`docker stop`,
// SIGTERM then SIGKILL after `podFailureGraceMs`), and the pod ends `failed` with that
// container's exit code. All exit 0 → `succeeded`. The infra exiting while app containers
// run fails the pod too. When every app container is over, the infra is stopped. After
// `stop()` the pod ends `stopped` (unless it had failed before the stop).
//
// `stop(graceMs)`: `container.stop({ t })` on every app container (SIGTERM, or the image's
// StopSignal, then SIGKILL after t = ceil(graceMs / 1000) seconds: Docker counts whole
// seconds), then the infra. `remove()`: force-removes (SIGKILL) every container carrying the
// task's label, app containers first (anonymous volumes too). `logs()`: `container.logs()`
// per (container, stream), demuxed with `docker.modem.demuxStream`; Docker's own `tail`
// counts the lines of both streams together, so `tail` is applied by the driver per stream.
//
// Launch failures before the infra container exists (e.g. a failed pull) are known only to
// this driver instance: a restarted worker does not list them.

import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { dirname, join } from 'node:path';
import { hostname } from 'node:os';
import { PassThrough, Readable, type Duplex } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import { fileURLToPath } from 'node:url';
import Docker from 'dockerode';
import { FlotillaError } from '../../protocol/errors.js';
import { monoNow } from '../../clock.js';
import { silentLogger, type Logger } from '../../log.js';
import type { TaskSpec } from '../../protocol/spec.js';
import {
  type Driver,
  type DriverContainerStatus,
  type DriverEventListener,
  type DriverStartOptions,
  type DriverTaskState,
  type DriverTaskStatus,
  type LogLine,
  type LogOptions,
} from '../driver.js';
import { specHash, stableStringify } from './process.js';

export interface DockerDriverOptions {
  /** This worker's node id: labels every container, and scopes `list()`. */
  nodeId: string;
  /**
   * The cluster this worker belongs to: labels every container and scopes everything the
   * driver does. Without it the driver touches nothing until `setCluster()` is called.
   */
  clusterId?: string;
  /**
   * Hold the engine-wide lock of (cluster, node) while in use (default true): a second driver
   * with the same cluster and node id on the same engine is refused. Tests that run several
   * instances side by side on purpose turn it off.
   */
  exclusive?: boolean;
  /** How long a lock held by another worker is waited for before giving up (ms). Default 5000. */
  lockWaitMs?: number;
  /** The engine's socket. Default: DOCKER_HOST when it is unix://…, else /var/run/docker.sock. */
  socketPath?: string;
  log?: Logger;
  /** Longest an image pull may take (ms). Default 300000. */
  pullTimeoutMs?: number;
  /** Image of the pod's network (infra) container; needs `sh` and `sleep`. Default flotilla/busybox:test. */
  infraImage?: string;
  /**
   * The infra container's entrypoint: must run until SIGTERM, then exit promptly. Default
   * `['/bin/sh', '-c', INFRA_SCRIPT]`; e.g. `['/pause']` with a Kubernetes pause image.
   */
  infraCommand?: string[];
  /** When one container fails, how long the others get between SIGTERM and SIGKILL (ms). Default 5000. */
  podFailureGraceMs?: number;
  /** How often unfinished tasks are inspected besides the event stream (ms). Default 2000. */
  reconcileMs?: number;
}

export const DEFAULT_SOCKET_PATH = '/var/run/docker.sock';
export const DEFAULT_INFRA_IMAGE = 'flotilla/busybox:test';
/** The infra container's command: sleep forever, exit at once on SIGTERM/SIGINT. */
export const INFRA_SCRIPT = 'trap "exit 0" TERM INT; while :; do sleep 3600 & wait $!; done';

/** Label keys. */
export const LABELS = {
  task: 'io.flotilla.task',
  attempt: 'io.flotilla.attempt',
  pod: 'io.flotilla.pod',
  container: 'io.flotilla.container',
  node: 'io.flotilla.node',
  version: 'io.flotilla.version',
  role: 'io.flotilla.role',
  index: 'io.flotilla.index',
  specHash: 'io.flotilla.spec-hash',
  containers: 'io.flotilla.containers',
  cluster: 'io.flotilla.cluster',
  lockHolder: 'io.flotilla.lock-holder',
} as const;

const INFRA_NAME = 'infra';
const CLUSTER_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const CONTAINER_NAME_RE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const STOP_MARK_RE = /\.stop-(\d+)-(\d+)$/;
/** Longest partial line kept in memory by `logs()`; longer lines are split. */
const MAX_LINE = 64 * 1024;
/** Log lines buffered per `logs()` reader before the docker streams are paused. */
const LOG_QUEUE_HIGH = 1000;
/** When a teardown's deadline has passed by this much and something still runs: SIGKILL. */
const TEARDOWN_SLACK_MS = 5000;
/** Seconds the infra container gets on stop (it exits on SIGTERM at once). */
const INFRA_STOP_SECONDS = 2;

/** flotilla's version, from the package.json above this file (src/ or dist/src/). */
export const FLOTILLA_VERSION: string = (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 8; i++) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'flotilla' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // not here
    }
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return '0.0.0';
})();

// ---------------------------------------------------------------------------------------------
// Helpers (exported for tests)

function errMessage(e: unknown): string {
  if (e !== null && typeof e === 'object') {
    const json = (e as { json?: unknown }).json;
    if (json !== null && typeof json === 'object' && typeof (json as { message?: unknown }).message === 'string') {
      return (json as { message: string }).message.trim();
    }
    if (e instanceof Error) return e.message.trim();
  }
  return String(e);
}

function statusCode(e: unknown): number | undefined {
  const c = (e as { statusCode?: unknown } | null)?.statusCode;
  return typeof c === 'number' ? c : undefined;
}

/** A name-safe part of a docker container name (no '.', which separates the parts). */
export function nameSafe(s: string, max = 40): string {
  if (s.length <= max && /^[A-Za-z0-9][A-Za-z0-9_-]*$/.test(s)) return s;
  const clean = s.replace(/[^A-Za-z0-9_-]/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, max - 11);
  const hash = createHash('sha256').update(s).digest('hex').slice(0, 10);
  return clean === '' ? `x${hash}` : `${clean}-${hash}`;
}

/** An image reference with an explicit tag (`busybox` → `busybox:latest`). */
export function normalizeImage(ref: string): string {
  if (ref.includes('@')) return ref;
  const lastSlash = ref.lastIndexOf('/');
  return ref.slice(lastSlash + 1).includes(':') ? ref : `${ref}:latest`;
}

/** Docker time → ms, or undefined for the zero time ("0001-01-01T00:00:00Z") and garbage. */
function dockerTime(s: string | undefined): number | undefined {
  if (s === undefined || s === '' || s.startsWith('0001-')) return undefined;
  const t = Date.parse(s);
  return Number.isFinite(t) && t > 0 ? t : undefined;
}

/** Aggregates a pull's progress events (per layer) into one percentage. */
export class PullProgress {
  private readonly layers = new Map<string, { current: number; total: number; done: boolean }>();

  /** Feed one event of the pull stream; returns the percentage (0-100) when known. */
  update(evt: { id?: string; status?: string; progressDetail?: { current?: number; total?: number } }): number | undefined {
    const id = evt.id;
    if (id !== undefined && evt.status !== undefined) {
      const l = this.layers.get(id) ?? { current: 0, total: 0, done: false };
      const pd = evt.progressDetail;
      if (/^Downloading/i.test(evt.status) && pd !== undefined && typeof pd.total === 'number' && pd.total > 0) {
        l.total = pd.total;
        l.current = Math.min(pd.current ?? 0, pd.total);
      } else if (/^(Download complete|Verifying Checksum|Extracting|Pull complete|Already exists)/i.test(evt.status)) {
        l.done = true;
        if (l.total > 0) l.current = l.total;
      }
      this.layers.set(id, l);
    }
    return this.percent();
  }

  percent(): number | undefined {
    let cur = 0;
    let tot = 0;
    let any = false;
    for (const l of this.layers.values()) {
      if (l.total > 0) {
        cur += l.current;
        tot += l.total;
        any = true;
      }
    }
    if (!any) return undefined;
    return Math.min(100, Math.floor((cur / tot) * 100));
  }
}

function exitReason(container: string, code: number | undefined, oom: boolean): string {
  if (code === undefined) return `container '${container}' was killed (its exit status is unknown)`;
  let r = `container '${container}' exited with code ${code}`;
  if (code > 128 && code < 160) r += ` (signal ${code - 128})`;
  if (oom) r += ': out of memory (OOM killed)';
  return r;
}

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

// ---------------------------------------------------------------------------------------------
// In-memory model of a task (rebuilt from the engine after a restart)

interface Ctr {
  /** Spec name, or `infra`. */
  name: string;
  role: 'infra' | 'app';
  dockerName: string;
  id?: string;
  /** Observed (docker State.Status): created | running | paused | restarting | removing | exited | dead. */
  status?: string;
  exitCode?: number;
  oom?: boolean;
  /** State.Error (e.g. "exec: … not found") or our start error. */
  error?: string;
  startedAt?: number;
  finishedAt?: number;
  pid?: number;
  /** Removed behind our back (404). */
  gone?: boolean;
  /** First time this driver saw the container over (when docker has no FinishedAt). */
  seenDoneAt?: number;
  /** Starting it failed (docker start error). */
  startFailed?: boolean;
}

interface Task {
  taskId: string;
  attempt: number;
  /** The cluster id the task belongs to (the driver's scope when it was created or adopted). */
  cluster: string;
  podName: string;
  specHash: string;
  createdAt: number;
  startedAt?: number;
  base: string;
  infra: Ctr;
  apps: Ctr[];
  /** `launching` until the launch procedure is over (adopted tasks are `launched`). */
  phase: 'launching' | 'launched';
  launch: Promise<void>;
  abort: AbortController;
  pull?: { image: string; percent?: number };
  launchFailure?: { reason: string; at: number };
  /** `at`, `markKillAt`: wall ms (display, the engine-side mark); `killAt`: the deadline, on `monoNow()`. */
  stop?: { at: number; killAt: number; markKillAt: number };
  stopMarked: boolean;
  /** `at`: wall ms (display, ordering against the stop); `detectedAt`: `monoNow()`, starts the pod failure grace. */
  failure?: { container: string; exitCode?: number; reason: string; at: number; detectedAt: number };
  final?: { state: 'succeeded' | 'failed' | 'stopped'; exitCode?: number; reason: string; finishedAt: number };
  /** Deadline of the teardown (stop / pod failure) in progress, if any (`monoNow()`). */
  teardownKillAt?: number;
  infraStopping: boolean;
  listeners: Set<DriverEventListener>;
  lastKey: string;
  waiters: (() => void)[];
  removed: boolean;
  refreshing: Promise<void> | null;
  dirty: boolean;
  /** The last refresh failed (logged once until one succeeds). */
  refreshFailing: boolean;
}

class LaunchError extends Error {}

// ---------------------------------------------------------------------------------------------

export class DockerDriver implements Driver {
  readonly name = 'docker' as const;
  readonly nodeId: string;
  readonly socketPath: string;
  readonly docker: Docker;
  private readonly log: Logger;
  private readonly pullTimeoutMs: number;
  private readonly infraImage: string;
  private readonly infraCommand: string[];
  private readonly podFailureGraceMs: number;
  private readonly reconcileMs: number;
  private readonly nodeName: string;
  private readonly tasks = new Map<string, Task>();
  private readonly watchers = new Set<DriverEventListener>();
  private loaded: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private eventsAbort = new AbortController();
  private eventsLoop: Promise<void> | null = null;
  private closed = false;
  private hostCpus = 0;
  private clusterId: string | null = null;
  /** Short hash of the cluster id, part of every container name. */
  private clusterName = '';
  private readonly exclusive: boolean;
  private readonly lockWaitMs: number;
  /** The lock container of (cluster, node) and the attach stream that keeps it alive. */
  private lock: { id: string; name: string; stream: Duplex } | null = null;
  /** Bumped by every scope change: work of an older scope must not touch the new one. */
  private scopeGen = 0;

  constructor(opts: DockerDriverOptions) {
    if (typeof opts.nodeId !== 'string' || opts.nodeId === '') throw new FlotillaError('bad_request', "Cannot create the docker driver as 'nodeId' must be a non-empty string");
    this.nodeId = opts.nodeId;
    this.socketPath = opts.socketPath ?? defaultSocketPath();
    this.docker = new Docker({ socketPath: this.socketPath });
    this.log = opts.log ?? silentLogger;
    this.pullTimeoutMs = opts.pullTimeoutMs ?? 300_000;
    this.infraImage = normalizeImage(opts.infraImage ?? DEFAULT_INFRA_IMAGE);
    this.infraCommand = opts.infraCommand !== undefined && opts.infraCommand.length > 0 ? [...opts.infraCommand] : ['/bin/sh', '-c', INFRA_SCRIPT];
    this.podFailureGraceMs = opts.podFailureGraceMs ?? 5000;
    this.reconcileMs = opts.reconcileMs ?? 2000;
    this.nodeName = nameSafe(opts.nodeId, 24);
    this.exclusive = opts.exclusive ?? true;
    this.lockWaitMs = opts.lockWaitMs ?? 5000;
    if (opts.clusterId !== undefined) this.setScope(opts.clusterId);
  }

  /** The cluster this driver is scoped to (null: not known yet, the driver touches nothing). */
  get cluster(): string | null {
    return this.clusterId;
  }

  private setScope(clusterId: string): void {
    if (!CLUSTER_ID_RE.test(clusterId)) {
      throw new FlotillaError('bad_request', `Cannot scope the docker driver as the cluster id must be 1-128 letters, digits, '.', '_' or '-' (got '${clusterId}')`);
    }
    this.clusterId = clusterId;
    this.clusterName = createHash('sha256').update(clusterId).digest('hex').slice(0, 10);
  }

  /**
   * Scope the driver to a cluster (the id the manager sent in its welcome). From then on it
   * lists, adopts, stops and removes only containers labelled with that cluster (and this
   * node), after taking the engine-wide lock of (cluster, node). A different id than before
   * (the worker now serves another cluster): the old cluster's tasks are forgotten — never
   * stopped or removed — its lock released, and the new cluster's containers loaded. Rejects
   * with `conflict` when another live worker holds the lock.
   */
  async setCluster(clusterId: string): Promise<void> {
    if (this.closed) throw new FlotillaError('unavailable', 'Cannot use the docker driver as it is closed');
    if (clusterId === this.clusterId) {
      await this.ready();
      return;
    }
    const old = this.clusterId;
    this.setScope(clusterId);
    if (old !== null) {
      this.log.warn('docker driver: the cluster id changed; leaving the old cluster\'s containers alone', { from: old, to: clusterId });
      this.scopeGen++;
      for (const t of this.tasks.values()) {
        t.removed = true;
        t.abort.abort();
        t.listeners.clear();
        this.wake(t);
      }
      this.tasks.clear();
      this.loaded = null;
      this.eventsAbort.abort();
      this.eventsAbort = new AbortController();
      await this.eventsLoop?.catch(() => undefined);
      this.eventsLoop = null;
      await this.releaseLock();
    }
    await this.ready();
  }

  /**
   * A driver whose engine answers, or a `FlotillaError('unavailable')` saying why not
   * ("Docker engine not reachable at /var/run/docker.sock: …"): a worker registers without
   * the docker driver then.
   */
  static async probe(opts: DockerDriverOptions & { timeoutMs?: number }): Promise<DockerDriver> {
    const d = new DockerDriver(opts);
    const timeoutMs = opts.timeoutMs ?? 5000;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        d.docker.ping(),
        new Promise((_, rej) => {
          timer = setTimeout(() => rej(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
    } catch (e) {
      throw new FlotillaError('unavailable', `Docker engine not reachable at ${d.socketPath}: ${errMessage(e)}`, { cause: e });
    } finally {
      clearTimeout(timer);
    }
    return d;
  }

  // ---- lifecycle

  /** Loads (adopts) this node's containers once, starts the event stream and the reconcile timer. */
  private ready(): Promise<void> {
    if (this.closed) return Promise.reject(new FlotillaError('unavailable', 'Cannot use the docker driver as it is closed'));
    if (this.clusterId === null) {
      return Promise.reject(new FlotillaError('unavailable', 'Cannot use the docker driver before the worker knows its cluster id (it comes with the first welcome of a manager)'));
    }
    this.loaded ??= this.load().catch((e) => {
      this.loaded = null; // try again on the next call
      if (e instanceof FlotillaError) throw e;
      throw new FlotillaError('unavailable', `Docker engine not reachable at ${this.socketPath}: ${errMessage(e)}`, { cause: e });
    });
    return this.loaded;
  }

  private async load(): Promise<void> {
    const info = (await this.docker.info()) as { NCPU?: number };
    this.hostCpus = typeof info.NCPU === 'number' ? info.NCPU : 0;
    const gen = this.scopeGen;
    if (this.exclusive) await this.acquireLock();
    if (gen !== this.scopeGen) throw new FlotillaError('unavailable', 'Cannot load the docker driver as its cluster changed meanwhile');
    this.eventsLoop ??= this.watchEvents();
    const list = await this.docker.listContainers({ all: true, filters: { label: this.scopeLabels() } });
    const byTask = new Map<string, Docker.ContainerInfo[]>();
    for (const c of list) {
      const id = c.Labels[LABELS.task];
      if (id === undefined) continue;
      const arr = byTask.get(id) ?? [];
      arr.push(c);
      byTask.set(id, arr);
    }
    const adopted: Task[] = [];
    if (gen !== this.scopeGen) throw new FlotillaError('unavailable', 'Cannot load the docker driver as its cluster changed meanwhile');
    for (const [taskId, all] of byTask) {
      if (this.tasks.has(taskId)) continue;
      const attempts = [...new Set(all.map((c) => Number(c.Labels[LABELS.attempt])))].filter(Number.isSafeInteger).sort((a, b) => b - a);
      const attempt = attempts[0];
      if (attempt === undefined) continue;
      if (attempts.length > 1) {
        this.log.warn('docker driver: several attempts of a task are here; adopting the latest (remove() deletes them all)', { taskId, attempts });
      }
      const cs = all.filter((c) => Number(c.Labels[LABELS.attempt]) === attempt);
      const t = this.adoptTask(taskId, attempt, cs);
      this.tasks.set(taskId, t);
      adopted.push(t);
    }
    await Promise.all(adopted.map((t) => this.refresh(t)));
    for (const t of adopted) {
      this.log.info('docker driver: adopted task', { taskId: t.taskId, attempt: t.attempt, state: this.statusOf(t).state });
    }
    this.ensureTimer();
  }

  private adoptTask(taskId: string, attempt: number, cs: Docker.ContainerInfo[]): Task {
    const infraInfo = cs.find((c) => c.Labels[LABELS.role] === 'infra');
    const appInfos = cs.filter((c) => c.Labels[LABELS.role] !== 'infra').sort((a, b) => Number(a.Labels[LABELS.index]) - Number(b.Labels[LABELS.index]));
    const any = infraInfo ?? appInfos[0]!;
    const base = this.baseName(taskId, attempt);
    let names: string[] = appInfos.map((c) => c.Labels[LABELS.container] ?? '?');
    try {
      const fromLabel = JSON.parse(infraInfo?.Labels[LABELS.containers] ?? 'null') as unknown;
      if (Array.isArray(fromLabel) && fromLabel.every((n) => typeof n === 'string')) names = fromLabel as string[];
    } catch {
      // keep the names of the containers found
    }
    const apps: Ctr[] = names.map((name) => {
      const info = appInfos.find((c) => c.Labels[LABELS.container] === name);
      const c: Ctr = { name, role: 'app', dockerName: `${base}.${name}` };
      if (info !== undefined) c.id = info.Id;
      return c;
    });
    const infra: Ctr = { name: INFRA_NAME, role: 'infra', dockerName: `${base}._infra` };
    let stop: Task['stop'];
    if (infraInfo !== undefined) {
      infra.id = infraInfo.Id;
      const m = STOP_MARK_RE.exec((infraInfo.Names[0] ?? '').replace(/^\//, ''));
      if (m !== null) {
        const at = Number(m[1]);
        const markKillAt = Number(m[2]);
        const grace = Math.max(0, markKillAt - at);
        stop = { at, markKillAt, killAt: monoNow() + Math.min(grace, Math.max(0, markKillAt - Date.now())) };
      }
    }
    const t: Task = {
      taskId,
      attempt,
      cluster: this.clusterId ?? '',
      podName: any.Labels[LABELS.pod] ?? '',
      specHash: any.Labels[LABELS.specHash] ?? '',
      createdAt: (any.Created ?? 0) * 1000,
      base,
      infra,
      apps,
      phase: 'launched',
      launch: Promise.resolve(),
      abort: new AbortController(),
      stopMarked: stop !== undefined,
      infraStopping: false,
      listeners: new Set(),
      lastKey: '',
      waiters: [],
      removed: false,
      refreshing: null,
      dirty: false,
      refreshFailing: false,
    };
    if (stop !== undefined) t.stop = stop;
    return t;
  }

  private ensureTimer(): void {
    if (this.timer !== null || this.closed) return;
    this.timer = setInterval(() => this.refreshAll(), this.reconcileMs);
    this.timer.unref();
  }

  private refreshAll(): void {
    for (const t of this.tasks.values()) {
      if (t.final === undefined) void this.refresh(t);
    }
  }

  /** Follows the engine's container events for this node; reconnects until closed. */
  private async watchEvents(): Promise<void> {
    const signal = this.eventsAbort.signal;
    while (!this.closed && !signal.aborted) {
      try {
        const stream = (await this.docker.getEvents({
          filters: { type: ['container'], label: this.scopeLabels() },
          abortSignal: signal,
        } as Docker.GetEventsOptions)) as Readable;
        (stream as unknown as { socket?: { unref?: () => void } }).socket?.unref?.();
        this.refreshAll(); // whatever happened while no stream was open
        await new Promise<void>((res) => {
          let buf = '';
          stream.on('data', (chunk: Buffer) => {
            buf += chunk.toString('utf8');
            let nl: number;
            while ((nl = buf.indexOf('\n')) >= 0) {
              const line = buf.slice(0, nl).trim();
              buf = buf.slice(nl + 1);
              if (line !== '') this.onEngineEvent(line);
            }
          });
          stream.once('end', () => res());
          stream.once('close', () => res());
          stream.once('error', () => res());
        });
      } catch (e) {
        if (this.closed) break;
        this.log.debug('docker driver: event stream failed', { error: errMessage(e) });
      }
      if (!this.closed && !signal.aborted) await sleep(1000, signal);
    }
  }

  /** The labels every container of this driver's scope carries (cluster and node). */
  private scopeLabels(): string[] {
    return [`${LABELS.cluster}=${this.clusterId ?? ''}`, `${LABELS.node}=${this.nodeId}`];
  }

  // ---- the (cluster, node) lock

  /**
   * Take the engine-wide lock of (cluster, node): a container named
   * `flotilla.lock.<cluster hash>.<node>` that runs `cat` on a stdin attached by this
   * driver. The engine keeps one container per name, so at most one driver holds it; when the
   * holder's process ends (even by SIGKILL) its connection closes, the container's stdin ends,
   * `cat` exits and the container removes itself (AutoRemove). A lock container that is not
   * running is stale and removed; one that keeps running for `lockWaitMs` belongs to a live
   * worker: `conflict`.
   */
  private async acquireLock(): Promise<void> {
    if (this.lock !== null) return;
    const name = `flotilla.lock.${this.clusterName}.${this.nodeName}`;
    const holder = `${hostname()} pid ${process.pid}`;
    const deadline = monoNow() + this.lockWaitMs;
    let pulled = false;
    for (let round = 0; round < 1000; round++) {
      let id: string;
      try {
        const c = await this.docker.createContainer({
          name,
          Image: this.infraImage,
          Entrypoint: ['/bin/sh', '-c', 'cat >/dev/null'],
          Cmd: [],
          OpenStdin: true,
          StdinOnce: true,
          AttachStdin: true,
          AttachStdout: false,
          AttachStderr: false,
          Tty: false,
          Labels: {
            [LABELS.cluster]: this.clusterId ?? '',
            [LABELS.node]: this.nodeId,
            [LABELS.role]: 'lock',
            [LABELS.version]: FLOTILLA_VERSION,
            [LABELS.lockHolder]: holder,
          },
          HostConfig: { NetworkMode: 'none', AutoRemove: true, RestartPolicy: { Name: 'no' } },
        });
        id = c.id;
      } catch (e) {
        const code = statusCode(e);
        if (code === 404 && !pulled && /image/i.test(errMessage(e))) {
          pulled = true;
          await this.pullPlain(this.infraImage);
          continue;
        }
        if (code !== 409) throw new FlotillaError('unavailable', `Cannot take the docker lock of node '${this.nodeId}': ${errMessage(e)}`, { cause: e });
        let info: Docker.ContainerInspectInfo | null = null;
        try {
          info = await this.docker.getContainer(name).inspect();
        } catch (e2) {
          if (statusCode(e2) !== 404) throw new FlotillaError('unavailable', `Cannot inspect the docker lock ${name}: ${errMessage(e2)}`, { cause: e2 });
        }
        if (info === null || info.State.Status === 'removing') {
          await sleep(100);
          continue;
        }
        if (!info.State.Running) {
          // Stale: its holder never started it, or it exited without being removed.
          await this.docker.getContainer(info.Id).remove({ force: true }).catch(() => undefined);
          continue;
        }
        if (monoNow() >= deadline) {
          const by = info.Config.Labels?.[LABELS.lockHolder] ?? 'another worker';
          throw new FlotillaError(
            'conflict',
            `Cannot start worker '${this.nodeId}' on the Docker engine at ${this.socketPath}: another worker of cluster ${this.clusterId} with the same node id (${by}) is running there (it holds the lock container ${name}). Stop it, or give this worker another --id`,
          );
        }
        await sleep(250); // a holder that just died releases it within moments
        continue;
      }
      const container = this.docker.getContainer(id);
      try {
        const stream = (await container.attach({ stream: true, stdin: true, stdout: false, stderr: false, hijack: true })) as unknown as Duplex;
        stream.on('error', () => undefined);
        (stream as unknown as { socket?: { unref?: () => void } }).socket?.unref?.();
        (stream as unknown as { unref?: () => void }).unref?.();
        await container.start();
        this.lock = { id, name, stream };
        this.log.debug('docker driver: took the node lock', { lock: name });
        return;
      } catch (e) {
        await container.remove({ force: true }).catch(() => undefined);
        if (statusCode(e) === 404) continue; // removed by another starter as stale: try again
        throw new FlotillaError('unavailable', `Cannot take the docker lock of node '${this.nodeId}': ${errMessage(e)}`, { cause: e });
      }
    }
    throw new FlotillaError('unavailable', `Cannot take the docker lock ${name}`);
  }

  private async releaseLock(): Promise<void> {
    const l = this.lock;
    if (l === null) return;
    this.lock = null;
    l.stream.destroy();
    await this.docker
      .getContainer(l.id)
      .remove({ force: true })
      .catch(() => undefined);
  }

  /** Pull an image (no progress), for the lock container. */
  private async pullPlain(image: string): Promise<void> {
    try {
      const stream = (await this.docker.pull(image, { abortSignal: AbortSignal.timeout(this.pullTimeoutMs) })) as Readable;
      await new Promise<void>((res) => this.docker.modem.followProgress(stream, () => res()));
    } catch (e) {
      this.log.warn('docker driver: cannot pull the infra image', { image, error: errMessage(e) });
    }
  }

  private onEngineEvent(line: string): void {
    let evt: { Type?: string; Action?: string; Actor?: { Attributes?: Record<string, string> } };
    try {
      evt = JSON.parse(line) as typeof evt;
    } catch {
      return;
    }
    const attrs = evt.Actor?.Attributes ?? {};
    const taskId = attrs[LABELS.task];
    if (taskId === undefined || (evt.Action ?? '').startsWith('exec_')) return;
    const t = this.tasks.get(taskId);
    if (t === undefined || t.final !== undefined || String(t.attempt) !== attrs[LABELS.attempt]) return;
    void this.refresh(t);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.eventsAbort.abort();
    this.watchers.clear();
    for (const t of this.tasks.values()) {
      t.listeners.clear();
      this.wake(t);
    }
    await this.eventsLoop?.catch(() => undefined);
    await this.releaseLock();
  }

  watch(listener: DriverEventListener): () => void {
    this.watchers.add(listener);
    return () => this.watchers.delete(listener);
  }

  // ---- the Driver API

  async start(taskId: string, spec: TaskSpec, onEvent?: DriverEventListener, opts: DriverStartOptions = {}): Promise<void> {
    if (typeof taskId !== 'string' || taskId.length === 0 || taskId.length > 128) {
      throw new FlotillaError('bad_request', "Cannot start task as 'taskId' must be a string of 1 to 128 characters");
    }
    const attempt = opts.attempt ?? 1;
    if (!Number.isSafeInteger(attempt) || attempt < 1) {
      throw new FlotillaError('bad_request', `Cannot start task '${taskId}' as 'attempt' must be a whole number >= 1`);
    }
    this.checkSpec(taskId, spec);
    await this.ready();
    const hash = specHash(spec);
    const existing = this.tasks.get(taskId);
    if (existing !== undefined) {
      if (existing.attempt !== attempt) {
        throw new FlotillaError('conflict', `Cannot start attempt ${attempt} of task '${taskId}' as attempt ${existing.attempt} is here; stop and remove it first`);
      }
      if (existing.specHash !== hash) {
        throw new FlotillaError('conflict', `Cannot start task '${taskId}' as it already exists here with a different spec`);
      }
      if (existing.final !== undefined) {
        throw new FlotillaError('conflict', `Cannot start task '${taskId}' as it already ran here (${existing.final.state}); remove it first`);
      }
      if (onEvent !== undefined) existing.listeners.add(onEvent);
      return; // already starting/running: never a duplicate
    }

    const base = this.baseName(taskId, attempt);
    let pullStarted!: () => void;
    const pulling = new Promise<void>((res) => (pullStarted = res));
    const t: Task = {
      taskId,
      attempt,
      cluster: this.clusterId ?? '',
      podName: spec.name,
      specHash: hash,
      createdAt: Date.now(),
      base,
      infra: { name: INFRA_NAME, role: 'infra', dockerName: `${base}._infra` },
      apps: spec.containers.map((c) => ({ name: c.name, role: 'app', dockerName: `${base}.${c.name}` })),
      phase: 'launching',
      launch: Promise.resolve(),
      abort: new AbortController(),
      stopMarked: false,
      infraStopping: false,
      listeners: new Set(onEvent ? [onEvent] : []),
      lastKey: '',
      waiters: [],
      removed: false,
      refreshing: null,
      dirty: false,
      refreshFailing: false,
    };
    this.tasks.set(taskId, t);
    this.emitIfChanged(t); // starting
    t.launch = this.launch(t, spec, pullStarted);
    await Promise.race([t.launch, pulling]);
  }

  async stop(taskId: string, graceMs: number): Promise<void> {
    await this.ready();
    const t = this.tasks.get(taskId);
    if (t === undefined || t.final !== undefined) return;
    const now = Date.now();
    const grace = Math.max(0, Number.isFinite(graceMs) ? graceMs : 0);
    const killAt = monoNow() + grace;
    if (t.stop === undefined) {
      t.stop = { at: now, killAt, markKillAt: now + grace };
      this.log.info('docker driver: stopping task', { taskId, graceMs });
    } else if (killAt < t.stop.killAt) {
      t.stop.killAt = killAt;
      t.stop.markKillAt = now + grace;
    }
    t.abort.abort(); // a pull in progress
    await t.launch;
    if (t.removed) return;
    await this.markStopped(t);
    await this.refresh(t);
    await this.whenFinished(t);
  }

  async inspect(taskId: string): Promise<DriverTaskStatus | null> {
    await this.ready();
    const t = this.tasks.get(taskId);
    if (t === undefined) return null;
    if (t.final === undefined && t.phase === 'launched') await this.refresh(t);
    return this.statusOf(t);
  }

  async list(): Promise<DriverTaskStatus[]> {
    await this.ready();
    return [...this.tasks.values()].map((t) => this.statusOf(t));
  }

  async remove(taskId: string): Promise<void> {
    await this.ready();
    const t = this.tasks.get(taskId);
    if (t !== undefined) {
      t.removed = true;
      t.abort.abort();
      await t.launch;
      this.tasks.delete(taskId);
      t.listeners.clear();
      this.wake(t);
    }
    // Everything carrying the task's label (every attempt), app containers before the infra.
    const known = t === undefined ? [] : [...t.apps, t.infra].map((c) => c.id).filter((id): id is string => id !== undefined);
    let listed: Docker.ContainerInfo[] = [];
    try {
      listed = await this.docker.listContainers({ all: true, filters: { label: [...this.scopeLabels(), `${LABELS.task}=${taskId}`] } });
    } catch (e) {
      this.log.warn('docker driver: cannot list the containers of a task to remove', { taskId, error: errMessage(e) });
    }
    const apps = [...new Set([...known.filter((id) => id !== t?.infra.id), ...listed.filter((c) => c.Labels[LABELS.role] !== 'infra').map((c) => c.Id)])];
    const infras = [...new Set([...(t?.infra.id !== undefined ? [t.infra.id] : []), ...listed.filter((c) => c.Labels[LABELS.role] === 'infra').map((c) => c.Id)])];
    const problems: string[] = [];
    for (const group of [apps.filter((id) => !infras.includes(id)), infras]) {
      await Promise.all(
        group.map(async (id) => {
          try {
            await this.docker.getContainer(id).remove({ force: true, v: true });
          } catch (e) {
            const code = statusCode(e);
            if (code === 404) return;
            if (code === 409 && /already in progress/i.test(errMessage(e))) return;
            problems.push(`${id.slice(0, 12)}: ${errMessage(e)}`);
          }
        }),
      );
    }
    if (problems.length > 0) {
      throw new FlotillaError('internal', `Cannot remove every container of task '${taskId}': ${problems.join('; ')}`);
    }
    if (t !== undefined || listed.length > 0) this.log.info('docker driver: removed task', { taskId, containers: apps.length + infras.length });
  }

  logs(taskId: string, opts: LogOptions = {}): AsyncIterable<LogLine> {
    return this.readLogs(taskId, opts);
  }

  // ---- launching

  private baseName(taskId: string, attempt: number): string {
    return `flotilla.${this.clusterName}.${this.nodeName}.${nameSafe(taskId)}.${attempt}`;
  }

  private checkSpec(taskId: string, spec: TaskSpec): void {
    const bad = (path: string, message: string): never => {
      throw new FlotillaError('bad_request', `Cannot start task '${taskId}' as '${path}' ${message}`, { details: [{ path, message }] });
    };
    if (spec === null || typeof spec !== 'object' || !Array.isArray(spec.containers) || spec.containers.length === 0) {
      bad('containers', 'must have at least 1 container');
    }
    if (spec.driver !== 'docker') bad('driver', `must be 'docker' for the docker driver (got '${String(spec.driver)}')`);
    if (typeof spec.name !== 'string' || spec.name === '') bad('name', 'must be a non-empty string');
    const seen = new Set<string>();
    spec.containers.forEach((c, i) => {
      if (typeof c.name !== 'string' || !CONTAINER_NAME_RE.test(c.name)) bad(`containers[${i}].name`, 'must be a DNS label');
      if (seen.has(c.name)) bad(`containers[${i}].name`, 'must be unique');
      seen.add(c.name);
      if (typeof c.image !== 'string' || c.image === '') bad(`containers[${i}].image`, 'must be a non-empty string (the docker driver runs an image)');
      if (!Array.isArray(c.command) || !c.command.every((s) => typeof s === 'string')) bad(`containers[${i}].command`, 'must be an array of strings');
      if (!Array.isArray(c.args) || !c.args.every((s) => typeof s === 'string')) bad(`containers[${i}].args`, 'must be an array of strings');
      if (c.env === null || typeof c.env !== 'object' || !Object.values(c.env).every((s) => typeof s === 'string')) bad(`containers[${i}].env`, 'must map names to strings');
      for (const [k, v] of Object.entries(c.env)) {
        if (k.includes('=') || k.includes('\0') || k === '' || v.includes('\0')) bad(`containers[${i}].env`, `has an invalid variable '${k}'`);
      }
      if (!Array.isArray(c.ports)) bad(`containers[${i}].ports`, 'must be an array');
    });
  }

  /** Whether the launch must not go on (stop, remove or a failure seen meanwhile). */
  private launchCancelled(t: Task): boolean {
    return t.removed || t.stop !== undefined || t.failure !== undefined;
  }

  private async launch(t: Task, spec: TaskSpec, pullStarted: () => void): Promise<void> {
    try {
      const images = [...new Set([this.infraImage, ...spec.containers.map((c) => normalizeImage(c.image!))])];
      for (const image of images) {
        if (this.launchCancelled(t)) return;
        await this.ensureImage(t, image, pullStarted);
      }
      t.pull = undefined;
      if (this.launchCancelled(t)) return;

      // The infra container: the pod's network namespace and published ports.
      const exposed: Record<string, object> = {};
      const bindings: Record<string, { HostIp: string; HostPort: string }[]> = {};
      for (const c of spec.containers) {
        for (const p of c.ports) {
          const key = `${p.container}/${p.protocol}`;
          exposed[key] = {};
          if (p.host !== undefined) (bindings[key] ??= []).push({ HostIp: '', HostPort: String(p.host) });
        }
      }
      const infraId = await this.createContainer(t, t.infra, {
        Image: this.infraImage,
        Entrypoint: this.infraCommand,
        Cmd: [],
        Hostname: spec.name.slice(0, 63),
        Labels: { ...this.labels(t, INFRA_NAME, 'infra'), [LABELS.containers]: JSON.stringify(spec.containers.map((c) => c.name)) },
        ExposedPorts: exposed,
        HostConfig: {
          PortBindings: bindings,
          RestartPolicy: { Name: 'no' },
          LogConfig: { Type: 'json-file', Config: { 'max-size': '1m', 'max-file': '1' } },
        },
      });
      if (this.launchCancelled(t)) return;
      // The infra starts while the app containers are created (joining a network namespace is
      // checked when a container starts, not when it is created): one Engine round trip less.
      const infraStarted = this.docker
        .getContainer(infraId)
        .start()
        .then(
          () => null,
          (e: unknown) => (statusCode(e) === 304 ? null : new LaunchError(`cannot start the pod's network (infra) container: ${errMessage(e)}`)),
        );

      // Every app container is created before any starts: a bad config launches nothing.
      const ids: string[] = [];
      let createError: unknown = null;
      try {
        for (let i = 0; i < spec.containers.length; i++) {
          if (this.launchCancelled(t)) break;
          ids.push(await this.createContainer(t, t.apps[i]!, this.appConfig(t, spec, i, infraId)));
        }
      } catch (e) {
        createError = e;
      }
      const infraError = await infraStarted;
      if (infraError) throw infraError;
      if (createError !== null) throw createError;
      if (this.launchCancelled(t)) return;
      t.startedAt = Date.now();
      for (let i = 0; i < ids.length; i++) {
        if (this.launchCancelled(t)) return;
        const c = t.apps[i]!;
        try {
          await this.docker.getContainer(ids[i]!).start();
        } catch (e) {
          if (statusCode(e) === 304) continue; // already started (adopted after a 409)
          c.startFailed = true;
          c.error = errMessage(e);
          this.log.warn('docker driver: container failed to start', { taskId: t.taskId, container: c.name, error: c.error });
          return; // the pod failed: later containers are never started
        }
      }
      this.log.info('docker driver: started task', { taskId: t.taskId, attempt: t.attempt, containers: t.apps.length });
    } catch (e) {
      if (!t.removed && t.stop === undefined) {
        const reason = e instanceof LaunchError ? e.message : `cannot launch the task: ${errMessage(e)}`;
        t.launchFailure = { reason, at: Date.now() };
        this.log.warn('docker driver: task failed to start', { taskId: t.taskId, reason });
      }
    } finally {
      t.phase = 'launched';
      t.pull = undefined;
      pullStarted();
      if (!t.removed) {
        // A stop that arrived during the launch is recorded now the infra may exist.
        if (t.stop !== undefined) await this.markStopped(t);
        await this.refresh(t);
      }
    }
  }

  private labels(t: Task, container: string, role: 'infra' | 'app'): Record<string, string> {
    return {
      [LABELS.task]: t.taskId,
      [LABELS.attempt]: String(t.attempt),
      [LABELS.pod]: t.podName,
      [LABELS.container]: container,
      [LABELS.node]: this.nodeId,
      [LABELS.cluster]: t.cluster,
      [LABELS.version]: FLOTILLA_VERSION,
      [LABELS.role]: role,
      [LABELS.specHash]: t.specHash,
    };
  }

  private appConfig(t: Task, spec: TaskSpec, i: number, infraId: string): Docker.ContainerCreateOptions {
    const c = spec.containers[i]!;
    const env: Record<string, string> = {
      FLOTILLA_TASK_ID: t.taskId,
      FLOTILLA_TASK_NAME: spec.name,
      FLOTILLA_CONTAINER: c.name,
      ...c.env,
    };
    const cpu = spec.resources.cpu;
    let nanoCpus = 0;
    if (cpu > 0) {
      let milli = Math.max(10, cpu);
      if (this.hostCpus > 0) milli = Math.min(milli, this.hostCpus * 1000);
      nanoCpus = milli * 1_000_000;
    }
    const memory = spec.resources.memory;
    const cfg: Docker.ContainerCreateOptions = {
      Image: normalizeImage(c.image!),
      Env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
      Labels: { ...this.labels(t, c.name, 'app'), [LABELS.index]: String(i) },
      AttachStdin: false,
      AttachStdout: false,
      AttachStderr: false,
      Tty: false,
      OpenStdin: false,
      HostConfig: {
        NetworkMode: `container:${infraId}`,
        RestartPolicy: { Name: 'no' },
        NanoCpus: nanoCpus,
        Memory: memory,
        ...(memory > 0 ? { MemorySwap: memory } : {}),
        Privileged: spec.privileged === true,
        Binds: (spec.mounts ?? []).map((m) => `${m.source}:${m.target}${m.readonly ? ':ro' : ''}`),
        LogConfig: { Type: 'json-file', Config: { 'max-size': '10m', 'max-file': '3' } },
      },
    };
    if (c.command.length > 0) {
      cfg.Entrypoint = c.command;
      cfg.Cmd = c.args;
    } else if (c.args.length > 0) {
      cfg.Cmd = c.args;
    }
    if (c.workdir !== undefined) cfg.WorkingDir = c.workdir;
    return cfg;
  }

  /**
   * Create a container under its unique name. A 409 (name in use) from a container of this
   * very task and attempt (a racing driver) is adopted instead of failing.
   */
  private async createContainer(t: Task, c: Ctr, cfg: Docker.ContainerCreateOptions): Promise<string> {
    try {
      const created = await this.docker.createContainer({ ...cfg, name: c.dockerName });
      c.id = created.id;
      c.status = 'created';
      return created.id;
    } catch (e) {
      if (statusCode(e) === 409) {
        try {
          const other = await this.docker.getContainer(c.dockerName).inspect();
          const l = other.Config.Labels ?? {};
          if (l[LABELS.task] === t.taskId && l[LABELS.attempt] === String(t.attempt) && l[LABELS.node] === this.nodeId && l[LABELS.cluster] === t.cluster) {
            c.id = other.Id;
            c.status = other.State.Status;
            return other.Id;
          }
        } catch {
          // fall through
        }
      }
      const what = c.role === 'infra' ? "the pod's network (infra) container" : `container '${c.name}'`;
      throw new LaunchError(`cannot create ${what}: ${errMessage(e)}`);
    }
  }

  /** Make sure an image is present, pulling it (with progress in the task's detail) if not. */
  private async ensureImage(t: Task, image: string, pullStarted: () => void): Promise<void> {
    try {
      await this.docker.getImage(image).inspect();
      return;
    } catch (e) {
      if (statusCode(e) !== 404) throw new LaunchError(`cannot inspect image ${image}: ${errMessage(e)}`);
    }
    pullStarted();
    t.pull = { image };
    this.emitIfChanged(t);
    this.log.info('docker driver: pulling image', { taskId: t.taskId, image });
    const signal = AbortSignal.any([t.abort.signal, AbortSignal.timeout(this.pullTimeoutMs)]);
    let problem: string | undefined;
    try {
      const stream = (await this.docker.pull(image, { abortSignal: signal })) as Readable;
      const progress = new PullProgress();
      problem = await new Promise<string | undefined>((res) => {
        const onAbort = (): void => {
          stream.destroy();
          res(t.abort.signal.aborted ? 'aborted' : `timed out after ${this.pullTimeoutMs} ms`);
        };
        signal.addEventListener('abort', onAbort, { once: true });
        let firstError: string | undefined;
        this.docker.modem.followProgress(
          stream,
          (err: unknown) => {
            signal.removeEventListener('abort', onAbort);
            res(err != null ? errMessage(err) : firstError);
          },
          (evt: { error?: string; errorDetail?: { message?: string }; id?: string; status?: string; progressDetail?: { current?: number; total?: number } }) => {
            if (evt.error !== undefined || evt.errorDetail !== undefined) {
              firstError ??= evt.errorDetail?.message ?? evt.error;
              return;
            }
            const pct = progress.update(evt);
            if (t.pull !== undefined && pct !== t.pull.percent) {
              t.pull.percent = pct;
              this.emitIfChanged(t);
            }
          },
        );
      });
    } catch (e) {
      problem = signal.aborted && !t.abort.signal.aborted ? `timed out after ${this.pullTimeoutMs} ms` : errMessage(e);
    }
    if (t.abort.signal.aborted) throw new LaunchError(`pull of image ${image} aborted`);
    try {
      await this.docker.getImage(image).inspect();
    } catch (e) {
      throw new LaunchError(`image ${image} not found locally and pull failed: ${problem ?? errMessage(e)}`);
    }
    this.log.info('docker driver: pulled image', { taskId: t.taskId, image });
  }

  // ---- observing

  /** Re-inspect the task's containers, advance its state, emit on change. Serialised per task. */
  private refresh(t: Task): Promise<void> {
    if (t.removed) return Promise.resolve();
    if (t.refreshing !== null) {
      t.dirty = true;
      return t.refreshing;
    }
    t.refreshing = (async () => {
      try {
        do {
          t.dirty = false;
          await this.observe(t);
          if (t.removed) return;
          this.evaluate(t);
          t.refreshFailing = false;
        } while (t.dirty && !t.removed && t.final === undefined);
      } catch (e) {
        if (!t.refreshFailing) this.log.warn('docker driver: cannot inspect the containers of a task (will retry)', { taskId: t.taskId, error: errMessage(e) });
        t.refreshFailing = true;
      } finally {
        t.refreshing = null;
      }
    })();
    return t.refreshing;
  }

  private async observe(t: Task): Promise<void> {
    if (t.final !== undefined) return;
    await Promise.all(
      [t.infra, ...t.apps].map(async (c) => {
        if (c.id === undefined || c.gone) return;
        try {
          const info = await this.docker.getContainer(c.id).inspect();
          const s = info.State;
          c.status = s.Status;
          c.pid = s.Pid > 0 ? s.Pid : undefined;
          c.startedAt = dockerTime(s.StartedAt);
          c.finishedAt = dockerTime(s.FinishedAt);
          c.oom = s.OOMKilled === true;
          if (s.Status === 'exited' || s.Status === 'dead' || (s.Status === 'created' && (s.Error ?? '') !== '')) c.exitCode = s.ExitCode;
          if ((s.Error ?? '') !== '') c.error = s.Error;
        } catch (e) {
          if (statusCode(e) === 404) {
            c.gone = true;
            c.pid = undefined;
          } else {
            throw e;
          }
        }
      }),
    );
  }

  private ctrRunning(c: Ctr): boolean {
    return c.id !== undefined && !c.gone && (c.status === 'running' || c.status === 'paused' || c.status === 'restarting');
  }

  /** Whether nothing of the container runs and nothing will (it is over, or was never started). */
  private ctrDone(t: Task, c: Ctr): boolean {
    if (c.id === undefined) return t.phase === 'launched';
    if (c.gone) return true;
    switch (c.status) {
      case 'running':
      case 'paused':
      case 'restarting':
        return false;
      case 'created':
      case undefined:
        return c.startFailed === true || (c.error ?? '') !== '' || t.phase === 'launched';
      default:
        return true; // exited, dead, removing
    }
  }

  /** Exit code and reason of a finished app container. */
  private ctrExit(t: Task, c: Ctr): { code?: number; reason: string; at: number } {
    const at = c.finishedAt ?? (c.seenDoneAt ??= Date.now());
    if (c.id === undefined) return { at, reason: `container '${c.name}' was never created` };
    if (c.gone) return { at, reason: `container '${c.name}' was removed outside flotilla` };
    if (c.status === 'created' || c.status === undefined) {
      if (c.startFailed === true || (c.error ?? '') !== '') {
        const r: { code?: number; reason: string; at: number } = { at, reason: `container '${c.name}' failed to start: ${c.error ?? 'unknown error'}` };
        if (c.exitCode !== undefined && c.exitCode !== 0) r.code = c.exitCode;
        return r;
      }
      return { at, reason: `container '${c.name}' was never started${t.launchFailure === undefined ? ' (the launch was interrupted)' : ''}` };
    }
    return { code: c.exitCode, at, reason: exitReason(c.name, c.exitCode, c.oom === true) };
  }

  /** Advance the pod's state machine from what was observed. */
  private evaluate(t: Task): void {
    if (t.removed) return;
    if (t.final !== undefined || t.phase === 'launching') {
      this.emitIfChanged(t);
      return;
    }
    const now = Date.now(); // wall: failure times shown to people, ordered against the stop's
    const mono = monoNow(); // deadlines

    // The first failure fails the pod (a container failing before a stop still counts).
    if (t.failure === undefined) {
      if (t.launchFailure !== undefined && (t.stop === undefined || t.launchFailure.at <= t.stop.at)) {
        t.failure = { container: '', reason: t.launchFailure.reason, at: t.launchFailure.at, detectedAt: mono };
      } else {
        const failed = t.apps
          .filter((c) => this.ctrDone(t, c))
          .map((c) => ({ c, exit: this.ctrExit(t, c) }))
          .filter(({ exit }) => exit.code !== 0 && (t.stop === undefined || exit.at < t.stop.at))
          .sort((a, b) => a.exit.at - b.exit.at)[0];
        if (failed !== undefined) {
          t.failure = { container: failed.c.name, reason: failed.exit.reason, at: failed.exit.at, detectedAt: mono };
          if (failed.exit.code !== undefined) t.failure.exitCode = failed.exit.code;
        } else if (t.stop === undefined && t.infra.id !== undefined && this.ctrDone(t, t.infra) && t.apps.some((c) => !this.ctrDone(t, c))) {
          const code = t.infra.gone ? undefined : t.infra.exitCode;
          t.failure = {
            container: INFRA_NAME,
            reason: `the pod's network (infra) container ${t.infra.gone ? 'was removed outside flotilla' : `exited unexpectedly (code ${code ?? '?'})`}`,
            at: now,
            detectedAt: mono,
          };
          if (code !== undefined && code !== 0) t.failure.exitCode = code;
        }
      }
      if (t.failure !== undefined) {
        this.log.info('docker driver: pod failed, stopping the rest', { taskId: t.taskId, reason: t.failure.reason });
      }
    }

    // Stop what still runs: on request (the stop's deadline) or after a failure.
    const running = t.apps.filter((c) => this.ctrRunning(c));
    if (running.length > 0 && (t.stop !== undefined || t.failure !== undefined)) {
      const killAt = Math.min(t.stop?.killAt ?? Infinity, t.failure !== undefined ? t.failure.detectedAt + this.podFailureGraceMs : Infinity);
      if (t.teardownKillAt === undefined || killAt < t.teardownKillAt) {
        t.teardownKillAt = killAt;
        void this.teardown(t, Math.max(0, killAt - mono));
      } else if (mono > t.teardownKillAt + TEARDOWN_SLACK_MS) {
        // docker stop did not do it (engine trouble?): SIGKILL directly.
        for (const c of running) void this.docker.getContainer(c.id!).kill({ signal: 'SIGKILL' }).catch(() => undefined);
      }
    }

    const appsDone = t.apps.every((c) => this.ctrDone(t, c));
    if (appsDone && this.ctrRunning(t.infra) && !t.infraStopping) {
      t.infraStopping = true;
      void this.docker
        .getContainer(t.infra.id!)
        .stop({ t: INFRA_STOP_SECONDS })
        .catch((e: unknown) => {
          if (statusCode(e) !== 304 && statusCode(e) !== 404) this.log.warn('docker driver: cannot stop the infra container', { taskId: t.taskId, error: errMessage(e) });
        })
        .finally(() => {
          t.infraStopping = false;
          void this.refresh(t);
        });
    }

    if (appsDone && !this.ctrRunning(t.infra)) {
      const exits = t.apps.map((c) => this.ctrExit(t, c));
      const finishedAt = Math.max(t.startedAt ?? t.createdAt, ...exits.map((e) => e.at));
      if (t.failure !== undefined && (t.stop === undefined || t.failure.at <= t.stop.at)) {
        t.final = { state: 'failed', reason: t.failure.reason, finishedAt };
        if (t.failure.exitCode !== undefined) t.final.exitCode = t.failure.exitCode;
      } else if (t.stop !== undefined) {
        t.final = { state: 'stopped', reason: 'stopped on request', finishedAt };
      } else {
        t.final = { state: 'succeeded', exitCode: 0, reason: 'all containers exited with code 0', finishedAt };
      }
      this.log.info('docker driver: task finished', { taskId: t.taskId, state: t.final.state, exitCode: t.final.exitCode ?? null });
    }
    this.emitIfChanged(t);
    if (t.final !== undefined) this.wake(t);
  }

  /** `docker stop` every running app container (SIGTERM, SIGKILL after the grace), then the infra. */
  private async teardown(t: Task, graceMs: number): Promise<void> {
    const seconds = Math.ceil(graceMs / 1000);
    await Promise.all(
      t.apps
        .filter((c) => this.ctrRunning(c))
        .map((c) =>
          this.docker
            .getContainer(c.id!)
            .stop({ t: seconds })
            .catch((e: unknown) => {
              if (statusCode(e) !== 304 && statusCode(e) !== 404) this.log.warn('docker driver: cannot stop container', { taskId: t.taskId, container: c.name, error: errMessage(e) });
            }),
        ),
    );
    await this.refresh(t);
  }

  /** Record the stop request in the engine (rename the infra), so a restarted worker knows. */
  private async markStopped(t: Task): Promise<void> {
    if (t.stopMarked || t.stop === undefined || t.infra.id === undefined || t.infra.gone) return;
    t.stopMarked = true;
    try {
      await this.docker.getContainer(t.infra.id).rename({ name: `${t.infra.dockerName}.stop-${t.stop.at}-${t.stop.markKillAt}` });
    } catch (e) {
      this.log.warn('docker driver: cannot record the stop on the infra container', { taskId: t.taskId, error: errMessage(e) });
    }
  }

  private statusOf(t: Task): DriverTaskStatus {
    const containers: DriverContainerStatus[] = t.apps.map((c) => {
      let state: DriverContainerStatus['state'];
      let exitCode: number | undefined;
      if (this.ctrRunning(c)) state = 'running';
      else if (this.ctrDone(t, c)) {
        exitCode = this.ctrExit(t, c).code;
        state = exitCode === 0 ? 'exited' : 'failed';
      } else state = 'starting';
      const s: DriverContainerStatus = { name: c.name, state };
      if (exitCode !== undefined) s.exitCode = exitCode;
      if (state === 'running' && c.pid !== undefined) s.pid = c.pid;
      return s;
    });
    let state: DriverTaskState;
    if (t.final !== undefined) state = t.final.state;
    else state = t.phase === 'launching' || containers.some((c) => c.state === 'starting') ? 'starting' : 'running';
    const status: DriverTaskStatus = { taskId: t.taskId, attempt: t.attempt, state, containers };
    if (t.final !== undefined) {
      status.reason = t.final.reason;
      if (t.final.exitCode !== undefined) status.exitCode = t.final.exitCode;
      status.finishedAt = t.final.finishedAt;
    } else if (t.stop !== undefined) {
      status.reason = 'stopping';
    } else if (t.failure !== undefined) {
      status.reason = `failing: ${t.failure.reason}`;
    }
    if (t.pull !== undefined) {
      status.detail = `pulling ${t.pull.image}${t.pull.percent !== undefined ? ` ${t.pull.percent}%` : ''}`;
    } else {
      status.detail = containers
        .map((c) => `${c.name} ${c.state === 'running' || c.state === 'starting' ? c.state : c.exitCode !== undefined ? `exited ${c.exitCode}` : 'not run'}`)
        .join(', ');
    }
    const pid = containers[0]?.pid;
    if (pid !== undefined) status.pid = pid;
    if (t.startedAt !== undefined) status.startedAt = t.startedAt;
    else {
      const first = Math.min(...t.apps.map((c) => c.startedAt ?? Infinity));
      if (Number.isFinite(first)) status.startedAt = first;
    }
    return status;
  }

  private emitIfChanged(t: Task): void {
    if (t.removed) return;
    const s = this.statusOf(t);
    const key = stableStringify([s.state, s.exitCode, s.reason, s.detail]);
    if (key === t.lastKey) return;
    t.lastKey = key;
    for (const l of [...t.listeners, ...this.watchers]) {
      try {
        l(s);
      } catch (e) {
        this.log.error('docker driver: event listener threw', { taskId: t.taskId, error: errMessage(e) });
      }
    }
  }

  private whenFinished(t: Task): Promise<void> {
    if (t.final !== undefined || t.removed || this.closed) return Promise.resolve();
    return new Promise((res) => t.waiters.push(res));
  }

  private wake(t: Task): void {
    const ws = t.waiters.splice(0);
    for (const w of ws) w();
  }

  // ---- logs

  private async *readLogs(taskId: string, opts: LogOptions): AsyncGenerator<LogLine> {
    await this.ready();
    const t = this.tasks.get(taskId);
    if (t === undefined) throw new FlotillaError('not_found', `Cannot read the logs of task '${taskId}' as it is not on this worker`);
    const names = t.apps.map((c) => c.name);
    if (opts.container !== undefined && !names.includes(opts.container)) {
      throw new FlotillaError('bad_request', `Cannot read the logs of task '${taskId}' as it has no container '${opts.container}' (it has ${names.map((n) => `'${n}'`).join(', ')})`);
    }
    if (opts.tail !== undefined && (!Number.isSafeInteger(opts.tail) || opts.tail < 0)) {
      throw new FlotillaError('bad_request', `Cannot read the logs of task '${taskId}' as 'tail' must be a whole number >= 0`);
    }
    const signal = opts.signal;
    if (signal?.aborted) return;
    const follow = opts.follow === true;
    // Following starts once the containers are started (a pull may come first).
    if (follow) {
      await Promise.race([t.launch, new Promise<void>((res) => signal?.addEventListener('abort', () => res(), { once: true }))]);
      if (signal?.aborted) return;
    }
    const streams: ('stdout' | 'stderr')[] = opts.stream !== undefined ? [opts.stream] : ['stdout', 'stderr'];
    const selected = t.apps.filter((c) => opts.container === undefined || c.name === opts.container);

    const queue: LogLine[] = [];
    let wakeConsumer: (() => void) | null = null;
    const paused = new Set<Readable>();
    const abort = new AbortController();
    const onAbort = (): void => abort.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    let pending = 0;
    const notify = (): void => {
      const w = wakeConsumer;
      wakeConsumer = null;
      w?.();
    };
    const push = (l: LogLine, src: Readable | null): void => {
      queue.push(l);
      if (src !== null && queue.length >= LOG_QUEUE_HIGH && !paused.has(src)) {
        paused.add(src);
        src.pause();
      }
      notify();
    };

    const pump = async (c: Ctr, stream: 'stdout' | 'stderr'): Promise<void> => {
      if (c.id === undefined) return;
      const ctr = this.docker.getContainer(c.id);
      const want = { stdout: stream === 'stdout', stderr: stream === 'stderr' };
      // Docker's `tail` counts the lines of both streams together: count this stream's lines
      // first, then skip all but the last `tail` of them.
      let skip = 0;
      if (opts.tail !== undefined || !follow) {
        const buf = await ctr.logs({ ...want, follow: false, timestamps: false, abortSignal: abort.signal });
        const lines: string[] = [];
        await this.demuxLines(Readable.from([asBuffer(buf)]), stream, (line) => lines.push(line));
        if (!follow) {
          for (const line of opts.tail !== undefined ? lines.slice(Math.max(0, lines.length - opts.tail)) : lines) push({ container: c.name, stream, line }, null);
          return;
        }
        skip = Math.max(0, lines.length - opts.tail!);
      }
      const raw = (await ctr.logs({ ...want, follow: true, timestamps: false, abortSignal: abort.signal })) as Readable;
      let n = 0;
      await this.demuxLines(raw, stream, (line) => {
        if (n++ < skip) return;
        push({ container: c.name, stream, line }, raw);
      });
    };

    for (const c of selected) {
      for (const s of streams) {
        pending++;
        void pump(c, s)
          .catch((e: unknown) => {
            if (!abort.signal.aborted && statusCode(e) !== 404) this.log.debug('docker driver: log stream failed', { taskId, container: c.name, error: errMessage(e) });
          })
          .finally(() => {
            pending--;
            notify();
          });
      }
    }
    try {
      for (;;) {
        if (signal?.aborted) return;
        const l = queue.shift();
        if (l !== undefined) {
          yield l;
          if (queue.length < LOG_QUEUE_HIGH / 2 && paused.size > 0) {
            for (const p of paused) p.resume();
            paused.clear();
          }
          continue;
        }
        if (pending === 0) return;
        await new Promise<void>((res) => {
          wakeConsumer = res;
          if (queue.length > 0 || pending === 0 || signal?.aborted) notify();
        });
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
      abort.abort(); // ends every docker stream still open
    }
  }

  /** Demux a docker log stream (8-byte frame headers) and call `onLine` per line of `stream`. */
  private demuxLines(raw: Readable, stream: 'stdout' | 'stderr', onLine: (line: string) => void): Promise<void> {
    return new Promise<void>((res) => {
      const out = new PassThrough();
      const sink = new PassThrough();
      sink.resume();
      this.docker.modem.demuxStream(raw, stream === 'stdout' ? out : sink, stream === 'stderr' ? out : sink);
      const decoder = new StringDecoder('utf8');
      let partial = '';
      out.on('data', (chunk: Buffer) => {
        partial += decoder.write(chunk);
        let nl: number;
        while ((nl = partial.indexOf('\n')) >= 0) {
          onLine(partial.slice(0, nl));
          partial = partial.slice(nl + 1);
        }
        while (partial.length > MAX_LINE) {
          onLine(partial.slice(0, MAX_LINE));
          partial = partial.slice(MAX_LINE);
        }
      });
      out.once('end', () => {
        partial += decoder.end();
        if (partial.length > 0) onLine(partial);
        partial = '';
        res();
      });
      // The source ending (or failing, or aborted) ends `out` once what was demuxed is read.
      let ended = false;
      const endOut = (): void => {
        if (ended) return;
        ended = true;
        out.end();
      };
      raw.once('end', endOut);
      raw.once('close', endOut);
      raw.once('error', endOut);
    });
  }
}

function asBuffer(v: unknown): Buffer {
  if (Buffer.isBuffer(v)) return v;
  if (typeof v === 'string') return Buffer.from(v);
  return Buffer.from(JSON.stringify(v));
}

function defaultSocketPath(): string {
  const host = process.env.DOCKER_HOST;
  if (host !== undefined && host.startsWith('unix://')) return host.slice('unix://'.length);
  return DEFAULT_SOCKET_PATH;
}

