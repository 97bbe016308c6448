// One simulated manager: the real RaftCore, the real ClusterState fed with committed entries,
// and the real leader services (Leadership, Dispatcher, Placement, NodeMonitor, Restarts, Drain)
// wired through their ports, on the simulator's virtual timers. The Raft driver below follows
// RaftNode's loop (src/raft/node.ts): a Ready's synced write takes (virtual) time during which
// ticks and messages keep reaching the core, the leader change is told to Leadership only when
// the Ready's leader differs from the last one told, and proposals resolve when their entry is
// applied with their term (one displaced at its index by a later proposal is rejected then). The
// disk survives a crash; a Ready whose write had not finished is lost.
import { RaftCore } from '../../raft/core.js';
import { EntryType, type ConfState, type Entry, type HardState, type Message, type NodeId, type Ready } from '../../raft/types.js';
import { ClusterState, encodeCommand, type ApplyResult, type Command, type SingleCommand } from '../../manager/state.js';
import { Leadership } from '../../manager/leadership.js';
import { Dispatcher, type WorkerLink, type WorkerSessionHandle } from '../../manager/dispatcher.js';
import { Placement } from '../../manager/controllers/placement.js';
import { NodeMonitor } from '../../manager/controllers/node-monitor.js';
import { Restarts } from '../../manager/controllers/restarts.js';
import { Drain } from '../../manager/controllers/drain.js';
import { Services } from '../../manager/controllers/services.js';
import type { CommandProposer, LeaderService, LeaderTerm, Membership, RouteTable } from '../../manager/ports.js';
import type { Logger } from '../../log.js';
import { FlotillaError, toFlotillaError } from '../../protocol/errors.js';
import type { Timers } from '../../clock.js';
import type { Prng } from '../../raft/sim/prng.js';
import type { Sched } from './sched.js';

export type ClusterBug = 'none' | 'unfenced' | 'wall-grace' | 'act-before-caught-up' | 'assignments-before-registration' | 'wall-monitor' | 'registration-reports-judged-early';
export const CLUSTER_BUGS: readonly ClusterBug[] = ['unfenced', 'wall-grace', 'act-before-caught-up', 'assignments-before-registration', 'wall-monitor', 'registration-reports-judged-early'];

export const TICK_MS = 50;
export const NODE_GRACE_MS = 3000;
export const FAILOVER_GRACE_MS = 6000;

export interface Disk {
  hardState: HardState;
  entries: Entry[];
}

/** What the simulation (network, checkers) hears from a manager. */
export interface ManagerHost {
  sched: Sched;
  rng: Prng;
  bug: ClusterBug;
  peers: () => NodeId[];
  sendRaft(m: Message): void;
  trace(kind: string, text: string): void;
  /** A decision made in `decided` was applied here from an entry of `entryTerm` (checker). */
  onDecisionApplied(mgr: SimManager, cmd: SingleCommand, decided: number, entryTerm: number, index: number): void;
  /** Every entry applied here (checkers). */
  onApplied(mgr: SimManager, index: number, term: number, cmd: Command | null, result: ApplyResult | null): void;
  /** Proposals the leader makes of its decisions (checker: nodes declared down). */
  onPropose(mgr: SimManager, cmd: Command): void;
  /** Bug `unfenced`: a decision this manager cannot propose is handed to the leader it knows. */
  forward(to: NodeId, cmd: Command, decided: Map<SingleCommand, number>): Promise<unknown>;
  /** The slow-disk probability (faults phase) and its longest write (ms). */
  slowDisk(): number;
  /**
   * Virtual ms applying one committed entry takes (0: at once). RaftNode applies off its loop
   * from a queue, so a replica's state can lag its commit index: most of all while a
   * restarted manager replays its log.
   */
  applyMs(): number;
  /** A manager (re)started with a fresh state (checkers subscribe to its events). */
  onState(mgr: SimManager, state: ClusterState): void;
}

interface Pending {
  term: number;
  resolve: (r: ApplyResult) => void;
  reject: (e: Error) => void;
  decided: Map<SingleCommand, number>;
  /** The proposed commands in order (a batch's results follow them). */
  singles: SingleCommand[];
  isBatch: boolean;
}

const silent: Logger = { debug() {}, info() {}, warn() {}, error() {} };

export class SimManager {
  readonly disk: Disk = { hardState: { term: 0, vote: null, commit: 0 }, entries: [] };
  core: RaftCore | null = null;
  state = new ClusterState();
  leadership: Leadership | null = null;
  dispatcher: Dispatcher | null = null;
  incarnation = 0;
  /** The leader last told to Leadership (RaftNode's rule: told when it changes). */
  private toldLeader: NodeId | null = null;
  private pending = new Map<number, Pending>();
  private loopBusy = false;
  private loopQueued = false;
  /** Committed entries waiting to be applied (RaftNode's applyQueue). */
  private applyQueue: Entry[] = [];
  private applying = false;
  /** Until when (virtual ms) applying is held: a snapshot restore or a long apply in progress. */
  private applyHeldUntil = 0;
  /** A commit-only hard state waits for the next synced write (RaftNode's deferredHard). */
  private deferredHard: HardState | null = null;
  private cancelTick: (() => void) | null = null;
  private timers!: Timers;
  private log: Logger = silent;

  constructor(
    readonly id: NodeId,
    private readonly bootstrap: ConfState,
    private readonly h: ManagerHost,
  ) {}

  get alive(): boolean {
    return this.core !== null;
  }

  get owner(): string {
    return `${this.id}#${this.incarnation}`;
  }

  isLeader(): boolean {
    return this.core?.status().role === 'leader';
  }

  /** Starts (or restarts from its disk) this manager: a new process. */
  start(): void {
    this.incarnation++;
    this.timers = this.h.sched.timers(this.owner);
    const r = this.h.rng.fork(`${this.id}/${this.incarnation}`);
    const fresh = this.disk.entries.length === 0 && this.disk.hardState.term === 0;
    this.core = new RaftCore({
      id: this.id,
      heartbeatTick: 2,
      electionTick: 10,
      rand: (k) => r.int(k),
      preVote: true,
      checkQuorum: true,
      bootstrap: fresh ? this.bootstrap : undefined,
      persisted: fresh ? undefined : { hardState: { ...this.disk.hardState }, snapshot: null, entries: this.disk.entries.slice() },
      applied: 0,
    });
    this.state = new ClusterState();
    this.h.onState(this, this.state);
    this.toldLeader = null;
    this.pending = new Map();
    this.applyQueue = [];
    this.applying = false;
    this.applyHeldUntil = 0;
    this.deferredHard = null;
    this.loopBusy = false;
    this.loopQueued = false;
    this.log = this.makeLog();
    this.wire();
    this.cancelTick = this.timers.every(TICK_MS, () => {
      this.core?.tick();
      this.kick();
    });
    this.kick();
  }

  /**
   * Applying stops for `ms` while Raft keeps running (RaftNode applies off its loop: a snapshot
   * being restored, a long apply): this replica can win an election with a state that lags.
   */
  holdApply(ms: number): void {
    this.applyHeldUntil = Math.max(this.applyHeldUntil, this.h.sched.now + ms);
  }

  /** Entries committed here but not applied yet. */
  get applyLag(): number {
    return this.applyQueue.length;
  }

  /** The process dies: everything but the disk is gone. */
  crash(): void {
    if (!this.core) return;
    this.h.sched.kill(this.owner);
    this.cancelTick = null;
    this.core = null;
    this.leadership = null;
    this.dispatcher = null;
    const err = new FlotillaError('unavailable', 'manager crashed');
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  receive(m: Message): void {
    if (!this.core) return;
    try {
      this.core.step(m);
    } catch {
      return;
    }
    this.kick();
  }

  /** A worker's link reached this manager (the sim calls the handle for every frame). */
  connect(link: WorkerLink, remote: string): WorkerSessionHandle | null {
    return this.dispatcher ? this.dispatcher.connect(link, remote) : null;
  }

  // ---------------------------------------------------------------- wiring (as Manager.wire)

  private wire(): void {
    const state = this.state;
    const log = this.log;
    const timers = this.timers;
    const proposer: CommandProposer = { propose: (cmd) => this.propose(cmd) };
    const members: Membership = {
      id: this.id,
      addr: this.id,
      members: () => new Map(this.h.peers().map((p) => [p, p])),
      leader: () => this.core?.status().leader ?? null,
    };
    const routes = { router: null, upgrades: new Map() } as unknown as RouteTable;
    const leadership = new Leadership({ id: this.id, proposer, log, timers });
    let lead: LeaderTerm = leadership;
    if (this.h.bug === 'act-before-caught-up') {
      // Bug: the services decide as soon as this manager leads, before its first entry is applied.
      lead = { term: () => leadership.term(), caughtUp: () => leadership.term() !== null, decide: (b) => leadership.decide(b) };
    }
    const placement = new Placement({ state, lead, timers });
    const dispatcher = new Dispatcher(
      { routes, proposer, lead, state, members, secure: false, secret: SIM_SECRET, clusterId: () => 'sim', log, onRegistered: () => placement.kick(), timers },
      { heartbeatMs: 1000, reportBatchMs: 100 },
    );
    const restarts = new Restarts({ state, lead, timers });
    const monitor = new NodeMonitor(
      {
        state,
        lead,
        heartbeats: dispatcher,
        log,
        timers,
        onStall: (ms) => {
          dispatcher.creditStall(ms);
          restarts.creditStall(ms);
        },
      },
      { nodeGraceMs: NODE_GRACE_MS, failoverGraceMs: FAILOVER_GRACE_MS },
    );
    if (this.h.bug === 'assignments-before-registration') assignBeforeRegistration(dispatcher);
    if (this.h.bug === 'registration-reports-judged-early') judgeRegistrationReportsEarly(dispatcher);
    let ids = 0;
    const inc = this.incarnation;
    // Task ids the services controller makes: unique per manager process, and replayable.
    const newId = (): string => `${this.id}i${inc}n${++ids}`;
    const svcs = new Services({ state, lead, log, timers, newId });
    if (this.h.bug === 'wall-monitor') {
      // Bug (the defect sim:cluster found): a task's replicated wall-clock times are compared
      // with this leader's wall clock as they are, so a wall step stretches or skips monitor periods.
      (svcs as unknown as { steady: (t: unknown) => unknown }).steady = (t) => t;
    }
    let services: LeaderService[] = [dispatcher, monitor, restarts, placement, new Drain({ state, lead, timers }), svcs];
    if (this.h.bug === 'act-before-caught-up') {
      services = services.map((s) => ({ name: s.name, start: (t: number) => (s.start(t), s.caughtUp(t)), caughtUp: (t: number) => s.caughtUp(t), stop: () => s.stop() }));
    }
    leadership.add(...services);
    this.leadership = leadership;
    this.dispatcher = dispatcher;
  }

  private makeLog(): Logger {
    const h = this.h;
    const id = this.id;
    const line = (lvl: string) => (msg: string, fields?: Record<string, unknown>) => h.trace('log', `${id} ${lvl} ${msg}${fields ? ' ' + JSON.stringify(fields) : ''}`);
    return { debug() {}, info: line('info'), warn: line('warn'), error: line('error') };
  }

  // ---------------------------------------------------------------- proposals (CommandProposer)

  /** A client's write on this manager (as the API's handlers propose). */
  submit(cmd: Command): Promise<unknown> {
    return this.propose(cmd);
  }

  /** Proposes `cmd`; `decidedIn`: the terms its decisions were made in (forwarded, bug `unfenced`). */
  propose(cmd: Command, decidedIn?: Map<SingleCommand, number>): Promise<unknown> {
    const core = this.core;
    if (!core) return Promise.reject(new FlotillaError('unavailable', 'manager down'));
    const decided = new Map<SingleCommand, number>();
    const singles = cmd.type === 'batch' ? cmd.commands : [cmd as SingleCommand];
    for (const c of singles) {
      const t = decidedIn ? decidedIn.get(c) : (c as { term?: number }).term;
      if (typeof t === 'number') decided.set(c, t);
    }
    let toPropose = cmd;
    if (this.h.bug === 'unfenced' && decided.size > 0) {
      // Bug: decisions are tagged with the term current when proposed, not when decided.
      const now = core.status().term;
      const retag = (c: SingleCommand): SingleCommand => (decided.has(c) ? ({ ...c, term: now } as SingleCommand) : c);
      toPropose = cmd.type === 'batch' ? { type: 'batch', commands: cmd.commands.map(retag) } : retag(cmd as SingleCommand);
      const d2 = new Map<SingleCommand, number>();
      const src = cmd.type === 'batch' ? cmd.commands : [cmd as SingleCommand];
      const dst = toPropose.type === 'batch' ? toPropose.commands : [toPropose as SingleCommand];
      src.forEach((c, i) => decided.has(c) && d2.set(dst[i]!, decided.get(c)!));
      decided.clear();
      for (const [k, v] of d2) decided.set(k, v);
    }
    let at: { index: number; term: number };
    try {
      at = core.propose(encodeCommand(toPropose));
    } catch (e) {
      const leader = core.status().leader;
      if (decided.size > 0) this.h.trace('refused', `${this.id} cannot propose ${toPropose.type} decided in ${[...decided.values()].join(',')} (core term ${core.status().term}, leader ${leader})`);
      if (this.h.bug === 'unfenced' && decided.size > 0 && leader !== null && leader !== this.id) {
        // Bug: a deposed leader's decision is forwarded, and the leader tags it with its own term.
        return this.h.forward(leader, toPropose, decided);
      }
      return Promise.reject(new FlotillaError('not_leader', (e as Error).message));
    }
    this.h.onPropose(this, toPropose);
    this.kick();
    return new Promise<ApplyResult>((resolve, reject) => {
      const singles = toPropose.type === 'batch' ? toPropose.commands : [toPropose as SingleCommand];
      // A proposal already waiting at this index lost its entry (this manager lost leadership,
      // its tail was replaced, and it leads again): settle it now, as RaftNode.track does. Left
      // in the table it would be overwritten and never settle (its timer below settles only the
      // proposal of its own term), and a caller that waits for it (the dispatcher's report
      // batch) would wait forever.
      const displaced = this.pending.get(at.index);
      if (displaced) {
        this.pending.delete(at.index);
        displaced.reject(new FlotillaError('unavailable', 'the write was lost in a leader change; retry'));
      }
      this.pending.set(at.index, { term: at.term, resolve, reject, decided, singles, isBatch: toPropose.type === 'batch' });
      this.timers.after(10_000, () => {
        const p = this.pending.get(at.index);
        if (p && p.term === at.term) {
          this.pending.delete(at.index);
          reject(new FlotillaError('timeout', 'proposal timed out'));
        }
      });
    }).then((r) => {
      if (r && r.ok === false) throw toFlotillaError(r.error);
      return r.value;
    });
  }

  // ---------------------------------------------------------------- the Raft driver (as RaftNode.loop)

  private kick(): void {
    if (this.loopQueued || !this.core) return;
    this.loopQueued = true;
    this.timers.soon(() => {
      this.loopQueued = false;
      this.loop();
    });
  }

  private loop(): void {
    const core = this.core;
    if (!core || this.loopBusy) return;
    for (let guard = 0; guard < 100 && core.hasReady(); guard++) {
      const rd = core.ready();
      if (rd.softState) this.onSoftState(rd.softState.leader);
      for (const m of rd.earlyMessages) this.h.sendRaft(m);
      if (rd.mustSync) {
        // A synced write takes time (a few ms; a slow disk much more): the core keeps ticking
        // and stepping meanwhile, and Leadership hears of a leader change only after it
        // (RaftNode awaits the write in its loop).
        const slow = this.h.slowDisk();
        const ms = slow > 0 && this.h.rng.chance(slow) ? this.h.rng.range(100, 1500) : this.h.rng.range(1, 8);
        this.loopBusy = true;
        const inc = this.incarnation;
        this.timers.after(ms, () => {
          if (this.core !== core || this.incarnation !== inc) return;
          this.loopBusy = false;
          this.finish(core, rd);
          this.kick();
        });
        return;
      }
      this.finish(core, rd);
    }
    if (core.hasReady()) this.kick();
  }

  private finish(core: RaftCore, rd: Ready): void {
    if (rd.mustSync) this.persist(rd);
    else if (rd.hardState) this.deferredHard = { ...rd.hardState };
    for (const m of rd.messages) this.h.sendRaft(m);
    for (const e of rd.committedEntries) this.applyQueue.push(e);
    try {
      core.advance(rd);
    } catch {
      /* a core error is the Raft simulator's business */
    }
    this.drainApply();
  }

  /** Applies queued entries in order; each takes `applyMs` of virtual time (as RaftNode.drainApply, off the loop). */
  private drainApply(): void {
    if (this.applying) return;
    const held = this.applyHeldUntil - this.h.sched.now;
    if (held > 0 && this.applyQueue.length > 0) {
      this.applying = true;
      const inc = this.incarnation;
      this.timers.after(held, () => {
        if (this.incarnation !== inc || !this.core) return;
        this.applying = false;
        this.drainApply();
      });
      return;
    }
    const cost = this.h.applyMs();
    if (cost <= 0) {
      while (this.applyQueue.length > 0) this.apply(this.applyQueue.shift()!);
      return;
    }
    if (this.applyQueue.length === 0) return;
    // A chunk of entries per event (about 10 ms of work), then the event loop turns.
    const n = Math.max(1, Math.floor(10 / cost));
    const chunk = this.applyQueue.splice(0, n);
    this.applying = true;
    const inc = this.incarnation;
    this.timers.after(Math.max(1, Math.round(chunk.length * cost)), () => {
      if (this.incarnation !== inc || !this.core) return;
      this.applying = false;
      for (const e of chunk) this.apply(e);
      this.drainApply();
    });
  }

  private persist(rd: Ready): void {
    const d = this.disk;
    const hs = rd.hardState ?? this.deferredHard;
    this.deferredHard = null;
    if (hs) d.hardState = { ...hs };
    if (rd.entries.length > 0) {
      const first = rd.entries[0]!.index;
      d.entries.length = Math.min(d.entries.length, first - 1);
      for (const e of rd.entries) d.entries.push(e);
    }
  }

  private onSoftState(leader: NodeId | null): void {
    if (leader === this.toldLeader) return;
    this.toldLeader = leader;
    const term = this.core!.status().term;
    if (leader === this.id) this.h.trace('leader', `${this.id} leads term ${term} (applied ${this.state.appliedIndex} of ${this.core!.status().lastIndex ?? '?'}, ${this.applyQueue.length} queued)`);
    const l = this.leadership;
    if (this.h.bug === 'unfenced' && leader !== this.id && l?.term() !== null) {
      // Bug (with the forwarding above): the lost leadership is noticed late, as by a blocked
      // event loop, and the deposed services' decisions reach the new leader unfenced.
      this.timers.after(3000, () => this.toldLeader === leader && l?.onLeaderChange(leader, term));
      return;
    }
    l?.onLeaderChange(leader, term);
  }

  private apply(e: Entry): void {
    if (e.index <= this.state.appliedIndex) return;
    let cmd: Command | null = null;
    let result: ApplyResult | null = null;
    if (e.type === EntryType.Normal && e.data.length > 0) {
      result = this.state.applyEntry(e.data, { index: e.index, term: e.term });
    } else {
      this.state.markApplied(e.index);
    }
    const p = this.pending.get(e.index);
    if (p) {
      this.pending.delete(e.index);
      if (p.term === e.term && result) {
        cmd = null;
        this.checkDecisions(p, e, result);
        p.resolve(result);
      } else p.reject(new FlotillaError('not_leader', 'proposal lost to another leader'));
    }
    this.h.onApplied(this, e.index, e.term, cmd, result);
  }

  private checkDecisions(p: Pending, e: Entry, result: ApplyResult): void {
    if (p.decided.size === 0 || !result.ok) return;
    // A batch's results follow its commands; a single command's result is the entry's.
    const results = p.isBatch && Array.isArray(result.value) ? (result.value as ApplyResult[]) : [result];
    p.singles.forEach((c, i) => {
      const t = p.decided.get(c);
      const r = results[i];
      if (t !== undefined && r && r.ok) this.h.onDecisionApplied(this, c, t, e.term, e.index);
    });
  }
}

export const SIM_SECRET = 'flotilla-sim-secret';

/**
 * Bug `registration-reports-judged-early` (test only): the leader drops a registering worker's
 * reports that its state calls unchanged or stale even before its term caught up or while that
 * worker's own reports are in flight (dispatcher.ts `register`). Reaches into the dispatcher's
 * private method: the real code has no switch for it.
 */
function judgeRegistrationReportsEarly(dispatcher: Dispatcher): void {
  (dispatcher as unknown as { stateCompleteFor: (nodeId: string) => boolean }).stateCompleteFor = () => true;
}

/**
 * Bug `assignments-before-registration` (test only): a session gets its assignments as soon as
 * its `register` arrives, before the registration is committed and the worker welcomed. Reaches
 * into the dispatcher's private session table: the real code has no switch for it.
 */
function assignBeforeRegistration(dispatcher: Dispatcher): void {
  const d = dispatcher as unknown as {
    register: (link: WorkerLink, msg: { nodeId: string }, remote: string) => Promise<unknown>;
    sessions: Map<string, { link: WorkerLink; welcomed: boolean }>;
    dirtyNodes: Set<string>;
  };
  const register = d.register.bind(dispatcher);
  d.register = (link, msg, remote) => {
    const p = register(link, msg, remote);
    const s = d.sessions.get(msg.nodeId);
    if (s && s.link === link) {
      s.welcomed = true;
      d.dirtyNodes.add(msg.nodeId);
    }
    return p;
  };
}
