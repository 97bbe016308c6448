// The worker agent: follows the leader over the session protocol and runs what it assigns
// (design principles 6, 8, 10; swarmkit agent/session.go).
//
// Session discipline (src/manager/dispatch-protocol.ts):
//  * One session = one WebSocket to `ws://<manager>/v1/worker` and one `register` (carrying
//    every task the worker has, as its drivers see them). `redirect` → connect to the leader
//    (or the next manager when the leader is unknown); `welcome` → heartbeat every
//    `heartbeatMs` and report status; `reject` → log and retry later.
//  * ANY error ends the session: socket error/close, a malformed or unexpected frame, no
//    welcome in time, no pong to our WebSocket pings for a while (a frozen manager).
//  * Finding the leader is a race, not a queue: the agent opens a session attempt to one
//    manager, then another every `huntStaggerMs` (300 ms) while none has answered the
//    connection (a connected manager is waited for: it redirects or welcomes), and at
//    once to any leader a `redirect` names; the first `welcome` wins and ends the others. A
//    frozen manager (SIGSTOP: its kernel accepts the connection, nobody answers) thus costs
//    one stagger step, not a handshake timeout, and the worker reaches a new leader well
//    within the leader's failover grace. Only when every manager failed does the agent back
//    off (capped exponential with jitter, 100 ms → 5 s) before the next round; after losing
//    a welcomed session it hunts again at once. All timing is on the monotonic clock.
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
//
// The agent also serves a small HTTP API on `listen` (see `handleHttp`):
//   GET /healthz                          → 200 {"ok":true,…} (no auth)
//   GET /v1/tasks/:id/logs?follow=1&container=c0&stream=stdout&tail=N&format=text|ndjson
//       with `authorization: Bearer <join token>`. Text format: one line per output line,
//       `<container> | <line>` — raw `<line>` when `container` is given. ndjson: one
//       {"container","stream","line"} object per line. `follow` streams until the task
//       finishes or the client goes away.

import { timingSafeEqual, createHash } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { TLSSocket } from 'node:tls';
import { expectServer, identityOf, type NodeTls } from '../tls/pki.js';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { WebSocket } from 'ws';
import {
  MAX_SESSION_FRAME,
  SESSION_PATH,
  type RegisterMsg,
  type TaskStatusReport,
  type WorkerResources,
} from '../protocol/session.js';
import { FlotillaError, toFlotillaError } from '../protocol/errors.js';
import { silentLogger, type Logger } from '../log.js';
import { parseTaskSpec, type TaskSpec } from '../protocol/spec.js';
import { isFinished, type Driver, type DriverTaskStatus, type LogLine } from './driver.js';
import { readProcStat } from './drivers/process.js';
import { decodeSessionFrame, encodeSessionFrame, parseManagerMessage, type AssignedTaskIn, type ManagerMessage } from '../protocol/frames.js';
import { monoNow } from '../clock.js';

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
  /**
   * Called when the worker cannot go on (e.g. another live worker of its cluster holds its
   * node id on the Docker engine); the agent closes itself. The CLI exits with the message.
   */
  onFatal?: (e: FlotillaError) => void;
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
}

interface RetiredTask extends AgentTask {
  /** When it was retired, on `monoNow()`: its age decides when it is purged. */
  retiredAt: number;
  /** The same moment in wall ms: what retired.json keeps for a successor process. */
  retiredWall: number;
}

interface Session {
  n: number;
  target: string;
  ws: WebSocket;
  welcomed: boolean;
  sessionId: string | null;
  term: number | null;
  heartbeatMs: number;
  /** Monotonic ms of the last frame or pong from the manager. */
  lastHeard: number;
  timers: NodeJS.Timeout[];
  ended: boolean;
  /** `assignments` messages received in this session. */
  assignments: number;
  /** Set by a hunt: asked before a welcome is accepted. */
  onWelcome?: (s: Session) => boolean;
  end: (why: string, outcome?: Partial<SessionOutcome>) => void;
}

interface SessionHooks {
  /** The attempt exists (so the hunt can end it). */
  onStart?: (s: Session) => void;
  /** A manager welcomed this attempt: false refuses it (another attempt already won). */
  onWelcome?: (s: Session) => boolean;
}

interface SessionOutcome {
  welcomed: boolean;
  redirectTo: string | null;
  rejected: boolean;
  /** A live manager said no leader is known yet: the cluster is electing one. */
  electing?: boolean;
  why: string;
}

/** Locks held by this process (a second agent on the same dir in one process is refused too). */
const lockedDirs = new Set<string>();

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
  private readonly pending = new Map<string, TaskStatusReport>();
  /** The last complete assignment set received (null until the first one). */
  private desired: Map<string, AssignedTaskIn> | null = null;
  private readonly reconcileQueued = new Set<string>();
  private readonly retired = new Map<string, RetiredTask>();
  /** The retired list read at start, until the drivers' tasks are sorted out. */
  private retiredOnDisk = new Map<string, number>();
  private readonly retainFinished: number;
  private readonly retainFinishedMs: number;
  private pruneTimer: NodeJS.Timeout | null = null;
  /** `taskId#attempt` of unknown tasks reported stopped in the current session. */
  private reportedGone = new Set<string>();
  private readonly seeds: string[];
  private managers: string[];
  private cursor = 0;
  private readonly resources: WorkerResources;
  private readonly stopGraceMs: number;
  private readonly backoffMinMs: number;
  private readonly backoffMaxMs: number;
  private readonly statusBatchMs: number;
  private readonly welcomeTimeoutMs: number;
  private readonly tokenDigest: Buffer;
  private server: http.Server | null = null;
  private addr: string | null = null;
  private session: Session | null = null;
  /** Session attempts in flight (one welcomed at most), ended on close. */
  private readonly attempts = new Set<Session>();
  private readonly huntStaggerMs: number;
  private sessions = 0;
  private flushTimer: NodeJS.Timeout | null = null;
  private lastFlush = 0;
  private loopDone: Promise<void> | null = null;
  private readonly abort = new AbortController();
  private unwatch: (() => void)[] = [];
  private started = false;
  private closed = false;
  private lockPath: string | null = null;
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
    this.seeds = [...new Set(opts.managers)];
    this.managers = [...this.seeds];
    this.resources = {
      cpu: opts.resources?.cpu ?? os.cpus().length * 1000,
      memory: opts.resources?.memory ?? os.totalmem(),
    };
    this.stopGraceMs = opts.stopGraceMs ?? 10_000;
    this.backoffMinMs = opts.backoffMinMs ?? 100;
    this.backoffMaxMs = Math.max(this.backoffMinMs, opts.backoffMaxMs ?? 5000);
    this.statusBatchMs = opts.statusBatchMs ?? 50;
    this.welcomeTimeoutMs = opts.welcomeTimeoutMs ?? 10_000;
    this.huntStaggerMs = Math.max(10, opts.huntStaggerMs ?? 300);
    this.retainFinished = Math.max(0, opts.retainFinished ?? 50);
    this.retainFinishedMs = Math.max(0, opts.retainFinishedMs ?? 3_600_000);
    this.tokenDigest = createHash('sha256').update(opts.token).digest();
  }

  // ---------------------------------------------------------------------------------------------
  // Lifecycle

  /** Lock the state dir, adopt the drivers' tasks, start the HTTP server and the session loop. */
  async start(): Promise<void> {
    if (this.started) throw new FlotillaError('conflict', 'Cannot start the worker agent as it was already started');
    this.started = true;
    this.lock();
    try {
      this.retiredOnDisk = this.loadRetired();
      this.credential = this.loadCredential();
      this.clusterId = this.loadClusterId();
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
      this.pruneTimer = setInterval(() => this.prune(), Math.min(60_000, Math.max(1000, this.retainFinishedMs / 4)));
      this.pruneTimer.unref();
      this.prune();
      await this.listen();
    } catch (e) {
      await this.close();
      throw toFlotillaError(e);
    }
    this.log.info('worker started', { id: this.id, addr: this.addr, tasks: this.tasks.size, managers: this.managers });
    this.loopDone = this.loop();
  }

  /** Stop the session and the HTTP server. Tasks keep running (a restarted worker adopts them). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.abort.abort();
    this.session?.end('worker closing');
    for (const a of [...this.attempts]) a.end('worker closing');
    if (this.flushTimer !== null) clearTimeout(this.flushTimer);
    this.flushTimer = null;
    if (this.pruneTimer !== null) clearInterval(this.pruneTimer);
    this.pruneTimer = null;
    for (const u of this.unwatch.splice(0)) u();
    if (this.server !== null) {
      const server = this.server;
      await new Promise<void>((res) => {
        server.close(() => res());
        server.closeAllConnections();
      });
    }
    await this.loopDone;
    for (const d of this.drivers.values()) await d.close().catch((e) => this.log.warn('driver close failed', { driver: d.name, error: errMessage(e) }));
    await Promise.allSettled([...this.queues.values()]);
    this.unlock();
    this.log.info('worker closed', { id: this.id });
  }

  status(): AgentStatus {
    const s = this.session;
    return {
      id: this.id,
      connected: s !== null && s.welcomed && !s.ended,
      manager: s !== null && !s.ended ? s.target : null,
      sessionId: s !== null && s.welcomed && !s.ended ? s.sessionId : null,
      term: s !== null && s.welcomed && !s.ended ? s.term : null,
      managers: [...this.managers],
      addr: this.addr,
      sessions: this.sessions,
      tasks: [...this.tasks.values()].map(view),
      retired: [...this.retired.values()].map(view),
      clusterId: this.clusterId,
    };
  }

  private loadRetired(): Map<string, number> {
    try {
      const raw = JSON.parse(readFileSync(join(resolve(this.opts.stateDir), 'retired.json'), 'utf8')) as unknown;
      const out = new Map<string, number>();
      if (raw !== null && typeof raw === 'object') {
        for (const [k, v] of Object.entries(raw)) if (typeof v === 'number') out.set(k, v);
      }
      return out;
    } catch {
      return new Map();
    }
  }

  private saveRetired(): void {
    const path = join(resolve(this.opts.stateDir), 'retired.json');
    try {
      const obj = Object.create(null) as Record<string, number>;
      for (const r of this.retired.values()) obj[r.taskId] = r.retiredWall;
      writeFileSync(`${path}.tmp`, JSON.stringify(obj));
      renameSync(`${path}.tmp`, path);
    } catch (e) {
      this.log.warn('cannot save the retired task list', { error: errMessage(e) });
    }
  }

  /** Move a finished task out of the reported set; its logs stay for a while. */
  private retire(t: AgentTask): void {
    if (this.tasks.get(t.taskId) === t) this.tasks.delete(t.taskId);
    this.retired.set(t.taskId, { ...t, retiredAt: monoNow(), retiredWall: Date.now() });
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
      if (i < excess || now - r.retiredAt >= this.retainFinishedMs) void this.enqueue(r.taskId, () => this.purge(r.taskId));
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

  /** The address the HTTP server listens on (after start). */
  get httpAddress(): string | null {
    return this.addr;
  }

  /**
   * One worker per state dir: `worker.lock` names the holder by pid, /proc start time and boot
   * id, so a lock left by a killed worker (or from before a reboot) is recognised as stale even
   * when its pid was reused.
   */
  private lock(): void {
    const dir = resolve(this.opts.stateDir);
    mkdirSync(dir, { recursive: true });
    const path = join(dir, 'worker.lock');
    if (lockedDirs.has(dir)) throw new FlotillaError('conflict', `Cannot start worker as its state dir ${dir} is in use by another worker in this process`);
    const me = { pid: process.pid, start: readProcStat(process.pid)?.start ?? '', boot: bootId() };
    for (let i = 0; i < 3; i++) {
      try {
        const fd = openSync(path, 'wx');
        writeSync(fd, JSON.stringify(me) + '\n');
        closeSync(fd);
        lockedDirs.add(dir);
        this.lockPath = path;
        return;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        let holder: { pid?: unknown; start?: unknown; boot?: unknown } = {};
        try {
          holder = JSON.parse(readFileSync(path, 'utf8')) as typeof holder;
        } catch {
          // unreadable or half-written: stale
        }
        const pid = typeof holder.pid === 'number' ? holder.pid : -1;
        const st = pid > 0 && holder.boot === me.boot ? readProcStat(pid) : null;
        if (st !== null && st.state !== 'Z' && st.start === holder.start) {
          throw new FlotillaError('conflict', `Cannot start worker as its state dir ${dir} is in use by process ${pid} (${path})`);
        }
        rmSync(path, { force: true }); // stale: that worker is gone
      }
    }
    throw new FlotillaError('conflict', `Cannot lock the state dir ${dir}`);
  }

  private unlock(): void {
    if (this.lockPath === null) return;
    rmSync(this.lockPath, { force: true });
    lockedDirs.delete(resolve(this.opts.stateDir));
    this.lockPath = null;
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
      const age = Math.min(this.retainFinishedMs, Math.max(0, Date.now() - retiredWall));
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
    }
    this.queueReport(this.reportOf(t));
  }

  private reportOf(t: AgentTask): TaskStatusReport {
    const s = t.status;
    const r: TaskStatusReport = { taskId: t.taskId, attempt: t.attempt, state: s.state, at: Date.now() };
    if (s.reason !== undefined) r.reason = s.reason.slice(0, 4096);
    if (s.exitCode !== undefined) r.exitCode = s.exitCode;
    if (s.detail !== undefined) r.detail = s.detail.slice(0, 4096);
    return r;
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
    const now = Date.now();
    const t: AgentTask = { taskId, attempt, driver: null, status: { taskId, attempt, state: 'failed', reason, finishedAt: now }, desired: 'running' };
    this.tasks.set(taskId, t);
    this.log.warn('cannot run task', { taskId, reason });
    this.queueReport(this.reportOf(t));
  }

  /**
   * A complete assignment set arrived: reconcile every task it names, every task this worker
   * has, and every task with an operation in flight (a start still queued must not survive a
   * set that no longer names it). One reconcile per task is queued at a time; it reads the
   * latest set when it runs, so bursts of assignments coalesce.
   */
  private applyAssignments(s: Session, assigned: AssignedTaskIn[]): void {
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
      this.queueReport(
        r !== undefined && r.attempt === a.attempt
          ? this.reportOf(r)
          : { taskId: a.taskId, attempt: a.attempt, state: 'stopped', reason: 'not running on this worker', at: Date.now() },
      );
      return;
    }

    if (t !== undefined) {
      if (a.attempt === t.attempt) {
        t.desired = 'running';
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
    const entry: AgentTask = { taskId: a.taskId, attempt: a.attempt, driver, status: { taskId: a.taskId, attempt: a.attempt, state: 'starting' }, desired: 'running' };
    this.tasks.set(a.taskId, entry);
    this.log.info('starting task', { taskId: a.taskId, attempt: a.attempt, name: spec.name, driver: driver.name });
    try {
      await this.startTurn(() => driver.start(a.taskId, spec, undefined, { attempt: a.attempt }));
    } catch (e) {
      if (this.tasks.get(a.taskId) === entry) this.tasks.delete(a.taskId);
      this.failLocally(a.taskId, a.attempt, `failed to start: ${errMessage(e)}`);
      return;
    }
    const st = await driver.inspect(a.taskId);
    if (st !== null && this.tasks.get(a.taskId) === entry) {
      entry.status = st;
      this.queueReport(this.reportOf(entry));
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
      await new Promise<void>((r) => setTimeout(r, 0)); // timers (heartbeats) run first
      return await fn();
    } finally {
      this.startsInFlight--;
      this.startWaiters.shift()?.();
    }
  }
  private startsInFlight = 0;
  private readonly startWaiters: (() => void)[] = [];

  /** Stop (if running) and retire a task. */
  private async dropTask(taskId: string, why: string): Promise<void> {
    const t = this.tasks.get(taskId);
    if (t === undefined) return;
    if (!isFinished(t.status.state) && t.driver !== null) {
      this.log.info('stopping task', { taskId, why });
      await t.driver.stop(taskId, this.stopGraceMs);
      const st = await t.driver.inspect(taskId);
      if (st !== null) {
        t.status = st;
        this.queueReport(this.reportOf(t));
      }
    }
    if (this.closed) return;
    this.log.info('retiring task', { taskId, why, state: t.status.state });
    this.retire(t);
  }

  // ---------------------------------------------------------------------------------------------
  // Status batching

  private queueReport(r: TaskStatusReport): void {
    this.pending.set(r.taskId, r);
    if (this.flushTimer !== null || this.closed) return;
    const wait = Math.max(0, this.lastFlush + this.statusBatchMs - monoNow());
    this.flushTimer = setTimeout(() => {
      this.flushTimer = null;
      this.flush();
    }, wait);
  }

  private flush(): void {
    const s = this.session;
    if (s === null || !s.welcomed || s.ended || this.pending.size === 0) return; // kept until welcomed
    const reports = [...this.pending.values()];
    this.pending.clear();
    this.lastFlush = monoNow();
    // Keep frames far below the bound: a few hundred reports per frame.
    for (let i = 0; i < reports.length; i += 500) {
      if (!this.send(s, { t: 'status', reports: reports.slice(i, i + 500) })) return;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Sessions

  /** The managers the cluster told us about, then the seeds. */
  private candidates(): string[] {
    return [...new Set([...this.managers, ...this.seeds])];
  }

  private setManagers(list: string[]): void {
    const clean = [...new Set(list.filter((m) => /^[^\s/]+:\d{1,5}$/.test(m)))];
    if (clean.length === 0) return;
    if (clean.join(',') !== this.managers.join(',')) this.log.info('managers updated', { managers: clean });
    this.managers = clean;
  }

  private backoff(failures: number): number {
    const cap = Math.min(this.backoffMaxMs, this.backoffMinMs * 2 ** Math.min(failures, 20));
    return cap / 2 + Math.random() * (cap / 2); // "equal jitter"
  }

  private async loop(): Promise<void> {
    let failures = 0;
    let electing = 0;
    let last: string | null = null;
    while (!this.closed) {
      const out = await this.hunt(last);
      if (this.closed) break;
      last = out.target;
      let delay: number;
      if (out.welcomed) {
        // Lost a working session (often: the leader died or froze): look again at once.
        failures = 0;
        electing = 0;
        delay = this.backoff(0);
      } else if (out.electing) {
        // A manager answered but the cluster is electing a leader: ask again soon, without
        // growing the backoff much — the worker must be back within the new leader's failover
        // grace (100 ms rounds for the first second or so, then at most 800 ms).
        delay = this.backoff(Math.min(3, Math.floor(electing++ / 10)));
      } else {
        // No manager could be reached (or all refused us): back off per full round.
        failures++;
        delay = this.backoff(out.rejected ? Math.max(failures, 5) : failures - 1);
      }
      this.log.debug('no session', { why: out.why, retryInMs: Math.round(delay) });
      if (delay > 0) await sleep(delay, this.abort.signal);
    }
  }

  /**
   * One round of looking for the leader: session attempts race (see the header). Resolves when
   * the welcomed session ends, or when every attempt of the round ended without a welcome.
   */
  private hunt(avoid: string | null): Promise<SessionOutcome & { target: string | null }> {
    return new Promise((done) => {
      const list = this.candidates();
      const first = this.cursor % list.length;
      this.cursor = (this.cursor + 1) % list.length;
      let order = [...list.slice(first), ...list.slice(0, first)];
      // The manager of the session just lost goes last: it may be the one that froze.
      if (avoid !== null && order.length > 1 && order.includes(avoid)) order = [...order.filter((m) => m !== avoid), avoid];
      const tried = new Set<string>();
      const live = new Set<Session>();
      let running = 0;
      let winner: Session | null = null;
      let finished = false;
      let electing = false;
      let rejected = false;
      let why = 'no manager to try';
      let lastTarget: string | null = null;
      // A manager whose connection opened answers at once (followers redirect) or after a
      // commit (the leader welcomes): wait for it rather than register twice with the same
      // leader under two addresses. Only attempts that did not even open (a frozen or dead
      // manager) make the hunt widen.
      const stagger = setInterval(() => {
        if (winner === null && ![...live].some((a) => !a.ended && a.ws.readyState === WebSocket.OPEN)) startNext();
      }, this.huntStaggerMs);
      const finish = (out: SessionOutcome & { target: string | null }): void => {
        if (finished) return;
        finished = true;
        clearInterval(stagger);
        for (const a of live) if (a !== winner) a.end('no longer needed');
        done(out);
      };
      const startNext = (): void => {
        const t = order.find((m) => !tried.has(m));
        if (t !== undefined) start(t);
      };
      const start = (target: string): void => {
        if (finished || this.closed || tried.has(target)) return;
        tried.add(target);
        running++;
        let mine: Session | null = null;
        void this.runSession(target, {
          onStart: (s) => {
            mine = s;
            live.add(s);
          },
          onWelcome: (s) => {
            if (winner !== null && winner !== s) return false;
            winner = s;
            clearInterval(stagger);
            for (const a of live) if (a !== s) a.end('another manager welcomed this worker');
            return true;
          },
        }).then((out) => {
          running--;
          if (mine !== null) live.delete(mine);
          lastTarget = target;
          if (out.welcomed && winner === mine) return finish({ ...out, target });
          if (finished) return;
          why = out.why;
          if (out.rejected) rejected = true;
          if (out.electing || out.redirectTo !== null) electing = true;
          if (winner === null) {
            if (out.redirectTo !== null && !tried.has(out.redirectTo)) start(out.redirectTo);
            else startNext();
          }
          if (running === 0 && winner === null) finish({ welcomed: false, redirectTo: null, rejected: rejected && !electing, electing, why, target: lastTarget });
        });
      };
      if (order.length === 0 || this.closed) return finish({ welcomed: false, redirectTo: null, rejected: false, why, target: null });
      start(order[0]!);
    });
  }

  private runSession(target: string, hooks: SessionHooks = {}): Promise<SessionOutcome> {
    return new Promise((resolveOutcome) => {
      const n = ++this.sessions;
      let ws: WebSocket;
      try {
        const tls = this.opts.tls;
        ws = new WebSocket(`${tls ? 'wss' : 'ws'}://${target}${SESSION_PATH}`, {
          ...(tls ? { ca: tls.ca, cert: tls.cert, key: tls.key, checkServerIdentity: expectServer() } : {}),
          maxPayload: MAX_SESSION_FRAME,
          // Short: a live manager answers the upgrade at once; a frozen one must not hold the
          // attempt (other attempts race it anyway).
          handshakeTimeout: Math.min(this.welcomeTimeoutMs, 2000),
          perMessageDeflate: false,
          headers: { authorization: `Bearer ${this.opts.token}` },
        });
      } catch (e) {
        resolveOutcome({ welcomed: false, redirectTo: null, rejected: false, why: `cannot connect: ${errMessage(e)}` });
        return;
      }
      const s: Session = {
        n,
        target,
        ws,
        welcomed: false,
        sessionId: null,
        term: null,
        heartbeatMs: 0,
        lastHeard: monoNow(),
        timers: [],
        ended: false,
        assignments: 0,
        end: () => undefined,
      };
      s.end = (why, outcome = {}) => {
        if (s.ended) return;
        s.ended = true;
        for (const t of s.timers) clearTimeout(t);
        s.timers = [];
        ws.removeAllListeners();
        ws.on('error', () => undefined);
        try {
          if (ws.readyState === WebSocket.OPEN) ws.close(1000, why.slice(0, 100));
          // A closing/connecting socket: drop it now.
          setTimeout(() => ws.terminate(), ws.readyState === WebSocket.OPEN ? 1000 : 0).unref();
        } catch {
          ws.terminate();
        }
        if (this.session === s) this.session = null;
        this.attempts.delete(s);
        const level = s.welcomed || outcome.redirectTo !== undefined ? 'info' : 'debug';
        this.log[level]('session ended', { manager: target, session: s.sessionId, why });
        resolveOutcome({ welcomed: s.welcomed, redirectTo: outcome.redirectTo ?? null, rejected: outcome.rejected ?? false, electing: outcome.electing, why });
      };
      if (this.session === null || this.session.ended) this.session = s;
      this.attempts.add(s);
      hooks.onStart?.(s);
      s.onWelcome = hooks.onWelcome;
      if (this.closed) {
        s.end('worker closing');
        return;
      }

      s.timers.push(setTimeout(() => s.end(`no answer to register within ${this.welcomeTimeoutMs} ms`), this.welcomeTimeoutMs));
      ws.on('open', () => {
        s.lastHeard = monoNow();
        // Retired tasks too: their final state may not have been committed before the last
        // session ended (a leader change), and the manager ignores what it already knows.
        const tasks = [...this.tasks.values(), ...[...this.retired.values()].filter((r) => !this.tasks.has(r.taskId))].map((t) => this.reportOf(t));
        for (const r of tasks) this.pending.delete(r.taskId); // register carries them
        const reg: RegisterMsg = {
          t: 'register',
          nodeId: this.id,
          token: this.opts.token,
          ...(this.credential !== null ? { credential: this.credential } : {}),
          addr: this.addr ?? '',
          labels: { ...(this.opts.labels ?? {}) },
          resources: { ...this.resources },
          drivers: [...this.drivers.keys()],
          version: WORKER_VERSION,
          tasks,
        };
        this.log.debug('registering', { manager: target, tasks: tasks.length });
        this.send(s, reg);
      });
      ws.on('message', (data, isBinary) => {
        if (s.ended) return;
        s.lastHeard = monoNow();
        let msg: ManagerMessage;
        try {
          if (!isBinary) throw new FlotillaError('bad_request', 'text frame (session frames are binary)');
          const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
          msg = parseManagerMessage(decodeSessionFrame(buf));
        } catch (e) {
          this.log.warn('malformed frame from manager; ending the session', { manager: target, error: errMessage(e) });
          s.end(`malformed frame: ${errMessage(e)}`);
          return;
        }
        try {
          this.onMessage(s, msg);
        } catch (e) {
          this.log.error('cannot handle a manager message; ending the session', { manager: target, t: msg.t, error: errMessage(e) });
          s.end(`cannot handle '${msg.t}': ${errMessage(e)}`);
        }
      });
      ws.on('pong', () => {
        s.lastHeard = monoNow();
      });
      ws.on('close', (code, reason) => s.end(`connection closed (${code}${reason.length > 0 ? ` ${reason.toString()}` : ''})`));
      ws.on('error', (e) => s.end(`connection error: ${errMessage(e)}`));
    });
  }

  private onMessage(s: Session, msg: ManagerMessage): void {
    switch (msg.t) {
      case 'redirect': {
        this.setManagers(msg.managers);
        const leader = msg.leader !== null && msg.leader !== s.target ? msg.leader : null;
        this.log.info('redirected', { from: s.target, leader: msg.leader });
        s.end(`redirected to ${msg.leader ?? 'no known leader'}`, { redirectTo: leader, electing: msg.leader === null });
        return;
      }
      case 'reject':
        this.log.warn('registration rejected', { manager: s.target, reason: msg.reason });
        s.end(`rejected: ${msg.reason}`, { rejected: true });
        return;
      case 'welcome': {
        if (s.welcomed) throw new Error('a second welcome in one session');
        if (s.onWelcome !== undefined && !s.onWelcome(s)) {
          s.end('another manager welcomed this worker first');
          return;
        }
        s.welcomed = true;
        this.session = s;
        s.sessionId = msg.sessionId;
        s.term = msg.term;
        s.heartbeatMs = Math.max(10, msg.heartbeatMs);
        this.setManagers(msg.managers);
        for (const t of s.timers) clearTimeout(t); // the welcome timeout
        s.timers = [];
        this.reportedGone = new Set();
        if (typeof msg.credential === 'string' && msg.credential.length > 0 && msg.credential.length <= 256) this.saveCredential(msg.credential);
        const cid = typeof msg.clusterId === 'string' ? msg.clusterId : this.fallbackClusterId();
        if (cid !== this.clusterId) {
          const prev = this.scopeReady;
          this.scopeReady = prev.then(() => this.rescope(cid));
        }
        this.log.info('session established', { manager: s.target, session: msg.sessionId, heartbeatMs: msg.heartbeatMs, term: msg.term });
        this.heartbeat(s);
        this.flush();
        return;
      }
      case 'assignments':
        if (!s.welcomed) throw new Error("'assignments' before 'welcome'");
        this.applyAssignments(s, msg.tasks);
        return;
      case 'managers':
        this.setManagers(msg.managers);
        return;
    }
  }

  /** Heartbeat every heartbeatMs; a WebSocket ping rides along, and silence ends the session. */
  private heartbeat(s: Session): void {
    const deadAfter = Math.max(4 * s.heartbeatMs, 3000);
    const tick = (): void => {
      if (s.ended) return;
      if (monoNow() - s.lastHeard > deadAfter) {
        s.end(`manager silent for ${deadAfter} ms`);
        return;
      }
      if (!this.send(s, { t: 'heartbeat' })) return;
      try {
        s.ws.ping();
      } catch {
        // the close event ends the session
      }
      s.timers.push(setTimeout(tick, s.heartbeatMs));
      if (s.timers.length > 8) s.timers.splice(0, s.timers.length - 8);
    };
    tick();
  }

  private send(s: Session, msg: Parameters<typeof encodeSessionFrame>[0]): boolean {
    if (s.ended || s.ws.readyState !== WebSocket.OPEN) return false;
    let frame: Buffer;
    try {
      frame = encodeSessionFrame(msg);
    } catch (e) {
      this.log.error('cannot encode a frame; ending the session', { error: errMessage(e) });
      s.end(`cannot encode: ${errMessage(e)}`);
      return false;
    }
    s.ws.send(frame, { binary: true }, (err) => {
      if (err) s.end(`send failed: ${errMessage(err)}`);
    });
    return true;
  }

  // ---------------------------------------------------------------------------------------------
  // HTTP: health and logs

  private async listen(): Promise<void> {
    const listen = this.opts.listen ?? '127.0.0.1:0';
    const m = /^(.*):(\d{1,5})$/.exec(listen);
    if (m === null || Number(m[2]) > 65535) throw new FlotillaError('bad_request', `Cannot start worker as 'listen' must be host:port (got '${listen}')`);
    const host = m[1]!.replace(/^\[(.*)\]$/, '$1');
    const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
      this.handleHttp(req, res).catch((e) => {
        this.log.error('http handler failed', { url: req.url, error: errMessage(e) });
        if (!res.headersSent) sendError(res, toFlotillaError(e));
        else res.destroy();
      });
    };
    const tls = this.opts.tls;
    // With TLS, log requests must come from a manager's certificate (checked per request).
    const server = tls
      ? (https.createServer({ key: tls.key, cert: tls.cert + tls.ca, ca: tls.ca, requestCert: true, rejectUnauthorized: false }, handler) as unknown as http.Server)
      : http.createServer(handler);
    this.server = server;
    await new Promise<void>((res, rej) => {
      server.once('error', rej);
      server.listen(Number(m[2]), host, () => {
        server.off('error', rej);
        res();
      });
    });
    server.on('error', (e) => this.log.error('http server error', { error: errMessage(e) }));
    const a = server.address() as AddressInfo;
    this.addr = this.opts.advertise ?? `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
    if (this.opts.advertise === undefined && (a.address === '0.0.0.0' || a.address === '::')) {
      this.addr = `${firstExternalAddress() ?? '127.0.0.1'}:${a.port}`;
    }
  }

  private authorized(req: http.IncomingMessage): boolean {
    const h = req.headers.authorization;
    if (typeof h !== 'string') return false;
    const m = /^Bearer\s+(.+)$/i.exec(h.trim());
    if (m === null) return false;
    const got = createHash('sha256').update(m[1]!).digest();
    if (timingSafeEqual(got, this.tokenDigest)) return true;
    // Managers present this node's credential (the join token may have been rotated since).
    return this.credential !== null && timingSafeEqual(got, createHash('sha256').update(this.credential).digest());
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
    this.saveClusterId(cid);
    if (old !== null) this.log.warn('the cluster id changed: tasks of the old cluster are left alone', { from: old, to: cid });
    else this.log.info('cluster id known', { clusterId: cid });
    const found = new Set<string>();
    for (const d of this.drivers.values()) {
      if (d.setCluster === undefined) continue;
      if (old !== null) {
        for (const [id, t] of this.tasks) {
          if (t.driver !== d) continue;
          this.tasks.delete(id);
          this.pending.delete(id);
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

  private loadClusterId(): string | null {
    try {
      const c = readFileSync(join(resolve(this.opts.stateDir), 'cluster-id'), 'utf8').trim();
      return /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(c) ? c : null;
    } catch {
      return null;
    }
  }

  private saveClusterId(c: string): void {
    const path = join(resolve(this.opts.stateDir), 'cluster-id');
    try {
      writeFileSync(`${path}.tmp`, c + '\n');
      renameSync(`${path}.tmp`, path);
    } catch (e) {
      this.log.warn('cannot save the cluster id', { error: errMessage(e) });
    }
  }

  private loadCredential(): string | null {
    try {
      const c = readFileSync(join(resolve(this.opts.stateDir), 'credential'), 'utf8').trim();
      return c.length > 0 ? c : null;
    } catch {
      return null;
    }
  }

  private saveCredential(c: string): void {
    if (c === this.credential) return;
    this.credential = c;
    const path = join(resolve(this.opts.stateDir), 'credential');
    try {
      writeFileSync(`${path}.tmp`, c + '\n', { mode: 0o600 });
      renameSync(`${path}.tmp`, path);
    } catch (e) {
      this.log.warn('cannot save the node credential; it is kept in memory only', { error: errMessage(e) });
    }
  }

  private async handleHttp(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://worker');
    if (url.pathname === '/healthz') {
      if (req.method !== 'GET' && req.method !== 'HEAD') return sendError(res, methodNotAllowed());
      const st = this.status();
      return sendJson(res, 200, { ok: true, id: this.id, connected: st.connected, manager: st.manager, tasks: st.tasks.length });
    }
    const m = /^\/v1\/tasks\/([^/]+)\/logs$/.exec(url.pathname);
    if (m === null) return sendError(res, new FlotillaError('not_found', `Cannot ${req.method} ${url.pathname} as there is no such route on this worker`));
    if (req.method !== 'GET') return sendError(res, methodNotAllowed());
    if (this.opts.tls) {
      const sock = req.socket as TLSSocket;
      const who = sock.authorized ? identityOf(sock.getPeerCertificate()) : null;
      if (!who || who.role !== 'manager') return sendError(res, new FlotillaError('forbidden', 'Cannot read task logs as the request does not come with a manager certificate of this cluster'));
    }
    if (!this.authorized(req)) {
      res.setHeader('www-authenticate', 'Bearer');
      return sendError(res, new FlotillaError('unauthorized', "Cannot read task logs as the request has no valid 'authorization: Bearer <join token>' header"));
    }
    let taskId: string;
    try {
      taskId = decodeURIComponent(m[1]!);
    } catch {
      return sendError(res, new FlotillaError('bad_request', 'Cannot read task logs as the task id is not valid percent-encoding'));
    }
    const q = url.searchParams;
    const bool = (name: string): boolean => {
      const v = q.get(name);
      if (v === null || v === '0' || v === 'false') return false;
      if (v === '' || v === '1' || v === 'true') return true;
      throw new FlotillaError('bad_request', `Cannot read task logs as '${name}' must be 1, 0, true or false (got '${v}')`);
    };
    let follow: boolean;
    let tail: number | undefined;
    try {
      follow = bool('follow');
      const tailRaw = q.get('tail');
      if (tailRaw !== null) {
        if (!/^\d{1,9}$/.test(tailRaw)) throw new FlotillaError('bad_request', `Cannot read task logs as 'tail' must be a whole number >= 0 (got '${tailRaw}')`);
        tail = Number(tailRaw);
      }
    } catch (e) {
      return sendError(res, toFlotillaError(e));
    }
    const stream = q.get('stream');
    if (stream !== null && stream !== 'stdout' && stream !== 'stderr') {
      return sendError(res, new FlotillaError('bad_request', `Cannot read task logs as 'stream' must be 'stdout' or 'stderr' (got '${stream}')`));
    }
    const format = q.get('format') ?? 'text';
    if (format !== 'text' && format !== 'ndjson') {
      return sendError(res, new FlotillaError('bad_request', `Cannot read task logs as 'format' must be 'text' or 'ndjson' (got '${format}')`));
    }
    const container = q.get('container') ?? undefined;
    const t = this.tasks.get(taskId) ?? this.retired.get(taskId);
    if (t === undefined || t.driver === null) {
      return sendError(res, new FlotillaError('not_found', `Cannot read the logs of task '${taskId}' as it has none on worker ${this.id}`));
    }

    const ac = new AbortController();
    const onClose = (): void => ac.abort();
    res.on('close', onClose);
    const iter = t.driver.logs(taskId, { follow, container, tail, stream: stream ?? undefined, signal: ac.signal })[Symbol.asyncIterator]();
    const fmt = (l: LogLine): string =>
      format === 'ndjson' ? JSON.stringify(l) + '\n' : container !== undefined ? `${l.line}\n` : `${l.container} | ${l.line}\n`;
    try {
      let first: IteratorResult<LogLine>;
      try {
        first = await iter.next(); // errors (unknown container…) become a proper status
      } catch (e) {
        return sendError(res, toFlotillaError(e));
      }
      res.writeHead(200, {
        'content-type': format === 'ndjson' ? 'application/x-ndjson; charset=utf-8' : 'text/plain; charset=utf-8',
        'cache-control': 'no-store',
        'x-content-type-options': 'nosniff',
      });
      res.flushHeaders();
      for (let r = first; !r.done; r = await iter.next()) {
        if (ac.signal.aborted) break;
        if (!res.write(fmt(r.value))) {
          await new Promise<void>((ok) => {
            const done = (): void => {
              res.off('drain', done);
              ac.signal.removeEventListener('abort', done);
              ok();
            };
            res.on('drain', done);
            ac.signal.addEventListener('abort', done, { once: true });
          });
        }
      }
      if (!ac.signal.aborted) res.end();
    } finally {
      res.off('close', onClose);
      await iter.return?.();
    }
  }
}

function view(t: AgentTask): AgentTaskView {
  const v: AgentTaskView = { ...t.status, attempt: t.attempt, driver: t.driver?.name ?? null };
  if (t.desired !== undefined) v.desired = t.desired;
  return v;
}

function methodNotAllowed(): FlotillaError {
  return new FlotillaError('bad_request', 'Cannot serve this request as only GET is allowed here', { httpStatus: 405 });
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

function sendError(res: http.ServerResponse, e: FlotillaError): void {
  sendJson(res, e.httpStatus, e.toJSON());
}

function bootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return '';
  }
}

function firstExternalAddress(): string | undefined {
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return undefined;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((res) => {
    if (signal.aborted) return res();
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      res();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
