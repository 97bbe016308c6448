// The nemesis: a schedule of faults derived from the seed alone, and its execution.
//
// Schedule (planSchedule, pure): a step every `interval`, alternating "start a fault" (odd
// steps) and "heal everything" (even steps), until `duration`. Each fault step draws its kind
// among the enabled ones and its parameters from a PRNG seeded with the run's seed, so the same
// seed and options give the same schedule. Targets are named either concretely (indexes drawn
// from a per-step PRNG over the sorted node ids) or as "the leader", resolved when the step runs
// (the leader is whatever the cluster elected; everything else stays reproducible).
//
// Faults:
//   kill       SIGKILL a random minority of managers, or the leader; restarted at the next heal
//   pause      SIGSTOP a random minority, or the leader; SIGCONT at the next heal
//   partition  halves (random minority | majority), isolate-leader, bridge (a node in two
//              overlapping majorities, the others split), one-way-leader (the leader cannot
//              send to anyone, everyone can send to it); with --allow-quorum-loss also split-all
//              (no side has a majority). Manager↔manager links only: workers and clients keep
//              reaching every manager (clients of a minority manager see timeouts, not lies)
//   restart    crash-restart (SIGKILL + start) of the leader, a random manager or a worker
//   drop       reset the open connections of a random 20–60 % of all links
//   latency    20–150 ms (+ up to 100 ms jitter) on every link of one manager, or on a random
//              30 % of all links; removed at the next heal
//   clock-step step the WALL clock of the leader or a random manager by ±1 min…1 h (only
//              Date.now/new Date move, via the chaos/clock-shift.ts preload; the monotonic
//              clock does not); stepped back at the next heal
//   long-pause SIGSTOP the leader for longer than the failover grace (grace + 2…6 s), then
//              SIGCONT; the nemesis waits it out (the next steps run late)
//   wipe       SIGKILL a follower, move its data directory aside and start it again with the
//              same command line: it must refuse (exit 1, the wiped-member message) within
//              WIPE_BOUND_MS, watched by the nemesis (checker/wipes.ts); at the next heal the
//              original directory comes back and the manager is started
//   disk-full  fill the leader's or a random manager's own tmpfs (its data dir; root only)
//              with a filler file until ENOSPC; the next heal removes it (and restarts the
//              manager if it stopped)
//   grow       a bounded burst of large values (GrowWorkload: ≤ `bytes` in `valueBytes` values
//              over a fixed key set, ≤ GROW_BURST_MS) through the API, in the background;
//              quota refusals (507) are expected
//   kill-worker SIGKILL a worker for good: never restarted (not even by the final heal); at
//              most one per run, and only with two workers or more
//   worker     SIGKILL or SIGSTOP a random worker (its task processes keep running); restarted
//              or SIGCONTed at the next heal. Never the last worker up
//   freeze-replica
//              SIGSTOP one replica process of the mesh service (chaos/mesh-workload.ts: a
//              replica in the leader's mesh table whose pid file names a live mesh-server
//              process), so its kernel still accepts connections that nobody answers; SIGCONT
//              at the next heal. One at a time, never the last un-frozen ready replica; needs
//              the mesh workload and two workers or more (checker/mesh.ts)
// Budget: at most one fault at a time, and kill/pause/partition never take down or cut off more
// than a minority of managers unless --allow-quorum-loss.
import { Rng } from './prng.js';
import { readFileSync } from 'node:fs';
import type { ChaosCluster } from './cluster.js';
import { sleep } from './cluster.js';
import { WIPED_REFUSAL, type WipeRecord, type WipeStatus } from './checker/wipes.js';
import type { ReplicaFreeze } from './checker/mesh.js';

export const FAULT_KINDS = ['kill', 'pause', 'partition', 'restart', 'drop', 'latency', 'clock-step', 'long-pause', 'wipe', 'disk-full', 'grow', 'kill-worker', 'worker', 'freeze-replica'] as const;
/** The default `--faults`. */
export const DEFAULT_FAULTS: readonly FaultKind[] = ['kill', 'pause', 'partition', 'restart', 'drop', 'latency'];

/** How long a wiped manager may run before the wipe counts as not refused. */
export const WIPE_BOUND_MS = 30_000;
/** Bound on one grow burst. */
export const GROW_BURST_MS = 8000;
/** Size of the grow nemesis' values and key set, and its bytes per burst (bounds the state). */
export const GROW_VALUE_BYTES = 30 * 1024;
export const GROW_KEYS = 2500;
export const GROW_MAX_BURST_BYTES = 24 * 1024 * 1024;
export type FaultKind = (typeof FAULT_KINDS)[number];

export type PartitionShape = 'halves' | 'isolate-leader' | 'bridge' | 'one-way-leader' | 'split-all';

export type PlannedAction =
  | { kind: 'kill' | 'pause'; target: 'leader' | 'random'; count: number }
  | { kind: 'partition'; shape: PartitionShape }
  | { kind: 'restart'; target: 'leader' | 'manager' | 'worker' }
  | { kind: 'drop'; fraction: number }
  | { kind: 'latency'; ms: number; jitterMs: number; scope: 'node' | 'links' }
  | { kind: 'clock-step'; target: 'leader' | 'random'; offsetMs: number }
  | { kind: 'long-pause'; ms: number }
  | { kind: 'wipe' }
  | { kind: 'disk-full'; target: 'leader' | 'random' }
  | { kind: 'grow'; bytes: number; valueBytes: number }
  | { kind: 'kill-worker' }
  | { kind: 'worker'; op: 'kill' | 'pause' }
  | { kind: 'freeze-replica' }
  | { kind: 'heal' };

export interface PlannedStep {
  step: number;
  /** ms after the start of the run. */
  at: number;
  action: PlannedAction;
}

export interface ScheduleOptions {
  seed: number;
  faults: readonly FaultKind[];
  intervalMs: number;
  durationMs: number;
  managers: number;
  workers: number;
  allowQuorumLoss: boolean;
  /** The managers' failover grace (long-pause outlasts it). Default 10 s. */
  failoverGraceMs?: number;
  /** The mesh workload runs (freeze-replica needs it, and two workers). */
  mesh?: boolean;
}

export function maxMinority(n: number): number {
  return Math.floor((n - 1) / 2);
}

/** The fault schedule: a pure function of the options (seed included). */
export function planSchedule(o: ScheduleOptions): PlannedStep[] {
  const rng = Rng.derive(o.seed, 'schedule');
  const steps: PlannedStep[] = [];
  // kill-worker needs a worker that stays: never all of them.
  const faults = o.faults.filter((k) => (k !== 'kill-worker' || o.workers >= 2) && (k !== 'worker' || o.workers >= 1) && (k !== 'freeze-replica' || (o.mesh === true && o.workers >= 2)));
  if (faults.length === 0) return steps;
  for (let k = 1; k * o.intervalMs < o.durationMs; k++) {
    const at = k * o.intervalMs;
    if (k % 2 === 0) {
      steps.push({ step: k, at, action: { kind: 'heal' } });
      continue;
    }
    const kind = rng.pick(faults);
    let action: PlannedAction;
    switch (kind) {
      case 'kill':
      case 'pause': {
        if (o.allowQuorumLoss && rng.chance(0.3)) action = { kind, target: 'random', count: rng.between(Math.floor(o.managers / 2) + 1, o.managers) };
        else if (rng.chance(0.5)) action = { kind, target: 'leader', count: 1 };
        else action = { kind, target: 'random', count: rng.between(1, Math.max(1, maxMinority(o.managers))) };
        break;
      }
      case 'partition': {
        const shapes: PartitionShape[] = ['halves', 'isolate-leader', 'bridge', 'one-way-leader'];
        if (o.allowQuorumLoss) shapes.push('split-all');
        action = { kind, shape: rng.pick(shapes) };
        break;
      }
      case 'restart':
        action = { kind, target: rng.pick(o.workers > 0 ? (['leader', 'manager', 'worker'] as const) : (['leader', 'manager'] as const)) };
        break;
      case 'drop':
        action = { kind, fraction: 0.2 + 0.4 * rng.next() };
        break;
      case 'latency':
        action = { kind, ms: rng.between(20, 150), jitterMs: rng.between(0, 100), scope: rng.chance(0.5) ? 'node' : 'links' };
        break;
      case 'clock-step': {
        const minutes = rng.between(1, 60);
        action = { kind, target: rng.chance(0.5) ? 'leader' : 'random', offsetMs: (rng.chance(0.5) ? 1 : -1) * minutes * 60_000 };
        break;
      }
      case 'long-pause':
        action = { kind, ms: (o.failoverGraceMs ?? 10_000) + rng.between(2000, 6000) };
        break;
      case 'wipe':
      case 'kill-worker':
      case 'freeze-replica':
        action = { kind };
        break;
      case 'disk-full':
        action = { kind, target: rng.chance(0.5) ? 'leader' : 'random' };
        break;
      case 'grow':
        action = { kind, bytes: rng.between(GROW_MAX_BURST_BYTES / 2, GROW_MAX_BURST_BYTES), valueBytes: GROW_VALUE_BYTES };
        break;
      case 'worker':
        action = { kind, op: rng.chance(0.5) ? 'kill' : 'pause' };
        break;
    }
    steps.push({ step: k, at, action });
  }
  return steps;
}

export function describeAction(a: PlannedAction): string {
  switch (a.kind) {
    case 'kill':
    case 'pause':
      return `${a.kind} ${a.target === 'leader' ? 'the leader' : `${a.count} random manager${a.count === 1 ? '' : 's'}`}`;
    case 'partition':
      return `partition ${a.shape}`;
    case 'restart':
      return `crash-restart ${a.target === 'leader' ? 'the leader' : `a ${a.target}`}`;
    case 'drop':
      return `drop connections on ${Math.round(a.fraction * 100)}% of links`;
    case 'latency':
      return `latency ${a.ms}±${a.jitterMs} ms on ${a.scope === 'node' ? "one manager's links" : '30% of links'}`;
    case 'clock-step':
      return `step the wall clock of ${a.target === 'leader' ? 'the leader' : 'a random manager'} by ${a.offsetMs > 0 ? '+' : '-'}${Math.abs(a.offsetMs) / 60_000} min`;
    case 'long-pause':
      return `SIGSTOP the leader for ${(a.ms / 1000).toFixed(1)} s (past the failover grace)`;
    case 'wipe':
      return "wipe a follower's data directory and start it again";
    case 'disk-full':
      return `fill the disk of ${a.target === 'leader' ? 'the leader' : 'a random manager'}`;
    case 'grow':
      return `grow the state: up to ${(a.bytes / 1048576).toFixed(1)} MiB of ${a.valueBytes / 1024} KiB values`;
    case 'kill-worker':
      return 'SIGKILL a worker for good';
    case 'worker':
      return `${a.op === 'kill' ? 'SIGKILL' : 'SIGSTOP'} a worker until the next heal`;
    case 'freeze-replica':
      return 'SIGSTOP a replica of the mesh service until the next heal';
    case 'heal':
      return 'heal';
  }
}

/** Outcome of one grow burst. */
export interface GrowBurst {
  ok: number;
  refusedQuota: number;
  failed: number;
  unknown: number;
  bytes: number;
}

/** What the grow nemesis drives (workload.ts GrowWorkload). */
export interface GrowDriver {
  burst(o: { step: number; bytes: number; valueBytes: number; maxMs: number }, signal?: AbortSignal): Promise<GrowBurst>;
}

/** What the freeze-replica fault drives (chaos/mesh-workload.ts MeshWorkload). */
export interface ReplicaFreezer {
  /**
   * SIGSTOPs one ready replica (drawn with `rng`) while another ready one stays un-frozen;
   * `skipped` says why none was frozen.
   */
  freeze(rng: Rng): Promise<{ taskId: string; pid: number; node: string | null; detail: string } | { skipped: string }>;
  /** SIGCONTs the frozen replica; what was done, or null when none is frozen. */
  thaw(): string | null;
}

/** One line of nemesis.log / one entry of history.nemesis. */
export interface NemesisEvent {
  /** ms since the start of the run (harness clock). */
  at: number;
  step: number | null;
  kind: PlannedAction['kind'] | 'heal-all' | 'crash';
  /** 'start' of a fault that lasts until the next heal, 'instant' fault, 'heal'. */
  phase: 'start' | 'instant' | 'heal' | 'info';
  targets: string[];
  detail: string;
}

export interface NemesisContext {
  cluster: ChaosCluster;
  seed: number;
  clock: () => number;
  /** The current leader (asked fresh), or null if none is known. */
  leader: () => Promise<string | null>;
  log: (e: NemesisEvent) => void;
  /** The grow fault's writer (absent: grow steps do nothing). */
  grow?: GrowDriver;
  /** Bound on a wiped manager's life (default WIPE_BOUND_MS). */
  wipeBoundMs?: number;
  /** The freeze-replica fault's target (absent: freeze-replica steps are skipped). */
  freezer?: ReplicaFreezer;
}

export class Nemesis {
  private readonly killed = new Set<string>();
  private readonly paused = new Set<string>();
  /** Managers cut off from a majority by the current partition. */
  private cutOff: string[] = [];
  /** Fault actions executed (heals not counted). */
  actions = 0;
  /** Managers whose data directory is aside (restored at the next heal). */
  private readonly wiped = new Set<string>();
  /** Managers whose tmpfs is full (emptied at the next heal). */
  private readonly filled = new Set<string>();
  /** Background grow bursts. */
  private readonly pending: Promise<void>[] = [];
  /** What every wipe did (checker/wipes.ts). */
  readonly wipes: WipeRecord[] = [];
  /** Workers killed for good, and when (harness clock, right after the SIGKILL took effect). */
  readonly deadWorkers: { node: string; at: number }[] = [];
  /** Every time a worker was down by the nemesis' doing (to: when it came back; null: never). */
  readonly workerDowns: { node: string; from: number; to: number | null; how: string }[] = [];
  /** Every replica the freeze-replica fault froze (to: when it was SIGCONTed). */
  readonly freezes: ReplicaFreeze[] = [];

  constructor(
    private readonly ctx: NemesisContext,
    readonly schedule: readonly PlannedStep[],
  ) {}

  /** Managers on the minority side of the current partition (for --inject-stale-reads). */
  minority(): string[] {
    return [...this.cutOff];
  }

  /** Runs the schedule until its end or the signal. */
  async run(signal: AbortSignal): Promise<void> {
    for (const s of this.schedule) {
      const wait = s.at - this.ctx.clock();
      if (wait > 0) await sleep(wait, signal);
      if (signal.aborted) return;
      try {
        await this.execute(s, signal);
      } catch (e) {
        this.emit(s.step, 'heal', 'info', [], `step failed: ${(e as Error).message}`);
      }
    }
    await this.settle();
  }

  /** Waits for the background work of the faults (grow bursts; each is bounded). */
  async settle(): Promise<void> {
    await Promise.all(this.pending);
  }

  private emit(step: number | null, kind: NemesisEvent['kind'], phase: NemesisEvent['phase'], targets: string[], detail: string): void {
    this.ctx.log({ at: this.ctx.clock(), step, kind, phase, targets, detail });
  }

  private upManagers(): string[] {
    return this.ctx.cluster.managerIds.filter((m) => this.ctx.cluster.isUp(m));
  }

  /** The leader if known and up, else a random up manager (said so in the detail). */
  private async resolveLeader(rng: Rng): Promise<{ id: string; note: string } | null> {
    const l = await this.ctx.leader();
    if (l !== null) return { id: l, note: '(leader)' };
    const up = this.upManagers();
    if (up.length === 0) return null;
    return { id: rng.pick(up), note: '(leader unknown: random manager)' };
  }

  async execute(s: PlannedStep, signal?: AbortSignal): Promise<void> {
    const a = s.action;
    const c = this.ctx.cluster;
    const rng = Rng.derive(this.ctx.seed, `step-${s.step}`);
    const managers = c.managerIds;
    switch (a.kind) {
      case 'heal':
        await this.healAll(s.step);
        return;
      case 'kill':
      case 'pause': {
        let targets: string[];
        let note = '';
        if (a.target === 'leader') {
          const l = await this.resolveLeader(rng);
          if (l === null) return;
          targets = [l.id];
          note = ` ${l.note}`;
        } else targets = rng.shuffle(managers).slice(0, a.count);
        targets = targets.filter((t) => c.isUp(t));
        if (targets.length === 0) return;
        this.actions++;
        for (const t of targets) {
          if (a.kind === 'kill') {
            await c.kill(t);
            this.killed.add(t);
          } else {
            c.pause(t);
            this.paused.add(t);
          }
        }
        this.emit(s.step, a.kind, 'start', targets, `${a.kind === 'kill' ? 'SIGKILL' : 'SIGSTOP'} ${targets.join(',')}${note}`);
        return;
      }
      case 'partition': {
        const r = await this.partition(a.shape, rng);
        if (r === null) return;
        this.actions++;
        this.emit(s.step, 'partition', 'start', r.targets, r.detail);
        return;
      }
      case 'restart': {
        let id: string;
        let note = '';
        if (a.target === 'leader') {
          const l = await this.resolveLeader(rng);
          if (l === null) return;
          id = l.id;
          note = ` ${l.note}`;
        } else if (a.target === 'worker') id = rng.pick(c.workerIds);
        else id = rng.pick(managers);
        if (!c.isUp(id)) return;
        this.actions++;
        const from = this.ctx.clock();
        await c.crashRestart(id);
        if (c.workerIds.includes(id)) this.workerDowns.push({ node: id, from, to: this.ctx.clock(), how: 'restart' });
        this.emit(s.step, 'restart', 'instant', [id], `SIGKILL + start ${id}${note}`);
        return;
      }
      case 'drop': {
        const links = rng.shuffle([...c.net.links.values()]).slice(0, Math.max(1, Math.round(a.fraction * c.net.links.size)));
        let n = 0;
        for (const l of links) n += l.drop();
        this.actions++;
        this.emit(s.step, 'drop', 'instant', [], `reset ${n} connections on ${links.length} links`);
        return;
      }
      case 'latency': {
        let links;
        let what: string;
        if (a.scope === 'node') {
          const m = rng.pick(managers);
          links = c.net.select((l) => l.from === m || l.to === m);
          what = `every link of ${m}`;
        } else {
          links = rng.shuffle([...c.net.links.values()]).slice(0, Math.max(1, Math.round(0.3 * c.net.links.size)));
          what = `${links.length} links`;
        }
        for (const l of links) l.latency(a.ms, a.jitterMs);
        this.actions++;
        this.emit(s.step, 'latency', 'start', [], `${a.ms}±${a.jitterMs} ms on ${what}`);
        return;
      }
      case 'clock-step': {
        let id: string;
        let note = '';
        if (a.target === 'leader') {
          const l = await this.resolveLeader(rng);
          if (l === null) return;
          id = l.id;
          note = ` ${l.note}`;
        } else id = rng.pick(managers);
        if (!c.stepClock(id, a.offsetMs)) return;
        this.actions++;
        this.emit(s.step, 'clock-step', 'start', [id], `wall clock of ${id}${note} ${a.offsetMs > 0 ? '+' : '-'}${Math.abs(a.offsetMs) / 60_000} min`);
        return;
      }
      case 'long-pause': {
        const l = await this.resolveLeader(rng);
        if (l === null || !c.isUp(l.id)) return;
        this.actions++;
        c.pause(l.id);
        this.emit(s.step, 'long-pause', 'start', [l.id], `SIGSTOP ${l.id} ${l.note} for ${(a.ms / 1000).toFixed(1)} s`);
        await sleep(a.ms, signal);
        c.resume(l.id);
        this.emit(s.step, 'long-pause', 'heal', [l.id], `SIGCONT ${l.id}${signal?.aborted ? ' (run ending)' : ''}`);
        return;
      }
      case 'wipe':
        await this.wipe(s.step, rng, signal);
        return;
      case 'disk-full': {
        let id: string;
        let note = '';
        if (a.target === 'leader') {
          const l = await this.resolveLeader(rng);
          if (l === null) return;
          id = l.id;
          note = ` ${l.note}`;
        } else id = rng.pick(managers);
        if (!c.isUp(id) || this.filled.has(id)) return;
        this.actions++;
        this.filled.add(id);
        const bytes = await c.fillDisk(id);
        this.emit(s.step, 'disk-full', 'start', [id], `filled the tmpfs of ${id}${note} with ${(bytes / 1048576).toFixed(1)} MiB until ENOSPC`);
        return;
      }
      case 'grow': {
        const g = this.ctx.grow;
        if (g === undefined) return;
        this.actions++;
        this.emit(s.step, 'grow', 'instant', [], `burst of up to ${(a.bytes / 1048576).toFixed(1)} MiB in ${a.valueBytes / 1024} KiB values (at most ${GROW_BURST_MS / 1000} s)`);
        this.pending.push(
          g.burst({ step: s.step, bytes: a.bytes, valueBytes: a.valueBytes, maxMs: GROW_BURST_MS }, signal).then(
            (r) => this.emit(s.step, 'grow', 'info', [], `burst done: ${r.ok} written (${(r.bytes / 1048576).toFixed(1)} MiB), ${r.refusedQuota} refused by the quota, ${r.failed} failed, ${r.unknown} unknown`),
            (e) => this.emit(s.step, 'grow', 'info', [], `burst failed: ${(e as Error).message}`),
          ),
        );
        return;
      }
      case 'worker':
        await this.workerFault(s.step, a.op, rng);
        return;
      case 'freeze-replica': {
        const f = this.ctx.freezer;
        if (f === undefined) {
          this.emit(s.step, 'freeze-replica', 'info', [], 'skipped: no mesh workload');
          return;
        }
        if (this.freezes.some((x) => x.to === null)) {
          this.emit(s.step, 'freeze-replica', 'info', [], 'skipped: a replica is frozen already (one at a time)');
          return;
        }
        const r = await f.freeze(rng);
        if ('skipped' in r) {
          this.emit(s.step, 'freeze-replica', 'info', [], `skipped: ${r.skipped}`);
          return;
        }
        this.actions++;
        this.freezes.push({ step: s.step, taskId: r.taskId, pid: r.pid, node: r.node, from: this.ctx.clock(), to: null });
        this.emit(s.step, 'freeze-replica', 'start', [r.taskId], r.detail);
        return;
      }
      case 'kill-worker': {
        if (this.deadWorkers.length > 0) {
          this.emit(s.step, 'kill-worker', 'info', [], `skipped: ${this.deadWorkers[0]!.node} is already dead for good (one per run)`);
          return;
        }
        const live = c.workerIds.filter((w) => c.isUp(w));
        if (live.length < 2) return;
        const id = rng.pick(live);
        this.actions++;
        c.node(id).gone = true;
        const from = this.ctx.clock(); // down from the SIGKILL on (a request in flight meets it)
        await c.kill(id);
        this.deadWorkers.push({ node: id, at: this.ctx.clock() });
        this.workerDowns.push({ node: id, from, to: null, how: 'kill-worker' });
        this.emit(s.step, 'kill-worker', 'start', [id], `SIGKILL ${id} for good (never restarted)`);
        return;
      }
    }
  }

  /** The worker fault: SIGKILL or SIGSTOP a random worker until the next heal (never the last one up). */
  private async workerFault(step: number, op: 'kill' | 'pause', rng: Rng): Promise<void> {
    const c = this.ctx.cluster;
    const up = c.workerIds.filter((w) => c.isUp(w));
    if (up.length < 2) {
      this.emit(step, 'worker', 'info', [], `skipped: ${up.length} worker${up.length === 1 ? '' : 's'} up (never the last one)`);
      return;
    }
    const id = rng.pick(up);
    this.actions++;
    const from = this.ctx.clock();
    if (op === 'kill') await c.kill(id);
    else c.pause(id);
    this.workerDowns.push({ node: id, from, to: null, how: op });
    this.emit(step, 'worker', 'start', [id], `${op === 'kill' ? 'SIGKILL' : 'SIGSTOP'} worker ${id} until the next heal`);
  }

  /** The wipe fault: a follower restarted on an empty data directory must refuse to start. */
  private async wipe(step: number, rng: Rng, signal?: AbortSignal): Promise<void> {
    const c = this.ctx.cluster;
    const l = await this.ctx.leader();
    if (l === null) return; // a follower must be known to be one
    const followers = c.managerIds.filter((m) => m !== l && c.isUp(m) && !this.wiped.has(m));
    if (followers.length === 0) return;
    const id = rng.pick(followers);
    this.actions++;
    await c.kill(id);
    c.wipeData(id);
    this.wiped.add(id);
    const n = c.node(id);
    c.start(id);
    n.expectExit = true; // its exit is the expected outcome, not a crash
    const starts = n.starts;
    const at = this.ctx.clock();
    this.emit(step, 'wipe', 'start', [id], `SIGKILL ${id} (follower of ${l}), data directory moved aside, started again with its command line`);
    let exited = false;
    void n.exited.then(() => (exited = true));
    const statuses: WipeStatus[] = [];
    const bound = this.ctx.wipeBoundMs ?? WIPE_BOUND_MS;
    while (!exited && this.ctx.clock() - at <= bound && !signal?.aborted) {
      const st = await c.status(id, 300);
      if (st !== null && st.id === id && !exited) statuses.push({ at: this.ctx.clock(), role: st.role, term: st.term, appliedIndex: st.appliedIndex });
      await Promise.race([sleep(250, signal), n.exited]);
    }
    const aliveMs = Math.round(this.ctx.clock() - at);
    let rec: WipeRecord;
    if (!exited || n.starts !== starts) {
      const aborted = signal?.aborted === true;
      await c.kill(id);
      rec = { manager: id, step, at, outcome: aborted ? 'aborted' : 'stayed-up', exitCode: null, aliveMs, statuses };
    } else {
      const code = n.lastExit?.code ?? null;
      const message = refusalLine(n.logFile, id, starts);
      rec = { manager: id, step, at, outcome: code === 1 && message !== undefined ? 'refused' : 'exited', exitCode: code, aliveMs, statuses, ...(message === undefined ? {} : { message }) };
    }
    this.wipes.push(rec);
    this.emit(
      step,
      'wipe',
      'info',
      [id],
      rec.outcome === 'refused'
        ? `${id} refused to start after ${aliveMs} ms (exit 1, wiped-member message)`
        : rec.outcome === 'exited'
          ? `${id} exited after ${aliveMs} ms with status ${rec.exitCode} WITHOUT the wiped-member refusal`
          : rec.outcome === 'stayed-up'
            ? `${id} was STILL RUNNING ${aliveMs} ms after its start on an empty data directory: SIGKILLed`
            : `${id} watched ${aliveMs} ms, then the run ended`,
    );
  }

  /**
   * Cuts manager↔manager links for a shape; returns the targets and a description. With --netns
   * the cuts are kernel rules; a manager cut off (halves, isolate-leader) is then, on a draw of
   * the step's PRNG, also cut off from every worker ("with its workers").
   */
  private async partition(shape: PartitionShape, rng: Rng): Promise<{ targets: string[]; detail: string } | null> {
    const k = this.ctx.cluster.kernel;
    const r = await this.partitionShape(shape, rng);
    if (r === null || k === null) return r;
    let detail = r.detail;
    if ((shape === 'halves' || shape === 'isolate-leader') && this.ctx.cluster.workerIds.length > 0 && rng.chance(0.5)) {
      for (const m of this.cutOff) for (const w of this.ctx.cluster.workerIds) k.cutPair(m, w);
      detail += `, with the workers (${this.cutOff.join(',')} cut off from ${this.ctx.cluster.workerIds.join(',')} too)`;
    }
    const nss = await k.apply();
    return { targets: r.targets, detail: `kernel ${detail} [nft drop rules in ${nss.length} namespaces: ${nss.join(',')}]` };
  }

  private async partitionShape(shape: PartitionShape, rng: Rng): Promise<{ targets: string[]; detail: string } | null> {
    const c = this.ctx.cluster;
    const ms = c.managerIds;
    // --netns: kernel rules (chaos/netns.ts) staged here and installed at the end.
    const k = c.kernel;
    const cutPair = (a: string, b: string): void => {
      if (k !== null) return k.cutPair(a, b);
      c.net.get(a, b).cut();
      c.net.get(b, a).cut();
    };
    const split = (groups: string[][]): void => {
      for (let i = 0; i < groups.length; i++)
        for (let j = i + 1; j < groups.length; j++) for (const a of groups[i]!) for (const b of groups[j]!) cutPair(a, b);
    };
    const fmt = (groups: string[][]): string => groups.map((g) => `{${g.join(',')}}`).join(' | ');
    switch (shape) {
      case 'halves': {
        const sh = rng.shuffle(ms);
        const minority = sh.slice(0, maxMinority(ms.length));
        const majority = sh.slice(maxMinority(ms.length));
        split([minority, majority]);
        this.cutOff = minority;
        return { targets: minority, detail: `halves ${fmt([minority, majority])}` };
      }
      case 'isolate-leader': {
        const l = await this.resolveLeader(rng);
        if (l === null) return null;
        const rest = ms.filter((m) => m !== l.id);
        split([[l.id], rest]);
        this.cutOff = [l.id];
        return { targets: [l.id], detail: `isolate ${l.id} ${l.note}: ${fmt([[l.id], rest])}` };
      }
      case 'bridge': {
        // {a…, bridge} and {bridge, …b}: the bridge is in both majorities.
        const sh = rng.shuffle(ms);
        const half = Math.floor(ms.length / 2);
        const left = sh.slice(0, half);
        const bridge = sh[half]!;
        const right = sh.slice(half + 1);
        for (const a of left) for (const b of right) cutPair(a, b);
        this.cutOff = [];
        return { targets: [bridge], detail: `bridge ${bridge}: ${fmt([[...left, bridge], [bridge, ...right]])}` };
      }
      case 'one-way-leader': {
        const l = await this.resolveLeader(rng);
        if (l === null) return null;
        for (const m of ms) {
          if (m === l.id) continue;
          if (k !== null) {
            k.blockSend(l.id, m); // the kernel drops what l sends to m
            continue;
          }
          c.net.get(l.id, m).block('up'); // nothing l sends on its connections to m arrives
          c.net.get(m, l.id).block('down'); // nor what l answers on m's connections
        }
        this.cutOff = [l.id];
        return { targets: [l.id], detail: `one-way: ${l.id} ${l.note} cannot send to anyone, everyone can send to it` };
      }
      case 'split-all': {
        const sh = rng.shuffle(ms);
        const size = Math.max(1, Math.floor(ms.length / 2));
        const groups: string[][] = [];
        for (let i = 0; i < sh.length; i += size) groups.push(sh.slice(i, i + size));
        split(groups);
        this.cutOff = [...ms];
        return { targets: [...ms], detail: `split-all (no majority anywhere) ${fmt(groups)}` };
      }
    }
  }

  /** Restarts killed managers, resumes paused ones, heals every link. */
  async healAll(step: number | null, final = false): Promise<void> {
    const c = this.ctx.cluster;
    const parts: string[] = [];
    const targets: string[] = [];
    // Wiped managers get their data directory back, full disks their space, before restarts.
    const restored = [...this.wiped].filter((m) => c.restoreData(m));
    this.wiped.clear();
    if (restored.length > 0) parts.push(`data directory back on ${restored.join(',')}`);
    const emptied = [...this.filled].filter((m) => c.unfillDisk(m));
    this.filled.clear();
    if (emptied.length > 0) parts.push(`filler removed on ${emptied.join(',')}`);
    // Anything that died (killed by us, or crashed) comes back; workers killed for good do not.
    const dead = [...c.nodes.values()].filter((n) => n.status === 'killed' && !n.gone).map((n) => n.id);
    for (const id of dead) {
      c.start(id);
      targets.push(id);
    }
    if (dead.length > 0) parts.push(`restart ${dead.join(',')}`);
    this.killed.clear();
    const paused = [...c.nodes.values()].filter((n) => n.status === 'paused').map((n) => n.id);
    for (const id of paused) {
      c.resume(id);
      targets.push(id);
    }
    if (paused.length > 0) parts.push(`SIGCONT ${paused.join(',')}`);
    this.paused.clear();
    // A frozen replica answers again.
    const thawed = this.ctx.freezer?.thaw() ?? null;
    if (thawed !== null) {
      const at = this.ctx.clock();
      for (const f of this.freezes) {
        if (f.to !== null) continue;
        f.to = at;
        targets.push(f.taskId);
      }
      parts.push(thawed);
    }
    // Workers downed by the worker fault are back now.
    const back = this.ctx.clock();
    for (const d of this.workerDowns) if (d.to === null && d.how !== 'kill-worker') d.to = back;
    const stepped = c.resetClocks();
    if (stepped.length > 0) parts.push(`wall clock back on ${stepped.join(',')}`);
    const faulty = c.net.faulty().length;
    c.net.healAll();
    if (faulty > 0) parts.push(`heal ${faulty} links`);
    const kernel = c.kernel !== null ? await c.kernel.heal() : null;
    if (kernel !== null) {
      const by = kernel.dropped.map((d) => `${d.node} ${d.out} out/${d.in} in`).join(', ');
      parts.push(`kernel rules removed in ${kernel.namespaces} namespaces (dropped ${kernel.packets} packets: ${by})${kernel.failed.length > 0 ? `; could not remove the rules of ${kernel.failed.join(',')}` : ''}; ${kernel.left.length === 0 ? 'no nft table left in any namespace' : `nft tables LEFT: ${kernel.left.join('; ')}`}`);
    }
    this.cutOff = [];
    if (parts.length > 0 || final) this.emit(step, final ? 'heal-all' : 'heal', 'heal', targets, parts.length > 0 ? parts.join('; ') : 'nothing to heal');
  }
}

/** The wiped-member refusal in a manager's log, from its `starts`-th start on (shortened). */
function refusalLine(logFile: string, id: string, starts: number): string | undefined {
  let text: string;
  try {
    text = readFileSync(logFile, 'utf8');
  } catch {
    return undefined;
  }
  const marker = `=== chaos: starting ${id} (start ${starts})`;
  const i = text.lastIndexOf(marker);
  const life = i < 0 ? text : text.slice(i);
  if (!WIPED_REFUSAL.test(life)) return undefined;
  const line = life.split('\n').find((x) => x.includes('its data was wiped or replaced')) ?? '';
  return line.trim().slice(0, 240);
}
