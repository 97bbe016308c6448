// Small helpers shared by the benchmarks: timing, statistics, free ports, machine facts.
import net from 'node:net';
import os from 'node:os';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export const ROOT = join(import.meta.dirname, '..', '..', '..');
export const CLI = join(ROOT, 'dist', 'src', 'cli', 'main.js');

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function log(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 23)}] ${msg}\n`);
}

/** Env number with a default. */
export function envNum(name: string, dflt: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number, got '${v}'`);
  return n;
}

export const QUICK = process.env.BENCH_QUICK === '1';

export async function freePorts(n: number): Promise<number[]> {
  const servers: net.Server[] = [];
  const ports: number[] = [];
  for (let i = 0; i < n; i++) {
    const s = net.createServer();
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
    ports.push((s.address() as net.AddressInfo).port);
    servers.push(s);
  }
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

/** Polls `fn` until it returns a truthy value; bounded by `timeoutMs`. */
export async function waitFor<T>(what: string, fn: () => Promise<T | null | undefined | false> | T | null | undefined | false, timeoutMs = 20_000, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v as T;
    } catch (e) {
      last = e;
    }
    await sleep(everyMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
}

export interface Summary {
  n: number;
  min: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

/**
 * Summary of the first `n` values of `xs` (sorted in place): the median is the middle value, or
 * the mean of the two middle values for an even count; p90 and p99 are nearest-rank.
 */
export function summarize(xs: ArrayLike<number> & { sort?: unknown }, n = xs.length): Summary {
  if (n === 0) return { n: 0, min: NaN, p50: NaN, p90: NaN, p99: NaN, max: NaN, mean: NaN };
  const a = xs instanceof Float64Array ? xs.subarray(0, n).sort() : Float64Array.from(Array.prototype.slice.call(xs, 0, n) as number[]).sort();
  let sum = 0;
  for (let i = 0; i < n; i++) sum += a[i]!;
  const q = (p: number) => a[Math.min(n - 1, Math.max(0, Math.ceil(p * n) - 1))]!;
  const mid = n >> 1;
  const p50 = n % 2 === 1 ? a[mid]! : (a[mid - 1]! + a[mid]!) / 2;
  return { n, min: a[0]!, p50, p90: q(0.9), p99: q(0.99), max: a[n - 1]!, mean: sum / n };
}

export function median(xs: number[]): number {
  return summarize(xs).p50;
}

export const round = (x: number, d = 1) => (Number.isFinite(x) ? Math.round(x * 10 ** d) / 10 ** d : x);

/** Resident set size of a process, in bytes (Linux /proc), or null. */
export function rssOf(pid: number | undefined): number | null {
  if (!pid) return null;
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

export function sh(cmd: string, args: string[], timeoutMs = 30_000): string {
  return execFileSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs, stdio: ['ignore', 'pipe', 'pipe'] }).trim();
}

export function trySh(cmd: string, args: string[], timeoutMs = 30_000): string | null {
  try {
    return sh(cmd, args, timeoutMs);
  } catch {
    return null;
  }
}

export function gitSha(): string {
  const sha = trySh('git', ['-C', ROOT, 'rev-parse', 'HEAD']) ?? 'unknown';
  const dirty = trySh('git', ['-C', ROOT, 'status', '--porcelain', '--', 'src']);
  return dirty ? `${sha}+dirty(src)` : sha;
}

/** What other processes were busy when a benchmark started (the machine is shared). */
export function busyProcesses(): string[] {
  const out = trySh('ps', ['-eo', 'pid,pcpu,rss,args', '--sort=-pcpu']) ?? '';
  return out
    .split('\n')
    .slice(1, 8)
    .map((l) => l.trim().replace(/\s+/g, ' ').slice(0, 120))
    .filter((l) => Number(l.split(' ')[1]) >= 5);
}

export function machine() {
  const cpus = os.cpus();
  return {
    cpus: cpus.length,
    cpuModel: cpus[0]?.model ?? 'unknown',
    memoryBytes: os.totalmem(),
    memoryGiB: round(os.totalmem() / 1024 ** 3, 1),
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    loadavg: os.loadavg().map((x) => round(x, 2)),
    busyProcesses: busyProcesses(),
  };
}
