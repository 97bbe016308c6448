// The worker's log server address when --listen is not given: the managers fetch task logs
// from it, so it must be an address they can reach. Managers on loopback (a one-machine
// cluster, `flotilla up`): 127.0.0.1. Otherwise the address of this machine on the managers'
// subnet, else its first non-loopback IPv4 address — never loopback, which a manager on
// another host (or in another network namespace) would reach on itself.
import { isIPv4 } from 'node:net';
import os from 'node:os';

type Interfaces = ReturnType<typeof os.networkInterfaces>;

const isLoopback = (h: string): boolean => h === 'localhost' || h === '::1' || (isIPv4(h) && h.startsWith('127.'));

const toInt = (a: string): number => a.split('.').reduce((acc, o) => ((acc << 8) | Number(o)) >>> 0, 0);

/** The host part of the default --listen for a worker of these managers (host:port each). */
export function defaultListenHost(managers: string[], ifaces: Interfaces = os.networkInterfaces()): string {
  const hosts = managers.map((m) => m.slice(0, m.lastIndexOf(':')).replace(/^\[(.*)\]$/, '$1'));
  if (hosts.length === 0 || hosts.every(isLoopback)) return '127.0.0.1';
  const mine = Object.values(ifaces).flatMap((l) => (l ?? []).filter((a) => a.family === 'IPv4' && !a.internal));
  for (const h of hosts) {
    if (!isIPv4(h)) continue;
    const on = mine.find((a) => ((toInt(a.address) & toInt(a.netmask)) >>> 0) === ((toInt(h) & toInt(a.netmask)) >>> 0));
    if (on) return on.address;
  }
  return mine[0]?.address ?? '127.0.0.1';
}
