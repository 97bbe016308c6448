// The load generator shared by every system under test: N concurrent async clients in this one
// Node process, keep-alive HTTP/1.1, every loop bounded in operations and in time.
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import { sleep, summarize, type Summary } from './util.js';

export interface HttpResult {
  status: number;
  body: Buffer;
}

/** One HTTP request on a keep-alive agent; rejects on network errors and after `timeoutMs`. */
export function request(
  agent: http.Agent,
  addr: string,
  method: string,
  path: string,
  body: Buffer | string | null,
  headers: Record<string, string> = {},
  timeoutMs = 10_000,
): Promise<HttpResult> {
  const i = addr.lastIndexOf(':');
  return new Promise((resolve, reject) => {
    const h: Record<string, string | number> = { ...headers };
    if (body !== null) h['content-length'] = Buffer.byteLength(body);
    const req = http.request({ agent, host: addr.slice(0, i), port: Number(addr.slice(i + 1)), method, path, headers: h }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`timeout after ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(body ?? undefined);
  });
}

export async function requestOk(agent: http.Agent, addr: string, method: string, path: string, body: Buffer | string | null, headers: Record<string, string> = {}, timeoutMs = 10_000): Promise<HttpResult> {
  const r = await request(agent, addr, method, path, body, headers, timeoutMs);
  if (r.status < 200 || r.status >= 300) throw new Error(`HTTP ${r.status} ${method} ${addr}${path}: ${r.body.toString('utf8').slice(0, 200)}`);
  return r;
}

export function newAgent(maxSockets: number): http.Agent {
  return new http.Agent({ keepAlive: true, maxSockets, maxFreeSockets: maxSockets });
}

export interface LoadOptions {
  clients: number;
  /** Measured duration (ms); a warm-up of `warmupMs` runs first and is not counted. */
  durationMs: number;
  warmupMs?: number;
  /** Hard cap on operations (measured + warm-up). */
  maxOps?: number;
  /** One operation of client `c` (throws on failure). */
  op: (c: number, seq: number) => Promise<void>;
}

export interface LoadResult {
  clients: number;
  seconds: number;
  ops: number;
  errors: number;
  throughput: number;
  latencyMs: Summary;
  firstErrors: string[];
  /** Raw latencies (ms) of the measured operations; not serialised. */
  samples?: Float64Array;
}

/** Combines runs of the same point (e.g. the two halves of an A-B-B-A schedule). */
export function mergeLoads(parts: LoadResult[]): LoadResult {
  const n = parts.reduce((a, p) => a + p.ops, 0);
  const all = new Float64Array(n);
  let o = 0;
  for (const p of parts) {
    if (p.samples) all.set(p.samples.subarray(0, p.ops), o);
    o += p.ops;
  }
  const seconds = parts.reduce((a, p) => a + p.seconds, 0);
  return {
    clients: parts[0]!.clients,
    seconds,
    ops: n,
    errors: parts.reduce((a, p) => a + p.errors, 0),
    throughput: n / seconds,
    latencyMs: summarize(all, n),
    firstErrors: parts.flatMap((p) => p.firstErrors).slice(0, 5),
  };
}

/** Runs `clients` loops of `op` for warm-up + duration (or until maxOps); latencies in ms. */
export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  const maxOps = o.maxOps ?? 2_000_000;
  const lat = new Float64Array(Math.min(maxOps, 2_000_000));
  let n = 0;
  let issued = 0;
  let errors = 0;
  const firstErrors: string[] = [];
  const warmupMs = o.warmupMs ?? 0;
  const t0 = performance.now();
  const measureFrom = t0 + warmupMs;
  const end = measureFrom + o.durationMs;
  let measuredErrors = 0;
  const loop = async (c: number) => {
    for (;;) {
      const start = performance.now();
      if (start >= end || issued >= maxOps) return;
      const seq = issued++;
      try {
        await o.op(c, seq);
        const done = performance.now();
        if (start >= measureFrom && done <= end && n < lat.length) lat[n++] = done - start;
      } catch (e) {
        errors++;
        if (start >= measureFrom) measuredErrors++;
        if (firstErrors.length < 5) firstErrors.push(String((e as Error).message ?? e).slice(0, 200));
        await sleep(10); // no hot loop against a failing server
      }
    }
  };
  await Promise.all(Array.from({ length: o.clients }, (_, c) => loop(c)));
  const seconds = Math.min(o.durationMs, Math.max(1, performance.now() - measureFrom)) / 1000;
  return {
    clients: o.clients,
    seconds,
    ops: n,
    errors: measuredErrors,
    throughput: n / seconds,
    latencyMs: summarize(lat, n),
    firstErrors: errors > 0 ? firstErrors : [],
    samples: lat.subarray(0, n).slice(),
  };
}
