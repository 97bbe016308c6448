// `start`: submit → container running for a one-container task.
//
//   flotilla  3 managers + 1 worker `--driver docker`: POST /v1/tasks, until (a) docker shows
//             the new container running and (b) the task's `running` is committed (seen on a
//             follower's event stream)
//   docker    `docker run -d flotilla/busybox:test sleep 600`, until inspect says running
//   swarm     `docker service create --detach …` (single-node swarm on 127.0.0.1), until a
//             container of the service is running (`docker ps --filter
//             label=com.docker.swarm.service.name=…`, through the Engine API), not swarm's
//             convergence monitor
//
// Docker state is polled through the Engine API on /var/run/docker.sock every 20 ms. Only
// containers, services and the swarm this benchmark created are removed (the swarm is left
// only if this benchmark initialised it).
import http from 'node:http';
import { execFile } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';
import { workerToken } from '../src/manager/auth.js';
import { newAgent, requestOk } from './lib/load.js';
import { Proc } from './lib/procs.js';
import { BENCH_SECRET, FlotillaCluster, member } from './lib/systems.js';
import { CLI, QUICK, ROOT, envNum, log, round, sleep, summarize, trySh, waitFor } from './lib/util.js';
import type { BenchOutput } from './types.js';

const IMAGE = process.env.FLOTILLA_TEST_IMAGE ?? 'flotilla/busybox:test';
const SOCK = '/var/run/docker.sock';

export function dockerApi<T = any>(method: string, path: string, timeoutMs = 10_000): Promise<{ status: number; body: T }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: SOCK, method, path, headers: { host: 'docker' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const s = Buffer.concat(chunks).toString('utf8');
        let body: unknown = s;
        try {
          body = s ? JSON.parse(s) : null;
        } catch {
          /* text */
        }
        resolve({ status: res.statusCode ?? 0, body: body as T });
      });
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error('docker API timeout')));
    req.on('error', reject);
    req.end();
  });
}

export function run(cmd: string, args: string[], timeoutMs = 60_000): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(cmd, args, { encoding: 'utf8', timeout: timeoutMs }, (err, stdout, stderr) => (err ? reject(new Error(`${cmd} ${args.join(' ')}: ${stderr || err.message}`)) : resolve(stdout.trim()))),
  );
}

interface ContainerEntry {
  Id: string;
  Names?: string[];
  Labels?: Record<string, string>;
}

export async function running(filters?: Record<string, string[]>): Promise<ContainerEntry[]> {
  const f = encodeURIComponent(JSON.stringify({ status: ['running'], ...(filters ?? {}) }));
  const r = await dockerApi<ContainerEntry[]>('GET', `/containers/json?filters=${f}`);
  return Array.isArray(r.body) ? r.body : [];
}

async function runningIds(filters?: Record<string, string[]>): Promise<string[]> {
  return (await running(filters)).map((c) => c.Id);
}

export async function pollUntil<T>(fn: () => Promise<T | null | undefined | false>, timeoutMs: number, everyMs = 20): Promise<T | null> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    const v = await fn().catch(() => null);
    if (v) return v;
    await sleep(everyMs);
  }
  return null;
}

/** Why Docker cannot be used here (after trying scripts/docker-setup.sh), or null. */
export function dockerProblem(): string | null {
  const up = () => trySh('docker', ['info', '--format', '{{.ServerVersion}}'], 20_000);
  if (!up()) {
    const script = join(ROOT, 'scripts', 'docker-setup.sh');
    if (!existsSync(script)) return 'no Docker engine answers and scripts/docker-setup.sh does not exist';
    log('start: no Docker engine; running scripts/docker-setup.sh');
    if (trySh('bash', [script], 600_000) === null) return 'scripts/docker-setup.sh failed (see /tmp/dockerd.log)';
    if (!up()) return 'no Docker engine answers after scripts/docker-setup.sh';
  }
  if (!trySh('docker', ['image', 'inspect', IMAGE], 20_000)) {
    const script = join(ROOT, 'scripts', 'docker-setup.sh');
    if (existsSync(script)) trySh('bash', [script], 600_000);
    if (!trySh('docker', ['image', 'inspect', IMAGE], 20_000)) return `image ${IMAGE} is missing`;
  }
  return null;
}

/** Whether the built worker has a docker driver (src/worker/drivers/docker.ts, registered in DRIVER_FACTORIES). */
export async function dockerWorkerMode(): Promise<{ mode: 'cli'; note: string } | { problem: string }> {
  if (!existsSync(join(ROOT, 'src', 'worker', 'drivers', 'docker.ts'))) return { problem: 'the docker driver (src/worker/drivers/docker.ts) is not in the tree yet' };
  try {
    const mod = (await import('../src/worker/main.js')) as { DRIVER_FACTORIES?: Record<string, unknown> };
    if (mod.DRIVER_FACTORIES?.docker) return { mode: 'cli', note: '`flotilla worker --driver docker`' };
    return { problem: 'the built worker does not register a docker driver (DRIVER_FACTORIES.docker in src/worker/main.ts); run `npm run build`?' };
  } catch (e) {
    return { problem: `cannot load the built worker: ${(e as Error).message}` };
  }
}

const stats = (xs: number[]) => {
  const s = summarize(xs);
  return { n: s.n, p50: round(s.p50, 0), p90: round(s.p90, 0), min: round(s.min, 0), max: round(s.max, 0), mean: round(s.mean, 0) };
};

async function dockerRunTrials(n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const name = `flotilla-bench-run-${process.pid}-${i}`;
    const t0 = performance.now();
    const id = await run('docker', ['run', '-d', '--name', name, IMAGE, 'sleep', '600']);
    const ok = await pollUntil(async () => (await dockerApi<{ State?: { Running?: boolean } }>('GET', `/containers/${id}/json`)).body?.State?.Running === true, 30_000);
    if (ok) out.push(performance.now() - t0);
    await run('docker', ['rm', '-f', id]).catch(() => {});
  }
  return out;
}

async function swarmTrials(n: number): Promise<{ ms: number[]; note: string }> {
  const state = trySh('docker', ['info', '--format', '{{.Swarm.LocalNodeState}}']) ?? 'unknown';
  let weInit = false;
  if (state === 'inactive') {
    await run('docker', ['swarm', 'init', '--advertise-addr', '127.0.0.1']);
    weInit = true;
  } else if (state !== 'active') throw new Error(`swarm is in state '${state}'`);
  const out: number[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const name = `flotilla-bench-svc-${process.pid}-${i}`;
      const t0 = performance.now();
      await run('docker', ['service', 'create', '--detach', '--name', name, '--restart-condition', 'none', '--stop-grace-period', '1s', IMAGE, 'sleep', '600']);
      const ok = await pollUntil(async () => (await runningIds({ label: [`com.docker.swarm.service.name=${name}`] })).length > 0, 60_000);
      if (ok) out.push(performance.now() - t0);
      await run('docker', ['service', 'rm', name]).catch(() => {});
      await pollUntil(async () => {
        const f = encodeURIComponent(JSON.stringify({ label: [`com.docker.swarm.service.name=${name}`] }));
        const r = await dockerApi<unknown[]>('GET', `/containers/json?all=true&filters=${f}`);
        return Array.isArray(r.body) && r.body.length === 0;
      }, 20_000, 100);
    }
  } finally {
    if (weInit) await run('docker', ['swarm', 'leave', '--force']).catch((e) => log(`start: swarm leave failed: ${(e as Error).message}`));
  }
  return { ms: out, note: weInit ? 'swarm initialised for the benchmark and left afterwards' : 'swarm was already active (left as found)' };
}

async function flotillaTrials(n: number): Promise<{ containerMs: number[]; committedMs: number[] }> {
  const cluster = new FlotillaCluster();
  let worker: Proc | null = null;
  let events: WebSocket | null = null;
  const created = new Set<string>();
  const agent = newAgent(4);
  // A worker id of its own: its containers carry io.flotilla.node=<id> and are removed at the end.
  const workerId = `bench-w${process.pid}`;
  try {
    await cluster.start();
    const leaderId = await cluster.leader();
    const leader = member(cluster, leaderId);
    const follower = cluster.members.find((m) => m.id !== leaderId)!;
    const tokenFile = join(cluster.dir, 'worker-token');
    writeFileSync(tokenFile, workerToken(BENCH_SECRET), { mode: 0o600 });
    const common = ['--id', workerId, '--managers', cluster.addrs().join(','), '--token-file', tokenFile, '--state-dir', join(cluster.dir, workerId), '--stop-grace', '1000', '--log-level', 'warn'];
    const args = [CLI, 'worker', ...common, '--driver', 'docker', '--listen', '127.0.0.1:0'];
    worker = new Proc('worker', process.execPath, args, join(cluster.dir, `${workerId}.log`)).start();
    await waitFor(
      'the docker worker to be ready',
      async () => {
        const r = await requestOk(agent, leader.addr, 'GET', '/v1/nodes?stale=true', null);
        return (JSON.parse(r.body.toString('utf8')) as { nodes: { id: string; status: string }[] }).nodes.some((x) => x.id === workerId && x.status === 'ready');
      },
      30_000,
      100,
    );
    const runningAt = new Map<string, number>();
    events = new WebSocket(`ws://${follower.addr}/v1/events`, { perMessageDeflate: false });
    events.on('error', () => {});
    events.on('message', (data: Buffer) => {
      const e = JSON.parse(data.toString('utf8')) as { type?: string; task?: { id: string; state: string } };
      if (e.type === 'task.updated' && e.task?.state === 'running' && !runningAt.has(e.task.id)) runningAt.set(e.task.id, performance.now());
    });
    await new Promise<void>((resolve, reject) => {
      events!.once('open', () => resolve());
      events!.once('error', reject);
    });
    const containerMs: number[] = [];
    const committedMs: number[] = [];
    for (let i = -1; i < n; i++) {
      // Trial -1 is a warm-up (first use of the image and network by the driver), not counted.
      const before = new Set(await runningIds());
      const spec = { name: `start-${i + 1}`, driver: 'docker', containers: [{ image: IMAGE, command: ['sleep', '600'] }], restart: 'never' };
      const t0 = performance.now();
      const r = await requestOk(agent, leader.addr, 'POST', '/v1/tasks', JSON.stringify(spec), { 'content-type': 'application/json' }, 30_000);
      const id = (JSON.parse(r.body.toString('utf8')) as { id: string }).id;
      // The task's app container (labels io.flotilla.task = the task id, io.flotilla.role not
      // 'infra': the docker driver runs a pod's network in an infra container started first),
      // new and running; containers others start on this engine meanwhile do not match.
      const cid = await pollUntil(
        async () => (await running({ label: [`io.flotilla.task=${id}`] })).find((c) => !before.has(c.Id) && c.Labels?.['io.flotilla.role'] !== 'infra')?.Id,
        60_000,
      );
      const tContainer = performance.now();
      if (cid) created.add(cid);
      await pollUntil(async () => runningAt.has(id), 60_000, 5);
      if (i >= 0 && cid) containerMs.push(tContainer - t0);
      if (i >= 0 && runningAt.has(id)) committedMs.push(runningAt.get(id)! - t0);
      await requestOk(agent, leader.addr, 'DELETE', `/v1/tasks/${id}`, null, {}, 30_000).catch(() => {});
      if (cid) await pollUntil(async () => !(await runningIds()).includes(cid), 30_000, 100);
    }
    return { containerMs, committedMs };
  } finally {
    events?.terminate();
    agent.destroy();
    await worker?.stop('SIGTERM', 10_000);
    await cluster.stop();
    const f = encodeURIComponent(JSON.stringify({ label: [`io.flotilla.node=${workerId}`] }));
    const left = await dockerApi<ContainerEntry[]>('GET', `/containers/json?all=true&filters=${f}`).catch(() => ({ body: [] as ContainerEntry[] }));
    for (const c of Array.isArray(left.body) ? left.body : []) created.add(c.Id);
    for (const cid of created) await run('docker', ['rm', '-f', cid]).catch(() => {});
  }
}

export async function benchStart(): Promise<BenchOutput> {
  const n = envNum('BENCH_START_TRIALS', QUICK ? 3 : 20);
  const dockerVersion = trySh('docker', ['version', '--format', '{{.Server.Version}}'], 20_000);
  const params = { trials: n, image: IMAGE, command: 'sleep 600', pollMs: 20, managers: 3, workers: 1 };
  const problem = dockerProblem();
  if (problem) {
    log(`start: SKIPPED: ${problem}`);
    return { parameters: params, peers: { docker: dockerVersion }, results: {}, skipped: problem };
  }
  const peers = { docker: trySh('docker', ['version', '--format', '{{.Server.Version}}'], 20_000) };
  log(`start: docker run -d × ${n}`);
  const dockerRun = await dockerRunTrials(n);
  log(`start: docker run: ${JSON.stringify(stats(dockerRun))}`);
  log(`start: swarm service create × ${n}`);
  const swarm = await swarmTrials(n);
  log(`start: swarm: ${JSON.stringify(stats(swarm.ms))}`);
  const wm = await dockerWorkerMode();
  const driverProblem = 'problem' in wm ? wm.problem : null;
  let flotilla: { containerMs: number[]; committedMs: number[] } | null = null;
  if ('problem' in wm) log(`start: flotilla part SKIPPED: ${wm.problem}`);
  else {
    log(`start: flotilla (3 managers, 1 docker worker: ${wm.note}) × ${n}`);
    flotilla = await flotillaTrials(n);
    log(`start: flotilla container up: ${JSON.stringify(stats(flotilla.containerMs))}, running committed: ${JSON.stringify(stats(flotilla.committedMs))}`);
  }
  return {
    parameters: params,
    peers,
    results: {
      dockerRun: { ms: dockerRun.map((x) => round(x, 1)), ...stats(dockerRun) },
      swarm: { ms: swarm.ms.map((x) => round(x, 1)), ...stats(swarm.ms), note: swarm.note },
      flotilla: flotilla
        ? {
            containerUp: { ms: flotilla.containerMs.map((x) => round(x, 1)), ...stats(flotilla.containerMs) },
            runningCommitted: { ms: flotilla.committedMs.map((x) => round(x, 1)), ...stats(flotilla.committedMs) },
            worker: 'note' in wm ? wm.note : '',
          }
        : { skipped: driverProblem },
    },
    skipped: undefined,
  };
}
