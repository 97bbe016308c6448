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

function harness() {
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
    parseServiceSpec({ name: 'web', replicas: 1, update: { monitorMs: 2000 }, containers: [{ name: 'main', command: [cmd] }], driver: 'process', resources: { cpu: 100, memory: '64Mi' } });
  /** The worker runs every task of the service that should run, and reports stopped ones stopped. */
  const workerCatchesUp = () => {
    for (const t of state.serviceTasks('web')) {
      if (t.desired === 'running' && t.state === 'pending') {
        apply({ type: 'task.assign', placements: [{ taskId: t.id, nodeId: 'w1' }], term: 1, at: clock.wall() } as SingleCommand);
        apply({ type: 'task.report', reports: [{ taskId: t.id, nodeId: 'w1', state: 'running', at: clock.wall(), attempt: t.attempt }] });
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
});
