// `npm run sim:cluster -- --seeds N [--from S] [--bug B]` runs N seeds and prints a summary;
// `--seed S [--bug B]` replays one seed with a readable trace. Each simulated worker is the real
// WorkerAgent over a fake driver (src/sim/cluster/real-worker.ts); `--model-worker` runs the
// model worker (src/sim/cluster/worker.ts) instead. Exit 1 when a seed violates a
// property (each failing seed is printed with the command that replays it).
import { replayCommand, runCluster } from './run.js';
import { CLUSTER_BUGS, type ClusterBug } from './manager.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<void> {
  const bug = (arg('--bug') ?? 'none') as ClusterBug;
  if (bug !== 'none' && !CLUSTER_BUGS.includes(bug)) {
    console.error(`unknown --bug ${bug}; one of: ${CLUSTER_BUGS.join(', ')}`);
    process.exit(2);
  }
  const modelWorker = process.argv.includes('--model-worker');
  const one = arg('--seed');
  if (one !== undefined) {
    const seed = Number(one);
    const r = await runCluster({ seed, bug, modelWorker, trace: (l) => console.log(l) });
    console.log(`\nseed ${seed}: ${r.managers} managers, ${r.workers} workers, ${(r.virtualMs / 1000).toFixed(0)} s virtual, ${r.events} events, hash ${r.hash}`);
    console.log(JSON.stringify(r.stats));
    for (const v of r.violations) console.log(`VIOLATION ${v.property} at ${v.at} ms: ${v.message}`);
    process.exit(r.violations.length > 0 ? 1 : 0);
  }
  const n = Number(arg('--seeds') ?? '100');
  const from = Number(arg('--from') ?? '1');
  const t0 = performance.now();
  let bad = 0;
  for (let s = from; s < from + n; s++) {
    const r = await runCluster({ seed: s, bug, modelWorker });
    if (r.violations.length > 0) {
      bad++;
      console.log(`seed ${s}: ${r.violations[0]!.property}: ${r.violations[0]!.message}\n  replay: ${replayCommand(s, bug, modelWorker)}`);
    }
  }
  const secs = (performance.now() - t0) / 1000;
  console.log(`${n} seeds (${from}..${from + n - 1}), bug ${bug}${modelWorker ? ', model worker' : ''}: ${bad} with violations; ${secs.toFixed(1)} s, ${((n / secs) * 60).toFixed(0)} seeds/min`);
  process.exit(bad > 0 ? 1 : 0);
}

void main();
