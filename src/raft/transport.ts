// WebSocket transport between managers.
//
// Every node dials one outbound connection to each peer it sends to and carries its Raft messages
// on it; it receives on the connections its peers dial to it. A pair of nodes thus uses two
// connections, one per direction, which keeps the state of each simple.
//
// Authentication (mutual, per connection, the cluster secret never on the wire):
//   server -> client  challenge {id: serverId, nonce: Ns}
//   client -> server  auth {from: clientId, to: serverId, nonce: Nc, addr?, mac: HMAC(secret, "client", ids, addr, Ns, Nc)}
//   server -> client  welcome {mac: HMAC(secret, "server", ids, Ns, Nc)}
// Both nonces are fresh random values per connection, so neither proof can be replayed on another
// connection, and the role label keeps one side's proof from being reflected as the other's.
// Each end also claims its cluster id (an HTTP header on the upgrade request / response) and
// binds it into its proof: a peer of another cluster (e.g. an old member of a cluster rebuilt
// with `flotilla manager recover`) is refused, and both ends learn it (onForeignCluster).
// Nothing but the handshake is accepted before it completes. The handshake authenticates the
// ends; it does not encrypt or sign later frames (use a private network or a TLS terminator).
//
// Snapshots are sent as a snapBegin frame, chunks well below the frame bound and a snapEnd frame
// with the data's SHA-256, interleaved with ordinary messages so heartbeats keep flowing. The
// receiver reassembles and checks them, delivers one Message and acknowledges; the sender then
// reports onSnapshotStatus. Both sides hash chunk by chunk, so a large snapshot never blocks the
// event loop for long.
import { createHash, createHmac, randomBytes, timingSafeEqual, type Hash } from 'node:crypto';
import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { expectServer, identityOf, type NodeTls } from '../tls/pki.js';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import {
  DEFAULT_MAX_FRAME_BYTES,
  FrameError,
  NONCE_BYTES,
  decodeFrame,
  encodeTypedFrame,
  parseFrame,
  type Frame,
} from './codec.js';
import type { Message, NodeId } from './types.js';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogFn = (level: LogLevel, msg: string, fields?: Record<string, unknown>) => void;

export interface PeerTransportOptions {
  id: NodeId;
  /** The cluster secret shared by all managers. */
  secret: string;
  /** Called with every validated message addressed to this node. */
  onMessage: (msg: Message) => void;
  /** This node's own address, told to peers in the handshake (for their logs). */
  advertise?: string;
  /** An authenticated peer told its address in the handshake (lets a joining node answer the leader). */
  onPeerAddr?: (peer: NodeId, addr: string) => void;
  /** "host:port" of a peer (or a full ws:// / wss:// URL); undefined if unknown. */
  resolveAddr: (id: NodeId) => string | undefined;
  /** A connection to the peer failed or dropped: messages may have been lost. */
  onUnreachable?: (peer: NodeId) => void;
  /** A snapshot sent to the peer was received (true) or its transfer failed (false). */
  onSnapshotStatus?: (peer: NodeId, ok: boolean) => void;
  log?: LogFn;
  /** Bound on one frame (and the ws maxPayload). Default 4 MiB. */
  maxFrameBytes?: number;
  /** Snapshot chunk size; capped below the frame bound. Default 512 KiB. */
  snapshotChunkBytes?: number;
  /** Largest snapshot accepted from a peer. Default 1 GiB. */
  maxSnapshotBytes?: number;
  /** Messages queued per peer; the oldest are dropped beyond it (snapshots are kept apart). Default 4096. */
  maxQueue?: number;
  /** Reconnect backoff bounds. Default 50 ms .. 2 s. */
  backoffMinMs?: number;
  backoffMaxMs?: number;
  /** Time allowed for the TCP connect, the upgrade and the handshake. Default 5 s. */
  handshakeTimeoutMs?: number;
  /** How long a sender waits for a snapshot's acknowledgement after its last chunk. Default 60 s. */
  snapshotAckTimeoutMs?: number;
  /** Outbound connections are pinged this often; one without a pong by the next ping is dropped. Default 5 s. */
  pingIntervalMs?: number;
  /**
   * The cluster this node belongs to (null or '': none recorded). Claimed in the handshake and
   * bound into this end's proof; peers that prove another cluster id are refused.
   */
  clusterId?: () => string | null;
  /**
   * A node without a cluster id (a fresh store waiting to join) may adopt the id an
   * authenticated peer proves. Return true if adopted (the connection then proceeds).
   */
  adoptClusterId?: (id: string) => boolean;
  /** An authenticated peer (it knows the secret) proved it belongs to another cluster. */
  onForeignCluster?: (peer: NodeId, clusterId: string | null) => void;
  /** If given, the transport registers itself for upgrades on `path` of this server. */
  server?: Server;
  /** URL path of the Raft endpoint. Default '/raft'. */
  path?: string;
  /**
   * Mutual TLS: dial peers over wss:// with this node's certificate and accept only peers whose
   * certificate (from the same CA) names a manager, and the peer dialed. The HMAC handshake
   * still runs inside (the cluster secret and cluster id stay bound to every link).
   */
  tls?: NodeTls;
  /** Whether a peer that proved its identity may connect (e.g. it is still a member). Default: all. */
  acceptPeer?: (peer: NodeId) => boolean;
}

export interface TransportStats {
  framesSent: number;
  framesReceived: number;
  bytesSent: number;
  bytesReceived: number;
  /** Messages dropped because a peer's queue was full. */
  droppedQueueFull: number;
  /** Messages dropped because they could not fit in a frame. */
  droppedTooLarge: number;
  authFailures: number;
  /** Connections closed because of a malformed, oversized or unexpected frame. */
  badFrames: number;
  snapshotsSent: number;
  snapshotsReceived: number;
}

// ---------------------------------------------------------------------------------------------
// Routing of HTTP upgrades by path, so several WebSocket endpoints share one port.

export type UpgradeHandler = (req: IncomingMessage, socket: Duplex, head: Buffer) => void;

const upgradeRoutes = new WeakMap<Server, Map<string, UpgradeHandler>>();

/**
 * Routes the `upgrade` events of `server` by URL path: `handler` gets the upgrades of `path`.
 * The first registration installs one `upgrade` listener; upgrades for unregistered paths are
 * answered with 404. Returns a function that removes the route.
 */
export function registerUpgradeRoute(server: Server, path: string, handler: UpgradeHandler): () => void {
  let routes = upgradeRoutes.get(server);
  if (!routes) {
    const table = new Map<string, UpgradeHandler>();
    routes = table;
    upgradeRoutes.set(server, table);
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      let pathname: string | undefined;
      try {
        pathname = new URL(req.url ?? '/', 'http://localhost').pathname;
      } catch {
        pathname = undefined;
      }
      const h = pathname === undefined ? undefined : table.get(pathname);
      if (h) {
        h(req, socket, head);
        return;
      }
      socket.on('error', () => {});
      socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    });
  }
  if (routes.has(path)) throw new Error(`an upgrade handler for ${path} is already registered`);
  routes.set(path, handler);
  const table = routes;
  return () => {
    if (table.get(path) === handler) table.delete(path);
  };
}

// ---------------------------------------------------------------------------------------------
// Handshake proofs

/**
 * The proof one end of a connection gives: HMAC-SHA256 with the cluster secret over a label,
 * the role, both node ids, both nonces and (if any) the cluster id this end claims (each
 * length-prefixed, so fields cannot run together).
 */
export function authMac(
  secret: string,
  role: 'client' | 'server',
  ids: { client: string; server: string; clientAddr?: string },
  nonces: { client: Uint8Array; server: Uint8Array },
  clusterId?: string | null,
): Buffer {
  const h = createHmac('sha256', secret);
  const parts: (string | Uint8Array)[] = ['flotilla-raft-auth-v1', role, ids.client, ids.server, ids.clientAddr ?? '', nonces.server, nonces.client];
  if (clusterId) parts.push('cluster', clusterId);
  for (const part of parts) {
    const b = typeof part === 'string' ? Buffer.from(part, 'utf8') : part;
    const len = Buffer.allocUnsafe(4);
    len.writeUInt32BE(b.length);
    h.update(len);
    h.update(b);
  }
  return h.digest();
}

function macEquals(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

function rawToBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

// WebSocket close codes used here.
const CLOSE_NORMAL = 1000;
const CLOSE_GOING_AWAY = 1001;
const CLOSE_UNSUPPORTED = 1003; // text frame
const CLOSE_INVALID = 1007; // malformed frame
const CLOSE_POLICY = 1008; // authentication / protocol violation

// ---------------------------------------------------------------------------------------------

interface Settings {
  maxFrameBytes: number;
  chunkBytes: number;
  maxSnapshotBytes: number;
  maxQueue: number;
  backoffMinMs: number;
  backoffMaxMs: number;
  handshakeTimeoutMs: number;
  snapshotAckTimeoutMs: number;
  pingIntervalMs: number;
  path: string;
  /** Pause sending while this many bytes are buffered on a socket. */
  highWater: number;
}

/** Largest frame accepted before the handshake completes (the auth frame is far smaller). */
const MAX_HANDSHAKE_FRAME = 4096;

/** Header carrying the cluster id an end claims (proved by its handshake MAC). */
const CLUSTER_HEADER = 'x-flotilla-cluster';

export class PeerTransport {
  readonly id: NodeId;
  private readonly opts: PeerTransportOptions;
  private readonly s: Settings;
  private readonly wss: WebSocketServer;
  private readonly peers = new Map<NodeId, OutboundPeer>();
  /** Peers removed from the cluster: never recreated by send() (removed ids are not reused). */
  private readonly removedPeers = new Set<NodeId>();
  private readonly inbound = new Set<InboundConn>();
  private readonly unregister: (() => void) | undefined;
  private closed = false;
  /** @internal */ readonly counters: TransportStats = {
    framesSent: 0,
    framesReceived: 0,
    bytesSent: 0,
    bytesReceived: 0,
    droppedQueueFull: 0,
    droppedTooLarge: 0,
    authFailures: 0,
    badFrames: 0,
    snapshotsSent: 0,
    snapshotsReceived: 0,
  };

  constructor(opts: PeerTransportOptions) {
    if (!opts.id) throw new Error('PeerTransport: id is required');
    if (!opts.secret) throw new Error('PeerTransport: a non-empty cluster secret is required');
    const maxFrameBytes = opts.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    if (maxFrameBytes < 8192) throw new Error('PeerTransport: maxFrameBytes must be at least 8 KiB');
    const chunkBytes = Math.min(opts.snapshotChunkBytes ?? 512 * 1024, maxFrameBytes - 4096);
    this.id = opts.id;
    this.opts = opts;
    this.s = {
      maxFrameBytes,
      chunkBytes,
      maxSnapshotBytes: opts.maxSnapshotBytes ?? 1024 * 1024 * 1024,
      maxQueue: opts.maxQueue ?? 4096,
      backoffMinMs: opts.backoffMinMs ?? 50,
      backoffMaxMs: opts.backoffMaxMs ?? 2000,
      handshakeTimeoutMs: opts.handshakeTimeoutMs ?? 5000,
      snapshotAckTimeoutMs: opts.snapshotAckTimeoutMs ?? 60_000,
      pingIntervalMs: opts.pingIntervalMs ?? 5000,
      path: opts.path ?? '/raft',
      highWater: Math.max(1024 * 1024, 2 * chunkBytes),
    };
    this.wss = new WebSocketServer({ noServer: true, maxPayload: maxFrameBytes, perMessageDeflate: false, clientTracking: false });
    this.wss.on('headers', (headers: string[]) => {
      const c = this.clusterId;
      if (c) headers.push(`${CLUSTER_HEADER}: ${c}`);
    });
    if (opts.server) this.unregister = registerUpgradeRoute(opts.server, this.s.path, this.handleUpgrade);
  }

  /** URL path this transport serves. */
  get path(): string {
    return this.s.path;
  }

  /**
   * Takes over an HTTP upgrade request for the Raft endpoint (for servers that route upgrades
   * themselves; with the `server` option this is registered automatically).
   */
  readonly handleUpgrade: UpgradeHandler = (req, socket, head) => {
    if (this.closed) {
      socket.destroy();
      return;
    }
    const addr = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
    let certId: NodeId | null = null;
    if (this.opts.tls) {
      // Refused before the upgrade: no frame of any kind from a peer without a manager certificate of this cluster's CA.
      const tls = req.socket as TLSSocket;
      const who = typeof tls.getPeerCertificate === 'function' && tls.authorized ? identityOf(tls.getPeerCertificate()) : null;
      if (!who || who.role !== 'manager') {
        this.counters.authFailures++;
        const why = typeof tls.getPeerCertificate !== 'function' ? 'not over TLS' : !tls.authorized ? `no valid certificate (${String(tls.authorizationError ?? 'none presented')})` : 'its certificate does not name a manager';
        this.log('warn', `peer auth failed from ${addr}: ${why}`, { addr });
        socket.end('HTTP/1.1 403 Forbidden\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
        return;
      }
      certId = who.id;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      if (this.closed) {
        ws.terminate();
        return;
      }
      const claimed = req.headers[CLUSTER_HEADER];
      const conn = new InboundConn(this, this.s, ws, addr, typeof claimed === 'string' ? claimed : '', certId);
      this.inbound.add(conn);
      ws.once('close', () => this.inbound.delete(conn));
    });
  };

  /**
   * Queues messages for their peers and returns at once. Delivery is best effort (Raft tolerates
   * loss): a failed connection is reported through onUnreachable.
   */
  send(msgs: Message[]): void {
    if (this.closed) return;
    for (const m of msgs) {
      if (m.to === this.id) {
        this.log('warn', 'raft transport: dropping a message addressed to this node', { type: m.type });
        continue;
      }
      let peer = this.peers.get(m.to);
      if (!peer) {
        if (this.removedPeers.has(m.to)) continue; // a removed member: ids are never reused
        peer = new OutboundPeer(this, this.s, m.to);
        this.peers.set(m.to, peer);
      }
      peer.enqueue(m);
    }
  }

  /** Forgets a peer (e.g. removed from the cluster): closes its connection and drops its queue. */
  removePeer(id: NodeId): void {
    this.removedPeers.add(id);
    const peer = this.peers.get(id);
    if (!peer) return;
    this.peers.delete(id);
    peer.shutdown('peer removed');
  }

  stats(): TransportStats & { peers: Record<NodeId, { connected: boolean; queued: number }> } {
    const peers: Record<NodeId, { connected: boolean; queued: number }> = {};
    for (const [id, p] of this.peers) peers[id] = { connected: p.connected, queued: p.queued };
    return { ...this.counters, peers };
  }

  /** Closes every connection and timer. Nothing is delivered or reported afterwards. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.unregister?.();
    const waits: Promise<void>[] = [];
    for (const p of this.peers.values()) waits.push(p.shutdown('transport closed'));
    this.peers.clear();
    for (const c of this.inbound) waits.push(c.shutdown());
    this.inbound.clear();
    await Promise.all(waits);
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
  }

  // --- used by the connection classes ---

  /** @internal */ get isClosed(): boolean {
    return this.closed;
  }

  /** @internal */ peerAddr(id: NodeId, addr: string): void {
    this.opts.onPeerAddr?.(id, addr);
  }

  /** @internal */ get advertise(): string | undefined {
    return this.opts.advertise;
  }

  /** @internal */ get tls(): NodeTls | undefined {
    return this.opts.tls;
  }

  /** @internal */ accepts(peer: NodeId): boolean {
    return this.opts.acceptPeer?.(peer) ?? true;
  }

  /** @internal */ get secret(): string {
    return this.opts.secret;
  }

  /** @internal This node's cluster id ('' if none). */
  get clusterId(): string {
    return this.opts.clusterId?.() ?? '';
  }

  /** @internal */ adoptCluster(id: string): boolean {
    if (this.clusterId || !id || !this.opts.adoptClusterId) return false;
    try {
      return this.opts.adoptClusterId(id);
    } catch {
      return false;
    }
  }

  /** @internal */ foreignCluster(peer: NodeId, clusterId: string): void {
    if (this.closed) return;
    try {
      this.opts.onForeignCluster?.(peer, clusterId || null);
    } catch (err) {
      this.log('error', 'raft transport: onForeignCluster threw', { error: (err as Error).message });
    }
  }

  /** @internal */ log(level: LogLevel, msg: string, fields?: Record<string, unknown>): void {
    try {
      this.opts.log?.(level, msg, fields);
    } catch {
      // Logging must never break the transport.
    }
  }

  /** @internal */ resolveAddr(id: NodeId): string | undefined {
    return this.opts.resolveAddr(id);
  }

  /** @internal */ deliver(msg: Message): void {
    if (this.closed) return;
    try {
      this.opts.onMessage(msg);
    } catch (err) {
      this.log('error', 'raft transport: onMessage threw', { error: (err as Error).message, type: msg.type, from: msg.from });
    }
  }

  /** @internal */ reportUnreachable(peer: NodeId): void {
    if (this.closed) return;
    try {
      this.opts.onUnreachable?.(peer);
    } catch (err) {
      this.log('error', 'raft transport: onUnreachable threw', { error: (err as Error).message });
    }
  }

  /** @internal */ reportSnapshot(peer: NodeId, ok: boolean): void {
    if (this.closed) return;
    try {
      this.opts.onSnapshotStatus?.(peer, ok);
    } catch (err) {
      this.log('error', 'raft transport: onSnapshotStatus threw', { error: (err as Error).message });
    }
  }

  /** @internal A newly authenticated inbound connection from `peer` replaces any older one. */
  replaceInbound(conn: InboundConn): void {
    for (const other of this.inbound) {
      if (other !== conn && other.peer === conn.peer) {
        this.log('debug', 'raft transport: replacing an older connection from peer', { peer: conn.peer });
        other.close(CLOSE_NORMAL, 'replaced by a newer connection');
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Outbound: one connection and one queue per peer.

interface SnapshotSend {
  id: number;
  msg: Message;
  data: Uint8Array;
  hash: Hash;
  chunks: number;
  /** Next chunk to send; -1 before the snapBegin frame went out. */
  next: number;
  ackTimer?: NodeJS.Timeout;
}

let snapshotIds = 0;

class OutboundPeer {
  private ws: WebSocket | null = null;
  private authed = false;
  /** Message queue: items[head..] are pending (a deque without O(n) shifts). */
  private items: Message[] = [];
  private head = 0;
  private active: SnapshotSend | null = null;
  private pendingSnap: SnapshotSend | null = null;
  private attempt = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private handshakeTimer: NodeJS.Timeout | undefined;
  private pingTimer: NodeJS.Timeout | undefined;
  private awaitingPong = false;
  private pumping = false;
  private stopped = false;
  private dropsSinceLog = 0;

  constructor(
    private readonly t: PeerTransport,
    private readonly s: Settings,
    readonly peer: NodeId,
  ) {}

  get connected(): boolean {
    return this.authed;
  }

  get queued(): number {
    return this.items.length - this.head;
  }

  enqueue(m: Message): void {
    if (m.type === 'snap') {
      this.queueSnapshot(m);
    } else {
      this.items.push(m);
      if (this.queued > this.s.maxQueue) {
        this.items[this.head++] = undefined as unknown as Message; // release the reference
        this.t.counters.droppedQueueFull++;
        if (this.dropsSinceLog++ === 0) {
          this.t.log('warn', 'raft transport: queue full, dropping the oldest messages', { peer: this.peer, limit: this.s.maxQueue });
        }
      }
      if (this.head > 1024 && this.head * 2 > this.items.length) {
        this.items = this.items.slice(this.head);
        this.head = 0;
      }
    }
    if (this.authed) this.pump();
    else this.connectSoon();
  }

  private queueSnapshot(m: Message): void {
    const data = m.snapshot?.data ?? new Uint8Array(0);
    const snap: SnapshotSend = {
      id: ++snapshotIds,
      msg: { ...m, snapshot: { meta: m.snapshot!.meta, data: new Uint8Array(0) } },
      data,
      hash: createHash('sha256'),
      chunks: Math.ceil(data.length / this.s.chunkBytes),
      next: -1,
    };
    if (this.pendingSnap) {
      // Only the newest snapshot is worth sending; the older one counts as failed.
      this.t.log('debug', 'raft transport: a newer snapshot replaces one not yet sent', { peer: this.peer });
      this.t.reportSnapshot(this.peer, false);
    }
    this.pendingSnap = snap;
  }

  /** Connects now unless a connection exists or a reconnect is already scheduled. */
  private connectSoon(): void {
    if (this.ws || this.retryTimer || this.stopped || this.t.isClosed) return;
    this.connect();
  }

  private hasWork(): boolean {
    return this.queued > 0 || this.pendingSnap !== null || this.active !== null;
  }

  private connect(): void {
    const addr = this.t.resolveAddr(this.peer);
    if (!addr) {
      this.t.log('warn', 'raft transport: no address for peer', { peer: this.peer });
      this.t.reportUnreachable(this.peer);
      this.scheduleRetry();
      return;
    }
    const tls = this.t.tls;
    const url = addr.includes('://') ? addr : `${tls ? 'wss' : 'ws'}://${addr}${this.s.path}`;
    let ws: WebSocket;
    try {
      ws = new WebSocket(url, {
        ...(tls ? { ca: tls.ca, cert: tls.cert, key: tls.key, checkServerIdentity: expectServer(this.peer) } : {}),
        perMessageDeflate: false,
        maxPayload: this.s.maxFrameBytes,
        handshakeTimeout: this.s.handshakeTimeoutMs,
        headers: { 'x-flotilla-node': this.t.id, ...(this.t.clusterId ? { [CLUSTER_HEADER]: this.t.clusterId } : {}) },
      });
    } catch (err) {
      this.t.log('warn', 'raft transport: cannot dial peer', { peer: this.peer, url, error: (err as Error).message });
      this.t.reportUnreachable(this.peer);
      this.scheduleRetry();
      return;
    }
    this.ws = ws;
    this.authed = false;
    const clientNonce = randomBytes(NONCE_BYTES);
    const ownCluster = this.t.clusterId;
    let serverCluster = '';
    ws.once('upgrade', (res) => {
      const c = res.headers[CLUSTER_HEADER];
      serverCluster = typeof c === 'string' ? c : '';
    });
    let serverNonce: Uint8Array | null = null;
    this.handshakeTimer = setTimeout(() => {
      this.t.log('warn', 'raft transport: handshake with peer timed out', { peer: this.peer, url });
      ws.terminate();
    }, this.s.handshakeTimeoutMs);

    ws.on('message', (data, isBinary) => {
      if (this.ws !== ws) return;
      const buf = rawToBuffer(data);
      let frame: Frame;
      try {
        if (!isBinary) throw new FrameError('invalid', 'text frame');
        frame = parseFrame(decodeFrame(buf, this.s.maxFrameBytes));
      } catch (err) {
        this.t.counters.badFrames++;
        this.t.log('warn', `raft transport: malformed frame from peer ${this.peer}`, { url, error: (err as Error).message });
        ws.close(CLOSE_INVALID, 'malformed frame');
        return;
      }
      this.t.counters.framesReceived++;
      this.t.counters.bytesReceived += buf.length;
      if (!serverNonce) {
        if (frame.k !== 'challenge') return this.protocolError(ws, `expected a challenge, got ${frame.k}`);
        if (frame.id !== this.peer) {
          this.t.log('error', `raft transport: dialed peer ${this.peer} at ${url} but reached node ${frame.id}`, { peer: this.peer, url });
          ws.close(CLOSE_POLICY, 'unexpected node');
          return;
        }
        serverNonce = frame.nonce;
        const ids = { client: this.t.id, server: this.peer, clientAddr: this.t.advertise };
        const mac = authMac(this.t.secret, 'client', ids, { client: clientNonce, server: serverNonce }, ownCluster);
        this.write(ws, { k: 'auth', from: this.t.id, to: this.peer, nonce: clientNonce, mac, ...(this.t.advertise ? { addr: this.t.advertise } : {}) });
        return;
      }
      if (!this.authed) {
        if (frame.k !== 'welcome') return this.protocolError(ws, `expected a welcome, got ${frame.k}`);
        const ids = { client: this.t.id, server: this.peer, clientAddr: this.t.advertise };
        const expected = authMac(this.t.secret, 'server', ids, { client: clientNonce, server: serverNonce }, serverCluster);
        if (!macEquals(frame.mac, expected)) {
          this.t.counters.authFailures++;
          this.t.log('warn', `peer auth failed from ${url}: peer ${this.peer} could not prove it knows the cluster secret`, {
            peer: this.peer,
          });
          ws.close(CLOSE_POLICY, 'authentication failed');
          return;
        }
        if (serverCluster !== ownCluster) {
          this.t.counters.authFailures++;
          this.t.log('error', `raft transport: peer ${this.peer} belongs to another cluster (${serverCluster || 'none'}; this node: ${ownCluster || 'none'}); refused`, {
            peer: this.peer,
            url,
          });
          ws.close(CLOSE_POLICY, 'different cluster');
          this.t.foreignCluster(this.peer, serverCluster);
          return;
        }
        clearTimeout(this.handshakeTimer);
        this.authed = true;
        this.attempt = 0;
        this.dropsSinceLog = 0;
        this.startPings(ws);
        this.t.log('debug', 'raft transport: connected to peer', { peer: this.peer, url });
        this.pump();
        return;
      }
      if (frame.k !== 'snapAck') return this.protocolError(ws, `unexpected ${frame.k} frame`);
      this.onSnapshotAck(frame.id, frame.ok, frame.error);
    });

    ws.on('pong', () => {
      this.awaitingPong = false;
    });

    ws.on('error', (err) => {
      // 'close' follows; this only adds the reason to the log.
      this.t.log('debug', 'raft transport: connection error', { peer: this.peer, url, error: err.message });
    });

    ws.on('close', (code, reason) => {
      if (this.ws !== ws) return;
      const wasAuthed = this.authed;
      this.ws = null;
      this.authed = false;
      clearTimeout(this.handshakeTimer);
      clearInterval(this.pingTimer);
      if (this.stopped || this.t.isClosed) return;
      this.t.log(wasAuthed ? 'info' : 'debug', 'raft transport: connection to peer closed', {
        peer: this.peer,
        url,
        code,
        reason: reason.toString(),
      });
      this.failActiveSnapshot('connection closed');
      this.t.reportUnreachable(this.peer);
      // After a failed attempt the next one waits for the backoff even if nothing is queued yet;
      // the retry itself only dials if there is something to send.
      if (this.hasWork() || !wasAuthed) this.scheduleRetry();
    });
  }

  private protocolError(ws: WebSocket, what: string): void {
    this.t.counters.badFrames++;
    this.t.log('warn', `raft transport: protocol error from peer ${this.peer}: ${what}`, { peer: this.peer });
    ws.close(CLOSE_POLICY, 'protocol error');
  }

  private startPings(ws: WebSocket): void {
    this.awaitingPong = false;
    this.pingTimer = setInterval(() => {
      if (this.awaitingPong) {
        this.t.log('warn', 'raft transport: peer stopped answering pings', { peer: this.peer });
        ws.terminate();
        return;
      }
      this.awaitingPong = true;
      ws.ping();
    }, this.s.pingIntervalMs);
    this.pingTimer.unref?.();
  }

  /** Capped exponential backoff with jitter: a delay in [d/2, d], d = min * 2^attempt capped at max. */
  private scheduleRetry(): void {
    if (this.retryTimer || this.stopped || this.t.isClosed) return;
    const d = Math.min(this.s.backoffMaxMs, this.s.backoffMinMs * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    const delay = d / 2 + Math.random() * (d / 2);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (!this.stopped && !this.t.isClosed && !this.ws && this.hasWork()) this.connect();
    }, delay);
  }

  /** Sends what is queued while the socket accepts more: messages first, then snapshot chunks. */
  private pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    // Everything queued goes out in one socket write (writev) instead of one syscall per frame.
    const sock = (this.ws as unknown as { _socket?: { cork(): void; uncork(): void } } | null)?._socket;
    sock?.cork();
    try {
      const ws = this.ws;
      while (ws && this.authed && ws.readyState === WebSocket.OPEN && ws.bufferedAmount < this.s.highWater) {
        if (this.queued > 0) {
          const m = this.items[this.head]!;
          this.items[this.head++] = undefined as unknown as Message; // release the reference
          if (this.head === this.items.length) {
            this.items = [];
            this.head = 0;
          }
          for (const frame of this.messageFrames(m)) this.writeRaw(ws, frame);
        } else if (this.active && this.active.next < this.active.chunks && this.active.next >= 0) {
          const a = this.active;
          const start = a.next * this.s.chunkBytes;
          const data = a.data.subarray(start, Math.min(start + this.s.chunkBytes, a.data.length));
          a.hash.update(data);
          this.write(ws, { k: 'snapChunk', id: a.id, seq: a.next, data });
          a.next++;
          if (a.next === a.chunks) this.finishSend(ws, a);
        } else if (!this.active && this.pendingSnap) {
          const a = this.pendingSnap;
          this.pendingSnap = null;
          this.active = a;
          a.next = 0;
          this.write(ws, { k: 'snapBegin', id: a.id, m: a.msg, size: a.data.length, chunks: a.chunks });
          this.t.log('debug', 'raft transport: sending snapshot', { peer: this.peer, bytes: a.data.length, chunks: a.chunks });
          if (a.chunks === 0) this.finishSend(ws, a);
        } else {
          break;
        }
      }
    } finally {
      this.pumping = false;
      sock?.uncork();
    }
  }

  /**
   * Frames for one message. An append too large for one frame is split into consecutive appends
   * (each a valid AppendEntries on its own); any other oversized message is dropped.
   */
  private messageFrames(m: Message): Buffer[] {
    try {
      return [encodeTypedFrame({ k: 'msg', m }, this.s.maxFrameBytes)];
    } catch (err) {
      if (!(err instanceof FrameError) || err.reason !== 'too_large') throw err;
      const ents = m.entries ?? [];
      if (m.type === 'app' && ents.length > 1) {
        const half = Math.ceil(ents.length / 2);
        const firstHalf = ents.slice(0, half);
        const last = firstHalf[firstHalf.length - 1]!;
        return [
          ...this.messageFrames({ ...m, entries: firstHalf }),
          ...this.messageFrames({ ...m, index: last.index, logTerm: last.term, entries: ents.slice(half) }),
        ];
      }
      this.t.counters.droppedTooLarge++;
      this.t.log('error', 'raft transport: message too large for one frame, dropped', {
        peer: this.peer,
        type: m.type,
        maxFrameBytes: this.s.maxFrameBytes,
      });
      return [];
    }
  }

  private write(ws: WebSocket, f: Frame): void {
    this.writeRaw(ws, encodeTypedFrame(f, this.s.maxFrameBytes));
  }

  private writeRaw(ws: WebSocket, frame: Buffer): void {
    this.t.counters.framesSent++;
    this.t.counters.bytesSent += frame.length;
    // The callback runs once the frame is handed to the socket: a chance to send more.
    ws.send(frame, { binary: true }, (err) => {
      if (!err && this.ws === ws) this.pump();
    });
  }

  /** After the last chunk: the digest, then wait for the receiver's acknowledgement. */
  private finishSend(ws: WebSocket, a: SnapshotSend): void {
    this.write(ws, { k: 'snapEnd', id: a.id, sha256: a.hash.digest() });
    a.ackTimer = setTimeout(() => {
      if (this.active !== a) return;
      this.t.log('warn', 'raft transport: no acknowledgement for a snapshot', { peer: this.peer });
      this.active = null;
      this.t.reportSnapshot(this.peer, false);
      this.pump();
    }, this.s.snapshotAckTimeoutMs);
  }

  private onSnapshotAck(id: number, ok: boolean, error?: string): void {
    const a = this.active;
    if (!a || a.id !== id) return; // a late ack of a transfer already given up
    clearTimeout(a.ackTimer);
    this.active = null;
    if (ok) {
      this.t.counters.snapshotsSent++;
      this.t.log('debug', 'raft transport: snapshot delivered', { peer: this.peer, bytes: a.data.length });
    } else {
      this.t.log('warn', 'raft transport: peer rejected a snapshot', { peer: this.peer, error });
    }
    this.t.reportSnapshot(this.peer, ok);
    this.pump();
  }

  private failActiveSnapshot(why: string): void {
    const a = this.active;
    if (!a) return;
    clearTimeout(a.ackTimer);
    this.active = null;
    this.t.log('warn', 'raft transport: snapshot transfer failed', { peer: this.peer, error: why });
    this.t.reportSnapshot(this.peer, false);
  }

  async shutdown(why: string): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.handshakeTimer);
    clearInterval(this.pingTimer);
    if (this.active) clearTimeout(this.active.ackTimer);
    this.active = null;
    this.pendingSnap = null;
    this.items = [];
    this.head = 0;
    const ws = this.ws;
    this.ws = null;
    this.authed = false;
    if (ws && ws.readyState !== WebSocket.CLOSED) {
      const closed = new Promise<void>((resolve) => ws.once('close', () => resolve()));
      if (ws.readyState === WebSocket.CONNECTING) ws.terminate();
      else ws.close(CLOSE_GOING_AWAY, why);
      const timer = setTimeout(() => ws.terminate(), 1000);
      await closed;
      clearTimeout(timer);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Inbound: a connection a peer dialed to us.

interface SnapshotAssembly {
  id: number;
  msg: Message;
  size: number;
  chunks: number;
  /** Preallocated to the announced size (bounded by maxSnapshotBytes). */
  data: Buffer;
  hash: Hash;
  received: number;
  nextSeq: number;
}

class InboundConn {
  /** The authenticated peer, or null during the handshake. */
  peer: NodeId | null = null;
  private readonly nonce = randomBytes(NONCE_BYTES);
  private readonly handshakeTimer: NodeJS.Timeout;
  private assembly: SnapshotAssembly | null = null;

  constructor(
    private readonly t: PeerTransport,
    private readonly s: Settings,
    private readonly ws: WebSocket,
    private readonly addr: string,
    /** The cluster id the peer claimed in its upgrade request ('' if none). */
    private readonly claimedCluster: string = '',
    /** The node id its TLS certificate names (null without TLS). */
    private readonly certId: NodeId | null = null,
  ) {
    this.handshakeTimer = setTimeout(() => {
      this.t.counters.authFailures++;
      this.t.log('warn', `peer auth failed from ${addr}: no handshake within ${s.handshakeTimeoutMs} ms`, { addr });
      ws.terminate();
    }, s.handshakeTimeoutMs);
    ws.on('message', (data, isBinary) => this.onFrame(rawToBuffer(data), isBinary));
    ws.on('error', (err: Error & { code?: string }) => {
      if (err.code?.startsWith('WS_ERR_')) this.t.counters.badFrames++;
      const who = this.peer ? `peer ${this.peer}` : addr;
      if (err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') {
        this.t.log('warn', `raft transport: oversized frame from ${who}, disconnected`, { addr, peer: this.peer, limit: s.maxFrameBytes });
      } else {
        this.t.log('warn', `raft transport: bad data from ${who}, disconnected`, { addr, peer: this.peer, error: err.message });
      }
    });
    ws.on('close', () => {
      clearTimeout(this.handshakeTimer);
      this.assembly = null;
    });
    this.send({ k: 'challenge', id: t.id, nonce: this.nonce });
  }

  private send(f: Frame): void {
    const frame = encodeTypedFrame(f, this.s.maxFrameBytes);
    this.t.counters.framesSent++;
    this.t.counters.bytesSent += frame.length;
    this.ws.send(frame, { binary: true }, () => {});
  }

  close(code: number, reason: string): void {
    this.ws.close(code, reason);
  }

  async shutdown(): Promise<void> {
    clearTimeout(this.handshakeTimer);
    if (this.ws.readyState === WebSocket.CLOSED) return;
    const closed = new Promise<void>((resolve) => this.ws.once('close', () => resolve()));
    this.ws.close(CLOSE_GOING_AWAY, 'transport closed');
    const timer = setTimeout(() => this.ws.terminate(), 1000);
    await closed;
    clearTimeout(timer);
  }

  private reject(code: number, logMsg: string, fields: Record<string, unknown>): void {
    this.t.counters.badFrames++;
    this.t.log('warn', logMsg, { addr: this.addr, peer: this.peer, ...fields });
    this.ws.close(code, code === CLOSE_POLICY ? 'policy violation' : 'malformed frame');
  }

  private onFrame(buf: Buffer, isBinary: boolean): void {
    if (this.t.isClosed || this.ws.readyState !== WebSocket.OPEN) return;
    const who = this.peer ? `peer ${this.peer}` : this.addr;
    if (!isBinary) {
      this.t.counters.badFrames++;
      this.t.log('warn', `raft transport: text frame from ${who}, disconnected`, { addr: this.addr });
      this.ws.close(CLOSE_UNSUPPORTED, 'binary frames only');
      return;
    }
    if (!this.peer && buf.length > MAX_HANDSHAKE_FRAME) {
      // The auth frame is a few hundred bytes: a large frame before authentication is refused
      // unread (decoding a crafted 4 MiB msgpack frame could cost a second of CPU and much memory).
      this.t.counters.authFailures++;
      this.reject(CLOSE_POLICY, `peer auth failed from ${this.addr}: a ${buf.length}-byte frame before authentication`, {});
      return;
    }
    let frame: Frame;
    try {
      frame = parseFrame(decodeFrame(buf, this.s.maxFrameBytes));
    } catch (err) {
      const reason = err instanceof FrameError ? err.reason : 'invalid';
      if (!this.peer) {
        // Garbage before authentication is treated as a failed handshake.
        this.t.counters.authFailures++;
        this.reject(CLOSE_POLICY, `peer auth failed from ${this.addr}: ${(err as Error).message}`, { reason });
      } else {
        this.reject(CLOSE_INVALID, `raft transport: malformed frame from ${who}, disconnected: ${(err as Error).message}`, { reason });
      }
      return;
    }
    this.t.counters.framesReceived++;
    this.t.counters.bytesReceived += buf.length;

    if (!this.peer) {
      this.onHandshake(frame);
      return;
    }
    switch (frame.k) {
      case 'msg':
        if (!this.checkAddressing(frame.m)) return;
        this.t.deliver(frame.m);
        return;
      case 'snapBegin':
        this.onSnapBegin(frame);
        return;
      case 'snapChunk':
        this.onSnapChunk(frame);
        return;
      case 'snapEnd':
        this.onSnapEnd(frame);
        return;
      default:
        this.reject(CLOSE_POLICY, `raft transport: unexpected ${frame.k} frame from ${who}, disconnected`, {});
    }
  }

  private onHandshake(frame: Frame): void {
    if (frame.k !== 'auth') {
      this.t.counters.authFailures++;
      this.reject(CLOSE_POLICY, `peer auth failed from ${this.addr}: expected an auth frame, got ${frame.k}`, {});
      return;
    }
    if (frame.to !== this.t.id) {
      this.t.counters.authFailures++;
      this.reject(CLOSE_POLICY, `peer auth failed from ${this.addr}: it expected node ${frame.to}, this is ${this.t.id}`, { from: frame.from });
      return;
    }
    if (this.certId !== null && frame.from !== this.certId) {
      this.t.counters.authFailures++;
      this.reject(CLOSE_POLICY, `peer auth failed from ${this.addr}: it claims to be ${frame.from} but its certificate names ${this.certId}`, { from: frame.from });
      return;
    }
    const ids = { client: frame.from, server: this.t.id, clientAddr: frame.addr };
    const nonces = { client: frame.nonce, server: this.nonce };
    if (!macEquals(frame.mac, authMac(this.t.secret, 'client', ids, nonces, this.claimedCluster))) {
      this.t.counters.authFailures++;
      this.reject(CLOSE_POLICY, `peer auth failed from ${this.addr}: bad proof of the cluster secret`, { from: frame.from });
      return;
    }
    clearTimeout(this.handshakeTimer);
    const own = this.t.clusterId;
    if (this.claimedCluster !== own && !this.t.adoptCluster(this.claimedCluster)) {
      // Prove our own cluster id (so the peer learns it reliably), then refuse.
      this.t.counters.authFailures++;
      this.send({ k: 'welcome', mac: authMac(this.t.secret, 'server', ids, nonces, own) });
      this.t.log('warn', `raft transport: refused peer ${frame.from} from another cluster (${this.claimedCluster || 'none'}; this node: ${own || 'none'})`, {
        addr: this.addr,
      });
      this.ws.close(CLOSE_POLICY, 'different cluster');
      this.t.foreignCluster(frame.from, this.claimedCluster);
      return;
    }
    // After the cluster-id exchange, so a member of an older lineage (before `manager recover`)
    // still learns that its data is obsolete.
    if (!this.t.accepts(frame.from)) {
      this.t.counters.authFailures++;
      this.reject(CLOSE_POLICY, `peer auth failed from ${this.addr}: ${frame.from} is not a member of this cluster`, { from: frame.from });
      return;
    }
    this.peer = frame.from;
    this.send({ k: 'welcome', mac: authMac(this.t.secret, 'server', ids, nonces, this.t.clusterId) });
    this.t.log('debug', 'raft transport: peer connected', { peer: this.peer, addr: this.addr, advertise: frame.addr });
    if (typeof frame.addr === 'string') this.t.peerAddr(frame.from, frame.addr);
    this.t.replaceInbound(this);
  }

  /** Messages must come from the authenticated peer and be addressed to this node. */
  private checkAddressing(m: Message): boolean {
    if (m.from !== this.peer || m.to !== this.t.id) {
      this.reject(CLOSE_POLICY, `raft transport: misaddressed message from peer ${this.peer}, disconnected`, {
        from: m.from,
        to: m.to,
        type: m.type,
      });
      return false;
    }
    return true;
  }

  private onSnapBegin(f: Extract<Frame, { k: 'snapBegin' }>): void {
    if (!this.checkAddressing(f.m)) return;
    if (f.size > this.s.maxSnapshotBytes) {
      this.t.log('warn', 'raft transport: snapshot from peer exceeds the size limit', { peer: this.peer, size: f.size, limit: this.s.maxSnapshotBytes });
      this.send({ k: 'snapAck', id: f.id, ok: false, error: `snapshot of ${f.size} bytes exceeds the ${this.s.maxSnapshotBytes}-byte limit` });
      return;
    }
    if ((f.size === 0) !== (f.chunks === 0) || f.chunks > f.size) {
      this.reject(CLOSE_INVALID, `raft transport: inconsistent snapshot header from peer ${this.peer}, disconnected`, { size: f.size, chunks: f.chunks });
      return;
    }
    if (this.assembly) this.t.log('warn', 'raft transport: snapshot transfer restarted by peer', { peer: this.peer });
    this.assembly = {
      id: f.id,
      msg: f.m,
      size: f.size,
      chunks: f.chunks,
      data: Buffer.allocUnsafe(f.size),
      hash: createHash('sha256'),
      received: 0,
      nextSeq: 0,
    };
  }

  private onSnapChunk(f: Extract<Frame, { k: 'snapChunk' }>): void {
    const a = this.assembly;
    if (!a || a.id !== f.id) {
      // The start of this transfer was refused (e.g. too large): ignore its chunks.
      return;
    }
    if (f.seq !== a.nextSeq || f.seq >= a.chunks || a.received + f.data.length > a.size) {
      this.assembly = null;
      this.reject(CLOSE_INVALID, `raft transport: out-of-order or oversized snapshot chunk from peer ${this.peer}, disconnected`, {
        seq: f.seq,
        expected: a.nextSeq,
      });
      return;
    }
    a.data.set(f.data, a.received);
    a.hash.update(f.data);
    a.received += f.data.length;
    a.nextSeq++;
  }

  private onSnapEnd(f: Extract<Frame, { k: 'snapEnd' }>): void {
    const a = this.assembly;
    if (!a || a.id !== f.id) return; // refused at its start
    this.assembly = null;
    if (a.received !== a.size || a.nextSeq !== a.chunks || !macEquals(a.hash.digest(), f.sha256)) {
      this.t.log('warn', 'raft transport: snapshot from peer failed its integrity check', { peer: this.peer, size: a.size, received: a.received });
      this.send({ k: 'snapAck', id: a.id, ok: false, error: 'integrity check failed' });
      return;
    }
    this.t.counters.snapshotsReceived++;
    this.t.deliver({ ...a.msg, snapshot: { meta: a.msg.snapshot!.meta, data: a.data } });
    this.send({ k: 'snapAck', id: a.id, ok: true });
  }
}
