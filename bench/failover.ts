// `failover`: under a steady write load (16 clients), SIGKILL the leader and measure the
// unavailability window = last successful write before the kill → first successful write
// started after the kill. The killed member is restarted and caught up between trials.
//
// Clients spread writes over all members (round-robin) and move to the next member on any
// error after 10 ms, with a 500 ms request timeout; both systems forward writes from
// followers to their leader. Configurations: flotilla at its defaults (heartbeat 50 ms,
// election 300–600 ms), etcd at its defaults (100 / 1000 ms) and etcd at 50 / 300 ms.
import { performance } from 'node:perf_hooks';
import { newAgent } from './lib/load.js';
import { EtcdCluster, FlotillaCluster, member, type KvSystem } from './lib/systems.js';
import { KEYS, VALUE, keyOf } from './raft.js';
import { QUICK, envNum, log, round, sleep, summarize } from './lib/util.js';
import type { BenchOutput } from './types.js';

export interface Trial {
  killed: string;
  newLeader: string | null;
  windowMs: number | null;
  /** ms from the kill back to the last success before it (negative) and to the first after. */
  lastBeforeMs: number | null;
  firstAfterMs: number | null;
  errorsDuring: number;
  /** Wall-clock time of the kill (to line up with the members' logs). */
  killedAt: string;
}

const CLIENTS = 16;
const REQUEST_TIMEOUT_MS = 500;

export async function trial(sys: KvSystem): Promise<Trial> {
  const leaderId = await sys.leader(20_000);
  const leader = member(sys, leaderId);
  const addrs = sys.members.map((m) => m.addr);
  const agent = newAgent(CLIENTS * 2);
  let stop = false;
  let killAt: number | null = null;
  let lastBefore: number | null = null;
  let firstAfter: number | null = null;
  let errorsDuring = 0;
  let ops = 0;
  const hardEnd = performance.now() + 30_000;
  let rnd = 777;
  const client = async (c: number) => {
    let idx = c % addrs.length;
    while (!stop && performance.now() < hardEnd && ops < 1_000_000) {
      ops++;
      rnd = (rnd * 1103515245 + 12345) & 0x7fffffff;
      const start = performance.now();
      try {
        await sys.put(agent, addrs[idx]!, keyOf(rnd % KEYS), VALUE, REQUEST_TIMEOUT_MS);
        const done = performance.now();
        if (killAt === null || done <= killAt) lastBefore = lastBefore === null ? done : Math.max(lastBefore, done);
        else if (start >= killAt && (firstAfter === null || done < firstAfter)) firstAfter = done;
        idx = (idx + 1) % addrs.length;
      } catch {
        if (killAt !== null) errorsDuring++;
        idx = (idx + 1) % addrs.length;
        await sleep(10);
      }
    }
  };
  const running = Promise.all(Array.from({ length: CLIENTS }, (_, c) => client(c)));
  await sleep(QUICK ? 500 : 1000); // steady state
  killAt = performance.now();
  const killedAt = new Date().toISOString();
  process.kill(leader.proc.pid!, 'SIGKILL');
  const deadline = performance.now() + 20_000;
  while (firstAfter === null && performance.now() < deadline) await sleep(5);
  await sleep(200);
  stop = true;
  await running;
  agent.destroy();
  await leader.proc.waitExit();
  const newLeader = await sys.leader(10_000, [leaderId]).catch(() => null);
  const t: Trial = {
    killed: leaderId,
    newLeader,
    windowMs: firstAfter !== null && lastBefore !== null ? round(firstAfter - lastBefore, 1) : null,
    lastBeforeMs: lastBefore !== null ? round(lastBefore - killAt, 1) : null,
    firstAfterMs: firstAfter !== null ? round(firstAfter - killAt, 1) : null,
    errorsDuring,
    killedAt,
  };
  // Restart the killed member and wait until it has caught up.
  leader.proc.start();
  await sys.caughtUp(leaderId, 30_000);
  await sleep(300);
  return t;
}

export async function runConfig(label: string, sys: KvSystem, trials: number) {
  log(`failover: ${label}`);
  await sys.start();
  const out: Trial[] = [];
  try {
    // Fill the key space so every write is an overwrite, as in the raft benchmark.
    const agent = newAgent(16);
    const l = member(sys, await sys.leader());
    for (let i = 0; i < KEYS; i += 16) await Promise.all(Array.from({ length: Math.min(16, KEYS - i) }, (_, j) => sys.put(agent, l.addr, keyOf(i + j), VALUE)));
    agent.destroy();
    for (let i = 0; i < trials; i++) {
      const t = await trial(sys);
      out.push(t);
      log(`  trial ${i + 1}/${trials}: killed ${t.killed}, new leader ${t.newLeader}: window ${t.windowMs} ms (last ok ${t.lastBeforeMs} ms, first ok +${t.firstAfterMs} ms)`);
    }
  } finally {
    await sys.stop();
  }
  const windows = out.map((t) => t.windowMs).filter((w): w is number => w !== null);
  const s = summarize(windows);
  return { label, trials: out, windowMs: { n: s.n, min: s.min, median: s.p50, max: s.max, mean: round(s.mean, 1) }, failedTrials: out.length - windows.length };
}

export async function benchFailover(): Promise<BenchOutput> {
  const etcdVersion = EtcdCluster.ensureInstalled();
  const trials = envNum('BENCH_TRIALS', QUICK ? 3 : 20);
  const configs = [
    await runConfig('flotilla (defaults: heartbeat 50 ms, election 300–600 ms)', new FlotillaCluster(), trials),
    await runConfig('etcd (defaults: heartbeat 100 ms, election 1000 ms)', new EtcdCluster(), trials),
    await runConfig('etcd --heartbeat-interval 50 --election-timeout 300', new EtcdCluster({ heartbeatMs: 50, electionMs: 300 }), trials),
  ];
  return {
    parameters: { trials, clients: CLIENTS, requestTimeoutMs: REQUEST_TIMEOUT_MS, retryDelayMs: 10, members: 3, keys: KEYS, valueBytes: VALUE.length, target: 'all members, round-robin' },
    peers: { etcd: etcdVersion },
    results: { configs },
  };
}
