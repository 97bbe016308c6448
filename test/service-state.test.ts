// Services in the replicated state: the service commands, template versions (a rollback or an
// update back to the previous template keeps its number), the controller's fenced decisions
// with their preconditions (no slot filled twice), removal, and snapshots with and without
// services.
import { describe, expect, it } from 'vitest';
import { parseServiceSpec, type ServiceSpec } from '../src/protocol/service.js';
import { ClusterState, type ApplyResult, type Command, type Service, type Task } from '../src/manager/state.js';

class Replica {
  readonly state: ClusterState;
  index = 0;
  term = 1;
  constructor(state = new ClusterState()) {
    this.state = state;
    this.index = state.appliedIndex;
  }
  apply(cmd: Command, term = this.term): ApplyResult {
    this.index++;
    return this.state.apply(cmd, { index: this.index, term });
  }
  ok<T = unknown>(cmd: Command, term = this.term): T {
    const r = this.apply(cmd, term);
    if (!r.ok) throw new Error(`expected ok, got ${JSON.stringify(r.error)}`);
    return r.value as T;
  }
  err(cmd: Command, term = this.term): { code: string; message: string } {
    const r = this.apply(cmd, term);
    if (r.ok) throw new Error('expected an error');
    return r.error;
  }
}

const text = (b: Uint8Array) => new TextDecoder().decode(b);
function content(state: ClusterState): unknown {
  const { appliedIndex: _ignored, ...rest } = JSON.parse(text(state.snapshot())) as Record<string, unknown>;
  return rest;
}

function svcSpec(extra: Record<string, unknown> = {}): ServiceSpec {
  return parseServiceSpec({ name: 'web', driver: 'process', containers: [{ command: ['sleep', '100'] }], replicas: 3, ...extra });
}

function created(): Replica {
  const r = new Replica();
  r.ok({ type: 'service.create', spec: svcSpec(), at: 1000 });
  return r;
}

const task = (r: Replica, slot: number, id = `web.${slot}.a`, extra: Partial<{ exclusive: boolean; version: number; term: number }> = {}) =>
  r.apply({ type: 'service.task', name: 'web', id, slot, version: extra.version ?? r.state.getService('web')!.templateVersion, exclusive: extra.exclusive ?? true, term: extra.term ?? r.term, at: 2000 }, r.term);

describe('service commands', () => {
  it('creates a service with version 1 and no update', () => {
    const r = created();
    const s = r.state.getService('web')!;
    expect(s).toMatchObject({ name: 'web', templateVersion: 1, lastVersion: 1, previous: null, update: { state: 'none', target: 1 } });
    expect(s.spec.replicas).toBe(3);
    expect(r.state.listServices().map((x) => x.name)).toEqual(['web']);
    expect(r.err({ type: 'service.create', spec: svcSpec(), at: 1001 }).code).toBe('conflict');
  });

  it('refuses a bad spec and changes nothing', () => {
    const r = created();
    const before = content(r.state);
    const bad = { ...svcSpec(), replicas: -4 } as ServiceSpec;
    expect(r.err({ type: 'service.update', name: 'web', spec: bad, at: 1500 }).code).toBe('bad_request');
    expect(r.err({ type: 'service.create', spec: { ...svcSpec(), name: 'Bad Name' } as ServiceSpec, at: 1500 }).code).toBe('bad_request');
    expect(r.err({ type: 'service.scale', name: 'web', replicas: 5000, at: 1500 }).code).toBe('bad_request');
    expect(r.err({ type: 'service.scale', name: 'nope', replicas: 1, at: 1500 }).code).toBe('not_found');
    expect(content(r.state)).toEqual(before);
  });

  it('a new template starts an update; replicas and policy alone do not', () => {
    const r = created();
    r.ok({ type: 'service.update', name: 'web', spec: svcSpec({ replicas: 5, update: { parallelism: 2 } }), at: 1500 });
    let s = r.state.getService('web')!;
    expect(s.templateVersion).toBe(1);
    expect(s.update.state).toBe('none');
    expect(s.spec.replicas).toBe(5);
    expect(s.spec.update.parallelism).toBe(2);
    const v2 = svcSpec({ containers: [{ command: ['sleep', '200'] }] });
    r.ok({ type: 'service.update', name: 'web', spec: v2, at: 1600 });
    s = r.state.getService('web')!;
    expect(s).toMatchObject({ templateVersion: 2, lastVersion: 2, previous: { version: 1 }, update: { state: 'updating', target: 2, from: 1, startIndex: r.index, batches: 0 } });
    // The same spec again: nothing to update.
    r.ok({ type: 'service.update', name: 'web', spec: v2, at: 1700 });
    expect(r.state.getService('web')!.update.startIndex).toBe(s.update.startIndex);
    // Back to the first template: it keeps its number.
    r.ok({ type: 'service.update', name: 'web', spec: svcSpec(), at: 1800 });
    expect(r.state.getService('web')!).toMatchObject({ templateVersion: 1, lastVersion: 2, previous: { version: 2 }, update: { state: 'updating', target: 1, from: 2 } });
  });

  it('rolls back to the previous template, by hand or (fenced, on the failed version only) by the controller', () => {
    const r = created();
    expect(r.err({ type: 'service.rollback', name: 'web', at: 1500 })).toMatchObject({ code: 'conflict', message: "Cannot roll back service 'web' as it has no previous template" });
    r.ok({ type: 'service.update', name: 'web', spec: svcSpec({ containers: [{ command: ['false'] }] }), at: 1600 });
    // An automatic rollback decided in an old term is fenced.
    r.term = 3;
    expect(r.apply({ type: 'service.rollback', name: 'web', at: 1700, term: 2, from: 2 }, 3)).toMatchObject({ ok: false, fenced: true });
    // One for another version than the current is stale.
    expect(r.err({ type: 'service.rollback', name: 'web', at: 1700, term: 3, from: 1 }).code).toBe('conflict');
    r.ok({ type: 'service.rollback', name: 'web', at: 1700, term: 3, from: 2, reason: 'update to version 2 failed' });
    const s = r.state.getService('web')!;
    expect(s).toMatchObject({ templateVersion: 1, previous: { version: 2 }, update: { state: 'rolling_back', target: 1, from: 2, message: 'update to version 2 failed' } });
    expect(s.spec.template.task.containers[0]!.command).toEqual(['sleep', '100']);
    // A second automatic rollback (from 2) no longer applies.
    expect(r.err({ type: 'service.rollback', name: 'web', at: 1800, term: 3, from: 2 }).code).toBe('conflict');
  });

  it('records progress only for the update in progress', () => {
    const r = created();
    r.ok({ type: 'service.update', name: 'web', spec: svcSpec({ containers: [{ command: ['sleep', '5'] }] }), at: 1600 });
    const st = r.state.getService('web')!.update;
    r.ok({ type: 'service.progress', name: 'web', status: { ...st, batches: 1, message: 'batch 1 of 3' }, term: 1, at: 1700 });
    expect(r.state.getService('web')!.update.batches).toBe(1);
    expect(r.apply({ type: 'service.progress', name: 'web', status: { ...st, batches: 2 }, term: 0, at: 1700 })).toMatchObject({ ok: false, fenced: true });
    r.ok({ type: 'service.update', name: 'web', spec: svcSpec({ containers: [{ command: ['sleep', '6'] }] }), at: 1800 });
    // Progress of the update that was replaced is refused.
    expect(r.err({ type: 'service.progress', name: 'web', status: { ...st, state: 'completed' }, term: 1, at: 1900 }).code).toBe('conflict');
    expect(r.state.getService('web')!.update.state).toBe('updating');
  });
});

describe("the controller's task decisions", () => {
  it('creates a slot task named service.slot, tagged with service, slot and version', () => {
    const r = created();
    const t = task(r, 2);
    expect(t.ok).toBe(true);
    const got = r.state.getTask('web.2.a')!;
    expect(got).toMatchObject({ name: 'web.2', service: { name: 'web', slot: 2, version: 1 }, state: 'pending' });
    expect(got.spec.containers[0]!.command).toEqual(['sleep', '100']);
    expect(r.state.listTasks({ service: 'web' }).map((x) => x.id)).toEqual(['web.2.a']);
    // The service tag survives later changes of the task.
    r.ok({ type: 'task.stop', id: 'web.2.a', at: 2500 });
    expect(r.state.getTask('web.2.a')!.service).toEqual({ name: 'web', slot: 2, version: 1 });
  });

  it('never fills a slot twice', () => {
    const r = created();
    expect(task(r, 1, 'web.1.a').ok).toBe(true);
    expect(task(r, 1, 'web.1.b')).toMatchObject({ ok: false, error: { code: 'conflict' } });
    // Start-first: a task of another version may join, one of the same version may not.
    r.ok({ type: 'service.update', name: 'web', spec: svcSpec({ containers: [{ command: ['sleep', '7'] }] }), at: 3000 });
    expect(task(r, 1, 'web.1.c', { exclusive: true })).toMatchObject({ ok: false, error: { code: 'conflict' } });
    expect(task(r, 1, 'web.1.d', { exclusive: false }).ok).toBe(true);
    expect(task(r, 1, 'web.1.e', { exclusive: false })).toMatchObject({ ok: false, error: { code: 'conflict' } });
    // A stopping task still holds its slot for an exclusive create.
    r.ok({ type: 'service.stopTask', name: 'web', taskId: 'web.1.d', term: 1, at: 3100 });
    r.ok({ type: 'task.assign', placements: [], term: 1, at: 3100 });
    expect(r.state.getTask('web.1.d')!.state).toBe('stopped'); // pending: stopped at once
  });

  it('refuses a task of an old version, past replicas, or decided in an old term', () => {
    const r = created();
    expect(task(r, 4)).toMatchObject({ ok: false, error: { code: 'conflict', message: 'Cannot create task web.4 as the service has 3 replicas' } });
    r.ok({ type: 'service.update', name: 'web', spec: svcSpec({ containers: [{ command: ['sleep', '8'] }] }), at: 3000 });
    expect(task(r, 1, 'web.1.x', { version: 1 })).toMatchObject({ ok: false, error: { code: 'conflict' } });
    r.term = 5;
    expect(task(r, 1, 'web.1.y', { term: 4 })).toMatchObject({ ok: false, fenced: true });
    expect(r.state.listTasks({ service: 'web' })).toEqual([]);
  });

  it('stops and removes only its own tasks, and removes only finished ones', () => {
    const r = created();
    r.ok({ type: 'task.create', id: 'other', spec: { ...svcSpec().template.task, name: 'other' }, at: 1000 });
    expect(r.err({ type: 'service.stopTask', name: 'web', taskId: 'other', term: 1, at: 2000 }).code).toBe('not_found');
    expect(r.err({ type: 'service.removeTask', taskId: 'other', term: 1, at: 2000 }).code).toBe('not_found');
    task(r, 1);
    expect(r.err({ type: 'service.removeTask', taskId: 'web.1.a', term: 1, at: 2000 }).code).toBe('conflict');
    r.ok({ type: 'service.stopTask', name: 'web', taskId: 'web.1.a', reason: 'scaled', term: 1, at: 2100 });
    r.ok({ type: 'service.removeTask', taskId: 'web.1.a', term: 1, at: 2200 });
    expect(r.state.getTask('web.1.a')).toBeUndefined();
  });

  it('removing a service stops its tasks and forgets it', () => {
    const r = created();
    r.ok({ type: 'node.register', node: { id: 'w1', resources: { cpu: 4000, memory: 1 << 30 }, drivers: ['process'] }, at: 1000 });
    task(r, 1);
    task(r, 2);
    r.ok({ type: 'task.assign', placements: [{ taskId: 'web.1.a', nodeId: 'w1' }], term: 1, at: 2100 });
    const out = r.ok<{ removed: string; stopping: string[] }>({ type: 'service.remove', name: 'web', at: 2200 });
    expect(out).toEqual({ removed: 'web', stopping: ['web.1.a'] });
    expect(r.state.getService('web')).toBeUndefined();
    expect(r.state.getTask('web.1.a')!.desired).toBe('shutdown');
    expect(r.state.getTask('web.2.a')!.state).toBe('stopped');
    expect(r.err({ type: 'service.remove', name: 'web', at: 2300 }).code).toBe('not_found');
  });

  it("finds a service's tasks without a scan, also after a restore and after a task is removed", () => {
    const r = created();
    task(r, 1);
    task(r, 2);
    r.ok({ type: 'task.create', id: 'plain', spec: { ...svcSpec().template.task, name: 'plain' }, at: 2000 });
    expect(r.state.serviceTasks('web').map((t) => t.id)).toEqual(['web.1.a', 'web.2.a']);
    expect(r.state.serviceTaskOwners()).toEqual(['web']);
    const copy = new Replica(ClusterState.restore(r.state.snapshot()));
    expect(copy.state.serviceTasks('web').map((t) => t.id)).toEqual(['web.1.a', 'web.2.a']);
    // A user's task.remove of a finished service task is noticed; a plain task reusing the id is not the service's.
    r.ok({ type: 'task.stop', id: 'web.2.a', at: 2100 });
    r.ok({ type: 'task.remove', id: 'web.2.a', at: 2200 });
    r.ok({ type: 'task.create', id: 'web.2.a', spec: { ...svcSpec().template.task, name: 'imposter' }, at: 2300 });
    expect(r.state.serviceTasks('web').map((t) => t.id)).toEqual(['web.1.a']);
    // A removed service's tasks are still found by its name until they are gone.
    r.ok({ type: 'service.remove', name: 'web', at: 2400 });
    expect(r.state.serviceTaskOwners()).toEqual(['web']);
    expect(r.state.serviceTasks('web').map((t) => t.desired)).toEqual(['shutdown']);
    r.ok({ type: 'service.removeTask', taskId: 'web.1.a', term: 1, at: 2500 });
    expect(r.state.serviceTasks('web')).toEqual([]);
    expect(r.state.serviceTaskOwners()).toEqual([]);
  });

  it('emits service events', () => {
    const r = new Replica();
    const seen: string[] = [];
    r.state.onEvent((e) => {
      if (e.type === 'service.updated') seen.push(`${e.change}:${e.service.update.state}`);
    });
    r.ok({ type: 'service.create', spec: svcSpec(), at: 1000 });
    r.ok({ type: 'service.scale', name: 'web', replicas: 1, at: 1100 });
    r.ok({ type: 'service.update', name: 'web', spec: svcSpec({ replicas: 1, containers: [{ command: ['x'] }] }), at: 1200 });
    r.ok({ type: 'service.rollback', name: 'web', at: 1300 });
    r.ok({ type: 'service.remove', name: 'web', at: 1400 });
    expect(seen).toEqual(['created:none', 'scale:none', 'spec:updating', 'rollback:rolling_back', 'removed:rolling_back']);
  });
});

describe('snapshots', () => {
  it('include services; two replicas of one log are byte-identical', () => {
    const a = created();
    task(a, 1);
    a.ok({ type: 'service.update', name: 'web', spec: svcSpec({ containers: [{ command: ['sleep', '9'] }] }), at: 3000 });
    const copy = ClusterState.restore(a.state.snapshot());
    expect(copy.getService('web')).toEqual(a.state.getService('web'));
    expect(copy.getTask('web.1.a')!.service).toEqual({ name: 'web', slot: 1, version: 1 });
    expect(text(copy.snapshot())).toBe(text(a.state.snapshot()));
    // The restored state goes on applying service decisions the same way.
    const b = new Replica(copy);
    expect(task(b, 1, 'web.1.z', { exclusive: false }).ok).toBe(true);
  });

  it('a snapshot written before services loads, with none', () => {
    const r = new Replica();
    r.ok({ type: 'task.create', id: 't1', spec: { ...svcSpec().template.task, name: 't1' }, at: 1000 });
    const doc = JSON.parse(text(r.state.snapshot())) as Record<string, unknown>;
    // No services: no section (the bytes a build before services wrote).
    expect('services' in doc).toBe(false);
    const old = ClusterState.restore(new TextEncoder().encode(JSON.stringify(doc)));
    expect(old.listServices()).toEqual([]);
    expect(old.getTask('t1')).toBeDefined();
    const s: Service | undefined = old.getService('web');
    expect(s).toBeUndefined();
    const t: Task | undefined = old.getTask('t1');
    expect(t?.service).toBeUndefined();
  });
});
