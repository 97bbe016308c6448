// Fault-injecting TCP proxies for the chaos harness: one listener per directed link (A→B), plain
// `net` sockets, controlled in-process by the nemesis.
//
// A link proxy accepts connections on its own loopback port and forwards each one to the target.
// "up" is the data the dialing side (A) sends to the target (B); "down" is what flows back on
// the same connections. Faults:
//   cut()          refuse new connections (accept + RST) and reset the existing ones;
//   block(dir)     stall the data of one direction on every connection, current and future:
//                  bytes are held (the source is paused, TCP backpressure does the rest) and
//                  delivered once healed — like packets dropped and retransmitted later. A
//                  one-way cut "A cannot reach B" = block('up') on A→B + block('down') on B→A;
//   latency(ms, j) delay every chunk by ms + U[0, j) ms (order kept);
//   drop()         reset the existing connections once (new ones are accepted);
//   heal()         clear cut, blocks and latency (held bytes flow again).
// Nothing here reads the nemesis' seed: jitter uses the given random source (Math.random by
// default); the schedule of faults is what is reproducible, not the exact packet timings.
import net from 'node:net';
import { openSync, writeSync } from 'node:fs';
import { splitAddr } from '../src/client/client.js';

export type Direction = 'up' | 'down';

const HIGH_WATER = 64; // queued chunks before the source is paused
const LOW_WATER = 16;

interface Pipe {
  dir: Direction;
  src: net.Socket;
  dst: net.Socket;
  queue: { chunk: Buffer; due: number }[];
  lastDue: number;
  timer: NodeJS.Timeout | null;
  waitingDrain: boolean;
  srcEnded: boolean;
  dstEnded: boolean;
  pausedByUs: boolean;
}

interface Conn {
  client: net.Socket;
  upstream: net.Socket;
  up: Pipe;
  down: Pipe;
  closed: boolean;
}

export interface LinkState {
  cut: boolean;
  blocked: { up: boolean; down: boolean };
  latencyMs: number;
  jitterMs: number;
}

export interface LinkStats {
  accepted: number;
  refused: number;
  dropped: number;
  bytesUp: number;
  bytesDown: number;
}

export interface LinkProxyOptions {
  /** Where the link leads (host:port). */
  target: string;
  /** Labels, e.g. from 'm1' to 'm2'. */
  from?: string;
  to?: string;
  /** Listen host (default 127.0.0.1); the port is picked by the OS. */
  host?: string;
  /** Random source for jitter (default Math.random). */
  random?: () => number;
}

function hardClose(s: net.Socket): void {
  try {
    if (!s.destroyed) s.resetAndDestroy();
  } catch {
    s.destroy();
  }
}

/** Set FLOTILLA_CHAOS_PROXY_TRACE=<file> to trace every proxied connection (debugging). */
const TRACE_FILE = process.env.FLOTILLA_CHAOS_PROXY_TRACE;
let traceFd: number | null = null;
function trace(line: string): void {
  traceFd ??= openSync(TRACE_FILE!, 'a');
  writeSync(traceFd, `${new Date().toISOString().slice(11, 23)} ${line}\n`);
}

export class LinkProxy {
  readonly name: string;
  readonly from: string;
  readonly to: string;
  readonly target: string;
  readonly stats: LinkStats = { accepted: 0, refused: 0, dropped: 0, bytesUp: 0, bytesDown: 0 };
  private readonly server: net.Server;
  private readonly conns = new Set<Conn>();
  private readonly random: () => number;
  private readonly targetHost: string;
  private readonly targetPort: number;
  private cutFlag = false;
  private readonly blocked = { up: false, down: false };
  private latencyMs = 0;
  private jitterMs = 0;
  private closed = false;
  private address = '';

  private constructor(opts: LinkProxyOptions) {
    this.target = opts.target;
    [this.targetHost, this.targetPort] = splitAddr(opts.target);
    this.from = opts.from ?? '?';
    this.to = opts.to ?? opts.target;
    this.name = `${this.from}>${this.to}`;
    this.random = opts.random ?? Math.random;
    this.server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true }, (s) => this.onConnection(s));
    this.server.on('error', () => undefined);
  }

  static async start(opts: LinkProxyOptions): Promise<LinkProxy> {
    const p = new LinkProxy(opts);
    await new Promise<void>((resolve, reject) => {
      p.server.once('error', reject);
      p.server.listen(0, opts.host ?? '127.0.0.1', () => {
        p.server.off('error', reject);
        resolve();
      });
    });
    const a = p.server.address() as net.AddressInfo;
    p.address = `${opts.host ?? '127.0.0.1'}:${a.port}`;
    return p;
  }

  /** host:port to dial instead of the target. */
  get addr(): string {
    return this.address;
  }

  get state(): LinkState {
    return { cut: this.cutFlag, blocked: { ...this.blocked }, latencyMs: this.latencyMs, jitterMs: this.jitterMs };
  }

  /** True when some fault is set. */
  get faulty(): boolean {
    return this.cutFlag || this.blocked.up || this.blocked.down || this.latencyMs > 0 || this.jitterMs > 0;
  }

  /** Open connections. */
  get connections(): number {
    return this.conns.size;
  }

  cut(): void {
    this.cutFlag = true;
    this.resetAll();
  }

  block(dir: Direction): void {
    this.blocked[dir] = true;
  }

  latency(ms: number, jitterMs = 0): void {
    this.latencyMs = Math.max(0, ms);
    this.jitterMs = Math.max(0, jitterMs);
  }

  /** Resets the open connections; returns how many. */
  drop(): number {
    const n = this.conns.size;
    this.stats.dropped += n;
    this.resetAll();
    return n;
  }

  heal(): void {
    this.cutFlag = false;
    this.blocked.up = false;
    this.blocked.down = false;
    this.latencyMs = 0;
    this.jitterMs = 0;
    for (const c of this.conns) {
      this.pump(c, c.up);
      this.pump(c, c.down);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.resetAll();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  // ------------------------------------------------------------------------------------------

  private resetAll(): void {
    for (const c of [...this.conns]) this.destroy(c);
  }

  private onConnection(client: net.Socket): void {
    client.on('error', () => undefined);
    if (this.cutFlag || this.closed) {
      this.stats.refused++;
      hardClose(client);
      return;
    }
    this.stats.accepted++;
    const cid = this.stats.accepted;
    if (TRACE_FILE) trace(`${this.name} #${cid} accept from ${client.remotePort}`);
    const upstream = net.connect({ host: this.targetHost, port: this.targetPort, allowHalfOpen: true });
    upstream.on('error', () => undefined);
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    const mk = (dir: Direction, src: net.Socket, dst: net.Socket): Pipe => ({
      dir,
      src,
      dst,
      queue: [],
      lastDue: 0,
      timer: null,
      waitingDrain: false,
      srcEnded: false,
      dstEnded: false,
      pausedByUs: false,
    });
    const c: Conn = { client, upstream, up: mk('up', client, upstream), down: mk('down', upstream, client), closed: false };
    this.conns.add(c);
    for (const p of [c.up, c.down]) {
      p.src.on('data', (chunk: Buffer) => this.onData(c, p, chunk));
      p.src.on('end', () => {
        p.srcEnded = true;
        this.pump(c, p);
      });
      p.dst.on('drain', () => {
        p.waitingDrain = false;
        this.pump(c, p);
      });
    }
    // A failed or closed end closes the whole connection (RST the other end, as a router would
    // not; it keeps the model simple: a connection either works or is gone).
    if (TRACE_FILE) upstream.on('connect', () => trace(`${this.name} #${cid} upstream connected`));
    client.on('close', () => {
      if (TRACE_FILE) trace(`${this.name} #${cid} client closed (up ${c.up.queue.length} queued, down ${c.down.queue.length} queued)`);
      this.destroy(c);
    });
    upstream.on('close', () => {
      if (TRACE_FILE) trace(`${this.name} #${cid} upstream closed (up ${c.up.queue.length} queued, down ${c.down.queue.length} queued)`);
      this.destroy(c);
    });
    client.resume();
  }

  private onData(c: Conn, p: Pipe, chunk: Buffer): void {
    if (c.closed) return;
    if (TRACE_FILE) trace(`${this.name} ${p.dir} ${chunk.length}B${this.blocked[p.dir] ? ' (blocked)' : ''} q=${p.queue.length} drain=${p.waitingDrain}`);
    if (p.dir === 'up') this.stats.bytesUp += chunk.length;
    else this.stats.bytesDown += chunk.length;
    const now = Date.now();
    const delay = this.latencyMs > 0 || this.jitterMs > 0 ? this.latencyMs + this.random() * this.jitterMs : 0;
    const due = Math.max(now + delay, p.lastDue);
    p.lastDue = due;
    p.queue.push({ chunk, due });
    if (p.queue.length >= HIGH_WATER && !p.pausedByUs) {
      p.pausedByUs = true;
      p.src.pause();
    }
    this.pump(c, p);
  }

  private pump(c: Conn, p: Pipe): void {
    if (c.closed || p.waitingDrain) return;
    while (p.queue.length > 0) {
      if (this.blocked[p.dir]) return;
      const head = p.queue[0]!;
      const wait = head.due - Date.now();
      if (wait > 0) {
        if (p.timer === null) {
          p.timer = setTimeout(() => {
            p.timer = null;
            this.pump(c, p);
          }, Math.ceil(wait));
        }
        return;
      }
      p.queue.shift();
      if (!p.dst.write(head.chunk)) {
        p.waitingDrain = true;
        break;
      }
    }
    if (p.pausedByUs && p.queue.length <= LOW_WATER) {
      p.pausedByUs = false;
      p.src.resume();
    }
    if (p.queue.length === 0 && p.srcEnded && !p.dstEnded && !p.waitingDrain) {
      p.dstEnded = true;
      p.dst.end();
    }
  }

  private destroy(c: Conn): void {
    if (c.closed) return;
    c.closed = true;
    this.conns.delete(c);
    for (const p of [c.up, c.down]) {
      if (p.timer) clearTimeout(p.timer);
      p.timer = null;
      p.queue = [];
    }
    hardClose(c.client);
    hardClose(c.upstream);
  }
}

/** Every link proxy of a run, by `from>to`. */
export class ChaosNet {
  readonly links = new Map<string, LinkProxy>();

  async add(from: string, to: string, target: string, random?: () => number): Promise<LinkProxy> {
    const key = `${from}>${to}`;
    if (this.links.has(key)) throw new Error(`link ${key} exists`);
    const p = await LinkProxy.start({ from, to, target, random });
    this.links.set(key, p);
    return p;
  }

  get(from: string, to: string): LinkProxy {
    const p = this.links.get(`${from}>${to}`);
    if (p === undefined) throw new Error(`no link ${from}>${to}`);
    return p;
  }

  /** Links whose ends are both in the given sets (by label). */
  select(pred: (p: LinkProxy) => boolean): LinkProxy[] {
    return [...this.links.values()].filter(pred);
  }

  healAll(): void {
    for (const p of this.links.values()) p.heal();
  }

  faulty(): { link: string; state: LinkState }[] {
    return [...this.links.values()].filter((p) => p.faulty).map((p) => ({ link: p.name, state: p.state }));
  }

  async closeAll(): Promise<void> {
    await Promise.all([...this.links.values()].map((p) => p.close()));
  }
}
