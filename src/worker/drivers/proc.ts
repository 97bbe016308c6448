// The process driver's host side: /proc readers, process-group signals, the wrapper and
// keeper scripts, and the orphan handling that stops a dead worker's tasks (the keeper, and
// `stopTasksInDir` for `flotilla up`). Pure Linux plumbing, no task state.

import { accessSync, constants as fsConstants, existsSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { delimiter, join, resolve } from 'node:path';
import { monoNow } from '../../clock.js';

/**
 * The keeper: one small detached shell per driver instance. $1 = the driver's directory,
 * $2 = seconds the tasks outlive the worker, $3 = seconds between SIGTERM and SIGKILL, $4 =
 * the reason recorded. Its stdin is a pipe from the worker, so `cat` returns when the worker
 * closes the driver or its process ends (SIGKILL included: the kernel closes the pipe). A
 * successor driver kills the keeper (its process group) during the wait; otherwise it stops
 * every container whose wrapper still runs — identified by its pid file and a command line
 * naming that very file's base path — and marks the task `orphan-stop` (read at adoption:
 * the pod ends `stopped` with that reason).
 */
export const KEEPER_SCRIPT = [
  'd=$1; g=$2; k=$3; r=$4',
  'cat >/dev/null',
  'sleep "$g"',
  'each() {',
  '  for f in "$d"/tasks/*/*.pid; do',
  '    [ -f "$f" ] || continue',
  '    b=${f%.pid}',
  '    p=$(cat "$f" 2>/dev/null) || continue',
  '    case $p in ""|*[!0-9]*) continue ;; esac',
  '    tr "\\000" "\\n" < "/proc/$p/cmdline" 2>/dev/null | grep -qxF -- "$b" || continue',
  '    if [ "$1" = TERM ] && [ ! -f "${f%/*}/orphan-stop" ]; then echo "$r" > "${f%/*}/orphan-stop"; fi',
  '    kill -s "$1" -- "-$p" 2>/dev/null',
  '  done',
  '}',
  'each TERM',
  'sleep "$k"',
  'each KILL',
].join('\n');
export const KEEPER_ARGV0 = 'flotilla-keeper';

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** The wrapper script: $1 = base path of the container's files, then the program and its args. */
export const WRAPPER_SCRIPT = [
  'trap : TERM INT HUP QUIT',
  'b=$1',
  'shift',
  'echo $$ > "$b.pid"',
  '"$@"',
  's=$?',
  'echo $s > "$b.exit"',
].join('\n');
export const WRAPPER_ARGV0 = 'flotilla-wrap';

export interface ProcStat {
  state: string;
  ppid: number;
  pgrp: number;
  session: number;
  /** Field 22: start time in clock ticks since boot. */
  start: string;
}

/** Parse /proc/<pid>/stat; null when the process does not exist. */
export function readProcStat(pid: number): ProcStat | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // "pid (comm) S ppid pgrp session …": comm may hold spaces and parentheses.
  const close = text.lastIndexOf(')');
  if (close < 0) return null;
  const f = text.slice(close + 2).split(' ');
  // f[0] is field 3 (state), so field n is f[n - 3].
  if (f.length < 20) return null;
  return { state: f[0]!, ppid: Number(f[1]), pgrp: Number(f[2]), session: Number(f[3]), start: f[19]! };
}

export function readCmdline(pid: number): string[] | null {
  try {
    const raw = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return raw.split('\0');
  } catch {
    return null;
  }
}

/** Child pids of a process (from /proc/<pid>/task/<pid>/children, or a scan of /proc). */
export function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    const out: number[] = [];
    let entries: string[] = [];
    try {
      entries = readdirSync('/proc');
    } catch {
      return out;
    }
    for (const e of entries) if (/^\d+$/.test(e) && readProcStat(Number(e))?.ppid === pid) out.push(Number(e));
    return out;
  }
}

export function readExitFile(path: string): { code: number; at: number } | null {
  try {
    const text = readFileSync(path, 'utf8');
    const m = /^(\d{1,3})\n$/.exec(text);
    if (m === null) return null; // not (completely) written yet
    return { code: Number(m[1]), at: Math.round(statSync(path).mtimeMs) };
  } catch {
    return null;
  }
}

export function writeJsonAtomic(path: string, value: unknown): void {
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, JSON.stringify(value, null, 1) + '\n');
  renameSync(tmp, path);
}

export function killGroup(pgid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch {
    return false; // ESRCH: nothing left in the group
  }
}

/** Kill the keeper recorded in `<dir>/keeper.json` (its process group), if it still runs. */
export function killKeeper(dir: string): void {
  try {
    const k = JSON.parse(readFileSync(join(dir, 'keeper.json'), 'utf8')) as { pid?: unknown; start?: unknown };
    const pid = typeof k.pid === 'number' ? k.pid : -1;
    const st = pid > 1 ? readProcStat(pid) : null;
    const argv = st !== null && st.start === k.start ? readCmdline(pid) : null;
    if (argv !== null && argv.includes(KEEPER_ARGV0) && argv.includes(dir)) killGroup(pid, 'SIGKILL');
  } catch {
    // no keeper
  }
}

/**
 * Stop every task process a process driver directory holds, now (for `flotilla up` stopping
 * its cluster after its workers have exited): the keeper is killed, each container whose
 * wrapper still runs gets SIGTERM on its process group, SIGKILL after `graceMs`; the task is
 * marked so a later worker reports it `stopped` with `reason`. Returns the process group ids
 * signalled and those that needed SIGKILL.
 */
export async function stopTasksInDir(dir: string, graceMs: number, reason: string): Promise<{ groups: number[]; killed: number[] }> {
  const root = resolve(dir);
  killKeeper(root);
  const found: { pid: number; argvBase: string }[] = [];
  let names: string[] = [];
  try {
    names = readdirSync(join(root, 'tasks'));
  } catch {
    return { groups: [], killed: [] };
  }
  const ours = (pid: number, base: string): boolean => {
    const st = readProcStat(pid);
    if (st === null || st.state === 'Z' || st.state === 'X') return false;
    const argv = readCmdline(pid);
    return argv !== null && argv.includes(WRAPPER_ARGV0) && argv.includes(base);
  };
  for (const name of names) {
    const tdir = join(root, 'tasks', name);
    let files: string[] = [];
    try {
      files = readdirSync(tdir).filter((f) => f.endsWith('.pid'));
    } catch {
      continue;
    }
    let marked = false;
    for (const f of files) {
      const base = join(tdir, f.slice(0, -'.pid'.length));
      const pid = Number(readFileSync(join(tdir, f), 'utf8').trim());
      if (!Number.isSafeInteger(pid) || pid <= 1 || !ours(pid, base)) continue;
      if (!marked && !existsSync(join(tdir, 'orphan-stop'))) writeFileSync(join(tdir, 'orphan-stop'), reason + '\n');
      marked = true;
      killGroup(pid, 'SIGTERM');
      found.push({ pid, argvBase: base });
    }
  }
  const deadline = monoNow() + Math.max(0, graceMs);
  while (found.some((g) => ours(g.pid, g.argvBase)) && monoNow() < deadline) await new Promise((r) => setTimeout(r, 50));
  const killed: number[] = [];
  for (const g of found) {
    // Whatever is left in the group (the wrapper, or daemons its program forked) — unless
    // that pid now runs something else (then the group is not ours any more).
    const st = readProcStat(g.pid);
    const stillOurs = ours(g.pid, g.argvBase);
    if (st !== null && st.state !== 'Z' && !stillOurs) continue;
    if (killGroup(g.pid, 'SIGKILL') && stillOurs) killed.push(g.pid);
  }
  return { groups: found.map((g) => g.pid), killed };
}

/** Find an executable: a name with '/' is taken relative to `cwd`; otherwise searched in PATH. */
export function resolveExecutable(name: string, pathVar: string, cwd: string): string | null {
  const isExec = (p: string): boolean => {
    try {
      if (!statSync(p).isFile()) return false;
      accessSync(p, fsConstants.X_OK);
      return true;
    } catch {
      return false;
    }
  };
  if (name.includes('/')) {
    const p = resolve(cwd, name);
    return isExec(p) ? p : null;
  }
  for (const dir of pathVar.split(delimiter)) {
    if (dir === '') continue;
    const p = resolve(cwd, dir, name);
    if (isExec(p)) return p;
  }
  return null;
}
