// npm run sim -- --seeds N [--bug BUG] [--from S]   (BUG: see SIM_BUGS in network.ts)
// npm run sim -- --seed S [--bug ...] [--quiet]        replay one seed with a readable trace
import { describe, runSeed, type RunResult } from './run.js';
import { SIM_BUGS, type SimBug } from './network.js';

function usage(msg?: string): never {
  if (msg) console.error(`sim: ${msg}`);
  console.error('usage: npm run sim -- --seeds N [--from S] [--bug BUG]');
  console.error('       npm run sim -- --seed S [--bug BUG] [--quiet]');
  console.error(`BUG: none|${SIM_BUGS.join('|')}`);
  process.exit(2);
}

function parse(argv: string[]): { seeds?: number; seed?: number; from: number; bug: SimBug; quiet: boolean } {
  let seeds: number | undefined;
  let seed: number | undefined;
  let from = 1;
  let bug: SimBug = 'none';
  let quiet = false;
  const num = (v: string | undefined, name: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) usage(`${name} needs a non-negative integer`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const [flag, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const val = (): string | undefined => inline ?? argv[++i];
    switch (flag) {
      case '--seeds':
        seeds = num(val(), '--seeds');
        break;
      case '--seed':
        seed = num(val(), '--seed');
        break;
      case '--from':
        from = num(val(), '--from');
        break;
      case '--bug': {
        const b = val();
        if (b !== 'none' && !(SIM_BUGS as readonly string[]).includes(b ?? '')) usage(`unknown bug ${b}`);
        bug = b as SimBug;
        break;
      }
      case '--quiet':
        quiet = true;
        break;
      case '-h':
      case '--help':
        usage();
        break;
      default:
        usage(`unknown argument ${a}`);
    }
  }
  if (seeds === undefined && seed === undefined) usage('give --seeds N or --seed S');
  return { seeds, seed, from, bug, quiet };
}

function replayCmd(seed: number, bug: SimBug): string {
  return `npm run sim -- --seed ${seed}${bug !== 'none' ? ` --bug ${bug}` : ''}`;
}

function summary(r: RunResult): string {
  const s = r.stats;
  return (
    `seed ${r.seed}: ${r.family}, ${r.nodes} nodes, ${r.ticks} ticks (faults ${r.faultTicks}, heal ${r.healTicks}), ` +
    `trace ${r.hash}; ${s.writes} writes (${s.acked} acked), ${s.reads} reads, ${s.elections} elections, ` +
    `${s.crashes} crashes, ${s.confChanges} conf changes, ${s.msgs} msgs (${s.dropped} dropped), ` +
    `${s.snapshotsSent} snapshots sent, ${s.compactions} compactions`
  );
}

function main(): void {
  const args = parse(process.argv.slice(2));
  if (args.seed !== undefined) {
    const t0 = performance.now();
    const r = runSeed({ seed: args.seed, bug: args.bug, trace: args.quiet ? undefined : (line) => console.log(line) });
    const ms = performance.now() - t0;
    console.log(summary(r));
    for (const v of r.violations) console.log(`VIOLATION ${describe(v)}`);
    console.log(`time: ${ms.toFixed(0)} ms`);
    console.log(`sim: 1 seeds, ${r.violations.length} violations`);
    process.exit(r.violations.length > 0 ? 1 : 0);
  }
  const n = args.seeds!;
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  let violations = 0;
  let first = 0;
  const step = Math.max(1, Math.ceil(n / 10));
  for (let i = 0; i < n; i++) {
    const seed = args.from + i;
    const r = runSeed({ seed, bug: args.bug });
    for (const v of r.violations) {
      violations++;
      if (first === 0) first = seed;
      console.log(`VIOLATION ${v.property} seed ${seed} tick ${v.tick}: ${v.detail}`);
      console.log(`  replay: ${replayCmd(seed, args.bug)}`);
    }
    if ((i + 1) % step === 0 && i + 1 < n) {
      const sec = (performance.now() - t0) / 1000;
      console.log(`sim: ${i + 1}/${n} seeds, ${violations} violations, ${sec.toFixed(1)} s`);
    }
  }
  const sec = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const cpuSec = (cpu.user + cpu.system) / 1e6;
  const per = (x: number): string => ((x * 1000) / Math.max(1, n)).toFixed(1);
  console.log(
    `time: ${sec.toFixed(1)} s (cpu ${cpuSec.toFixed(1)} s), ${per(sec)} s per 1,000 seeds (cpu ${per(cpuSec)} s)` +
      `${first ? `; first violating seed ${first}` : ''}`,
  );
  console.log(`sim: ${n} seeds, ${violations} violations`);
  process.exit(violations > 0 ? 1 : 0);
}

main();
