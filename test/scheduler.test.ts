// The scheduler: filters (status, availability, driver, constraints, resources, host ports),
// scores (spread, binpack), deterministic ties, exact reasons, and scale.
import { describe, expect, it } from 'vitest';
import { schedule, type SchedulableNode, type SchedulableTask, type ScheduleResult, type UsageInput } from '../src/manager/scheduler.js';
import { parseTaskSpec } from '../src/protocol/spec.js';
import { ClusterState, type AssignResult } from '../src/manager/state.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

function node(id: string, extra: Partial<SchedulableNode> = {}): SchedulableNode {
  return {
    id,
    labels: {},
    resources: { cpu: 4000, memory: 8 * GiB },
    drivers: ['docker', 'process'],
    availability: 'active',
    status: 'ready',
    ...extra,
  };
}

function task(id: string, extra: Record<string, unknown> = {}): SchedulableTask {
  return { id, spec: parseTaskSpec({ name: 'app', containers: [{ image: 'busybox' }], ...extra }) };
}

function tasks(n: number, extra: Record<string, unknown> = {}, prefix = 't'): SchedulableTask[] {
  return Array.from({ length: n }, (_, i) => task(`${prefix}${i}`, extra));
}

const none = new Map<string, UsageInput>();

/** Placements grouped as nodeId -> task ids. */
function byNode(res: ScheduleResult): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const p of res.placements) (out[p.nodeId] ??= []).push(p.taskId);
  return out;
}

describe('filters and reasons', () => {
  it('places only on ready, active nodes', () => {
    const nodes = [node('a', { status: 'down' }), node('b', { status: 'unknown' }), node('c', { availability: 'pause' }), node('d', { availability: 'drain' }), node('e')];
    const res = schedule(tasks(3), nodes, none, { strategy: 'spread' });
    expect(res.unplaced).toEqual([]);
    expect(byNode(res)).toEqual({ e: ['t0', 't1', 't2'] });
  });

  it('explains when no node is ready or active', () => {
    expect(schedule(tasks(1), [], none, { strategy: 'spread' }).unplaced).toEqual([{ taskId: 't0', reason: 'no nodes registered' }]);
    expect(schedule(tasks(1), [node('a', { status: 'down' }), node('b', { status: 'down' }), node('c', { status: 'unknown' })], none, { strategy: 'spread' }).unplaced).toEqual([
      { taskId: 't0', reason: 'no ready node (3 nodes: 2 down, 1 unknown)' },
    ]);
    expect(schedule(tasks(1), [node('a', { availability: 'pause' }), node('b', { availability: 'drain' }), node('c', { status: 'down' })], none, { strategy: 'spread' }).unplaced).toEqual([
      { taskId: 't0', reason: 'all nodes paused or draining (2 ready nodes checked)' },
    ]);
  });

  it('requires the task’s driver', () => {
    const nodes = [node('a', { drivers: ['process'] }), node('b', { drivers: ['process'] })];
    expect(schedule(tasks(1), nodes, none, { strategy: 'spread' }).unplaced).toEqual([{ taskId: 't0', reason: 'no ready node with driver docker (2 nodes checked)' }]);
    const proc = task('p', { driver: 'process', containers: [{ command: ['true'] }] });
    expect(schedule([proc], nodes, none, { strategy: 'spread' }).placements).toEqual([{ taskId: 'p', nodeId: 'a' }]);
  });

  it('applies label and node.id constraints', () => {
    const nodes = [node('w1', { labels: { zone: 'us' } }), node('w2', { labels: { zone: 'eu', disk: 'ssd' } }), node('w3', { labels: { zone: 'eu' } })];
    const plan = (constraints: string[]) => schedule([task('t', { constraints })], nodes, none, { strategy: 'spread' });
    expect(plan(['zone==eu']).placements).toEqual([{ taskId: 't', nodeId: 'w2' }]);
    expect(plan(['zone==eu', 'disk!=ssd']).placements).toEqual([{ taskId: 't', nodeId: 'w3' }]);
    expect(plan(['node.id==w3']).placements).toEqual([{ taskId: 't', nodeId: 'w3' }]);
    expect(plan(['node.id!=w1', 'node.id!=w2']).placements).toEqual([{ taskId: 't', nodeId: 'w3' }]);
    expect(plan(['zone==asia']).unplaced).toEqual([{ taskId: 't', reason: 'no node satisfies constraint zone==asia (3 nodes checked)' }]);
    expect(plan(['zone==us', 'disk==ssd']).unplaced).toEqual([
      { taskId: 't', reason: 'no node satisfies all of the constraints zone==us, disk==ssd (3 nodes checked)' },
    ]);
  });

  it('explains missing memory or cpu with the largest free amount', () => {
    const nodes = [node('w1', { resources: { cpu: 4000, memory: 1 * GiB } }), node('w2', { resources: { cpu: 500, memory: 4 * GiB } })];
    const usage = new Map<string, UsageInput>([['w2', { cpu: 0, memory: 2 * GiB, tasks: 3 }]]);
    expect(schedule([task('big', { resources: { memory: '8Gi' } })], nodes, usage, { strategy: 'spread' }).unplaced).toEqual([
      { taskId: 'big', reason: 'insufficient memory: needs 8 GiB, largest free 2 GiB on w2' },
    ]);
    expect(schedule([task('hot', { resources: { cpu: '8' } })], nodes, usage, { strategy: 'spread' }).unplaced).toEqual([
      { taskId: 'hot', reason: 'insufficient cpu: needs 8000m, largest free 4000m on w1' },
    ]);
    expect(schedule([task('both', { resources: { cpu: '8', memory: '8Gi' } })], nodes, usage, { strategy: 'spread' }).unplaced).toEqual([
      { taskId: 'both', reason: 'insufficient cpu and memory: needs 8000m and 8 GiB, largest free 4000m on w1 and 2 GiB on w2' },
    ]);
    // Enough cpu on w1 and enough memory on w2, but not both on one node.
    expect(schedule([task('split', { resources: { cpu: '1', memory: '2Gi' } })], nodes, usage, { strategy: 'spread' }).unplaced).toEqual([
      {
        taskId: 'split',
        reason: 'insufficient resources: no node has 1000m cpu and 2 GiB memory free together (largest free 4000m on w1, 2 GiB on w2; 2 nodes checked)',
      },
    ]);
  });

  it('counts placements made earlier in the same round', () => {
    const nodes = [node('w1', { resources: { cpu: 1000, memory: 1 * GiB } }), node('w2', { resources: { cpu: 1000, memory: 1 * GiB } })];
    const res = schedule(tasks(5, { resources: { cpu: 100, memory: '512Mi' } }), nodes, none, { strategy: 'spread' });
    expect(res.placements).toHaveLength(4);
    expect(byNode(res)).toEqual({ w1: ['t0', 't2'], w2: ['t1', 't3'] });
    expect(res.unplaced).toEqual([{ taskId: 't4', reason: 'insufficient memory: needs 512 MiB, largest free 0 B on w1' }]);
  });

  it('keeps host ports apart, within the round and against running tasks', () => {
    const nodes = [node('w1'), node('w2'), node('w3')];
    const usage = new Map<string, UsageInput>([['w3', { cpu: 100, memory: MiB, tasks: 1, hostPorts: ['80/tcp'] }]]);
    const res = schedule(tasks(3, { containers: [{ image: 'nginx', ports: ['80:80'] }] }), nodes, usage, { strategy: 'binpack' });
    expect(byNode(res)).toEqual({ w1: ['t0'], w2: ['t1'] });
    expect(res.unplaced).toEqual([{ taskId: 't2', reason: 'host port 80/tcp already in use on all 3 candidate nodes' }]);
    // Another port, or the same port over udp, still fits.
    const other = schedule([task('dns', { containers: [{ image: 'dns', ports: ['80:53/udp'] }] })], nodes, usage, { strategy: 'spread' });
    expect(other.placements).toHaveLength(1);
  });

  it('places each task id once, even if listed twice', () => {
    const t = task('dup');
    const res = schedule([t, t, task('other')], [node('w1'), node('w2')], none, { strategy: 'spread' });
    expect(res.placements.map((p) => p.taskId)).toEqual(['dup', 'other']);
    expect(res.unplaced).toEqual([]);
  });
});

describe('scoring', () => {
  it('spread: fewest tasks first, then least reserved, ties by node id', () => {
    const nodes = [node('c'), node('a'), node('b')];
    const usage = new Map<string, UsageInput>([
      ['a', { cpu: 0, memory: 0, tasks: 2 }],
      ['b', { cpu: 2000, memory: 0, tasks: 1 }],
      ['c', { cpu: 0, memory: 0, tasks: 1 }],
    ]);
    const res = schedule(tasks(6), nodes, usage, { strategy: 'spread' });
    expect(res.placements.map((p) => p.nodeId)).toEqual(['c', 'b', 'a', 'c', 'b', 'a']);
  });

  it('binpack: fills the most reserved node that still fits', () => {
    const nodes = [node('w1', { resources: { cpu: 1000, memory: GiB } }), node('w2', { resources: { cpu: 1000, memory: GiB } }), node('w3', { resources: { cpu: 1000, memory: GiB } })];
    const usage = new Map<string, UsageInput>([['w2', { cpu: 500, memory: 0, tasks: 1 }]]);
    const res = schedule(tasks(9, { resources: { cpu: 250, memory: '1Mi' } }), nodes, usage, { strategy: 'binpack' });
    expect(byNode(res)).toEqual({ w2: ['t0', 't1'], w1: ['t2', 't3', 't4', 't5'], w3: ['t6', 't7', 't8'] });
  });

  it('is deterministic whatever the input order', () => {
    const nodes = Array.from({ length: 20 }, (_, i) => node(`n${String(i).padStart(2, '0')}`, { labels: { zone: i % 2 ? 'eu' : 'us' } }));
    const work = [...tasks(30), ...tasks(10, { constraints: ['zone==eu'] }, 'eu'), ...tasks(5, { resources: { memory: '3Gi' } }, 'big')];
    for (const strategy of ['spread', 'binpack'] as const) {
      const a = schedule(work, nodes, none, { strategy });
      const b = schedule(work, [...nodes].reverse(), none, { strategy });
      expect(b).toEqual(a);
      expect(a.unplaced).toEqual([]);
    }
  });
});

describe('scale', () => {
  /** Every task placed exactly once, no node over capacity, every placement legal. */
  function checkPlan(res: ScheduleResult, work: SchedulableTask[], nodes: SchedulableNode[]): void {
    const taskById = new Map(work.map((t) => [t.id, t]));
    const nodeById = new Map(nodes.map((n) => [n.id, n]));
    const seen = new Set<string>();
    const used = new Map<string, { cpu: number; memory: number }>();
    for (const p of res.placements) {
      expect(seen.has(p.taskId)).toBe(false);
      seen.add(p.taskId);
      const t = taskById.get(p.taskId)!;
      const n = nodeById.get(p.nodeId)!;
      expect(n.status).toBe('ready');
      expect(n.availability).toBe('active');
      for (const c of t.spec.constraints) {
        const [k, v] = c.split('==');
        expect(n.labels[k!]).toBe(v);
      }
      const u = used.get(n.id) ?? { cpu: 0, memory: 0 };
      u.cpu += t.spec.resources.cpu;
      u.memory += t.spec.resources.memory;
      used.set(n.id, u);
    }
    for (const u of res.unplaced) expect(seen.has(u.taskId)).toBe(false);
    expect(seen.size + res.unplaced.length).toBe(work.length);
    for (const [id, u] of used) {
      const n = nodeById.get(id)!;
      expect(u.cpu).toBeLessThanOrEqual(n.resources.cpu);
      expect(u.memory).toBeLessThanOrEqual(n.resources.memory);
    }
  }

  const nodes = Array.from({ length: 1000 }, (_, i) =>
    node(`w${String(i).padStart(4, '0')}`, {
      labels: { zone: ['us', 'eu', 'ap'][i % 3]!, disk: i % 4 === 0 ? 'ssd' : 'hdd' },
      resources: { cpu: 16_000 + (i % 5) * 1000, memory: (24 + (i % 7)) * GiB },
      status: i % 50 === 49 ? 'down' : 'ready',
      availability: i % 100 === 98 ? 'drain' : 'active',
    }),
  );
  const shapes = [
    {},
    { resources: { cpu: 250, memory: '256Mi' } },
    { resources: { cpu: 500, memory: '512Mi' }, constraints: ['zone==eu'] },
    { resources: { cpu: 100, memory: '128Mi' }, constraints: ['disk==ssd'] },
    { resources: { cpu: 1000, memory: '1Gi' }, constraints: ['zone==us', 'disk==hdd'] },
  ];
  // Parse each shape once and share the spec (as real pending tasks share nothing, but it keeps the test fast).
  const specs = shapes.map((s) => task('x', s).spec);
  const work: SchedulableTask[] = Array.from({ length: 10_000 }, (_, i) => ({ id: `t${String(i).padStart(5, '0')}`, spec: specs[i % specs.length]! }));

  for (const strategy of ['spread', 'binpack'] as const) {
    it(`places 10,000 tasks on 1,000 nodes (${strategy})`, () => {
      const res = schedule(work, nodes, none, { strategy });
      checkPlan(res, work, nodes);
      expect(res.placements).toHaveLength(10_000);
    });
  }

  it('reports the overflow when the cluster is too small, still placing exactly once', () => {
    const small = nodes.slice(0, 20);
    const res = schedule(work, small, none, { strategy: 'spread' });
    checkPlan(res, work, small);
    expect(res.unplaced.length).toBeGreaterThan(0);
    expect(res.unplaced[0]!.reason).toMatch(/^insufficient (cpu|memory|resources)/);
  });

  it('spread evens out identical tasks across identical nodes', () => {
    const same = Array.from({ length: 1000 }, (_, i) => node(`n${String(i).padStart(4, '0')}`));
    const res = schedule(tasks(10_000, { resources: { cpu: 10, memory: '1Mi' } }), same, none, { strategy: 'spread' });
    const counts = Object.values(byNode(res)).map((ids) => ids.length);
    expect(counts).toHaveLength(1000);
    expect(new Set(counts)).toEqual(new Set([10]));
  });

  it('end to end through the state machine: every placement applies, none is skipped', () => {
    const state = new ClusterState();
    let index = 0;
    const apply = (cmd: Parameters<ClusterState['apply']>[0]) => state.apply(cmd, { index: ++index, term: 1 });
    for (const n of nodes.slice(0, 200)) {
      apply({ type: 'node.register', node: { id: n.id, labels: n.labels, resources: n.resources, drivers: n.drivers }, at: 1 });
      if (n.availability !== 'active') apply({ type: 'node.setAvailability', id: n.id, availability: n.availability });
      if (n.status === 'down') apply({ type: 'node.down', id: n.id, term: 1, at: 2 });
    }
    for (const t of work.slice(0, 3000)) apply({ type: 'task.create', id: t.id, spec: t.spec, at: 3 });
    const plan = schedule(state.pendingTasks(), state.listNodes(), state.usage(), { strategy: 'binpack' });
    const res = apply({ type: 'task.assign', placements: plan.placements, term: 1, at: 4 });
    expect(res.ok).toBe(true);
    const value = (res as { value: AssignResult }).value;
    expect(value.skipped).toEqual([]);
    expect(value.assigned).toHaveLength(plan.placements.length);
    expect(state.pendingTasks().map((t) => t.id).sort()).toEqual(plan.unplaced.map((u) => u.taskId).sort());
    for (const n of state.listNodes()) {
      const u = state.nodeUsage(n.id);
      expect(u.cpu).toBeLessThanOrEqual(n.resources.cpu);
      expect(u.memory).toBeLessThanOrEqual(n.resources.memory);
    }
    // A second round finds nothing new to place and never re-places a task.
    const again = schedule(state.pendingTasks(), state.listNodes(), state.usage(), { strategy: 'binpack' });
    expect(again.placements.filter((p) => state.getTask(p.taskId)!.state !== 'pending')).toEqual([]);
  });
});
