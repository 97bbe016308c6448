// What the process and docker drivers share: the task table and its listeners (`watch()`,
// one event per status change), the waiters of `stop()` (woken when a task is over, removed
// or the driver closes), the checks of `start()` and `logs()` arguments and of the spec parts
// both drivers read the same way, and line splitting for log readers. Each driver keeps its
// own task record (a task.json on disk, the engine's containers) and its state machine.

import { createHash } from 'node:crypto';
import { StringDecoder } from 'node:string_decoder';
import { FlotillaError } from '../../protocol/errors.js';
import type { Logger } from '../../log.js';
import type { TaskSpec } from '../../protocol/spec.js';
import type { DriverEventListener, DriverTaskStatus, LogLine, LogOptions } from '../driver.js';

export const CONTAINER_NAME_RE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
/** Longest partial line kept in memory by `logs()`; longer lines are split. */
export const MAX_LINE = 64 * 1024;

/** JSON with sorted object keys: stable across key orders. */
export function stableStringify(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableStringify).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${stableStringify(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}

export function specHash(spec: TaskSpec): string {
  return createHash('sha256').update(stableStringify(spec)).digest('hex');
}

/** Resolves after `ms`, or early (without rejecting) when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((res) => {
    if (signal?.aborted) return res();
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      res();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** Splits decoded UTF-8 output into lines; a line longer than MAX_LINE is cut into pieces. */
export class LineSplitter {
  private readonly decoder = new StringDecoder('utf8');
  private partial = '';

  /** Feed bytes; `onLine` gets every line they complete. */
  write(chunk: Buffer, onLine: (line: string) => void): void {
    this.partial += this.decoder.write(chunk);
    let nl: number;
    while ((nl = this.partial.indexOf('\n')) >= 0) {
      onLine(this.partial.slice(0, nl));
      this.partial = this.partial.slice(nl + 1);
    }
    while (this.partial.length > MAX_LINE) {
      onLine(this.partial.slice(0, MAX_LINE));
      this.partial = this.partial.slice(MAX_LINE);
    }
  }

  /** The input ended: the unterminated last line, if any. */
  end(onLine: (line: string) => void): void {
    this.partial += this.decoder.end();
    if (this.partial.length > 0) onLine(this.partial);
    this.partial = '';
  }
}

/** What the base keeps of every task, besides the driver's own record. */
export interface TrackedTask {
  /** `start()`'s `onEvent` listeners of this task. */
  listeners: Set<DriverEventListener>;
  /** Key of the last status emitted (to emit on change only). */
  lastKey: string;
  /** `stop()` calls waiting for the task to be over. */
  waiters: (() => void)[];
  removed: boolean;
}

/** Per-container checks of a driver's own (run in the spec checks' order, see `checkSpec`). */
export interface SpecRules {
  /** The spec as a whole, after `containers` and `driver`. */
  pod?: (spec: TaskSpec, bad: (path: string, message: string) => never) => void;
  /** One container, after its name. */
  beforeCommand?: (c: TaskSpec['containers'][number], i: number, bad: (path: string, message: string) => never) => void;
  /** One container, after its env. */
  after?: (c: TaskSpec['containers'][number], i: number, bad: (path: string, message: string) => never) => void;
}

export abstract class DriverBase<T extends TrackedTask> {
  protected readonly tasks = new Map<string, T>();
  protected readonly watchers = new Set<DriverEventListener>();
  protected closed = false;
  protected readonly log: Logger;
  /** "process driver", "docker driver": prefixes log messages. */
  private readonly label: string;

  constructor(log: Logger, label: string) {
    this.log = log;
    this.label = label;
  }

  /** Waits for the driver's tasks to be known (adopted); rejects when it cannot be used. */
  protected abstract ready(): Promise<void>;
  protected abstract statusOf(t: T): DriverTaskStatus;
  /** Whether the task's final state is recorded (nothing of it runs any more). */
  protected abstract isOver(t: T): boolean;
  /** The run a task record holds, for `joinExisting`. */
  protected abstract runOf(t: T): { attempt: number; specHash: string; final?: { state: string } };
  protected abstract readLogs(taskId: string, opts: LogOptions): AsyncGenerator<LogLine>;

  watch(listener: DriverEventListener): () => void {
    this.watchers.add(listener);
    return () => this.watchers.delete(listener);
  }

  async list(): Promise<DriverTaskStatus[]> {
    await this.ready();
    return [...this.tasks.values()].map((t) => this.statusOf(t));
  }

  logs(taskId: string, opts: LogOptions = {}): AsyncIterable<LogLine> {
    return this.readLogs(taskId, opts);
  }

  /** Tell the task's listeners and the watchers its status, when it changed. */
  protected emitIfChanged(t: T): void {
    if (t.removed) return;
    const s = this.statusOf(t);
    const key = stableStringify([s.state, s.exitCode, s.reason, s.detail, s.ports]);
    if (key === t.lastKey) return;
    t.lastKey = key;
    for (const l of [...t.listeners, ...this.watchers]) {
      try {
        l(s);
      } catch (e) {
        this.log.error(`${this.label}: event listener threw`, { taskId: s.taskId, error: e instanceof Error ? e.message : String(e) });
      }
    }
  }

  /** Resolves when the task is over, removed, or the driver closed. */
  protected whenFinished(t: T): Promise<void> {
    if (this.isOver(t) || t.removed || this.closed) return Promise.resolve();
    return new Promise((res) => t.waiters.push(res));
  }

  protected wake(t: T): void {
    const ws = t.waiters.splice(0);
    for (const w of ws) w();
  }

  /** The task is no longer this driver's: no more events, its waiters return. */
  protected forget(t: T): void {
    t.removed = true;
    t.listeners.clear();
    this.wake(t);
  }

  /** On close: no more events to anyone, every waiter returns. */
  protected releaseAll(): void {
    this.watchers.clear();
    for (const t of this.tasks.values()) {
      t.listeners.clear();
      this.wake(t);
    }
  }

  /** `start()`'s task id and attempt, checked; returns the attempt. */
  protected checkStartArgs(taskId: string, attemptOpt: number | undefined): number {
    if (typeof taskId !== 'string' || taskId.length === 0 || taskId.length > 128) {
      throw new FlotillaError('bad_request', "Cannot start task as 'taskId' must be a string of 1 to 128 characters");
    }
    const attempt = attemptOpt ?? 1;
    if (!Number.isSafeInteger(attempt) || attempt < 1) {
      throw new FlotillaError('bad_request', `Cannot start task '${taskId}' as 'attempt' must be a whole number >= 1`);
    }
    return attempt;
  }

  /**
   * `start()` of a task this driver has: the same run still starting or running is joined
   * (true: nothing to launch, never a duplicate); another attempt, another spec or a finished
   * run is a `conflict`. False: the driver has no such task.
   */
  protected joinExisting(taskId: string, attempt: number, hash: string, onEvent: DriverEventListener | undefined): boolean {
    const existing = this.tasks.get(taskId);
    if (existing === undefined) return false;
    const run = this.runOf(existing);
    if (run.attempt !== attempt) {
      throw new FlotillaError('conflict', `Cannot start attempt ${attempt} of task '${taskId}' as attempt ${run.attempt} is here; stop and remove it first`);
    }
    if (run.specHash !== hash) {
      throw new FlotillaError('conflict', `Cannot start task '${taskId}' as it already exists here with a different spec`);
    }
    if (run.final !== undefined) {
      throw new FlotillaError('conflict', `Cannot start task '${taskId}' as it already ran here (${run.final.state}); remove it first`);
    }
    if (onEvent !== undefined) existing.listeners.add(onEvent);
    return true;
  }

  /**
   * The spec checks both drivers make, with `rules` for a driver's own, in this order:
   * containers, driver, `rules.pod`; then per container: name, `rules.beforeCommand`,
   * command, args, env, `rules.after`.
   */
  protected checkSpec(taskId: string, spec: TaskSpec, driver: string, rules: SpecRules = {}): void {
    const bad = (path: string, message: string): never => {
      throw new FlotillaError('bad_request', `Cannot start task '${taskId}' as '${path}' ${message}`, { details: [{ path, message }] });
    };
    if (spec === null || typeof spec !== 'object' || !Array.isArray(spec.containers) || spec.containers.length === 0) {
      bad('containers', 'must have at least 1 container');
    }
    if (spec.driver !== driver) bad('driver', `must be '${driver}' for the ${driver} driver (got '${String(spec.driver)}')`);
    rules.pod?.(spec, bad);
    const seen = new Set<string>();
    spec.containers.forEach((c, i) => {
      if (typeof c.name !== 'string' || !CONTAINER_NAME_RE.test(c.name)) bad(`containers[${i}].name`, 'must be a DNS label');
      if (seen.has(c.name)) bad(`containers[${i}].name`, 'must be unique');
      seen.add(c.name);
      rules.beforeCommand?.(c, i, bad);
      if (!Array.isArray(c.command) || !c.command.every((s) => typeof s === 'string')) bad(`containers[${i}].command`, 'must be an array of strings');
      if (!Array.isArray(c.args) || !c.args.every((s) => typeof s === 'string')) bad(`containers[${i}].args`, 'must be an array of strings');
      if (c.env === null || typeof c.env !== 'object' || !Object.values(c.env).every((s) => typeof s === 'string')) bad(`containers[${i}].env`, 'must map names to strings');
      for (const [k, v] of Object.entries(c.env)) {
        if (k.includes('=') || k.includes('\0') || k === '' || v.includes('\0')) bad(`containers[${i}].env`, `has an invalid variable '${k}'`);
      }
      rules.after?.(c, i, bad);
    });
  }

  /** `logs()` arguments against a task's container names (rejects like the Driver contract says). */
  protected checkLogArgs(taskId: string, names: string[], opts: LogOptions): void {
    if (opts.container !== undefined && !names.includes(opts.container)) {
      throw new FlotillaError('bad_request', `Cannot read the logs of task '${taskId}' as it has no container '${opts.container}' (it has ${names.map((n) => `'${n}'`).join(', ')})`);
    }
    if (opts.tail !== undefined && (!Number.isSafeInteger(opts.tail) || opts.tail < 0)) {
      throw new FlotillaError('bad_request', `Cannot read the logs of task '${taskId}' as 'tail' must be a whole number >= 0`);
    }
  }

  /** The task whose logs are asked for, or `not_found`. */
  protected logTask(taskId: string): T {
    const t = this.tasks.get(taskId);
    if (t === undefined) throw new FlotillaError('not_found', `Cannot read the logs of task '${taskId}' as it is not on this worker`);
    return t;
  }
}
