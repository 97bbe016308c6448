// Operations: backups (GET /v1/snapshot and the offline restore), quorum-loss recovery (the
// offline `manager recover` rewrite and the cluster id that fences the old members), Prometheus
// metrics (/metrics) and request logs. See docs/operations.md.
//
// Cluster identity. A store's meta record holds a cluster id `e<epoch>-<random>` (null for a
// cluster bootstrapped before it had one: epoch 0). The id is claimed and proved in the Raft
// transport handshake, so managers of different clusters refuse each other. `manager recover`
// and `snapshot restore` create a new cluster with the next epoch; a fresh manager that joins
// adopts the id of the leader that first contacts it; an old member that meets a member of its
// own configuration in a newer epoch learns that its cluster was rebuilt without it and stops
// (its data is obsolete).
import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { Packr, pack, unpack } from 'msgpackr';
import type { LeaderForward, ReadBarrier, RouteTable, StateView } from './ports.js';
import type { Logger } from '../log.js';
import { ClusterState } from './state.js';
import { FlotillaError } from '../protocol/errors.js';
import { Reply } from './http.js';
// Type only: prom-client is loaded by createOps, so CLI commands do not pay for it.
import type { ManagerMetrics } from './metrics.js';
import { RaftStorage, StorageError } from '../raft/storage.js';
import type { RaftNode } from '../raft/node.js';
import type { PeerTransportOptions } from '../raft/transport.js';
import { decodeConfChange } from '../raft/core.js';
import { EntryType, type NodeId, type PersistedState } from '../raft/types.js';

export { clusterEpoch } from './cluster-id.js';
import { clusterEpoch } from './cluster-id.js';

// ---------------------------------------------------------------------------------------------
// Runtime: what Manager.start wires in.

/** The node-level snapshot data RaftNode writes (see RaftNode.snapshotNow / restoreSnapshot). */
interface NodeSnapshot {
  members: Record<NodeId, string>;
  removed?: NodeId[];
  app: Uint8Array;
}

export class Ops {
  private storage: RaftStorage | null = null;
  private fenced = false;
  private readonly warned = new Set<string>();

  constructor(
    readonly id: NodeId,
    private readonly log: Logger,
    readonly metrics: ManagerMetrics,
  ) {}

  /** This manager's cluster id (null: none recorded). */
  clusterId(): string | null {
    return this.storage?.meta.clusterId ?? null;
  }

  /** Called once storage is loaded and the node built: returns the transport's cluster hooks. */
  raftHooks(
    storage: RaftStorage,
    node: RaftNode,
    persisted: PersistedState,
  ): Pick<PeerTransportOptions, 'clusterId' | 'adoptClusterId' | 'onForeignCluster'> {
    this.storage = storage;
    if (persisted.snapshot) this.metrics.snapshotBytes.set(persisted.snapshot.data.length);
    return {
      clusterId: () => storage.meta.clusterId,
      adoptClusterId: (cid) => {
        // Only a store that never took part in any cluster (a fresh --join) adopts an id.
        if (storage.meta.clusterId !== null || !isClusterId(cid)) return false;
        const st = node.status();
        if (st.term !== 0 || st.lastIndex !== 0 || st.snapshotIndex !== 0) return false;
        storage.setClusterId(cid).catch((e: unknown) => this.log.error('cannot record the cluster id', { err: String(e) }));
        this.log.info(`joining cluster ${cid}`, { clusterId: cid });
        return true;
      },
      onForeignCluster: (peer, cid) => {
        this.metrics.foreignPeers.inc();
        const mine = storage.meta.clusterId;
        if (!this.fenced && clusterEpoch(cid) > clusterEpoch(mine) && node.members.has(peer)) {
          this.fenced = true;
          const e = new Error(
            `this manager's data belongs to cluster ${mine ?? '(no id, epoch 0)'}, but manager ${peer} of its configuration now runs ` +
              `cluster ${cid} (epoch ${clusterEpoch(cid)}), rebuilt by \`flotilla manager recover\` or \`flotilla snapshot restore\`: ` +
              `the data in ${storage.path} is obsolete. Stopping. Move it aside, start this manager empty with --join and add it ` +
              `with \`flotilla manager add\` (see docs/operations.md)`,
          );
          this.log.error(e.message, { peer, clusterId: cid });
          void node.stop();
          node.emit('fatal', e);
          return;
        }
        const key = `${peer}/${cid}`;
        if (this.warned.has(key)) return;
        this.warned.add(key);
        this.log.warn(`manager ${peer} belongs to another cluster (${cid ?? 'no id'}; this one: ${mine ?? 'no id'}): its connections are refused`, { peer });
      },
    };
  }
}

export async function createOps(id: NodeId, log: Logger): Promise<Ops> {
  const { ManagerMetrics } = await import('./metrics.js');
  return new Ops(id, log, new ManagerMetrics());
}

/** Routes and hooks: /metrics, GET /v1/snapshot, request metrics and logs, Raft and scheduler counters. */
export interface OpsDeps {
  id: NodeId;
  routes: RouteTable;
  node: RaftNode;
  state: StateView;
  reads: ReadBarrier;
  writes: LeaderForward;
  /** Worker sessions connected here (the dispatcher). */
  sessionCount: () => number;
}

export function registerOps(m: OpsDeps, ops: Ops, log: Logger): void {
  const metrics = ops.metrics;
  metrics.bind(m, () => ops.clusterId());

  m.routes.router.observe = (r) => {
    metrics.onRequest(r);
    if (r.status >= 500 && r.status !== 503) log.warn('request failed', { rid: r.requestId, method: r.method, route: r.route, status: r.status, ms: Math.round(r.ms) });
    else log.debug('request', { rid: r.requestId, method: r.method, route: r.route, status: r.status, ms: Math.round(r.ms * 10) / 10 });
  };
  m.node.on('leader', () => metrics.leaderChanges.inc());
  m.node.on('snapshot-taken', (_index: number, bytes: number) => {
    metrics.snapshotBytes.set(bytes);
    metrics.snapshots.inc({ kind: 'taken' });
  });
  m.node.on('snapshot-restored', (_index: number, bytes?: number) => {
    if (typeof bytes === 'number') metrics.snapshotBytes.set(bytes);
    metrics.snapshots.inc({ kind: 'restored' });
  });
  m.state.onEvent((ev) => {
    // The leader's node monitor is what declares a node down, after its heartbeats stopped.
    if (ev.type === 'node.updated' && ev.change === 'status' && ev.node.status === 'down' && ev.prevStatus !== 'down' && m.node.isLeader()) {
      metrics.heartbeatsMissed.inc();
      return;
    }
    if (ev.type !== 'task.updated' || ev.change !== 'state' || ev.prevState !== 'pending' || ev.task.state !== 'assigned') return;
    if (!m.node.isLeader()) return;
    metrics.placements.inc();
    const t = m.state.getTask(ev.task.id);
    const h = t?.history ?? [];
    for (let i = h.length - 2; i >= 0; i--) {
      if (h[i]!.state === 'pending') {
        if (ev.at !== null) metrics.schedulingSeconds.observe(Math.max(0, ev.at - h[i]!.at) / 1000);
        break;
      }
    }
  });

  m.routes.router.on('GET', '/metrics', async () => {
    const text = await metrics.registry.metrics();
    return new Reply(200, text, { 'content-type': metrics.registry.contentType });
  });

  // A consistent backup of the replicated state, taken on the leader after a read barrier.
  m.routes.router.on('GET', '/v1/snapshot', (ctx) =>
    m.writes.onLeader(ctx, async () => {
      await m.reads.linearizable();
      const index = m.node.appliedIndex();
      const st = m.node.status();
      const backup: Backup = {
        format: BACKUP_FORMAT,
        v: 1,
        clusterId: ops.clusterId(),
        index,
        term: m.node.core.termAt(index) ?? st.term,
        currentTerm: st.term,
        members: Object.fromEntries(m.node.members),
        removed: [...m.node.removed],
        createdAt: Date.now(),
        manager: m.id,
        state: m.state.snapshot(),
      };
      const file = encodeBackup(backup);
      log.info('backup served', { rid: ctx.requestId, index, bytes: file.bytes.length, sha256: file.sha256 });
      return new Reply(200, file.bytes, {
        'content-type': 'application/octet-stream',
        'x-flotilla-snapshot-index': String(index),
        'x-flotilla-snapshot-sha256': file.sha256,
      });
    }),
  );
}

// ---------------------------------------------------------------------------------------------
// Backup file format:
//   "FLOTILLA-BACKUP\n"  16-byte magic
//   u64 big-endian       length L of the body
//   body                 L bytes: MessagePack of Backup
//   sha256(body)         32 bytes

export const BACKUP_FORMAT = 'flotilla-backup';
const MAGIC = Buffer.from('FLOTILLA-BACKUP\n', 'latin1');
const HEADER = MAGIC.length + 8;
const DIGEST = 32;
const packr = new Packr({ useRecords: false, int64AsType: 'number' });

export interface Backup {
  format: typeof BACKUP_FORMAT;
  v: 1;
  /** Cluster the backup was taken from (null: none recorded). */
  clusterId: string | null;
  /** Log index the state reflects. */
  index: number;
  /** Term of the entry at `index`. */
  term: number;
  /** The leader's term when the backup was taken. */
  currentTerm: number;
  members: Record<NodeId, string>;
  removed: NodeId[];
  createdAt: number;
  /** Manager that served it (the leader). */
  manager: NodeId;
  /** ClusterState.snapshot() bytes. */
  state: Uint8Array;
}

export function encodeBackup(b: Backup): { bytes: Buffer; sha256: string } {
  const body = packr.pack(b);
  const len = Buffer.alloc(8);
  len.writeBigUInt64BE(BigInt(body.length));
  const digest = createHash('sha256').update(body).digest();
  return { bytes: Buffer.concat([MAGIC, len, body, digest]), sha256: digest.toString('hex') };
}

/** Parses and verifies a backup file's bytes; throws a FlotillaError saying what is wrong. */
export function decodeBackup(buf: Uint8Array, name = 'the backup'): Backup & { sha256: string; bytes: number } {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const bad = (msg: string) => new FlotillaError('bad_request', `Cannot use ${name}: ${msg}`);
  if (b.length < MAGIC.length || !b.subarray(0, MAGIC.length).equals(MAGIC)) {
    if (b.length < MAGIC.length && MAGIC.subarray(0, b.length).equals(b)) throw bad(`it is truncated (${b.length} bytes)`);
    throw bad('it is not a flotilla backup (no FLOTILLA-BACKUP header)');
  }
  if (b.length < HEADER + DIGEST) throw bad(`it is truncated (${b.length} bytes, shorter than the header and checksum)`);
  const len = b.readBigUInt64BE(MAGIC.length);
  const expected = BigInt(HEADER + DIGEST) + len;
  if (BigInt(b.length) < expected) throw bad(`it is truncated: ${b.length} of ${expected} bytes`);
  if (BigInt(b.length) > expected) throw bad(`it has ${BigInt(b.length) - expected} unexpected bytes after its end (corrupt)`);
  const body = b.subarray(HEADER, HEADER + Number(len));
  const digest = createHash('sha256').update(body).digest();
  if (!digest.equals(b.subarray(HEADER + Number(len)))) throw bad('its SHA-256 checksum does not match: the file is corrupt');
  let v: Partial<Backup>;
  try {
    v = packr.unpack(body) as Partial<Backup>;
  } catch (e) {
    throw bad(`its body cannot be decoded: ${(e as Error).message}`);
  }
  const isIdx = (n: unknown): n is number => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
  if (!v || typeof v !== 'object' || v.format !== BACKUP_FORMAT) throw bad(`its format is not ${BACKUP_FORMAT}`);
  if (v.v !== 1) throw bad(`it is version ${String(v.v)}; this build reads version 1`);
  if (!isIdx(v.index) || v.index < 1 || !isIdx(v.term) || !isIdx(v.currentTerm)) throw bad('its index or term is invalid');
  if (!(v.state instanceof Uint8Array)) throw bad('it holds no state');
  if (!v.members || typeof v.members !== 'object' || !Array.isArray(v.removed)) throw bad('its membership is invalid');
  if (!(v.clusterId === null || v.clusterId === undefined || typeof v.clusterId === 'string')) throw bad('its cluster id is invalid');
  return { ...(v as Backup), clusterId: v.clusterId ?? null, sha256: digest.toString('hex'), bytes: b.length };
}

/** Decodes the state of a backup, so a file that passes its checksum but not this is refused too. */
export function backupState(b: Backup, name = 'the backup'): ClusterState {
  try {
    return ClusterState.restore(b.state);
  } catch (e) {
    throw new FlotillaError('bad_request', `Cannot use ${name}: its state cannot be loaded: ${(e as Error).message}`);
  }
}

export function summarizeState(s: ClusterState): { keys: number; tasks: number; nodes: number } {
  return { keys: s.kvList('').length, tasks: s.listTasks().length, nodes: s.listNodes().length };
}

// ---------------------------------------------------------------------------------------------
// Offline operations on a data directory (the manager must not be running).

export function isClusterId(id: string): boolean {
  return /^e\d+-[0-9a-f]{8,64}$/.test(id);
}

/** A new cluster id one epoch after `prev`. */
export function nextClusterId(prev: string | null): string {
  return `e${clusterEpoch(prev) + 1}-${randomBytes(8).toString('hex')}`;
}

export interface RestoreResult {
  dataDir: string;
  id: NodeId;
  addr: string;
  clusterId: string;
  index: number;
  term: number;
  keys: number;
  tasks: number;
  nodes: number;
}

/** Creates a new one-manager data directory from a backup. Nothing is written unless the backup verifies. */
export async function restoreBackup(o: { file: string; dataDir: string; id: NodeId; addr: string }): Promise<RestoreResult> {
  let raw: Buffer;
  try {
    raw = await fsp.readFile(o.file);
  } catch (e) {
    throw new FlotillaError('bad_request', `Cannot read ${o.file}: ${(e as Error).message}`);
  }
  const b = decodeBackup(raw, o.file);
  const state = backupState(b, o.file);
  const dir = path.resolve(o.dataDir);
  const existed = await fsp.readdir(dir).then(
    (names) => {
      if (names.length > 0) throw new FlotillaError('conflict', `Cannot restore into ${dir} as it is not empty; restore creates a new data directory (pick a new path)`);
      return true;
    },
    (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return false;
      if (e.code === 'ENOTDIR') throw new FlotillaError('conflict', `Cannot restore into ${dir} as it is not a directory`);
      throw new FlotillaError('bad_request', `Cannot read ${dir}: ${e.message}`);
    },
  );
  const clusterId = nextClusterId(b.clusterId);
  let storage: RaftStorage | null = null;
  try {
    storage = await RaftStorage.open(dir, { nodeId: o.id, clusterId });
    const term = Math.max(b.term, b.currentTerm);
    const data = pack({ members: { [o.id]: o.addr }, removed: b.removed.filter((r) => r !== o.id), app: b.state } satisfies NodeSnapshot);
    await storage.save({
      hardState: { term, vote: null, commit: b.index },
      entries: [],
      snapshot: { meta: { index: b.index, term: b.term, conf: { voters: [o.id], learners: [] } }, data },
    });
    await storage.close();
    storage = null;
  } catch (e) {
    await storage?.close().catch(() => {});
    // Leave nothing half-written behind.
    if (existed) {
      for (const n of await fsp.readdir(dir).catch(() => [] as string[])) await fsp.rm(path.join(dir, n), { recursive: true, force: true });
    } else await fsp.rm(dir, { recursive: true, force: true });
    throw e instanceof StorageError ? new FlotillaError('internal', e.message) : e;
  }
  return { dataDir: dir, id: o.id, addr: o.addr, clusterId, index: b.index, term: b.term, ...summarizeState(state) };
}

export interface RecoverResult {
  dataDir: string;
  id: NodeId;
  addr: string;
  previousClusterId: string | null;
  clusterId: string;
  index: number;
  term: number;
  /** Entries applied on top of the last snapshot. */
  applied: number;
  /** Of those, entries past the commit index this manager had recorded (kept: they may not have been committed). */
  beyondCommit: number;
  previousMembers: Record<NodeId, string>;
  keys: number;
  tasks: number;
  nodes: number;
}

/**
 * Rewrites a stopped manager's data directory into a one-manager cluster with all its state
 * (etcd's --force-new-cluster, hashicorp/raft's RecoverCluster): the snapshot plus every entry
 * in its log are applied into a new snapshot whose configuration is this manager alone, and the
 * cluster id moves to the next epoch so the old members are refused (and stop) if they return.
 */
export async function recoverDataDir(o: { dataDir: string; id?: NodeId; addr?: string }): Promise<RecoverResult> {
  const dir = path.resolve(o.dataDir);
  let storage: RaftStorage;
  try {
    storage = await RaftStorage.open(dir, { nodeId: o.id ?? '', anyNode: true });
  } catch (e) {
    if (e instanceof StorageError && e.code === 'locked') {
      throw new FlotillaError('conflict', `${e.message}: stop the manager before recovering its data directory`);
    }
    throw e instanceof StorageError ? new FlotillaError(e.code === 'foreign' ? 'not_found' : 'internal', e.message) : e;
  }
  try {
    const meta = storage.meta;
    if (o.id && meta.nodeId !== o.id) throw new FlotillaError('bad_request', `${dir} holds the data of manager ${meta.nodeId}, not ${o.id}`);
    const id = meta.nodeId;
    const p = await storage.load();
    if (!p.snapshot && p.entries.length === 0) throw new FlotillaError('bad_request', `${dir} holds no Raft state to recover (an empty manager)`);

    const members = new Map<NodeId, string>();
    const removed = new Set<NodeId>();
    let state = new ClusterState();
    if (p.snapshot && p.snapshot.data.length > 0) {
      const ns = unpack(p.snapshot.data) as NodeSnapshot;
      for (const [k, v] of Object.entries(ns.members)) members.set(k, v);
      for (const r of ns.removed ?? []) removed.add(r);
      state = ClusterState.restore(ns.app);
    }
    let index = p.snapshot?.meta.index ?? 0;
    let term = p.snapshot?.meta.term ?? 0;
    let beyondCommit = 0;
    for (const e of p.entries) {
      if (e.type === EntryType.ConfChange) {
        const cc = decodeConfChange(e.data);
        if (cc.type === 'removeNode') {
          members.delete(cc.node);
          removed.add(cc.node);
        } else if (cc.context) members.set(cc.node, cc.context);
      } else if (e.data.length > 0) {
        state.applyEntry(e.data, { index: e.index, term: e.term });
      }
      if (e.index > p.hardState.commit) beyondCommit++;
      index = e.index;
      term = e.term;
    }
    const previousMembers = Object.fromEntries(members);
    const addr = o.addr ?? members.get(id);
    if (!addr) throw new FlotillaError('bad_request', `the data of ${id} records no address for it; pass --advertise host:port`);
    removed.delete(id);
    const clusterId = nextClusterId(meta.clusterId);
    const data = pack({ members: { [id]: addr }, removed: [...removed], app: state.snapshot() } satisfies NodeSnapshot);
    // The new id first: interrupted after it, the directory refuses its old peers and running
    // recover again finishes the job.
    await storage.setClusterId(clusterId);
    await storage.save({
      hardState: { term: Math.max(p.hardState.term, term), vote: null, commit: index },
      entries: [],
      snapshot: { meta: { index, term, conf: { voters: [id], learners: [] } }, data },
    });
    return {
      dataDir: dir,
      id,
      addr,
      previousClusterId: meta.clusterId,
      clusterId,
      index,
      term,
      applied: p.entries.length,
      beyondCommit,
      previousMembers,
      ...summarizeState(state),
    };
  } finally {
    await storage.close();
  }
}
