// Operations with real processes: backups under load and restore into a new cluster, quorum
// loss (clear errors, stale reads, `manager recover`, fencing of the old members), corrupt
// backups, /metrics and structured logs. Plus the cluster-id handshake of the transport.
import { afterEach, describe, expect, it } from 'vitest';
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { TestCluster, eventually, freePorts, runCli, sleep, type ProcInfo } from './helpers/cluster.js';
import { ExpositionError, parseExposition, sampleValue, type Family, type MetricType } from './helpers/prom.js';
import { FlotillaClient } from '../src/client/client.js';
import { backupState, decodeBackup } from '../src/manager/ops.js';
import { PeerTransport } from '../src/raft/transport.js';
import type { Message } from '../src/raft/types.js';

let cluster: TestCluster | null = null;
afterEach(async () => {
  if (cluster) killTaskProcesses(cluster.dir);
  await cluster?.stop();
  cluster = null;
});

/** Kills the process groups of pods that workers left running (pods outlive their worker on purpose). */
function killTaskProcesses(dir: string): void {
  for (const w of readdirSync(dir)) {
    const tasks = join(dir, w, 'process', 'tasks');
    if (!existsSync(tasks)) continue;
    for (const t of readdirSync(tasks)) {
      for (const f of readdirSync(join(tasks, t)).filter((x) => x.endsWith('.pid'))) {
        if (existsSync(join(tasks, t, f.replace(/\.pid$/, '.exit')))) continue;
        const pid = Number(readFileSync(join(tasks, t, f), 'utf8').trim());
        if (!Number.isInteger(pid) || pid <= 1) continue;
        try {
          process.kill(-pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
    }
  }
}

/** GET /metrics of one manager, parsed strictly (a malformed exposition fails the test). */
async function scrape(addr: string): Promise<Map<string, Family>> {
  const res = await fetch(`http://${addr}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return parseExposition(await res.text());
}

const ROLES = ['follower', 'preCandidate', 'candidate', 'leader'];
const TASK = (name: string) => ({ name, driver: 'process', containers: [{ command: ['/bin/sleep', '600'] }] });

/** Writes keys until stopped; records every acknowledged write. */
function writer(c: FlotillaClient, prefix: string) {
  const acked = new Map<string, string>();
  let stop = false;
  const done = (async () => {
    for (let i = 0; !stop; i++) {
      try {
        await c.put(`/v1/kv/${prefix}${i}`, `v${i}`, { timeoutMs: 10_000 });
        acked.set(`${prefix}${i}`, `v${i}`);
      } catch {
        /* counted as not acknowledged */
      }
    }
  })();
  return {
    acked,
    async stop() {
      stop = true;
      await done;
    },
  };
}

async function exited(p: ProcInfo, timeoutMs: number): Promise<number | null> {
  const proc = p.proc!;
  if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
  return Promise.race([new Promise<number | null>((r) => proc.once('exit', (code) => r(code))), sleep(timeoutMs).then(() => undefined as unknown as null)]);
}

function metric(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const ls = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => ls[k] === v)) return Number(m[3]);
  }
  return undefined;
}

describe('operations (real processes)', () => {
  it('saves a backup under write load and restores it into a new single-manager cluster', async () => {
    cluster = await TestCluster.managers(3);
    const c = cluster.client();
    for (let i = 0; i < 20; i++) await c.put(`/v1/kv/base${i}`, `b${i}`);
    const created = await c.post<{ tasks: { id: string }[] }>('/v1/tasks', [TASK('web'), TASK('db'), TASK('cache')]);
    const taskIds = created.tasks.map((t) => t.id).sort();
    expect(taskIds).toHaveLength(3);

    const w = writer(cluster.client(), 'load');
    await eventually(() => w.acked.size >= 30, 20_000, 'writes under load');
    const ackedBefore = new Map(w.acked);
    const file = join(cluster.dir, 'backup.flb');
    const saved = await runCli(['--managers', cluster.addrs().join(','), 'snapshot', 'save', file]);
    await eventually(() => w.acked.size >= ackedBefore.size + 20, 20_000, 'writes after the backup');
    await w.stop();
    expect(saved.status, saved.stderr).toBe(0);
    expect(saved.stdout).toMatch(/snapshot saved to .*: index \d+ \(term \d+\), .*sha256 [0-9a-f]{64}/);
    expect(statSync(file).mode & 0o777).toBe(0o600);

    // The backup holds everything acknowledged before it was taken.
    const b = decodeBackup(readFileSync(file));
    const st = backupState(b);
    // Reserved records (__flotilla/: manager storage ids, …) are not listed by the public kv API.
    const kv = new Map(st.kvList('').filter((e) => !e.key.startsWith('__flotilla/')).map((e) => [e.key, String(e.value)]));
    for (const [k, v] of ackedBefore) expect(kv.get(k), k).toBe(v);
    for (let i = 0; i < 20; i++) expect(kv.get(`base${i}`)).toBe(`b${i}`);
    expect(st.listTasks().map((t) => t.id).sort()).toEqual(taskIds);

    const inspect = await runCli(['snapshot', 'inspect', file]);
    expect(inspect.status, inspect.stderr).toBe(0);
    expect(inspect.stdout).toContain(`index ${b.index}`);

    // Restore into a new directory and port: a one-manager cluster with the same state.
    const [port] = await freePorts(1);
    const addr = `127.0.0.1:${port}`;
    const dir = join(cluster.dir, 'r1');
    const restored = await runCli(['snapshot', 'restore', file, '--data', dir, '--id', 'r1', '--listen', addr]);
    expect(restored.status, restored.stderr).toBe(0);
    expect(restored.stdout).toContain(`index ${b.index}`);
    // A second restore into the same (now non-empty) directory is refused.
    const again = await runCli(['snapshot', 'restore', file, '--data', dir, '--id', 'r1', '--listen', addr]);
    expect(again.status).not.toBe(0);
    expect(again.stderr).toMatch(/not empty/);

    cluster.startManager('r1', addr);
    const rc = new FlotillaClient([addr], { timeoutMs: 20_000 });
    await eventually(async () => (await rc.get<{ role: string }>('/v1/status', { pinned: true })).role === 'leader', 20_000, 'restored manager leading');
    const status = await rc.get<{ voters: string[]; clusterId: string; appliedIndex: number }>('/v1/status', { pinned: true });
    expect(status.voters).toEqual(['r1']);
    expect(status.clusterId).toMatch(/^e1-[0-9a-f]+$/);
    expect(status.appliedIndex).toBeGreaterThanOrEqual(b.index);
    const items = (await rc.get<{ items: { key: string; value: string }[] }>('/v1/kv?prefix=', { pinned: true })).items;
    expect(new Map(items.map((i) => [i.key, i.value]))).toEqual(kv);
    const tasks = (await rc.get<{ tasks: { id: string; state: string }[] }>('/v1/tasks', { pinned: true })).tasks;
    expect(tasks.map((t) => t.id).sort()).toEqual(taskIds);
    expect(tasks.every((t) => t.state === 'pending')).toBe(true);
    // The restored cluster takes writes.
    await rc.put('/v1/kv/after-restore', 'yes', { pinned: true });
    expect((await rc.get<{ value: string }>('/v1/kv/after-restore', { pinned: true })).value).toBe('yes');
  }, 120_000);

  it('quorum loss: clear errors and stale reads, then `manager recover`; the old managers cannot come back', async () => {
    cluster = await TestCluster.managers(3);
    const c = cluster.client();
    for (let i = 0; i < 25; i++) await c.put(`/v1/kv/q${i}`, `v${i}`);
    const created = await c.post<{ tasks: { id: string }[] }>('/v1/tasks', [TASK('a'), TASK('b')]);
    const taskIds = created.tasks.map((t) => t.id).sort();
    const survivor = 'm1';
    const s = cluster.managers.get(survivor)!;
    // The survivor must hold every write before the others die.
    const leader = await cluster.waitForLeader();
    const commit = (await cluster.status(leader))!.commitIndex as number;
    await eventually(async () => ((await cluster!.status(survivor))?.appliedIndex ?? 0) >= commit, 10_000, 'survivor caught up');
    await cluster.killAndWait('m2');
    await cluster.killAndWait('m3');

    const sc = new FlotillaClient([s.addr], { timeoutMs: 5000 });
    const cl = await eventually(async () => {
      const r = await sc.get<{ leader: string | null; message?: string }>('/v1/cluster', { pinned: true });
      return r.leader === null && /1 of 3 managers reachable/.test(r.message ?? '') ? r : null;
    }, 20_000, 'no-leader report');
    expect(cl.message).toMatch(/^no leader: 1 of 3 managers reachable; .*see docs\/operations\.md/);
    const st = await sc.get<{ leader: string | null; message?: string }>('/v1/status', { pinned: true });
    expect(st.leader).toBeNull();
    expect(st.message).toMatch(/no leader: 1 of 3 managers reachable/);

    // A write fails fast with 503 and the message.
    const t0 = Date.now();
    const res = await fetch(`http://${s.addr}/v1/kv/during-loss`, { method: 'PUT', body: 'x' });
    const took = Date.now() - t0;
    expect(res.status).toBe(503);
    const err = ((await res.json()) as { error: { message: string } }).error;
    expect(err.message).toMatch(/no leader: 1 of 3 managers reachable/);
    console.log(`write during quorum loss failed in ${took} ms`);
    // Stale reads still work.
    expect((await sc.get<{ value: string }>('/v1/kv/q7?stale=true', { pinned: true })).value).toBe('v7');
    const staleTasks = await sc.get<{ tasks: { id: string }[] }>('/v1/tasks?stale=true', { pinned: true });
    expect(staleTasks.tasks.map((t) => t.id).sort()).toEqual(taskIds);

    // Recovery refuses a running manager's directory.
    const dataDir = join(cluster.dir, survivor);
    let r = await runCli(['manager', 'recover', '--data', dataDir]);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/stop the manager/);

    await cluster.killAndWait(survivor);
    // Recovery time: from starting `manager recover` until the one-manager cluster accepts a
    // write, and until the new three-manager cluster is healthy.
    const tRecover = Date.now();
    r = await runCli(['manager', 'recover', '--data', dataDir]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/manager m1 at .* is now the only member of cluster e1-[0-9a-f]+/);
    cluster.restart(survivor);
    await eventually(async () => {
      const res = await fetch(`http://${s.addr}/v1/kv/after-recover`, { method: 'PUT', body: 'ok', signal: AbortSignal.timeout(2000) });
      return res.status === 200;
    }, 30_000, 'first write to the recovered manager');
    const firstWriteMs = Date.now() - tRecover;
    const rs = (await cluster.status(survivor))!;
    expect(rs.role).toBe('leader');
    expect(rs.voters).toEqual(['m1']);
    const clusterId = rs.clusterId as string;
    expect(clusterId).toMatch(/^e1-/);
    const mc = new FlotillaClient([s.addr], { timeoutMs: 15_000 });
    const items = (await mc.get<{ items: { key: string; value: string }[] }>('/v1/kv?prefix=q', { pinned: true })).items;
    expect(items).toHaveLength(25);
    expect((await mc.get<{ tasks: { id: string }[] }>('/v1/tasks', { pinned: true })).tasks.map((t) => t.id).sort()).toEqual(taskIds);

    // Two fresh managers join the new cluster, one change at a time.
    const [p4, p5] = await freePorts(2);
    for (const [id, port] of [['m4', p4], ['m5', p5]] as const) {
      cluster.startManager(id, `127.0.0.1:${port}`, ['--join']);
      r = await runCli(['--managers', s.addr, 'manager', 'add', `${id}=127.0.0.1:${port}`]);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toContain(`${id} added (voter)`);
    }
    type ClusterView = { leader: string | null; managers: { id: string; voter: boolean; role: string; healthy: boolean; lag: number | null }[] };
    const view = await eventually(async () => {
      const v = await mc.get<ClusterView>('/v1/cluster', { pinned: true });
      const ok = v.leader === 'm1' && v.managers.length === 3 && v.managers.every((m) => m.voter && m.healthy && m.lag === 0);
      return ok ? v : null;
    }, 30_000, 'three healthy managers');
    const healthyMs = Date.now() - tRecover;
    expect(view.managers.map((m) => m.id).sort()).toEqual(['m1', 'm4', 'm5']);
    expect(view.managers.map((m) => m.role).sort()).toEqual(['follower', 'follower', 'leader']);
    console.log(`RECOVERY: recover→first write ${firstWriteMs} ms; →3 managers healthy ${healthyMs} ms`);
    for (const id of ['m4', 'm5']) {
      await eventually(async () => (await cluster!.status(id))?.clusterId === clusterId, 10_000, `${id} adopted the cluster id`);
    }

    // Every committed write is on every member, read from each one's own state.
    const expected = new Map<string, string>([...Array.from({ length: 25 }, (_, i) => [`q${i}`, `v${i}`] as [string, string]), ['after-recover', 'ok']]);
    const commitNow = (await cluster.status(survivor))!.commitIndex as number;
    for (const id of ['m1', 'm4', 'm5']) {
      await eventually(async () => ((await cluster!.status(id))?.appliedIndex ?? 0) >= commitNow, 10_000, `${id} applied ${commitNow}`);
      const own = new FlotillaClient([cluster.managers.get(id)!.addr], { timeoutMs: 10_000 });
      const kv = (await own.get<{ items: { key: string; value: string }[] }>('/v1/kv?prefix=&stale=true', { pinned: true })).items;
      expect(new Map(kv.map((i) => [i.key, i.value])), id).toEqual(expected);
      const ts = (await own.get<{ tasks: { id: string }[] }>('/v1/tasks?stale=true', { pinned: true })).tasks;
      expect(ts.map((t) => t.id).sort(), id).toEqual(taskIds);
    }
    const before = (await cluster.status(survivor))!;

    // The old managers restarted with their old data are refused and stop.
    for (const old of ['m2', 'm3']) {
      cluster.restart(old);
      const code = await exited(cluster.managers.get(old)!, 20_000);
      expect(code, `${old} should stop`).toBe(1);
      const log = readFileSync(cluster.managers.get(old)!.logFile, 'utf8');
      expect(log).toMatch(/data in .* is obsolete/);
    }
    const logs = readFileSync(s.logFile, 'utf8');
    expect(logs).toMatch(/refused peer m2 from another cluster/);
    const after = (await cluster.status(survivor))!;
    expect(after.role).toBe('leader');
    expect(after.term).toBe(before.term);
    expect([...(after.voters as string[])].sort()).toEqual(['m1', 'm4', 'm5']);
    await mc.put('/v1/kv/after-fence', 'ok', { pinned: true });
    for (const id of ['m4', 'm5']) {
      const st = (await cluster.status(id))!;
      expect(st.leader, id).toBe('m1');
      expect(st.term, id).toBe(before.term);
      // A linearizable read through a new member sees the write made after the fencing.
      const own = new FlotillaClient([cluster.managers.get(id)!.addr], { timeoutMs: 10_000 });
      expect((await own.get<{ value: string }>('/v1/kv/after-fence', { pinned: true })).value, id).toBe('ok');
    }
  }, 120_000);

  it('a corrupt, truncated or foreign backup file is refused with a clear error and nothing is written', async () => {
    cluster = await TestCluster.managers(1);
    const c = cluster.client();
    await c.put('/v1/kv/a', '1');
    const file = join(cluster.dir, 'good.flb');
    const saved = await runCli(['--managers', cluster.addrs().join(','), 'snapshot', 'save', file]);
    expect(saved.status, saved.stderr).toBe(0);
    const good = readFileSync(file);
    const cases: [string, Buffer, RegExp][] = [
      ['truncated', good.subarray(0, Math.floor(good.length / 2)), /truncated/],
      ['tiny', good.subarray(0, 10), /truncated/],
      ['corrupt', Buffer.from(good.map((b, i) => (i === Math.floor(good.length / 2) ? b ^ 0xff : b))), /checksum does not match: the file is corrupt/],
      ['foreign', Buffer.from('{"hello":"world"}\n'), /not a flotilla backup/],
      ['trailing', Buffer.concat([good, Buffer.from('xx')]), /unexpected bytes after its end/],
    ];
    const [port] = await freePorts(1);
    await Promise.all(
      cases.map(async ([name, bytes, msg]) => {
        const f = join(cluster!.dir, `${name}.flb`);
        writeFileSync(f, bytes);
        const dir = join(cluster!.dir, `restore-${name}`);
        const [r, i] = await Promise.all([
          runCli(['snapshot', 'restore', f, '--data', dir, '--id', 'x1', '--listen', `127.0.0.1:${port}`]),
          runCli(['snapshot', 'inspect', f]),
        ]);
        expect(r.status, name).not.toBe(0);
        expect(r.stderr, name).toMatch(msg);
        expect(r.stderr, name).toContain(f);
        expect(existsSync(dir), name).toBe(false);
        expect(i.status, name).not.toBe(0);
        expect(i.stderr, name).toMatch(msg);
      }),
    );
  }, 120_000);

  it('/metrics exposes Raft, scheduler, dispatcher and API metrics; logs carry the term and request ids', async () => {
    cluster = await TestCluster.managers(3, ['--log-level', 'debug']);
    const leader = await cluster.waitForLeader();
    const c = cluster.client();
    for (let i = 0; i < 20; i++) await c.put(`/v1/kv/m${i}`, `v${i}`);
    await c.post('/v1/tasks', [TASK('p1'), TASK('p2')]);
    const addr = cluster.managers.get(leader)!.addr;
    const res = await fetch(`http://${addr}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/text\/plain/);
    const text = await res.text();
    expect(metric(text, 'flotilla_raft_term')).toBeGreaterThanOrEqual(1);
    expect(metric(text, 'flotilla_raft_role', { role: 'leader' })).toBe(1);
    expect(metric(text, 'flotilla_raft_role', { role: 'follower' })).toBe(0);
    expect(metric(text, 'flotilla_raft_has_leader')).toBe(1);
    expect(metric(text, 'flotilla_raft_commit_index')).toBeGreaterThanOrEqual(20);
    expect(metric(text, 'flotilla_raft_applied_index')).toBeGreaterThanOrEqual(20);
    expect(metric(text, 'flotilla_raft_last_index')).toBeGreaterThanOrEqual(20);
    expect(metric(text, 'flotilla_raft_fsync_seconds_count')).toBeGreaterThan(0);
    expect(metric(text, 'flotilla_raft_append_seconds_count')).toBeGreaterThan(0);
    expect(metric(text, 'flotilla_raft_leader_changes_total')).toBeGreaterThanOrEqual(1);
    expect(metric(text, 'flotilla_raft_proposals_total')).toBeGreaterThanOrEqual(20);
    expect(metric(text, 'flotilla_raft_snapshot_bytes')).toBeGreaterThanOrEqual(0);
    const peers = [...cluster.managers.keys()].filter((id) => id !== leader);
    for (const p of peers) expect(metric(text, 'flotilla_raft_peer_lag_entries', { peer: p })).toBeGreaterThanOrEqual(0);
    expect(metric(text, 'flotilla_scheduler_pending_tasks')).toBe(2);
    expect(metric(text, 'flotilla_scheduler_placements_total')).toBe(0);
    expect(metric(text, 'flotilla_tasks', { state: 'pending' })).toBe(2);
    expect(metric(text, 'flotilla_dispatcher_sessions')).toBe(0);
    expect(metric(text, 'flotilla_nodes', { status: 'ready' })).toBe(0);
    // Writes reach the leader directly or forwarded by a follower.
    expect(metric(text, 'flotilla_api_requests_total', { method: 'PUT', route: '/v1/kv/*', status: '200' })).toBeGreaterThan(0);
    expect(metric(text, 'flotilla_api_requests_total', { method: 'POST', route: '/v1/tasks', status: '201' })).toBe(1);
    expect(metric(text, 'flotilla_api_request_seconds_count', { method: 'PUT', route: '/v1/kv/*' })).toBeGreaterThan(0);
    expect(metric(text, 'flotilla_cluster_info', { epoch: '0', manager: leader })).toBe(1);
    expect(text).toMatch(/^process_cpu_user_seconds_total /m);

    const follower = await (await fetch(`http://${cluster.managers.get(peers[0]!)!.addr}/metrics`)).text();
    expect(metric(follower, 'flotilla_raft_role', { role: 'follower' })).toBe(1);
    expect(metric(follower, 'flotilla_raft_fsync_seconds_count')).toBeGreaterThan(0);

    // JSON log lines carry the node, the Raft term and, for requests, the request id.
    const lines = readFileSync(cluster.managers.get(leader)!.logFile, 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.some((l) => l.node === leader && typeof l.term === 'number' && (l.term as number) >= 1)).toBe(true);
    expect(lines.some((l) => l.msg === 'request' && typeof l.rid === 'string' && l.route === '/v1/kv/*')).toBe(true);
  }, 120_000);

  it('/metrics parses as Prometheus text on every manager with every listed family; term and leader changes move when the leader is killed', async () => {
    cluster = await TestCluster.managers(3, ['--worker-heartbeat', '250', '--node-grace', '2000']);
    const c = cluster.client();
    for (let i = 0; i < 10; i++) await c.put(`/v1/kv/k${i}`, `v${i}`);
    const created = await c.post<{ tasks: { id: string }[] }>('/v1/tasks', [TASK('s1'), TASK('s2')]);
    cluster.startWorker('w1');
    await eventually(async () => {
      const ts = (await c.get<{ tasks: { id: string; state: string }[] }>('/v1/tasks')).tasks;
      return ts.length === 2 && ts.every((t) => t.state === 'running');
    }, 30_000, 'tasks running on w1');
    const leader = await cluster.waitForLeader();
    const ids = [...cluster.managers.keys()];

    const expected: [string, MetricType][] = [
      ['flotilla_raft_term', 'gauge'],
      ['flotilla_raft_role', 'gauge'],
      ['flotilla_raft_has_leader', 'gauge'],
      ['flotilla_raft_commit_index', 'gauge'],
      ['flotilla_raft_applied_index', 'gauge'],
      ['flotilla_raft_last_index', 'gauge'],
      ['flotilla_raft_snapshot_index', 'gauge'],
      ['flotilla_raft_voters', 'gauge'],
      ['flotilla_raft_leader_changes_total', 'counter'],
      ['flotilla_raft_proposals_total', 'counter'],
      ['flotilla_raft_proposals_failed_total', 'counter'],
      ['flotilla_raft_append_seconds', 'histogram'],
      ['flotilla_raft_appended_entries_total', 'counter'],
      ['flotilla_raft_fsync_seconds', 'histogram'],
      ['flotilla_raft_storage_written_bytes_total', 'counter'],
      ['flotilla_raft_snapshot_bytes', 'gauge'],
      ['flotilla_raft_snapshots_total', 'counter'],
      ['flotilla_raft_peer_lag_entries', 'gauge'],
      ['flotilla_raft_peer_last_contact_seconds', 'gauge'],
      ['flotilla_raft_foreign_cluster_refusals_total', 'counter'],
      ['flotilla_cluster_info', 'gauge'],
      ['flotilla_scheduler_pending_tasks', 'gauge'],
      ['flotilla_scheduler_placements_total', 'counter'],
      ['flotilla_scheduler_latency_seconds', 'histogram'],
      ['flotilla_tasks', 'gauge'],
      ['flotilla_dispatcher_sessions', 'gauge'],
      ['flotilla_dispatcher_heartbeats_missed_total', 'counter'],
      ['flotilla_nodes', 'gauge'],
      ['flotilla_api_requests_total', 'counter'],
      ['flotilla_api_request_seconds', 'histogram'],
      ['process_cpu_user_seconds_total', 'counter'],
      ['nodejs_eventloop_lag_p99_seconds', 'gauge'],
    ];
    const before = new Map<string, Map<string, Family>>();
    for (const id of ids) {
      const fams = await scrape(cluster.managers.get(id)!.addr);
      before.set(id, fams);
      for (const [name, type] of expected) expect(fams.get(name)?.type, `${id}: ${name}`).toBe(type);
      const v = (name: string, labels: Record<string, string> = {}) => sampleValue(fams, name, labels);
      expect(v('flotilla_raft_term'), id).toBeGreaterThanOrEqual(1);
      expect(v('flotilla_raft_role', { role: id === leader ? 'leader' : 'follower' }), id).toBe(1);
      expect(ROLES.map((role) => v('flotilla_raft_role', { role })).reduce((a, b) => a! + b!, 0), id).toBe(1);
      expect(v('flotilla_raft_has_leader'), id).toBe(1);
      expect(v('flotilla_raft_voters'), id).toBe(3);
      expect(v('flotilla_raft_commit_index'), id).toBeGreaterThanOrEqual(12);
      expect(v('flotilla_raft_applied_index'), id).toBeGreaterThanOrEqual(12);
      expect(v('flotilla_raft_leader_changes_total'), id).toBeGreaterThanOrEqual(1);
      // Latency histograms: buckets up to +Inf (the parser checks they are cumulative and match _count).
      for (const h of ['flotilla_raft_append_seconds', 'flotilla_raft_fsync_seconds']) {
        expect(v(`${h}_count`), `${id}: ${h}`).toBeGreaterThan(0);
        expect(v(`${h}_bucket`, { le: '+Inf' }), `${id}: ${h}`).toBe(v(`${h}_count`));
        expect(v(`${h}_bucket`, { le: '0.01' }), `${id}: ${h}`).toBeDefined();
        expect(v(`${h}_sum`), `${id}: ${h}`).toBeGreaterThan(0);
      }
      expect(v('flotilla_raft_appended_entries_total'), id).toBeGreaterThanOrEqual(12);
      expect(v('flotilla_scheduler_pending_tasks'), id).toBe(0);
      expect(v('flotilla_tasks', { state: 'running' }), id).toBe(2);
      expect(v('flotilla_nodes', { status: 'ready' }), id).toBe(1);
      expect(v('flotilla_cluster_info', { manager: id, epoch: '0' }), id).toBe(1);
    }
    const lf = before.get(leader)!;
    const lv = (name: string, labels: Record<string, string> = {}) => sampleValue(lf, name, labels);
    for (const p of ids.filter((x) => x !== leader)) {
      expect(lv('flotilla_raft_peer_lag_entries', { peer: p }), p).toBeGreaterThanOrEqual(0);
      expect(lv('flotilla_raft_peer_last_contact_seconds', { peer: p }), p).toBeGreaterThanOrEqual(0);
    }
    expect(lv('flotilla_raft_proposals_total')).toBeGreaterThanOrEqual(12);
    expect(lv('flotilla_scheduler_placements_total')).toBe(2);
    expect(lv('flotilla_scheduler_latency_seconds_count')).toBe(2);
    expect(lv('flotilla_dispatcher_sessions')).toBe(1);
    expect(lv('flotilla_api_requests_total', { method: 'POST', route: '/v1/tasks', status: '201' })).toBe(1);
    expect(lv('flotilla_api_request_seconds_count', { method: 'POST', route: '/v1/tasks' })).toBe(1);
    // Followers report no peer lag (only the leader knows it).
    for (const f of ids.filter((x) => x !== leader)) expect(before.get(f)!.get('flotilla_raft_peer_lag_entries')!.samples, f).toHaveLength(0);

    // A worker whose heartbeats stop is declared down, and counted.
    const missed0 = lv('flotilla_dispatcher_heartbeats_missed_total')!;
    for (const t of created.tasks) await c.delete(`/v1/tasks/${t.id}`);
    await eventually(async () => {
      const ts = (await c.get<{ tasks: { state: string }[] }>('/v1/tasks?all=true')).tasks;
      return ts.every((t) => t.state === 'stopped');
    }, 20_000, 'tasks stopped');
    await cluster.killAndWait('w1');
    const down = await eventually(async () => {
      const fams = await scrape(cluster!.managers.get(leader)!.addr);
      return sampleValue(fams, 'flotilla_nodes', { status: 'down' }) === 1 ? fams : null;
    }, 20_000, 'w1 declared down');
    expect(sampleValue(down, 'flotilla_dispatcher_heartbeats_missed_total')).toBeGreaterThan(missed0);
    expect(sampleValue(down, 'flotilla_dispatcher_sessions')).toBe(0);

    // SIGKILL the leader: on the survivors the term and the leader-change counter go up.
    const pre = new Map<string, Map<string, Family>>();
    for (const id of ids.filter((x) => x !== leader)) pre.set(id, await scrape(cluster.managers.get(id)!.addr));
    await cluster.killAndWait(leader);
    const next = await cluster.waitForLeader(20_000, [leader]);
    expect(next).not.toBe(leader);
    await c.put('/v1/kv/after-failover', 'ok');
    for (const [id, b] of pre) {
      const a = await scrape(cluster.managers.get(id)!.addr);
      const va = (name: string, labels: Record<string, string> = {}) => sampleValue(a, name, labels);
      const vb = (name: string) => sampleValue(b, name)!;
      expect(va('flotilla_raft_term'), id).toBeGreaterThan(vb('flotilla_raft_term'));
      expect(va('flotilla_raft_leader_changes_total'), id).toBeGreaterThan(vb('flotilla_raft_leader_changes_total'));
      expect(va('flotilla_raft_commit_index'), id).toBeGreaterThan(vb('flotilla_raft_commit_index'));
      expect(va('flotilla_raft_has_leader'), id).toBe(1);
      expect(va('flotilla_raft_role', { role: id === next ? 'leader' : 'follower' }), id).toBe(1);
      if (id === next) {
        expect(va('flotilla_raft_proposals_total'), id).toBeGreaterThan(vb('flotilla_raft_proposals_total'));
        const other = [...pre.keys()].find((x) => x !== id)!;
        expect(va('flotilla_raft_peer_lag_entries', { peer: other }), id).toBeGreaterThanOrEqual(0);
      }
    }
  }, 120_000);
});

describe('Prometheus text parser (test helper)', () => {
  const ok = [
    '# HELP a_total A counter with a \\\\ and a \\n in its help.',
    '# TYPE a_total counter',
    'a_total 3',
    '# TYPE g gauge',
    'g{x="q\\"uote\\\\ \\n",y="2",} -1.5e3 1700000000000',
    'g{x="other"} NaN',
    '# TYPE h histogram',
    'h_bucket{le="0.1"} 1',
    'h_bucket{le="+Inf"} 2',
    'h_sum 0.3',
    'h_count 2',
    '# a plain comment',
    '',
  ].join('\n');

  it('accepts a valid exposition and reads its values', () => {
    const f = parseExposition(ok);
    expect(f.get('a_total')).toMatchObject({ type: 'counter', help: 'A counter with a \\ and a \n in its help.' });
    expect(sampleValue(f, 'g', { x: 'q"uote\\ \n' })).toBe(-1500);
    expect(sampleValue(f, 'g', { x: 'other' })).toBeNaN();
    expect(sampleValue(f, 'h_bucket', { le: '+Inf' })).toBe(2);
  });

  it.each([
    ['a sample without # TYPE', 'x 1\n'],
    ['a bad metric name', '# TYPE 1x gauge\n1x 1\n'],
    ['a non-numeric value', '# TYPE x gauge\nx one\n'],
    ['a missing value', '# TYPE x gauge\nx\n'],
    ['an unquoted label value', '# TYPE x gauge\nx{a=b} 1\n'],
    ['a bad label escape', '# TYPE x gauge\nx{a="\\t"} 1\n'],
    ['a reserved label name', '# TYPE x gauge\nx{__a="1"} 1\n'],
    ['a repeated label', '# TYPE x gauge\nx{a="1",a="2"} 1\n'],
    ['an unterminated label set', '# TYPE x gauge\nx{a="1" 1\n'],
    ['an unknown type', '# TYPE x thing\nx 1\n'],
    ['a second # TYPE', '# TYPE x gauge\n# TYPE x gauge\nx 1\n'],
    ['a negative counter', '# TYPE x_total counter\nx_total -1\n'],
    ['a duplicate series', '# TYPE x gauge\nx{a="1"} 1\nx{a="1"} 2\n'],
    ['a split family', '# TYPE x gauge\n# TYPE y gauge\nx 1\ny 1\nx{a="1"} 1\n'],
    ['a histogram without +Inf', '# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n'],
    ['non-cumulative buckets', '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n'],
    ['+Inf bucket != _count', '# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 1\n'],
    ['a histogram without _sum', '# TYPE h histogram\nh_bucket{le="+Inf"} 1\nh_count 1\n'],
    ['a bad timestamp', '# TYPE x gauge\nx 1 soon\n'],
    ['no final newline', '# TYPE x gauge\nx 1'],
  ])('rejects %s', (_what, text) => {
    expect(() => parseExposition(text)).toThrow(ExpositionError);
  });
});

describe('cluster id in the transport handshake', () => {
  const SECRET = 'correct horse battery staple';
  const stops: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const s of stops.splice(0)) await s();
  });

  async function node(id: string, book: Map<string, string>, cluster: { id: string | null }, adopt = false) {
    const server = http.createServer();
    const got: Message[] = [];
    const foreign: [string, string | null][] = [];
    const t = new PeerTransport({
      id,
      secret: SECRET,
      server,
      resolveAddr: (p) => book.get(p),
      onMessage: (m) => got.push(m),
      clusterId: () => cluster.id,
      adoptClusterId: adopt
        ? (c) => {
            cluster.id = c;
            return true;
          }
        : undefined,
      onForeignCluster: (p, c) => foreign.push([p, c]),
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    book.set(id, `127.0.0.1:${(server.address() as AddressInfo).port}`);
    stops.push(async () => {
      await t.close();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    });
    return { t, got, foreign, cluster };
  }
  const hb = (from: string, to: string): Message => ({ type: 'heartbeat', from, to, term: 1, index: 0, logTerm: 0, commit: 0 });

  it('same cluster talks; another cluster is refused on both ends; a fresh node adopts the id of its first peer', async () => {
    const book = new Map<string, string>();
    const a = await node('a', book, { id: 'e1-00aa11bb22cc33dd' });
    const b = await node('b', book, { id: 'e1-00aa11bb22cc33dd' });
    const old = await node('old', book, { id: null });
    const fresh = await node('fresh', book, { id: null }, true);
    a.t.send([hb('a', 'b')]);
    await eventually(() => b.got.length === 1, 5000, 'same-cluster delivery');
    // An old member (no id) dials a: both sides learn, nothing is delivered.
    old.t.send([hb('old', 'a')]);
    await eventually(() => old.foreign.length > 0 && a.foreign.length > 0, 5000, 'foreign reports');
    expect(old.foreign[0]).toEqual(['a', 'e1-00aa11bb22cc33dd']);
    expect(a.foreign[0]).toEqual(['old', null]);
    // a dials the old member: refused as well.
    a.t.send([hb('a', 'old')]);
    await eventually(() => a.foreign.length > 1, 5000, 'refused outbound');
    await sleep(200);
    expect(a.got).toHaveLength(0);
    expect(old.got).toHaveLength(0);
    // A fresh node adopts the id of the first authenticated peer and then talks normally.
    a.t.send([hb('a', 'fresh')]);
    await eventually(() => fresh.got.length === 1, 5000, 'delivery to the fresh node');
    expect(fresh.cluster.id).toBe('e1-00aa11bb22cc33dd');
    fresh.t.send([hb('fresh', 'a')]);
    await eventually(() => a.got.length === 1, 5000, 'delivery from the adopted node');
  });
});
