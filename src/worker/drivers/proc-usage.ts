// What the process driver's tasks use, from /proc: one scan of /proc/<pid>/stat per sample
// (shared by every task), then for each task its process tree — everything in the process
// groups of its wrappers, and every descendant of a wrapper (a program that moved to a group
// of its own stays counted while its parent lives). CPU is the cumulative utime + stime +
// cutime + cstime of those processes (children already reaped count through their parent's
// cutime/cstime); memory is the sum of their VmRSS (/proc/<pid>/status, read for the task's
// processes only).

import { readdirSync, readFileSync } from 'node:fs';
import type { TaskUsageRaw } from '../driver.js';

/**
 * Clock ticks per second of /proc's time fields: USER_HZ, fixed at 100 by the kernel ABI on
 * every architecture Node supports (sysconf(_SC_CLK_TCK) is not reachable from Node).
 */
export const CLOCK_TICKS = 100;

export interface ProcEntry {
  pid: number;
  ppid: number;
  pgrp: number;
  /** utime + stime + cutime + cstime, clock ticks. */
  ticks: number;
  /** Field 22: start time (ticks since boot), tells a recycled pid apart. */
  start: string;
  state: string;
}

/** Parse one /proc/<pid>/stat text; null when it cannot be read as one. */
export function parseProcStatLine(text: string): ProcEntry | null {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')'); // comm may hold spaces and parentheses
  if (open < 0 || close < open) return null;
  const pid = Number(text.slice(0, open).trim());
  const f = text.slice(close + 2).trim().split(' ');
  // f[0] is field 3 (state): field n is f[n - 3].
  if (!Number.isSafeInteger(pid) || f.length < 20) return null;
  const n = (i: number): number => Number(f[i - 3]);
  const ticks = n(14) + n(15) + n(16) + n(17);
  if (!Number.isFinite(ticks)) return null;
  return { pid, ppid: n(4), pgrp: n(5), ticks, start: f[19]!, state: f[0]! };
}

/** VmRSS of a /proc/<pid>/status text, in bytes (0 for a kernel thread or a zombie). */
export function parseVmRss(text: string): number {
  const m = /^VmRSS:\s+(\d+)\s*kB/m.exec(text);
  return m === null ? 0 : Number(m[1]) * 1024;
}

/** Every process, by pid (one read of each /proc/<pid>/stat). */
export function scanProcs(procRoot = '/proc'): Map<number, ProcEntry> {
  const out = new Map<number, ProcEntry>();
  let names: string[];
  try {
    names = readdirSync(procRoot);
  } catch {
    return out;
  }
  for (const name of names) {
    if (name.charCodeAt(0) < 48 || name.charCodeAt(0) > 57) continue;
    try {
      const e = parseProcStatLine(readFileSync(`${procRoot}/${name}/stat`, 'utf8'));
      if (e !== null) out.set(e.pid, e);
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** Children and process-group members of every process, built once per scan. */
export interface ProcIndex {
  children: Map<number, number[]>;
  groups: Map<number, number[]>;
}

export function indexProcs(procs: ReadonlyMap<number, ProcEntry>): ProcIndex {
  const children = new Map<number, number[]>();
  const groups = new Map<number, number[]>();
  const add = (m: Map<number, number[]>, k: number, v: number): void => {
    const list = m.get(k);
    if (list === undefined) m.set(k, [v]);
    else list.push(v);
  };
  for (const p of procs.values()) {
    add(children, p.ppid, p.pid);
    add(groups, p.pgrp, p.pid);
  }
  return { children, groups };
}

/** The pids of a task: members of the roots' process groups and the roots' descendants. */
export function taskProcesses(procs: ReadonlyMap<number, ProcEntry>, roots: readonly number[], index: ProcIndex = indexProcs(procs)): number[] {
  const found = new Set<number>();
  for (const r of roots) for (const pid of index.groups.get(r) ?? []) found.add(pid);
  const queue = roots.filter((r) => procs.has(r));
  const seen = new Set(queue);
  for (let i = 0; i < queue.length && i < 100_000; i++) {
    const pid = queue[i]!;
    found.add(pid);
    for (const c of index.children.get(pid) ?? []) {
      if (seen.has(c)) continue;
      seen.add(c);
      queue.push(c);
    }
  }
  return [...found].sort((a, b) => a - b);
}

/** A task's wrappers: pid and the start time recorded when it was launched. */
export interface TaskRoots {
  attempt: number;
  roots: { pid: number; start?: string }[];
}

/**
 * CPU seconds and resident bytes of each task, from one scan of `procRoot`. A root whose pid
 * now runs something else (another start time) is not counted; a task none of whose roots
 * runs is left out.
 */
export function processTreeUsage(tasks: ReadonlyMap<string, TaskRoots>, procRoot = '/proc'): Map<string, TaskUsageRaw> {
  const out = new Map<string, TaskUsageRaw>();
  if (tasks.size === 0) return out;
  const procs = scanProcs(procRoot);
  const index = indexProcs(procs);
  for (const [taskId, t] of tasks) {
    const roots = t.roots.filter((r) => {
      const p = procs.get(r.pid);
      return p !== undefined && p.state !== 'Z' && (r.start === undefined || r.start === p.start);
    });
    if (roots.length === 0) continue;
    let ticks = 0;
    let memory = 0;
    for (const pid of taskProcesses(procs, roots.map((r) => r.pid), index)) {
      ticks += procs.get(pid)!.ticks;
      try {
        memory += parseVmRss(readFileSync(`${procRoot}/${pid}/status`, 'utf8'));
      } catch {
        // exited meanwhile
      }
    }
    out.set(taskId, { attempt: t.attempt, cpuSeconds: ticks / CLOCK_TICKS, memory });
  }
  return out;
}
