// The outbound side of the transport: one connection and one queue per peer. It dials the peer,
// runs the client half of the handshake, sends the queued messages (splitting an append too large
// for one frame) and streams snapshots in chunks, then waits for the receiver's acknowledgement.
//
// Snapshots are sent as a snapBegin frame, chunks well below the frame bound and a snapEnd frame
// with the data's SHA-256, interleaved with ordinary messages so heartbeats keep flowing. The
// receiver reassembles and checks them, delivers one Message and acknowledges; the sender then
// reports onSnapshotStatus. Both sides hash chunk by chunk, so a large snapshot never blocks the
// event loop for long.
import { createHash, randomBytes, type Hash } from 'node:crypto';
import { WebSocket } from 'ws';
import { expectServer, type NodeTls } from '../../tls/pki.js';
import { FrameError, NONCE_BYTES, decodeFrame, encodeTypedFrame, parseFrame, type Frame } from '../codec.js';
import type { Message, NodeId } from '../types.js';
import { CLOSE_GOING_AWAY, CLOSE_INVALID, CLOSE_POLICY, rawToBuffer, type LinkHost, type Settings } from './common.js';
import { CLUSTER_HEADER, authFrame, welcomeProves } from './handshake.js';

/** What an outbound peer uses of its transport. */
export interface OutboundHost extends LinkHost {
  readonly advertise: string | undefined;
  readonly tls: NodeTls | undefined;
  resolveAddr(id: NodeId): string | undefined;
  reportUnreachable(peer: NodeId): void;
  reportSnapshot(peer: NodeId, ok: boolean): void;
}


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

export class OutboundPeer {
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
    private readonly t: OutboundHost,
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

  /** An idle connection, dialed ahead of any message (PeerTransport.warm). */
  warm(): void {
    this.connectSoon();
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
        this.write(ws, authFrame(this.t.secret, ids, { client: clientNonce, server: serverNonce }, ownCluster));
        return;
      }
      if (!this.authed) {
        if (frame.k !== 'welcome') return this.protocolError(ws, `expected a welcome, got ${frame.k}`);
        const ids = { client: this.t.id, server: this.peer, clientAddr: this.t.advertise };
        if (!welcomeProves(frame.mac, this.t.secret, ids, { client: clientNonce, server: serverNonce }, serverCluster)) {
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
      if (wasAuthed) this.t.linkDown(this.peer);
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
