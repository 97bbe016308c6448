// One simulation run: a seed picks the cluster size, the network and fault rates, the workload
// and (for some seeds) a scripted scenario; a fault phase is followed by a heal phase in which
// liveness must hold. Pure and deterministic: same seed, same trace, same result.
import type { ConfState, NodeId } from '../types.js';
import { checkDurability, convergence, type AckedWrite, type Property, type Violation } from './checkers.js';
import { PERFECT_NET, SimCluster, type NetFaults, type SimBug, type SimNode } from './network.js';
import { derive, type Prng } from './prng.js';
import { scriptFor, type Family, type Script, type ScriptHost, type Write } from './scripts.js';

export type { Family };

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

export function runSeed(opts: RunOptions): RunResult {
  return new Run(opts).run();
}

class Run implements ScriptHost {
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
    this.script = scriptFor(p.family, this);
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
    // Connections closing (core-linkdown.ts), drawn from their own stream: the rest of a seed's
    // parameters stay as they were. Scripted scenarios keep their exact schedules.
    if (p.family === 'random') {
      const lr = derive(this.seed, 'link-params');
      s.linkCloseOnCrash = lr.pick([0, 0.5, 1, 1]);
      s.linkCloseOnBlock = lr.pick([0, 0.02, 0.1]);
    }
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

export function describe(v: Violation): string {
  return `${v.property} (seed ${v.seed}, tick ${v.tick}): ${v.detail}`;
}

export type { Property, Violation };
