// The docker driver's model of a pod — its infra and app containers as last inspected, and
// the launch/stop/failure records — and how its state reads from them (pure functions; the
// state machine that acts on them is DockerDriver.evaluate).

import type { DriverContainerStatus, DriverEventListener, DriverTaskState, DriverTaskStatus } from '../driver.js';
import type { TrackedTask } from './base.js';
import type { PublishedPort } from '../../protocol/session.js';
import { exitReason } from './docker-names.js';

// In-memory model of a task (rebuilt from the engine after a restart)

/** The container that owns the pod's network namespace: the infra, or a solo pod's one container. */
export function netCtr(t: Task): Ctr {
  return t.solo ? t.apps[0]! : t.infra;
}

export interface Ctr {
  /** Spec name, or `infra`. */
  name: string;
  role: 'infra' | 'app';
  dockerName: string;
  id?: string;
  /** Observed (docker State.Status): created | running | paused | restarting | removing | exited | dead. */
  status?: string;
  exitCode?: number;
  oom?: boolean;
  /** State.Error (e.g. "exec: … not found") or our start error. */
  error?: string;
  startedAt?: number;
  finishedAt?: number;
  pid?: number;
  /** Removed behind our back (404). */
  gone?: boolean;
  /** First time this driver saw the container over (when docker has no FinishedAt). */
  seenDoneAt?: number;
  /** Starting it failed (docker start error). */
  startFailed?: boolean;
}

export interface Task extends TrackedTask {
  taskId: string;
  attempt: number;
  /** The cluster id the task belongs to (the driver's scope when it was created or adopted). */
  cluster: string;
  podName: string;
  specHash: string;
  createdAt: number;
  startedAt?: number;
  base: string;
  /** Without an id when the pod has no infra container (a solo pod, see `solo`). */
  infra: Ctr;
  apps: Ctr[];
  /** The pod is its one app container, without an infra (docker-config.ts `soloPod`). */
  solo: boolean;
  /** `launching` until the launch procedure is over (adopted tasks are `launched`). */
  phase: 'launching' | 'launched';
  launch: Promise<void>;
  abort: AbortController;
  pull?: { image: string; percent?: number };
  launchFailure?: { reason: string; at: number };
  /** `at`, `markKillAt`: wall ms (display, the engine-side mark); `killAt`: the deadline, on `monoNow()`. */
  stop?: { at: number; killAt: number; markKillAt: number };
  stopMarked: boolean;
  /** `at`: wall ms (display, ordering against the stop); `detectedAt`: `monoNow()`, starts the pod failure grace. */
  failure?: { container: string; exitCode?: number; reason: string; at: number; detectedAt: number };
  final?: { state: 'succeeded' | 'failed' | 'stopped'; exitCode?: number; reason: string; finishedAt: number };
  /** Deadline of the teardown (stop / pod failure) in progress, if any (`monoNow()`). */
  teardownKillAt?: number;
  infraStopping: boolean;
  refreshing: Promise<void> | null;
  dirty: boolean;
  /** The last refresh failed (logged once until one succeeds). */
  refreshFailing: boolean;
  /** The infra's port bindings as last inspected (the routing mesh dials them). */
  ports?: PublishedPort[];
}

export function ctrRunning(c: Ctr): boolean {
  return c.id !== undefined && !c.gone && (c.status === 'running' || c.status === 'paused' || c.status === 'restarting');
}

/** Whether nothing of the container runs and nothing will (it is over, or was never started). */
export function ctrDone(t: Task, c: Ctr): boolean {
  if (c.id === undefined) return t.phase === 'launched';
  if (c.gone) return true;
  switch (c.status) {
    case 'running':
    case 'paused':
    case 'restarting':
      return false;
    case 'created':
    case undefined:
      return c.startFailed === true || (c.error ?? '') !== '' || t.phase === 'launched';
    default:
      return true; // exited, dead, removing
  }
}

/** Exit code and reason of a finished app container. */
export function ctrExit(t: Task, c: Ctr): { code?: number; reason: string; at: number } {
  const at = c.finishedAt ?? (c.seenDoneAt ??= Date.now());
  if (c.id === undefined) return { at, reason: `container '${c.name}' was never created` };
  if (c.gone) return { at, reason: `container '${c.name}' was removed outside flotilla` };
  if (c.status === 'created' || c.status === undefined) {
    if (c.startFailed === true || (c.error ?? '') !== '') {
      const r: { code?: number; reason: string; at: number } = { at, reason: `container '${c.name}' failed to start: ${c.error ?? 'unknown error'}` };
      if (c.exitCode !== undefined && c.exitCode !== 0) r.code = c.exitCode;
      return r;
    }
    return { at, reason: `container '${c.name}' was never started${t.launchFailure === undefined ? ' (the launch was interrupted)' : ''}` };
  }
  return { code: c.exitCode, at, reason: exitReason(c.name, c.exitCode, c.oom === true) };
}

/** What a driver reports of a pod, from what was observed. */
export function podStatus(t: Task): DriverTaskStatus {
  const containers: DriverContainerStatus[] = t.apps.map((c) => {
    let state: DriverContainerStatus['state'];
    let exitCode: number | undefined;
    if (ctrRunning(c)) state = 'running';
    else if (ctrDone(t, c)) {
      exitCode = ctrExit(t, c).code;
      state = exitCode === 0 ? 'exited' : 'failed';
    } else state = 'starting';
    const s: DriverContainerStatus = { name: c.name, state };
    if (exitCode !== undefined) s.exitCode = exitCode;
    if (state === 'running' && c.pid !== undefined) s.pid = c.pid;
    return s;
  });
  let state: DriverTaskState;
  if (t.final !== undefined) state = t.final.state;
  else state = t.phase === 'launching' || containers.some((c) => c.state === 'starting') ? 'starting' : 'running';
  const status: DriverTaskStatus = { taskId: t.taskId, attempt: t.attempt, state, containers };
  if (t.final !== undefined) {
    status.reason = t.final.reason;
    if (t.final.exitCode !== undefined) status.exitCode = t.final.exitCode;
    status.finishedAt = t.final.finishedAt;
  } else if (t.stop !== undefined) {
    status.reason = 'stopping';
  } else if (t.failure !== undefined) {
    status.reason = `failing: ${t.failure.reason}`;
  }
  if (t.pull !== undefined) {
    status.detail = `pulling ${t.pull.image}${t.pull.percent !== undefined ? ` ${t.pull.percent}%` : ''}`;
  } else {
    status.detail = containers
      .map((c) => `${c.name} ${c.state === 'running' || c.state === 'starting' ? c.state : c.exitCode !== undefined ? `exited ${c.exitCode}` : 'not run'}`)
      .join(', ');
  }
  const pid = containers[0]?.pid;
  if (pid !== undefined) status.pid = pid;
  if (t.final === undefined && t.ports !== undefined && ctrRunning(netCtr(t))) status.ports = t.ports;
  if (t.startedAt !== undefined) status.startedAt = t.startedAt;
  else {
    const first = Math.min(...t.apps.map((c) => c.startedAt ?? Infinity));
    if (Number.isFinite(first)) status.startedAt = first;
  }
  return status;
}
