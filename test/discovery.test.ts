// Service discovery on real processes (process driver): one manager, two workers on different
// loopback addresses (127.0.0.2, 127.0.0.3), each running its DNS server on a free port that
// its tasks find in $FLOTILLA_DNS. A task of another service (test/fixtures/dns-probe.mjs)
// resolves `web` and `tasks.web.flotilla` every 100 ms and GETs the answer through the mesh.
// Names follow readiness: a replica whose health check fails drops out of tasks.web and
// comes back when it passes again; with no manager left the workers keep answering.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TestCluster, eventually, freePorts, killTaskProcesses, runCli, sleep, ROOT } from './helpers/cluster.js';
import type { FlotillaClient } from '../src/client/client.js';
import type { ServiceInspect, TaskView } from '../src/protocol/api.js';

interface ProbeLine {
  at: number;
  self: string;
  dns: string;
  web: string[] | string;
  tasks: string[] | string;
  http: string | null;
}

let cluster: TestCluster;
let client: FlotillaClient;
let pidDir: string;
let sickDir: string;
let outFile: string;
let published: number;
let target: number;

const HOSTS = { w1: '127.0.0.2', w2: '127.0.0.3' } as const;
const HEALTH_INTERVAL_MS = 500;

const lines = (): ProbeLine[] =>
  existsSync(outFile)
    ? readFileSync(outFile, 'utf8')
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => JSON.parse(l) as ProbeLine)
    : [];
const sorted = (v: string[] | string): string => (Array.isArray(v) ? [...v].sort().join(',') : v);

async function webTasks(): Promise<TaskView[]> {
  const s = await client.get<ServiceInspect>('/v1/services/web');
  return s.tasks.filter((t) => t.desired === 'running' && t.state === 'running');
}

describe('service discovery (process driver, two loopback addresses)', () => {
  beforeAll(async () => {
    [published, target] = await freePorts(2);
    cluster = await TestCluster.managers(1, ['--node-grace', '1500', '--worker-heartbeat', '300', '--failover-grace', '8000']);
    pidDir = join(cluster.dir, 'pids');
    sickDir = join(cluster.dir, 'sick');
    outFile = join(cluster.dir, 'probe.jsonl');
    mkdirSync(pidDir);
    mkdirSync(sickDir);
    client = cluster.client(undefined, 20_000);
    for (const [w, host] of Object.entries(HOSTS)) cluster.startWorker(w, ['--cpu', '2000', '--memory', '2g', '--listen', `${host}:0`]);
    await eventually(async () => (await client.get<{ nodes: { status: string }[] }>('/v1/nodes')).nodes.filter((n) => n.status === 'ready').length === 2, 20_000, '2 workers ready');
  }, 60_000);

  afterAll(async () => {
    killTaskProcesses(pidDir);
    await cluster.stop();
    rmSync(sickDir, { recursive: true, force: true });
  });

  it('a task of another service resolves web and tasks.web through $FLOTILLA_DNS and reaches web by name', async () => {
    const cli = (args: string[]) => runCli(['--managers', cluster.addrs().join(','), ...args], { env: cluster.cliEnv() });
    let r = await cli([
      'service', 'create', 'web', '-d', '--replicas', '2', '--publish', `${published}:${target}`, '-e', `PORT=${target}`, '-e', `PID_DIR=${pidDir}`, '-e', `SICK_DIR=${sickDir}`,
      '--health-cmd', 'test ! -e "$SICK_DIR/$FLOTILLA_TASK_ID"', '--health-interval', `${HEALTH_INTERVAL_MS}ms`, '--health-timeout', '2s', '--health-retries', '1',
      '--restart', 'always', '--', process.execPath, join(ROOT, 'test', 'fixtures', 'mesh-server.mjs'),
    ]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    r = await cli(['service', 'create', 'probe', '-d', '--replicas', '1', '-e', `PORT=${published}`, '-e', `OUT=${outFile}`, '-e', 'NAME=web', '-e', `PID_DIR=${pidDir}`, '--', process.execPath, join(ROOT, 'test', 'fixtures', 'dns-probe.mjs')]);
    expect(r.status, r.stderr).toBe(0);
    await eventually(async () => (await webTasks()).length === 2, 30_000, '2 web replicas running');
    const web = await webTasks();
    expect(new Set(web.map((t) => t.node)).size).toBe(2);

    const both = [HOSTS.w1, HOSTS.w2].sort().join(',');
    const seen = new Set<string>();
    const good = await eventually(() => {
      const ls = lines();
      for (const l of ls) if (l.http !== null) seen.add(l.http);
      const last = ls.at(-1);
      return last !== undefined && sorted(last.tasks) === both && seen.size === 2 ? last : null;
    }, 30_000, 'the probe seeing both replicas by name').catch((e: Error) => {
      throw new Error(`${e.message}: ${JSON.stringify(lines().slice(-3))}`);
    });
    // `web` is the asking task's own node (the mesh serves it there); FLOTILLA_DNS is on that node too.
    expect(Object.values(HOSTS)).toContain(good.self);
    expect(good.web).toEqual([good.self]);
    expect(good.dns.startsWith(`${good.self}:`)).toBe(true);
    expect([...seen].sort()).toEqual(web.map((t) => t.id).sort());
  }, 90_000);

  it('a replica that fails its check drops out of tasks.web, and comes back when it passes', async () => {
    const web = await webTasks();
    const sick = web.find((t) => t.node === 'w2')!;
    const start = Date.now();
    writeFileSync(join(sickDir, sick.id), '');
    const dropped = await eventually(() => lines().find((l) => l.at > start && sorted(l.tasks) === HOSTS.w1) ?? null, 30_000, 'w2 out of tasks.web').catch((e: Error) => {
      throw new Error(`${e.message}: ${JSON.stringify(lines().slice(-3))}`);
    });
    console.log(`discovery: a replica that failed its check left tasks.web after ${dropped.at - start} ms (health interval ${HEALTH_INTERVAL_MS} ms, 1 retry)`);
    // The name keeps answering meanwhile, and requests by name keep reaching the healthy replica.
    const after = lines().filter((l) => l.at > dropped.at);
    expect(after.every((l) => Array.isArray(l.web) && l.web.length === 1)).toBe(true);
    rmSync(join(sickDir, sick.id));
    const back = await eventually(() => lines().find((l) => l.at > dropped.at && sorted(l.tasks) === [HOSTS.w1, HOSTS.w2].join(',')) ?? null, 60_000, 'w2 back in tasks.web');
    expect(back.http).not.toBeNull();
  }, 120_000);

  it('a scaled-down replica leaves tasks.web; with no manager left the workers keep answering from their last table', async () => {
    const cli = (args: string[]) => runCli(['--managers', cluster.addrs().join(','), ...args], { env: cluster.cliEnv() });
    const start = Date.now();
    const r = await cli(['service', 'scale', 'web=1']);
    expect(r.status, r.stderr).toBe(0);
    const one = await eventually(() => lines().find((l) => l.at > start && Array.isArray(l.tasks) && l.tasks.length === 1) ?? null, 30_000, 'one replica left in tasks.web');
    const [m] = [...cluster.managers.keys()];
    await cluster.killAndWait(m!);
    const killed = Date.now();
    await sleep(2000);
    const since = lines().filter((l) => l.at > killed);
    expect(since.length).toBeGreaterThan(5);
    for (const l of since) {
      expect(sorted(l.tasks)).toBe(sorted(one.tasks));
      expect(l.web).toEqual([l.self]);
      expect(l.http).not.toBeNull();
    }
  }, 60_000);
});
