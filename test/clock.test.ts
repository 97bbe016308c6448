// Durations are measured on the monotonic clock: stepping a manager's wall clock (forward or
// back) changes nothing about failure detection. The real-process test runs managers with a
// preload (chaos/clock-shift.ts) that shifts only Date.now / new Date by an offset the test
// rewrites while they run.
import { afterAll, describe, expect, it } from 'vitest';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ManualClock, StallDetector, monoNow, setClock, wallNow } from '../src/clock.js';
import { clockShiftPreload, writeClockShift } from '../chaos/clock-shift.js';
import { TestCluster, eventually, freePorts, sleep, killTaskProcesses } from './helpers/cluster.js';
import type { FlotillaClient } from '../src/client/client.js';

describe('clock module', () => {
  it('a replaced clock drives monoNow and wallNow; a wall step leaves the monotonic clock alone', () => {
    const c = new ManualClock(1000, 5000);
    const restore = setClock(c);
    try {
      expect([monoNow(), wallNow()]).toEqual([1000, 5000]);
      c.stepWall(3_600_000);
      expect([monoNow(), wallNow()]).toEqual([1000, 3_605_000]);
      c.advance(250);
      expect([monoNow(), wallNow()]).toEqual([1250, 3_605_250]);
    } finally {
      restore();
    }
    expect(Math.abs(wallNow() - Date.now())).toBeLessThan(1000);
  });

  it('the stall detector reports only the time beyond the period and its slack', () => {
    let t = 0;
    const d = new StallDetector(250, 500, () => t);
    t = 250;
    expect(d.check()).toBe(0);
    t = 250 + 700; // late, within slack
    expect(d.check()).toBe(0);
    t += 7250; // the loop could not run for 7 s
    expect(d.check()).toBe(7000);
    t += 250;
    expect(d.check()).toBe(0);
  });
});

interface TaskView {
  id: string;
  state: string;
  desired: string;
  node: string | null;
  attempt: number;
  history: { state: string; reason: string }[];
}
interface NodeView {
  id: string;
  status: string;
  statusReason?: string;
}

let cluster: TestCluster | null = null;
let pidDir = '';
afterAll(async () => {
  if (!cluster) return;
  killTaskProcesses(pidDir);
  await cluster.stop();
});

describe('a stepped wall clock on the leader (real processes)', () => {
  it('+1 h then -1 h: no node declared down and every task keeps its attempt; a worker killed across a backward step is still detected', async () => {
    const c = new TestCluster('flotilla-clock-');
    cluster = c;
    pidDir = join(c.dir, 'pids');
    mkdirSync(pidDir);
    const ports = await freePorts(3);
    const members = ports.map((p, i) => `m${i + 1}=127.0.0.1:${p}`).join(',');
    const shift = new Map<string, string>();
    const saved = { opts: process.env.NODE_OPTIONS, file: process.env.FLOTILLA_CLOCK_SHIFT_FILE };
    try {
      for (let i = 0; i < 3; i++) {
        const id = `m${i + 1}`;
        const file = join(c.dir, `${id}.clock`);
        writeClockShift(file, 0);
        shift.set(id, file);
        // spawn() copies the environment: each manager gets its own offset file.
        process.env.NODE_OPTIONS = `${saved.opts ?? ''} --import ${clockShiftPreload()}`.trim();
        process.env.FLOTILLA_CLOCK_SHIFT_FILE = file;
        c.startManager(id, `127.0.0.1:${ports[i]}`, ['--bootstrap', members, '--node-grace', '1500', '--worker-heartbeat', '300', '--failover-grace', '8000']);
      }
    } finally {
      if (saved.opts === undefined) delete process.env.NODE_OPTIONS;
      else process.env.NODE_OPTIONS = saved.opts;
      if (saved.file === undefined) delete process.env.FLOTILLA_CLOCK_SHIFT_FILE;
      else process.env.FLOTILLA_CLOCK_SHIFT_FILE = saved.file;
    }
    await c.waitForLeader();
    const client: FlotillaClient = c.client(undefined, 20_000);
    for (const w of ['w1', 'w2']) c.startWorker(w, ['--cpu', '4000', '--memory', '4g']);
    const nodes = async () => (await client.get<{ nodes: NodeView[] }>('/v1/nodes')).nodes;
    const tasks = async () => (await client.get<{ tasks: TaskView[] }>('/v1/tasks')).tasks;
    await eventually(async () => (await nodes()).filter((n) => n.status === 'ready').length === 2, 20_000, '2 workers ready');
    const spec = (i: number) => ({
      name: `tick-${i}`,
      driver: 'process',
      containers: [{ command: ['/bin/sh', '-c', `touch "${pidDir}/$FLOTILLA_TASK_ID.$$"; exec sleep 600`] }],
      resources: { cpu: 10, memory: '8m' },
    });
    await client.post('/v1/tasks', Array.from({ length: 8 }, (_, i) => spec(i)));
    const before = await eventually(async () => {
      const ts = await tasks();
      return ts.length === 8 && ts.every((t) => t.state === 'running') && new Set(ts.map((t) => t.node)).size === 2 ? ts : null;
    }, 30_000, '8 tasks running on both workers');
    const attempts = new Map(before.map((t) => [t.id, t.attempt]));

    const unchanged = async (what: string) => {
      const ns = await nodes();
      expect(ns.map((n) => `${n.id}:${n.status}`).sort(), what).toEqual(['w1:ready', 'w2:ready']);
      const ts = await tasks();
      for (const t of ts) {
        expect(`${t.id} ${t.state} attempt ${t.attempt}`, what).toBe(`${t.id} running attempt ${attempts.get(t.id)}`);
        expect(t.history.filter((h) => h.state === 'lost'), what).toEqual([]);
      }
    };

    // Forward one hour: the leader's heartbeat ages must not jump with it.
    const leader = await c.waitForLeader();
    writeClockShift(shift.get(leader)!, 3_600_000);
    await sleep(4000); // > node grace (1.5 s) many monitor rounds over
    await unchanged('after +1 h');
    // And back again (−1 h).
    writeClockShift(shift.get(leader)!, 0);
    await sleep(4000);
    await unchanged('after -1 h');
    expect(await c.waitForLeader()).toBe(leader);

    // Detection still works across a backward step: w2 dies the moment the clock goes back an
    // hour; its last heartbeat must not look an hour in the future.
    await c.killAndWait('w2');
    writeClockShift(shift.get(leader)!, -3_600_000);
    const down = await eventually(async () => (await nodes()).find((n) => n.id === 'w2' && n.status === 'down'), 20_000, 'w2 declared down after a backward step');
    expect(down.statusReason ?? '').toMatch(/no heartbeat for \d+ s/);
    // w1 was never blamed and its tasks kept their attempts.
    const ns = await nodes();
    expect(ns.find((n) => n.id === 'w1')!.status).toBe('ready');
    for (const t of (await tasks()).filter((x) => before.find((b) => b.id === x.id)!.node === 'w1')) {
      expect(t.attempt).toBe(attempts.get(t.id));
      expect(t.state).toBe('running');
    }
  }, 120_000);
});

describe('a stepped wall clock on a worker (real processes)', () => {
  let wc: TestCluster | null = null;
  afterAll(async () => {
    await wc?.stop();
  });

  it('+1 h then -1 h: the worker keeps its tasks; a stop then ends after its grace, not an hour later', async () => {
    const c = new TestCluster('flotilla-wclock-');
    wc = c;
    const [port] = await freePorts(1);
    c.startManager('m1', `127.0.0.1:${port}`, ['--bootstrap', `m1=127.0.0.1:${port}`, '--node-grace', '1500', '--worker-heartbeat', '300']);
    await c.waitForLeader();
    const file = join(c.dir, 'w1.clock');
    writeClockShift(file, 0);
    const saved = { opts: process.env.NODE_OPTIONS, file: process.env.FLOTILLA_CLOCK_SHIFT_FILE };
    try {
      process.env.NODE_OPTIONS = `${saved.opts ?? ''} --import ${clockShiftPreload()}`.trim();
      process.env.FLOTILLA_CLOCK_SHIFT_FILE = file;
      c.startWorker('w1', ['--stop-grace', '6000']);
    } finally {
      if (saved.opts === undefined) delete process.env.NODE_OPTIONS;
      else process.env.NODE_OPTIONS = saved.opts;
      if (saved.file === undefined) delete process.env.FLOTILLA_CLOCK_SHIFT_FILE;
      else process.env.FLOTILLA_CLOCK_SHIFT_FILE = saved.file;
    }
    const client = c.client(undefined, 20_000);
    await eventually(async () => (await client.get<{ nodes: NodeView[] }>('/v1/nodes')).nodes.some((n) => n.id === 'w1' && n.status === 'ready'), 20_000, 'w1 ready');
    const stubborn = { name: 'stubborn', driver: 'process', containers: [{ command: ['/bin/sh', '-c', "trap 'echo got TERM' TERM; echo ready; while :; do sleep 0.1; done"] }], resources: { cpu: 10, memory: '8m' } };
    const plain = { name: 'plain', driver: 'process', containers: [{ command: ['/bin/sh', '-c', 'exec sleep 600'] }], resources: { cpu: 10, memory: '8m' } };
    await client.post('/v1/tasks', [stubborn, plain]);
    const tasks = async () => (await client.get<{ tasks: TaskView[] }>('/v1/tasks')).tasks;
    const before = await eventually(async () => {
      const ts = await tasks();
      return ts.length === 2 && ts.every((t) => t.state === 'running') ? ts : null;
    }, 30_000, 'both tasks running');
    const logs = (id: string) => client.get<string | Buffer>(`/v1/tasks/${id}/logs`).then((v) => String(v)).catch(() => '');
    const sid = before.find((t) => t.id.startsWith('stubborn'))!.id;
    await eventually(async () => (await logs(sid)).includes('ready'), 20_000, 'stubborn ready');

    for (const offset of [3_600_000, -3_600_000, 0]) {
      writeClockShift(file, offset);
      await sleep(2500); // several heartbeats and driver polls
      const ts = await tasks();
      for (const t of ts) expect(`${t.id} ${t.state} ${t.attempt}`, `offset ${offset}`).toBe(`${t.id} running ${before.find((b) => b.id === t.id)!.attempt}`);
      const ns = (await client.get<{ nodes: NodeView[] }>('/v1/nodes')).nodes;
      expect(ns.find((n) => n.id === 'w1')?.status, `offset ${offset}`).toBe('ready');
    }

    // A stop: once the program got its SIGTERM (the kill deadline is set), the clock goes back an hour.
    await client.delete(`/v1/tasks/${sid}`);
    await eventually(async () => (await logs(sid)).includes('got TERM'), 20_000, 'SIGTERM reached the program');
    writeClockShift(file, -3_600_000);
    const one = () => client.get<TaskView>(`/v1/tasks/${sid}`);
    const stopped = await eventually(async () => {
      const t = await one();
      return t.state === 'stopped' ? t : null;
    }, 30_000, 'the stop ends after its grace (6 s), not an hour later').catch(async (e: Error) => {
      throw new Error(`${e.message}; the task: ${JSON.stringify(await one())}`);
    });
    expect(stopped.state).toBe('stopped');
  }, 150_000);
});
