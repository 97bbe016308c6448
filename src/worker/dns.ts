// Service discovery on one worker: a small DNS server (UDP only, A records only) that answers
// the names of the cluster's services from the table the leader pushes with the routing mesh's
// (`endpoints` session message, its `names` field):
//
//   <service>, <service>.flotilla             the address where the service is reachable from
//                                             a task on this node: this worker's own address
//                                             when the routing mesh serves the service (it
//                                             publishes an ingress port), else the nodes of its
//                                             ready replicas (like tasks.<service>)
//   tasks.<service>, tasks.<service>.flotilla the nodes of its ready replicas, rotated on every
//                                             answer (DNS round robin)
//
// Every answer has a TTL of 1 s, so a resolver that caches still follows readiness. A name of
// the zone that is no service is NXDOMAIN; a known name asked for another type (AAAA) is
// NOERROR with no record; a name outside the zone (`example.com`) is REFUSED, which tells a
// resolver with a second name server to ask that one. Junk gets FORMERR/NOTIMP or no answer
// (dns-wire.ts). The table survives sessions: through a leader failover the worker keeps
// answering from the last one it got.
import dgram from 'node:dgram';
import net from 'node:net';
import type { Logger } from '../log.js';
import type { MeshPort, ServiceNames } from '../protocol/session.js';
import {
  DNS_TYPE_A,
  DNS_TYPE_ANY,
  RCODE_NOERROR,
  RCODE_NXDOMAIN,
  RCODE_REFUSED,
  decodeQuery,
  encodeAnswer,
  ipv4Bytes,
  type DnsAnswer,
} from './dns-wire.js';

/** The cluster's DNS zone: `web.flotilla`, `tasks.web.flotilla`. */
export const CLUSTER_DOMAIN = 'flotilla';
/** Seconds a resolver may keep an answer. */
export const DNS_TTL_S = 1;

export interface DnsServerOptions {
  /** Address the UDP socket binds ('0.0.0.0' for all). */
  bindHost: string;
  /** 0 picks a free port. */
  port: number;
  /** This worker's own address: the answer for a service the routing mesh serves. */
  self: string;
  log: Logger;
}

export interface DnsStats {
  queries: number;
  answered: number;
  nxdomain: number;
  refused: number;
  dropped: number;
}

/** A name's answer (pure: the table, this worker's address, the name asked, a rotation counter). */
export function resolveName(names: ReadonlyMap<string, ServiceNames>, self: string, qname: string, rotate = 0): { rcode: number; aa: boolean; a: string[] } {
  let n = qname;
  let inZone = false;
  if (n === CLUSTER_DOMAIN) return { rcode: RCODE_NOERROR, aa: true, a: [] };
  if (n.endsWith(`.${CLUSTER_DOMAIN}`)) {
    n = n.slice(0, -(CLUSTER_DOMAIN.length + 1));
    inZone = true;
  }
  const parts = n.split('.');
  let svc: string;
  let tasks = false;
  if (parts.length === 1 && parts[0] !== '') svc = parts[0]!;
  else if (parts.length === 2 && parts[0] === 'tasks' && parts[1] !== '') {
    svc = parts[1]!;
    tasks = true;
  } else return { rcode: inZone ? RCODE_NXDOMAIN : RCODE_REFUSED, aa: inZone, a: [] };
  const entry = names.get(svc);
  if (entry === undefined) return { rcode: RCODE_NXDOMAIN, aa: true, a: [] };
  const all = (!tasks && entry.mesh ? [self] : entry.tasks).filter((h) => ipv4Bytes(h) !== null);
  const k = all.length === 0 ? 0 : rotate % all.length;
  return { rcode: RCODE_NOERROR, aa: true, a: [...all.slice(k), ...all.slice(0, k)] };
}

/** The names a manager without the 'names' feature implies: the mesh's services and their backends' hosts. */
export function namesFromPorts(ports: readonly MeshPort[]): ServiceNames[] {
  const by = new Map<string, Set<string>>();
  for (const p of ports) {
    const s = by.get(p.service) ?? new Set<string>();
    for (const b of p.backends) s.add(b.host);
    by.set(p.service, s);
  }
  return [...by].map(([service, hosts]) => ({ service, mesh: true, tasks: [...hosts].sort() }));
}

export class DnsServer {
  private socket: dgram.Socket | null = null;
  private names = new Map<string, ServiceNames>();
  private turn = 0;
  private readonly self: string;
  readonly stats: DnsStats = { queries: 0, answered: 0, nxdomain: 0, refused: 0, dropped: 0 };
  /** host:port it listens on (tasks get it as FLOTILLA_DNS); null until `listen` resolved. */
  address: string | null = null;

  constructor(private readonly opts: DnsServerOptions) {
    // A wildcard address is no answer: a task on this node reaches its own node on loopback.
    this.self = opts.self === '0.0.0.0' || opts.self === '' ? '127.0.0.1' : opts.self;
  }

  /** Bind the socket; resolves with host:port (the host tasks should ask). */
  listen(): Promise<string> {
    const type = net.isIPv6(this.opts.bindHost) ? 'udp6' : 'udp4';
    const socket = dgram.createSocket({ type, recvBufferSize: 256 * 1024 });
    return new Promise((resolve, reject) => {
      const fail = (e: Error): void => {
        socket.close();
        reject(e);
      };
      socket.once('error', fail);
      socket.bind({ port: this.opts.port, address: this.opts.bindHost, exclusive: true }, () => {
        socket.off('error', fail);
        socket.on('error', (e) => this.opts.log.warn('dns server socket error', { error: e.message }));
        socket.on('message', (msg, rinfo) => this.onMessage(socket, msg, rinfo));
        this.socket = socket;
        const port = socket.address().port;
        const host = this.opts.bindHost === '0.0.0.0' || this.opts.bindHost === '::' ? this.self : this.opts.bindHost;
        this.address = `${net.isIPv6(host) ? `[${host}]` : host}:${port}`;
        this.opts.log.info('dns server listening', { addr: this.address, zone: CLUSTER_DOMAIN });
        resolve(this.address);
      });
    });
  }

  /** Follow the leader's table (`names` absent: an older leader, names derived from the mesh's ports). */
  update(ports: readonly MeshPort[], names?: readonly ServiceNames[]): void {
    const list = names ?? namesFromPorts(ports);
    this.names = new Map(list.map((n) => [n.service.toLowerCase(), n]));
  }

  /** The answer to one datagram (null: none). Never throws. */
  answer(buf: Uint8Array): Uint8Array | null {
    this.stats.queries++;
    const q = decodeQuery(buf);
    if (!q.ok) {
      if ('drop' in q) {
        this.stats.dropped++;
        return null;
      }
      this.stats.refused++;
      return encodeAnswer({ id: q.id, rd: q.rd, rcode: q.rcode, ...(q.question ? { question: q.question } : {}) });
    }
    const r = resolveName(this.names, this.self, q.question.name, this.turn++);
    if (this.turn > 1e9) this.turn = 0;
    if (r.rcode === RCODE_NXDOMAIN) this.stats.nxdomain++;
    else if (r.rcode === RCODE_REFUSED) this.stats.refused++;
    else this.stats.answered++;
    const wantsA = q.question.type === DNS_TYPE_A || q.question.type === DNS_TYPE_ANY;
    const ans: DnsAnswer = { id: q.id, rd: q.rd, rcode: r.rcode, aa: r.aa, question: q.question, ttl: DNS_TTL_S, a: wantsA ? r.a : [] };
    return encodeAnswer(ans);
  }

  private onMessage(socket: dgram.Socket, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    let out: Uint8Array | null;
    try {
      out = this.answer(msg);
    } catch (e) {
      // decodeQuery/encodeAnswer do not throw; a bug here must still not end the worker.
      this.opts.log.warn('dns server failed to answer', { error: (e as Error).message });
      return;
    }
    if (out === null) return;
    socket.send(out, rinfo.port, rinfo.address, (e) => {
      if (e) this.opts.log.debug('dns answer not sent', { error: e.message });
    });
  }

  close(): Promise<void> {
    const s = this.socket;
    this.socket = null;
    if (s === null) return Promise.resolve();
    return new Promise((res) => s.close(() => res()));
  }
}
