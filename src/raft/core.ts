// The pure Raft core: a deterministic state machine driven by tick(), step() and the
// application's calls, that hands out what to persist, send and apply through ready().
// No IO, no clocks, no randomness of its own (see DESIGN.md principle 1).
// Its pure parts live beside it: core-log.ts (the log and its marks), core-progress.ts (the
// leader's per-follower progress), core-quorum.ts (majority arithmetic), core-read.ts (the
// ReadIndex queue) and core-confchange.ts (configuration changes).
import { applyToMembers, checkConfChange, cloneConf, decodeConfChange, encodeConfChange, votersInLog } from './core-confchange.js';
import { RaftLog } from './core-log.js';
import { Progress, type PeerStatus } from './core-progress.js';
import { committedIndex, majority, voteResult } from './core-quorum.js';
import { linkDownDelay } from './core-linkdown.js';
import { ReadQueue, type PendingRead } from './core-read.js';
import {
  EntryType,
  RaftError,
  type ConfChange,
  type ConfState,
  type Entry,
  type HardState,
  type Message,
  type MessageType,
  type NodeId,
  type RaftConfig,
  type ReadState,
  type Ready,
  type Role,
  type Snapshot,
  type SoftState,
} from './types.js';

export { encodeConfChange, decodeConfChange };

export type { PeerStatus };

export interface Status {
  id: NodeId;
  term: number;
  vote: NodeId | null;
  role: Role;
  leader: NodeId | null;
  commit: number;
  applied: number;
  lastIndex: number;
  stableIndex: number;
  snapshotIndex: number;
  conf: ConfState;
  leadTransferee: NodeId | null;
  progress: Record<NodeId, PeerStatus>;
}

export class RaftCore {
  readonly id: NodeId;
  private term = 0;
  private vote: NodeId | null = null;
  private role: Role = 'follower';
  private leader: NodeId | null = null;
  private readonly log: RaftLog;

  private voters = new Set<NodeId>();
  private learners = new Set<NodeId>();
  /** Configuration changes still in the log (index at which each took effect), for snapshots. */
  private confHistory: { index: number; conf: ConfState }[] = [];
  private baseConf: ConfState;

  private prs = new Map<NodeId, Progress>();
  private votes = new Map<NodeId, boolean>();

  private electionElapsed = 0;
  private heartbeatElapsed = 0;
  private randomizedElectionTimeout = 0;
  private readonly heartbeatTimeout: number;
  private readonly electionTimeout: number;
  private readonly rand: (n: number) => number;
  private readonly preVote: boolean;
  private readonly checkQuorum: boolean;
  private readonly maxSizePerMsg: number;
  private readonly maxInflightMsgs: number;
  private readonly maxInflightBytes: number;
  private readonly bug: RaftConfig['bug'];

  private leadTransferee: NodeId | null = null;
  private pendingConfIndex = 0;
  private readonly reads = new ReadQueue();
  private needBroadcast = false;
  /** Removed nodes still being told about their removal (index of the removal entry). */
  private departing = new Map<NodeId, { index: number; ticks: number }>();
  private commitBroadcast = false;
  /** Peers whose connections the driver reported closed, not heard from since (core-linkdown.ts). */
  private readonly downLinks = new Set<NodeId>();

  private msgs: Message[] = [];
  private readStates: ReadState[] = [];
  /** Highest index handed out for apply (may be ahead of log.applied until advance()). */
  private applying: number;
  private prevHard: HardState;
  private prevSoft: SoftState;

  constructor(cfg: RaftConfig) {
    this.id = cfg.id;
    this.heartbeatTimeout = cfg.heartbeatTick;
    this.electionTimeout = cfg.electionTick;
    if (!(cfg.heartbeatTick > 0 && cfg.electionTick > cfg.heartbeatTick)) {
      throw new RaftError('invalid', 'election tick must be greater than heartbeat tick, both positive');
    }
    this.rand = cfg.rand;
    this.preVote = cfg.preVote ?? true;
    this.checkQuorum = cfg.checkQuorum ?? true;
    this.maxSizePerMsg = cfg.maxSizePerMsg ?? 1024 * 1024;
    this.maxInflightMsgs = cfg.maxInflightMsgs ?? 256;
    this.maxInflightBytes = cfg.maxInflightBytes ?? 32 * 1024 * 1024;
    this.bug = cfg.bug ?? 'none';

    const p = cfg.persisted;
    const fresh = !p || (p.snapshot === null && p.entries.length === 0 && p.hardState.term === 0);
    if (fresh && cfg.bootstrap && cfg.bootstrap.voters.length > 0) {
      // A brand-new cluster: its initial membership is the first committed entries of the log
      // (term 1), identical on every bootstrapping node, so a node added later learns it by
      // replication like any other configuration change.
      this.log = new RaftLog(null, [], 0, 0);
      const ccs: ConfChange[] = [
        ...[...cfg.bootstrap.voters].sort().map((node): ConfChange => ({ type: 'addVoter', node, context: cfg.bootstrapContext?.[node] })),
        ...[...cfg.bootstrap.learners].sort().map((node): ConfChange => ({ type: 'addLearner', node, context: cfg.bootstrapContext?.[node] })),
      ];
      this.log.append(ccs.map((cc, i) => ({ term: 1, index: i + 1, type: EntryType.ConfChange, data: encodeConfChange(cc) })));
      this.log.committed = ccs.length;
      this.term = 1;
      this.vote = null;
    } else {
      const hs = p?.hardState ?? { term: 0, vote: null, commit: 0 };
      this.log = new RaftLog(p?.snapshot ?? null, p?.entries ?? [], hs.commit, cfg.applied);
      this.term = hs.term;
      this.vote = hs.vote;
    }
    this.baseConf = p?.snapshot ? cloneConf(p.snapshot.meta.conf) : { voters: [], learners: [] };
    this.setConf(this.baseConf);
    // Configuration = the snapshot's, plus every committed configuration change after it.
    for (const e of this.log.slice(this.log.firstIndex(), this.log.committed + 1) ?? []) {
      if (e.type === EntryType.ConfChange) this.applyConfChange(decodeConfChange(e.data), e.index);
    }
    this.applying = this.log.applied;
    this.prevHard = fresh ? { term: 0, vote: null, commit: 0 } : { term: this.term, vote: this.vote, commit: this.log.committed };
    this.prevSoft = { leader: null, role: 'follower' };
    this.becomeFollower(this.term, null);
  }

  // ---------------------------------------------------------------- public API

  tick(): void {
    if (this.role === 'leader') this.tickHeartbeat();
    else this.tickElection();
  }

  propose(data: Uint8Array): { index: number; term: number } {
    return this.proposeEntry(EntryType.Normal, data);
  }

  proposeConfChange(cc: ConfChange): { index: number; term: number } {
    if (this.role !== 'leader') throw this.notLeader();
    if (this.pendingConfIndex > this.log.committed) {
      throw new RaftError('conf_change_pending', 'a configuration change is already in progress; retry when it commits');
    }
    checkConfChange(cc, this.voters, this.learners);
    const r = this.proposeEntry(EntryType.ConfChange, encodeConfChange(cc));
    this.pendingConfIndex = r.index;
    return r;
  }

  readIndex(context: string): void {
    if (this.role === 'leader') {
      this.leaderReadIndex(context, this.id);
      return;
    }
    if (this.leader === null) throw this.notLeader();
    this.send({ type: 'readIndex', to: this.leader, term: this.term, context, index: 0, logTerm: 0 });
  }

  transferLeader(to: NodeId): void {
    if (this.role !== 'leader') {
      if (this.leader === null) throw this.notLeader();
      this.send({ type: 'transferLeader', to: this.leader, term: this.term, context: to, index: 0, logTerm: 0 });
      return;
    }
    this.leaderTransfer(to);
  }

  /** The application took a snapshot of its state at `index` (<= applied); the log before it is dropped. */
  compact(index: number, data: Uint8Array): Snapshot {
    if (index > this.log.applied) throw new RaftError('invalid', `cannot compact at ${index}: applied is ${this.log.applied}`);
    if (index <= this.log.snapIndex) throw new RaftError('invalid', `cannot compact at ${index}: snapshot is already at ${this.log.snapIndex}`);
    const term = this.log.term(index)!;
    const snap: Snapshot = { meta: { index, term, conf: this.confAt(index) }, data };
    this.log.compact(snap);
    this.baseConf = cloneConf(snap.meta.conf);
    this.confHistory = this.confHistory.filter((c) => c.index > index);
    return snap;
  }

  step(m: Message): void {
    // Local messages from the driver.
    if (m.type === 'unreachable' || m.type === 'snapStatus') {
      if (this.role === 'leader') this.stepLeader(m);
      return;
    }
    if (m.type === 'linkDown') {
      this.onLinkDown(m.from);
      return;
    }
    if (this.downLinks.size > 0 && this.downLinks.delete(m.from) && this.randomizedElectionTimeout < this.electionTimeout) {
      // Heard from it again (it is alive, the link works): an early election timer set by its link-down goes.
      this.randomizedElectionTimeout = this.electionTimeout + this.rand(this.electionTimeout);
    }
    if (m.term > this.term) {
      if (m.type === 'vote' || m.type === 'preVote') {
        // Heard from a leader within the election timeout: deny (pre-)votes (dissertation §4.2.3, §9.6),
        // unless this node's own link to that leader closed since (core-linkdown.ts).
        const inLease =
          (this.checkQuorum || this.preVote) && this.leader !== null && this.electionElapsed < this.electionTimeout && !this.downLinks.has(this.leader);
        if (!m.transfer && inLease) return; // a leader is known and alive: a disruptive candidate is ignored
      }
      if (m.type === 'preVote') {
        // never change term because of a pre-vote
      } else if (m.type === 'preVoteResp' && !m.reject) {
        // a granted pre-vote carries the term we would campaign at
      } else if (m.type === 'app' || m.type === 'heartbeat' || m.type === 'snap') {
        this.becomeFollower(m.term, m.from);
      } else {
        this.becomeFollower(m.term, null);
      }
    } else if (m.term < this.term) {
      if ((this.checkQuorum || this.preVote) && (m.type === 'heartbeat' || m.type === 'app')) {
        // Tell a stale leader about the new term so it steps down (it may be cut off from votes).
        this.send({ type: 'appResp', to: m.from, term: this.term, index: 0, logTerm: 0 });
      } else if (m.type === 'preVote') {
        this.send({ type: 'preVoteResp', to: m.from, term: this.term, reject: true, index: 0, logTerm: 0 });
      }
      return;
    }

    if (m.type === 'vote' || m.type === 'preVote') {
      this.handleVoteRequest(m);
      return;
    }
    switch (this.role) {
      case 'leader':
        this.stepLeader(m);
        break;
      case 'candidate':
      case 'preCandidate':
        this.stepCandidate(m);
        break;
      case 'follower':
        this.stepFollower(m);
        break;
    }
  }

  hasReady(): boolean {
    if ((this.needBroadcast || this.commitBroadcast) && this.role === 'leader') return true;
    if (this.msgs.length > 0 || this.readStates.length > 0) return true;
    if (this.log.unstableSnapshot !== null) return true;
    if (this.log.stable < this.log.lastIndex()) return true;
    if (this.log.nextCommitted(this.applying, 1).length > 0) return true;
    const hs = this.hardState();
    if (!sameHard(hs, this.prevHard)) return true;
    if (this.leader !== this.prevSoft.leader || this.role !== this.prevSoft.role) return true;
    return false;
  }

  ready(): Ready {
    if ((this.needBroadcast || this.commitBroadcast) && this.role === 'leader') {
      this.bcastAppend(this.commitBroadcast);
    }
    this.needBroadcast = false;
    this.commitBroadcast = false;
    const hs = this.hardState();
    const entries = this.log.unstableEntries();
    const snapshot = this.log.unstableSnapshot ?? undefined;
    if (snapshot) this.applying = Math.max(this.applying, snapshot.meta.index);
    const committedEntries = this.log.nextCommitted(this.applying, 8 * 1024 * 1024);
    if (committedEntries.length > 0) this.applying = committedEntries[committedEntries.length - 1]!.index;
    const hardChanged = !sameHard(hs, this.prevHard);
    const termOrVoteChanged = hs.term !== this.prevHard.term || hs.vote !== this.prevHard.vote;
    const early: Message[] = [];
    const later: Message[] = [];
    for (const m of this.msgs) {
      // A leader may send appends before its own write completes (thesis §10.2.1): it counts
      // itself toward a quorum only after advance(). Anything else waits for the write.
      if (m.type === 'app' && this.role === 'leader' && !termOrVoteChanged && m.term === this.term) early.push(m);
      else later.push(m);
    }
    const soft: SoftState = { leader: this.leader, role: this.role };
    const rd: Ready = {
      softState: soft.leader !== this.prevSoft.leader || soft.role !== this.prevSoft.role ? soft : undefined,
      hardState: hardChanged ? hs : undefined,
      entries,
      snapshot,
      earlyMessages: early,
      messages: later,
      committedEntries,
      readStates: this.readStates,
      mustSync: termOrVoteChanged || entries.length > 0 || snapshot !== undefined,
    };
    this.msgs = [];
    this.readStates = [];
    this.prevHard = hs;
    this.prevSoft = soft;
    this.log.unstableSnapshot = null;
    return rd;
  }

  advance(rd: Ready): void {
    if (rd.snapshot && rd.snapshot.meta.index > this.log.applied) {
      this.log.applied = rd.snapshot.meta.index;
    }
    if (rd.entries.length > 0) {
      const last = rd.entries[rd.entries.length - 1]!;
      this.log.stableTo(last.index, last.term);
      if (this.role === 'leader') {
        const pr = this.prs.get(this.id);
        if (pr && pr.maybeUpdate(this.log.stable)) {
          if (this.maybeCommit()) this.needBroadcast = true;
        }
      }
    }
    if (rd.committedEntries.length > 0) {
      const last = rd.committedEntries[rd.committedEntries.length - 1]!.index;
      if (last > this.log.applied) this.log.applied = last;
    }
    if (this.applying < this.log.applied) this.applying = this.log.applied;
  }

  status(): Status {
    const progress: Record<NodeId, PeerStatus> = {};
    if (this.role === 'leader') {
      for (const [id, pr] of this.prs) {
        progress[id] = { match: pr.match, next: pr.next, state: pr.state, recentActive: pr.recentActive, learner: this.learners.has(id) };
      }
    }
    return {
      id: this.id,
      term: this.term,
      vote: this.vote,
      role: this.role,
      leader: this.leader,
      commit: this.log.committed,
      applied: this.log.applied,
      lastIndex: this.log.lastIndex(),
      stableIndex: this.log.stable,
      snapshotIndex: this.log.snapIndex,
      conf: this.conf(),
      leadTransferee: this.leadTransferee,
      progress,
    };
  }

  conf(): ConfState {
    return { voters: [...this.voters].sort(), learners: [...this.learners].sort() };
  }

  /** The commit index (cheap, for checkers and drivers). */
  commitIndex(): number {
    return this.log.committed;
  }

  /** The leader's recorded match index per member (empty unless leader): for checkers. */
  matches(): [NodeId, number][] {
    if (this.role !== 'leader') return [];
    return [...this.prs].map(([id, pr]) => [id, pr.match]);
  }

  /**
   * For checkers: the voters that the log itself defines up to `index` (the snapshot's
   * configuration plus every configuration entry after it, up to `index`), independent of what
   * the core applied; and the configuration entries in (after, index].
   */
  logVoters(after: number, index: number): { voters: NodeId[]; changes: { index: number; term: number; votersBefore: NodeId[] }[] } {
    const base = this.log.snapshot ? this.log.snapshot.meta.conf.voters : this.baseConf.voters;
    return votersInLog(base, this.log.slice(this.log.firstIndex(), index + 1) ?? [], after);
  }

  /** Term of the entry at index (undefined if compacted or missing): for checkers and drivers. */
  termAt(index: number): number | undefined {
    return this.log.term(index);
  }

  // ---------------------------------------------------------------- roles

  private becomeFollower(term: number, leader: NodeId | null): void {
    if (term !== this.term) {
      this.term = term;
      this.vote = null;
    }
    this.role = 'follower';
    this.leader = leader;
    this.resetTimers();
    this.abortLeaderTransfer();
    this.reads.clear();
    this.needBroadcast = false;
    this.commitBroadcast = false;
    this.departing.clear();
  }

  private becomePreCandidate(): void {
    // Forget the leader: otherwise PreVote + CheckQuorum can deadlock (etcd #9586, #10355).
    this.role = 'preCandidate';
    this.leader = null;
    this.votes = new Map();
    this.resetTimers();
  }

  private becomeCandidate(): void {
    this.term += 1;
    this.vote = this.id;
    this.role = 'candidate';
    this.leader = null;
    this.votes = new Map();
    this.resetTimers();
  }

  private becomeLeader(): void {
    this.role = 'leader';
    this.leader = this.id;
    this.resetTimers();
    this.abortLeaderTransfer();
    this.reads.clearPending();
    const last = this.log.lastIndex();
    this.prs = new Map();
    for (const id of [...this.voters, ...this.learners]) {
      const pr = new Progress(last + 1);
      if (id === this.id) pr.match = this.log.stable;
      this.prs.set(id, pr);
    }
    // A no-op entry of this term: it commits everything before it, and until it commits the
    // leader proposes no configuration change (the single-server change fix) and serves no read.
    this.appendEntries([{ term: this.term, index: last + 1, type: EntryType.Normal, data: new Uint8Array(0) }]);
    if (this.bug === 'self-count-before-sync') this.prs.get(this.id)?.maybeUpdate(last + 1);
    this.pendingConfIndex = this.bug === 'conf-before-noop' ? 0 : this.log.lastIndex();
    this.needBroadcast = true;
  }

  private resetTimers(): void {
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.randomizedElectionTimeout = this.electionTimeout + this.rand(this.electionTimeout);
  }

  private promotable(): boolean {
    return this.voters.has(this.id);
  }

  /** The driver reports that its connection with `peer` closed (see core-linkdown.ts). */
  private onLinkDown(peer: NodeId): void {
    if (peer === this.id) return;
    this.downLinks.add(peer);
    if (this.role !== 'follower' || peer !== this.leader || !this.promotable()) return;
    const at = this.electionElapsed + linkDownDelay(this.id, peer, this.voters, this.electionTimeout, this.rand);
    if (at < this.randomizedElectionTimeout) this.randomizedElectionTimeout = at;
  }

  // ---------------------------------------------------------------- ticks

  private tickElection(): void {
    this.electionElapsed++;
    if (this.promotable() && this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0;
      this.campaign(this.preVote ? 'preElection' : 'election', false);
    }
  }

  private tickHeartbeat(): void {
    this.heartbeatElapsed++;
    this.electionElapsed++;
    for (const [id, d] of this.departing) {
      // Give up on a removed node that does not answer (it may be gone for good).
      if (++d.ticks > 10 * this.electionTimeout) this.forgetDeparting(id, false);
    }
    if (this.electionElapsed >= this.electionTimeout) {
      this.electionElapsed = 0;
      if (this.checkQuorum) {
        if (!this.quorumActive()) {
          this.becomeFollower(this.term, null);
          return;
        }
      }
      this.abortLeaderTransfer();
    }
    if (this.heartbeatElapsed >= this.heartbeatTimeout) {
      this.heartbeatElapsed = 0;
      this.bcastHeartbeat();
    }
  }

  /** CheckQuorum: did a quorum of voters (counting this leader) talk to us in the last election timeout? */
  private quorumActive(): boolean {
    let active = 0;
    for (const id of this.voters) {
      const pr = this.prs.get(id);
      if (id === this.id || pr?.recentActive) active++;
      if (pr && id !== this.id) pr.recentActive = false;
    }
    return active >= this.quorum();
  }

  private quorum(): number {
    return majority(this.voters.size);
  }

  // ---------------------------------------------------------------- elections

  private campaign(kind: 'preElection' | 'election', transfer: boolean): void {
    if (!this.promotable()) return;
    let voteTerm: number;
    let type: MessageType;
    if (kind === 'preElection') {
      this.becomePreCandidate();
      voteTerm = this.term + 1;
      type = 'preVote';
    } else {
      this.becomeCandidate();
      voteTerm = this.term;
      type = 'vote';
    }
    this.votes.set(this.id, true);
    if (this.tallyAndAct()) return;
    for (const id of this.voters) {
      if (id === this.id) continue;
      this.send({
        type,
        to: id,
        term: voteTerm,
        index: this.log.lastIndex(),
        logTerm: this.log.lastTerm(),
        transfer: transfer || undefined,
      });
    }
  }

  /** Counts votes; wins or loses the (pre-)election if decided. Returns true when decided. */
  private tallyAndAct(): boolean {
    const result = voteResult(this.voters, this.votes);
    if (result === 'won') {
      if (this.role === 'preCandidate') this.campaign('election', false);
      else this.becomeLeader();
      return true;
    }
    if (result === 'lost') {
      this.becomeFollower(this.term, null);
      return true;
    }
    return false;
  }

  private handleVoteRequest(m: Message): void {
    const pre = m.type === 'preVote';
    const canVote =
      this.vote === m.from || (this.vote === null && this.leader === null) || (pre && m.term > this.term);
    const grant = canVote && this.log.isUpToDate(m.index, m.logTerm);
    if (grant) {
      this.send({ type: pre ? 'preVoteResp' : 'voteResp', to: m.from, term: m.term, index: 0, logTerm: 0 });
      if (!pre) {
        this.electionElapsed = 0;
        this.vote = m.from;
      } else if (this.role === 'follower' && this.randomizedElectionTimeout < this.electionTimeout) {
        // Another voter campaigns first: this one's early (link-down) timer makes way, or both
        // could win their pre-votes and split the vote (core-linkdown.ts).
        this.randomizedElectionTimeout = this.electionTimeout + this.rand(this.electionTimeout);
      }
    } else {
      this.send({ type: pre ? 'preVoteResp' : 'voteResp', to: m.from, term: this.term, reject: true, index: 0, logTerm: 0 });
    }
  }

  // ---------------------------------------------------------------- step functions

  private stepCandidate(m: Message): void {
    switch (m.type) {
      case 'app':
      case 'heartbeat':
      case 'snap':
        this.becomeFollower(m.term, m.from);
        this.stepFollower(m);
        return;
      case 'voteResp':
        if (this.role !== 'candidate') return;
        this.votes.set(m.from, !m.reject);
        this.tallyAndAct();
        return;
      case 'preVoteResp':
        if (this.role !== 'preCandidate') return;
        this.votes.set(m.from, !m.reject);
        this.tallyAndAct();
        return;
      default:
        return;
    }
  }

  private stepFollower(m: Message): void {
    switch (m.type) {
      case 'app':
        this.electionElapsed = 0;
        this.leader = m.from;
        this.handleAppend(m);
        return;
      case 'heartbeat':
        this.electionElapsed = 0;
        this.leader = m.from;
        if (m.commit !== undefined) this.commitTo(Math.min(m.commit, this.log.lastIndex()));
        this.send({ type: 'heartbeatResp', to: m.from, term: this.term, context: m.context, index: 0, logTerm: 0 });
        return;
      case 'snap':
        this.electionElapsed = 0;
        this.leader = m.from;
        this.handleSnapshot(m);
        return;
      case 'timeoutNow':
        // Leadership transfer: campaign at once, without a pre-vote, bypassing leases.
        if (this.promotable()) this.campaign('election', true);
        return;
      case 'readIndexResp':
        this.readStates.push({ index: m.index, context: m.context ?? '' });
        return;
      case 'transferLeader':
        if (this.leader !== null) {
          this.send({ type: 'transferLeader', to: this.leader, term: this.term, context: m.context, index: 0, logTerm: 0 });
        }
        return;
      case 'readIndex':
        if (this.leader !== null) {
          // a forwarded read that reached a node that is no longer leader: drop (the client retries)
        }
        return;
      default:
        return;
    }
  }

  private stepLeader(m: Message): void {
    if (m.type === 'readIndex') {
      this.leaderReadIndex(m.context ?? '', m.from);
      return;
    }
    if (m.type === 'transferLeader') {
      if (m.context) this.leaderTransfer(m.context);
      return;
    }
    const pr = this.prs.get(m.from);
    if (!pr) return;
    switch (m.type) {
      case 'appResp': {
        pr.recentActive = true;
        if (m.reject) {
          let hint = m.rejectHint ?? m.index;
          if ((m.logTerm ?? 0) > 0) hint = this.log.findConflictByTerm(hint, m.logTerm).index;
          if (pr.maybeDecrTo(m.index, hint)) {
            if (pr.state === 'replicate') pr.becomeProbe();
            this.sendAppend(m.from, true);
          }
          return;
        }
        const wasPaused = pr.isPaused(this.maxInflightMsgs, this.maxInflightBytes);
        if (pr.maybeUpdate(m.index)) {
          if (pr.state === 'probe') pr.becomeReplicate();
          else if (pr.state === 'snapshot' && pr.match >= pr.pendingSnapshot) pr.becomeProbe();
          else if (pr.state === 'replicate') pr.freeTo(m.index);
          if (!this.maybeCommit() && wasPaused) this.sendAppend(m.from, false);
          // Pipelining: keep sending while the window allows.
          while (this.sendAppend(m.from, false)) {
            /* loop */
          }
          if (m.from === this.leadTransferee && pr.match === this.log.lastIndex()) {
            this.send({ type: 'timeoutNow', to: m.from, term: this.term, index: 0, logTerm: 0 });
          }
        }
        // A removed node that has its removal (and knows it is committed) is dropped.
        this.maybeForgetDeparting(m.from);
        return;
      }
      case 'heartbeatResp': {
        pr.recentActive = true;
        pr.probeSent = false;
        // An append (or its response) may have been lost with the window full: free one slot so
        // the next append goes out; a gap makes the follower reject and the leader probes back.
        if (pr.state === 'replicate' && pr.isPaused(this.maxInflightMsgs, this.maxInflightBytes)) pr.freeFirst();
        if (pr.match < this.log.lastIndex()) this.sendAppend(m.from, true);
        // (bug read-any-ack: any response confirms the newest pending read, whatever it answers.)
        const ctx = this.bug === 'read-any-ack' ? this.reads.lastContext() : m.context;
        if (ctx) this.ackRead(ctx, m.from);
        this.maybeForgetDeparting(m.from);
        return;
      }
      case 'snapStatus': {
        if (pr.state !== 'snapshot') return;
        if (m.failed) pr.pendingSnapshot = 0;
        pr.becomeProbe();
        pr.probeSent = true; // wait for the follower's response (or a heartbeat) before probing again
        return;
      }
      case 'unreachable': {
        if (pr.state === 'replicate') pr.becomeProbe();
        return;
      }
      default:
        return;
    }
  }

  // ---------------------------------------------------------------- replication

  private proposeEntry(type: EntryType, data: Uint8Array): { index: number; term: number } {
    if (this.role !== 'leader') throw this.notLeader();
    if (this.leadTransferee !== null) {
      throw new RaftError('transfer_in_progress', `leadership is moving to ${this.leadTransferee}; retry`, this.leadTransferee);
    }
    if (!this.prs.has(this.id)) throw new RaftError('not_leader', 'this node was removed from the cluster', null);
    const index = this.log.lastIndex() + 1;
    this.appendEntries([{ term: this.term, index, type, data }]);
    if (this.bug === 'self-count-before-sync') this.prs.get(this.id)!.maybeUpdate(index);
    this.needBroadcast = true;
    return { index, term: this.term };
  }

  private appendEntries(ents: Entry[]): void {
    this.log.append(ents);
  }

  private maybeCommit(): boolean {
    const mci = committedIndex(this.voters, (id) => this.prs.get(id)?.match ?? 0);
    if (mci <= this.log.committed) return false;
    // Only entries of the current term are committed by counting replicas (§5.4.2, Figure 8).
    if (this.bug !== 'figure8' && this.log.term(mci) !== this.term) return false;
    this.commitTo(mci);
    // Followers learn the new commit index promptly (one empty append each, at the next ready).
    this.commitBroadcast = true;
    return true;
  }

  /** Moves the commit index forward and applies what that implies (configuration, deferred reads). */
  private commitTo(i: number): void {
    const old = this.log.committed;
    if (this.log.commitTo(i)) this.onCommitted(old);
  }

  /** Applies configuration changes that just committed and releases deferred reads. */
  private onCommitted(oldCommit: number): void {
    const ents = this.log.slice(oldCommit + 1, this.log.committed + 1) ?? [];
    for (const e of ents) {
      if (e.type === EntryType.ConfChange) this.applyConfChange(decodeConfChange(e.data), e.index);
    }
    if (this.role === 'leader' && this.departing.size > 0) {
      for (const id of [...this.departing.keys()]) this.maybeForgetDeparting(id);
    }
    if (this.role === 'leader' && this.reads.hasDeferred() && this.log.term(this.log.committed) === this.term) {
      for (const r of this.reads.takeDeferred()) this.leaderReadIndex(r.context, r.from);
    }
  }

  private handleAppend(m: Message): void {
    if (m.index < this.log.committed) {
      this.send({ type: 'appResp', to: m.from, term: this.term, index: this.log.committed, logTerm: 0 });
      return;
    }
    const oldCommit = this.log.committed;
    const last = this.log.maybeAppend(m.index, m.logTerm, m.commit ?? 0, m.entries ?? [], this.bug === 'commit-past-new');
    if (last !== null) {
      if (this.bug === 'conf-at-append') {
        // The bug: configuration takes effect on append, and a truncated entry is never undone.
        for (const e of m.entries ?? []) {
          if (e.type === EntryType.ConfChange && e.index > oldCommit) this.applyConfChange(decodeConfChange(e.data), e.index);
        }
      }
      if (this.log.committed > oldCommit) this.onCommitted(oldCommit);
      this.send({ type: 'appResp', to: m.from, term: this.term, index: last, logTerm: 0 });
      return;
    }
    const hintIndex = Math.min(m.index, this.log.lastIndex());
    const hint = this.log.findConflictByTerm(hintIndex, m.logTerm);
    this.send({
      type: 'appResp',
      to: m.from,
      term: this.term,
      index: m.index,
      reject: true,
      rejectHint: hint.index,
      logTerm: hint.term,
    });
  }

  private handleSnapshot(m: Message): void {
    const s = m.snapshot!;
    if (s.meta.index <= this.log.committed) {
      this.send({ type: 'appResp', to: m.from, term: this.term, index: this.log.committed, logTerm: 0 });
      return;
    }
    if (this.log.matchTerm(s.meta.index, s.meta.term)) {
      // We already have the entry: just fast-forward the commit. Acknowledge the snapshot's
      // index only: entries after it may be a stale tail of an older term.
      this.commitTo(s.meta.index);
      this.send({ type: 'appResp', to: m.from, term: this.term, index: s.meta.index, logTerm: 0 });
      return;
    }
    this.log.restore(s);
    this.baseConf = cloneConf(s.meta.conf);
    this.confHistory = [];
    this.setConf(s.meta.conf);
    this.send({ type: 'appResp', to: m.from, term: this.term, index: this.log.lastIndex(), logTerm: 0 });
  }

  private sendAppend(to: NodeId, sendIfEmpty: boolean): boolean {
    if (to === this.id) return false;
    const pr = this.prs.get(to);
    if (!pr || pr.isPaused(this.maxInflightMsgs, this.maxInflightBytes)) return false;
    const prevIndex = pr.next - 1;
    const prevTerm = this.log.term(prevIndex);
    const ents = this.log.slice(pr.next, this.log.lastIndex() + 1, this.maxSizePerMsg);
    if (prevTerm === undefined || ents === undefined) {
      // The entries are compacted away: send the snapshot.
      if (!pr.recentActive || !this.log.snapshot) return false;
      const snap = this.log.snapshot;
      this.send({ type: 'snap', to, term: this.term, index: 0, logTerm: 0, snapshot: snap });
      pr.becomeSnapshot(snap.meta.index);
      return false;
    }
    if (ents.length === 0 && !sendIfEmpty) return false;
    this.send({ type: 'app', to, term: this.term, index: prevIndex, logTerm: prevTerm, entries: ents, commit: this.log.committed });
    if (ents.length > 0) {
      if (pr.state === 'replicate') {
        const last = ents[ents.length - 1]!.index;
        pr.next = last + 1;
        let bytes = 0;
        for (const e of ents) bytes += e.data.length;
        pr.inflight.push({ index: last, bytes });
        pr.inflightBytes += bytes;
      } else if (pr.state === 'probe') {
        pr.probeSent = true;
      }
    } else if (pr.state === 'probe') {
      pr.probeSent = true;
    }
    return ents.length > 0;
  }

  private bcastAppend(sendIfEmpty: boolean): void {
    for (const id of this.prs.keys()) {
      if (id !== this.id) this.sendAppend(id, sendIfEmpty);
    }
  }

  private bcastHeartbeat(): void {
    const ctx = this.reads.lastContext();
    for (const [id, pr] of this.prs) {
      if (id === this.id) continue;
      this.send({
        type: 'heartbeat',
        to: id,
        term: this.term,
        index: 0,
        logTerm: 0,
        commit: Math.min(pr.match, this.log.committed),
        context: ctx,
      });
    }
  }

  // ---------------------------------------------------------------- reads

  private leaderReadIndex(context: string, from: NodeId): void {
    if (this.log.term(this.log.committed) !== this.term) {
      // No read before this leader has committed an entry of its term (it may not know the commit index yet).
      this.reads.defer({ context, from });
      return;
    }
    const index = this.log.committed;
    if (this.voters.size === 1 && this.voters.has(this.id)) {
      this.releaseRead({ context, index, from, acks: new Set() });
      return;
    }
    this.reads.add({ context, index, from, acks: new Set([this.id]) });
    this.bcastHeartbeat();
  }

  private ackRead(context: string, from: NodeId): void {
    // Only voters confirm leadership (bug learner-read-quorum: learners count too).
    const counts = (id: NodeId): boolean => this.voters.has(id) || (this.bug === 'learner-read-quorum' && this.learners.has(id));
    // A quorum confirmed leadership after this read (and all earlier ones) was registered.
    for (const d of this.reads.ack(context, from, counts, this.quorum())) this.releaseRead(d);
  }

  private releaseRead(r: PendingRead): void {
    if (r.from === this.id) this.readStates.push({ index: r.index, context: r.context });
    else this.send({ type: 'readIndexResp', to: r.from, term: this.term, index: r.index, context: r.context, logTerm: 0 });
  }

  // ---------------------------------------------------------------- leadership transfer

  private leaderTransfer(to: NodeId): void {
    if (to === this.id) return;
    if (!this.voters.has(to)) throw new RaftError('invalid', `cannot transfer leadership to ${to}: not a voter`);
    if (this.leadTransferee === to) return;
    this.abortLeaderTransfer();
    this.leadTransferee = to;
    this.electionElapsed = 0; // the transfer must finish within one election timeout
    const pr = this.prs.get(to)!;
    if (pr.match === this.log.lastIndex()) {
      this.send({ type: 'timeoutNow', to, term: this.term, index: 0, logTerm: 0 });
    } else {
      this.sendAppend(to, true);
    }
  }

  /** Drops a removed node once it holds its removal entry and that entry is committed. */
  private maybeForgetDeparting(id: NodeId): void {
    const dep = this.departing.get(id);
    const pr = this.prs.get(id);
    if (dep && pr && pr.match >= dep.index && this.log.committed >= dep.index) this.forgetDeparting(id, true);
  }

  private forgetDeparting(id: NodeId, tellCommit: boolean): void {
    const pr = this.prs.get(id);
    if (tellCommit && pr) {
      this.send({ type: 'heartbeat', to: id, term: this.term, index: 0, logTerm: 0, commit: Math.min(pr.match, this.log.committed) });
    }
    this.departing.delete(id);
    if (!this.voters.has(id) && !this.learners.has(id)) this.prs.delete(id);
  }

  private abortLeaderTransfer(): void {
    this.leadTransferee = null;
  }

  // ---------------------------------------------------------------- membership

  private setConf(c: ConfState): void {
    this.voters = new Set(c.voters);
    this.learners = new Set(c.learners);
  }

  private confAt(index: number): ConfState {
    let conf = this.baseConf;
    for (const c of this.confHistory) if (c.index <= index) conf = c.conf;
    return cloneConf(conf);
  }

  private applyConfChange(cc: ConfChange, index: number): void {
    applyToMembers(cc, this.voters, this.learners);
    this.confHistory.push({ index, conf: this.conf() });
    if (this.role !== 'leader') return;
    if (cc.type === 'removeNode') {
      // Keep replicating to the removed node (outside every quorum) until it has the entry
      // that removes it, so it applies its removal and stays quiet instead of campaigning.
      if (cc.node !== this.id && this.prs.has(cc.node)) this.departing.set(cc.node, { index, ticks: 0 });
      else this.prs.delete(cc.node);
      if (this.leadTransferee === cc.node) this.abortLeaderTransfer();
      if (cc.node === this.id) {
        // A removed leader steps down; it is no longer promotable, so it never campaigns.
        this.becomeFollower(this.term, null);
        return;
      }
      // The quorum may have shrunk.
      if (this.maybeCommit()) this.needBroadcast = true;
    } else if (!this.prs.has(cc.node)) {
      const pr = new Progress(this.log.lastIndex() + 1);
      this.prs.set(cc.node, pr);
      this.needBroadcast = true;
    }
  }

  // ---------------------------------------------------------------- helpers

  private hardState(): HardState {
    return { term: this.term, vote: this.vote, commit: this.log.committed };
  }

  private send(m: Omit<Message, 'from'> & { from?: NodeId }): void {
    this.msgs.push({ ...m, from: this.id } as Message);
  }

  private notLeader(): RaftError {
    return new RaftError('not_leader', this.leader ? `not the leader; the leader is ${this.leader}` : 'no leader is known', this.leader);
  }
}

function sameHard(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}

