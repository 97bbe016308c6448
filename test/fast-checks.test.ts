// The hand-written fast paths of the log's hottest items: canonical JSON without a replacer
// (state/codec.ts) and the task.create / report checks (state/fast-checks.ts). Each is compared
// with the slow reference on many generated inputs: the JSON must be byte for byte the same,
// and a fast check may only accept what the schema accepts.
import { describe, expect, it } from 'vitest';
import { canonicalJson } from '../src/manager/state.js';
import { isFastReport, isFastTaskCreate } from '../src/manager/state/fast-checks.js';
import { reportSchema, validateBySchema } from '../src/manager/state/commands.js';
import { isPlainObject, toBase64 } from '../src/manager/state/codec.js';

/** The replacer-based canonical JSON the codec used before (the reference). */
function referenceJson(value: unknown): string {
  return JSON.stringify(value, function (this: Record<string, unknown>, key: string, v: unknown) {
    const original = this[key];
    if (original instanceof Uint8Array) return { $bytes: toBase64(original) };
    if (isPlainObject(v)) {
      const sorted: Record<string, unknown> = {};
      for (const k of Object.keys(v).sort()) sorted[k] = v[k];
      return sorted;
    }
    return v;
  });
}

/** A small deterministic generator (no Math.random: a failure reproduces). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const KEYS = ['a', 'b', 'Z', '10', '9', '0', '01', '-1', '4294967295', '4294967294', 'é', '\u2028', '"q"', '__proto__x', 'type', '$bytes', ''];
const SCALARS: unknown[] = [0, -0, 1.5, -7, 1e21, 2 ** 53, NaN, Infinity, 'text', '', 'ü\n\t"\\', '\ud800', true, false, null, undefined];

function value(r: () => number, depth: number): unknown {
  const pick = r();
  if (depth <= 0 || pick < 0.45) return SCALARS[Math.floor(r() * SCALARS.length)];
  if (pick < 0.5) return new Uint8Array(Array.from({ length: Math.floor(r() * 6) }, () => Math.floor(r() * 256)));
  if (pick < 0.53) return Buffer.from('bytes');
  if (pick < 0.55) return new Date(Math.floor(r() * 2e12));
  if (pick < 0.57) return { toJSON: (k: string) => ({ k, z: 1, a: [undefined] }) };
  if (pick < 0.75) {
    const arr: unknown[] = Array.from({ length: Math.floor(r() * 4) }, () => value(r, depth - 1));
    if (r() < 0.1) arr[5] = 1; // holes
    return arr;
  }
  const o: Record<string, unknown> = r() < 0.1 ? Object.create(null) : {};
  const n = Math.floor(r() * 6);
  for (let i = 0; i < n; i++) o[KEYS[Math.floor(r() * KEYS.length)]!] = value(r, depth - 1);
  return o;
}

describe('canonicalJson', () => {
  it('writes exactly what the sorting replacer wrote, for 5,000 generated values', () => {
    const r = rng(42);
    for (let i = 0; i < 5000; i++) {
      const v = value(r, 4);
      expect(canonicalJson(v)).toBe(referenceJson(v));
    }
  });

  it('writes the same for the commands a cluster logs', () => {
    const cmds = [
      { type: 'task.create', id: 'b0-t0-0a1b2c3d', spec: { name: 'b0-t0', containers: [{ name: 'c0', command: ['sleep', '600'], args: [], env: {}, ports: [] }], labels: { '2': 'x', '10': 'y', zone: 'eu' } }, at: 1765000000000, quota: 268435456 },
      { type: 'kv.put', key: 'k', value: new Uint8Array([0, 1, 255]), cas: 0 },
      { type: 'task.report', reports: [{ taskId: 't', nodeId: 'n', state: 'running', at: 1, reason: undefined, attempt: 1 }] },
    ];
    for (const c of cmds) expect(canonicalJson(c)).toBe(referenceJson(c));
    expect(canonicalJson(undefined)).toBe(referenceJson(undefined));
  });
});

describe('fast checks', () => {
  const ids = ['t1', 'b0-t0-0a1b2c3d', '', 'x'.repeat(128), 'x'.repeat(129), '-a', 'a b', 'a:b.c_d', 7, null, undefined];
  const counts = [0, -0, 1, -1, 1.5, 2 ** 53 - 1, 2 ** 53, NaN, '1', undefined, null];

  it('accept a task.create only when the schema accepts it', () => {
    const r = rng(7);
    let fast = 0;
    for (let i = 0; i < 4000; i++) {
      const c: Record<string, unknown> = { type: r() < 0.9 ? 'task.create' : 'task.stop' };
      if (r() < 0.95) c.id = ids[Math.floor(r() * ids.length)];
      if (r() < 0.95) c.at = counts[Math.floor(r() * counts.length)];
      if (r() < 0.9) c.spec = r() < 0.9 ? { name: 'x' } : undefined;
      if (r() < 0.3) c.quota = counts[Math.floor(r() * counts.length)];
      if (r() < 0.2) c.byName = [true, false, 'yes', undefined][Math.floor(r() * 4)];
      if (r() < 0.05) c.extra = r() < 0.5 ? 1 : undefined;
      if (isFastTaskCreate(c)) {
        fast++;
        const v = validateBySchema(c, String(c.type));
        expect('cmd' in v, JSON.stringify(c)).toBe(true);
      }
    }
    expect(fast).toBeGreaterThan(100);
    expect(isFastTaskCreate({ type: 'task.create', id: 't', at: 1, spec: {} })).toBe(true);
  });

  it('accept a report only when the schema accepts it, and the schema gives back the same values', () => {
    const r = rng(9);
    const states = ['running', 'starting', 'succeeded', 'failed', 'stopped', 'assigned', 'pending', 1];
    let fast = 0;
    for (let i = 0; i < 6000; i++) {
      const rep: Record<string, unknown> = {};
      if (r() < 0.95) rep.taskId = ids[Math.floor(r() * ids.length)];
      if (r() < 0.95) rep.nodeId = ids[Math.floor(r() * ids.length)];
      if (r() < 0.95) rep.state = states[Math.floor(r() * states.length)];
      if (r() < 0.95) rep.at = counts[Math.floor(r() * counts.length)];
      if (r() < 0.3) rep.attempt = [1, 2, 0, -1, 1.5, 2 ** 53, undefined, '1'][Math.floor(r() * 8)];
      if (r() < 0.2) rep.exitCode = [0, -1, 137, 1.5, 2 ** 53, undefined, '0'][Math.floor(r() * 7)];
      if (r() < 0.2) rep.reason = ['x', '', 'y'.repeat(4096), 'y'.repeat(4097), undefined, 3][Math.floor(r() * 6)];
      if (r() < 0.2) rep.detail = ['x', 'y'.repeat(4097), undefined][Math.floor(r() * 3)];
      if (r() < 0.05) rep.health = r() < 0.5 ? undefined : { status: 'healthy' };
      if (r() < 0.03) rep.extra = 1;
      if (isFastReport(rep)) {
        fast++;
        const parsed = reportSchema.safeParse(rep);
        expect(parsed.success, JSON.stringify(rep)).toBe(true);
        expect(canonicalJson(parsed.data)).toBe(canonicalJson(rep));
      }
    }
    expect(fast).toBeGreaterThan(100);
  });
});
