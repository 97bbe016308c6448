// `update`: a health-gated rolling update of a replicated service, flotilla beside Docker swarm.
//
//   flotilla  3 managers + 1 worker `--driver docker`: a service of `replicas` busybox
//             `sleep 600` containers (limits 250 millicores, 32 MiB, as swarm's) with an exec
//             health check (`true`, every 1 s (BENCH_UPDATE_HEALTH_INTERVAL_MS), timeout 5 s, 3 retries), update
//             parallelism 1, stop-first, no delay, the same monitor period as swarm's; each trial
//             changes the template (an environment variable, `PUT /v1/services/NAME`) and times
//             until the update is `completed` with every replica ready on the new template
//   swarm     `docker service create` of the same service (single-node swarm on 127.0.0.1, the
//             same limits and health check, `--update-parallelism 1 --update-order stop-first
//             --update-delay 0s --update-monitor` the same), each trial `docker service update
//             --detach --env-add …`, timed until the service's UpdateStatus is `completed` and
//             every replica's container is running and healthy
//
// Both: while the update runs the replicas ready (flotilla: the service's `ready`; swarm:
// running containers Docker reports healthy) are polled every 50 ms; the lowest count is
// reported (stop-first with parallelism 1 may dip by one). Until workers run health checks,
// flotilla counts a running task as ready, which the results say (`healthReported`).
//
// Only what this benchmark created is removed: its flotilla worker's containers (by their
// io.flotilla.node label), its swarm service, and the swarm itself only if it initialised it.
import { performance } from 'node:perf_hooks';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { workerToken } from '../src/manager/auth.js';
import { newAgent, requestOk } from './lib/load.js';
import { Proc } from './lib/procs.js';
import { BENCH_SECRET, FlotillaCluster, member } from './lib/systems.js';
import { CLI, QUICK, envNum, log, round, sleep, summarize, trySh, waitFor } from './lib/util.js';
import { dockerApi, dockerProblem, dockerWorkerMode, pollUntil, run, running } from './start.js';
import type { BenchOutput } from './types.js';

const IMAGE = process.env.FLOTILLA_TEST_IMAGE ?? 'flotilla/busybox:test';
const SERVICE = 'bench-update';
/** Each replica's CPU (millicores) and memory limit, the same on both sides. */
const CPU_LIMIT_M = 250;
const MEMORY_LIMIT = '32m';

interface Params {
  trials: number;
  replicas: number;
  monitorMs: number;
  /** The exec check's interval on both sides (1 s). */
  healthIntervalMs: number;
}

const stats = (xs: number[]) => {
  const s = summarize(xs);
  return { n: s.n, p50: round(s.p50, 0), p90: round(s.p90, 0), min: round(s.min, 0), max: round(s.max, 0), mean: round(s.mean, 0) };
};

interface Trials {
  ms: number[];
  /** Lowest ready count seen during each update. */
  minReady: number[];
}

interface FlotillaService {
  replicas: number;
  ready: number;
  running: number;
  upToDate: number;
  templateVersion: number;
  update: { state: string; message: string };
  tasks?: Record<string, unknown>[];
}

/** One line: the update's state and every task's slot, template, state and health. */
function describe(s: FlotillaService): string {
  const tasks = (s.tasks ?? []).map((t) => {
    const svc = (t.service ?? {}) as { slot?: number; version?: number };
    const h = t.health as { status?: string } | undefined | null;
    return `${svc.slot ?? '?'}:v${svc.version ?? '?'}:${String(t.state)}${h ? `/${h.status ?? JSON.stringify(h)}` : ''}`;
  });
  return `update ${s.update.state}${s.update.message ? ` (${s.update.message})` : ''}, ready ${s.ready}/${s.replicas}, up to date ${s.upToDate}, template v${s.templateVersion}; tasks ${tasks.join(' ')}`;
}

function flotillaSpec(p: Params, generation: number): Record<string, unknown> {
  return {
    name: SERVICE,
    driver: 'docker',
    replicas: p.replicas,
    containers: [{ image: IMAGE, command: ['sleep', '600'], env: { GENERATION: String(generation) } }],
    // The same limits as swarm's --limit-cpu/--limit-memory (CPU_LIMIT_M, MEMORY_LIMIT): an exec
    // check runs in the container's cgroup, so a tiny CPU quota (10 millicores was used at first)
    // throttles every probe to seconds and fails healthy replicas.
    resources: { cpu: CPU_LIMIT_M, memory: MEMORY_LIMIT },
    restart: { policy: 'on-failure' },
    update: { parallelism: 1, delayMs: 0, order: 'stop-first', monitorMs: p.monitorMs, failureAction: 'pause' },
    health: { type: 'exec', command: ['true'], intervalMs: p.healthIntervalMs, timeoutMs: 5000, retries: 3, startPeriodMs: 0 },
  };
}

async function flotillaTrials(p: Params): Promise<Trials & { healthReported: boolean }> {
  const cluster = new FlotillaCluster();
  let worker: Proc | null = null;
  const agent = newAgent(4);
  const workerId = `bench-u${process.pid}`;
  const out: Trials & { healthReported: boolean } = { ms: [], minReady: [], healthReported: false };
  try {
    await cluster.start();
    const leader = member(cluster, await cluster.leader());
    const tokenFile = join(cluster.dir, 'worker-token');
    writeFileSync(tokenFile, workerToken(BENCH_SECRET), { mode: 0o600 });
    const args = [
      CLI, 'worker', '--id', workerId, '--managers', cluster.addrs().join(','), '--token-file', tokenFile, '--state-dir', join(cluster.dir, workerId),
      '--stop-grace', '1000', '--log-level', 'warn', '--driver', 'docker', '--listen', '127.0.0.1:0', '--cpu', '4000', '--memory', '4g',
    ];
    worker = new Proc('worker', process.execPath, args, join(cluster.dir, `${workerId}.log`)).start();
    await waitFor(
      'the docker worker to be ready',
      async () => {
        const r = await requestOk(agent, leader.addr, 'GET', '/v1/nodes', null);
        return (JSON.parse(r.body.toString('utf8')) as { nodes: { id: string; status: string }[] }).nodes.some((x) => x.id === workerId && x.status === 'ready');
      },
      30_000,
      100,
    );
    const get = async (): Promise<FlotillaService> => JSON.parse((await requestOk(agent, leader.addr, 'GET', `/v1/services/${SERVICE}`, null, {}, 10_000)).body.toString('utf8')) as FlotillaService;
    const json = { 'content-type': 'application/json' };
    await requestOk(agent, leader.addr, 'POST', '/v1/services', JSON.stringify(flotillaSpec(p, 0)), json, 30_000);
    await waitFor(`${p.replicas} flotilla replicas ready`, async () => {
      const s = await get();
      return s.ready === p.replicas && s.running === p.replicas;
    }, 180_000, 200);
    for (let i = 1; i <= p.trials; i++) {
      const t0 = performance.now();
      await requestOk(agent, leader.addr, 'PUT', `/v1/services/${SERVICE}`, JSON.stringify(flotillaSpec(p, i)), json, 30_000);
      let min = p.replicas;
      let last: FlotillaService | null = null;
      let traced = 0;
      const done = await pollUntil(async () => {
        const s = await get();
        last = s;
        min = Math.min(min, s.ready);
        if (process.env.BENCH_UPDATE_TRACE && performance.now() - traced > 2000) {
          traced = performance.now();
          log(`update: t=${round(performance.now() - t0, 0)} ms ${describe(s)}`);
        }
        if (s.update.state === 'paused' || s.update.state === 'rolled_back' || s.update.state === 'rolling_back') throw new Error(`the flotilla update ${s.update.state}: ${s.update.message}`);
        return s.update.state === 'completed' && s.upToDate === p.replicas && s.ready === p.replicas;
      }, 300_000, 50);
      if (!done) throw new Error(`flotilla update ${i} did not complete within 300 s; last seen: ${last === null ? 'nothing' : describe(last)}`);
      out.ms.push(performance.now() - t0);
      out.minReady.push(min);
      log(`update: flotilla trial ${i}: ${round(out.ms.at(-1)!, 0)} ms, lowest ready ${min}/${p.replicas}`);
    }
    // Whether the workers report health (tasks carry a health field): else running counts as ready.
    const inspect = JSON.parse((await requestOk(agent, leader.addr, 'GET', `/v1/services/${SERVICE}`, null)).body.toString('utf8')) as FlotillaService;
    out.healthReported = (inspect.tasks ?? []).some((t) => t.health !== undefined && t.health !== null);
    await requestOk(agent, leader.addr, 'DELETE', `/v1/services/${SERVICE}`, null, {}, 30_000).catch(() => undefined);
    await pollUntil(async () => (await running({ label: [`io.flotilla.node=${workerId}`] })).length === 0, 60_000, 200);
    return out;
  } finally {
    agent.destroy();
    await worker?.stop('SIGTERM', 10_000);
    await cluster.stop();
    const f = encodeURIComponent(JSON.stringify({ label: [`io.flotilla.node=${workerId}`] }));
    const left = await dockerApi<{ Id: string }[]>('GET', `/containers/json?all=true&filters=${f}`).catch(() => ({ body: [] as { Id: string }[] }));
    for (const c of Array.isArray(left.body) ? left.body : []) await run('docker', ['rm', '-f', c.Id]).catch(() => undefined);
  }
}

async function swarmTrials(p: Params): Promise<Trials & { note: string }> {
  const state = trySh('docker', ['info', '--format', '{{.Swarm.LocalNodeState}}']) ?? 'unknown';
  let weInit = false;
  if (state === 'inactive') {
    await run('docker', ['swarm', 'init', '--advertise-addr', '127.0.0.1', '--listen-addr', '127.0.0.1:2377']);
    weInit = true;
  } else if (state !== 'active') throw new Error(`swarm is in state '${state}'`);
  const name = `flotilla-bench-update-${process.pid}`;
  const label = [`com.docker.swarm.service.name=${name}`];
  const out: Trials & { note: string } = { ms: [], minReady: [], note: weInit ? 'swarm initialised for the benchmark and left afterwards' : 'swarm was already active (left as found)' };
  let created = false;
  try {
    await run('docker', [
      'service', 'create', '--detach', '--name', name, '--replicas', String(p.replicas),
      '--update-parallelism', '1', '--update-delay', '0s', '--update-order', 'stop-first', '--update-monitor', `${p.monitorMs}ms`, '--update-failure-action', 'pause',
      '--health-cmd', 'true', '--health-interval', `${p.healthIntervalMs}ms`, '--health-timeout', '5s', '--health-retries', '3', '--health-start-period', '0s',
      '--limit-cpu', String(CPU_LIMIT_M / 1000), '--limit-memory', MEMORY_LIMIT.toUpperCase(),
      '--restart-condition', 'on-failure', '--stop-grace-period', '1s', '--env', 'GENERATION=0', IMAGE, 'sleep', '600',
    ], 120_000);
    created = true;
    // Running containers Docker reports healthy; an engine answer that is not a list (an error
    // under load) throws, so the sample is skipped rather than counted as 0.
    const healthy = async (): Promise<number> => {
      const f = encodeURIComponent(JSON.stringify({ status: ['running'], label, health: ['healthy'] }));
      const r = await dockerApi<unknown[]>('GET', `/containers/json?filters=${f}`);
      if (r.status !== 200 || !Array.isArray(r.body)) throw new Error(`docker API: HTTP ${r.status}`);
      return r.body.length;
    };
    const up = await pollUntil(async () => (await healthy()) === p.replicas, 180_000, 200);
    if (!up) throw new Error(`${p.replicas} swarm replicas not healthy within 180 s`);
    for (let i = 1; i <= p.trials; i++) {
      const t0 = performance.now();
      await run('docker', ['service', 'update', '--detach', '--env-add', `GENERATION=${i}`, name], 60_000);
      let min = p.replicas;
      const done = await pollUntil(async () => {
        const n = await healthy();
        min = Math.min(min, n);
        const s = await dockerApi<{ UpdateStatus?: { State?: string; Message?: string } }>('GET', `/services/${name}`);
        const st = s.body?.UpdateStatus?.State;
        if (st === 'paused' || st === 'rollback_completed') throw new Error(`the swarm update ${st}: ${s.body?.UpdateStatus?.Message ?? ''}`);
        return st === 'completed' && n === p.replicas;
      }, 300_000, 50);
      if (!done) throw new Error(`swarm update ${i} did not complete within 300 s`);
      out.ms.push(performance.now() - t0);
      out.minReady.push(min);
      log(`update: swarm trial ${i}: ${round(out.ms.at(-1)!, 0)} ms, lowest healthy ${min}/${p.replicas}`);
    }
  } finally {
    if (created) {
      await run('docker', ['service', 'rm', name]).catch(() => undefined);
      await pollUntil(async () => {
        const f = encodeURIComponent(JSON.stringify({ label }));
        const r = await dockerApi<unknown[]>('GET', `/containers/json?all=true&filters=${f}`);
        return Array.isArray(r.body) && r.body.length === 0;
      }, 60_000, 200);
    }
    if (weInit) await run('docker', ['swarm', 'leave', '--force']).catch((e) => log(`update: swarm leave failed: ${(e as Error).message}`));
  }
  return out;
}

export async function benchUpdate(): Promise<BenchOutput> {
  const p: Params = {
    trials: envNum('BENCH_UPDATE_TRIALS', QUICK ? 1 : 3),
    replicas: envNum('BENCH_UPDATE_REPLICAS', QUICK ? 3 : 10),
    healthIntervalMs: envNum('BENCH_UPDATE_HEALTH_INTERVAL_MS', 1000),
    monitorMs: envNum('BENCH_UPDATE_MONITOR_MS', 1000),
  };
  const params = { ...p, parallelism: 1, order: 'stop-first', delayMs: 0, health: `exec \`true\`, interval ${p.healthIntervalMs / 1000} s, timeout 5 s, retries 3`, image: IMAGE, command: 'sleep 600', limits: `${CPU_LIMIT_M} millicores, ${MEMORY_LIMIT}`, pollMs: 50, managers: 3, workers: 1 };
  const dockerVersion = trySh('docker', ['version', '--format', '{{.Server.Version}}'], 20_000);
  const problem = dockerProblem();
  if (problem) {
    log(`update: SKIPPED: ${problem}`);
    return { parameters: params, peers: { docker: dockerVersion }, results: {}, skipped: problem };
  }
  const wm = await dockerWorkerMode();
  if ('problem' in wm) {
    log(`update: SKIPPED: ${wm.problem}`);
    return { parameters: params, peers: { docker: dockerVersion }, results: {}, skipped: wm.problem };
  }
  log(`update: flotilla (3 managers, 1 docker worker): ${p.replicas} replicas, ${p.trials} rolling updates`);
  const flotilla = await flotillaTrials(p);
  log(`update: flotilla: ${JSON.stringify(stats(flotilla.ms))}`);
  await sleep(1000);
  log(`update: swarm: ${p.replicas} replicas, ${p.trials} rolling updates`);
  const swarm = await swarmTrials(p);
  log(`update: swarm: ${JSON.stringify(stats(swarm.ms))}`);
  return {
    parameters: params,
    peers: { docker: dockerVersion },
    results: {
      flotilla: { ms: flotilla.ms.map((x) => round(x, 1)), ...stats(flotilla.ms), minReady: Math.min(...flotilla.minReady), healthReported: flotilla.healthReported },
      swarm: { ms: swarm.ms.map((x) => round(x, 1)), ...stats(swarm.ms), minReady: Math.min(...swarm.minReady), note: swarm.note },
    },
  };
}
