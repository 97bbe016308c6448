// One simulation run: a seed picks the cluster size, the network and fault rates, the workload
// and (for some seeds) a scripted scenario; a fault phase is followed by a heal phase in which
// liveness must hold. Pure and deterministic: same seed, same trace, same result.
import type { ConfState, Message, NodeId } from '../types.js';
import { checkDurability, convergence, type AckedWrite, type Property, type Violation } from './checkers.js';
import { PERFECT_NET, SimCluster, type NetFaults, type SimBug, type SimNode } from './network.js';
import { derive, type Prng } from './prng.js';

export type Family = 'random' | 'figure8' | 'no-sync' | 'ongaro' | 'deposed-read';

export interface RunOptions {
  seed: number;
  bug?: SimBug;
  /** Receives readable trace lines (replay). Tracing never changes the run. */
  trace?: (line: string) => void;
  /** Called after every tick (debugging aid; must not change the simulation). */
  onTick?: (sim: SimCluster) => void;
}

export interface RunResult {
  seed: number;
  bug: SimBug;
  family: Family;
  nodes: number;
  /** Violations found (the run stops at the first one). */
  violations: Violation[];
  /** Hash of the whole trace, for determinism checks. */
  hash: string;
  ticks: number;
  faultTicks: number;
  /** Ticks the heal phase needed to converge (-1 if it did not). */
  healTicks: number;
  stats: {
    writes: number;
    acked: number;
    reads: number;
    elections: number;
    crashes: number;
    msgs: number;
    dropped: number;
    applied: number;
    snapshotsSent: number;
    compactions: number;
    confChanges: number;
  };
}

interface Write {
  id: string;
  acked: AckedWrite | null;
  inflight: number;
  lastAttempt: number;
  /** Where and in which term the last attempt went. */
  lastNode: NodeId;
  lastTerm: number;
}

export interface Params {
  family: Family;
  n: number;
  heartbeatTick: number;
  electionTick: number;
  faultTicks: number;
  healTicks: number;
  net: NetFaults;
  stall: number;
  midReadyCrash: number;
  voteCrash: number;
  compactEvery: number;
  maxSizePerMsg: number | undefined;
  maxInflightMsgs: number | undefined;
  writeRate: number;
  /** Clients keep at most this many writes in flight. */
  maxOutstanding: number;
  readRate: number;
  transferRate: number;
  confRate: number;
  crashRate: number;
  partitionRate: number;
  fullRestartAtHeal: boolean;
  /** Start with one learner besides the voters. */
  initialLearner: boolean;
}

const FAMILY_SHARE = { figure8: 0.1, noSync: 0.1, ongaro: 0.1, deposedRead: 0.1 };

/** The parameters a seed picks (pure; exported for tests and tools). */
export function seedParams(seed: number): Readonly<Params> {
  return pickParams(seed);
}

function pickParams(seed: number): Params {
  const r = derive(seed, 'params');
  const f = r.next();
  const F = FAMILY_SHARE;
  const family: Family =
    f < F.figure8
      ? 'figure8'
      : f < F.figure8 + F.noSync
        ? 'no-sync'
        : f < F.figure8 + F.noSync + F.ongaro
          ? 'ongaro'
          : f < F.figure8 + F.noSync + F.ongaro + F.deposedRead
            ? 'deposed-read'
            : 'random';
  const scripted = family !== 'random';
  const n = family === 'figure8' ? 5 : family === 'no-sync' ? 3 : family === 'ongaro' || family === 'deposed-read' ? 3 : r.pick([3, 3, 5, 5, 7]);
  const maxDelay = r.pick([1, 1, 2, 3]);
  // Figure 8 needs the leader to ship one entry per message.
  const maxSizePerMsg = family === 'figure8' ? 1 : r.pick([undefined, 1, 200, 4096]);
  // One entry per message and one message in flight cannot catch a fresh learner up within the
  // heal budget: that combination is a throughput limit, not a liveness bug.
  const maxInflightMsgs = r.pick(maxSizePerMsg === 1 ? [undefined, 4, 16, 64] : [undefined, 1, 4, 64]);
  const p: Params = {
    family,
    n,
    heartbeatTick: scripted ? 1 : r.pick([1, 1, 2]),
    electionTick: 10,
    faultTicks: r.range(300, 600),
    healTicks: 400,
    net: scripted
      ? { ...PERFECT_NET, maxDelay }
      : {
          drop: r.pick([0, 0.01, 0.03, 0.08]),
          dup: r.pick([0, 0.01, 0.05]),
          spike: r.pick([0, 0.005, 0.02]),
          spikeMax: 25,
          maxDelay,
          unreachable: r.pick([0, 0.5]),
          fifo: r.chance(0.6),
        },
    stall: scripted ? 0 : r.pick([0, 0.005, 0.02]),
    midReadyCrash: scripted ? 0 : r.pick([0, 0, 0.0005, 0.002]),
    voteCrash: scripted ? 0 : r.pick([0, 0, 0.05, 0.2]),
    compactEvery: r.pick([0, 4, 10, 25, 60]),
    maxSizePerMsg,
    maxInflightMsgs,
    writeRate: scripted ? 0 : r.pick([0.05, 0.2, 0.6, 1.5]),
    maxOutstanding: r.pick([4, 16, 48]),
    readRate: scripted ? 0 : r.pick([0, 0.1, 0.3, 1]),
    transferRate: scripted ? 0 : r.pick([0, 0.003, 0.01, 0.02]),
    confRate: scripted ? 0 : r.pick([0, 0.03, 0.1, 0.2]),
    crashRate: scripted ? 0 : r.pick([0, 0.005, 0.01, 0.03]),
    partitionRate: scripted ? 0 : r.pick([0, 0.01, 0.03, 0.06]),
    fullRestartAtHeal: r.chance(0.3),
    initialLearner: family === 'ongaro' || family === 'deposed-read' || (!scripted && r.chance(0.3)),
  };
  // Delay spikes up to 6 election timeouts: a response can arrive after a whole term went by.
  p.net.spikeMax = scripted ? 25 : r.pick([25, 45, 60]);
  return p;
}

/** How many events this tick for a rate (events per tick, may exceed 1). */
function count(r: Prng, rate: number): number {
  const whole = Math.floor(rate);
  return whole + (r.chance(rate - whole) ? 1 : 0);
}

/** A scripted scenario: acts at the end of every tick of the fault phase. */
interface Script {
  done: boolean;
  onTick(): void;
}

export function runSeed(opts: RunOptions): RunResult {
  return new Run(opts).run();
}

class Run {
  readonly seed: number;
  readonly bug: SimBug;
  readonly p: Params;
  readonly sim: SimCluster;
  readonly rng: Prng;
  readonly writes = new Map<string, Write>();
  /** Unacknowledged writes (may contain acked ones, filtered lazily). */
  pending: Write[] = [];
  nextWrite = 1;
  nextRead = 1;
  nextNodeId: number;
  reads = 0;
  confChanges = 0;
  removed: NodeId[] = [];
  partitionUntil = 0;
  deposed: SimNode | null = null;
  script: Script | null = null;
  faultEnd: number;
  healTicks = -1;
  private readonly initial: ConfState;

  constructor(private readonly opts: RunOptions) {
    this.seed = opts.seed;
    this.bug = opts.bug ?? 'none';
    this.p = pickParams(this.seed);
    this.rng = derive(this.seed, 'workload');
    this.sim = new SimCluster({
      seed: this.seed,
      bug: this.bug,
      electionTick: this.p.electionTick,
      heartbeatTick: this.p.heartbeatTick,
      maxSizePerMsg: this.p.maxSizePerMsg,
      maxInflightMsgs: this.p.maxInflightMsgs,
      compactEvery: this.p.compactEvery,
      trace: opts.trace,
    });
    const ids = Array.from({ length: this.p.n }, (_, i) => `n${i + 1}`);
    const learners = this.p.initialLearner ? [`n${this.p.n + 1}`] : [];
    this.nextNodeId = this.p.n + 1 + learners.length;
    this.initial = { voters: ids, learners };
    this.faultEnd = this.p.faultTicks;
    const s = this.sim;
    s.hooks = {
      onAck: (id, index, term, node) => this.onAck(id, index, term, node),
      onLost: (id) => {
        const w = this.writes.get(id);
        if (w && w.inflight > 0) w.inflight--;
      },
    };
    const p = this.p;
    s.event(
      'config',
      `seed ${this.seed} bug=${this.bug} family=${p.family} nodes=${p.n} hb=${p.heartbeatTick} el=${p.electionTick} ` +
        `fault=${p.faultTicks} delay<=${p.net.maxDelay} fifo=${p.net.fifo} drop=${p.net.drop} dup=${p.net.dup} spike=${p.net.spike} ` +
        `stall=${p.stall} midCrash=${p.midReadyCrash} voteCrash=${p.voteCrash} compact=${p.compactEvery} maxSize=${p.maxSizePerMsg ?? '-'} ` +
        `inflight=${p.maxInflightMsgs ?? '-'} writes=${p.writeRate}/${p.maxOutstanding} reads=${p.readRate} transfer=${p.transferRate} ` +
        `conf=${p.confRate} crash=${p.crashRate} partition=${p.partitionRate} fullRestart=${p.fullRestartAtHeal} ` +
        `spikeMax=${p.net.spikeMax} learner=${p.initialLearner}`,
    );
    for (const id of [...ids, ...learners]) s.addNode(id, this.initial);
    if (p.family === 'figure8') this.script = new Figure8Script(this);
    else if (p.family === 'no-sync') this.script = new NoSyncScript(this);
    else if (p.family === 'ongaro') this.script = new OngaroScript(this);
    else if (p.family === 'deposed-read') this.script = new DeposedReadScript(this);
  }

  get tick(): number {
    return this.sim.tick;
  }

  run(): RunResult {
    const s = this.sim;
    const p = this.p;
    s.net = { ...p.net };
    s.stallChance = p.stall;
    s.midReadyCrash = p.midReadyCrash;
    s.voteCrash = p.voteCrash;
    // ---- fault phase
    while (s.tick < this.faultEnd && !s.checkers.failed) {
      s.step();
      this.opts.onTick?.(s);
      if (s.checkers.failed) break;
      if (this.script) {
        if (!this.script.done) {
          this.script.onTick();
          if (this.script.done) this.faultEnd = Math.min(this.faultEnd, s.tick + 30);
        }
        this.earlyWrites();
      } else {
        this.faults();
        this.workload();
      }
      s.driveAll();
    }
    // ---- heal phase
    if (!s.checkers.failed) this.heal();
    else if (s.tracing) this.dumpStatus();
    const st = s.stats;
    let acked = 0;
    for (const w of this.writes.values()) if (w.acked) acked++;
    return {
      seed: this.seed,
      bug: this.bug,
      family: p.family,
      nodes: p.n,
      violations: s.checkers.violations.slice(0, 1),
      hash: (s.hash >>> 0).toString(16).padStart(8, '0'),
      ticks: s.tick,
      faultTicks: this.faultEnd,
      healTicks: this.healTicks,
      stats: {
        writes: this.writes.size,
        acked,
        reads: this.reads,
        elections: st.elections,
        crashes: st.crashes,
        msgs: st.msgs,
        dropped: st.dropped,
        applied: st.applied,
        snapshotsSent: st.snapshotsSent,
        compactions: st.compactions,
        confChanges: this.confChanges,
      },
    };
  }

  // ---------------------------------------------------------------- clients

  private onAck(id: string, index: number, term: number, node: SimNode): void {
    const w = this.writes.get(id);
    if (!w) return;
    if (w.inflight > 0) w.inflight--;
    if (w.acked) return;
    w.acked = { id, index, term };
    this.sim.checkers.reads.onWriteAck(id, index);
    if (this.sim.tracing) this.sim.note('ack', `${id} at (${index}, t${term}) via ${node.id}`);
  }

  /** A node that believes it leads (the newest such), or null. */
  leader(): SimNode | null {
    let best: SimNode | null = null;
    for (const n of this.sim.list) {
      if (n.core && !n.stalled && n.role === 'leader' && (!best || n.leaderTerm > best.leaderTerm)) best = n;
    }
    return best;
  }

  /** A target for a client request: usually a (believed) leader, sometimes any live node. */
  private target(): SimNode | null {
    const live = this.sim.live();
    if (live.length === 0) return null;
    const leaders = live.filter((n) => n.role === 'leader');
    if (leaders.length > 0 && this.rng.chance(0.9)) return this.rng.pick(leaders);
    return this.rng.pick(live);
  }

  private attempt(w: Write, n: SimNode): boolean {
    w.lastAttempt = this.tick;
    const r = this.sim.propose(n, w.id);
    if (!r) return false;
    w.inflight++;
    w.lastNode = n.id;
    w.lastTerm = r.term;
    if (this.sim.tracing) this.sim.note('propose', `${w.id} on ${n.id} at (${r.index}, t${r.term})`);
    this.sim.drive(n);
    return true;
  }

  private newWrite(n: SimNode): void {
    const w: Write = { id: `w:${this.nextWrite}`, acked: null, inflight: 0, lastAttempt: this.tick, lastNode: '', lastTerm: 0 };
    if (!this.attempt(w, n)) return;
    this.nextWrite++;
    this.writes.set(w.id, w);
    this.pending.push(w);
  }

  private prunePending(): void {
    if (this.pending.length > 0) this.pending = this.pending.filter((w) => !w.acked);
  }

  read(n: SimNode): void {
    const ctx = `r:${this.nextRead}`;
    if (this.sim.readIndex(n, ctx)) {
      this.nextRead++;
      this.reads++;
    }
  }

  /** A few writes at the start of a scripted run, so the history is not empty. */
  private earlyWrites(): void {
    if (this.tick > 200 || this.writes.size >= 5 || !this.rng.chance(0.2)) return;
    const l = this.leader();
    if (l) this.newWrite(l);
  }

  private workload(): void {
    const p = this.p;
    const r = this.rng;
    for (let k = count(r, p.writeRate); k > 0; k--) {
      this.prunePending();
      let outstanding = 0;
      for (const w of this.pending) if (w.inflight > 0) outstanding++;
      const n = outstanding < p.maxOutstanding ? this.target() : null;
      if (n) this.newWrite(n);
    }
    if (this.pending.length > 0 && r.chance(p.writeRate * 0.3)) {
      this.prunePending();
      const idle = this.pending.filter((w) => w.inflight === 0 || this.tick - w.lastAttempt > 60);
      if (idle.length > 0) {
        const n = this.target();
        if (n) this.attempt(r.pick(idle), n);
      }
    }
    for (let k = count(r, p.readRate); k > 0; k--) {
      const n = this.target();
      if (n) this.read(n);
    }
    const d = this.deposed;
    if (d && d.core && d.role === 'leader' && r.chance(0.5)) this.read(d);
    // Every node that believes it leads gets reads too (a deposed leader may not know yet).
    if (p.readRate > 0) {
      for (const n of this.sim.list) {
        if (n.core && n.role === 'leader' && r.chance(Math.min(0.5, p.readRate))) this.read(n);
      }
    }
    if (r.chance(p.transferRate)) {
      const l = this.leader();
      if (l && l.core) {
        const voters = l.core.conf().voters.filter((v) => v !== l.id);
        if (voters.length > 0) {
          const to = r.pick(voters);
          const core = l.core;
          if (this.sim.guard(l, () => core.transferLeader(to))) this.sim.event('transfer', `${l.id} -> ${to}`);
          this.sim.drive(l);
        }
      }
    }
    if (r.chance(p.confRate)) this.confChange();
  }

  private confChange(): void {
    const l = this.leader();
    if (!l || !l.core) return;
    const core = l.core;
    const conf = core.conf();
    const r = this.rng;
    let cc: { type: 'addVoter' | 'addLearner' | 'removeNode'; node: NodeId };
    let fresh: NodeId | null = null;
    if (conf.learners.length > 0) {
      cc = { type: 'addVoter', node: r.pick(conf.learners) };
    } else if (conf.voters.length > 3 && r.chance(0.6)) {
      // Sometimes the leader removes itself (it steps down once the change commits).
      const victims = r.chance(0.2) ? conf.voters : conf.voters.filter((v) => v !== l.id);
      cc = { type: 'removeNode', node: r.pick(victims) };
    } else {
      const back = this.removed.filter((id) => !conf.voters.includes(id) && !conf.learners.includes(id));
      if (back.length > 0 && r.chance(0.6)) {
        cc = { type: 'addLearner', node: r.pick(back) };
      } else if (this.sim.list.length < 10) {
        fresh = `n${this.nextNodeId}`;
        cc = { type: 'addLearner', node: fresh };
      } else {
        return;
      }
    }
    const res = this.sim.call(l, () => core.proposeConfChange(cc));
    if (!res) return;
    this.confChanges++;
    if (fresh) {
      this.nextNodeId++;
      this.sim.addNode(fresh, undefined);
    }
    if (cc.type === 'removeNode' && !this.removed.includes(cc.node)) this.removed.push(cc.node);
    if (cc.type === 'addLearner') this.removed = this.removed.filter((x) => x !== cc.node);
    this.sim.event('conf', `${l.id} proposes ${cc.type} ${cc.node} at (${res.index}, t${res.term})`);
    this.sim.drive(l);
  }

  // ---------------------------------------------------------------- faults

  private faults(): void {
    const s = this.sim;
    const p = this.p;
    const r = this.rng;
    if (this.partitionUntil > 0 && s.tick >= this.partitionUntil) {
      s.healNetwork();
      this.partitionUntil = 0;
      this.deposed = null;
      s.event('heal', 'network healed');
    }
    if (this.partitionUntil === 0 && r.chance(p.partitionRate)) this.partition();
    if (r.chance(p.crashRate)) {
      const live = s.live();
      const l = this.leader();
      const victim = l && r.chance(0.4) ? l : live.length > 0 ? r.pick(live) : null;
      if (victim) {
        s.crash(victim, 'random crash');
        victim.restartAt = s.tick + r.pick([1, 5, 20, 60, 150]);
      }
    }
    for (const n of s.list) {
      if (!n.core && n.restartAt > 0 && n.restartAt <= s.tick) s.restart(n);
    }
  }

  private partition(): void {
    const s = this.sim;
    const r = this.rng;
    const all = s.list;
    const l = this.leader();
    const kind = r.pick(['split', 'split', 'isolate-leader', 'asym', 'asym-leader', 'leader-learner'] as const);
    const learners = l?.core?.conf().learners.map((id) => s.nodes.get(id)!).filter((x) => x.core) ?? [];
    this.partitionUntil = s.tick + r.pick([10, 30, 60, 120]);
    const names = (xs: SimNode[]): string => xs.map((x) => x.id).join(',');
    if (kind === 'split' || (kind === 'isolate-leader' && !l)) {
      const a = r.shuffle(all.slice()).slice(0, r.range(1, Math.max(1, all.length - 1)));
      for (const x of all) {
        for (const y of all) if (a.includes(x) !== a.includes(y)) s.setBlocked(x, y, true);
      }
      s.event('partition', `split {${names(a)}} | rest until ${this.partitionUntil}`);
    } else if (kind === 'leader-learner' && l && learners.length > 0) {
      // The leader cut off together with a learner: the learner's answers must not confirm reads.
      const a = [l, r.pick(learners)];
      for (const x of all) {
        for (const y of all) if (a.includes(x) !== a.includes(y)) s.setBlocked(x, y, true);
      }
      this.deposed = l;
      s.event('partition', `leader ${l.id} with learner ${a[1]!.id} | rest until ${this.partitionUntil}`);
    } else if (kind === 'isolate-leader') {
      s.isolate(l!);
      // Clients keep reading from the deposed leader while it still believes it leads.
      this.deposed = l;
      s.event('partition', `isolate leader ${l!.id} until ${this.partitionUntil}`);
    } else if (kind === 'asym-leader' && l) {
      // The leader can send but hears nothing (or the other way round).
      const out = r.chance(0.5);
      for (const y of all) if (y !== l) s.setBlocked(out ? y : l, out ? l : y, true);
      s.event('partition', `leader ${l.id} ${out ? 'deaf' : 'mute'} until ${this.partitionUntil}`);
    } else {
      const pairs: string[] = [];
      const k = r.range(1, all.length);
      for (let i = 0; i < k; i++) {
        const x = r.pick(all);
        const y = r.pick(all);
        if (x === y) continue;
        s.setBlocked(x, y, true);
        pairs.push(`${x.id}->${y.id}`);
      }
      s.event('partition', `asymmetric cuts ${pairs.join(' ')} until ${this.partitionUntil}`);
    }
  }

  // ---------------------------------------------------------------- heal and liveness

  private heal(): void {
    const s = this.sim;
    s.event('HEAL', `faults off at tick ${s.tick}`);
    s.healNetwork();
    s.net = { ...PERFECT_NET };
    s.stallChance = 0;
    s.midReadyCrash = 0;
    s.voteCrash = 0;
    s.hooks.filter = undefined;
    s.hooks.onLeader = undefined;
    s.hooks.delay = undefined;
    if (this.script) this.script.done = true;
    s.unstallAll();
    if (this.p.fullRestartAtHeal) {
      for (const n of s.list) s.crash(n, 'full-cluster restart');
    }
    for (const n of s.list) s.restart(n);
    s.driveAll();
    const start = s.tick;
    const end = start + this.p.healTicks;
    let why = '';
    while (s.tick < end) {
      s.step();
      this.opts.onTick?.(s);
      if (s.checkers.failed) {
        if (s.tracing) this.dumpStatus();
        return;
      }
      const l = this.leader();
      if (l) {
        // Clients re-propose everything not acknowledged.
        if ((s.tick - start) % 3 === 0) {
          this.prunePending();
          for (const w of this.pending) {
            // In flight on the current leader in its term: it will commit (or be reported lost).
            const onLeader = w.lastNode === l.id && w.lastTerm === l.leaderTerm;
            if (w.inflight === 0 || (!onLeader && s.tick - w.lastAttempt > 40)) this.attempt(w, l);
          }
        }
        if (this.p.readRate > 0 && this.rng.chance(0.1)) this.read(l);
      }
      if ((s.tick - start) % 2 === 0) {
        why = this.converged();
        if (why === '') {
          this.healTicks = s.tick - start;
          s.event('converged', `after ${this.healTicks} heal ticks`);
          this.finalChecks();
          return;
        }
      }
    }
    s.checkers.report('liveness', `no convergence ${this.p.healTicks} ticks after faults stopped: ${why}`);
    if (s.tracing) this.dumpStatus();
  }

  /** Trace every node's status (replay only). */
  private dumpStatus(): void {
    const s = this.sim;
    for (const n of s.list) {
      if (!n.core) {
        s.note('status', `${n.id} down`);
        continue;
      }
      const st = n.core.status();
      s.event(
        'status',
        `${n.id} ${st.role} term=${st.term} vote=${st.vote ?? '-'} leader=${st.leader ?? '-'} commit=${st.commit} applied=${st.applied} ` +
          `sm=${n.sm.applied} last=${st.lastIndex} stable=${st.stableIndex} snap=${st.snapshotIndex} disk=${n.diskSnapIndex()}..${n.diskLastIndex()} ` +
          `conf=${st.conf.voters.join(',')}${st.conf.learners.length ? `+${st.conf.learners.join(',')}` : ''} wait=${n.readWait.length}`,
      );
      for (const [id, pr] of Object.entries(st.progress)) {
        s.note('status', `   ${id}: match=${pr.match} next=${pr.next} ${pr.state} active=${pr.recentActive}${pr.learner ? ' learner' : ''}`);
      }
    }
  }

  /** '' when converged, else why not. */
  private converged(): string {
    const l = this.leader();
    this.prunePending();
    if (!l || !l.core) return convergence({ leader: null, unacked: this.pending.map((w) => w.id), nodes: new Map() });
    const st = l.core.status();
    const nodes = new Map<NodeId, { alive: boolean; applied: number }>();
    for (const id of [...st.conf.voters, ...st.conf.learners]) {
      const n = this.sim.nodes.get(id);
      if (n) nodes.set(id, { alive: n.core !== null, applied: n.sm.applied });
    }
    return convergence({
      leader: { id: l.id, commit: st.commit, lastIndex: st.lastIndex, members: [...st.conf.voters, ...st.conf.learners] },
      unacked: this.pending.map((w) => w.id),
      nodes,
    });
  }

  private finalChecks(): void {
    const s = this.sim;
    const l = this.leader()!;
    const conf = l.core!.conf();
    const finalApplied = new Map<NodeId, number>();
    let hash: number | null = null;
    for (const id of [...conf.voters, ...conf.learners]) {
      const n = s.nodes.get(id)!;
      finalApplied.set(id, n.sm.applied);
      if (hash === null) hash = n.sm.hash;
      else if (n.sm.hash !== hash) s.checkers.report('state-machine-safety', `${id} converged to a different state (hash) at index ${n.sm.applied}`);
    }
    const acked: AckedWrite[] = [];
    for (const w of this.writes.values()) if (w.acked) acked.push(w.acked);
    checkDurability(s.checkers.report, acked, s.checkers.stateMachine, finalApplied);
  }
}

// ------------------------------------------------------------------ scripted scenarios

/** Helpers shared by scripts. */
function quietLeader(run: Run): SimNode | null {
  const s = run.sim;
  const l = run.leader();
  if (!l || !l.core) return null;
  if (s.leaders().length !== 1) return null;
  const st = l.core.status();
  if (st.commit !== st.lastIndex || st.term !== l.leaderTerm) return null;
  for (const n of s.list) {
    if (!n.core || n.sm.applied !== st.commit || n.diskLastIndex() !== st.lastIndex) return null;
  }
  return l;
}

/**
 * The paper's Figure 8 with five servers, on real timers and with randomised timing:
 *  (a) leader P1 (term t1) replicates a new entry at index k to S2 only;
 *  (b) S5 is elected (term t2) by S3, S4, S5 and writes its own entry at k, which goes nowhere;
 *  (c) P1 or S2 is elected again (term t3) with S3's vote and replicates (k, t1) to S3 — but its
 *      own term-t3 entry never reaches S3; a core that commits old-term entries by counting
 *      replicas (bug figure8) now commits and applies k;
 *  (d) the t3 leader is cut off; S5 is elected (term t4) by S3 and S4 and overwrites k.
 * With a correct core (c) commits nothing and (d) is legal.
 */
class Figure8Script implements Script {
  done = false;
  private phase = 0;
  private readonly start: number;
  private deadline = 0;
  private p1!: SimNode;
  private s2!: SimNode;
  private rest: SimNode[] = [];
  private s5: SimNode | null = null;
  private s3!: SimNode;
  private s4!: SimNode;
  private k = 0;
  private t1 = 0;
  private t2 = 0;

  constructor(private readonly run: Run) {
    this.start = run.rng.range(30, 150);
    run.sim.hooks.onLeader = (n, term) => this.onLeader(n, term);
  }

  private onLeader(n: SimNode, term: number): void {
    if (this.done) return;
    if (this.phase === 1 && this.rest.includes(n) && term > this.t1) {
      // (b) S5 won: cut it off before its append (with its entry at k) reaches anyone.
      this.s5 = n;
      this.t2 = term;
      this.run.sim.isolate(n);
      this.run.sim.event('script', `figure8 (b): ${n.id} elected in term ${term}; isolated before it replicates`);
    } else if (this.phase === 4 && n === this.s5) {
      this.run.sim.event('script', `figure8 (d): ${n.id} elected in term ${term} with the votes of ${this.s3.id}, ${this.s4.id}`);
      this.done = true;
    }
  }

  onTick(): void {
    const run = this.run;
    const s = run.sim;
    const r = run.rng;
    if (s.tick > this.start + 900) {
      this.done = true;
      return;
    }
    switch (this.phase) {
      case 0: {
        if (s.tick < this.start) return;
        const l = quietLeader(run);
        if (!l) return;
        this.p1 = l;
        const others = r.shuffle(s.list.filter((x) => x !== l));
        this.s2 = others[0]!;
        this.rest = others.slice(1);
        for (const a of [l, this.s2]) {
          for (const b of this.rest) {
            s.setBlocked(a, b, true);
            s.setBlocked(b, a, true);
          }
        }
        const id = `w:${run.nextWrite++}`;
        const w = { id, acked: null, inflight: 0, lastAttempt: s.tick, lastNode: l.id, lastTerm: l.leaderTerm };
        run.writes.set(id, w);
        run.pending.push(w);
        const res = s.propose(l, id);
        if (!res) {
          s.healNetwork();
          return;
        }
        w.inflight++;
        s.drive(l);
        this.k = res.index;
        this.t1 = res.term;
        s.event('script', `figure8 (a): {${l.id},${this.s2.id}} | {${this.rest.map((x) => x.id).join(',')}}; ${id} at (${this.k}, t${this.t1}) on ${l.id}`);
        this.phase = 1;
        this.deadline = s.tick + 200;
        return;
      }
      case 1: {
        if (!this.s5) {
          if (s.tick > this.deadline) this.done = true;
          return;
        }
        const others = this.rest.filter((x) => x !== this.s5);
        [this.s3, this.s4] = r.shuffle(others) as [SimNode, SimNode];
        // (c) P1, S2, S3 together; S4 and S5 cut off. S3 may receive entries up to k only.
        s.healNetwork();
        s.isolate(this.s4);
        s.isolate(this.s5);
        const s3 = this.s3;
        const k = this.k;
        const t1 = this.t1;
        const olds = [this.p1.id, this.s2.id];
        s.hooks.filter = (m: Message) =>
          m.type === 'app' &&
          m.to === s3.id &&
          olds.includes(m.from) &&
          (m.entries?.some((e) => e.index > k) ?? false) &&
          (m.index < k || s3.diskTermAt(k) === t1);
        s.event('script', `figure8 (c): {${this.p1.id},${this.s2.id},${s3.id}} together, ${this.s4.id} ${this.s5!.id} cut off; ${s3.id} gets nothing past ${k}`);
        this.phase = 2;
        this.deadline = s.tick + r.range(40, 90);
        return;
      }
      case 2: {
        const p = [this.p1, this.s2].find((x) => x.core && x.role === 'leader' && x.leaderTerm > this.t2);
        const committed = p !== undefined && p.lastCommitSeen >= this.k;
        if (!committed && s.tick < this.deadline) return;
        if (committed) s.event('script', `figure8 (c): ${p!.id} (term ${p!.leaderTerm}) has commit ${p!.lastCommitSeen} >= ${this.k}`);
        // (d) cut off the old-term pair; S5 can now win with S3 and S4 only (S3 and S4 cannot reach each other).
        s.hooks.filter = undefined;
        s.healNetwork();
        s.isolate(this.p1);
        s.isolate(this.s2);
        s.setBlocked(this.s3, this.s4, true);
        s.setBlocked(this.s4, this.s3, true);
        s.event('script', `figure8 (d): ${this.p1.id} ${this.s2.id} cut off; ${this.s5!.id} can reach ${this.s3.id} and ${this.s4.id}`);
        this.phase = 4;
        this.deadline = s.tick + 200;
        return;
      }
      case 4:
        if (s.tick > this.deadline) this.done = true;
        return;
    }
  }
}

/**
 * A close election around a crash (3 servers), aimed at a node that forgets its vote:
 *  the leader L is cut off; A wins the next term with B's vote; at once A is cut off and B
 *  crashes and restarts; L comes back reaching B only. If B forgot its vote, L can win the same
 *  term A won (two leaders in one term).
 */
class NoSyncScript implements Script {
  done = false;
  private phase = 0;
  private readonly start: number;
  private deadline = 0;
  private l!: SimNode;
  private others: SimNode[] = [];
  private voter: SimNode | null = null;
  private restartAt = 0;

  constructor(private readonly run: Run) {
    this.start = run.rng.range(30, 150);
    run.sim.hooks.onLeader = (n, term) => this.onLeader(n, term);
  }

  private onLeader(n: SimNode, term: number): void {
    const s = this.run.sim;
    if (this.done) return;
    if (this.phase === 1 && this.others.includes(n)) {
      const b = this.others.find((x) => x !== n)!;
      this.voter = b;
      s.isolate(n);
      s.crash(b, `right after voting for ${n.id} in term ${term}`);
      this.restartAt = s.tick + this.run.rng.range(0, 4);
      s.setBlocked(this.l, b, false);
      s.setBlocked(b, this.l, false);
      s.event('script', `no-sync: ${n.id} won term ${term} and is cut off; ${b.id} crashed; ${this.l.id} can reach ${b.id}`);
      this.phase = 2;
      this.deadline = s.tick + 150;
    } else if (this.phase === 2 && n === this.l) {
      s.event('script', `no-sync: ${n.id} elected in term ${term}`);
      this.done = true;
    }
  }

  onTick(): void {
    const run = this.run;
    const s = run.sim;
    if (s.tick > this.start + 900) {
      this.done = true;
      return;
    }
    switch (this.phase) {
      case 0: {
        if (s.tick < this.start) return;
        const l = quietLeader(run);
        if (!l) return;
        this.l = l;
        this.others = s.list.filter((x) => x !== l);
        s.isolate(l);
        s.event('script', `no-sync: leader ${l.id} (term ${l.leaderTerm}) cut off`);
        this.phase = 1;
        this.deadline = s.tick + 200;
        return;
      }
      case 1:
        if (s.tick > this.deadline) this.done = true;
        return;
      case 2:
        if (this.voter && !this.voter.core && s.tick >= this.restartAt) s.restart(this.voter);
        if (s.tick > this.deadline) this.done = true;
        return;
    }
  }
}

/**
 * Ongaro's single-server membership bug (raft-dev, 2015), for a core that applies a
 * configuration change once committed. Voters {L, B, C} and a caught-up learner D:
 *  (a) leader L appends X = "D becomes a voter" at k, which reaches B only (B's acks are lost);
 *  (b) L is cut off; B wins the next term with C's vote. A core without the no-op rule lets B
 *      propose Y = "remove C" at once, so X and Y commit together with {B, C} (the old
 *      configuration) and C never hears that anything past k-1 committed;
 *  (c) B and C are cut apart; B commits a client write W with D, a majority of {L, B, D};
 *  (d) B and D are cut off, L and C reconnect: C, still in {L, B, C}, wins with L's vote and
 *      overwrites W — two majorities that do not overlap.
 * With the rule, B proposes Y only after its no-op (hence X) commits and C knows it; C then
 * needs 3 of {L, B, C, D} and cannot win in (d).
 */
class OngaroScript implements Script {
  done = false;
  private phase = 0;
  private readonly start: number;
  private deadline = 0;
  private L!: SimNode;
  private B!: SimNode;
  private C!: SimNode;
  private D!: SimNode;
  private k = 0;
  private t1 = 0;
  private y = 0;
  private w = 0;
  /** Y went in before the no-op committed (a core with bug conf-before-noop). */
  private early = false;

  constructor(private readonly run: Run) {
    this.start = run.rng.range(30, 150);
    run.sim.hooks.onLeader = (n, term) => this.onLeader(n, term);
  }

  private proposeY(): boolean {
    const s = this.run.sim;
    const core = this.B.core;
    if (!core) return false;
    const res = s.call(this.B, () => core.proposeConfChange({ type: 'removeNode', node: this.C.id }));
    if (!res) return false;
    this.y = res.index;
    this.run.confChanges++;
    s.event('script', `ongaro (b): ${this.B.id} proposes removeNode ${this.C.id} at (${res.index}, t${res.term}), commit ${core.commitIndex()}`);
    const C = this.C.id;
    const B = this.B.id;
    const k = this.k;
    const y = this.y;
    // C must not learn that X (or Y) committed: drop what would tell it. Early: C's acks below
    // Y are lost too, so X, the no-op and Y commit together.
    s.hooks.filter = (m: Message) =>
      (m.to === C && (m.type === 'app' || m.type === 'heartbeat') && (m.commit ?? 0) >= (this.early ? k : y)) ||
      (this.early && m.from === C && m.to === B && m.type === 'appResp' && !m.reject && m.index < y);
    s.drive(this.B);
    return true;
  }

  private onLeader(n: SimNode, term: number): void {
    if (this.done || this.phase !== 2 || n !== this.B) return;
    this.run.sim.event('script', `ongaro (b): ${n.id} leads term ${term}`);
    this.phase = 3;
    this.deadline = this.run.sim.tick + 150;
    // Right away, before its no-op can commit: only a core without the no-op rule accepts.
    if (this.proposeY()) this.early = true;
  }

  onTick(): void {
    const run = this.run;
    const s = run.sim;
    const r = run.rng;
    if (s.tick > this.start + 900) {
      this.done = true;
      return;
    }
    switch (this.phase) {
      case 0: {
        if (s.tick < this.start) return;
        const l = quietLeader(run);
        if (!l || !l.core) return;
        const conf = l.core.conf();
        if (conf.voters.length !== 3 || conf.learners.length !== 1) {
          this.done = true;
          return;
        }
        this.L = l;
        const others = r.shuffle(conf.voters.filter((v) => v !== l.id));
        this.B = s.nodes.get(others[0]!)!;
        this.C = s.nodes.get(others[1]!)!;
        this.D = s.nodes.get(conf.learners[0]!)!;
        s.setBlocked(l, this.C, true);
        s.setBlocked(l, this.D, true);
        s.setBlocked(this.B, l, true);
        const core = l.core;
        const res = s.call(l, () => core.proposeConfChange({ type: 'addVoter', node: this.D.id }));
        if (!res) {
          s.healNetwork();
          return;
        }
        run.confChanges++;
        this.k = res.index;
        this.t1 = res.term;
        s.drive(l);
        s.event('script', `ongaro (a): ${l.id} proposes addVoter ${this.D.id} at (${this.k}, t${this.t1}); only ${this.B.id} gets it`);
        this.phase = 1;
        this.deadline = s.tick + 100;
        return;
      }
      case 1:
        if (this.B.diskTermAt(this.k) === this.t1) {
          s.healNetwork();
          s.isolate(this.L);
          s.event('script', `ongaro (b): ${this.L.id} cut off`);
          this.phase = 2;
          this.deadline = s.tick + 200;
        } else if (s.tick > this.deadline) this.done = true;
        return;
      case 2:
        if (s.tick > this.deadline) this.done = true;
        return;
      case 3: {
        const b = this.B.core;
        if (!b || this.B.role !== 'leader') {
          if (s.tick > this.deadline) this.done = true;
          return;
        }
        if (this.y === 0) {
          // With the no-op rule: once the no-op (and X) committed and C knows it.
          if ((this.C.core?.commitIndex() ?? 0) >= this.k) this.proposeY();
          if (s.tick > this.deadline) this.done = true;
          return;
        }
        if (b.commitIndex() < this.y) {
          if (s.tick > this.deadline) this.done = true;
          return;
        }
        // (c) B and C apart; a client write on B.
        s.setBlocked(this.B, this.C, true);
        s.setBlocked(this.C, this.B, true);
        s.setBlocked(this.D, this.C, true);
        s.setBlocked(this.C, this.D, true);
        const id = `w:${run.nextWrite++}`;
        const w = { id, acked: null, inflight: 0, lastAttempt: s.tick, lastNode: this.B.id, lastTerm: this.B.leaderTerm };
        const res = s.propose(this.B, id);
        if (!res) {
          this.done = true;
          return;
        }
        w.inflight++;
        run.writes.set(id, w);
        run.pending.push(w);
        this.w = res.index;
        s.drive(this.B);
        s.event('script', `ongaro (c): ${this.B.id} and ${this.C.id} apart; ${id} at (${res.index}, t${res.term}) on ${this.B.id}`);
        this.phase = 4;
        this.deadline = s.tick + 100;
        return;
      }
      case 4: {
        const b = this.B.core;
        if (!b || b.commitIndex() < this.w) {
          if (s.tick > this.deadline) this.done = true;
          return;
        }
        // (d) L and C together, B and D cut off.
        s.hooks.filter = undefined;
        s.healNetwork();
        s.isolate(this.B);
        s.isolate(this.D);
        s.event('script', `ongaro (d): ${this.B.id} ${this.D.id} cut off (W committed at ${this.w}); ${this.L.id} and ${this.C.id} together`);
        this.phase = 5;
        this.deadline = s.tick + 200;
        return;
      }
      case 5:
        if (this.C.role === 'leader' || s.tick > this.deadline) this.done = true;
        return;
    }
  }
}

/**
 * Reads at a deposed leader that does not know it yet (3 voters and a learner D):
 *  (a) leader L serves a read; the voters' heartbeat responses of the next few ticks are held
 *      up in the network, spread over up to ~5 election timeouts (longer than 2× the timeout);
 *  (b) {L, D} | {B, C}: B or C is elected and acknowledges a client write. The late responses
 *      keep L's CheckQuorum satisfied, so L still believes it leads;
 *  (c) clients keep reading at L. Only a heartbeat round started for a read may confirm it, and
 *      only voters count: L can confirm nothing, and a stale read is a violation.
 */
class DeposedReadScript implements Script {
  done = false;
  private phase = 0;
  private readonly start: number;
  private deadline = 0;
  private L!: SimNode;
  private D!: SimNode;
  private group: NodeId[] = [];
  private holdUntil = 0;
  private written = '';
  private readonly late = new WeakSet<Message>();

  constructor(private readonly run: Run) {
    this.start = run.rng.range(30, 150);
  }

  onTick(): void {
    const run = this.run;
    const s = run.sim;
    const r = run.rng;
    if (s.tick > this.start + 600) {
      this.done = true;
      return;
    }
    switch (this.phase) {
      case 0: {
        if (s.tick < this.start) return;
        const l = quietLeader(run);
        if (!l || !l.core) return;
        const conf = l.core.conf();
        if (conf.voters.length !== 3 || conf.learners.length !== 1) {
          this.done = true;
          return;
        }
        this.L = l;
        this.D = s.nodes.get(conf.learners[0]!)!;
        this.group = [l.id, this.D.id];
        const L = l.id;
        this.holdUntil = s.tick + r.range(3, 6);
        let k = 0;
        // (a) Hold up the voters' responses to L for a few ticks, spread out.
        s.hooks.delay = (m: Message): number => {
          if (s.tick > this.holdUntil || m.to !== L || m.type !== 'heartbeatResp' || m.from === this.D.id) return 0;
          this.late.add(m);
          k++;
          return 6 + ((k * 7) % 45);
        };
        run.read(l);
        s.event('script', `deposed-read (a): ${l.id} leads; responses to it held up until tick ${this.holdUntil}`);
        this.phase = 1;
        return;
      }
      case 1: {
        if (s.tick < this.holdUntil) return;
        s.hooks.delay = undefined;
        // (b) the partition: late messages already in the network still arrive.
        const g = this.group;
        s.hooks.filter = (m: Message) => g.includes(m.from) !== g.includes(m.to) && !this.late.has(m);
        s.event('script', `deposed-read (b): {${g.join(',')}} | rest`);
        this.phase = 2;
        this.deadline = s.tick + 150;
        return;
      }
      case 2: {
        if (s.tick > this.deadline) {
          this.done = true;
          return;
        }
        const others = s.list.filter((x) => !this.group.includes(x.id) && x.core && x.role === 'leader');
        const n = others[0];
        if (this.written === '' && n) {
          const id = `w:${run.nextWrite++}`;
          const w = { id, acked: null, inflight: 0, lastAttempt: s.tick, lastNode: n.id, lastTerm: n.leaderTerm };
          const res = s.propose(n, id);
          if (!res) return;
          w.inflight++;
          run.writes.set(id, w);
          run.pending.push(w);
          this.written = id;
          s.drive(n);
          s.event('script', `deposed-read (b): ${n.id} leads the majority; ${id} at (${res.index}, t${res.term})`);
          return;
        }
        if (this.written === '' || !run.writes.get(this.written)?.acked) return;
        // (c) L still believes it leads: read there.
        if (this.L.core && this.L.role === 'leader') run.read(this.L);
        else {
          s.event('script', `deposed-read (c): ${this.L.id} stepped down`);
          this.done = true;
        }
        return;
      }
    }
  }
}

export function describe(v: Violation): string {
  return `${v.property} (seed ${v.seed}, tick ${v.tick}): ${v.detail}`;
}

export type { Property, Violation };
