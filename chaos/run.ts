// `flotilla chaos run`: one bounded chaos run against a real multi-process cluster.
//
//   setup     proxies + managers + workers (chaos/cluster.ts); wait for a leader and the workers
//   run       for --duration: kv workload, task workload, leader monitor, nemesis (seeded)
//   heal      stop the workload (in-flight ops finish within the op timeout), heal every fault
//   quiet     until the cluster converged (one leader, everyone applied its commit index), then
//             final linearizable reads of every key and the task settle; all within
//             --convergence
//   check     stop every process (by PID), run the checkers (the kv/task history, and the
//             managers' Raft traces in raft/), write history.json, nemesis.log, report.json,
//             report.txt, timeline.html (+ one log per process in logs/)
import { setMaxListeners } from 'node:events';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { request } from './http.js';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import {
  checkLinearizable,
  checkNoLostWrites,
  checkRaft,
  checkTasks,
  checkAuthAfterHeal,
  checkWipes,
  checkServices,
  checkMesh,
  parseRaftTrace,
  type AuthProbe,
  renderReport,
  type CheckResults,
  type KvVersioned,
  type Op,
  type RaftTrace,
  type ReportJson,
  type Verdict,
} from './checker/index.js';
import { ChaosCluster, freePorts, sleep } from './cluster.js';
import { checkNoHealthyWorkerDown, parseDownDeclarations, type DownDeclaration } from './checker/workers.js';
import { LeaderMonitor, type LeaderObservation } from './monitor.js';
import { describeAction, GROW_KEYS, Nemesis, planSchedule, WIPE_BOUND_MS, type FaultKind, type NemesisEvent, type PlannedStep } from './nemesis.js';
import { SERVICE_LINK, ServiceWorkload } from './services-workload.js';
import { MESH_SERVICE, MeshWorkload } from './mesh-workload.js';
import { clientLabel, GROW_LINK, GrowWorkload, KvWorkload, plainClientLabel, TASK_LINK, TaskWorkload } from './workload.js';

/** The managers' quota when the grow fault runs: below what the grow key set can hold. */
export const GROW_QUOTA_BYTES = 64 * 1024 * 1024;
/**
 * How long after a worker's SIGKILL its task processes may still overlap a successor attempt:
 * the process driver's orphan window (FLOTILLA_ORPHAN_GRACE_MS, 10 s) + its kill grace after the
 * SIGTERM (podFailureGraceMs, 5 s) + 3 s for the keeper's scheduling on a loaded host. The
 * manager reschedules after the node grace (5 s), so the overlap itself is shorter.
 */
export const ORPHAN_BOUND_MS = 10_000 + 5000 + 3000;
/**
 * Services after healing: every service must run its desired replicas of its current template,
 * with no update in progress, within this bound (or --convergence if longer): a worker killed
 * for good is declared down after the node grace (5 s) and its replicas placed elsewhere, and
 * an update interrupted by the faults still has batches to go (1 s monitor each).
 */
export const SERVICES_CONVERGE_MS = 45_000;
/** The workers' --mesh-stall-timeout in a chaos run (unless --mesh-stall-timeout says otherwise). */
export const MESH_STALL_TIMEOUT_MS = 1000;
/** The mesh clients' timeout per request (connect + answer): above the stall timeout, so a stall is seen by the mesh before the client gives up. */
export const MESH_REQUEST_TIMEOUT_MS = 2000;
/**
 * Mesh requests are not judged for this long after a worker came back (checker/mesh.ts): 5 s
 * for a worker restarted after a SIGKILL to start, register and get the table (its listener is
 * not bound until then) + the node grace (5 s): a worker that was gone longer than that was
 * declared down, its replica left the table and is stopped and started again when it returns,
 * and a request in flight through a replica being stopped can fail.
 */
export const MESH_SETTLE_MS = 5000 + 5000;
/**
 * …and for this long after a frozen replica was SIGCONTed: the process resumes at once (the
 * signal is delivered synchronously) and answers its backlog; 1 s of slack for a loaded host.
 */
export const MESH_FREEZE_SETTLE_MS = 1000;
/** Bound on the mesh service's setup: created, every replica in the table, every worker's mesh answering. */
export const MESH_SETUP_MS = 30_000;
import { faultMarks, leaderSegmentsFromMonitor, leaderSegmentsFromTraces, renderTimeline, unavailableWindows, type Interval } from './timeline.js';

export interface ChaosRunOptions {
  managers: number;
  workers: number;
  durationMs: number;
  faults: FaultKind[];
  intervalMs: number;
  seed: number;
  out: string;
  allowQuorumLoss: boolean;
  clients: number;
  /** kv clients that send no x-request-id, to followers and the leader alike (plain HTTP users). */
  plainClients: number;
  keys: number;
  opTimeoutMs: number;
  /** Bound on heal → converged → final reads → tasks settled. */
  convergenceMs: number;
  /** Test-only: stale reads from cut-off managers (the checker must then fail). */
  injectStaleReads: boolean;
  /** The services workload beside the task workload (`--workload services`; needs workers). */
  services?: boolean;
  /** The mesh workload (chaos/mesh-workload.ts; default: with the services workload; needs workers). */
  mesh?: boolean;
  /** The workers' --mesh-stall-timeout when the mesh workload runs (default MESH_STALL_TIMEOUT_MS). */
  meshStallTimeoutMs?: number;
  /** Every node in its own network namespace, partitions by kernel rules (`--netns`; chaos/netns.ts). */
  netns?: { subnet: string };
  /** The command that replays this run (printed on failure, stored in the report). */
  replay: string;
  /** Progress lines (stderr in the CLI). */
  progress?: (line: string) => void;
  /** Aborts the run early (Ctrl-C): the cluster is still stopped and what was recorded written. */
  signal?: AbortSignal;
}

export interface ChaosStats {
  durationMs: number;
  ops: {
    total: number;
    ok: number;
    fail: number;
    unknown: number;
    byType: Record<Op['type'], { ok: number; fail: number; unknown: number }>;
    /** Ops of the plain clients (no x-request-id), included in the counts above. */
    plain: { ok: number; fail: number; unknown: number };
    final: number;
  };
  nemesis: { actions: number; byKind: Record<string, number>; heals: number; crashes: number };
  leaders: { changes: number; terms: number; observed: LeaderObservation[] };
  tasks: { submitted: number; acknowledged: number; stops: number; observations: number; processes: number };
  /** The mesh workload's requests, when it ran. */
  mesh?: { requests: number; ok: number; failed: number; clients: number; addrs: string[]; published: number; replicas: number; freezes: number };
  /** The services workload's operations (ok/fail/unknown by kind), when it ran. */
  services?: { ops: Record<string, { ok: number; fail: number; unknown: number }>; samples: number };
  /**
   * Unavailability during the workload: windows in which no kv operation completed ok (any
   * client, any manager). `windows` lists those of at least 1 s (at most 100).
   */
  availability: { longestMs: number; longest: Interval | null; windowsOver1s: number; windows: Interval[] };
  staleReadsInjected: number;
}

export interface ChaosReport {
  verdict: Verdict;
  seed: number;
  replay: string;
  out: string;
  options: Omit<ChaosRunOptions, 'progress' | 'signal' | 'replay' | 'out'>;
  stats: ChaosStats;
  recovery: { converged: boolean; leader: string | null; afterMs: number | null; finalReads: number; keys: number; tasksSettled: boolean; servicesSettled?: boolean };
  interrupted: boolean;
  checks: ReportJson;
  schedule: PlannedStep[];
}

export interface ChaosRunResult {
  report: ChaosReport;
  text: string;
  exitCode: number;
}

const r3 = (x: number): number => Math.round(x * 1000) / 1000;

export async function runChaos(o: ChaosRunOptions): Promise<ChaosRunResult> {
  const say = o.progress ?? (() => undefined);
  mkdirSync(o.out, { recursive: true });
  const logDir = join(o.out, 'logs');
  const runId = randomBytes(4).toString('hex');
  const clients = [...Array.from({ length: o.clients }, (_, i) => clientLabel(i + 1)), ...Array.from({ length: o.plainClients }, (_, i) => plainClientLabel(i + 1))];
  const growing = o.faults.includes('grow');
  const withServices = o.services === true && o.workers > 0;
  const servicesBoundMs = Math.max(o.convergenceMs, SERVICES_CONVERGE_MS);
  const withMesh = (o.mesh ?? withServices) && o.workers > 0;
  const meshStallMs = o.meshStallTimeoutMs ?? MESH_STALL_TIMEOUT_MS;
  const cluster = await ChaosCluster.create({
    dir: join(o.out, 'cluster'),
    logDir,
    traceDir: join(o.out, 'raft'),
    managers: o.managers,
    workers: o.workers,
    clients: [...clients, TASK_LINK, ...(growing ? [GROW_LINK] : []), ...(withServices ? [SERVICE_LINK] : [])],
    clockShift: o.faults.includes('clock-step'),
    ...(o.faults.includes('disk-full') ? { diskMiB: growing ? 512 : 256 } : {}),
    ...(growing ? { managerArgs: ['--quota-bytes', String(GROW_QUOTA_BYTES)] } : {}),
    ...(withMesh ? { workerArgs: ['--mesh-stall-timeout', String(meshStallMs)], distinctWorkerHosts: true } : {}),
    ...(o.netns !== undefined ? { netns: o.netns } : {}),
  });
  const lastResort = (): void => cluster.killAllSync();
  process.on('exit', lastResort);

  let t0 = performance.now();
  /** Wall-clock ms at the run clock's zero (the Raft traces are in wall-clock time). */
  let wall0 = Date.now();
  let healAt: number | null = null;
  const clock = (): number => r3(performance.now() - t0);
  const nemesisEvents: NemesisEvent[] = [];
  const nemesisLog: string[] = [];
  const logEvent = (e: NemesisEvent): void => {
    nemesisEvents.push(e);
    const line = `+${(e.at / 1000).toFixed(3)}s ${e.step === null ? '-' : `step ${e.step}`} ${e.kind} ${e.phase}${e.targets.length > 0 ? ` [${e.targets.join(',')}]` : ''}: ${e.detail}`;
    nemesisLog.push(line);
    say(`nemesis ${line}`);
  };
  cluster.onUnexpectedExit = (id, code, signal) => logEvent({ at: clock(), step: null, kind: 'crash', phase: 'info', targets: [id], detail: `${id} exited on its own (code ${code}, signal ${signal})` });

  const schedule = planSchedule({
    seed: o.seed,
    faults: o.faults,
    intervalMs: o.intervalMs,
    durationMs: o.durationMs,
    managers: o.managers,
    workers: o.workers,
    allowQuorumLoss: o.allowQuorumLoss,
    mesh: withMesh,
  });
  const monitor = new LeaderMonitor(cluster, clock);
  const kv = new KvWorkload(cluster, clock, { clients: o.clients, plainClients: o.plainClients, keys: Array.from({ length: o.keys }, (_, i) => `k${i}`), opTimeoutMs: o.opTimeoutMs, seed: o.seed, runId, injectStaleReads: o.injectStaleReads }, () =>
    nemesis.minority(),
  );
  const tasks = new TaskWorkload(cluster, clock, { seed: o.seed, opTimeoutMs: o.opTimeoutMs, tickMs: 1500, maxTasks: Math.min(6, 2 * o.workers) });
  const services = withServices ? new ServiceWorkload(cluster, clock, { seed: o.seed, opTimeoutMs: o.opTimeoutMs, tickMs: 2500, maxReplicas: 5, leader: () => monitor.leader() }) : null;
  let mesh: MeshWorkload | null = null;
  let meshPorts: { published: number; target: number } | null = null;
  if (withMesh) {
    // Below the ephemeral range, free on every worker's address (not checkable inside --netns namespaces: fresh).
    const hosts = cluster.kernel !== null ? [] : [...new Set(cluster.workerIds.map((w) => cluster.workerHost(w)))];
    const managerPorts = [...cluster.realAddr.values()].map((a) => Number(a.slice(a.lastIndexOf(':') + 1)));
    const [published, target] = await freePorts(2, hosts, managerPorts);
    meshPorts = { published: published!, target: target! };
    mesh = new MeshWorkload(cluster, clock, { clients: 3, requestTimeoutMs: MESH_REQUEST_TIMEOUT_MS, pauseMs: 100, published: published!, target: target!, replicas: Math.min(3, o.workers), pidDir: join(o.out, 'mesh-pids'), leader: () => monitor.leader() });
  }
  const grow = growing ? new GrowWorkload(cluster, clock, { seed: o.seed, runId, opTimeoutMs: o.opTimeoutMs, keys: GROW_KEYS }) : null;
  const nemesis: Nemesis = new Nemesis({ cluster, seed: o.seed, clock, leader: () => monitor.freshLeader(), log: logEvent, ...(grow !== null ? { grow } : {}), ...(mesh !== null ? { freezer: mesh } : {}) }, schedule);
  let growFinal = new Map<string, KvVersioned | null>();
  const authProbes: AuthProbe[] = [];

  const outer = new AbortController();
  // Watchdog: setup + run + in-flight ops + convergence + slack; whatever happens, it ends.
  const watchdog = setTimeout(() => {
    say('watchdog: the run took too long; stopping it');
    outer.abort();
  }, 60_000 + o.durationMs + o.opTimeoutMs + o.convergenceMs + (withServices ? servicesBoundMs : 0) + (withMesh ? MESH_SETUP_MS : 0) + 30_000);
  watchdog.unref();
  const onAbort = (): void => outer.abort();
  o.signal?.addEventListener('abort', onAbort, { once: true });
  let interrupted = false;
  const recovery: ChaosReport['recovery'] = { converged: false, leader: null, afterMs: null, finalReads: 0, keys: o.keys, tasksSettled: o.workers === 0 };
  let final = new Map<string, KvVersioned | null>();
  const background = new AbortController();
  const bg: Promise<void>[] = [];
  let linkStats: Record<string, unknown>[] = [];

  try {
    say(
      cluster.kernel !== null
        ? `starting ${o.managers} managers and ${o.workers} workers, each in its own network namespace (${cluster.kernel.bed.subnet}: ${[...cluster.kernel.bed.addresses].map(([n, a]) => `${n} ${a}`).join(', ')}), ${cluster.net.links.size} client proxies, in ${join(o.out, 'cluster')}`
        : `starting ${o.managers} managers and ${o.workers} workers behind ${cluster.net.links.size} proxies in ${join(o.out, 'cluster')}`,
    );
    cluster.mountDisks();
    cluster.startAll();
    let leader = await cluster.waitReady(30_000);
    // An admin token: from now on the cluster "had tokens" and every harness request carries it.
    cluster.apiToken = await createAdminToken(cluster, leader, join(o.out, 'cluster', 'admin-token'));
    leader = await cluster.waitReady(30_000); // every manager applied it
    if (mesh !== null) say(`mesh ready: ${await mesh.setup(leader, MESH_SETUP_MS)}`);
    say(`cluster ready (leader ${leader}, admin token created); running ${o.durationMs / 1000}s, faults ${o.faults.join(',') || 'none'}, seed ${o.seed}`);

    t0 = performance.now();
    wall0 = Date.now();
    // Event-loop lag of the harness (it carries every link): reported if it gets large.
    let lagMax = 0;
    let lastTick = performance.now();
    const lagTimer = setInterval(() => {
      const now = performance.now();
      const lag = now - lastTick - 100;
      lastTick = now;
      if (lag > lagMax) lagMax = lag;
      if (lag > 500) say(`harness event loop stalled ${lag.toFixed(0)} ms at +${(clock() / 1000).toFixed(1)}s`);
    }, 100);
    background.signal.addEventListener('abort', () => clearInterval(lagTimer), { once: true });
    bg.push(monitor.run(background.signal), tasks.observe(background.signal));
    if (services !== null) bg.push(services.observe(background.signal));
    if (mesh !== null) bg.push(mesh.observe(background.signal));
    const work = new AbortController();
    setMaxListeners(200, work.signal); // every client, the task loop, the nemesis and its bursts wait on it
    const stopWork = (): void => work.abort();
    outer.signal.addEventListener('abort', stopWork, { once: true });
    const running = [kv.run(work.signal), tasks.run(work.signal), nemesis.run(work.signal), ...(services !== null ? [services.run(work.signal)] : []), ...(mesh !== null ? [mesh.run(work.signal)] : [])];
    await sleep(o.durationMs, outer.signal);
    work.abort();
    await Promise.all(running);
    await nemesis.settle();
    interrupted = outer.signal.aborted;
    say(`workload stopped at +${(clock() / 1000).toFixed(1)}s: ${kv.ops.length} kv ops${mesh !== null ? `, ${mesh.requests.length} mesh requests` : ''}; healing`);

    healAt = clock();
    await nemesis.healAll(null, true);
    const healedAt = clock();
    const deadline = Date.now() + (interrupted ? 0 : o.convergenceMs);
    while (Date.now() < deadline && !outer.signal.aborted) {
      const l = await cluster.converged();
      if (l !== null) {
        const ready = o.workers === 0 ? [] : await cluster.readyWorkers(l);
        if (cluster.liveWorkers().every((w) => ready.includes(w))) {
          recovery.converged = true;
          recovery.leader = l;
          recovery.afterMs = r3(clock() - healedAt);
          break;
        }
      }
      await sleep(200, outer.signal);
    }
    if (!interrupted) say(recovery.converged ? `converged ${recovery.afterMs?.toFixed(0)} ms after healing (leader ${recovery.leader})` : 'the cluster did NOT converge after healing');

    if (!outer.signal.aborted) {
      const upManagers = (): string[] => {
        const up = cluster.managerIds.filter((m) => cluster.isUp(m));
        return recovery.leader !== null ? [recovery.leader, ...up.filter((m) => m !== recovery.leader)] : up;
      };
      // Final reads get a little time even if convergence used the whole budget.
      final = await kv.finalReads(Math.max(deadline, Date.now() + 2000), upManagers);
      recovery.finalReads = final.size;
      if (grow !== null) growFinal = await grow.finalReads(Math.max(deadline, Date.now() + 10_000), upManagers);
      // The cluster had tokens: after healing every manager must still refuse an anonymous write.
      for (const m of cluster.managerIds) authProbes.push(await anonymousPut(cluster, m));
      while (Date.now() < deadline && tasks.unsettled().length > 0 && !outer.signal.aborted) await sleep(250, outer.signal);
      await tasks.sampleTasks();
      recovery.tasksSettled = tasks.unsettled().length === 0;
      if (services !== null) {
        // Every service converged (its own bound, from the heal), sampled until then.
        const until = performance.now() + Math.max(0, servicesBoundMs - (clock() - healedAt));
        while (performance.now() < until && !outer.signal.aborted) {
          await services.sample();
          if (services.unsettled().length === 0) break;
          await sleep(500, outer.signal);
        }
        recovery.servicesSettled = services.unsettled().length === 0;
        say(recovery.servicesSettled ? `services converged ${((clock() - healedAt) / 1000).toFixed(1)}s after healing` : `services NOT converged: ${services.unsettled().join(', ')}`);
      }
    }
    tasks.sampleProcesses();
  } finally {
    clearTimeout(watchdog);
    background.abort();
    await Promise.all(bg).catch(() => undefined);
    linkStats = [...cluster.net.links.values()].map((l) => ({ link: l.name, addr: l.addr, open: l.connections, ...l.stats }));
    await cluster.stopAll();
    process.off('exit', lastResort);
    o.signal?.removeEventListener('abort', onAbort);
  }
  interrupted ||= outer.signal.aborted;

  // ------------------------------------------------------------------------------ check
  say('checking the history');
  const results: CheckResults = {
    linearizability: checkLinearizable(kv.ops),
    lostWrites: checkNoLostWrites(kv.ops, final),
  };
  // Workers down for a while (the worker fault, crash-restarts): their copies may overlap a successor until they are back (+ the bound).
  const downWindows = nemesis.workerDowns.filter((d) => d.how !== 'kill-worker').map((d) => ({ node: d.node, from: d.from, to: d.to ?? clock() }));
  if (o.workers > 0)
    results.tasks = checkTasks(
      { submissions: tasks.submissions, observations: tasks.observations, processes: tasks.processes },
      nemesis.deadWorkers.length > 0 || downWindows.length > 0 ? { deadAgents: nemesis.deadWorkers, downWindows, orphanBoundMs: ORPHAN_BOUND_MS } : {},
    );
  if (services !== null)
    results.services = checkServices(
      { samples: services.samples, processes: tasks.processes, downs: nemesis.workerDowns, ops: services.ops, services: [...services.created], healedAt: interrupted ? null : healAt },
      { convergeWithin: servicesBoundMs, downBoundMs: ORPHAN_BOUND_MS },
    );
  if (mesh !== null) {
    // Worker downs: the nemesis' own, and workers that crashed until the heal that restarted them.
    const downs = [...nemesis.workerDowns];
    for (const [i, e] of nemesisEvents.entries()) {
      if (e.kind !== 'crash' || !cluster.workerIds.includes(e.targets[0] ?? '')) continue;
      const heal = nemesisEvents.slice(i + 1).find((x) => x.phase === 'heal');
      downs.push({ node: e.targets[0]!, from: e.at, to: heal?.at ?? null, how: 'crash' });
    }
    const context = faultMarks(nemesisEvents, clock())
      .filter((f) => f.kind !== 'worker' && f.kind !== 'kill-worker' && f.kind !== 'freeze-replica' && !(f.kind === 'restart' && f.targets.some((t) => cluster.workerIds.includes(t))))
      .map((f) => ({ kind: f.kind, from: f.from, to: f.to, detail: f.detail }));
    results.mesh = checkMesh(
      { requests: mesh.requests, freezes: nemesis.freezes, downs, samples: mesh.samples, context, end: clock() },
      // The mesh is held to its stall timeout; with the watch off (0, a sabotage) to the harness's default.
      { settleMs: MESH_SETTLE_MS, freezeSettleMs: MESH_FREEZE_SETTLE_MS, stallTimeoutMs: meshStallMs > 0 ? meshStallMs : MESH_STALL_TIMEOUT_MS, requestTimeoutMs: MESH_REQUEST_TIMEOUT_MS },
    );
  }
  if (grow !== null) results.largeValues = { ...checkNoLostWrites(grow.ops, growFinal), refusedQuota: grow.refusedQuota };
  if (o.faults.includes('wipe')) {
    // The leader monitor naming a wiped manager leader during its wiped life counts too.
    const records = nemesis.wipes.map((w) => ({ ...w, seenLeaderByMonitor: monitor.observed.some((l) => l.leader === w.manager && l.at >= w.at && l.at <= w.at + w.aliveMs) }));
    results.wipes = { ...checkWipes(records, WIPE_BOUND_MS), records };
  }
  if (!interrupted && recovery.converged) results.auth = checkAuthAfterHeal(authProbes, cluster.managerIds);
  const traces: RaftTrace[] = cluster.managerIds.map((m) => {
    const f = cluster.traceFile(m)!;
    return parseRaftTrace(m, existsSync(f) ? readFileSync(f, 'utf8') : '');
  });
  results.raft = checkRaft(traces, { expectedNodes: cluster.managerIds, epochMs: wall0 });
  if (o.workers > 0) {
    const declarations: DownDeclaration[] = [];
    for (const m of cluster.managerIds) {
      const f = cluster.node(m).logFile;
      if (existsSync(f)) declarations.push(...parseDownDeclarations(m, readFileSync(f, 'utf8')));
    }
    const harmed = nemesisEvents.filter((e) => e.kind === 'restart' || e.kind === 'crash' || e.kind === 'kill-worker' || e.kind === 'worker').flatMap((e) => e.targets).filter((id) => cluster.workerIds.includes(id));
    results.workers = checkNoHealthyWorkerDown({ workers: cluster.workerIds, harmed, declarations });
  }
  const rendered = renderReport(results);

  const endMs = clock();
  const workloadEnd = Math.min(o.durationMs, healAt ?? endMs);
  const stats = computeStats(kv.ops, nemesisEvents, monitor.observed, tasks, endMs, kv.staleReads, workloadEnd);
  if (services !== null) {
    const byKind: Record<string, { ok: number; fail: number; unknown: number }> = {};
    for (const op of services.ops) (byKind[op.kind] ??= { ok: 0, fail: 0, unknown: 0 })[op.outcome]++;
    stats.services = { ops: byKind, samples: services.samples.length };
  }
  if (mesh !== null && meshPorts !== null) {
    const ok = mesh.requests.filter((r) => r.outcome === 'ok').length;
    stats.mesh = { requests: mesh.requests.length, ok, failed: mesh.requests.length - ok, clients: new Set(mesh.requests.map((r) => r.client)).size, addrs: mesh.addrs().map((a) => a.addr), published: meshPorts.published, replicas: Math.min(3, o.workers), freezes: nemesis.freezes.length };
  }
  let verdict: Verdict = rendered.json.verdict;
  const notes: string[] = [];
  if (!recovery.converged && !interrupted) {
    verdict = 'fail';
    notes.push(`liveness: FAIL — the cluster did not converge within ${o.convergenceMs / 1000}s after every fault was healed`);
  }
  if (interrupted) {
    notes.push('interrupted: the run was stopped early; the history is partial (a violation in it is still one)');
    if (verdict === 'pass') verdict = 'unknown';
  }
  const { progress: _p, signal: _s, replay: _r, out: _o, ...options } = o;
  const report: ChaosReport = {
    verdict,
    seed: o.seed,
    replay: o.replay,
    out: o.out,
    options,
    stats,
    recovery,
    interrupted,
    checks: rendered.json,
    schedule,
  };
  const text = renderText(report, rendered.text, notes);

  writeFileSync(
    join(o.out, 'history.json'),
    JSON.stringify({
      version: 1,
      seed: o.seed,
      replay: o.replay,
      options,
      clock: 'ms since the workload started (performance.now)',
      epochMs: wall0,
      ops: kv.ops,
      final: Object.fromEntries(final),
      nemesis: nemesisEvents,
      leaders: monitor.observed,
      tasks: { submissions: tasks.submissions, observations: tasks.observations, processes: tasks.processes, events: tasks.events },
      ...(services !== null ? { services: { ops: services.ops, samples: services.samples, workerDowns: nemesis.workerDowns } } : {}),
      ...(mesh !== null ? { mesh: { service: MESH_SERVICE, ...meshPorts, addrs: mesh.addrs(), stallTimeoutMs: meshStallMs, requests: mesh.requests, samples: mesh.samples, freezes: nemesis.freezes, workerDowns: nemesis.workerDowns } } : {}),
      ...(grow !== null ? { grow: { ops: grow.ops, final: Object.fromEntries(growFinal) } } : {}),
      wipes: nemesis.wipes,
      deadWorkers: nemesis.deadWorkers,
      authProbes,
    }),
  );
  writeFileSync(join(o.out, 'links.json'), JSON.stringify(linkStats, null, 1) + '\n');
  writeFileSync(join(o.out, 'nemesis.log'), nemesisLog.join('\n') + (nemesisLog.length > 0 ? '\n' : ''));
  writeFileSync(join(o.out, 'report.json'), JSON.stringify(report, null, 2) + '\n');
  writeFileSync(join(o.out, 'report.txt'), text + '\n');
  try {
    const fromTraces = leaderSegmentsFromTraces(traces, wall0, nemesisEvents, endMs);
    writeFileSync(
      join(o.out, 'timeline.html'),
      renderTimeline({
        title: `flotilla chaos run — ${verdict.toUpperCase()} (seed ${o.seed})`,
        subtitle: text.split('\n').slice(1, 10),
        endMs,
        healAt,
        managers: cluster.managerIds,
        ops: kv.ops.filter((op) => op.client !== 'final'),
        nemesis: nemesisEvents,
        leaders: fromTraces.length > 0 ? fromTraces : leaderSegmentsFromMonitor(monitor.observed, endMs),
        unavailable: stats.availability.windows,
        opTimeoutMs: o.opTimeoutMs,
      }),
    );
  } catch (e) {
    say(`timeline.html could not be written: ${(e as Error).stack ?? String(e)}`);
  }
  return { report, text, exitCode: verdict === 'pass' ? 0 : 1 };
}

/** Creates the run's admin API token on the leader (the cluster has none yet: open API). */
async function createAdminToken(cluster: ChaosCluster, leader: string, file: string): Promise<string> {
  let last = '';
  for (let i = 0; i < 10; i++) {
    try {
      const r = await request(cluster.realAddr.get(leader)!, '/v1/tokens', { method: 'POST', json: { role: 'admin' }, timeoutMs: 5000 });
      const token = (r.body as { token?: unknown }).token;
      if (r.status === 201 && typeof token === 'string') {
        writeFileSync(file, token + '\n', { mode: 0o600 });
        return token;
      }
      last = `HTTP ${r.status}`;
    } catch (e) {
      last = (e as Error).message;
    }
    await sleep(500);
  }
  throw new Error(`cannot create the admin token on ${leader}: ${last}`);
}

/** An anonymous PUT to a manager's real address (3 tries on network errors). */
async function anonymousPut(cluster: ChaosCluster, m: string): Promise<AuthProbe> {
  let detail = '';
  for (let i = 0; i < 3; i++) {
    try {
      const r = await request(cluster.realAddr.get(m)!, '/v1/kv/chaos-anonymous-probe', { method: 'PUT', body: 'anonymous', timeoutMs: 3000 });
      const code = (r.body as { error?: { code?: string } } | null)?.error?.code;
      return { manager: m, status: r.status, ...(code ? { detail: code } : {}) };
    } catch (e) {
      detail = (e as Error).message;
    }
    await sleep(300);
  }
  return { manager: m, status: null, detail };
}

function computeStats(ops: Op[], events: NemesisEvent[], leaders: LeaderObservation[], tasks: TaskWorkload, durationMs: number, stale: number, workloadEnd: number): ChaosStats {
  const z = () => ({ ok: 0, fail: 0, unknown: 0 });
  const byType: ChaosStats['ops']['byType'] = { read: z(), write: z(), cas: z() };
  const plain = z();
  let ok = 0;
  let fail = 0;
  let unknown = 0;
  let finalOps = 0;
  for (const op of ops) {
    if (op.client === 'final') {
      finalOps++;
      continue;
    }
    byType[op.type][op.outcome]++;
    if (op.plain === true) plain[op.outcome]++;
    if (op.outcome === 'ok') ok++;
    else if (op.outcome === 'fail') fail++;
    else unknown++;
  }
  const byKind: Record<string, number> = {};
  let actions = 0;
  let heals = 0;
  let crashes = 0;
  for (const e of events) {
    if (e.phase === 'start' || e.phase === 'instant') {
      actions++;
      byKind[e.kind] = (byKind[e.kind] ?? 0) + 1;
    } else if (e.phase === 'heal') heals++;
    else if (e.kind === 'crash') crashes++;
  }
  return {
    durationMs,
    ops: { total: ops.length - finalOps, ok, fail, unknown, byType, plain, final: finalOps },
    nemesis: { actions, byKind, heals, crashes },
    leaders: { changes: Math.max(0, leaders.length - 1), terms: new Set(leaders.map((l) => l.term)).size, observed: leaders },
    tasks: {
      submitted: tasks.events.filter((e) => e.kind === 'submit').length,
      acknowledged: tasks.submissions.filter((s) => s.acknowledged).length,
      stops: tasks.events.filter((e) => e.kind === 'stop' && e.outcome === 'ok').length,
      observations: tasks.observations.length,
      processes: tasks.processes.length,
    },
    availability: availability(ops, workloadEnd),
    staleReadsInjected: stale,
  };
}

function availability(ops: Op[], workloadEnd: number): ChaosStats['availability'] {
  const { windows, longest } = unavailableWindows(
    ops.filter((op) => op.client !== 'final'),
    workloadEnd,
  );
  return { longestMs: longest === null ? 0 : r3(longest.to - longest.from), longest, windowsOver1s: windows.length, windows: windows.slice(0, 100) };
}

function renderText(r: ChaosReport, checks: string, notes: string[]): string {
  const s = r.stats;
  const pct = (n: number): string => (s.ops.total === 0 ? '0%' : `${((100 * n) / s.ops.total).toFixed(1)}%`);
  const t = (x: { ok: number; fail: number; unknown: number }): string => `${x.ok}/${x.fail}/${x.unknown}`;
  const kinds = Object.entries(s.nemesis.byKind)
    .map(([k, n]) => `${k} ${n}`)
    .join(', ');
  const lines = [
    `flotilla chaos run — ${r.verdict.toUpperCase()}`,
    `  seed ${r.seed}; ${r.options.managers} managers, ${r.options.workers} workers, ${r.options.durationMs / 1000}s, faults ${r.options.faults.join(',') || 'none'} every ${r.options.intervalMs / 1000}s${r.options.allowQuorumLoss ? ', quorum loss allowed' : ''}${r.options.injectStaleReads ? ', INJECTED STALE READS (test)' : ''}${r.options.netns !== undefined ? `; netns test bed ${r.options.netns.subnet}, kernel partitions` : ''}`,
    `  ops: ${s.ops.total} (ok ${s.ops.ok} ${pct(s.ops.ok)}, fail ${s.ops.fail} ${pct(s.ops.fail)}, unknown ${s.ops.unknown} ${pct(s.ops.unknown)}) + ${s.ops.final} final reads`,
    `       ok/fail/unknown: read ${t(s.ops.byType.read)}, write ${t(s.ops.byType.write)}, cas ${t(s.ops.byType.cas)}${r.options.plainClients > 0 ? `; plain clients (${r.options.plainClients}, no x-request-id) ${t(s.ops.plain)}` : ''}`,
    `  nemesis: ${s.nemesis.actions} faults (${kinds || 'none'}), ${s.nemesis.heals} heals${s.nemesis.crashes > 0 ? `, ${s.nemesis.crashes} unexpected exits` : ''}`,
    `  leaders: ${s.leaders.changes} changes (${s.leaders.observed.map((l) => `${l.leader}@t${l.term}`).join(' → ') || 'none seen'})`,
    `  availability: longest window without a successful op ${(s.availability.longestMs / 1000).toFixed(2)}s${s.availability.longest === null ? '' : ` (+${(s.availability.longest.from / 1000).toFixed(1)}s … +${(s.availability.longest.to / 1000).toFixed(1)}s)`}; ${s.availability.windowsOver1s} windows ≥ 1s`,
    ...(s.services !== undefined
      ? [
          `  services: ${Object.entries(s.services.ops)
            .map(([k, x]) => `${k} ${t(x)}`)
            .join(', ')} (ok/fail/unknown); ${s.services.samples} samples of the leader's view`,
        ]
      : []),
    ...(s.mesh !== undefined
      ? [
          `  mesh: ${s.mesh.requests} requests (ok ${s.mesh.ok}, failed ${s.mesh.failed}) by ${s.mesh.clients} clients through ${s.mesh.addrs.join(', ')} to ${s.mesh.replicas} replicas of ${MESH_SERVICE}; ${s.mesh.freezes} replica${s.mesh.freezes === 1 ? '' : 's'} frozen; stall timeout ${r.options.meshStallTimeoutMs ?? MESH_STALL_TIMEOUT_MS} ms`,
        ]
      : []),
    ...(r.options.workers > 0 ? [`  tasks: ${s.tasks.acknowledged}/${s.tasks.submitted} submissions acknowledged, ${s.tasks.stops} stopped, ${s.tasks.processes} process runs seen`] : []),
    `  recovery: ${r.interrupted ? 'skipped (interrupted)' : r.recovery.converged ? `converged ${r.recovery.afterMs?.toFixed(0)} ms after healing, leader ${r.recovery.leader}` : 'did NOT converge'}; final reads ${r.recovery.finalReads}/${r.recovery.keys}${r.options.workers > 0 ? `; tasks ${r.recovery.tasksSettled ? 'settled' : 'NOT all running'}` : ''}${r.recovery.servicesSettled === undefined ? '' : `; services ${r.recovery.servicesSettled ? 'converged' : 'NOT converged'}`}`,
    ...(s.staleReadsInjected > 0 ? [`  injected stale reads: ${s.staleReadsInjected}`] : []),
    ...notes.map((n) => `  ${n}`),
    '',
    checks,
    '',
    `output: ${r.out}`,
    `replay: ${r.replay}`,
  ];
  return lines.join('\n');
}

export { describeAction };
