// Operations with real processes: backups under load and restore into a new cluster, quorum
// loss (clear errors, stale reads, `manager recover`, fencing of the old members), corrupt
// backups, /metrics and structured logs. Plus the cluster-id handshake of the transport.
import { afterEach, describe, expect, it } from 'vitest';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { TestCluster, eventually, freePorts, runCli, sleep, type ProcInfo } from './helpers/cluster.js';
import { FlotillaClient } from '../src/client/client.js';
import { backupState, decodeBackup } from '../src/manager/ops.js';
import { PeerTransport } from '../src/raft/transport.js';
import type { Message } from '../src/raft/types.js';

let cluster: TestCluster | null = null;
afterEach(async () => {
  await cluster?.stop();
  cluster = null;
});

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
    const kv = new Map(st.kvList('').map((e) => [e.key, String(e.value)]));
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
    r = await runCli(['manager', 'recover', '--data', dataDir]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/manager m1 at .* is now the only member of cluster e1-[0-9a-f]+/);
    cluster.restart(survivor);
    await eventually(async () => (await cluster!.status(survivor))?.role === 'leader', 20_000, 'recovered manager leading');
    const rs = (await cluster.status(survivor))!;
    expect(rs.voters).toEqual(['m1']);
    const clusterId = rs.clusterId as string;
    expect(clusterId).toMatch(/^e1-/);
    const mc = new FlotillaClient([s.addr], { timeoutMs: 15_000 });
    const items = (await mc.get<{ items: { key: string; value: string }[] }>('/v1/kv?prefix=q', { pinned: true })).items;
    expect(items).toHaveLength(25);
    expect((await mc.get<{ tasks: { id: string }[] }>('/v1/tasks', { pinned: true })).tasks.map((t) => t.id).sort()).toEqual(taskIds);
    await mc.put('/v1/kv/after-recover', 'ok', { pinned: true });

    // A fresh manager joins the new cluster.
    const [p4] = await freePorts(1);
    cluster.startManager('m4', `127.0.0.1:${p4}`, ['--join']);
    r = await runCli(['--managers', s.addr, 'manager', 'add', `m4=127.0.0.1:${p4}`]);
    expect(r.stdout + r.stderr).toContain('m4 added (voter)');
    const view = await mc.get<{ leader: string; managers: { id: string; voter: boolean; role: string }[] }>('/v1/cluster', { pinned: true });
    expect(view.leader).toBe('m1');
    expect(view.managers.filter((m) => m.voter).map((m) => m.id).sort()).toEqual(['m1', 'm4']);
    await eventually(async () => (await cluster!.status('m4'))?.clusterId === clusterId, 10_000, 'm4 adopted the cluster id');
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
    expect(after.voters).toEqual(['m1', 'm4']);
    const m4 = (await cluster.status('m4'))!;
    expect(m4.leader).toBe('m1');
    expect(m4.term).toBe(before.term);
    await mc.put('/v1/kv/after-fence', 'ok', { pinned: true });
    const m4c = new FlotillaClient([cluster.managers.get('m4')!.addr], { timeoutMs: 10_000 });
    expect((await m4c.get<{ value: string }>('/v1/kv/q3', { pinned: true })).value).toBe('v3');
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
