// The Raft driver: turns the pure core into a running replica. It owns the tick timer and the
// Ready loop (send early appends → persist → send → apply → advance), resolves proposals when
// their entry is applied, serves linearizable reads through ReadIndex, and takes snapshots.
import { EventEmitter } from 'node:events';
import { RaftCore, decodeConfChange, encodeConfChange, type Status } from './core.js';
import { EntryType, RaftError, type ConfChange, type Entry, type Message, type NodeId, type PersistedState, type Ready, type Snapshot, type SoftState } from './types.js';
import { Packr, unpack } from 'msgpackr';
import { monoNow } from '../clock.js';
import { TickAccount } from './ticker.js';

/** The application replicated by Raft. apply() must be deterministic. */
export interface StateMachine {
  apply(data: Uint8Array, at: { index: number; term: number }): unknown;
  snapshot(): Uint8Array;
  restore(data: Uint8Array): void;
  /**
   * Optional incremental `snapshot()`: must capture the state synchronously, at the call (the
   * node calls it right after applying the snapshot's last entry), then may encode while
   * entries keep being applied, yielding to the event loop. Resolves with the bytes in parts.
   */
  snapshotAsync?(): Promise<Uint8Array[]>;
  /**
   * Optional incremental `restore()`: may yield to the event loop (no entry is applied until it
   * resolves) but must switch to the snapshot's state at once, at the end.
   */
  restoreAsync?(data: Uint8Array): Promise<void>;
}

export interface NodeStorage {
  save(rd: { hardState?: Ready['hardState']; entries: Entry[]; snapshot?: Snapshot }): Promise<void>;
  saveSnapshot(s: Snapshot): Promise<void>;
}

export interface NodeTransport {
  send(msgs: Message[]): void;
  /** Forgets a peer removed from the cluster (closes its connection, drops its queue). */
  removePeer?(id: NodeId): void;
  /** Keeps a connection to the peer open even with nothing to send (see RaftNode.start). */
  warm?(id: NodeId): void;
}

/**
 * Observer of Raft progress (the manager's `--raft-trace`, src/raft/trace.ts). Called
 * synchronously from the Ready loop and the apply path: implementations must be cheap.
 */
export interface RaftTrace {
  /** This node became leader of `term`. */
  leader(term: number): void;
  /** This node stopped being leader; `term` is its current term. */
  stepDown(term: number): void;
  /** The commit index changed (also reported once at start, from the persisted state). */
  commit(commit: number, term: number): void;
  /** A committed entry was applied. */
  applied(index: number, term: number): void;
  /** A snapshot was restored from disk at start or installed from the leader. */
  snapshot(index: number, term: number, from: 'disk' | 'leader'): void;
}

export interface RaftNodeOptions {
  id: NodeId;
  storage: NodeStorage;
  transport?: NodeTransport;
  stateMachine: StateMachine;
  persisted?: PersistedState;
  /** New cluster: initial voters and their addresses (ignored when persisted state exists). */
  bootstrap?: Record<NodeId, string>;
  tickMs?: number;
  heartbeatTicks?: number;
  electionTicks?: number;
  /** Take a snapshot every N applied entries. */
  snapshotEvery?: number;
  log?: (level: 'debug' | 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
  /** Called with the duration of each synced write (ms). */
  onPersist?: (ms: number, entries: number) => void;
  /** Optional progress trace (leaders, commit index, terms of applied entries, snapshots). */
  trace?: RaftTrace;
}

interface PendingProposal {
  term: number;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

interface PendingRead {
  index: number | null;
  resolve: (index: number) => void;
  reject: (e: Error) => void;
}

/** What the node adds to the application's snapshot: membership addresses. */
interface NodeSnapshot {
  members: Record<NodeId, string>;
  removed?: NodeId[];
  app: Uint8Array;
}

export class RaftNode extends EventEmitter {
  readonly id: NodeId;
  readonly core: RaftCore;
  private transport: NodeTransport | undefined;
  private readonly storage: NodeStorage;
  private readonly sm: StateMachine;
  private readonly log: NonNullable<RaftNodeOptions['log']>;
  private readonly tickMs: number;
  private readonly electionTicks: number;
  private readonly heartbeatTicks: number;
  private readonly snapshotEvery: number;
  private timer: NodeJS.Timeout | null = null;
  private loopScheduled = false;
  private loopRunning = false;
  private stopped = false;
  private fatal: Error | null = null;
  private proposals = new Map<number, PendingProposal>();
  private reads = new Map<string, PendingRead>();
  private waitingReads: { index: number; resolve: (i: number) => void }[] = [];
  private readSeq = 0;
  private applied = 0;
  private lastSnapshotIndex = 0;
  private soft: SoftState = { leader: null, role: 'follower' };
  /** Addresses of members, from configuration entries (replicated). */
  readonly members = new Map<NodeId, string>();
  /** Ids removed from the cluster: never reused (replicated, kept in snapshots). */
  readonly removed = new Set<NodeId>();
  /** Removed ids already handed to transport.removePeer. */
  private readonly forgotten = new Set<NodeId>();
  /** Monotonic ms (src/clock.ts) of the last message from each peer. */
  readonly lastContact = new Map<NodeId, number>();
  private lastLeaderChange = monoNow();
  private onPersist: RaftNodeOptions['onPersist'];
  private deferredHard: Ready['hardState'] | null = null;
  /** Committed snapshots and entries waiting to be applied, in log order. */
  private applyQueue: (Entry | Snapshot)[] = [];
  private applyHead = 0;
  private draining = false;
  /** The snapshot being encoded and saved, if any (one at a time). */
  private snapshotting: Promise<Snapshot | null> | null = null;
  private readonly trace: RaftTrace | undefined;
  /** Trace only: the current term as of the last Ready, and the term this node last led. */
  private traceTerm = 0;
  private traceLeaderTerm = 0;
  private traceLeading = false;

  constructor(opts: RaftNodeOptions) {
    super();
    this.id = opts.id;
    this.storage = opts.storage;
    this.transport = opts.transport;
    this.sm = opts.stateMachine;
    this.log = opts.log ?? (() => {});
    this.tickMs = opts.tickMs ?? 10;
    this.electionTicks = opts.electionTicks ?? 30;
    this.heartbeatTicks = opts.heartbeatTicks ?? 5;
    this.snapshotEvery = opts.snapshotEvery ?? 10_000;
    this.onPersist = opts.onPersist;
    this.trace = opts.trace;
    const persisted = opts.persisted;
    if (persisted?.snapshot) {
      this.restoreSnapshot(persisted.snapshot);
      if (persisted.snapshot.meta.index > 0) this.trace?.snapshot(persisted.snapshot.meta.index, persisted.snapshot.meta.term, 'disk');
    }
    const bootstrapIds = opts.bootstrap ? Object.keys(opts.bootstrap) : [];
    this.core = new RaftCore({
      id: opts.id,
      heartbeatTick: this.heartbeatTicks,
      electionTick: this.electionTicks,
      rand: (n) => Math.floor(Math.random() * n),
      preVote: true,
      checkQuorum: true,
      persisted,
      bootstrap: bootstrapIds.length > 0 ? { voters: bootstrapIds, learners: [] } : undefined,
      bootstrapContext: opts.bootstrap,
    });
    this.applied = this.core.status().applied;
    this.lastSnapshotIndex = this.core.status().snapshotIndex;
    if (this.trace) {
      const st = this.core.status();
      this.traceTerm = st.term;
      this.trace.commit(st.commit, st.term);
    }
  }

  setTransport(t: NodeTransport): void {
    this.transport = t;
  }

  start(): void {
    // Ticks follow elapsed monotonic time, not timer callbacks (a stalled loop loses none): ticker.ts.
    const perCall = Math.max(2, Math.min(this.heartbeatTicks, this.electionTicks - 1));
    const ticks = new TickAccount(this.tickMs, perCall, 2 * this.electionTicks, monoNow());
    // Links to every member stay open even between followers, which never talk until an
    // election: a first pre-vote after a leader died must not wait for a dial and handshake.
    let sinceWarm = Infinity;
    this.timer = setInterval(() => {
      const n = ticks.due(monoNow());
      if (n === 0) return;
      if ((sinceWarm += n) * this.tickMs >= 1000) {
        sinceWarm = 0;
        for (const id of this.members.keys()) if (id !== this.id && !this.removed.has(id)) this.transport?.warm?.(id);
      }
      for (let i = 0; i < n; i++) this.core.tick();
      // The leader gives up on a silent removed member on a tick (no Ready may follow).
      if (this.removed.size > 0) this.forgetRemovedPeers();
      this.kick();
    }, this.tickMs);
    this.timer.unref?.();
    this.kick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    const err = new RaftError('proposal_dropped', 'the manager is shutting down');
    for (const p of this.proposals.values()) p.reject(err);
    this.proposals.clear();
    for (const r of this.reads.values()) r.reject(err);
    this.reads.clear();
    // Wait for an in-flight persist to finish so storage can close cleanly.
    for (let i = 0; i < 200 && (this.loopRunning || this.draining || this.snapshotting); i++) await new Promise((r) => setTimeout(r, 5));
  }

  /** A message from a peer. */
  receive(m: Message): void {
    if (this.stopped) return;
    // Local reports about a peer (unreachable, snapshot status) are not signs of life.
    if (m.type !== 'unreachable' && m.type !== 'snapStatus' && m.type !== 'linkDown') this.lastContact.set(m.from, monoNow());
    try {
      this.core.step(m);
    } catch (e) {
      this.log('warn', 'raft message rejected', { from: m.from, type: m.type, err: String(e) });
    }
    this.kick();
  }

  /** The transport's connection with `peer` closed (the peer may be dead): core-linkdown.ts. */
  reportLinkDown(peer: NodeId): void {
    this.receive({ type: 'linkDown', from: peer, to: this.id, term: 0, index: 0, logTerm: 0 });
  }

  reportUnreachable(peer: NodeId): void {
    this.receive({ type: 'unreachable', from: peer, to: this.id, term: 0, index: 0, logTerm: 0 });
  }

  reportSnapshot(peer: NodeId, ok: boolean): void {
    this.receive({ type: 'snapStatus', from: peer, to: this.id, term: 0, index: 0, logTerm: 0, failed: !ok });
  }

  isLeader(): boolean {
    return this.soft.role === 'leader';
  }

  leader(): NodeId | null {
    return this.soft.leader;
  }

  status(): Status {
    return this.core.status();
  }

  appliedIndex(): number {
    return this.applied;
  }

  msSinceLeaderChange(): number {
    return monoNow() - this.lastLeaderChange;
  }

  /** Proposes data; resolves with the state machine's result once applied on this node. */
  propose(data: Uint8Array, timeoutMs = 10_000): Promise<unknown> {
    this.checkUsable();
    const { index, term } = this.core.propose(data);
    this.kick();
    return this.track(index, term, timeoutMs);
  }

  proposeConfChange(cc: ConfChange, timeoutMs = 10_000): Promise<unknown> {
    this.checkUsable();
    const { index, term } = this.core.proposeConfChange(cc);
    this.kick();
    return this.track(index, term, timeoutMs);
  }

  transferLeader(to: NodeId): void {
    this.checkUsable();
    this.core.transferLeader(to);
    this.kick();
  }

  /**
   * A linearizable read barrier: resolves with an index once this node has applied everything
   * committed before the call (ReadIndex, confirmed by a quorum of heartbeats).
   */
  readBarrier(timeoutMs = 5_000): Promise<number> {
    this.checkUsable();
    const ctx = `${this.id}:${++this.readSeq}`;
    this.core.readIndex(ctx);
    this.kick();
    return new Promise<number>((resolve, reject) => {
      // One plain timer per read, cleared as soon as it is answered (cheap on the hot path).
      const timer = setTimeout(() => {
        if (this.reads.delete(ctx)) reject(new RaftError('proposal_dropped', 'read timed out: no quorum confirmed the leader'));
      }, timeoutMs);
      const entry: PendingRead = {
        index: null,
        resolve: (i) => {
          clearTimeout(timer);
          resolve(i);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      this.reads.set(ctx, entry);
    });
  }

  private checkUsable(): void {
    if (this.fatal) throw new RaftError('proposal_dropped', `this manager stopped replicating: ${this.fatal.message}`);
    if (this.stopped) throw new RaftError('proposal_dropped', 'the manager is shutting down');
  }

  private track(index: number, term: number, timeoutMs: number): Promise<unknown> {
    // A proposal already waiting at this index lost its entry (this node lost leadership, its
    // tail was replaced, and it leads again): settle it now, or it would hang until its timer.
    const displaced = this.proposals.get(index);
    if (displaced) {
      this.proposals.delete(index);
      displaced.reject(new RaftError('proposal_dropped', 'the write was lost in a leader change; retry'));
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const p = this.proposals.get(index);
        if (p && p.term === term) {
          this.proposals.delete(index);
          reject(new RaftError('proposal_dropped', 'timed out waiting for the write to commit; it may still commit'));
        }
      }, timeoutMs);
      this.proposals.set(index, {
        term,
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
    });
  }

  private kick(): void {
    if (this.loopScheduled || this.stopped) return;
    this.loopScheduled = true;
    setImmediate(() => {
      this.loopScheduled = false;
      void this.loop();
    });
  }

  private async loop(): Promise<void> {
    if (this.loopRunning || this.stopped || this.fatal) return;
    this.loopRunning = true;
    try {
      while (!this.stopped && this.core.hasReady()) {
        const rd = this.core.ready();
        if (rd.softState) this.onSoftState(rd.softState);
        if (this.trace) this.traceReady(this.trace, rd);
        this.transport?.send(rd.earlyMessages);
        if (rd.mustSync) {
          const t0 = performance.now();
          const hardState = rd.hardState ?? this.deferredHard ?? undefined;
          this.deferredHard = null;
          await this.storage.save({ hardState, entries: rd.entries, snapshot: rd.snapshot });
          this.onPersist?.(performance.now() - t0, rd.entries.length);
        } else if (rd.hardState) {
          // Only the commit index moved: Raft does not need it durable (a restarted node learns
          // it again), so it rides along with the next synced write instead of costing an fsync.
          this.deferredHard = rd.hardState;
        }
        if (this.stopped) break;
        this.transport?.send(rd.messages);
        // Apply in order, but off this loop: a large batch of entries must not hold back
        // heartbeats and replication (a stalled leader would lose its leadership).
        if (rd.snapshot) this.applyQueue.push(rd.snapshot);
        for (const e of rd.committedEntries) this.applyQueue.push(e);
        for (const rs of rd.readStates) {
          const r = this.reads.get(rs.context);
          if (!r) continue;
          this.reads.delete(rs.context);
          this.waitForApplied(rs.index, r.resolve);
        }
        this.core.advance(rd);
        if (this.removed.size > 0) this.forgetRemovedPeers();
        void this.drainApply();
      }
    } catch (e) {
      // A failed synced write leaves this replica unable to keep Raft's promises: stop it.
      this.fatal = e as Error;
      this.log('error', 'raft storage failed; this manager stops replicating', { err: String(e) });
      this.emit('fatal', e);
    } finally {
      this.loopRunning = false;
    }
    if (!this.stopped && !this.fatal && this.core.hasReady()) this.kick();
  }

  /**
   * Trace: the commit index from the hard state; leadership from the role after this Ready (a
   * leader's term is the current term of the Ready that shows it leading, so a node that led
   * again in a later term without a visible role change is still recorded).
   */
  private traceReady(trace: RaftTrace, rd: Ready): void {
    if (rd.hardState) {
      this.traceTerm = rd.hardState.term;
      trace.commit(rd.hardState.commit, rd.hardState.term);
    }
    const leading = this.soft.role === 'leader';
    if (leading && this.traceLeaderTerm !== this.traceTerm) {
      this.traceLeaderTerm = this.traceTerm;
      trace.leader(this.traceTerm);
    } else if (!leading && this.traceLeading) trace.stepDown(this.traceTerm);
    this.traceLeading = leading;
  }

  /**
   * Closes the transport's connection to removed members once the core no longer talks to
   * them (the leader keeps a removed node until it has its removal, or gives up on it).
   */
  private forgetRemovedPeers(): void {
    const rp = this.transport?.removePeer;
    if (!rp) return;
    let st: Status | null = null;
    for (const id of this.removed) {
      if (this.forgotten.has(id) || id === this.id) continue;
      st ??= this.core.status();
      if (st.role === 'leader' && st.progress[id]) continue;
      this.forgotten.add(id);
      rp.call(this.transport, id);
      this.log('info', 'removed member forgotten by the transport', { peer: id });
    }
  }

  private onSoftState(s: SoftState): void {
    const prev = this.soft;
    this.soft = s;
    if (prev.leader !== s.leader) {
      this.lastLeaderChange = monoNow();
      this.emit('leader', s.leader, this.core.status().term);
    }
    if (prev.role !== s.role) this.emit('role', s.role, this.core.status().term);
    if (s.role !== 'leader') {
      // Reads waiting for a ReadIndex from this ex-leader will never be answered.
      if (prev.role === 'leader') {
        for (const [ctx, r] of this.reads) {
          if (ctx.startsWith(`${this.id}:`) && r.index === null) {
            this.reads.delete(ctx);
            r.reject(new RaftError('not_leader', 'leadership changed during the read; retry', s.leader));
          }
        }
      }
    }
  }

  /** Applies queued snapshots and entries in order, yielding every few ms so timers and I/O run. */
  private async drainApply(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    try {
      let t0 = performance.now();
      while (this.applyHead < this.applyQueue.length && !this.stopped) {
        const item = this.applyQueue[this.applyHead]!;
        this.applyQueue[this.applyHead++] = undefined as unknown as Entry;
        if ('meta' in item) {
          await this.applySnapshot(item);
          t0 = performance.now();
          continue;
        }
        this.applyEntry(item);
        if (performance.now() - t0 > 5) {
          this.releaseReads();
          await new Promise<void>((r) => setImmediate(r));
          t0 = performance.now();
        }
      }
      if (this.applyHead >= this.applyQueue.length) {
        this.applyQueue = [];
        this.applyHead = 0;
      }
      this.releaseReads();
      if (!this.stopped) this.maybeSnapshot();
    } catch (e) {
      this.fatal = e as Error;
      this.log('error', 'applying committed entries failed; this manager stops replicating', { err: String(e) });
      this.emit('fatal', e);
    } finally {
      this.draining = false;
    }
    if (this.applyHead < this.applyQueue.length && !this.stopped && !this.fatal) void this.drainApply();
  }

  private applyEntry(e: Entry): void {
    let result: unknown;
    if (e.type === EntryType.ConfChange) {
      const cc = decodeConfChange(e.data);
      if (cc.type === 'removeNode') {
        this.members.delete(cc.node);
        this.removed.add(cc.node);
      }
      else if (cc.context) this.members.set(cc.node, cc.context);
      this.emit('conf', cc, e.index);
      result = cc;
    } else if (e.data.length > 0) {
      try {
        result = this.sm.apply(e.data, { index: e.index, term: e.term });
      } catch (err) {
        // A deterministic state machine must not throw; record it and keep the replica consistent.
        this.log('error', 'state machine apply threw', { index: e.index, err: String(err) });
        result = { ok: false, error: { code: 'internal', message: String(err) } };
      }
    }
    this.applied = e.index;
    this.trace?.applied(e.index, e.term);
    const p = this.proposals.get(e.index);
    if (p) {
      this.proposals.delete(e.index);
      if (p.term === e.term) p.resolve(result);
      else p.reject(new RaftError('proposal_dropped', 'the write was lost in a leader change; retry'));
    }
    // Proposals at lower indexes that were never applied (covered by a snapshot) are dropped.
  }

  private async applySnapshot(s: Snapshot): Promise<void> {
    await this.restoreSnapshotAsync(s);
    this.trace?.snapshot(s.meta.index, s.meta.term, 'leader');
    this.applied = s.meta.index;
    this.lastSnapshotIndex = s.meta.index;
    for (const [index, p] of this.proposals) {
      if (index <= s.meta.index) {
        this.proposals.delete(index);
        p.reject(new RaftError('proposal_dropped', 'outcome unknown: replaced by a snapshot from the leader; retry idempotently'));
      }
    }
    this.log('info', 'snapshot restored from the leader', { index: s.meta.index, term: s.meta.term, bytes: s.data.length });
    this.emit('snapshot-restored', s.meta.index, s.data.length);
  }

  private restoreSnapshot(s: Snapshot): void {
    if (s.data.length === 0) return;
    const ns = unpack(s.data) as NodeSnapshot;
    this.sm.restore(ns.app);
    this.restoreMembers(ns);
  }

  /** As restoreSnapshot, through the state machine's incremental restore when it has one. */
  private async restoreSnapshotAsync(s: Snapshot): Promise<void> {
    if (s.data.length === 0) return;
    const ns = unpack(s.data) as NodeSnapshot; // `app` is a view of `s.data`, not a copy
    if (this.sm.restoreAsync) await this.sm.restoreAsync(ns.app);
    else this.sm.restore(ns.app);
    this.restoreMembers(ns);
  }

  private restoreMembers(ns: NodeSnapshot): void {
    this.members.clear();
    for (const [id, addr] of Object.entries(ns.members)) this.members.set(id, addr);
    this.removed.clear();
    for (const id of ns.removed ?? []) this.removed.add(id);
  }

  private waitForApplied(index: number, resolve: (i: number) => void): void {
    if (this.applied >= index) resolve(index);
    else this.waitingReads.push({ index, resolve });
  }

  private releaseReads(): void {
    if (this.waitingReads.length === 0) return;
    const still: typeof this.waitingReads = [];
    for (const w of this.waitingReads) {
      if (this.applied >= w.index) w.resolve(w.index);
      else still.push(w);
    }
    this.waitingReads = still;
  }

  /** Starts a snapshot in the background when enough entries were applied since the last one. */
  private maybeSnapshot(): void {
    if (this.snapshotting || this.applied - this.lastSnapshotIndex < this.snapshotEvery) return;
    void this.snapshotNow().catch(() => {}); // failures are handled (fatal) inside
  }

  /**
   * Takes a snapshot at the applied index and compacts the log. The state is captured at once;
   * encoding it (when the state machine has `snapshotAsync`) and saving it yield to the event
   * loop while entries keep being applied. A call while one is running joins it.
   */
  snapshotNow(): Promise<Snapshot | null> {
    if (this.snapshotting) return this.snapshotting;
    if (this.applied <= this.core.status().snapshotIndex) return Promise.resolve(null);
    const p = this.takeSnapshot().finally(() => {
      if (this.snapshotting === p) this.snapshotting = null;
    });
    this.snapshotting = p;
    return p;
  }

  private async takeSnapshot(): Promise<Snapshot | null> {
    // Captured synchronously, together: the index, the membership and the application state.
    const index = this.applied;
    const members = Object.fromEntries(this.members);
    const removed = [...this.removed];
    const app = this.sm.snapshotAsync ? this.sm.snapshotAsync() : Promise.resolve([this.sm.snapshot()]);
    try {
      const parts = await app;
      // A snapshot from the leader may have replaced the state meanwhile: this one is stale.
      if (this.stopped || index <= this.core.status().snapshotIndex) return null;
      const data = await encodeNodeSnapshot(members, removed, parts);
      const snap = this.core.compact(index, data);
      this.lastSnapshotIndex = snap.meta.index;
      await this.storage.saveSnapshot(snap);
      this.log('info', 'snapshot taken', { index: snap.meta.index, bytes: data.length });
      this.emit('snapshot-taken', snap.meta.index, data.length);
      return snap;
    } catch (e) {
      if (!this.fatal && !this.stopped) {
        this.fatal = e as Error;
        this.log('error', 'taking a snapshot failed; this manager stops replicating', { err: String(e) });
        this.emit('fatal', e);
      }
      throw e;
    }
  }
}

const headerPackr = new Packr({ useRecords: false });

/**
 * The node snapshot as MessagePack: a map {members, removed, app} whose `app` is a bin 32 of the
 * application's parts, written straight into one buffer (one copy of the parts, no re-encoding).
 * Any MessagePack decoder reads it like `pack({ members, removed, app })`.
 */
async function encodeNodeSnapshot(members: Record<NodeId, string>, removed: NodeId[], parts: Uint8Array[]): Promise<Uint8Array> {
  const head = [
    Uint8Array.of(0x83),
    headerPackr.pack('members'),
    headerPackr.pack(members),
    headerPackr.pack('removed'),
    headerPackr.pack(removed),
    headerPackr.pack('app'),
  ];
  const appLength = parts.reduce((n, p) => n + p.length, 0);
  const bin = new Uint8Array(5);
  bin[0] = 0xc6;
  new DataView(bin.buffer).setUint32(1, appLength);
  head.push(bin);
  // Copied a few MiB at a time: filling a fresh 100 MB buffer at once (page faults and copy)
  // would block the event loop for hundreds of ms.
  const out = Buffer.allocUnsafe(head.reduce((n, p) => n + p.length, 0) + appLength);
  let at = 0;
  let sinceYield = 0;
  for (const p of [...head, ...parts]) {
    out.set(p, at);
    at += p.length;
    sinceYield += p.length;
    if (sinceYield >= 4 * 1024 * 1024) {
      sinceYield = 0;
      await new Promise<void>((r) => setImmediate(r));
    }
  }
  return out;
}

export { encodeConfChange };
