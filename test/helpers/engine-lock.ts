// One Docker test file at a time. The suite runs two test files at once, but files that use the
// Docker engine share it: their `docker exec` calls queue behind each other's, and a swarm
// init/leave of the benchmark smoke changes the engine's networking under another file's
// containers. So every Docker test file holds this lock for its whole run (taken by
// dockerAvailable() when the file is collected, released when the file ends or its process
// dies). The lock is scoped to this test run: its directory is named after the vitest process
// that forked this file (each file runs in a fresh fork), so another run on the machine is
// never held up or touched.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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

function release(dir: string): void {
  if (!held) return;
  held = false;
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
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      mkdirSync(dir);
      writeFileSync(join(dir, 'pid'), String(process.pid));
      held = true;
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    // Held: by a live file, or left by one that died (then taken over).
    let owner = NaN;
    try {
      owner = Number(readFileSync(join(dir, 'pid'), 'utf8'));
    } catch {
      /* being created or removed */
    }
    if (Number.isInteger(owner) && owner > 0 && !alive(owner)) rmSync(dir, { recursive: true, force: true });
    if (Date.now() > deadline) {
      console.warn(`engine lock ${dir} still held after ${timeoutMs} ms; going on without it`);
      return;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  process.once('exit', () => release(dir));
  try {
    const { afterAll } = await import('vitest');
    afterAll(() => release(dir));
  } catch {
    /* called inside a test: released when the process exits */
  }
}
