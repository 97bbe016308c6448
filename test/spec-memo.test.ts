// Spec validation memoised per template (protocol/spec-memo.ts): a hit must give exactly what a
// full parse gives, specs that differ anywhere but in their name never share an entry, and a
// template accepted under one policy is not accepted from the memo under a stricter one.
import { describe, expect, it } from 'vitest';
import { SpecMemo } from '../src/protocol/spec-memo.js';
import { parseTaskSpec, type ParseTaskSpecOptions } from '../src/protocol/spec.js';
import { FlotillaError } from '../src/protocol/errors.js';
import { ClusterState, encodeCommand } from '../src/manager/state.js';

/** The outcome of a parse: the spec, or the error's message and details. */
function outcome(fn: () => unknown): unknown {
  try {
    return { ok: fn() };
  } catch (e) {
    if (!(e instanceof FlotillaError)) throw e;
    return { error: e.message, details: e.details };
  }
}

const base = { driver: 'process', containers: [{ command: ['sleep', '600'] }] };

describe('SpecMemo', () => {
  it('gives what parseTaskSpec gives, on hits and misses, good and bad input', () => {
    const memo = new SpecMemo();
    const inputs: unknown[] = [
      { name: 'a', ...base },
      { name: 'b', ...base },
      { name: 'c', ...base, resources: { cpu: '0.5', memory: '1g' } },
      { name: 'd', ...base, resources: { cpu: '0.5', memory: '1g' } },
      { name: 'e', ...base, labels: { '10': 'x', '9': 'y', zone: 'eu' } },
      { name: 'f', ...base, labels: { '10': 'x', '9': 'y', zone: 'eu' } },
      { name: 'Bad_Name', ...base },
      { name: 'x'.repeat(64), ...base },
      { name: '', ...base },
      { name: 7, ...base },
      { ...base },
      { name: 'g', driver: 'process', containers: [{ command: [] }] },
      { name: 'h', driver: 'process', containers: [{ command: [] }] },
      { name: 'i', driver: 'docker', containers: [{ command: ['x'] }] },
      { name: 'j', ...base, mounts: ['/a:/b'] },
      { name: 'k', ...base, unknown: 1 },
      { name: 'l', ...base, restart: 'always' },
      { name: 'm', ...base, restart: 'always' },
      null,
      [1],
      'spec',
    ];
    for (const opts of [{}, { allowHostMounts: true }, { action: 'create task [3]' }] as ParseTaskSpecOptions[]) {
      for (const input of [...inputs, ...inputs]) {
        expect(outcome(() => memo.parse(structuredClone(input), opts))).toEqual(outcome(() => parseTaskSpec(structuredClone(input), opts)));
      }
    }
    expect(memo.hits).toBeGreaterThan(0);
  });

  it('never lets two different specs with the same name share an entry', () => {
    const memo = new SpecMemo();
    const one = memo.parse({ name: 'web', ...base });
    const two = memo.parse({ name: 'web', driver: 'process', containers: [{ command: ['sleep', '601'] }] });
    const three = memo.parse({ name: 'web', ...base, resources: { cpu: 200 } });
    expect(one.containers[0]!.command).toEqual(['sleep', '600']);
    expect(two.containers[0]!.command).toEqual(['sleep', '601']);
    expect(three.resources.cpu).toBe(200);
    expect(one.resources.cpu).toBe(100);
    expect(memo.size).toBe(3);
  });

  it('shares one frozen template among the tasks of a template, each with its own name', () => {
    const memo = new SpecMemo();
    const a = memo.parse({ name: 'a', ...base });
    const b = memo.parse({ name: 'b', ...base });
    expect([a.name, b.name]).toEqual(['a', 'b']);
    expect(a.containers).toBe(b.containers);
    expect(Object.isFrozen(a.containers[0]!.command)).toBe(true);
    expect(() => (a.containers[0]!.command as string[]).push('x')).toThrow(TypeError);
    expect(b.containers[0]!.command).toEqual(['sleep', '600']);
    expect(memo.hits).toBe(1);
  });

  it('does not accept from the memo what a stricter policy refuses', () => {
    const memo = new SpecMemo();
    const withMounts = { name: 'a', driver: 'docker', containers: [{ image: 'busybox' }], mounts: ['/data:/data'] };
    expect(memo.parse(withMounts, { allowHostMounts: true }).mounts).toHaveLength(1);
    expect(() => memo.parse({ ...withMounts, name: 'b' }, { allowHostMounts: false })).toThrow(/host mounts are disabled/);
    expect(() => memo.parse({ ...withMounts, name: 'c' })).toThrow(/host mounts are disabled/);
  });

  it('refuses a bad name under a known template with the full parse error', () => {
    const memo = new SpecMemo();
    memo.parse({ name: 'ok', ...base });
    expect(() => memo.parse({ name: 'Not OK', ...base })).toThrow(/'name' must be 1-63 lowercase letters/);
  });

  it('stays within its capacity', () => {
    const memo = new SpecMemo(4);
    for (let i = 0; i < 20; i++) memo.parse({ name: `t${i}`, driver: 'process', containers: [{ command: ['sleep', String(i)] }] });
    expect(memo.size).toBe(4);
  });
});

describe('the state machine with memoised specs', () => {
  it('applies a batch of one template as before: same tasks, byte-identical snapshots, other specs refused', () => {
    const batch = (names: string[], spec: object) =>
      encodeCommand({ type: 'batch', commands: names.map((n, i) => ({ type: 'task.create', id: `${n}-${i}`, spec: { name: n, ...spec } as never, at: 1000 + i })) });
    const a = new ClusterState();
    const b = new ClusterState();
    const first = batch(['a', 'b', 'c'], base);
    const second = batch(['d', 'e'], { driver: 'process', containers: [{ command: [] }] });
    const third = batch(['f'], base);
    for (const [i, data] of [first, second, third].entries()) {
      a.applyEntry(data, { index: i + 1, term: 1 });
      b.applyEntry(data, { index: i + 1, term: 1 });
    }
    expect(a.listTasks().map((t) => t.name)).toEqual(['a', 'b', 'c', 'f']);
    expect(a.getTask('b-1')!.spec).toEqual(parseTaskSpec({ name: 'b', ...base }, { allowHostMounts: true }));
    expect(Buffer.from(a.snapshot()).equals(Buffer.from(b.snapshot()))).toBe(true);
    // A restored replica (specs parsed from the snapshot, not shared) writes the same bytes.
    expect(Buffer.from(ClusterState.restore(a.snapshot()).snapshot()).equals(Buffer.from(a.snapshot()))).toBe(true);
  });
});
