// Wire format of the manager-to-manager Raft transport.
//
// A frame is one binary WebSocket message: byte 0 is the protocol version, the rest is one
// MessagePack-encoded object whose `k` field names its kind (see `Frame`). Everything decoded
// from the network is validated here before the transport looks at it.
import { Packr } from 'msgpackr';
import type { ConfState, Entry, Message, MessageType, Snapshot } from './types.js';

export const PROTOCOL_VERSION = 1;
export const DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024;

export type FrameErrorReason =
  | 'empty' // zero-length frame
  | 'too_large' // longer than the frame bound
  | 'version' // unknown protocol version byte
  | 'malformed' // the payload is not valid MessagePack
  | 'not_object' // valid MessagePack, but not a plain object
  | 'invalid'; // an object of the wrong shape (unknown kind, bad field)

export class FrameError extends Error {
  constructor(
    readonly reason: FrameErrorReason,
    message: string,
  ) {
    super(message);
    this.name = 'FrameError';
  }
}

// Plain MessagePack maps (no msgpackr records). Decoded binary fields are copied out of the frame
// so that a retained entry does not pin the whole (up to several MiB) frame buffer in memory.
const packr = new Packr({ useRecords: false, int64AsType: 'number', copyBuffers: true });

/** Encodes one frame. Throws FrameError('too_large') if it would exceed `maxFrameBytes`. */
export function encodeFrame(obj: object, maxFrameBytes = DEFAULT_MAX_FRAME_BYTES): Buffer {
  const body = packr.pack(obj);
  const frame = Buffer.allocUnsafe(1 + body.length);
  frame[0] = PROTOCOL_VERSION;
  body.copy(frame, 1);
  if (frame.length > maxFrameBytes) {
    throw new FrameError('too_large', `frame of ${frame.length} bytes exceeds the ${maxFrameBytes}-byte bound`);
  }
  return frame;
}

/** Decodes one frame into a plain object (not yet validated as a particular kind). */
export function decodeFrame(buf: Uint8Array, maxFrameBytes = DEFAULT_MAX_FRAME_BYTES): Record<string, unknown> {
  if (buf.length === 0) throw new FrameError('empty', 'empty frame');
  if (buf.length > maxFrameBytes) throw new FrameError('too_large', `frame of ${buf.length} bytes exceeds the ${maxFrameBytes}-byte bound`);
  if (buf[0] !== PROTOCOL_VERSION) throw new FrameError('version', `unsupported protocol version ${buf[0]} (expected ${PROTOCOL_VERSION})`);
  if (buf.length === 1) throw new FrameError('malformed', 'frame has no payload');
  let value: unknown;
  try {
    value = packr.unpack(buf.subarray(1));
  } catch (err) {
    throw new FrameError('malformed', `undecodable frame: ${(err as Error).message}`);
  }
  if (!isPlainObject(value)) throw new FrameError('not_object', `frame payload is ${describeValue(value)}, not an object`);
  return value;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** An untrusted value for an error message: strings quoted and cut short, anything else by kind (JSON.stringify throws on a BigInt or deep nesting). */
function quote(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 64 ? `${v.slice(0, 64)}…` : v);
  return v === undefined ? 'undefined' : describeValue(v);
}

function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (v instanceof Uint8Array) return 'binary';
  if (typeof v === 'object') return `a ${(v as object).constructor?.name ?? 'object'}`;
  return `a ${typeof v}`;
}

// ---------------------------------------------------------------------------------------------
// Raft messages

/** Message types that travel between nodes ('snapStatus', 'unreachable' and 'linkDown' are local only). */
const WIRE_TYPES: ReadonlySet<MessageType> = new Set<MessageType>([
  'app',
  'appResp',
  'heartbeat',
  'heartbeatResp',
  'vote',
  'voteResp',
  'preVote',
  'preVoteResp',
  'snap',
  'timeoutNow',
  'readIndex',
  'readIndexResp',
  'transferLeader',
  'prop',
]);

function invalid(what: string): FrameError {
  return new FrameError('invalid', `invalid message: ${what}`);
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function count(o: Record<string, unknown>, field: string, where = ''): number {
  const v = o[field];
  if (!isCount(v)) throw invalid(`${where}${field} must be a non-negative integer`);
  return v;
}

function optional<T>(o: Record<string, unknown>, field: string, check: (v: unknown) => v is T, what: string): T | undefined {
  const v = o[field];
  if (v === undefined) return undefined;
  if (!check(v)) throw invalid(`${field} must be ${what}`);
  return v;
}

const isString = (v: unknown): v is string => typeof v === 'string';
const isBool = (v: unknown): v is boolean => typeof v === 'boolean';
const isBytes = (v: unknown): v is Uint8Array => v instanceof Uint8Array;

function nodeId(o: Record<string, unknown>, field: string): string {
  const v = o[field];
  if (typeof v !== 'string' || v.length === 0) throw invalid(`${field} must be a non-empty string`);
  return v;
}

function validateEntry(x: unknown, i: number): Entry {
  if (!isPlainObject(x)) throw invalid(`entries[${i}] is not an object`);
  const where = `entries[${i}].`;
  const type = x['type'];
  if (type !== 0 && type !== 1) throw invalid(`${where}type must be 0 or 1`);
  if (!isBytes(x['data'])) throw invalid(`${where}data must be binary`);
  return { term: count(x, 'term', where), index: count(x, 'index', where), type, data: x['data'] };
}

function validateConf(x: unknown): ConfState {
  if (!isPlainObject(x)) throw invalid('snapshot.meta.conf is not an object');
  const voters = x['voters'];
  const learners = x['learners'];
  if (!Array.isArray(voters) || !voters.every(isString)) throw invalid('snapshot.meta.conf.voters must be a list of strings');
  if (!Array.isArray(learners) || !learners.every(isString)) throw invalid('snapshot.meta.conf.learners must be a list of strings');
  return { voters, learners };
}

function validateSnapshot(x: unknown): Snapshot {
  if (!isPlainObject(x)) throw invalid('snapshot is not an object');
  const meta = x['meta'];
  if (!isPlainObject(meta)) throw invalid('snapshot.meta is not an object');
  if (!isBytes(x['data'])) throw invalid('snapshot.data must be binary');
  return {
    meta: { index: count(meta, 'index', 'snapshot.meta.'), term: count(meta, 'term', 'snapshot.meta.'), conf: validateConf(meta['conf']) },
    data: x['data'],
  };
}

/** Checks that a decoded value is a Raft message that may travel between nodes; returns a clean copy. */
export function validateMessage(x: unknown): Message {
  if (!isPlainObject(x)) throw invalid(`expected an object, got ${describeValue(x)}`);
  const type = x['type'];
  if (typeof type !== 'string' || !WIRE_TYPES.has(type as MessageType)) throw invalid(`unknown type ${quote(type)}`);
  const msg: Message = {
    type: type as MessageType,
    from: nodeId(x, 'from'),
    to: nodeId(x, 'to'),
    term: count(x, 'term'),
    index: count(x, 'index'),
    logTerm: count(x, 'logTerm'),
  };
  if (x['entries'] !== undefined) {
    const ents = x['entries'];
    if (!Array.isArray(ents)) throw invalid('entries must be a list');
    msg.entries = ents.map(validateEntry);
  }
  const commit = optional(x, 'commit', isCount, 'a non-negative integer');
  if (commit !== undefined) msg.commit = commit;
  const reject = optional(x, 'reject', isBool, 'a boolean');
  if (reject !== undefined) msg.reject = reject;
  const rejectHint = optional(x, 'rejectHint', isCount, 'a non-negative integer');
  if (rejectHint !== undefined) msg.rejectHint = rejectHint;
  if (x['snapshot'] !== undefined) msg.snapshot = validateSnapshot(x['snapshot']);
  const context = optional(x, 'context', isString, 'a string');
  if (context !== undefined) msg.context = context;
  const transfer = optional(x, 'transfer', isBool, 'a boolean');
  if (transfer !== undefined) msg.transfer = transfer;
  if (type === 'snap' && !msg.snapshot) throw invalid('a snap message needs a snapshot');
  return msg;
}

/** The message as a plain object without undefined fields (what goes on the wire). */
export function messageToWire(m: Message): Record<string, unknown> {
  const o: Record<string, unknown> = { type: m.type, from: m.from, to: m.to, term: m.term, index: m.index, logTerm: m.logTerm };
  if (m.entries !== undefined) o['entries'] = m.entries.map((e) => ({ term: e.term, index: e.index, type: e.type, data: e.data }));
  if (m.commit !== undefined) o['commit'] = m.commit;
  if (m.reject !== undefined) o['reject'] = m.reject;
  if (m.rejectHint !== undefined) o['rejectHint'] = m.rejectHint;
  if (m.snapshot !== undefined) o['snapshot'] = { meta: m.snapshot.meta, data: m.snapshot.data };
  if (m.context !== undefined) o['context'] = m.context;
  if (m.transfer !== undefined) o['transfer'] = m.transfer;
  return o;
}

// ---------------------------------------------------------------------------------------------
// Frames

export const NONCE_BYTES = 32;
export const MAC_BYTES = 32;

/**
 * Frame kinds. The handshake (challenge, auth, welcome) authenticates both ends with the cluster
 * secret (see transport.ts); snapshots travel as snapBegin, snapChunk*, snapEnd and are
 * acknowledged by the receiver with snapAck.
 */
export type Frame =
  /** server -> client, first frame: the server's id and nonce. */
  | { k: 'challenge'; id: string; nonce: Uint8Array }
  /** client -> server: the client's id, the server id it expects, its nonce, its address and its proof. */
  | { k: 'auth'; from: string; to: string; nonce: Uint8Array; mac: Uint8Array; addr?: string }
  /** server -> client: the server's proof; the connection is then authenticated both ways. */
  | { k: 'welcome'; mac: Uint8Array }
  /** client -> server: one Raft message. */
  | { k: 'msg'; m: Message }
  /** client -> server: a snapshot message (its data follows in `chunks` chunks, `size` bytes in all). */
  | { k: 'snapBegin'; id: number; m: Message; size: number; chunks: number }
  | { k: 'snapChunk'; id: number; seq: number; data: Uint8Array }
  /** client -> server: the SHA-256 of the whole snapshot data, after the last chunk. */
  | { k: 'snapEnd'; id: number; sha256: Uint8Array }
  /** server -> client: snapshot `id` was received (and handed to the core) or not. */
  | { k: 'snapAck'; id: number; ok: boolean; error?: string };

function frameInvalid(what: string): FrameError {
  return new FrameError('invalid', `invalid frame: ${what}`);
}

function bytesOf(o: Record<string, unknown>, field: string, len?: number): Uint8Array {
  const v = o[field];
  if (!isBytes(v) || (len !== undefined && v.length !== len)) {
    throw frameInvalid(`${String(o['k'])}.${field} must be ${len === undefined ? 'binary' : `${len} bytes`}`);
  }
  return v;
}

function countOf(o: Record<string, unknown>, field: string): number {
  const v = o[field];
  if (!isCount(v)) throw frameInvalid(`${String(o['k'])}.${field} must be a non-negative integer`);
  return v;
}

function idOf(o: Record<string, unknown>, field: string): string {
  const v = o[field];
  if (typeof v !== 'string' || v.length === 0) throw frameInvalid(`${String(o['k'])}.${field} must be a non-empty string`);
  return v;
}

/** Validates a decoded frame object as one of the known kinds. */
export function parseFrame(o: Record<string, unknown>): Frame {
  switch (o['k']) {
    case 'challenge':
      return { k: 'challenge', id: idOf(o, 'id'), nonce: bytesOf(o, 'nonce', NONCE_BYTES) };
    case 'auth': {
      const f: Frame = { k: 'auth', from: idOf(o, 'from'), to: idOf(o, 'to'), nonce: bytesOf(o, 'nonce', NONCE_BYTES), mac: bytesOf(o, 'mac', MAC_BYTES) };
      if (o['addr'] !== undefined) f.addr = idOf(o, 'addr');
      return f;
    }
    case 'welcome':
      return { k: 'welcome', mac: bytesOf(o, 'mac', MAC_BYTES) };
    case 'msg':
      return { k: 'msg', m: validateMessage(o['m']) };
    case 'snapBegin': {
      const m = validateMessage(o['m']);
      if (m.type !== 'snap') throw frameInvalid(`snapBegin carries a ${m.type} message`);
      return { k: 'snapBegin', id: countOf(o, 'id'), m, size: countOf(o, 'size'), chunks: countOf(o, 'chunks') };
    }
    case 'snapChunk':
      return { k: 'snapChunk', id: countOf(o, 'id'), seq: countOf(o, 'seq'), data: bytesOf(o, 'data') };
    case 'snapEnd':
      return { k: 'snapEnd', id: countOf(o, 'id'), sha256: bytesOf(o, 'sha256', 32) };
    case 'snapAck': {
      const ok = o['ok'];
      if (typeof ok !== 'boolean') throw frameInvalid('snapAck.ok must be a boolean');
      const error = o['error'];
      if (error !== undefined && typeof error !== 'string') throw frameInvalid('snapAck.error must be a string');
      return error === undefined ? { k: 'snapAck', id: countOf(o, 'id'), ok } : { k: 'snapAck', id: countOf(o, 'id'), ok, error };
    }
    default:
      throw frameInvalid(`unknown kind ${quote(o['k'])}`);
  }
}

/** Encodes a frame of a known kind (Raft messages are stripped of undefined fields). */
export function encodeTypedFrame(f: Frame, maxFrameBytes = DEFAULT_MAX_FRAME_BYTES): Buffer {
  if (f.k === 'msg' || f.k === 'snapBegin') return encodeFrame({ ...f, m: messageToWire(f.m) }, maxFrameBytes);
  return encodeFrame(f, maxFrameBytes);
}
