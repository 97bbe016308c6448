// Durable manager replicas as real processes: SIGKILL, SIGSTOP, restarts, snapshots,
// membership changes and bad input.
import { afterEach, describe, expect, it } from 'vitest';
import { closeSync, openSync, readdirSync, readFileSync, writeFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { TestCluster, eventually, freePorts, sleep, CLI, runCli } from './helpers/cluster.js';
import { FlotillaClient } from '../src/client/client.js';

let cluster: TestCluster | null = null;
afterEach(async () => {
  await cluster?.stop();
  cluster = null;
});

/** Writes keys until stopped; records every acknowledged write. */
function writer(c: FlotillaClient, prefix: string) {
  const acked = new Map<string, string>();
  let stop = false;
  let errors = 0;
  const done = (async () => {
    for (let i = 0; !stop; i++) {
      const key = `${prefix}${i}`;
      try {
        await c.put(`/v1/kv/${key}`, `v${i}`, { timeoutMs: 10_000 });
        acked.set(key, `v${i}`);
      } catch {
        errors++;
      }
    }
  })();
  return {
    acked,
    get errors() {
      return errors;
    },
    async stop() {
      stop = true;
      await done;
    },
  };
}

async function expectAllReadable(cl: TestCluster, ids: string[], acked: Map<string, string>) {
  for (const id of ids) {
    const c = new FlotillaClient([cl.managers.get(id)!.addr], { timeoutMs: 10_000 });
    // Linearizable list through this manager (ReadIndex via the leader), then a local stale list.
    // GET /v1/kv answers in pages: follow them all.
    const lin = await c.getAll<{ key: string; value: string }>('/v1/kv?prefix=', 'items', { pinned: true });
    const got = new Map(lin.map((i) => [i.key, i.value]));
    for (const [k, v] of acked) expect(got.get(k), `${k} via ${id}`).toBe(v);
  }
}

describe('managers (real processes)', () => {
  it('SIGKILL of the leader during writes: a new leader, no acknowledged write lost, the old leader catches up', async () => {
    cluster = await TestCluster.managers(3);
    const leader = await cluster.waitForLeader();
    const w = writer(cluster.client(), 'k');
    await eventually(() => w.acked.size >= 50, 20_000, '50 writes');
    await cluster.killAndWait(leader);
    const killedAt = Date.now();
    const before = w.acked.size;
    const newLeader = await cluster.waitForLeader(20_000, [leader]);
    expect(newLeader).not.toBe(leader);
    await eventually(() => w.acked.size >= before + 50, 20_000, 'writes after failover');
    const firstOkAfter = Date.now() - killedAt;
    await w.stop();
    const live = [...cluster.managers.keys()].filter((id) => id !== leader);
    await expectAllReadable(cluster, live, w.acked);
    cluster.restart(leader);
    await eventually(async () => {
      const [a, b] = await Promise.all([cluster!.status(leader), cluster!.status(newLeader)]);
      return a && b && a.appliedIndex >= b.commitIndex && a.leader === newLeader;
    }, 20_000, 'restarted manager catching up');
    // The restarted manager serves every acknowledged write from its own state.
    const stale = await new FlotillaClient([cluster.managers.get(leader)!.addr]).getAll<{ key: string; value: string }>('/v1/kv?prefix=&stale=true', 'items', { pinned: true });
    const got = new Map(stale.map((i) => [i.key, i.value]));
    for (const [k, v] of w.acked) expect(got.get(k)).toBe(v);
    console.log(`failover: ${w.acked.size} acked writes, writes flowing again within ${firstOkAfter} ms of SIGKILL`);
  });

  it('a follower kept down while the log is compacted catches up through a chunked snapshot', async () => {
    cluster = await TestCluster.managers(3, ['--snapshot-every', '40']);
    const leader = await cluster.waitForLeader();
    const follower = [...cluster.managers.keys()].find((id) => id !== leader)!;
    await cluster.killAndWait(follower);
    const c = cluster.client();
    const big = 'x'.repeat(20_000);
    for (let i = 0; i < 150; i++) await c.put(`/v1/kv/big${i}`, `${i}:${big}`);
    const ls = await cluster.status(leader);
    expect(ls!.snapshotIndex).toBeGreaterThan(40);
    cluster.restart(follower);
    await eventually(async () => {
      const s = await cluster!.status(follower);
      return s && s.appliedIndex >= ls!.commitIndex && s.snapshotIndex > 0;
    }, 30_000, 'follower restored from a snapshot');
    const got = await new FlotillaClient([cluster.managers.get(follower)!.addr]).get<{ value: string }>('/v1/kv/big149?stale=true', { pinned: true });
    expect(got.value).toBe(`149:${big}`);
    const log = readFileSync(cluster.managers.get(follower)!.logFile, 'utf8');
    expect(log).toMatch(/snapshot/);
  });

  it('all managers killed at once and restarted: all state is back', async () => {
    cluster = await TestCluster.managers(3);
    const c = cluster.client();
    const acked = new Map<string, string>();
    for (let i = 0; i < 40; i++) {
      await c.put(`/v1/kv/all${i}`, `v${i}`);
      acked.set(`all${i}`, `v${i}`);
    }
    await Promise.all([...cluster.managers.keys()].map((id) => cluster!.killAndWait(id)));
    for (const id of cluster.managers.keys()) cluster.restart(id);
    await cluster.waitForLeader();
    await expectAllReadable(cluster, [...cluster.managers.keys()], acked);
  });

  it('SIGSTOP the leader past the election timeout: a new leader serves; after SIGCONT the old one steps down without another election', async () => {
    cluster = await TestCluster.managers(3);
    const leader = await cluster.waitForLeader();
    cluster.kill(leader, 'SIGSTOP');
    const newLeader = await cluster.waitForLeader(20_000, [leader]);
    const c = cluster.client([...cluster.managers.keys()].filter((id) => id !== leader));
    await c.put('/v1/kv/during-pause', 'yes');
    const termDuring = (await cluster.status(newLeader))!.term;
    cluster.kill(leader, 'SIGCONT');
    await eventually(async () => {
      const s = await cluster!.status(leader);
      return s && s.role === 'follower' && s.leader === newLeader;
    }, 20_000, 'old leader following');
    // PreVote + CheckQuorum: the resumed node did not force a new election.
    await sleep(1000);
    const after = await Promise.all([...cluster.managers.keys()].map((id) => cluster!.status(id)));
    for (const s of after) {
      expect(s!.term).toBe(termDuring);
      expect(s!.leader).toBe(newLeader);
    }
    const v = await new FlotillaClient([cluster.managers.get(leader)!.addr]).get<{ value: string }>('/v1/kv/during-pause', { pinned: true });
    expect(v.value).toBe('yes');
  });

  it('CONTACT is measured by the leader: every manager answers the same small ages, never negative, never "never heard"', async () => {
    cluster = await TestCluster.managers(3);
    const leader = await cluster.waitForLeader();
    // Long enough after the election that a follower's last word from another follower (its vote
    // request) is old: a follower's own view would show it seconds old, or never heard.
    await sleep(3500);
    for (const id of ['m1', 'm2', 'm3']) {
      const c = cluster.client([id]);
      const st = await c.get<{ leader: string; managers: { id: string; lastContactMs: number | null }[] }>('/v1/cluster');
      expect(st.leader, `asked ${id}`).toBe(leader);
      for (const m of st.managers) {
        expect(m.lastContactMs, `asked ${id}: contact of ${m.id}`).not.toBeNull();
        expect(m.lastContactMs!, `asked ${id}: contact of ${m.id}`).toBeGreaterThanOrEqual(0);
        expect(m.lastContactMs!, `asked ${id}: contact of ${m.id}`).toBeLessThan(2500);
        if (m.id === leader) expect(m.lastContactMs).toBe(0);
      }
    }
  });

  it('adds a 4th and 5th manager under load, removes one, transfers leadership', async () => {
    cluster = await TestCluster.managers(3);
    const w = writer(cluster.client(), 'mem');
    const [p4, p5] = await freePorts(2);
    cluster.startManager('m4', `127.0.0.1:${p4}`, ['--join']);
    cluster.startManager('m5', `127.0.0.1:${p5}`, ['--join']);
    // Async: a blocking spawnSync would also freeze the writer running in this process.
    const cli = (args: string[]) => runCli(['--managers', cluster!.addrs(['m1', 'm2', 'm3']).join(','), ...args]);
    let r = await cli(['manager', 'add', `m4=127.0.0.1:${p4}`]);
    expect(r.stderr + r.stdout).toContain('m4 added (voter)');
    r = await cli(['manager', 'add', `m5=127.0.0.1:${p5}`]);
    expect(r.stderr + r.stdout).toContain('m5 added (voter)');
    const st = await cluster.client().get<{ managers: { id: string; voter: boolean }[] }>('/v1/cluster');
    expect(st.managers.filter((m) => m.voter).map((m) => m.id).sort()).toEqual(['m1', 'm2', 'm3', 'm4', 'm5']);
    r = await cli(['manager', 'transfer-leader', 'm4']);
    expect(r.stdout).toContain('leader is now m4');
    expect(await cluster.waitForLeader()).toBe('m4');
    r = await cli(['manager', 'remove', 'm2']);
    expect(r.stdout).toContain('m2 removed');
    await w.stop();
    expect(w.acked.size).toBeGreaterThan(10);
    cluster.managers.get('m2')!.proc!.kill('SIGKILL');
    cluster.managers.delete('m2');
    await expectAllReadable(cluster, ['m1', 'm3', 'm4', 'm5'], w.acked);
    // A removed id is never reused.
    r = await cli(['manager', 'add', `m2=127.0.0.1:${p4}`]);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/removed before and cannot be reused/);
  });

  it('bad input: invalid bodies and flags, a wrong secret, a corrupt data directory', async () => {
    cluster = await TestCluster.managers(3);
    const leader = await cluster.waitForLeader();
    const c = cluster.client();
    await c.put('/v1/kv/keep', 'original');
    const addr = cluster.managers.get(leader)!.addr;
    // Bad CAS value → 400, nothing written.
    const bad = await fetch(`http://${addr}/v1/kv/keep?cas=abc`, { method: 'PUT', body: 'changed' });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { message: string } }).error.message).toMatch(/'cas' must be a non-negative integer/);
    // Failed CAS → 409, nothing written.
    const conflict = await fetch(`http://${addr}/v1/kv/keep?cas=1`, { method: 'PUT', body: 'changed' });
    expect(conflict.status).toBe(409);
    // Oversized body → 413.
    const huge = await fetch(`http://${addr}/v1/kv/huge`, { method: 'PUT', body: 'x'.repeat(2 * 1024 * 1024) });
    expect(huge.status).toBe(413);
    // Bad JSON on a JSON endpoint → 400.
    const badJson = await fetch(`http://${addr}/v1/managers`, { method: 'POST', body: '{nope', headers: { 'content-type': 'application/json' } });
    expect(badJson.status).toBe(400);
    expect((await c.get<{ value: string }>('/v1/kv/keep')).value).toBe('original');
    await expect(c.get('/v1/kv/huge')).rejects.toThrow(/not found/);

    // A manager with the wrong secret cannot take part: its messages are refused at the upgrade.
    const [pw] = await freePorts(1);
    const wrongSecret = join(cluster.dir, 'wrong-secret');
    writeFileSync(wrongSecret, 'another-cluster-secret-0123456789');
    const members = [...cluster.managers.values()].map((m) => `${m.id}=${m.addr}`).join(',') + `,mx=127.0.0.1:${pw}`;
    const { spawn } = await import('node:child_process');
    const mxLog = join(cluster.dir, 'mx.log');
    const mxOut = openSync(mxLog, 'a');
    const p = spawn(process.execPath, [CLI, 'manager', '--id', 'mx', '--listen', `127.0.0.1:${pw}`, '--data', join(cluster.dir, 'mx'), '--bootstrap', members, '--secret-file', wrongSecret, '--insecure'], { stdio: ['ignore', mxOut, mxOut] });
    closeSync(mxOut);
    let mxExit: string | null = null;
    p.on('exit', (code, sig) => (mxExit = `exited (${code ?? sig}): ${readFileSync(mxLog, 'utf8').slice(-2000)}`));
    try {
      // Wait for its attempts to be refused (process start-up alone can take ~2 s on a busy host).
      await eventually(() => [...cluster!.managers.values()].some((m) => /peer auth failed/.test(readFileSync(m.logFile, 'utf8'))), 20_000, 'refused peer');
      // Its HTTP listener may come up after its first peer connections were refused: ask until it answers.
      const s = await eventually(() => {
        if (mxExit !== null) throw new Error(`the wrong-secret manager ${mxExit}`);
        return new FlotillaClient([`127.0.0.1:${pw}`]).get<{ leader: string | null }>('/v1/status', { pinned: true, timeoutMs: 2000 });
      }, 20_000, 'the wrong-secret manager to answer');
      expect(s.leader).toBeNull();
    } finally {
      p.kill('SIGKILL');
    }
    const logs = [...cluster.managers.values()].map((m) => readFileSync(m.logFile, 'utf8')).join('\n');
    expect(logs).toMatch(/peer auth failed/);
    const real = await cluster.status(leader);
    expect(real!.role).toBe('leader');

    // A corrupt data directory: clear message naming the path, exit code non-zero, bytes unchanged.
    const victim = [...cluster.managers.keys()].find((id) => id !== leader)!;
    await cluster.killAndWait(victim);
    const dir = join(cluster.dir, victim);
    writeFileSync(join(dir, 'CURRENT'), 'garbage\n');
    const hash = () => {
      const h = createHash('sha256');
      for (const f of readdirSync(dir).sort()) if (statSync(join(dir, f)).isFile()) h.update(f).update(readFileSync(join(dir, f)));
      return h.digest('hex');
    };
    const before = hash();
    const out = spawnSync(process.execPath, cluster.managers.get(victim)!.args, { encoding: 'utf8', timeout: 20_000 });
    expect(out.status).toBe(1);
    expect(out.stderr).toContain(dir);
    expect(out.stderr).toMatch(/cannot open LevelDB/i);
    expect(hash()).toBe(before);
  });
});
