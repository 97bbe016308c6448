// The worker's ports: what the agent, its session client and its status reporter take from the
// machine — the connection to a manager, timers and the state dir's files — behind narrow
// interfaces, so that the whole-cluster simulator (src/sim/cluster/) can run the real agent on
// virtual time over a simulated network and memory. Production uses the defaults here
// (WebSocket, Node timers, files under the state dir); behaviour is the same as before the ports.

import { WebSocket } from 'ws';
import { expectServer, type NodeTls } from '../tls/pki.js';
import { MAX_SESSION_FRAME, SESSION_PATH } from '../protocol/session.js';
import { systemTimers, type Timers } from '../clock.js';
import * as stateDir from './state-dir.js';
import { FlotillaError } from '../protocol/errors.js';

/** What a session link reports (each at most once after `end()`: never). */
export interface SessionLinkEvents {
  open(): void;
  message(data: Buffer, isBinary: boolean): void;
  /** The manager's WebSocket layer answered a ping. */
  pong(): void;
  close(code: number, reason: string): void;
  error(e: Error): void;
}

/** One connection to a manager's session endpoint. */
export interface SessionLink {
  /** Whether frames can be sent (the connection is open). */
  readonly isOpen: boolean;
  /** Sends one binary frame; `cb` gets the error when it could not be written. */
  send(frame: Buffer, cb: (err?: Error) => void): void;
  ping(): void;
  /** Ends the link from this side (politely when open); no event is reported any more. */
  end(code: number, reason: string): void;
}

export interface SessionDialOptions {
  tls?: NodeTls;
  token: string;
  handshakeTimeoutMs: number;
}

/** Opens a link to `target` (host:port); may throw (the attempt then fails at once). */
export type SessionDialer = (target: string, opts: SessionDialOptions, ev: SessionLinkEvents) => SessionLink;

/** Production: a WebSocket to `ws(s)://<target>/v1/worker`. */
export const wsDialer: SessionDialer = (target, opts, ev) => {
  const tls = opts.tls;
  const ws = new WebSocket(`${tls ? 'wss' : 'ws'}://${target}${SESSION_PATH}`, {
    ...(tls ? { ca: tls.ca, cert: tls.cert, key: tls.key, checkServerIdentity: expectServer() } : {}),
    maxPayload: MAX_SESSION_FRAME,
    handshakeTimeout: opts.handshakeTimeoutMs,
    perMessageDeflate: false,
    headers: { authorization: `Bearer ${opts.token}` },
  });
  ws.on('open', () => ev.open());
  ws.on('message', (data, isBinary) => {
    const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
    ev.message(buf, isBinary);
  });
  ws.on('pong', () => ev.pong());
  ws.on('close', (code, reason) => ev.close(code, reason.toString()));
  ws.on('error', (e) => ev.error(e));
  return {
    get isOpen() {
      return ws.readyState === WebSocket.OPEN;
    },
    send(frame, cb) {
      ws.send(frame, { binary: true }, cb);
    },
    ping() {
      ws.ping();
    },
    end(code, reason) {
      ws.removeAllListeners();
      ws.on('error', () => undefined);
      try {
        if (ws.readyState === WebSocket.OPEN) ws.close(code, reason.slice(0, 100));
        // A closing/connecting socket: drop it now.
        setTimeout(() => ws.terminate(), ws.readyState === WebSocket.OPEN ? 1000 : 0).unref();
      } catch {
        ws.terminate();
      }
    },
  };
};

/** Node timers that keep the process alive (what the worker used before the port). */
export const nodeTimers: Timers = {
  every(ms, fn) {
    const t = setInterval(fn, ms);
    return () => clearInterval(t);
  },
  after(ms, fn) {
    const t = setTimeout(fn, ms);
    return () => clearTimeout(t);
  },
  soon(fn) {
    setImmediate(fn);
  },
};

/** Node timers that never keep the process alive (the clock module's system timers). */
export const unrefTimers: Timers = systemTimers;

/** The small state a restarted worker reads back (see state-dir.ts), and the lock on it. */
export interface WorkerStore {
  /** Takes the lock (throws `conflict` when another worker holds it); returns its release. */
  lock(): () => void;
  loadRetired(): Map<string, number>;
  saveRetired(retired: Iterable<{ taskId: string; retiredWall: number }>): void;
  loadCredential(): string | null;
  saveCredential(c: string): void;
  loadClusterId(): string | null;
  saveClusterId(c: string): void;
}

/** Production: the files of the state dir. */
export function fileStore(dir: string): WorkerStore {
  return {
    lock: () => {
      const path = stateDir.lockStateDir(dir);
      return () => stateDir.unlockStateDir(dir, path);
    },
    loadRetired: () => stateDir.loadRetired(dir),
    saveRetired: (r) => stateDir.saveRetired(dir, r),
    loadCredential: () => stateDir.loadCredential(dir),
    saveCredential: (c) => stateDir.saveCredential(dir, c),
    loadClusterId: () => stateDir.loadClusterId(dir),
    saveClusterId: (c) => stateDir.saveClusterId(dir, c),
  };
}

/** In memory (the simulator; a store that outlives one agent when passed to its successor). */
export function memoryStore(): WorkerStore {
  let locked = false;
  let retired = new Map<string, number>();
  let credential: string | null = null;
  let clusterId: string | null = null;
  return {
    lock: () => {
      if (locked) throw new FlotillaError('conflict', 'Cannot start worker as its state is in use by another worker');
      locked = true;
      return () => {
        locked = false;
      };
    },
    loadRetired: () => new Map(retired),
    saveRetired: (r) => {
      retired = new Map([...r].map((x) => [x.taskId, x.retiredWall]));
    },
    loadCredential: () => credential,
    saveCredential: (c) => {
      credential = c;
    },
    loadClusterId: () => clusterId,
    saveClusterId: (c) => {
      clusterId = c;
    },
  };
}
