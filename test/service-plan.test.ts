// The services controller's pure planner: scale up and down, replacement on node loss, rolling
// updates in both orders within their availability bounds, automatic and manual rollback
// (which replaces only the new template's tasks), and a leader change in the middle of an
// update (a new planner on the same recorded state makes no duplicate and loses no slot).
//
// A small simulated cluster applies the decisions the way the state machine will (checking a
// create's precondition) and moves tasks along (pending → running, or → failed for a template
// that crashes), one tick at a time; invariants are checked after every tick.
import { describe, expect, it } from 'vitest';
import { DEFAULT_UPDATE_POLICY, type UpdatePolicy } from '../src/protocol/service.js';
import {
  planService,
  isLive,
  type Decision,
  type Plan,
  type ServiceView,
  type SlotTask,
  type UpdateStatus,
} from '../src/manager/controllers/service-plan.js';

// 'flap': runs (and counts ready, as a task without a health check does) for one tick, then
// fails: a command that exits at once, seen running for a moment (restarted in place by its
// policy when `restartInPlace`).
type Behaviour = 'ok' | 'crash' | 'slow' | 'flap';

class Sim {
  now = 1_000_000;
  index = 10;
  seq = 0;
  svc: ServiceView;
  tasks: SlotTask[] = [];
  /** How each template version behaves once started. */
  behaviour = new Map<number, Behaviour>([[1, 'ok']]);
  /** Node of each task (for node loss). */
  node = new Map<string, string>();
  nodes = ['w1', 'w2', 'w3'];
  /** Restart policy: does a failed / lost task restart in place? */
  restartInPlace = false;
  log: Decision[][] = [];
  violations: string[] = [];
  tick = 1000;

  constructor(replicas: number, update: Partial<UpdatePolicy> = {}) {
    this.svc = {
      name: 'web',
      replicas,
      update: { ...DEFAULT_UPDATE_POLICY, monitorMs: 2000, ...update },
      version: 1,
      previousVersion: null,
      status: { state: 'none', target: 1, from: null, startedAt: this.now, startIndex: this.index, batches: 0, message: '', updatedAt: this.now },
      replaceBackoffMs: 1000,
    };
  }

  plan(): Plan {
    return planService(this.svc, this.tasks, this.now);
  }

  /** Apply decisions the way the state machine will (preconditions re-checked). */
  apply(decisions: Decision[]): void {
    this.log.push(decisions);
    for (const d of decisions) {
      switch (d.kind) {
        case 'create': {
          const inSlot = this.tasks.filter((t) => t.slot === d.slot);
          const blocked = d.exclusive
            ? inSlot.some((t) => isLive(t) || (t.desired === 'shutdown' && !['stopped', 'failed', 'lost', 'succeeded'].includes(t.state)))
            : inSlot.some((t) => isLive(t) && t.version === d.version);
          if (blocked) {
            this.violations.push(`refused create of slot ${d.slot} (precondition)`);
            break;
          }
          const id = `t${++this.seq}`;
          this.tasks.push({
            id,
            slot: d.slot,
            version: d.version,
            desired: 'running',
            state: 'pending',
            willRestart: false,
            ready: false,
            failed: false,
            createdAt: this.now,
            createIndex: ++this.index,
          });
          this.node.set(id, this.nodes[this.seq % this.nodes.length]!);
          break;
        }
        case 'stop': {
          const t = this.tasks.find((x) => x.id === d.taskId)!;
          t.desired = 'shutdown';
          break;
        }
        case 'remove':
          this.tasks = this.tasks.filter((t) => t.id !== d.taskId);
          break;
        case 'status':
          this.svc.status = d.status;
          this.index++;
          break;
        case 'rollback':
          this.rollback(d.reason);
          break;
      }
    }
  }

  /** A new template (the state machine's update command). */
  update(behaviour: Behaviour): number {
    const v = Math.max(...this.behaviour.keys()) + 1;
    this.behaviour.set(v, behaviour);
    this.svc.previousVersion = this.svc.version;
    this.svc.version = v;
    this.svc.status = this.status('updating', v, this.svc.previousVersion);
    return v;
  }

  rollback(reason = 'by hand'): void {
    const prev = this.svc.previousVersion!;
    this.svc.previousVersion = this.svc.version;
    this.svc.version = prev;
    this.svc.status = { ...this.status('rolling_back', prev, this.svc.previousVersion), message: reason };
  }

  status(state: UpdateStatus['state'], target: number, from: number | null): UpdateStatus {
    return { state, target, from, startedAt: this.now, startIndex: ++this.index, batches: 0, message: '', updatedAt: this.now };
  }

  /** The world moves on: tasks start (or crash), stopping tasks stop. */
  advance(): void {
    this.now += this.tick;
    for (const t of this.tasks) {
      if (t.desired === 'shutdown') {
        if (!['stopped', 'failed', 'lost', 'succeeded'].includes(t.state)) {
          t.state = 'stopped';
          t.ready = false;
          t.endedAt = this.now;
        }
        t.willRestart = false;
        continue;
      }
      const b = this.behaviour.get(t.version)!;
      if (b === 'flap' && t.state === 'running') {
        t.state = 'failed';
        t.failed = true;
        t.ready = false;
        delete t.readySince;
        t.endedAt = this.now;
        t.willRestart = this.restartInPlace;
        continue;
      }
      if (t.state === 'pending' || (t.willRestart && ['failed', 'lost'].includes(t.state))) {
        if (b === 'crash') {
          t.state = 'failed';
          t.failed = true;
          t.ready = false;
          t.endedAt = this.now;
          t.willRestart = this.restartInPlace;
        } else if (b === 'ok' || b === 'flap') {
          t.state = 'running';
          t.ready = true;
          t.readySince = this.now;
          t.willRestart = false;
          this.node.set(t.id, this.upNode(t.id));
        } else {
          t.state = 'starting';
        }
      }
    }
  }

  upNode(id: string): string {
    const n = this.node.get(id)!;
    return this.nodes.includes(n) ? n : this.nodes[0]!;
  }

  /** A node dies: its tasks are lost (restarted in place when the policy says so). */
  loseNode(n: string): void {
    this.nodes = this.nodes.filter((x) => x !== n);
    for (const t of this.tasks) {
      if (this.node.get(t.id) === n && !['stopped', 'failed', 'lost', 'succeeded'].includes(t.state)) {
        t.state = 'lost';
        t.ready = false;
        t.endedAt = this.now;
        t.willRestart = this.restartInPlace && t.desired === 'running';
      }
    }
  }

  readySlots(): number {
    const slots = new Set(this.tasks.filter((t) => isLive(t) && t.ready && t.slot <= this.svc.replicas).map((t) => t.slot));
    return slots.size;
  }

  /** Invariants that must hold after every tick. */
  check(minReady: number | null): void {
    for (let k = 1; k <= this.svc.replicas; k++) {
      const running = this.tasks.filter((t) => t.slot === k && (t.state === 'running' || t.state === 'starting'));
      const limit = this.svc.update.order === 'start-first' ? 2 : 1;
      if (running.length > limit) this.violations.push(`slot ${k} runs ${running.length} tasks at ${this.now}`);
    }
    if (minReady !== null && this.readySlots() < minReady) {
      this.violations.push(`only ${this.readySlots()} ready at ${this.now} (min ${minReady})`);
    }
  }

  /** Plan, apply, advance until nothing changes (or `max` ticks), checking invariants. */
  run(opts: { max?: number; minReady?: number | null; until?: () => boolean } = {}): number {
    const max = opts.max ?? 200;
    let quiet = 0;
    for (let i = 0; i < max; i++) {
      const p = this.plan();
      this.apply(p.decisions);
      this.check(opts.minReady ?? null);
      this.advance();
      this.check(opts.minReady ?? null);
      if (opts.until?.()) return i + 1;
      quiet = p.decisions.length === 0 ? quiet + 1 : 0;
      if (quiet >= 5 && opts.until === undefined) return i + 1;
    }
    return max;
  }

  live(): SlotTask[] {
    return this.tasks.filter(isLive).sort((a, b) => a.slot - b.slot);
  }

  versions(): number[] {
    return this.live().map((t) => t.version);
  }
}

const kinds = (ds: Decision[]): string[] => ds.map((d) => d.kind);

describe('scaling', () => {
  it('creates one task per slot, then nothing more', () => {
    const sim = new Sim(4);
    const p = sim.plan();
    expect(p.decisions).toEqual([1, 2, 3, 4].map((k) => expect.objectContaining({ kind: 'create', slot: k, version: 1, exclusive: true })));
    sim.apply(p.decisions);
    // Planning again before the tasks run changes nothing (no duplicate).
    expect(sim.plan().decisions).toEqual([]);
    sim.run();
    expect(sim.live().map((t) => t.slot)).toEqual([1, 2, 3, 4]);
    expect(sim.readySlots()).toBe(4);
    expect(sim.violations).toEqual([]);
  });

  it('scaling down stops the highest slots; scaling up fills the gaps again', () => {
    const sim = new Sim(4);
    sim.run();
    sim.svc.replicas = 2;
    const p = sim.plan();
    const stops = p.decisions.filter((d) => d.kind === 'stop');
    expect(stops.map((d) => (d as { slot: number }).slot).sort()).toEqual([3, 4]);
    sim.run();
    expect(sim.live().map((t) => t.slot)).toEqual([1, 2]);
    // Finished tasks of scaled-away slots are kept only up to the limit (1 per slot).
    expect(sim.tasks.filter((t) => t.slot > 2).length).toBeLessThanOrEqual(2);
    sim.svc.replicas = 5;
    sim.run();
    expect(sim.live().map((t) => t.slot)).toEqual([1, 2, 3, 4, 5]);
    expect(sim.violations).toEqual([]);
  });

  it('scaling to zero stops everything', () => {
    const sim = new Sim(3);
    sim.run();
    sim.svc.replicas = 0;
    sim.run();
    expect(sim.live()).toEqual([]);
  });

  it('replaces the tasks of a lost node on the others', () => {
    const sim = new Sim(4);
    sim.run();
    const onW2 = sim.live().filter((t) => sim.node.get(t.id) === 'w2').map((t) => t.slot);
    expect(onW2.length).toBeGreaterThan(0);
    sim.loseNode('w2');
    expect(sim.readySlots()).toBe(4 - onW2.length);
    const p = sim.plan();
    expect(p.decisions.filter((d) => d.kind === 'create').map((d) => (d as { slot: number }).slot)).toEqual(onW2);
    sim.run();
    expect(sim.readySlots()).toBe(4);
    expect(sim.live().every((t) => sim.node.get(t.id) !== 'w2')).toBe(true);
    expect(sim.violations).toEqual([]);
  });

  it('leaves a task its restart policy restarts in place alone', () => {
    const sim = new Sim(2);
    sim.restartInPlace = true;
    sim.run();
    sim.loseNode('w2');
    sim.loseNode('w3');
    const lost = sim.tasks.filter((t) => t.state === 'lost');
    expect(lost.length).toBeGreaterThan(0);
    expect(sim.plan().decisions).toEqual([]);
  });

  it('waits a back-off before refilling a slot whose task failed', () => {
    const sim = new Sim(1);
    sim.behaviour.set(1, 'crash');
    sim.apply(sim.plan().decisions);
    sim.advance(); // t1 failed at now
    const p = sim.plan();
    expect(p.decisions.filter((d) => d.kind === 'create')).toEqual([]);
    expect(p.wakeAt).toBe(sim.now + 1000);
    sim.now += 1000;
    expect(kinds(sim.plan().decisions)).toEqual(['create']);
  });

  it('stops duplicates in a slot, keeping the ready one', () => {
    const sim = new Sim(2);
    sim.run();
    // A second task of slot 1 (as if two leaders had both filled it).
    sim.tasks.push({ id: 'dup', slot: 1, version: 1, desired: 'running', state: 'pending', willRestart: false, ready: false, failed: false, createdAt: sim.now, createIndex: ++sim.index });
    const p = sim.plan();
    expect(p.decisions).toEqual([expect.objectContaining({ kind: 'stop', taskId: 'dup', slot: 1 })]);
  });

  it('keeps a bounded history of finished tasks per slot', () => {
    const sim = new Sim(1);
    sim.svc.replaceBackoffMs = 0;
    sim.behaviour.set(1, 'crash');
    sim.run({ max: 30 });
    expect(sim.tasks.length).toBeLessThanOrEqual(6);
    expect(sim.log.flat().some((d) => d.kind === 'remove')).toBe(true);
  });
});

describe('rolling update, stop-first', () => {
  it('replaces parallelism slots per batch, never below replicas − parallelism ready', () => {
    const sim = new Sim(4, { parallelism: 2, order: 'stop-first' });
    sim.run();
    const v2 = sim.update('ok');
    const first = sim.plan();
    // Batch 1: two ready tasks stop; nothing is created beside them.
    expect(first.decisions.filter((d) => d.kind === 'stop').length).toBe(2);
    expect(first.decisions.filter((d) => d.kind === 'create').length).toBe(0);
    expect(first.decisions.find((d) => d.kind === 'status')).toMatchObject({ status: { batches: 1, message: expect.stringContaining('batch 1 of 2 (web.1, web.2)') } });
    const ticks = sim.run({ minReady: 2, until: () => sim.svc.status.state === 'completed' });
    expect(ticks).toBeLessThan(200);
    expect(sim.versions()).toEqual([v2, v2, v2, v2]);
    expect(sim.svc.status.batches).toBe(2);
    expect(sim.svc.status.message).toContain('completed');
    expect(sim.violations).toEqual([]);
  });

  it('waits for each batch to be ready and monitored before the next', () => {
    const sim = new Sim(3, { parallelism: 1, monitorMs: 5000, delayMs: 3000 });
    sim.run();
    sim.update('ok');
    const batchStarts: number[] = [];
    sim.run({
      minReady: 2,
      until: () => {
        const last = sim.log[sim.log.length - 1]!;
        if (last.some((d) => d.kind === 'status' && d.status.message.includes('batch'))) batchStarts.push(sim.now);
        return sim.svc.status.state === 'completed';
      },
    });
    expect(batchStarts.length).toBe(3);
    // Stop (1 tick) + fill (1 tick) + start (1 tick), then monitor 5 s and delay 3 s.
    for (let i = 1; i < batchStarts.length; i++) expect(batchStarts[i]! - batchStarts[i - 1]!).toBeGreaterThanOrEqual(5000 + 3000);
    expect(sim.violations).toEqual([]);
  });

  it('holds a batch while its new task is not ready, and says why', () => {
    const sim = new Sim(2, { parallelism: 1 });
    sim.run();
    const v2 = sim.update('slow');
    sim.run({ max: 20, minReady: 1 });
    expect(sim.versions().filter((v) => v === v2).length).toBe(1);
    expect(sim.svc.status.state).toBe('updating');
    expect(sim.svc.status.batches).toBe(1);
    expect(sim.readySlots()).toBe(1);
    expect(sim.violations).toEqual([]);
  });

  it('replaces out-of-date tasks that are not ready first, within the bound', () => {
    const sim = new Sim(4, { parallelism: 1 });
    sim.run();
    sim.update('ok');
    // Slot 3's old task is not ready (e.g. its node is unreachable but not yet declared down).
    const t3 = sim.live().find((t) => t.slot === 3)!;
    t3.ready = false;
    const p = sim.plan();
    expect(p.decisions.filter((d) => d.kind === 'stop')).toEqual([expect.objectContaining({ taskId: t3.id, slot: 3 })]);
  });

  it('does not stop a ready task when that would go below the bound', () => {
    const sim = new Sim(4, { parallelism: 1 });
    sim.run();
    sim.update('ok');
    // Two old tasks not ready, both out of date: the batch takes one of them, not a ready one.
    const live = sim.live();
    live[0]!.ready = false;
    live[1]!.ready = false;
    const stops = sim.plan().decisions.filter((d) => d.kind === 'stop');
    expect(stops.length).toBe(1);
    expect([live[0]!.id, live[1]!.id]).toContain((stops[0] as { taskId: string }).taskId);
    // All four ready but parallelism 1 with 3 ready: no ready task may stop.
    const sim2 = new Sim(4, { parallelism: 1 });
    sim2.run();
    sim2.live()[0]!.ready = false; // not out of date below, so it does not count
    sim2.update('ok');
    sim2.live()[0]!.version = 2; // slot 1 already on the target (not ready)
    sim2.live()[0]!.createIndex = sim2.index + 1; // and the update's own: it holds the batch
    const p2 = sim2.plan();
    expect(p2.decisions.filter((d) => d.kind === 'stop')).toEqual([]);
  });

  it('counts a slot that is down but up to date against the bound', () => {
    const sim = new Sim(4, { parallelism: 2 });
    sim.run();
    const v2 = sim.update('ok');
    // Slot 4 already runs the target (from before this update) but is not ready: 3 of 4 ready,
    // at least 2 must stay ready, so this batch may stop only one ready task.
    const t4 = sim.live().find((t) => t.slot === 4)!;
    t4.version = v2;
    t4.ready = false;
    const stops = sim.plan().decisions.filter((d) => d.kind === 'stop');
    expect(stops.length).toBe(1);
    sim.apply(sim.plan().decisions);
    expect(sim.readySlots()).toBe(2);
  });
});

describe('rolling update, start-first', () => {
  it('starts the new task beside the old one and stops the old one once the new is ready', () => {
    const sim = new Sim(4, { parallelism: 2, order: 'start-first' });
    sim.run();
    const v2 = sim.update('ok');
    const first = sim.plan();
    expect(first.decisions.filter((d) => d.kind === 'stop')).toEqual([]);
    expect(first.decisions.filter((d) => d.kind === 'create')).toEqual([
      expect.objectContaining({ slot: 1, version: v2, exclusive: false }),
      expect.objectContaining({ slot: 2, version: v2, exclusive: false }),
    ]);
    sim.run({ minReady: 4, until: () => sim.svc.status.state === 'completed' });
    expect(sim.versions()).toEqual([v2, v2, v2, v2]);
    expect(sim.violations).toEqual([]);
  });

  it('keeps every old task while the new ones never get ready', () => {
    const sim = new Sim(3, { parallelism: 1, order: 'start-first' });
    sim.run();
    sim.update('slow');
    sim.run({ max: 15, minReady: 3 });
    expect(sim.readySlots()).toBe(3);
    expect(sim.live().filter((t) => t.version === 1).length).toBe(3);
    expect(sim.violations).toEqual([]);
  });
});

describe('failures and rollback', () => {
  it('rolls back by itself when new tasks fail, and only the new tasks are replaced', () => {
    const sim = new Sim(4, { parallelism: 1, failureAction: 'rollback' });
    sim.run();
    const oldIds = new Set(sim.live().map((t) => t.id));
    const v2 = sim.update('crash');
    sim.run({ minReady: 3, until: () => sim.svc.status.state === 'rolled_back' });
    expect(sim.svc.status.state).toBe('rolled_back');
    expect(sim.svc.version).toBe(1);
    expect(sim.svc.previousVersion).toBe(v2);
    expect(sim.versions()).toEqual([1, 1, 1, 1]);
    // Slots 2..4 never left version 1: their tasks are the very same ones.
    const kept = sim.live().filter((t) => oldIds.has(t.id)).map((t) => t.slot);
    expect(kept).toEqual([2, 3, 4]);
    expect(sim.log.flat().some((d) => d.kind === 'rollback' && d.reason.includes('1 of 4 new task failed (web.1'))).toBe(true);
    expect(sim.violations).toEqual([]);
  });

  it('rolls back when the failing task restarts in place too', () => {
    const sim = new Sim(3, { parallelism: 1 });
    sim.restartInPlace = true;
    sim.run();
    sim.update('crash');
    sim.run({ minReady: 2, until: () => sim.svc.status.state === 'rolled_back' });
    expect(sim.svc.status.state).toBe('rolled_back');
    expect(sim.versions()).toEqual([1, 1, 1]);
    expect(sim.violations).toEqual([]);
  });

  it('pauses with failureAction pause, and makes no further batch', () => {
    const sim = new Sim(4, { parallelism: 1, failureAction: 'pause' });
    sim.run();
    const v2 = sim.update('crash');
    sim.run({ max: 30, minReady: 3 });
    expect(sim.svc.status.state).toBe('paused');
    expect(sim.svc.status.message).toMatch(/update paused: 1 of 4 new task failed/);
    expect(sim.svc.version).toBe(v2);
    // Slots 2..4 still run version 1.
    expect(sim.live().filter((t) => t.slot > 1).map((t) => t.version)).toEqual([1, 1, 1]);
    // A rollback by hand from there replaces only slot 1.
    const before = new Map(sim.live().map((t) => [t.slot, t.id]));
    sim.rollback();
    sim.run({ minReady: 3, until: () => sim.svc.status.state === 'rolled_back' });
    expect(sim.versions()).toEqual([1, 1, 1, 1]);
    for (const t of sim.live()) if (t.slot > 1) expect(t.id).toBe(before.get(t.slot));
    expect(sim.violations).toEqual([]);
  });

  it('pauses instead of rolling back when there is no previous template', () => {
    const sim = new Sim(2, { parallelism: 1 });
    sim.behaviour.set(1, 'crash');
    sim.svc.status = sim.status('updating', 1, null);
    sim.run({ max: 10 });
    expect(sim.svc.status.state).toBe('paused');
  });

  it('tolerates failures within maxFailureRatio', () => {
    const sim = new Sim(4, { parallelism: 4, maxFailureRatio: 0.5 });
    sim.run();
    sim.update('ok');
    // One of the four new tasks fails once, then runs.
    let failedOne = false;
    sim.run({
      until: () => {
        const t = sim.tasks.find((x) => x.version === 2 && x.state === 'running');
        if (t !== undefined && !failedOne) {
          failedOne = true;
          t.failed = true;
        }
        return sim.svc.status.state === 'completed' || sim.svc.status.state === 'paused';
      },
    });
    expect(failedOne).toBe(true);
    expect(sim.svc.status.state).toBe('completed');
  });

  it('goes on through failures with failureAction continue, within the availability bound', () => {
    // start-first: the failed slot keeps its old task, the next batch goes on.
    const sim = new Sim(3, { parallelism: 1, failureAction: 'continue', order: 'start-first' });
    sim.run();
    sim.update('crash');
    sim.svc.replaceBackoffMs = 60_000;
    sim.run({ max: 40, minReady: 3 });
    const batches = sim.log.flat().filter((d) => d.kind === 'status' && /batch \d/.test(d.status.message));
    expect(batches.map((d) => (d as { status: UpdateStatus }).status.message.replace(/.*\(/, ''))).toEqual(['web.1)', 'web.2)', 'web.3)']);
    expect(sim.svc.status.state).toBe('updating');
    expect(sim.violations).toEqual([]);
    // stop-first: a failed slot leaves 2 of 3 ready; stopping another would go below 3 − 1.
    const sf = new Sim(3, { parallelism: 1, failureAction: 'continue' });
    sf.run();
    sf.update('crash');
    sf.run({ max: 40, minReady: 2 });
    expect(sf.svc.status.message).toBe('update to version 2 waiting: 2 of 3 ready, at least 2 must stay ready');
    expect(sf.violations).toEqual([]);
  });

  it('pauses a rollback that fails too', () => {
    const sim = new Sim(2, { parallelism: 1 });
    sim.run();
    sim.update('ok');
    sim.run({ until: () => sim.svc.status.state === 'completed' });
    sim.behaviour.set(1, 'crash'); // the old template no longer works either
    sim.rollback();
    sim.run({ max: 30 });
    expect(sim.svc.status.state).toBe('rollback_paused');
  });
});

describe('a new task that crashes soon after it starts (seen running for a moment)', () => {
  // The command exits at once: the task is running (and, with no health check, ready) for a
  // moment shorter than the monitor period, then failed; restarted in place (restart back-off)
  // or replaced. At every step ready slots stay at least replicas − parallelism (stop-first) or
  // replicas (start-first), and no old task of another slot is stopped while the new one has
  // not stayed ready through its monitor period.
  const oldStops = (sim: Sim, oldIds: Map<string, number>, except: number[]): number[] =>
    sim.log
      .flat()
      .flatMap((d) => (d.kind === 'stop' && oldIds.has(d.taskId) && !except.includes(oldIds.get(d.taskId)!) ? [oldIds.get(d.taskId)!] : []));

  for (const restartInPlace of [true, false]) {
    it(`stop-first, parallelism 1: rolls back with 3 of 4 ready at every step (${restartInPlace ? 'restarted in place' : 'replaced'})`, () => {
      const sim = new Sim(4, { parallelism: 1, failureAction: 'rollback' });
      sim.restartInPlace = restartInPlace;
      sim.run();
      const oldIds = new Map(sim.live().map((t) => [t.id, t.slot]));
      const v2 = sim.update('flap');
      sim.run({ minReady: 3, until: () => sim.svc.status.state === 'rolled_back' });
      expect(sim.svc.status.state).toBe('rolled_back');
      expect(sim.versions()).toEqual([1, 1, 1, 1]);
      // The new task did run (ready for a moment) and failed.
      expect(sim.tasks.some((t) => t.version === v2 && t.failed)).toBe(true);
      expect(oldStops(sim, oldIds, [1])).toEqual([]);
      expect(sim.live().filter((t) => oldIds.has(t.id)).map((t) => t.slot)).toEqual([2, 3, 4]);
      expect(sim.violations).toEqual([]);
    });
  }

  for (const policy of [{ failureAction: 'continue' as const }, { failureAction: 'rollback' as const, maxFailureRatio: 0.5 }]) {
    it(`stop-first, a crash-looping new task within the failure budget (${JSON.stringify(policy)}): the update does not march on`, () => {
      const sim = new Sim(4, { parallelism: 1, ...policy });
      sim.restartInPlace = true;
      sim.run();
      const oldIds = new Map(sim.live().map((t) => [t.id, t.slot]));
      sim.update('flap');
      // Running, failed (restart pending), running again …: 40 ticks, about 13 crash loops.
      sim.run({ max: 40, minReady: 3 });
      expect(sim.tasks.filter((t) => t.slot === 1 && t.failed).length).toBeGreaterThan(0);
      expect(oldStops(sim, oldIds, [1])).toEqual([]);
      expect(sim.readySlots()).toBe(3);
      expect(sim.svc.status.state).toBe('updating');
      expect(sim.violations).toEqual([]);
    });
  }

  for (const policy of [{ failureAction: 'rollback' as const }, { failureAction: 'continue' as const }]) {
    it(`start-first (${policy.failureAction}): the old task stays until the new one has stayed ready through its monitor period, 4 of 4 ready at every step`, () => {
      const sim = new Sim(4, { parallelism: 1, order: 'start-first', ...policy });
      sim.restartInPlace = true;
      sim.run();
      const oldIds = new Map(sim.live().map((t) => [t.id, t.slot]));
      sim.update('flap');
      if (policy.failureAction === 'rollback') sim.run({ minReady: 4, until: () => sim.svc.status.state === 'rolled_back' });
      else sim.run({ max: 40, minReady: 4 });
      expect(oldStops(sim, oldIds, [])).toEqual([]);
      // Every old task is still the one it was: nothing was replaced on the way back.
      expect(sim.live().filter((t) => oldIds.has(t.id)).map((t) => t.slot)).toEqual([1, 2, 3, 4]);
      if (policy.failureAction === 'rollback') expect(sim.versions()).toEqual([1, 1, 1, 1]);
      expect(sim.violations).toEqual([]);
    });
  }

  it('start-first: the old task goes once the new one has stayed ready through the monitor period', () => {
    const sim = new Sim(2, { parallelism: 1, order: 'start-first', monitorMs: 2500 });
    sim.run();
    sim.update('ok');
    sim.apply(sim.plan().decisions); // the new task of slot 1, beside the old one
    sim.advance(); // running, ready since now
    const since = sim.now;
    const early = sim.plan();
    expect(early.decisions.filter((d) => d.kind === 'stop')).toEqual([]);
    expect(early.wakeAt).toBe(since + 2500);
    sim.now = since + 2500;
    expect(sim.plan().decisions.filter((d) => d.kind === 'stop')).toEqual([expect.objectContaining({ slot: 1 })]);
  });

  it('stop-first: a rollback while the new task is running for a moment stops only new-template tasks', () => {
    const sim = new Sim(4, { parallelism: 1, failureAction: 'pause' });
    sim.restartInPlace = true;
    sim.run();
    const oldIds = new Map(sim.live().map((t) => [t.id, t.slot]));
    const v2 = sim.update('flap');
    sim.run({ minReady: 3, until: () => sim.tasks.some((t) => t.version === v2 && t.state === 'running') });
    expect(sim.readySlots()).toBe(4); // the new task counts ready for the moment
    sim.rollback();
    const p = sim.plan();
    const stops = p.decisions.flatMap((d) => (d.kind === 'stop' ? [sim.tasks.find((t) => t.id === d.taskId)!] : []));
    expect(stops.map((t) => t.version)).toEqual([v2]);
    sim.apply(p.decisions);
    sim.advance();
    sim.run({ minReady: 3, until: () => sim.svc.status.state === 'rolled_back' });
    expect(sim.versions()).toEqual([1, 1, 1, 1]);
    expect(oldStops(sim, oldIds, [1])).toEqual([]);
    expect(sim.violations).toEqual([]);
  });
});

describe('a leader change in the middle of an update', () => {
  it('a new leader planning from the recorded state resumes without duplicating or losing a slot', () => {
    for (let cut = 1; cut < 14; cut++) {
      const sim = new Sim(4, { parallelism: 1, monitorMs: 1000 });
      sim.run();
      const v2 = sim.update('ok');
      // The old leader runs `cut` ticks; its last plan is lost (never committed).
      sim.run({ max: cut, minReady: 3, until: () => false });
      const lost = sim.plan();
      expect(lost.decisions.length).toBeGreaterThanOrEqual(0);
      // The new leader plans twice from the same state before anything applies: same plan.
      const a = sim.plan();
      const b = planService(JSON.parse(JSON.stringify(sim.svc)), JSON.parse(JSON.stringify(sim.tasks)), sim.now);
      expect(b).toEqual(a);
      // Applying its plan twice (a retried proposal) creates nothing twice: the precondition holds.
      sim.apply(a.decisions);
      sim.apply(a.decisions.filter((d) => d.kind === 'create'));
      const slotsWithTwo = [1, 2, 3, 4].filter((k) => sim.tasks.filter((t) => t.slot === k && isLive(t)).length > 1);
      expect(slotsWithTwo).toEqual([]);
      sim.violations = sim.violations.filter((v) => !v.startsWith('refused create'));
      sim.run({ minReady: 3, until: () => sim.svc.status.state === 'completed' });
      expect(sim.svc.status.state).toBe('completed');
      expect(sim.versions()).toEqual([v2, v2, v2, v2]);
      expect(sim.violations).toEqual([]);
    }
  });

  it('tasks a new leader created with an earlier wall clock still belong to the update', () => {
    const sim = new Sim(2, { parallelism: 1 });
    sim.run();
    sim.update('crash');
    sim.now -= 60_000; // the new leader's clock is a minute behind
    sim.run({ max: 20, until: () => sim.svc.status.state === 'rolled_back' });
    expect(sim.svc.status.state).toBe('rolled_back');
  });
});

describe('plan summary', () => {
  it('counts ready and up-to-date slots and says when to plan again', () => {
    const sim = new Sim(2, { parallelism: 1, monitorMs: 4000 });
    sim.run();
    sim.update('ok');
    sim.run({ until: () => sim.tasks.some((t) => t.version === 2 && t.ready) });
    const p = sim.plan();
    expect(p.ready).toBe(2);
    expect(p.upToDate).toBe(1);
    expect(p.wakeAt).toBeGreaterThan(sim.now);
    expect(p.decisions.filter((d) => d.kind !== 'remove')).toEqual([]);
  });
});
