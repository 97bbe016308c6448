// The inbound side of the transport: a connection a peer dialed to us. It runs the server half
// of the handshake (challenge, check, welcome), then delivers the peer's messages and reassembles
// and checks the snapshots it streams, acknowledging each.
import { createHash, randomBytes, type Hash } from 'node:crypto';
import { WebSocket } from 'ws';
import { FrameError, NONCE_BYTES, decodeFrame, encodeTypedFrame, parseFrame, type Frame } from '../codec.js';
import type { Message, NodeId } from '../types.js';
import { CLOSE_GOING_AWAY, CLOSE_INVALID, CLOSE_POLICY, CLOSE_UNSUPPORTED, rawToBuffer, type LinkHost, type Settings } from './common.js';
import { MAX_HANDSHAKE_FRAME, authMac, checkAuth, macEquals } from './handshake.js';

/** What an inbound connection uses of its transport. */
export interface InboundHost extends LinkHost {
  /** Whether `peer` (authenticated) may connect. */
  accepts(peer: NodeId): boolean;
  /** Adopts the cluster id an authenticated peer proved (a node without one); true if adopted. */
  adoptCluster(id: string): boolean;
  peerAddr(id: NodeId, addr: string): void;
  deliver(msg: Message): void;
  /** The connection authenticated its peer: older connections from that peer are closed. */
  replaceInbound(conn: InboundConn): void;
}


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

export class InboundConn {
  /** The authenticated peer, or null during the handshake. */
  peer: NodeId | null = null;
  private readonly nonce = randomBytes(NONCE_BYTES);
  private readonly handshakeTimer: NodeJS.Timeout;
  private assembly: SnapshotAssembly | null = null;
  private replaced = false;

  constructor(
    private readonly t: InboundHost,
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
      // A connection replaced by the peer's newer one is not a lost link.
      if (this.peer && !this.replaced) this.t.linkDown(this.peer);
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
    this.replaced = true; // only called when a newer connection from the same peer replaces this one
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
    const c = checkAuth(frame, { id: this.t.id, secret: this.t.secret, nonce: this.nonce, claimedCluster: this.claimedCluster, certId: this.certId });
    if (!c.ok) {
      this.t.counters.authFailures++;
      this.reject(CLOSE_POLICY, `peer auth failed from ${this.addr}: ${c.why}`, c.fields);
      return;
    }
    const { auth, ids, nonces } = c;
    clearTimeout(this.handshakeTimer);
    const own = this.t.clusterId;
    if (this.claimedCluster !== own && !this.t.adoptCluster(this.claimedCluster)) {
      // Prove our own cluster id (so the peer learns it reliably), then refuse.
      this.t.counters.authFailures++;
      this.send({ k: 'welcome', mac: authMac(this.t.secret, 'server', ids, nonces, own) });
      this.t.log('warn', `raft transport: refused peer ${auth.from} from another cluster (${this.claimedCluster || 'none'}; this node: ${own || 'none'})`, {
        addr: this.addr,
      });
      this.ws.close(CLOSE_POLICY, 'different cluster');
      this.t.foreignCluster(auth.from, this.claimedCluster);
      return;
    }
    // After the cluster-id exchange, so a member of an older lineage (before `manager recover`)
    // still learns that its data is obsolete.
    if (!this.t.accepts(auth.from)) {
      this.t.counters.authFailures++;
      this.reject(CLOSE_POLICY, `peer auth failed from ${this.addr}: ${auth.from} is not a member of this cluster`, { from: auth.from });
      return;
    }
    this.peer = auth.from;
    this.send({ k: 'welcome', mac: authMac(this.t.secret, 'server', ids, nonces, this.t.clusterId) });
    this.t.log('debug', 'raft transport: peer connected', { peer: this.peer, addr: this.addr, advertise: auth.addr });
    if (typeof auth.addr === 'string') this.t.peerAddr(auth.from, auth.addr);
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
