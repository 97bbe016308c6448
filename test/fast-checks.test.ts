// The hand-written checks of the log's hottest items, task.create and a worker report
// (state/fast-checks.ts), compared with the zod schemas on many generated inputs: a fast check
// may only accept what the schema accepts, and the schema then gives back the same values.
import { describe, expect, it } from 'vitest';
import { canonicalJson } from '../src/manager/state.js';
import { isFastReport, isFastTaskCreate } from '../src/manager/state/fast-checks.js';
import { reportSchema, validateBySchema } from '../src/manager/state/commands.js';

/** A small deterministic generator (no Math.random: a failure reproduces). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

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
