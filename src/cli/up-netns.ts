// `flotilla up --netns`: what `up` needs of the test bed (src/cli/netns.ts) — the managers'
// and workers' addresses, the `ip netns exec` prefix of each node, the banner, and the
// teardown on every way out (Ctrl-C, SIGTERM, a failed start, an exception).
import { checkNetnsUsable, createNetnsBed, describeBed, nodeAddress, parseSubnet, type NetnsBed } from './netns.js';
import { UsageError } from './util.js';

export interface UpNetns {
  bed: NetnsBed;
  /** The driver the test bed runs when --driver is not given. */
  driver: 'process';
  wrap(node: string): string[];
  /** Removes the namespaces, the veths and the bridge (idempotent). */
  teardown(out?: (s: string) => void): void;
  banner(): string;
}

/** The managers' host:port on the test bed, all on the same port (each has its own address). */
export function netnsManagerAddrs(subnet: string, managerIds: string[], port: number): string[] {
  const base = parseSubnet(subnet);
  return managerIds.map((id) => `${nodeAddress(base, id)}:${port}`);
}

/** The checks that need nothing created yet (run before `up` touches its directory). */
export function precheckNetns(flags: { driver?: string; host: string; netnsSubnet: string }): void {
  if (flags.host !== '127.0.0.1') throw new UsageError('--host and --netns do not go together: with --netns every node gets its own address (see --netns-subnet)');
  parseSubnet(flags.netnsSubnet);
  checkNetnsUsable();
}

export function netnsForUp(
  flags: { driver?: string; host: string; netnsSubnet: string },
  dir: string,
  managerIds: string[],
  workers: number,
): UpNetns {
  precheckNetns(flags);
  const workerIds = Array.from({ length: workers }, (_, i) => `w${i + 1}`);
  const { bed, stale } = createNetnsBed(dir, flags.netnsSubnet, [...managerIds, ...workerIds]);
  if (stale.length > 0) process.stderr.write(`netns: removed leftovers of an earlier run: ${stale.join(' ')}\n`);
  let done = false;
  const teardown = (out?: (s: string) => void): void => {
    if (done) return;
    done = true;
    try {
      const removed = bed.teardown();
      out?.(`netns: removed ${removed.length} namespaces and links (${bed.names.prefix}*, ${bed.names.hostLink})\n`);
    } catch (e) {
      process.stderr.write(`netns: cleanup failed (${(e as Error).message}); the next \`flotilla up --netns\` of this directory retries\n`);
    }
  };
  // Whatever way this process ends (an exception after the test bed was made included).
  process.on('exit', () => teardown());
  process.stdout.write(`netns test bed:\n${indent(describeBed(bed))}\n`);
  return {
    bed,
    driver: 'process',
    wrap: (node) => bed.wrap(node),
    teardown,
    banner: () => `  netns:      every node in its own namespace (Ctrl-C removes them)\n${indent(describeBed(bed), 14)}`,
  };
}

function indent(s: string, n = 2): string {
  return s
    .split('\n')
    .map((l) => ' '.repeat(n) + l)
    .join('\n');
}

/**
 * A directory's managers keep the addresses they were bootstrapped with (membership comes from
 * their data): a cluster made by a plain `up` cannot come back on the test bed's addresses, nor
 * the other way round. Refused with a clear message instead of managers that never find each other.
 */
export function checkAddressesKept(previous: string[] | undefined, addrs: string[], hasData: boolean, netns: boolean, dir: string): void {
  if (!previous || !hasData) return;
  const host = (a: string) => a.slice(0, a.lastIndexOf(':'));
  const wasNetns = new Set(previous.map(host)).size > 1;
  if (!netns && !wasNetns) return;
  if (previous.length === addrs.length && previous.every((a, i) => a === addrs[i])) return;
  throw new UsageError(
    `${dir} holds a cluster whose managers are at ${previous.join(',')}; ${netns ? 'up --netns' : 'up'} would put them at ${addrs.join(',')}, ` +
      `which their data does not know. ${wasNetns ? 'Run it with --netns and the same --netns-subnet' : 'Use a fresh --dir for the test bed'} (or remove ${dir}).`,
  );
}
