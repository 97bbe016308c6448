// Garbage collection of finished tasks, the pure parts: which tasks the leader picks
// (controllers/gc.ts gcCandidates) and how every replica applies `tasks.gc` (state/task-gc.ts):
// only tasks still terminal, without a pending restart and of no service; fenced by term.
import { describe, expect, it } from 'vitest';
import { ClusterState, type Command, type Task } from '../src/manager/state.js';
import { gcCandidates } from '../src/manager/controllers/gc.js';

let index = 0;
function apply(s: ClusterState, cmd: Command, term = 1) {
  return s.apply(cmd, { index: ++index, term });
}
const spec = (name: string, restart?: Record<string, unknown>) => ({ name, driver: 'process', containers: [{ command: ['/bin/true'] }], ...(restart ? { restart } : {}) });

function cluster(): ClusterState {
  const s = new ClusterState();
  apply(s, { type: 'node.register', node: { id: 'w1', resources: { cpu: 4000, memory: 1 << 30 }, drivers: ['process'] }, at: 1 });
  return s;
}

/** A task that ran on w1 and ended `state` at `at` (restart: its policy). */
function ended(s: ClusterState, id: string, state: 'succeeded' | 'failed', at: number, restart?: Record<string, unknown>): void {
  apply(s, { type: 'task.create', id, spec: spec(id, restart) as never, at: at - 3 });
  apply(s, { type: 'task.assign', placements: [{ taskId: id, nodeId: 'w1' }], term: 1, at: at - 2 });
  apply(s, { type: 'task.report', reports: [{ taskId: id, nodeId: 'w1', state, exitCode: state === 'failed' ? 1 : 0, at }] });
}

describe('gcCandidates', () => {
  it('the finished tasks beyond the newest `keep`, and those older than the age limit; oldest first', () => {
    const s = cluster();
    for (let i = 0; i < 5; i++) ended(s, `done-${i}`, 'succeeded', 1000 + i * 100, { policy: 'never' });
    apply(s, { type: 'task.create', id: 'live', spec: spec('live') as never, at: 900 });
    ended(s, 'flaky', 'failed', 500, { policy: 'on-failure', backoffMs: 3_600_000, maxBackoffMs: 3_600_000 });
    const all = s.listTasks({});
    expect(s.getTask('flaky')!.nextRestartAt).toBeDefined();
    const ids = (ts: Task[]) => ts.map((t) => t.id);
    expect(ids(gcCandidates(all, 1500, 3, 0))).toEqual(['done-0', 'done-1']);
    expect(ids(gcCandidates(all, 1500, 10, 0))).toEqual([]);
    // Age: finished at least maxAge ago (updatedAt), whatever the count.
    expect(ids(gcCandidates(all, 1250, 10, 200))).toEqual(['done-0']);
    expect(ids(gcCandidates(all, 10_000, 10, 200))).toEqual(['done-0', 'done-1', 'done-2', 'done-3', 'done-4']);
    // Never the pending one nor the one whose restart is pending.
    expect(ids(gcCandidates(all, 10_000, 0, 1))).not.toContain('flaky');
    expect(ids(gcCandidates(all, 10_000, 0, 1))).not.toContain('live');
  });
});

describe('tasks.gc', () => {
  it('removes what may go, skips (with a reason) what changed, and is fenced by term', () => {
    const s = cluster();
    ended(s, 'a', 'succeeded', 1000, { policy: 'never' });
    ended(s, 'b', 'succeeded', 1100, { policy: 'never' });
    ended(s, 'flaky', 'failed', 1200, { policy: 'on-failure', backoffMs: 3_600_000, maxBackoffMs: 3_600_000 });
    apply(s, { type: 'task.create', id: 'live', spec: spec('live') as never, at: 1300 });
    // A decision of an older term is refused: nothing removed.
    const stale = apply(s, { type: 'tasks.gc', ids: ['a'], term: 1, at: 2000 }, 2);
    expect(stale.ok).toBe(false);
    expect(s.getTask('a')).toBeDefined();
    const r = apply(s, { type: 'tasks.gc', ids: ['a', 'b', 'flaky', 'live', 'ghost'], term: 2, at: 2000 }, 2);
    expect(r).toEqual({
      ok: true,
      value: {
        removed: ['a', 'b'],
        skipped: [
          { taskId: 'flaky', reason: 'its restart is pending; stop it first (or use force)' },
          { taskId: 'live', reason: 'task is pending' },
          { taskId: 'ghost', reason: 'no such task' },
        ],
      },
    });
    expect(s.listTasks({}).map((t) => t.id)).toEqual(['flaky', 'live']);
    // Replicas agree: a copy restored from a snapshot holds the same.
    expect(ClusterState.restore(s.snapshot()).listTasks({}).map((t) => t.id)).toEqual(['flaky', 'live']);
    // Bad input is refused as a whole.
    expect(apply(s, { type: 'tasks.gc', ids: [], term: 2, at: 2100 } as Command, 2).ok).toBe(false);
  });
});
