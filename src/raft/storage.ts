// Durable Raft storage of one manager node, on LevelDB (classic-level, through `level`).
//
// Key layout (keys and values are bytes):
//   'm'              meta record {format, version, nodeId, clusterId, storageId} (msgpack), written at creation
//   'h'              hard state {term, vote, commit} (msgpack)
//   's'              snapshot metadata {index, term, conf} (msgpack)
//   'd'              snapshot data (raw bytes), for snapshots up to SNAP_CHUNK_BYTES
//   'D' + u64be(i) + u32be(n)  chunk n of the data of the snapshot at index i (larger snapshots)
//   'e' + u64be(i)   log entry i: [term, type, data] (msgpack)
// Indexes are fixed-width big-endian, so LevelDB's key order is the log order and the entries
// live in the key range ['e', 'f').
//
// Invariant on disk: the entries after the snapshot are exactly snapshotIndex+1 .. lastIndex,
// without gaps. Entries at or below the snapshot index may linger: a snapshot taken by the
// application (`saveSnapshot`) is recorded first, and the entries it covers are deleted after
// that, by a range clear that runs in LevelDB's thread (deleting 10,000 keys in the recording
// batch built the batch on the event loop, a stall of tens of ms every snapshot). Such leftovers
// are skipped when the log is read and cleared when the store is opened.
//
// Every write is one LevelDB batch with {sync: true}. `save` calls that arrive while a batch is
// being written are merged into the next batch (group commit); each caller's promise resolves
// once its data is durable.
//
// Opening an existing directory never modifies it until it is known to be a healthy flotilla
// store of this node: the checks run against a scratch copy (see `verifyExisting`).
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Level } from 'level';
import { Packr } from 'msgpackr';
import type { ConfState, Entry, HardState, PersistedState, Snapshot, SnapshotMeta } from './types.js';

export const STORAGE_FORMAT = 'flotilla-raft';
export const STORAGE_VERSION = 1;

export interface StorageMeta {
  format: typeof STORAGE_FORMAT;
  version: number;
  nodeId: string;
  clusterId: string | null;
  /**
   * Random id made when this store was created (its incarnation): a manager whose data directory
   * was wiped comes back with another one, which its cluster recognizes (src/manager/incarnation.ts).
   * Stores made before it existed get one on their first open.
   */
  storageId: string;
}

/** A new random storage id (16 hex digits). */
export function newStorageId(): string {
  return randomBytes(8).toString('hex');
}

export type StorageErrorCode =
  | 'foreign' // the directory holds something that is not a flotilla raft store
  | 'wrong_node' // a flotilla raft store of another node
  | 'wrong_cluster' // a flotilla raft store of another cluster
  | 'corrupt' // LevelDB or the raft log inside it is damaged
  | 'locked' // another process (or another RaftStorage in this process) uses the directory
  | 'io' // the file system refused an operation
  | 'invalid' // a save() that would break the log invariants (a caller bug)
  | 'closed'; // the storage is closed, or failed earlier and refuses further writes

export class StorageError extends Error {
  constructor(
    readonly code: StorageErrorCode,
    readonly path: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'StorageError';
  }
}

export interface RaftStorageOptions {
  nodeId: string;
  /** Recorded in the meta record; a store recorded with another cluster id is refused. */
  clusterId?: string;
  /**
   * Open an existing store whatever node it belongs to (offline tools such as `manager recover`;
   * read the id from `meta`). An absent or empty directory is refused instead of created.
   */
  anyNode?: boolean;
  /**
   * Extra validation of an existing store's whole persisted state (e.g. that its snapshot
   * decodes), run on the scratch copy before the real directory is opened: a store it rejects
   * (by throwing) is refused with the directory left byte-for-byte as it was.
   */
  check?: (state: PersistedState) => void;
  /** Called after every synced batch: its duration, payload bytes, entries written and merged save calls. */
  onWrite?: (ms: number, bytes: number, entries: number, saves: number) => void;
}

export interface SaveRequest {
  hardState?: HardState;
  entries: Entry[];
  /** A snapshot received from the leader: it replaces the whole log (see `save`). */
  snapshot?: Snapshot;
}

export interface StorageStats {
  /** Synced batches written. */
  batches: number;
  /** save()/saveSnapshot() calls accepted. */
  saves: number;
  entriesWritten: number;
  bytesWritten: number;
}

type DB = Level<Buffer, Buffer>;
type BatchOp = { type: 'put'; key: Buffer; value: Buffer } | { type: 'del'; key: Buffer };

const KEY_META = Buffer.from('m');
const KEY_HARD = Buffer.from('h');
const KEY_SNAP_META = Buffer.from('s');
const KEY_SNAP_DATA = Buffer.from('d');
const SNAP_CHUNK_PREFIX = 0x44; // 'D'
const SNAP_CHUNK_RANGE = { gte: Buffer.from([SNAP_CHUNK_PREFIX]), lt: Buffer.from([SNAP_CHUNK_PREFIX + 1]) };
/**
 * Snapshot data larger than this is written as chunks, one synced write each, before the batch
 * that records the snapshot: one LevelDB write of 100 MB copies it on the event loop at once.
 */
export const SNAP_CHUNK_BYTES = 1024 * 1024;
const ENTRY_PREFIX = 0x65; // 'e'
const ENTRY_RANGE = { gte: Buffer.from([ENTRY_PREFIX]), lt: Buffer.from([ENTRY_PREFIX + 1]) };

// Plain MessagePack (no msgpackr record extension), so the files stay readable by any decoder.
const packr = new Packr({ useRecords: false, int64AsType: 'number' });

function entryKey(index: number): Buffer {
  const k = Buffer.allocUnsafe(9);
  k[0] = ENTRY_PREFIX;
  k.writeUInt32BE(Math.floor(index / 0x1_0000_0000), 1); // u64 big-endian without a BigInt
  k.writeUInt32BE(index >>> 0, 5);
  return k;
}

function snapChunkPrefix(index: number): Buffer {
  const k = Buffer.allocUnsafe(9);
  k[0] = SNAP_CHUNK_PREFIX;
  k.writeBigUInt64BE(BigInt(index), 1);
  return k;
}

function snapChunkKey(index: number, n: number): Buffer {
  const k = Buffer.allocUnsafe(13);
  snapChunkPrefix(index).copy(k);
  k.writeUInt32BE(n, 9);
  return k;
}

/** The key range holding the chunks of the snapshot at `index`. */
function snapChunkRange(index: number): { gte: Buffer; lt: Buffer } {
  return { gte: snapChunkKey(index, 0), lt: snapChunkPrefix(index + 1) };
}

function entryIndexOf(key: Buffer): number {
  return Number(key.readBigUInt64BE(1));
}

function levelOptions() {
  return { keyEncoding: 'buffer', valueEncoding: 'buffer' } as const;
}

/** Directories opened by a RaftStorage of this process (real paths). */
const openDirs = new Set<string>();

export class RaftStorage {
  private db: DB;
  private closed = false;
  /** Set when a batch write failed: the in-memory view of the disk can no longer be trusted. */
  private failure: Error | null = null;

  // The log as it will be once every accepted save is durable (written or pending).
  private snapIndex: number;
  private snapTerm: number;
  private last: number;
  /** Current term of the latest hard state (null until one is saved). */
  private hsTerm: number | null;

  private pending: PendingGroup | null = null;
  private writing: Promise<void> | null = null;
  /** Large application snapshots whose chunks are being written outside the write queue. */
  private readonly chunkWrites = new Set<Promise<void>>();
  /** Range clears of entries covered by a recorded snapshot (see `clearCovered`). */
  private readonly clears = new Set<Promise<void>>();
  /** Bumped by every accepted snapshot: a chunked one finishing late yields to a newer one. */
  private snapGen = 0;
  /** First entry a chunked snapshot still has to delete on disk (null: none pending). */
  private pendingDeleteFrom: number | null = null;
  private readonly counters: StorageStats = { batches: 0, saves: 0, entriesWritten: 0, bytesWritten: 0 };
  /** How the directory was found: 'absent' or 'empty' when this open created the store. */
  readonly foundAs: 'absent' | 'empty' | 'existing';

  private constructor(
    readonly path: string,
    private readonly key: string,
    db: DB,
    private storedMeta: StorageMeta,
    bounds: Bounds,
    foundAs: 'absent' | 'empty' | 'existing',
    private readonly onWrite?: RaftStorageOptions['onWrite'],
  ) {
    this.foundAs = foundAs;
    this.db = db;
    this.snapIndex = bounds.snapIndex;
    this.snapTerm = bounds.snapTerm;
    this.last = bounds.last;
    this.hsTerm = bounds.hsTerm;
  }

  /**
   * Opens (or creates) the raft store of node `opts.nodeId` in `dir`.
   *
   * An absent or empty directory becomes a new store. Anything else must be a healthy flotilla
   * store of this node; otherwise a StorageError is thrown and the directory is left untouched.
   */
  static async open(dir: string, opts: RaftStorageOptions): Promise<RaftStorage> {
    if (!opts.nodeId && !opts.anyNode) throw new StorageError('invalid', dir, 'RaftStorage.open: nodeId is required');
    const abs = path.resolve(dir);
    let state: 'absent' | 'empty' | 'existing' | 'created' = await inspectDir(abs);
    const foundAs = state as 'absent' | 'empty' | 'existing';
    if (opts.anyNode && state !== 'existing') throw new StorageError('foreign', abs, `${abs} holds no raft data (${state === 'absent' ? 'no such directory' : 'empty directory'})`);
    if (state === 'absent') state = await createFresh(abs, opts);

    const key = await fsp.realpath(abs).catch(() => abs);
    if (openDirs.has(key)) {
      throw new StorageError('locked', abs, `raft storage ${abs} is already open in this process`);
    }
    openDirs.add(key);
    try {
      if (state === 'empty') await createInPlace(abs, opts);
      else if (state === 'existing') await verifyExisting(abs, opts);

      const db: DB = new Level<Buffer, Buffer>(abs, levelOptions());
      try {
        await db.open({ createIfMissing: false });
      } catch (err) {
        throw openError(abs, err);
      }
      try {
        const meta = await readMeta(db, abs);
        checkIdentity(meta, abs, opts);
        let rewrite = false;
        if (opts.clusterId && meta.clusterId === null) {
          // The cluster id is often only known after the node's store was created (join).
          meta.clusterId = opts.clusterId;
          rewrite = true;
        }
        if (!meta.storageId) {
          // A store made before storage ids existed: it gets one now (it is still the same store).
          meta.storageId = newStorageId();
          rewrite = true;
        }
        if (rewrite) await db.put(KEY_META, packr.pack(meta), { sync: true });
        const bounds = await readBounds(db, abs);
        // Entries a recorded snapshot covers, left by a stop before their clear finished.
        if (bounds.snapIndex > 0) await db.clear({ gte: ENTRY_RANGE.gte, lt: entryKey(bounds.snapIndex + 1) });
        return new RaftStorage(abs, key, db, meta, bounds, foundAs === 'existing' ? 'existing' : foundAs, opts.onWrite);
      } catch (err) {
        await db.close().catch(() => {});
        throw err;
      }
    } catch (err) {
      openDirs.delete(key);
      throw err;
    }
  }

  get meta(): StorageMeta {
    return { ...this.storedMeta };
  }

  /**
   * Records a new cluster id in the meta record (a node adopting its cluster's id when it joins,
   * or `manager recover` starting a new cluster epoch). Ordered with the saves around it.
   */
  setClusterId(clusterId: string | null): Promise<void> {
    try {
      this.assertUsable();
      this.storedMeta = { ...this.storedMeta, clusterId };
      this.group().put(KEY_META, packr.pack(this.storedMeta));
      return this.enqueue(this.group());
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Index of the last log entry (or of the snapshot when the log is empty), including pending saves. */
  get lastIndex(): number {
    return this.last;
  }

  /** Index of the latest snapshot (0 for none), including pending saves. */
  get snapshotIndex(): number {
    return this.snapIndex;
  }

  stats(): StorageStats {
    return { ...this.counters };
  }

  /** Reads and validates everything persisted. */
  async load(): Promise<PersistedState & { meta: StorageMeta }> {
    this.assertUsable();
    await this.idle();
    return readState(this.db, this.path, { snapshotData: true });
  }

  /**
   * Persists one Ready: hard state, snapshot and entries, in one atomic synced batch (possibly
   * shared with concurrent calls).
   *
   * - `entries[0].index` truncates: persisted entries at or after it are replaced or deleted.
   * - `snapshot` is one received from the leader (the core's log restore): it replaces the whole
   *   log, so every persisted entry is deleted, including any after the snapshot index; `entries`
   *   of the same call then continue after the snapshot.
   *
   * Calls are applied in call order. The promise resolves once the data is on disk.
   */
  save(rd: SaveRequest): Promise<void> {
    try {
      this.assertUsable();
      // Operations are staged locally and merged into the pending batch only once the whole
      // call has been validated, so a rejected call leaves nothing behind.
      const group = new PendingGroup();
      let snapIndex = this.snapIndex;
      let snapTerm = this.snapTerm;
      let last = this.last;
      if (rd.hardState) checkHardState(rd.hardState, this.path);
      const hsTerm = rd.hardState?.term ?? this.hsTerm;

      if (rd.snapshot) {
        const s = rd.snapshot;
        checkSnapshot(s, this.path);
        if (s.meta.index < snapIndex) {
          throw new StorageError('invalid', this.path, `save: snapshot at ${s.meta.index} is older than the stored snapshot at ${snapIndex}`);
        }
        // Also the entries a chunked snapshot still in flight has not deleted yet.
        for (let i = Math.min(snapIndex + 1, this.pendingDeleteFrom ?? Infinity); i <= last; i++) group.del(entryKey(i));
        group.putSnapshot(s);
        this.snapGen++;
        snapIndex = s.meta.index;
        snapTerm = s.meta.term;
        last = snapIndex;
      }

      const ents = rd.entries ?? [];
      if (ents.length > 0) {
        const first = ents[0]!.index;
        if (first <= snapIndex || first > last + 1) {
          throw new StorageError(
            'invalid',
            this.path,
            `save: entries start at ${first}, but the log holds ${snapIndex + 1}..${last} (must start in ${snapIndex + 1}..${last + 1})`,
          );
        }
        for (let i = 0; i < ents.length; i++) {
          const e = ents[i]!;
          checkEntry(e, this.path);
          if (hsTerm !== null && e.term > hsTerm) {
            throw new StorageError('invalid', this.path, `save: entry ${e.index} has term ${e.term}, beyond the current term ${hsTerm}`);
          }
          if (e.index !== first + i) throw new StorageError('invalid', this.path, `save: entries not contiguous at ${e.index}`);
          if (e.term < (i === 0 ? (first - 1 === snapIndex ? snapTerm : 0) : ents[i - 1]!.term)) {
            throw new StorageError('invalid', this.path, `save: entry ${e.index} has a term lower than its predecessor`);
          }
        }
        const newLast = first + ents.length - 1;
        // Entries [first, newLast] are overwritten by the puts; only the old tail beyond them is deleted.
        for (let i = newLast + 1; i <= last; i++) group.del(entryKey(i));
        for (const e of ents) group.putEntry(e);
        last = newLast;
      }

      if (rd.hardState) {
        const hs = rd.hardState;
        if (hs.commit > last) {
          throw new StorageError('invalid', this.path, `save: commit ${hs.commit} is beyond the last index ${last}`);
        }
        group.put(KEY_HARD, packr.pack({ term: hs.term, vote: hs.vote, commit: hs.commit }));
      }

      this.snapIndex = snapIndex;
      this.snapTerm = snapTerm;
      this.last = last;
      this.hsTerm = hsTerm;
      return this.enqueue(this.group().absorb(group));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * Persists a snapshot made by the application (`core.compact`): entries up to its index are
   * deleted, entries after it are kept.
   */
  saveSnapshot(snap: Snapshot): Promise<void> {
    try {
      this.assertUsable();
      checkSnapshot(snap, this.path);
      const idx = snap.meta.index;
      if (idx < this.snapIndex) {
        throw new StorageError('invalid', this.path, `saveSnapshot: snapshot at ${idx} is older than the stored snapshot at ${this.snapIndex}`);
      }
      const from = Math.min(this.snapIndex + 1, this.pendingDeleteFrom ?? Infinity);
      const to = Math.min(idx, this.last);
      this.snapIndex = idx;
      this.snapTerm = snap.meta.term;
      if (this.last < idx) this.last = idx;
      if (snap.data.length > SNAP_CHUNK_BYTES) return this.saveChunkedSnapshot(snap, from, to);
      this.snapGen++;
      const group = this.group(); // nothing below can fail
      group.putSnapshot(snap);
      const done = this.enqueue(group);
      this.clearCovered(done, from, to);
      return done;
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Waits for pending writes, then closes the database. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.idle().catch(() => {});
    try {
      await this.db.close();
    } finally {
      openDirs.delete(this.key);
    }
  }

  private assertUsable(): void {
    if (this.closed) throw new StorageError('closed', this.path, `raft storage ${this.path} is closed`);
    if (this.failure) {
      throw new StorageError('closed', this.path, `raft storage ${this.path} failed earlier: ${this.failure.message}`, { cause: this.failure });
    }
  }

  private group(): PendingGroup {
    return (this.pending ??= new PendingGroup());
  }

  private enqueue(group: PendingGroup): Promise<void> {
    group.saves++;
    this.counters.saves++;
    const done = new Promise<void>((resolve, reject) => group.waiters.push({ resolve, reject }));
    if (!this.writing) this.writing = this.drain();
    return done;
  }

  /** Writes pending groups one batch at a time until none is left. */
  private async drain(): Promise<void> {
    try {
      while (this.pending) {
        const group = this.pending;
        this.pending = null;
        const ops = group.ops();
        const started = performance.now();
        try {
          // A large snapshot's data first, a chunk per synced write (the batch below, which
          // records the snapshot, makes it reachable); then the chunks of older snapshots go.
          const chunked = group.chunkedSnapshot;
          if (chunked && !chunked.written) {
            const d = chunked.data;
            for (let at = 0, n = 0; at < d.length; at += SNAP_CHUNK_BYTES, n++) {
              const part = d.subarray(at, Math.min(at + SNAP_CHUNK_BYTES, d.length));
              await this.db.put(snapChunkKey(chunked.index, n), Buffer.from(part.buffer, part.byteOffset, part.byteLength), { sync: true });
            }
          }
          // A chained batch: each operation goes to LevelDB's batch as it is added, instead of
          // an array of op objects that is copied, checked and read back property by property.
          const batch = this.db.batch();
          for (const op of ops) {
            if (op.type === 'put') batch.put(op.key, op.value);
            else batch.del(op.key);
          }
          await batch.write({ sync: true });
          if (group.snapshotIndex !== null) {
            const keep = chunked ? snapChunkRange(chunked.index) : null;
            if (keep) {
              await this.db.clear({ gte: SNAP_CHUNK_RANGE.gte, lt: keep.gte });
              await this.db.clear({ gte: keep.lt, lt: SNAP_CHUNK_RANGE.lt });
            } else await this.db.clear(SNAP_CHUNK_RANGE);
          }
        } catch (err) {
          this.failure = err instanceof Error ? err : new Error(String(err));
          const e = new StorageError('io', this.path, `raft storage ${this.path}: synced write failed: ${this.failure.message}`, {
            cause: err,
          });
          for (const w of group.waiters) w.reject(e);
          const rest = this.pending as PendingGroup | null;
          this.pending = null;
          for (const w of rest?.waiters ?? []) w.reject(e);
          return;
        }
        const ms = performance.now() - started;
        this.counters.batches++;
        this.counters.entriesWritten += group.entries;
        this.counters.bytesWritten += group.bytes;
        try {
          this.onWrite?.(ms, group.bytes, group.entries, group.saves);
        } catch {
          // A metrics hook must not break durability reporting.
        }
        for (const w of group.waiters) w.resolve();
      }
    } finally {
      this.writing = null;
    }
  }

  private async idle(): Promise<void> {
    while (this.writing || this.chunkWrites.size > 0 || this.clears.size > 0) {
      if (this.writing) await this.writing;
      for (const w of [...this.chunkWrites]) await w.catch(() => {});
      for (const c of [...this.clears]) await c;
    }
  }

  /**
   * Once `recorded` (the batch recording a snapshot taken by the application) is durable, deletes
   * the entries from..to it covers with one range clear, in LevelDB's thread: nothing is built on
   * the event loop per entry. Runs beside the write queue: later saves only touch entries after
   * the snapshot. A clear that fails leaves entries that are skipped on reading and cleared again
   * at the next open.
   */
  private clearCovered(recorded: Promise<void>, from: number, to: number): void {
    if (from > to) return;
    const task = recorded.then(
      () => this.db.clear({ gte: entryKey(from), lt: entryKey(to + 1) }),
      () => undefined,
    ).catch(() => undefined);
    this.clears.add(task);
    void task.then(() => this.clears.delete(task));
  }

  /**
   * A large application snapshot: its chunks are written (synced, one by one) beside the write
   * queue, so log entries keep being persisted meanwhile; then one queued batch deletes the
   * entries it covers and records it. Safe to reorder: later saves only touch entries after
   * `idx` (checked against the snapshot index, updated now), and a newer snapshot accepted in
   * the meantime wins (this one then only deletes its entries; its chunks are cleared later).
   */
  private saveChunkedSnapshot(snap: Snapshot, from: number, to: number): Promise<void> {
    const gen = ++this.snapGen;
    this.pendingDeleteFrom = Math.min(from, this.pendingDeleteFrom ?? Infinity);
    const task = (async () => {
      const d = snap.data;
      for (let at = 0, n = 0; at < d.length; at += SNAP_CHUNK_BYTES, n++) {
        this.assertUsable();
        const part = d.subarray(at, Math.min(at + SNAP_CHUNK_BYTES, d.length));
        try {
          await this.db.put(snapChunkKey(snap.meta.index, n), Buffer.from(part.buffer, part.byteOffset, part.byteLength), { sync: true });
        } catch (err) {
          this.failure ??= err instanceof Error ? err : new Error(String(err));
          throw new StorageError('io', this.path, `raft storage ${this.path}: synced write failed: ${this.failure.message}`, { cause: err });
        }
      }
      this.assertUsable();
      const group = this.group();
      if (gen === this.snapGen) group.putSnapshot(snap, true);
      if (this.chunkWrites.size <= 1) this.pendingDeleteFrom = null; // the last one in flight
      const done = this.enqueue(group);
      this.clearCovered(done, from, to);
      await done;
    })();
    this.chunkWrites.add(task);
    void task.then(
      () => this.chunkWrites.delete(task),
      () => this.chunkWrites.delete(task),
    );
    return task;
  }
}

/**
 * The operations of the save calls merged into one batch, in call order: LevelDB applies a
 * batch in order, so a later operation on a key wins.
 */
class PendingGroup {
  private readonly list: BatchOp[] = [];
  readonly waiters: { resolve: () => void; reject: (e: unknown) => void }[] = [];
  saves = 0;
  entries = 0;
  bytes = 0;
  /** Index of the snapshot this group records, if any (the latest one when merged). */
  snapshotIndex: number | null = null;
  /** That snapshot's data when it is written as chunks. */
  chunkedSnapshot: { index: number; data: Uint8Array; written: boolean } | null = null;

  put(key: Buffer, value: Buffer): void {
    this.list.push({ type: 'put', key, value });
    this.bytes += key.length + value.length;
  }

  del(key: Buffer): void {
    this.list.push({ type: 'del', key });
  }

  putEntry(e: Entry): void {
    this.put(entryKey(e.index), packr.pack([e.term, e.type, e.data]));
    this.entries++;
  }

  /** `chunksWritten`: the data's chunks are already on disk (see saveChunkedSnapshot). */
  putSnapshot(s: Snapshot, chunksWritten = false): void {
    this.put(KEY_SNAP_META, packr.pack(snapshotMetaRecord(s.meta)));
    this.snapshotIndex = s.meta.index;
    if (s.data.length > SNAP_CHUNK_BYTES) {
      // Written as chunks before this group's batch (see drain); 'd' must not shadow them.
      this.del(KEY_SNAP_DATA);
      this.chunkedSnapshot = { index: s.meta.index, data: s.data, written: chunksWritten };
      this.bytes += s.data.length;
    } else {
      this.put(KEY_SNAP_DATA, Buffer.from(s.data.buffer, s.data.byteOffset, s.data.byteLength));
      this.chunkedSnapshot = null;
    }
  }

  /** Appends the operations of `other` (a later call) to this group. */
  absorb(other: PendingGroup): this {
    for (const op of other.list) this.list.push(op);
    if (other.snapshotIndex !== null) {
      this.snapshotIndex = other.snapshotIndex;
      this.chunkedSnapshot = other.chunkedSnapshot;
    }
    this.entries += other.entries;
    this.bytes += other.bytes;
    return this;
  }

  ops(): BatchOp[] {
    return this.list;
  }
}

function snapshotMetaRecord(m: SnapshotMeta): SnapshotMeta {
  return { index: m.index, term: m.term, conf: { voters: [...m.conf.voters], learners: [...m.conf.learners] } };
}

// ---------------------------------------------------------------------------------------------
// Validation of what is written and what is read back.

function isIndex(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
}

function checkEntry(e: Entry, p: string): void {
  if (!isIndex(e.index) || e.index < 1 || !isIndex(e.term) || (e.type !== 0 && e.type !== 1) || !(e.data instanceof Uint8Array)) {
    throw new StorageError('invalid', p, `save: malformed entry ${JSON.stringify({ index: e.index, term: e.term, type: e.type })}`);
  }
}

function checkHardState(hs: HardState, p: string): void {
  if (!isIndex(hs.term) || !isIndex(hs.commit) || !(hs.vote === null || typeof hs.vote === 'string')) {
    throw new StorageError('invalid', p, `save: malformed hard state ${JSON.stringify(hs)}`);
  }
}

function isConf(c: unknown): c is ConfState {
  const o = c as ConfState;
  return (
    typeof o === 'object' &&
    o !== null &&
    Array.isArray(o.voters) &&
    Array.isArray(o.learners) &&
    o.voters.every((v) => typeof v === 'string') &&
    o.learners.every((v) => typeof v === 'string')
  );
}

function checkSnapshot(s: Snapshot, p: string): void {
  if (!s || !s.meta || !isIndex(s.meta.index) || !isIndex(s.meta.term) || !isConf(s.meta.conf) || !(s.data instanceof Uint8Array)) {
    throw new StorageError('invalid', p, 'save: malformed snapshot');
  }
}

function corrupt(p: string, what: string): StorageError {
  return new StorageError('corrupt', p, `corrupt raft log in ${p}: ${what}`);
}

function decode(value: Buffer, p: string, what: string): unknown {
  try {
    return packr.unpack(value);
  } catch (err) {
    throw new StorageError('corrupt', p, `corrupt raft log in ${p}: undecodable ${what}: ${(err as Error).message}`, { cause: err });
  }
}

async function readMeta(db: DB, p: string): Promise<StorageMeta> {
  const raw = await db.get(KEY_META);
  if (raw === undefined) {
    throw new StorageError(
      'foreign',
      p,
      `${p} is a LevelDB database without a flotilla meta record: not a flotilla raft store ` +
        `(or an interrupted initialization; remove it to re-create this node's store); refusing to use it`,
    );
  }
  let m: unknown;
  try {
    m = packr.unpack(raw);
  } catch {
    m = undefined;
  }
  const meta = m as Partial<StorageMeta> | undefined;
  if (!meta || typeof meta !== 'object' || meta.format !== STORAGE_FORMAT) {
    throw new StorageError('foreign', p, `${p} holds a LevelDB database of another format (meta record is not ${STORAGE_FORMAT}); refusing to use it`);
  }
  if (meta.version !== STORAGE_VERSION) {
    throw new StorageError('foreign', p, `${p} holds flotilla raft storage version ${String(meta.version)}, this build reads version ${STORAGE_VERSION}`);
  }
  if (typeof meta.nodeId !== 'string' || !(meta.clusterId === null || typeof meta.clusterId === 'string' || meta.clusterId === undefined)) {
    throw corrupt(p, 'malformed meta record');
  }
  if (!(meta.storageId === undefined || typeof meta.storageId === 'string')) throw corrupt(p, 'malformed meta record');
  return { format: STORAGE_FORMAT, version: STORAGE_VERSION, nodeId: meta.nodeId, clusterId: meta.clusterId ?? null, storageId: meta.storageId ?? '' };
}

function checkIdentity(meta: StorageMeta, p: string, opts: RaftStorageOptions): void {
  if (meta.nodeId !== opts.nodeId && !opts.anyNode) {
    throw new StorageError('wrong_node', p, `${p} holds the raft data of node '${meta.nodeId}', not of node '${opts.nodeId}'; refusing to use it`);
  }
  if (opts.clusterId && meta.clusterId !== null && meta.clusterId !== opts.clusterId) {
    throw new StorageError(
      'wrong_cluster',
      p,
      `${p} holds the raft data of cluster '${meta.clusterId}', not of cluster '${opts.clusterId}'; refusing to use it`,
    );
  }
}

function decodeSnapshotMeta(raw: Buffer, p: string): SnapshotMeta {
  const m = decode(raw, p, 'snapshot metadata') as SnapshotMeta;
  if (!m || typeof m !== 'object' || !isIndex(m.index) || !isIndex(m.term) || !isConf(m.conf)) throw corrupt(p, 'malformed snapshot metadata');
  return { index: m.index, term: m.term, conf: { voters: m.conf.voters, learners: m.conf.learners } };
}

interface Bounds {
  snapIndex: number;
  snapTerm: number;
  last: number;
  hsTerm: number | null;
}

async function readBounds(db: DB, p: string): Promise<Bounds> {
  const hsRaw = await db.get(KEY_HARD);
  const hsTerm = hsRaw === undefined ? null : (decode(hsRaw, p, 'hard state') as HardState).term;
  const raw = await db.get(KEY_SNAP_META);
  const sm = raw === undefined ? null : decodeSnapshotMeta(raw, p);
  const snapIndex = sm?.index ?? 0;
  const lastKeys = await db.keys({ ...ENTRY_RANGE, reverse: true, limit: 1 }).all();
  const last = lastKeys.length > 0 ? entryIndexOf(lastKeys[0]!) : snapIndex;
  return { snapIndex, snapTerm: sm?.term ?? 0, last: Math.max(last, snapIndex), hsTerm };
}

/**
 * The data of the snapshot at `index`: the 'd' value, or its chunks in order, copied into one
 * buffer chunk by chunk (each read is asynchronous, so the event loop runs in between).
 */
async function readSnapshotData(db: DB, index: number): Promise<Uint8Array | undefined> {
  const whole = await db.get(KEY_SNAP_DATA);
  if (whole !== undefined) return whole;
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const [key, value] of db.iterator(snapChunkRange(index))) {
    if (key.length !== 13 || key.readUInt32BE(9) !== n) return undefined; // a chunk is missing
    chunks.push(value);
    n++;
  }
  if (chunks.length === 0) return undefined;
  const out = Buffer.allocUnsafe(chunks.reduce((t, c) => t + c.length, 0));
  let at = 0;
  for (let i = 0; i < chunks.length; i++) {
    chunks[i]!.copy(out, at);
    at += chunks[i]!.length;
    chunks[i] = undefined as unknown as Buffer;
    if (i % 8 === 7) await new Promise<void>((r) => setImmediate(r));
  }
  return out;
}

/** Reads the whole persisted state and checks the log invariants. */
async function readState(db: DB, p: string, opts: { snapshotData: boolean }): Promise<PersistedState & { meta: StorageMeta }> {
  const meta = await readMeta(db, p);

  const hsRaw = await db.get(KEY_HARD);
  let hardState: HardState = { term: 0, vote: null, commit: 0 };
  if (hsRaw !== undefined) {
    const hs = decode(hsRaw, p, 'hard state') as HardState;
    if (!hs || typeof hs !== 'object' || !isIndex(hs.term) || !isIndex(hs.commit) || !(hs.vote === null || typeof hs.vote === 'string')) {
      throw corrupt(p, 'malformed hard state');
    }
    hardState = { term: hs.term, vote: hs.vote, commit: hs.commit };
  }

  let snapshot: Snapshot | null = null;
  const smRaw = await db.get(KEY_SNAP_META);
  if (smRaw !== undefined) {
    const sm = decodeSnapshotMeta(smRaw, p);
    // The verification pass only checks that the (possibly large) data exists.
    const data = opts.snapshotData
      ? await readSnapshotData(db, sm.index)
      : (await db.keys({ gte: KEY_SNAP_DATA, lte: KEY_SNAP_DATA, limit: 1 }).all()).length > 0 ||
          (await db.keys({ ...snapChunkRange(sm.index), limit: 1 }).all()).length > 0
        ? new Uint8Array(0)
        : undefined;
    if (data === undefined) throw corrupt(p, `snapshot ${sm.index} has no data`);
    snapshot = { meta: sm, data };
  }
  const snapIndex = snapshot?.meta.index ?? 0;
  const snapTerm = snapshot?.meta.term ?? 0;

  const entries: Entry[] = [];
  let prevTerm = snapTerm;
  // Entries the snapshot covers may linger (their clear runs after the snapshot is recorded).
  for await (const [key, value] of db.iterator({ gte: entryKey(snapIndex + 1), lt: ENTRY_RANGE.lt })) {
    if (key.length !== 9) throw corrupt(p, `unexpected key ${key.toString('hex')} in the entry range`);
    const index = entryIndexOf(key);
    const expected = snapIndex + 1 + entries.length;
    if (index !== expected) throw corrupt(p, `entries are not contiguous: expected ${expected}, found ${index}`);
    const rec = decode(value, p, `entry ${index}`) as [number, number, Uint8Array];
    if (!Array.isArray(rec) || rec.length !== 3 || !isIndex(rec[0]) || (rec[1] !== 0 && rec[1] !== 1) || !(rec[2] instanceof Uint8Array)) {
      throw corrupt(p, `malformed entry ${index}`);
    }
    const [term, type, data] = rec;
    if (term < prevTerm) throw corrupt(p, `entry ${index} has term ${term}, lower than the term ${prevTerm} before it`);
    prevTerm = term;
    entries.push({ index, term, type, data });
  }

  const lastIndex = snapIndex + entries.length;
  if (hardState.commit > lastIndex) throw corrupt(p, `commit index ${hardState.commit} is beyond the last index ${lastIndex}`);
  if (prevTerm > hardState.term && hsRaw !== undefined) {
    throw corrupt(p, `the log holds term ${prevTerm}, beyond the current term ${hardState.term}`);
  }
  return { hardState, snapshot, entries, meta };
}

// ---------------------------------------------------------------------------------------------
// Opening: directory inspection, creation and the read-only verification of an existing store.

/** LevelDB's own file names; anything else in a LevelDB directory is ignored by it and by us. */
const LEVELDB_FILE = /^(CURRENT|LOCK|LOG|LOG\.old|MANIFEST-\d+|\d+\.(log|ldb|sst|dbtmp))$/;

async function inspectDir(abs: string): Promise<'absent' | 'empty' | 'existing'> {
  let names: string[];
  try {
    const st = await fsp.stat(abs);
    if (!st.isDirectory()) throw new StorageError('foreign', abs, `${abs} exists and is not a directory; refusing to use it as raft storage`);
    // `tls/` holds the node's certificate beside the store (it may be issued before the first start).
    names = (await fsp.readdir(abs)).filter((n) => n !== 'tls');
  } catch (err) {
    if (err instanceof StorageError) throw err;
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'absent';
    throw new StorageError('io', abs, `cannot read ${abs}: ${(err as Error).message}`, { cause: err });
  }
  if (names.length === 0) return 'empty';
  if (!names.includes('CURRENT')) {
    const leveldbish = names.some((n) => n === 'LOCK' || /^MANIFEST-\d+$/.test(n));
    throw new StorageError(
      leveldbish ? 'corrupt' : 'foreign',
      abs,
      leveldbish
        ? `${abs} has LevelDB files but no CURRENT file: corrupt or incompletely initialized store; refusing to open it`
        : `${abs} is not empty and is not a LevelDB directory (no CURRENT file; found ${names.slice(0, 5).join(', ')}${names.length > 5 ? ', …' : ''}); refusing to use it as raft storage`,
    );
  }
  return 'existing';
}

async function writeInitialMeta(db: DB, opts: RaftStorageOptions): Promise<void> {
  const meta: StorageMeta = { format: STORAGE_FORMAT, version: STORAGE_VERSION, nodeId: opts.nodeId, clusterId: opts.clusterId ?? null, storageId: newStorageId() };
  await db.put(KEY_META, packr.pack(meta), { sync: true });
}

/**
 * Creates a new store where there is no directory yet: built in a sibling staging directory and
 * renamed into place, so a crash during creation leaves no half-initialized store behind.
 */
async function createFresh(abs: string, opts: RaftStorageOptions): Promise<'created' | 'empty' | 'existing'> {
  const parent = path.dirname(abs);
  try {
    await fsp.mkdir(parent, { recursive: true });
  } catch (err) {
    throw new StorageError('io', abs, `cannot create ${parent}: ${(err as Error).message}`, { cause: err });
  }
  let staging: string;
  try {
    staging = await fsp.mkdtemp(path.join(parent, `.${path.basename(abs)}.flotilla-init-`));
  } catch (err) {
    throw new StorageError('io', abs, `cannot create raft storage next to ${abs}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const db: DB = new Level<Buffer, Buffer>(staging, levelOptions());
    await db.open({ createIfMissing: true, errorIfExists: true });
    try {
      await writeInitialMeta(db, opts);
    } finally {
      await db.close();
    }
    await fsp.rename(staging, abs);
    await fsyncDir(parent);
    return 'created';
  } catch (err) {
    await fsp.rm(staging, { recursive: true, force: true }).catch(() => {});
    if (err instanceof StorageError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    // Someone created the directory meanwhile: let the normal checks decide about it.
    if (code === 'ENOTEMPTY' || code === 'EEXIST') {
      const state = await inspectDir(abs);
      if (state !== 'absent') return state;
    }
    throw new StorageError('io', abs, `cannot create raft storage ${abs}: ${(err as Error).message}`, { cause: err });
  }
}

/** Creates a new store inside an existing empty directory (kept: it may be a mount point). */
async function createInPlace(abs: string, opts: RaftStorageOptions): Promise<void> {
  const db: DB = new Level<Buffer, Buffer>(abs, levelOptions());
  try {
    await db.open({ createIfMissing: true, errorIfExists: true });
  } catch (err) {
    throw openError(abs, err);
  }
  try {
    await writeInitialMeta(db, opts);
  } finally {
    await db.close();
  }
}

async function fsyncDir(dir: string): Promise<void> {
  let fh: FileHandle | undefined;
  try {
    fh = await fsp.open(dir, 'r');
    await fh.sync();
  } catch {
    // Not every platform can fsync a directory; the rename itself is still atomic.
  } finally {
    await fh?.close().catch(() => {});
  }
}

function levelCode(err: unknown): string | undefined {
  const e = err as { code?: string; cause?: { code?: string } };
  return e?.cause?.code ?? e?.code;
}

function levelMessage(err: unknown): string {
  const e = err as { message?: string; cause?: { message?: string } };
  return e?.cause?.message ?? e?.message ?? String(err);
}

/** Maps a LevelDB open failure on `abs` (possibly reported on its scratch copy `shown`) to a StorageError. */
function openError(abs: string, err: unknown, scratch?: string): StorageError {
  const code = levelCode(err);
  let msg = levelMessage(err);
  if (scratch) msg = msg.split(scratch).join(abs);
  if (isNoSpace(err) || /no space left on device/i.test(msg)) return noSpace(abs, err);
  if (code === 'LEVEL_LOCKED' || /\block\b.*(already held|temporarily unavailable)/i.test(msg)) {
    return new StorageError('locked', abs, `another flotilla process is using ${abs} (LevelDB lock is held)`, { cause: err });
  }
  if (code === 'LEVEL_CORRUPTION' || /corruption/i.test(msg)) {
    return new StorageError('corrupt', abs, `corrupt LevelDB in ${abs}: ${msg}; refusing to open it (it was not repaired)`, { cause: err });
  }
  return new StorageError('corrupt', abs, `cannot open LevelDB in ${abs}: ${msg} (the directory looks corrupt; nothing was changed)`, { cause: err });
}

function isNoSpace(err: unknown): boolean {
  const e = err as { code?: string; message?: string; cause?: { code?: string; message?: string } };
  return e?.code === 'ENOSPC' || e?.cause?.code === 'ENOSPC' || /no space left on device|ENOSPC/i.test(`${e?.message ?? ''} ${e?.cause?.message ?? ''}`);
}

/** The refusal of a store that could not be opened because its file system is full. */
function noSpace(abs: string, err: unknown): StorageError {
  return new StorageError(
    'io',
    abs,
    `no space left on device: the file system holding ${abs} is full, so the manager cannot start (opening the store needs room for its ` +
      `files and a scratch copy to verify it). Free some space and start again; the data in ${abs} was not changed`,
    { cause: err },
  );
}

/**
 * Checks an existing directory without modifying it. LevelDB changes files even when an open
 * fails (it rotates its LOG, rewrites the MANIFEST, converts logs into tables), so the checks run
 * on a scratch copy: immutable table files are hard-linked, mutable ones copied.
 *
 *  1. Lock probe: the scratch holds only a hard link of LOCK. LevelDB locks with fcntl, which
 *     locks the inode, so opening the scratch fails with LEVEL_LOCKED if another process holds
 *     the original's lock (and otherwise fails harmlessly because there is no CURRENT).
 *  2. The copy is opened: corruption that LevelDB reports is fatal, and so is any log record it
 *     silently dropped (it writes "dropping N bytes" to its info LOG when it skips a damaged
 *     record).
 *  3. The meta record is checked (foreign store, other node, other cluster), then the raft log.
 */
async function verifyExisting(abs: string, opts: RaftStorageOptions): Promise<void> {
  const scratch = await makeScratch(abs);
  try {
    // 1. Lock probe.
    const linkedLock = await fsp.link(path.join(abs, 'LOCK'), path.join(scratch, 'LOCK')).then(
      () => true,
      () => false,
    );
    if (linkedLock) {
      const probe: DB = new Level<Buffer, Buffer>(scratch, levelOptions());
      try {
        await probe.open({ createIfMissing: false });
        await probe.close(); // unexpected (there is no CURRENT), harmless
      } catch (err) {
        const e = openError(abs, err, scratch);
        if (e.code === 'locked') throw e;
      }
    }

    // 2. Copy the store and open the copy.
    let names: string[];
    try {
      names = await fsp.readdir(abs);
    } catch (err) {
      throw new StorageError('io', abs, `cannot read ${abs}: ${(err as Error).message}`, { cause: err });
    }
    for (const name of names) {
      if (!LEVELDB_FILE.test(name) || name === 'LOCK' || name === 'LOG' || name === 'LOG.old') continue;
      const from = path.join(abs, name);
      const to = path.join(scratch, name);
      try {
        if (/\.(ldb|sst)$/.test(name)) await fsp.link(from, to).catch(() => fsp.copyFile(from, to));
        else await fsp.copyFile(from, to);
      } catch (err) {
        if (isNoSpace(err)) throw noSpace(abs, err);
        throw new StorageError('io', abs, `cannot copy ${from} to verify it: ${(err as Error).message}`, { cause: err });
      }
    }
    await fsp.rm(path.join(scratch, 'LOG'), { force: true });
    await fsp.rm(path.join(scratch, 'LOG.old'), { force: true });

    const db: DB = new Level<Buffer, Buffer>(scratch, levelOptions());
    try {
      await db.open({ createIfMissing: false });
    } catch (err) {
      throw openError(abs, err, scratch);
    }
    try {
      const info = await fsp.readFile(path.join(scratch, 'LOG'), 'utf8').catch(() => '');
      const dropped = info.split('\n').find((l) => /dropping \d+ bytes/.test(l));
      if (dropped) {
        const detail = dropped.replace(/^\S+ \S+ /, '').split(scratch).join(abs);
        throw new StorageError('corrupt', abs, `corrupt LevelDB in ${abs}: damaged log records (${detail}); refusing to open it (it was not repaired)`);
      }
      // 3. Identity, then the raft log itself.
      const meta = await readMeta(db, abs);
      checkIdentity(meta, abs, opts);
      const st = await readState(db, abs, { snapshotData: opts.check !== undefined });
      // 4. The caller's checks of the content (the snapshot decodes, …).
      if (opts.check) {
        try {
          opts.check(st);
        } catch (err) {
          throw new StorageError('corrupt', abs, `corrupt raft data in ${abs}: ${(err as Error).message}; refusing to open it (nothing was changed)`, { cause: err });
        }
      }
    } catch (err) {
      if (err instanceof StorageError) throw err;
      throw new StorageError('corrupt', abs, `corrupt LevelDB in ${abs}: ${levelMessage(err).split(scratch).join(abs)}`, { cause: err });
    } finally {
      await db.close().catch(() => {});
    }
  } finally {
    await fsp.rm(scratch, { recursive: true, force: true }).catch(() => {});
  }
}

/** A scratch directory on the same file system as `abs` if possible (so hard links work). */
async function makeScratch(abs: string): Promise<string> {
  try {
    return await fsp.mkdtemp(path.join(path.dirname(abs), `.${path.basename(abs)}.flotilla-verify-`));
  } catch {
    try {
      return await fsp.mkdtemp(path.join(os.tmpdir(), 'flotilla-verify-'));
    } catch (err) {
      if (isNoSpace(err)) throw noSpace(abs, err);
      throw new StorageError('io', abs, `cannot create a scratch directory to verify ${abs}: ${(err as Error).message}`, { cause: err });
    }
  }
}
