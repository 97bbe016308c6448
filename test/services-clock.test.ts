// The services controller measures a rolling update's monitor period on this leader's monotonic
// clock: a wall clock stepped back does not stretch it (found by sim:cluster: an update stuck
// for minutes after a 30 s step back), and one stepped forward does not skip it. The real
// controller and ClusterState, driven by a manual clock and manual timers.
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock, setClock, type Timers } from '../src/clock.js';
import { ClusterState, type SingleCommand } from '../src/manager/state.js';
import { Services } from '../src/manager/controllers/services.js';
import { parseServiceSpec } from '../src/protocol/service.js';
import type { LeaderTerm } from '../src/manager/ports.js';

const silent = { debug() {}, info() {}, warn() {}, error() {} };

function harness(replicas = 1) {
  const clock = new ManualClock();
  const restore = setClock(clock);
  const state = new ClusterState();
  let index = 0;
  const apply = (cmd: Parameters<ClusterState['apply']>[0]) => {
    const r = state.apply(cmd, { index: ++index, term: 1 });
    if (!r.ok) throw new Error(`${cmd.type}: ${r.error.message}`);
    return r.value;
  };
  const due: { at: number; fn: () => void; dead: boolean }[] = [];
  const timers: Timers = {
    every: () => () => {},
    after: (ms, fn) => {
      const t = { at: clock.mono() + ms, fn, dead: false };
      due.push(t);
      return () => (t.dead = true);
    },
    soon: (fn) => void due.push({ at: clock.mono(), fn, dead: false }),
  };
  const lead: LeaderTerm = {
    term: () => 1,
    caughtUp: () => true,
    decide: async (build) => {
      const cmds = build(1);
      if (cmds.length === 0) return undefined;
      return apply(cmds.length === 1 ? cmds[0]! : { type: 'batch', commands: cmds });
    },
  };
  let n = 0;
  const services = new Services({ state, lead, log: silent, timers, newId: () => `id${++n}` });
  /** Runs the timers that are due (and what their proposals trigger) until nothing is left to do now. */
  const settle = async (): Promise<void> => {
    for (let i = 0; i < 200; i++) {
      await new Promise<void>((r) => setImmediate(r));
      const next = due.findIndex((t) => !t.dead && t.at <= clock.mono());
      if (next < 0) return;
      const [t] = due.splice(next, 1);
      t!.fn();
    }
  };
  const spec = (cmd: string) =>
    parseServiceSpec({ name: 'web', replicas, update: { monitorMs: 2000, failureAction: 'rollback' }, containers: [{ name: 'main', command: [cmd] }], driver: 'process', resources: { cpu: 100, memory: '64Mi' } });
  /** How long before it commits the worker stamped a "running" report (a loaded worker or commit path). */
  const lag = { runningMs: 0 };
  /** The worker runs every task of the service that should run, and reports stopped ones stopped. */
  const workerCatchesUp = () => {
    for (const t of state.serviceTasks('web')) {
      if (t.desired === 'running' && t.state === 'pending') {
        apply({ type: 'task.assign', placements: [{ taskId: t.id, nodeId: 'w1' }], term: 1, at: clock.wall() } as SingleCommand);
        apply({ type: 'task.report', reports: [{ taskId: t.id, nodeId: 'w1', state: 'running', at: clock.wall() - lag.runningMs, attempt: t.attempt }] });
      }
      if (t.desired === 'shutdown' && t.state === 'running') {
        apply({ type: 'task.report', reports: [{ taskId: t.id, nodeId: 'w1', state: 'stopped', at: clock.wall(), attempt: t.attempt }] });
      }
    }
  };
  /** Plans, lets the worker act, plans again, until the state stops changing (bounded). */
  const converge = async () => {
    for (let i = 0; i < 10; i++) {
      const before = index;
      services.kick();
      clock.advance(25);
      await settle();
      workerCatchesUp();
      if (index === before) return;
    }
  };
  apply({ type: 'node.register', node: { id: 'w1', addr: 'w1:7000', labels: {}, resources: { cpu: 8000, memory: 16 * 1024 ** 3 }, drivers: ['process'] }, at: clock.wall() });
  apply({ type: 'service.create', spec: spec('v1'), at: clock.wall() });
  services.start();
  services.caughtUp();
  return {
    lag,
    clock,
    state,
    restore,
    services,
    converge,
    apply,
    update: (cmd: string) => apply({ type: 'service.update', name: 'web', spec: spec(cmd), at: clock.wall() }),
    status: () => state.getService('web')!.update.state,
  };
}

let h: ReturnType<typeof harness> | null = null;
afterEach(() => {
  h?.services.stop();
  h?.restore();
  h = null;
});

describe('services controller: the monitor period is monotonic', () => {
  it('a wall clock stepped back during the monitor period does not stretch it', async () => {
    h = harness();
    await h.converge();
    expect(h.state.serviceTasks('web').filter((t) => t.state === 'running')).toHaveLength(1);
    h.update('v2');
    await h.converge();
    expect(h.status()).toBe('updating');
    // The new task is ready; the wall clock is set back a minute; 2.5 s of real time pass.
    h.clock.stepWall(-60_000);
    h.clock.advance(2500);
    await h.converge();
    expect(h.status()).toBe('completed');
  });

  it('a wall clock stepped forward does not skip the monitor period', async () => {
    h = harness();
    await h.converge();
    h.update('v2');
    await h.converge();
    expect(h.status()).toBe('updating');
    h.clock.stepWall(3_600_000);
    h.clock.advance(100);
    await h.converge();
    // Only ~0.4 s of the 2 s monitor period has passed.
    expect(h.status()).toBe('updating');
    h.clock.advance(2000);
    await h.converge();
    expect(h.status()).toBe('completed');
  });

  it('a "running" report that reaches the leader late does not pass the monitor period on arrival: no further batch before the crash report behind it', async () => {
    // Stop-first, parallelism 1, 3 replicas: the new template exits at once. The worker saw it
    // running, but the report committed 2.5 s after it was stamped (longer than the 2 s monitor
    // period); the crash report comes right behind it. The leader must not take that age as
    // time it watched the task stay ready, or it starts the next batch and ready drops to 1.
    h = harness(3);
    await h.converge();
    const old = h.state.serviceTasks('web').filter((t) => t.state === 'running');
    expect(old).toHaveLength(3);
    h.lag.runningMs = 2500;
    h.update('exits-at-once');
    await h.converge();
    const fresh = h.state.serviceTasks('web').filter((t) => t.service!.version === 2);
    expect(fresh.map((t) => t.state)).toEqual(['running']);
    // Only the batch's slot left the old template: the others' old tasks are still desired running.
    expect(old.filter((t) => h!.state.getTask(t.id)!.desired === 'running')).toHaveLength(2);
    expect(h.status()).toBe('updating');
    // The crash report arrives: rolled back, the two old tasks untouched.
    h.clock.advance(300);
    h.apply({ type: 'task.report', reports: [{ taskId: fresh[0]!.id, nodeId: 'w1', state: 'failed', exitCode: 3, at: h.clock.wall(), attempt: fresh[0]!.attempt }] });
    h.lag.runningMs = 0;
    await h.converge();
    h.clock.advance(2500);
    await h.converge();
    expect(h.status()).toBe('rolled_back');
    expect(old.filter((t) => h!.state.getTask(t.id)!.desired === 'running')).toHaveLength(2);
    expect(h.state.serviceTasks('web').filter((t) => t.desired === 'running' && t.state === 'running' && t.service!.version === 1)).toHaveLength(3);
  });

  it('a monitor period is counted from when this leader first saw the task ready', async () => {
    h = harness();
    await h.converge();
    h.lag.runningMs = 1500;
    h.update('v2');
    await h.converge();
    h.clock.advance(1000);
    await h.converge();
    // 1.5 s before the report arrived + ~1.3 s since: not 2 s of this leader's watching yet.
    expect(h.status()).toBe('updating');
    h.clock.advance(1000);
    await h.converge();
    expect(h.status()).toBe('completed');
  });
});
