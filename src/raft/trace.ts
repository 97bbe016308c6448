// The Raft trace (`flotilla manager --raft-trace FILE`): a node's own record of its Raft
// progress, appended as JSON lines, for offline invariant checks (chaos/checker/raft.ts).
//
// Records (`t` = wall-clock ms, Date.now()):
//   {"k":"start","node":"m1","pid":4242,"t":…}              first record of every process life
//   {"k":"leader","term":7,"t":…}                             this node became leader of term 7
//   {"k":"stepdown","term":8,"t":…}                           it stopped leading (its term then)
//   {"k":"commit","commit":1200,"term":7,"t":…}               the commit index (coalesced)
//   {"k":"entries","from":1180,"to":1200,"term":7,"t":…}      applied entries from..to all have term 7
//   {"k":"snapshot","index":900,"term":6,"from":"disk","t":…} snapshot restored at start / installed ("leader")
//   {"k":"stop","t":…}                                        clean close
//
// Cheap by construction: records are buffered and written with one write every FLUSH_MS (and on
// close and process exit); commit advances are coalesced to the latest value per flush, but a
// decrease is always written together with the value before it; applied entries are coalesced into
// index ranges of one term. A SIGKILL loses at most the last FLUSH_MS of records and may leave a
// partial last line: the next life starts on a fresh line, and readers skip such a line.
import { closeSync, mkdirSync, openSync, readSync, statSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import type { RaftTrace } from './node.js';

const FLUSH_MS = 200;
/** Flush early when this many records are buffered. */
const MAX_BUFFERED = 512;

export class RaftTraceFile implements RaftTrace {
  private fd: number | null;
  private buf: string[] = [];
  /** The latest commit index seen, and whether it is written yet. */
  private commitIdx = -1;
  private commitTerm = 0;
  private commitAt = 0;
  private commitWritten = true;
  /** The open range of applied entries (all of one term). */
  private rFrom = 0;
  private rTo = -1;
  private rTerm = 0;
  private readonly timer: NodeJS.Timeout;
  private readonly onExit = (): void => this.flush();

  private constructor(
    readonly path: string,
    fd: number,
  ) {
    this.fd = fd;
    this.timer = setInterval(() => this.flush(), FLUSH_MS);
    this.timer.unref();
    process.on('exit', this.onExit);
  }

  /** Opens (appends to) the trace file and writes this life's `start` record at once. */
  static open(path: string, nodeId: string): RaftTraceFile {
    mkdirSync(dirname(path), { recursive: true });
    // A previous life killed mid-write may have left a partial line: start on a fresh one.
    let prefix = '';
    try {
      const size = statSync(path).size;
      if (size > 0) {
        const rfd = openSync(path, 'r');
        try {
          const b = Buffer.alloc(1);
          readSync(rfd, b, 0, 1, size - 1);
          if (b[0] !== 0x0a) prefix = '\n';
        } finally {
          closeSync(rfd);
        }
      }
    } catch {
      /* no file yet */
    }
    const fd = openSync(path, 'a');
    writeSync(fd, prefix + JSON.stringify({ k: 'start', node: nodeId, pid: process.pid, t: Date.now() }) + '\n');
    return new RaftTraceFile(path, fd);
  }

  leader(term: number): void {
    this.push(`{"k":"leader","term":${term},"t":${Date.now()}}`);
  }

  stepDown(term: number): void {
    this.push(`{"k":"stepdown","term":${term},"t":${Date.now()}}`);
  }

  commit(commit: number, term: number): void {
    if (commit === this.commitIdx) return;
    if (commit < this.commitIdx) {
      // Never coalesce across a decrease: the value before it and the lower one are both written.
      this.writeCommit();
      this.setCommit(commit, term);
      this.writeCommit();
      return;
    }
    this.setCommit(commit, term);
  }

  applied(index: number, term: number): void {
    if (index === this.rTo + 1 && term === this.rTerm) {
      this.rTo = index;
      return;
    }
    this.closeRange();
    this.rFrom = index;
    this.rTo = index;
    this.rTerm = term;
  }

  snapshot(index: number, term: number, from: 'disk' | 'leader'): void {
    this.closeRange();
    this.push(`{"k":"snapshot","index":${index},"term":${term},"from":"${from}","t":${Date.now()}}`);
  }

  /** Writes what is buffered (synchronously: a few hundred bytes every FLUSH_MS). */
  flush(): void {
    this.writeCommit();
    this.closeRange();
    if (this.buf.length === 0 || this.fd === null) return;
    const data = this.buf.join('');
    this.buf = [];
    try {
      writeSync(this.fd, data);
    } catch {
      // The trace is diagnostics: a full disk must not stop the manager. Tracing stops.
      this.shutdown();
    }
  }

  close(): void {
    if (this.fd === null) return;
    this.push(`{"k":"stop","t":${Date.now()}}`);
    this.flush();
    this.shutdown();
  }

  private shutdown(): void {
    clearInterval(this.timer);
    process.off('exit', this.onExit);
    if (this.fd !== null) {
      try {
        closeSync(this.fd);
      } catch {
        /* already closed */
      }
    }
    this.fd = null;
    this.buf = [];
  }

  private setCommit(commit: number, term: number): void {
    this.commitIdx = commit;
    this.commitTerm = term;
    this.commitAt = Date.now();
    this.commitWritten = false;
  }

  private writeCommit(): void {
    if (this.commitWritten) return;
    this.commitWritten = true;
    this.push(`{"k":"commit","commit":${this.commitIdx},"term":${this.commitTerm},"t":${this.commitAt}}`);
  }

  private closeRange(): void {
    if (this.rTo < this.rFrom) return;
    const line = `{"k":"entries","from":${this.rFrom},"to":${this.rTo},"term":${this.rTerm},"t":${Date.now()}}`;
    this.rTo = this.rFrom - 1; // closed before push(), which may flush
    this.push(line);
  }

  private push(line: string): void {
    if (this.fd === null) return;
    this.buf.push(line + '\n');
    if (this.buf.length >= MAX_BUFFERED) this.flush();
  }
}
