// Health checks: what a worker runs to tell whether a task serves (exec | http | tcp), and the
// health it reports. A check is part of a task's spec (`TaskSpec.health`), so it travels with
// the task to its worker; a service's template carries one for every task it creates.
//
//   { "type": "http", "port": 8080, "path": "/healthz", "intervalMs": "5s", "timeoutMs": "2s",
//     "retries": 3, "startPeriodMs": "10s", "container": "web" }
//
// Durations are whole milliseconds or strings such as "500ms", "5s", "1m30s".
//
// Pure module: no IO, no clocks, no randomness.

import { z } from 'zod';

export type HealthCheckType = 'exec' | 'http' | 'tcp';
export const HEALTH_CHECK_TYPES: readonly HealthCheckType[] = ['exec', 'http', 'tcp'];

/** A health check, run by the worker for the task's `container`. */
export interface HealthCheck {
  type: HealthCheckType;
  /** exec: the command (in the container; for the process driver in the task's environment). */
  command?: string[];
  /**
   * http / tcp: the port the container listens on. The worker reaches it on the node: for the
   * process driver 127.0.0.1:port; for the docker driver the host port it is published on
   * (`ports: [{container: port, host: H}]` → 127.0.0.1:H), else the pod's address on the
   * Docker network (the infra container's IP) and the port itself.
   */
  port?: number;
  /** http: the path to GET; 2xx and 3xx answers are healthy. */
  path?: string;
  /** Which container of the task the check is for; defaults to the first. */
  container: string;
  intervalMs: number;
  timeoutMs: number;
  /** Consecutive failures that make a task unhealthy. */
  retries: number;
  /** Failures during this time after a start do not count (ms); a success ends it early. */
  startPeriodMs: number;
}

export type HealthStatus = 'starting' | 'healthy' | 'unhealthy';

/** A task's health as its worker last reported a change of it (replicated in the task record). */
export interface TaskHealth {
  status: HealthStatus;
  /** Consecutive failed probes (counted once the start period is over). */
  failingStreak: number;
  /** The last probe's output (truncated), e.g. "HTTP 503" or an exec command's output. */
  output?: string;
  /** When the worker saw the change (its wall clock, ms). */
  at: number;
}

/** Longest probe output kept (characters). */
export const MAX_HEALTH_OUTPUT = 1024;

export const DEFAULT_HEALTH_TIMING = Object.freeze({ intervalMs: 5000, timeoutMs: 2000, retries: 3, startPeriodMs: 0 });

// ---------------------------------------------------------------------------------------------
// Durations

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * Milliseconds from a whole number of milliseconds or a string such as "500ms", "5s", "1m30s",
 * "2h" (a bare number in a string is milliseconds). Undefined when the input is not a duration.
 */
export function tryDuration(input: unknown): number | undefined {
  if (typeof input === 'number') return Number.isSafeInteger(input) && input >= 0 ? input : undefined;
  if (typeof input !== 'string') return undefined;
  const text = input.trim();
  if (/^\d+$/.test(text)) {
    const n = Number(text);
    return Number.isSafeInteger(n) ? n : undefined;
  }
  if (text === '' || !/^(\d+(?:\.\d+)?(ms|s|m|h))+$/.test(text)) return undefined;
  let total = 0;
  for (const m of text.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) total += Number(m[1]) * DURATION_UNITS[m[2]!]!;
  const ms = Math.round(total);
  return Number.isSafeInteger(ms) ? ms : undefined;
}

/** "1m30s", "500ms", "0s": for messages and displays. */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0s';
  if (ms < 1000 || ms % 1000 !== 0) return ms < 1000 ? `${ms}ms` : `${ms / 1000}s`;
  let s = ms / 1000;
  let out = '';
  const h = Math.floor(s / 3600);
  if (h > 0) out += `${h}h`;
  s -= h * 3600;
  const m = Math.floor(s / 60);
  if (m > 0) out += `${m}m`;
  s -= m * 60;
  if (s > 0) out += `${s}s`;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Schema

/** A duration field (see `tryDuration`) of at most `max` ms. */
export const durationSchema = (max: number) =>
  z.unknown().transform((v, ctx) => {
    const n = tryDuration(v);
    if (n === undefined || n > max) {
      ctx.addIssue({
        code: 'custom',
        message:
          n === undefined
            ? 'must be whole milliseconds or a duration such as "500ms", "5s", "1m30s"'
            : `must be at most ${formatDuration(max)}`,
        input: v,
      });
      return z.NEVER;
    }
    return n;
  });

/** An integer field from `min` to `max`. */
export const intIn = (min: number, max: number) => {
  const msg = `must be an integer from ${min} to ${max}`;
  return z
    .number({ error: (iss) => (iss.input === undefined ? 'is required' : msg) })
    .int({ error: msg })
    .min(min, { error: msg })
    .max(max, { error: msg });
};

const HOUR = 3_600_000;

/** A health check as written (defaults applied; `container` still optional). */
export const HealthCheckSchema = z
  .strictObject(
    {
      type: z.enum(['exec', 'http', 'tcp'], { error: (iss) => (iss.input === undefined ? 'is required' : "must be one of 'exec', 'http', 'tcp'") }),
      command: z
        .preprocess(
          (v) => (typeof v === 'string' ? ['/bin/sh', '-c', v] : v),
          z
            .array(z.string().max(16_384), { error: 'must be an array of strings or a shell command string' })
            .min(1, { error: 'must be a non-empty command' })
            .max(256),
        )
        .optional(),
      port: intIn(1, 65535).optional(),
      path: z
        .string({ error: 'must be a string' })
        .max(2048)
        .regex(/^\/[^\s]*$/, { error: "must be a path starting with '/'" })
        .optional(),
      container: z.string({ error: 'must be a string' }).min(1).max(63).optional(),
      intervalMs: durationSchema(HOUR).default(DEFAULT_HEALTH_TIMING.intervalMs),
      timeoutMs: durationSchema(HOUR).default(DEFAULT_HEALTH_TIMING.timeoutMs),
      retries: intIn(1, 100).default(DEFAULT_HEALTH_TIMING.retries),
      startPeriodMs: durationSchema(HOUR).default(DEFAULT_HEALTH_TIMING.startPeriodMs),
    },
    { error: (iss) => (iss.code === 'invalid_type' ? 'must be an object like {"type": "http", "port": 8080, "path": "/"}' : undefined) },
  )
  .superRefine((h, ctx) => {
    if (h.type === 'exec') {
      if (h.command === undefined) ctx.addIssue({ code: 'custom', path: ['command'], message: 'is required for an exec check' });
      if (h.port !== undefined) ctx.addIssue({ code: 'custom', path: ['port'], message: 'must not be set for an exec check' });
      if (h.path !== undefined) ctx.addIssue({ code: 'custom', path: ['path'], message: 'must not be set for an exec check' });
    } else {
      if (h.port === undefined) ctx.addIssue({ code: 'custom', path: ['port'], message: `is required for a ${h.type} check` });
      if (h.command !== undefined) ctx.addIssue({ code: 'custom', path: ['command'], message: `must not be set for a ${h.type} check` });
      if (h.type === 'tcp' && h.path !== undefined) ctx.addIssue({ code: 'custom', path: ['path'], message: 'must not be set for a tcp check' });
    }
    if (h.intervalMs < 100) ctx.addIssue({ code: 'custom', path: ['intervalMs'], message: 'must be at least 100ms' });
    if (h.timeoutMs < 1) ctx.addIssue({ code: 'custom', path: ['timeoutMs'], message: 'must be at least 1ms' });
  });

export type HealthCheckInput = z.output<typeof HealthCheckSchema>;

/**
 * The normalised check for a task whose containers are `containers` (names, in order): the
 * container defaults to the first; `problem` is set when the named container is not one of them.
 */
export function normalizeHealthCheck(h: HealthCheckInput, containers: readonly string[]): { check: HealthCheck; problem?: string } {
  const container = h.container ?? containers[0] ?? 'c0';
  const check: HealthCheck = {
    type: h.type,
    ...(h.command !== undefined ? { command: h.command } : {}),
    ...(h.port !== undefined ? { port: h.port } : {}),
    ...(h.type === 'http' ? { path: h.path ?? '/' } : {}),
    container,
    intervalMs: h.intervalMs,
    timeoutMs: h.timeoutMs,
    retries: h.retries,
    startPeriodMs: h.startPeriodMs,
  };
  if (h.container !== undefined && containers.length > 0 && !containers.includes(h.container)) {
    return { check, problem: `must name a container of the task (${containers.map((c) => `'${c}'`).join(', ')})` };
  }
  return { check };
}

/** "http :8080/healthz every 5s", "exec [sh -c …] every 5s": for displays. */
export function describeHealthCheck(h: HealthCheck): string {
  const what = h.type === 'exec' ? `exec ${JSON.stringify(h.command ?? [])}` : h.type === 'http' ? `http :${h.port}${h.path ?? '/'}` : `tcp :${h.port}`;
  const start = h.startPeriodMs > 0 ? `, start period ${formatDuration(h.startPeriodMs)}` : '';
  return `${what} every ${formatDuration(h.intervalMs)}, timeout ${formatDuration(h.timeoutMs)}, ${h.retries} retr${h.retries === 1 ? 'y' : 'ies'}${start} (container ${h.container})`;
}
