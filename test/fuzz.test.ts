// Property-based fuzzing of flotilla's hostile-input edges (fast-check):
//  1. the wire decoders: Raft peer frames (src/raft/codec.ts), worker session frames on both
//     ends (src/protocol/frames.ts, used by both) — arbitrary bytes, mutated valid
//     frames, msgpack-encoded arbitrary values and hand-built hostile msgpack;
//  2. the task spec validator (src/protocol/spec.ts) on mutated near-valid specs;
//  3. the replicated state machine (src/manager/state.ts): a rejected command changes nothing;
//  4. the HTTP API of a real manager process: generated bodies on every write route.
//
// Runs are reproducible: FUZZ_SEED=<n> npx vitest run test/fuzz.test.ts (the seed in use is
// printed with any failure, together with fast-check's counterexample path).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import http from 'node:http';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Packr, pack as mpPack } from 'msgpackr';
import WebSocket from 'ws';
import {
  DEFAULT_MAX_FRAME_BYTES,
  FrameError,
  MAC_BYTES,
  NONCE_BYTES,
  decodeFrame,
  encodeTypedFrame,
  parseFrame,
  type Frame,
} from '../src/raft/codec.js';
import type { Message, MessageType } from '../src/raft/types.js';
import { decodeSessionFrame as workerDecode, encodeSessionFrame as workerEncode, parseManagerMessage } from '../src/protocol/frames.js';
import { workerToken } from '../src/manager/auth.js';
import { decodeSessionFrame as managerDecode, encodeSessionFrame as managerEncode } from '../src/protocol/frames.js';
import { MAX_SESSION_FRAME, type ManagerToWorker } from '../src/protocol/session.js';
import { checkJoin } from '../src/manager/auth.js';
import { FlotillaError } from '../src/protocol/errors.js';
import { formatPath, parseTaskSpec, type TaskSpec } from '../src/protocol/spec.js';
import { ClusterState, canonicalJson, encodeCommand, type ApplyResult, type Command, type TaskReport } from '../src/manager/state.js';
import { reportIgnored } from '../src/manager/state/tasks.js';
import { SECRET, TestCluster } from './helpers/cluster.js';
import { splitAddr } from '../src/client/client.js';

const SEED = Number(process.env.FUZZ_SEED ?? 1_620_601);
if (!Number.isSafeInteger(SEED)) throw new Error(`FUZZ_SEED must be an integer, got ${process.env.FUZZ_SEED}`);

/** Runs a property with the fixed seed; a failure names the seed and how to replay it. */
async function check(name: string, prop: fc.IRawProperty<any, boolean>, numRuns: number): Promise<void> {
  try {
    await fc.assert(prop as fc.IAsyncProperty<any>, { seed: SEED, numRuns, endOnFailure: process.env.FUZZ_NO_SHRINK === '1' });
  } catch (e) {
    const err = e as Error;
    err.message = `[${name}] FUZZ_SEED=${SEED} (replay: FUZZ_SEED=${SEED} npx vitest run test/fuzz.test.ts)\n${err.message}`;
    throw err;
  }
}

// A real collector for the heap measurements (the runner does not start node with --expose-gc).
v8.setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
function heapAfterGc(): number {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

/** A cheap assertion for the hot paths (vitest's expect is costly thousands of times a run). */
function ok(cond: unknown, what: string | (() => string)): asserts cond {
  if (!cond) throw new Error(`invariant broken: ${typeof what === 'function' ? what() : what}`);
}

/** Own property names of the built-in prototypes, to detect pollution. */
function prototypeFingerprint(): string {
  const protos: [string, object][] = [
    ['Object', Object.prototype],
    ['Array', Array.prototype],
    ['Function', Function.prototype],
    ['String', String.prototype],
  ];
  return protos.map(([n, p]) => `${n}:${Reflect.ownKeys(p).map(String).sort().join(',')}`).join('|');
}
const PROTOTYPES_AT_START = prototypeFingerprint();
function expectPrototypesClean(): void {
  const now = prototypeFingerprint();
  ok(now === PROTOTYPES_AT_START, () => `built-in prototypes changed: ${now}`);
  const probe = {} as Record<string, unknown>;
  for (const k of ['privileged', 'polluted', 'cpu', 'isAdmin', 'role', 'k', 't']) ok(probe[k] === undefined, `Object.prototype.${k} is set`);
}

/** Byte-level mutations of a valid encoded frame. */
type Mutation =
  | { op: 'flip'; at: number; bit: number }
  | { op: 'set'; at: number; value: number }
  | { op: 'insert'; at: number; bytes: Uint8Array }
  | { op: 'delete'; at: number; len: number }
  | { op: 'truncate'; at: number }
  | { op: 'duplicate'; at: number; len: number };

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ op: fc.constant('set' as const), at: fc.nat(), value: fc.oneof(fc.integer({ min: 0, max: 255 }), fc.constantFrom(0xc0, 0xc1, 0xdc, 0xdd, 0xde, 0xdf, 0xdb, 0xc6, 0xc9, 0xd4, 0xff)) }),
  fc.record({ op: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 9 }) }),
  fc.record({ op: fc.constant('delete' as const), at: fc.nat(), len: fc.integer({ min: 1, max: 8 }) }),
  fc.record({ op: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ op: fc.constant('duplicate' as const), at: fc.nat(), len: fc.integer({ min: 1, max: 16 }) }),
);

function mutate(frame: Uint8Array, muts: Mutation[], keepVersion: boolean): Buffer {
  let b = Buffer.from(frame);
  for (const m of muts) {
    // Byte 0 is the version: mostly keep it so the payload decoder is reached.
    const lo = keepVersion ? 1 : 0;
    const span = Math.max(1, b.length - lo);
    const at = lo + (m.at % span);
    switch (m.op) {
      case 'flip':
        if (at < b.length) b[at] = b[at]! ^ (1 << m.bit);
        break;
      case 'set':
        if (at < b.length) b[at] = m.value;
        break;
      case 'insert':
        b = Buffer.concat([b.subarray(0, at), m.bytes, b.subarray(at)]);
        break;
      case 'delete':
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + m.len)]);
        break;
      case 'truncate':
        b = b.subarray(0, at);
        break;
      case 'duplicate':
        b = Buffer.concat([b.subarray(0, at + m.len), b.subarray(at, at + m.len), b.subarray(at + m.len)]);
        break;
    }
  }
  return b;
}

// ---------------------------------------------------------------------------------------------
// Hostile msgpack, built byte by byte.

function u32(n: number): number[] {
  return [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];
}
function u16(n: number): number[] {
  return [(n >>> 8) & 255, n & 255];
}
function fixstr(s: string): number[] {
  const b = Buffer.from(s, 'utf8');
  return [0xa0 | b.length, ...b];
}

/** A header declaring a length far beyond the bytes that follow. */
const hugeHeaderArb = fc
  .record({
    kind: fc.constantFrom('array16', 'array32', 'map16', 'map32', 'str8', 'str16', 'str32', 'bin8', 'bin16', 'bin32', 'ext8', 'ext16', 'ext32'),
    declared: fc.oneof(fc.constant(0xffffffff), fc.constant(0x7fffffff), fc.integer({ min: 256, max: 0xffffffff })),
    tail: fc.uint8Array({ maxLength: 64 }),
  })
  .map(({ kind, declared, tail }) => {
    const d16 = Math.min(declared, 0xffff);
    const d8 = Math.min(declared, 0xff);
    const head: Record<string, number[]> = {
      array16: [0xdc, ...u16(d16)],
      array32: [0xdd, ...u32(declared)],
      map16: [0xde, ...u16(d16)],
      map32: [0xdf, ...u32(declared)],
      str8: [0xd9, d8],
      str16: [0xda, ...u16(d16)],
      str32: [0xdb, ...u32(declared)],
      bin8: [0xc4, d8],
      bin16: [0xc5, ...u16(d16)],
      bin32: [0xc6, ...u32(declared)],
      ext8: [0xc7, d8, 0x01],
      ext16: [0xc8, ...u16(d16), 0x01],
      ext32: [0xc9, ...u32(declared), 0x01],
    };
    return Buffer.concat([Buffer.from(head[kind]!), tail]);
  });

/** Deep nesting: arrays or maps inside each other, terminated or not. */
const deepArb = fc
  .record({ depth: fc.oneof({ weight: 4, arbitrary: fc.integer({ min: 1, max: 3000 }) }, { weight: 1, arbitrary: fc.integer({ min: 3000, max: 200_000 }) }), map: fc.boolean(), terminated: fc.boolean() })
  .map(({ depth, map, terminated }) => {
    const unit = map ? [0x81, 0xa1, 0x6d] : [0x91];
    const b = Buffer.alloc(depth * unit.length + 1);
    for (let i = 0; i < depth; i++) b.set(unit, i * unit.length);
    b[b.length - 1] = terminated ? 0xc0 : 0x91;
    return b;
  });

/** Many tiny containers (allocation amplification): an array32 of empty maps, arrays, nils or strings. */
const amplifyArb = fc
  .record({ count: fc.oneof(fc.integer({ min: 1, max: 1024 }), fc.integer({ min: 1024, max: 32 * 1024 })), item: fc.constantFrom(0x80, 0x90, 0xc0, 0xa0), lie: fc.boolean() })
  .map(({ count, item, lie }) => Buffer.concat([Buffer.from([0xdd, ...u32(lie ? count * 16 : count)]), Buffer.alloc(count, item)]));

/** Records and extension types a plain-map decoder must not be confused by. */
const extArb = fc
  .record({ type: fc.integer({ min: -128, max: 127 }), body: fc.uint8Array({ maxLength: 40 }), fixed: fc.constantFrom(0, 1, 2, 4, 8, 16) })
  .map(({ type, body, fixed }) => {
    const t = type & 0xff;
    if (fixed > 0) {
      const head = ({ 1: 0xd4, 2: 0xd5, 4: 0xd6, 8: 0xd7, 16: 0xd8 } as Record<number, number>)[fixed]!;
      const data = Buffer.alloc(fixed);
      data.set(body.subarray(0, fixed));
      return Buffer.concat([Buffer.from([head, t]), data]);
    }
    return Buffer.concat([Buffer.from([0xc7, body.length, t]), body]);
  });

const hostileValueArb = fc.oneof(hugeHeaderArb, deepArb, amplifyArb, extArb);

/** Places a hostile value where a decoder is sure to reach it (inside a frame-shaped map). */
const hostilePayloadArb = fc
  .record({
    value: hostileValueArb,
    where: fc.constantFrom('top', 'raft-k', 'raft-m', 'raft-entries', 'raft-snapshot', 'session-t', 'session-tasks', 'session-managers'),
    extraKey: fc.boolean(),
  })
  .map(({ value, where, extraKey }) => {
    const b = (...parts: (number[] | Buffer)[]) => Buffer.concat(parts.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(p))));
    const msgHead = (type: string, last: string) => [0x82, ...fixstr('k'), ...fixstr('msg'), ...fixstr('m'), 0x87, ...fixstr('type'), ...fixstr(type), ...fixstr('from'), ...fixstr('a'), ...fixstr('to'), ...fixstr('b'), ...fixstr('term'), 1, ...fixstr('index'), 1, ...fixstr('logTerm'), 1, ...fixstr(last)];
    switch (where) {
      case 'top':
        return value;
      case 'raft-k':
        return b([0x81, ...fixstr('k')], value);
      case 'raft-m':
        return b([0x82, ...fixstr('k'), ...fixstr('msg'), ...fixstr('m')], value);
      case 'raft-entries':
        return b(msgHead('app', 'entries'), value);
      case 'raft-snapshot':
        return b(msgHead('snap', 'snapshot'), value);
      case 'session-t':
        return b([extraKey ? 0x82 : 0x81, ...fixstr('t')], value, extraKey ? [...fixstr('x'), 0xc0] : []);
      case 'session-tasks':
        return b([0x82, ...fixstr('t'), ...fixstr('assignments'), ...fixstr('tasks')], value);
      default:
        return b([0x82, ...fixstr('t'), ...fixstr('managers'), ...fixstr('managers')], value);
    }
  });

// ---------------------------------------------------------------------------------------------
// Valid frames

const WIRE_TYPES: MessageType[] = ['app', 'appResp', 'heartbeat', 'heartbeatResp', 'vote', 'voteResp', 'preVote', 'preVoteResp', 'snap', 'timeoutNow', 'readIndex', 'readIndexResp', 'transferLeader', 'prop'];
const countArb = fc.oneof(fc.nat(1000), fc.maxSafeNat());
const smallBytes = fc.uint8Array({ maxLength: 48 });
const nodeIdArb = fc.oneof(fc.constantFrom('m1', 'm2', 'm3'), fc.string({ minLength: 1, maxLength: 12, unit: 'binary' }));

const snapshotArb = fc.record({
  meta: fc.record({ index: countArb, term: countArb, conf: fc.record({ voters: fc.array(fc.string({ maxLength: 6 }), { maxLength: 4 }), learners: fc.array(fc.string({ maxLength: 6 }), { maxLength: 3 }) }) }),
  data: smallBytes,
});

const messageArb: fc.Arbitrary<Message> = fc
  .record(
    {
      type: fc.constantFrom(...WIRE_TYPES),
      from: nodeIdArb,
      to: nodeIdArb,
      term: countArb,
      index: countArb,
      logTerm: countArb,
      entries: fc.array(fc.record({ term: countArb, index: countArb, type: fc.constantFrom(0 as const, 1 as const), data: smallBytes }), { maxLength: 4 }),
      commit: countArb,
      reject: fc.boolean(),
      rejectHint: countArb,
      snapshot: snapshotArb,
      context: fc.string({ maxLength: 16 }),
      transfer: fc.boolean(),
    },
    { requiredKeys: ['type', 'from', 'to', 'term', 'index', 'logTerm'] },
  )
  .chain((m) => (m.type === 'snap' && m.snapshot === undefined ? snapshotArb.map((snapshot) => ({ ...m, snapshot })) : fc.constant(m)));

const raftFrameArb: fc.Arbitrary<Frame> = fc.oneof(
  fc.record({ k: fc.constant('challenge' as const), id: nodeIdArb, nonce: fc.uint8Array({ minLength: NONCE_BYTES, maxLength: NONCE_BYTES }) }),
  fc.record(
    { k: fc.constant('auth' as const), from: nodeIdArb, to: nodeIdArb, nonce: fc.uint8Array({ minLength: NONCE_BYTES, maxLength: NONCE_BYTES }), mac: fc.uint8Array({ minLength: MAC_BYTES, maxLength: MAC_BYTES }), addr: fc.constantFrom('127.0.0.1:7001', 'h:1') },
    { requiredKeys: ['k', 'from', 'to', 'nonce', 'mac'] },
  ),
  fc.record({ k: fc.constant('welcome' as const), mac: fc.uint8Array({ minLength: MAC_BYTES, maxLength: MAC_BYTES }) }),
  fc.record({ k: fc.constant('msg' as const), m: messageArb }),
  fc.record({ k: fc.constant('snapBegin' as const), id: countArb, m: messageArb.map((m) => ({ ...m, type: 'snap' as const, snapshot: m.snapshot ?? { meta: { index: 1, term: 1, conf: { voters: ['m1'], learners: [] } }, data: new Uint8Array() } })), size: countArb, chunks: countArb }),
  fc.record({ k: fc.constant('snapChunk' as const), id: countArb, seq: countArb, data: smallBytes }),
  fc.record({ k: fc.constant('snapEnd' as const), id: countArb, sha256: fc.uint8Array({ minLength: 32, maxLength: 32 }) }),
  fc.record({ k: fc.constant('snapAck' as const), id: countArb, ok: fc.boolean(), error: fc.string({ maxLength: 20 }) }, { requiredKeys: ['k', 'id', 'ok'] }),
);

const managerMsgArb: fc.Arbitrary<ManagerToWorker> = fc.oneof(
  fc.record({ t: fc.constant('redirect' as const), leader: fc.option(fc.string({ minLength: 1, maxLength: 20 }), { nil: null }), managers: fc.array(fc.string({ minLength: 1, maxLength: 20 }), { maxLength: 4 }) }),
  fc.record({ t: fc.constant('welcome' as const), sessionId: fc.uuid(), heartbeatMs: fc.integer({ min: 1, max: 3_600_000 }), managers: fc.array(fc.string({ minLength: 1, maxLength: 20 }), { maxLength: 4 }), term: fc.nat() }),
  fc.record({ t: fc.constant('reject' as const), reason: fc.string({ maxLength: 60 }) }),
  fc.record({
    t: fc.constant('assignments' as const),
    tasks: fc.array(fc.record({ taskId: fc.string({ minLength: 1, maxLength: 20 }), attempt: fc.integer({ min: 1, max: 1000 }), desired: fc.constantFrom('running' as const, 'shutdown' as const), spec: fc.constant({ name: 'x', containers: [{ image: 'busybox' }] } as unknown as TaskSpec) }), { maxLength: 3 }),
  }),
  fc.record({ t: fc.constant('managers' as const), managers: fc.array(fc.string({ minLength: 1, maxLength: 20 }), { maxLength: 4 }) }),
);

const reportArb = fc.record(
  { taskId: fc.string({ minLength: 1, maxLength: 12 }), attempt: fc.integer({ min: 1, max: 5 }), state: fc.constantFrom('starting', 'running', 'succeeded', 'failed', 'stopped'), reason: fc.string({ maxLength: 12 }), exitCode: fc.integer({ min: -1, max: 255 }), at: fc.nat() },
  { requiredKeys: ['taskId', 'attempt', 'state', 'at'] },
);
/** What a worker sends (the manager decodes these before the session is authenticated). */
const workerMsgArb = fc.oneof(
  fc.record(
    {
      t: fc.constant('register'),
      nodeId: fc.string({ minLength: 1, maxLength: 12 }),
      token: fc.string({ maxLength: 50 }),
      credential: fc.string({ maxLength: 50 }),
      addr: fc.constant('127.0.0.1:7100'),
      labels: fc.dictionary(fc.string({ maxLength: 6 }), fc.string({ maxLength: 6 }), { maxKeys: 3 }),
      resources: fc.record({ cpu: fc.nat(), memory: fc.nat() }),
      drivers: fc.constant(['process']),
      version: fc.constant('0.1.0'),
      tasks: fc.array(reportArb, { maxLength: 3 }),
    },
    { requiredKeys: ['t', 'nodeId', 'token', 'addr', 'labels', 'resources', 'drivers', 'version', 'tasks'] },
  ),
  fc.constant({ t: 'heartbeat' }),
  fc.record({ t: fc.constant('status'), reports: fc.array(reportArb, { maxLength: 3 }) }),
);

// ---------------------------------------------------------------------------------------------
// Invariants of what the decoders hand out

const isCount = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isBytes = (v: unknown, len?: number) => v instanceof Uint8Array && (len === undefined || v.length === len);
const isId = (v: unknown) => typeof v === 'string' && v.length > 0;

function assertMessage(m: Message): void {
  ok(WIRE_TYPES.includes(m.type), 'type');
  ok(isId(m.from) && isId(m.to), 'from/to');
  ok(isCount(m.term) && isCount(m.index) && isCount(m.logTerm), 'term/index/logTerm');
  if (m.entries !== undefined) {
    ok(Array.isArray(m.entries), 'entries is a list');
    for (const e of m.entries) {
      ok(isCount(e.term) && isCount(e.index) && (e.type === 0 || e.type === 1) && isBytes(e.data), 'entry');
      ok(Object.keys(e).sort().join() === 'data,index,term,type', 'entry fields');
    }
  }
  for (const f of ['commit', 'rejectHint'] as const) if (m[f] !== undefined) ok(isCount(m[f]), f);
  for (const f of ['reject', 'transfer'] as const) if (m[f] !== undefined) ok(typeof m[f] === 'boolean', f);
  if (m.context !== undefined) ok(typeof m.context === 'string', 'context');
  if (m.type === 'snap') ok(m.snapshot !== undefined, 'a snap without a snapshot');
  if (m.snapshot !== undefined) {
    const s = m.snapshot;
    ok(isCount(s.meta.index) && isCount(s.meta.term) && isBytes(s.data), 'snapshot');
    ok(Array.isArray(s.meta.conf.voters) && s.meta.conf.voters.every((x) => typeof x === 'string'), 'snapshot voters');
    ok(Array.isArray(s.meta.conf.learners) && s.meta.conf.learners.every((x) => typeof x === 'string'), 'snapshot learners');
  }
  const known = new Set(['type', 'from', 'to', 'term', 'index', 'logTerm', 'entries', 'commit', 'reject', 'rejectHint', 'snapshot', 'context', 'transfer']);
  for (const k of Object.keys(m)) ok(known.has(k), `unexpected message field ${k}`);
}

function assertRaftFrame(f: Frame): void {
  switch (f.k) {
    case 'challenge':
      ok(isId(f.id) && isBytes(f.nonce, NONCE_BYTES), 'challenge fields');
      break;
    case 'auth':
      ok(isId(f.from) && isId(f.to) && isBytes(f.nonce, NONCE_BYTES) && isBytes(f.mac, MAC_BYTES), 'auth fields');
      if (f.addr !== undefined) ok(isId(f.addr), 'auth addr');
      break;
    case 'welcome':
      ok(isBytes(f.mac, MAC_BYTES), 'welcome mac');
      break;
    case 'msg':
      assertMessage(f.m);
      break;
    case 'snapBegin':
      assertMessage(f.m);
      ok(f.m.type === 'snap', 'snapBegin type');
      ok(isCount(f.id) && isCount(f.size) && isCount(f.chunks), 'snapBegin fields');
      break;
    case 'snapChunk':
      ok(isCount(f.id) && isCount(f.seq) && isBytes(f.data), 'snapChunk fields');
      break;
    case 'snapEnd':
      ok(isCount(f.id) && isBytes(f.sha256, 32), 'snapEnd fields');
      break;
    case 'snapAck':
      ok(isCount(f.id) && typeof f.ok === 'boolean', 'snapAck fields');
      if (f.error !== undefined) ok(typeof f.error === 'string', 'snapAck.error');
      break;
    default:
      throw new Error(`parseFrame returned an unknown kind ${JSON.stringify((f as { k: unknown }).k)}`);
  }
}

/** Decode + validate: a FrameError, or a frame that keeps its invariants and survives a round trip. */
function raftDecodeChecked(buf: Uint8Array): 'rejected' | 'accepted' {
  let frame: Frame;
  try {
    frame = parseFrame(decodeFrame(buf));
  } catch (e) {
    if (!(e instanceof FrameError)) throw new Error(`raft decoder threw ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}`);
    ok(['empty', 'too_large', 'version', 'malformed', 'not_object', 'invalid'].includes(e.reason), `reason ${e.reason}`);
    return 'rejected';
  }
  assertRaftFrame(frame);
  const again = parseFrame(decodeFrame(encodeTypedFrame(frame)));
  ok(canonicalJson(again) === canonicalJson(frame), () => `round trip changed ${canonicalJson(frame).slice(0, 300)}`);
  return 'accepted';
}

function assertManagerMessage(m: ReturnType<typeof parseManagerMessage>): void {
  const str = (v: unknown, min: number, max: number) => typeof v === 'string' && v.length >= min && v.length <= max;
  const addrs = (v: unknown) => Array.isArray(v) && v.length <= 64 && v.every((a) => str(a, 1, 1024));
  switch (m.t) {
    case 'redirect':
      ok((m.leader === null || str(m.leader, 1, 1024)) && addrs(m.managers), 'redirect fields');
      break;
    case 'welcome':
      ok(str(m.sessionId, 1, 256) && Number.isInteger(m.heartbeatMs) && m.heartbeatMs >= 1 && m.heartbeatMs <= 3_600_000 && Number.isInteger(m.term) && m.term >= 0 && addrs(m.managers), 'welcome fields');
      break;
    case 'reject':
      ok(str(m.reason, 0, 4096), 'reject reason');
      break;
    case 'assignments':
      ok(Array.isArray(m.tasks), 'assignments list');
      for (const t of m.tasks) ok(str(t.taskId, 1, 128) && ['running', 'shutdown'].includes(t.desired) && Number.isInteger(t.attempt) && t.attempt >= 1, 'assigned task fields');
      break;
    case 'managers':
      ok(addrs(m.managers), 'managers list');
      break;
    default:
      throw new Error(`parseManagerMessage returned an unknown message ${JSON.stringify((m as { t: unknown }).t)}`);
  }
}

/** Worker side: a bad_request/too_large FlotillaError, or a message that keeps its invariants. */
function workerDecodeChecked(buf: Uint8Array): 'rejected' | 'accepted' {
  let msg: ReturnType<typeof parseManagerMessage>;
  try {
    msg = parseManagerMessage(workerDecode(buf));
  } catch (e) {
    if (!(e instanceof FlotillaError)) throw new Error(`worker decoder threw ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}`);
    ok(e.code === 'bad_request' || e.code === 'too_large', `code ${e.code}`);
    return 'rejected';
  }
  assertManagerMessage(msg);
  return 'accepted';
}

const JOIN_STATE = new ClusterState();
/**
 * Manager side, before a worker is authenticated: the decoder may throw (the session is then
 * closed), and whatever it returns goes through the session guard and the join check, which
 * must refuse it without throwing.
 */
function managerDecodeChecked(buf: Uint8Array): 'rejected' | 'accepted' {
  let msg: unknown;
  try {
    msg = managerDecode(Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength));
  } catch (e) {
    if (!(e instanceof Error)) throw new Error(`manager decoder threw a non-Error: ${String(e)}`);
    return 'rejected';
  }
  if (typeof msg !== 'object' || msg === null || typeof (msg as { t?: unknown }).t !== 'string') return 'rejected';
  const refusal = checkJoin(JOIN_STATE, 'fuzz-secret', 'flt-w-fuzz-derived-token', msg as Record<string, unknown>);
  ok(typeof refusal === 'string', 'a made-up registration was let in');
  return 'accepted';
}

/**
 * A valid frame full of small integers 0x40-0x7f, which msgpackr reads as record references
 * once a record structure is defined: decoding anything must not change how it decodes next.
 */
const SENTINEL_RAFT = encodeTypedFrame({ k: 'msg', m: { type: 'app', from: 'm1', to: 'm2', term: 64, index: 65, logTerm: 127, commit: 66, entries: [{ term: 64, index: 100, type: 0, data: new Uint8Array([0x40, 0x7f]) }] } });
const SENTINEL_SESSION = workerEncode({ t: 'welcome', sessionId: 's', heartbeatMs: 64, managers: ['a:64'], term: 65 });
const SENTINEL_RAFT_JSON = canonicalJson(parseFrame(decodeFrame(SENTINEL_RAFT)));
const SENTINEL_SESSION_JSON = canonicalJson(parseManagerMessage(workerDecode(SENTINEL_SESSION)));
const SENTINEL_MANAGER_JSON = canonicalJson(managerDecode(SENTINEL_SESSION));
function expectDecodersStateless(): void {
  ok(canonicalJson(parseFrame(decodeFrame(SENTINEL_RAFT))) === SENTINEL_RAFT_JSON, 'the raft decoder kept state from an earlier frame');
  ok(canonicalJson(parseManagerMessage(workerDecode(SENTINEL_SESSION))) === SENTINEL_SESSION_JSON, 'the worker decoder kept state from an earlier frame');
  ok(canonicalJson(managerDecode(SENTINEL_SESSION)) === SENTINEL_MANAGER_JSON, 'the manager decoder kept state from an earlier frame');
}

// ---------------------------------------------------------------------------------------------
// 1. Wire decoders

describe('wire decoders', () => {
  let heapBefore = 0;
  const tally = { runs: 0, accepted: 0 };
  beforeAll(() => {
    heapBefore = heapAfterGc();
  });
  afterAll(() => {
    // Across every run below: nothing retained (no leak, no cache growing with hostile input).
    const growth = heapAfterGc() - heapBefore;
    expect(growth, `heap grew by ${(growth / 1048576).toFixed(1)} MiB over ${tally.runs} decodes`).toBeLessThan(32 * 1024 * 1024);
    expect(tally.runs).toBeGreaterThanOrEqual(5000);
    expectPrototypesClean();
  });
  const count = (r: 'rejected' | 'accepted') => {
    tally.runs++;
    if (r === 'accepted') tally.accepted++;
  };

  it('valid frames round-trip through every decoder', async () => {
    await check(
      'raft valid',
      fc.property(raftFrameArb, (f) => {
        expect(raftDecodeChecked(encodeTypedFrame(f))).toBe('accepted');
        count('accepted');
      }),
      300,
    );
    await check(
      'session valid',
      fc.property(managerMsgArb, (m) => {
        expect(workerDecodeChecked(managerEncode(m))).toBe('accepted');
        expect(workerDecodeChecked(workerEncode(m))).toBe('accepted');
        count('accepted');
      }),
      200,
    );
  });

  it('arbitrary bytes: a controlled rejection or a well-formed frame, never a crash', async () => {
    await check(
      'arbitrary bytes',
      fc.property(fc.uint8Array({ maxLength: 4096 }), fc.boolean(), (bytes, versioned) => {
        const buf = versioned && bytes.length > 0 ? Buffer.concat([Buffer.from([1]), bytes]) : Buffer.from(bytes);
        count(raftDecodeChecked(buf));
        workerDecodeChecked(buf);
        managerDecodeChecked(buf);
      }),
      1500,
    );
  });

  it('mutated valid frames', async () => {
    await check(
      'mutated raft frames',
      fc.property(raftFrameArb, fc.array(mutationArb, { minLength: 1, maxLength: 4 }), fc.boolean(), (f, muts, keep) => {
        count(raftDecodeChecked(mutate(encodeTypedFrame(f), muts, keep || muts.length > 1)));
      }),
      1500,
    );
    await check(
      'mutated session frames',
      fc.property(fc.oneof(managerMsgArb, workerMsgArb), fc.array(mutationArb, { minLength: 1, maxLength: 4 }), (m, muts) => {
        const buf = mutate(workerEncode(m), muts, true);
        count(workerDecodeChecked(buf));
        managerDecodeChecked(buf);
      }),
      700,
    );
  });

  it('msgpack of arbitrary JS values, with and without records and structured clone', async () => {
    const packers = [new Packr({ useRecords: false }), new Packr({ useRecords: true }), new Packr({ structuredClone: true }), new Packr({ moreTypes: true, useRecords: false })];
    const anyValue = fc.anything({ withBigInt: true, withBoxedValues: true, withDate: true, withMap: true, withSet: true, withNullPrototype: true, withObjectString: true, withSparseArray: true, withTypedArray: true, maxDepth: 4 });
    await check(
      'msgpack anything',
      fc.property(anyValue, fc.nat(packers.length), fc.constantFrom('bare', 'raft-msg', 'raft-k', 'session'), (value, p, wrap) => {
        const framed = wrap === 'bare' ? value : wrap === 'raft-msg' ? { k: 'msg', m: value } : wrap === 'raft-k' ? { k: value } : { t: 'assignments', tasks: value };
        let body: Buffer;
        try {
          body = p === packers.length ? mpPack(framed) : packers[p]!.pack(framed);
        } catch {
          return; // not encodable: nothing to decode
        }
        const buf = Buffer.concat([Buffer.from([1]), body]);
        count(raftDecodeChecked(buf));
        workerDecodeChecked(buf);
        managerDecodeChecked(buf);
        expectDecodersStateless();
      }),
      1000,
    );
  });

  it('hostile msgpack: huge declared lengths, deep nesting, amplification, extensions', async () => {
    await check(
      'hostile msgpack',
      fc.property(hostilePayloadArb, (payload) => {
        const buf = Buffer.concat([Buffer.from([1]), payload]);
        count(raftDecodeChecked(buf));
        workerDecodeChecked(buf);
        managerDecodeChecked(buf);
        expectDecodersStateless();
      }),
      800,
    );
  });

  it('regression: a BigInt where the kind or the message type belongs is a FrameError', () => {
    // msgpackr decodes fixext16 type 0x42 as a BigInt (2^64 here); error messages used to
    // JSON.stringify the value, which throws a TypeError on a BigInt.
    const big = 'd842' + '00000000000000010000000000000000';
    for (const hex of [`0181a16b${big}`, `0182a16ba36d7367a16d81a474797065${big}`]) {
      const buf = Buffer.from(hex, 'hex');
      expect(() => parseFrame(decodeFrame(buf))).toThrowError(FrameError);
      expect(raftDecodeChecked(buf)).toBe('rejected');
    }
    count('rejected');
  });

  it('size bounds hold at the limit', () => {
    // One byte over each bound is refused before any decoding.
    const over = Buffer.alloc(DEFAULT_MAX_FRAME_BYTES + 1, 0xc0);
    over[0] = 1;
    expect(() => decodeFrame(over)).toThrowError(FrameError);
    expect(() => workerDecode(Buffer.alloc(MAX_SESSION_FRAME + 1, 1))).toThrowError(/exceeds/);
    count('rejected');
  });
});

// ---------------------------------------------------------------------------------------------
// 2. Task spec validator

const DNS_LABEL_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const ENV_KEY_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
const LABEL_KEY_RE = /^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$/;

const dnsArb = fc.stringMatching(/^[a-z0-9]([-a-z0-9]{0,14}[a-z0-9])?$/);
const envKeyArb = fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,10}$/).filter((k) => k !== '__proto__');
const labelKeyArb = fc.stringMatching(/^[A-Za-z0-9]([A-Za-z0-9._/-]{0,10}[A-Za-z0-9])?$/);
const constraintArb = fc
  .tuple(fc.oneof(labelKeyArb, fc.constant('node.id')), fc.constantFrom('==', '!=', ' == '), fc.stringMatching(/^[A-Za-z0-9_.-]{1,8}$/))
  .map(([k, op, v]) => `${k}${op}${v}`);

/** A valid task spec in the shapes users write (shorthands, units, optional fields). */
const validSpecArb = fc
  .record({
    name: dnsArb,
    driver: fc.constantFrom('docker', 'process', undefined),
    containers: fc.array(
      fc.record(
        {
          named: fc.boolean(),
          image: fc.constantFrom('busybox', 'nginx:1.27', 'ghcr.io/acme/app@sha256:' + 'a'.repeat(64)),
          command: fc.array(fc.string({ maxLength: 12 }), { minLength: 1, maxLength: 3 }),
          args: fc.array(fc.string({ maxLength: 12 }), { maxLength: 3 }),
          env: fc.dictionary(envKeyArb, fc.string({ maxLength: 12 }), { maxKeys: 3 }),
          ports: fc.array(fc.record({ container: fc.integer({ min: 1, max: 65535 }), host: fc.boolean(), udp: fc.boolean(), form: fc.constantFrom('object', 'string', 'number') }), { maxLength: 2 }),
          workdir: fc.constantFrom('/app', '/'),
        },
        { requiredKeys: ['named', 'image', 'command'] },
      ),
      { minLength: 1, maxLength: 3 },
    ),
    resources: fc.record(
      {
        cpu: fc.oneof(fc.nat(64_000), fc.integer({ min: 1, max: 64_000 }).map((n) => `${n}m`), fc.constantFrom('0.5', '2', '0.125', '1.0001')),
        memory: fc.oneof(fc.nat(), fc.constantFrom('64Mi', '256m', '1g', '1.5GiB', '4096', '512 MiB')),
      },
      { requiredKeys: [] },
    ),
    constraints: fc.array(constraintArb, { maxLength: 3 }),
    restart: fc.oneof(
      fc.constantFrom('always', 'on-failure', 'never', undefined),
      fc.record(
        { policy: fc.constantFrom('always', 'on-failure', 'never'), maxAttempts: fc.nat(1_000_000), backoff: fc.tuple(fc.nat(3_600_000), fc.nat(86_400_000)) },
        { requiredKeys: [] },
      ),
    ),
    labels: fc.dictionary(labelKeyArb, fc.string({ maxLength: 16 }), { maxKeys: 3 }),
    privileged: fc.boolean(),
    mounts: fc.array(fc.constantFrom('/data:/data', '/var/log:/logs:ro', { source: '/srv', target: '/srv', readonly: true }), { maxLength: 2 }),
  })
  .map((r) => {
    const driver = r.driver ?? 'docker';
    const spec: Record<string, unknown> = { name: r.name };
    if (r.driver !== undefined) spec.driver = r.driver;
    spec.containers = r.containers.map((c, i) => {
      const out: Record<string, unknown> = {};
      if (c.named) out.name = `side${i}`;
      if (driver === 'docker') out.image = c.image;
      if (driver === 'process' || c.command.length > 1) out.command = c.command;
      if (c.args) out.args = c.args;
      if (c.env) out.env = c.env;
      if (c.ports) {
        out.ports = c.ports.map((p, j) => {
          const host = p.host ? 20_000 + i * 10 + j : undefined;
          const proto = p.udp ? 'udp' : 'tcp';
          if (p.form === 'number' && host === undefined && !p.udp) return p.container;
          if (p.form === 'string') return `${host !== undefined ? `${host}:` : ''}${p.container}${p.udp ? '/udp' : ''}`;
          return host === undefined ? { container: p.container, protocol: proto } : { container: p.container, host, protocol: proto };
        });
      }
      if (c.workdir) out.workdir = c.workdir;
      return out;
    });
    if (r.resources.cpu !== undefined || r.resources.memory !== undefined) spec.resources = r.resources;
    if (r.constraints.length > 0) spec.constraints = r.constraints;
    if (typeof r.restart === 'string') spec.restart = r.restart;
    else if (r.restart !== undefined) {
      const o: Record<string, unknown> = {};
      if (r.restart.policy !== undefined) o.policy = r.restart.policy;
      if (r.restart.maxAttempts !== undefined) o.maxAttempts = r.restart.maxAttempts;
      if (r.restart.backoff !== undefined) {
        const [a, b] = r.restart.backoff;
        o.backoffMs = Math.min(a, b);
        o.maxBackoffMs = Math.max(a, b);
      }
      spec.restart = o;
    }
    spec.labels = r.labels;
    spec.privileged = r.privileged;
    if (driver === 'docker' && r.mounts.length > 0) spec.mounts = r.mounts;
    return spec;
  });

/** Values a hostile or careless client might put anywhere in a spec. */
const hostileValueJs = fc.oneof(
  fc.constantFrom(null, undefined, true, false, 0, -1, -0, 1.5, NaN, Infinity, -Infinity, 2 ** 53, 2 ** 53 + 2, -(2 ** 63), 1e308, '', ' ', '0', '-1', '1e3', '0x10', '１', 'NaN', 'Infinity', '__proto__', 'constructor', '\u0000', '\u202e', 'a\u200db', '\ud800', '..', '/', '/etc:/host', 'true'),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.integer({ min: 60_000, max: 200_000 }).map((n) => 'a'.repeat(n)),
  fc.integer({ min: -(2 ** 31), max: 2 ** 31 }),
  fc.double(),
  fc.bigInt(),
  fc.array(fc.jsonValue({ maxDepth: 2 }), { maxLength: 4 }),
  fc.jsonValue({ maxDepth: 3 }),
  fc.anything({ maxDepth: 2, withNullPrototype: true, withBoxedValues: true, withMap: true, withSet: true, withDate: true, withTypedArray: true, withSparseArray: true }),
  fc.constant(Object.create(null)),
  fc.constant(Array.from({ length: 2000 }, () => ({ image: 'x' }))),
);
const hostileKeyArb = fc.oneof(
  fc.constantFrom('__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf', '__defineGetter__', 'then', 'privileged', 'mounts', ''),
  fc.string({ unit: 'binary', maxLength: 12 }),
);

type SpecMutation =
  | { op: 'replace'; pick: number; value: unknown }
  | { op: 'delete'; pick: number }
  | { op: 'addKey'; pick: number; key: string; value: unknown }
  | { op: 'pollute'; pick: number; payload: unknown }
  | { op: 'privileged'; value: unknown }
  | { op: 'hostMount'; mount: unknown; driver: string | null }
  | { op: 'unicode'; pick: number; how: number };

const specMutationArb: fc.Arbitrary<SpecMutation> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ op: fc.constant('replace' as const), pick: fc.nat(), value: hostileValueJs }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('delete' as const), pick: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('addKey' as const), pick: fc.nat(), key: hostileKeyArb, value: hostileValueJs }) },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('pollute' as const),
      pick: fc.nat(),
      payload: fc.constantFrom({ privileged: true, polluted: 1 }, { isAdmin: true }, 'x', null, [1], { toString: 'boom' }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('privileged' as const), value: fc.constantFrom(true, 'true', 1, [true], { value: true }) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('hostMount' as const),
      mount: fc.constantFrom('/:/host', '/var/run/docker.sock:/var/run/docker.sock', { source: '/etc', target: '/etc' }, { source: 'relative', target: '/x' }, '/a:/b:rw:extra', { source: '/', target: '/', readonly: 'no' }),
      driver: fc.constantFrom(null, 'process', 'docker'),
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('unicode' as const), pick: fc.nat(), how: fc.nat(5) }) },
);

/** Every path in a JSON-ish value (objects and arrays), the root included. */
function paths(v: unknown, prefix: (string | number)[] = [], out: (string | number)[][] = []): (string | number)[][] {
  out.push(prefix);
  if (Array.isArray(v)) v.forEach((x, i) => paths(x, [...prefix, i], out));
  else if (isPlain(v)) for (const k of Object.keys(v)) paths(v[k], [...prefix, k], out);
  return out;
}
function isPlain(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null) return false;
  const p = Object.getPrototypeOf(v);
  return p === Object.prototype || p === null;
}
function getAt(root: unknown, path: (string | number)[]): unknown {
  let cur = root;
  for (const seg of path) cur = (cur as Record<string | number, unknown>)[seg];
  return cur;
}
/** Own data property, like JSON.parse makes (so '__proto__' becomes an own key, not the prototype). */
function define(obj: object, key: string | number, value: unknown): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}
function setAt(root: { v: unknown }, path: (string | number)[], value: unknown): void {
  if (path.length === 0) {
    root.v = value;
    return;
  }
  const parent = getAt(root.v, path.slice(0, -1));
  if (typeof parent === 'object' && parent !== null) define(parent, path[path.length - 1]!, value);
}
const UNICODE_TWISTS = [(s: string) => s.toUpperCase(), (s: string) => `${s}\u200b`, (s: string) => s.replace(/a/g, '\u0430'), (s: string) => `\u202e${s}`, (s: string) => s.normalize('NFD') + '\u0301', (s: string) => `${s}\u0000`];

/** A private copy of plain objects and arrays (prototype kept), so generated constants are never shared. */
function fresh(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(fresh);
  if (!isPlain(v)) return v;
  const out = Object.create(Object.getPrototypeOf(v)) as Record<string, unknown>;
  for (const k of Object.keys(v)) define(out, k, fresh(v[k]));
  return out;
}

/** Applies the mutations; returns the mutated spec and the top-level fields they touched. */
function mutateSpec(spec: Record<string, unknown>, muts: SpecMutation[]): { input: unknown; touched: Set<string> } {
  const root = { v: structuredClone(spec) as unknown };
  const touched = new Set<string>();
  const touch = (p: (string | number)[]) => touched.add(p.length === 0 ? '' : String(p[0]));
  for (const m of muts) {
    const all = paths(root.v);
    const at = 'pick' in m ? all[m.pick % all.length]! : [];
    switch (m.op) {
      case 'replace':
        setAt(root, at, fresh(m.value));
        touch(at);
        break;
      case 'delete': {
        if (at.length === 0) break;
        const parent = getAt(root.v, at.slice(0, -1));
        if (Array.isArray(parent)) parent.splice(Number(at[at.length - 1]), 1);
        else if (typeof parent === 'object' && parent !== null) delete (parent as Record<string, unknown>)[at[at.length - 1]!];
        touch(at);
        break;
      }
      case 'addKey':
      case 'pollute': {
        const target = getAt(root.v, at);
        if (typeof target === 'object' && target !== null && !Array.isArray(target)) {
          define(target, m.op === 'addKey' ? m.key : '__proto__', fresh(m.op === 'addKey' ? m.value : m.payload));
          touch(at.length === 0 ? [m.op === 'addKey' ? m.key : '__proto__'] : at);
        }
        break;
      }
      case 'privileged':
        setAt(root, ['privileged'], fresh(m.value));
        touch(['privileged']);
        break;
      case 'hostMount': {
        if (typeof root.v === 'object' && root.v !== null && !Array.isArray(root.v)) {
          const r = root.v as Record<string, unknown>;
          define(r, 'mounts', [...(Array.isArray(r.mounts) ? r.mounts : []), fresh(m.mount)]);
          if (m.driver !== null) define(r, 'driver', m.driver);
          touch(['mounts']);
          if (m.driver !== null) touch(['driver']);
        }
        break;
      }
      case 'unicode': {
        const strs = all.filter((p) => typeof getAt(root.v, p) === 'string');
        if (strs.length === 0) break;
        const p = strs[m.pick % strs.length]!;
        setAt(root, p, UNICODE_TWISTS[m.how % UNICODE_TWISTS.length]!(getAt(root.v, p) as string));
        touch(p);
        break;
      }
    }
  }
  return { input: root.v, touched };
}

const SPEC_KEYS = ['name', 'containers', 'resources', 'constraints', 'restart', 'driver', 'labels', 'privileged', 'mounts'].sort();
const CONTAINER_KEYS = new Set(['name', 'image', 'command', 'args', 'env', 'ports', 'workdir']);

function ownKeys(v: unknown): string[] {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? Object.keys(v) : [];
}

/** What an accepted spec guarantees, whatever the input was. */
function assertAcceptedSpec(s: TaskSpec, input: unknown, allowHostMounts: boolean): void {
  ok(Object.keys(s).sort().join() === SPEC_KEYS.join(), () => `spec fields ${Object.keys(s)}`);
  ok(s.name.length <= 63 && DNS_LABEL_RE.test(s.name), `name ${JSON.stringify(s.name)}`);
  ok(s.driver === 'docker' || s.driver === 'process', 'driver');
  ok(s.containers.length >= 1 && s.containers.length <= 16, '1 to 16 containers');
  const names = new Set<string>();
  const hostPorts = new Set<string>();
  for (const c of s.containers) {
    for (const k of Object.keys(c)) ok(CONTAINER_KEYS.has(k), `container field ${k}`);
    ok(c.name.length <= 63 && DNS_LABEL_RE.test(c.name), `container name ${JSON.stringify(c.name)}`);
    ok(!names.has(c.name), `duplicate container name ${c.name}`);
    names.add(c.name);
    if (s.driver === 'docker') ok(typeof c.image === 'string' && c.image.length > 0 && c.image.length <= 512, 'docker image');
    if (s.driver === 'process') ok(c.command.length > 0, 'process without a command');
    ok(c.command.length <= 256 && c.command.every((x) => typeof x === 'string' && x.length <= 16_384), 'command list');
    ok(c.args.length <= 256 && c.args.every((x) => typeof x === 'string' && x.length <= 16_384), 'args list');
    for (const [k, v] of Object.entries(c.env)) ok(ENV_KEY_RE.test(k) && typeof v === 'string' && v.length <= 65_536, `env ${k}`);
    ok(c.ports.length <= 64, 'ports');
    for (const p of c.ports) {
      ok(Number.isInteger(p.container) && p.container >= 1 && p.container <= 65535, 'container port');
      ok(p.protocol === 'tcp' || p.protocol === 'udp', 'protocol');
      if (p.host !== undefined) {
        ok(Number.isInteger(p.host) && p.host >= 1 && p.host <= 65535, 'host port');
        const key = `${p.host}/${p.protocol}`;
        ok(!hostPorts.has(key), `host port ${key} twice`);
        hostPorts.add(key);
      }
    }
    if (c.workdir !== undefined) ok(typeof c.workdir === 'string' && c.workdir.length >= 1 && c.workdir.length <= 4096, 'workdir');
  }
  for (const v of [s.resources.cpu, s.resources.memory]) ok(Number.isSafeInteger(v) && v >= 0, `resource ${v}`);
  ok(['always', 'on-failure', 'never'].includes(s.restart.policy), 'restart policy');
  const r = s.restart;
  ok(Number.isInteger(r.maxAttempts) && r.maxAttempts >= 0 && r.maxAttempts <= 1_000_000, 'restart.maxAttempts');
  ok(Number.isInteger(r.backoffMs) && r.backoffMs >= 0 && r.backoffMs <= r.maxBackoffMs && r.maxBackoffMs <= 86_400_000, 'restart backoff');
  ok(s.constraints.length <= 64, 'constraints');
  for (const c of s.constraints) ok(/^[A-Za-z0-9_][A-Za-z0-9_./-]*(==|!=)[^\s=!]+$/.test(c), `constraint ${c}`);
  for (const [k, v] of Object.entries(s.labels)) ok(k.length <= 253 && LABEL_KEY_RE.test(k) && typeof v === 'string' && v.length <= 256, `label ${k}`);
  ok(typeof s.privileged === 'boolean', 'privileged');
  if (s.mounts.length > 0) {
    ok(allowHostMounts, 'host mounts accepted although not allowed');
    ok(s.driver === 'docker', 'mounts on the process driver');
  }
  for (const m of s.mounts) ok(m.source.startsWith('/') && m.target.startsWith('/') && typeof m.readonly === 'boolean', 'mount paths');
  // Pure data: survives JSON as is (what goes into the Raft log), with ordinary prototypes only.
  for (const p of paths(s)) {
    const v = getAt(s, p);
    if (typeof v === 'object' && v !== null) ok(Object.getPrototypeOf(v) === (Array.isArray(v) ? Array.prototype : Object.prototype), `odd prototype at ${formatPath(p)}`);
    else ok(typeof v === 'string' || typeof v === 'boolean' || (typeof v === 'number' && Number.isFinite(v)), `not JSON data at ${formatPath(p)}`);
  }
  // Nothing the user wrote is silently dropped: every env and label key given is kept.
  const inSpec = input as Record<string, unknown>;
  for (const k of ownKeys(inSpec.labels)) ok(Object.hasOwn(s.labels, k), `label ${JSON.stringify(k)} dropped`);
  const inContainers = Array.isArray(inSpec.containers) ? inSpec.containers : [];
  inContainers.forEach((c, i) => {
    for (const k of ownKeys((c as Record<string, unknown>)?.env)) ok(Object.hasOwn(s.containers[i]!.env, k), `env ${JSON.stringify(k)} dropped`);
  });
  // The normalised spec is a fixed point (the state machine re-validates it on apply).
  ok(canonicalJson(parseTaskSpec(s, { allowHostMounts: true })) === canonicalJson(s), 'the normalised spec is not a fixed point');
}

/** What a rejection guarantees: a bad_request whose message names the (first) bad field. */
function assertRejection(e: unknown, touched: Set<string> | null): FlotillaError {
  if (!(e instanceof FlotillaError)) throw new Error(`the validator threw ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}`);
  ok(e.code === 'bad_request', `code ${e.code}`);
  ok(e.message.startsWith('Cannot create task as '), 'message wording');
  ok((e.details?.length ?? 0) > 0, 'no details');
  const first = e.details![0]!;
  ok(e.message.includes(first.path === '' ? 'the spec' : `'${first.path}'`), `message ${e.message} does not name ${first.path}`);
  for (const d of e.details!) ok(typeof d.path === 'string' && typeof d.message === 'string' && d.message.length > 0, 'detail shape');
  if (touched !== null && !touched.has('driver') && !touched.has('')) {
    // The blame lands on a field the mutations touched (driver changes move it to containers).
    const tops = [...touched].map((t) => formatPath([t]));
    const related = e.details!.some((d) => d.path === '' || tops.some((t) => d.path === t || d.path.startsWith(`${t}.`) || d.path.startsWith(`${t}[`)));
    ok(related, `details ${JSON.stringify(e.details)} name none of ${JSON.stringify(tops)}`);
  }
  return e;
}

describe('task spec validator', () => {
  afterAll(() => expectPrototypesClean());

  it('every generated valid spec is accepted and normalised', async () => {
    await check(
      'valid specs',
      fc.property(validSpecArb, (spec) => {
        const allow = Array.isArray(spec.mounts);
        const s = parseTaskSpec(spec, { allowHostMounts: allow });
        assertAcceptedSpec(s, spec, allow);
        if (allow) expect(() => parseTaskSpec(spec)).toThrowError(/host mounts are disabled/);
      }),
      400,
    );
  });

  it('regression: a __proto__ key in env or labels is refused, not silently dropped', () => {
    const base = '{"name":"web","containers":[{"image":"nginx"%ENV%}]%LABELS%}';
    const cases: [string, string][] = [
      [base.replace('%ENV%', ',"env":{"__proto__":"x","A":"b"}').replace('%LABELS%', ''), 'containers[0].env.__proto__'],
      [base.replace('%ENV%', '').replace('%LABELS%', ',"labels":{"__proto__":"y"}'), 'labels.__proto__'],
    ];
    for (const [json, path] of cases) {
      const e = assertRejection((() => {
        try {
          parseTaskSpec(JSON.parse(json));
        } catch (err) {
          return err;
        }
        return new Error(`accepted ${json}`);
      })(), null);
      expect(e.message).toBe(`Cannot create task as '${path}' is not allowed as a key`);
    }
    expectPrototypesClean();
  });

  it('mutated specs: accepted with the invariants, or a bad_request naming the field', async () => {
    const stats = { accepted: 0, rejected: 0 };
    await check(
      'mutated specs',
      fc.property(validSpecArb, fc.array(specMutationArb, { minLength: 1, maxLength: 3 }), fc.boolean(), (spec, muts, allowHostMounts) => {
        const { input, touched } = mutateSpec(spec, muts);
        if (!allowHostMounts && spec.mounts !== undefined) touched.add('mounts');
        let s: TaskSpec;
        try {
          s = parseTaskSpec(input, { allowHostMounts });
        } catch (e) {
          assertRejection(e, touched);
          stats.rejected++;
          expectPrototypesClean();
          return;
        }
        stats.accepted++;
        assertAcceptedSpec(s, input, allowHostMounts);
        expectPrototypesClean();
      }),
      2500,
    );
    // Both outcomes are exercised (the generator is near-valid, not just garbage).
    expect(stats.accepted).toBeGreaterThan(100);
    expect(stats.rejected).toBeGreaterThan(500);
  });

  it('JSON-parsed hostile documents (own __proto__ keys, as the API sees them)', async () => {
    await check(
      'json specs',
      fc.property(validSpecArb, fc.array(specMutationArb, { minLength: 1, maxLength: 2 }), (spec, muts) => {
        const { input, touched } = mutateSpec(spec, muts);
        if (spec.mounts !== undefined) touched.add('mounts');
        let text: string;
        try {
          text = JSON.stringify(input);
        } catch {
          return;
        }
        if (text === undefined) return;
        const parsed = JSON.parse(text.replace(/"polluted"/g, '"__proto__"'));
        try {
          assertAcceptedSpec(parseTaskSpec(parsed), parsed, false);
        } catch (e) {
          if (e instanceof FlotillaError) assertRejection(e, text.includes('"polluted"') ? null : touched);
          else throw e;
        }
        expectPrototypesClean();
      }),
      600,
    );
  });
});

// ---------------------------------------------------------------------------------------------
// 3. State machine: a rejected command changes nothing

const text = (b: Uint8Array) => new TextDecoder().decode(b);
/** The replicated content: the snapshot without appliedIndex (every applied entry moves it). */
function content(state: ClusterState): string {
  const { appliedIndex: _moved, ...rest } = JSON.parse(text(state.snapshot())) as Record<string, unknown>;
  return canonicalJson(rest);
}

const TASK_IDS = ['t1', 't2', 't3'];
const NODE_IDS = ['w1', 'w2'];
const KEYS = ['k1', 'k2', '__proto__', 'constructor', 'a/b'];
const atArb = fc.integer({ min: 1000, max: 100_000 });
const termArb = fc.oneof({ weight: 6, arbitrary: fc.constant(1) }, { weight: 1, arbitrary: fc.constantFrom(0, 2) });

const singleCommandArb: fc.Arbitrary<Record<string, unknown>> = fc.oneof(
  fc.record({
    type: fc.constant('node.register'),
    node: fc.record(
      {
        id: fc.constantFrom(...NODE_IDS),
        addr: fc.constant('127.0.0.1:9000'),
        labels: fc.dictionary(fc.constantFrom('zone', 'disk', '__proto__', 'constructor'), fc.constantFrom('eu', 'ssd')),
        resources: fc.record({ cpu: fc.constantFrom(1000, 4000), memory: fc.constantFrom(2 ** 30, 2 ** 33) }),
        drivers: fc.constant(['docker', 'process']),
      },
      { requiredKeys: ['id', 'resources', 'drivers'] },
    ),
    at: atArb,
  }),
  fc.record({ type: fc.constant('task.create'), id: fc.constantFrom(...TASK_IDS), spec: validSpecArb.map((s) => ({ ...s, mounts: undefined, privileged: false })), at: atArb }),
  fc.record({ type: fc.constant('task.assign'), placements: fc.array(fc.record({ taskId: fc.constantFrom(...TASK_IDS), nodeId: fc.constantFrom(...NODE_IDS) }), { minLength: 1, maxLength: 2 }), term: termArb, at: atArb }),
  fc.record({
    type: fc.constant('task.report'),
    reports: fc.array(
      fc.record(
        { taskId: fc.constantFrom(...TASK_IDS), nodeId: fc.constantFrom(...NODE_IDS), state: fc.constantFrom('starting', 'running', 'succeeded', 'failed', 'stopped'), at: atArb, attempt: fc.integer({ min: 1, max: 3 }), exitCode: fc.integer({ min: -1, max: 2 }), detail: fc.constantFrom('pulling', '50%') },
        { requiredKeys: ['taskId', 'nodeId', 'state', 'at'] },
      ),
      { minLength: 1, maxLength: 3 },
    ),
  }),
  fc.record({ type: fc.constant('task.stop'), id: fc.constantFrom(...TASK_IDS), at: atArb }),
  fc.record({ type: fc.constant('task.remove'), id: fc.constantFrom(...TASK_IDS), at: atArb }),
  fc.record({ type: fc.constant('task.restart'), taskId: fc.constantFrom(...TASK_IDS), term: termArb, at: atArb, force: fc.boolean() }, { requiredKeys: ['type', 'taskId', 'term', 'at'] }),
  fc.record({ type: fc.constant('task.pending'), items: fc.array(fc.record({ taskId: fc.constantFrom(...TASK_IDS), reason: fc.constantFrom('no node', 'busy') }), { maxLength: 2 }), term: termArb, at: atArb }),
  fc.record({ type: fc.constant('node.heartbeat'), id: fc.constantFrom(...NODE_IDS), status: fc.constantFrom('ready', 'unknown', 'down'), at: atArb }, { requiredKeys: ['type', 'id', 'at'] }),
  fc.record({ type: fc.constant('node.status'), id: fc.constantFrom(...NODE_IDS), status: fc.constantFrom('ready', 'unknown', 'down'), term: termArb, at: atArb }, { requiredKeys: ['type', 'id', 'status', 'at'] }),
  fc.record({ type: fc.constant('node.setAvailability'), id: fc.constantFrom(...NODE_IDS), availability: fc.constantFrom('active', 'pause', 'drain'), at: atArb }),
  fc.record({ type: fc.constant('nodes.markUnknown'), term: termArb, at: atArb }),
  fc.record({ type: fc.constant('node.down'), id: fc.constantFrom(...NODE_IDS), term: termArb, at: atArb }),
  fc.record({ type: fc.constant('cluster.leader'), leader: fc.constantFrom('m1', 'm2'), term: termArb, at: atArb }),
  fc.record(
    { type: fc.constant('kv.put'), key: fc.constantFrom(...KEYS), value: fc.oneof(fc.string({ maxLength: 8 }), fc.uint8Array({ maxLength: 8 })), cas: fc.nat(40), requestId: fc.constantFrom('r1', 'r2', 'r3'), at: atArb },
    { requiredKeys: ['type', 'key', 'value'] },
  ),
  fc.record({ type: fc.constant('kv.del'), key: fc.constantFrom(...KEYS), cas: fc.nat(40), requestId: fc.constantFrom('r1', 'r4') }, { requiredKeys: ['type', 'key'] }),
);

/** A command as a valid one, a mutated one, a batch, or garbage. */
const commandArb: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 5, arbitrary: singleCommandArb },
  {
    weight: 4,
    arbitrary: fc.tuple(singleCommandArb, fc.array(specMutationArb, { minLength: 1, maxLength: 2 })).map(([c, muts]) => mutateSpec(c, muts).input),
  },
  { weight: 2, arbitrary: fc.array(fc.oneof(singleCommandArb, fc.jsonValue({ maxDepth: 2 })), { minLength: 1, maxLength: 4 }).map((commands) => ({ type: 'batch', commands })) },
  { weight: 1, arbitrary: fc.constant({ type: 'batch', commands: [{ type: 'batch', commands: [] }] }) },
  { weight: 1, arbitrary: fc.anything({ maxDepth: 2, withNullPrototype: true, withBigInt: true }) },
);

describe('state machine', () => {
  afterAll(() => expectPrototypesClean());

  it('every command that encodes fits in one Raft frame (else too_large before the log)', async () => {
    // What PUT /v1/kv may carry (a body of up to 1 MiB, read as UTF-8): JSON escaping makes
    // control characters six bytes each, so an accepted value could grow past a frame.
    const piece = fc.tuple(
      fc.oneof({ weight: 2, arbitrary: fc.constantFrom('\u0001', '\u001f', '"') }, { weight: 3, arbitrary: fc.constantFrom('\\', 'é', '😀', 'a', '\ufffd', '\u2028') }),
      fc.oneof(fc.integer({ min: 1, max: 1000 }), fc.integer({ min: 500_000, max: 1024 * 1024 })),
    );
    await check(
      'command size',
      fc.property(fc.array(piece, { minLength: 1, maxLength: 4 }), (pieces) => {
        let value = '';
        for (const [ch, n] of pieces) value += ch.repeat(n);
        while (Buffer.byteLength(value) > 1024 * 1024) value = value.slice(0, Math.floor(value.length * 0.8));
        let data: Uint8Array;
        try {
          data = encodeCommand({ type: 'kv.put', key: 'k', value });
        } catch (e) {
          ok(FlotillaError.is(e, 'too_large'), () => `encodeCommand threw ${(e as Error).message}`);
          return;
        }
        const m: Message = { type: 'app', from: 'm1', to: 'm2', term: 1, index: 1, logTerm: 1, commit: 1, entries: [{ term: 1, index: 2, type: 0, data }] };
        encodeTypedFrame({ k: 'msg', m }); // throws too_large if the entry can never be sent
      }),
      40,
    );
  });

  it('a rejected command (or rejected batch item) leaves the replicated state as it was', async () => {
    const stats = { rejected: 0, applied: 0 };
    await check(
      'state rejections',
      fc.property(fc.array(fc.tuple(commandArb, fc.boolean(), fc.boolean()), { minLength: 5, maxLength: 40 }), (steps) => {
        const state = new ClusterState({ eventCapacity: 64 });
        let index = 0;
        for (const [cmd, viaLog, garbageEntry] of steps) {
          const before = content(state);
          const seq = state.lastEventSeq;
          index++;
          let res: ApplyResult;
          if (garbageEntry && index % 7 === 0) {
            res = state.applyEntry(new TextEncoder().encode(show(cmd, 5) + '\u0000{'), { index, term: 1 });
          } else if (viaLog) {
            // The production path: the command as a log entry (canonical JSON).
            let data: Uint8Array;
            try {
              data = encodeCommand(cmd as Command);
            } catch {
              data = new TextEncoder().encode('{"type":');
            }
            res = state.applyEntry(data, { index, term: 1 });
          } else {
            res = state.apply(cmd as Command, { index, term: 1 });
          }
          ok(state.appliedIndex === index, 'appliedIndex');
          if (!res.ok) {
            ok(res.error.code !== 'internal', () => `the state machine failed on ${show(cmd)}: ${res.error.message}`);
            ok(content(state) === before, () => `rejected ${show(cmd)} (${res.error.message}) changed the state`);
            ok(state.lastEventSeq === seq, () => `rejected ${show(cmd)} emitted an event`);
            stats.rejected++;
          } else {
            stats.applied++;
            const items = Array.isArray(res.value) ? (res.value as ApplyResult[]) : null;
            if (items !== null && items.every((r) => !r.ok)) {
              ok(content(state) === before, () => `a batch whose items were all rejected changed the state: ${show(cmd)}`);
              ok(state.lastEventSeq === seq, () => `a batch whose items were all rejected emitted an event: ${show(cmd)}`);
            }
            for (const r of items ?? []) if (!r.ok) ok(r.error.code !== 'internal', () => `the state machine failed on an item of ${show(cmd)}: ${r.error.message}`);
          }
        }
        // What was accepted survives a snapshot round trip byte for byte.
        const snap = state.snapshot();
        ok(text(ClusterState.restore(snap).snapshot()) === text(snap), 'a snapshot does not restore to itself');
        expectPrototypesClean();
      }),
      250,
    );
    expect(stats.rejected).toBeGreaterThan(1000);
    expect(stats.applied).toBeGreaterThan(1000);
  });

  it("the leader's report filter agrees with the apply: a report is dropped before the log exactly when applying it would change nothing", async () => {
    // The dispatcher drops a registering worker's reports that `reportIgnored` names (dispatcher.ts
    // `register`); the apply decides with the same function. This checks the promise behind
    // that: an ignored report leaves the state as it was, a kept one changes it.
    const reportArb = fc.record({
      pick: fc.nat(10),
      sameNode: fc.boolean(),
      attemptDelta: fc.constantFrom(0, 0, 0, -1, 1, undefined),
      state: fc.constantFrom('starting', 'running', 'running', 'succeeded', 'failed', 'stopped'),
      detail: fc.constantFrom(undefined, 'same', 'pulling'),
      health: fc.constantFrom(undefined, 'same', 'healthy', 'unhealthy'),
      at: atArb,
    });
    const stats = { dropped: 0, kept: 0 };
    await check(
      'report filter',
      fc.property(fc.array(singleCommandArb, { minLength: 5, maxLength: 40 }), fc.array(reportArb, { minLength: 1, maxLength: 6 }), (cmds, reports) => {
        const state = new ClusterState({ eventCapacity: 64 });
        let index = 0;
        // Two nodes, three tasks: two assigned (one of them running), then the random commands.
        const seed: unknown[] = [
          ...NODE_IDS.map((id) => ({ type: 'node.register', node: { id, resources: { cpu: 4000, memory: 2 ** 33 }, drivers: ['process'] }, at: 1000 })),
          ...TASK_IDS.map((id) => ({ type: 'task.create', id, spec: parseTaskSpec({ name: id, driver: 'process', containers: [{ command: ['sleep', '60'] }] }), at: 1000 })),
          { type: 'task.assign', placements: [{ taskId: 't1', nodeId: 'w1' }, { taskId: 't2', nodeId: 'w2' }], term: 1, at: 1000 },
          { type: 'task.report', reports: [{ taskId: 't1', nodeId: 'w1', state: 'running', at: 1001, attempt: 1 }] },
        ];
        for (const c of [...seed, ...cmds]) state.apply(c as Command, { index: ++index, term: 1 });
        const tasks = state.listTasks().filter((t) => t.node !== null);
        for (const g of reports) {
          const t = tasks.length > 0 ? tasks[g.pick % tasks.length]! : undefined;
          const taskId = t?.id ?? TASK_IDS[g.pick % TASK_IDS.length]!;
          const known = state.getTask(taskId);
          const r: Record<string, unknown> = {
            taskId,
            nodeId: g.sameNode ? (known?.node ?? 'w1') : 'w2',
            state: g.state,
            at: g.at,
          };
          if (g.attemptDelta !== undefined) r.attempt = Math.max(1, (known?.attempt ?? 1) + g.attemptDelta);
          if (g.detail !== undefined) r.detail = g.detail === 'same' ? (known?.detail ?? '') : g.detail;
          if (g.health !== undefined) {
            r.health = g.health === 'same' && known?.health !== undefined ? known.health : { status: g.health === 'unhealthy' ? 'unhealthy' : 'healthy', failingStreak: 0, at: g.at };
          }
          const why = reportIgnored(state.getTask(taskId), r as unknown as TaskReport);
          // The oracle, written out on its own: a report about the live task on its node and
          // attempt that moves its state forward or brings a new detail or health is news.
          const order = ['pending', 'assigned', 'starting', 'running'];
          const live = known !== undefined && known.node === r.nodeId && (r.attempt === undefined || r.attempt === known.attempt) && order.includes(known.state);
          // A terminal report ends a live task; a live state must be later than the recorded one.
          const forward = live && (order.includes(g.state) ? order.indexOf(g.state) > order.indexOf(known.state) : true);
          const sameButNew =
            live && g.state === known.state && ((r.detail !== undefined && r.detail !== known.detail) || (r.health !== undefined && JSON.stringify(r.health) !== JSON.stringify(known.health)));
          const news = forward || sameButNew;
          ok((why === null) === news, () => `the filter ${why === null ? 'keeps' : `drops ('${why}')`} ${show(r)} for ${show(known)}`);
          const before = content(state);
          const res = state.apply({ type: 'task.report', reports: [r] } as unknown as Command, { index: ++index, term: 1 });
          ok(res.ok, 'task.report applies');
          const value = (res as { value: { applied: number; ignored: { reason: string }[] } }).value;
          if (why !== null) {
            stats.dropped++;
            ok(value.applied === 0 && value.ignored[0]?.reason === why, () => `filter said '${why}', apply said ${show(value)} for ${show(r)}`);
            ok(content(state) === before, () => `a report the filter drops ('${why}') changed the state: ${show(r)}`);
          } else {
            stats.kept++;
            ok(value.applied === 1, () => `filter kept ${show(r)}, apply ignored it: ${show(value)}`);
            ok(content(state) !== before, () => `a report the filter keeps changed nothing: ${show(r)}`);
          }
        }
      }),
      300,
    );
    expect(stats.dropped).toBeGreaterThan(100);
    expect(stats.kept).toBeGreaterThan(50);
  });
});

// ---------------------------------------------------------------------------------------------
// 4. The HTTP API of a real manager

interface Res {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: any;
  text: string;
}

function request(addr: string, o: { method: string; path: string; token?: string; body?: Buffer; contentType?: string | null; chunked?: boolean; declaredLength?: number }): Promise<Res> {
  const [host, port] = splitAddr(addr);
  const headers: Record<string, string> = {};
  if (o.token) headers.authorization = `Bearer ${o.token}`;
  if (o.contentType) headers['content-type'] = o.contentType;
  if (o.body !== undefined && !o.chunked) headers['content-length'] = String(o.declaredLength ?? o.body.length);
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port, method: o.method, path: o.path, headers, timeout: 15_000, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body: any = undefined;
        try {
          body = JSON.parse(text);
        } catch {
          /* not JSON */
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, text });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    if (o.body !== undefined && o.chunked) {
      // Several writes without a content-length: chunked transfer encoding.
      const step = Math.max(1, Math.ceil(o.body.length / 4));
      for (let i = 0; i < o.body.length; i += step) req.write(o.body.subarray(i, i + step));
      req.end();
    } else {
      req.end(o.body);
    }
  });
}

/** A body of `n` spaces that prints as its size in counterexamples. */
function oversize(n: number): Buffer {
  const b = Buffer.alloc(n, 0x20);
  Object.defineProperty(b, fc.toStringMethod, { value: () => `Buffer.alloc(${n}, 0x20)` });
  return b;
}

/** JSON for messages: never throws (BigInt, cycles), cut to `max` characters. */
function show(v: unknown, max = 300): string {
  try {
    return String(JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? `${x}n` : x))).slice(0, max);
  } catch {
    return String(v).slice(0, max);
  }
}

/** The body as the server's JSON parser sees it; undefined when it is not JSON. */
function parsedBody(body: Buffer | undefined): { ok: true; value: unknown } | { ok: false } {
  if (body === undefined || body.length === 0) return { ok: false };
  try {
    return { ok: true, value: JSON.parse(body.toString('utf8')) };
  } catch {
    return { ok: false };
  }
}
const isPlainJsonObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Whether a request should be accepted, from the documented rules (null: no opinion). */
function oracle(c: ApiCall): boolean | null {
  const b = parsedBody(c.body);
  switch (c.route) {
    case 'tasks': {
      if (!b.ok) return false;
      const specs = Array.isArray(b.value) ? b.value : [b.value];
      if (specs.length === 0 || specs.length > 1000) return false;
      try {
        return specs.every((x) => !parseTaskSpec(x).privileged);
      } catch {
        return false;
      }
    }
    case 'tokens':
      return b.ok && isPlainJsonObject(b.value) && Object.keys(b.value).join() === 'role' && ['admin', 'viewer'].includes(b.value.role as string);
    case 'rotate':
      if (c.body === undefined || c.body.length === 0) return true;
      return b.ok && isPlainJsonObject(b.value) && Object.keys(b.value).every((k) => k === 'revokeNodes') && (b.value.revokeNodes === undefined || typeof b.value.revokeNodes === 'boolean');
    case 'validate':
      return b.ok;
    case 'node': // no node is registered yet
    case 'tokens.del': // generated ids name no token
    case 'managers':
    case 'oversize':
      return false;
    default:
      return null;
  }
}

type ApiCall = { method: string; path: string; body?: Buffer; contentType?: string | null; chunked?: boolean; declaredLength?: number; route: string };

const contentTypeArb = fc.constantFrom<string | null>('application/json', 'application/json; charset=utf-8', 'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/msgpack', null);
const jsonText = (v: unknown) => Buffer.from(JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? Number(x) : x)) ?? 'null');
const bodyArb: fc.Arbitrary<Buffer> = fc.oneof(
  { weight: 3, arbitrary: fc.jsonValue({ maxDepth: 3 }).map(jsonText) },
  { weight: 4, arbitrary: fc.tuple(validSpecArb, fc.array(specMutationArb, { maxLength: 2 })).map(([s, muts]) => mutateSpec({ ...s, mounts: undefined }, muts).input).map((v) => jsonText(v)) },
  { weight: 1, arbitrary: fc.array(validSpecArb.map((s) => ({ ...s, mounts: undefined, privileged: false })), { minLength: 0, maxLength: 3 }).map(jsonText) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 60 }).map((s) => Buffer.from(s)) },
  { weight: 1, arbitrary: fc.constantFrom('{', '{"name":', '[1,2', '{"a":1}}', 'nul', '\u0000', '{"__proto__":{"isAdmin":true}}', '{"constructor":{"prototype":{"x":1}}}', '{"role":"admin","__proto__":{"role":"admin"}}', '"\\ud800"', '1e999', '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]').map((s) => Buffer.from(s)) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 20_000 }).map((n) => Buffer.from(JSON.stringify(Array.from({ length: n }, () => [])))) },
  { weight: 1, arbitrary: fc.constantFrom(Buffer.from(`[${'['.repeat(100_000)}${']'.repeat(100_000)}]`), Buffer.from(JSON.stringify({ role: 'viewer' })), Buffer.from(JSON.stringify({ availability: 'drain' })), Buffer.from(JSON.stringify({ revokeNodes: 'yes' }))) },
);
const urlSegmentArb = fc.oneof(
  fc.string({ unit: 'binary', minLength: 1, maxLength: 16 }).map(encodeURIComponent),
  fc.constantFrom('k1', 'a%2Fb', '..', '%2e%2e', '__flotilla%2Fapi-tokens%2Fx', '__flotilla', '%00', '%ZZ', 'x'.repeat(600), '%E2%80%AE', '__proto__', 'constructor'),
);

const apiCallArb: fc.Arbitrary<ApiCall> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ body: bodyArb, contentType: contentTypeArb, chunked: fc.boolean() }).map((r) => ({ ...r, method: 'POST', path: '/v1/tasks', route: 'tasks' })) },
  {
    weight: 3,
    arbitrary: fc
      .record({ key: fc.array(urlSegmentArb, { minLength: 1, maxLength: 3 }), body: fc.oneof(fc.string({ unit: 'binary', maxLength: 40 }).map((s) => Buffer.from(s)), fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b))), cas: fc.option(fc.constantFrom('0', '1', '-1', 'x', '1.5', '1e3', ''), { nil: undefined }), contentType: contentTypeArb })
      .map((r) => ({ method: 'PUT', path: `/v1/kv/${r.key.join('/')}${r.cas !== undefined ? `?cas=${r.cas}` : ''}`, body: r.body, contentType: r.contentType, route: 'kv.put' })),
  },
  { weight: 1, arbitrary: fc.record({ key: urlSegmentArb, cas: fc.option(fc.constantFrom('0', '7', 'x'), { nil: undefined }) }).map((r) => ({ method: 'DELETE', path: `/v1/kv/${r.key}${r.cas !== undefined ? `?cas=${r.cas}` : ''}`, route: 'kv.del' })) },
  { weight: 2, arbitrary: fc.record({ id: urlSegmentArb, body: bodyArb, contentType: contentTypeArb }).map((r) => ({ method: 'PATCH', path: `/v1/nodes/${r.id}`, body: r.body, contentType: r.contentType, route: 'node' })) },
  { weight: 2, arbitrary: fc.record({ body: bodyArb, contentType: contentTypeArb }).map((r) => ({ method: 'POST', path: '/v1/tokens', body: r.body, contentType: r.contentType, route: 'tokens' })) },
  { weight: 1, arbitrary: fc.record({ id: urlSegmentArb }).map((r) => ({ method: 'DELETE', path: `/v1/tokens/${r.id}`, route: 'tokens.del' })) },
  { weight: 1, arbitrary: fc.record({ body: fc.oneof(bodyArb, fc.constant(Buffer.alloc(0))), contentType: contentTypeArb }).map((r) => ({ method: 'POST', path: '/v1/tokens/worker/rotate', body: r.body, contentType: r.contentType, route: 'rotate' })) },
  { weight: 1, arbitrary: fc.record({ id: urlSegmentArb }).map((r) => ({ method: 'DELETE', path: `/v1/tasks/${r.id}`, route: 'tasks.del' })) },
  { weight: 1, arbitrary: fc.record({ body: bodyArb }).map((r) => ({ method: 'POST', path: '/v1/ui/validate', body: r.body, contentType: 'application/json', route: 'validate' })) },
  { weight: 1, arbitrary: fc.record({ body: bodyArb }).map((r) => ({ method: 'POST', path: '/v1/managers', body: r.body, contentType: 'application/json', route: 'managers' })) },
  {
    weight: 1,
    arbitrary: fc
      .record({ path: fc.constantFrom('/v1/tasks', '/v1/kv/big', '/v1/tokens', '/v1/nodes/w1'), chunked: fc.boolean(), lie: fc.boolean() })
      .map((r) => ({
        method: r.path === '/v1/kv/big' ? 'PUT' : r.path === '/v1/nodes/w1' ? 'PATCH' : 'POST',
        path: r.path,
        body: oversize(r.lie ? 100 : 1024 * 1024 + 10),
        chunked: r.chunked,
        // A declared length past the limit with a small body, or the true (oversize) length.
        declaredLength: r.lie ? 50 * 1024 * 1024 : undefined,
        contentType: 'application/json',
        route: 'oversize',
      }))
      .map((c) => (c.declaredLength !== undefined ? { ...c, chunked: false } : c)),
  },
);

describe('HTTP API of a real manager', () => {
  let cluster: TestCluster;
  let addr = '';
  let admin = '';
  let leaderId = '';
  /** The worker join token: derived from the secret until a generated request rotates it. */
  let joinToken = workerToken(SECRET);

  beforeAll(async () => {
    cluster = await TestCluster.managers(1);
    leaderId = await cluster.waitForLeader();
    addr = cluster.managers.get(leaderId)!.addr;
    const r = await request(addr, { method: 'POST', path: '/v1/tokens', body: jsonText({ role: 'admin' }), contentType: 'application/json' });
    expect(r.status, r.text).toBe(201);
    admin = r.body.token;
  }, 60_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  it('write routes answer generated bodies with 2xx or a 4xx JSON error, never 5xx; only accepted requests change the state', async () => {
    const tasks = new Set<string>();
    const kv = new Map<string, string>();
    let tokens = 1;
    const statuses = new Map<string, number>();
    await check(
      'api bodies',
      fc.asyncProperty(apiCallArb, async (c) => {
        let r: Awaited<ReturnType<typeof request>>;
        try {
          r = await request(addr, { ...c, token: admin });
        } catch (e) {
          // HTTP lets a server close the connection after refusing an oversized body; the client
          // may then see the reset while it still writes. Only there, and the state is checked
          // by the following calls as ever.
          const code = (e as { code?: string }).code;
          if (c.route === 'oversize' && (code === 'EPIPE' || code === 'ECONNRESET')) {
            statuses.set('oversize reset', (statuses.get('oversize reset') ?? 0) + 1);
            return;
          }
          throw e;
        }
        statuses.set(`${c.route} ${r.status}`, (statuses.get(`${c.route} ${r.status}`) ?? 0) + 1);
        const what = `${c.method} ${c.path.slice(0, 80)} (${c.body?.length ?? 0} bytes: ${c.body?.subarray(0, 160).toString('utf8')}) -> ${r.status} ${r.text.slice(0, 300)}`;
        expect(r.status < 500, what).toBe(true);
        expect(r.status >= 200, what).toBe(true);
        const expected = oracle(c);
        if (expected !== null) expect(r.status < 300, `expected ${expected ? 'acceptance' : 'a 4xx'}: ${what}`).toBe(expected);
        if (c.route === 'oversize') expect(r.status, what).toBe(413);
        if (r.status >= 400) {
          expect(r.headers['content-type'], what).toMatch(/^application\/json/);
          expect(typeof r.body?.error?.code, what).toBe('string');
          expect(typeof r.body?.error?.message === 'string' && r.body.error.message.length > 0, what).toBe(true);
          return;
        }
        expect(r.status < 300, what).toBe(true);
        switch (c.route) {
          case 'tasks': {
            const created = Array.isArray(r.body?.tasks) ? r.body.tasks : [r.body];
            for (const t of created) {
              expect(typeof t?.id, what).toBe('string');
              expect(t.spec.privileged, `a privileged task was accepted: ${what}`).toBe(false);
              expect(t.spec.mounts, `a host mount was accepted: ${what}`).toEqual([]);
              tasks.add(t.id);
            }
            break;
          }
          case 'kv.put':
            expect(typeof r.body?.key, what).toBe('string');
            kv.set(r.body.key, c.body!.toString('utf8'));
            break;
          case 'kv.del':
            if (r.body?.deleted) kv.delete(r.body.key);
            break;
          case 'tokens':
            tokens++;
            break;
          case 'rotate':
            expect(r.body?.token, what).toMatch(/^flt-w-/);
            joinToken = r.body.token;
            break;
          case 'validate':
            expect(typeof r.body?.ok, what).toBe('boolean');
            break;
          case 'managers':
            throw new Error(`a generated body added a manager: ${what}`);
          default:
            break;
        }
      }),
      400,
    );

    // The manager is still up and answers.
    expect(cluster.managers.get(leaderId)!.proc!.exitCode).toBeNull();
    expect((await request(addr, { method: 'GET', path: '/v1/status' })).status).toBe(200);
    // The state holds exactly what the accepted requests created.
    const all = await request(addr, { method: 'GET', path: '/v1/tasks?all=true', token: admin });
    expect(all.status).toBe(200);
    expect((all.body.tasks as { id: string }[]).map((t) => t.id).sort()).toEqual([...tasks].sort());
    const items = await request(addr, { method: 'GET', path: '/v1/kv', token: admin });
    expect(items.status).toBe(200);
    expect(Object.fromEntries((items.body.items as { key: string; value: string }[]).map((e) => [e.key, e.value]))).toEqual(Object.fromEntries(kv));
    const toks = await request(addr, { method: 'GET', path: '/v1/tokens', token: admin });
    expect(toks.body.tokens.length).toBe(tokens);
    const nodes = await request(addr, { method: 'GET', path: '/v1/nodes', token: admin });
    expect(nodes.body.nodes).toEqual([]);
    // Every route saw both outcomes or at least answered: a summary for the report.
    console.log(`fuzz api (seed ${SEED}): ${[...statuses].sort().map(([k, n]) => `${k}×${n}`).join(', ')}`);
  }, 120_000);

  it('regression: oversized bodies get a 413 (chunked too), kv values too big for one log entry a 413, loose bodies a 400', async () => {
    const big = Buffer.alloc(1024 * 1024 + 10, 0x20);
    for (const chunked of [true, false]) {
      const r = await request(addr, { method: 'POST', path: '/v1/tasks', token: admin, body: big, chunked, contentType: 'application/json' });
      expect(r.status, r.text).toBe(413);
      expect(r.body.error.code).toBe('too_large');
    }
    const lied = await request(addr, { method: 'PUT', path: '/v1/kv/x', token: admin, body: Buffer.from('x'), declaredLength: 50 * 1024 * 1024 });
    expect(lied.status).toBe(413);
    // 1 MiB of control characters is within the body limit but encodes to ~6 MiB of JSON: a
    // log entry no follower could ever receive (a 3-manager cluster stopped committing).
    const ctl = await request(addr, { method: 'PUT', path: '/v1/kv/ctl', token: admin, body: Buffer.alloc(1024 * 1024 - 100, 1) });
    expect(ctl.status, ctl.text).toBe(413);
    expect(ctl.body.error.message).toMatch(/one log entry/);
    // Arrays and unknown fields are not the documented objects.
    for (const body of ['[]', '[true]', '{"revokeNodes":false,"x":1}']) {
      const r = await request(addr, { method: 'POST', path: '/v1/tokens/worker/rotate', token: admin, body: Buffer.from(body), contentType: 'application/json' });
      expect(r.status, `${body}: ${r.text}`).toBe(400);
    }
    const extra = await request(addr, { method: 'POST', path: '/v1/tokens', token: admin, body: Buffer.from('{"role":"viewer","expires":0}'), contentType: 'application/json' });
    expect(extra.status, extra.text).toBe(400);
    expect(extra.body.error.message).toMatch(/'expires' is not a known field/);
    expect((await request(addr, { method: 'GET', path: '/v1/kv/ctl', token: admin })).status).toBe(404);
  });

  /** Opens a worker session, sends one frame, and returns the manager's first answer (or the close code). */
  function session(frame: Buffer): Promise<{ t: string; [k: string]: unknown } | { closed: number }> {
    return new Promise((resolve) => {
      const ws = new WebSocket(`ws://${addr}/v1/worker`);
      let done = false;
      const finish = (v: { t: string } | { closed: number }) => {
        if (done) return;
        done = true;
        resolve(v);
        ws.close();
      };
      ws.on('open', () => ws.send(frame, { binary: true }));
      ws.on('message', (data: Buffer) => {
        try {
          finish(workerDecode(data) as { t: string });
        } catch {
          finish({ t: 'undecodable' });
        }
      });
      ws.on('close', (code) => finish({ closed: code }));
      ws.on('error', () => finish({ closed: 0 }));
    });
  }

  it('worker registrations with a valid join token: welcomed only when the node is registered', async () => {
    const token = joinToken;
    // Regression: a registration the state machine refused (memory must be whole bytes) was welcomed.
    const refused = await session(workerEncode({ t: 'register', token, version: 'fuzz', nodeId: 'w-frac', resources: { cpu: 1000, memory: 1.5 }, drivers: ['process'], tasks: [] }));
    expect(refused).toMatchObject({ t: 'reject' });
    expect(String((refused as { reason?: unknown }).reason)).toMatch(/invalid registration: .*node\.resources\.memory/);
    const registerArb = fc.record(
      {
        nodeId: fc.oneof({ weight: 3, arbitrary: fc.constantFrom('w1', 'w2', 'w-3') }, { weight: 1, arbitrary: fc.string({ minLength: 1, maxLength: 20 }) }),
        addr: fc.oneof({ weight: 3, arbitrary: fc.constant('127.0.0.1:1') }, { weight: 1, arbitrary: fc.oneof(fc.string({ maxLength: 30 }), fc.constant('x'.repeat(2000)), fc.integer()) }),
        labels: fc.oneof({ weight: 3, arbitrary: fc.dictionary(labelKeyArb, fc.string({ maxLength: 10 }), { maxKeys: 3 }) }, { weight: 1, arbitrary: fc.oneof(fc.constantFrom({ zone: 5 }, { '': 'x' }, ['a'], 'zone=eu', null), fc.jsonValue({ maxDepth: 2 })) }),
        resources: fc.oneof({ weight: 3, arbitrary: fc.record({ cpu: fc.nat(64_000), memory: fc.nat() }) }, { weight: 1, arbitrary: fc.oneof(fc.record({ cpu: fc.double(), memory: fc.double() }), fc.constantFrom({ cpu: -1, memory: 1 }, { cpu: 1.5, memory: 2 ** 60 }, { cpu: 1000 })) }),
        drivers: fc.oneof({ weight: 3, arbitrary: fc.constant(['process']) }, { weight: 1, arbitrary: fc.oneof(fc.array(fc.string({ maxLength: 80 }), { maxLength: 20 }), fc.jsonValue({ maxDepth: 1 })) }),
        tasks: fc.oneof(fc.constant([]), fc.array(fc.jsonValue({ maxDepth: 2 }), { maxLength: 3 })),
      },
      { requiredKeys: ['nodeId', 'resources', 'drivers', 'tasks'] },
    );
    const answers = new Map<string, number>();
    await check(
      'worker registrations',
      fc.asyncProperty(registerArb, async (reg) => {
        const answer = await session(workerEncode({ t: 'register', token, version: 'fuzz', ...reg } as Record<string, unknown>));
        const kind = 't' in answer ? answer.t : `closed ${answer.closed}`;
        answers.set(kind, (answers.get(kind) ?? 0) + 1);
        expect(['welcome', 'reject', 'closed 4006', 'closed 4009'], `${show(reg)} -> ${show(answer)}`).toContain(kind);
        if (kind === 'welcome') {
          const nodes = await request(addr, { method: 'GET', path: '/v1/nodes', token: admin });
          const node = (nodes.body.nodes as { id: string; labels: Record<string, string> }[]).find((n) => n.id === reg.nodeId);
          expect(node, `welcomed ${show(reg)} but the node is not registered`).toBeDefined();
        }
      }),
      60,
    );
    console.log(`fuzz worker registrations (seed ${SEED}): ${[...answers].map(([k, n]) => `${k}×${n}`).join(', ')}`);
    expect(cluster.managers.get(leaderId)!.proc!.exitCode).toBeNull();
  }, 60_000);
});
