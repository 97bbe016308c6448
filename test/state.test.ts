// ClusterState: the deterministic replicated state machine. Commands carry their own time,
// ids and (for leader decisions) term; a failed command changes nothing; snapshots of two
// replicas that applied the same log are byte-identical.
import { describe, expect, it } from 'vitest';
import { LocalProposer } from '../src/manager/proposer.js';
import { schedule } from '../src/manager/scheduler.js';
import {
  ClusterState,
  decodeCommand,
  encodeCommand,
  restartBackoff,
  type ApplyResult,
  type ClusterEvent,
  type Command,
  type NodeRegistration,
  type Task,
} from '../src/manager/state.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/** A replica fed by a pretend log: every apply gets the next index. */
class Replica {
  readonly state: ClusterState;
  index = 0;
  term = 1;
  readonly log: { cmd: Command; index: number; term: number }[] = [];

  constructor(state = new ClusterState()) {
    this.state = state;
    this.index = state.appliedIndex;
  }

  apply(cmd: Command, term = this.term): ApplyResult {
    this.index++;
    this.log.push({ cmd, index: this.index, term });
    return this.state.apply(cmd, { index: this.index, term });
  }

  ok<T = unknown>(cmd: Command, term = this.term): T {
    const r = this.apply(cmd, term);
    if (!r.ok) throw new Error(`expected ok, got ${JSON.stringify(r.error)}`);
    return r.value as T;
  }
}

const text = (b: Uint8Array) => new TextDecoder().decode(b);

/** The snapshot without `appliedIndex` (which every applied entry moves, even a failed one). */
function content(state: ClusterState): unknown {
  const { appliedIndex: _ignored, ...rest } = JSON.parse(text(state.snapshot())) as Record<string, unknown>;
  return rest;
}

function node(id: string, extra: Partial<NodeRegistration> = {}): NodeRegistration {
  return { id, resources: { cpu: 4000, memory: 8 * GiB }, drivers: ['docker', 'process'], labels: {}, ...extra };
}

function spec(name: string, extra: Record<string, unknown> = {}): any {
  return { name, containers: [{ image: 'busybox' }], ...extra };
}

/** A cluster with nodes w1, w2 and one task t1 running on w1. */
function runningCluster(taskExtra: Record<string, unknown> = {}): Replica {
  const r = new Replica();
  r.ok({ type: 'node.register', node: node('w1'), at: 1000 });
  r.ok({ type: 'node.register', node: node('w2'), at: 1000 });
  r.ok({ type: 'task.create', id: 't1', spec: spec('web', taskExtra), at: 1100 });
  r.ok({ type: 'task.assign', placements: [{ taskId: 't1', nodeId: 'w1' }], term: 1, at: 1200 });
  r.ok({ type: 'task.report', reports: [{ taskId: 't1', nodeId: 'w1', state: 'running', at: 1300 }] });
  return r;
}

/** Expect `cmd` to fail with `code` and leave the state exactly as it was. */
function expectRejected(r: Replica, cmd: Command, code: string, term?: number): ApplyResult & { ok: false } {
  const before = content(r.state);
  const seq = r.state.lastEventSeq;
  const res = r.apply(cmd, term);
  expect(res.ok).toBe(false);
  if (res.ok) throw new Error('unreachable');
  expect(res.error.code).toBe(code);
  expect(content(r.state)).toEqual(before);
  expect(r.state.lastEventSeq).toBe(seq);
  return res;
}

describe('tasks: lifecycle', () => {
  it('creates, assigns, runs and completes a task', () => {
    const r = runningCluster();
    const t = r.state.getTask('t1')!;
    expect(t).toMatchObject({ id: 't1', name: 'web', state: 'running', desired: 'running', node: 'w1', attempt: 1, restarts: 0 });
    expect(t.history.map((h) => h.state)).toEqual(['pending', 'assigned', 'running']);
    expect(t.createdAt).toBe(1100);
    expect(t.updatedAt).toBe(1300);
    expect(t.version).toBe(5);
    expect(r.state.nodeUsage('w1')).toEqual({ cpu: 100, memory: 64 * MiB, tasks: 1, hostPorts: [] });
    expect(r.state.tasksOnNode('w1').map((x) => x.id)).toEqual(['t1']);

    r.ok({ type: 'task.report', reports: [{ taskId: 't1', nodeId: 'w1', state: 'succeeded', exitCode: 0, at: 1400 }] });
    const done = r.state.getTask('t1')!;
    expect(done).toMatchObject({ state: 'succeeded', exitCode: 0, reason: 'exited with code 0' });
    expect(done.nextRestartAt).toBeUndefined(); // on-failure does not restart a success
    expect(r.state.nodeUsage('w1').tasks).toBe(0);
    expect(r.state.tasksOnNode('w1')).toEqual([]);
  });

  it('validates the spec on create and rejects duplicates, changing nothing', () => {
    const r = runningCluster();
    const bad = expectRejected(r, { type: 'task.create', id: 't2', spec: { name: 'x', containers: [{ image: '' }] } as any, at: 1 }, 'bad_request');
    expect(bad.error.message).toBe("Cannot create task as 'containers[0].image' must be a non-empty string");
    expect(bad.error.details).toEqual([{ path: 'containers[0].image', message: 'must be a non-empty string' }]);
    const dup = expectRejected(r, { type: 'task.create', id: 't1', spec: spec('again'), at: 1 }, 'conflict');
    expect(dup.error.message).toBe("Cannot create task 't1' as a task with that id already exists");
    expectRejected(r, { type: 'task.stop', id: 'nope', at: 1 }, 'not_found');
    expectRejected(r, { type: 'task.remove', id: 't1', at: 1 }, 'conflict');
    expectRejected(r, { type: 'node.heartbeat', id: 'ghost', at: 1 }, 'not_found');
    expectRejected(r, { type: 'node.setAvailability', id: 'ghost', availability: 'pause' }, 'not_found');
  });

  it('rejects malformed commands with precise messages', () => {
    const r = runningCluster();
    const unknown = expectRejected(r, { type: 'task.explode' } as any, 'bad_request');
    expect(unknown.error.message).toMatch(/^Cannot apply command as 'type' must be one of 'kv.put', 'kv.del', /);
    const missing = expectRejected(r, { type: 'task.assign', placements: [{ taskId: 't1' }], term: 1, at: 1 } as any, 'bad_request');
    expect(missing.error.message).toBe("Cannot apply task.assign as 'placements[0].nodeId' is required");
    const extra = expectRejected(r, { type: 'node.heartbeat', id: 'w1', at: 1, load: 0.5 } as any, 'bad_request');
    expect(extra.error.details).toEqual([{ path: 'load', message: 'is not a known field' }]);
    expectRejected(r, null as any, 'bad_request');
    expect(expectRejected(r, { type: 'task.report', reports: 'all good' } as any, 'bad_request').error.message).toBe(
      "Cannot apply task.report as 'reports' must be an array",
    );
  });

  it('refuses an index that was already applied', () => {
    const r = runningCluster();
    const before = r.state.snapshot();
    const res = r.state.apply({ type: 'task.stop', id: 't1', at: 1 }, { index: 3, term: 1 });
    expect(res).toMatchObject({ ok: false, error: { code: 'conflict' } });
    expect(r.state.snapshot()).toEqual(before);
  });

  it('stops a pending task at once and a placed one through its worker', () => {
    const r = runningCluster();
    r.ok({ type: 'task.create', id: 't2', spec: spec('idle'), at: 2000 });
    const stopped = r.ok<Task>({ type: 'task.stop', id: 't2', at: 2100 });
    expect(stopped).toMatchObject({ state: 'stopped', desired: 'shutdown', reason: 'stop requested' });
    expect(r.state.pendingTasks()).toEqual([]);

    const stopping = r.ok<Task>({ type: 'task.stop', id: 't1', at: 2200 });
    expect(stopping).toMatchObject({ state: 'running', desired: 'shutdown' });
    // Asking again changes nothing.
    const seq = r.state.lastEventSeq;
    r.ok({ type: 'task.stop', id: 't1', at: 2300 });
    expect(r.state.lastEventSeq).toBe(seq);
    r.ok({ type: 'task.report', reports: [{ taskId: 't1', nodeId: 'w1', state: 'stopped', exitCode: 143, at: 2400 }] });
    const t1 = r.state.getTask('t1')!;
    expect(t1).toMatchObject({ state: 'stopped', desired: 'shutdown', exitCode: 143 });
    expect(t1.nextRestartAt).toBeUndefined(); // a stopped task is not restarted
    expect(r.state.nodeUsage('w1').tasks).toBe(0);

    r.ok({ type: 'task.remove', id: 't1', at: 2500 });
    expect(r.state.getTask('t1')).toBeUndefined();
    expectRejected(r, { type: 'task.remove', id: 't1', at: 2600 }, 'not_found');
  });

  it('lists and filters tasks', () => {
    const r = runningCluster();
    r.ok({ type: 'task.create', id: 't0', spec: spec('other'), at: 2000 });
    expect(r.state.listTasks().map((t) => t.id)).toEqual(['t0', 't1']);
    expect(r.state.listTasks({ state: 'pending' }).map((t) => t.id)).toEqual(['t0']);
    expect(r.state.listTasks({ state: ['pending', 'running'] }).map((t) => t.id)).toEqual(['t0', 't1']);
    expect(r.state.listTasks({ node: 'w1' }).map((t) => t.id)).toEqual(['t1']);
    expect(r.state.listTasks({ name: 'other' }).map((t) => t.id)).toEqual(['t0']);
    expect(r.state.pendingTasks().map((t) => t.id)).toEqual(['t0']);
  });
});

describe('kv: versions and compare-and-swap', () => {
  it('versions are log indexes; cas 0 means "must not exist"', () => {
    const r = new Replica();
    expect(r.ok({ type: 'kv.put', key: 'a', value: 'one', cas: 0 })).toEqual({ key: 'a', version: 1, createVersion: 1 });
    const taken = expectRejected(r, { type: 'kv.put', key: 'a', value: 'two', cas: 0 }, 'conflict');
    expect(taken.error.message).toBe("Cannot put 'a' as it already exists (version 1)");
    const stale = expectRejected(r, { type: 'kv.put', key: 'a', value: 'two', cas: 7 }, 'conflict');
    expect(stale.error.message).toBe("Cannot put 'a' as its version is 1, not 7");
    expect(r.ok({ type: 'kv.put', key: 'a', value: 'two', cas: 1 })).toEqual({ key: 'a', version: 4, createVersion: 1 });
    expect(r.state.kvGet('a')).toEqual({ key: 'a', value: 'two', version: 4, createVersion: 1 });
    expect(r.ok({ type: 'kv.put', key: 'a', value: 'three' })).toEqual({ key: 'a', version: 5, createVersion: 1 }); // no cas: last write wins
    expectRejected(r, { type: 'kv.put', key: 'b', value: 'x', cas: 3 }, 'conflict');
  });

  it('deletes with and without cas', () => {
    const r = new Replica();
    r.ok({ type: 'kv.put', key: 'k', value: 'v' });
    expectRejected(r, { type: 'kv.del', key: 'k', cas: 9 }, 'conflict');
    expect(r.ok({ type: 'kv.del', key: 'k', cas: 1 })).toEqual({ deleted: true, key: 'k', version: 1 });
    expect(r.state.kvGet('k')).toBeUndefined();
    expect(r.ok({ type: 'kv.del', key: 'k' })).toEqual({ deleted: false, key: 'k' });
    // Re-created keys start a new life.
    expect(r.ok({ type: 'kv.put', key: 'k', value: 'again', cas: 0 })).toEqual({ key: 'k', version: 5, createVersion: 5 });
  });

  it('stores bytes, lists by prefix, bounds value size', () => {
    const r = new Replica();
    r.ok({ type: 'kv.put', key: 'cfg/b', value: new Uint8Array([1, 2, 3]) });
    r.ok({ type: 'kv.put', key: 'cfg/a', value: 'x' });
    r.ok({ type: 'kv.put', key: 'other', value: 'y' });
    expect(r.state.kvList('cfg/').map((e) => e.key)).toEqual(['cfg/a', 'cfg/b']);
    expect(r.state.kvGet('cfg/b')!.value).toEqual(new Uint8Array([1, 2, 3]));
    const big = expectRejected(r, { type: 'kv.put', key: 'big', value: 'x'.repeat(1024 * 1024 + 1) }, 'too_large');
    expect(big.error.message).toBe("Cannot put 'big' as its value is 1 MiB, more than the 1 MiB limit");
  });

  it('de-duplicates retried writes by request id', () => {
    const r = new Replica();
    const first = r.ok({ type: 'kv.put', key: 'n', value: '1', cas: 0, requestId: 'req-1' });
    // The retry of the same request returns the first answer instead of a CAS conflict.
    const retry = r.apply({ type: 'kv.put', key: 'n', value: '1', cas: 0, requestId: 'req-1' });
    expect(retry).toEqual({ ok: true, value: first });
    expect(r.state.kvGet('n')!.version).toBe(1);
    // Remembered across snapshots too.
    const copy = ClusterState.restore(r.state.snapshot());
    expect(copy.apply({ type: 'kv.put', key: 'n', value: '1', cas: 0, requestId: 'req-1' }, { index: 10, term: 1 })).toEqual({ ok: true, value: first });
  });
});

describe('fencing: decisions of a deposed leader are rejected', () => {
  it('rejects every leader decision whose term is not the entry term, changing nothing', () => {
    const r = runningCluster();
    r.ok({ type: 'task.create', id: 't2', spec: spec('queued'), at: 2000 });
    r.term = 2;
    const stale: Command[] = [
      { type: 'task.assign', placements: [{ taskId: 't2', nodeId: 'w2' }], term: 1, at: 2100 },
      { type: 'nodes.markUnknown', term: 1, at: 2100 },
      { type: 'node.down', id: 'w1', term: 1, at: 2100 },
      { type: 'node.status', id: 'w1', status: 'unknown', term: 1, at: 2100 },
      { type: 'cluster.leader', leader: 'm1', term: 1, at: 2100 },
      { type: 'task.restart', taskId: 't1', term: 3, at: 2100 },
    ];
    for (const cmd of stale) {
      const res = expectRejected(r, cmd, 'not_leader');
      expect(res.fenced).toBe(true);
      expect(res.error.message).toContain('fenced');
    }
    expect(r.state.getTask('t2')!.state).toBe('pending');
    // The same decision made in the current term goes through.
    expect(r.ok({ type: 'task.assign', placements: [{ taskId: 't2', nodeId: 'w2' }], term: 2, at: 2200 })).toEqual({
      assigned: [{ taskId: 't2', nodeId: 'w2' }],
      skipped: [],
    });
  });

  it('does not fence facts and user requests', () => {
    const r = runningCluster();
    r.term = 5;
    r.ok({ type: 'task.report', reports: [{ taskId: 't1', nodeId: 'w1', state: 'running', detail: 'healthy', at: 3000 }] });
    r.ok({ type: 'node.heartbeat', id: 'w2', at: 3000 });
    r.ok({ type: 'kv.put', key: 'a', value: 'b' });
  });
});

describe('assignment: no task is ever placed twice', () => {
  it('skips placements of tasks that are no longer pending', () => {
    const r = runningCluster();
    r.ok({ type: 'task.create', id: 't2', spec: spec('b'), at: 2000 });
    const res = r.ok({
      type: 'task.assign',
      placements: [
        { taskId: 't2', nodeId: 'w1' },
        { taskId: 't2', nodeId: 'w2' }, // same task twice in one round
        { taskId: 't1', nodeId: 'w2' }, // already running
        { taskId: 'ghost', nodeId: 'w2' },
      ],
      term: 1,
      at: 2100,
    });
    expect(res).toEqual({
      assigned: [{ taskId: 't2', nodeId: 'w1' }],
      skipped: [
        { taskId: 't2', nodeId: 'w2', reason: 'task is assigned on w1' },
        { taskId: 't1', nodeId: 'w2', reason: 'task is running on w1' },
        { taskId: 'ghost', nodeId: 'w2', reason: 'no such task' },
      ],
    });
    // A later round (e.g. from a scheduler that read stale state) cannot move it either.
    const again = r.ok<{ skipped: unknown[] }>({ type: 'task.assign', placements: [{ taskId: 't2', nodeId: 'w2' }], term: 1, at: 2200 });
    expect(again.skipped).toHaveLength(1);
    expect(r.state.getTask('t2')!.node).toBe('w1');
    expect(r.state.nodeUsage('w1').tasks).toBe(2);
    expect(r.state.nodeUsage('w2').tasks).toBe(0);
  });

  it('re-checks node, capacity, ports and stop requests when applying', () => {
    const r = new Replica();
    r.ok({ type: 'node.register', node: node('small', { resources: { cpu: 1000, memory: GiB } }), at: 1 });
    r.ok({ type: 'node.register', node: node('paused'), at: 1 });
    r.ok({ type: 'node.register', node: node('gone'), at: 1 });
    r.ok({ type: 'node.register', node: node('nodock', { drivers: ['process'] }), at: 1 });
    r.ok({ type: 'node.setAvailability', id: 'paused', availability: 'pause' });
    r.ok({ type: 'node.down', id: 'gone', term: 1, at: 2 });
    r.ok({ type: 'task.create', id: 'a', spec: spec('a', { resources: { memory: '768Mi' } }), at: 3 });
    r.ok({ type: 'task.create', id: 'b', spec: spec('b', { resources: { memory: '512Mi' } }), at: 3 });
    r.ok({ type: 'task.create', id: 'p1', spec: spec('p1', { containers: [{ image: 'x', ports: ['80:80'] }] }), at: 3 });
    r.ok({ type: 'task.create', id: 'p2', spec: spec('p2', { containers: [{ image: 'y', ports: ['80:8080'] }] }), at: 3 });
    r.ok({ type: 'task.create', id: 's', spec: spec('s'), at: 3 });
    r.ok({ type: 'task.create', id: 'z', spec: spec('z', { constraints: ['zone==eu'] }), at: 3 });
    r.ok({ type: 'task.stop', id: 's', at: 4 });
    const res = r.ok<{ assigned: unknown[]; skipped: { taskId: string; reason: string }[] }>({
      type: 'task.assign',
      placements: [
        { taskId: 'a', nodeId: 'small' },
        { taskId: 'b', nodeId: 'small' },
        { taskId: 'b', nodeId: 'paused' },
        { taskId: 'b', nodeId: 'gone' },
        { taskId: 'b', nodeId: 'nodock' },
        { taskId: 'b', nodeId: 'nowhere' },
        { taskId: 'p1', nodeId: 'small' },
        { taskId: 'p2', nodeId: 'small' },
        { taskId: 's', nodeId: 'small' },
        { taskId: 'z', nodeId: 'small' },
      ],
      term: 1,
      at: 5,
    });
    expect(res.assigned).toEqual([
      { taskId: 'a', nodeId: 'small' },
      { taskId: 'p1', nodeId: 'small' },
    ]);
    expect(res.skipped.map((s) => `${s.taskId}: ${s.reason}`)).toEqual([
      'b: insufficient memory: needs 512 MiB, free 256 MiB',
      'b: node availability is pause',
      'b: node is down',
      'b: node has no docker driver',
      'b: no such node',
      'p2: host port 80/tcp is in use on the node',
      's: task is being stopped',
      'z: node does not satisfy constraint zone==eu',
    ]);
    expect(r.state.nodeUsage('small')).toEqual({ cpu: 200, memory: 768 * MiB + 64 * MiB, tasks: 2, hostPorts: ['80/tcp'] });
  });
});

describe('pending reasons', () => {
  it('records why a task waits, without history entries, and only when it changes', () => {
    const r = runningCluster();
    r.ok({ type: 'task.create', id: 't2', spec: spec('big', { resources: { memory: '64Gi' } }), at: 2000 });
    const seq = r.state.lastEventSeq;
    const cmd: Command = {
      type: 'task.pending',
      items: [
        { taskId: 't2', reason: 'insufficient memory: needs 64 GiB, largest free 8 GiB on w2' },
        { taskId: 't1', reason: 'x' },
      ],
      term: 1,
      at: 2100,
    };
    expect(r.ok(cmd)).toEqual({ updated: 1, skipped: [{ taskId: 't1', reason: 'task is running' }] });
    const t2 = r.state.getTask('t2')!;
    expect(t2).toMatchObject({ state: 'pending', reason: 'insufficient memory: needs 64 GiB, largest free 8 GiB on w2' });
    expect(t2.history).toHaveLength(1);
    expect(r.state.lastEventSeq).toBe(seq + 1);
    expect(r.ok(cmd)).toEqual({ updated: 0, skipped: [{ taskId: 't1', reason: 'task is running' }] });
    expect(r.state.lastEventSeq).toBe(seq + 1);
    expect(expectRejected(r, { ...cmd, term: 0 } as Command, 'not_leader').fenced).toBe(true);
  });
});

describe('worker reports', () => {
  it('ignores reports from the wrong node, stale attempts and backward moves', () => {
    const r = runningCluster();
    const res = r.ok({
      type: 'task.report',
      reports: [
        { taskId: 't1', nodeId: 'w2', state: 'failed', at: 2000 },
        { taskId: 't1', nodeId: 'w1', state: 'starting', at: 2000 },
        { taskId: 't1', nodeId: 'w1', state: 'failed', attempt: 7, at: 2000 },
        { taskId: 't1', nodeId: 'w1', state: 'running', at: 2000 },
        { taskId: 'nope', nodeId: 'w1', state: 'running', at: 2000 },
        { taskId: 't1', nodeId: 'w1', state: 'running', detail: 'healthy', attempt: 1, at: 2001 },
      ],
    });
    expect(res).toEqual({
      applied: 1,
      ignored: [
        { taskId: 't1', nodeId: 'w2', reason: 'task is assigned to w1' },
        { taskId: 't1', nodeId: 'w1', reason: 'task is already running' },
        { taskId: 't1', nodeId: 'w1', reason: 'report is for attempt 7, task is on attempt 1' },
        { taskId: 't1', nodeId: 'w1', reason: 'no change' },
        { taskId: 'nope', nodeId: 'w1', reason: 'no such task' },
      ],
    });
    expect(r.state.getTask('t1')).toMatchObject({ state: 'running', detail: 'healthy' });
  });

  it('never moves a terminal task backward', () => {
    const r = runningCluster({ restart: 'never' });
    r.ok({ type: 'task.report', reports: [{ taskId: 't1', nodeId: 'w1', state: 'failed', exitCode: 2, at: 2000 }] });
    const before = content(r.state);
    const res = r.ok({
      type: 'task.report',
      reports: [
        { taskId: 't1', nodeId: 'w1', state: 'running', at: 2100 },
        { taskId: 't1', nodeId: 'w1', state: 'succeeded', at: 2100 },
      ],
    });
    expect(res).toEqual({
      applied: 0,
      ignored: [
        { taskId: 't1', nodeId: 'w1', reason: 'task is already failed' },
        { taskId: 't1', nodeId: 'w1', reason: 'task is already failed' },
      ],
    });
    expect(content(r.state)).toEqual(before);
    expect(r.state.getTask('t1')).toMatchObject({ state: 'failed', exitCode: 2, detail: 'not restarting (restart policy never)' });
  });

  it('checks each report on its own: a malformed one does not reject the batch', () => {
    const r = runningCluster();
    const res = r.ok({
      type: 'task.report',
      reports: [
        { taskId: 't1', nodeId: 'w1', state: 'pending', at: 2000 } as any,
        { taskId: 't1', nodeId: 'w1', state: 'running', detail: 'ok', at: 2001 },
        'garbage' as any,
      ],
    });
    expect(res).toEqual({
      applied: 1,
      ignored: [
        { taskId: 't1', nodeId: 'w1', reason: "invalid report: 'state' must be one of 'starting', 'running', 'succeeded', 'failed', 'stopped'" },
        { taskId: '', nodeId: '', reason: "invalid report: '' must be an object" },
      ],
    });
    expect(r.state.getTask('t1')!.detail).toBe('ok');
  });

  it('records progress detail and skips states forward', () => {
    const r = runningCluster();
    r.ok({ type: 'task.create', id: 't2', spec: spec('b'), at: 2000 });
    r.ok({ type: 'task.assign', placements: [{ taskId: 't2', nodeId: 'w2' }], term: 1, at: 2001 });
    r.ok({ type: 'task.report', reports: [{ taskId: 't2', nodeId: 'w2', state: 'starting', detail: 'pulling 43%', at: 2002 }] });
    expect(r.state.getTask('t2')).toMatchObject({ state: 'starting', detail: 'pulling 43%' });
    r.ok({ type: 'task.report', reports: [{ taskId: 't2', nodeId: 'w2', state: 'starting', detail: 'pulling 90%', at: 2003 }] });
    expect(r.state.getTask('t2')!.detail).toBe('pulling 90%');
    // A quick task can go straight from assigned to succeeded.
    r.ok({ type: 'task.create', id: 't3', spec: spec('c'), at: 2000 });
    r.ok({ type: 'task.assign', placements: [{ taskId: 't3', nodeId: 'w2' }], term: 1, at: 2001 });
    r.ok({ type: 'task.report', reports: [{ taskId: 't3', nodeId: 'w2', state: 'succeeded', at: 2004 }] });
    expect(r.state.getTask('t3')!.state).toBe('succeeded');
  });
});

describe('restarts (in place)', () => {
  it('plans a restart with backoff and restarts the same task as a new attempt', () => {
    const r = runningCluster({ restart: { policy: 'on-failure', maxAttempts: 3, backoffMs: 1000, maxBackoffMs: 3000 } });
    r.ok({ type: 'task.report', reports: [{ taskId: 't1', nodeId: 'w1', state: 'failed', exitCode: 1, at: 10_000 }] });
    let t = r.state.getTask('t1')!;
    expect(t).toMatchObject({ state: 'failed', exitCode: 1, reason: 'exited with code 1', nextRestartAt: 11_000 });
    expect(t.detail).toBe('restarting in 1000 ms (restart 1 of 3)');
    expect(r.state.tasksAwaitingRestart().map((x) => x.id)).toEqual(['t1']);
    expect(r.state.nodeUsage('w1').tasks).toBe(0);

    t = r.ok<Task>({ type: 'task.restart', taskId: 't1', term: 1, at: 11_000 });
    expect(t).toMatchObject({ id: 't1', state: 'pending', node: null, attempt: 2, restarts: 1, reason: 'restart 1 after failed' });
    expect(t.exitCode).toBeUndefined();
    expect(t.nextRestartAt).toBeUndefined();
    expect(r.state.pendingTasks().map((x) => x.id)).toEqual(['t1']);
    // A late report from attempt 1 cannot touch attempt 2.
    r.ok({ type: 'task.assign', placements: [{ taskId: 't1', nodeId: 'w1' }], term: 1, at: 11_100 });
    const late = r.ok<{ ignored: unknown[] }>({ type: 'task.report', reports: [{ taskId: 't1', nodeId: 'w1', state: 'failed', attempt: 1, at: 11_200 }] });
    expect(late.ignored).toHaveLength(1);

    // Second failure: the backoff doubles.
    r.ok({ type: 'task.report', reports: [{ taskId: 't1', nodeId: 'w1', state: 'failed', attempt: 2, at: 20_000 }] });
    expect(r.state.getTask('t1')!.nextRestartAt).toBe(22_000);
    r.ok({ type: 'task.restart', taskId: 't1', term: 1, at: 22_000 });
    r.ok({ type: 'task.assign', placements: [{ taskId: 't1', nodeId: 'w2' }], term: 1, at: 22_001 });
    r.ok({ type: 'task.report', reports: [{ taskId: 't1', nodeId: 'w2', state: 'failed', at: 30_000 }] });
    expect(r.state.getTask('t1')!.nextRestartAt).toBe(33_000); // capped at maxBackoffMs
    r.ok({ type: 'task.restart', taskId: 't1', term: 1, at: 33_000 });
    r.ok({ type: 'task.assign', placements: [{ taskId: 't1', nodeId: 'w2' }], term: 1, at: 33_001 });
    r.ok({ type: 'task.report', reports: [{ taskId: 't1', nodeId: 'w2', state: 'failed', at: 40_000 }] });

    // Limit reached: no more restarts by policy.
    t = r.state.getTask('t1')!;
    expect(t).toMatchObject({ restarts: 3, attempt: 4, detail: 'restart limit reached (3 of 3)' });
    expect(t.nextRestartAt).toBeUndefined();
    const refused = expectRejected(r, { type: 'task.restart', taskId: 't1', term: 1, at: 41_000 }, 'conflict');
    expect(refused.error.message).toBe("Cannot restart task 't1' as its restart policy allows no restart (restart limit reached (3 of 3))");
    // An operator can still force one; it does not count against the policy.
    t = r.ok<Task>({ type: 'task.restart', taskId: 't1', term: 1, at: 42_000, force: true });
    expect(t).toMatchObject({ state: 'pending', restarts: 3, attempt: 5, reason: 'restarted by request after failed' });
    expect(t.history.filter((h) => h.state === 'failed')).toHaveLength(4);
  });

  it('follows the policy: always, on-failure, never', () => {
    const ended = (restart: unknown, state: 'succeeded' | 'failed') => {
      const r = runningCluster({ restart });
      r.ok({ type: 'task.report', reports: [{ taskId: 't1', nodeId: 'w1', state, at: 5000 }] });
      return r.state.getTask('t1')!.nextRestartAt;
    };
    expect(ended('always', 'succeeded')).toBe(6000);
    expect(ended('always', 'failed')).toBe(6000);
    expect(ended('on-failure', 'succeeded')).toBeUndefined();
    expect(ended('on-failure', 'failed')).toBe(6000);
    expect(ended('never', 'failed')).toBeUndefined();
    expect(restartBackoff({ policy: 'always', maxAttempts: 0, backoffMs: 100, maxBackoffMs: 1000 }, 50)).toBe(1000);
    expect(restartBackoff({ policy: 'always', maxAttempts: 0, backoffMs: 0, maxBackoffMs: 1000 }, 1e9)).toBe(0);
  });

  it('refuses to restart a live or stopped task', () => {
    const r = runningCluster();
    expect(expectRejected(r, { type: 'task.restart', taskId: 't1', term: 1, at: 1 }, 'conflict').error.message).toBe(
      "Cannot restart task 't1' as it is running",
    );
    r.ok({ type: 'task.stop', id: 't1', at: 2 });
    r.ok({ type: 'task.report', reports: [{ taskId: 't1', nodeId: 'w1', state: 'stopped', at: 3 }] });
    expect(expectRejected(r, { type: 'task.restart', taskId: 't1', term: 1, at: 4, force: true }, 'conflict').error.message).toBe(
      "Cannot restart task 't1' as it was stopped",
    );
    expectRejected(r, { type: 'task.restart', taskId: 'nope', term: 1, at: 4 }, 'not_found');
  });

  it('a forced restart moves a live task (drain): re-queued at once, the old worker is ignored', () => {
    const r = runningCluster();
    r.ok({ type: 'node.setAvailability', id: 'w1', availability: 'drain' });
    const t = r.ok<Task>({ type: 'task.restart', taskId: 't1', term: 1, at: 5000, force: true, reason: 'node w1 is draining' });
    expect(t).toMatchObject({ state: 'pending', node: null, attempt: 2, restarts: 0, reason: 'node w1 is draining' });
    expect(r.state.nodeUsage('w1').tasks).toBe(0);
    expect(r.state.tasksOnNode('w1')).toEqual([]);
    const late = r.ok<{ ignored: { reason: string }[] }>({ type: 'task.report', reports: [{ taskId: 't1', nodeId: 'w1', state: 'failed', at: 5001 }] });
    expect(late.ignored.map((i) => i.reason)).toEqual(['task is not assigned to a node']);
    r.ok({ type: 'task.assign', placements: [{ taskId: 't1', nodeId: 'w2' }], term: 1, at: 5002 });
    expect(r.state.getTask('t1')).toMatchObject({ state: 'assigned', node: 'w2', attempt: 2 });
    // A pending task cannot be restarted, forced or not.
    r.ok({ type: 'task.create', id: 't9', spec: spec('q'), at: 5003 });
    expectRejected(r, { type: 'task.restart', taskId: 't9', term: 1, at: 5004, force: true }, 'conflict');
  });

  it('keeps restart counts across snapshot and restore', () => {
    const r = runningCluster({ restart: 'always' });
    for (let i = 0; i < 3; i++) {
      r.ok({ type: 'task.report', reports: [{ taskId: 't1', nodeId: 'w1', state: 'failed', at: 10_000 * (i + 1) }] });
      r.ok({ type: 'task.restart', taskId: 't1', term: 1, at: 10_000 * (i + 1) + 5000 });
      r.ok({ type: 'task.assign', placements: [{ taskId: 't1', nodeId: 'w1' }], term: 1, at: 10_000 * (i + 1) + 5001 });
    }
    const restored = ClusterState.restore(r.state.snapshot());
    expect(restored.getTask('t1')).toEqual(r.state.getTask('t1'));
    expect(restored.getTask('t1')).toMatchObject({ restarts: 3, attempt: 4, state: 'assigned', node: 'w1' });
    expect(restored.nodeUsage('w1')).toEqual(r.state.nodeUsage('w1'));
    // The backoff after restore continues from the replicated count.
    restored.apply({ type: 'task.report', reports: [{ taskId: 't1', nodeId: 'w1', state: 'failed', at: 100_000 }] }, { index: r.index + 1, term: 1 });
    expect(restored.getTask('t1')!.nextRestartAt).toBe(100_000 + 8000);
  });
});

describe('nodes', () => {
  it('registers, re-registers (keeping availability), heartbeats', () => {
    const r = new Replica();
    const n = r.ok({ type: 'node.register', node: node('w1', { addr: '10.0.0.1:7000', labels: { zone: 'eu' } }), at: 100 });
    expect(n).toEqual({
      id: 'w1',
      addr: '10.0.0.1:7000',
      labels: { zone: 'eu' },
      resources: { cpu: 4000, memory: 8 * GiB },
      drivers: ['docker', 'process'],
      availability: 'active',
      status: 'ready',
      statusReason: '',
      lastHeartbeat: 100,
      registeredAt: 100,
      version: 1,
    });
    r.ok({ type: 'node.setAvailability', id: 'w1', availability: 'drain' });
    r.ok({ type: 'node.register', node: node('w1', { labels: { zone: 'us' } }), at: 200 });
    expect(r.state.getNode('w1')).toMatchObject({ availability: 'drain', registeredAt: 100, lastHeartbeat: 200, labels: { zone: 'us' } });
    r.ok({ type: 'node.heartbeat', id: 'w1', at: 300 });
    expect(r.state.getNode('w1')!.lastHeartbeat).toBe(300);
    expect(r.state.listNodes().map((x) => x.id)).toEqual(['w1']);
  });

  it('a new leader marks nodes unknown without touching their tasks; heartbeats bring them back', () => {
    const r = runningCluster();
    r.ok({ type: 'node.register', node: node('w3'), at: 1000 });
    r.ok({ type: 'node.down', id: 'w3', term: 1, at: 1500 });
    r.term = 2;
    r.ok({ type: 'cluster.leader', leader: 'm2', term: 2, at: 2000 });
    expect(r.ok({ type: 'nodes.markUnknown', term: 2, at: 2000 })).toEqual({ nodes: ['w1', 'w2'] });
    expect(r.state.listNodes().map((n) => n.status)).toEqual(['unknown', 'unknown', 'down']);
    expect(r.state.getTask('t1')!.state).toBe('running');
    r.ok({ type: 'node.heartbeat', id: 'w1', at: 2100 });
    expect(r.state.getNode('w1')!.status).toBe('ready');
    expect(r.state.leader).toEqual({ id: 'm2', term: 2, at: 2000 });
    r.ok({ type: 'node.status', id: 'w1', status: 'unknown', reason: 'no heartbeat for 15 s', term: 2, at: 2200 });
    expect(r.state.getNode('w1')).toMatchObject({ status: 'unknown', statusReason: 'no heartbeat for 15 s' });
    // Without a term, node.status is a fact and is not fenced.
    r.ok({ type: 'node.status', id: 'w1', status: 'ready', at: 2300 }, 7);
    expect(r.state.getNode('w1')!.status).toBe('ready');
  });

  it('a worker leaving cleanly says so in its last heartbeat', () => {
    const r = runningCluster();
    r.ok({ type: 'node.heartbeat', id: 'w1', status: 'down', at: 4000 });
    expect(r.state.getNode('w1')).toMatchObject({ status: 'down', statusReason: 'left the cluster', lastHeartbeat: 4000 });
    expect(r.state.getTask('t1')).toMatchObject({ state: 'lost', reason: 'node w1 is down (left the cluster)' });
  });

  it('a node declared down loses its tasks, which the policy restarts', () => {
    const r = runningCluster({ restart: { policy: 'on-failure', backoffMs: 500 } });
    r.ok({ type: 'task.create', id: 't2', spec: spec('x', { restart: 'never' }), at: 1100 });
    r.ok({ type: 'task.assign', placements: [{ taskId: 't2', nodeId: 'w1' }], term: 1, at: 1200 });
    const res = r.ok<{ lost: string[] }>({ type: 'node.down', id: 'w1', reason: 'no heartbeat for 30 s', term: 1, at: 5000 });
    expect(res.lost).toEqual(['t1', 't2']);
    expect(r.state.getTask('t1')).toMatchObject({ state: 'lost', reason: 'node w1 is down (no heartbeat for 30 s)', nextRestartAt: 5500 });
    expect(r.state.getTask('t2')!.state).toBe('lost');
    expect(r.state.getTask('t2')!.nextRestartAt).toBeUndefined();
    expect(r.state.nodeUsage('w1')).toEqual({ cpu: 0, memory: 0, tasks: 0, hostPorts: [] });
    // The worker comes back and reports the old container: ignored (the task is lost).
    r.ok({ type: 'node.heartbeat', id: 'w1', at: 6000 });
    const late = r.ok<{ applied: number }>({ type: 'task.report', reports: [{ taskId: 't1', nodeId: 'w1', state: 'running', at: 6001 }] });
    expect(late.applied).toBe(0);
    r.ok({ type: 'task.restart', taskId: 't1', term: 1, at: 6002 });
    expect(r.state.getTask('t1')).toMatchObject({ state: 'pending', attempt: 2, restarts: 1 });
  });
});

describe('batches', () => {
  it('applies each item on its own and reports each result', () => {
    const r = runningCluster();
    const res = r.apply({
      type: 'batch',
      commands: [
        { type: 'node.heartbeat', id: 'w1', at: 5000 },
        { type: 'node.heartbeat', id: 'ghost', at: 5000 },
        { type: 'kv.put', key: 'a', value: 'b' },
        { type: 'batch', commands: [] } as any,
        { type: 'task.assign', placements: [], term: 0, at: 1 }, // fenced
      ],
    });
    expect(res.ok).toBe(true);
    const items = (res as { value: ApplyResult[] }).value;
    expect(items.map((i) => (i.ok ? 'ok' : i.error.code))).toEqual(['ok', 'not_found', 'ok', 'bad_request', 'not_leader']);
    expect(r.state.kvGet('a')!.version).toBe(r.index);
  });
});

describe('events', () => {
  it('records every change with a replicated seq and the log index', () => {
    const r = new Replica();
    const live: ClusterEvent[] = [];
    const off = r.state.onEvent((e) => live.push(e));
    r.ok({ type: 'cluster.leader', leader: 'm1', term: 1, at: 10 });
    r.ok({ type: 'node.register', node: node('w1'), at: 11 });
    r.ok({ type: 'task.create', id: 't1', spec: spec('a'), at: 12 });
    r.ok({ type: 'task.assign', placements: [{ taskId: 't1', nodeId: 'w1' }], term: 1, at: 13 });
    r.ok({ type: 'node.heartbeat', id: 'w1', at: 14 }); // no status change: no event
    expectRejected(r, { type: 'kv.put', key: 'k', value: 'v', cas: 5 }, 'conflict'); // failed: no event
    r.ok({ type: 'kv.put', key: 'k', value: 'v' });
    const page = r.state.eventsSince(0);
    expect(page.resetNeeded).toBe(false);
    if (page.resetNeeded) throw new Error('unreachable');
    expect(page.events.map((e) => [e.seq, e.index, e.type, e.at])).toEqual([
      [1, 1, 'cluster.leader', 10],
      [2, 2, 'node.registered', 11],
      [3, 3, 'task.created', 12],
      [4, 4, 'task.updated', 13],
      [5, 7, 'kv.put', null],
    ]);
    expect(page.events[3]).toMatchObject({ type: 'task.updated', prevState: 'pending', change: 'state', task: { id: 't1', state: 'assigned', node: 'w1' } });
    expect(live).toEqual(page.events);
    expect(r.state.eventsSince(3)).toEqual({ resetNeeded: false, events: page.events.slice(3), lastSeq: 5 });
    expect(r.state.eventsSince(5)).toEqual({ resetNeeded: false, events: [], lastSeq: 5 });
    expect((r.state.eventsSince(0, 2) as { events: unknown[] }).events).toHaveLength(2);
    off();
    r.ok({ type: 'kv.put', key: 'k', value: 'w' });
    expect(live).toHaveLength(5);
  });

  it('keeps a bounded ring and asks for a reset when a watcher fell behind', () => {
    const state = new ClusterState({ eventCapacity: 4 });
    const r = new Replica(state);
    for (let i = 0; i < 10; i++) r.ok({ type: 'kv.put', key: `k${i}`, value: 'v' });
    expect(state.eventsSince(5)).toMatchObject({ resetNeeded: true, oldestSeq: 7, lastSeq: 10 });
    const page = state.eventsSince(6);
    expect(page.resetNeeded).toBe(false);
    expect((page as { events: ClusterEvent[] }).events.map((e) => e.seq)).toEqual([7, 8, 9, 10]);
    expect(state.eventsSince(11).resetNeeded).toBe(true); // from another history
  });

  it('keeps seq across snapshot and restore, without the ring', () => {
    const r = runningCluster();
    const last = r.state.lastEventSeq;
    const copy = new ClusterState();
    let resets = 0;
    copy.onReset(() => resets++);
    copy.restore(r.state.snapshot());
    expect(resets).toBe(1);
    expect(copy.lastEventSeq).toBe(last);
    expect(copy.eventsSince(last - 1).resetNeeded).toBe(true);
    copy.apply({ type: 'kv.put', key: 'x', value: 'y' }, { index: r.index + 1, term: 1 });
    r.ok({ type: 'kv.put', key: 'x', value: 'y' });
    expect(copy.eventsSince(last)).toEqual(r.state.eventsSince(last)); // same seq on every replica
  });

  it('a throwing listener does not disturb the state machine', () => {
    const r = new Replica();
    r.state.onEvent(() => {
      throw new Error('listener bug');
    });
    expect(r.apply({ type: 'kv.put', key: 'a', value: 'b' }).ok).toBe(true);
  });
});

describe('determinism and snapshots', () => {
  /** A seeded PRNG (mulberry32) so the random log is the same on every run. */
  function rng(seed: number): () => number {
    let a = seed;
    return () => {
      a = (a + 0x6d2b79f5) | 0;
      let t = Math.imul(a ^ (a >>> 15), 1 | a);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  /** A plausible random log: nodes, tasks, scheduling, reports, failures, restarts, kv. */
  function randomLog(seed: number, length: number): { cmd: Command; term: number }[] {
    const rand = rng(seed);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
    const sim = new Replica();
    const out: { cmd: Command; term: number }[] = [];
    let at = 1000;
    let term = 1;
    let nextTask = 0;
    const push = (cmd: Command) => {
      out.push({ cmd, term });
      sim.apply(cmd, term);
    };
    for (let i = 0; i < 4; i++) push({ type: 'node.register', node: node(`w${i}`, { labels: { zone: i % 2 ? 'eu' : 'us' } }), at });
    while (out.length < length) {
      at += 1 + Math.floor(rand() * 100);
      const roll = rand();
      const tasks = sim.state.listTasks();
      if (roll < 0.2) {
        push({ type: 'task.create', id: `t${nextTask++}`, spec: spec(`job${nextTask % 5}`, { restart: pick(['always', 'on-failure', 'never']) }), at });
      } else if (roll < 0.35) {
        const plan = schedule(sim.state.pendingTasks(), sim.state.listNodes(), sim.state.usage(), { strategy: pick(['spread', 'binpack'] as const) });
        // Sometimes a deposed leader's decision sneaks in.
        push({ type: 'task.assign', placements: plan.placements, term: rand() < 0.1 ? term - 1 : term, at });
      } else if (roll < 0.65 && tasks.length > 0) {
        const t = pick(tasks);
        push({
          type: 'task.report',
          reports: [{ taskId: t.id, nodeId: t.node ?? 'w0', state: pick(['starting', 'running', 'succeeded', 'failed', 'stopped'] as const), exitCode: pick([0, 1, 137]), at }],
        });
      } else if (roll < 0.72 && tasks.length > 0) {
        push({ type: 'task.restart', taskId: pick(tasks).id, term, at, force: rand() < 0.2 });
      } else if (roll < 0.76 && tasks.length > 0) {
        push({ type: 'task.stop', id: pick(tasks).id, at });
      } else if (roll < 0.8) {
        push({ type: 'node.down', id: pick(['w0', 'w1', 'w2', 'w3']), term, at });
      } else if (roll < 0.86) {
        push({ type: 'node.heartbeat', id: pick(['w0', 'w1', 'w2', 'w3']), at });
      } else if (roll < 0.88) {
        term++;
        push({ type: 'cluster.leader', leader: `m${term % 3}`, term, at });
        push({ type: 'nodes.markUnknown', term, at });
      } else if (roll < 0.95) {
        const key = `k${Math.floor(rand() * 5)}`;
        push({ type: 'kv.put', key, value: rand() < 0.5 ? `v${i()}` : new Uint8Array([Math.floor(rand() * 256)]), cas: rand() < 0.3 ? sim.state.kvGet(key)?.version ?? 0 : undefined });
      } else {
        push({ type: 'kv.del', key: `k${Math.floor(rand() * 5)}` });
      }
    }
    return out;
    function i() {
      return Math.floor(rand() * 1000);
    }
  }

  it('two replicas that apply the same commands produce byte-identical snapshots', () => {
    for (const seed of [1, 2, 3]) {
      const log = randomLog(seed, 400);
      const a = new ClusterState();
      const b = new ClusterState();
      const resultsA: ApplyResult[] = [];
      const resultsB: ApplyResult[] = [];
      log.forEach(({ cmd, term }, i) => {
        // Replica b receives the entries through the log codec, as a real follower does.
        resultsA.push(a.apply(cmd, { index: i + 1, term }));
        resultsB.push(b.applyEntry(encodeCommand(cmd), { index: i + 1, term }));
      });
      expect(resultsB).toEqual(resultsA);
      expect(resultsA.some((x) => !x.ok)).toBe(true); // the log exercised failures too
      expect(b.snapshot()).toEqual(a.snapshot());
      expect(a.listTasks().length).toBeGreaterThan(10);
    }
  });

  it('a replica restored mid-log converges to the same bytes; restore∘snapshot is the identity', () => {
    const log = randomLog(7, 400);
    const full = new ClusterState();
    let restored: ClusterState | null = null;
    log.forEach(({ cmd, term }, i) => {
      full.apply(cmd, { index: i + 1, term });
      if (i === 199) restored = ClusterState.restore(full.snapshot());
      else if (restored !== null) restored.apply(cmd, { index: i + 1, term });
    });
    expect(text(restored!.snapshot())).toBe(text(full.snapshot()));
    expect(ClusterState.restore(full.snapshot()).snapshot()).toEqual(full.snapshot());
    expect(restored!.pendingTasks().map((t) => t.id)).toEqual(full.pendingTasks().map((t) => t.id));
    expect(restored!.usage()).toEqual(full.usage());
  });

  it('encodes bytes and restores them', () => {
    const cmd: Command = { type: 'kv.put', key: 'bin', value: new Uint8Array([0, 1, 254, 255, 10]) };
    const decoded = decodeCommand(encodeCommand(cmd)) as { value: Uint8Array };
    expect(decoded.value).toEqual(new Uint8Array([0, 1, 254, 255, 10]));
    // A Node Buffer (what HTTP bodies and msgpack give) is bytes too, despite its toJSON.
    const fromBuffer = decodeCommand(encodeCommand({ type: 'kv.put', key: 'b', value: Buffer.from('hi') })) as { value: Uint8Array };
    expect(fromBuffer.value).toEqual(new Uint8Array([104, 105]));
    const r = new Replica();
    r.ok(cmd);
    expect(ClusterState.restore(r.state.snapshot()).kvGet('bin')!.value).toEqual(new Uint8Array([0, 1, 254, 255, 10]));
    expect(r.state.applyEntry(new TextEncoder().encode('{nope'), { index: 2, term: 1 })).toMatchObject({ ok: false, error: { code: 'bad_request' } });
    expect(() => ClusterState.restore(new TextEncoder().encode('{}'))).toThrow(/not a flotilla state/);
  });
});

describe('LocalProposer', () => {
  it('applies through the Proposer interface and fences a stale term', async () => {
    const state = new ClusterState();
    const p = new LocalProposer(state, 3);
    expect(p.isLeader()).toBe(true);
    expect(await p.propose({ type: 'node.register', node: node('w1'), at: 1 })).toMatchObject({ ok: true });
    expect(await p.propose({ type: 'nodes.markUnknown', term: p.term(), at: 2 })).toMatchObject({ ok: true });
    const decidedIn = p.term();
    p.setTerm(4); // an election happened between deciding and committing
    expect(await p.propose({ type: 'nodes.markUnknown', term: decidedIn, at: 3 })).toMatchObject({ ok: false, fenced: true });
    p.setLeader(false);
    await expect(p.propose({ type: 'kv.put', key: 'a', value: 'b' })).rejects.toMatchObject({ code: 'not_leader', httpStatus: 503 });
    p.setLeader(true);
    const ac = new AbortController();
    ac.abort();
    await expect(p.propose({ type: 'kv.put', key: 'a', value: 'b' }, { signal: ac.signal })).rejects.toMatchObject({ code: 'unavailable' });
  });
});

describe('volume.remove', () => {
  it('is refused while a task being stopped still runs with the volume; allowed once it ended', () => {
    const r = runningCluster({ driver: 'process', containers: [{ command: ['/bin/sleep', '600'] }], volumes: ['data:/data'] });
    expect(r.state.listVolumes().find((v) => v.name === 'data')?.nodes).toEqual(['w1']);
    r.ok({ type: 'task.stop', id: 't1', at: 1400 });
    expect(r.state.getTask('t1')).toMatchObject({ desired: 'shutdown', state: 'running' });
    // The worker has not stopped it yet: its containers still mount the volume.
    expect(expectRejected(r, { type: 'volume.remove', name: 'data', at: 1500 }, 'conflict').error.message).toContain("task(s) t1 mount it and are not finished");
    r.ok({ type: 'task.report', reports: [{ taskId: 't1', nodeId: 'w1', state: 'stopped', at: 1600 }] });
    expect(r.ok({ type: 'volume.remove', name: 'data', at: 1700 })).toMatchObject({ name: 'data', deleted: true, nodes: ['w1'] });
  });
});
