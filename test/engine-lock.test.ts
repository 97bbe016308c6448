// The engine lock that keeps Docker test files to one at a time (test/helpers/engine-lock.ts):
// one holder at a time, a live holder is waited for, a dead one's lock is taken over.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { acquireLock, engineLockDir, releaseLock } from './helpers/engine-lock.js';

const base = mkdtempSync(join(tmpdir(), 'flotilla-lock-test-'));
afterAll(() => rmSync(base, { recursive: true, force: true }));

describe('engine lock', () => {
  it('is named after the vitest process that forked this file (one lock per test run)', () => {
    expect(engineLockDir()).toBe(join(tmpdir(), `flotilla-test-engine-lock-${process.ppid}`));
    expect(engineLockDir(123)).not.toBe(engineLockDir(456));
  });

  it('waits while a live process holds it, and takes it once that process is gone', async () => {
    const dir = join(base, 'live');
    const holder = spawn('sleep', ['30'], { stdio: 'ignore' });
    try {
      mkdirSync(dir);
      writeFileSync(join(dir, 'pid'), String(holder.pid));
      expect(await acquireLock(dir, 600, 50)).toBe(false);
      expect(readFileSync(join(dir, 'pid'), 'utf8')).toBe(String(holder.pid)); // untouched
      const exited = new Promise((r) => holder.once('exit', r));
      holder.kill('SIGKILL');
      await exited;
      expect(await acquireLock(dir, 2000, 50)).toBe(true);
      expect(readFileSync(join(dir, 'pid'), 'utf8')).toBe(String(process.pid));
    } finally {
      holder.kill('SIGKILL');
    }
    releaseLock(dir);
    expect(existsSync(dir)).toBe(false);
  });

  it('one holder at a time: a second acquire waits until the first releases', async () => {
    const dir = join(base, 'twice');
    expect(await acquireLock(dir, 100, 20)).toBe(true);
    // Held by this (live) process: another acquire cannot take it.
    const second = acquireLock(dir, 3000, 20);
    await new Promise((r) => setTimeout(r, 200));
    let settled = false;
    void second.then(() => (settled = true));
    await new Promise((r) => setTimeout(r, 50));
    expect(settled).toBe(false);
    releaseLock(dir);
    expect(await second).toBe(true);
    releaseLock(dir);
  });

  it("takes over a directory left without a pid for over 10 s, and leaves another process's lock alone on release", async () => {
    const dir = join(base, 'nopid');
    mkdirSync(dir);
    const old = (Date.now() - 60_000) / 1000;
    utimesSync(dir, old, old);
    expect(await acquireLock(dir, 1000, 20)).toBe(true);
    // A lock whose pid is another's is not removed by releaseLock.
    writeFileSync(join(dir, 'pid'), '1');
    releaseLock(dir);
    expect(existsSync(dir)).toBe(true);
  });
});
