// Leader-only services: the dispatcher (worker sessions), the scheduler loop, the node
// monitor and the restart loop. They start when this manager becomes leader and stop when it
// stops leading; every decision is a proposed command tagged with the term it was made in, so
// a deposed leader's late decisions are rejected by the state machine (fencing).
import type http from 'node:http';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { identityOf } from '../tls/pki.js';
import { createHmac, randomUUID } from 'node:crypto';
import { decodeSessionFrame, encodeSessionFrame } from '../protocol/frames.js';
import { WebSocketServer, type WebSocket } from 'ws';
import type { Manager } from './manager.js';
import type { ApplyResult, Command, NodeInfo, SingleCommand, Task, TaskReport } from './state.js';
import { schedule } from './scheduler.js';
import {
  MAX_SESSION_FRAME,
  SESSION_PATH,
  type AssignedTask,
  type ManagerToWorker,
  type RegisterMsg,
  type TaskStatusReport,
  type WorkerToManager,
} from '../protocol/session.js';
import type { Logger } from '../log.js';
import { checkJoin, nodeCredential, nodeEpoch } from './auth.js';
import { restartBackoff } from './state.js';
import { monoNow, wallNow, StallDetector } from '../clock.js';

export interface OrchestratorOptions {
  /** Heartbeat period the leader asks workers for (ms). */
  heartbeatMs?: number;
  /** A ready node that has not sent a heartbeat for this long is declared down (ms). */
  nodeGraceMs?: number;
  /** After a leader change, how long a node has to reconnect before it is declared down (ms). */
  failoverGraceMs?: number;
  /** Placement strategy. */
  strategy?: 'spread' | 'binpack';
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
/** Period of the node monitor (and of the stall check it carries). */
const MONITOR_MS = 250;

/** Largest frame accepted before a session has registered (a registration with ~3,000 tasks). */
const MAX_REGISTER_FRAME = 1024 * 1024;

/** The worker join token is derived from the cluster secret (never the secret itself). */
export function workerToken(secret: string): string {
  return 'flt-w-' + createHmac('sha256', secret).update('flotilla worker join token v1').digest('hex').slice(0, 40);
}

interface Session {
  id: string;
  nodeId: string;
  ws: WebSocket;
  /** Monotonic ms of the last frame from the worker. */
  lastHeartbeat: number;
  lastAssignments: string;
  heartbeatPending: boolean;
  /** Registration committed and welcome sent: only then does the worker get assignments. */
  welcomed: boolean;
}

export class Orchestrator {
  private readonly wss: WebSocketServer;
  private sessions = new Map<string, Session>();
  /** When this leader last heard from each node (monotonic ms; survives the node's session ending). */
  private lastSeen = new Map<string, number>();
  /** Notices when this process could not run (event-loop block, SIGSTOP): that time is not a worker's silence. */
  private readonly stalls = new StallDetector(MONITOR_MS);
  /** Monotonic due time of each restart waiting out its backoff, by `taskId:attempt:nextRestartAt`. */
  private restartDue = new Map<string, number>();
  private leaderTerm: number | null = null;
  /** This leader has applied its own first entry: its state includes everything committed before. */
  private caughtUp = false;
  private leaderSince = 0;
  private timers: NodeJS.Timeout[] = [];
  private reports: TaskReport[] = [];
  private reportsFlushing = false;
  private scheduling = false;
  private scheduleAgain = false;
  private dirtyNodes = new Set<string>();
  private allDirty = false;
  private inflight = new Set<string>();
  private readonly token: string;
  private readonly heartbeatMs: number;
  private readonly nodeGraceMs: number;
  private readonly failoverGraceMs: number;
  private readonly strategy: 'spread' | 'binpack';
  private readonly reportBatchMs: number;
  private unsubscribe: (() => void) | null = null;
  /** Why each pending task could not be placed (leader memory; also proposed to the log). */
  private lastUnplaced = new Map<string, string>();

  constructor(
    private readonly m: Manager,
    private readonly secret: string,
    private readonly log: Logger,
    opts: OrchestratorOptions = {},
  ) {
    this.token = workerToken(secret);
    this.heartbeatMs = opts.heartbeatMs ?? 1000;
    this.nodeGraceMs = opts.nodeGraceMs ?? 5000;
    this.failoverGraceMs = opts.failoverGraceMs ?? Math.max(10_000, this.nodeGraceMs);
    this.strategy = opts.strategy ?? 'spread';
    this.reportBatchMs = opts.reportBatchMs ?? 100;
    this.wss = new WebSocketServer({ noServer: true, maxPayload: MAX_SESSION_FRAME });
    m.upgrades.set(SESSION_PATH, (req, socket, head) => this.onUpgrade(req, socket, head));
    const prev = m.onLeaderChange;
    m.onLeaderChange = (leader, term) => {
      prev(leader, term);
      if (leader === m.id) this.startLeading(term);
      else this.stopLeading();
    };
    this.unsubscribe = m.state.onEvent((ev) => {
      if (this.leaderTerm === null) return;
      if (ev.type === 'task.created' || (ev.type === 'task.updated' && (ev.task.state === 'pending' || ev.change === 'restart'))) this.kickScheduler();
      if (ev.type === 'node.updated' || ev.type === 'node.registered') this.kickScheduler();
      if (ev.type === 'task.created' || ev.type === 'task.updated' || ev.type === 'task.removed') {
        if (ev.task.node) this.dirtyNodes.add(ev.task.node);
        else this.allDirty = true;
        this.pushSoon();
      }
      if (ev.type === 'task.updated' && ev.change === 'restart') this.allDirty = true;
      if (ev.type === 'node.updated' && ev.change === 'availability') this.kickDrain();
    });
  }

  close(): void {
    this.stopLeading();
    this.unsubscribe?.();
    this.wss.close();
  }

  isLeading(): boolean {
    return this.leaderTerm !== null;
  }

  sessionCount(): number {
    return this.sessions.size;
  }

  /** ms since this leader last heard from the node (null when not leading or never heard). */
  heartbeatAge(nodeId: string): number | null {
    if (this.leaderTerm === null) return null;
    const t = this.sessions.get(nodeId)?.lastHeartbeat ?? this.lastSeen.get(nodeId);
    return t === undefined ? null : monoNow() - t;
  }

  unplacedReason(taskId: string): string | undefined {
    return this.lastUnplaced.get(taskId);
  }

  // ------------------------------------------------------------------ leadership

  private startLeading(term: number): void {
    if (this.leaderTerm === term) return;
    this.stopLeading();
    this.leaderTerm = term;
    this.leaderSince = monoNow();
    this.stalls.reset();
    this.log.info('leader services started', { term });
    this.caughtUp = false;
    // Announce the election and give every node a grace period to reconnect (never kill healthy
    // work). Until this entry is applied here, this leader's state may lag what its predecessor
    // committed: no decision (placement, node down, assignment set) is made from it before.
    void this.announce(term);
    this.timers.push(setInterval(() => this.monitorNodes(), MONITOR_MS));
    this.timers.push(setInterval(() => void this.flushReports(), this.reportBatchMs));
    this.timers.push(setInterval(() => this.pushAssignments(), 50));
    this.timers.push(setInterval(() => this.restartLoop(), 200));
    this.timers.push(setInterval(() => this.kickScheduler(), 1000));
    for (const t of this.timers) t.unref();
    this.allDirty = true;
    this.kickScheduler();
    this.kickDrain();
  }

  private async announce(term: number): Promise<void> {
    for (let attempt = 0; this.leaderTerm === term; attempt++) {
      const at = wallNow();
      const r = await this.decide(() => [
        { type: 'cluster.leader', leader: this.m.id, term, at },
        { type: 'nodes.markUnknown', term, at },
      ]);
      if (r !== undefined && this.leaderTerm === term) {
        this.caughtUp = true;
        // The failover grace starts now: from here on this leader can serve sessions.
        this.leaderSince = monoNow();
        this.allDirty = true;
        this.kickScheduler();
        this.kickDrain();
        return;
      }
      await new Promise((res) => setTimeout(res, Math.min(1000, 50 * (attempt + 1))));
    }
  }

  private stopLeading(): void {
    if (this.leaderTerm === null) return;
    this.log.info('leader services stopped', { term: this.leaderTerm });
    this.leaderTerm = null;
    this.caughtUp = false;
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    this.reports = [];
    this.lastUnplaced.clear();
    this.lastSeen.clear();
    this.restartDue.clear();
    // Workers must follow the new leader: end every session (they reconnect and are redirected).
    for (const s of this.sessions.values()) s.ws.close(4001, 'leadership changed');
    this.sessions.clear();
  }

  /**
   * Proposes leader decisions made now, tagged with the current leader term. The callback
   * builds the commands with that term; a decision from a stale term is rejected on apply.
   */
  private async decide(build: (term: number) => SingleCommand[]): Promise<unknown> {
    const term = this.leaderTerm;
    if (term === null) return;
    const cmds = build(term);
    if (cmds.length === 0) return;
    const cmd: Command = cmds.length === 1 ? cmds[0]! : { type: 'batch', commands: cmds };
    try {
      return await this.m.propose(cmd);
    } catch (e) {
      if (this.leaderTerm !== null) this.log.warn('leader decision failed', { type: cmd.type, err: (e as Error).message });
      return undefined;
    }
  }

  // ------------------------------------------------------------------ sessions

  private onUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
    const remote = req.socket.remoteAddress ?? '?';
    let certId: string | null = null;
    if (this.m.link.secure) {
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
    this.wss.handleUpgrade(req, socket, head, (ws) => this.onSession(ws, remote, certId));
  }

  private send(ws: WebSocket, msg: ManagerToWorker): void {
    if (ws.readyState === ws.OPEN) ws.send(encodeSessionFrame(msg));
  }

  private managerAddrs(): string[] {
    return [...this.m.node.members.values()];
  }

  private onSession(ws: WebSocket, remote: string, certId: string | null = null): void {
    let session: Session | null = null;
    const registerTimeout = setTimeout(() => ws.close(4002, 'no registration'), 5000);
    ws.on('error', () => {});
    ws.on('close', () => {
      clearTimeout(registerTimeout);
      if (session && this.sessions.get(session.nodeId) === session) {
        this.sessions.delete(session.nodeId);
        // The grace period runs from the last sign of life, not from the disconnect.
        this.lastSeen.set(session.nodeId, session.lastHeartbeat);
      }
    });
    ws.on('message', (data: Buffer, isBinary: boolean) => {
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
        clearTimeout(registerTimeout);
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
    });
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

  private async register(ws: WebSocket, msg: RegisterMsg, remote: string): Promise<Session | null> {
    const bad = this.checkRegistration(msg);
    if (bad) {
      this.log.warn(`worker registration refused: ${bad}`, { remote, node: String(msg.nodeId) });
      this.send(ws, { t: 'reject', reason: bad });
      ws.close(4006, bad);
      return null;
    }
    if (this.leaderTerm === null) {
      const leader = this.m.node.leader();
      this.send(ws, { t: 'redirect', leader: leader ? (this.m.node.members.get(leader) ?? null) : null, managers: this.managerAddrs() });
      ws.close(4007, 'not the leader');
      return null;
    }
    const old = this.sessions.get(msg.nodeId);
    if (old) old.ws.close(4008, 'replaced by a new session');
    const s: Session = { id: randomUUID(), nodeId: msg.nodeId, ws, lastHeartbeat: monoNow(), lastAssignments: '', heartbeatPending: false, welcomed: false };
    this.sessions.set(msg.nodeId, s);
    const at = wallNow();
    const reports = this.toReports(msg.nodeId, msg.tasks);
    const cmds: SingleCommand[] = [
      {
        type: 'node.register',
        node: { id: msg.nodeId, addr: msg.addr, labels: msg.labels ?? {}, resources: msg.resources, drivers: msg.drivers },
        at,
      },
    ];
    if (reports.length > 0) cmds.push({ type: 'task.report', reports });
    let results: unknown;
    try {
      results = await this.m.propose({ type: 'batch', commands: cmds });
    } catch (e) {
      this.log.warn('worker registration not committed; session closed', { node: msg.nodeId, err: (e as Error).message });
      ws.close(4009, 'registration failed');
      this.sessions.delete(msg.nodeId);
      return null;
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
    const clusterId = workerClusterId(this.m.ops?.clusterId() ?? null, this.secret);
    this.send(ws, { t: 'welcome', sessionId: s.id, heartbeatMs: hb, managers: this.managerAddrs(), term: this.leaderTerm ?? 0, credential, clusterId });
    this.log.info(`worker ${msg.nodeId} registered`, { tasks: msg.tasks.length, remote });
    this.dirtyNodes.add(msg.nodeId);
    this.kickScheduler();
    return s;
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
      });
    }
    return out;
  }

  private onHeartbeat(s: Session): void {
    s.lastHeartbeat = monoNow();
    const node = this.m.state.getNode(s.nodeId);
    if (node && node.status !== 'ready' && !s.heartbeatPending) {
      s.heartbeatPending = true;
      void this.m
        .propose({ type: 'node.heartbeat', id: s.nodeId, at: wallNow() })
        .catch(() => {})
        .finally(() => (s.heartbeatPending = false));
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
  private readonly flushSoon = nextTurn(() => void this.flushReports());

  /** Assignment changes go out on the next turn of the event loop (coalesced), not on the next tick of the timer. */
  private readonly pushSoon = nextTurn(() => this.pushAssignments());

  private async flushReports(): Promise<void> {
    if (this.reportsFlushing || this.reports.length === 0 || this.leaderTerm === null) return;
    this.reportsFlushing = true;
    const batch = this.reports;
    this.reports = [];
    let ok = false;
    try {
      await this.m.propose({ type: 'task.report', reports: batch });
      ok = true;
    } catch (e) {
      // Not committed: keep them for the next batch (reports are idempotent).
      if (this.leaderTerm !== null) this.reports = batch.concat(this.reports);
      this.log.debug('report batch deferred', { err: (e as Error).message });
    } finally {
      this.reportsFlushing = false;
    }
    // After a failure the interval timer retries (no tight loop while there is no quorum).
    if (ok && this.reports.length > 0 && this.leaderTerm !== null) this.flushSoon();
  }

  /** The full set of tasks a node should run, pushed when it changes. */
  private pushAssignments(): void {
    if (this.leaderTerm === null || !this.caughtUp) return;
    const nodes = this.allDirty ? [...this.sessions.keys()] : [...this.dirtyNodes];
    this.allDirty = false;
    this.dirtyNodes.clear();
    for (const nodeId of nodes) {
      const s = this.sessions.get(nodeId);
      if (!s || !s.welcomed) continue;
      const tasks: AssignedTask[] = [];
      for (const t of this.m.state.tasksOnNode(nodeId)) {
        if (t.state === 'assigned' || t.state === 'starting' || t.state === 'running') {
          tasks.push({ taskId: t.id, attempt: t.attempt, spec: t.spec, desired: t.desired });
        }
      }
      tasks.sort((a, b) => (a.taskId < b.taskId ? -1 : 1));
      const key = JSON.stringify(tasks.map((t) => [t.taskId, t.attempt, t.desired]));
      if (key === s.lastAssignments) continue;
      s.lastAssignments = key;
      this.send(s.ws, { t: 'assignments', tasks });
    }
  }

  // ------------------------------------------------------------------ scheduler

  kickScheduler(): void {
    if (this.leaderTerm === null || !this.caughtUp) return;
    if (this.scheduling) {
      this.scheduleAgain = true;
      return;
    }
    this.scheduling = true;
    setImmediate(() => void this.runScheduler());
  }

  private async runScheduler(): Promise<void> {
    try {
      do {
        this.scheduleAgain = false;
        if (this.leaderTerm === null) return;
        const pending = this.m.state.pendingTasks();
        if (pending.length === 0) {
          this.lastUnplaced.clear();
          continue;
        }
        const nodes = this.m.state.listNodes();
        const usage = new Map(nodes.map((n) => [n.id, this.m.state.nodeUsage(n.id)]));
        const plan = schedule(pending, nodes, usage, { strategy: this.strategy });
        this.lastUnplaced = new Map(plan.unplaced.map((u) => [u.taskId, u.reason]));
        const reasons = plan.unplaced.filter((u) => this.m.state.getTask(u.taskId)?.reason !== u.reason);
        const cmds: SingleCommand[] = [];
        if (plan.placements.length > 0) cmds.push({ type: 'task.assign', placements: plan.placements, term: 0, at: wallNow() });
        if (reasons.length > 0) cmds.push({ type: 'task.pending', items: reasons.map((u) => ({ taskId: u.taskId, reason: u.reason })), term: 0, at: wallNow() });
        if (cmds.length === 0) continue;
        await this.decide((term) => cmds.map((c) => ({ ...c, term }) as SingleCommand));
      } while (this.scheduleAgain);
    } finally {
      this.scheduling = false;
    }
  }

  // ------------------------------------------------------------------ node monitor

  private monitorNodes(): void {
    // Time this process could not run is nobody's silence: every node's clock (and the
    // failover grace) is moved forward by it, so a grace counts only time in which this leader
    // could have heard the node.
    const stalled = this.stalls.check();
    if (stalled > 0) this.creditStall(stalled);
    if (this.leaderTerm === null || !this.caughtUp) return;
    const now = monoNow();
    for (const n of this.m.state.listNodes()) {
      if (n.status === 'down') continue;
      const s = this.sessions.get(n.id);
      // A node this leader has not heard from yet is measured from when it took over, with the
      // (longer) failover grace: a leader change alone never takes healthy work down.
      const heard = s?.lastHeartbeat ?? this.lastSeen.get(n.id);
      const since = heard ?? this.leaderSince;
      const grace = heard === undefined ? Math.max(this.nodeGraceMs, this.failoverGraceMs) : this.nodeGraceMs;
      if (now - since <= grace) continue;
      const key = `down:${n.id}`;
      if (this.inflight.has(key)) continue;
      this.inflight.add(key);
      const reason = `no heartbeat for ${Math.round((now - since) / 1000)} s`;
      this.log.warn(`node ${n.id} is down: ${reason}`);
      void this.decide((term) => [{ type: 'node.down', id: n.id, reason, term, at: wallNow() }]).finally(() => this.inflight.delete(key));
      s?.ws.close(4010, 'declared down');
    }
  }

  private creditStall(ms: number): void {
    const now = monoNow();
    this.log.warn('this manager could not run; node graces extended by the stall', { stalledMs: Math.round(ms) });
    for (const s of this.sessions.values()) s.lastHeartbeat = Math.min(now, s.lastHeartbeat + ms);
    for (const [id, t] of this.lastSeen) this.lastSeen.set(id, Math.min(now, t + ms));
    this.leaderSince = Math.min(now, this.leaderSince + ms);
    for (const [k, t] of this.restartDue) this.restartDue.set(k, t + ms);
  }

  // ------------------------------------------------------------------ restarts and drain

  /**
   * When a restart's backoff ends, on this leader's monotonic clock. The replicated
   * `nextRestartAt` is a wall-clock timestamp from the command that ended the attempt; the
   * remaining wait is read from it once (bounded by the policy's backoff, so a stepped wall
   * clock can shorten or lengthen no wait beyond it) and then counted monotonically.
   */
  private restartDueAt(t: Task, now: number): number {
    const key = `${t.id}:${t.attempt}:${t.nextRestartAt}`;
    let due = this.restartDue.get(key);
    if (due === undefined) {
      const backoff = restartBackoff(t.spec.restart, t.restarts);
      const remaining = Math.min(backoff, Math.max(0, t.nextRestartAt! - wallNow()));
      due = now + remaining;
      this.restartDue.set(key, due);
    }
    return due;
  }

  private restartLoop(): void {
    if (this.leaderTerm === null || !this.caughtUp) return;
    const now = monoNow();
    // Work lost with its node is rescheduled at once, whatever the restart policy: the task
    // did not fail, its node did (this does not count as a restart).
    for (const t of this.m.state.listTasks({ state: 'lost', desired: 'running' })) {
      const key = `restart:${t.id}:${t.attempt}`;
      if (this.inflight.has(key)) continue;
      this.inflight.add(key);
      void this.decide((term) => [{ type: 'task.restart', taskId: t.id, term, at: wallNow(), force: true, reason: `rescheduled: ${t.reason}` }]).finally(() => this.inflight.delete(key));
    }
    const waiting = new Set<string>();
    for (const t of this.m.state.tasksAwaitingRestart()) {
      if (t.state === 'lost') continue;
      if (t.nextRestartAt === undefined) continue;
      waiting.add(`${t.id}:${t.attempt}:${t.nextRestartAt}`);
      if (this.restartDueAt(t, now) > now) continue;
      const key = `restart:${t.id}:${t.attempt}`;
      if (this.inflight.has(key)) continue;
      this.inflight.add(key);
      void this.decide((term) => [{ type: 'task.restart', taskId: t.id, term, at: wallNow() }]).finally(() => this.inflight.delete(key));
    }
    for (const k of this.restartDue.keys()) if (!waiting.has(k)) this.restartDue.delete(k);
  }

  private drainScheduled = false;
  private kickDrain(): void {
    if (this.drainScheduled) return;
    this.drainScheduled = true;
    setTimeout(() => {
      this.drainScheduled = false;
      this.drain();
    }, 20).unref();
  }

  /** Tasks on draining nodes are moved: re-queued (forced restart) so the scheduler places them elsewhere. */
  private drain(): void {
    if (this.leaderTerm === null || !this.caughtUp) return;
    const moves: Task[] = [];
    for (const n of this.m.state.listNodes()) {
      if (n.availability !== 'drain') continue;
      for (const t of this.m.state.tasksOnNode(n.id)) {
        if (t.desired === 'running' && (t.state === 'assigned' || t.state === 'starting' || t.state === 'running')) moves.push(t);
      }
    }
    if (moves.length === 0) return;
    void this.decide((term) => moves.map((t): SingleCommand => ({ type: 'task.restart', taskId: t.id, term, at: wallNow(), force: true, reason: `moved: node ${t.node} is draining` })));
  }

  nodes(): NodeInfo[] {
    return this.m.state.listNodes();
  }
}

/** A trigger that runs `fn` once on the next event-loop turn, however often it is pulled before then. */
function nextTurn(fn: () => void): () => void {
  let queued = false;
  return () => {
    if (queued) return;
    queued = true;
    setImmediate(() => {
      queued = false;
      fn();
    });
  };
}
