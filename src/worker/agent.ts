// The worker agent: follows the leader over the session protocol and runs what it assigns
// (design principles 6, 8, 10; swarmkit agent/session.go). The agent is the composition root
// of the worker and owns its tasks; the rest lives beside it:
//   session.ts          finding the leader, the session, heartbeats (SessionClient)
//   status-reporter.ts  batching status reports (StatusReporter)
//   http-server.ts      the worker's HTTP API: health and task logs (WorkerHttpServer)
//   state-dir.ts        the state dir's lock and the files a restarted worker reads back
//   drivers/            how tasks run (process, docker) over a shared base (drivers/base.ts)
//
// Task discipline:
//  * Tasks never stop because no manager answers, nor because a session ended. Only an
//    `assignments` message can stop a task: the set is complete, so a task that is not in
//    it (or is desired `shutdown`) is stopped (SIGTERM, SIGKILL after `stopGraceMs`). A new
//    session stops nothing until its first `assignments` arrives. Operations on one task
//    run one at a time; each reconcile reads the latest set, so bursts coalesce.
//  * The worker never restarts anything: it reports exits; a finished task stays reported
//    until the manager drops it from the set or asks to shut it down. Then it is *retired*:
//    no longer reported, but its logs stay readable until `retainFinished` newer tasks were
//    retired or `retainFinishedMs` passed (the list survives a worker restart in
//    `<stateDir>/retired.json`); then the driver removes it. A new attempt of a retired
//    task replaces it at once.
//  * Status changes are batched: at most one `status` frame per `statusBatchMs` (50 ms).
//  * Attempts: the manager restarts a task in place (same id, attempt + 1). An assignment
//    with a higher attempt than the local run replaces it (stop if still running, remove,
//    start the new attempt); a lower one is stale and ignored; the same one is left alone,
//    whether it runs or has finished. Every report carries the attempt it is about (drivers
//    keep it with the task, so it survives a worker restart).

import { createHash } from 'node:crypto';
import os from 'node:os';
import type { NodeTls } from '../tls/pki.js';
import type { RegisterMsg, WorkerResources } from '../protocol/session.js';
import { FlotillaError, toFlotillaError } from '../protocol/errors.js';
import { silentLogger, type Logger } from '../log.js';
import { parseTaskSpec, type TaskSpec } from '../protocol/spec.js';
import { isFinished, type Driver, type DriverTaskStatus } from './driver.js';
import type { AssignedTaskIn } from '../protocol/frames.js';
import { monoNow, wallNow, type Timers } from '../clock.js';
import { secretsForTask, type DeliveredSecret } from '../protocol/secrets.js';
import { SessionClient, type Session, type WelcomeIn } from './session.js';
import { StatusReporter, reportOf } from './status-reporter.js';
import { WorkerHttpServer } from './http-server.js';
import { fileStore, nodeTimers, unrefTimers, type SessionDialer, type WorkerStore } from './ports.js';
import { DEFAULT_USAGE_INTERVAL_MS, UsageSampler } from './usage.js';
import { HealthMonitor, probeFor, taskCheckOf, type TaskCheck } from './health.js';
import type { TaskHealth } from '../protocol/health.js';
import { MESH_FEATURE, NAMES_FEATURE } from '../protocol/session.js';
import type { DnsServer } from './dns.js';
import { RoutingMesh, listenHost } from './mesh.js';
import { dropPrevious, readPrevious, savePrevious } from './previous-logs.js';
import type { LogLine, LogOptions } from './driver.js';

export const WORKER_VERSION = '0.1.0';

export interface WorkerAgentOptions {
  /** Node id (e.g. w1). */
  id: string;
  /** Mutual TLS with the cluster CA (wss:// sessions, HTTPS log API); plain without it. */
  tls?: NodeTls;
  /** Seed manager addresses (host:port). */
  managers: string[];
  /** Join token: sent in `register` (and as a Bearer header on the upgrade); guards the log API. */
  token: string;
  labels?: Record<string, string>;
  /** Default: this machine's (cores × 1000 millicores, total memory). */
  resources?: Partial<WorkerResources>;
  drivers: Driver[];
  /** The worker's directory (a lock file keeps two workers off it). Drivers keep their own state. */
  stateDir: string;
  /** host:port of the HTTP server; port 0 picks one. Default 127.0.0.1:0. */
  listen?: string;
  /** host:port managers and clients use to reach the HTTP server. Default: the bound address. */
  advertise?: string;
  log?: Logger;
  /** Grace between SIGTERM and SIGKILL when the manager stops a task. Default 10 s. */
  stopGraceMs?: number;
  /** Reconnect backoff bounds. Default 100 ms → 5 s. */
  backoffMinMs?: number;
  backoffMaxMs?: number;
  /** Status batching window. Default 50 ms. */
  statusBatchMs?: number;
  /** How long a manager may take to answer `register`. Default 10 s. */
  welcomeTimeoutMs?: number;
  /** While looking for the leader, another manager is tried this often (ms) until one welcomes. Default 300. */
  huntStaggerMs?: number;
  /** Finished tasks whose logs are kept after the manager dropped them. Default 50. */
  retainFinished?: number;
  /** How long those logs are kept. Default 1 hour. */
  retainFinishedMs?: number;
  /** How often CPU and memory are measured and sent to the leader (ms; 0: never). Default 5 s. */
  usageIntervalMs?: number;
  /** Routing mesh: a replica that answers none of a client's bytes this long is set aside (ms; 0: never). Default 10 s. */
  meshStallTimeoutMs?: number;
  /**
   * Called when the worker cannot go on (e.g. another live worker of its cluster holds its
   * node id on the Docker engine); the agent closes itself. The CLI exits with the message.
   */
  onFatal?: (e: FlotillaError) => void;
  // Ports (src/worker/ports.ts), for the whole-cluster simulator; production leaves them unset.
  /** How sessions connect to a manager. Default: WebSocket. */
  dial?: SessionDialer;
  /** Default: Node timers. */
  timers?: Timers;
  /** Backoff jitter. Default Math.random. */
  random?: () => number;
  /** The lock and small files a restarted worker reads back. Default: files in `stateDir`. */
  store?: WorkerStore;
  /** false: no HTTP server (no log API); `advertise` (or '') is what `register` names. Default true. */
  http?: boolean;
  /** The node's DNS server (dns.ts, already listening): follows the leader's names; closed with the agent. */
  dns?: DnsServer;
}

export interface AgentTaskView extends DriverTaskStatus {
  driver: string | null;
  desired?: 'running' | 'shutdown';
  attempt: number;
}

export interface AgentStatus {
  id: string;
  /** Whether a session is established (welcomed). */
  connected: boolean;
  /** The manager of the current session (connecting or welcomed), if any. */
  manager: string | null;
  sessionId: string | null;
  term: number | null;
  managers: string[];
  /** host:port of the HTTP server (what `register` advertises). */
  addr: string | null;
  sessions: number;
  /** Tasks the worker has and reports. */
  tasks: AgentTaskView[];
  /** Finished tasks no longer reported, kept for their logs. */
  retired: AgentTaskView[];
  /** The cluster id the last welcome named (null before the first one). */
  clusterId: string | null;
}

interface AgentTask {
  taskId: string;
  attempt: number;
  driver: Driver | null;
  status: DriverTaskStatus;
  desired?: 'running' | 'shutdown';
  /** Its health check (health.ts), the health last seen, and why a failed check stopped it. */
  check?: TaskCheck;
  health?: TaskHealth;
  healthFailure?: string;
}

interface RetiredTask extends AgentTask {
  /** When it was retired, on `monoNow()`: its age decides when it is purged. */
  retiredAt: number;
  /** The same moment in wall ms: what retired.json keeps for a successor process. */
  retiredWall: number;
}

function errMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Task starts in flight at once on one worker (see `startTurn`). */
const START_CONCURRENCY = 4;

export class WorkerAgent {
  readonly id: string;
  private readonly opts: WorkerAgentOptions;
  private readonly log: Logger;
  private readonly drivers = new Map<string, Driver>();
  private readonly tasks = new Map<string, AgentTask>();
  private readonly queues = new Map<string, Promise<void>>();
  /** The last complete assignment set received (null until the first one). */
  private desired: Map<string, AssignedTaskIn> | null = null;
  /** The opened secrets of the last assignments frame (memory only). */
  private secrets = new Map<string, Uint8Array>();
  /** Volumes already removed on the leader's word (once per process). */
  private droppedVolumes = new Set<string>();
  /** The volumes the leader's last assignment set listed for deletion. */
  private volumeDrops: string[] = [];
  private readonly reconcileQueued = new Set<string>();
  private readonly retired = new Map<string, RetiredTask>();
  /** The retired list read at start, until the drivers' tasks are sorted out. */
  private retiredOnDisk = new Map<string, number>();
  private readonly retainFinished: number;
  private readonly retainFinishedMs: number;
  private pruneTimer: (() => void) | null = null;
  /** `taskId#attempt` of unknown tasks reported stopped in the current session. */
  private reportedGone = new Set<string>();
  private readonly resources: WorkerResources;
  private readonly stopGraceMs: number;
  private readonly sessions: SessionClient;
  private readonly reporter: StatusReporter;
  private readonly http: WorkerHttpServer | null;
  private readonly store: WorkerStore;
  private readonly usage: UsageSampler | null;
  private readonly health: HealthMonitor;
  private addr: string | null = null;
  private unwatch: (() => void)[] = [];
  private started = false;
  private closed = false;
  private unlock: (() => void) | null = null;
  /** Node credential from the leader's `welcome` (kept in <stateDir>/credential, mode 0600). */
  private credential: string | null = null;
  /**
   * The cluster id from the last `welcome` (kept in <stateDir>/cluster-id): scoped drivers
   * (docker) touch nothing until it is known. See `rescope`.
   */
  private clusterId: string | null = null;
  /** Settles when the scoped drivers follow `clusterId`; task operations wait for it. */
  private scopeReady: Promise<void> = Promise.resolve();
  /** Why the worker gave up, if it did (see `onFatal`). */
  fatalError: FlotillaError | null = null;
  /** The routing mesh (mesh.ts): ingress ports served on this worker's listen address. */
  readonly mesh: RoutingMesh;

  constructor(opts: WorkerAgentOptions) {
    if (!/^[a-z0-9][a-z0-9_-]{0,62}$/.test(opts.id)) {
      throw new FlotillaError('bad_request', `Cannot start worker as 'id' must be 1-63 lowercase letters, digits, '-' or '_' (got '${opts.id}')`);
    }
    if (opts.managers.length === 0) throw new FlotillaError('bad_request', "Cannot start worker as 'managers' must list at least one host:port");
    if (opts.token.length === 0) throw new FlotillaError('bad_request', "Cannot start worker as 'token' must be a non-empty string");
    if (opts.drivers.length === 0) throw new FlotillaError('bad_request', "Cannot start worker as 'drivers' must have at least one driver");
    this.id = opts.id;
    this.opts = opts;
    this.log = opts.log ?? silentLogger;
    for (const d of opts.drivers) {
      if (this.drivers.has(d.name)) throw new FlotillaError('bad_request', `Cannot start worker as driver '${d.name}' is given twice`);
      this.drivers.set(d.name, d);
    }
    this.resources = {
      cpu: opts.resources?.cpu ?? os.cpus().length * 1000,
      memory: opts.resources?.memory ?? os.totalmem(),
    };
    this.stopGraceMs = opts.stopGraceMs ?? 10_000;
    this.store = opts.store ?? fileStore(opts.stateDir);
    const backoffMinMs = opts.backoffMinMs ?? 100;
    this.retainFinished = Math.max(0, opts.retainFinished ?? 50);
    this.retainFinishedMs = Math.max(0, opts.retainFinishedMs ?? 3_600_000);
    this.sessions = new SessionClient(
      {
        register: () => this.registerMsg(),
        welcomed: (s, msg) => this.onWelcome(s, msg),
        established: () => this.reporter.flush(),
        assignments: (s, tasks, extra) => this.applyAssignments(s, tasks, extra),
        endpoints: (ports, names) => {
          this.mesh.update(ports);
          opts.dns?.update(ports, names);
        },
      },
      {
        managers: opts.managers,
        token: opts.token,
        tls: opts.tls,
        log: this.log,
        backoffMinMs,
        backoffMaxMs: Math.max(backoffMinMs, opts.backoffMaxMs ?? 5000),
        welcomeTimeoutMs: opts.welcomeTimeoutMs ?? 10_000,
        huntStaggerMs: Math.max(10, opts.huntStaggerMs ?? 300),
        dial: opts.dial,
        timers: opts.timers,
        random: opts.random,
      },
    );
    this.reporter = new StatusReporter({
      batchMs: opts.statusBatchMs ?? 50,
      timers: opts.timers,
      closed: () => this.closed,
      channel: () => {
        const s = this.sessions.established;
        return s === null ? null : (reports) => this.sessions.send(s, { t: 'status', reports });
      },
    });
    const usageMs = opts.usageIntervalMs ?? DEFAULT_USAGE_INTERVAL_MS;
    this.usage =
      usageMs > 0
        ? new UsageSampler({
            intervalMs: Math.max(100, usageMs),
            drivers: opts.drivers,
            log: this.log,
            channel: () => {
              const s = this.sessions.established;
              return s === null ? null : (msg) => this.sessions.send(s, msg);
            },
          })
        : null;
    this.health = new HealthMonitor({
      onChange: (taskId, attempt, h) => {
        const t = this.tasks.get(taskId);
        if (t === undefined || t.attempt !== attempt) return;
        t.health = h;
        this.reporter.queue(reportOf(t));
      },
      onUnhealthy: (taskId, attempt, reason) => void this.enqueue(taskId, () => this.stopUnhealthy(taskId, attempt, reason)),
      timers: opts.timers,
    });
    this.mesh = new RoutingMesh({ host: listenHost(opts.listen), log: this.log, ...(opts.meshStallTimeoutMs !== undefined ? { stallTimeoutMs: opts.meshStallTimeoutMs } : {}) });
    this.http = opts.http === false ? null : new WorkerHttpServer(
      {
        id: this.id,
        health: () => {
          const st = this.status();
          return { connected: st.connected, manager: st.manager, tasks: st.tasks.length };
        },
        taskDriver: (taskId) => (this.tasks.get(taskId) ?? this.retired.get(taskId))?.driver,
        attemptLogs: (taskId, attempt, o) => this.attemptLogs(taskId, attempt, o),
        credential: () => this.credential,
      },
      { listen: opts.listen, advertise: opts.advertise, tls: opts.tls, token: opts.token, log: this.log },
    );
  }

  // ---------------------------------------------------------------------------------------------
  // Lifecycle

  /** Lock the state dir, adopt the drivers' tasks, start the HTTP server and the session loop. */
  async start(): Promise<void> {
    if (this.started) throw new FlotillaError('conflict', 'Cannot start the worker agent as it was already started');
    this.started = true;
    this.unlock = this.store.lock();
    try {
      this.retiredOnDisk = this.store.loadRetired();
      this.credential = this.store.loadCredential();
      this.clusterId = this.store.loadClusterId();
      for (const d of this.drivers.values()) this.unwatch.push(d.watch((s) => this.onDriverEvent(d, s)));
      for (const d of this.drivers.values()) {
        if (d.setCluster !== undefined) {
          // A scoped driver waits for the cluster id: the one kept from an earlier session
          // (then a second live worker with this node id makes start() fail), else the welcome.
          if (this.clusterId === null) continue;
          await d.setCluster(this.clusterId);
        }
        for (const s of await d.list()) this.onDriverEvent(d, s);
      }
      this.retiredOnDisk.clear();
      this.saveRetired();
      this.pruneTimer = (this.opts.timers ?? unrefTimers).every(Math.min(60_000, Math.max(1000, this.retainFinishedMs / 4)), () => this.prune());
      this.prune();
      this.addr = this.http !== null ? await this.http.listen() : (this.opts.advertise ?? '');
    } catch (e) {
      await this.close();
      throw toFlotillaError(e);
    }
    this.log.info('worker started', { id: this.id, addr: this.addr, tasks: this.tasks.size, managers: this.sessions.managers });
    this.sessions.start();
    this.usage?.start();
  }

  /** Stop the session and the HTTP server. Tasks keep running (a restarted worker adopts them). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.sessions.stop();
    this.usage?.stop();
    this.reporter.close();
    this.health.close();
    if (this.pruneTimer !== null) this.pruneTimer();
    this.pruneTimer = null;
    for (const u of this.unwatch.splice(0)) u();
    await this.http?.close();
    await this.mesh.close();
    await this.opts.dns?.close();
    await this.sessions.done();
    for (const d of this.drivers.values()) await d.close().catch((e) => this.log.warn('driver close failed', { driver: d.name, error: errMessage(e) }));
    await Promise.allSettled([...this.queues.values()]);
    this.unlock?.();
    this.unlock = null;
    this.log.info('worker closed', { id: this.id });
  }

  status(): AgentStatus {
    const s = this.sessions.current;
    return {
      id: this.id,
      connected: s !== null && s.welcomed && !s.ended,
      manager: s !== null && !s.ended ? s.target : null,
      sessionId: s !== null && s.welcomed && !s.ended ? s.sessionId : null,
      term: s !== null && s.welcomed && !s.ended ? s.term : null,
      managers: this.sessions.managers,
      addr: this.addr,
      sessions: this.sessions.sessions,
      tasks: [...this.tasks.values()].map(view),
      retired: [...this.retired.values()].map(view),
      clusterId: this.clusterId,
    };
  }

  /** The address the HTTP server listens on (after start). */
  get httpAddress(): string | null {
    return this.addr;
  }

  private saveRetired(): void {
    try {
      this.store.saveRetired(this.retired.values());
    } catch (e) {
      this.log.warn('cannot save the retired task list', { error: errMessage(e) });
    }
  }

  /** Move a finished task out of the reported set; its logs stay for a while. */
  private retire(t: AgentTask): void {
    if (this.tasks.get(t.taskId) === t) this.tasks.delete(t.taskId);
    this.retired.set(t.taskId, { ...t, retiredAt: monoNow(), retiredWall: wallNow() });
    this.saveRetired();
    this.prune();
  }

  /** Remove retired tasks beyond the count or age limits. */
  private prune(): void {
    if (this.closed) return;
    const now = monoNow();
    const list = [...this.retired.values()].sort((a, b) => a.retiredAt - b.retiredAt);
    const excess = list.length - this.retainFinished;
    list.forEach((r, i) => {
      if (i < excess || now - r.retiredAt >= this.retainFinishedMs) void this.enqueue(r.taskId, () => this.purge(r.taskId).then(() => dropPrevious(this.opts.stateDir, r.taskId)));
    });
  }

  /** Remove a retired task for good (driver state and logs). */
  private async purge(taskId: string): Promise<void> {
    const r = this.retired.get(taskId);
    if (r === undefined) return;
    await r.driver?.remove(taskId);
    if (this.retired.get(taskId) === r) this.retired.delete(taskId);
    this.saveRetired();
    this.log.debug('removed retired task', { taskId });
  }

  // ---------------------------------------------------------------------------------------------
  // What a session carries

  /** A new session's `register`: every task, retired ones included (see below). */
  private registerMsg(): RegisterMsg {
    // Retired tasks too: their final state may not have been committed before the last
    // session ended (a leader change), and the manager ignores what it already knows.
    const tasks = [...this.tasks.values(), ...[...this.retired.values()].filter((r) => !this.tasks.has(r.taskId))].map((t) => reportOf(t));
    for (const r of tasks) this.reporter.drop(r.taskId); // register carries them
    return {
      t: 'register',
      nodeId: this.id,
      token: this.opts.token,
      ...(this.credential !== null ? { credential: this.credential } : {}),
      addr: this.addr ?? '',
      labels: { ...(this.opts.labels ?? {}) },
      resources: { ...this.resources },
      drivers: [...this.drivers.keys()],
      version: WORKER_VERSION,
      // The routing mesh needs real sockets: a worker without its HTTP server (a simulated one) takes no table.
      ...(this.opts.http !== false ? { features: this.opts.dns !== undefined ? [MESH_FEATURE, NAMES_FEATURE] : [MESH_FEATURE] } : {}),
      tasks,
    };
  }

  /** A manager welcomed this worker: keep the credential, follow the cluster id. */
  private onWelcome(_s: Session, msg: WelcomeIn): void {
    this.reportedGone = new Set();
    if (typeof msg.credential === 'string' && msg.credential.length > 0 && msg.credential.length <= 256) this.saveCredential(msg.credential);
    const cid = typeof msg.clusterId === 'string' ? msg.clusterId : this.fallbackClusterId();
    if (cid !== this.clusterId) {
      const prev = this.scopeReady;
      this.scopeReady = prev.then(() => this.rescope(cid));
    }
  }

  /**
   * A manager of an older version sends no cluster id: use one derived from what this worker
   * already holds of the cluster — the CA certificate with TLS, else the join token.
   */
  private fallbackClusterId(): string {
    const tls = this.opts.tls;
    const basis = tls ? `ca:${tls.ca}` : `token:${this.opts.token}`;
    return (tls ? 'c-' : 't-') + createHash('sha256').update(basis).digest('hex').slice(0, 24);
  }

  /**
   * Follow a new cluster id: keep it, scope the drivers to it (a driver that served another
   * cluster forgets that cluster's tasks here without stopping them), list what they have of
   * this cluster, and reconcile those tasks with the assignments already received.
   */
  private async rescope(cid: string): Promise<void> {
    if (this.closed || cid === this.clusterId) return;
    const old = this.clusterId;
    this.clusterId = cid;
    try {
      this.store.saveClusterId(cid);
    } catch (e) {
      this.log.warn('cannot save the cluster id', { error: errMessage(e) });
    }
    if (old !== null) this.log.warn('the cluster id changed: tasks of the old cluster are left alone', { from: old, to: cid });
    else this.log.info('cluster id known', { clusterId: cid });
    const found = new Set<string>();
    for (const d of this.drivers.values()) {
      if (d.setCluster === undefined) continue;
      if (old !== null) {
        for (const [id, t] of this.tasks) {
          if (t.driver !== d) continue;
          this.tasks.delete(id);
          this.reporter.drop(id);
        }
        for (const [id, r] of this.retired) if (r.driver === d) this.retired.delete(id);
      }
      try {
        await d.setCluster(cid);
        for (const s of await d.list()) {
          if (!this.tasks.has(s.taskId) && !this.retired.has(s.taskId)) found.add(s.taskId);
          this.onDriverEvent(d, s);
        }
      } catch (e) {
        const err = toFlotillaError(e);
        if (err.code === 'conflict') {
          this.fail(err);
          return;
        }
        this.log.error('cannot scope a driver to the cluster; its tasks are not reported', { driver: d.name, error: err.message });
      }
    }
    if (this.desired !== null) {
      for (const id of found) {
        if (this.reconcileQueued.has(id)) continue;
        this.reconcileQueued.add(id);
        void this.enqueue(id, () => {
          this.reconcileQueued.delete(id);
          return this.reconcile(id);
        });
      }
    }
  }

  /** Give up: log, tell the owner, close. Tasks are left as they are. */
  private fail(e: FlotillaError): void {
    if (this.fatalError !== null || this.closed) return;
    this.fatalError = e;
    this.log.error(e.message);
    this.opts.onFatal?.(e);
    void this.close();
  }

  private saveCredential(c: string): void {
    if (c === this.credential) return;
    this.credential = c;
    try {
      this.store.saveCredential(c);
    } catch (e) {
      this.log.warn('cannot save the node credential; it is kept in memory only', { error: errMessage(e) });
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Tasks

  private onDriverEvent(d: Driver, s: DriverTaskStatus): void {
    if (this.closed) return;
    const r = this.retired.get(s.taskId);
    if (r !== undefined) {
      r.status = s;
      r.driver = d;
      return;
    }
    const retiredWall = this.retiredOnDisk.get(s.taskId);
    if (retiredWall !== undefined && isFinished(s.state) && !this.tasks.has(s.taskId)) {
      // A wall time from a previous process: its age by the wall clock, bounded to
      // [0, retention] so a stepped clock neither purges it at once nor keeps it for ever.
      const age = Math.min(this.retainFinishedMs, Math.max(0, wallNow() - retiredWall));
      this.retired.set(s.taskId, { taskId: s.taskId, attempt: s.attempt ?? 1, driver: d, status: s, retiredAt: monoNow() - age, retiredWall });
      return;
    }
    let t = this.tasks.get(s.taskId);
    if (t === undefined) {
      t = { taskId: s.taskId, attempt: s.attempt ?? 1, driver: d, status: s };
      this.tasks.set(s.taskId, t);
    } else {
      if (t.driver !== null && t.driver !== d) {
        this.log.warn('two drivers report the same task; keeping the first', { taskId: s.taskId, first: t.driver.name, second: d.name });
        return;
      }
      t.driver = d;
      t.status = s;
      if (s.attempt !== undefined) t.attempt = s.attempt;
      // Stopped because its health check failed: the attempt failed.
      if (t.healthFailure !== undefined && isFinished(s.state)) t.status = { ...s, state: 'failed', reason: t.healthFailure };
    }
    this.syncHealth(t);
    this.reporter.queue(reportOf(t));
  }

  /** Probe a running task that has a check; stop probing one that is not running (health.ts). */
  private syncHealth(t: AgentTask, adopted = false): void {
    if (t.check !== undefined && t.driver !== null && t.status.state === 'running' && t.desired !== 'shutdown' && t.healthFailure === undefined) {
      this.health.watch(t.taskId, t.attempt, t.check.check, probeFor(t.driver, t.taskId, t.check), { startedAt: t.status.startedAt, adopted });
    } else {
      this.health.unwatch(t.taskId);
    }
  }

  /** Its health check failed `retries` times: stop the task; it is reported failed with `reason`. */
  private async stopUnhealthy(taskId: string, attempt: number, reason: string): Promise<void> {
    const t = this.tasks.get(taskId);
    if (t === undefined || t.attempt !== attempt || t.driver === null || isFinished(t.status.state)) return;
    t.healthFailure = reason;
    this.log.warn('task unhealthy: stopping it', { taskId, attempt, reason });
    await t.driver.stop(taskId, this.stopGraceMs);
    const st = await t.driver.inspect(taskId);
    if (st !== null && this.tasks.get(taskId) === t) this.onDriverEvent(t.driver, st);
  }

  /** Run `fn` after every earlier operation on the same task (start/stop/remove never interleave). */
  private enqueue(taskId: string, fn: () => Promise<void>): Promise<void> {
    const prev = this.queues.get(taskId) ?? Promise.resolve();
    const next = prev
      .then(() => (this.closed ? undefined : fn()))
      .catch((e) => this.log.error('task operation failed', { taskId, error: errMessage(e) }));
    this.queues.set(taskId, next);
    void next.then(() => {
      if (this.queues.get(taskId) === next) this.queues.delete(taskId);
    });
    return next;
  }

  /** Record a task this worker cannot run (bad spec, missing driver) as failed. */
  private failLocally(taskId: string, attempt: number, reason: string): void {
    const now = wallNow();
    const t: AgentTask = { taskId, attempt, driver: null, status: { taskId, attempt, state: 'failed', reason, finishedAt: now }, desired: 'running' };
    this.tasks.set(taskId, t);
    this.log.warn('cannot run task', { taskId, reason });
    this.reporter.queue(reportOf(t));
  }

  /**
   * Deletes this node's copy of a removed volume. The leader lists it once the tasks that used
   * it ended, but the engine may still see their containers stop for a moment: a refusal is
   * tried again (every 2 s, 15 times) while the leader still lists the volume.
   */
  private dropVolume(d: Driver, name: string, attempt: number): void {
    if (d.removeVolume === undefined || this.closed) return;
    d.removeVolume(name).then(
      () => this.log.info('volume removed', { volume: name, driver: d.name }),
      (e) => {
        const again = attempt < 15 && this.volumeDrops.includes(name);
        this.log.warn('cannot remove volume', { volume: name, driver: d.name, error: errMessage(e), retry: again });
        if (again) (this.opts.timers ?? unrefTimers).after(2000, () => this.volumeDrops.includes(name) && this.dropVolume(d, name, attempt + 1));
      },
    );
  }

  /**
   * A complete assignment set arrived: reconcile every task it names, every task this worker
   * has, and every task with an operation in flight (a start still queued must not survive a
   * set that no longer names it). One reconcile per task is queued at a time; it reads the
   * latest set when it runs, so bursts of assignments coalesce.
   */
  private applyAssignments(s: Session, assigned: AssignedTaskIn[], extra: { secrets: DeliveredSecret[]; dropVolumes: string[] } = { secrets: [], dropVolumes: [] }): void {
    // The secrets of this frame replace the last frame's (held in memory only, never logged).
    this.secrets = new Map(extra.secrets.map((x) => [x.name, x.data]));
    // A name the leader no longer lists (used here again since) may be dropped again later.
    for (const name of this.droppedVolumes) if (!extra.dropVolumes.includes(name)) this.droppedVolumes.delete(name);
    this.volumeDrops = extra.dropVolumes;
    for (const name of extra.dropVolumes) {
      if (this.droppedVolumes.has(name)) continue;
      this.droppedVolumes.add(name);
      for (const d of this.drivers.values()) this.dropVolume(d, name, 1);
    }
    const set = new Map<string, AssignedTaskIn>();
    for (const a of assigned) if (!set.has(a.taskId)) set.set(a.taskId, a); // first one wins
    this.desired = set;
    s.assignments++;
    for (const id of new Set([...set.keys(), ...this.tasks.keys(), ...this.queues.keys()])) {
      if (this.reconcileQueued.has(id)) continue;
      this.reconcileQueued.add(id);
      void this.enqueue(id, () => {
        this.reconcileQueued.delete(id);
        return this.reconcile(id);
      });
    }
  }

  private async reconcile(taskId: string): Promise<void> {
    await this.scopeReady;
    if (this.closed) return;
    const a = this.desired?.get(taskId);
    const t = this.tasks.get(taskId);
    if (a === undefined) {
      if (t !== undefined) await this.dropTask(taskId, 'not assigned to this worker');
      return;
    }
    if (a.desired === 'shutdown') {
      if (t !== undefined) {
        t.desired = 'shutdown';
        await this.dropTask(a.taskId, 'desired shutdown');
        if (t.attempt === a.attempt) return; // its final state was reported
      }
      // That attempt does not run here (any more): say so once per session, so the manager
      // can settle a task this worker never ran, or whose final report it missed.
      const key = `${a.taskId}#${a.attempt}`;
      if (this.reportedGone.has(key)) return;
      this.reportedGone.add(key);
      const r = this.retired.get(a.taskId);
      this.reporter.queue(
        r !== undefined && r.attempt === a.attempt
          ? reportOf(r)
          : { taskId: a.taskId, attempt: a.attempt, state: 'stopped', reason: 'not running on this worker', at: wallNow() },
      );
      return;
    }

    if (t !== undefined) {
      if (a.attempt === t.attempt) {
        t.desired = 'running';
        if (t.check === undefined && t.healthFailure === undefined && isRecord(a.spec) && a.spec.health !== undefined) {
          // Adopted (a restarted worker): its check comes with the assignment.
          try {
            t.check = taskCheckOf(parseTaskSpec(a.spec, { allowHostMounts: true }));
            this.syncHealth(t, true);
          } catch {
            // an invalid spec: it ran before, keep it running without a check
          }
        }
        return; // running, starting, or finished (stays reported until the manager drops it)
      }
      if (a.attempt < t.attempt) {
        this.log.warn('ignoring a stale assignment', { taskId: a.taskId, assigned: a.attempt, local: t.attempt });
        return;
      }
      await this.dropTask(a.taskId, `attempt ${a.attempt} replaces attempt ${t.attempt}`);
    }
    const old = this.retired.get(a.taskId);
    if (old !== undefined) {
      if (old.attempt > a.attempt) {
        this.log.warn('ignoring a stale assignment', { taskId: a.taskId, assigned: a.attempt, retired: old.attempt });
        return;
      }
      await this.keepPrevious(old);
      await this.purge(a.taskId); // same id again: the new run replaces the old one's files
    }

    let spec: TaskSpec;
    try {
      spec = parseTaskSpec(a.spec, { allowHostMounts: true, action: `run task '${a.taskId}'` });
    } catch (e) {
      this.failLocally(a.taskId, a.attempt, `invalid spec: ${errMessage(e)}`);
      return;
    }
    const driver = this.drivers.get(spec.driver);
    if (driver === undefined) {
      this.failLocally(a.taskId, a.attempt, `driver '${spec.driver}' is not available on worker ${this.id} (it has ${[...this.drivers.keys()].join(', ')})`);
      return;
    }
    // The entry first, so the driver's first events (and reports) carry desired and attempt.
    const entry: AgentTask = { taskId: a.taskId, attempt: a.attempt, driver, status: { taskId: a.taskId, attempt: a.attempt, state: 'starting' }, desired: 'running', check: taskCheckOf(spec) };
    this.tasks.set(a.taskId, entry);
    this.log.info('starting task', { taskId: a.taskId, attempt: a.attempt, name: spec.name, driver: driver.name });
    const { secrets, missing } = secretsForTask(spec.secrets ?? [], this.secrets);
    if (missing.length > 0) {
      this.tasks.delete(a.taskId);
      this.failLocally(a.taskId, a.attempt, `secret${missing.length > 1 ? 's' : ''} ${missing.map((n) => `'${n}'`).join(', ')} not delivered by the leader (it cannot open ${missing.length > 1 ? 'them' : 'it'}; see its log)`);
      return;
    }
    try {
      const publish = Array.isArray(a.publish) ? a.publish.filter((p) => Number.isInteger(p) && p > 0 && p <= 65535) : [];
      await this.startTurn(() => driver.start(a.taskId, spec, undefined, { attempt: a.attempt, secrets, ...(publish.length > 0 ? { publish } : {}) }));
    } catch (e) {
      if (this.tasks.get(a.taskId) === entry) this.tasks.delete(a.taskId);
      this.failLocally(a.taskId, a.attempt, `failed to start: ${errMessage(e)}`);
      return;
    }
    const st = await driver.inspect(a.taskId);
    if (st !== null && this.tasks.get(a.taskId) === entry) {
      entry.status = st;
      this.reporter.queue(reportOf(entry));
    }
  }

  /**
   * Starts take turns: at most START_CONCURRENCY at once, each after a full turn of the event
   * loop. A burst of assignments (a worker given 20 tasks at once) otherwise runs every start's
   * synchronous part (spawns, files) back to back, and on a loaded machine the heartbeat timer
   * waits behind them long enough for the leader to declare a healthy worker down.
   */
  private async startTurn<T>(fn: () => Promise<T>): Promise<T> {
    while (this.startsInFlight >= START_CONCURRENCY) await new Promise<void>((r) => this.startWaiters.push(r));
    this.startsInFlight++;
    try {
      await new Promise<void>((r) => (this.opts.timers ?? nodeTimers).after(0, r)); // timers (heartbeats) run first
      return await fn();
    } finally {
      this.startsInFlight--;
      this.startWaiters.shift()?.();
    }
  }
  private startsInFlight = 0;
  private readonly startWaiters: (() => void)[] = [];

  /** Copy a run's output aside before a new attempt replaces it (previous-logs.ts). */
  private async keepPrevious(r: AgentTask): Promise<void> {
    if (r.driver === null) return;
    try {
      await savePrevious(this.opts.stateDir, r.taskId, r.attempt, r.driver.logs(r.taskId, { timestamps: true }));
    } catch (e) {
      this.log.warn('cannot keep the previous attempt\'s output', { taskId: r.taskId, error: errMessage(e) });
    }
  }

  /** One attempt's output: the run here (live or retired) if it is that attempt, else the copy kept of it. */
  private attemptLogs(taskId: string, attempt: number, o: LogOptions): AsyncIterable<LogLine> | undefined {
    const t = this.tasks.get(taskId) ?? this.retired.get(taskId);
    if (t !== undefined && t.attempt === attempt && t.driver !== null) return t.driver.logs(taskId, o);
    const kept = readPrevious(this.opts.stateDir, taskId, attempt, o);
    if (kept === undefined) return undefined;
    return (async function* () {
      yield* kept;
    })();
  }

  /** Stop (if running) and retire a task. */
  private async dropTask(taskId: string, why: string): Promise<void> {
    const t = this.tasks.get(taskId);
    if (t === undefined) return;
    this.health.unwatch(taskId);
    if (!isFinished(t.status.state) && t.driver !== null) {
      this.log.info('stopping task', { taskId, why });
      await t.driver.stop(taskId, this.stopGraceMs);
      const st = await t.driver.inspect(taskId);
      if (st !== null) {
        t.status = st;
        this.reporter.queue(reportOf(t));
      }
    }
    if (this.closed) return;
    this.log.info('retiring task', { taskId, why, state: t.status.state });
    this.retire(t);
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function view(t: AgentTask): AgentTaskView {
  const v: AgentTaskView = { ...t.status, attempt: t.attempt, driver: t.driver?.name ?? null };
  if (t.desired !== undefined) v.desired = t.desired;
  return v;
}
