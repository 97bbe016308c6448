// The simulated cluster: nodes with a disk and a state machine, driving RaftCore through its
// Ready loop, over a lossy, delaying, duplicating, partitionable network. Pure and
// deterministic: everything random comes from the seeded Prng.
import { RaftCore } from '../core.js';
import { CORE_BUGS, RaftError, type ConfState, type CoreBug, type Entry, type HardState, type Message, type NodeId, type Ready, type Snapshot } from '../types.js';
import { Checkers, chainHash, checkCommitQuorum, entryKey } from './checkers.js';
import { derive, hashNum, hashString, type Prng } from './prng.js';

/**
 * Core bugs (RaftConfig.bug, see CoreBug: figure8, read-any-ack, learner-read-quorum,
 * commit-past-new, conf-at-append, self-count-before-sync, conf-before-noop), plus two on the
 * simulator's side: no-sync: a crash forgets the persisted vote; stale-read: reads are served
 * from the local state machine without ReadIndex.
 */
export type SimBug = CoreBug | 'no-sync' | 'stale-read';

export const SIM_BUGS: readonly SimBug[] = [...CORE_BUGS, 'no-sync', 'stale-read'];

function coreBug(b: SimBug): CoreBug {
  return (CORE_BUGS as readonly string[]).includes(b) ? (b as CoreBug) : 'none';
}

export interface Disk {
  hardState: HardState;
  snapshot: Snapshot | null;
  /** Entries after the snapshot index, contiguous. */
  entries: Entry[];
}

export interface NetFaults {
  drop: number;
  dup: number;
  /** Probability of a long delay (heavy reordering). */
  spike: number;
  /** Longest spike, in ticks (beyond twice the election timeout: a reply can outlive a term). */
  spikeMax: number;
  maxDelay: number;
  /** Probability that a dropped message to a partitioned peer is reported 'unreachable' to its sender. */
  unreachable: number;
  /** Links deliver in order (a TCP-like transport); otherwise every message may overtake others. */
  fifo: boolean;
}

export const PERFECT_NET: NetFaults = { drop: 0, dup: 0, spike: 0, spikeMax: 25, maxDelay: 1, unreachable: 0, fifo: true };

export interface ClusterConfig {
  seed: number;
  bug: SimBug;
  electionTick: number;
  heartbeatTick: number;
  maxSizePerMsg?: number;
  maxInflightMsgs?: number;
  /** Apply entries, then compact every `compactEvery` applied entries (0 = never). */
  compactEvery: number;
  /** Emit readable trace lines. */
  trace?: (line: string) => void;
}

/** The application state: a hash chain over the applied entries. */
interface StateMachine {
  applied: number;
  hash: number;
  writes: number;
}

export interface Proposal {
  writeId: string;
  term: number;
}

const RING = 64;
const MAX_NODES = 32;
const textEnc = new TextEncoder();
const textDec = new TextDecoder();

export class SimNode {
  core: RaftCore | null = null;
  incarnation = 0;
  role: 'follower' | 'preCandidate' | 'candidate' | 'leader' = 'follower';
  /** Term in which this node became leader (valid while role === 'leader'). */
  leaderTerm = 0;
  disk: Disk = { hardState: { term: 0, vote: null, commit: 0 }, snapshot: null, entries: [] };
  sm: StateMachine = { applied: 0, hash: 0, writes: 0 };
  lastCommitSeen = 0;
  lastCompact = 0;
  /**
   * A Ready handed out but not yet persisted: the node is in a slow fsync. Like RaftNode, it
   * keeps stepping messages and ticks meanwhile; it takes no new Ready until the write is done.
   */
  stalled: { rd: Ready; until: number } | null = null;
  /** Commit index last checked against the disks (commit-quorum check). */
  commitChecked = 0;
  /** Reads answered by the core, waiting for applied >= index. */
  readWait: { ctx: string; index: number }[] = [];
  /** Reads this incarnation started (ctx), to forget them on a crash. */
  readsOpen = new Set<string>();
  /** Proposals made on this incarnation, by index. */
  proposals = new Map<number, Proposal>();
  downSince = 0;
  /** The last persisted write changed the vote (term before it): what bug no-sync forgets. */
  unsyncedVote: { prevTerm: number } | null = null;
  restartAt = 0;

  constructor(
    readonly id: NodeId,
    readonly idx: number,
    /** Initial members get the bootstrap configuration. */
    readonly bootstrap: ConfState | undefined,
  ) {}

  get alive(): boolean {
    return this.core !== null;
  }

  diskLastIndex(): number {
    return (this.disk.snapshot?.meta.index ?? 0) + this.disk.entries.length;
  }

  diskSnapIndex(): number {
    return this.disk.snapshot?.meta.index ?? 0;
  }

  /** Term of the persisted entry at i (snapshot term at its index; undefined if compacted or missing). */
  diskTermAt(i: number): number | undefined {
    const si = this.diskSnapIndex();
    if (i === si) return this.disk.snapshot?.meta.term ?? 0;
    if (i < si) return undefined;
    return this.disk.entries[i - si - 1]?.term;
  }
}

export interface ClusterHooks {
  /** A node just became leader (called while processing its Ready, after persisting it). */
  onLeader?(node: SimNode, term: number): void;
  /** A write was acknowledged to its client. */
  onAck?(writeId: string, index: number, term: number, node: SimNode): void;
  /** A proposal was lost (another entry was applied at its index on the proposer). */
  onLost?(writeId: string, node: SimNode): void;
  /** Extra, scenario-specific message filter: return true to drop. */
  filter?(m: Message): boolean;
  /** Extra, scenario-specific delay for a message being sent (ticks; 0 = none). */
  delay?(m: Message): number;
}

export class SimCluster {
  tick = 0;
  readonly nodes = new Map<NodeId, SimNode>();
  readonly list: SimNode[] = [];
  readonly checkers: Checkers;
  readonly rng: Prng;
  /** Directed link blocks: blocked[from * MAX_NODES + to]. */
  readonly blocked = new Uint8Array(MAX_NODES * MAX_NODES);
  /** FIFO links: the last delivery tick scheduled per link. */
  private readonly linkAt = new Float64Array(MAX_NODES * MAX_NODES);
  net: NetFaults = { ...PERFECT_NET };
  /** Per-seed probability that processing a Ready pauses the node (slow disk) during faults. */
  stallChance = 0;
  /** Per-seed probability that a node crashes in the middle of processing a Ready. */
  midReadyCrash = 0;
  /** Probability that a node crashes right after handing out a Ready that changes its vote, before persisting it. */
  voteCrash = 0;
  /**
   * Connections closing (the core's 'linkDown', core-linkdown.ts): the probability that a live
   * peer sees its links with a crashed node close (a killed process; a machine that lost power
   * closes nothing), and that a message lost on a blocked link closes the connection, told to
   * both ends (a flapping link, or a cut connection timing out).
   */
  linkCloseOnCrash = 0;
  linkCloseOnBlock = 0;
  private readonly linkRng: Prng;
  hooks: ClusterHooks = {};
  hash = 0x811c9dc5;
  stats = { msgs: 0, dropped: 0, elections: 0, crashes: 0, applied: 0, snapshotsSent: 0, compactions: 0 };
  private readonly ring: Message[][] = [];
  private readonly coreRng: Prng;
  private readonly trace: ((line: string) => void) | undefined;

  constructor(readonly cfg: ClusterConfig) {
    this.checkers = new Checkers(cfg.seed);
    this.rng = derive(cfg.seed, 'cluster');
    this.coreRng = derive(cfg.seed, 'cores');
    this.linkRng = derive(cfg.seed, 'links');
    this.trace = cfg.trace;
    for (let i = 0; i < RING; i++) this.ring.push([]);
  }

  // ---------------------------------------------------------------- trace

  /** Records an event in the trace hash and, when tracing, prints it. */
  event(kind: string, text: string): void {
    this.hash = hashString(text, hashString(kind, hashNum(this.hash, this.tick)));
    if (this.trace) this.trace(`[${String(this.tick).padStart(4)}] ${kind.padEnd(9)} ${text}`);
  }

  /** Prints a trace line without hashing it (detail only computed when tracing). */
  note(kind: string, text: string): void {
    if (this.trace) this.trace(`[${String(this.tick).padStart(4)}] ${kind.padEnd(9)} ${text}`);
  }

  get tracing(): boolean {
    return this.trace !== undefined;
  }

  // ---------------------------------------------------------------- membership of the simulation

  addNode(id: NodeId, bootstrap: ConfState | undefined): SimNode {
    if (this.list.length >= MAX_NODES) throw new Error('sim: too many nodes');
    const n = new SimNode(id, this.list.length, bootstrap);
    this.nodes.set(id, n);
    this.list.push(n);
    this.start(n);
    return n;
  }

  live(): SimNode[] {
    return this.list.filter((n) => n.core !== null);
  }

  leaders(): SimNode[] {
    return this.list.filter((n) => n.core !== null && n.role === 'leader');
  }

  // ---------------------------------------------------------------- crash / restart

  private start(n: SimNode): void {
    n.incarnation++;
    const r = this.coreRng.fork(`${n.id}/${n.incarnation}`);
    const d = n.disk;
    const snapIndex = d.snapshot?.meta.index ?? 0;
    this.guard(n, () => {
      n.core = new RaftCore({
        id: n.id,
        heartbeatTick: this.cfg.heartbeatTick,
        electionTick: this.cfg.electionTick,
        rand: (k) => r.int(k),
        preVote: true,
        checkQuorum: true,
        maxSizePerMsg: this.cfg.maxSizePerMsg,
        maxInflightMsgs: this.cfg.maxInflightMsgs,
        bootstrap: n.bootstrap,
        persisted: { hardState: { ...d.hardState }, snapshot: d.snapshot, entries: d.entries.slice() },
        applied: snapIndex,
        bug: coreBug(this.cfg.bug),
      });
    });
    n.role = 'follower';
    n.stalled = null;
    n.commitChecked = d.hardState.commit;
    n.readWait = [];
    n.readsOpen = new Set();
    n.proposals = new Map();
    n.lastCommitSeen = d.hardState.commit;
    // Rebuild the state machine from the disk snapshot; the core hands out the rest again.
    n.sm = { applied: 0, hash: 0, writes: 0 };
    if (d.snapshot) this.restoreSm(n, d.snapshot);
    n.lastCompact = n.sm.applied;
  }

  crash(n: SimNode, why: string): void {
    if (!n.core) return;
    this.stats.crashes++;
    n.core = null;
    n.stalled = null;
    n.readWait = [];
    for (const ctx of n.readsOpen) this.checkers.reads.onReadLost(ctx);
    n.readsOpen.clear();
    const lost = [...n.proposals.values()];
    n.proposals.clear();
    for (const p of lost) this.hooks.onLost?.(p.writeId, n);
    n.role = 'follower';
    n.downSince = this.tick;
    if (this.linkCloseOnCrash > 0) {
      for (const o of this.list) {
        if (o !== n && o.core && this.linkRng.chance(this.linkCloseOnCrash)) this.enqueue(local('linkDown', n.id, o.id, false), 1);
      }
    }
    // Restarted by the fault schedule (which may set another time).
    n.restartAt = this.tick + this.rng.pick([1, 3, 10, 30]);
    if (this.cfg.bug === 'no-sync') {
      // Vote writes were never synced: the node forgets its vote, and if that write was its last
      // one, the term it carried too.
      const hs = n.disk.hardState;
      const term = n.unsyncedVote ? n.unsyncedVote.prevTerm : hs.term;
      n.disk.hardState = { term, vote: null, commit: hs.commit };
    }
    n.unsyncedVote = null;
    this.event('crash', `${n.id} ${why}`);
  }

  restart(n: SimNode): void {
    if (n.core) return;
    this.start(n);
    this.event('restart', `${n.id} term=${n.disk.hardState.term} vote=${n.disk.hardState.vote ?? '-'} snap=${n.diskSnapIndex()} last=${n.diskLastIndex()} commit=${n.disk.hardState.commit}`);
  }

  // ---------------------------------------------------------------- network

  setBlocked(from: SimNode, to: SimNode, b: boolean): void {
    this.blocked[from.idx * MAX_NODES + to.idx] = b ? 1 : 0;
  }

  isBlocked(from: SimNode, to: SimNode): boolean {
    return this.blocked[from.idx * MAX_NODES + to.idx] === 1;
  }

  healNetwork(): void {
    this.blocked.fill(0);
  }

  /** Cuts `n` off from everyone, both ways. */
  isolate(n: SimNode): void {
    for (const o of this.list) {
      if (o === n) continue;
      this.setBlocked(n, o, true);
      this.setBlocked(o, n, true);
    }
  }

  private enqueue(m: Message, delay: number): void {
    const d = Math.max(1, Math.min(RING - 1, delay));
    this.ring[(this.tick + d) % RING]!.push(m);
  }

  private send(from: SimNode, msgs: Message[]): void {
    const net = this.net;
    for (const m of msgs) {
      Object.freeze(m);
      if (m.entries) Object.freeze(m.entries);
      this.stats.msgs++;
      if (net.drop > 0 && this.rng.chance(net.drop)) {
        this.stats.dropped++;
        this.onDropped(from, m);
        continue;
      }
      this.enqueue(m, this.linkDelay(from, m));
      if (net.dup > 0 && m.type !== 'snap' && this.rng.chance(net.dup)) this.enqueue(m, this.linkDelay(from, m));
    }
  }

  /** A delay that keeps the link in order when the network is FIFO. */
  private linkDelay(from: SimNode, m: Message): number {
    const d = this.delay() + (this.hooks.delay?.(m) ?? 0);
    if (!this.net.fifo) return d;
    const to = this.nodes.get(m.to);
    if (!to) return d;
    const k = from.idx * MAX_NODES + to.idx;
    const at = Math.min(Math.max(this.tick + d, this.linkAt[k]!), this.tick + RING - 1);
    this.linkAt[k] = at;
    return at - this.tick;
  }

  private delay(): number {
    const net = this.net;
    let d = net.maxDelay <= 1 ? 1 : this.rng.range(1, net.maxDelay);
    if (net.spike > 0 && this.rng.chance(net.spike)) d += this.rng.range(3, net.spikeMax);
    return d;
  }

  private onDropped(from: SimNode, m: Message): void {
    if (m.type === 'snap') {
      this.enqueue(local('snapStatus', m.to, m.from, true), 1);
    } else if (this.net.unreachable > 0 && from.role === 'leader' && this.rng.chance(this.net.unreachable)) {
      this.enqueue(local('unreachable', m.to, m.from, false), 1);
    }
  }

  /** Delivers the messages due this tick, in a random order. */
  private deliver(): void {
    const slot = this.tick % RING;
    const due = this.ring[slot]!;
    if (due.length === 0) return;
    this.ring[slot] = [];
    // Without FIFO links, messages due in the same tick arrive in any order.
    if (due.length > 1 && !this.net.fifo) this.rng.shuffle(due);
    for (const m of due) {
      const to = this.nodes.get(m.to);
      if (!to || !to.core) {
        if (m.type === 'snap') this.enqueue(local('snapStatus', m.to, m.from, true), 1);
        continue;
      }
      if (m.type !== 'snapStatus' && m.type !== 'unreachable' && m.type !== 'linkDown') {
        const from = this.nodes.get(m.from);
        if (from && this.isBlocked(from, to)) {
          this.stats.dropped++;
          this.onDropped(from, m);
          if (this.linkCloseOnBlock > 0 && this.linkRng.chance(this.linkCloseOnBlock)) {
            this.enqueue(local('linkDown', from.id, to.id, false), 1);
            this.enqueue(local('linkDown', to.id, from.id, false), 1);
          }
          continue;
        }
        if (this.hooks.filter?.(m)) {
          this.stats.dropped++;
          this.onDropped(from ?? to, m);
          continue;
        }
      }
      this.stepInto(to, m);
      if (m.type === 'snap') {
        this.stats.snapshotsSent++;
        this.enqueue(local('snapStatus', m.to, m.from, false), 1);
      }
    }
  }

  private stepInto(n: SimNode, m: Message): void {
    const core = n.core!;
    const before = m.type === 'app' ? core.commitIndex() : 0;
    this.guard(n, () => core.step(m));
    if (m.type === 'app' && n.core) {
      // Figure 2, AppendEntries rule 5: commit at most to the last entry this append vouched for.
      const after = core.commitIndex();
      const lastNew = m.index + (m.entries?.length ?? 0);
      if (after > before && after > lastNew) {
        this.checkers.report('append-commit', `${n.id} moved its commit ${before} -> ${after} on an append from ${m.from} whose last entry is ${lastNew}`);
      }
    }
    this.checkCommit(n);
  }

  /**
   * Commit quorum, checked the moment a leader's commit index moves from `old` to `c`: the new
   * commit index, and every configuration entry it commits, is on the disks of a majority of
   * voters, either of the configuration the leader committed with (its log's, up to `old`) or
   * of the one just before that entry. Configurations come from the leader's log, not from
   * what its core applied. Followers only copy a leader's commit index (covered here).
   */
  checkCommit(n: SimNode): void {
    const core = n.core;
    if (!core) return;
    const c = core.commitIndex();
    const old = n.commitChecked;
    if (c <= old) return;
    n.commitChecked = c;
    if (core.status().role !== 'leader') return;
    const term = core.termAt(c);
    if (term === undefined) return;
    const { voters, changes } = core.logVoters(old, c);
    const atOld = changes.length > 0 ? changes[0]!.votersBefore : voters;
    const last = changes[changes.length - 1];
    const beforeC = last && last.index === c ? last.votersBefore : voters;
    const holds = (i: number, t: number) => (id: NodeId): boolean => {
      const x = this.nodes.get(id);
      if (!x) return false;
      return x.diskSnapIndex() >= i || x.diskTermAt(i) === t;
    };
    const report = this.checkers.report;
    if (!checkCommitQuorum(report, n.id, c, term, [atOld, beforeC], holds(c, term))) return;
    for (const ch of changes) {
      if (!checkCommitQuorum(report, n.id, ch.index, ch.term, [atOld, ch.votersBefore], holds(ch.index, ch.term))) return;
    }
  }

  /** Leader match: what a leader records as a follower's match is really on that follower's disk. */
  private checkMatches(): void {
    for (const l of this.list) {
      const core = l.core;
      if (!core || l.role !== 'leader') continue;
      const term = l.disk.hardState.term;
      for (const [id, match] of core.matches()) {
        if (id === l.id || match === 0) continue;
        const f = this.nodes.get(id);
        // A follower in a later term may have been rewritten by a newer leader.
        if (!f || f.disk.hardState.term !== term || f.diskSnapIndex() >= match) continue;
        const want = core.termAt(match);
        if (want === undefined) continue;
        const have = f.diskTermAt(match);
        if (have !== want) {
          this.checkers.report(
            'leader-match',
            `${l.id} (leader, term ${term}) records match ${match} for ${id}, which holds ${have === undefined ? 'nothing' : `term ${have}`} there (leader: term ${want})`,
          );
          return;
        }
      }
    }
  }

  // ---------------------------------------------------------------- the tick

  /** One logical tick: cores tick, messages due are delivered, every node processes its Readies. */
  step(): void {
    this.tick++;
    this.checkers.tick = this.tick;
    for (const n of this.list) {
      if (n.core) {
        const core = n.core;
        this.guard(n, () => core.tick());
        this.checkCommit(n);
      }
    }
    this.driveAll();
    this.deliver();
    this.driveAll();
    for (const n of this.list) {
      if (n.stalled && n.stalled.until <= this.tick) this.unstall(n);
    }
    this.checkMatches();
    let h = this.hash;
    for (const n of this.list) {
      h = hashNum(hashNum(h, n.disk.hardState.term), n.core ? n.sm.applied : -1);
    }
    this.hash = h;
  }

  /** Finishes every paused Ready at once (used when faults stop). */
  unstallAll(): void {
    for (const n of this.list) if (n.stalled) this.unstall(n);
  }

  private unstall(n: SimNode): void {
    const s = n.stalled!;
    n.stalled = null;
    this.finishReady(n, s.rd);
    if (!n.core) return;
    this.drive(n);
  }

  driveAll(): void {
    for (const n of this.list) if (n.core && !n.stalled) this.drive(n);
  }

  /** Processes Readies until the core has nothing more (or the node pauses/crashes). */
  drive(n: SimNode): void {
    for (let guard = 0; guard < 1000; guard++) {
      const core = n.core;
      if (!core || n.stalled) return;
      const rd = this.call(n, () => (core.hasReady() ? core.ready() : undefined));
      if (!rd) return;
      this.beginReady(n, rd);
      if (!n.core) return;
      if (this.stallChance > 0 && this.rng.chance(this.stallChance)) {
        n.stalled = { rd, until: this.tick + this.rng.range(1, 8) };
        return;
      }
      this.finishReady(n, rd);
    }
    this.checkers.report('exception', `${n.id}: hasReady() still true after 1000 Ready rounds`);
  }

  /** Ready steps before the write: soft state, commit bookkeeping, early messages. */
  private beginReady(n: SimNode, rd: Ready): void {
    const hs = rd.hardState;
    const core = n.core!;
    // Commit bookkeeping for leader completeness: whoever advanced its commit at term T
    // learned it from (or decided it as) a leader of a term <= T.
    if (hs && hs.commit > n.lastCommitSeen) {
      for (let i = n.lastCommitSeen + 1; i <= hs.commit; i++) {
        const t = core.termAt(i);
        if (t !== undefined) this.checkers.completeness.onCommit(n.id, hs.term, i, t);
      }
      if (n.role === 'leader' || rd.softState?.role === 'leader') {
        if (this.trace) this.note('commit', `${n.id} (leader t${hs.term}) commit ${n.lastCommitSeen} -> ${hs.commit}`);
      }
      n.lastCommitSeen = hs.commit;
    }
    if (rd.earlyMessages.length > 0) this.send(n, rd.earlyMessages);
  }

  /** The write, then messages, apply, reads, advance. */
  private finishReady(n: SimNode, rd: Ready): void {
    const core = n.core!;
    const hs = rd.hardState;
    if (this.voteCrash > 0 && hs && hs.vote !== null && hs.vote !== n.disk.hardState.vote && this.rng.chance(this.voteCrash)) {
      this.crash(n, `after voting for ${hs.vote} in term ${hs.term}, before persisting the vote`);
      n.restartAt = this.tick + this.rng.range(1, 6);
      return;
    }
    if (this.midReadyCrash > 0 && this.rng.chance(this.midReadyCrash)) {
      this.crash(n, 'before persisting a Ready');
      return;
    }
    this.persist(n, rd);
    if (rd.softState || (n.role === 'leader' && rd.hardState && rd.hardState.term !== n.leaderTerm)) this.onSoftState(n, rd);
    if (!n.core) return;
    if (this.midReadyCrash > 0 && this.rng.chance(this.midReadyCrash)) {
      this.crash(n, 'after persisting, before sending');
      return;
    }
    if (rd.messages.length > 0) this.send(n, rd.messages);
    if (this.midReadyCrash > 0 && this.rng.chance(this.midReadyCrash)) {
      this.crash(n, 'after sending, before applying');
      return;
    }
    if (rd.snapshot) {
      if (rd.snapshot.meta.index > n.sm.applied) this.restoreSm(n, rd.snapshot);
    }
    for (const e of rd.committedEntries) this.apply(n, e);
    for (const rs of rd.readStates) {
      if (rs.index <= n.sm.applied) this.serveRead(n, rs.context, rs.index);
      else n.readWait.push({ ctx: rs.context, index: rs.index });
    }
    if (n.readWait.length > 0) this.serveWaitingReads(n);
    this.guard(n, () => core.advance(rd));
    if (!n.core) return;
    this.checkCommit(n);
    this.maybeCompact(n);
  }

  private persist(n: SimNode, rd: Ready): void {
    const d = n.disk;
    if (rd.hardState) {
      const prev = d.hardState;
      d.hardState = { term: rd.hardState.term, vote: rd.hardState.vote, commit: rd.hardState.commit };
      // Bookkeeping for the no-sync bug: a write that only changed the vote (and term).
      if (rd.hardState.vote !== prev.vote && rd.hardState.vote !== null && rd.entries.length === 0 && !rd.snapshot) {
        n.unsyncedVote = { prevTerm: prev.term };
      } else if (rd.entries.length > 0 || rd.snapshot) {
        n.unsyncedVote = null;
      }
    } else if (rd.entries.length > 0 || rd.snapshot) {
      n.unsyncedVote = null;
    }
    if (rd.snapshot) {
      const s = rd.snapshot;
      const keep = n.diskTermAt(s.meta.index) === s.meta.term;
      const oldSnap = n.diskSnapIndex();
      d.entries = keep ? d.entries.slice(s.meta.index - oldSnap) : [];
      d.snapshot = s;
    }
    if (rd.entries.length > 0) {
      const first = rd.entries[0]!.index;
      const si = n.diskSnapIndex();
      const at = first - si - 1;
      if (at < 0 || at > d.entries.length) {
        this.checkers.report('exception', `${n.id}: Ready entries start at ${first}, disk has snapshot ${si} and ${d.entries.length} entries (gap or overlap with the snapshot)`);
        return;
      }
      if (at < d.entries.length) d.entries.length = at;
      let prevTerm = at === 0 ? (d.snapshot?.meta.term ?? 0) : d.entries[at - 1]!.term;
      for (const e of rd.entries) {
        if (e.index !== si + d.entries.length + 1) {
          this.checkers.report('exception', `${n.id}: Ready entries not contiguous at ${e.index}`);
          return;
        }
        this.checkers.logMatching.onPersist(n.id, e.index, e.term, prevTerm, entryKey(e.type, e.data));
        d.entries.push(e);
        prevTerm = e.term;
      }
    }
  }

  /** Role changes; a node that leads a new term (even without a visible role change) is checked. */
  private onSoftState(n: SimNode, rd: Ready): void {
    const was = n.role;
    const role = rd.softState?.role ?? n.role;
    n.role = role;
    // The term is durable once this Ready is persisted (a leader's term was written when it campaigned).
    const term = n.disk.hardState.term;
    if (role === 'leader' && (was !== 'leader' || term !== n.leaderTerm)) {
      n.leaderTerm = term;
      this.stats.elections++;
      this.event('leader', `${n.id} term ${term} (last ${n.diskLastIndex()}, commit ${n.disk.hardState.commit})`);
      this.checkers.election.onLeader(n.id, term);
      const snap = n.disk.snapshot;
      this.checkers.completeness.onLeader(n.id, term, snap?.meta.index ?? 0, snap?.meta.term ?? 0, (i) => n.diskTermAt(i));
      this.hooks.onLeader?.(n, term);
    } else if (was === 'leader' && role !== 'leader') {
      if (this.trace) this.note('stepdown', `${n.id} -> ${role}`);
    }
  }

  // ---------------------------------------------------------------- state machine

  private apply(n: SimNode, e: Entry): void {
    const sm = n.sm;
    const key = entryKey(e.type, e.data);
    this.checkers.stateMachine.onApply(n.id, sm.applied, e.index, e.term, key);
    if (e.index !== sm.applied + 1) return;
    sm.applied = e.index;
    sm.hash = chainHash(sm.hash, e.index, e.term, key);
    if (e.type === 0 && e.data.length > 0) sm.writes++;
    this.stats.applied++;
    const p = n.proposals.get(e.index);
    if (p) {
      n.proposals.delete(e.index);
      if (p.term === e.term) this.hooks.onAck?.(p.writeId, e.index, e.term, n);
      else this.hooks.onLost?.(p.writeId, n);
    }
  }

  private restoreSm(n: SimNode, s: Snapshot): void {
    let st: { h: number; w: number };
    try {
      st = JSON.parse(textDec.decode(s.data)) as { h: number; w: number };
    } catch {
      this.checkers.report('state-machine-safety', `${n.id}: snapshot at ${s.meta.index} has unreadable data`);
      return;
    }
    this.checkers.stateMachine.onRestore(n.id, s.meta.index, st.h);
    n.sm = { applied: s.meta.index, hash: st.h, writes: st.w };
    // Proposals at indexes the snapshot covers: their outcome is unknown to this node.
    for (const [i, p] of n.proposals) {
      if (i <= s.meta.index) {
        n.proposals.delete(i);
        this.hooks.onLost?.(p.writeId, n);
      }
    }
    if (this.trace) this.note('restore', `${n.id} snapshot at ${s.meta.index} (term ${s.meta.term})`);
  }

  private maybeCompact(n: SimNode): void {
    const k = this.cfg.compactEvery;
    if (k <= 0 || n.sm.applied - n.lastCompact < k) return;
    const core = n.core!;
    const at = n.sm.applied;
    const data = textEnc.encode(JSON.stringify({ h: n.sm.hash, w: n.sm.writes }));
    const snap = this.call(n, () => core.compact(at, data));
    n.lastCompact = at;
    if (!snap) return;
    const d = n.disk;
    const si = n.diskSnapIndex();
    d.entries = d.entries.slice(Math.max(0, at - si));
    d.snapshot = snap;
    this.stats.compactions++;
  }

  // ---------------------------------------------------------------- reads

  private serveRead(n: SimNode, ctx: string, index: number): void {
    if (!n.readsOpen.delete(ctx)) return;
    this.checkers.reads.onReadServed(ctx, n.id, index, n.sm.applied);
  }

  private serveWaitingReads(n: SimNode): void {
    const still: { ctx: string; index: number }[] = [];
    for (const r of n.readWait) {
      if (r.index <= n.sm.applied) this.serveRead(n, r.ctx, r.index);
      else still.push(r);
    }
    n.readWait = still;
  }

  // ---------------------------------------------------------------- client operations

  /** Proposes a write on `n`; returns the (index, term) or null if the core refused. */
  propose(n: SimNode, writeId: string): { index: number; term: number } | null {
    const core = n.core;
    if (!core) return null;
    const res = this.call(n, () => core.propose(textEnc.encode(writeId)));
    if (res === undefined) return null;
    n.proposals.set(res.index, { writeId, term: res.term });
    // The caller drives the node (after its own bookkeeping).
    return res;
  }

  readIndex(n: SimNode, ctx: string): boolean {
    const core = n.core;
    if (!core) return false;
    if (this.cfg.bug === 'stale-read') {
      // The bug: answer from the local state, no ReadIndex round.
      this.checkers.reads.onReadStart(ctx, n.id, this.tick);
      this.checkers.reads.onReadServed(ctx, n.id, n.sm.applied, n.sm.applied);
      return true;
    }
    let ok = false;
    this.guard(n, () => {
      core.readIndex(ctx);
      ok = true;
    });
    if (!ok) return false;
    n.readsOpen.add(ctx);
    this.checkers.reads.onReadStart(ctx, n.id, this.tick);
    this.drive(n);
    return true;
  }

  /** Runs `f` on the node's core: RaftErrors are expected refusals; anything else is a violation. */
  guard(n: SimNode, f: () => void): boolean {
    return this.call(n, () => {
      f();
      return true;
    }) ?? false;
  }

  /** Like guard, returning f's result (undefined if it threw). */
  call<T>(n: SimNode, f: () => T): T | undefined {
    try {
      return f();
    } catch (err) {
      if (err instanceof RaftError) return undefined;
      const e = err as Error;
      this.checkers.report('exception', `${n.id}: ${e?.message ?? String(err)}${e?.stack ? ` @ ${e.stack.split('\n')[1]?.trim() ?? ''}` : ''}`);
      // A core that threw is in an unknown state: take the node down.
      n.core = null;
      n.stalled = null;
      return undefined;
    }
  }
}

function local(type: 'snapStatus' | 'unreachable' | 'linkDown', from: NodeId, to: NodeId, failed: boolean): Message {
  return { type, from, to, term: 0, index: 0, logTerm: 0, failed: type === 'snapStatus' ? failed : undefined };
}
