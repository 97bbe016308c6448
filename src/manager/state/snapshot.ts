// Snapshot bytes: one canonical JSON document (sorted keys), with every element of its arrays
// on a line of its own ("kv":[\n{…},\n{…}\n]). JSON.parse reads it whole; the line breaks let
// a restore parse it element by element (JSON text never holds a raw line break inside a
// value, so every '\n' byte is a separator). Writing and parsing both go in slices that give
// the event loop a turn (see `Slicer`). What the state does with the parsed document is
// `ClusterState`'s business (it checks it, then replaces its parts at once).

import { FlotillaError } from '../../protocol/errors.js';
import { canonicalJson, isPlainObject, reviveBytes, textDecoder, textEncoder } from './codec.js';
import type { SecretRecord, WrappedDataKey } from './secrets.js';
import type { VolumeRecord } from './volumes.js';
import { byId, kvEntryBytes, valueBytes, type KvEntry, type LeaderInfo, type NodeInfo, type RequestRecord, type Task } from './model.js';
import type { Service } from './services.js';

/** A parsed snapshot document, as written by `SnapshotWriter` (format v1). */
export interface SnapshotData {
  format: 'flotilla-state';
  v: 1;
  appliedIndex: number;
  eventSeq: number;
  leader: LeaderInfo | null;
  nodes: NodeInfo[];
  tasks: Task[];
  /** Pending task ids in queue order. */
  pending: string[];
  kv: KvEntry[];
  /** Remembered kv request ids (`<scope> <id>`), oldest first. */
  requests: [string, RequestRecord][];
  /** Services by name (absent in snapshots written before services). */
  services?: Service[];
  /** Secrets (sealed) and wrapped data keys; absent when none (and in older snapshots). */
  secretKeys?: WrappedDataKey[];
  secrets?: SecretRecord[];
  /** Named volumes and tombstones; absent when none (and in older snapshots). */
  volumes?: VolumeRecord[];
  volumeTombstones?: [string, string[]][];
}

/** The captured state: scalars, and arrays of entries (sorted when written). */
export interface SnapshotImage {
  appliedIndex: number;
  eventSeq: number;
  format: 'flotilla-state';
  kv: KvEntry[];
  leader: LeaderInfo | null;
  nodes: NodeInfo[];
  pending: string[];
  requests: [string, RequestRecord][];
  /** Absent when there are none: a state without services snapshots to the bytes it always did. */
  services?: Service[];
  tasks: Task[];
  v: 1;
  secretKeys?: WrappedDataKey[];
  secrets?: SecretRecord[];
  volumes?: VolumeRecord[];
  volumeTombstones?: [string, string[]][];
}

const PART_BYTES = 1024 * 1024;

/**
 * How long work on the state (encoding or parsing a snapshot) gives the event loop a turn. The
 * state reads no clock and owns no loop (it stays pure): the manager passes one built on the
 * monotonic clock and setImmediate (src/clock.ts `eventLoopSlicer`).
 */
export interface Slicer {
  /** Monotonic milliseconds. */
  now(): number;
  /** Resolves after other work had a turn. */
  turn(): Promise<void>;
}

/** No slicing: the work runs in one go (tests, offline tools, small states). */
export const WHOLE: Slicer = { now: () => 0, turn: () => Promise.resolve() };

/** Encodes a SnapshotImage step by step into byte parts of about PART_BYTES. */
export class SnapshotWriter {
  readonly parts: Uint8Array[] = [];
  private pending: string[] = [];
  private pendingLength = 0;
  private readonly keys: (keyof SnapshotImage)[];
  private key = 0;
  /** Index of the next element of the current array key; -1 before its opening bracket. */
  private item = -1;
  private sorted = false;
  private started = false;

  constructor(
    private readonly img: SnapshotImage,
    private readonly slicer: Slicer,
  ) {
    this.keys = (Object.keys(img) as (keyof SnapshotImage)[]).sort();
  }

  /** Encodes for about `budgetMs`; true when the document is complete. */
  step(budgetMs: number): boolean {
    const t0 = this.slicer.now();
    let n = 0;
    if (!this.started) {
      this.started = true;
      this.push('{');
    }
    while (this.key < this.keys.length) {
      const name = this.keys[this.key]!;
      const value = this.img[name];
      if (!Array.isArray(value)) {
        this.push(`${this.key > 0 ? ',' : ''}${JSON.stringify(name)}:${canonicalJson(value)}`);
        this.key++;
        continue;
      }
      if (this.item === -1) {
        if (!this.sorted) {
          sortSection(name, value);
          this.sorted = true;
        }
        this.push(`${this.key > 0 ? ',' : ''}${JSON.stringify(name)}:[`);
        this.item = 0;
      }
      while (this.item < value.length) {
        this.push(`\n${canonicalJson(value[this.item])}${this.item < value.length - 1 ? ',' : ''}`);
        this.item++;
        if (++n % 16 === 0 && this.slicer.now() - t0 > budgetMs) return false;
      }
      this.push(value.length > 0 ? '\n]' : ']');
      this.key++;
      this.item = -1;
      this.sorted = false;
      if (this.slicer.now() - t0 > budgetMs) return false;
    }
    this.push('}');
    this.flush();
    return true;
  }

  /** The whole document in one buffer (for the synchronous `snapshot()`). */
  bytes(): Uint8Array {
    if (this.parts.length === 1) return this.parts[0]!;
    const out = new Uint8Array(this.parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of this.parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  private push(text: string): void {
    this.pending.push(text);
    this.pendingLength += text.length;
    if (this.pendingLength >= PART_BYTES) this.flush();
  }

  private flush(): void {
    if (this.pending.length === 0) return;
    this.parts.push(textEncoder.encode(this.pending.join('')));
    this.pending = [];
    this.pendingLength = 0;
  }
}

function sortSection(name: keyof SnapshotImage, items: unknown[]): void {
  if (name === 'kv') (items as KvEntry[]).sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  else if (name === 'nodes' || name === 'tasks') (items as { id: string }[]).sort(byId);
  else if (name === 'services') (items as Service[]).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  // pending (queue order) and requests (oldest first) keep their order.
}

function badSnapshot(cause?: unknown): FlotillaError {
  return new FlotillaError('bad_request', 'Cannot restore state as the snapshot is not UTF-8 JSON', { cause });
}

/** Parses snapshot bytes in one go (any layout). */
export function parseSnapshotWhole(bytes: Uint8Array): SnapshotData {
  try {
    return JSON.parse(textDecoder.decode(bytes)) as SnapshotData;
  } catch (err) {
    throw badSnapshot(err);
  }
}

/** Parses snapshot bytes line by line, yielding to the event loop about every `sliceMs`. */
export async function parseSnapshot(bytes: Uint8Array, slicer: Slicer, sliceMs: number): Promise<{ data: SnapshotData; kvBytes?: number }> {
  const firstBreak = bytes.indexOf(0x0a);
  if (firstBreak < 0) {
    // One line: a snapshot written before the line layout, or an empty state.
    return { data: parseSnapshotWhole(bytes) };
  }
  const doc: Record<string, unknown> = {};
  let section: unknown[] | null = null;
  let sectionName = '';
  let done = false;
  let kvBytes = 0;
  let t0 = slicer.now();
  let n = 0;
  try {
    for (let start = 0; start < bytes.length; ) {
      let end = bytes.indexOf(0x0a, start);
      if (end < 0) end = bytes.length;
      const line = textDecoder.decode(bytes.subarray(start, end));
      start = end + 1;
      if (done) throw new Error('text after the end of the document');
      if (section !== null && line[0] !== ']') {
        const item = JSON.parse(line.endsWith(',') ? line.slice(0, -1) : line) as unknown;
        if (sectionName === 'kv' && isPlainObject(item)) {
          item.value = reviveBytes(item.value);
          if (typeof item.key === 'string' && (typeof item.value === 'string' || item.value instanceof Uint8Array)) kvBytes += kvEntryBytes(item.key, valueBytes(item.value));
        }
        section.push(item);
      } else {
        // "{…,"name":[" opens the document, "],…,"name":[" closes one array and opens the next,
        // "],…}" ends it.
        let text: string;
        if (section === null) {
          if (line[0] !== '{' || Object.keys(doc).length > 0) throw new Error('unexpected line');
          text = line;
        } else {
          text = line.startsWith('],') ? `{${line.slice(2)}` : line === ']}' ? '{}' : '';
          if (text === '') throw new Error('unexpected line');
        }
        const opens = text.endsWith('[');
        const part = JSON.parse(opens ? `${text}]}` : text) as Record<string, unknown>;
        Object.assign(doc, part);
        if (opens) {
          sectionName = Object.keys(part).at(-1)!;
          section = [];
          doc[sectionName] = section;
        } else {
          section = null;
          done = true;
        }
      }
      if (++n % 16 === 0 && slicer.now() - t0 > sliceMs) {
        await slicer.turn();
        t0 = slicer.now();
      }
    }
  } catch (err) {
    throw badSnapshot(err);
  }
  if (!done) throw badSnapshot(new Error('the document is incomplete'));
  return { data: doc as unknown as SnapshotData, kvBytes };
}
