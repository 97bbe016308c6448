// `npm run bench [-- NAME…]`: runs the named benchmarks (default: all) side by side with their
// peers, writes raw results to bench/results/NAME.json and the summary to BENCHMARKS.md.
//
//   raft      flotilla managers vs etcd: writes and linearizable reads, 1/16/256 clients
//   failover  SIGKILL the leader under load: unavailability window, flotilla vs etcd
//   schedule  1,000 simulated workers, 10,000 tasks: placements/s, time until all run
//   start     submit → container running, flotilla (docker driver) vs docker run vs swarm
//   update    health-gated rolling update of 10 replicas, parallelism 1: flotilla vs swarm
//   mesh      requests through the routing mesh vs straight to a replica (and swarm's mesh)
//   profile   (not in "all") CPU profile of the managers under write load: top frames
//
// Environment: BENCH_SECONDS (raft point length, default 10), BENCH_QUICK=1 (smoke run),
// BENCH_TRIALS (failover trials, default 20), BENCH_CLIENTS (e.g. 1,16,256), BENCH_UPDATE_TRIALS
// (default 3), BENCH_UPDATE_REPLICAS (default 10), BENCH_UPDATE_MONITOR_MS (default 1000).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { benchRaft } from './raft.js';
import { benchFailover } from './failover.js';
import { benchSchedule } from './schedule.js';
import { benchStart } from './start.js';
import { benchUpdate } from './update.js';
import { benchMesh } from './mesh.js';
import { benchProfile } from './profile.js';
import { writeReport } from './report.js';
import { stopAll } from './lib/procs.js';
import { QUICK, ROOT, gitSha, log, machine } from './lib/util.js';
import type { BenchOutput } from './types.js';

const BENCHES: Record<string, () => Promise<BenchOutput>> = {
  raft: benchRaft,
  failover: benchFailover,
  schedule: benchSchedule,
  start: benchStart,
  update: benchUpdate,
  mesh: benchMesh,
  profile: benchProfile,
};
const ALL = ['raft', 'failover', 'schedule', 'start', 'update', 'mesh'];

async function main(): Promise<number> {
  const args = process.argv.slice(2).filter((a) => a !== '--');
  const names = args.length === 0 || args.includes('all') ? ALL : args;
  for (const n of names) {
    if (!BENCHES[n]) {
      process.stderr.write(`unknown benchmark '${n}'; choose from ${Object.keys(BENCHES).join(', ')} (or none for ${ALL.join(', ')})\n`);
      return 2;
    }
  }
  // A quick (smoke) run writes to a temporary directory and leaves BENCHMARKS.md alone.
  const dir = QUICK ? join(tmpdir(), 'flotilla-bench-quick') : join(ROOT, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  let failed = 0;
  for (const name of names) {
    const started = new Date();
    const m = machine();
    log(`=== ${name} (${QUICK ? 'quick' : 'full'} run; load average ${m.loadavg.join(' ')})`);
    let out: BenchOutput;
    try {
      out = await BENCHES[name]!();
    } catch (e) {
      failed++;
      log(`${name} FAILED: ${(e as Error).stack ?? e}`);
      await stopAll();
      continue;
    }
    await stopAll();
    const file = {
      name,
      date: started.toISOString(),
      durationSeconds: Math.round((Date.now() - started.getTime()) / 1000),
      quick: QUICK,
      command: `npm run bench -- ${name}${QUICK ? ' (BENCH_QUICK=1)' : ''}`,
      machine: m,
      flotilla: { gitSha: gitSha(), node: process.version },
      peers: out.peers,
      parameters: out.parameters,
      skipped: out.skipped,
      results: out.results,
    };
    const path = join(dir, `${name}.json`);
    writeFileSync(path, JSON.stringify(file, null, 2) + '\n');
    log(`${name}: ${out.skipped ? `SKIPPED: ${out.skipped}` : 'done'} → ${path}`);
  }
  if (!QUICK) writeReport(dir, join(ROOT, 'BENCHMARKS.md'));
  return failed > 0 ? 1 : 0;
}

const code = await main();
await stopAll();
process.exit(code);
