// One Docker test file at a time. The suite runs two test files at once, but files that use the
// Docker engine share it: their `docker exec` calls queue behind each other's, and a swarm
// init/leave of the benchmark smoke changes the engine's networking under another file's
// containers. So every Docker test file holds this lock for its whole run (taken by
// dockerAvailable() when the file is collected, released when the file ends or its process
// dies). The lock is scoped to this test run: its directory is named after the vitest process
// that forked this file (each file runs in a fresh fork), so another run on the machine is
// never held up or touched.
import { mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The lock of the test run whose main process is `runPid`. */
export function engineLockDir(runPid = process.ppid): string {
  return join(tmpdir(), `flotilla-test-engine-lock-${runPid}`);
}

let held = false;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function ageMs(path: string): number {
  try {
    return Date.now() - statSync(path).mtimeMs;
  } catch {
    return 0;
  }
}

/**
 * Takes the lock directory `dir` for this process, waiting while a live process holds it (a dead
 * holder's is taken over). Resolves false, without the lock, after `timeoutMs`.
 */
export async function acquireLock(dir: string, timeoutMs: number, pollMs = 250): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      mkdirSync(dir);
      writeFileSync(join(dir, 'pid'), String(process.pid));
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    // Held: by a live process, or left by one that died (then taken over).
    let owner = NaN;
    try {
      owner = Number(readFileSync(join(dir, 'pid'), 'utf8'));
    } catch {
      /* being created or removed */
    }
    if (Number.isInteger(owner) && owner > 0 && !alive(owner)) rmSync(dir, { recursive: true, force: true });
    // No pid after 10 s: its maker died between making the directory and writing its pid.
    else if (!(owner > 0) && ageMs(dir) > 10_000) rmSync(dir, { recursive: true, force: true });
    else if (Date.now() > deadline) return false;
    else await new Promise((r) => setTimeout(r, pollMs));
  }
}

/** Gives the lock directory `dir` up if this process holds it. */
export function releaseLock(dir: string): void {
  try {
    if (Number(readFileSync(join(dir, 'pid'), 'utf8')) === process.pid) rmSync(dir, { recursive: true, force: true });
  } catch {
    /* already gone */
  }
}

/**
 * Waits until this process holds the run's engine lock (at most `timeoutMs`, then it goes on
 * without it and says so). Call at a test file's top level (collection time: no test timeout).
 */
export async function holdEngine(timeoutMs = 30 * 60_000): Promise<void> {
  if (held || process.env.VITEST !== 'true') return;
  const dir = engineLockDir();
  if (!(await acquireLock(dir, timeoutMs))) {
    console.warn(`engine lock ${dir} still held after ${timeoutMs} ms; going on without it`);
    return;
  }
  held = true;
  const release = (): void => {
    if (!held) return;
    held = false;
    releaseLock(dir);
  };
  process.once('exit', release);
  try {
    const { afterAll } = await import('vitest');
    afterAll(release);
  } catch {
    /* called inside a test: released when the process exits */
  }
}
