// Reading a task's output from log files (the process driver writes `<container>.out.log` and
// `<container>.err.log`): each (container, stream) file is read from its start or from its
// last `tail` lines, split into lines, and — with `follow` — polled for more until the task is
// over and everything was read.

import { open, type FileHandle } from 'node:fs/promises';
import type { LogLine, LogOptions } from '../driver.js';
import { LineSplitter, sleep } from './base.js';
import { loadStamps, stampAt, type Stamp } from './log-times.js';

const READ_CHUNK = 64 * 1024;

export interface LogFile {
  container: string;
  stream: 'stdout' | 'stderr';
  path: string;
  /** The file's write-time samples (log-times.ts): lines then carry `at`. */
  timesPath?: string;
}

export interface LogFileReadOptions extends Pick<LogOptions, 'follow' | 'tail' | 'signal'> {
  /** Whether the task is over (then a follow ends once nothing more is read). */
  isOver: () => boolean;
  /** How often a follow polls the files when nothing new came. */
  pollMs: number;
}

/**
 * Lines of `files`, file by file per round (no global ordering). Files that do not exist
 * (yet) are skipped; a follow picks them up once they appear.
 */
export async function* readLogFiles(files: LogFile[], opts: LogFileReadOptions): AsyncGenerator<LogLine> {
  interface Source extends LogFile {
    fh: FileHandle | null;
    offset: number;
    lines: LineSplitter;
    tailPending: boolean;
    /** Byte offset where the next line ends so far (for its time). */
    lineEnd: number;
    stamps: Stamp[] | null;
  }
  const sources: Source[] = files.map((f) => ({ ...f, fh: null, offset: 0, lines: new LineSplitter(), tailPending: opts.tail !== undefined, lineEnd: 0, stamps: null }));
  const emit = (s: Source, line: string): LogLine => {
    const l: LogLine = { container: s.container, stream: s.stream, line };
    if (s.timesPath === undefined) return l;
    s.lineEnd += Buffer.byteLength(line) + 1;
    let at = s.stamps === null ? undefined : stampAt(s.stamps, s.lineEnd);
    if (at === undefined) {
      s.stamps = loadStamps(s.timesPath);
      at = stampAt(s.stamps, s.lineEnd);
    }
    l.at = at ?? Date.now(); // not sampled yet: written just now
    return l;
  };
  const buf = Buffer.alloc(READ_CHUNK);
  const signal = opts.signal;
  try {
    for (;;) {
      if (signal?.aborted) return;
      const finishedBefore = opts.isOver();
      let got = false;
      for (const s of sources) {
        if (s.fh === null) {
          try {
            s.fh = await open(s.path, 'r');
          } catch {
            continue; // not created yet (or removed)
          }
          if (s.tailPending) {
            s.offset = await tailOffset(s.fh, opts.tail!);
            s.tailPending = false;
          }
          s.lineEnd = s.offset;
        }
        for (;;) {
          const { bytesRead } = await s.fh.read(buf, 0, buf.length, s.offset);
          if (bytesRead === 0) break;
          got = true;
          s.offset += bytesRead;
          const out: string[] = [];
          s.lines.write(buf.subarray(0, bytesRead), (line) => out.push(line));
          for (const line of out) yield emit(s, line);
          if (signal?.aborted) return;
        }
      }
      if (!opts.follow || (finishedBefore && !got)) break;
      if (!got) await sleep(Math.min(opts.pollMs, 250), signal);
    }
    for (const s of sources) {
      const out: string[] = [];
      s.lines.end((line) => out.push(line));
      for (const line of out) yield emit(s, line);
    }
  } finally {
    for (const s of sources) await s.fh?.close().catch(() => undefined);
  }
}

/** Byte offset where the last `lines` lines of a file start. */
export async function tailOffset(fh: FileHandle, lines: number): Promise<number> {
  const size = (await fh.stat()).size;
  if (lines === 0) return size;
  if (size === 0) return 0;
  const buf = Buffer.alloc(READ_CHUNK);
  let end = size;
  // A final '\n' ends the last line; it does not start a new one.
  const last = Buffer.alloc(1);
  await fh.read(last, 0, 1, size - 1);
  if (last[0] === 0x0a) end = size - 1;
  let seen = 0;
  while (end > 0) {
    const start = Math.max(0, end - buf.length);
    const { bytesRead } = await fh.read(buf, 0, end - start, start);
    for (let i = bytesRead - 1; i >= 0; i--) {
      if (buf[i] === 0x0a) {
        seen++;
        if (seen === lines) return start + i + 1;
      }
    }
    end = start;
  }
  return 0;
}
