// A manager replica: LevelDB storage + Raft node + peer transport + the replicated cluster
// state + the HTTP API, all on one port. Followers forward writes to the leader; reads are
// linearizable through ReadIndex unless ?stale=true.
//
// This file is the composition root: `Manager.start` builds the Raft side, then hands every
// service and route group the ports (ports.ts) it needs — the manager itself implements
// CommandProposer, ReadBarrier, LeaderForward and RouteTable — and starts the leader services
// (dispatcher.ts, controllers/) through `Leadership` (leadership.ts). Nothing imports this file
// but the CLI and tests. Served here: write forwarding to the leader and read barriers.
import http from 'node:http';
import https from 'node:https';
import { Link } from '../tls/link.js';
import type { NodeTls } from '../tls/pki.js';
import { RaftNode } from '../raft/node.js';
import { RaftStorage } from '../raft/storage.js';
import { RaftTraceFile } from '../raft/trace.js';
import { PeerTransport } from '../raft/transport.js';
import { RaftError, type NodeId } from '../raft/types.js';
import { ClusterState, encodeCommand, type Command } from './state.js';
import { FlotillaError, toFlotillaError } from '../protocol/errors.js';
import { Reply, Router, type RequestContext } from './http.js';
import { splitAddr } from '../protocol/address.js';
import type { Logger } from '../log.js';
import { consoleLogger } from '../log.js';
import { Dispatcher, type DispatcherOptions } from './dispatcher.js';
import { Leadership } from './leadership.js';
import { Placement, type PlacementOptions } from './controllers/placement.js';
import { NodeMonitor, type NodeMonitorOptions } from './controllers/node-monitor.js';
import { Restarts } from './controllers/restarts.js';
import { Drain } from './controllers/drain.js';
import { Services } from './controllers/services.js';
import { TaskGc, type TaskGcOptions } from './controllers/gc.js';
import type { CommandProposer, LeaderForward, Membership, ReadBarrier, RouteTable, UpgradeHandler } from './ports.js';
import { registerApi } from './api.js';
import { registerExecProxy } from './exec-proxy.js';
import { UsageStore } from './usage.js';
import { registerUsageRoutes } from './usage-routes.js';
import { registerTaskRemove } from './task-remove.js';
import { registerKv } from './kv-routes.js';
import { ClusterAdmin, getJson } from './cluster-routes.js';
import { CONNECTION_LIMITS, limitConnections, type ConnectionLimits } from './connections.js';
import { raftToFlotilla } from './raft-errors.js';
import { registerServices } from './service-routes.js';
import { registerJoin } from './join.js';
import { SecretsService } from './secrets.js';
import { registerWeb } from './web.js';
import { createOps, registerOps, type Ops } from './ops.js';
import { applyQuota, DEFAULT_QUOTA_BYTES } from './quota.js';
import { FORWARDED_ADMIN_CERT, hasAdminCert, registerAuth, nodeCredential, nodeEpoch, workerToken } from './auth.js';
import { eventLoopSlicer, monoNow } from '../clock.js';
import { bootstrapClusterId, IncarnationGuard, probeBootstrap, type PeerProbe } from './incarnation.js';
import { LeaderChange } from './leader-change.js';
import { unpack } from 'msgpackr';
import { promises as fsp } from 'node:fs';
import path from 'node:path';

// Kept importable from here (they lived in this file).
export { CONNECTION_LIMITS, type ConnectionLimits, getJson, raftToFlotilla };

export interface ManagerOptions {
  id: NodeId;
  listen: string;
  /** Address peers and clients use to reach this manager (default: listen). */
  advertise?: string;
  dataDir: string;
  secret: string;
  bootstrap?: Record<NodeId, string>;
  tickMs?: number;
  heartbeatMs?: number;
  electionMs?: number;
  snapshotEvery?: number;
  /** Quota on the replicated state's size in bytes (quota.ts; default 256 MiB, 0 = none). */
  quotaBytes?: number;
  /** How long a write waits for a leader before failing (ms). */
  leaderWaitMs?: number;
  log?: Logger;
  /** Leader-only services: the dispatcher, placement and the node monitor. */
  orchestrator?: LeaderServicesOptions;
  /** Allow privileged task specs and host mounts. */
  allowPrivileged?: boolean;
  /** Reach these peers at these addresses instead of their advertised ones (NAT, chaos proxies). */
  peerRoutes?: Record<string, string>;
  /**
   * Mutual TLS with the cluster CA: the API is HTTPS, peers and workers must present a node
   * certificate from the CA. Without it the manager speaks plain HTTP (insecure mode).
   */
  tls?: NodeTls;
  /** The cluster CA's key: lets this manager sign certificates for joining nodes. */
  caKey?: string;
  /** Append a Raft trace (JSON lines, src/raft/trace.ts) to this file. Off by default. */
  raftTrace?: string;
  /** Bounds on the API port's connections (defaults: CONNECTION_LIMITS). */
  connections?: Partial<ConnectionLimits>;
}

/** Options of the leader services (dispatcher.ts, controllers/). */
export type LeaderServicesOptions = DispatcherOptions & PlacementOptions & NodeMonitorOptions & TaskGcOptions;


const FORWARDED = 'x-flotilla-forwarded';

export class Manager implements CommandProposer, ReadBarrier, LeaderForward, RouteTable {
  readonly id: NodeId;
  readonly addr: string;
  readonly state = new ClusterState();
  readonly node: RaftNode;
  readonly server: http.Server;
  readonly router = new Router();
  /** Requests to other managers (and workers), over TLS when the cluster has it. */
  readonly link: Link;
  private transport!: PeerTransport;
  /** Starts and stops the leader services; fences their decisions by term. */
  leadership!: Leadership;
  /** Worker sessions (leader only). */
  dispatcher!: Dispatcher;
  /** The scheduler loop (leader only). */
  placement!: Placement;
  /** /v1/status, /v1/cluster and membership changes. */
  private admin!: ClusterAdmin;
  /** Metrics, backups, cluster identity (ops.ts). */
  ops: Ops | null = null;
  private readonly log: Logger;
  private readonly leaderWaitMs: number;
  /** Writes waiting for a (new) leader wake on the node's leader change: leader-change.ts. */
  readonly leaderChange = new LeaderChange();
  private readonly started = monoNow();
  private promoteTimer: NodeJS.Timeout | null = null;
  private closed = false;
  private trace: RaftTraceFile | null = null;
  /** Compares the peers' storage ids with the recorded ones (incarnation.ts). */
  private guard: IncarnationGuard | null = null;
  /** 'probing': a fresh store asking its bootstrap peers whether it is a wiped member (not in Raft yet). */
  private phase: 'probing' | 'running' = 'running';
  /** Extra route/upgrade handlers added by other modules (dispatcher, events, web). */
  readonly upgrades = new Map<string, UpgradeHandler>();
  private staticHandler: ((req: http.IncomingMessage, res: http.ServerResponse) => boolean) | null = null;

  private constructor(
    private readonly opts: ManagerOptions,
    private readonly storage: RaftStorage,
    node: RaftNode,
    log: Logger,
  ) {
    this.id = opts.id;
    this.addr = opts.advertise ?? opts.listen;
    this.node = node;
    this.log = log;
    this.leaderWaitMs = opts.leaderWaitMs ?? 5000;
    this.link = new Link(opts.tls);
    const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => void this.onRequest(req, res);
    const limits = { ...CONNECTION_LIMITS, ...opts.connections };
    const idle = limits.idleTimeoutMs;
    const httpOpts: http.ServerOptions = {
      headersTimeout: idle,
      requestTimeout: Math.max(idle, 60_000),
      keepAliveTimeout: Math.min(30_000, idle),
      // How often the timeouts above are checked (Node's default, 30 s, lets idle sockets linger).
      connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(idle / 4))),
    };
    // With TLS a client certificate is asked for but optional at this layer: the API
    // authenticates with bearer tokens, while /raft and the worker sessions require one.
    this.server = opts.tls
      ? (https.createServer(
          { ...httpOpts, key: opts.tls.key, cert: opts.tls.cert + opts.tls.ca, ca: opts.tls.ca, requestCert: true, rejectUnauthorized: false, handshakeTimeout: idle },
          handler,
        ) as unknown as http.Server)
      : http.createServer(httpOpts, handler);
    limitConnections(this.server, limits, log);
    // Every socket, upgraded ones (event streams, worker sessions) included: closing the server
    // ends them all, or `server.close` would wait for a WebSocket that a board keeps open.
    this.server.on('connection', (s: import('node:net').Socket) => {
      this.sockets.add(s);
      s.once('close', () => this.sockets.delete(s));
    });
  }

  private readonly sockets = new Set<import('node:net').Socket>();

  static async start(opts: ManagerOptions): Promise<Manager> {
    const log = opts.log ?? consoleLogger(opts.id);
    const ops = await createOps(opts.id, log);
    const storage = await RaftStorage.open(opts.dataDir, { nodeId: opts.id, onWrite: ops.metrics.onWrite, check: checkPersisted });
    let persisted;
    try {
      persisted = await storage.load();
    } catch (e) {
      await storage.close();
      throw e;
    }
    const fresh = persisted.snapshot === null && persisted.entries.length === 0 && persisted.hardState.term === 0;
    if (!fresh && opts.bootstrap) log.info('existing data found: membership comes from disk, --bootstrap ignored', { dir: opts.dataDir });
    if (fresh && opts.bootstrap && !opts.bootstrap[opts.id]) {
      await storage.close();
      throw new FlotillaError('bad_request', `--bootstrap does not name this manager (${opts.id})`);
    }
    // Every cluster has an id from its bootstrap on: all bootstrapping managers derive the same one.
    if (fresh && opts.bootstrap && storage.meta.clusterId === null) await storage.setClusterId(bootstrapClusterId(opts.secret, opts.bootstrap));
    const tickMs = opts.tickMs ?? 10;
    const heartbeatMs = opts.heartbeatMs ?? 50;
    const electionMs = opts.electionMs ?? 300;
    // The node restores a persisted snapshot in its constructor, before the Manager exists.
    const holder: { m?: Manager; initial?: Uint8Array } = {};
    const trace = opts.raftTrace ? RaftTraceFile.open(opts.raftTrace, opts.id) : undefined;
    const node = new RaftNode({
      id: opts.id,
      storage,
      persisted,
      bootstrap: fresh ? opts.bootstrap : undefined,
      tickMs,
      heartbeatTicks: Math.max(1, Math.round(heartbeatMs / tickMs)),
      electionTicks: Math.max(2, Math.round(electionMs / tickMs)),
      snapshotEvery: opts.snapshotEvery,
      stateMachine: {
        apply: (data, at) => holder.m!.state.applyEntry(data, at),
        snapshot: () => holder.m!.state.snapshot(),
        restore: (data) => (holder.m ? holder.m.state.restore(data) : void (holder.initial = data)),
        // Large states: encoded and parsed in slices that yield to the event loop.
        snapshotAsync: () => holder.m!.state.snapshotAsync(eventLoopSlicer),
        restoreAsync: (data) => holder.m!.state.restoreAsync(data, eventLoopSlicer),
      },
      log: (level, msg, fields) => log[level](msg, fields),
      onPersist: ops.metrics.onPersist,
      trace,
    });
    const m = new Manager(opts, storage, node, log);
    m.trace = trace ?? null;
    holder.m = m;
    // The persisted snapshot is parsed in slices too (nothing runs the node before this ends).
    if (holder.initial) await m.state.restoreAsync(holder.initial, eventLoopSlicer);
    m.ops = ops;
    log.setContext?.(() => ({ term: node.status().term }));
    // Addresses told by authenticated peers: a manager that joins with an empty log answers the
    // leader before it has replicated the membership.
    const learned = new Map<NodeId, string>();
    m.transport = new PeerTransport({
      id: opts.id,
      secret: opts.secret,
      advertise: m.addr,
      // Nothing reaches Raft while a fresh store still checks that it is not a wiped member.
      onMessage: (msg) => {
        if (m.phase !== 'probing') node.receive(msg);
      },
      onUnreachable: (peer) => node.reportUnreachable(peer),
      onLinkDown: (peer) => node.reportLinkDown(peer),
      onSnapshotStatus: (peer, ok) => node.reportSnapshot(peer, ok),
      resolveAddr: (id) => m.peerAddr(id) ?? learned.get(id),
      onPeerAddr: (id, addr) => learned.set(id, addr),
      log: (level, msg, fields) => log[level](msg, fields),
      tls: opts.tls,
      // A removed manager is refused even with a valid certificate; a store that has not
      // joined yet (no members) accepts the leader that adds it. A member that came back with a
      // wiped data directory is refused too (incarnation.ts).
      acceptPeer: (id) => m.phase !== 'probing' && (node.members.size === 0 || (node.members.has(id) && !m.guard?.wiped.has(id))),
      ...ops.raftHooks(storage, node, persisted),
    });
    node.setTransport(m.transport);
    node.on('leader', (leader: NodeId | null, term: number) => {
      log.info(leader ? `leader is ${leader}` : 'no leader', { term });
      m.leadership.onLeaderChange(leader, term);
      m.leaderChange.fire();
    });
    node.on('fatal', (e: Error) => {
      log.error(`fatal: ${e.message}`);
    });
    m.wire(ops, log);
    const [host, port] = splitAddr(opts.listen);
    m.server.on('upgrade', (req, socket, head) => {
      const path = new URL(req.url ?? '/', 'http://x').pathname;
      if (path === '/raft') return m.transport.handleUpgrade(req, socket, head);
      const h = m.upgrades.get(path);
      if (h) return h(req, socket, head);
      socket.destroy();
    });
    await new Promise<void>((resolve, reject) => {
      m.server.once('error', reject);
      m.server.listen(port, host, () => {
        m.server.off('error', reject);
        resolve();
      });
    });
    if (fresh && opts.bootstrap) {
      // An empty store cannot tell a new cluster's first start from a wiped member's: ask the peers.
      m.phase = 'probing';
      try {
        await probeBootstrap(m.peerProbe({}), {
          peers: opts.bootstrap,
          dataDir: storage.path,
          storageId: storage.meta.storageId,
          clusterId: storage.meta.clusterId,
          log,
          isClosed: () => m.closed,
        });
      } catch (e) {
        await m.abandonFreshStore();
        throw e;
      }
      m.phase = 'running';
    }
    node.start();
    m.guard = new IncarnationGuard(m.peerProbe({ node, state: m.state, proposer: m }), { storageId: () => storage.meta.storageId, clusterId: () => storage.meta.clusterId, dataDir: storage.path, log, learned: () => learned });
    m.guard.start();
    m.promoteTimer = setInterval(() => void m.admin.promoteLearners(), 100);
    m.promoteTimer.unref();
    log.info('manager started', { listen: opts.listen, data: opts.dataDir, members: Object.fromEntries(node.members) });
    return m;
  }

  /**
   * Wires the leader services and the routes: each gets the ports it needs. Routes are
   * registered in this order (the auth guard wraps the event stream's upgrade, so it comes
   * after the API).
   */
  private wire(ops: Ops, log: Logger): void {
    const o = this.opts.orchestrator ?? {};
    const node = this.node;
    const state = this.state;
    const members: Membership = { id: this.id, addr: this.addr, members: () => node.members, leader: () => node.leader() };
    const io = { routes: this, state, reads: this, writes: this, proposer: this };

    // ---- leader services
    const leadership = new Leadership({ id: this.id, proposer: this, log });
    const lead = leadership;
    const placement = new Placement({ state, lead }, o);
    const secrets = new SecretsService({ routes: this, proposer: this, state, reads: this, writes: this, tls: this.link.tls !== undefined }, this.opts.secret, log);
    const usage = new UsageStore({ state, id: this.id });
    const dispatcher = new Dispatcher(
      {
        routes: this,
        proposer: this,
        lead,
        state,
        members,
        secure: this.link.secure,
        secret: this.opts.secret,
        clusterId: () => ops.clusterId(),
        log,
        onRegistered: () => placement.kick(),
        openSecrets: (names) => secrets.open(names),
        usage,
      },
      o,
    );
    const restarts = new Restarts({ state, lead });
    const monitor = new NodeMonitor(
      {
        state,
        lead,
        heartbeats: dispatcher,
        log,
        onStall: (ms) => {
          dispatcher.creditStall(ms);
          restarts.creditStall(ms);
        },
      },
      o,
    );
    // Later leader services (services, rolling updates) are added to this list.
    leadership.add(dispatcher, monitor, restarts, placement, new Drain({ state, lead }), new Services({ state, lead, log }), usage, new TaskGc({ state, lead, log }, o));
    this.leadership = leadership;
    this.dispatcher = dispatcher;
    this.placement = placement;

    // ---- routes
    registerKv({ ...io, appliedIndex: () => node.appliedIndex() });
    registerTaskRemove(io);
    const admin = new ClusterAdmin({
      id: this.id,
      addr: this.addr,
      node,
      state,
      routes: this,
      writes: this,
      link: this.link,
      log,
      started: this.started,
      clusterId: () => ops.clusterId(),
      storageId: () => this.storage.meta.storageId,
      probing: () => this.phase === 'probing',
      wiped: () => this.guard?.wiped,
      noLeaderError: () => this.noLeaderError(),
    });
    admin.register();
    this.admin = admin;
    registerApi(
      { ...io, members, appliedIndex: () => node.appliedIndex(), link: this.link, unplaced: placement, heartbeats: dispatcher },
      {
        workerToken: workerToken(this.opts.secret),
        nodeAuth: (n) => nodeCredential(this.opts.secret, n, nodeEpoch(state)),
        allowPrivileged: this.opts.allowPrivileged,
      },
    );
    registerExecProxy({ ...io, members, link: this.link, nodeAuth: (n) => nodeCredential(this.opts.secret, n, nodeEpoch(state)), log });
    registerUsageRoutes({ routes: this, writes: this, usage });
    registerServices({ ...io, appliedIndex: () => node.appliedIndex(), unplaced: placement }, { allowPrivileged: this.opts.allowPrivileged });
    registerWeb({ routes: this, members, state, reads: this, unplaced: placement, status: () => admin.localStatus(), setStatic: (h) => this.setStatic(h) });
    registerOps({ ...io, id: this.id, node, sessionCount: () => dispatcher.sessionCount() }, ops, log);
    const ca = this.link.tls?.ca ?? null;
    registerAuth({ ...io, tls: this.link.tls !== undefined, ca }, log);
    registerJoin(io, { id: this.id, secret: this.opts.secret, caKey: this.opts.caKey, ca }, log);
    secrets.register();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.guard?.stop();
    if (this.promoteTimer) clearInterval(this.promoteTimer);
    this.leadership?.close();
    this.dispatcher?.close();
    await this.node.stop();
    this.trace?.close();
    await this.transport.close();
    const closed = new Promise<void>((r) => this.server.close(() => r()));
    this.server.closeAllConnections?.();
    for (const s of this.sockets) s.destroy();
    await closed;
    await this.storage.close();
  }

  /** A refused start on a store this start created: stop, and take the new store away again. */
  private async abandonFreshStore(): Promise<void> {
    this.closed = true;
    this.trace?.close();
    await this.transport.close();
    this.server.closeAllConnections?.();
    await new Promise<void>((r) => this.server.close(() => r()));
    await this.storage.close();
    const dir = this.storage.path;
    if (this.storage.foundAs === 'absent') await fsp.rm(dir, { recursive: true, force: true }).catch(() => {});
    else if (this.storage.foundAs === 'empty') {
      for (const n of await fsp.readdir(dir).catch(() => [] as string[])) if (n !== 'tls') await fsp.rm(path.join(dir, n), { recursive: true, force: true }).catch(() => {});
    }
  }

  /** A manager's /v1/status (over TLS when the cluster has it). */
  statusOf(addr: string, timeoutMs: number): Promise<unknown> {
    return getJson(addr, '/v1/status', timeoutMs, this.link);
  }

  /** How this manager asks its peers for their status (incarnation.ts), with `extra` ports. */
  private peerProbe<T extends object>(extra: T): T & PeerProbe {
    return { ...extra, id: this.id, addr: this.addr, statusOf: (addr, ms) => this.statusOf(addr, ms), peerAddr: (id) => this.peerAddr(id) };
  }

  setStatic(h: (req: http.IncomingMessage, res: http.ServerResponse) => boolean): void {
    this.staticHandler = h;
  }

  // ------------------------------------------------------------------ leadership

  term(): number {
    return this.node.status().term;
  }

  isLeader(): boolean {
    return this.node.isLeader();
  }

  /** Resolves once a leader is known (or rejects after the wait). */
  async waitForLeader(ms = this.leaderWaitMs): Promise<NodeId> {
    const deadline = monoNow() + ms;
    for (;;) {
      const l = this.node.leader();
      if (l) return l;
      if (monoNow() >= deadline || this.quorumLost()) throw this.noLeaderError();
      await this.leaderChange.wait(Math.min(100, deadline - monoNow()));
    }
  }

  /** Leaderless for a while with too few voters reachable to elect one: waiting will not help. */
  private quorumLost(): boolean {
    if (this.node.leader() || this.node.msSinceLeaderChange() < 2 * (this.opts.electionMs ?? 300)) return false;
    const voters = this.node.status().conf.voters;
    const now = monoNow();
    return voters.filter((v) => v === this.id || now - (this.node.lastContact.get(v) ?? -Infinity) < 2000).length <= voters.length / 2;
  }

  noLeaderError(): FlotillaError {
    const st = this.node.status();
    const voters = st.conf.voters;
    const now = monoNow();
    const reachable = voters.filter((v) => v === this.id || now - (this.node.lastContact.get(v) ?? -Infinity) < 2000).length;
    return new FlotillaError(
      'unavailable',
      `no leader: ${reachable} of ${voters.length} managers reachable; writes fail until a quorum (${Math.floor(voters.length / 2) + 1}) is back. Stale reads work with ?stale=true; see docs/operations.md`,
      { leader: null },
    );
  }

  /** Proposes a command on the leader and returns its result value (throws its error). */
  async propose(cmd: Command, timeoutMs = 10_000): Promise<unknown> {
    // A write that would grow the state past the quota is refused here, before it is proposed.
    const data = encodeCommand(applyQuota(cmd, this.opts.quotaBytes ?? DEFAULT_QUOTA_BYTES, this.state));
    let res: unknown;
    try {
      this.ops?.metrics.proposals.inc();
      res = await this.node.propose(data, timeoutMs);
    } catch (e) {
      this.ops?.metrics.proposalFailures.inc();
      throw raftToFlotilla(e);
    }
    const r = res as { ok: boolean; value?: unknown; error?: { code: string; message: string } };
    if (r && r.ok === false && r.error) throw toFlotillaError(r.error);
    return r?.value;
  }

  /** A linearizable read barrier (ReadIndex), retried across a leader change until the deadline. */
  async linearizable(timeoutMs = 5000): Promise<void> {
    const deadline = monoNow() + timeoutMs;
    for (;;) {
      try {
        await this.node.readBarrier(Math.max(1, Math.min(2000, deadline - monoNow())));
        return;
      } catch (e) {
        if (monoNow() >= deadline) throw e instanceof RaftError && e.code === 'not_leader' ? this.noLeaderError() : raftToFlotilla(e);
        if (e instanceof RaftError && e.code === 'not_leader' && !this.node.leader()) {
          // waitForLeader fails at once while the quorum is lost: pause, or this loop spins the CPU.
          await this.waitForLeader(Math.max(1, deadline - monoNow())).catch(() => sleep(20));
        } else await sleep(20);
      }
    }
  }

  // ------------------------------------------------------------------ HTTP

  private async onRequest(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    try {
      if (await this.router.handle(req, res)) return;
      if (this.staticHandler?.(req, res)) return;
      const err = new FlotillaError('not_found', `Cannot ${req.method} ${req.url}: no such endpoint`);
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify(err.toJSON()));
    } catch (e) {
      this.log.error('request failed', { err: String(e) });
      if (!res.headersSent) {
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end(JSON.stringify(toFlotillaError(e).toJSON()));
      }
    }
  }

  /**
   * Runs a write on the leader: here if this manager leads, else forwarded over HTTP to the
   * leader (waiting for an election if there is none).
   */
  async onLeader(ctx: RequestContext, fn: () => Promise<unknown>): Promise<unknown> {
    const deadline = monoNow() + this.leaderWaitMs;
    for (;;) {
      // The client gave up: stop retrying on its behalf.
      if (ctx.req.socket.destroyed) throw new FlotillaError('unavailable', 'the client went away');
      if (this.node.isLeader()) {
        try {
          return await fn();
        } catch (e) {
          const fe = toFlotillaError(e);
          // Lost leadership mid-write: if time remains, forward to the new leader.
          if ((fe.code === 'not_leader' || fe.code === 'unavailable') && !this.node.isLeader() && monoNow() < deadline && ctx.req.headers[FORWARDED] === undefined) {
            await sleep(20);
            continue;
          }
          throw fe;
        }
      }
      const leader = await this.waitForLeader(Math.max(1, deadline - monoNow()));
      if (leader === this.id) continue;
      if (ctx.req.headers[FORWARDED] !== undefined) {
        throw new FlotillaError('not_leader', `not the leader; the leader is ${leader}`, { leader: this.node.members.get(leader) ?? leader, httpStatus: 503 });
      }
      const addr = this.peerAddr(leader);
      if (!addr) throw this.noLeaderError();
      try {
        return await this.forward(ctx, addr);
      } catch (e) {
        const fe = toFlotillaError(e);
        if (monoNow() < deadline && (fe.code === 'unavailable' || fe.code === 'not_leader')) {
          // The leader is gone or moved: go on as soon as this node knows another one.
          await this.leaderChange.wait(50);
          continue;
        }
        throw fe;
      }
    }
  }

  /** Where this manager dials a peer: its --peer-route if any, else its advertised address. */
  peerAddr(id: NodeId): string | undefined {
    return this.opts.peerRoutes?.[id] ?? this.node.members.get(id);
  }

  private async forward(ctx: RequestContext, addr: string): Promise<Reply> {
    const body = await ctx.body();
    const [host, port] = splitAddr(addr);
    const headers: Record<string, string> = { [FORWARDED]: this.id, 'x-request-id': ctx.requestId };
    if (ctx.req.headers['content-type']) headers['content-type'] = String(ctx.req.headers['content-type']);
    if (ctx.req.headers.authorization) headers.authorization = String(ctx.req.headers.authorization);
    // Authorised here by the admin client certificate, which this link cannot pass on: vouch
    // for it (the leader believes the header only from a manager's certificate).
    else if (hasAdminCert(ctx.req)) headers[FORWARDED_ADMIN_CERT] = this.id;
    return new Promise((resolve, reject) => {
      const req = this.link.request(
        { host, port, method: ctx.method, path: ctx.req.url, headers: { ...headers, 'content-length': String(body.length) }, timeout: this.leaderWaitMs + 10_000 },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const buf = Buffer.concat(chunks);
            const status = res.statusCode ?? 502;
            const ct = String(res.headers['content-type'] ?? '');
            if (status >= 400 && ct.includes('json')) {
              try {
                const j = JSON.parse(buf.toString('utf8')) as { error?: { code: string } };
                if (j.error && (j.error.code === 'not_leader' || j.error.code === 'unavailable')) {
                  reject(toFlotillaError(j.error));
                  return;
                }
              } catch {
                /* pass the body through */
              }
            }
            resolve(new Reply(status, buf, { 'content-type': ct || 'application/octet-stream' }));
          });
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new FlotillaError('timeout', `the leader at ${addr} did not answer`)));
      req.on('error', (e) => reject(e instanceof FlotillaError ? e : new FlotillaError('unavailable', `leader ${addr}: ${e.message}`)));
      req.end(body);
    });
  }

  /** Reads: linearizable by default, local with ?stale=true. */
  async readable(ctx: RequestContext): Promise<void> {
    const stale = ctx.query.get('stale');
    if (stale === 'true' || stale === '1') return;
    if (stale !== null && stale !== 'false' && stale !== '0') {
      throw new FlotillaError('bad_request', `Cannot read as 'stale' must be true or false, got '${stale}'`);
    }
    await this.linearizable();
  }

}

/** Validation of a store's content run on its scratch copy before the directory is opened. */
function checkPersisted(st: import('../raft/types.js').PersistedState): void {
  if (!st.snapshot || st.snapshot.data.length === 0) return;
  let ns: { app?: unknown };
  try {
    ns = unpack(st.snapshot.data) as { app?: unknown };
  } catch (e) {
    throw new Error(`snapshot ${st.snapshot.meta.index} cannot be decoded: ${(e as Error).message}`);
  }
  if (!ns || !(ns.app instanceof Uint8Array)) throw new Error(`snapshot ${st.snapshot.meta.index} holds no state`);
  try {
    ClusterState.restore(ns.app);
  } catch (e) {
    throw new Error(`snapshot ${st.snapshot.meta.index} holds a state that cannot be loaded: ${(e as Error).message}`);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
