// `raft`: replicated writes and linearizable reads, flotilla's managers vs etcd, three members
// each on loopback, driven by the same load generator (bench/lib/load.ts).
//
// flotilla: PUT /v1/kv/bench/kNNN (256-byte body)     GET  /v1/kv/bench/kNNN
// etcd:     POST /v3/kv/put {"key","value"} (base64)  POST /v3/kv/range {"key"} (linearizable)
//
// Both clusters run at the same time and the points alternate (flotilla, then etcd, at each
// concurrency) so that background load on this shared machine hits both alike; the idle CPU of
// the cluster that is not being measured is recorded.
import { readFileSync } from 'node:fs';
import { mergeLoads, newAgent, requestOk, runLoad, type LoadResult } from './lib/load.js';
import { EtcdCluster, FlotillaCluster, member, type KvSystem } from './lib/systems.js';
import { QUICK, envNum, log, rssOf, round, sleep } from './lib/util.js';
import type { BenchOutput } from './types.js';

export const KEYS = 1000;
export const VALUE_BYTES = 256;
export const VALUE = Buffer.from('v'.repeat(VALUE_BYTES - 16) + '0123456789abcdef');
export const keyOf = (i: number) => `bench/k${String(i).padStart(4, '0')}`;

export interface RaftPoint {
  system: 'flotilla' | 'etcd';
  op: 'write' | 'read';
  /** leader: every request to the leader; any: requests spread over all members. */
  target: 'leader' | 'any';
  clients: number;
  result: LoadResult;
}

/** CPU seconds (user+system) used by a process so far (Linux /proc). */
export function cpuSeconds(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return (Number(rest[11]) + Number(rest[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
  } catch {
    return 0;
  }
}

async function idleCpu(sys: KvSystem, ms: number): Promise<number> {
  const before = sys.members.map((m) => cpuSeconds(m.proc.pid));
  await sleep(ms);
  const after = sys.members.map((m) => cpuSeconds(m.proc.pid));
  return round((after.reduce((a, b) => a + b, 0) - before.reduce((a, b) => a + b, 0)) / (ms / 1000) * 100, 1);
}

/** Mean durable-write (fsync) time per member, from each system's own /metrics. */
async function fsyncMeans(sys: KvSystem): Promise<Record<string, { count: number; meanMs: number } | null>> {
  const agent = newAgent(1);
  const metric = sys.name === 'etcd' ? 'etcd_disk_wal_fsync_duration_seconds' : 'flotilla_raft_fsync_seconds';
  const out: Record<string, { count: number; meanMs: number } | null> = {};
  const leader = await sys.leader().catch(() => '');
  for (const m of sys.members) {
    try {
      const t = (await requestOk(agent, m.addr, 'GET', '/metrics', null, {}, 5000)).body.toString('utf8');
      const sum = Number(new RegExp(`^${metric}_sum(?:\\{[^}]*\\})? (\\S+)`, 'm').exec(t)?.[1]);
      const count = Number(new RegExp(`^${metric}_count(?:\\{[^}]*\\})? (\\S+)`, 'm').exec(t)?.[1]);
      out[`${m.id}${m.id === leader ? ' (leader)' : ''}`] = Number.isFinite(sum) && count > 0 ? { count, meanMs: round((sum / count) * 1000, 2) } : null;
    } catch {
      out[m.id] = null;
    }
  }
  agent.destroy();
  return out;
}

async function prefill(sys: KvSystem, addr: string): Promise<void> {
  const agent = newAgent(32);
  let next = 0;
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      while (next < KEYS) {
        const i = next++;
        for (let attempt = 0; ; attempt++) {
          try {
            await sys.put(agent, addr, keyOf(i), VALUE);
            break;
          } catch (e) {
            if (attempt >= 20) throw e;
            await sleep(50);
          }
        }
      }
    }),
  );
  agent.destroy();
}

export async function load(sys: KvSystem, op: 'write' | 'read', target: 'leader' | 'any', clients: number, durationMs: number, warmupMs: number): Promise<LoadResult> {
  const leader = member(sys, await sys.leader());
  const addrs = target === 'leader' ? [leader.addr] : sys.members.map((m) => m.addr);
  const agent = newAgent(clients);
  let rnd = 12345 + clients;
  const nextKey = () => {
    rnd = (rnd * 1103515245 + 12345) & 0x7fffffff;
    return keyOf(rnd % KEYS);
  };
  const result = await runLoad({
    clients,
    durationMs,
    warmupMs,
    maxOps: 5_000_000,
    op:
      op === 'write'
        ? (_c, seq) => sys.put(agent, addrs[seq % addrs.length]!, nextKey(), VALUE)
        : (_c, seq) => sys.get(agent, addrs[seq % addrs.length]!, nextKey()),
  });
  agent.destroy();
  return result;
}

function logPoint(sys: KvSystem, op: string, target: string, clients: number, r: LoadResult): void {
  log(`  ${sys.name.padEnd(8)} ${op} ${target.padEnd(6)} c=${String(clients).padStart(3)}: ${Math.round(r.throughput)}/s p50 ${round(r.latencyMs.p50, 2)} ms p99 ${round(r.latencyMs.p99, 2)} ms${r.errors ? ` errors ${r.errors} (${r.firstErrors[0]})` : ''}`);
}

const strip = (r: LoadResult): LoadResult => ({ ...r, samples: undefined });

/** One point of one system: a warm-up, then `durationMs` measured. */
export async function point(sys: KvSystem, op: 'write' | 'read', target: 'leader' | 'any', clients: number, durationMs: number, warmupMs: number): Promise<RaftPoint> {
  const r = strip(await load(sys, op, target, clients, durationMs, warmupMs));
  logPoint(sys, op, target, clients, r);
  return { system: sys.name as 'flotilla' | 'etcd', op, target, clients, result: r };
}

/**
 * The same point for several systems in an A-B-B-A order (each gets two halves of
 * `durationMs`, each half after its own warm-up), so that a drifting background load on this
 * shared machine falls on every system alike.
 */
export async function abba(systems: KvSystem[], op: 'write' | 'read', target: 'leader' | 'any', clients: number, durationMs: number, warmupMs: number): Promise<RaftPoint[]> {
  const parts = new Map<KvSystem, LoadResult[]>(systems.map((s) => [s, []]));
  for (const s of [...systems, ...[...systems].reverse()]) parts.get(s)!.push(await load(s, op, target, clients, durationMs / 2, warmupMs));
  return systems.map((s) => {
    const r = strip(mergeLoads(parts.get(s)!));
    logPoint(s, op, target, clients, r);
    return { system: s.name as 'flotilla' | 'etcd', op, target, clients, result: r };
  });
}

export async function benchRaft(): Promise<BenchOutput> {
  const etcdVersion = EtcdCluster.ensureInstalled();
  const seconds = envNum('BENCH_SECONDS', QUICK ? 2 : 10);
  const warmupMs = QUICK ? 300 : 1000;
  const clientsList = (process.env.BENCH_CLIENTS ?? (QUICK ? '1,16' : '1,16,256')).split(',').map(Number);
  const durationMs = seconds * 1000;
  const flotilla = new FlotillaCluster();
  const etcd = new EtcdCluster();
  const points: RaftPoint[] = [];
  const idle: Record<string, number> = {};
  const memory: Record<string, Record<string, number | null>> = {};
  const fsync: Record<string, unknown> = {};
  try {
    log('raft: starting flotilla (3 managers) and etcd (3 members)');
    await Promise.all([flotilla.start(), etcd.start()]);
    await sleep(500);
    idle.flotilla = await idleCpu(flotilla, 2000);
    idle.etcd = await idleCpu(etcd, 2000);
    log(`raft: idle CPU of 3 members: flotilla ${idle.flotilla}% etcd ${idle.etcd}% (of one core)`);
    for (const sys of [flotilla, etcd]) {
      const l = member(sys, await sys.leader());
      await prefill(sys, l.addr);
    }
    log(`raft: ${KEYS} keys of ${VALUE_BYTES} bytes written to both; ${seconds} s per point (+${warmupMs} ms warm-up)`);
    for (const c of clientsList) {
      points.push(...(await abba([flotilla, etcd], 'write', 'leader', c, durationMs, warmupMs)));
      points.push(await point(flotilla, 'write', 'any', c, durationMs / 2, warmupMs));
    }
    for (const c of clientsList) points.push(...(await abba([flotilla, etcd], 'read', 'leader', c, durationMs, warmupMs)));
    for (const sys of [flotilla, etcd] as KvSystem[]) {
      const l = await sys.leader();
      memory[sys.name] = Object.fromEntries(sys.members.map((m) => [`${m.id}${m.id === l ? ' (leader)' : ''}`, rssOf(m.proc.pid)]));
    }
    log(`raft: RSS after the benchmark: ${JSON.stringify(memory)}`);
    fsync.flotilla = await fsyncMeans(flotilla);
    fsync.etcd = await fsyncMeans(etcd);
    log(`raft: mean fsync per member: ${JSON.stringify(fsync)}`);
  } finally {
    await Promise.all([flotilla.stop(), etcd.stop()]);
  }
  return {
    parameters: { seconds, warmupMs, clients: clientsList, keys: KEYS, valueBytes: VALUE_BYTES, members: 3, flotillaTimings: 'defaults (heartbeat 50 ms, election 300 ms)', etcdTimings: 'defaults (heartbeat 100 ms, election 1000 ms)' },
    peers: { etcd: etcdVersion },
    results: { points, idleCpuPercent: idle, rssBytes: memory, fsync },
  };
}
