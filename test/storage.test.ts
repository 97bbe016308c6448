import { fork, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Level } from 'level';
import { pack } from 'msgpackr';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RaftStorage, StorageError } from '../src/raft/storage.js';
import type { Entry, Snapshot } from '../src/raft/types.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
let tmp: string;

beforeAll(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'flotilla-storage-'));
});

afterAll(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

let seq = 0;
/** A fresh path inside its own parent directory (so leftovers next to it can be checked). */
async function freshDir(): Promise<string> {
  const parent = path.join(tmp, `case-${++seq}`);
  await fsp.mkdir(parent);
  return path.join(parent, 'raft');
}

function ent(index: number, term: number, text = `e${index}t${term}`): Entry {
  return { index, term, type: 0, data: new TextEncoder().encode(text) };
}

function text(e: Entry): string {
  return new TextDecoder().decode(e.data);
}

function snap(index: number, term: number, bytes: number[] = [1, 2, 3]): Snapshot {
  return { meta: { index, term, conf: { voters: ['n1', 'n2', 'n3'], learners: ['n4'] } }, data: new Uint8Array(bytes) };
}

/** File name -> sha256 of every file under `dir`, recursively. */
async function hashTree(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  async function walk(d: string): Promise<void> {
    for (const de of await fsp.readdir(d, { withFileTypes: true })) {
      const p = path.join(d, de.name);
      if (de.isDirectory()) await walk(p);
      else out[path.relative(dir, p)] = createHash('sha256').update(await fsp.readFile(p)).digest('hex');
    }
  }
  await walk(dir);
  return out;
}

/** Asserts that opening `dir` fails with `code`, a message naming the path, and leaves every byte as it was. */
async function expectRefused(dir: string, nodeId: string, code: StorageError['code'], pattern: RegExp): Promise<StorageError> {
  const before = await hashTree(dir);
  const siblings = await fsp.readdir(path.dirname(dir));
  const err = await RaftStorage.open(dir, { nodeId }).then(
    (s) => {
      void s.close();
      throw new Error('open unexpectedly succeeded');
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(StorageError);
  const se = err as StorageError;
  expect(se.code).toBe(code);
  expect(se.message).toContain(dir);
  expect(se.message).toMatch(pattern);
  expect(await hashTree(dir)).toEqual(before);
  expect(await fsp.readdir(path.dirname(dir))).toEqual(siblings); // no scratch left behind
  return se;
}

/** A closed store of node n1 holding entries 1..n written one save at a time. */
async function storeWithEntries(n: number): Promise<string> {
  const dir = await freshDir();
  const s = await RaftStorage.open(dir, { nodeId: 'n1' });
  for (let i = 1; i <= n; i++) {
    await s.save({ hardState: { term: 1, vote: 'n1', commit: i - 1 }, entries: [ent(i, 1, `entry-${i}-${'x'.repeat(40)}`)] });
  }
  await s.close();
  return dir;
}

describe('RaftStorage', () => {
  it('round-trips hard state, entries and snapshots', async () => {
    const dir = await freshDir();
    const s = await RaftStorage.open(dir, { nodeId: 'n1', clusterId: 'c1' });
    const empty = await s.load();
    expect(empty.hardState).toEqual({ term: 0, vote: null, commit: 0 });
    expect(empty.snapshot).toBeNull();
    expect(empty.entries).toEqual([]);
    expect(empty.meta).toEqual({ format: 'flotilla-raft', version: 1, nodeId: 'n1', clusterId: 'c1', storageId: expect.stringMatching(/^[0-9a-f]{16}$/) });

    const binary = new Uint8Array([0, 255, 1, 254, 7]);
    await s.save({
      hardState: { term: 3, vote: 'n2', commit: 2 },
      entries: [ent(1, 1), ent(2, 2), { index: 3, term: 3, type: 1, data: binary }],
    });
    const st = await s.load();
    expect(st.hardState).toEqual({ term: 3, vote: 'n2', commit: 2 });
    expect(st.entries.map((e) => [e.index, e.term, e.type])).toEqual([
      [1, 1, 0],
      [2, 2, 0],
      [3, 3, 1],
    ]);
    expect(st.entries[2]!.data).toBeInstanceOf(Uint8Array);
    expect([...st.entries[2]!.data]).toEqual([...binary]);
    expect(text(st.entries[0]!)).toBe('e1t1');

    await s.saveSnapshot(snap(2, 2, [9, 8, 7]));
    const st2 = await s.load();
    expect(st2.snapshot!.meta).toEqual(snap(2, 2).meta);
    expect(st2.snapshot!.data).toBeInstanceOf(Uint8Array);
    expect([...st2.snapshot!.data]).toEqual([9, 8, 7]);
    expect(st2.entries.map((e) => e.index)).toEqual([3]);
    expect(s.lastIndex).toBe(3);
    expect(s.snapshotIndex).toBe(2);
    await s.close();
  });

  it('truncates and appends in one atomic batch', async () => {
    const dir = await freshDir();
    const writes: number[] = [];
    const s = await RaftStorage.open(dir, { nodeId: 'n1', onWrite: (_ms, _bytes, entries) => writes.push(entries) });
    await s.save({ hardState: { term: 1, vote: 'n1', commit: 0 }, entries: Array.from({ length: 10 }, (_, i) => ent(i + 1, 1)) });
    // A new leader of term 2 overwrites the uncommitted tail from index 6 with a shorter one.
    await s.save({ hardState: { term: 2, vote: 'n2', commit: 5 }, entries: [ent(6, 2), ent(7, 2), ent(8, 2)] });
    expect(writes).toEqual([10, 3]); // one batch per save
    const st = await s.load();
    expect(st.entries.map((e) => `${e.index}:${e.term}`)).toEqual(['1:1', '2:1', '3:1', '4:1', '5:1', '6:2', '7:2', '8:2']);
    expect(st.hardState).toEqual({ term: 2, vote: 'n2', commit: 5 });
    expect(s.lastIndex).toBe(8);
    // Appending right after the new tail, and truncating to a longer tail, both work.
    await s.save({ entries: [ent(9, 2)] });
    await s.save({ hardState: { term: 3, vote: 'n3', commit: 5 }, entries: [ent(7, 3), ent(8, 3), ent(9, 3), ent(10, 3)] });
    await s.close();

    // Nothing beyond the log survives on disk (checked on the raw keys after a reopen).
    const s2 = await RaftStorage.open(dir, { nodeId: 'n1' });
    expect((await s2.load()).entries.map((e) => `${e.index}:${e.term}`).slice(5)).toEqual(['6:2', '7:3', '8:3', '9:3', '10:3']);
    await s2.close();
  });

  it('rejects saves that would break the log', async () => {
    const dir = await freshDir();
    const s = await RaftStorage.open(dir, { nodeId: 'n1' });
    await s.save({ entries: [ent(1, 1), ent(2, 1)] });
    await expect(s.save({ entries: [ent(4, 1)] })).rejects.toMatchObject({ code: 'invalid' }); // gap
    await expect(s.save({ entries: [ent(3, 1), ent(5, 1)] })).rejects.toMatchObject({ code: 'invalid' });
    await expect(s.save({ hardState: { term: 1, vote: null, commit: 3 }, entries: [] })).rejects.toMatchObject({ code: 'invalid' });
    await s.save({ hardState: { term: 1, vote: null, commit: 2 }, entries: [] });
    // An entry from a term this node has not reached yet.
    await expect(s.save({ entries: [ent(3, 2)] })).rejects.toMatchObject({ code: 'invalid' });
    await s.saveSnapshot(snap(2, 1));
    await expect(s.save({ entries: [ent(2, 1)] })).rejects.toMatchObject({ code: 'invalid' }); // compacted
    await expect(s.saveSnapshot(snap(1, 1))).rejects.toMatchObject({ code: 'invalid' }); // older snapshot
    expect((await s.load()).entries).toEqual([]);
    await s.close();
    await expect(s.save({ entries: [] })).rejects.toMatchObject({ code: 'closed' });
  });

  it('compacts: a snapshot deletes the entries it covers', async () => {
    const dir = await freshDir();
    const s = await RaftStorage.open(dir, { nodeId: 'n1' });
    await s.save({ hardState: { term: 1, vote: null, commit: 20 }, entries: Array.from({ length: 20 }, (_, i) => ent(i + 1, 1)) });
    await s.saveSnapshot(snap(15, 1));
    await s.close();

    const raw = new Level<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    const keys = await raw.keys({ gte: Buffer.from('e'), lt: Buffer.from('f') }).all();
    expect(keys.map((k) => Number(k.readBigUInt64BE(1)))).toEqual([16, 17, 18, 19, 20]);
    await raw.close();

    // A snapshot from the leader (log restore) replaces the whole log, even entries after it.
    const s2 = await RaftStorage.open(dir, { nodeId: 'n1' });
    await s2.save({ hardState: { term: 2, vote: null, commit: 18 }, snapshot: snap(18, 2, [5]), entries: [ent(19, 2)] });
    const st = await s2.load();
    expect(st.snapshot!.meta.index).toBe(18);
    expect(st.entries.map((e) => `${e.index}:${e.term}`)).toEqual(['19:2']);
    // A snapshot beyond the end of the log leaves it empty.
    await s2.saveSnapshot(snap(30, 2));
    expect((await s2.load()).entries).toEqual([]);
    expect(s2.lastIndex).toBe(30);
    await s2.save({ entries: [ent(31, 2)] });
    await s2.close();
  });

  it('compacts without one delete per covered entry in the synced batch (they are range-cleared after it)', async () => {
    const dir = await freshDir();
    const s = await RaftStorage.open(dir, { nodeId: 'n1' });
    await s.save({ hardState: { term: 1, vote: null, commit: 3000 }, entries: Array.from({ length: 3000 }, (_, i) => ent(i + 1, 1)) });
    // Every synced batch the store writes from now on, by its number of operations.
    type Chained = { length: number; write: (o?: unknown) => Promise<void> };
    const db = (s as unknown as { db: { batch: (...a: unknown[]) => unknown } }).db;
    const batchSizes: number[] = [];
    const orig = db.batch.bind(db);
    db.batch = (...a: unknown[]) => {
      if (Array.isArray(a[0])) {
        batchSizes.push(a[0].length);
        return orig(...a);
      }
      const b = orig(...a) as Chained;
      const write = b.write.bind(b);
      b.write = (o?: unknown) => {
        batchSizes.push(b.length);
        return write(o);
      };
      return b;
    };
    await s.saveSnapshot(snap(2990, 1));
    await s.save({ entries: [ent(3001, 1)] });
    expect(batchSizes.length).toBeGreaterThan(0);
    // The recording batch holds the snapshot (metadata and data), not 2,990 deletes.
    expect(Math.max(...batchSizes)).toBeLessThanOrEqual(4);
    const st = await s.load();
    expect(st.snapshot!.meta.index).toBe(2990);
    expect(st.entries.map((e) => e.index)).toEqual(Array.from({ length: 11 }, (_, i) => 2991 + i));
    await s.close();
    const raw = new Level<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    const keys = await raw.keys({ gte: Buffer.from('e'), lt: Buffer.from('f') }).all();
    expect(keys.map((k) => Number(k.readBigUInt64BE(1)))).toEqual(Array.from({ length: 11 }, (_, i) => 2991 + i));
    await raw.close();
  });

  it('opens a store stopped between recording a snapshot and clearing the entries it covers', async () => {
    const dir = await freshDir();
    const s = await RaftStorage.open(dir, { nodeId: 'n1' });
    await s.save({ hardState: { term: 2, vote: 'n1', commit: 12 }, entries: Array.from({ length: 12 }, (_, i) => ent(i + 1, i < 5 ? 1 : 2)) });
    await s.saveSnapshot(snap(8, 2, [7]));
    await s.close();
    // The stop came before the clear: entries 1..8 are still on disk beside the snapshot at 8.
    const raw = new Level<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    for (let i = 1; i <= 8; i++) {
      const k = Buffer.alloc(9);
      k[0] = 0x65;
      k.writeBigUInt64BE(BigInt(i), 1);
      await raw.put(k, pack([i < 5 ? 1 : 2, 0, new TextEncoder().encode(`e${i}`)]));
    }
    await raw.close();

    const s2 = await RaftStorage.open(dir, { nodeId: 'n1' });
    const st = await s2.load();
    expect(st.snapshot!.meta.index).toBe(8);
    expect(st.entries.map((e) => `${e.index}:${e.term}:${text(e)}`)).toEqual(['9:2:e9t2', '10:2:e10t2', '11:2:e11t2', '12:2:e12t2']);
    expect(s2.lastIndex).toBe(12);
    await s2.save({ entries: [ent(13, 2)] });
    await s2.close();
    // The open cleared the leftovers.
    const raw2 = new Level<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    const keys = await raw2.keys({ gte: Buffer.from('e'), lt: Buffer.from('f') }).all();
    expect(keys.map((k) => Number(k.readBigUInt64BE(1)))).toEqual([9, 10, 11, 12, 13]);
    await raw2.close();
  });

  it('recovers exactly the persisted state after close and reopen', async () => {
    const dir = await freshDir();
    const s = await RaftStorage.open(dir, { nodeId: 'n1' });
    await s.save({ hardState: { term: 4, vote: 'n3', commit: 6 }, entries: Array.from({ length: 8 }, (_, i) => ent(i + 1, i < 4 ? 1 : 4)) });
    await s.saveSnapshot(snap(3, 1, [42]));
    const before = await s.load();
    await s.close();

    const s2 = await RaftStorage.open(dir, { nodeId: 'n1', clusterId: 'later' });
    const after = await s2.load();
    expect(after.hardState).toEqual(before.hardState);
    expect(after.snapshot!.meta).toEqual(before.snapshot!.meta);
    expect([...after.snapshot!.data]).toEqual([42]);
    expect(after.entries.map((e) => [e.index, e.term, text(e)])).toEqual(before.entries.map((e) => [e.index, e.term, text(e)]));
    expect(after.meta.clusterId).toBe('later'); // recorded when first known
    expect(s2.lastIndex).toBe(8);
    expect(s2.snapshotIndex).toBe(3);
    await s2.save({ entries: [ent(9, 4)] }); // continues where it left off
    await s2.close();

    await expect(RaftStorage.open(dir, { nodeId: 'n1', clusterId: 'other' })).rejects.toMatchObject({ code: 'wrong_cluster' });
  });

  it('merges concurrent saves into fewer synced batches (group commit)', async () => {
    const dir = await freshDir();
    const batches: number[] = [];
    const s = await RaftStorage.open(dir, { nodeId: 'n1', onWrite: (_ms, _b, _e, saves) => batches.push(saves) });
    const calls: Promise<void>[] = [];
    for (let i = 1; i <= 100; i++) {
      calls.push(s.save({ hardState: { term: 1, vote: 'n1', commit: i - 1 }, entries: [ent(i, 1)] }));
    }
    // A truncation arriving in the same group overrides the earlier appends at or after its index.
    calls.push(s.save({ hardState: { term: 2, vote: 'n2', commit: 90 }, entries: [ent(96, 2), ent(97, 2)] }));
    await Promise.all(calls);
    expect(s.stats().batches).toBe(batches.length);
    expect(batches.length).toBeLessThan(calls.length);
    expect(batches.reduce((a, b) => a + b, 0)).toBe(calls.length);
    await s.close();

    const s2 = await RaftStorage.open(dir, { nodeId: 'n1' });
    const st = await s2.load();
    expect(st.entries.length).toBe(97);
    expect(st.entries.slice(94).map((e) => `${e.index}:${e.term}`)).toEqual(['95:1', '96:2', '97:2']);
    expect(st.hardState).toEqual({ term: 2, vote: 'n2', commit: 90 });
    await s2.close();
  });

  it('refuses a second open of the same directory in this process', async () => {
    const dir = await freshDir();
    const s = await RaftStorage.open(dir, { nodeId: 'n1' });
    await expect(RaftStorage.open(dir, { nodeId: 'n1' })).rejects.toMatchObject({ code: 'locked' });
    await s.save({ entries: [ent(1, 1)] }); // the first instance is unaffected
    await s.close();
  });

  it('creates the store atomically and leaves nothing next to it', async () => {
    const dir = await freshDir();
    const s = await RaftStorage.open(dir, { nodeId: 'n1' });
    await s.close();
    expect(await fsp.readdir(path.dirname(dir))).toEqual(['raft']);
    // An existing empty directory is used in place.
    const dir2 = await freshDir();
    await fsp.mkdir(dir2);
    const s2 = await RaftStorage.open(dir2, { nodeId: 'n7' });
    expect(s2.meta.nodeId).toBe('n7');
    await s2.close();
    expect(await fsp.readdir(path.dirname(dir2))).toEqual(['raft']);
  });
});

describe('RaftStorage refuses directories that are not its own, without touching them', () => {
  it('a non-empty directory that is not LevelDB', async () => {
    const dir = await freshDir();
    await fsp.mkdir(dir);
    await fsp.writeFile(path.join(dir, 'notes.txt'), 'precious');
    await expectRefused(dir, 'n1', 'foreign', /not a LevelDB directory/);
  });

  it('a file instead of a directory', async () => {
    const dir = await freshDir();
    await fsp.writeFile(dir, 'x');
    const err = await RaftStorage.open(dir, { nodeId: 'n1' }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'foreign' });
    expect(await fsp.readFile(dir, 'utf8')).toBe('x');
  });

  it('a LevelDB database of another application', async () => {
    const dir = await freshDir();
    const db = new Level(dir);
    await db.put('user:1', 'alice');
    await db.close();
    await expectRefused(dir, 'n1', 'foreign', /without a flotilla meta record/);
  });

  it('a LevelDB database with another meta format', async () => {
    const dir = await freshDir();
    const db = new Level<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    await db.put(Buffer.from('m'), pack({ format: 'something-else', version: 3 }));
    await db.close();
    await expectRefused(dir, 'n1', 'foreign', /another format/);
  });

  it("another node's data", async () => {
    const dir = await storeWithEntries(5);
    const err = await expectRefused(dir, 'n2', 'wrong_node', /node 'n1', not of node 'n2'/);
    expect(err.path).toBe(dir);
  });

  it('garbage in CURRENT', async () => {
    const dir = await storeWithEntries(50);
    await fsp.writeFile(path.join(dir, 'CURRENT'), 'garbage garbage');
    await expectRefused(dir, 'n1', 'corrupt', /corrupt LevelDB in .*CURRENT/);
  });

  it('a truncated MANIFEST', async () => {
    const dir = await storeWithEntries(50);
    const manifest = (await fsp.readdir(dir)).find((n) => n.startsWith('MANIFEST-'))!;
    const size = (await fsp.stat(path.join(dir, manifest))).size;
    await fsp.truncate(path.join(dir, manifest), Math.floor(size / 2));
    await expectRefused(dir, 'n1', 'corrupt', /corrupt LevelDB in/);
  });

  it('damaged records in the middle of the LevelDB log', async () => {
    const dir = await storeWithEntries(300);
    const log = (await fsp.readdir(dir)).find((n) => n.endsWith('.log'))!;
    const buf = await fsp.readFile(path.join(dir, log));
    expect(buf.length).toBeGreaterThan(30_000);
    buf.fill(0x5a, 10_000, 10_200);
    await fsp.writeFile(path.join(dir, log), buf);
    await expectRefused(dir, 'n1', 'corrupt', /damaged log records/);
  });

  it('a truncated table file', async () => {
    const dir = await storeWithEntries(300);
    // Reopening converts the LevelDB log into a table file.
    const s = await RaftStorage.open(dir, { nodeId: 'n1' });
    await s.close();
    const table = (await fsp.readdir(dir)).find((n) => n.endsWith('.ldb'))!;
    expect(table).toBeDefined();
    await fsp.truncate(path.join(dir, table), 100);
    await expectRefused(dir, 'n1', 'corrupt', /corrupt LevelDB in/);
  });

  it('a raft log with a hole, or a commit index beyond its end', async () => {
    const dir = await storeWithEntries(10);
    const raw = new Level<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    const k = Buffer.alloc(9);
    k[0] = 0x65;
    k.writeBigUInt64BE(4n, 1);
    await raw.del(k);
    await raw.close();
    await expectRefused(dir, 'n1', 'corrupt', /corrupt raft log in .*not contiguous: expected 4, found 5/);

    const dir2 = await storeWithEntries(10);
    const raw2 = new Level<Buffer, Buffer>(dir2, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    await raw2.put(Buffer.from('h'), pack({ term: 1, vote: 'n1', commit: 11 }));
    await raw2.close();
    await expectRefused(dir2, 'n1', 'corrupt', /corrupt raft log in .*commit index 11 is beyond the last index 10/);
  });
});

// -----------------------------------------------------------------------------------------------
// Tests with a second process: storage.ts is transpiled to plain JS in a temp dir for the child.

describe('RaftStorage across processes', () => {
  let modDir: string;

  beforeAll(async () => {
    modDir = path.join(tmp, 'mod');
    await fsp.mkdir(path.join(modDir, 'raft'), { recursive: true });
    await fsp.writeFile(path.join(modDir, 'package.json'), '{"type":"module"}');
    await fsp.symlink(path.join(repo, 'node_modules'), path.join(modDir, 'node_modules'));
    const src = path.join(repo, 'src', 'raft');
    for (const name of await fsp.readdir(src)) {
      if (!name.endsWith('.ts')) continue;
      const out = ts.transpileModule(await fsp.readFile(path.join(src, name), 'utf8'), {
        compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
      });
      await fsp.writeFile(path.join(modDir, 'raft', name.replace(/\.ts$/, '.js')), out.outputText);
    }
    await fsp.writeFile(
      path.join(modDir, 'holder.js'),
      `import { RaftStorage } from './raft/storage.js';
const s = await RaftStorage.open(process.argv[2], { nodeId: 'n1' });
process.send({ ready: true });
process.on('message', async () => { await s.close(); process.exit(0); });
`,
    );
    await fsp.writeFile(
      path.join(modDir, 'writer.js'),
      `import { RaftStorage } from './raft/storage.js';
const s = await RaftStorage.open(process.argv[2], { nodeId: 'n1' });
const payload = (i) => new TextEncoder().encode('entry-' + i + '-' + 'x'.repeat(i % 97));
let next = 1;
process.send({ ready: true });
// Four concurrent writers: saves are accepted in call order, so an acknowledged index implies
// every index before it is durable too.
async function writer() {
  for (;;) {
    const first = next;
    const n = 1 + (first % 5);
    next += n;
    const entries = [];
    for (let i = first; i < first + n; i++) entries.push({ index: i, term: 1, type: 0, data: payload(i) });
    await s.save({ hardState: { term: 1, vote: 'n1', commit: first - 1 }, entries });
    process.send({ acked: first + n - 1 });
  }
}
for (let k = 0; k < 4; k++) writer();
`,
    );
  });

  function start(script: string, dir: string): { child: ChildProcess; ready: Promise<void> } {
    const child = fork(path.join(modDir, script), [dir], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const ready = new Promise<void>((resolve, reject) => {
      child.on('message', (m: { ready?: boolean }) => m.ready && resolve());
      child.on('exit', (code) => reject(new Error(`child exited early with ${code}`)));
    });
    return { child, ready };
  }

  it('refuses a directory locked by another process, without touching it', async () => {
    const dir = await storeWithEntries(20);
    const { child, ready } = start('holder.js', dir);
    await ready;
    try {
      await expectRefused(dir, 'n1', 'locked', /another flotilla process is using/);
    } finally {
      const exited = new Promise((r) => child.once('exit', r));
      child.send('stop');
      await exited;
    }
    // Once the other process is gone the store opens normally.
    const s = await RaftStorage.open(dir, { nodeId: 'n1' });
    expect((await s.load()).entries.length).toBe(20);
    await s.close();
  });

  it('keeps every acknowledged entry when the writer is SIGKILLed', async () => {
    const dir = await freshDir();
    const { child, ready } = start('writer.js', dir);
    await ready;
    let acked = 0;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    await new Promise<void>((resolve) => {
      child.on('message', (m: { acked?: number }) => {
        if (m.acked) acked = Math.max(acked, m.acked);
        if (acked >= 600) resolve();
      });
    });
    child.kill('SIGKILL');
    await exited;

    const s = await RaftStorage.open(dir, { nodeId: 'n1' });
    const st = await s.load();
    expect(st.entries.length).toBeGreaterThanOrEqual(acked);
    for (let i = 1; i <= acked; i++) {
      const e = st.entries[i - 1]!;
      expect(e.index).toBe(i);
      expect(text(e)).toBe(`entry-${i}-${'x'.repeat(i % 97)}`);
    }
    expect(st.hardState.commit).toBeLessThanOrEqual(st.entries.length);
    await s.close();
  });
});

describe('RaftStorage refusals say what happened and change nothing', () => {
  it('a full file system: "no space left on device", not "corrupt", and the directory unchanged', async () => {
    const mnt = await fsp.mkdtemp(path.join(os.tmpdir(), 'flotilla-full-'));
    const { spawnSync } = await import('node:child_process');
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt], { encoding: 'utf8' });
    if (mounted.status !== 0) {
      await fsp.rmdir(mnt).catch(() => {});
      if (process.env.CI === 'true') throw new Error(`cannot mount a tmpfs to fill (needs root): ${mounted.stderr}`);
      console.warn(`skipped: cannot mount a tmpfs (${mounted.stderr.trim()})`);
      return;
    }
    try {
      const dir = path.join(mnt, 'raft');
      const s = await RaftStorage.open(dir, { nodeId: 'n1' });
      for (let i = 1; i <= 20; i++) await s.save({ hardState: { term: 1, vote: 'n1', commit: i - 1 }, entries: [ent(i, 1, 'y'.repeat(2000))] });
      await s.close();
      // Reopened once: the entries move into a table file, which the verification hard-links
      // (it needs no space), so with a few free pages the copy succeeds and LevelDB's own open fails.
      await (await RaftStorage.open(dir, { nodeId: 'n1' })).close();
      // Fill the file system to the last byte.
      const filler = path.join(mnt, 'filler');
      const fh = await fsp.open(filler, 'w');
      const chunk = Buffer.alloc(4096, 1);
      try {
        for (let i = 0; i < 1024; i++) await fh.write(chunk);
      } catch (e) {
        expect((e as NodeJS.ErrnoException).code).toBe('ENOSPC');
      }
      await fh.close();
      const full = (await fsp.stat(filler)).size;
      let refused = 0;
      // 0..5 free pages: the copy fails, or LevelDB's open on the copy does; both are "no space".
      for (let pages = 0; pages <= 5; pages++) {
        await fsp.truncate(filler, Math.max(0, full - pages * 4096));
        const before = await hashTree(dir);
        const err = await RaftStorage.open(dir, { nodeId: 'n1' }).then(
          async (st) => {
            await st.close();
            return null;
          },
          (e: unknown) => e as StorageError,
        );
        if (err === null) continue; // enough room after all
        refused++;
        expect(err).toBeInstanceOf(StorageError);
        expect(err.message, `${pages} free pages`).toMatch(/no space left on device/);
        expect(err.message, `${pages} free pages`).not.toMatch(/corrupt/);
        expect(err.message).toContain(dir);
        expect(await hashTree(dir)).toEqual(before);
        expect((await fsp.readdir(mnt)).sort()).toEqual(['filler', 'raft']); // no scratch left behind
      }
      expect(refused).toBeGreaterThanOrEqual(2);
    } finally {
      spawnSync('umount', [mnt]);
      await fsp.rmdir(mnt).catch(() => {});
    }
  });

  it('a store the caller rejects (an undecodable snapshot) is refused with every byte as it was', async () => {
    const dir = await freshDir();
    const s = await RaftStorage.open(dir, { nodeId: 'n1' });
    for (let i = 1; i <= 30; i++) await s.save({ hardState: { term: 1, vote: 'n1', commit: i - 1 }, entries: [ent(i, 1, 'z'.repeat(300))] });
    await s.save({ snapshot: { meta: { index: 31, term: 1, conf: { voters: ['n1'], learners: [] } }, data: new Uint8Array([0xc1, 0xc1, 0xc1]) }, entries: [] });
    await s.close();
    expect((await fsp.readdir(dir)).some((n) => n.endsWith('.log'))).toBe(true);
    const before = await hashTree(dir);
    const err = await RaftStorage.open(dir, {
      nodeId: 'n1',
      check: (st) => {
        if (st.snapshot && st.snapshot.data[0] === 0xc1) throw new Error('snapshot 31 cannot be decoded');
      },
    }).then(
      async (st) => {
        await st.close();
        throw new Error('open unexpectedly succeeded');
      },
      (e: unknown) => e as StorageError,
    );
    expect(err.code).toBe('corrupt');
    expect(err.message).toMatch(/snapshot 31 cannot be decoded.*nothing was changed/);
    expect(await hashTree(dir)).toEqual(before);
  });

  it('a manager refused on a store with an undecodable snapshot leaves the directory byte-for-byte as it was', async () => {
    const { spawnSync } = await import('node:child_process');
    const dir = await freshDir();
    const s = await RaftStorage.open(dir, { nodeId: 'm1' });
    for (let i = 1; i <= 30; i++) await s.save({ hardState: { term: 1, vote: 'm1', commit: i - 1 }, entries: [ent(i, 1, 'z'.repeat(300))] });
    // Node-level snapshot data that is valid MessagePack but holds an undecodable state.
    await s.save({ snapshot: { meta: { index: 31, term: 1, conf: { voters: ['m1'], learners: [] } }, data: pack({ members: { m1: '127.0.0.1:1' }, app: new Uint8Array([1, 2, 3]) }) }, entries: [] });
    await s.close();
    const before = await hashTree(dir);
    const secret = path.join(path.dirname(dir), 'secret');
    await fsp.writeFile(secret, 'storage-test-secret-0123456789abcdef');
    const cli = path.join(repo, 'dist', 'src', 'cli', 'main.js');
    const net = await import('node:net');
    const port = await new Promise<number>((resolve) => {
      const srv = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (srv.address() as { port: number }).port;
        srv.close(() => resolve(p));
      });
    });
    const out = spawnSync(process.execPath, [cli, 'manager', '--id', 'm1', '--listen', `127.0.0.1:${port}`, '--data', dir, '--secret-file', secret, '--insecure'], { encoding: 'utf8', timeout: 30_000 });
    expect(out.status, out.stderr).toBe(1);
    expect(out.stderr).toContain(dir);
    expect(out.stderr).toMatch(/snapshot 31 holds a state that cannot be loaded/);
    expect(await hashTree(dir)).toEqual(before);
  });
});
