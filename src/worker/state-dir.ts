// The worker's state directory: the lock that keeps two workers off it, and the small files a
// restarted worker reads back (retired.json, credential, cluster-id). Drivers keep their own
// state in subdirectories.

import { closeSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { FlotillaError } from '../protocol/errors.js';
import { readProcStat } from './drivers/proc.js';

/** Locks held by this process (a second agent on the same dir in one process is refused too). */
const lockedDirs = new Set<string>();

function bootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return '';
  }
}

/**
 * One worker per state dir: `worker.lock` names the holder by pid, /proc start time and boot
 * id, so a lock left by a killed worker (or from before a reboot) is recognised as stale even
 * when its pid was reused. Returns the lock file's path (for `unlockStateDir`).
 */
export function lockStateDir(stateDir: string): string {
  const dir = resolve(stateDir);
  mkdirSync(dir, { recursive: true });
  const path = join(dir, 'worker.lock');
  if (lockedDirs.has(dir)) throw new FlotillaError('conflict', `Cannot start worker as its state dir ${dir} is in use by another worker in this process`);
  const me = { pid: process.pid, start: readProcStat(process.pid)?.start ?? '', boot: bootId() };
  for (let i = 0; i < 3; i++) {
    try {
      const fd = openSync(path, 'wx');
      writeSync(fd, JSON.stringify(me) + '\n');
      closeSync(fd);
      lockedDirs.add(dir);
      return path;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      let holder: { pid?: unknown; start?: unknown; boot?: unknown } = {};
      try {
        holder = JSON.parse(readFileSync(path, 'utf8')) as typeof holder;
      } catch {
        // unreadable or half-written: stale
      }
      const pid = typeof holder.pid === 'number' ? holder.pid : -1;
      const st = pid > 0 && holder.boot === me.boot ? readProcStat(pid) : null;
      if (st !== null && st.state !== 'Z' && st.start === holder.start) {
        throw new FlotillaError('conflict', `Cannot start worker as its state dir ${dir} is in use by process ${pid} (${path})`);
      }
      rmSync(path, { force: true }); // stale: that worker is gone
    }
  }
  throw new FlotillaError('conflict', `Cannot lock the state dir ${dir}`);
}

export function unlockStateDir(stateDir: string, lockPath: string): void {
  rmSync(lockPath, { force: true });
  lockedDirs.delete(resolve(stateDir));
}

/** Task id → wall ms when it was retired, as the last worker left it. */
export function loadRetired(stateDir: string): Map<string, number> {
  try {
    const raw = JSON.parse(readFileSync(join(resolve(stateDir), 'retired.json'), 'utf8')) as unknown;
    const out = new Map<string, number>();
    if (raw !== null && typeof raw === 'object') {
      for (const [k, v] of Object.entries(raw)) if (typeof v === 'number') out.set(k, v);
    }
    return out;
  } catch {
    return new Map();
  }
}

/** Throws when the file cannot be written. */
export function saveRetired(stateDir: string, retired: Iterable<{ taskId: string; retiredWall: number }>): void {
  const path = join(resolve(stateDir), 'retired.json');
  const obj = Object.create(null) as Record<string, number>;
  for (const r of retired) obj[r.taskId] = r.retiredWall;
  writeFileSync(`${path}.tmp`, JSON.stringify(obj));
  renameSync(`${path}.tmp`, path);
}

export function loadClusterId(stateDir: string): string | null {
  try {
    const c = readFileSync(join(resolve(stateDir), 'cluster-id'), 'utf8').trim();
    return /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(c) ? c : null;
  } catch {
    return null;
  }
}

/** Throws when the file cannot be written. */
export function saveClusterId(stateDir: string, c: string): void {
  const path = join(resolve(stateDir), 'cluster-id');
  writeFileSync(`${path}.tmp`, c + '\n');
  renameSync(`${path}.tmp`, path);
}

export function loadCredential(stateDir: string): string | null {
  try {
    const c = readFileSync(join(resolve(stateDir), 'credential'), 'utf8').trim();
    return c.length > 0 ? c : null;
  } catch {
    return null;
  }
}

/** Written mode 0600. Throws when the file cannot be written. */
export function saveCredential(stateDir: string, c: string): void {
  const path = join(resolve(stateDir), 'credential');
  writeFileSync(`${path}.tmp`, c + '\n', { mode: 0o600 });
  renameSync(`${path}.tmp`, path);
}
