// Health checks on the worker: for every running task whose spec has a check (`spec.health`,
// src/protocol/health.ts), probe it every `intervalMs` and tell the agent when its health
// changes (not on every probe); the agent reports that to the leader with the task's status,
// and stops a task that became unhealthy (it then reports the attempt `failed`, and the
// leader's restart policy decides what comes next).
//
// Rules (Docker's, where it has one):
//  * A task is `starting` when it begins to run; the first probe runs one interval later, the
//    next one an interval after the previous one ended: one probe in flight per task, never
//    more, however slow the probes are.
//  * A probe that takes longer than `timeoutMs` fails ("timed out after 2s"); it is aborted
//    (an exec's process group is killed, an HTTP request or connection destroyed).
//  * A success makes the task `healthy`, resets the failing streak and ends the start period.
//    A failure during the start period (`startPeriodMs` from the task's start) does not count.
//    After it, `retries` consecutive failures make the task `unhealthy`: the monitor stops
//    probing it and the agent stops it with the reason "health check failed N times: <output>".
//  * Probe outputs are kept truncated to MAX_HEALTH_OUTPUT characters.
//  * A task adopted by a restarted worker keeps the health the leader recorded until its first
//    probe here says otherwise (no `starting` report that would take a healthy task out of
//    service); its start period is counted from the task's start, as far as it is left.
//
// Where probes go (how ports map, per driver):
//  * exec: `Driver.exec` runs the command in the check's container: docker exec for the docker
//    driver, a process with the container's environment and working directory for the process
//    driver.
//  * http / tcp: the process driver's tasks use the node's network, so the check's port is
//    reached at the node's address (`Driver.podAddress`: FLOTILLA_NODE_HOST, where a replica
//    of the routing mesh listens, so the check sees what the mesh sees), and, when nothing
//    answers there, at 127.0.0.1:port (a process listening on loopback only). A docker pod's port is reached at 127.0.0.1:<host port> when
//    the spec publishes it (`ports: [{container: port, host: H}]`; at the engine's binding,
//    `Driver.portAddress`, once inspected: a dynamic port of the routing mesh, or a
//    `--publish-host` address), else at the pod's own
//    address on the Docker network (`Driver.podAddress`, the infra container's IP) and the
//    port itself.
//
// Timers and clocks come through the injectable ports of src/clock.ts (tests and the
// simulator drive them).

import { connect } from 'node:net';
import { request } from 'node:http';
import { systemTimers, type Clock, type Timers, systemClock } from '../clock.js';
import { MAX_HEALTH_OUTPUT, formatDuration, type HealthCheck, type TaskHealth } from '../protocol/health.js';
import type { TaskSpec } from '../protocol/spec.js';
import type { Driver } from './driver.js';

export interface ProbeResult {
  ok: boolean;
  output: string;
}

/** One probe of a task's check; it must stop its work when `signal` aborts. */
export type Probe = (signal: AbortSignal) => Promise<ProbeResult>;

/** What the agent knows of a task's check: the check and the host ports its spec publishes. */
export interface TaskCheck {
  check: HealthCheck;
  /** TCP container port → published host port. */
  hostPorts: Map<number, number>;
  /** 'docker' | 'process' */
  driver: string;
}

/** The check of a spec, with what a probe needs to find the port; undefined without one. */
export function taskCheckOf(spec: TaskSpec): TaskCheck | undefined {
  if (spec.health === undefined) return undefined;
  const hostPorts = new Map<number, number>();
  for (const c of spec.containers) for (const p of c.ports) if (p.protocol === 'tcp' && p.host !== undefined && !hostPorts.has(p.container)) hostPorts.set(p.container, p.host);
  return { check: spec.health, hostPorts, driver: spec.driver };
}

export function truncateOutput(s: string): string {
  const t = s.trim();
  return t.length <= MAX_HEALTH_OUTPUT ? t : `${t.slice(0, MAX_HEALTH_OUTPUT - 1)}…`;
}

// ---------------------------------------------------------------------------------------------
// The monitor

export interface HealthMonitorOptions {
  /** A task's health changed: report it. */
  onChange: (taskId: string, attempt: number, health: TaskHealth) => void;
  /** A task became unhealthy: stop it (`reason` says why). */
  onUnhealthy: (taskId: string, attempt: number, reason: string) => void;
  timers?: Timers;
  clock?: Clock;
}

interface Watched {
  taskId: string;
  attempt: number;
  check: HealthCheck;
  probe: Probe;
  status: TaskHealth['status'];
  streak: number;
  /** End of the start period on the monotonic clock (a success ends it early). */
  startEnds: number;
  /** Whether a change was reported yet (adopted tasks report their first result only). */
  cancelTimer: (() => void) | null;
  inflight: AbortController | null;
  done: boolean;
}

export class HealthMonitor {
  private readonly watched = new Map<string, Watched>();
  private readonly timers: Timers;
  private readonly clock: Clock;

  constructor(private readonly opts: HealthMonitorOptions) {
    this.timers = opts.timers ?? systemTimers;
    this.clock = opts.clock ?? systemClock;
  }

  /** Tasks being probed (tests, status). */
  get size(): number {
    return this.watched.size;
  }

  /** The current health of a watched task (undefined when not watched). */
  healthOf(taskId: string): TaskHealth['status'] | undefined {
    return this.watched.get(taskId)?.status;
  }

  /**
   * Probe a running task (no-op when this attempt is already watched). `startedAt`: the task's
   * start, wall ms (the start period counts from it); `adopted`: found running by a restarted
   * worker, so no `starting` is reported.
   */
  watch(taskId: string, attempt: number, check: HealthCheck, probe: Probe, o: { startedAt?: number; adopted?: boolean } = {}): void {
    const cur = this.watched.get(taskId);
    if (cur !== undefined && cur.attempt === attempt) return;
    if (cur !== undefined) this.unwatch(taskId);
    const ran = o.startedAt === undefined ? 0 : Math.max(0, this.clock.wall() - o.startedAt);
    const w: Watched = {
      taskId,
      attempt,
      check,
      probe,
      status: 'starting',
      streak: 0,
      startEnds: this.clock.mono() + Math.max(0, check.startPeriodMs - ran),
      cancelTimer: null,
      inflight: null,
      done: false,
    };
    this.watched.set(taskId, w);
    if (o.adopted !== true) this.opts.onChange(taskId, attempt, { status: 'starting', failingStreak: 0, at: this.clock.wall() });
    this.schedule(w);
  }

  /** Stop probing a task (it ended, was stopped or dropped). */
  unwatch(taskId: string): void {
    const w = this.watched.get(taskId);
    if (w === undefined) return;
    this.watched.delete(taskId);
    this.finish(w);
  }

  /** Stop everything (the worker closes). */
  close(): void {
    for (const id of [...this.watched.keys()]) this.unwatch(id);
  }

  private finish(w: Watched): void {
    w.done = true;
    w.cancelTimer?.();
    w.cancelTimer = null;
    w.inflight?.abort();
    w.inflight = null;
  }

  private schedule(w: Watched): void {
    if (w.done) return;
    w.cancelTimer = this.timers.after(w.check.intervalMs, () => {
      w.cancelTimer = null;
      void this.probeOnce(w);
    });
  }

  private async probeOnce(w: Watched): Promise<void> {
    if (w.done || w.inflight !== null) return;
    const ac = new AbortController();
    w.inflight = ac;
    let timedOut = false;
    const result = await new Promise<ProbeResult>((resolve) => {
      const cancel = this.timers.after(w.check.timeoutMs, () => {
        timedOut = true;
        ac.abort();
        resolve({ ok: false, output: `timed out after ${formatDuration(w.check.timeoutMs)}` });
      });
      let p: Promise<ProbeResult>;
      try {
        p = w.probe(ac.signal);
      } catch (e) {
        p = Promise.reject(e);
      }
      p.then(
        (r) => {
          cancel();
          resolve(r);
        },
        (e: unknown) => {
          cancel();
          resolve({ ok: false, output: e instanceof Error ? e.message : String(e) });
        },
      );
    });
    if (w.inflight === ac) w.inflight = null;
    if (w.done) return;
    this.record(w, timedOut ? result : { ok: result.ok, output: truncateOutput(result.output) });
    this.schedule(w);
  }

  private record(w: Watched, r: ProbeResult): void {
    const at = this.clock.wall();
    if (r.ok) {
      w.streak = 0;
      w.startEnds = -Infinity; // a success ends the start period
      if (w.status !== 'healthy') {
        w.status = 'healthy';
        this.opts.onChange(w.taskId, w.attempt, { status: 'healthy', failingStreak: 0, ...(r.output ? { output: r.output } : {}), at });
      }
      return;
    }
    if (this.clock.mono() < w.startEnds) return; // the start period: does not count
    w.streak++;
    if (w.streak < w.check.retries) return;
    w.status = 'unhealthy';
    const health: TaskHealth = { status: 'unhealthy', failingStreak: w.streak, ...(r.output ? { output: r.output } : {}), at };
    this.opts.onChange(w.taskId, w.attempt, health);
    this.watched.delete(w.taskId);
    this.finish(w);
    this.opts.onUnhealthy(w.taskId, w.attempt, `health check failed ${w.streak} time${w.streak === 1 ? '' : 's'}${r.output ? `: ${r.output}` : ''}`);
  }
}

// ---------------------------------------------------------------------------------------------
// The probes

/** The probe of a task's check, on the driver that runs it. */
export function probeFor(driver: Driver, taskId: string, tc: TaskCheck): Probe {
  const c = tc.check;
  if (c.type === 'exec') {
    return async (signal) => {
      if (driver.probe === undefined) return { ok: false, output: `the ${driver.name} driver cannot run exec checks` };
      const r = await driver.probe(taskId, c.container, c.command ?? [], { signal, maxOutput: MAX_HEALTH_OUTPUT });
      return { ok: r.exitCode === 0, output: r.exitCode === 0 ? r.output : `exit ${r.exitCode}${r.output ? `: ${r.output}` : ''}` };
    };
  }
  const port = c.port!;
  const addresses = async (): Promise<{ host: string; port: number }[]> => {
    if (tc.driver === 'process') {
      const host = (await driver.podAddress?.(taskId)) ?? null;
      return host !== null && host !== '127.0.0.1' ? [{ host, port }, { host: '127.0.0.1', port }] : [{ host: '127.0.0.1', port }];
    }
    const bound = (await driver.portAddress?.(taskId, port)) ?? null;
    if (bound !== null) return [bound];
    const published = tc.hostPorts.get(port);
    if (published !== undefined) return [{ host: '127.0.0.1', port: published }];
    const ip = (await driver.podAddress?.(taskId)) ?? null;
    if (ip === null) throw new Error(`port ${port} is not published and the pod has no address on this node`);
    return [{ host: ip, port }];
  };
  // The first address that answers decides; when none does, the first one's failure is reported.
  const firstOk = async (probe: (to: { host: string; port: number }) => Promise<ProbeResult>): Promise<ProbeResult> => {
    let first: ProbeResult | null = null;
    for (const to of await addresses()) {
      const r = await probe(to);
      if (r.ok) return r;
      first ??= r;
    }
    return first!;
  };
  if (c.type === 'tcp') return async (signal) => firstOk((to) => tcpProbe(to, signal));
  return async (signal) => firstOk((to) => httpProbe(to, c.path ?? '/', signal));
}

/** Connects; healthy when the connection is accepted. */
export function tcpProbe(to: { host: string; port: number }, signal: AbortSignal): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const sock = connect({ host: to.host, port: to.port });
    const done = (r: ProbeResult): void => {
      signal.removeEventListener('abort', onAbort);
      sock.destroy();
      resolve(r);
    };
    const onAbort = (): void => done({ ok: false, output: 'aborted' });
    signal.addEventListener('abort', onAbort, { once: true });
    sock.once('connect', () => done({ ok: true, output: `connected to ${to.host}:${to.port}` }));
    sock.once('error', (e) => done({ ok: false, output: e.message }));
  });
}

/** GET http://host:port/path; healthy on 2xx and 3xx (redirects are not followed). */
export function httpProbe(to: { host: string; port: number }, path: string, signal: AbortSignal): Promise<ProbeResult> {
  return new Promise((resolve) => {
    let settled = false;
    const done = (r: ProbeResult): void => {
      if (settled) return;
      settled = true;
      resolve(r);
    };
    const req = request({ host: to.host, port: to.port, path, method: 'GET', headers: { 'user-agent': 'flotilla-health/1', connection: 'close' }, signal }, (res) => {
      const code = res.statusCode ?? 0;
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        if (body.length < MAX_HEALTH_OUTPUT) body += chunk;
        if (body.length >= MAX_HEALTH_OUTPUT) res.destroy();
      });
      const finish = (): void => done({ ok: code >= 200 && code < 400, output: `HTTP ${code}${body.trim() ? `: ${body.trim()}` : ''}` });
      res.once('end', finish);
      res.once('close', finish);
      res.once('error', finish);
    });
    req.once('error', (e) => done({ ok: false, output: e.message }));
    req.end();
  });
}
