// Reading a docker task's output: `container.logs()` per (container, stream), demuxed, split
// into lines and merged into one queue (paused at LOG_QUEUE_HIGH lines per reader). Docker's
// own `tail` counts the lines of both streams together, so `tail` is applied here per stream.
// Lines are asked with docker's timestamps (RFC 3339, nanoseconds) and carry them as `at`;
// `since` is passed to docker (whole seconds: the caller filters by `at` for the rest).

import { PassThrough, Readable } from 'node:stream';
import type Docker from 'dockerode';
import type { Logger } from '../../log.js';
import type { LogLine } from '../driver.js';
import { LineSplitter } from './base.js';
import { errMessage, statusCode } from './docker-names.js';

/** Log lines buffered per `logs()` reader before the docker streams are paused. */
const LOG_QUEUE_HIGH = 1000;

export interface ContainerLogOptions {
  follow: boolean;
  tail?: number;
  /** Ms since the epoch: docker leaves out what was written before (to the second). */
  since?: number;
  /** Ask docker for its timestamps and give each line its `at`. */
  timestamps?: boolean;
  signal?: AbortSignal;
  log: Logger;
  /** For log messages. */
  taskId: string;
}

/** The lines of `containers` (those with an id), interleaved as the engine sends them. */
export async function* streamContainerLogs(
  docker: Docker,
  containers: { name: string; id?: string }[],
  streams: ('stdout' | 'stderr')[],
  opts: ContainerLogOptions,
): AsyncGenerator<LogLine> {
  const { follow, tail, signal, taskId } = opts;
  const since = opts.since !== undefined ? { since: Math.floor(opts.since / 1000) } : {};
  const timestamps = opts.timestamps === true;
  const line = (container: string, stream: 'stdout' | 'stderr', raw: string): LogLine => (timestamps ? stamped(container, stream, raw) : { container, stream, line: raw });
  const selected = containers;
  const queue: LogLine[] = [];
  let wakeConsumer: (() => void) | null = null;
  const paused = new Set<Readable>();
  const abort = new AbortController();
  const onAbort = (): void => abort.abort();
  signal?.addEventListener('abort', onAbort, { once: true });
  let pending = 0;
  const notify = (): void => {
    const w = wakeConsumer;
    wakeConsumer = null;
    w?.();
  };
  const push = (l: LogLine, src: Readable | null): void => {
    queue.push(l);
    if (src !== null && queue.length >= LOG_QUEUE_HIGH && !paused.has(src)) {
      paused.add(src);
      src.pause();
    }
    notify();
  };

  const pump = async (c: { name: string; id?: string }, stream: 'stdout' | 'stderr'): Promise<void> => {
    if (c.id === undefined) return;
    const ctr = docker.getContainer(c.id);
    const want = { stdout: stream === 'stdout', stderr: stream === 'stderr' };
    // Docker's `tail` counts the lines of both streams together: count this stream's lines
    // first, then skip all but the last `tail` of them.
    let skip = 0;
    if (tail !== undefined || !follow) {
      const buf = await ctr.logs({ ...want, ...since, follow: false, timestamps, abortSignal: abort.signal });
      const lines: string[] = [];
      await demuxLines(docker, Readable.from([asBuffer(buf)]), stream, (line) => lines.push(line));
      if (!follow) {
        for (const l of tail !== undefined ? lines.slice(Math.max(0, lines.length - tail)) : lines) push(line(c.name, stream, l), null);
        return;
      }
      skip = Math.max(0, lines.length - tail!);
    }
    const raw = (await ctr.logs({ ...want, ...since, follow: true, timestamps, abortSignal: abort.signal })) as Readable;
    let n = 0;
    await demuxLines(docker, raw, stream, (l) => {
      if (n++ < skip) return;
      push(line(c.name, stream, l), raw);
    });
  };

  for (const c of selected) {
    for (const s of streams) {
      pending++;
      void pump(c, s)
        .catch((e: unknown) => {
          if (!abort.signal.aborted && statusCode(e) !== 404) opts.log.debug('docker driver: log stream failed', { taskId, container: c.name, error: errMessage(e) });
        })
        .finally(() => {
          pending--;
          notify();
        });
    }
  }
  try {
    for (;;) {
      if (signal?.aborted) return;
      const l = queue.shift();
      if (l !== undefined) {
        yield l;
        if (queue.length < LOG_QUEUE_HIGH / 2 && paused.size > 0) {
          for (const p of paused) p.resume();
          paused.clear();
        }
        continue;
      }
      if (pending === 0) return;
      await new Promise<void>((res) => {
        wakeConsumer = res;
        if (queue.length > 0 || pending === 0 || signal?.aborted) notify();
      });
    }
  } finally {
    signal?.removeEventListener('abort', onAbort);
    abort.abort(); // ends every docker stream still open
  }
}

/** A line docker sent with `timestamps`: its RFC 3339 prefix becomes `at`. */
export function stamped(container: string, stream: 'stdout' | 'stderr', raw: string): LogLine {
  const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d) ?/.exec(raw);
  if (m === null) return { container, stream, line: raw };
  const ms = Date.parse(`${m[1]}${m[2] !== undefined ? m[2].slice(0, 4) : ''}${m[3]}`);
  return Number.isFinite(ms) ? { container, stream, line: raw.slice(m[0].length), at: ms } : { container, stream, line: raw };
}

/** Demux a docker log stream (8-byte frame headers) and call `onLine` per line of `stream`. */
export function demuxLines(docker: Docker, raw: Readable, stream: 'stdout' | 'stderr', onLine: (line: string) => void): Promise<void> {
  return new Promise<void>((res) => {
    const out = new PassThrough();
    const sink = new PassThrough();
    sink.resume();
    docker.modem.demuxStream(raw, stream === 'stdout' ? out : sink, stream === 'stderr' ? out : sink);
    const lines = new LineSplitter();
    out.on('data', (chunk: Buffer) => lines.write(chunk, onLine));
    out.once('end', () => {
      lines.end(onLine);
      res();
    });
    // The source ending (or failing, or aborted) ends `out` once what was demuxed is read.
    let ended = false;
    const endOut = (): void => {
      if (ended) return;
      ended = true;
      out.end();
    };
    raw.once('end', endOut);
    raw.once('close', endOut);
    raw.once('error', endOut);
  });
}

function asBuffer(v: unknown): Buffer {
  if (Buffer.isBuffer(v)) return v;
  if (typeof v === 'string') return Buffer.from(v);
  return Buffer.from(JSON.stringify(v));
}
