// Name-keyed task creates in the state machine (what `apply` and POST /v1/tasks?apply=true
// propose): deterministic on every replica, so racing applies cannot create a name twice.
import { describe, expect, it } from 'vitest';
import { ClusterState, type Command, type Task } from '../src/manager/state.js';
import { fieldChanges } from '../src/protocol/diff.js';

const spec = (cmd: string[], extra: Record<string, unknown> = {}) => ({ name: 'job', driver: 'process', containers: [{ command: cmd }], ...extra });

describe('task.create with byName (state machine)', () => {
  it('same name and spec: the existing task, nothing created; another spec: a conflict naming the fields', () => {
    const s = new ClusterState();
    let i = 0;
    const apply = (cmd: Record<string, unknown>) => s.apply(cmd as unknown as Command, { index: ++i, term: 1 });
    const first = apply({ type: 'task.create', id: 'job-1', spec: spec(['/bin/sleep', '60']), at: 1, byName: true });
    expect(first.ok).toBe(true);
    // The same spec, written differently (defaults spelled out), proposed again under a new id.
    const again = apply({ type: 'task.create', id: 'job-2', spec: spec(['/bin/sleep', '60'], { labels: {} }), at: 2, byName: true });
    expect(again).toMatchObject({ ok: true, value: { id: 'job-1' } });
    expect(s.getTask('job-2')).toBeUndefined();
    const other = apply({ type: 'task.create', id: 'job-3', spec: spec(['/bin/sleep', '70'], { labels: { tier: 'x' } }), at: 3, byName: true });
    expect(other.ok).toBe(false);
    if (!other.ok) {
      expect(other.error.code).toBe('conflict');
      expect(other.error.details?.map((d) => d.path)).toEqual(['containers[0].command', 'labels.tier']);
      expect(other.error.message).toMatch(/task job-1 of that name runs with another spec/);
    }
    expect(s.getTask('job-3')).toBeUndefined();
    // Without byName (run): a task per create, as before.
    expect(apply({ type: 'task.create', id: 'job-4', spec: spec(['/bin/sleep', '70']), at: 4 }).ok).toBe(true);
    // A stopped task frees the name (only job-4, another spec, still holds it now).
    apply({ type: 'task.stop', id: 'job-1', at: 5 });
    const after = apply({ type: 'task.create', id: 'job-5', spec: spec(['/bin/sleep', '70']), at: 6, byName: true });
    expect(after).toMatchObject({ ok: true, value: { id: 'job-4' } });
    const named = s.listTasks().filter((t: Task) => t.name === 'job' && t.desired === 'running').map((t) => t.id).sort();
    expect(named).toEqual(['job-4']);
  });

  it('fieldChanges: nested objects by path, scalar arrays whole, object arrays by index', () => {
    expect(fieldChanges({ a: 1, b: { c: [1, 2] }, d: [{ e: 1 }] }, { a: 1, b: { c: [1, 3] }, d: [{ e: 2 }, { e: 3 }] })).toEqual([
      { path: 'b.c', from: [1, 2], to: [1, 3] },
      { path: 'd[0].e', from: 1, to: 2 },
      { path: 'd[1]', to: { e: 3 } },
    ]);
    expect(fieldChanges({ a: undefined }, {})).toEqual([]);
  });
});
