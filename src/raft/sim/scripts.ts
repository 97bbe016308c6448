// Scripted scenarios of the simulator: for some seeds (the families figure8, no-sync, ongaro and
// deposed-read) a script steers the fault phase into a known dangerous interleaving, on top of
// the random faults, so the core's guards against it are exercised every run.
import type { Message, NodeId } from '../types.js';
import type { AckedWrite } from './checkers.js';
import type { SimCluster, SimNode } from './network.js';
import type { Prng } from './prng.js';

/** The seed families: random faults only, or random faults plus one scripted scenario. */
export type Family = 'random' | 'figure8' | 'no-sync' | 'ongaro' | 'deposed-read';

export interface Write {
  id: string;
  acked: AckedWrite | null;
  inflight: number;
  lastAttempt: number;
  /** Where and in which term the last attempt went. */
  lastNode: NodeId;
  lastTerm: number;
}

/** A scripted scenario: acts at the end of every tick of the fault phase. */
export interface Script {
  done: boolean;
  onTick(): void;
}

/** What a script uses of its run. */
export interface ScriptHost {
  readonly sim: SimCluster;
  readonly rng: Prng;
  readonly writes: Map<string, Write>;
  /** Unacknowledged writes. */
  pending: Write[];
  nextWrite: number;
  confChanges: number;
  /** The leader of the highest term, if any. */
  leader(): SimNode | null;
  /** Issues a linearizable read at `n` (checked when it completes). */
  read(n: SimNode): void;
}

/** The script of a seed's family (none for random seeds). */
export function scriptFor(family: Family, run: ScriptHost): Script | null {
  if (family === 'figure8') return new Figure8Script(run);
  if (family === 'no-sync') return new NoSyncScript(run);
  if (family === 'ongaro') return new OngaroScript(run);
  if (family === 'deposed-read') return new DeposedReadScript(run);
  return null;
}

/** Helpers shared by scripts. */
function quietLeader(run: ScriptHost): SimNode | null {
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

  constructor(private readonly run: ScriptHost) {
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

  constructor(private readonly run: ScriptHost) {
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

  constructor(private readonly run: ScriptHost) {
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

  constructor(private readonly run: ScriptHost) {
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
