// Live usage on the worker: every `intervalMs` (default 5 s) it measures the node (/proc/stat,
// /proc/meminfo) and its running tasks (each driver's `usage()`: a /proc scan for the process
// driver, one stats call per container for docker) and sends one `usage` message over the
// session. Nothing is kept for long and nothing is queued: a sample taken while no session is
// welcomed is not taken at all (it is an observation no decision needs; the leader keeps the
// history). CPU is a rate over the interval: the difference of cumulative CPU times (or the
// driver's own window, Docker's precpu delta), in millicores like a spec's `resources`.

import { readFileSync } from 'node:fs';
import type { Driver, TaskUsageRaw } from './driver.js';
import type { TaskUsageSample, UsageMsg } from '../protocol/session.js';
import { MAX_USAGE_TASKS } from '../protocol/frames.js';
import { monoNow } from '../clock.js';
import type { Logger } from '../log.js';

export const DEFAULT_USAGE_INTERVAL_MS = 5000;

/** Cumulative CPU time of the whole machine, in clock ticks (the first `cpu` line of /proc/stat). */
export interface CpuTimes {
  busy: number;
  total: number;
  /** Number of CPUs (`cpuN` lines). */
  cpus: number;
}

/** Parse /proc/stat: busy = everything but idle and iowait; null when there is no `cpu` line. */
export function parseProcStat(text: string): CpuTimes | null {
  let times: number[] | null = null;
  let cpus = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('cpu ')) times = line.slice(4).trim().split(/\s+/).slice(0, 8).map(Number);
    else if (/^cpu\d+ /.test(line)) cpus++;
  }
  if (times === null || times.length < 4 || times.some((n) => !Number.isFinite(n))) return null;
  const total = times.reduce((a, b) => a + b, 0);
  const idle = times[3]! + (times[4] ?? 0);
  return { busy: total - idle, total, cpus: Math.max(1, cpus) };
}

/** Parse /proc/meminfo: total and available memory in bytes (null without both lines). */
export function parseMeminfo(text: string): { total: number; available: number } | null {
  const kb = (key: string): number | null => {
    const m = new RegExp(`^${key}:\\s+(\\d+)\\s*kB`, 'm').exec(text);
    return m === null ? null : Number(m[1]) * 1024;
  };
  const total = kb('MemTotal');
  // Kernels before 3.14 have no MemAvailable: free memory and the page cache stand for it.
  const available = kb('MemAvailable') ?? (total === null ? null : (kb('MemFree') ?? 0) + (kb('Cached') ?? 0) + (kb('Buffers') ?? 0));
  return total === null || available === null ? null : { total, available };
}

/** Millicores the machine used between two /proc/stat reads. */
export function nodeMillicores(prev: CpuTimes, cur: CpuTimes): number {
  const total = cur.total - prev.total;
  if (total <= 0) return 0;
  const busy = Math.min(total, Math.max(0, cur.busy - prev.busy));
  return Math.round((busy / total) * cur.cpus * 1000);
}

/** Millicores from two cumulative CPU times (seconds) `elapsedMs` apart (never negative: a process that left the tree takes its time along). */
export function rateMillicores(prevSeconds: number, curSeconds: number, elapsedMs: number): number {
  if (elapsedMs <= 0) return 0;
  return Math.round((Math.max(0, curSeconds - prevSeconds) * 1e6) / elapsedMs);
}

export interface UsageSamplerOptions {
  intervalMs: number;
  drivers: readonly Driver[];
  /** Sends a message over the welcomed session; null when there is none (then nothing is sampled). */
  channel: () => ((msg: UsageMsg) => boolean) | null;
  log: Logger;
  /** Where /proc is (tests). */
  procRoot?: string;
}

interface Prev {
  attempt: number;
  cpuSeconds: number;
  at: number;
}

export class UsageSampler {
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private prevNode: { cpu: CpuTimes; at: number } | null = null;
  private prevTasks = new Map<string, Prev>();
  /** How long the last sample took (ms), for `flotilla worker` logs and tests. */
  lastCostMs = 0;

  constructor(private readonly o: UsageSamplerOptions) {}

  start(): void {
    if (this.timer !== null || this.stopped) return;
    this.schedule(Math.min(1000, this.o.intervalMs));
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.tick(), ms);
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    const t0 = monoNow();
    try {
      const send = this.o.channel();
      if (send !== null) {
        const msg = await this.sample();
        if (msg !== null && !this.stopped) this.o.channel()?.(msg);
      }
    } catch (e) {
      this.o.log.debug('usage sample failed', { error: (e as Error).message });
    }
    this.lastCostMs = monoNow() - t0;
    this.schedule(Math.max(100, this.o.intervalMs - this.lastCostMs));
  }

  /** One sample: the node's and every running task's use since the previous one (null before the node has a previous read). */
  async sample(): Promise<UsageMsg | null> {
    const root = this.o.procRoot ?? '/proc';
    const now = monoNow();
    const cpu = parseProcStat(readFileSync(`${root}/stat`, 'utf8'));
    const mem = parseMeminfo(readFileSync(`${root}/meminfo`, 'utf8'));
    const raws = new Map<string, TaskUsageRaw>();
    for (const d of this.o.drivers) {
      if (d.usage === undefined) continue;
      try {
        for (const [id, u] of await d.usage()) raws.set(id, u);
      } catch (e) {
        this.o.log.debug('usage: a driver could not measure its tasks', { driver: d.name, error: (e as Error).message });
      }
    }
    const at = monoNow();
    const tasks: TaskUsageSample[] = [];
    const stale = Math.max(3 * this.o.intervalMs, 15_000);
    for (const [taskId, u] of raws) {
      const prev = this.prevTasks.get(taskId);
      let cpuMc: number | null = null;
      if (u.cores !== undefined) cpuMc = Math.round(u.cores * 1000);
      else if (u.cpuSeconds !== undefined && prev !== undefined && prev.attempt === u.attempt && at - prev.at <= stale) cpuMc = rateMillicores(prev.cpuSeconds, u.cpuSeconds, at - prev.at);
      if (u.cpuSeconds !== undefined) this.prevTasks.set(taskId, { attempt: u.attempt, cpuSeconds: u.cpuSeconds, at });
      if (cpuMc !== null && tasks.length < MAX_USAGE_TASKS) tasks.push({ taskId, attempt: u.attempt, cpu: cpuMc, memory: Math.round(u.memory) });
    }
    for (const id of this.prevTasks.keys()) if (!raws.has(id)) this.prevTasks.delete(id);
    const prevNode = this.prevNode;
    if (cpu !== null) this.prevNode = { cpu, at: now };
    if (cpu === null || mem === null || prevNode === null || now - prevNode.at > stale) return null;
    return {
      t: 'usage',
      at: Date.now(),
      intervalMs: this.o.intervalMs,
      node: { cpu: nodeMillicores(prevNode.cpu, cpu), memory: mem.total - mem.available, cpuCapacity: cpu.cpus * 1000, memoryTotal: mem.total },
      tasks,
    };
  }
}
