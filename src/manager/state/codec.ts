// Canonical encoding, shared by log entries and snapshots: JSON with sorted object keys, byte
// values as { "$bytes": base64 }. Sorting makes the bytes independent of how objects were
// built, so two replicas that hold the same state write the same bytes.

import { FlotillaError } from '../../protocol/errors.js';
import { formatBytes } from '../../protocol/spec.js';
import type { Command } from './commands.js';

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const B64_INDEX = new Map<string, number>([...B64].map((c, i) => [c, i]));

export function toBase64(data: Uint8Array): string {
  // Node's encoder writes the same standard, padded alphabet; the loop below is the fallback.
  if (typeof Buffer !== 'undefined') return Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('base64');
  let out = '';
  let i = 0;
  for (; i + 2 < data.length; i += 3) {
    const n = (data[i]! << 16) | (data[i + 1]! << 8) | data[i + 2]!;
    out += B64[(n >> 18) & 63]! + B64[(n >> 12) & 63]! + B64[(n >> 6) & 63]! + B64[n & 63]!;
  }
  const rest = data.length - i;
  if (rest === 1) {
    const n = data[i]! << 16;
    out += B64[(n >> 18) & 63]! + B64[(n >> 12) & 63]! + '==';
  } else if (rest === 2) {
    const n = (data[i]! << 16) | (data[i + 1]! << 8);
    out += B64[(n >> 18) & 63]! + B64[(n >> 12) & 63]! + B64[(n >> 6) & 63]! + '=';
  }
  return out;
}

export function fromBase64(text: string): Uint8Array {
  // Canonical (padded, alphabet-only) text decodes natively; anything else takes the checking loop.
  if (typeof Buffer !== 'undefined' && text.length % 4 === 0 && /^[A-Za-z0-9+/]*={0,2}$/.test(text)) return new Uint8Array(Buffer.from(text, 'base64'));
  const clean = text.replace(/=+$/, '');
  const out = new Uint8Array(Math.floor((clean.length * 3) / 4));
  let bits = 0;
  let acc = 0;
  let j = 0;
  for (const ch of clean) {
    const v = B64_INDEX.get(ch);
    if (v === undefined) throw new FlotillaError('bad_request', `Cannot decode base64 as it contains '${ch}'`);
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[j++] = (acc >> bits) & 0xff;
    }
  }
  return out;
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** JSON text with object keys sorted and Uint8Arrays as { "$bytes": base64 }. */
export function canonicalJson(value: unknown): string {
  // A function replacer sees the holder as `this`: read the original value, since JSON has
  // already applied toJSON (a Node Buffer would otherwise arrive as { type, data }).
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

export function reviveBytes(v: unknown): Uint8Array | string | unknown {
  if (isPlainObject(v) && typeof v.$bytes === 'string' && Object.keys(v).length === 1) return fromBase64(v.$bytes);
  return v;
}

export const textEncoder = new TextEncoder();
export const textDecoder = new TextDecoder('utf-8', { fatal: true });

/**
 * Largest encoded command. A log entry reaches followers inside one 4 MiB transport frame: a
 * bigger entry could never be replicated, and every write after it would wait behind it. (A
 * value within the kv limits can still encode to several times its size: JSON escapes each
 * control character as six bytes.)
 */
export const MAX_COMMAND_BYTES = 3 * 1024 * 1024;

/** Encode a command for a log entry (canonical JSON, UTF-8). Throws `too_large` past MAX_COMMAND_BYTES. */
export function encodeCommand(cmd: Command): Uint8Array {
  const data = textEncoder.encode(canonicalJson(cmd));
  if (data.length > MAX_COMMAND_BYTES) {
    throw new FlotillaError(
      'too_large',
      `Cannot write ${cmd.type} as it encodes to ${formatBytes(data.length)}, more than the ${formatBytes(MAX_COMMAND_BYTES)} one log entry may hold`,
    );
  }
  return data;
}

/**
 * Decode a log entry. Throws `bad_request` on bytes that are not JSON; the result is NOT
 * validated (apply validates), so it is typed `unknown`.
 */
export function decodeCommand(data: Uint8Array): unknown {
  let parsed: unknown;
  try {
    parsed = JSON.parse(textDecoder.decode(data));
  } catch (err) {
    throw new FlotillaError('bad_request', 'Cannot decode command as the entry is not UTF-8 JSON', { cause: err });
  }
  const fix = (c: unknown): void => {
    if (!isPlainObject(c)) return;
    if (c.type === 'kv.put') c.value = reviveBytes(c.value);
    if (c.type === 'batch' && Array.isArray(c.commands)) c.commands.forEach(fix);
  };
  fix(parsed);
  return parsed;
}

