// Manager incarnations: a manager whose data directory was wiped must never come back as the
// member it was. Raft's safety rests on every voter keeping its log and its vote; a node that lost
// both and is still counted can elect a leader with an empty state and erase the cluster.
//
// - The cluster id is made at bootstrap: every bootstrapping manager derives the same one from the
//   bootstrap member list and the cluster secret (`bootstrapClusterId`), and stores it with its data.
// - Every store has a random storage id made when it was created (RaftStorage meta.storageId). The
//   leader records, in the replicated state, the storage id of each manager that has acknowledged
//   log entries (`__flotilla/managers/<id>` = {storageId, clusterId}). /v1/status shows a manager's
//   own storage id and the records it holds.
// - A manager that starts with a fresh store and --bootstrap asks its bootstrap peers before it
//   takes any part in Raft (`probeBootstrap`): if one of them records it with another storage id,
//   its data was wiped and it refuses to start, saying how to re-add it. It starts when every
//   peer answered without such a record, or when a peer of an already running cluster (one that
//   records other managers) does not know it (a first start later than the others).
// - At run time (`IncarnationGuard`) each manager compares its peers' storage ids with the
//   records: a peer that shows another storage id is refused by the transport (neither its votes
//   nor its acknowledgements reach this manager), and a manager that learns its own record names
//   another storage id stops.
import { createHmac } from 'node:crypto';
import type { RaftNode } from '../raft/node.js';
import type { CommandProposer, StateView } from './ports.js';
import type { Logger } from '../log.js';
import { FlotillaError } from '../protocol/errors.js';
import { RESERVED_KV_PREFIX } from './auth.js';
import type { NodeId } from '../raft/types.js';
import { monoNow } from '../clock.js';

export const INCARNATION_PREFIX = `${RESERVED_KV_PREFIX}managers/`;

export interface IncarnationRecord {
  storageId: string;
  clusterId: string | null;
  recordedAt: number;
}

/** The cluster id every manager bootstrapping with the same members and secret derives (epoch 0). */
export function bootstrapClusterId(secret: string, members: Record<NodeId, string>): string {
  const text = Object.keys(members)
    .sort()
    .map((id) => `${id}=${members[id]}`)
    .join('\n');
  return 'e0-' + createHmac('sha256', secret).update('flotilla-cluster-id\n' + text).digest('hex').slice(0, 32);
}

/**
 * Storage ids recorded for managers `ids` of cluster `clusterId` (records of another cluster id
 * are ignored). Point lookups: /v1/status calls this on every request.
 */
export function incarnations(state: StateView, clusterId: string | null, ids: Iterable<NodeId>): Record<NodeId, string> {
  const out: Record<NodeId, string> = {};
  if (!clusterId) return out;
  for (const id of ids) {
    const e = state.kvGet(INCARNATION_PREFIX + id);
    if (!e) continue;
    try {
      const r = JSON.parse(typeof e.value === 'string' ? e.value : Buffer.from(e.value).toString('utf8')) as IncarnationRecord;
      if (r && typeof r.storageId === 'string' && r.clusterId === clusterId) out[id] = r.storageId;
    } catch {
      /* not a record */
    }
  }
  return out;
}

export function wipedMessage(o: { id: NodeId; dataDir: string; clusterId: string | null; storageId: string; recorded: string; by: NodeId; addr: string }): string {
  return (
    `manager ${o.id} was a member of cluster ${o.clusterId ?? '(no id)'} with other data (storage id ${o.recorded}, says ${o.by}), but its data directory ` +
    `${o.dataDir} is new (storage id ${o.storageId}): its data was wiped or replaced. A manager that lost its Raft log and vote must not come back as the ` +
    `member it was (it could elect a leader with an empty state). Refusing to start. To bring it back: \`flotilla manager remove ${o.id}\`, then start it ` +
    `with a new id, an empty data directory and --join (no --bootstrap), and add it with \`flotilla manager add <new-id>=${o.addr}\` (see docs/operations.md)`
  );
}

interface PeerStatus {
  id?: unknown;
  clusterId?: unknown;
  storageId?: unknown;
  incarnations?: unknown;
}

function recordsOf(st: PeerStatus): Record<string, string> | null {
  return st.incarnations && typeof st.incarnations === 'object' ? (st.incarnations as Record<string, string>) : null;
}

/** How a manager asks its peers (their /v1/status). */
export interface PeerProbe {
  id: NodeId;
  addr: string;
  /** A manager's /v1/status at `addr`. */
  statusOf(addr: string, timeoutMs: number): Promise<unknown>;
  /** Where this manager dials a peer (its --peer-route if any, else its advertised address). */
  peerAddr(id: NodeId): string | undefined;
}

/** What the run-time guard reads and writes. */
export interface GuardDeps extends PeerProbe {
  node: RaftNode;
  state: StateView;
  proposer: CommandProposer;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Before a manager with a fresh store and --bootstrap takes part in Raft: waits until its peers
 * confirm it is not a wiped member (see the file comment). Throws the refusal.
 */
export async function probeBootstrap(
  m: PeerProbe,
  o: { peers: Record<NodeId, string>; dataDir: string; storageId: string; clusterId: string | null; log: Logger; isClosed: () => boolean; intervalMs?: number },
): Promise<void> {
  const peers = Object.entries(o.peers).filter(([id]) => id !== m.id);
  if (peers.length === 0) return;
  let lastLog = 0;
  for (;;) {
    if (o.isClosed()) throw new FlotillaError('unavailable', 'the manager stopped while it waited for its peers');
    const answers = await Promise.all(
      peers.map(([id, addr]) =>
        m.statusOf(m.peerAddr(id) ?? addr, 1500).then(
          (s) => s as PeerStatus,
          () => null,
        ),
      ),
    );
    let all = true;
    let running = false;
    const missing: string[] = [];
    for (let i = 0; i < peers.length; i++) {
      const [id] = peers[i]!;
      const st = answers[i];
      if (!st || st.id !== id) {
        all = false;
        missing.push(id);
        continue;
      }
      const recs = st.clusterId === o.clusterId ? recordsOf(st) : null;
      if (!recs) continue;
      const recorded = recs[m.id];
      if (typeof recorded === 'string' && recorded !== o.storageId) {
        throw new FlotillaError('conflict', wipedMessage({ id: m.id, dataDir: o.dataDir, clusterId: o.clusterId, storageId: o.storageId, recorded, by: id, addr: m.addr }));
      }
      if (Object.keys(recs).length > 0) running = true;
    }
    if (all || running) return;
    if (monoNow() - lastLog > 5000) {
      lastLog = monoNow();
      o.log.warn(
        `new data directory: waiting for ${missing.join(', ')} to answer before taking part in the cluster (a manager with an empty store must make sure it is not a wiped member)`,
      );
    }
    await sleep(o.intervalMs ?? 300);
  }
}

/** Run-time checks of the peers' storage ids against the records (see the file comment). */
export class IncarnationGuard {
  /** Peers whose storage id is not the recorded one: refused by the transport. */
  readonly wiped = new Map<NodeId, string>();
  private readonly seen = new Map<NodeId, string>();
  private timer: NodeJS.Timeout | null = null;
  private busy = false;
  private stopped = false;

  constructor(
    private readonly m: GuardDeps,
    private readonly o: {
      storageId: () => string;
      clusterId: () => string | null;
      dataDir: string;
      log: Logger;
      /** Peers also known only from the transport (a manager that joined and has no membership yet). */
      learned?: () => Map<NodeId, string>;
      intervalMs?: number;
    },
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.round(), this.o.intervalMs ?? 1000);
    this.timer.unref();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
  }

  private fatal(by: NodeId, recorded: string): void {
    if (this.stopped) return;
    this.stop();
    const msg = wipedMessage({ id: this.m.id, dataDir: this.o.dataDir, clusterId: this.o.clusterId(), storageId: this.o.storageId(), recorded, by, addr: this.m.addr });
    this.o.log.error(msg);
    void this.m.node.stop();
    this.m.node.emit('fatal', new Error(msg));
  }

  async round(): Promise<void> {
    if (this.busy || this.stopped) return;
    this.busy = true;
    try {
      await this.check();
    } catch (e) {
      this.o.log.debug('incarnation check failed', { err: String(e) });
    } finally {
      this.busy = false;
    }
  }

  private async check(): Promise<void> {
    const cid = this.o.clusterId();
    if (!cid) return;
    const me = this.m.id;
    const mine = this.o.storageId();
    const ids = () => new Set([me, ...this.m.node.members.keys(), ...(this.o.learned?.().keys() ?? [])]);
    let recs = incarnations(this.m.state, cid, ids());
    if (recs[me] !== undefined && recs[me] !== mine) return this.fatal(me, recs[me]!);
    const known = new Map(this.o.learned?.() ?? []);
    for (const id of this.m.node.members.keys()) known.set(id, this.m.peerAddr(id) ?? known.get(id) ?? '');
    known.delete(me);
    const peers = [...known.keys()];
    const sts = await Promise.all(
      peers.map((id) => {
        const addr = known.get(id);
        return addr ? this.m.statusOf(addr, 1000).then((s) => s as PeerStatus, () => null) : Promise.resolve(null);
      }),
    );
    if (this.stopped) return;
    recs = incarnations(this.m.state, cid, ids());
    for (let i = 0; i < peers.length; i++) {
      const id = peers[i]!;
      const st = sts[i];
      if (!st || st.id !== id || typeof st.storageId !== 'string' || !st.storageId) continue;
      this.seen.set(id, st.storageId);
      const theirs = st.clusterId === cid ? recordsOf(st) : null;
      const aboutMe = theirs?.[me];
      if (typeof aboutMe === 'string' && aboutMe !== mine) return this.fatal(id, aboutMe);
      const rec = recs[id];
      if (rec !== undefined && rec !== st.storageId) {
        if (!this.wiped.has(id)) {
          this.o.log.error(
            `manager ${id} came back with a new data directory (storage id ${st.storageId}; the cluster knows it with ${rec}): its data was wiped or replaced. ` +
              `Its votes and acknowledgements are refused; remove it with \`flotilla manager remove ${id}\` and add it again under a new id`,
            { peer: id },
          );
        }
        this.wiped.set(id, st.storageId);
      } else if (rec !== undefined) this.wiped.delete(id);
    }
    if (!this.m.node.isLeader()) return;
    // The leader records the storage ids: its own, then of each manager that acknowledged entries.
    const status = this.m.node.status();
    const candidates = [me, ...status.conf.voters, ...status.conf.learners];
    recs = incarnations(this.m.state, cid, candidates);
    for (const id of candidates) {
      if (recs[id] !== undefined) continue;
      const sid = id === me ? mine : this.seen.get(id);
      if (!sid || this.wiped.has(id)) continue;
      if (id !== me && !((status.progress[id]?.match ?? 0) > 0)) continue;
      const cur = this.m.state.kvGet(INCARNATION_PREFIX + id);
      const rec: IncarnationRecord = { storageId: sid, clusterId: cid, recordedAt: Date.now() };
      await this.m.proposer.propose({ type: 'kv.put', key: INCARNATION_PREFIX + id, value: JSON.stringify(rec), cas: cur?.version ?? 0 }, 5000);
      this.o.log.info(`recorded the storage id of manager ${id}`, { storageId: sid });
      return; // one per round
    }
  }
}
