// `flotilla chaos run --netns`: the cluster on the multi-host test bed (src/cli/netns.ts), every
// manager and worker in a network namespace of its own with its own address, and partitions
// made of KERNEL rules (nftables, one table per namespace) instead of the userspace proxies.
//
// What changes against a loopback run:
//   - managers talk to each other and workers to managers directly, address to address (no
//     `mA>mB`, `ext>mB` or `wN>mB` proxies): a partition is packets the kernel drops;
//   - the workload's client links (`cK>mB`, `tasks>mB`, …) are still proxies on the host's
//     loopback that dial the managers' test-bed addresses, so `drop` and `latency` keep acting
//     on them, and the harness's own requests go from the host (.1) straight to the managers;
//   - kill, pause, restart… are by PID as before (`ip netns exec` execs the node: same pid).
//
// Rules. A cut between nodes A and B drops, in A's namespace, what A sends to B's address
// (output hook) and what it receives from B's address (input hook), and the same in B's. A
// one-way cut "A cannot send to X" is the output rule in A's namespace only: A still receives
// (a TCP handshake from X to A then fails too, as on a real network where A's answers vanish).
// Packets are dropped silently (no RST, no ICMP): a connection in flight stalls and retransmits,
// a new one times out, as across a broken switch. The host's address is never in a rule, so the
// harness still sees every manager. Every rule has a counter: healing reads how many packets
// each namespace dropped (the proof that the cut bit) and then deletes the table; the test bed
// is removed with the cluster (namespaces, veths, bridge and the rules inside them).
import { execFile, execFileSync } from 'node:child_process';
import { checkNetnsUsable, createNetnsBed, nodeAddress, parseSubnet, type NetnsBed } from '../src/cli/netns.js';
import { UsageError } from '../src/cli/util.js';

/** The chaos harness's default subnet (not `up --netns`'s 10.213.7.0/24). */
export const CHAOS_NETNS_SUBNET = '10.213.40.0/24';
/** The nftables table the harness owns in each namespace. */
export const NFT_TABLE = 'flotilla_chaos';
/** Every manager listens on this port of its own address. */
export const NETNS_MANAGER_PORT = 7400;

/** Throws a clear (usage) error unless this process can build the test bed and run nft. */
export function checkChaosNetnsUsable(): void {
  if (process.platform !== 'linux') throw new UsageError('chaos run --netns needs Linux network namespaces');
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new UsageError('chaos run --netns needs root (it creates network namespaces, veth pairs, a bridge and nftables rules): run it with sudo');
  }
  checkNetnsUsable();
  try {
    execFileSync('nft', ['--version'], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 });
  } catch (e) {
    throw new UsageError(`chaos run --netns partitions with nftables' \`nft\` (apt-get install nftables): ${(e as Error).message}`);
  }
}

/** What one namespace drops: addresses it may not send to / receive from. */
interface NsRules {
  out: Set<string>;
  in: Set<string>;
}

/** Packets one namespace's rules dropped before they were removed. */
export interface DropCount {
  node: string;
  out: number;
  in: number;
}

/** The outcome of one heal of the kernel rules. */
export interface KernelHeal {
  namespaces: number;
  dropped: DropCount[];
  packets: number;
  /** Namespaces whose table could not be removed (reported; the teardown removes them anyway). */
  failed: string[];
  /** nft tables found in any node's namespace after the removal (`node: family name`): none expected. */
  left: string[];
}

function run(cmd: string, args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { encoding: 'utf8', timeout: 10_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')}: ${(stderr || err.message).trim()}`));
      else resolve(stdout);
    });
    if (input !== undefined) child.stdin?.end(input);
  });
}

/** The nft script of one namespace's rules (the table is created fresh). */
export function nftScript(r: { out: Iterable<string>; in: Iterable<string> }): string {
  const out = [...r.out].sort();
  const inn = [...r.in].sort();
  const lines = [`table inet ${NFT_TABLE} {`, '  chain output {', '    type filter hook output priority -10; policy accept;'];
  if (out.length > 0) lines.push(`    ip daddr { ${out.join(', ')} } counter drop`);
  lines.push('  }', '  chain input {', '    type filter hook input priority -10; policy accept;');
  if (inn.length > 0) lines.push(`    ip saddr { ${inn.join(', ')} } counter drop`);
  lines.push('  }', '}');
  return lines.join('\n') + '\n';
}

/** Sums the `counter packets N` of the output and input chains of `nft list table`. */
export function parseDropCounters(listing: string): { out: number; in: number } {
  const res = { out: 0, in: 0 };
  let chain: 'out' | 'in' | null = null;
  for (const line of listing.split('\n')) {
    const c = /^\s*chain (\S+)/.exec(line);
    if (c) chain = c[1] === 'output' ? 'out' : c[1] === 'input' ? 'in' : null;
    const m = /counter packets (\d+) bytes \d+/.exec(line);
    if (m && chain !== null) res[chain] += Number(m[1]);
  }
  return res;
}

/** The run's test bed: nodes, addresses, the `ip netns exec` prefix, kernel partitions, teardown. */
export class ChaosNetnsBed {
  /** Rules staged by cut()/block(), installed by apply(). */
  private staged = new Map<string, NsRules>();
  /** Namespaces whose table is installed now. */
  private installed = new Map<string, NsRules>();
  private removed = false;

  private constructor(
    readonly bed: NetnsBed,
    readonly nodes: string[],
  ) {}

  /**
   * Creates the namespaces of `nodes` for the cluster directory `dir` (leftovers of an earlier
   * run of the same directory are removed first). On failure nothing is left behind.
   */
  static create(dir: string, subnet: string, nodes: string[]): { bed: ChaosNetnsBed; stale: string[] } {
    checkChaosNetnsUsable();
    parseSubnet(subnet);
    const { bed, stale } = createNetnsBed(dir, subnet, nodes);
    return { bed: new ChaosNetnsBed(bed, nodes), stale };
  }

  address(node: string): string {
    const a = this.bed.addresses.get(node);
    if (a === undefined) throw new Error(`no test-bed address for ${node}`);
    return a;
  }

  namespace(node: string): string {
    return this.bed.names.ns(node);
  }

  /** argv prefix running a command in the node's namespace. */
  wrap(node: string): string[] {
    return this.bed.wrap(node);
  }

  private rules(node: string): NsRules {
    let r = this.staged.get(node);
    if (r === undefined) this.staged.set(node, (r = { out: new Set(), in: new Set() }));
    return r;
  }

  /** Stages a symmetric cut between two nodes (nothing passes either way). */
  cutPair(a: string, b: string): void {
    const [aa, ba] = [this.address(a), this.address(b)];
    this.rules(a).out.add(ba);
    this.rules(a).in.add(ba);
    this.rules(b).out.add(aa);
    this.rules(b).in.add(aa);
  }

  /** Stages a one-way cut: nothing `from` sends to `to` arrives (it still receives from it). */
  blockSend(from: string, to: string): void {
    this.rules(from).out.add(this.address(to));
  }

  /** Installs the staged rules (one nft transaction per namespace); returns the namespaces touched. */
  async apply(): Promise<string[]> {
    const touched: string[] = [];
    const jobs: Promise<void>[] = [];
    for (const [node, r] of this.staged) {
      if (r.out.size === 0 && r.in.size === 0) continue;
      const ns = this.namespace(node);
      // Replace whatever table is there (add + delete: works whether it exists or not).
      const script = `add table inet ${NFT_TABLE}\ndelete table inet ${NFT_TABLE}\n` + nftScript(r);
      jobs.push(run('ip', ['netns', 'exec', ns, 'nft', '-f', '-'], script).then(() => void this.installed.set(node, r)));
      touched.push(node);
    }
    this.staged = new Map();
    await Promise.all(jobs);
    return touched;
  }

  /** Nodes with rules installed now. */
  get active(): string[] {
    return [...this.installed.keys()];
  }

  /** Reads each table's drop counters, then deletes every table the harness installed. */
  async heal(): Promise<KernelHeal | null> {
    this.staged = new Map();
    if (this.installed.size === 0) return null;
    const nodes = [...this.installed.keys()];
    this.installed = new Map();
    const res: KernelHeal = { namespaces: nodes.length, dropped: [], packets: 0, failed: [], left: [] };
    await Promise.all(
      nodes.map(async (node) => {
        const ns = this.namespace(node);
        try {
          const listing = await run('ip', ['netns', 'exec', ns, 'nft', 'list', 'table', 'inet', NFT_TABLE]);
          const c = parseDropCounters(listing);
          res.dropped.push({ node, ...c });
          res.packets += c.out + c.in;
        } catch {
          /* counters unreadable: the deletion below still runs */
        }
        try {
          await run('ip', ['netns', 'exec', ns, 'nft', 'delete', 'table', 'inet', NFT_TABLE]);
        } catch {
          res.failed.push(node);
        }
      }),
    );
    res.dropped.sort((a, b) => a.node.localeCompare(b.node));
    res.left = await this.tables();
    return res;
  }

  /** Every nft table present in the nodes' namespaces now (`node: family name`): the heal's proof. */
  async tables(): Promise<string[]> {
    const per = await Promise.all(
      this.nodes.map(async (node) => {
        try {
          const s = await run('ip', ['netns', 'exec', this.namespace(node), 'nft', 'list', 'tables']);
          return s
            .split('\n')
            .filter((l) => l.trim() !== '')
            .map((l) => `${node}: ${l.trim().replace(/^table /, '')}`);
        } catch {
          return []; // namespace gone
        }
      }),
    );
    return per.flat();
  }

  /**
   * SIGKILLs every process still inside the nodes' namespaces (by PID, from `ip netns pids`):
   * only the run's own nodes and their tasks live there, including a task spawned too late to
   * be in its worker's records. Synchronous (exit hooks); returns the pids signalled.
   */
  killProcesses(): number[] {
    const killed: number[] = [];
    for (let round = 0; round < 3; round++) {
      let found = 0;
      for (const node of this.nodes) {
        let pids: number[] = [];
        try {
          const s = execFileSync('ip', ['netns', 'pids', this.namespace(node)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 });
          pids = s.split('\n').map((l) => Number(l.trim())).filter((n) => Number.isInteger(n) && n > 1 && n !== process.pid);
        } catch {
          continue; // namespace gone
        }
        for (const pid of pids) {
          try {
            process.kill(pid, 'SIGKILL');
            found++;
            if (!killed.includes(pid)) killed.push(pid);
          } catch {
            /* already gone */
          }
        }
      }
      if (found === 0) break;
    }
    return killed;
  }

  /** Removes the namespaces, veths, bridge and host link (synchronous, idempotent). */
  teardown(): string[] {
    if (this.removed) return [];
    this.removed = true;
    this.installed = new Map();
    return this.bed.teardown();
  }
}

/** The managers' addresses of a subnet (for the banner and tests). */
export function netnsManagerAddr(subnet: string, id: string): string {
  return `${nodeAddress(parseSubnet(subnet), id)}:${NETNS_MANAGER_PORT}`;
}
