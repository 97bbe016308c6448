// WebSocket transport between managers.
//
// Every node dials one outbound connection to each peer it sends to and carries its Raft messages
// on it; it receives on the connections its peers dial to it. A pair of nodes thus uses two
// connections, one per direction, which keeps the state of each simple.
//
// The parts: transport/handshake.ts (the mutual authentication every connection opens with),
// transport/outbound.ts (the connection and queue to each peer), transport/inbound.ts (the
// connections peers dial to us), transport/upgrade.ts (routing HTTP upgrades by path) and
// transport/common.ts (settings, counters, close codes). PeerTransport below ties them together.
import type { Server } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { WebSocketServer } from 'ws';
import { identityOf, type NodeTls } from '../tls/pki.js';
import { DEFAULT_MAX_FRAME_BYTES } from './codec.js';
import type { Message, NodeId } from './types.js';
import { CLOSE_NORMAL, type LogFn, type LogLevel, type Settings, type TransportStats } from './transport/common.js';
import { CLUSTER_HEADER } from './transport/handshake.js';
import { InboundConn, type InboundHost } from './transport/inbound.js';
import { OutboundPeer, type OutboundHost } from './transport/outbound.js';
import { registerUpgradeRoute, type UpgradeHandler } from './transport/upgrade.js';

export type { LogFn, LogLevel, TransportStats } from './transport/common.js';
export { authMac } from './transport/handshake.js';
export { registerUpgradeRoute, type UpgradeHandler } from './transport/upgrade.js';

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
  /** An established connection with the peer (either direction) closed: it may be dead (core-linkdown.ts). */
  onLinkDown?: (peer: NodeId) => void;
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

export class PeerTransport implements OutboundHost, InboundHost {
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

  /**
   * Dials the peer now if no connection to it is open or being made, with nothing to send (an
   * idle link, kept by pings). A failed dial is not retried until the next call or message.
   */
  warm(id: NodeId): void {
    if (this.closed || id === this.id || this.removedPeers.has(id)) return;
    let peer = this.peers.get(id);
    if (!peer) {
      peer = new OutboundPeer(this, this.s, id);
      this.peers.set(id, peer);
    }
    peer.warm();
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

  /** @internal */ linkDown(peer: NodeId): void {
    if (this.closed) return;
    try {
      this.opts.onLinkDown?.(peer);
    } catch (err) {
      this.log('error', 'raft transport: onLinkDown threw', { error: (err as Error).message });
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
