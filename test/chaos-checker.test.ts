// History checkers of the chaos harness: linearizability of the kv store (read / write / cas
// with versions, unknown outcomes), lost writes, task invariants, Raft invariants from the
// managers' traces, and the report.
import { appendFileSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import { checkLinearizable } from '../chaos/checker/linearizability.js';
import { checkNoLostWrites } from '../chaos/checker/lost-writes.js';
import { renderReport } from '../chaos/checker/report.js';
import { checkTasks, type ProcessInterval } from '../chaos/checker/tasks.js';
import { availableSlots, checkServices, isConverged, updateMinimum, type ServiceProcess, type ServiceSample, type ServiceTaskSample, type WorkerDown } from '../chaos/checker/services.js';
import { checkRaft, checkRaftTraces, parseRaftTrace, type RaftRecord } from '../chaos/checker/raft.js';
import { RaftTraceFile } from '../src/raft/trace.js';
import type { KvVersioned, Op } from '../chaos/checker/types.js';
import { checkAuthAfterHeal, checkWipes, WIPED_REFUSAL, type WipeRecord } from '../chaos/checker/wipes.js';
import { describeAction, FAULT_KINDS, GROW_KEYS, GROW_MAX_BURST_BYTES, GROW_VALUE_BYTES, planSchedule, type ScheduleOptions } from '../chaos/nemesis.js';
import { valueDigest } from '../chaos/workload.js';
import { wipedMessage } from '../src/manager/incarnation.js';
import { checkMesh, stallEpisodes, type MeshRequest, type MeshTableSample, type MeshWorkerDown, type ReplicaFreeze } from '../chaos/checker/mesh.js';
import { MESH_FREEZE_SETTLE_MS, MESH_REQUEST_TIMEOUT_MS, MESH_SETTLE_MS, MESH_STALL_TIMEOUT_MS } from '../chaos/run.js';

// ---------------------------------------------------------------------------------------------
// Tiny DSL for hand-written histories. `at` = [invoke, complete]; complete null = never.

let nextId = 1;
type Outcome = Op['outcome'];
function W(client: number, key: string, value: string, at: [number, number | null], version: number | null = null, outcome: Outcome = 'ok'): Op {
  const op: Op = { id: nextId++, client, key, type: 'write', value, invoke: at[0], complete: at[1], outcome };
  if (outcome === 'ok') op.result = { value, version };
  return op;
}
function C(client: number, key: string, expectVersion: number, value: string, at: [number, number | null], version: number | null = null, outcome: Outcome = 'ok'): Op {
  const op: Op = { id: nextId++, client, key, type: 'cas', value, expectVersion, invoke: at[0], complete: at[1], outcome };
  if (outcome === 'ok') op.result = { value, version };
  return op;
}
function R(client: number, key: string, value: string | null, at: [number, number | null], version: number | null = null, outcome: Outcome = 'ok'): Op {
  const op: Op = { id: nextId++, client, key, type: 'read', invoke: at[0], complete: at[1], outcome };
  if (outcome === 'ok') op.result = { value, version };
  return op;
}
const U = (client: number, key: string, value: string, invoke: number): Op => W(client, key, value, [invoke, null], null, 'unknown');

function verdict(h: Op[], opts?: Parameters<typeof checkLinearizable>[1]): true | false | 'unknown' {
  return checkLinearizable(h, opts).ok;
}

/** A copy without any version information (results keep their values). */
function stripVersions(h: Op[]): Op[] {
  return h.map((o) => ({ ...o, result: o.result === undefined ? undefined : { value: o.result.value, version: null } }));
}

// ---------------------------------------------------------------------------------------------
// Known-good and known-bad histories

describe('checkLinearizable: hand-written histories', () => {
  it('a sequential history is linearizable', () => {
    const h = [
      R(1, 'x', null, [0, 1]),
      W(1, 'x', 'a', [2, 3], 4),
      R(2, 'x', 'a', [4, 5], 4),
      W(2, 'x', 'b', [6, 7], 9),
      R(1, 'x', 'b', [8, 9], 9),
      C(1, 'x', 9, 'c', [10, 11], 12),
      R(3, 'x', 'c', [12, 13], 12),
      C(3, 'x', 9, 'd', [14, 15], null, 'fail'), // conflict: did not happen
      R(2, 'x', 'c', [16, 17], 12),
      R(3, 'x', 'zzz', [18, 19], 1, 'unknown'), // reads that failed or timed out observed nothing
      R(3, 'x', 'zzz', [20, 21], 1, 'fail'),
    ];
    expect(checkLinearizable(h)).toEqual({ ok: true, checked: 8 });
    expect(verdict(stripVersions(h))).toBe(true);
  });

  it('a read overlapping a write may see either the old or the new value', () => {
    const base = () => [W(1, 'x', 'a', [0, 1], 1), W(1, 'x', 'b', [2, 10], 2)];
    expect(verdict([...base(), R(2, 'x', 'a', [3, 5], 1)])).toBe(true);
    expect(verdict([...base(), R(2, 'x', 'b', [3, 5], 2)])).toBe(true);
    // …and two overlapping reads may see new then old only if both overlap the write
    expect(verdict([...base(), R(2, 'x', 'b', [3, 5], 2), R(3, 'x', 'a', [4, 6], 1)])).toBe(true);
    // the write took effect at a point: a read starting after it completed sees it
    expect(verdict([...base(), R(2, 'x', 'b', [3, 5], 2), R(2, 'x', 'b', [11, 12], 2)])).toBe(true);
  });

  it('a stale read after a completed write is not linearizable', () => {
    const h = [W(1, 'x', 'a', [0, 1], 1), W(1, 'x', 'b', [2, 3], 2), R(2, 'x', 'a', [4, 5], 1)];
    const r = checkLinearizable(h);
    expect(r.ok).toBe(false);
    if (r.ok !== false) return;
    expect(r.key).toBe('x');
    expect(r.reason).toMatch(/stale read/);
    expect(r.minimalWindow.map((o) => o.id)).toEqual([h[0]!.id, h[1]!.id, h[2]!.id]);
    // Without versions the search itself must find it.
    const s = checkLinearizable(stripVersions(h));
    expect(s.ok).toBe(false);
    if (s.ok === false) expect(s.minimalWindow.map((o) => o.id)).toContain(h[2]!.id);
    // A read of absent after a completed write is stale too.
    expect(verdict([W(1, 'x', 'a', [0, 1], 1), R(2, 'x', null, [2, 3])])).toBe(false);
    expect(verdict([W(1, 'x', 'a', [0, 1]), R(2, 'x', null, [2, 3])])).toBe(false);
  });

  it('a read of a value never written is not linearizable', () => {
    const h = [W(1, 'x', 'a', [0, 1], 1), R(2, 'x', 'zzz', [2, 3], 5)];
    const r = checkLinearizable(h);
    expect(r).toMatchObject({ ok: false, key: 'x' });
    if (r.ok === false) {
      expect(r.reason).toMatch(/never written/);
      expect(r.minimalWindow.map((o) => o.id)).toEqual([h[1]!.id]);
    }
    // a failed write did not happen: reading its value is a violation as well
    expect(verdict([W(1, 'x', 'a', [0, 1], null, 'fail'), R(2, 'x', 'a', [2, 3])])).toBe(false);
  });

  it('a lost update (two cas on the same version both succeed) is not linearizable', () => {
    const h = [W(1, 'x', 'a', [0, 1], 1), C(1, 'x', 1, 'b', [2, 5], 2), C(2, 'x', 1, 'c', [2, 6], 3)];
    const r = checkLinearizable(h);
    expect(r.ok).toBe(false);
    if (r.ok === false) {
      expect(r.reason).toMatch(/lost update/);
      expect(r.minimalWindow).toHaveLength(3);
    }
    expect(verdict(stripVersions(h))).toBe(false);
    // sequential cas on successive versions is fine, a conflicting one that failed too
    expect(verdict([W(1, 'x', 'a', [0, 1], 1), C(1, 'x', 1, 'b', [2, 5], 2), C(2, 'x', 2, 'c', [2, 6], 3), C(3, 'x', 1, 'd', [2, 6], null, 'fail')])).toBe(true);
    // create-if-absent twice
    expect(verdict([C(1, 'x', 0, 'a', [0, 3], 1), C(2, 'x', 0, 'b', [1, 4], 2)])).toBe(false);
    expect(verdict([C(1, 'x', 0, 'a', [0, 3], 1), C(2, 'x', 0, 'b', [1, 4], null, 'fail')])).toBe(true);
  });

  it('cas needs the expected version to be current', () => {
    // cas expecting v1 after v2 was written and acknowledged
    expect(verdict([W(1, 'x', 'a', [0, 1], 1), W(1, 'x', 'b', [2, 3], 2), C(2, 'x', 1, 'c', [4, 5], 3)])).toBe(false);
    // the version a cas expects may come from an unknown write, pinned by a later read
    expect(verdict([W(1, 'x', 'a', [0, 1], 1), U(2, 'x', 'b', 2), C(1, 'x', 7, 'c', [10, 11], 8), R(3, 'x', 'b', [3, 4], 7)])).toBe(true);
    // …or from an unknown write whose version nobody read (cas binds it)
    expect(verdict([W(1, 'x', 'a', [0, 1], 1), U(2, 'x', 'b', 2), C(1, 'x', 7, 'c', [10, 11], 8)])).toBe(true);
    // an unknown write may also land after the cas…
    expect(verdict([W(1, 'x', 'a', [0, 1], 5), U(2, 'x', 'b', 2), C(1, 'x', 5, 'c', [10, 11], 8), R(3, 'x', 'b', [12, 13])])).toBe(true);
    // …but not when it was read before the cas began: then the cas's expected version is gone
    expect(verdict([W(1, 'x', 'a', [0, 1], 5), U(2, 'x', 'b', 2), R(3, 'x', 'b', [3, 4]), C(1, 'x', 5, 'c', [10, 11], 8)])).toBe(false);
  });

  it('an unknown write that took effect (observed later) is fine', () => {
    expect(verdict([W(1, 'x', 'a', [0, 1], 1), U(1, 'x', 'b', 2), R(2, 'x', 'b', [10, 11], 5), R(3, 'x', 'b', [12, 13], 5)])).toBe(true);
    // observed, then overwritten
    expect(verdict([W(1, 'x', 'a', [0, 1], 1), U(1, 'x', 'b', 2), R(2, 'x', 'b', [10, 11], 5), W(3, 'x', 'c', [12, 13], 6), R(2, 'x', 'c', [14, 15], 6)])).toBe(true);
    // it may take effect long after the client gave up, even after other writes
    expect(verdict([W(1, 'x', 'a', [0, 1], 1), U(1, 'x', 'b', 2), W(2, 'x', 'c', [10, 11], 3), R(2, 'x', 'b', [20, 21], 9)])).toBe(true);
    // without versions as well
    expect(verdict(stripVersions([W(1, 'x', 'a', [0, 1], 1), U(1, 'x', 'b', 2), W(2, 'x', 'c', [10, 11], 3), R(2, 'x', 'b', [20, 21], 9)]))).toBe(true);
  });

  it('an unknown write never observed is fine', () => {
    expect(verdict([W(1, 'x', 'a', [0, 1], 1), U(1, 'x', 'b', 2), R(2, 'x', 'a', [10, 11], 1), W(2, 'x', 'c', [12, 13], 3), R(1, 'x', 'c', [14, 15], 3)])).toBe(true);
    // an unknown cas never observed, with many unknown ops around
    const h: Op[] = [W(1, 'x', 'a', [0, 1], 1)];
    for (let i = 0; i < 40; i++) h.push(U(2 + i, 'x', `u${i}`, 2 + i));
    h.push(C(1, 'x', 1, 'b', [50, 51], 60), R(1, 'x', 'b', [52, 53], 60));
    expect(verdict(h)).toBe(true);
  });

  it('an unknown write observed before its invoke is not linearizable', () => {
    const h = [W(1, 'x', 'a', [0, 1], 1), R(2, 'x', 'b', [2, 3], 5), U(1, 'x', 'b', 5)];
    const r = checkLinearizable(h);
    expect(r.ok).toBe(false);
    if (r.ok === false) expect(r.reason).toMatch(/before it was written/);
    expect(verdict(stripVersions(h))).toBe(false);
  });

  it('an unknown write cannot take effect twice, nor its version disagree', () => {
    // observed, overwritten, observed again: a single write happens once
    expect(verdict([W(1, 'x', 'a', [0, 1], 1), U(1, 'x', 'b', 2), R(2, 'x', 'b', [3, 4]), W(2, 'x', 'c', [5, 6], 8), R(3, 'x', 'b', [7, 9])])).toBe(false);
    // two reads report different versions for the same single write
    expect(verdict([W(1, 'x', 'a', [0, 1], 1), U(1, 'x', 'b', 2), R(2, 'x', 'b', [3, 4], 5), R(3, 'x', 'b', [5, 6], 6)])).toBe(false);
  });

  it('a read older than a preceding non-overlapping read is not linearizable', () => {
    // the write of b is still in flight: reading b then a is only possible if the reads overlap
    const mk = (c1: number, c2: number, gap: boolean) => [
      W(1, 'x', 'a', [0, 1], 1),
      W(1, 'x', 'b', [2, 20], 2),
      R(c1, 'x', 'b', [3, 5], 2),
      R(c2, 'x', 'a', gap ? [6, 7] : [4, 7], 1),
    ];
    expect(verdict(mk(2, 2, true))).toBe(false); // same client
    expect(verdict(mk(2, 3, true))).toBe(false); // across clients
    expect(verdict(mk(2, 3, false))).toBe(true); // overlapping reads: either order
    expect(verdict(stripVersions(mk(2, 3, true)))).toBe(false);
    expect(verdict(stripVersions(mk(2, 3, false)))).toBe(true);
    const r = checkLinearizable(mk(2, 3, true));
    if (r.ok === false) expect(r.reason).toMatch(/stale read/);
  });

  it('keys are independent', () => {
    // Merged into one register this would be a stale read; per key it is fine.
    const h = [W(1, 'x', 'a', [0, 1], 1), W(2, 'y', 'b', [2, 3], 2), R(3, 'x', 'a', [4, 5], 1), R(3, 'y', 'b', [4, 5], 2)];
    expect(checkLinearizable(h)).toEqual({ ok: true, checked: 4 });
    // A violation on y is reported on y, whatever x does.
    const bad = [...h, W(1, 'y', 'c', [6, 7], 3), R(2, 'y', 'b', [8, 9], 2), R(3, 'x', 'a', [8, 9], 1)];
    expect(checkLinearizable(bad)).toMatchObject({ ok: false, key: 'y' });
  });

  it('honours the initial contents', () => {
    const initial = new Map<string, KvVersioned | null>([['x', { value: 'init', version: 3 }]]);
    expect(verdict([R(1, 'x', 'init', [0, 1], 3), C(1, 'x', 3, 'a', [2, 3], 4)], { initial })).toBe(true);
    expect(verdict([R(1, 'x', 'init', [0, 1], 3)])).toBe(false);
    expect(verdict([R(1, 'x', null, [0, 1])], { initial })).toBe(false);
  });

  it('explains a violation found by the search with a small window and a witness', () => {
    // Versions-free, so only the search can see it: b overwrote a (in real time), c overwrote b,
    // then a reader sees b again.
    const h: Op[] = [];
    for (let i = 0; i < 10; i++) h.push(W(1, 'x', `v${i}`, [i * 10, i * 10 + 5]), R(2, 'x', `v${i}`, [i * 10 + 6, i * 10 + 8]));
    h.push(R(3, 'x', 'v5', [200, 201]));
    const r = checkLinearizable(h);
    expect(r.ok).toBe(false);
    if (r.ok !== false) return;
    expect(r.minimalWindow.length).toBeLessThanOrEqual(12);
    expect(r.minimalWindow.map((o) => o.id)).toContain(h[h.length - 1]!.id);
    expect(r.witness).toMatch(/longest linearizable prefix/);
    expect(r.reason).toMatch(/"v9"/);
  });

  it('returns unknown when the search limit is reached', () => {
    const h: Op[] = [];
    for (let i = 0; i < 12; i++) h.push(W(i, 'x', `w${i}`, [0, 100]));
    h.push(R(99, 'x', 'w3', [101, 102]));
    expect(checkLinearizable(h, { maxStates: 3 })).toMatchObject({ ok: 'unknown', reason: 'search limit reached' });
    expect(checkLinearizable(h, { timeoutSteps: 5 })).toMatchObject({ ok: 'unknown' });
    expect(verdict(h)).toBe(true);
  });

  it('rejects malformed ops', () => {
    expect(() => checkLinearizable([{ id: 1, client: 1, key: 'x', type: 'read', invoke: 0, complete: 1, outcome: 'ok' }])).toThrow(/malformed/);
    expect(() => checkLinearizable([{ id: 1, client: 1, key: 'x', type: 'cas', value: 'a', invoke: 0, complete: 1, outcome: 'ok' }])).toThrow(/expectVersion/);
  });
});

// ---------------------------------------------------------------------------------------------
// Generated histories from a real sequential register

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface GenOpts {
  seed: number;
  ops: number;
  keys: number;
  clients: number;
  latency?: number;
  readRate?: number;
  casRate?: number;
  unknownRate?: number;
  failRate?: number;
}

/**
 * Concurrent clients against one true register per key. Each op takes effect at a random point
 * inside its interval (unknown ops: maybe never, maybe long after the client gave up). Versions
 * are a shared, gappy "Raft index". Written values are unique.
 */
function generate(o: GenOpts): Op[] {
  const rnd = mulberry32(o.seed);
  const int = (a: number, b: number): number => a + Math.floor(rnd() * (b - a + 1));
  const latency = o.latency ?? 10;
  const readRate = o.readRate ?? 0.5;
  const casRate = o.casRate ?? 0.2;
  const unknownRate = o.unknownRate ?? 0.05;
  const failRate = o.failRate ?? 0.02;
  const free = Array.from({ length: o.clients }, () => int(0, latency));
  const ops: Op[] = [];
  const events: { t: number; kind: 0 | 1; op: Op }[] = []; // 0 = effect, 1 = invoke (of a cas)
  for (let id = 0; id < o.ops; id++) {
    let c = 0;
    for (let i = 1; i < free.length; i++) if (free[i]! < free[c]!) c = i;
    const invoke = free[c]!;
    const key = `k${int(0, o.keys - 1)}`;
    const roll = rnd();
    const type: Op['type'] = roll < readRate ? 'read' : roll < readRate + casRate ? 'cas' : 'write';
    const unknown = rnd() < unknownRate;
    const failed = !unknown && type !== 'read' && rnd() < failRate;
    const lp = invoke + int(0, latency);
    const complete = lp + int(0, latency);
    const op: Op = { id, client: c, key, type, invoke, complete: unknown ? null : complete, outcome: unknown ? 'unknown' : failed ? 'fail' : 'ok' };
    if (type !== 'read') op.value = `${key}:${id}`;
    ops.push(op);
    if (type === 'cas') events.push({ t: invoke, kind: 1, op });
    if (!failed && (!unknown || (type !== 'read' && rnd() < 0.5))) events.push({ t: unknown ? invoke + int(0, 4 * latency) : lp, kind: 0, op });
    free[c] = unknown ? invoke + 2 * latency : complete + int(1, 3);
  }
  events.sort((a, b) => a.t - b.t || a.kind - b.kind);
  const reg = new Map<string, { value: string; version: number }>();
  const seen = new Map<string, number>(); // client+key → last version the client saw
  let index = 0;
  for (const e of events) {
    const op = e.op;
    const cur = reg.get(op.key);
    const ck = `${op.client}/${op.key}`;
    if (e.kind === 1) {
      op.expectVersion = rnd() < 0.6 ? (cur?.version ?? 0) : (seen.get(ck) ?? 0);
      continue;
    }
    if (op.type === 'read') {
      op.result = cur === undefined ? { value: null, version: null } : { value: cur.value, version: cur.version };
      if (cur !== undefined) seen.set(ck, cur.version);
      continue;
    }
    if (op.type === 'cas' && (cur?.version ?? 0) !== op.expectVersion) {
      if (op.outcome === 'ok') op.outcome = 'fail'; // 409
      continue;
    }
    index += int(1, 3);
    reg.set(op.key, { value: op.value!, version: index });
    if (op.outcome === 'ok') {
      op.result = { value: op.value!, version: index };
      seen.set(ck, index);
    }
  }
  for (const op of ops) if (op.type === 'cas' && op.expectVersion === undefined) op.expectVersion = 0;
  return ops;
}

function finalStateOf(h: Op[]): Map<string, KvVersioned | null> {
  // The last effect in version order is the final value; unknown effects are not recorded in the
  // history, so recompute from the generator's acknowledged writes and observed reads: the write
  // with the highest version among ok ops (tests only use histories without unknown ops here).
  const m = new Map<string, KvVersioned | null>();
  for (const op of h) {
    if (op.type === 'read' || op.outcome !== 'ok') {
      if (!m.has(op.key)) m.set(op.key, null);
      continue;
    }
    const cur = m.get(op.key);
    if (cur === undefined || cur === null || cur.version < op.result!.version!) m.set(op.key, { value: op.value!, version: op.result!.version! });
  }
  return m;
}

/**
 * Make one ok read return a value that is certainly stale: the value of an ok write Wold when an
 * ok write Wnew with a higher version completed before the read was invoked. Wnew follows Wold
 * in every linearization (versions increase), the read follows Wnew (real time), and Wold's value
 * is written once: no linearization lets the read see it. With `realTime`, Wold also completed
 * before Wnew was invoked, so the violation stands even with all versions stripped.
 */
function mutateStale(h: Op[], seed: number, realTime = false): { history: Op[]; read: Op } | undefined {
  const rnd = mulberry32(seed);
  const reads = h.filter((o) => o.type === 'read' && o.outcome === 'ok');
  const writes = h.filter((o) => o.type !== 'read' && o.outcome === 'ok');
  for (let tries = 0; tries < 200 && reads.length > 0; tries++) {
    const r = reads[Math.floor(rnd() * reads.length)]!;
    const newer = writes.filter((w) => w.key === r.key && w.complete! < r.invoke);
    if (newer.length === 0) continue;
    const wNew = newer[Math.floor(rnd() * newer.length)]!;
    const older = writes.filter((w) => w.key === r.key && w.result!.version! < wNew.result!.version! && (!realTime || w.complete! < wNew.invoke));
    if (older.length === 0) continue;
    const wOld = older[Math.floor(rnd() * older.length)]!;
    const read: Op = { ...r, result: { value: wOld.value!, version: wOld.result!.version } };
    return { history: h.map((o) => (o === r ? read : o)), read };
  }
  return undefined;
}

describe('checkLinearizable: generated histories', () => {
  it('histories of a real register are always linearizable (with and without versions)', () => {
    for (let seed = 1; seed <= 150; seed++) {
      const h = generate({ seed, ops: 40 + (seed % 5) * 30, keys: 1 + (seed % 3), clients: 2 + (seed % 7), unknownRate: (seed % 4) * 0.05 });
      const r = checkLinearizable(h);
      if (r.ok !== true) throw new Error(`seed ${seed}: ${JSON.stringify(r, null, 1)}`);
      const s = checkLinearizable(stripVersions(h));
      if (s.ok !== true) throw new Error(`seed ${seed} (no versions): ${JSON.stringify(s, null, 1)}`);
    }
  });

  it('a stale read planted in a generated history is always detected', () => {
    let planted = 0;
    for (let seed = 1; seed <= 150; seed++) {
      const h = generate({ seed, ops: 60 + (seed % 4) * 40, keys: 1 + (seed % 2), clients: 2 + (seed % 6), unknownRate: (seed % 3) * 0.05 });
      const m = mutateStale(h, seed);
      if (m !== undefined) {
        planted++;
        const r = checkLinearizable(m.history);
        if (r.ok !== false) throw new Error(`seed ${seed}: stale read #${m.read.id} not detected`);
        expect(r.minimalWindow.map((o) => o.id)).toContain(m.read.id);
        // only the read's version gone: the search must still find it
        const noReadVersions = m.history.map((o) => (o.type === 'read' && o.result !== undefined ? { ...o, result: { ...o.result, version: null } } : o));
        expect(verdict(noReadVersions), `seed ${seed}`).toBe(false);
      }
      const mt = mutateStale(h, seed + 1000, true);
      if (mt !== undefined) {
        planted++;
        expect(verdict(stripVersions(mt.history)), `seed ${seed} (real time, no versions)`).toBe(false);
      }
    }
    expect(planted).toBeGreaterThan(200);
  });

  it('agrees with a brute-force checker on small random histories', () => {
    const rnd = mulberry32(42);
    const int = (a: number, b: number): number => a + Math.floor(rnd() * (b - a + 1));
    const pick = <T>(xs: readonly T[]): T => xs[int(0, xs.length - 1)]!;
    let good = 0;
    let bad = 0;
    for (let n = 0; n < 3000; n++) {
      let h: Op[];
      if (n % 2 === 0) {
        // a valid history, then (sometimes) one random field changed
        h = generate({ seed: 10_000 + n, ops: int(2, 7), keys: 1, clients: int(1, 4), unknownRate: 0.25, latency: 4 });
        if (rnd() < 0.6 && h.length > 0) {
          const i = int(0, h.length - 1);
          const o = { ...h[i]! };
          const f = int(0, 3);
          if (f === 0 && o.result !== undefined) o.result = { value: o.type === 'read' ? pick(['k0:0', 'k0:1', 'k0:2', null]) : o.result.value, version: o.result.version };
          else if (f === 1 && o.result !== undefined) o.result = { value: o.result.value, version: pick([null, 1, 2, 3, 4, 5]) };
          else if (f === 2) o.invoke = Math.max(0, o.invoke + int(-8, 8));
          else if (o.type === 'cas') o.expectVersion = int(0, 5);
          if (o.complete !== null && o.complete < o.invoke) o.complete = o.invoke;
          h[i] = o;
        }
      } else {
        // fully random
        h = [];
        const k = int(1, 6);
        for (let i = 0; i < k; i++) {
          const invoke = int(0, 10);
          const outcome = pick<Outcome>(['ok', 'ok', 'ok', 'unknown', 'fail']);
          const at: [number, number | null] = [invoke, outcome === 'unknown' ? null : invoke + int(0, 5)];
          const type = pick(['read', 'write', 'cas'] as const);
          const v = pick(['a', 'b', 'c']);
          const ver = pick([null, 1, 2, 3, 4]);
          if (type === 'read') h.push(R(i, 'x', pick(['a', 'b', 'c', null]), at, ver, outcome));
          else if (type === 'write') h.push(W(i, 'x', v, at, ver, outcome));
          else h.push(C(i, 'x', int(0, 3), v, at, ver, outcome));
        }
      }
      const expected = bruteForce(h);
      const got = checkLinearizable(h).ok;
      if (got !== expected) throw new Error(`disagreement (checker ${got}, brute force ${expected}) on ${JSON.stringify(h)}`);
      if (expected) good++;
      else bad++;
    }
    expect(good).toBeGreaterThan(300);
    expect(bad).toBeGreaterThan(300);
  });
});

/**
 * Exhaustive reference: tries every order and subset of unknown writes, with concrete integer
 * versions for writes that report none (all values up to a bound). Exponential; tiny inputs only.
 */
function bruteForce(history: Op[]): boolean {
  const keys = new Set(history.map((o) => o.key));
  for (const key of keys) {
    const ops = history.filter((o) => o.key === key && o.outcome !== 'fail' && !(o.type === 'read' && o.outcome !== 'ok'));
    const end = (o: Op): number => (o.outcome === 'unknown' || o.complete === null ? Infinity : o.complete);
    let bound = ops.length + 2;
    for (const o of ops) bound = Math.max(bound, (o.result?.version ?? 0) + ops.length + 2, (o.expectVersion ?? 0) + ops.length + 2);
    const placed = ops.map(() => false);
    let requiredLeft = ops.filter((o) => o.outcome === 'ok').length;
    const dfs = (value: string | null, ver: number): boolean => {
      if (requiredLeft === 0) return true;
      for (let i = 0; i < ops.length; i++) {
        if (placed[i]) continue;
        const o = ops[i]!;
        if (ops.some((p, j) => j !== i && !placed[j] && end(p) < o.invoke)) continue;
        const nexts: [string | null, number][] = [];
        if (o.type === 'read') {
          if (o.result!.value !== value) continue;
          if (value !== null && o.result!.version !== null && o.result!.version !== ver) continue;
          nexts.push([value, ver]);
        } else {
          if (o.type === 'cas' && o.expectVersion !== ver) continue;
          const rv = o.outcome === 'ok' ? (o.result?.version ?? null) : null;
          if (rv !== null) {
            if (rv > ver) nexts.push([o.value!, rv]);
          } else for (let v = ver + 1; v <= bound; v++) nexts.push([o.value!, v]);
        }
        placed[i] = true;
        if (o.outcome === 'ok') requiredLeft--;
        for (const [nv, nver] of nexts) {
          if (dfs(nv, nver)) {
            placed[i] = false;
            if (o.outcome === 'ok') requiredLeft++;
            return true;
          }
        }
        placed[i] = false;
        if (o.outcome === 'ok') requiredLeft++;
      }
      return false;
    };
    if (!dfs(null, 0)) return false;
  }
  return true;
}

describe('checkLinearizable: performance', () => {
  it('2,000 ops over 4 keys with 10 clients check in well under 2 s', () => {
    const h = generate({ seed: 7, ops: 2000, keys: 4, clients: 10, unknownRate: 0.05 });
    const t0 = performance.now();
    const r = checkLinearizable(h);
    const ms = performance.now() - t0;
    console.log(`linearizability: 2,000 ops / 4 keys / 10 clients: ${ms.toFixed(1)} ms`);
    expect(r).toEqual({ ok: true, checked: expect.any(Number) });
    expect(ms).toBeLessThan(2000);
    const m = mutateStale(h, 7)!;
    const t1 = performance.now();
    expect(checkLinearizable(m.history).ok).toBe(false);
    console.log(`  with a planted stale read: ${(performance.now() - t1).toFixed(1)} ms`);
  });

  it('3,000 ops on one key with 16 clients and unknown outcomes', () => {
    const h = generate({ seed: 11, ops: 3000, keys: 1, clients: 16, unknownRate: 0.1, latency: 20 });
    for (const [label, hist] of [
      ['versions', h],
      ['no read versions', h.map((o) => (o.type === 'read' && o.result !== undefined ? { ...o, result: { ...o.result, version: null } } : o))],
    ] as const) {
      const t0 = performance.now();
      const r = checkLinearizable(hist);
      const ms = performance.now() - t0;
      console.log(`linearizability: 3,000 ops / 1 key / 16 clients (${label}): ${ms.toFixed(1)} ms`);
      expect(r.ok).toBe(true);
      expect(ms).toBeLessThan(label === 'versions' ? 2000 : 5000);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Lost writes

describe('checkNoLostWrites', () => {
  it('accepts visible and overwritten writes', () => {
    const h = generate({ seed: 3, ops: 300, keys: 3, clients: 5, unknownRate: 0 });
    const r = checkNoLostWrites(h, finalStateOf(h));
    expect(r.ok).toBe(true);
    expect(r.lost).toEqual([]);
    expect(r.checked).toBeGreaterThan(50);
  });

  it('reports an acknowledged write whose version is newer than the final one', () => {
    const h = [W(1, 'x', 'a', [0, 1], 3), W(2, 'x', 'b', [2, 3], 5), W(1, 'y', 'c', [0, 1], 4)];
    const r = checkNoLostWrites(
      h,
      new Map([
        ['x', { value: 'a', version: 3 }],
        ['y', null],
      ]),
    );
    expect(r.ok).toBe(false);
    expect(r.lost.map((l) => l.op.id).sort()).toEqual([h[1]!.id, h[2]!.id].sort());
    expect(r.lost.find((l) => l.op.id === h[1]!.id)!.reason).toMatch(/older than the acknowledged v5/);
    expect(r.lost.find((l) => l.op.id === h[2]!.id)!.reason).toMatch(/absent/);
  });

  it('judges writes without versions by real-time order', () => {
    const h = [W(1, 'x', 'a', [0, 1]), W(2, 'x', 'b', [2, 3]), U(3, 'x', 'c', 0)];
    // b completed after a was invoked, so a final a is a lost b
    expect(checkNoLostWrites(h, new Map([['x', { value: 'a', version: 9 }]])).lost.map((l) => l.op.id)).toEqual([h[1]!.id]);
    // c (unknown, may land any time after 0) can overwrite both
    expect(checkNoLostWrites(h, new Map([['x', { value: 'c', version: 9 }]])).ok).toBe(true);
    expect(checkNoLostWrites(h, new Map([['x', { value: 'b', version: 9 }]])).ok).toBe(true);
  });

  it('reports a final value nobody wrote, same-version corruption, and unread keys', () => {
    const h = [W(1, 'x', 'a', [0, 1], 3), W(1, 'z', 'q', [0, 1], 4)];
    const r = checkNoLostWrites(h, new Map([['x', { value: 'zzz', version: 3 }]]));
    expect(r.ok).toBe(false);
    expect(r.lost).toHaveLength(1);
    expect(r.unexplained.map((u) => u.key)).toEqual(['x']);
    expect(r.unchecked).toEqual(['z']);
    // the final value was written, but at another version than the key ends with
    const v = checkNoLostWrites(h, new Map([['x', { value: 'a', version: 7 }]]));
    expect(v.lost).toEqual([]);
    expect(v.unexplained.map((u) => u.reason)).toEqual(['final value "a" has v7, but it was written at v3 (#' + h[0]!.id + ')']);
  });
});

// ---------------------------------------------------------------------------------------------
// Tasks

describe('checkTasks', () => {
  const proc = (taskId: string, attempt: number, node: string, from: number, to: number | null, pid = 100): ProcessInterval => ({ taskId, attempt, node, pid, from, to });

  it('accepts a clean run', () => {
    const r = checkTasks({
      submissions: [
        { taskId: 't1', at: 0, acknowledged: true },
        { taskId: 't2', at: 0, acknowledged: true },
        { taskId: 't3', at: 0, acknowledged: false },
      ],
      observations: [
        { taskId: 't1', node: 'n1', state: 'running', attempt: 1, at: 5 },
        { taskId: 't1', node: 'n1', state: 'lost', attempt: 1, at: 20, reason: 'node n1 is down (no heartbeat)' },
        { taskId: 't1', node: 'n2', state: 'running', attempt: 2, at: 30 },
        { taskId: 't2', node: 'n2', state: 'succeeded', attempt: 1, at: 9 },
      ],
      processes: [proc('t1', 1, 'n1', 3, 18), proc('t1', 2, 'n2', 18, null), proc('t1', 2, 'n2', 40, 50, 101)],
    });
    expect(r).toEqual({ ok: true, tasks: 3, violations: [] });
  });

  it('reports a task running twice at once', () => {
    const r = checkTasks({ observations: [], processes: [proc('t1', 1, 'n1', 0, 20), proc('t1', 2, 'n2', 10, null), proc('t2', 1, 'n1', 0, 5), proc('t2', 1, 'n2', 3, 4)] });
    expect(r.ok).toBe(false);
    expect(r.violations.map((v) => [v.kind, v.taskId])).toEqual([
      ['double-run', 't1'],
      ['double-run', 't2'],
    ]);
    const v = r.violations[0]!;
    if (v.kind === 'double-run') expect(v.overlap).toEqual({ from: 10, to: 20 });
  });

  it('reports acknowledged submissions that never started, optionally within a deadline', () => {
    const events = {
      submissions: [
        { taskId: 't1', at: 0, acknowledged: true },
        { taskId: 't2', at: 0, acknowledged: true },
      ],
      observations: [
        { taskId: 't1', node: null, state: 'pending', attempt: 0, at: 5 },
        { taskId: 't2', node: 'n1', state: 'running', attempt: 1, at: 50 },
      ],
    };
    expect(checkTasks(events).violations.map((v) => [v.kind, v.taskId])).toEqual([['never-started', 't1']]);
    expect(checkTasks(events, { settleWithin: 30 }).violations.map((v) => v.taskId)).toEqual(['t1', 't2']);
  });

  it('reports lost without a reason and vanished tasks', () => {
    const r = checkTasks({
      submissions: [
        { taskId: 't1', at: 0, acknowledged: true },
        { taskId: 't2', at: 0, acknowledged: true, removedAt: 40 },
      ],
      observations: [
        { taskId: 't1', node: 'n1', state: 'lost', attempt: 1, at: 10, reason: ' ' },
        { taskId: 't1', node: 'n1', state: 'lost', attempt: 1, at: 11 },
        { taskId: 't1', node: null, state: 'absent', attempt: 0, at: 30 },
        { taskId: 't2', node: 'n1', state: 'succeeded', attempt: 1, at: 10 },
        { taskId: 't2', node: null, state: 'absent', attempt: 0, at: 50 },
      ],
    });
    expect(r.violations.map((v) => [v.kind, v.taskId])).toEqual([
      ['lost-without-reason', 't1'],
      ['vanished', 't1'],
    ]);
  });
});

// ---------------------------------------------------------------------------------------------
// Raft invariants from the managers' traces

/** Trace text: each life is a pid and its records (t is filled in). */
type Rec = Exclude<RaftRecord, { k: 'start' }> extends infer R ? (R extends { t: number } ? Omit<R, 't'> : never) : never;
function trace(node: string, ...lives: [pid: number, ...records: Rec[]][]): string {
  let t = 1000;
  const lines: string[] = [];
  for (const [pid, ...records] of lives) {
    lines.push(JSON.stringify({ k: 'start', node, pid, t: t++ }));
    for (const r of records) lines.push(JSON.stringify({ ...r, t: t++ }));
  }
  return lines.join('\n') + '\n';
}
const leader = (term: number): Rec => ({ k: 'leader', term });
const commit = (c: number, term: number): Rec => ({ k: 'commit', commit: c, term });
const ents = (from: number, to: number, term: number): Rec => ({ k: 'entries', from, to, term });
const snap = (index: number, term: number): Rec => ({ k: 'snapshot', index, term, from: 'leader' });

/** A healthy 3-node history: m1 leads term 2, m2 term 3 (after m1 restarts), m3 catches up by snapshot. */
function goodTraces(): Record<string, string> {
  return {
    m1: trace(
      'm1',
      [100, commit(3, 1), ents(1, 3, 1), leader(2), commit(10, 2), ents(4, 10, 2)],
      // restarted: the commit index is not durable (lower at start), entries are re-applied
      [101, commit(6, 3), ents(1, 3, 1), ents(4, 6, 2), commit(14, 3), ents(7, 10, 2), ents(11, 14, 3)],
    ),
    m2: trace('m2', [200, commit(3, 1), ents(1, 3, 1), commit(10, 2), ents(4, 10, 2), leader(3), commit(14, 3), ents(11, 14, 3), { k: 'stepdown', term: 4 }]),
    m3: trace('m3', [300, commit(3, 1), ents(1, 3, 1), snap(12, 3), commit(14, 3), ents(13, 14, 3)]),
  };
}

describe('checkRaft', () => {
  it('accepts a healthy history and summarises it', () => {
    const r = checkRaftTraces(goodTraces(), { expectedNodes: ['m1', 'm2', 'm3'] });
    expect(r.violations).toEqual([]);
    expect(r.ok).toBe(true);
    expect(r.leaders).toEqual([
      { term: 2, nodes: ['m1'] },
      { term: 3, nodes: ['m2'] },
    ]);
    expect(r.committed).toMatchObject({ indexes: 14, maxIndex: 14 });
    expect(r.committed.crossChecked).toBe(14); // every index is given by two records or more
    expect(r.nodes.map((n) => [n.node, n.lives, n.records, n.maxCommit])).toEqual([
      ['m1', 2, 13, 14],
      ['m2', 1, 9, 14],
      ['m3', 1, 6, 14],
    ]);
  });

  it('catches two leaders in one term (any nodes, any lives)', () => {
    const t = goodTraces();
    t.m3 = trace('m3', [300, commit(3, 1), ents(1, 3, 1)], [301, leader(3)]);
    const r = checkRaftTraces(t);
    expect(r.ok).toBe(false);
    expect(r.violations).toHaveLength(1);
    const v = r.violations[0]!;
    expect(v).toMatchObject({ kind: 'two-leaders', term: 3 });
    if (v.kind !== 'two-leaders') return;
    expect(v.leaders.map((l) => [l.node, l.life, l.pid]).sort()).toEqual([
      ['m2', 1, 200],
      ['m3', 2, 301],
    ]);
    expect(v.message).toMatch(/^term 3 has 2 leaders: (m2 \(life 1, pid 200\)|m3 \(life 2, pid 301\)) at \d+, (m2|m3) \(life \d, pid \d+\) at \d+$/);
    expect(r.leaders.find((l) => l.term === 3)!.nodes.sort()).toEqual(['m2', 'm3']);
  });

  it('catches a commit index going backwards within one process life, not across lives', () => {
    const t = goodTraces();
    t.m2 = trace('m2', [200, commit(3, 1), ents(1, 3, 1), commit(10, 2), commit(8, 2), commit(12, 3)]);
    const r = checkRaftTraces(t, { epochMs: 0 });
    expect(r.ok).toBe(false);
    expect(r.violations).toEqual([
      expect.objectContaining({ kind: 'commit-decreased', node: 'm2', life: 1, pid: 200, from: 10, to: 8 }),
    ]);
    expect(r.violations[0]!.message).toMatch(/m2 \(life 1, pid 200\): commit index went back from 10 to 8 at \+1\.\d{3}s/);
    // The same values in two lives of m1 (10, then 6 after a restart) were accepted above.
    expect(checkRaftTraces(goodTraces()).ok).toBe(true);
  });

  it('catches conflicting terms at the same committed index', () => {
    const t = goodTraces();
    // m3 applied 11..14 with term 4 where the others have term 3.
    t.m3 = trace('m3', [300, commit(3, 1), ents(1, 3, 1), ents(4, 10, 2), ents(11, 14, 4)]);
    const r = checkRaftTraces(t);
    expect(r.ok).toBe(false);
    const mism = r.violations.filter((v) => v.kind === 'log-mismatch');
    expect(mism.length).toBeGreaterThan(0);
    const v = mism[0]!;
    if (v.kind !== 'log-mismatch') return;
    expect([v.from, v.to]).toEqual([11, 14]);
    expect([v.a.term, v.b.term].sort()).toEqual([3, 4]);
    expect(v.message).toMatch(/committed indexes 11\.\.14 disagree: term 3 on m\d .*, but term 4 on m3/);
    // A snapshot's (index, term) counts as a committed entry too, and a node disagreeing with
    // itself across lives is caught the same way.
    const s = checkRaftTraces({ m1: trace('m1', [1, ents(1, 5, 1)], [2, snap(5, 2)]) });
    expect(s.violations).toEqual([expect.objectContaining({ kind: 'log-mismatch', from: 5, to: 5 })]);
    expect(s.violations[0]!.message).toMatch(/index 5 disagree: term 1 on m1 \(life 1, pid 1\) \(applied 1\.\.5\), but term 2 on m1 \(life 2, pid 2\) \(snapshot at 5\)/);
  });

  it('compares ranges that overlap in any way (sweep over unsorted, nested, gapped ranges)', () => {
    const base = { m1: trace('m1', [1, ents(1, 4, 1), ents(5, 9, 2), ents(20, 30, 3)]) };
    expect(checkRaftTraces({ ...base, m2: trace('m2', [2, ents(3, 7, 1)]) }).violations.map((v) => v.kind === 'log-mismatch' && [v.from, v.to])).toEqual([[5, 7]]);
    expect(checkRaftTraces({ ...base, m2: trace('m2', [2, ents(2, 25, 2)]) }).violations.map((v) => v.kind === 'log-mismatch' && [v.from, v.to])).toEqual([
      [2, 4],
      [20, 25],
    ]);
    // indexes 10..19 are in no record of m1: nothing to compare there
    const gap = checkRaftTraces({ ...base, m2: trace('m2', [2, ents(10, 19, 7), ents(30, 31, 3)]) });
    expect(gap.ok).toBe(true);
    expect(gap.committed).toMatchObject({ indexes: 31, crossChecked: 1, maxIndex: 31 });
  });

  it('tolerates a partial last line (SIGKILL during a write), at the end of a life or of the file', () => {
    const full = trace('m1', [1, commit(3, 1), ents(1, 3, 1), leader(2)]);
    const cut = full + '{"k":"commit","commit":1';
    const r1 = parseRaftTrace('m1', cut);
    expect(r1).toMatchObject({ records: 4, partialLines: 1, malformed: [] });
    expect(r1.lives[0]!.truncated).toBe(true);
    // cut, then the next life on its own line
    const next = trace('m1', [2, commit(3, 2)]);
    const r2 = parseRaftTrace('m1', cut + '\n' + next);
    expect(r2.lives.map((l) => [l.life, l.pid, l.records.length, l.truncated])).toEqual([
      [1, 1, 4, true],
      [2, 2, 2, false],
    ]);
    expect(r2.partialLines).toBe(1);
    // cut, and the next life glued to the same line
    const r3 = parseRaftTrace('m1', cut + next);
    expect(r3.lives.map((l) => l.records.length)).toEqual([4, 2]);
    expect(r3.partialLines).toBe(1);
    expect(checkRaft([r1]).ok).toBe(true);
    expect(checkRaft([r3]).ok).toBe(true);
    // A line that does not parse in the middle of a life is malformed (reported, skipped).
    const bad = parseRaftTrace('m1', trace('m1', [1, commit(3, 1)]) + 'garbage\n' + JSON.stringify({ k: 'leader', term: 2, t: 5 }) + '\n');
    expect(bad.malformed).toEqual([{ line: 3, text: 'garbage' }]);
    expect(bad.records).toBe(3);
  });

  it('is unknown without any record or without an expected node', () => {
    expect(checkRaftTraces({ m1: '', m2: '' })).toMatchObject({ ok: 'unknown', reason: 'no Raft trace records' });
    const t = goodTraces();
    expect(checkRaftTraces({ m1: t.m1!, m2: t.m2! }, { expectedNodes: ['m1', 'm2', 'm3'] })).toMatchObject({ ok: 'unknown', reason: 'no Raft trace from m3' });
    // …but a violation is a violation
    expect(checkRaftTraces({ m1: trace('m1', [1, leader(2)]), m2: trace('m2', [2, leader(2)]) }, { expectedNodes: ['m1', 'm2', 'm3'] }).ok).toBe(false);
  });

  it('caps the violations listed', () => {
    const many = Array.from({ length: 30 }, (_, i) => leader(i + 1));
    const r = checkRaftTraces({ a: trace('a', [1, ...many]), b: trace('b', [2, ...many]) }, { maxViolations: 10 });
    expect(r.violations).toHaveLength(10);
    expect(r.moreViolations).toBe(20);
  });

  it('reads what the manager\'s trace writer wrote (coalesced, decreases kept, cut lines)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'flotilla-trace-'));
    try {
      const file = join(dir, 'sub', 'm1.jsonl');
      const w = RaftTraceFile.open(file, 'm1');
      w.commit(3, 1);
      for (let i = 1; i <= 3; i++) w.applied(i, 1);
      w.leader(2);
      for (let c = 4; c <= 50; c++) w.commit(c, 2); // coalesced into one record
      for (let i = 4; i <= 50; i++) w.applied(i, 2);
      w.commit(40, 2); // a decrease: 50 and 40 are both written
      w.commit(60, 2);
      w.snapshot(55, 2, 'leader');
      w.stepDown(3);
      w.flush();
      appendFileSync(file, '{"k":"entries","from":61,"to'); // killed mid-write
      const w2 = RaftTraceFile.open(file, 'm1'); // the next life starts on a fresh line
      w2.commit(10, 3);
      w2.applied(1, 1);
      w2.close();

      const text = readFileSync(file, 'utf8');
      const tr = parseRaftTrace('m1', text);
      expect(tr.partialLines).toBe(1);
      expect(tr.malformed).toEqual([]);
      expect(tr.lives).toHaveLength(2);
      const kinds = tr.lives[0]!.records.map((r) => (r.k === 'commit' ? `c${r.commit}` : r.k === 'entries' ? `e${r.from}-${r.to}@${r.term}` : r.k === 'leader' ? `L${r.term}` : r.k));
      // In write order: a range is written when it ends (other term, gap, snapshot, flush); the
      // commit index when it decreases or at the flush.
      expect(kinds).toEqual(['start', 'L2', 'e1-3@1', 'c50', 'c40', 'e4-50@2', 'snapshot', 'stepdown', 'c60']);
      expect(tr.lives[0]).toMatchObject({ pid: process.pid, truncated: true, clean: false });
      expect(tr.lives[1]).toMatchObject({ truncated: false, clean: true });
      const r = checkRaft([tr]);
      expect(r.violations.map((v) => v.kind)).toEqual(['commit-decreased']);
      expect(r.leaders).toEqual([{ term: 2, nodes: ['m1'] }]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Report and purity

describe('report', () => {
  it('renders a summary and JSON', () => {
    const h = [W(1, 'x', 'a', [0, 1], 1), W(1, 'x', 'b', [2, 3], 2), R(2, 'x', 'a', [4, 5], 1)];
    const { text, json } = renderReport({
      linearizability: checkLinearizable(h),
      lostWrites: checkNoLostWrites(h, new Map([['x', { value: 'b', version: 2 }]])),
      tasks: checkTasks({ observations: [{ taskId: 't', node: 'n', state: 'lost', attempt: 1, at: 1 }] }),
    });
    expect(json.verdict).toBe('fail');
    expect(json.linearizability).toMatchObject({ verdict: 'fail', key: 'x' });
    expect(json.lostWrites).toMatchObject({ verdict: 'pass', checked: 2 });
    expect(json.tasks?.violations).toHaveLength(1);
    expect(JSON.parse(JSON.stringify(json))).toEqual(json);
    expect(text).toMatch(/^chaos check: FAIL/);
    expect(text).toMatch(/linearizability: FAIL on key "x"/);
    expect(text).toMatch(/#\d+ c2 read x → "a" v1 \[4\.\.5\]/);
    expect(text).toMatch(/lost-without-reason/);
    expect(renderReport({ linearizability: { ok: true, checked: 3 } }).text).toBe('chaos check: PASS\n  linearizability: pass (3 ops checked)');
    expect(renderReport({ linearizability: { ok: 'unknown', reason: 'search limit reached' } }).json.verdict).toBe('unknown');
  });

  it('renders the raft section: leaders per term, records per node, violations', () => {
    const good = renderReport({ linearizability: { ok: true, checked: 3 }, raft: checkRaftTraces(goodTraces()) });
    expect(good.json.verdict).toBe('pass');
    expect(good.json.raft).toMatchObject({ verdict: 'pass', leaders: [{ term: 2, nodes: ['m1'] }, { term: 3, nodes: ['m2'] }], violations: [] });
    expect(good.json.raft?.nodes.map((n) => n.records)).toEqual([13, 9, 6]);
    expect(good.text).toContain('  raft: pass (3 nodes, 4 process lives, 28 records; 2 terms with a leader; terms of 14 committed indexes, 14 cross-checked; 0 violations)');
    const t = goodTraces();
    t.m3 = trace('m3', [300, leader(2)]);
    const bad = renderReport({ raft: checkRaftTraces(t) });
    expect(bad.json.verdict).toBe('fail');
    expect(bad.text).toMatch(/raft: FAIL .*; 1 violations\)\n    two-leaders: term 2 has 2 leaders: .*m1 \(life 1, pid 100\)/);
    expect(renderReport({ raft: checkRaftTraces({}) }).text).toContain('raft: UNKNOWN — no Raft trace records');
  });
});

describe('checker modules are pure', () => {
  const dir = join(import.meta.dirname, '..', 'chaos', 'checker');
  it.each(readdirSync(dir).filter((f) => f.endsWith('.ts')))('%s imports only siblings and reads no clock', (f) => {
    const src = readFileSync(join(dir, f), 'utf8');
    for (const m of src.matchAll(/from\s+['"]([^'"]+)['"]/g)) expect(m[1]).toMatch(/^\.\//);
    const code = src.replace(/\/\/.*$/gm, '').replace(/\/\*[\s\S]*?\*\//g, '');
    for (const banned of ['Date.now', 'new Date(', 'Math.random', 'setTimeout', 'setInterval', 'performance.now', 'require(', 'import(']) expect(code).not.toContain(banned);
    expect(code).not.toMatch(/\bprocess\./);
  });
});

// ---------------------------------------------------------------------------------------------
// Issue 18 faults: the schedule of wipe/disk-full/grow/kill-worker, and their checkers.

describe('schedule of the issue-18 faults', () => {
  const all = [...FAULT_KINDS];
  const base: ScheduleOptions = { seed: 11, faults: all, intervalMs: 3000, durationMs: 600_000, managers: 3, workers: 2, allowQuorumLoss: false, mesh: true };

  it('is a function of the seed and draws every kind, each bounded', () => {
    const a = planSchedule(base);
    expect(planSchedule(base)).toEqual(a);
    expect(planSchedule({ ...base, seed: 12 })).not.toEqual(a);
    const kinds = new Set(a.map((s) => s.action.kind));
    for (const k of all) expect(kinds.has(k)).toBe(true);
    for (const s of a) {
      if (s.action.kind === 'grow') {
        expect(s.action.bytes).toBeLessThanOrEqual(GROW_MAX_BURST_BYTES);
        expect(s.action.valueBytes).toBe(GROW_VALUE_BYTES);
      }
      // a fault on odd steps, a heal on even ones: at most one fault at a time
      expect(s.action.kind === 'heal').toBe(s.step % 2 === 0);
    }
    // the grow key set bounds the state the bursts can build, whatever the number of bursts
    expect(GROW_KEYS * GROW_VALUE_BYTES).toBeLessThan(100 * 1024 * 1024);
  });

  it('never plans kill-worker with fewer than two workers', () => {
    for (const workers of [0, 1]) {
      const steps = planSchedule({ ...base, workers, faults: ['kill-worker', 'grow'] });
      expect(steps.some((s) => s.action.kind === 'kill-worker')).toBe(false);
      expect(steps.some((s) => s.action.kind === 'grow')).toBe(true);
    }
    expect(planSchedule({ ...base, workers: 1, faults: ['kill-worker'] })).toEqual([]);
  });

  it('describes the new actions', () => {
    expect(describeAction({ kind: 'wipe' })).toMatch(/wipe a follower/);
    expect(describeAction({ kind: 'disk-full', target: 'leader' })).toBe('fill the disk of the leader');
    expect(describeAction({ kind: 'grow', bytes: 20 * 1048576, valueBytes: 30 * 1024 })).toBe('grow the state: up to 20.0 MiB of 30 KiB values');
    expect(describeAction({ kind: 'kill-worker' })).toBe('SIGKILL a worker for good');
  });
});

describe('checkWipes', () => {
  const refused: WipeRecord = {
    manager: 'm2',
    step: 5,
    at: 1000,
    outcome: 'refused',
    exitCode: 1,
    aliveMs: 1800,
    message: 'error: manager m2 was a member … its data was wiped or replaced … Refusing to start.',
    statuses: [],
  };

  it('accepts a refusal, and does not judge a wipe cut short by the end of the run', () => {
    const r = checkWipes([refused, { ...refused, step: 9, outcome: 'aborted', exitCode: null, aliveMs: 400, message: undefined }], 30_000);
    expect(r).toEqual({ ok: true, wipes: 1, refused: 1, violations: [] });
  });

  it('fails a wiped manager that stayed up, led, applied entries or exited for another reason', () => {
    const bad: WipeRecord[] = [
      { ...refused, step: 1, outcome: 'stayed-up', exitCode: null, aliveMs: 30_400, message: undefined },
      { ...refused, step: 3, statuses: [{ at: 1500, role: 'leader', term: 9, appliedIndex: 0 }] },
      { ...refused, step: 7, seenLeaderByMonitor: true },
      { ...refused, step: 11, statuses: [{ at: 1500, role: 'follower', term: 4, appliedIndex: 12 }] },
      { ...refused, step: 13, outcome: 'exited', exitCode: 0, message: undefined },
      { ...refused, step: 15, exitCode: 1, message: undefined },
    ];
    const r = checkWipes(bad, 30_000);
    expect(r.ok).toBe(false);
    expect(r.violations.map((v) => [v.kind, v.step])).toEqual([
      ['stayed-up', 1],
      ['led', 3],
      ['led', 7],
      ['joined', 11],
      ['wrong-exit', 13],
      ['wrong-exit', 15],
    ]);
    expect(r.violations[0]!.message).toMatch(/still running 30400 ms after its start \(bound 30000 ms\)/);
    // a status with nothing applied (it answered before refusing) is no violation
    expect(checkWipes([{ ...refused, statuses: [{ at: 1200, role: 'follower', term: 0, appliedIndex: 0 }] }], 30_000).ok).toBe(true);
  });

  it('recognises the refusal the manager prints', () => {
    const msg = wipedMessage({ id: 'm2', dataDir: '/d/m2', clusterId: 'e0-ab', storageId: 'new', recorded: 'old', by: 'm1', addr: '127.0.0.1:7002' });
    expect(WIPED_REFUSAL.test(`error: ${msg}`)).toBe(true);
    expect(WIPED_REFUSAL.test('error: EADDRINUSE')).toBe(false);
  });
});

describe('checkAuthAfterHeal', () => {
  it('passes when every manager refuses an anonymous write with 401', () => {
    expect(checkAuthAfterHeal([{ manager: 'm1', status: 401 }, { manager: 'm2', status: 401 }], ['m1', 'm2']).ok).toBe(true);
  });

  it('fails when a manager accepts (or answers anything but 401), is unknown when one is silent', () => {
    const bad = checkAuthAfterHeal([{ manager: 'm1', status: 401 }, { manager: 'm2', status: 200 }, { manager: 'm3', status: 403 }], ['m1', 'm2', 'm3']);
    expect(bad.ok).toBe(false);
    expect(bad.violations).toHaveLength(2);
    expect(bad.violations[0]).toMatch(/m2 answered an anonymous PUT with HTTP 200, not 401/);
    expect(checkAuthAfterHeal([{ manager: 'm1', status: 401 }, { manager: 'm2', status: null }], ['m1', 'm2', 'm3']).ok).toBe('unknown');
    expect(renderReport({ auth: bad }).json.verdict).toBe('fail');
    expect(renderReport({ auth: bad }).text).toMatch(/tokens after healing: FAIL \(anonymous PUT: m1 401, m2 200, m3 403\)/);
  });
});

describe('checkTasks: orphans of a worker killed for good', () => {
  const proc = (taskId: string, attempt: number, node: string, from: number, to: number | null, pid = 100): ProcessInterval => ({ taskId, attempt, node, pid, from, to });
  const dead = { deadAgents: [{ node: 'w1', at: 10_000 }], orphanBoundMs: 18_000 };

  it('excuses an overlap with the dead worker\'s orphan that ends within the bound', () => {
    // w1 dies at 10 s; the task is rescheduled on w2 at 16 s; the orphan dies at 20.5 s
    const r = checkTasks({ observations: [], processes: [proc('t1', 1, 'w1', 0, 20_500), proc('t1', 2, 'w2', 16_000, null)] }, dead);
    expect(r).toMatchObject({ ok: true, violations: [], orphanOverlaps: 1 });
  });

  it('fails an orphan that outlives the bound, and any overlap on live agents', () => {
    const late = checkTasks({ observations: [], processes: [proc('t1', 1, 'w1', 0, 29_000), proc('t1', 2, 'w2', 16_000, null)] }, dead);
    expect(late.ok).toBe(false);
    expect(late.violations.map((v) => v.kind)).toEqual(['orphan-outlived']);
    expect(late.violations[0]!.message).toMatch(/overlapped until 29000, more than 18000 after the dead agent was killed at 10000/);
    // never stopped at all
    expect(checkTasks({ observations: [], processes: [proc('t1', 1, 'w1', 0, null), proc('t1', 2, 'w2', 16_000, null)] }, dead).violations.map((v) => v.kind)).toEqual(['orphan-outlived']);
    // two live workers (w2, w3) running it at once: a double run, dead worker or not
    const live = checkTasks({ observations: [], processes: [proc('t2', 1, 'w2', 0, 5000), proc('t2', 2, 'w3', 4000, null)] }, dead);
    expect(live.violations.map((v) => v.kind)).toEqual(['double-run']);
    // an overlap that began before the worker was killed is not an orphan's
    const before = checkTasks({ observations: [], processes: [proc('t3', 1, 'w1', 0, 12_000), proc('t3', 2, 'w2', 9000, null)] }, dead);
    expect(before.violations.map((v) => v.kind)).toEqual(['double-run']);
    expect(renderReport({ tasks: late }).text).toMatch(/orphan-outlived: task t1 ran twice past the orphan bound/);
  });
});

describe('large values (grow) in the lost-write check', () => {
  it('judges acknowledged large writes by length and digest', () => {
    const big = (c: string): string => c + 'x'.repeat(30 * 1024 - c.length);
    const a = valueDigest(big('g1-1:'));
    const b = valueDigest(big('g1-2:'));
    expect(a).toMatch(/^30720:[0-9a-f]{20}$/);
    expect(a).not.toBe(b);
    const w = (id: string, value: string, at: [number, number], version: number): Op => ({ id, client: 'grow', key: 'big-3', type: 'write', value, invoke: at[0], complete: at[1], outcome: 'ok', result: { value, version } });
    const ops = [w('g1', a, [0, 1], 5), w('g2', b, [2, 3], 6)];
    expect(checkNoLostWrites(ops, new Map([['big-3', { value: b, version: 6 }]])).ok).toBe(true);
    // the key went back to the first value: the second acknowledged write is lost
    const lost = checkNoLostWrites(ops, new Map([['big-3', { value: a, version: 5 }]]));
    expect(lost.ok).toBe(false);
    expect(lost.lost.map((l) => l.op.id)).toEqual(['g2']);
    // same version, other content (a truncated value has another length and digest)
    const cut = valueDigest(big('g1-2:').slice(0, 4096));
    expect(checkNoLostWrites(ops, new Map([['big-3', { value: cut, version: 6 }]])).ok).toBe(false);
    const r = renderReport({ largeValues: { ...lost, refusedQuota: 7 } });
    expect(r.json.largeValues).toMatchObject({ verdict: 'fail', refusedQuota: 7 });
    expect(r.text).toMatch(/large values: FAIL \(2 acknowledged large writes checked by length\+digest, 1 lost; 7 refused by the quota\)/);
  });
});

// ---------------------------------------------------------------------------------------------
// Issue 21: the services checker (chaos/checker/services.ts) and the worker fault.

describe('checkServices', () => {
  type T = ServiceTaskSample;
  const task = (id: string, slot: number, version: number, state = 'running', node: string | null = 'w1', nodeStatus: string | null = 'ready', desired = 'running'): T => ({ id, slot, version, state, desired, node, nodeStatus });
  const sample = (at: number, tasks: T[], o: Partial<ServiceSample> = {}): ServiceSample => ({
    at,
    service: 'web',
    replicas: 3,
    order: 'stop-first',
    parallelism: 1,
    updateState: 'updating',
    updateStart: 100,
    templateVersion: 2,
    ready: 0,
    running: 0,
    tasks,
    ...o,
  });
  const opts = { convergeWithin: 30_000, downBoundMs: 18_000 };
  const proc = (taskId: string, node: string, from: number, to: number | null, pid = 100): ServiceProcess => ({ taskId, attempt: 1, node, pid, from, to });

  /** A clean stop-first update of 3 replicas, one at a time, then converged after the heal at 5000. */
  const clean = (): ServiceSample[] => [
    sample(0, [task('a1', 1, 1), task('a2', 2, 1), task('a3', 3, 1)], { updateState: 'completed', templateVersion: 1 }),
    sample(1000, [task('a1', 1, 1, 'stopped', 'w1', 'ready', 'shutdown'), task('a2', 2, 1), task('a3', 3, 1)]),
    sample(2000, [task('b1', 1, 2), task('a2', 2, 1, 'running', 'w2'), task('a3', 3, 1)]),
    sample(3000, [task('b1', 1, 2), task('b2', 2, 2, 'pending', null, null), task('a3', 3, 1)]),
    sample(4000, [task('b1', 1, 2), task('b2', 2, 2), task('b3', 3, 2, 'starting')]),
    sample(6000, [task('b1', 1, 2), task('b2', 2, 2, 'running', 'w2'), task('b3', 3, 2)], { updateState: 'completed' }),
  ];

  it('accepts a clean stop-first update and a start-first one (old and new share a slot), and converges', () => {
    const procs = [proc('a1', 'w1', 0, 1000), proc('b1', 'w1', 1500, null), proc('a2', 'w2', 0, 2800), proc('b2', 'w2', 3200, null)];
    const r = checkServices({ samples: clean(), processes: procs, healedAt: 5000 }, opts);
    expect(r).toMatchObject({ ok: true, violations: [], services: 1, samples: 6, updatesSeen: 1, updateSamples: 4, processes: 4, convergedAfter: { web: 1000 } });
    // start-first: the new task runs beside the old one until it is ready
    const sf = { order: 'start-first' as const, replicas: 2 };
    const start = [
      sample(0, [task('a1', 1, 1), task('a2', 2, 1)], { ...sf }),
      sample(1000, [task('a1', 1, 1), task('b1', 1, 2, 'running', 'w2'), task('a2', 2, 1)], { ...sf }),
      sample(2000, [task('b1', 1, 2, 'running', 'w2'), task('a2', 2, 1)], { ...sf, updateState: 'completed' }),
    ];
    const sr = checkServices({ samples: start, processes: [proc('a1', 'w1', 0, 1800), proc('b1', 'w2', 700, null)], healedAt: null }, opts);
    expect(sr.ok).toBe(true);
    expect(sr.excused.startFirstOverlaps).toBe(2); // once in the leader's view, once in the workers'
    expect(isConverged(start[2]!)).toBe(false); // slot 2 still runs the old template
    expect(isConverged(sample(3000, [task('b1', 1, 2, 'running', 'w2'), task('b2', 2, 2)], { ...sf, updateState: 'completed' }))).toBe(true);
    expect(availableSlots(start[1]!)).toBe(2);
    expect(updateMinimum(start[1]!)).toBe(2);
    expect(updateMinimum(clean()[1]!)).toBe(2);
  });

  it('fails two tasks running in one slot: in the leader\'s view, and on the workers', () => {
    const bad = clean();
    bad[2] = sample(2000, [task('a1', 1, 1), task('b1', 1, 2, 'running', 'w2'), task('a2', 2, 1), task('a3', 3, 1)]);
    const leader = checkServices({ samples: bad, healedAt: null }, opts);
    expect(leader.ok).toBe(false);
    expect(leader.violations.map((v) => [v.kind, 'view' in v ? v.view : '', 'slot' in v ? v.slot : 0])).toEqual([['slot-double-run', 'leader', 1]]);
    expect(leader.violations[0]!.message).toMatch(/slot web\.1 had 2 tasks running at 2000 in the leader's view: a1 \(v1\) on w1, b1 \(v2\) on w2/);
    // The leader saw it right, but the old process outlived its stop on w1 while the new one ran on w2.
    const procs = [proc('a1', 'w1', 0, 2500, 41), proc('b1', 'w2', 1500, null, 42)];
    const workers = checkServices({ samples: clean(), processes: procs, healedAt: null }, opts);
    expect(workers.violations.map((v) => [v.kind, 'view' in v ? v.view : ''])).toEqual([['slot-double-run', 'workers']]);
    expect(workers.violations[0]!.message).toMatch(/slot web\.1 ran two tasks at once on live workers: a1 \(v1, pid 41 on w1\) and b1 \(v2, pid 42 on w2\) from 1500 to 2500/);
    // start-first does not excuse two tasks of the same version in a slot
    const twins = [sample(0, [task('a1', 1, 1), task('x1', 1, 1, 'running', 'w2')], { order: 'start-first', replicas: 1 })];
    expect(checkServices({ samples: twins, healedAt: null }, opts).violations.map((v) => v.kind)).toEqual(['slot-double-run']);
    expect(renderReport({ services: workers }).json.verdict).toBe('fail');
    expect(renderReport({ services: workers }).text).toMatch(/services: FAIL \(1 services, 6 samples, 1 updates seen in 4 samples, 2 process runs; 1 violations/);
  });

  it('excuses a down worker\'s copy until the bound after it came back, and fails it past that', () => {
    const procs = [proc('a1', 'w1', 0, 20_000), proc('b1', 'w2', 8000, null)];
    const downs: WorkerDown[] = [{ node: 'w1', from: 3000, to: 6000, how: 'pause' }];
    const within = checkServices({ samples: clean(), processes: procs, downs, healedAt: null }, opts);
    expect(within).toMatchObject({ ok: true, excused: { downOverlaps: 1 } });
    const late = checkServices({ samples: clean(), processes: [proc('a1', 'w1', 0, 25_000), proc('b1', 'w2', 8000, null)], downs, healedAt: null }, opts);
    expect(late.violations.map((v) => v.kind)).toEqual(['down-outlived']);
    expect(late.violations[0]!.message).toMatch(/after w1 was down \(pause at 3000, back at 6000\).*past 24000/);
    // killed for good: counted from the kill
    const dead = checkServices({ samples: clean(), processes: procs, downs: [{ node: 'w1', from: 3000, to: null, how: 'kill-worker' }], healedAt: null }, opts);
    expect(dead.ok).toBe(true);
  });

  it('fails an availability drop below the minimum during an update (stop-first and start-first)', () => {
    const bad = clean();
    // replicas 3, parallelism 1: two slots down at once
    bad[3] = sample(3000, [task('b1', 1, 2, 'starting'), task('a2', 2, 1, 'stopped', 'w2', 'ready', 'shutdown'), task('a3', 3, 1)]);
    const r = checkServices({ samples: bad, healedAt: null }, opts);
    expect(r.violations.map((v) => v.kind)).toEqual(['availability-drop']);
    expect(r.violations[0]!.message).toMatch(/web: 1 of 3 replicas available at 3000 during updating \(stop-first, parallelism 1: minimum 2\), 3 at 2000, with every worker up/);
    // the same drop while a worker is down (or right after a scale) is excused
    const down = checkServices({ samples: bad, downs: [{ node: 'w2', from: 2500, to: 2900, how: 'kill' }], healedAt: null }, opts);
    expect(down).toMatchObject({ ok: true, excused: { availabilityWhileDown: 1 } });
    const scaled = checkServices({ samples: bad, ops: [{ at: 2600, sent: 2500, service: 'web', kind: 'scale', outcome: 'ok', replicas: 3 }], healedAt: null }, opts);
    expect(scaled.ok).toBe(true);
    // a task on a node the leader declared down does not count as available
    expect(availableSlots(sample(0, [task('a1', 1, 1, 'running', 'w1', 'down'), task('a2', 2, 1, 'running', 'w2', 'unknown')]))).toBe(1);
    // start-first: the minimum is every replica
    const sf = { order: 'start-first' as const, replicas: 2 };
    const start = [sample(0, [task('a1', 1, 1), task('a2', 2, 1)], sf), sample(1000, [task('a1', 1, 1, 'stopped', 'w1', 'ready', 'shutdown'), task('b1', 1, 2, 'starting', 'w2'), task('a2', 2, 1)], sf)];
    expect(checkServices({ samples: start, healedAt: null }, opts).violations.map((v) => [v.kind, 'minimum' in v ? v.minimum : -1])).toEqual([['availability-drop', 2]]);
    // outside an update (a scale-up filling, a crash) availability is not judged
    expect(checkServices({ samples: start.map((s) => ({ ...s, updateState: 'completed' })), healedAt: null }, opts).ok).toBe(true);
  });

  it('fails a service that does not converge after healing (or converges too late)', () => {
    const stuck = clean().slice(0, 5); // still updating at the end
    const r = checkServices({ samples: stuck, healedAt: 3500 }, opts);
    expect(r.violations.map((v) => v.kind)).toEqual(['not-converged']);
    expect(r.violations[0]!.message).toMatch(/web did not converge after healing \(1 samples after healing; last: replicas 3, template v2, update updating, 2 available/);
    expect(r.convergedAfter).toEqual({ web: null });
    const late = checkServices({ samples: clean(), healedAt: 5000 }, { ...opts, convergeWithin: 500 });
    expect(late.violations[0]!.message).toBe('web converged only 1000 after healing (bound 500)');
    // a service that was created but never sampled after healing
    expect(checkServices({ samples: clean(), services: ['web', 'api'], healedAt: 5000 }, opts).violations.map((v) => [v.kind, v.service])).toEqual([['not-converged', 'api']]);
    // too many replicas (a slot above replicas still live) is not converged either
    expect(isConverged(sample(0, [task('b1', 1, 2), task('b2', 2, 2), task('b3', 3, 2), task('b4', 4, 2)], { updateState: 'completed' }))).toBe(false);
  });

  it('the task checker excuses a copy on a worker down for a while, until the bound after it came back', () => {
    const p = (taskId: string, attempt: number, node: string, from: number, to: number | null): ProcessInterval => ({ taskId, attempt, node, pid: 1, from, to });
    const o = { downWindows: [{ node: 'w1', from: 3000, to: 6000 }], orphanBoundMs: 18_000 };
    expect(checkTasks({ observations: [], processes: [p('t', 1, 'w1', 0, 20_000), p('t', 2, 'w2', 9000, null)] }, o)).toMatchObject({ ok: true, orphanOverlaps: 1 });
    expect(checkTasks({ observations: [], processes: [p('t', 1, 'w1', 0, 25_000), p('t', 2, 'w2', 9000, null)] }, o).violations.map((v) => v.kind)).toEqual(['orphan-outlived']);
    // without the window it was a double run
    expect(checkTasks({ observations: [], processes: [p('t', 1, 'w1', 0, 20_000), p('t', 2, 'w2', 9000, null)] }).violations.map((v) => v.kind)).toEqual(['double-run']);
  });

  it('the worker fault is planned from the seed (kill or pause), never without workers', () => {
    const base: ScheduleOptions = { seed: 5, faults: ['worker'], intervalMs: 3000, durationMs: 120_000, managers: 3, workers: 2, allowQuorumLoss: false };
    const steps = planSchedule(base).filter((s) => s.action.kind === 'worker');
    expect(steps.length).toBeGreaterThan(5);
    expect(new Set(steps.map((s) => (s.action as { op: string }).op))).toEqual(new Set(['kill', 'pause']));
    expect(planSchedule({ ...base, workers: 0 })).toEqual([]);
    expect(describeAction({ kind: 'worker', op: 'pause' })).toBe('SIGSTOP a worker until the next heal');
  });
});

// ---------------------------------------------------------------------------------------------
// The routing mesh checker (chaos/checker/mesh.ts) and the freeze-replica fault.

describe('checkMesh', () => {
  const A1 = '127.0.0.11:20001';
  const A2 = '127.0.0.12:20001';
  const addrOf: Record<string, string> = { w1: A1, w2: A2 };
  const seqs = new Map<string, number>();
  beforeEach(() => seqs.clear());
  /** A request of `client` through worker `w`, sent at `sent`, ended `ms` later. */
  const req = (client: string, w: string, sent: number, ms: number, ok: true | string = true, taskId = 'svc-1'): MeshRequest => {
    const seq = (seqs.get(client) ?? 0) + 1;
    seqs.set(client, seq);
    return { client, seq, worker: w, addr: addrOf[w]!, sent, done: sent + ms, ...(ok === true ? { outcome: 'ok' as const, taskId } : { outcome: 'failed' as const, error: ok }) };
  };
  /** Each client every 250 ms, alternating workers, all ok, from `from` to `to`. */
  const steady = (from: number, to: number, clients = ['mc1', 'mc2', 'mc3']): MeshRequest[] => {
    const out: MeshRequest[] = [];
    for (const [i, c] of clients.entries()) for (let t = from + i * 50, k = i; t < to; t += 250, k++) out.push(req(c, k % 2 === 0 ? 'w1' : 'w2', t, 5));
    return out;
  };
  const opts = { settleMs: 10_000, freezeSettleMs: 1000, stallTimeoutMs: 1000, requestTimeoutMs: 2000 };
  const freeze = (from: number, to: number | null, taskId = 'svc-2'): ReplicaFreeze => ({ step: 3, taskId, pid: 4242, node: 'w2', from, to });
  const stall = 'timeout: no answer within 2000 ms';

  it('passes a run whose only failures are one stall per client and address in a freeze, and requests to a down worker', () => {
    const f = freeze(10_000, 13_000);
    const reqs = [
      ...steady(0, 10_000),
      // In the freeze: the first requests the meshes route to the frozen replica stall (one per
      // client); by the time the clients come back, both meshes have set it aside.
      req('mc1', 'w1', 10_100, 2000, stall), req('mc1', 'w2', 12_100, 5), req('mc1', 'w1', 14_200, 5),
      req('mc2', 'w2', 10_150, 2000, stall), req('mc2', 'w1', 12_160, 5), req('mc2', 'w2', 14_200, 5),
      req('mc3', 'w1', 10_200, 2000, stall), req('mc3', 'w2', 12_210, 5), req('mc3', 'w1', 12_300, 5),
      ...steady(16_000, 30_000),
      // w1 SIGKILLed 30 s…33 s: requests to it fail (not judged), the others are fine; after it is
      // back, a failure within the settle margin (its listener not bound yet) is not judged either.
      req('mc1', 'w1', 30_500, 1, 'ECONNREFUSED'), req('mc1', 'w2', 30_600, 5),
      req('mc2', 'w1', 34_000, 1, 'ECONNREFUSED'),
      ...steady(44_000, 50_000),
    ];
    const downs: MeshWorkerDown[] = [{ node: 'w1', from: 30_000, to: 33_000, how: 'kill' }];
    const r = checkMesh({ requests: reqs, freezes: [f], downs, end: 50_000 }, opts);
    expect(r.violations).toEqual([]);
    expect(r).toMatchObject({ ok: true, clients: 3, addrs: [A1, A2], toDownWorker: { requests: 1, failed: 1 }, settling: { failed: 1 } });
    expect(r.freezes).toEqual([{ step: 3, taskId: 'svc-2', node: 'w2', from: 10_000, to: 13_000, requests: 7, failures: 3, maxPerClientAddr: 1, maxSpansPerAddr: 1, allowed: 1, reentries: 0 }]);
    expect(r.judged).toBeGreaterThan(200);
    expect(r.inFreezes).toEqual({ requests: 7, failed: 3 });
    const text = renderReport({ mesh: r }).text;
    expect(text).toMatch(/mesh: pass \(\d+ requests by 3 clients through 2 worker addresses, 5 failed; \d+ judged outside worker and replica faults, 0 of them failed; 1 frozen replicas: 3\/7 failed during the freezes, at most 1 per client and address and 1 spans of stalls per address \(allowed 1\)/);
  });

  it('fails two stalls of one client through one address in one freeze, naming both requests', () => {
    const reqs = [...steady(0, 10_000), req('mc1', 'w1', 10_100, 2000, stall), req('mc1', 'w2', 12_100, 5), req('mc1', 'w1', 12_200, 2000, stall), ...steady(16_000, 20_000)];
    // (A client's second stall through an address comes 2 s after its first, so (c) sees it too; a
    // wide slack leaves (b) alone.)
    expect(checkMesh({ requests: reqs, freezes: [freeze(10_000, 13_000)], end: 20_000 }, opts).violations.map((v) => v.kind)).toEqual(['repeated-stall', 'late-stall']);
    const r = checkMesh({ requests: reqs, freezes: [freeze(10_000, 13_000)], end: 20_000 }, { ...opts, stallSlackMs: 5000 });
    expect(r.ok).toBe(false);
    expect(r.violations.map((v) => v.kind)).toEqual(['repeated-stall']);
    const v = r.violations[0]!;
    expect(v.kind === 'repeated-stall' && v.requests.map((x) => `${x.client}#${x.seq}`)).toEqual(['mc1#41', 'mc1#43']);
    expect(v.message).toMatch(/^mc1 lost 2 requests through 127\.0\.0\.11:20001 while replica svc-2 \(pid 4242 on w2\) was frozen \+10\.000s…\+13\.000s; at most 1 allowed .*mc1#41 via w1 127\.0\.0\.11:20001 sent \+10\.100s, ended \+12\.100s \(2000 ms\): FAILED: timeout/);
    expect(renderReport({ mesh: r }).json.verdict).toBe('fail');
    expect(renderReport({ mesh: r }).text).toMatch(/mesh: FAIL .*; 1 violations\)\n    repeated-stall: mc1 lost 2 requests/);
    // The same two losses through two different addresses are one each: fine.
    const spread = [...steady(0, 10_000), req('mc1', 'w1', 10_100, 2000, stall), req('mc1', 'w2', 12_200, 2000, stall)];
    expect(checkMesh({ requests: spread, freezes: [freeze(10_000, 13_000)], end: 20_000 }, { ...opts, stallSlackMs: 5000 }).ok).toBe(true);
  });

  it('fails a failure during a manager fault (the mesh keeps its table), and one after a freeze\'s settle margin', () => {
    const reqs = [...steady(0, 20_000), req('mc2', 'w1', 12_345, 2000, stall)];
    const context = [{ kind: 'partition', from: 9000, to: 15_000, detail: 'isolate m1 (the leader)' }];
    const r = checkMesh({ requests: reqs, context, end: 20_000 }, opts);
    expect(r.ok).toBe(false);
    expect(r.violations.map((v) => v.kind)).toEqual(['mesh-failure']);
    expect(r.violations[0]!.message).toMatch(/^mc2#\d+ via w1 127\.0\.0\.11:20001 sent \+12\.345s, ended \+14\.345s \(2000 ms\): FAILED: timeout.* — through a live worker, outside every worker or replica fault and its settle margin; during partition \(isolate m1 \(the leader\), \+9\.000s…\+15\.000s\)/);
    // After the SIGCONT of a frozen replica (+1 s margin) the mesh must answer again.
    const late = [...steady(0, 20_000), req('mc1', 'w1', 14_500, 2000, stall)];
    const lr = checkMesh({ requests: late, freezes: [freeze(10_000, 13_000)], end: 20_000 }, opts);
    expect(lr.violations.map((v) => v.kind)).toEqual(['mesh-failure']);
    expect(lr.violations[0]!.message).toContain('no fault was active');
    // …but within the margin it is not judged.
    const early = [...steady(0, 20_000), req('mc1', 'w1', 13_500, 2000, stall)];
    expect(checkMesh({ requests: early, freezes: [freeze(10_000, 13_000)], end: 20_000 }, opts)).toMatchObject({ ok: true, settling: { requests: expect.any(Number), failed: 1 } });
    // A worker killed for good: requests to it are never judged, the others only after the margin.
    const dead = [...steady(0, 40_000).filter((x) => !(x.worker === 'w1' && x.sent >= 20_000 && x.outcome === 'ok')), req('mc1', 'w1', 25_000, 1, 'ECONNREFUSED'), req('mc2', 'w2', 21_000, 2000, 'ECONNRESET'), req('mc3', 'w2', 35_000, 3, 'ECONNRESET')];
    const dr = checkMesh({ requests: dead, downs: [{ node: 'w1', from: 20_000, to: null, how: 'kill-worker' }], end: 40_000 }, opts);
    expect(dr.violations.map((v) => v.kind === 'mesh-failure' && v.request.sent)).toEqual([35_000]);
    expect(dr.toDownWorker.failed).toBe(1);
  });

  it('fails a stall through one address later than the stall timeout (+ slack) after its first one, whichever the clients', () => {
    // Each client loses one request per address (b holds), but through w1 the mesh still sent a
    // connection to the frozen replica 2.4 s after the first stall there: it never set it aside.
    const reqs = [...steady(0, 10_000), req('mc1', 'w1', 10_100, 2000, stall), req('mc2', 'w2', 10_150, 2000, stall), req('mc3', 'w1', 10_900, 2000, stall), req('mc2', 'w1', 12_500, 2000, stall), ...steady(16_000, 20_000)];
    const r = checkMesh({ requests: reqs, freezes: [freeze(10_000, 14_000)], end: 20_000 }, opts);
    expect(r.violations.map((v) => v.kind)).toEqual(['late-stall']);
    const v = r.violations[0]!;
    expect(v.kind === 'late-stall' && [v.addr, v.first.sent, v.requests.map((x) => x.sent)]).toEqual([A1, 10_100, [12_500]]);
    expect(v.message).toMatch(/^through 127\.0\.0\.11:20001, 1 request failed more than the stall timeout \(1000 ms\) \+ 1000 ms after the first failure of that address .*\(2 spans of stalls, 1 allowed\).*late: mc2#\d+ via w1 127\.0\.0\.11:20001 sent \+12\.500s/);
    expect(r.freezes[0]).toMatchObject({ maxPerClientAddr: 1, maxSpansPerAddr: 2 });
    // Within the stall timeout + slack of the first one, other connections may still have gone to it.
    const early = [...steady(0, 10_000), req('mc1', 'w1', 10_100, 2000, stall), req('mc3', 'w1', 11_900, 2000, stall)];
    expect(checkMesh({ requests: early, freezes: [freeze(10_000, 14_000)], end: 20_000 }, opts).ok).toBe(true);
    expect(checkMesh({ requests: early, freezes: [freeze(10_000, 14_000)], end: 20_000 }, { ...opts, stallSlackMs: 500 }).violations.map((x) => x.kind)).toEqual(['late-stall']);
  });

  it('fails the recorded history of a real run whose mesh had its stall watch off (--mesh-stall-timeout 0)', () => {
    const rec = JSON.parse(readFileSync(join(import.meta.dirname, 'fixtures', 'chaos-mesh-stall-off.json'), 'utf8')) as {
      replay: string; stallTimeoutMs: number; freezes: ReplicaFreeze[]; workerDowns: MeshWorkerDown[]; samples: MeshTableSample[]; requests: MeshRequest[];
    };
    expect(rec.stallTimeoutMs).toBe(0);
    expect(rec.replay).toContain('--mesh-stall-timeout 0');
    // Judged as run.ts judges it (a stall timeout of 0 is held to the harness's default).
    const r = checkMesh(
      { requests: rec.requests, freezes: rec.freezes, downs: rec.workerDowns, samples: rec.samples, end: Math.max(...rec.requests.map((x) => x.done)) },
      { settleMs: MESH_SETTLE_MS, freezeSettleMs: MESH_FREEZE_SETTLE_MS, stallTimeoutMs: MESH_STALL_TIMEOUT_MS, requestTimeoutMs: MESH_REQUEST_TIMEOUT_MS },
    );
    expect(r.ok).toBe(false);
    expect(r.requests).toBe(587);
    expect(r.freezes.map((f) => [f.maxPerClientAddr, f.maxSpansPerAddr, f.allowed])).toEqual([[1, 2, 1], [2, 3, 1]]);
    expect(new Set(r.violations.map((v) => v.kind))).toEqual(new Set(['repeated-stall', 'late-stall']));
    const repeated = r.violations.find((v) => v.kind === 'repeated-stall')!;
    expect(repeated.message).toMatch(/^mc2 lost 2 requests through 127\.0\.0\.11:23904 while replica chaos-mesh\.1\.1d62284f \(pid 18151 on w1\) was frozen \+25\.023s…\+31\.843s; at most 1 allowed .*mc2#192 .*\| mc2#196 /);
    // The manager pause of that run cost the mesh nothing.
    expect(r.violations.filter((v) => v.kind === 'mesh-failure')).toEqual([]);
    expect(r.judged).toBeGreaterThan(500);
    // The same requests with the freezes forgotten would be failures of their own: the freezes are what excuse them.
    expect(checkMesh({ requests: rec.requests, end: 32_000 }, opts).violations.filter((v) => v.kind === 'mesh-failure')).toHaveLength(15);
  });

  it('allows one more stall per set-aside expiry in a long freeze, and per re-entry of the frozen replica into the table', () => {
    expect(stallEpisodes(3000, 10_000, 2000)).toBe(1);
    expect(stallEpisodes(9000, 10_000, 2000)).toBe(2); // 9 s + a request in flight before it: the 10 s aside may expire
    expect(stallEpisodes(25_000, 10_000, 2000)).toBe(2); // asides of 10 s then 20 s
    expect(stallEpisodes(29_000, 10_000, 2000)).toBe(3);
    const twice = [...steady(0, 10_000), req('mc1', 'w1', 10_100, 2000, stall), req('mc1', 'w1', 12_200, 2000, stall)];
    const f = freeze(10_000, 14_000);
    expect(checkMesh({ requests: twice, freezes: [f], end: 20_000 }, opts).ok).toBe(false);
    // The leader's table lost the frozen replica at 11 s and had it again at 12 s: the mesh forgot it had set it aside.
    const samples = [{ at: 10_500, ready: ['svc-1', 'svc-2'] }, { at: 11_000, ready: ['svc-1'] }, { at: 12_000, ready: ['svc-1', 'svc-2'] }];
    const r = checkMesh({ requests: twice, freezes: [f], samples, end: 20_000 }, opts);
    expect(r.ok).toBe(true);
    expect(r.freezes[0]).toMatchObject({ allowed: 2, reentries: 1, maxPerClientAddr: 2 });
    // A long freeze (25 s) allows a second episode after the first aside expired.
    const long = [...steady(0, 10_000), req('mc1', 'w1', 10_100, 2000, stall), req('mc1', 'w1', 21_500, 2000, stall)];
    expect(checkMesh({ requests: long, freezes: [freeze(10_000, 35_000)], end: 40_000 }, opts).ok).toBe(true);
  });

  it('is unknown with no request, and says so', () => {
    const r = checkMesh({ requests: [], end: 1000 }, opts);
    expect(r).toMatchObject({ ok: 'unknown', reason: 'no mesh request was recorded' });
    expect(renderReport({ mesh: r }).text).toContain('mesh: UNKNOWN — no mesh request was recorded');
    expect(renderReport({ mesh: r }).json.verdict).toBe('unknown');
  });

  it('schedules freeze-replica only with the mesh workload and two workers, and describes it', () => {
    const base: ScheduleOptions = { seed: 9, faults: ['freeze-replica', 'pause'], intervalMs: 3000, durationMs: 60_000, managers: 3, workers: 2, allowQuorumLoss: false, mesh: true };
    expect(planSchedule(base).some((s) => s.action.kind === 'freeze-replica')).toBe(true);
    for (const o of [{ mesh: false }, { workers: 1 }, { mesh: undefined }]) {
      const steps = planSchedule({ ...base, ...o });
      expect(steps.some((s) => s.action.kind === 'freeze-replica')).toBe(false);
      expect(steps.some((s) => s.action.kind === 'pause')).toBe(true);
    }
    expect(describeAction({ kind: 'freeze-replica' })).toBe('SIGSTOP a replica of the mesh service until the next heal');
  });
});
