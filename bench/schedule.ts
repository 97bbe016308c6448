// `schedule`: three managers, ≥ 1,000 simulated worker sessions in one process
// (bench/sim-workers.ts) that acknowledge assignments at once, then 10,000 tasks (process
// driver spec) submitted in batches of 1,000. Measured from the first submission: when each
// task's placement is committed (task → assigned) and when its `running` report is committed,
// both observed on a follower's event stream (/v1/events), so the leader does not pay for it.
import { createInterface } from 'node:readline';
import { performance } from 'node:perf_hooks';
import { join } from 'node:path';
import WebSocket from 'ws';
import { workerToken } from '../src/manager/auth.js';
import { newAgent, request, requestOk } from './lib/load.js';
import { BENCH_SECRET, FlotillaCluster, managerNodeFlags, member } from './lib/systems.js';
import { QUICK, ROOT, envNum, log, round, rssOf, sleep, waitFor } from './lib/util.js';
import { Proc } from './lib/procs.js';
import { cpuSeconds } from './raft.js';
import { summarizeHeap } from './heap.js';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import type { BenchOutput } from './types.js';


export async function benchSchedule(): Promise<BenchOutput> {
  const workers = envNum('BENCH_WORKERS', QUICK ? 200 : 1000);
  const tasks = envNum('BENCH_TASKS', QUICK ? 2000 : 10_000);
  // Batches in flight at once (a user's script submitting in parallel); 1 = one after another.
  const inflight = envNum('BENCH_SCHEDULE_INFLIGHT', 4);
  const batch = 1000;
  // After the main point is measured, a heap snapshot of its leader says where the memory is
  // (BENCH_HEAP_SNAPSHOT=0 skips it, =1 takes it in a quick run too; by default a full run only).
  const heap = process.env.BENCH_HEAP_SNAPSHOT === '1' || (!QUICK && process.env.BENCH_HEAP_SNAPSHOT !== '0');
  const results: Record<string, unknown> = await schedulePoint(workers, tasks, batch, inflight, undefined, heap);
  // The second point: 100,000 tasks on 5,000 workers (a tenth of that in a quick run).
  const largeWorkers = envNum('BENCH_LARGE_WORKERS', QUICK ? 500 : 5000);
  // BENCH_LARGE_TASKS=0 skips it.
  const largeTasks = process.env.BENCH_LARGE_TASKS === '0' ? 0 : envNum('BENCH_LARGE_TASKS', QUICK ? 10_000 : 100_000);
  if (largeTasks > 0) {
    try {
      results.large = { workers: largeWorkers, tasks: largeTasks, ...(await schedulePoint(largeWorkers, largeTasks, batch, inflight)) };
    } catch (e) {
      log(`schedule: the large point failed: ${(e as Error).message}`);
      results.large = { workers: largeWorkers, tasks: largeTasks, error: (e as Error).message.slice(0, 300) };
    }
  }
  return {
    parameters: { managers: 3, workers, tasks, batch, inflight, spec: { driver: 'process', containers: [{ command: ['sleep', '600'] }], resources: 'defaults (100m CPU, 64 MiB)' }, workerResources: { cpu: 8000, memory: '16 GiB' }, strategy: 'spread (default)', observedOn: 'a follower\'s /v1/events stream' },
    peers: {},
    results,
  };
}

/** One point: `nodeFlags` (e.g. `--cpu-prof`) go to every manager; the results name the first leader's pid (`leaderPid`). */
export async function schedulePoint(workers: number, tasks: number, batch: number, inflight: number, nodeFlags?: string[], heapSnapshot = false): Promise<Record<string, unknown>> {
  const heapDir = heapSnapshot ? mkdtempSync(join(tmpdir(), 'flotilla-heap-')) : null;
  if (heapDir !== null) nodeFlags = [...managerNodeFlags(nodeFlags), '--heapsnapshot-signal=SIGUSR2', '--diagnostic-dir', heapDir];
  // A manager takes at most --max-connections (4,096 by default): room for every session.
  // The replicated state's quota (256 MiB by default) is raised for the 100,000-task point:
  // at the default it refused tasks after 65,535 (HTTP 507 quota_exceeded).
  const cluster = new FlotillaCluster({ ...(nodeFlags ? { nodeFlags } : {}), extra: ['--max-connections', String(Math.max(4096, workers + 1024)), ...(tasks > 50_000 ? ['--quota-bytes', String(1024 * 1024 * 1024)] : [])] });
  let sim: Proc | null = null;
  let events: WebSocket | null = null;
  try {
    log(`schedule: 3 managers, ${workers} simulated workers, ${tasks} tasks in batches of ${batch}, ${inflight} in flight`);
    await cluster.start();
    const leaderId = await cluster.leader();
    const leader = member(cluster, leaderId);
    const follower = cluster.members.find((m) => m.id !== leaderId)!;

    // ---- workers
    const simLog = join(cluster.dir, 'sim-workers.log');
    sim = new Proc('sim-workers', process.execPath, [join(ROOT, 'dist', 'bench', 'sim-workers.js'), JSON.stringify({ leader: leader.addr, count: workers, token: workerToken(BENCH_SECRET), maxSeconds: 900 })], simLog);
    sim.start();
    let ready: Record<string, number> | null = null;
    let lastStats: Record<string, number> | null = null;
    createInterface({ input: sim.child!.stdout! }).on('line', (line) => {
      try {
        const o = JSON.parse(line);
        if (o.ev === 'ready') ready = o;
        if (o.ev === 'stats') lastStats = o;
      } catch {
        /* not ours */
      }
    });
    const regStart = performance.now();
    await waitFor('simulated workers to register', () => ready, 180_000, 100);
    const regMs = performance.now() - regStart;
    const registered = ready!.registered!;
    log(`schedule: ${registered}/${workers} sessions welcomed in ${Math.round(regMs)} ms`);
    if (registered < workers) throw new Error(`only ${registered} of ${workers} simulated workers registered (see ${simLog})`);
    const agent = newAgent(Math.max(4, inflight));
    await waitFor(
      'every simulated node to be ready',
      async () => {
        const r = await requestOk(agent, leader.addr, 'GET', '/v1/nodes?stale=true', null);
        const nodes = (JSON.parse(r.body.toString('utf8')) as { nodes: { status: string }[] }).nodes;
        return nodes.filter((n) => n.status === 'ready').length >= workers;
      },
      60_000,
      250,
    );

    // ---- observe commits on a follower
    const createdAt = new Map<string, number>();
    const assignedAt = new Map<string, number>();
    const runningAt = new Map<string, number>();
    events = new WebSocket(`ws://${follower.addr}/v1/events`, { perMessageDeflate: false });
    events.on('error', () => {});
    events.on('message', (data: Buffer) => {
      const e = JSON.parse(data.toString('utf8')) as { type?: string; task?: { id: string; name: string; state: string } };
      if (!e.task) return;
      const now = performance.now();
      if (e.type === 'task.created' && /^b\d+-t\d+$/.test(e.task.name)) createdAt.set(e.task.id, now);
      if (e.type !== 'task.updated') return;
      const s = e.task.state;
      if ((s === 'assigned' || s === 'starting' || s === 'running') && !assignedAt.has(e.task.id)) assignedAt.set(e.task.id, now);
      if (s === 'running' && !runningAt.has(e.task.id)) runningAt.set(e.task.id, now);
    });
    await new Promise<void>((resolve, reject) => {
      events!.once('open', () => resolve());
      events!.once('error', reject);
    });
    await sleep(200);

    // ---- submit
    const termAtStart = (await cluster.status(leaderId))?.term as number | undefined;
    const cpu0 = cpuSeconds(leader.proc.pid);
    // Every process of the run: on a small machine the placement rate is bound by their sum.
    const others = [...cluster.members.filter((m) => m.id !== leaderId).map((m) => ({ name: `follower ${m.id}`, pid: m.proc.pid })), { name: 'simulated workers', pid: sim.child!.pid! }];
    const others0 = others.map((o) => cpuSeconds(o.pid));
    const self0 = process.cpuUsage();
    const t0 = performance.now();
    const ids: string[] = [];
    let submitTo = leader.addr;
    const batchMs: number[] = [];
    const batchErrors: string[] = [];
    const batches = Math.ceil(tasks / batch);
    let nextBatch = 0;
    const submit = async (b: number): Promise<void> => {
      const n = Math.min(batch, tasks - b * batch);
      const specs = Array.from({ length: n }, (_, i) => ({ name: `b${b}-t${i}`, driver: 'process', containers: [{ command: ['sleep', '600'] }] }));
      const bs = performance.now();
      const body = JSON.stringify(specs);
      for (let attempt = 0; ; attempt++) {
        // Sent to the manager that leads now; a refusal for not leading (nothing written) is
        // retried at the new leader, any other failure is not (the batch may still commit,
        // and then shows up on the event stream).
        let target = submitTo;
        if (attempt > 0) {
          const l = await cluster.leader(20_000).catch(() => null);
          if (l === null) {
            batchErrors.push(`batch ${b}: no leader within 20 s; not sent again`);
            break;
          }
          target = member(cluster, l).addr;
        }
        submitTo = target;
        const r = await request(agent, target, 'POST', '/v1/tasks', body, { 'content-type': 'application/json' }, 60_000).catch((e: Error) => ({ status: 0, body: Buffer.from(e.message) }));
        if (r.status === 201) {
          for (const t of (JSON.parse(r.body.toString('utf8')) as { tasks: { id: string }[] }).tasks) ids.push(t.id);
          break;
        }
        const text = r.body.toString('utf8').slice(0, 300);
        if (r.status === 503 && text.includes('"not_leader"') && attempt < 3) {
          batchErrors.push(`batch ${b}: refused by ${target} (not the leader); retried`);
          continue;
        }
        batchErrors.push(`batch ${b}: HTTP ${r.status}: ${text}`);
        log(`schedule: batch ${b} failed after ${Math.round(performance.now() - bs)} ms: HTTP ${r.status} ${text.slice(0, 200)}`);
        break;
      }
      batchMs[b] = round(performance.now() - bs, 1);
    };
    await Promise.all(
      Array.from({ length: Math.max(1, Math.min(inflight, batches)) }, async () => {
        while (nextBatch < batches) await submit(nextBatch++);
      }),
    );
    const submittedMs = performance.now() - t0;
    log(`schedule: ${ids.length} tasks accepted in ${Math.round(submittedMs)} ms (batches: ${batchMs.map(Math.round).join(', ')} ms)`);
    // The tasks to follow: every task the stream saw created (a failed batch may have committed).
    await sleep(batchErrors.length > 0 ? 5000 : 500);
    const accepted = ids.length;
    const idSet = new Set(ids);
    for (const id of createdAt.keys()) if (!idSet.has(id)) ids.push(id);
    // A run with failed batches (elections) waits at most a minute for the rest.
    const limitMs = QUICK ? 60_000 : batchErrors.length > 0 ? 60_000 : Math.max(120_000, tasks * 3);
    await waitFor('every task to be running', () => ids.every((id) => runningAt.has(id)), limitMs, 100).catch((e) => log(`schedule: ${(e as Error).message}`));
    const cpuUsed = cpuSeconds(leader.proc.pid) - cpu0;
    const windowSeconds = round((performance.now() - t0) / 1000, 2);
    const selfCpu = process.cpuUsage(self0);
    const cpuOthers: Record<string, number> = Object.fromEntries(others.map((o, i) => [o.name, round(cpuSeconds(o.pid) - others0[i]!, 2)]));
    cpuOthers['benchmark client'] = round((selfCpu.user + selfCpu.system) / 1e6, 2);
    const leaderAtEnd = await cluster.leader(10_000).catch(() => null);
    // Without a leader at the end, the highest term any manager reports.
    const termAtEnd = leaderAtEnd
      ? ((await cluster.status(leaderAtEnd))?.term as number | undefined)
      : (await Promise.all(cluster.members.map((m) => cluster.status(m.id).catch(() => null)))).reduce<number | undefined>((t, st) => (typeof st?.term === 'number' && (t === undefined || st.term > t) ? st.term : t), undefined);
    const rel = (m: Map<string, number>) => ids.map((id) => m.get(id)).filter((x): x is number => x !== undefined).map((x) => x - t0).sort((a, b) => a - b);
    const assigned = rel(assignedAt);
    const running = rel(runningAt);
    const at = (xs: number[], q: number) => (xs.length ? xs[Math.min(xs.length - 1, Math.ceil(q * xs.length) - 1)]! : NaN);
    const lastAssigned = assigned.length ? assigned[assigned.length - 1]! : NaN;
    const lastRunning = running.length ? running[running.length - 1]! : NaN;
    const steady = (xs: number[]) => (xs.length >= 10 ? (0.8 * xs.length) / ((at(xs, 0.9) - at(xs, 0.1)) / 1000) : NaN);
    const rssLeader = rssOf(leader.proc.pid);
    // Where the leader's memory is (its /metrics: V8 heap in use and reserved, memory outside the heap).
    const leaderMemory = await requestOk(agent, leader.addr, 'GET', '/metrics', null)
      .then((r) => {
        const text = r.body.toString('utf8');
        const metric = (name: string) => Number(new RegExp(`^${name} ([0-9.e+]+)`, 'm').exec(text)?.[1] ?? NaN);
        return { heapUsedBytes: metric('nodejs_heap_size_used_bytes'), heapTotalBytes: metric('nodejs_heap_size_total_bytes'), externalBytes: metric('nodejs_external_memory_bytes') };
      })
      .catch(() => null);
    const leaderHeap = heapDir === null ? null : await heapOf(leader.proc.pid!, heapDir, () => requestOk(agent, leader.addr, 'GET', '/v1/cluster', null, {}, 120_000)).catch((e: Error) => {
      log(`schedule: no heap snapshot: ${e.message}`);
      return null;
    });
    const results = {
      workersRegistered: registered,
      registrationMs: round(regMs, 0),
      tasksAccepted: accepted,
      tasksSubmitted: ids.length,
      submitMs: round(submittedMs, 0),
      batchMs,
      batchErrors,
      tasksAssigned: assigned.length,
      tasksRunning: running.length,
      firstAssignedMs: round(assigned[0] ?? NaN, 0),
      allAssignedMs: round(lastAssigned, 0),
      allRunningMs: round(lastRunning, 0),
      placementsPerSecond: round(assigned.length / (lastAssigned / 1000), 0),
      placementsPerSecondSteady: round(steady(assigned), 0),
      runningPerSecond: round(running.length / (lastRunning / 1000), 0),
      assignedQuantilesMs: { p10: round(at(assigned, 0.1), 0), p50: round(at(assigned, 0.5), 0), p90: round(at(assigned, 0.9), 0) },
      runningQuantilesMs: { p10: round(at(running, 0.1), 0), p50: round(at(running, 0.5), 0), p90: round(at(running, 0.9), 0) },
      leaderCpuSeconds: round(cpuUsed, 1),
      // CPU seconds of the other processes over the same window (to the last running report).
      otherCpuSeconds: cpuOthers,
      windowSeconds,
      leaderAtStart: leaderId,
      leaderPid: leader.proc.pid,
      leaderAtEnd,
      termAtStart,
      termAtEnd,
      leaderRssBytes: rssLeader,
      leaderMemory,
      ...(leaderHeap ? { leaderHeap } : {}),
      simWorkers: lastStats,
      reference: { system: 'Nomad C1M (2015)', placementsPerSecond: 3750, note: 'published figure (1,000,000 containers on 5,000 hosts), not measured here' },
    };
    if (termAtEnd !== termAtStart) log(`schedule: leadership changed during the run (term ${termAtStart} → ${termAtEnd}, leader ${leaderId} → ${leaderAtEnd})`);
    log(`schedule: ${assigned.length}/${ids.length} assigned, ${running.length}/${ids.length} running; all assigned at ${results.allAssignedMs} ms (${results.placementsPerSecond}/s), all running at ${results.allRunningMs} ms; leader RSS ${Math.round((rssLeader ?? 0) / 2 ** 20)} MiB`);
    agent.destroy();
    return results;
  } finally {
    if (heapDir !== null && !process.env.BENCH_KEEP_DIRS) rmSync(heapDir, { recursive: true, force: true });
    events?.terminate();
    await sim?.stop('SIGTERM', 3000);
    await cluster.stop();
  }
}

/** SIGUSR2 to a manager started with --heapsnapshot-signal; once it answers again the snapshot is written: its summary. */
async function heapOf(pid: number, dir: string, answer: () => Promise<unknown>): Promise<ReturnType<typeof summarizeHeap>> {
  process.kill(pid, 'SIGUSR2');
  const file = await waitFor('the heap snapshot file', () => readdirSync(dir).find((f) => f.endsWith('.heapsnapshot')) ?? null, 60_000, 100);
  await answer(); // the snapshot is taken on the manager's main thread: an answer means it is done
  const h = summarizeHeap(join(dir, file), 15);
  log(`schedule: leader heap ${Math.round(h.totalBytes / 2 ** 20)} MiB in the snapshot; largest: ${h.groups.slice(0, 5).map((g) => `${g.type} ${g.name} ${Math.round(g.bytes / 2 ** 20)} MiB`).join(', ')}`);
  return h;
}
