// `mesh`: requests through flotilla's routing mesh beside requests straight to a replica, in
// the same run, and beside Docker swarm's routing mesh when its ingress network works here.
//
//   flotilla  3 managers + 2 workers `--driver process` on their own loopback addresses
//             (127.0.0.2, 127.0.0.3); a 2-replica service whose replica is a small Node http
//             server answering a fixed body on its node's address, published in mesh mode.
//             (a) mesh: client c sends to worker c mod 2's published port (the mesh picks a
//             ready replica on either worker); (b) direct: client c sends to replica c mod 2's
//             own address:port. Each point in A-B-B-A order (mesh, direct, direct, mesh),
//             each half after its own warm-up, with keep-alive connections and with a new
//             connection per request (the mesh is a TCP proxy: its cost is per connection and
//             per byte). The workers' CPU during the mesh halves is recorded.
//   swarm     single-node swarm (initialised here and left afterwards, or used as found),
//             `docker service create --publish` of two busybox httpd replicas: (a) the
//             published port on 127.0.0.1 (the ingress routing mesh), (b) a replica's own
//             address on docker_gwbridge; busybox httpd closes every connection, so only the
//             new-connection mode. When ingress does not answer, the reason is recorded.
//
// Only what this benchmark created is removed: its processes (by PID), its swarm service
// (named bench-mesh-…), and the swarm itself only if it initialised it.
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import { join } from 'node:path';
import { existsSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { workerToken } from '../src/manager/auth.js';
import { cpuSeconds } from './raft.js';
import { mergeLoads, newAgent, request, requestOk, runLoad, type LoadResult } from './lib/load.js';
import { Proc } from './lib/procs.js';
import { BENCH_SECRET, FlotillaCluster, member } from './lib/systems.js';
import { CLI, QUICK, envNum, freePorts, log, round, sleep, trySh, waitFor } from './lib/util.js';
import { dockerApi, dockerProblem, pollUntil, run } from './start.js';
import type { BenchOutput } from './types.js';

const IMAGE = process.env.FLOTILLA_TEST_IMAGE ?? 'flotilla/busybox:test';
const SERVICE = 'bench-mesh';
const HOSTS = ['127.0.0.2', '127.0.0.3'];
/** The replica's answer (fixed, 64 bytes). */
const BODY = 'flotilla mesh benchmark replica: a fixed 64-byte answer........\n';

export type Mode = 'keepalive' | 'connect';

export interface MeshPoint {
  system: 'flotilla' | 'swarm';
  path: 'mesh' | 'direct';
  mode: Mode;
  clients: number;
  result: LoadResult;
  /** CPU seconds of the mesh's processes (flotilla: both workers) per 1000 requests. */
  meshCpuMsPerKReq?: number;
}

// The replica: an http server on the node's address (FLOTILLA_NODE_HOST) and PORT.
const REPLICA = `import { createServer } from 'node:http';
const body = ${JSON.stringify(BODY)};
const s = createServer((req, res) => {
  req.resume();
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
  res.end(body);
});
s.keepAliveTimeout = 60000;
s.listen(Number(process.env.PORT), process.env.FLOTILLA_NODE_HOST ?? '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
`;

function agentFor(mode: Mode, clients: number): http.Agent {
  return mode === 'keepalive' ? newAgent(clients) : new http.Agent({ keepAlive: false, maxSockets: Infinity });
}

/** One GET that must answer 200 with the fixed body (busybox httpd: any 200). */
async function fetchOk(agent: http.Agent, addr: string, exact: boolean): Promise<void> {
  const r = await request(agent, addr, 'GET', '/', null, {}, 10_000);
  if (r.status !== 200) throw new Error(`HTTP ${r.status} from ${addr}`);
  if (exact && r.body.length !== BODY.length) throw new Error(`short answer from ${addr}: ${r.body.length} bytes`);
}

/** One half of a point: `clients` loops, client c on targets[c mod n]. */
async function half(targets: string[], mode: Mode, clients: number, durationMs: number, warmupMs: number, exact: boolean): Promise<LoadResult> {
  const agent = agentFor(mode, clients);
  try {
    return await runLoad({ clients, durationMs, warmupMs, maxOps: 5_000_000, op: (c) => fetchOk(agent, targets[c % targets.length]!, exact) });
  } finally {
    agent.destroy();
  }
}

const cpuOf = (pids: (number | undefined)[]): number => {
  let s = 0;
  for (const pid of pids) s += cpuSeconds(pid);
  return s;
};

const strip = (r: LoadResult): LoadResult => ({ ...r, samples: undefined });

function logPoint(p: MeshPoint): void {
  const r = p.result;
  log(`  ${p.system.padEnd(8)} ${p.path.padEnd(6)} ${p.mode.padEnd(9)} c=${String(p.clients).padStart(3)}: ${Math.round(r.throughput)}/s p50 ${round(r.latencyMs.p50, 2)} ms p99 ${round(r.latencyMs.p99, 2)} ms${p.meshCpuMsPerKReq !== undefined ? ` mesh CPU ${p.meshCpuMsPerKReq} ms/1000 req` : ''}${r.errors ? ` errors ${r.errors} (${r.firstErrors[0]})` : ''}`);
}

/**
 * mesh and direct at one concurrency and mode, A-B-B-A (mesh, direct, direct, mesh), each half
 * `durationMs / 2` after its own warm-up; `meshPids` are the processes whose CPU the mesh costs.
 */
async function abba(system: MeshPoint['system'], mesh: string[], direct: string[], mode: Mode, clients: number, durationMs: number, warmupMs: number, exact: boolean, meshPids: (number | undefined)[], idleCpuPerSec = 0): Promise<MeshPoint[]> {
  const parts: Record<'mesh' | 'direct', LoadResult[]> = { mesh: [], direct: [] };
  let cpu = 0;
  for (const path of ['mesh', 'direct', 'direct', 'mesh'] as const) {
    const before = cpuOf(meshPids);
    const t0 = performance.now();
    parts[path].push(await half(path === 'mesh' ? mesh : direct, mode, clients, durationMs / 2, warmupMs, exact));
    // What the workers spend anyway (heartbeats, health checks) is not the mesh's.
    if (path === 'mesh') cpu += cpuOf(meshPids) - before - (idleCpuPerSec * (performance.now() - t0)) / 1000;
  }
  const out = (['mesh', 'direct'] as const).map((path): MeshPoint => {
    const result = strip(mergeLoads(parts[path]));
    const p: MeshPoint = { system, path, mode, clients, result };
    // The CPU covers the warm-ups too: per request of everything sent in those halves.
    if (path === 'mesh' && meshPids.length > 0) {
      const sent = result.ops + (result.throughput * warmupMs * 2) / 1000;
      p.meshCpuMsPerKReq = sent > 0 ? round((cpu * 1000 * 1000) / sent, 1) : undefined;
    }
    logPoint(p);
    return p;
  });
  return out;
}

interface Params {
  clients: number[];
  modes: Mode[];
  seconds: number;
  warmupMs: number;
}

// ------------------------------------------------------------------------------ flotilla

async function flotillaPoints(p: Params): Promise<{ points: MeshPoint[]; backends: string[]; published: string[]; idleCpuPercent: number }> {
  const cluster = new FlotillaCluster();
  const workers: Proc[] = [];
  const agent = newAgent(4);
  try {
    await cluster.start();
    const leader = member(cluster, await cluster.leader());
    const tokenFile = join(cluster.dir, 'worker-token');
    writeFileSync(tokenFile, workerToken(BENCH_SECRET), { mode: 0o600 });
    HOSTS.forEach((host, i) => {
      const id = `w${i + 1}`;
      const args = [
        CLI, 'worker', '--id', id, '--managers', cluster.addrs().join(','), '--token-file', tokenFile, '--state-dir', join(cluster.dir, id),
        '--stop-grace', '1000', '--log-level', 'warn', '--driver', 'process', '--listen', `${host}:0`, '--cpu', '4000', '--memory', '4g',
      ];
      workers.push(new Proc(`worker-${id}`, process.execPath, args, join(cluster.dir, `${id}.log`)).start());
    });
    await waitFor('2 workers ready', async () => {
      const r = await requestOk(agent, leader.addr, 'GET', '/v1/nodes', null);
      return (JSON.parse(r.body.toString('utf8')) as { nodes: { status: string }[] }).nodes.filter((x) => x.status === 'ready').length === 2;
    }, 30_000, 100);
    const script = join(cluster.dir, 'replica.mjs');
    writeFileSync(script, REPLICA);
    const [published, target] = await freePorts(2);
    const spec = {
      name: SERVICE,
      driver: 'process',
      replicas: 2,
      containers: [{ command: [process.execPath, script], env: { PORT: String(target) } }],
      publish: [`${published}:${target}`],
      restart: { policy: 'always' },
    };
    await requestOk(agent, leader.addr, 'POST', '/v1/services', JSON.stringify(spec), { 'content-type': 'application/json' }, 30_000);
    // Both replicas ready, one on each worker, each in the mesh's table.
    const endpoints = await waitFor('2 ready endpoints on 2 workers', async () => {
      const s = JSON.parse((await requestOk(agent, leader.addr, 'GET', `/v1/services/${SERVICE}`, null)).body.toString('utf8')) as {
        ready: number;
        tasks: { node: string | null; state: string; desired: string }[];
        endpoints?: { addr: string; ready: boolean }[];
      };
      const nodes = new Set(s.tasks.filter((t) => t.state === 'running' && t.desired === 'running').map((t) => t.node));
      const eps = (s.endpoints ?? []).filter((e) => e.ready);
      return s.ready === 2 && nodes.size === 2 && eps.length === 2 ? eps.map((e) => e.addr) : null;
    }, 60_000, 200);
    const mesh = HOSTS.map((h) => `${h}:${published}`);
    const probe = new http.Agent({ keepAlive: false });
    for (const a of [...mesh, ...endpoints]) await waitFor(`an answer from ${a}`, async () => (await fetchOk(probe, a, true), true), 30_000, 100);
    probe.destroy();
    log(`mesh: flotilla: mesh ${mesh.join(', ')} → replicas ${endpoints.join(', ')}`);
    const points: MeshPoint[] = [];
    const pids = workers.map((w) => w.pid);
    const c0 = cpuOf(pids);
    await sleep(2000);
    const idleCpuPerSec = Math.max(0, (cpuOf(pids) - c0) / 2);
    log(`mesh: the two workers' idle CPU: ${round(idleCpuPerSec * 100, 1)}% of one core (subtracted from the mesh's CPU)`);
    for (const mode of p.modes) {
      for (const c of p.clients) points.push(...(await abba('flotilla', mesh, endpoints, mode, c, p.seconds * 1000, p.warmupMs, true, pids, idleCpuPerSec)));
    }
    await requestOk(agent, leader.addr, 'DELETE', `/v1/services/${SERVICE}`, null, {}, 30_000).catch(() => undefined);
    return { points, backends: endpoints, published: mesh, idleCpuPercent: round(idleCpuPerSec * 100, 1) };
  } finally {
    agent.destroy();
    await Promise.all(workers.map((w) => w.stop('SIGTERM', 10_000)));
    await cluster.stop();
  }
}

// ------------------------------------------------------------------------------ swarm

interface SwarmOut {
  points: MeshPoint[];
  note: string;
  /** Why swarm's routing mesh was not measured (null: it was). */
  problem: string | null;
}

async function swarmPoints(p: Params): Promise<SwarmOut> {
  const problem = dockerProblem();
  if (problem) return { points: [], note: '', problem };
  const state = trySh('docker', ['info', '--format', '{{.Swarm.LocalNodeState}}']) ?? 'unknown';
  let weInit = false;
  if (state === 'inactive') {
    try {
      await run('docker', ['swarm', 'init', '--advertise-addr', '127.0.0.1', '--listen-addr', '127.0.0.1:2377']);
    } catch (e) {
      return { points: [], note: '', problem: `docker swarm init failed: ${(e as Error).message.split('\n')[0]}` };
    }
    weInit = true;
  } else if (state !== 'active') return { points: [], note: '', problem: `swarm is in state '${state}'` };
  const note = weInit ? 'swarm initialised for the benchmark and left afterwards' : 'swarm was already active (left as found)';
  const name = `${SERVICE}-${process.pid}`;
  const label = [`com.docker.swarm.service.name=${name}`];
  let created = false;
  try {
    const [published] = await freePorts(1);
    await run('docker', [
      'service', 'create', '--detach', '--name', name, '--replicas', '2', '--publish', `published=${published},target=80`,
      '--restart-condition', 'on-failure', '--stop-grace-period', '1s', IMAGE,
      'sh', '-c', `mkdir -p /www && printf '%s' '${BODY.trimEnd()}' > /www/index.html && echo >> /www/index.html && exec httpd -f -p 80 -h /www`,
    ], 120_000);
    created = true;
    const up = await pollUntil(async () => {
      const f = encodeURIComponent(JSON.stringify({ status: ['running'], label }));
      const r = await dockerApi<{ Id: string }[]>('GET', `/containers/json?filters=${f}`);
      return Array.isArray(r.body) && r.body.length === 2 ? r.body : null;
    }, 120_000, 200);
    if (!up) return { points: [], note, problem: 'the 2 swarm replicas did not run within 120 s' };
    // A replica's own address: its container's IP on docker_gwbridge (reachable from the host).
    const direct: string[] = [];
    for (const c of up) {
      const r = await dockerApi<{ NetworkSettings?: { Networks?: Record<string, { IPAddress?: string }> } }>('GET', `/containers/${c.Id}/json`);
      const nets = r.body?.NetworkSettings?.Networks ?? {};
      const ip = nets.docker_gwbridge?.IPAddress || Object.entries(nets).find(([k, v]) => k !== 'ingress' && v.IPAddress)?.[1].IPAddress;
      if (ip) direct.push(`${ip}:80`);
    }
    const mesh = [`127.0.0.1:${published}`];
    const probe = new http.Agent({ keepAlive: false });
    try {
      const ok = await waitFor(`swarm's routing mesh on ${mesh[0]}`, async () => (await fetchOk(probe, mesh[0]!, false), true), QUICK ? 15_000 : 30_000, 250).catch((e: Error) => e);
      if (ok instanceof Error) {
        const why = ingressDiagnosis();
        const last = /: (Error: )?([^:]+)$/.exec(ok.message)?.[2]?.trim();
        return { points: [], note, problem: `the ingress routing mesh did not answer on the published port ${mesh[0]} (${last ?? 'no answer'}) while both replicas ran${why ? `: ${why}` : ''}` };
      }
      for (const a of direct) await waitFor(`swarm replica ${a}`, async () => (await fetchOk(probe, a, false), true), 20_000, 200);
      if (direct.length === 0) return { points: [], note, problem: 'no swarm replica has an address reachable from the host (docker_gwbridge)' };
    } finally {
      probe.destroy();
    }
    log(`mesh: swarm: mesh ${mesh[0]} → replicas ${direct.join(', ')}`);
    const points: MeshPoint[] = [];
    for (const c of p.clients) points.push(...(await abba('swarm', mesh, direct, 'connect', c, p.seconds * 1000, p.warmupMs, false, [])));
    return { points, note, problem: null };
  } finally {
    if (created) {
      await run('docker', ['service', 'rm', name]).catch(() => undefined);
      await pollUntil(async () => {
        const f = encodeURIComponent(JSON.stringify({ label }));
        const r = await dockerApi<unknown[]>('GET', `/containers/json?all=true&filters=${f}`);
        return Array.isArray(r.body) && r.body.length === 0;
      }, 60_000, 200);
    }
    if (weInit) await run('docker', ['swarm', 'leave', '--force']).catch((e) => log(`mesh: swarm leave failed: ${(e as Error).message}`));
  }
}

/** What this host lacks for swarm's ingress, or ''. */
function ingressDiagnosis(): string {
  const why: string[] = [];
  // Swarm's ingress load balancer is IPVS (in the ingress sandbox's namespace): without it in
  // the kernel the published port is never forwarded to a replica.
  if (!existsSync('/proc/net/ip_vs')) why.push(`this kernel (${os.release()}) has no IPVS (/proc/net/ip_vs is missing${existsSync(`/lib/modules/${os.release()}`) ? '' : ' and there are no loadable modules'}), which swarm's ingress load balancer needs`);
  return why.join('; ');
}

// ------------------------------------------------------------------------------

export async function benchMesh(): Promise<BenchOutput> {
  const p: Params = {
    clients: (process.env.BENCH_CLIENTS ?? (QUICK ? '1,4' : '1,16,64')).split(',').map(Number),
    modes: ['keepalive', 'connect'],
    seconds: envNum('BENCH_SECONDS', QUICK ? 1 : 10),
    warmupMs: QUICK ? 200 : 1000,
  };
  const dockerVersion = trySh('docker', ['version', '--format', '{{.Server.Version}}'], 20_000);
  const parameters = { ...p, replicas: 2, managers: 3, workers: 2, workerHosts: HOSTS, bodyBytes: BODY.length, replica: 'a Node http server, process driver', swarmReplica: `busybox httpd (${IMAGE})`, order: 'mesh, direct, direct, mesh' };
  log(`mesh: flotilla (3 managers, 2 process workers on ${HOSTS.join(', ')}): ${p.clients.join('/')} clients, ${p.seconds} s per point`);
  const f = await flotillaPoints(p);
  await sleep(500);
  log('mesh: swarm (single node, ingress routing mesh)');
  let swarm: SwarmOut;
  try {
    swarm = process.env.BENCH_MESH_SWARM === '0' ? { points: [], note: '', problem: 'not run (BENCH_MESH_SWARM=0)' } : await swarmPoints(p);
  } catch (e) {
    swarm = { points: [], note: '', problem: `swarm part failed: ${(e as Error).message.split('\n')[0]}` };
  }
  if (swarm.problem) log(`mesh: swarm not measured: ${swarm.problem}`);
  return {
    parameters,
    peers: { docker: dockerVersion },
    results: {
      points: [...f.points, ...swarm.points],
      flotilla: { mesh: f.published, backends: f.backends, workersIdleCpuPercent: f.idleCpuPercent },
      swarm: { note: swarm.note, problem: swarm.problem },
      overhead: overheads([...f.points, ...swarm.points]),
    },
  };
}

/** mesh p99 / direct p99 (and p50, throughput) per system, mode and concurrency. */
export function overheads(points: MeshPoint[]): { system: string; mode: Mode; clients: number; p99: number; p50: number; throughput: number }[] {
  const out = [];
  for (const m of points.filter((x) => x.path === 'mesh')) {
    const d = points.find((x) => x.path === 'direct' && x.system === m.system && x.mode === m.mode && x.clients === m.clients);
    if (!d) continue;
    out.push({
      system: m.system,
      mode: m.mode,
      clients: m.clients,
      p99: round(m.result.latencyMs.p99 / d.result.latencyMs.p99, 2),
      p50: round(m.result.latencyMs.p50 / d.result.latencyMs.p50, 2),
      throughput: round(m.result.throughput / d.result.throughput, 2),
    });
  }
  return out;
}
