// The routing mesh on one worker: for every port a service publishes in ingress mode, a TCP
// listener on this worker's listen address and the published port; each connection goes to a
// ready replica of the service, wherever it runs, chosen round-robin over the table the leader
// pushes (`endpoints` session message). A replica that refuses or does not answer the connect
// in time is skipped and the next one tried (at most `maxAttempts` in all); once connected the
// bytes are piped both ways and either side's end or error ends both.
//
// Why a userspace proxy rather than iptables/IPVS rules: it runs wherever the worker runs
// (no root, no kernel modules), it leaves no kernel state to clean up after a crash, and it
// can retry a refused connect on another replica — a kernel NAT rule commits a connection to
// one backend before knowing whether it answers. It costs a copy through this process.
//
// A replica can also accept a connection and then say nothing: a frozen process (the kernel
// still completes handshakes into its listen backlog), or a port proxy whose container port is
// gone. Its connect succeeds, so the retry above never sees it. The mesh watches for it: a
// replica that was sent a client's bytes and answered none of them within `stallTimeoutMs` is
// set aside — new connections go to the other replicas — for `setAsideMs`, doubling while it
// stalls again (at most 8×). The stalled connection itself is left alone (a slow answer may
// still come; it is the client's to time out, as it would be without the mesh). A replica that
// answers on any connection is taken back at once. If every replica is set aside, all are used
// (an aside is a preference, never a reason to refuse). The health check, when the service has
// one, removes such a replica from the table too, but only after its retries; this acts on
// the first stalled request.
//
// The table survives sessions: a worker that loses its leader keeps serving from the last
// table it got until a new leader sends the next one.
import net from 'node:net';
import type { Logger } from '../log.js';
import type { MeshBackend, MeshPort } from '../protocol/session.js';

export interface RoutingMeshOptions {
  /** Host the listeners bind (the worker's listen host). */
  host: string;
  log: Logger;
  /** A connect to a replica that takes longer fails over to the next one (ms). Default 2000. */
  connectTimeoutMs?: number;
  /** Replicas tried per connection. Default 3. */
  maxAttempts?: number;
  /** Connections proxied at once (more are refused at accept). Default 4096. */
  maxConnections?: number;
  /** A port that cannot be bound (in use) is tried again this often (ms). Default 2000. */
  rebindMs?: number;
  /**
   * A replica sent a client's bytes that answers none within this long is set aside (ms; 0:
   * never). Default 10000. A protocol whose server may stay silent longer after the client
   * spoke (a long poll, a log sink that never answers) wants it longer, or 0.
   */
  stallTimeoutMs?: number;
  /** How long a replica is first set aside after a stall (ms); doubles per stall in a row, up to 8×. Default 10000. */
  setAsideMs?: number;
  /** Default Date.now (tests). */
  now?: () => number;
}

/** A replica that stalled: until when it is set aside, and how many stalls in a row. */
interface Aside {
  until: number;
  stalls: number;
  taskId: string;
}

interface Listener {
  port: MeshPort;
  server: net.Server | null;
  listening: boolean;
  /** Why the last bind failed (null while listening). */
  error: string | null;
  next: number;
  retry: NodeJS.Timeout | null;
  /** Proxied connections of this port → how to abort each. */
  conns: Map<net.Socket, () => void>;
}

export interface MeshPortStatus {
  service: string;
  published: number;
  listening: boolean;
  error: string | null;
  backends: MeshBackend[];
  connections: number;
  /** Task ids of this port's replicas set aside now (they stalled; see the header). */
  setAside: string[];
}

export class RoutingMesh {
  private readonly listeners = new Map<number, Listener>();
  private readonly opts: Required<Omit<RoutingMeshOptions, 'log'>> & { log: Logger };
  private closed = false;
  private active = 0;
  /** Replicas that stalled, by host:port (one replica may serve several published ports). */
  private readonly aside = new Map<string, Aside>();
  /** Connections that reached no replica (all attempts failed), since start. */
  failed = 0;
  /** Stalls seen (a replica sent bytes answered none in time), since start. */
  stalls = 0;

  constructor(opts: RoutingMeshOptions) {
    this.opts = { connectTimeoutMs: 2000, maxAttempts: 3, maxConnections: 4096, rebindMs: 2000, stallTimeoutMs: 10_000, setAsideMs: 10_000, now: Date.now, ...opts };
  }

  /** Follow a new table: open listeners for new ports, swap backends, close removed ports. */
  update(ports: readonly MeshPort[]): void {
    if (this.closed) return;
    const seen = new Set<number>();
    for (const p of ports) {
      if (p.protocol !== 'tcp' || seen.has(p.published)) continue;
      seen.add(p.published);
      const l = this.listeners.get(p.published);
      if (l !== undefined) {
        l.port = { ...p, backends: [...p.backends] };
        continue;
      }
      const created: Listener = { port: { ...p, backends: [...p.backends] }, server: null, listening: false, error: null, next: 0, retry: null, conns: new Map() };
      this.listeners.set(p.published, created);
      this.bind(created);
    }
    for (const [published, l] of this.listeners) if (!seen.has(published)) this.drop(l);
    // Forget replicas no port has any more (their address may be reused by a new replica).
    const live = new Set<string>();
    for (const l of this.listeners.values()) for (const b of l.port.backends) live.add(backendKey(b));
    for (const k of this.aside.keys()) if (!live.has(k)) this.aside.delete(k);
  }

  private isAside(b: MeshBackend, now: number): boolean {
    const a = this.aside.get(backendKey(b));
    return a !== undefined && a.until > now;
  }

  /** A replica sent bytes answered none in time: set it aside, longer each stall in a row. */
  private stalled(b: MeshBackend, l: Listener): void {
    this.stalls++;
    const key = backendKey(b);
    const prev = this.aside.get(key);
    const stalls = (prev?.stalls ?? 0) + 1;
    const ms = this.opts.setAsideMs * 2 ** Math.min(stalls - 1, 3);
    this.aside.set(key, { until: this.opts.now() + ms, stalls, taskId: b.taskId });
    this.opts.log.warn('routing mesh: a replica accepted a connection and answered nothing; new connections go to the others for a while', {
      port: l.port.published, service: l.port.service, task: b.taskId, replica: key, silentMs: this.opts.stallTimeoutMs, setAsideMs: ms,
    });
  }

  /** A replica answered: it is no longer set aside. */
  private answered(b: MeshBackend, l: Listener): void {
    const key = backendKey(b);
    if (!this.aside.delete(key)) return;
    this.opts.log.info('routing mesh: a set-aside replica answered; it takes connections again', { port: l.port.published, service: l.port.service, task: b.taskId, replica: key });
  }

  status(): MeshPortStatus[] {
    return [...this.listeners.values()].map((l) => ({
      service: l.port.service,
      published: l.port.published,
      listening: l.listening,
      error: l.error,
      backends: [...l.port.backends],
      connections: l.conns.size,
      setAside: l.port.backends.filter((b) => this.isAside(b, this.opts.now())).map((b) => b.taskId),
    }));
  }

  /** Close every listener and end every proxied connection. */
  async close(): Promise<void> {
    this.closed = true;
    const all = [...this.listeners.values()];
    await Promise.all(all.map((l) => this.drop(l)));
  }

  private bind(l: Listener): void {
    const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true }, (c) => this.accept(l, c));
    l.server = server;
    server.on('error', (e: NodeJS.ErrnoException) => {
      l.listening = false;
      l.error = e.code ?? e.message;
      this.opts.log.warn('routing mesh cannot listen; retrying', { port: l.port.published, service: l.port.service, error: l.error });
      server.close();
      if (l.server === server) l.server = null;
      if (!this.closed && this.listeners.get(l.port.published) === l) {
        l.retry = setTimeout(() => {
          l.retry = null;
          if (!this.closed && this.listeners.get(l.port.published) === l && l.server === null) this.bind(l);
        }, this.opts.rebindMs);
        l.retry.unref();
      }
    });
    server.listen({ port: l.port.published, host: this.opts.host }, () => {
      l.listening = true;
      l.error = null;
      this.opts.log.info('routing mesh listening', { addr: `${this.opts.host}:${l.port.published}`, service: l.port.service });
    });
  }

  private drop(l: Listener): Promise<void> {
    if (this.listeners.get(l.port.published) === l) this.listeners.delete(l.port.published);
    if (l.retry !== null) clearTimeout(l.retry);
    l.retry = null;
    for (const abort of [...l.conns.values()]) abort();
    l.conns.clear();
    const server = l.server;
    l.server = null;
    l.listening = false;
    if (server === null) return Promise.resolve();
    return new Promise((res) => server.close(() => res()));
  }

  /**
   * Watch one proxied connection for a stall: from the client's first bytes, the replica has
   * `stallTimeoutMs` to send its first. Its first bytes end the watch (and take it back if it
   * was set aside). A server that speaks first is answered before it is ever watched.
   */
  private watchStall(l: Listener, b: MeshBackend, client: net.Socket, upstream: net.Socket): void {
    let timer: NodeJS.Timeout | null = null;
    const onClientData = (): void => {
      client.off('data', onClientData);
      if (this.opts.stallTimeoutMs <= 0 || timer !== null || answered) return;
      timer = setTimeout(() => {
        timer = null;
        this.stalled(b, l);
      }, this.opts.stallTimeoutMs);
      timer.unref();
    };
    let answered = false;
    const stop = (): void => {
      if (timer !== null) clearTimeout(timer);
      timer = null;
      client.off('data', onClientData);
    };
    client.on('data', onClientData);
    upstream.once('data', () => {
      answered = true;
      stop();
      this.answered(b, l);
    });
    upstream.once('close', stop);
    client.once('close', stop);
  }

  private accept(l: Listener, client: net.Socket): void {
    if (this.closed || this.active >= this.opts.maxConnections || this.listeners.get(l.port.published) !== l) {
      client.destroy();
      return;
    }
    this.active++;
    let upstream: net.Socket | null = null;
    let released = false;
    const abort = (): void => {
      client.destroy();
      upstream?.destroy();
    };
    l.conns.set(client, abort);
    // A side that closed ends the other gracefully (its buffered bytes still go out), and
    // destroys it if it lingers: no connection outlives its peer by more than `lingerMs`.
    const linger = (s: net.Socket): void => {
      if (s.destroyed) return;
      s.end();
      setTimeout(() => s.destroy(), LINGER_MS).unref();
    };
    client.on('error', abort);
    client.on('close', () => {
      if (!released) {
        released = true;
        this.active--;
        l.conns.delete(client);
      }
      if (upstream !== null) linger(upstream);
    });

    // The round-robin order from this connection's turn, replicas set aside last: they are
    // tried only when the others refuse, and used as they are when every one is set aside.
    const all = l.port.backends;
    const start = l.next;
    l.next = all.length === 0 ? 0 : (l.next + 1) % all.length;
    const now = this.opts.now();
    const rotated = all.map((_, i) => all[(start + i) % all.length]!);
    const order = [...rotated.filter((b) => !this.isAside(b, now)), ...rotated.filter((b) => this.isAside(b, now))];
    const attempts = Math.min(order.length, this.opts.maxAttempts);
    const tryAt = (i: number): void => {
      if (client.destroyed) return;
      if (i >= attempts) {
        this.failed++;
        this.opts.log.debug('routing mesh: no replica answered', { port: l.port.published, service: l.port.service, tried: attempts });
        client.destroy();
        return;
      }
      const b = order[i]!;
      const s = net.connect({ host: b.host, port: b.port, allowHalfOpen: true });
      upstream = s;
      const timer = setTimeout(() => s.destroy(new Error('connect timeout')), this.opts.connectTimeoutMs);
      const failed = (): void => {
        clearTimeout(timer);
        s.destroy();
        if (upstream === s) upstream = null;
        tryAt(i + 1);
      };
      s.once('error', failed);
      s.once('connect', () => {
        clearTimeout(timer);
        s.off('error', failed);
        if (client.destroyed) {
          s.destroy();
          return;
        }
        s.on('error', abort);
        s.on('close', () => linger(client));
        this.watchStall(l, b, client, s);
        s.pipe(client);
        client.pipe(s);
        client.resume();
      });
    };
    tryAt(0);
  }
}

/** How long one side of a proxied connection may outlive the other (ms). */
const LINGER_MS = 5000;

const backendKey = (b: MeshBackend): string => `${b.host}:${b.port}`;

/** The host part of a host:port listen address ("[::1]:0" → "::1"). */
export function listenHost(addr: string | undefined): string {
  if (addr === undefined || addr === '') return '127.0.0.1';
  const i = addr.lastIndexOf(':');
  const host = i < 0 ? addr : addr.slice(0, i);
  return host.replace(/^\[(.*)\]$/, '$1') || '127.0.0.1';
}
