// The replicated key-value store: versioned entries with compare-and-set, a running size for
// the state-size quota, and the memory of recent request ids that turns a retried write into
// the first write's answer (and refuses an id reused for a different write).

import { formatBytes } from '../../protocol/spec.js';
import type { KvDelCommand, KvDelResult, KvPutCommand, KvWriteResult } from './commands.js';
import { reviveBytes } from './codec.js';
import type { EventLog } from './events.js';
import {
  fail,
  kvEntryBytes,
  MAX_VALUE_BYTES,
  REQUEST_MEMORY,
  utf8Length,
  valueBytes,
  type ApplyResult,
  type KvEntry,
  type QuotaGuard,
  type RequestRecord,
} from './model.js';

export class KvStore {
  private entries = new Map<string, KvEntry>();
  /** Sum of `kvEntryBytes` over the entries, kept on every write (for the state-size quota). */
  private size = 0;
  private requests = new Map<string, RequestRecord>();

  constructor(
    private readonly log: EventLog,
    private readonly quota: QuotaGuard,
  ) {}

  /**
   * A store holding a snapshot's entries and request records. `kvBytes`: their size when the
   * snapshot parser already added it up (else computed here).
   */
  static restore(log: EventLog, quota: QuotaGuard, entries: KvEntry[], requests: [string, RequestRecord][], kvBytes?: number): KvStore {
    const store = new KvStore(log, quota);
    let sum = 0;
    for (const e of entries) {
      const value = reviveBytes(e.value) as Uint8Array | string;
      store.entries.set(e.key, { ...e, value });
      if (kvBytes === undefined) sum += kvEntryBytes(e.key, valueBytes(value));
    }
    store.size = kvBytes ?? sum;
    store.requests = new Map(requests);
    return store;
  }

  /** Estimated bytes of the entries (see `ClusterState.stateBytes`). */
  get bytes(): number {
    return this.size;
  }

  get(key: string): KvEntry | undefined {
    return this.entries.get(key);
  }

  /** Entries whose key starts with `prefix`, sorted by key. */
  list(prefix: string): KvEntry[] {
    const out: KvEntry[] = [];
    for (const e of this.entries.values()) if (e.key.startsWith(prefix)) out.push(e);
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  /** The entries and the remembered requests (oldest first), for a snapshot. */
  image(): { kv: KvEntry[]; requests: [string, RequestRecord][] } {
    return { kv: [...this.entries.values()], requests: [...this.requests.entries()] };
  }

  /** How many bytes writing a value of `size` bytes under `key` adds to the state. */
  growth(key: string, size: number): number {
    const cur = this.entries.get(key);
    return kvEntryBytes(key, size) - (cur === undefined ? 0 : kvEntryBytes(cur.key, valueBytes(cur.value)));
  }

  put(cmd: KvPutCommand): ApplyResult<KvWriteResult> {
    const seen = this.seenRequest(cmd);
    if (seen !== undefined) return seen as ApplyResult<KvWriteResult>;
    const size = typeof cmd.value === 'string' ? utf8Length(cmd.value) : cmd.value.byteLength;
    if (size > MAX_VALUE_BYTES) {
      return fail('too_large', `Cannot put '${cmd.key}' as its value is ${formatBytes(size)}, more than the ${formatBytes(MAX_VALUE_BYTES)} limit`);
    }
    const cur = this.entries.get(cmd.key);
    const conflict = this.casConflict('put', cmd.key, cur, cmd.cas);
    if (conflict !== undefined) return conflict;
    const growth = this.growth(cmd.key, size);
    const overQuota = this.quota(`put '${cmd.key}'`, growth, cmd.quota);
    if (overQuota !== undefined) return overQuota;
    this.size += growth;
    const index = this.log.entry.index;
    const value = typeof cmd.value === 'string' ? cmd.value : new Uint8Array(cmd.value); // own copy
    const entry: KvEntry = { key: cmd.key, value, version: index, createVersion: cur?.createVersion ?? index };
    this.entries.set(cmd.key, entry);
    this.log.emit({ type: 'kv.put', key: cmd.key, version: index });
    const result: ApplyResult<KvWriteResult> = { ok: true, value: { key: cmd.key, version: index, createVersion: entry.createVersion } };
    this.remember(cmd, result);
    return result;
  }

  del(cmd: KvDelCommand): ApplyResult<KvDelResult> {
    const seen = this.seenRequest(cmd);
    if (seen !== undefined) return seen as ApplyResult<KvDelResult>;
    const cur = this.entries.get(cmd.key);
    const conflict = this.casConflict('delete', cmd.key, cur, cmd.cas);
    if (conflict !== undefined) return conflict;
    if (cur === undefined) return { ok: true, value: { deleted: false, key: cmd.key } };
    this.entries.delete(cmd.key);
    this.size -= kvEntryBytes(cur.key, valueBytes(cur.value));
    this.log.emit({ type: 'kv.deleted', key: cmd.key, version: this.log.entry.index });
    const result: ApplyResult<KvDelResult> = { ok: true, value: { deleted: true, key: cmd.key, version: cur.version } };
    this.remember(cmd, result);
    return result;
  }

  private casConflict(verb: string, key: string, cur: KvEntry | undefined, cas: number | undefined): ApplyResult<never> | undefined {
    if (cas === undefined) return undefined;
    const version = cur?.version ?? 0;
    if (version === cas) return undefined;
    const why =
      cur === undefined ? 'it does not exist' : cas === 0 ? `it already exists (version ${version})` : `its version is ${version}, not ${cas}`;
    return fail('conflict', `Cannot ${verb} '${key}' as ${why}`);
  }

  /**
   * The answer for a write whose request id was seen before (same scope): the first result if
   * it is the same command (a retry), a conflict if the id was used for a different one;
   * undefined = a new request.
   */
  private seenRequest(cmd: KvPutCommand | KvDelCommand): ApplyResult | undefined {
    if (cmd.requestId === undefined) return undefined;
    const seen = this.requests.get(requestKey(cmd.scope, cmd.requestId));
    if (seen === undefined) return undefined;
    if (seen.digest === undefined || seen.digest === commandDigest(cmd)) return seen.result;
    const verb = cmd.type === 'kv.put' ? 'put' : 'delete';
    const first = seen.result.ok ? (seen.result.value as { key?: unknown }).key : undefined;
    const was = typeof first === 'string' ? ` (a write of '${first}' at index ${seen.index})` : ` (at index ${seen.index})`;
    return fail(
      'conflict',
      `Cannot ${verb} '${cmd.key}' as request id '${cmd.requestId}' was already used for a different write${was}; send a new x-request-id for every new write (reuse one only to retry the same write)`,
    );
  }

  /** Remember a successful kv result under its (scoped) request id (bounded, FIFO). */
  private remember(cmd: KvPutCommand | KvDelCommand, result: ApplyResult): void {
    if (cmd.requestId === undefined) return;
    this.requests.set(requestKey(cmd.scope, cmd.requestId), { index: this.log.entry.index, result, digest: commandDigest(cmd) });
    while (this.requests.size > REQUEST_MEMORY) {
      const oldest = this.requests.keys().next().value as string;
      this.requests.delete(oldest);
    }
  }
}

/** The de-duplication key: scopes are ids (no spaces), so the first space ends the scope. */
function requestKey(scope: string | undefined, requestId: string): string {
  return `${scope ?? ''} ${requestId}`;
}

/**
 * A 64-bit fingerprint of what a kv write does (type, key, cas, value; not its time stamp), to
 * tell a retry from a different write that reuses a request id. Deterministic and pure (two
 * multiply-xor lanes over the UTF-16 code units or bytes, then a final avalanche of each lane
 * into the other); not a cryptographic hash: a caller can only confuse its own request ids.
 */
function commandDigest(cmd: KvPutCommand | KvDelCommand): string {
  let a = 0x9e3779b9;
  let b = 0x7f4a7c15;
  const mix = (c: number): void => {
    a = Math.imul(a ^ c, 0x85ebca6b);
    b = Math.imul(b ^ c, 0xc2b2ae35);
    a = (a << 13) | (a >>> 19);
    b = (b << 17) | (b >>> 15);
  };
  const text = (s: string): void => {
    for (let i = 0; i < s.length; i++) mix(s.charCodeAt(i));
    mix(0x10000); // not a code unit: ends the field unambiguously
  };
  text(cmd.type);
  text(cmd.key);
  text(cmd.cas === undefined ? '-' : String(cmd.cas));
  if (cmd.type === 'kv.put') {
    if (typeof cmd.value === 'string') {
      mix(0x10001);
      text(cmd.value);
    } else {
      mix(0x10002);
      for (const x of cmd.value) mix(x);
      mix(0x10000);
    }
  }
  let x = Math.imul(a ^ (a >>> 16), 0x85ebca6b) ^ Math.imul(b ^ (b >>> 13), 0xc2b2ae35);
  let y = Math.imul(b ^ (b >>> 16), 0x85ebca6b) ^ Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  x ^= y >>> 15;
  y ^= x >>> 16;
  return (x >>> 0).toString(16).padStart(8, '0') + (y >>> 0).toString(16).padStart(8, '0');
}
