// Large replicated state: snapshots encoded and restored in slices (a point-in-time image while
// the state keeps changing), the state-size quota (--quota-bytes, quota_exceeded), and paged
// list endpoints (GET /v1/kv, GET /v1/tasks with limit/continue) with the client and CLI
// following pages.
import { afterEach, describe, expect, it } from 'vitest';
import { ClusterState, canonicalJson, encodeCommand, type Command } from '../src/manager/state.js';
import { FlotillaClient } from '../src/client/client.js';
import { FlotillaError } from '../src/protocol/errors.js';
import { TestCluster, eventually, runCli } from './helpers/cluster.js';
import { RaftStorage } from '../src/raft/storage.js';
import { eventLoopSlicer } from '../src/clock.js';
import { Level } from 'level';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const text = (b: Uint8Array) => new TextDecoder().decode(b);
const concat = (parts: Uint8Array[]) => Buffer.concat(parts.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength)));

/** A state with `n` keys of `size`-byte values (some binary) and a task. */
function bigState(n: number, size: number): ClusterState {
  const s = new ClusterState();
  let index = 0;
  const apply = (cmd: Command) => {
    const r = s.applyEntry(encodeCommand(cmd), { index: ++index, term: 1 });
    if (!r.ok) throw new Error(JSON.stringify(r));
  };
  apply({ type: 'task.create', id: 't1', spec: { name: 'web', containers: [{ name: 'c', image: 'busybox' }] }, at: 2 } as unknown as Command);
  for (let i = 0; i < n; i++) {
    const value = i % 7 === 0 ? new Uint8Array(size).map((_, j) => (i + j) & 0xff) : `${'x'.repeat(size - 8)}${String(i).padStart(8, '0')}`;
    apply({ type: 'kv.put', key: `big/${String(i).padStart(6, '0')}`, value, requestId: `r${i}`, at: 3 + i });
  }
  return s;
}

/** Counts event-loop turns (setImmediate) while `p` runs: other work got to run in between. */
async function turnsDuring<T>(p: () => Promise<T>): Promise<{ value: T; turns: number }> {
  let turns = 0;
  let on = true;
  const spin = () => {
    if (!on) return;
    turns++;
    setImmediate(spin);
  };
  setImmediate(spin);
  const value = await p();
  on = false;
  return { value, turns };
}

describe('snapshots of a large state', () => {
  it('snapshotAsync writes the same bytes as snapshot(), in parts, yielding to the event loop', async () => {
    const s = bigState(400, 32 * 1024); // ~13 MB
    const sync = s.snapshot();
    const { value: parts, turns } = await turnsDuring(() => s.snapshotAsync(eventLoopSlicer, 2));
    expect(parts.length).toBeGreaterThan(1);
    expect(Buffer.compare(concat(parts), Buffer.from(sync))).toBe(0);
    // Other callbacks ran between the slices (the old snapshot was one synchronous call).
    expect(turns).toBeGreaterThan(3);
    // Still one canonical JSON document of format v1.
    const doc = JSON.parse(text(sync)) as { format: string; v: number; kv: unknown[] };
    expect(doc.format).toBe('flotilla-state');
    expect(doc.kv).toHaveLength(400);
  });

  it('is a point-in-time image: writes applied while it is encoded are not in it', async () => {
    const s = bigState(300, 16 * 1024);
    const expected = text(s.snapshot());
    const at = s.appliedIndex;
    const pending = s.snapshotAsync(eventLoopSlicer, 1);
    // Keep changing the state while the snapshot is encoded: overwrite, delete, add keys.
    let index = at;
    for (let i = 0; i < 50; i++) {
      s.applyEntry(encodeCommand({ type: 'kv.put', key: `big/${String(i).padStart(6, '0')}`, value: 'changed', at: 9 }), { index: ++index, term: 1 });
      s.applyEntry(encodeCommand({ type: 'kv.del', key: `big/${String(100 + i).padStart(6, '0')}` }), { index: ++index, term: 1 });
      s.applyEntry(encodeCommand({ type: 'kv.put', key: `new/${i}`, value: 'n' }), { index: ++index, term: 1 });
      await new Promise((r) => setImmediate(r));
    }
    const got = text(concat(await pending));
    expect(got === expected).toBe(true);
    expect(s.kvGet('big/000000')!.value).toBe('changed');
  });

  it('restoreAsync rebuilds the same state in slices; the state stays as it was until the end', async () => {
    const s = bigState(400, 32 * 1024);
    const snap = s.snapshot();
    const target = new ClusterState();
    target.applyEntry(encodeCommand({ type: 'kv.put', key: 'old', value: 'o' }), { index: 1, term: 1 });
    let resets = 0;
    target.onReset(() => resets++);
    let sawPartial = false;
    const { turns } = await turnsDuring(async () => {
      const p = target.restoreAsync(snap, eventLoopSlicer, 1);
      // Between slices the old state is still whole.
      for (let i = 0; i < 5; i++) {
        await new Promise((r) => setImmediate(r));
        if (target.kvGet('old') === undefined && target.kvGet('big/000000') === undefined) sawPartial = true;
      }
      await p;
    });
    expect(turns).toBeGreaterThan(3);
    expect(sawPartial).toBe(false);
    expect(resets).toBe(1);
    expect(target.kvGet('old')).toBeUndefined();
    expect(Buffer.compare(Buffer.from(target.snapshot()), Buffer.from(snap))).toBe(0);
    expect(target.kvGet('big/000007')!.value).toEqual(s.kvGet('big/000007')!.value); // binary value
    expect(target.stateBytes()).toBe(s.stateBytes());
  });

  it('restoreAsync reads a one-line snapshot (the layout before) and refuses corrupt ones without changing anything', async () => {
    const s = bigState(20, 100);
    const oneLine = new TextEncoder().encode(canonicalJson(JSON.parse(text(s.snapshot()))));
    expect(oneLine.includes(0x0a)).toBe(false);
    const a = new ClusterState();
    await a.restoreAsync(oneLine, eventLoopSlicer);
    expect(text(a.snapshot())).toBe(text(s.snapshot()));

    const good = s.snapshot();
    const b = new ClusterState();
    b.applyEntry(encodeCommand({ type: 'kv.put', key: 'keep', value: 'k' }), { index: 1, term: 1 });
    const before = text(b.snapshot());
    const cut = good.subarray(0, Math.floor(good.length / 2));
    const garbled = Buffer.from(good);
    garbled[garbled.indexOf(0x0a) + 1] = 0x7d; // '}' where an element starts
    for (const bad of [cut, garbled, new TextEncoder().encode('{"format":"other","v":1}')]) {
      const err = await b.restoreAsync(bad, eventLoopSlicer).then(() => null, (e: unknown) => e);
      expect(FlotillaError.is(err) && err.code).toBe('bad_request');
      expect(text(b.snapshot())).toBe(before);
    }
  });
});

describe('large snapshots in Raft storage (LevelDB)', () => {
  it('are stored as chunks, read back whole after a reopen, and older chunks are deleted', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'flotilla-bigsnap-'));
    const conf = { voters: ['m1'], learners: [] };
    const MiB = 1024 * 1024;
    const chunkKeys = async () => {
      const db = new Level<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
      await db.open();
      const keys = await db.keys({ gte: Buffer.from('D'), lt: Buffer.from('E') }).all();
      const whole = await db.get(Buffer.from('d'));
      await db.close();
      return { chunks: keys.length, whole: whole === undefined ? null : whole.length };
    };
    const big = (seed: number, n: number) => Buffer.from(Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff));
    try {
      let st = await RaftStorage.open(dir, { nodeId: 'm1' });
      const entries = Array.from({ length: 10 }, (_, i) => ({ index: i + 1, term: 1, type: 0 as const, data: new Uint8Array([i]) }));
      await st.save({ hardState: { term: 1, vote: 'm1', commit: 10 }, entries });
      const a = big(1, 3 * MiB + 123);
      const saving = st.saveSnapshot({ meta: { index: 6, term: 1, conf }, data: a });
      // Entries keep being persisted while the snapshot's chunks are written.
      await st.save({ hardState: { term: 1, vote: 'm1', commit: 12 }, entries: [11, 12].map((index) => ({ index, term: 1, type: 0 as const, data: new Uint8Array([index]) })) });
      await saving;
      await st.close();
      // Four 1 MiB chunks, no single value holding it all.
      expect(await chunkKeys()).toEqual({ chunks: 4, whole: null });
      st = await RaftStorage.open(dir, { nodeId: 'm1' });
      let p = await st.load();
      expect(p.snapshot!.meta.index).toBe(6);
      expect(Buffer.compare(Buffer.from(p.snapshot!.data), a)).toBe(0);
      expect(p.entries.map((e) => e.index)).toEqual([7, 8, 9, 10, 11, 12]);
      // A snapshot from the leader (replaces the log), larger, then entries after it.
      const b = big(2, 2 * MiB + 7);
      await st.save({ hardState: { term: 2, vote: null, commit: 20 }, snapshot: { meta: { index: 20, term: 2, conf }, data: b }, entries: [] });
      await st.save({ entries: [{ index: 21, term: 2, type: 0, data: new Uint8Array([21]) }] });
      await st.close();
      st = await RaftStorage.open(dir, { nodeId: 'm1' });
      p = await st.load();
      expect(p.snapshot!.meta.index).toBe(20);
      expect(Buffer.compare(Buffer.from(p.snapshot!.data), b)).toBe(0);
      expect(p.entries.map((e) => e.index)).toEqual([21]);
      // A small snapshot is one value again; no chunk is left behind.
      await st.saveSnapshot({ meta: { index: 21, term: 2, conf }, data: new Uint8Array([1, 2, 3]) });
      await st.close();
      expect(await chunkKeys()).toEqual({ chunks: 0, whole: 3 });
      st = await RaftStorage.open(dir, { nodeId: 'm1' });
      p = await st.load();
      expect([...p.snapshot!.data]).toEqual([1, 2, 3]);
      await st.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});

describe('state-size quota (deterministic in apply)', () => {
  it('refuses puts and task creates that would pass the quota carried in the entry; deletes and shrinking puts pass', () => {
    const s = new ClusterState();
    let index = 0;
    const put = (key: string, size: number, quota?: number) =>
      s.applyEntry(encodeCommand({ type: 'kv.put', key, value: 'a'.repeat(size), quota }), { index: ++index, term: 1 });
    expect(put('a', 1000, 5000).ok).toBe(true);
    expect(put('b', 1000, 5000).ok).toBe(true);
    const before = text(s.snapshot());
    const r = put('c', 4000, 5000);
    expect(r.ok).toBe(false);
    expect(!r.ok && r.error.code).toBe('quota_exceeded');
    expect(!r.ok && r.error.message).toMatch(/quota/);
    // Nothing changed but the applied index.
    const strip = (t: string) => t.replace(/"appliedIndex":\d+/, '');
    expect(strip(text(s.snapshot()))).toBe(strip(before));
    // Without a quota in the entry (older entries, quota off) the same put applies.
    expect(s.quotaCheck({ type: 'kv.put', key: 'c', value: 'a'.repeat(4000), quota: 5000 })?.code).toBe('quota_exceeded');
    expect(s.quotaCheck({ type: 'kv.put', key: 'c', value: 'a'.repeat(10), quota: 5000 })).toBeUndefined();
    // Overwriting with a smaller value is allowed even when over quota; so are deletes.
    expect(put('a', 10, 100).ok).toBe(true);
    expect(s.applyEntry(encodeCommand({ type: 'kv.del', key: 'b' }), { index: ++index, term: 1 }).ok).toBe(true);
    expect(put('c', 3000, 5000).ok).toBe(true);
    const t = s.applyEntry(encodeCommand({ type: 'task.create', id: 't1', spec: { name: 'w', containers: [{ name: 'c', image: 'x' }] }, at: 1, quota: 4000 } as unknown as Command), { index: ++index, term: 1 });
    expect(!t.ok && t.error.code).toBe('quota_exceeded');
    // Restore recomputes the size.
    expect(ClusterState.restore(s.snapshot()).stateBytes()).toBe(s.stateBytes());
  });
});

let cluster: TestCluster | null = null;
afterEach(async () => {
  await cluster?.stop();
  cluster = null;
});

describe('large state on a real cluster', () => {
  it('snapshots taken every few entries are saved, sent to a follower that fell behind and restored after restarts', async () => {
    cluster = await TestCluster.managers(3, ['--snapshot-every', '40']);
    const c = cluster.client();
    const value = (i: number) => `${String(i).padStart(6, '0')}${'v'.repeat(20 * 1024)}`;
    for (let i = 0; i < 120; i++) await c.put(`/v1/kv/a/${i}`, value(i));
    const leader = await cluster.waitForLeader();
    const follower = [...cluster.managers.keys()].find((id) => id !== leader)!;
    await cluster.killAndWait(follower);
    for (let i = 0; i < 150; i++) await c.put(`/v1/kv/b/${i}`, value(i));
    await c.delete('/v1/kv/a/3');
    // The leader compacted past the follower's log: it gets a snapshot.
    const ls = (await cluster.status(leader))!;
    expect(ls.snapshotIndex).toBeGreaterThan(200);
    cluster.restart(follower);
    await eventually(async () => {
      const [f, l] = await Promise.all([cluster!.status(follower), cluster!.status(leader)]);
      return f && l && f.appliedIndex >= l.commitIndex;
    }, 30_000, 'follower caught up through a snapshot');
    const own = new FlotillaClient([cluster.managers.get(follower)!.addr], { timeoutMs: 10_000 });
    const items = await own.getAll<{ key: string; value: string }>('/v1/kv?stale=true', 'items', { pinned: true, limit: 100 });
    expect(items).toHaveLength(269);
    expect(new Set(items.map((i) => i.key)).has('a/3')).toBe(false);
    expect(items.find((i) => i.key === 'b/149')!.value).toBe(value(149));
    const log = (await import('node:fs')).readFileSync(cluster.managers.get(follower)!.logFile, 'utf8');
    expect(log).toMatch(/snapshot restored from the leader/);
    // Every manager restarts from its own snapshot on disk and serves the same data.
    for (const id of [...cluster.managers.keys()]) await cluster.killAndWait(id);
    for (const id of [...cluster.managers.keys()]) cluster.restart(id);
    await cluster.waitForLeader(30_000);
    for (const id of [...cluster.managers.keys()]) {
      const mc = new FlotillaClient([cluster.managers.get(id)!.addr], { timeoutMs: 10_000 });
      const got = await mc.getAll<{ key: string; value: string }>('/v1/kv?stale=true', 'items', { pinned: true });
      expect(got.length, id).toBe(269);
    }
  }, 180_000);

  it('--quota-bytes: a put past the quota fails with quota_exceeded (507) and changes nothing; a delete makes room', async () => {
    cluster = await TestCluster.managers(3, ['--quota-bytes', String(200 * 1024)]);
    const c = cluster.client();
    const v = 'q'.repeat(30 * 1024);
    let refused: FlotillaError | null = null;
    let stored = 0;
    for (let i = 0; i < 20 && !refused; i++) {
      try {
        await c.put(`/v1/kv/q/${i}`, v);
        stored++;
      } catch (e) {
        refused = e as FlotillaError;
      }
    }
    expect(stored).toBeGreaterThan(3);
    expect(stored).toBeLessThan(8);
    expect(refused?.code).toBe('quota_exceeded');
    expect(refused?.httpStatus).toBe(507);
    expect(refused?.message).toMatch(/quota/);
    const keys = await c.getAll<{ key: string }>('/v1/kv?prefix=q/', 'items');
    expect(keys).toHaveLength(stored);
    // CLI: a clear error and a non-zero exit.
    const cli = await runCli(['--managers', cluster.addrs().join(','), 'kv', 'put', 'q/cli', v]);
    expect(cli.status).not.toBe(0);
    expect(cli.stderr).toMatch(/quota/);
    await c.delete('/v1/kv/q/0');
    await c.put('/v1/kv/q/again', v);
  }, 120_000);

  it('GET /v1/kv pages with limit and continue; bad values are 400; the CLI lists every page', async () => {
    cluster = await TestCluster.managers(1);
    const c = cluster.client();
    for (let i = 0; i < 1203; i++) await c.put(`/v1/kv/p/${String(i).padStart(4, '0')}`, `v${i}`);
    await c.put('/v1/kv/other', 'o');
    // The default page is bounded.
    const first = await c.get<{ items: { key: string }[]; continue?: string }>('/v1/kv?prefix=p/');
    expect(first.items.length).toBeLessThan(1203);
    expect(typeof first.continue).toBe('string');
    const p1 = await c.get<{ items: { key: string }[]; continue?: string }>('/v1/kv?prefix=p/&limit=500');
    expect(p1.items).toHaveLength(500);
    const p2 = await c.get<{ items: { key: string }[]; continue?: string }>(`/v1/kv?prefix=p/&limit=500&continue=${p1.continue}`);
    expect(p2.items[0]!.key).toBe('p/0500');
    const all = await c.getAll<{ key: string }>('/v1/kv?prefix=p/', 'items', { limit: 500 });
    expect(all.map((i) => i.key)).toEqual(Array.from({ length: 1203 }, (_, i) => `p/${String(i).padStart(4, '0')}`));
    const last = await c.get<{ items: unknown[]; continue?: string }>('/v1/kv?prefix=p/&limit=5000');
    expect(last.items).toHaveLength(1203);
    expect(last.continue).toBeUndefined();
    for (const q of ['limit=0', 'limit=-1', 'limit=abc', 'limit=5001', 'continue=!!', 'continue=bm90LWpzb24']) {
      const err = await c.get(`/v1/kv?${q}`).then(() => null, (e: unknown) => e as FlotillaError);
      expect(err?.code, q).toBe('bad_request');
      expect(err?.httpStatus, q).toBe(400);
    }
    const ls = await runCli(['--managers', cluster.addrs().join(','), 'kv', 'ls', 'p/', '-o', 'json']);
    expect(ls.status).toBe(0);
    expect((JSON.parse(ls.stdout) as unknown[]).length).toBe(1203);
    // Tasks page on request too.
    await c.post('/v1/tasks', Array.from({ length: 7 }, (_, i) => ({ name: `t${i}`, containers: [{ name: 'c', image: 'busybox' }] })));
    const tp = await c.get<{ tasks: { id: string }[]; continue?: string }>('/v1/tasks?limit=3');
    expect(tp.tasks).toHaveLength(3);
    const tall = await c.getAll<{ id: string }>('/v1/tasks', 'tasks', { limit: 3 });
    expect(tall).toHaveLength(7);
    expect(new Set(tall.map((t) => t.id)).size).toBe(7);
    const terr = await c.get('/v1/tasks?limit=0').then(() => null, (e: unknown) => e as FlotillaError);
    expect(terr?.code).toBe('bad_request');
  }, 180_000);
});
