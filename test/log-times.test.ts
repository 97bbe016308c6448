// When process-driver log lines were written (src/worker/drivers/log-times.ts): a new attempt's
// log file starts over even when it has the inode number of the file it replaced (the file
// system reuses the number of a file just deleted; here the same file is truncated, which keeps
// its inode for certain). Before, the new attempt's lines were never stamped and shared a time.
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LogStamps, loadStamps } from '../src/worker/drivers/log-times.js';

const base = mkdtempSync(join(tmpdir(), 'flotilla-logtimes-'));
afterAll(() => rmSync(base, { recursive: true, force: true }));

describe('log line times', () => {
  it('stamps each growth of a log file, once per growth', () => {
    const f = join(base, 'a.out.log');
    const s = new LogStamps();
    writeFileSync(f, 'one\n');
    s.sample(f, 1000);
    s.sample(f, 1100); // no growth: no stamp
    writeFileSync(f, 'one\ntwo\n');
    s.sample(f, 1200);
    expect(loadStamps(`${f}.times`)).toEqual([{ end: 4, at: 1000 }, { end: 8, at: 1200 }]);
  });

  it("a new attempt's file with the same inode starts over: its lines get their own times", () => {
    const f = join(base, 'b.out.log');
    const s = new LogStamps();
    writeFileSync(f, 'attempt 1\nlate 1\n');
    s.sample(f, 1000);
    const ino = statSync(f).ino;
    // The next attempt: the task directory is made anew (its .times goes with it), and the log
    // file comes back with the same inode number.
    rmSync(`${f}.times`);
    writeFileSync(f, 'attempt 2\n');
    expect(statSync(f).ino).toBe(ino);
    s.sample(f, 2000);
    writeFileSync(f, 'attempt 2\nlate 2\n');
    s.sample(f, 5000);
    expect(loadStamps(`${f}.times`)).toEqual([{ end: 10, at: 2000 }, { end: 17, at: 5000 }]);
  });

  it('forgetDir drops what it knew of the files under a directory, and only those', () => {
    const dir = join(base, 'task');
    const other = join(base, 'task-2');
    for (const d of [dir, other]) {
      rmSync(d, { recursive: true, force: true });
      mkdirSync(d);
    }
    const f = join(dir, 'c.out.log');
    const g = join(other, 'c.out.log');
    const s = new LogStamps();
    writeFileSync(f, '12345678\n');
    writeFileSync(g, '12345678\n');
    s.sample(f, 1000);
    s.sample(g, 1000);
    s.forgetDir(dir);
    // Same size, same inode, .times gone: only a forgotten file is taken as new and stamped.
    rmSync(`${f}.times`);
    rmSync(`${g}.times`);
    s.sample(f, 2000);
    s.sample(g, 2000);
    expect(loadStamps(`${f}.times`)).toEqual([{ end: 9, at: 2000 }]);
    expect(loadStamps(`${g}.times`)).toEqual([]);
  });
});
