// A docker task's name server: the node's DNS server (worker/dns.ts) when a container can ask
// it, set on the pod's infra container (`HostConfig.Dns`; the app containers share its
// network namespace and its resolv.conf).
//
// A container can ask it only when it listens on port 53 (Docker's DNS setting takes
// addresses, never ports) on an address of the node that is not loopback (a container's
// loopback is its own). Otherwise the container keeps Docker's default resolver and does not
// resolve service names (it can still use FLOTILLA_DNS-free ways: published ports). The host's
// own non-loopback name servers follow ours: ours answers REFUSED for names outside the
// cluster's zone, which sends the container's resolver on to the next one, so outside names
// keep working.
import { ipv4Bytes } from '../dns-wire.js';

export interface ContainerDns {
  Dns: string[];
  DnsSearch: string[];
}

/** Name servers of a resolv.conf that a container can reach (IPv4, not loopback). */
export function reachableNameservers(resolvConf: string): string[] {
  const out: string[] = [];
  for (const line of resolvConf.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (m && ipv4Bytes(m[1]!) !== null && !m[1]!.startsWith('127.') && !out.includes(m[1]!)) out.push(m[1]!);
  }
  return out;
}

/** The infra container's DNS settings for the node's DNS server at `dns` (host:port); null when containers cannot use it. */
export function containerDns(dns: string | undefined, hostResolvConf: string): ContainerDns | null {
  if (dns === undefined) return null;
  const i = dns.lastIndexOf(':');
  const host = dns.slice(0, i);
  const port = Number(dns.slice(i + 1));
  const b = ipv4Bytes(host);
  if (port !== 53 || b === null || b[0] === 127 || host === '0.0.0.0') return null;
  return { Dns: [host, ...reachableNameservers(hostResolvConf).filter((h) => h !== host)].slice(0, 3), DnsSearch: ['flotilla'] };
}
