// The cluster state's data model: what the replicated state holds (nodes, tasks, kv entries,
// the leader) and the vocabulary every part of the state machine shares (where an entry sits
// in the log, what applying it returns, the state-size quota). Types and constants, plus the
// few pure rules about them (which states are terminal, in what order states progress, what a
// kv entry costs in the size estimate).

import { errorInfo, type ErrorCode, type ErrorInfo } from '../../protocol/errors.js';
import type { NodeAvailability, TaskSpec } from '../../protocol/spec.js';
import type { TaskHealth } from '../../protocol/health.js';
import type { PublishedPort } from '../../protocol/session.js';
// The shapes clients also see are defined once, in the protocol, and used here as they are.
import type { DesiredState, NodeInfo, NodeResources, NodeStatus, TaskHistoryEntry, TaskState } from '../../protocol/api.js';

export type { DesiredState, NodeInfo, NodeResources, NodeStatus, TaskHistoryEntry, TaskState };

// =============================================================================================
// Model

/**
 * Terminal states. `stopped` is the terminal state of a task whose desired state became
 * `shutdown` (stopped before placement, or reported stopped by its worker).
 */
export const TERMINAL_STATES: ReadonlySet<TaskState> = new Set<TaskState>(['succeeded', 'failed', 'lost', 'stopped']);
export const TASK_STATES: readonly TaskState[] = ['pending', 'assigned', 'starting', 'running', 'succeeded', 'failed', 'lost', 'stopped'];
/** States a worker may report. */
export type ReportedState = 'starting' | 'running' | 'succeeded' | 'failed' | 'stopped';

export function isTerminal(state: TaskState): boolean {
  return TERMINAL_STATES.has(state);
}

/** Progress order: a report may only move a task to a later rank. */
export const STATE_RANK: Record<TaskState, number> = {
  pending: 0,
  assigned: 1,
  starting: 2,
  running: 3,
  succeeded: 4,
  failed: 4,
  lost: 4,
  stopped: 4,
};




export interface Task {
  id: string;
  name: string;
  spec: TaskSpec;
  desired: DesiredState;
  state: TaskState;
  /** Node of the current attempt (kept after it ends, for history); null while pending. */
  node: string | null;
  reason: string;
  /** Progress or advice, e.g. "pulling 43%", "restarting in 2000 ms (restart 2 of 5)". */
  detail: string;
  exitCode?: number;
  /** Restarts caused by the restart policy (what `restart.maxAttempts` limits). */
  restarts: number;
  /** 1 for the first run; +1 on every restart (policy or forced). */
  attempt: number;
  /** The last HISTORY_LIMIT state changes, oldest first. */
  history: TaskHistoryEntry[];
  createdAt: number;
  updatedAt: number;
  /** Set on a terminal task the restart policy will restart: the earliest time to do so. */
  nextRestartAt?: number;
  /** Log index of the last change. */
  version: number;
  /** Log index of the task.create. */
  createVersion: number;
  /** Set on a service's task: which service, which slot, which template version it runs. */
  service?: TaskServiceRef;
  /** The health its worker last reported for the current attempt (tasks with a check; see task-health.ts). */
  health?: TaskHealth;
  /**
   * Where its worker reported the current attempt's published tcp ports (docker: the engine's
   * bindings, dynamic ports included; the routing mesh dials them). Absent when none was
   * reported, and in snapshots of older versions.
   */
  ports?: PublishedPort[];
}

/** A service task's place: service `name`, slot `slot` (its name is `name.slot`), template `version`. */
export interface TaskServiceRef {
  name: string;
  slot: number;
  version: number;
}

export interface KvEntry {
  key: string;
  value: Uint8Array | string;
  /** Log index of the last write. */
  version: number;
  /** Log index of the write that created the key. */
  createVersion: number;
}

/** A remembered kv result, under `<scope> <request id>`. */
export interface RequestRecord {
  index: number;
  result: ApplyResult;
  /** commandDigest of the command that produced `result` (absent in records of older versions). */
  digest?: string;
}

/** Resources reserved on a node by its non-terminal tasks (assigned, starting, running). */
export interface NodeUsage {
  cpu: number;
  memory: number;
  tasks: number;
  /** Host ports in use, as "port/protocol". */
  hostPorts: string[];
}

export interface LeaderInfo {
  id: string;
  term: number;
  at: number;
}

export const HISTORY_LIMIT = 50;
export const DEFAULT_EVENT_CAPACITY = 10_000;
/** How many kv request ids are remembered for de-duplication. */
export const REQUEST_MEMORY = 1_000;
export const MAX_KEY_LENGTH = 1024;
export const MAX_VALUE_BYTES = 1024 * 1024;
/** What one kv entry costs in `stateBytes` beyond its key and value (versions, map slot). */
export const KV_ENTRY_OVERHEAD = 64;
/** What one task costs in `stateBytes`: a spec plus its bounded history, estimated. */
export const TASK_BYTES_ESTIMATE = 4096;

// =============================================================================================
// Commands

/** Query filter of `ClusterState.listTasks`. */
export interface TaskFilter {
  state?: TaskState | readonly TaskState[];
  node?: string;
  desired?: DesiredState;
  name?: string;
  /** Only the tasks of this service. */
  service?: string;
}

/** What one kv entry costs in the state-size estimate: its key and value plus a fixed overhead. */
export function kvEntryBytes(key: string, valueSize: number): number {
  return utf8Length(key) + valueSize + KV_ENTRY_OVERHEAD;
}

export function valueBytes(v: Uint8Array | string): number {
  return typeof v === 'string' ? utf8Length(v) : v.byteLength;
}

/** Bytes of `s` encoded as UTF-8, without encoding it. */
export function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

// =============================================================================================
// Applying

/** Where a command sits in the log. */
export interface ApplyMeta {
  index: number;
  term: number;
}

export type ApplyResult<T = unknown> =
  | { ok: true; value?: T }
  | {
      ok: false;
      error: ErrorInfo;
      /** Set when a leader decision was rejected because its term is not the entry's term. */
      fenced?: true;
    };

export function fail(code: ErrorCode, message: string): ApplyResult<never> {
  return { ok: false, error: errorInfo(code, message) };
}

/**
 * The state-size quota as the parts that grow the state see it: the `quota_exceeded` failure
 * for a write growing the state by `growth` bytes past `quota`, or undefined when it fits (or
 * no quota applies). `ClusterState` owns it: the size counts kv entries and tasks together.
 */
export type QuotaGuard = (what: string, growth: number, quota: number | undefined) => ApplyResult<never> | undefined;

export function byId(a: { id: string }, b: { id: string }): number {
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}
