// The dispatcher: worker sessions on the leader (after swarmkit's dispatcher). A worker opens
// one WebSocket to /v1/worker and registers (join token or node credential; with TLS its
// certificate must name the node); the registration and the tasks the worker reports are
// proposed together, then the worker is welcomed with its heartbeat period, the managers'
// addresses and a node credential. Afterwards it sends heartbeats and status reports; reports
// from all sessions are batched into one proposal (group commit). The full set of tasks each
// node should run is pushed to it whenever that set changes (assignments).
//
// Sessions live on the leader only: a follower redirects a registering worker to the leader,
// and every session ends when this manager stops leading (workers reconnect and are
// redirected). When each node was last heard from is kept here for the node monitor
// (controllers/node-monitor.ts), which declares silent nodes down.
import type http from 'node:http';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { createHmac, randomUUID } from 'node:crypto';
import { WebSocketServer, type WebSocket } from 'ws';
import { identityOf } from '../tls/pki.js';
import { decodeSessionFrame, encodeSessionFrame, parseUsageMessage, type UsageMessage } from '../protocol/frames.js';
import {
  MAX_SESSION_FRAME,
  SESSION_PATH,
  type AssignedTask,
  type AssignmentsMsg,
  type ManagerToWorker,
  type RegisterMsg,
  type TaskStatusReport,
  type WorkerToManager,
} from '../protocol/session.js';
import type { ApplyResult, SingleCommand, TaskReport } from './state.js';
import type { CommandProposer, LeaderService, LeaderTerm, Membership, RouteTable, StateView } from './ports.js';
import type { Logger } from '../log.js';
import { MAX_DELIVERED_SECRET_BYTES, type DeliveredSecret } from '../protocol/secrets.js';
import { checkJoin, nodeCredential, nodeEpoch, workerToken } from './auth.js';
import { monoNow, systemTimers, wallNow, type Timers } from '../clock.js';
import { reportedHealth } from './state/task-health.js';
import { reportIgnored } from './state/tasks.js';
import { meshPublish, meshTable, nameTable, reportedPorts } from './endpoints.js';
import { MESH_FEATURE, NAMES_FEATURE } from '../protocol/session.js';

export interface DispatcherOptions {
  /** Heartbeat period the leader asks workers for (ms). */
  heartbeatMs?: number;
  /** Status reports from all workers are batched into one proposal at most this often (ms). */
  reportBatchMs?: number;
}

/**
 * The cluster id a worker scopes its containers with: the cluster's own id, or for a cluster
 * that has none (made before ids existed) one derived from its secret — stable, and different
 * for clusters with different secrets (`flotilla up`/`init` make a random one per cluster).
 */
export function workerClusterId(clusterId: string | null, secret: string): string {
  return clusterId ?? 's-' + createHmac('sha256', secret).update('flotilla cluster scope v1').digest('hex').slice(0, 24);
}

/** Largest frame accepted before a session has registered (a registration with ~3,000 tasks). */
const MAX_REGISTER_FRAME = 1024 * 1024;

/**
 * One worker's end of a session as the dispatcher sees it: the WebSocket adapter below, or a
 * simulated link (src/sim/cluster). Frames from the worker go to the handle `connect` returns.
 */
export interface WorkerLink {
  send(msg: ManagerToWorker): void;
  close(code: number, reason: string): void;
}

/** What the transport tells the dispatcher about one session. */
export interface WorkerSessionHandle {
  /** A frame from the worker (binary frames carry a session message). */
  message(data: Buffer, isBinary: boolean): void;
  /** The link closed (either side). */
  closed(): void;
}

interface Session {
  id: string;
  nodeId: string;
  link: WorkerLink;
  /** Monotonic ms of the last frame from the worker. */
  lastHeartbeat: number;
  lastAssignments: string;
  heartbeatPending: boolean;
  /** Registration committed and welcome sent: only then does the worker get assignments. */
  welcomed: boolean;
  /** An invalid usage message was logged (once per session). */
  usageWarned?: boolean;
  /** The worker takes the routing mesh's table (its register listed the feature). */
  mesh: boolean;
  /** The worker also takes the services' names (its DNS server; register listed 'names'). */
  names: boolean;
  /** The table last sent in this session (JSON). */
  lastEndpoints: string;
}

export interface DispatcherDeps {
  routes: RouteTable;
  proposer: CommandProposer;
  lead: LeaderTerm;
  state: StateView;
  members: Membership;
  /** Worker sessions must present a worker certificate of the cluster CA (mutual TLS). */
  secure: boolean;
  secret: string;
  /** This manager's cluster id (told to workers at welcome). */
  clusterId: () => string | null;
  log: Logger;
  /** A node registered (or registered again): placement may have new room. */
  onRegistered?: (nodeId: string) => void;
  /** Timers (default: Node's; a simulator passes virtual ones). */
  timers?: Timers;
  /**
   * The opened values of secrets (secrets.ts): sent, once each, in the assignments frame of a
   * worker whose tasks name them, and only while those tasks should run. Throws for a secret
   * that cannot be opened (its name and why; never a value).
   */
  openSecrets?: (names: readonly string[]) => DeliveredSecret[];
  /** Where workers' `usage` messages go (usage.ts: memory only, never the log). */
  usage?: { record(nodeId: string, msg: UsageMessage): unknown };
}

export class Dispatcher implements LeaderService {
  readonly name = 'dispatcher';
  private readonly wss: WebSocketServer;
  private sessions = new Map<string, Session>();
  /** When this leader last heard from each node (monotonic ms; survives the node's session ending). */
  private lastSeen = new Map<string, number>();
  private leading = false;
  private cancels: (() => void)[] = [];
  private reports: TaskReport[] = [];
  /** Proposals carrying reports of a node that have not ended yet, by node. */
  private readonly reportsInFlight = new Map<string, number>();
  private reportsFlushing = false;
  private dirtyNodes = new Set<string>();
  private allDirty = false;
  private endpointsDirty = true;
  private unsubscribe: (() => void) | null = null;
  private readonly token: string;
  private readonly heartbeatMs: number;
  private readonly reportBatchMs: number;
  private readonly m: { proposer: CommandProposer; state: StateView; members: Membership };
  private readonly log: Logger;
  private readonly secret: string;

  constructor(
    private readonly d: DispatcherDeps,
    opts: DispatcherOptions = {},
  ) {
    this.token = workerToken(d.secret);
    this.secret = d.secret;
    this.log = d.log;
    this.m = { proposer: d.proposer, state: d.state, members: d.members };
    this.heartbeatMs = opts.heartbeatMs ?? 1000;
    this.reportBatchMs = opts.reportBatchMs ?? 100;
    this.wss = new WebSocketServer({ noServer: true, maxPayload: MAX_SESSION_FRAME });
    d.routes.upgrades.set(SESSION_PATH, (req, socket, head) => this.onUpgrade(req, socket, head));
  }

  start(): void {
    this.stop();
    this.leading = true;
    this.cancels.push(this.t.every(this.reportBatchMs, () => void this.flushReports()));
    this.cancels.push(this.t.every(50, () => this.pushAssignments()));
    this.allDirty = true;
    this.unsubscribe = this.d.state.onEvent((ev) => {
      // Any change may move a replica in or out of the routing mesh's table (sent on the next push).
      this.endpointsDirty = true;
      if (ev.type === 'task.created' || ev.type === 'task.updated' || ev.type === 'task.removed') {
        if (ev.task.node) this.dirtyNodes.add(ev.task.node);
        else this.allDirty = true;
        this.pushSoon();
      }
      if (ev.type === 'task.updated' && ev.change === 'restart') this.allDirty = true;
      // A removed volume: its nodes' workers are told to delete their copies.
      if (ev.type === 'volume.removed') {
        for (const n of ev.nodes) this.dirtyNodes.add(n);
        this.pushSoon();
      }
    });
  }

  caughtUp(): void {
    this.allDirty = true;
    this.endpointsDirty = true;
  }

  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = null;
    if (!this.leading) return;
    this.leading = false;
    for (const cancel of this.cancels) cancel();
    this.cancels = [];
    this.reports = [];
    this.lastSeen.clear();
    // Workers must follow the new leader: end every session (they reconnect and are redirected).
    for (const s of this.sessions.values()) s.link.close(4001, 'leadership changed');
    this.sessions.clear();
  }

  /** The manager closes: no more sessions. */
  close(): void {
    this.stop();
    this.wss.close();
  }

  sessionCount(): number {
    return this.sessions.size;
  }

  /** Monotonic ms when this leader last heard from the node (undefined: never, or not leading). */
  lastHeard(nodeId: string): number | undefined {
    return this.sessions.get(nodeId)?.lastHeartbeat ?? this.lastSeen.get(nodeId);
  }

  /** ms since this leader last heard from the node (null when not leading or never heard). */
  heartbeatAge(nodeId: string): number | null {
    if (!this.leading) return null;
    const t = this.lastHeard(nodeId);
    return t === undefined ? null : monoNow() - t;
  }

  /** Ends a node's session (declared down): the worker reconnects and registers again. */
  endSession(nodeId: string, code: number, reason: string): void {
    this.sessions.get(nodeId)?.link.close(code, reason);
  }

  /** This process could not run for `ms`: that time is no node's silence (see the node monitor). */
  creditStall(ms: number): void {
    const now = monoNow();
    for (const s of this.sessions.values()) s.lastHeartbeat = Math.min(now, s.lastHeartbeat + ms);
    for (const [id, t] of this.lastSeen) this.lastSeen.set(id, Math.min(now, t + ms));
  }

  // ------------------------------------------------------------------ sessions

  private onUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
    const remote = req.socket.remoteAddress ?? '?';
    let certId: string | null = null;
    if (this.d.secure) {
      // Mutual TLS: no session without a worker certificate from the cluster CA.
      const tls = req.socket as TLSSocket;
      const who = typeof tls.getPeerCertificate === 'function' && tls.authorized ? identityOf(tls.getPeerCertificate()) : null;
      if (!who || who.role !== 'worker') {
        const why = typeof tls.getPeerCertificate !== 'function' ? 'not over TLS' : !tls.authorized ? `no valid certificate (${String(tls.authorizationError ?? 'none presented')})` : 'its certificate does not name a worker';
        this.log.warn(`worker session refused: ${why}`, { remote });
        socket.end('HTTP/1.1 403 Forbidden\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
        return;
      }
      certId = who.id;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.onWebSocket(ws, remote, certId));
  }

  /** The WebSocket adapter: frames in and out of one worker's socket. */
  private onWebSocket(ws: WebSocket, remote: string, certId: string | null): void {
    const link: WorkerLink = {
      send: (msg) => {
        if (ws.readyState === ws.OPEN) ws.send(encodeSessionFrame(msg));
      },
      close: (code, reason) => ws.close(code, reason),
    };
    const h = this.connect(link, remote, certId);
    ws.on('error', () => {});
    ws.on('close', () => h.closed());
    ws.on('message', (data: Buffer, isBinary: boolean) => h.message(data, isBinary));
  }

  private get t(): Timers {
    return this.d.timers ?? systemTimers;
  }

  private send(link: WorkerLink, msg: ManagerToWorker): void {
    link.send(msg);
  }

  private managerAddrs(): string[] {
    return [...this.m.members.members().values()];
  }

  /** A worker's link opened: the session logic, whatever the transport (`WorkerLink`). */
  connect(ws: WorkerLink, remote: string, certId: string | null = null): WorkerSessionHandle {
    let session: Session | null = null;
    const clearRegisterTimeout = this.t.after(5000, () => ws.close(4002, 'no registration'));
    const closed = (): void => {
      clearRegisterTimeout();
      if (session && this.sessions.get(session.nodeId) === session) {
        this.sessions.delete(session.nodeId);
        // The grace period runs from the last sign of life, not from the disconnect.
        this.lastSeen.set(session.nodeId, session.lastHeartbeat);
      }
    };
    const message = (data: Buffer, isBinary: boolean): void => {
      let msg: WorkerToManager;
      if (!session && data.length > MAX_REGISTER_FRAME) {
        // Refused unread: decoding a crafted frame costs CPU and memory in proportion to its size.
        this.log.warn('oversized frame before registration; session closed', { remote, bytes: data.length });
        ws.close(4003, 'registration frame too large');
        return;
      }
      try {
        if (!isBinary) throw new Error('text frame');
        msg = decodeSessionFrame(data) as unknown as WorkerToManager;
        if (typeof msg !== 'object' || msg === null || typeof (msg as { t?: unknown }).t !== 'string') throw new Error('not a session message');
      } catch (e) {
        this.log.warn('malformed worker frame; session closed', { remote, err: (e as Error).message });
        ws.close(4003, 'malformed frame');
        return;
      }
      if (msg.t === 'register') {
        clearRegisterTimeout();
        if (session) {
          ws.close(4004, 'already registered');
          return;
        }
        if (certId !== null && msg.nodeId !== certId) {
          this.log.warn('worker registration refused: node id does not match its certificate', { remote, node: String(msg.nodeId), certificate: certId });
          this.send(ws, { t: 'reject', reason: `node id ${String(msg.nodeId)} does not match its certificate (${certId})` });
          ws.close(4006, 'certificate mismatch');
          return;
        }
        void this.register(ws, msg, remote).then((s) => (session = s));
        return;
      }
      if (!session) {
        ws.close(4005, 'register first');
        return;
      }
      if (msg.t === 'heartbeat') this.onHeartbeat(session);
      else if (msg.t === 'status' && Array.isArray(msg.reports)) this.onStatus(session, msg.reports);
      else if (msg.t === 'usage') this.onUsage(session, msg as unknown as Record<string, unknown>);
      // Any other type (a newer worker's) is ignored: the session goes on.
    };
    return { message, closed };
  }

  private checkRegistration(msg: RegisterMsg): string | null {
    const denied = checkJoin(this.m.state, this.secret, this.token, msg);
    if (denied) return denied;
    if (typeof msg.nodeId !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/.test(msg.nodeId)) return 'invalid node id';
    if (!msg.resources || !Number.isFinite(msg.resources.cpu) || !Number.isFinite(msg.resources.memory)) return 'invalid resources';
    if (!Array.isArray(msg.drivers) || msg.drivers.some((d) => typeof d !== 'string')) return 'invalid drivers';
    if (!Array.isArray(msg.tasks)) return 'invalid task list';
    return null;
  }

  private async register(ws: WorkerLink, msg: RegisterMsg, remote: string): Promise<Session | null> {
    const bad = this.checkRegistration(msg);
    if (bad) {
      this.log.warn(`worker registration refused: ${bad}`, { remote, node: String(msg.nodeId) });
      this.send(ws, { t: 'reject', reason: bad });
      ws.close(4006, bad);
      return null;
    }
    if (!this.leading) {
      const leader = this.m.members.leader();
      this.send(ws, { t: 'redirect', leader: leader ? (this.m.members.members().get(leader) ?? null) : null, managers: this.managerAddrs() });
      ws.close(4007, 'not the leader');
      return null;
    }
    const old = this.sessions.get(msg.nodeId);
    if (old) old.link.close(4008, 'replaced by a new session');
    const s: Session = { id: randomUUID(), nodeId: msg.nodeId, link: ws, lastHeartbeat: monoNow(), lastAssignments: '', heartbeatPending: false, welcomed: false, mesh: Array.isArray(msg.features) && msg.features.includes(MESH_FEATURE), names: Array.isArray(msg.features) && msg.features.includes(NAMES_FEATURE), lastEndpoints: '' };
    this.sessions.set(msg.nodeId, s);
    const at = wallNow();
    // Only the reports that change something go through the log: after a leader change every
    // worker registers again with every task it runs, nearly all as the state already has them.
    // The state decides that only when it is complete for this node: this term caught up (it
    // holds all the previous leader committed) and none of this node's own reports is queued
    // or in flight (an older report committed after a dropped newer one would win). Commands
    // the leader itself has in flight cannot make a dropped report matter: they move the task
    // to another attempt, node or an end, where the apply ignores the report anyway.
    const all = this.toReports(msg.nodeId, msg.tasks);
    const reports = this.stateCompleteFor(msg.nodeId) ? all.filter((r) => reportIgnored(this.m.state.getTask(r.taskId), r) === null) : all;
    const cmds: SingleCommand[] = [
      {
        type: 'node.register',
        node: { id: msg.nodeId, addr: msg.addr, labels: msg.labels ?? {}, resources: msg.resources, drivers: msg.drivers },
        at,
      },
    ];
    if (reports.length > 0) cmds.push({ type: 'task.report', reports });
    let results: unknown;
    const release = this.reportsGoing(reports.length > 0 ? [msg.nodeId] : []);
    try {
      results = await this.m.proposer.propose({ type: 'batch', commands: cmds });
    } catch (e) {
      this.log.warn('worker registration not committed; session closed', { node: msg.nodeId, err: (e as Error).message });
      ws.close(4009, 'registration failed');
      this.sessions.delete(msg.nodeId);
      return null;
    } finally {
      release();
    }
    // The batch commits even when its node.register is refused (bad labels, resources, …):
    // then there is no node to welcome.
    const registered = Array.isArray(results) ? (results[0] as ApplyResult | undefined) : undefined;
    if (!registered?.ok) {
      const reason = `invalid registration: ${registered?.error.message.slice(0, 1000) ?? 'not applied'}`;
      this.log.warn(`worker registration refused: ${reason}`, { remote, node: msg.nodeId });
      if (this.sessions.get(msg.nodeId) === s) this.sessions.delete(msg.nodeId);
      this.send(ws, { t: 'reject', reason });
      ws.close(4006, 'invalid registration');
      return null;
    }
    if (this.sessions.get(msg.nodeId) !== s) return null;
    // Jitter the heartbeat period per session so a fleet does not beat in lockstep.
    const hb = Math.round(this.heartbeatMs * (0.9 + Math.random() * 0.2));
    const credential = nodeCredential(this.secret, msg.nodeId, nodeEpoch(this.m.state));
    s.welcomed = true;
    const clusterId = workerClusterId(this.d.clusterId(), this.secret);
    this.send(ws, { t: 'welcome', sessionId: s.id, heartbeatMs: hb, managers: this.managerAddrs(), term: this.d.lead.term() ?? 0, credential, clusterId });
    this.log.info(`worker ${msg.nodeId} registered`, { tasks: msg.tasks.length, changed: reports.length, remote });
    this.dirtyNodes.add(msg.nodeId);
    this.endpointsDirty = true;
    this.d.onRegistered?.(msg.nodeId);
    return s;
  }

  /** Whether the state may judge this node's reports (see `register`). */
  private stateCompleteFor(nodeId: string): boolean {
    return this.d.lead.caughtUp() && !this.reportsPending(nodeId);
  }

  /** Whether reports of this node are queued or in flight (see `register`). */
  private reportsPending(nodeId: string): boolean {
    return (this.reportsInFlight.get(nodeId) ?? 0) > 0 || this.reports.some((r) => r.nodeId === nodeId);
  }

  /** Count proposals carrying these nodes' reports as in flight; the returned function ends that. */
  private reportsGoing(nodes: readonly string[]): () => void {
    for (const n of nodes) this.reportsInFlight.set(n, (this.reportsInFlight.get(n) ?? 0) + 1);
    return () => {
      for (const n of nodes) {
        const left = (this.reportsInFlight.get(n) ?? 1) - 1;
        if (left > 0) this.reportsInFlight.set(n, left);
        else this.reportsInFlight.delete(n);
      }
    };
  }

  private toReports(nodeId: string, tasks: TaskStatusReport[]): TaskReport[] {
    const out: TaskReport[] = [];
    for (const t of tasks) {
      if (!t || typeof t.taskId !== 'string' || typeof t.state !== 'string') continue;
      out.push({
        taskId: t.taskId,
        nodeId,
        state: t.state,
        reason: typeof t.reason === 'string' ? t.reason.slice(0, 1000) : undefined,
        exitCode: Number.isInteger(t.exitCode) ? t.exitCode : undefined,
        detail: typeof t.detail === 'string' ? t.detail.slice(0, 200) : undefined,
        at: Number.isFinite(t.at) ? t.at : wallNow(),
        attempt: Number.isInteger(t.attempt) ? t.attempt : undefined,
        health: reportedHealth(t.health),
        ports: reportedPorts(t.ports),
      });
    }
    return out;
  }

  private onHeartbeat(s: Session): void {
    s.lastHeartbeat = monoNow();
    const node = this.m.state.getNode(s.nodeId);
    if (node && node.status !== 'ready' && !s.heartbeatPending) {
      s.heartbeatPending = true;
      void this.m.proposer
        .propose({ type: 'node.heartbeat', id: s.nodeId, at: wallNow() })
        .catch(() => {})
        .finally(() => (s.heartbeatPending = false));
    }
  }

  /** An observation: a bad one is dropped (logged once per session), never ends the session. */
  private onUsage(s: Session, raw: Record<string, unknown>): void {
    s.lastHeartbeat = monoNow();
    try {
      this.d.usage?.record(s.nodeId, parseUsageMessage(raw));
    } catch (e) {
      if (s.usageWarned) return;
      s.usageWarned = true;
      this.log.warn('invalid usage message dropped', { node: s.nodeId, err: (e as Error).message });
    }
  }

  private onStatus(s: Session, reports: TaskStatusReport[]): void {
    s.lastHeartbeat = monoNow();
    this.reports.push(...this.toReports(s.nodeId, reports));
    this.flushSoon();
  }

  /**
   * Reports go out as soon as no batch is in flight (group commit: what arrives meanwhile
   * rides with the next one); the interval timer only retries batches that failed.
   */
  private readonly flushSoon = nextTurn(() => void this.flushReports(), (fn) => this.t.soon(fn));

  /** Assignment changes go out on the next turn of the event loop (coalesced), not on the next tick of the timer. */
  private readonly pushSoon = nextTurn(() => this.pushAssignments(), (fn) => this.t.soon(fn));

  private async flushReports(): Promise<void> {
    if (this.reportsFlushing || this.reports.length === 0 || !this.leading) return;
    this.reportsFlushing = true;
    const batch = this.reports;
    this.reports = [];
    let ok = false;
    const release = this.reportsGoing([...new Set(batch.map((r) => r.nodeId))]);
    try {
      await this.m.proposer.propose({ type: 'task.report', reports: batch });
      ok = true;
    } catch (e) {
      // Not committed: keep them for the next batch (reports are idempotent).
      if (this.leading) this.reports = batch.concat(this.reports);
      this.log.debug('report batch deferred', { err: (e as Error).message });
    } finally {
      release();
      this.reportsFlushing = false;
    }
    // After a failure the interval timer retries (no tight loop while there is no quorum).
    if (ok && this.reports.length > 0 && this.leading) this.flushSoon();
  }

  /** The full set of tasks a node should run, pushed when it changes. */
  /** The secrets the running tasks of a node name, opened (a secret that cannot be opened is left out and logged: its task then fails on the worker, saying so). */
  private secretsFor(nodeId: string, tasks: readonly AssignedTask[]): DeliveredSecret[] {
    const names = [...new Set(tasks.filter((t) => t.desired === 'running').flatMap((t) => t.spec.secrets ?? []))].sort();
    if (names.length === 0 || !this.d.openSecrets) return [];
    const out: DeliveredSecret[] = [];
    let bytes = 0;
    for (const name of names) {
      try {
        const [sec] = this.d.openSecrets([name]);
        if (sec === undefined) continue;
        // The frame must stay below the session frame limit: what does not fit is not sent (its task fails on the worker, saying so).
        if (bytes + sec.data.length > MAX_DELIVERED_SECRET_BYTES) {
          this.log.error('secret not delivered: the secrets of this node\'s tasks exceed one frame', { node: nodeId, secret: name, limitBytes: MAX_DELIVERED_SECRET_BYTES });
          continue;
        }
        bytes += sec.data.length;
        out.push(sec);
      } catch (e) {
        this.log.error('secret not delivered: it cannot be opened', { node: nodeId, secret: name, err: (e as Error).message });
      }
    }
    return out;
  }

  private pushAssignments(): void {
    if (!this.leading || !this.d.lead.caughtUp()) return;
    const nodes = this.allDirty ? [...this.sessions.keys()] : [...this.dirtyNodes];
    this.allDirty = false;
    this.dirtyNodes.clear();
    for (const nodeId of nodes) {
      const s = this.sessions.get(nodeId);
      if (!s || !s.welcomed) continue;
      const tasks: AssignedTask[] = [];
      for (const t of this.m.state.tasksOnNode(nodeId)) {
        if (t.state === 'assigned' || t.state === 'starting' || t.state === 'running') {
          const publish = meshPublish(this.m.state, t);
          tasks.push({ taskId: t.id, attempt: t.attempt, spec: t.spec, desired: t.desired, ...(publish.length > 0 ? { publish } : {}) });
        }
      }
      tasks.sort((a, b) => (a.taskId < b.taskId ? -1 : 1));
      const dropVolumes = this.m.state.volumeDrops(nodeId);
      const key = JSON.stringify([tasks.map((t) => [t.taskId, t.attempt, t.desired]), dropVolumes]);
      if (key === s.lastAssignments) continue;
      s.lastAssignments = key;
      const msg: AssignmentsMsg = { t: 'assignments', tasks };
      const secrets = this.secretsFor(nodeId, tasks);
      if (secrets.length > 0) msg.secrets = secrets;
      if (dropVolumes.length > 0) msg.dropVolumes = dropVolumes;
      this.send(s.link, msg);
    }
    this.pushEndpoints();
  }

  /** The routing mesh's table (endpoints.ts) to every welcomed worker that takes it, when it changed. */
  private pushEndpoints(): void {
    if (!this.endpointsDirty) return;
    this.endpointsDirty = false;
    const ports = meshTable(this.m.state);
    const names = nameTable(this.m.state);
    const key = JSON.stringify(ports);
    const keyNamed = JSON.stringify([ports, names]);
    for (const s of this.sessions.values()) {
      const k = s.names ? keyNamed : key;
      if (!s.welcomed || !s.mesh || s.lastEndpoints === k) continue;
      s.lastEndpoints = k;
      this.send(s.link, s.names ? { t: 'endpoints', ports, names } : { t: 'endpoints', ports });
    }
  }

}

/** A trigger that runs `fn` once on the next event-loop turn, however often it is pulled before then. */
function nextTurn(fn: () => void, soon: (fn: () => void) => void): () => void {
  let queued = false;
  return () => {
    if (queued) return;
    queued = true;
    soon(() => {
      queued = false;
      fn();
    });
  };
}
