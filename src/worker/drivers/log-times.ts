// When the lines of a process-driver log file were written. The tasks write their output
// straight into files (never through the worker), so a line carries no time of its own. The
// driver samples each running container's log files on every poll: when a file grew, it
// appends `<size> <ms>` to `<file>.times`. A line ending at byte offset E was written at the
// latest at the first sample whose size is >= E: that is its time (precision: the poll period,
// 200 ms by default; output written while no worker ran gets the time the next worker first
// saw it). The sample files grow by one short line per poll in which the task wrote something.
import { appendFileSync, readFileSync, statSync } from 'node:fs';

export interface Stamp {
  /** File size at the sample. */
  end: number;
  /** Wall ms of the sample. */
  at: number;
}

export class LogStamps {
  /** Per log file: the file (inode) and the size last recorded. A new file (a new attempt) starts over. */
  private readonly seen = new Map<string, { ino: number; size: number }>();

  /** Records the file's size now if it grew since the last sample. */
  sample(path: string, now = Date.now()): void {
    let st: { size: number; ino: number };
    try {
      st = statSync(path);
    } catch {
      return; // not created yet
    }
    let last = this.seen.get(path);
    // A new file (a new attempt) starts over. Its inode number alone does not tell: the file
    // system reuses the number of a file just deleted, so a file smaller than the one last
    // sampled is new too (a log only grows).
    if (last === undefined || last.ino !== st.ino || st.size < last.size) last = { ino: st.ino, size: loadStamps(`${path}.times`).at(-1)?.end ?? 0 };
    this.seen.set(path, last);
    if (st.size <= last.size) return;
    try {
      appendFileSync(`${path}.times`, `${st.size} ${now}\n`);
      last.size = st.size;
    } catch {
      // the task's directory was removed meanwhile
    }
  }

  /** Stops tracking these files (their task ended or was removed). */
  forget(paths: string[]): void {
    for (const p of paths) this.seen.delete(p);
  }

  /** Stops tracking every file under `dir` (a task's directory about to be removed or made anew). */
  forgetDir(dir: string): void {
    const prefix = dir.endsWith('/') ? dir : `${dir}/`;
    for (const p of [...this.seen.keys()]) if (p.startsWith(prefix)) this.seen.delete(p);
  }
}

/** The samples of a `.times` file, in file order (sizes increase). */
export function loadStamps(timesPath: string): Stamp[] {
  let text: string;
  try {
    text = readFileSync(timesPath, 'utf8');
  } catch {
    return [];
  }
  const out: Stamp[] = [];
  for (const line of text.split('\n')) {
    const m = /^(\d+) (\d+)$/.exec(line);
    if (m !== null) out.push({ end: Number(m[1]), at: Number(m[2]) });
  }
  return out;
}

/** The time of a line ending at byte `end`: the first sample that had it; undefined if none yet. */
export function stampAt(stamps: readonly Stamp[], end: number): number | undefined {
  let lo = 0;
  let hi = stamps.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (stamps[mid]!.end >= end) hi = mid;
    else lo = mid + 1;
  }
  return lo < stamps.length ? stamps[lo]!.at : undefined;
}
