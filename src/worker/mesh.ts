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
}

export class RoutingMesh {
  private readonly listeners = new Map<number, Listener>();
  private readonly opts: Required<Omit<RoutingMeshOptions, 'log'>> & { log: Logger };
  private closed = false;
  private active = 0;
  /** Connections that reached no replica (all attempts failed), since start. */
  failed = 0;

  constructor(opts: RoutingMeshOptions) {
    this.opts = { connectTimeoutMs: 2000, maxAttempts: 3, maxConnections: 4096, rebindMs: 2000, ...opts };
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
  }

  status(): MeshPortStatus[] {
    return [...this.listeners.values()].map((l) => ({
      service: l.port.service,
      published: l.port.published,
      listening: l.listening,
      error: l.error,
      backends: [...l.port.backends],
      connections: l.conns.size,
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

    const backends = l.port.backends;
    const attempts = Math.min(backends.length, this.opts.maxAttempts);
    const start = l.next;
    l.next = backends.length === 0 ? 0 : (l.next + 1) % backends.length;
    const tryAt = (i: number): void => {
      if (client.destroyed) return;
      if (i >= attempts) {
        this.failed++;
        this.opts.log.debug('routing mesh: no replica answered', { port: l.port.published, service: l.port.service, tried: attempts });
        client.destroy();
        return;
      }
      const b = backends[(start + i) % backends.length]!;
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

/** The host part of a host:port listen address ("[::1]:0" → "::1"). */
export function listenHost(addr: string | undefined): string {
  if (addr === undefined || addr === '') return '127.0.0.1';
  const i = addr.lastIndexOf(':');
  const host = i < 0 ? addr : addr.slice(0, i);
  return host.replace(/^\[(.*)\]$/, '$1') || '127.0.0.1';
}
