// A manager whose data directory was wiped must not come back as the member it was: started with
// its old command line (--bootstrap, same id) it refuses, saying how to re-add it; two wiped
// managers never elect a leader with an empty state. Real manager processes and LevelDB dirs.
import { afterEach, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { TestCluster, eventually, sleep } from './helpers/cluster.js';
import { FlotillaClient } from '../src/client/client.js';

let cluster: TestCluster | null = null;
afterEach(async () => {
  if (cluster) {
    for (const m of cluster.managers.values()) {
      try {
        m.proc?.kill('SIGCONT');
      } catch {}
    }
    await cluster.stop();
  }
  cluster = null;
});

/** A 3-manager cluster with a key, an admin token, and every manager's storage id recorded. */
async function seeded(): Promise<{ c: TestCluster; leader: string; token: string; client: FlotillaClient }> {
  const c = await TestCluster.managers(3);
  cluster = c;
  const leader = await c.waitForLeader();
  const open = c.client();
  const tok = await open.post<{ token: string }>('/v1/tokens', { role: 'admin' });
  const client = new FlotillaClient(c.addrs(), { timeoutMs: 15_000, token: tok.token });
  // A follower checks the token against its own state, which may not hold it for a moment.
  await eventually(async () => (await client.put('/v1/kv/k0', 'v0'), true), 10_000, 'the new token accepted');
  for (let i = 1; i < 20; i++) await client.put(`/v1/kv/k${i}`, `v${i}`);
  // Every manager knows the three storage ids (the leader records them once they acknowledged entries).
  await eventually(async () => {
    const sts = await Promise.all([...c.managers.keys()].map((id) => c.status(id)));
    return sts.every((s) => s && s.clusterId && /^e0-/.test(s.clusterId) && Object.keys(s.incarnations ?? {}).length === 3);
  }, 20_000, 'storage ids recorded');
  return { c, leader, token: tok.token, client };
}

function exitOf(p: ReturnType<typeof spawn>, timeoutMs: number): Promise<number | null | 'timeout'> {
  return new Promise((resolve) => {
    if (p.exitCode !== null) return resolve(p.exitCode);
    const t = setTimeout(() => resolve('timeout'), timeoutMs);
    p.once('exit', (code) => {
      clearTimeout(t);
      resolve(code);
    });
  });
}

describe('wiped manager data directory', () => {
  it('a bootstrapped cluster has an id; one wiped follower restarted with its command line refuses to start and the cluster stays healthy', async () => {
    const { c, leader, client } = await seeded();
    const victim = [...c.managers.keys()].find((id) => id !== leader)!;
    await c.killAndWait(victim);
    const dir = join(c.dir, victim);
    renameSync(dir, dir + '.moved');

    const info = c.managers.get(victim)!;
    const p = spawn(process.execPath, info.args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    p.stderr!.on('data', (d: Buffer) => (err += d.toString('utf8')));
    p.stdout!.on('data', (d: Buffer) => (err += d.toString('utf8')));
    const code = await exitOf(p, 30_000);
    if (code === 'timeout') p.kill('SIGKILL');
    expect(code, err).toBe(1);
    expect(err).toMatch(/data was wiped or replaced/);
    expect(err).toContain(`flotilla manager remove ${victim}`);
    expect(err).toMatch(/--join/);
    // The refused start took away the store it had created: the directory is as it was (absent).
    expect(existsSync(dir)).toBe(false);

    // The cluster: healthy with the two others, all data there.
    const cl = await client.get<{ leader: string; managers: { id: string; role: string; healthy: boolean }[] }>('/v1/cluster');
    expect(cl.leader).toBeTruthy();
    expect(cl.managers.find((m) => m.id === victim)!.role).toBe('unreachable');
    expect(cl.managers.filter((m) => m.healthy).length).toBe(2);
    expect((await client.get<{ value: string }>('/v1/kv/k19')).value).toBe('v19');
  });

  it('two wiped managers never elect a leader with an empty state; no data is lost and the API still demands a token', async () => {
    const { c, leader, token } = await seeded();
    const others = [...c.managers.keys()].filter((id) => id !== leader);
    for (const id of others) {
      await c.killAndWait(id);
      renameSync(join(c.dir, id), join(c.dir, `${id}.moved`));
    }
    // The one manager that remembers is paused while the two wiped ones start.
    c.kill(leader, 'SIGSTOP');
    const procs = others.map((id) => {
      const p = spawn(process.execPath, c.managers.get(id)!.args, { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      p.stderr!.on('data', (d: Buffer) => (out += d.toString('utf8')));
      p.stdout!.on('data', (d: Buffer) => (out += d.toString('utf8')));
      return { id, p, out: () => out };
    });
    try {
      // Long enough for many election timeouts (300–600 ms): the two must not form a cluster.
      const until = Date.now() + 5000;
      while (Date.now() < until) {
        for (const id of others) {
          const s = await c.status(id);
          if (s) {
            expect(s.leader, `${id} follows a leader`).toBeNull();
            expect(s.role).not.toBe('leader');
            expect(s.phase).toBe('probing');
          }
        }
        await sleep(200);
      }
      c.kill(leader, 'SIGCONT');
      for (const { id, p, out } of procs) {
        const code = await exitOf(p, 30_000);
        expect(code, `${id}: ${out()}`).toBe(1);
        expect(out()).toMatch(/data was wiped or replaced/);
      }
    } finally {
      c.kill(leader, 'SIGCONT');
      for (const { p } of procs) if (p.exitCode === null) p.kill('SIGKILL');
    }
    // The remembering manager kept everything, and its API is not open.
    const la = c.managers.get(leader)!.addr;
    const anon = await fetch(`http://${la}/v1/kv/pwned`, { method: 'PUT', body: 'x' });
    expect(anon.status).toBe(401);
    const withTok = new FlotillaClient([la], { timeoutMs: 5000, token });
    expect((await withTok.get<{ value: string }>('/v1/kv/k7?stale=true', { pinned: true })).value).toBe('v7');
    const s = await c.status(leader);
    expect(Object.keys(s!.incarnations).sort()).toEqual([...c.managers.keys()].sort());
  });

  it('a wiped follower restarted with --join under its old id is refused by the cluster and stops', async () => {
    const { c, leader, client } = await seeded();
    const victim = [...c.managers.keys()].find((id) => id !== leader)!;
    await c.killAndWait(victim);
    renameSync(join(c.dir, victim), join(c.dir, `${victim}.moved`));
    const args = [...c.managers.get(victim)!.args];
    const at = args.indexOf('--bootstrap');
    args.splice(at, 2, '--join');
    const p = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stderr!.on('data', (d: Buffer) => (out += d.toString('utf8')));
    p.stdout!.on('data', (d: Buffer) => (out += d.toString('utf8')));
    const code = await exitOf(p, 30_000);
    if (code === 'timeout') p.kill('SIGKILL');
    expect(code, out).toBe(1);
    expect(out).toMatch(/data was wiped or replaced/);
    // The cluster kept its data and a leader throughout.
    expect((await client.get<{ value: string }>('/v1/kv/k3')).value).toBe('v3');
    const cl = await client.get<{ leader: string; managers: { id: string; healthy: boolean }[] }>('/v1/cluster');
    expect(cl.leader).toBeTruthy();
    expect(cl.managers.find((m) => m.id === victim)!.healthy).toBe(false);
  });
});
