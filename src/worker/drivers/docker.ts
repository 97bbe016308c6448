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
//   the pod name (the app containers share it). A pod of ONE container naming no secrets
//   ("solo", docker-config.ts `soloPod`) has no infra: its container owns the namespace,
//   hostname and ports itself, carries `io.flotilla.containers` and the stop mark (one
//   engine create + start instead of two; docker-pod.ts `netCtr` is "the infra or the solo").
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
// Container config (docker-config.ts `appConfig`): Entrypoint = `command`, Cmd = `args`, the
// FLOTILLA_* env then the spec's, `resources` on EACH app container (clamped to the engine's
// CPUs; memory without swap), Docker restart policy `no` (flotilla decides), json-file logs.
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

import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
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
  type ExecOptions,
  type ExecProcess,
  type LogLine,
  type LogOptions,
  type TaskUsageRaw,
} from '../driver.js';
import { DriverBase, sleep, specHash, type TrackedTask } from './base.js';
import {
  CLUSTER_ID_RE,
  DEFAULT_INFRA_IMAGE,
  FLOTILLA_VERSION,
  INFRA_NAME,
  INFRA_SCRIPT,
  LABELS,
  STOP_MARK_RE,
  defaultSocketPath,
  dockerTime,
  errMessage,
  exitReason,
  nameSafe,
  normalizeImage,
  statusCode,
} from './docker-names.js';
import { pullImage } from './docker-images.js';
import { NodeLock } from './docker-lock.js';
import { streamContainerLogs } from './docker-logs.js';
import { dockerExec } from './docker-exec.js';
import { ctrDone, ctrExit, ctrRunning, netCtr, podStatus, type Ctr, type Task } from './docker-pod.js';
import { appConfig, containerLabels, podPorts, soloPod, type PodNet } from './docker-config.js';
import { putSecrets, secretsMount, secretsOf } from './docker-secrets.js';
import { dockerVolumeName, ensureDockerVolume, removeDockerVolume, volumeBinds } from '../volumes.js';
import { dockerTasksUsage } from './docker-usage.js';
import { containerAddress, dockerProbe, publishedPorts } from './docker-probe.js';
import type { ProbeOptions, ProbeResult } from '../driver.js';
import { readFileSync } from 'node:fs';
import { containerDns, type ContainerDns } from './docker-dns.js';

function readHostResolvConf(): string {
  try {
    return readFileSync('/etc/resolv.conf', 'utf8');
  } catch {
    return '';
  }
}

// Kept importable from here (tests, the worker's CLI).
export { DEFAULT_INFRA_IMAGE, DEFAULT_SOCKET_PATH, FLOTILLA_VERSION, INFRA_SCRIPT, LABELS, nameSafe, normalizeImage } from './docker-names.js';
export { PullProgress } from './docker-images.js';

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
  /** host:port of the node's DNS server: the pods' name server when containers can reach it (docker-dns.ts). */
  dns?: string;
  /**
   * The host address published ports bind (the engine's HostIp); default every address. Set
   * where the node's own address is not the engine's (`up --netns`: the test bed's host
   * address, which every node's namespace reaches). Reported with each binding.
   */
  publishHost?: string;
}

/** When a teardown's deadline has passed by this much and something still runs: SIGKILL. */
const TEARDOWN_SLACK_MS = 5000;
/** Seconds the infra container gets on stop (it exits on SIGTERM at once). */
const INFRA_STOP_SECONDS = 2;

class LaunchError extends Error {}

/** The docker driver's own spec rules (see DriverBase.checkSpec). */
const DOCKER_SPEC_RULES = {
  pod: (spec: TaskSpec, bad: (path: string, message: string) => never): void => {
    if (typeof spec.name !== 'string' || spec.name === '') bad('name', 'must be a non-empty string');
  },
  beforeCommand: (c: TaskSpec['containers'][number], i: number, bad: (path: string, message: string) => never): void => {
    if (typeof c.image !== 'string' || c.image === '') bad(`containers[${i}].image`, 'must be a non-empty string (the docker driver runs an image)');
  },
  after: (c: TaskSpec['containers'][number], i: number, bad: (path: string, message: string) => never): void => {
    if (!Array.isArray(c.ports)) bad(`containers[${i}].ports`, 'must be an array');
  },
};

// ---------------------------------------------------------------------------------------------

export class DockerDriver extends DriverBase<Task> implements Driver {
  readonly name = 'docker' as const;
  readonly nodeId: string;
  readonly socketPath: string;
  readonly docker: Docker;
  private readonly pullTimeoutMs: number;
  private readonly infraImage: string;
  private readonly infraCommand: string[];
  private readonly podFailureGraceMs: number;
  private readonly reconcileMs: number;
  /** The pods' DNS settings (the node's DNS server), or null: Docker's default. */
  private readonly dns: ContainerDns | null;
  /** HostIp of every published port ('' = every address). */
  private readonly publishHost: string;
  private readonly nodeName: string;
  private loaded: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private eventsAbort = new AbortController();
  private eventsLoop: Promise<void> | null = null;
  private hostCpus = 0;
  private clusterId: string | null = null;
  /** Short hash of the cluster id, part of every container name. */
  private clusterName = '';
  private readonly exclusive: boolean;
  /** The engine-wide lock of (cluster, node). */
  private readonly lock: NodeLock;
  /** Bumped by every scope change: work of an older scope must not touch the new one. */
  private scopeGen = 0;
  /**
   * Images this driver found present: later launches skip their inspect (one Engine round
   * trip); a create that finds one gone (removed behind our back) pulls it and tries again.
   */
  private readonly imagesPresent = new Set<string>();

  constructor(opts: DockerDriverOptions) {
    super(opts.log ?? silentLogger, 'docker driver');
    if (typeof opts.nodeId !== 'string' || opts.nodeId === '') throw new FlotillaError('bad_request', "Cannot create the docker driver as 'nodeId' must be a non-empty string");
    this.nodeId = opts.nodeId;
    this.socketPath = opts.socketPath ?? defaultSocketPath();
    this.docker = new Docker({ socketPath: this.socketPath });
    this.pullTimeoutMs = opts.pullTimeoutMs ?? 300_000;
    this.infraImage = normalizeImage(opts.infraImage ?? DEFAULT_INFRA_IMAGE);
    this.infraCommand = opts.infraCommand !== undefined && opts.infraCommand.length > 0 ? [...opts.infraCommand] : ['/bin/sh', '-c', INFRA_SCRIPT];
    this.podFailureGraceMs = opts.podFailureGraceMs ?? 5000;
    this.reconcileMs = opts.reconcileMs ?? 2000;
    this.dns = containerDns(opts.dns, readHostResolvConf());
    this.publishHost = opts.publishHost ?? '';
    this.nodeName = nameSafe(opts.nodeId, 24);
    this.exclusive = opts.exclusive ?? true;
    this.lock = new NodeLock({
      docker: this.docker,
      socketPath: this.socketPath,
      infraImage: this.infraImage,
      pullTimeoutMs: this.pullTimeoutMs,
      lockWaitMs: opts.lockWaitMs ?? 5000,
      log: this.log,
    });
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
        this.forget(t);
      }
      this.tasks.clear();
      this.loaded = null;
      this.eventsAbort.abort();
      this.eventsAbort = new AbortController();
      await this.eventsLoop?.catch(() => undefined);
      this.eventsLoop = null;
      await this.lock.release();
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
  protected ready(): Promise<void> {
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
    if (this.exclusive) await this.lock.acquire({ clusterId: this.clusterId ?? '', clusterName: this.clusterName, nodeId: this.nodeId, nodeName: this.nodeName });
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
    // A solo pod (no infra): its one container carries the containers label and the stop mark.
    const soloInfo = infraInfo === undefined && appInfos.length === 1 && appInfos[0]!.Labels[LABELS.containers] !== undefined ? appInfos[0] : undefined;
    const netInfo = infraInfo ?? soloInfo;
    const base = this.baseName(taskId, attempt);
    let names: string[] = appInfos.map((c) => c.Labels[LABELS.container] ?? '?');
    try {
      const fromLabel = JSON.parse(netInfo?.Labels[LABELS.containers] ?? 'null') as unknown;
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
    if (infraInfo !== undefined) infra.id = infraInfo.Id;
    if (netInfo !== undefined) {
      const m = STOP_MARK_RE.exec((netInfo.Names[0] ?? '').replace(/^\//, ''));
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
      solo: soloInfo !== undefined,
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
    this.releaseAll();
    await this.eventsLoop?.catch(() => undefined);
    await this.lock.release();
  }

  // ---- the Driver API

  /** CPU and memory of the running pods' app containers (docker-usage.ts: one stats call each). */
  async usage(): Promise<Map<string, TaskUsageRaw>> {
    if (this.closed || this.clusterId === null) return new Map();
    await this.ready();
    const tasks = new Map<string, { attempt: number; ids: string[] }>();
    for (const t of this.tasks.values()) {
      if (t.final !== undefined || t.removed) continue;
      const ids = t.apps.filter((c) => c.id !== undefined && ctrRunning(c)).map((c) => c.id!);
      if (ids.length > 0) tasks.set(t.taskId, { attempt: t.attempt, ids });
    }
    return dockerTasksUsage(this.docker, tasks);
  }

  async start(taskId: string, spec: TaskSpec, onEvent?: DriverEventListener, opts: DriverStartOptions = {}): Promise<void> {
    const attempt = this.checkStartArgs(taskId, opts.attempt);
    this.checkSpec(taskId, spec, 'docker', DOCKER_SPEC_RULES);
    await this.ready();
    const hash = specHash(spec);
    if (this.joinExisting(taskId, attempt, hash, onEvent)) return; // already starting/running: never a duplicate

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
      solo: soloPod(spec),
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
    t.launch = this.launch(t, spec, pullStarted, opts.secrets, opts.publish);
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

  /** An exec health check: `docker exec` in the pod's container. */
  async probe(taskId: string, container: string, command: string[], opts: ProbeOptions): Promise<ProbeResult> {
    const id = this.tasks.get(taskId)?.apps.find((c) => c.name === container)?.id;
    if (id === undefined) throw new FlotillaError('not_found', `task '${taskId}' has no container '${container}' on this worker`);
    return dockerProbe(this.docker, id, command, opts);
  }

  /** The pod's IP on the Docker network (its unpublished ports are reached there). */
  async podAddress(taskId: string): Promise<string | null> {
    const t = this.tasks.get(taskId);
    const id = t === undefined ? undefined : netCtr(t).id;
    return id === undefined ? null : containerAddress(this.docker, id);
  }

  /** A published port's binding as last inspected: its HostIp (`publishHost`), else loopback. */
  async portAddress(taskId: string, port: number): Promise<{ host: string; port: number } | null> {
    const b = this.tasks.get(taskId)?.ports?.find((p) => p.container === port);
    return b === undefined ? null : { host: b.hostIp ?? '127.0.0.1', port: b.hostPort };
  }

  async inspect(taskId: string): Promise<DriverTaskStatus | null> {
    await this.ready();
    const t = this.tasks.get(taskId);
    if (t === undefined) return null;
    if (t.final === undefined && t.phase === 'launched') await this.refresh(t);
    return this.statusOf(t);
  }

  /** `flotilla exec`: the engine's exec in a running app container (docker-exec.ts). */
  async exec(taskId: string, opts: ExecOptions): Promise<ExecProcess> {
    await this.ready();
    const t = this.tasks.get(taskId);
    if (t !== undefined && t.final === undefined && t.phase === 'launched') await this.refresh(t);
    return dockerExec(this.docker, taskId, t, opts);
  }

  async remove(taskId: string): Promise<void> {
    await this.ready();
    const t = this.tasks.get(taskId);
    if (t !== undefined) {
      t.removed = true;
      t.abort.abort();
      await t.launch;
      this.tasks.delete(taskId);
      this.forget(t);
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

  /** Removes this cluster's and node's Docker volume `name` (`flotilla volume rm`); no-op when absent. */
  async removeVolume(name: string): Promise<void> {
    await this.ready();
    // The engine refuses to remove a volume that any container (even an exited one) mounts:
    // this node's finished containers that mount it go first; a running one is a conflict.
    const users = await this.docker.listContainers({ all: true, filters: { volume: [dockerVolumeName(this.clusterId ?? '', name, this.nodeId)], label: this.scopeLabels() } });
    const running = users.filter((c) => c.State === 'running' || c.State === 'restarting' || c.State === 'paused');
    if (running.length > 0) throw new FlotillaError('conflict', `Cannot remove volume '${name}' as container(s) ${running.map((c) => (c.Names[0] ?? c.Id).replace(/^\//, '')).join(', ')} still use it`);
    await Promise.all(users.map((c) => this.docker.getContainer(c.Id).remove({ v: true }).catch((e: unknown) => (statusCode(e) === 404 ? undefined : Promise.reject(e)))));
    await removeDockerVolume(this.docker, this.clusterId ?? '', name, this.nodeId);
  }

  // ---- launching

  private baseName(taskId: string, attempt: number): string {
    return `flotilla.${this.clusterName}.${this.nodeName}.${nameSafe(taskId)}.${attempt}`;
  }

  protected isOver(t: Task): boolean {
    return t.final !== undefined;
  }

  protected runOf(t: Task): { attempt: number; specHash: string; final?: { state: string } } {
    return t;
  }

  /** Whether the launch must not go on (stop, remove or a failure seen meanwhile). */
  private launchCancelled(t: Task): boolean {
    return t.removed || t.stop !== undefined || t.failure !== undefined;
  }

  private async launch(t: Task, spec: TaskSpec, pullStarted: () => void, delivered?: DriverStartOptions['secrets'], publish?: DriverStartOptions['publish']): Promise<void> {
    try {
      // Secrets (docker-secrets.ts: a tmpfs of the pod, filled through the archive API) and
      // named volumes (this cluster's and node's Docker volumes, created on first use).
      let secrets: NonNullable<DriverStartOptions['secrets']> = [];
      try {
        secrets = secretsOf(spec.secrets ?? [], delivered);
        for (const v of spec.volumes ?? []) await ensureDockerVolume(this.docker, t.cluster, v.name, this.nodeId);
      } catch (e) {
        throw new LaunchError(`cannot prepare its secrets or volumes: ${errMessage(e)}`);
      }
      const images = [...new Set([...(t.solo ? [] : [this.infraImage]), ...spec.containers.map((c) => normalizeImage(c.image!))])];
      for (const image of images) {
        if (this.launchCancelled(t)) return;
        if (!this.imagesPresent.has(image)) await this.ensureImage(t, image, pullStarted);
      }
      t.pull = undefined;
      if (this.launchCancelled(t)) return;

      // A solo pod is its one container (docker-config.ts soloPod); any other pod's containers
      // join the network namespace of an infra container.
      const volumes = volumeBinds(t.cluster, spec.volumes, this.nodeId);
      const net = { publishHost: this.publishHost, publish: publish ?? [], dns: this.dns };
      const ids = t.solo
        ? [await this.createContainer(t, t.apps[0]!, appConfig(t, spec, 0, null, { nodeId: this.nodeId, hostCpus: this.hostCpus }, { volumeBinds: volumes, net }), pullStarted)]
        : await this.createPod(t, spec, secrets, volumes, net, pullStarted);
      if (this.launchCancelled(t)) return;
      if (secrets.length > 0) {
        try {
          await putSecrets(this.docker.getContainer(t.infra.id!), secrets);
        } catch (e) {
          throw new LaunchError(`cannot write its secrets into the pod's tmpfs: ${errMessage(e)}`);
        }
      }
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

  /**
   * Creates a pod's infra container (its network namespace, published ports and secrets
   * tmpfs) and starts it while every app container is created (joining a network namespace
   * is checked when a container starts, not when it is created: one Engine round trip less).
   * Returns the app containers' ids (fewer when the launch was cancelled meanwhile).
   */
  private async createPod(t: Task, spec: TaskSpec, secrets: NonNullable<DriverStartOptions['secrets']>, volumes: string[], net: PodNet, pullStarted: () => void): Promise<string[]> {
    const { exposed, bindings } = podPorts(spec, net);
    const infraId = await this.createContainer(t, t.infra, {
      Image: this.infraImage,
      Entrypoint: this.infraCommand,
      Cmd: [],
      Hostname: spec.name.slice(0, 63),
      Labels: { ...containerLabels(t, this.nodeId, INFRA_NAME, 'infra'), [LABELS.containers]: JSON.stringify(spec.containers.map((c) => c.name)) },
      ExposedPorts: exposed,
      HostConfig: {
        PortBindings: bindings,
        ...(secrets.length > 0 ? { Mounts: [secretsMount(containerLabels(t, this.nodeId, INFRA_NAME, 'infra'), secrets)] } : {}),
        RestartPolicy: { Name: 'no' },
        LogConfig: { Type: 'json-file', Config: { 'max-size': '1m', 'max-file': '1' } },
        ...(net.dns ?? {}),
      },
    }, pullStarted);
    if (this.launchCancelled(t)) return [];
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
        const extra = { secretsFrom: secrets.length > 0 ? infraId : undefined, volumeBinds: volumes };
        ids.push(await this.createContainer(t, t.apps[i]!, appConfig(t, spec, i, infraId, { nodeId: this.nodeId, hostCpus: this.hostCpus }, extra), pullStarted));
      }
    } catch (e) {
      createError = e;
    }
    const infraError = await infraStarted;
    if (infraError) throw infraError;
    if (createError !== null) throw createError;
    return ids;
  }

  /**
   * Create a container under its unique name. A 409 (name in use) from a container of this
   * very task and attempt (a racing driver) is adopted instead of failing. An image gone
   * since this driver saw it (404) is pulled (`pullStarted`), then the create tried once more.
   */
  private async createContainer(t: Task, c: Ctr, cfg: Docker.ContainerCreateOptions, pullStarted?: () => void): Promise<string> {
    try {
      const created = await this.docker.createContainer({ ...cfg, name: c.dockerName });
      c.id = created.id;
      c.status = 'created';
      return created.id;
    } catch (e) {
      if (statusCode(e) === 404 && pullStarted !== undefined && cfg.Image !== undefined && /no such image/i.test(errMessage(e))) {
        this.imagesPresent.delete(cfg.Image);
        await this.ensureImage(t, cfg.Image, pullStarted);
        t.pull = undefined;
        return this.createContainer(t, c, cfg);
      }
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
      this.imagesPresent.add(image);
      return;
    } catch (e) {
      if (statusCode(e) !== 404) throw new LaunchError(`cannot inspect image ${image}: ${errMessage(e)}`);
    }
    pullStarted();
    t.pull = { image };
    this.emitIfChanged(t);
    this.log.info('docker driver: pulling image', { taskId: t.taskId, image });
    const problem = await pullImage(this.docker, image, {
      abort: t.abort.signal,
      timeoutMs: this.pullTimeoutMs,
      onPercent: (pct) => {
        if (t.pull !== undefined && pct !== t.pull.percent) {
          t.pull.percent = pct;
          this.emitIfChanged(t);
        }
      },
    });
    if (t.abort.signal.aborted) throw new LaunchError(`pull of image ${image} aborted`);
    try {
      await this.docker.getImage(image).inspect();
    } catch (e) {
      throw new LaunchError(`image ${image} not found locally and pull failed: ${problem ?? errMessage(e)}`);
    }
    this.imagesPresent.add(image);
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
          if (c.role === 'infra' || (t.solo && c.role === 'app')) t.ports = publishedPorts(info.NetworkSettings?.Ports);
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
          .filter((c) => ctrDone(t, c))
          .map((c) => ({ c, exit: ctrExit(t, c) }))
          .filter(({ exit }) => exit.code !== 0 && (t.stop === undefined || exit.at < t.stop.at))
          .sort((a, b) => a.exit.at - b.exit.at)[0];
        if (failed !== undefined) {
          t.failure = { container: failed.c.name, reason: failed.exit.reason, at: failed.exit.at, detectedAt: mono };
          if (failed.exit.code !== undefined) t.failure.exitCode = failed.exit.code;
        } else if (t.stop === undefined && t.infra.id !== undefined && ctrDone(t, t.infra) && t.apps.some((c) => !ctrDone(t, c))) {
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
    const running = t.apps.filter((c) => ctrRunning(c));
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

    const appsDone = t.apps.every((c) => ctrDone(t, c));
    if (appsDone && ctrRunning(t.infra) && !t.infraStopping) {
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

    if (appsDone && !ctrRunning(t.infra)) {
      const exits = t.apps.map((c) => ctrExit(t, c));
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
        .filter((c) => ctrRunning(c))
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

  /** Record the stop request in the engine (rename the infra, or a solo pod's container), so a restarted worker knows. */
  private async markStopped(t: Task): Promise<void> {
    const net = netCtr(t);
    if (t.stopMarked || t.stop === undefined || net.id === undefined || net.gone) return;
    t.stopMarked = true;
    try {
      await this.docker.getContainer(net.id).rename({ name: `${net.dockerName}.stop-${t.stop.at}-${t.stop.markKillAt}` });
    } catch (e) {
      this.log.warn('docker driver: cannot record the stop on the pod\'s container', { taskId: t.taskId, error: errMessage(e) });
    }
  }

  protected statusOf(t: Task): DriverTaskStatus {
    return podStatus(t);
  }

  // ---- logs

  protected async *readLogs(taskId: string, opts: LogOptions): AsyncGenerator<LogLine> {
    await this.ready();
    const t = this.logTask(taskId);
    this.checkLogArgs(taskId, t.apps.map((c) => c.name), opts);
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

    yield* streamContainerLogs(this.docker, selected, streams, { follow, tail: opts.tail, since: opts.since, timestamps: opts.timestamps === true || opts.since !== undefined, signal, log: this.log, taskId });
  }
}
