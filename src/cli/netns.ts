// The multi-host test bed of `flotilla up --netns`: every manager and worker in a network
// namespace of its own, all on one bridge, each with its own address from a private /24.
//
// Layout (for the cluster directory D, h = the first 8 hex digits of sha256(D)):
//
//   host ── flb<h> (.1/24) ══veth══ up0 ─┐
//                                        br0   (in netns flotilla-<h>-hub)
//   flotilla-<h>-m1: eth0 (.11) ══veth══ v-m1 ─┤
//   flotilla-<h>-w1: eth0 (.101) ═veth══ v-w1 ─┘
//
// The bridge lives in a namespace of its own (the "hub"), not in the host's: the host's
// firewall (Docker sets the FORWARD policy to DROP, and br_netfilter sends bridged frames
// through it) never sees traffic between nodes, and the test bed adds no rule to it. The host
// sees one link, flb<h>, holding .1: the CLI, the board and tests reach every node through it.
// No namespace has a default route and nothing is NATed: nothing leaves the machine.
//
// Every name carries h, so two test beds (two directories) on one machine never collide, and
// the leftovers of an `up` that was SIGKILLed are found by name and removed by the next `up`
// of the same directory. A partition is the hub side of a node's veth set down (`cutNode`).
//
// Names: every worker's namespace gets /etc/netns/<ns>/resolv.conf naming its worker's DNS
// server (port 53 on the worker's address, `worker --dns-port 53`) with search domain
// `flotilla`; `ip netns exec` bind-mounts it over /etc/resolv.conf for the worker and its
// tasks, so `getent hosts web` or a program's own lookup of `web` finds the service. The
// managers' namespaces keep the host's resolv.conf. Teardown removes those directories.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { UsageError } from './util.js';

export const DEFAULT_NETNS_SUBNET = '10.213.7.0/24';
/** Where `ip netns exec` finds the files it bind-mounts over /etc for a namespace. */
export const NETNS_ETC = '/etc/netns';

/** The resolv.conf of a worker's namespace: its own DNS server, the cluster's zone searched. */
export function netnsResolvConf(workerAddress: string): string {
  return `# flotilla up --netns: this node's worker answers service names (web, web.flotilla, tasks.web)\nnameserver ${workerAddress}\nsearch flotilla\noptions ndots:1 timeout:1 attempts:2\n`;
}

/** The /etc/netns directories of this test bed (removed with it). */
function netnsEtcDirs(prefix: string, etc = NETNS_ETC): string[] {
  try {
    return readdirSync(etc)
      .filter((d) => d.startsWith(prefix))
      .map((d) => join(etc, d));
  } catch {
    return [];
  }
}

/** The names of one directory's test bed. */
export interface NetnsNames {
  hash: string;
  /** Prefix of every namespace of this test bed. */
  prefix: string;
  hub: string;
  /** The host's link to the bridge (it holds .1). */
  hostLink: string;
  ns(node: string): string;
  /** The node's veth end on the bridge (inside the hub namespace). */
  hubLink(node: string): string;
}

export function netnsNames(dir: string): NetnsNames {
  const hash = createHash('sha256').update(resolve(dir)).digest('hex').slice(0, 8);
  const prefix = `flotilla-${hash}-`;
  return {
    hash,
    prefix,
    hub: `${prefix}hub`,
    hostLink: `flb${hash}`,
    ns: (node) => `${prefix}${node}`,
    hubLink: (node) => `v-${node}`,
  };
}

/** A node's address in the subnet: the host .1, managers .11–.19, workers .101–.199. */
export function nodeAddress(base: string, node: string): string {
  const m = /^([mw])(\d+)$/.exec(node);
  if (!m) throw new Error(`no test-bed address for node '${node}'`);
  const n = Number(m[2]);
  const host = m[1] === 'm' ? 10 + n : 100 + n;
  if (n < 1 || (m[1] === 'm' && n > 9) || host > 254) throw new Error(`no test-bed address for node '${node}'`);
  return `${base}.${host}`;
}

/** Parses an IPv4 /24 (`10.213.7.0/24`) into its first three octets (`10.213.7`). */
export function parseSubnet(s: string): string {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.0\/24$/.exec(s.trim());
  if (!m || [m[1], m[2], m[3]].some((o) => Number(o) > 255)) {
    throw new UsageError(`--netns-subnet must be an IPv4 /24 ending in .0/24 (e.g. ${DEFAULT_NETNS_SUBNET}), got '${s}'`);
  }
  const [a, b] = [Number(m[1]), Number(m[2])];
  const priv = a === 10 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168);
  if (!priv) throw new UsageError(`--netns-subnet must be a private range (10/8, 172.16/12 or 192.168/16), got '${s}'`);
  return `${m[1]}.${m[2]}.${m[3]}`;
}

function ip(args: string[], opts: { quiet?: boolean } = {}): string {
  try {
    return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 });
  } catch (e) {
    if (opts.quiet) return '';
    const err = e as { stderr?: string; message: string };
    throw new Error(`ip ${args.join(' ')}: ${(err.stderr ?? '').trim() || err.message}`);
  }
}

/** Throws a clear error unless this process may build a test bed (root, and `ip netns` works). */
export function checkNetnsUsable(): void {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new UsageError('flotilla up --netns needs root (it creates network namespaces, veth pairs and a bridge): run it with sudo');
  }
  try {
    execFileSync('ip', ['netns', 'list'], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 });
  } catch (e) {
    throw new UsageError(`flotilla up --netns needs iproute2's \`ip netns\` (apt-get install iproute2): ${(e as Error).message}`);
  }
}

/** The namespaces that exist now whose name starts with `prefix`. */
export function namespacesWithPrefix(prefix: string): string[] {
  return ip(['netns', 'list'], { quiet: true })
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n.startsWith(prefix));
}

export function linkExists(name: string): boolean {
  return ip(['link', 'show', 'dev', name], { quiet: true }).trim() !== '';
}

/**
 * Removes every namespace and the host link of `dir`'s test bed (what a previous `up` left
 * behind, or this one's own at the end). Returns what it removed. Idempotent.
 */
export function removeNetnsBed(dir: string): string[] {
  const n = netnsNames(dir);
  const removed: string[] = [];
  // The host link first: deleting a namespace destroys its links only later, asynchronously.
  if (linkExists(n.hostLink)) {
    ip(['link', 'del', 'dev', n.hostLink], { quiet: true });
    removed.push(n.hostLink);
  }
  const nss = namespacesWithPrefix(n.prefix);
  // The nodes' namespaces before the hub (their veths go with either end).
  for (const ns of [...nss.filter((x) => x !== n.hub), ...nss.filter((x) => x === n.hub)]) {
    ip(['netns', 'del', ns], { quiet: true });
    removed.push(ns);
  }
  for (const d of netnsEtcDirs(n.prefix)) {
    rmSync(d, { recursive: true, force: true });
    removed.push(d);
  }
  return removed;
}

/** Networks on the host that overlap `base`.0/24 (addresses and routes), as `what: detail`. */
export function subnetUsers(base: string): string[] {
  const mine = ipToInt(`${base}.0`);
  const overlaps = (cidr: string): boolean => {
    const m = /^(\d+\.\d+\.\d+\.\d+)(?:\/(\d+))?$/.exec(cidr);
    if (!m) return false;
    const len = m[2] === undefined ? 32 : Number(m[2]);
    const pl = Math.min(len, 24);
    const mask = pl === 0 ? 0 : (0xffffffff << (32 - pl)) >>> 0;
    return ((ipToInt(m[1]!) & mask) >>> 0) === ((mine & mask) >>> 0);
  };
  const users: string[] = [];
  for (const line of ip(['-o', '-4', 'addr', 'show'], { quiet: true }).split('\n')) {
    const m = /^\d+:\s+(\S+)\s+inet\s+(\S+)/.exec(line);
    if (m && overlaps(m[2]!)) users.push(`address ${m[2]} on ${m[1]}`);
  }
  // A route into the range with no address of the host in it (a VPN, a static route).
  if (users.length === 0) {
    for (const line of ip(['-4', 'route', 'show'], { quiet: true }).split('\n')) {
      const d = line.trim().split(/\s+/)[0] ?? '';
      if (d && d !== 'default' && overlaps(d)) users.push(`route ${line.trim()}`);
    }
  }
  return users;
}

function ipToInt(a: string): number {
  return a.split('.').reduce((acc, o) => ((acc << 8) | Number(o)) >>> 0, 0);
}

export interface NetnsBed {
  names: NetnsNames;
  subnet: string;
  /** The host's address on the bridge (.1). */
  hostAddress: string;
  /** node id → its address. */
  addresses: Map<string, string>;
  /** The argv prefix that runs a command inside the node's namespace. */
  wrap(node: string): string[];
  /** Removes everything this test bed created (idempotent, synchronous). */
  teardown(): string[];
}

/**
 * Builds the test bed of `dir` for `nodes` (m1…, w1…): removes the leftovers of an earlier run
 * of the same directory, refuses a subnet already in use on the host, then creates the hub
 * with its bridge, the host link (.1) and one namespace per node. On any failure everything
 * created so far is removed before the error is thrown.
 */
export function createNetnsBed(dir: string, subnet: string, nodes: string[]): { bed: NetnsBed; stale: string[] } {
  checkNetnsUsable();
  const base = parseSubnet(subnet);
  const n = netnsNames(dir);
  const stale = removeNetnsBed(dir);
  const users = subnetUsers(base);
  if (users.length > 0) {
    throw new UsageError(`--netns-subnet ${base}.0/24 is already in use on this host (${users.join('; ')}); pick another with --netns-subnet`);
  }
  const addresses = new Map(nodes.map((id) => [id, nodeAddress(base, id)]));
  const bed: NetnsBed = {
    names: n,
    subnet: `${base}.0/24`,
    hostAddress: `${base}.1`,
    addresses,
    wrap: (node) => ['ip', 'netns', 'exec', n.ns(node)],
    teardown: () => removeNetnsBed(dir),
  };
  try {
    ip(['netns', 'add', n.hub]);
    ip(['-n', n.hub, 'link', 'set', 'lo', 'up']);
    ip(['-n', n.hub, 'link', 'add', 'br0', 'type', 'bridge']);
    ip(['-n', n.hub, 'link', 'set', 'br0', 'up']);
    ip(['link', 'add', n.hostLink, 'type', 'veth', 'peer', 'name', 'up0', 'netns', n.hub]);
    ip(['-n', n.hub, 'link', 'set', 'up0', 'master', 'br0', 'up']);
    ip(['addr', 'add', `${bed.hostAddress}/24`, 'dev', n.hostLink]);
    ip(['link', 'set', n.hostLink, 'up']);
    for (const [node, addr] of addresses) {
      const ns = n.ns(node);
      ip(['netns', 'add', ns]);
      ip(['-n', ns, 'link', 'set', 'lo', 'up']);
      ip(['-n', n.hub, 'link', 'add', n.hubLink(node), 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
      ip(['-n', n.hub, 'link', 'set', n.hubLink(node), 'master', 'br0', 'up']);
      ip(['-n', ns, 'addr', 'add', `${addr}/24`, 'dev', 'eth0']);
      ip(['-n', ns, 'link', 'set', 'eth0', 'up']);
      if (node.startsWith('w')) {
        mkdirSync(join(NETNS_ETC, ns), { recursive: true });
        writeFileSync(join(NETNS_ETC, ns, 'resolv.conf'), netnsResolvConf(addr));
      }
    }
  } catch (e) {
    bed.teardown();
    throw e;
  }
  return { bed, stale };
}

/**
 * Cuts a node of `dir`'s test bed off the bridge (its veth down on the hub side): nothing
 * reaches it and it reaches nothing, the host included. `healNode` puts it back.
 */
export function cutNode(dir: string, node: string): void {
  const n = netnsNames(dir);
  ip(['-n', n.hub, 'link', 'set', 'dev', n.hubLink(node), 'down']);
}

export function healNode(dir: string, node: string): void {
  const n = netnsNames(dir);
  ip(['-n', n.hub, 'link', 'set', 'dev', n.hubLink(node), 'up']);
}

/** One line per node for the banner of `up`: `m1 10.213.7.11 (netns flotilla-…-m1)`. */
export function describeBed(bed: NetnsBed): string {
  const rows = [...bed.addresses].map(([node, addr]) => `${node.padEnd(4)}${addr.padEnd(16)}netns ${bed.names.ns(node)}`);
  return [`host ${bed.hostAddress.padEnd(16)}link ${bed.names.hostLink} (bridge br0 in netns ${bed.names.hub}, subnet ${bed.subnet})`, ...rows].join('\n');
}
