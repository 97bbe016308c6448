// `flotilla chaos run`: a real cluster of processes behind fault-injecting proxies, a seeded
// nemesis, a recorded workload and the history checkers (chaos/README.md).
import { Option, type Command } from 'commander';
import { resolve, join } from 'node:path';
import { action, parseIntFlag, UsageError } from './util.js';

interface ChaosFlags {
  managers: string;
  workers: string;
  driver: string;
  duration: string;
  faults: string;
  workload: string;
  interval: string;
  seed?: string;
  out?: string;
  allowQuorumLoss?: boolean;
  clients: string;
  plainClients: string;
  keys: string;
  opTimeout: string;
  convergence: string;
  injectStaleReads?: boolean;
  netns?: boolean;
  netnsSubnet?: string;
  mesh?: boolean;
  meshStallTimeout: string;
}

/** `120s`, `500ms`, `2m`, or plain seconds. */
export function parseDuration(flag: string, v: string, minMs: number, maxMs: number): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(v.trim());
  if (!m) throw new UsageError(`${flag} must be a duration such as 500ms, 20s or 2m, got '${v}'`);
  const n = Number(m[1]);
  const ms = Math.round(m[2] === 'ms' ? n : m[2] === 'm' ? n * 60_000 : n * 1000);
  if (ms < minMs || ms > maxMs) throw new UsageError(`${flag} must be between ${fmtDuration(minMs)} and ${fmtDuration(maxMs)}, got '${v}'`);
  return ms;
}

export function fmtDuration(ms: number): string {
  if (ms % 60_000 === 0 && ms >= 60_000) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

export function registerChaosCommands(program: Command): void {
  const chaos = program.command('chaos').description('fault-injection testing against a real local cluster');
  chaos
    .command('run')
    .description('start a cluster behind fault-injecting proxies, run a workload under a seeded nemesis, check the history')
    .option('--managers <n>', '3 or 5', '3')
    .option('--workers <n>', 'workers (process driver); 0 skips the task workload', '2')
    .option('--driver <driver>', 'task driver of the workers (only process)', 'process')
    .option('--duration <time>', 'how long the nemesis and the workload run', '120s')
    .option(
      '--faults <list>',
      'kill,pause,partition,restart,drop,latency (also clock-step,long-pause,wipe,disk-full,grow,kill-worker,worker,freeze-replica; "all" for every fault, or "none")',
      'kill,pause,partition,restart,drop,latency',
    )
    .option('--workload <kinds>', 'tasks (kv + tasks), or services (kv + tasks + replicated services scaled, updated and rolled back; checked by the services checker)', 'tasks')
    .option('--mesh', 'the mesh workload: a service published through the routing mesh, asked through every worker (default with --workload services)')
    .option('--no-mesh', 'no mesh workload with --workload services')
    .option('--mesh-stall-timeout <ms>', "the workers' --mesh-stall-timeout when the mesh workload runs (0: off, to see the mesh checker fail)", '1000')
    .option('--interval <time>', 'time between nemesis steps (a fault, then a heal, …)', '3s')
    .option('--seed <seed>', 'PRNG seed of the nemesis schedule and the workload (default: random, printed)')
    .option('--out <dir>', 'output directory (default ./chaos-out/<timestamp>)')
    .option('--allow-quorum-loss', 'let faults take down or cut off a majority (unavailability is expected, wrong answers are not)')
    .option('--clients <n>', 'concurrent kv clients (an x-request-id on every write)', '8')
    .option('--plain-clients <n>', 'more kv clients that send no x-request-id, like curl (0 for none)', '2')
    .option('--keys <n>', 'kv keys the clients share', '5')
    .option('--op-timeout <time>', 'per-operation timeout (after it, the outcome is unknown)', '5s')
    .option('--convergence <time>', 'after healing: bound on convergence, final reads and task settling', '30s')
    .option('--netns', 'root only: every manager and worker in its own network namespace with its own address; partitions are kernel (nftables) rules')
    .option('--netns-subnet <cidr>', 'the private /24 of the --netns test bed (default 10.213.40.0/24; the host gets .1)')
    .addOption(new Option('--inject-stale-reads', 'test only: read with ?stale=true from cut-off managers').hideHelp())
    .addHelpText(
      'after',
      `
Exit status: 0 the history passed every check, 1 a violation (or an inconclusive check, or no
recovery after healing), 2 usage error. On failure the seed and the command to replay it are
printed; the same seed gives the same nemesis schedule.

Examples:
  flotilla chaos run --duration 60s --seed 42
  flotilla chaos run --managers 5 --workers 3 --faults partition,kill --interval 2s
  flotilla chaos run --faults kill,pause --allow-quorum-loss --out ./chaos-out/ql
  flotilla chaos run --workload services --faults kill,pause,partition,restart,worker --duration 90s
  flotilla chaos run --workload services --faults freeze-replica,kill,pause --duration 60s
  flotilla chaos run --faults all --duration 600s      # every fault (disk-full needs root)
  sudo flotilla chaos run --netns --workers 3 --faults partition,kill,pause --duration 180s`,
    )
    .action(
      action(async (f: ChaosFlags, cmd: Command) => {
        // The root program has a global --managers (addresses) that commander fills first.
        let root: Command = cmd;
        while (root.parent) root = root.parent;
        const rawManagers = cmd.getOptionValueSource('managers') === 'default' && typeof root.opts().managers === 'string' ? (root.opts().managers as string) : f.managers;
        const managers = parseIntFlag('--managers', rawManagers, 3, 5);
        if (managers !== 3 && managers !== 5) throw new UsageError(`--managers must be 3 or 5, got '${rawManagers}'`);
        const workers = parseIntFlag('--workers', f.workers, 0, 10);
        if (f.driver !== 'process') throw new UsageError(`--driver must be process (the harness inspects task processes on this host), got '${f.driver}'`);
        const durationMs = parseDuration('--duration', f.duration, 1000, 24 * 3_600_000);
        const intervalMs = parseDuration('--interval', f.interval, 200, 3_600_000);
        const opTimeoutMs = parseDuration('--op-timeout', f.opTimeout, 100, 600_000);
        const convergenceMs = parseDuration('--convergence', f.convergence, 1000, 3_600_000);
        const clients = parseIntFlag('--clients', f.clients, 1, 64);
        const plainClients = parseIntFlag('--plain-clients', f.plainClients, 0, 64);
        const keys = parseIntFlag('--keys', f.keys, 1, 100);
        const { FAULT_KINDS } = await import('../../chaos/nemesis.js');
        const list = f.faults.trim();
        const meshOn = (f.mesh ?? f.workload.trim() === 'services') && workers > 0;
        const faults = list === 'none' || list === '' ? [] : list === 'all' ? FAULT_KINDS.filter((k) => (k !== 'disk-full' || process.getuid?.() === 0) && (k !== 'kill-worker' || workers >= 2) && (k !== 'freeze-replica' || (meshOn && workers >= 2))) : [...new Set(list.split(',').map((s) => s.trim()).filter(Boolean))];
        for (const k of faults) {
          if (!(FAULT_KINDS as readonly string[]).includes(k)) throw new UsageError(`--faults: unknown fault '${k}' (known: ${FAULT_KINDS.join(', ')}, or all)`);
        }
        if (faults.includes('disk-full') && process.getuid?.() !== 0) {
          throw new UsageError('--faults disk-full is unavailable: it mounts a small tmpfs under each manager\'s data directory, which needs root (run as root, or leave disk-full out)');
        }
        if (faults.includes('kill-worker') && workers < 2) throw new UsageError('--faults kill-worker needs --workers 2 or more (it never kills the last worker)');
        const workload = f.workload.trim();
        if (workload !== 'tasks' && workload !== 'services') throw new UsageError(`--workload must be tasks or services, got '${f.workload}'`);
        if (workload === 'services' && workers < 1) throw new UsageError('--workload services needs --workers 1 or more (services run on workers)');
        if (f.mesh === true && workers < 1) throw new UsageError('--mesh needs --workers 1 or more (the mesh runs on workers)');
        const mesh = (f.mesh ?? workload === 'services') && workers > 0;
        if (!/^\d{1,6}$/.test(f.meshStallTimeout.trim())) throw new UsageError(`--mesh-stall-timeout must be a number of ms (0: off), got '${f.meshStallTimeout}'`);
        const meshStallTimeoutMs = Number(f.meshStallTimeout.trim());
        if (faults.includes('freeze-replica') && (!mesh || workers < 2)) throw new UsageError('--faults freeze-replica needs the mesh workload (--workload services or --mesh) and --workers 2 or more (it never freezes the last replica)');
        if (f.netnsSubnet !== undefined && !f.netns) throw new UsageError('--netns-subnet goes with --netns');
        let netns: { subnet: string } | undefined;
        if (f.netns) {
          const { CHAOS_NETNS_SUBNET, checkChaosNetnsUsable } = await import('../../chaos/netns.js');
          const { parseSubnet } = await import('./netns.js');
          netns = { subnet: `${parseSubnet(f.netnsSubnet ?? CHAOS_NETNS_SUBNET)}.0/24` };
          checkChaosNetnsUsable();
        }
        const { parseSeed } = await import('../../chaos/prng.js');
        let seed: number;
        if (f.seed !== undefined) {
          if (f.seed.trim() === '') throw new UsageError('--seed must not be empty');
          seed = parseSeed(f.seed.trim());
        } else seed = Math.floor(Math.random() * 2 ** 31);
        const stamp = new Date().toISOString().replace(/[:.]/g, '-');
        const out = resolve(f.out ?? join('chaos-out', stamp));
        const replay = [
          'flotilla chaos run',
          `--managers ${managers}`,
          `--workers ${workers}`,
          `--duration ${fmtDuration(durationMs)}`,
          `--faults ${faults.length > 0 ? faults.join(',') : 'none'}`,
          `--interval ${fmtDuration(intervalMs)}`,
          `--seed ${seed}`,
          ...(clients !== 8 ? [`--clients ${clients}`] : []),
          ...(plainClients !== 2 ? [`--plain-clients ${plainClients}`] : []),
          ...(keys !== 5 ? [`--keys ${keys}`] : []),
          ...(opTimeoutMs !== 5000 ? [`--op-timeout ${fmtDuration(opTimeoutMs)}`] : []),
          ...(workload !== 'tasks' ? [`--workload ${workload}`] : []),
          ...(mesh && workload !== 'services' ? ['--mesh'] : []),
          ...(!mesh && workload === 'services' ? ['--no-mesh'] : []),
          ...(mesh && meshStallTimeoutMs !== 1000 ? [`--mesh-stall-timeout ${meshStallTimeoutMs}`] : []),
          ...(f.allowQuorumLoss ? ['--allow-quorum-loss'] : []),
          ...(f.injectStaleReads ? ['--inject-stale-reads'] : []),
          ...(netns !== undefined ? ['--netns', ...(f.netnsSubnet !== undefined ? [`--netns-subnet ${netns.subnet}`] : [])] : []),
        ].join(' ');

        const ac = new AbortController();
        let signals = 0;
        const onSignal = (sig: string): void => {
          signals++;
          if (signals === 1) {
            process.stderr.write(`\nchaos: ${sig}: stopping the run (again to abort at once)\n`);
            ac.abort();
          } else process.exit(130); // the 'exit' hook still kills every process by PID
        };
        const onInt = (): void => onSignal('SIGINT');
        const onTerm = (): void => onSignal('SIGTERM');
        process.on('SIGINT', onInt);
        process.on('SIGTERM', onTerm);
        const { runChaos } = await import('../../chaos/run.js');
        process.stderr.write(`chaos: seed ${seed}; output in ${out}\n`);
        const r = await runChaos({
          managers,
          workers,
          durationMs,
          faults: faults as import('../../chaos/nemesis.js').FaultKind[],
          intervalMs,
          seed,
          out,
          allowQuorumLoss: f.allowQuorumLoss === true,
          clients,
          plainClients,
          keys,
          opTimeoutMs,
          convergenceMs,
          injectStaleReads: f.injectStaleReads === true,
          services: workload === 'services',
          mesh,
          meshStallTimeoutMs,
          ...(netns !== undefined ? { netns } : {}),
          replay,
          signal: ac.signal,
          progress: (line) => process.stderr.write(`chaos: ${line}\n`),
        });
        process.off('SIGINT', onInt);
        process.off('SIGTERM', onTerm);
        process.stdout.write(r.text + '\n');
        if (r.exitCode !== 0) process.stderr.write(`\nchaos: ${r.report.verdict.toUpperCase()} with seed ${seed}. Replay with:\n  ${replay}\n`);
        if (ac.signal.aborted) process.exit(130);
        process.exit(r.exitCode);
      }),
    );
}
