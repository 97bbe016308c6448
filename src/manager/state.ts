// ClusterState: flotilla's replicated state machine (design principles 4, 5, 7, 8).
//
// Every manager holds one ClusterState and feeds it the commands Raft commits, in log order.
// Applying is deterministic: no clocks, no randomness, no IO. Timestamps (`at`), ids and the
// deciding leader's `term` are part of each command, so two replicas that apply the same
// entries hold the same state and produce byte-identical snapshots.
//
// Rules every command follows:
//  * `apply` never throws for a bad command: it returns `{ ok: false, error }` and changes
//    nothing (a failed CAS is `conflict`, a missing task `not_found`, a malformed command
//    `bad_request`). Only `appliedIndex` moves, as it must for any applied log entry.
//  * Leader decisions (task.assign, task.restart, task.pending, nodes.markUnknown, node.down,
//    cluster.leader, and node.status when it carries a term) carry the term they were decided
//    in. If that is not the term of the log entry that carries them, a deposed leader decided
//    them: they are fenced (rejected).
//  * A task is placed at most once per attempt: task.assign only places `pending` tasks.
//  * Worker reports only move a task forward; a terminal task is never revived by a report,
//    only by task.restart.
//  * Every change appends an event (with a replicated, monotonic `seq`) to a bounded ring.
//
// Restarts happen IN PLACE: a failed/lost task keeps its id, goes back to `pending` with
// `attempt + 1` (and `restarts + 1` when the restart policy caused it), and its `history`
// keeps the previous attempts. Workers name containers by task id and attempt, and may tag
// reports with `attempt` so a late report from an old attempt is ignored. A forced restart
// may also move a live task (drain): it is re-queued at once and its old worker, which no
// longer has it assigned, stops the old attempt. There is no replacedBy/replaces chain.
//
// This module never imports Raft; a `Proposer` (proposer.ts) sits in between.

import { z } from 'zod';
import { errorInfo, FlotillaError, type ErrorCode, type ErrorInfo } from '../protocol/errors.js';
import {
  badRequestFromZod,
  formatBytes,
  formatConstraint,
  formatCpu,
  issueMessage,
  matchConstraint,
  parseConstraint,
  parseTaskSpec,
  specHostPorts,
  type NodeAvailability,
  type RestartPolicy,
  type TaskSpec,
} from '../protocol/spec.js';

// =============================================================================================
// Model

export type TaskState = 'pending' | 'assigned' | 'starting' | 'running' | 'succeeded' | 'failed' | 'lost' | 'stopped';
/**
 * Terminal states. `stopped` is the terminal state of a task whose desired state became
 * `shutdown` (stopped before placement, or reported stopped by its worker).
 */
export const TERMINAL_STATES: ReadonlySet<TaskState> = new Set<TaskState>(['succeeded', 'failed', 'lost', 'stopped']);
export const TASK_STATES: readonly TaskState[] = ['pending', 'assigned', 'starting', 'running', 'succeeded', 'failed', 'lost', 'stopped'];
export type DesiredState = 'running' | 'shutdown';
export type NodeStatus = 'ready' | 'unknown' | 'down';
/** States a worker may report. */
export type ReportedState = 'starting' | 'running' | 'succeeded' | 'failed' | 'stopped';

export function isTerminal(state: TaskState): boolean {
  return TERMINAL_STATES.has(state);
}

/** Progress order: a report may only move a task to a later rank. */
const STATE_RANK: Record<TaskState, number> = {
  pending: 0,
  assigned: 1,
  starting: 2,
  running: 3,
  succeeded: 4,
  failed: 4,
  lost: 4,
  stopped: 4,
};

export interface NodeResources {
  /** Millicores. */
  cpu: number;
  /** Bytes. */
  memory: number;
}

export interface NodeInfo {
  id: string;
  addr?: string;
  labels: Record<string, string>;
  resources: NodeResources;
  /** Drivers the worker offers ('docker', 'process', …). */
  drivers: string[];
  availability: NodeAvailability;
  status: NodeStatus;
  /** Why the status is what it is ('' when ready), e.g. "no heartbeat for 15 s". */
  statusReason: string;
  /** `at` of the last registration or heartbeat. */
  lastHeartbeat: number;
  registeredAt: number;
  /** Log index of the last change. */
  version: number;
}

export interface TaskHistoryEntry {
  state: TaskState;
  reason: string;
  at: number;
  node: string | null;
  attempt: number;
  exitCode?: number;
}

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
}

export interface KvEntry {
  key: string;
  value: Uint8Array | string;
  /** Log index of the last write. */
  version: number;
  /** Log index of the write that created the key. */
  createVersion: number;
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

export interface KvPutCommand {
  type: 'kv.put';
  key: string;
  value: Uint8Array | string;
  /** Expected current version; 0 = the key must not exist. */
  cas?: number;
  /**
   * Request id: a retried put with the same id (and scope) returns the first result; the same
   * id with a different command is refused (conflict). The client's x-request-id, or 128 random
   * bits the manager that received a request without one invented.
   */
  requestId?: string;
  /** Who sent the request (API token id, or 'anonymous'); request ids are per scope. */
  scope?: string;
  at?: number;
  /**
   * The state-size quota the proposing manager enforces (its --quota-bytes). Carried in the
   * entry so every replica applies the same limit (see `stateBytes`).
   */
  quota?: number;
}
export interface KvDelCommand {
  type: 'kv.del';
  key: string;
  /** Expected current version (0 = must not exist, which deletes nothing). */
  cas?: number;
  requestId?: string;
  scope?: string;
  at?: number;
}
export interface TaskCreateCommand {
  type: 'task.create';
  id: string;
  /** Re-validated on apply (host mounts are allowed here: that policy belongs to the edge). */
  spec: TaskSpec;
  at: number;
  /** The state-size quota of the proposing manager (see KvPutCommand.quota). */
  quota?: number;
}
export interface TaskStopCommand {
  type: 'task.stop';
  id: string;
  at: number;
  reason?: string;
}
/** Forget a terminal task (cancels any pending restart). */
export interface TaskRemoveCommand {
  type: 'task.remove';
  id: string;
  at: number;
}
export interface Placement {
  taskId: string;
  nodeId: string;
}
export interface TaskAssignCommand {
  type: 'task.assign';
  placements: Placement[];
  term: number;
  at: number;
}
export interface TaskReport {
  taskId: string;
  nodeId: string;
  state: ReportedState;
  reason?: string;
  exitCode?: number;
  detail?: string;
  at: number;
  /** The attempt the worker is running; a report for another attempt is ignored. */
  attempt?: number;
}
/**
 * Batched worker reports. Each report is checked on its own: a malformed or stale report is
 * listed in the result's `ignored` and does not hold back the others.
 */
export interface TaskReportCommand {
  type: 'task.report';
  reports: TaskReport[];
}
export interface TaskRestartCommand {
  type: 'task.restart';
  taskId: string;
  term: number;
  at: number;
  /**
   * Restart even if the policy would not, or while the task is still live (an operator's
   * restart, or moving a task off a draining node: the old worker stops it once the task is
   * no longer assigned to it). A forced restart bumps `attempt` but not `restarts`.
   */
  force?: boolean;
  reason?: string;
}
/** Why pending tasks are still pending (the scheduler's reasons), shown as their `reason`. */
export interface TaskPendingCommand {
  type: 'task.pending';
  items: { taskId: string; reason: string }[];
  term: number;
  at: number;
}
export interface NodeRegistration {
  id: string;
  addr?: string;
  labels?: Record<string, string>;
  resources: NodeResources;
  drivers: string[];
}
export interface NodeRegisterCommand {
  type: 'node.register';
  node: NodeRegistration;
  at: number;
}
/**
 * A worker's session is alive: records `lastHeartbeat` and sets `status` (default `ready`; a
 * worker leaving cleanly may say `down`). Emits an event only when the status changes.
 */
export interface NodeHeartbeatCommand {
  type: 'node.heartbeat';
  id: string;
  status?: NodeStatus;
  reason?: string;
  at: number;
}
/**
 * Set a node's status without a heartbeat, e.g. the leader's judgement `unknown` after missed
 * heartbeats. `down` behaves as node.down. Fenced when it carries `term` (leader loops should).
 */
export interface NodeStatusCommand {
  type: 'node.status';
  id: string;
  status: NodeStatus;
  reason?: string;
  term?: number;
  at: number;
}
export interface NodeSetAvailabilityCommand {
  type: 'node.setAvailability';
  id: string;
  availability: NodeAvailability;
  at?: number;
}
/** A new leader marks every ready node unknown; heartbeats bring them back (grace period). */
export interface NodesMarkUnknownCommand {
  type: 'nodes.markUnknown';
  term: number;
  at: number;
}
/** A node is declared down: its non-terminal tasks become `lost`. */
export interface NodeDownCommand {
  type: 'node.down';
  id: string;
  reason?: string;
  term: number;
  at: number;
}
/** A leader announces itself (elections appear in the event stream). */
export interface ClusterLeaderCommand {
  type: 'cluster.leader';
  leader: string;
  term: number;
  at: number;
}
/**
 * Several commands in one log entry (batched worker reports and heartbeats). Not a
 * transaction: each sub-command succeeds or fails on its own; the result lists them all.
 * Batches do not nest.
 */
export interface BatchCommand {
  type: 'batch';
  commands: SingleCommand[];
}

export type SingleCommand =
  | KvPutCommand
  | KvDelCommand
  | TaskCreateCommand
  | TaskStopCommand
  | TaskRemoveCommand
  | TaskAssignCommand
  | TaskReportCommand
  | TaskRestartCommand
  | TaskPendingCommand
  | NodeRegisterCommand
  | NodeHeartbeatCommand
  | NodeStatusCommand
  | NodeSetAvailabilityCommand
  | NodesMarkUnknownCommand
  | NodeDownCommand
  | ClusterLeaderCommand;
export type Command = SingleCommand | BatchCommand;
export type CommandType = Command['type'];

export const COMMAND_TYPES: readonly CommandType[] = [
  'kv.put',
  'kv.del',
  'task.create',
  'task.stop',
  'task.remove',
  'task.assign',
  'task.report',
  'task.restart',
  'task.pending',
  'node.register',
  'node.heartbeat',
  'node.status',
  'node.setAvailability',
  'nodes.markUnknown',
  'node.down',
  'cluster.leader',
  'batch',
];

/**
 * Leader decisions: they must carry the deciding term. Any command that carries a `term`
 * (node.status may) is fenced on apply: rejected unless it equals the entry's term.
 */
export const FENCED_COMMANDS: ReadonlySet<CommandType> = new Set<CommandType>([
  'task.assign',
  'task.restart',
  'task.pending',
  'nodes.markUnknown',
  'node.down',
  'cluster.leader',
]);

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

// Result values, per command.
export interface KvWriteResult {
  key: string;
  version: number;
  createVersion: number;
}
export interface KvDelResult {
  deleted: boolean;
  key: string;
  /** Version of the deleted entry. */
  version?: number;
}
export interface AssignResult {
  assigned: Placement[];
  skipped: (Placement & { reason: string })[];
}
export interface PendingResult {
  updated: number;
  skipped: { taskId: string; reason: string }[];
}
export interface ReportResult {
  applied: number;
  ignored: { taskId: string; nodeId: string; reason: string }[];
}

// =============================================================================================
// Events

/** The parts of a task an event carries (query the task for its spec and history). */
export interface TaskSummary {
  id: string;
  name: string;
  state: TaskState;
  desired: DesiredState;
  node: string | null;
  reason: string;
  detail: string;
  exitCode?: number;
  attempt: number;
  restarts: number;
  nextRestartAt?: number;
  version: number;
}

export type EventBody =
  | { type: 'task.created'; task: TaskSummary }
  | {
      type: 'task.updated';
      task: TaskSummary;
      prevState: TaskState;
      /** state: observed state moved; desired: stop asked; detail: progress only; restart: re-queued. */
      change: 'state' | 'desired' | 'detail' | 'restart';
    }
  | { type: 'task.removed'; task: TaskSummary }
  | { type: 'node.registered'; node: NodeInfo }
  | { type: 'node.updated'; node: NodeInfo; prevStatus: NodeStatus; change: 'status' | 'availability' | 'registration' }
  | { type: 'kv.put'; key: string; version: number }
  | { type: 'kv.deleted'; key: string; version: number }
  | { type: 'cluster.leader'; leader: string; term: number };

export type ClusterEvent = EventBody & {
  /** Monotonic, replicated: the same event has the same seq on every manager. */
  seq: number;
  /** Log index of the command that caused it. */
  index: number;
  /** `at` of the command (null for commands without a timestamp). */
  at: number | null;
};
export type EventType = ClusterEvent['type'];

export type EventsPage =
  | { resetNeeded: false; events: ClusterEvent[]; lastSeq: number }
  /** `seq` fell out of the ring (or is from another history): re-list, then follow from lastSeq. */
  | { resetNeeded: true; oldestSeq: number; lastSeq: number };

export interface ClusterStateOptions {
  /** Events kept for `eventsSince` (default 10,000). */
  eventCapacity?: number;
}

export interface TaskFilter {
  state?: TaskState | readonly TaskState[];
  node?: string;
  desired?: DesiredState;
  name?: string;
}

// =============================================================================================
// Command validation (commands come from our own leader, but the log is still input)

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9._:-]*$/;
const idString = z
  .string()
  .min(1)
  .max(128)
  .regex(ID_RE, { error: "must be letters, digits, '.', '_', ':' or '-' (starting with a letter or digit)" });
const count = z.number().int().min(0);
const bytes = z.custom<Uint8Array>((v) => v instanceof Uint8Array, { error: 'must be a string or bytes' });

const resourcesSchema = z.strictObject({ cpu: count, memory: count });

const singleCommandSchemas = [
  z.strictObject({
    type: z.literal('kv.put'),
    key: z.string().min(1).max(MAX_KEY_LENGTH),
    value: z.union([z.string(), bytes], { error: 'must be a string or bytes' }),
    cas: count.optional(),
    requestId: z.string().min(1).max(128).optional(),
    scope: idString.optional(),
    at: count.optional(),
    quota: count.optional(),
  }),
  z.strictObject({
    type: z.literal('kv.del'),
    key: z.string().min(1).max(MAX_KEY_LENGTH),
    cas: count.optional(),
    requestId: z.string().min(1).max(128).optional(),
    scope: idString.optional(),
    at: count.optional(),
  }),
  z.strictObject({ type: z.literal('task.create'), id: idString, spec: z.custom<TaskSpec>(() => true), at: count, quota: count.optional() }),
  z.strictObject({ type: z.literal('task.stop'), id: idString, at: count, reason: z.string().max(1024).optional() }),
  z.strictObject({ type: z.literal('task.remove'), id: idString, at: count }),
  z.strictObject({
    type: z.literal('task.assign'),
    placements: z.array(z.strictObject({ taskId: idString, nodeId: idString })),
    term: count,
    at: count,
  }),
  z.strictObject({
    type: z.literal('task.report'),
    // Items are validated one by one when applied (see reportSchema).
    reports: z.array(z.custom<TaskReport>(() => true)).max(100_000),
  }),
  z.strictObject({
    type: z.literal('task.restart'),
    taskId: idString,
    term: count,
    at: count,
    force: z.boolean().optional(),
    reason: z.string().max(1024).optional(),
  }),
  z.strictObject({
    type: z.literal('task.pending'),
    items: z.array(z.strictObject({ taskId: idString, reason: z.string().max(1024) })).max(100_000),
    term: count,
    at: count,
  }),
  z.strictObject({
    type: z.literal('node.register'),
    node: z.strictObject({
      id: idString,
      addr: z.string().min(1).max(1024).optional(),
      labels: z.record(z.string().min(1).max(253), z.string().max(256)).optional(),
      resources: resourcesSchema,
      drivers: z.array(z.string().min(1).max(64)).max(16),
    }),
    at: count,
  }),
  z.strictObject({
    type: z.literal('node.heartbeat'),
    id: idString,
    status: z.enum(['ready', 'unknown', 'down']).optional(),
    reason: z.string().max(1024).optional(),
    at: count,
  }),
  z.strictObject({
    type: z.literal('node.status'),
    id: idString,
    status: z.enum(['ready', 'unknown', 'down']),
    reason: z.string().max(1024).optional(),
    term: count.optional(),
    at: count,
  }),
  z.strictObject({
    type: z.literal('node.setAvailability'),
    id: idString,
    availability: z.enum(['active', 'pause', 'drain']),
    at: count.optional(),
  }),
  z.strictObject({ type: z.literal('nodes.markUnknown'), term: count, at: count }),
  z.strictObject({ type: z.literal('node.down'), id: idString, reason: z.string().max(1024).optional(), term: count, at: count }),
  z.strictObject({ type: z.literal('cluster.leader'), leader: idString, term: count, at: count }),
] as const;

const singleCommandSchema = z.discriminatedUnion('type', singleCommandSchemas);

/** One worker report (validated per item, so one bad report does not reject its batch). */
const reportSchema = z.strictObject({
  taskId: idString,
  nodeId: idString,
  state: z.enum(['starting', 'running', 'succeeded', 'failed', 'stopped']),
  reason: z.string().max(4096).optional(),
  exitCode: z.number().int().optional(),
  detail: z.string().max(4096).optional(),
  at: count,
  attempt: z.number().int().min(1).optional(),
});
const _reportMatchesType: (r: z.output<typeof reportSchema>) => TaskReport = (r) => r;
void _reportMatchesType;
const batchSchema = z.strictObject({ type: z.literal('batch'), commands: z.array(z.unknown()).max(100_000) });

// Keep the hand-written types and the schemas in step (a compile error if they drift).
type SchemaCommand = z.output<typeof singleCommandSchema>;
const _schemaMatchesTypes: (c: SchemaCommand) => SingleCommand = (c) => c;
void _schemaMatchesTypes;

/**
 * Validate a single command. Returns the typed command or a bad_request ErrorInfo.
 * (The batch wrapper is checked separately: its items are validated one by one, so one bad
 * item does not poison the others.)
 */
function validateCommand(cmd: unknown, allowBatch: boolean): { cmd: Command } | { error: ErrorInfo } {
  if (typeof cmd !== 'object' || cmd === null || Array.isArray(cmd)) {
    const message = 'must be an object';
    return { error: errorInfo('bad_request', `Cannot apply command as the command ${message}`, [{ path: '', message }]) };
  }
  const type = (cmd as { type?: unknown }).type;
  if (typeof type !== 'string' || !(COMMAND_TYPES as readonly string[]).includes(type) || (type === 'batch' && !allowBatch)) {
    const allowed = COMMAND_TYPES.filter((t) => allowBatch || t !== 'batch');
    const message = `must be one of ${allowed.map((t) => `'${t}'`).join(', ')}${type === 'batch' ? ' (batches do not nest)' : ''}`;
    return { error: errorInfo('bad_request', `Cannot apply command as 'type' ${message}`, [{ path: 'type', message }]) };
  }
  const schema = type === 'batch' ? batchSchema : singleCommandSchema;
  const parsed = schema.safeParse(cmd, { error: issueMessage });
  if (!parsed.success) {
    return { error: badRequestFromZod(`apply ${type}`, parsed.error, 'the command').toInfo() };
  }
  return { cmd: parsed.data as Command };
}

// =============================================================================================
// Helpers

/**
 * Task specs re-validated on apply, memoised by their JSON text: a batch of replicas of one
 * spec is validated once. Pure (same input, same output); a miss only costs a parse.
 */
const specCache = new Map<string, TaskSpec>();
function parseSpecCached(input: unknown): TaskSpec {
  const key = JSON.stringify(input);
  const hit = specCache.get(key);
  if (hit !== undefined) return hit;
  const spec = parseTaskSpec(input, { allowHostMounts: true });
  if (specCache.size >= 256) specCache.delete(specCache.keys().next().value!);
  specCache.set(key, spec);
  return spec;
}

function fail(code: ErrorCode, message: string): ApplyResult<never> {
  return { ok: false, error: errorInfo(code, message) };
}

function summarize(t: Task): TaskSummary {
  const s: TaskSummary = {
    id: t.id,
    name: t.name,
    state: t.state,
    desired: t.desired,
    node: t.node,
    reason: t.reason,
    detail: t.detail,
    attempt: t.attempt,
    restarts: t.restarts,
    version: t.version,
  };
  if (t.exitCode !== undefined) s.exitCode = t.exitCode;
  if (t.nextRestartAt !== undefined) s.nextRestartAt = t.nextRestartAt;
  return s;
}

/** Fields a change may set; `exitCode`/`nextRestartAt` set to undefined are cleared. */
type TaskChanges = Partial<Omit<Task, 'id' | 'name' | 'spec' | 'createdAt' | 'createVersion'>>;

/**
 * A new version of a task (copy on write: objects handed out are never mutated). Built field
 * by field so every task object has the same shape.
 */
function changed(t: Task, c: TaskChanges): Task {
  return {
    id: t.id,
    name: t.name,
    spec: t.spec,
    desired: c.desired ?? t.desired,
    state: c.state ?? t.state,
    node: c.node !== undefined ? c.node : t.node,
    reason: c.reason ?? t.reason,
    detail: c.detail ?? t.detail,
    exitCode: 'exitCode' in c ? c.exitCode : t.exitCode,
    restarts: c.restarts ?? t.restarts,
    attempt: c.attempt ?? t.attempt,
    history: c.history ?? t.history,
    createdAt: t.createdAt,
    updatedAt: c.updatedAt ?? t.updatedAt,
    nextRestartAt: 'nextRestartAt' in c ? c.nextRestartAt : t.nextRestartAt,
    version: c.version ?? t.version,
    createVersion: t.createVersion,
  };
}

function pushHistory(history: readonly TaskHistoryEntry[], entry: TaskHistoryEntry): TaskHistoryEntry[] {
  const out = history.length >= HISTORY_LIMIT ? history.slice(history.length - HISTORY_LIMIT + 1) : history.slice();
  out.push(entry);
  return out;
}

/** Delay before restart number `restarts + 1`: backoffMs doubled per restart, capped. */
export function restartBackoff(policy: RestartPolicy, restarts: number): number {
  let delay = policy.backoffMs;
  for (let i = 0; i < restarts && delay > 0 && delay < policy.maxBackoffMs; i++) delay *= 2;
  return Math.min(delay, policy.maxBackoffMs);
}

/**
 * What the restart policy says about a task that just reached terminal `state` at `at`.
 * `on-failure` counts failed, lost, and stopped-while-desired-running as failures.
 */
export function planRestart(task: Task, state: TaskState, at: number): { nextRestartAt?: number; note: string } {
  if (task.desired !== 'running') return { note: '' };
  const p = task.spec.restart;
  const failure = state === 'failed' || state === 'lost' || state === 'stopped';
  if (p.policy === 'never') return { note: 'not restarting (restart policy never)' };
  if (p.policy === 'on-failure' && !failure) return { note: 'completed (restart policy on-failure)' };
  if (p.maxAttempts > 0 && task.restarts >= p.maxAttempts) {
    return { note: `restart limit reached (${task.restarts} of ${p.maxAttempts})` };
  }
  const delay = restartBackoff(p, task.restarts);
  const of = p.maxAttempts > 0 ? ` of ${p.maxAttempts}` : '';
  return { nextRestartAt: at + delay, note: `restarting in ${delay} ms (restart ${task.restarts + 1}${of})` };
}

function valueBytes(v: Uint8Array | string): number {
  return typeof v === 'string' ? utf8Length(v) : v.byteLength;
}

function kvEntryBytes(key: string, valueSize: number): number {
  return utf8Length(key) + valueSize + KV_ENTRY_OVERHEAD;
}

function utf8Length(s: string): number {
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

// ---------------------------------------------------------------------------------------------
// Canonical encoding (snapshots and log entries): JSON with sorted object keys; bytes become
// { "$bytes": base64 }. Sorting makes the bytes independent of how objects were built.

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const B64_INDEX = new Map<string, number>([...B64].map((c, i) => [c, i]));

export function toBase64(data: Uint8Array): string {
  // Node's encoder writes the same standard, padded alphabet; the loop below is the fallback.
  if (typeof Buffer !== 'undefined') return Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('base64');
  let out = '';
  let i = 0;
  for (; i + 2 < data.length; i += 3) {
    const n = (data[i]! << 16) | (data[i + 1]! << 8) | data[i + 2]!;
    out += B64[(n >> 18) & 63]! + B64[(n >> 12) & 63]! + B64[(n >> 6) & 63]! + B64[n & 63]!;
  }
  const rest = data.length - i;
  if (rest === 1) {
    const n = data[i]! << 16;
    out += B64[(n >> 18) & 63]! + B64[(n >> 12) & 63]! + '==';
  } else if (rest === 2) {
    const n = (data[i]! << 16) | (data[i + 1]! << 8);
    out += B64[(n >> 18) & 63]! + B64[(n >> 12) & 63]! + B64[(n >> 6) & 63]! + '=';
  }
  return out;
}

export function fromBase64(text: string): Uint8Array {
  // Canonical (padded, alphabet-only) text decodes natively; anything else takes the checking loop.
  if (typeof Buffer !== 'undefined' && text.length % 4 === 0 && /^[A-Za-z0-9+/]*={0,2}$/.test(text)) return new Uint8Array(Buffer.from(text, 'base64'));
  const clean = text.replace(/=+$/, '');
  const out = new Uint8Array(Math.floor((clean.length * 3) / 4));
  let bits = 0;
  let acc = 0;
  let j = 0;
  for (const ch of clean) {
    const v = B64_INDEX.get(ch);
    if (v === undefined) throw new FlotillaError('bad_request', `Cannot decode base64 as it contains '${ch}'`);
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[j++] = (acc >> bits) & 0xff;
    }
  }
  return out;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** JSON text with object keys sorted and Uint8Arrays as { "$bytes": base64 }. */
export function canonicalJson(value: unknown): string {
  // A function replacer sees the holder as `this`: read the original value, since JSON has
  // already applied toJSON (a Node Buffer would otherwise arrive as { type, data }).
  return JSON.stringify(value, function (this: Record<string, unknown>, key: string, v: unknown) {
    const original = this[key];
    if (original instanceof Uint8Array) return { $bytes: toBase64(original) };
    if (isPlainObject(v)) {
      const sorted: Record<string, unknown> = {};
      for (const k of Object.keys(v).sort()) sorted[k] = v[k];
      return sorted;
    }
    return v;
  });
}

function reviveBytes(v: unknown): Uint8Array | string | unknown {
  if (isPlainObject(v) && typeof v.$bytes === 'string' && Object.keys(v).length === 1) return fromBase64(v.$bytes);
  return v;
}

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder('utf-8', { fatal: true });

/**
 * Largest encoded command. A log entry reaches followers inside one 4 MiB transport frame: a
 * bigger entry could never be replicated, and every write after it would wait behind it. (A
 * value within the kv limits can still encode to several times its size: JSON escapes each
 * control character as six bytes.)
 */
export const MAX_COMMAND_BYTES = 3 * 1024 * 1024;

/** Encode a command for a log entry (canonical JSON, UTF-8). Throws `too_large` past MAX_COMMAND_BYTES. */
export function encodeCommand(cmd: Command): Uint8Array {
  const data = textEncoder.encode(canonicalJson(cmd));
  if (data.length > MAX_COMMAND_BYTES) {
    throw new FlotillaError(
      'too_large',
      `Cannot write ${cmd.type} as it encodes to ${formatBytes(data.length)}, more than the ${formatBytes(MAX_COMMAND_BYTES)} one log entry may hold`,
    );
  }
  return data;
}

/**
 * Decode a log entry. Throws `bad_request` on bytes that are not JSON; the result is NOT
 * validated (apply validates), so it is typed `unknown`.
 */
export function decodeCommand(data: Uint8Array): unknown {
  let parsed: unknown;
  try {
    parsed = JSON.parse(textDecoder.decode(data));
  } catch (err) {
    throw new FlotillaError('bad_request', 'Cannot decode command as the entry is not UTF-8 JSON', { cause: err });
  }
  const fix = (c: unknown): void => {
    if (!isPlainObject(c)) return;
    if (c.type === 'kv.put') c.value = reviveBytes(c.value);
    if (c.type === 'batch' && Array.isArray(c.commands)) c.commands.forEach(fix);
  };
  fix(parsed);
  return parsed;
}

// =============================================================================================
// The state machine

interface UsageAcc {
  cpu: number;
  memory: number;
  tasks: Set<string>;
  ports: Map<string, number>;
}

interface RequestRecord {
  index: number;
  result: ApplyResult;
  /** commandDigest of the command that produced `result` (absent in records of older versions). */
  digest?: string;
}

interface SnapshotData {
  format: 'flotilla-state';
  v: 1;
  appliedIndex: number;
  eventSeq: number;
  leader: LeaderInfo | null;
  nodes: NodeInfo[];
  tasks: Task[];
  /** Pending task ids in queue order. */
  pending: string[];
  kv: KvEntry[];
  /** Remembered kv request ids (`<scope> <id>`), oldest first. */
  requests: [string, RequestRecord][];
}

type EventListener = (event: ClusterEvent) => void;

export class ClusterState {
  private nodes = new Map<string, NodeInfo>();
  private tasks = new Map<string, Task>();
  /** Pending task ids in FIFO order (Map keeps insertion order). */
  private pending = new Map<string, true>();
  /** Per node: the non-terminal tasks placed on it and what they reserve. */
  private usageByNode = new Map<string, UsageAcc>();
  private kv = new Map<string, KvEntry>();
  /** Sum of `kvEntryBytes` over `kv`, kept on every write (for the state-size quota). */
  private kvBytes = 0;
  private requests = new Map<string, RequestRecord>();
  private leaderInfo: LeaderInfo | null = null;
  private applied = 0;

  // Events: a ring of the last `capacity` events; `eventSeq` is replicated (in snapshots).
  private eventSeq = 0;
  private readonly capacity: number;
  private ring: ClusterEvent[] = [];
  private ringStart = 0;
  private outbox: ClusterEvent[] = [];
  private listeners = new Set<EventListener>();
  private resetListeners = new Set<() => void>();
  /** Meta of the entry being applied (for events and versions). */
  private cur: ApplyMeta & { at: number | null } = { index: 0, term: 0, at: null };

  constructor(opts: ClusterStateOptions = {}) {
    this.capacity = Math.max(1, Math.floor(opts.eventCapacity ?? DEFAULT_EVENT_CAPACITY));
  }

  // -------------------------------------------------------------------------------------------
  // Applying

  /** Index of the last log entry applied (or skipped via `markApplied`). */
  get appliedIndex(): number {
    return this.applied;
  }

  /** The last leader announced through `cluster.leader`. */
  get leader(): LeaderInfo | null {
    return this.leaderInfo;
  }

  /**
   * Apply one committed command. Never throws for a bad command; a failed command changes
   * nothing but `appliedIndex`. An index at or below `appliedIndex` is refused (and does not
   * move it): that entry's effects are already in the state.
   */
  apply(cmd: Command, meta: ApplyMeta): ApplyResult {
    if (!Number.isSafeInteger(meta.index) || meta.index < 1 || !Number.isSafeInteger(meta.term) || meta.term < 0) {
      return fail('internal', `Cannot apply entry as its index ${meta.index} / term ${meta.term} is invalid`);
    }
    if (meta.index <= this.applied) {
      return fail('conflict', `Cannot apply entry ${meta.index} as entries up to ${this.applied} are already applied`);
    }
    this.applied = meta.index;
    let result: ApplyResult;
    try {
      result = this.applyAny(cmd, meta);
    } catch (err) {
      // A bug, not a bad command: every replica hits the same one, so they stay identical.
      result = fail('internal', `Cannot apply ${String((cmd as { type?: unknown })?.type)} as the state machine failed: ${err instanceof Error ? err.message : String(err)}`);
    }
    this.flushEvents();
    return result;
  }

  /** Decode and apply a log entry's data (see `encodeCommand`). Never throws. */
  applyEntry(data: Uint8Array, meta: ApplyMeta): ApplyResult {
    let cmd: unknown;
    try {
      cmd = decodeCommand(data);
    } catch (err) {
      if (meta.index > this.applied) this.applied = meta.index;
      return { ok: false, error: FlotillaError.is(err) ? err.toInfo() : errorInfo('bad_request', String(err)) };
    }
    return this.apply(cmd as Command, meta);
  }

  /** Record an entry that carries no command (a leader's no-op, a configuration change). */
  markApplied(index: number): void {
    if (Number.isSafeInteger(index) && index > this.applied) this.applied = index;
  }

  private applyAny(raw: unknown, meta: ApplyMeta): ApplyResult {
    const v = validateCommand(raw, true);
    if ('error' in v) return { ok: false, error: v.error };
    const cmd = v.cmd;
    if (cmd.type !== 'batch') return this.applySingle(cmd, meta);
    const results: ApplyResult[] = [];
    for (const item of cmd.commands) {
      const iv = validateCommand(item, false);
      results.push('error' in iv ? { ok: false, error: iv.error } : this.applySingle(iv.cmd as SingleCommand, meta));
    }
    return { ok: true, value: results };
  }

  private applySingle(cmd: SingleCommand, meta: ApplyMeta): ApplyResult {
    const decided = (cmd as { term?: number }).term;
    if (decided !== undefined) {
      if (decided !== meta.term) {
        return {
          ok: false,
          fenced: true,
          error: errorInfo(
            'not_leader',
            `Cannot apply ${cmd.type} as it was decided in term ${decided} but committed in term ${meta.term} (fenced: its leader was deposed)`,
          ),
        };
      }
    }
    this.cur = { index: meta.index, term: meta.term, at: 'at' in cmd && cmd.at !== undefined ? cmd.at : null };
    switch (cmd.type) {
      case 'kv.put':
        return this.kvPut(cmd);
      case 'kv.del':
        return this.kvDel(cmd);
      case 'task.create':
        return this.taskCreate(cmd);
      case 'task.stop':
        return this.taskStop(cmd);
      case 'task.remove':
        return this.taskRemove(cmd);
      case 'task.assign':
        return this.taskAssign(cmd);
      case 'task.report':
        return this.taskReport(cmd);
      case 'task.restart':
        return this.taskRestart(cmd);
      case 'task.pending':
        return this.taskPending(cmd);
      case 'node.register':
        return this.nodeRegister(cmd);
      case 'node.heartbeat':
        return this.setNodeStatus(cmd.id, cmd.status ?? 'ready', cmd.reason, cmd.at, true);
      case 'node.status':
        return this.setNodeStatus(cmd.id, cmd.status, cmd.reason, cmd.at, false);
      case 'node.setAvailability':
        return this.nodeSetAvailability(cmd);
      case 'nodes.markUnknown':
        return this.nodesMarkUnknown(cmd);
      case 'node.down':
        return this.nodeDown(cmd.id, cmd.reason ?? 'declared down', cmd.at, false);
      case 'cluster.leader':
        return this.clusterLeader(cmd);
      default: {
        const never: never = cmd;
        return fail('bad_request', `Cannot apply ${String((never as { type?: unknown }).type)} as it is not a known command`);
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // KV

  private kvPut(cmd: KvPutCommand): ApplyResult<KvWriteResult> {
    const seen = this.seenRequest(cmd);
    if (seen !== undefined) return seen as ApplyResult<KvWriteResult>;
    const size = typeof cmd.value === 'string' ? utf8Length(cmd.value) : cmd.value.byteLength;
    if (size > MAX_VALUE_BYTES) {
      return fail('too_large', `Cannot put '${cmd.key}' as its value is ${formatBytes(size)}, more than the ${formatBytes(MAX_VALUE_BYTES)} limit`);
    }
    const cur = this.kv.get(cmd.key);
    const conflict = this.casConflict('put', cmd.key, cur, cmd.cas);
    if (conflict !== undefined) return conflict;
    const growth = kvEntryBytes(cmd.key, size) - (cur === undefined ? 0 : kvEntryBytes(cur.key, valueBytes(cur.value)));
    const overQuota = this.quotaRefusal(`put '${cmd.key}'`, growth, cmd.quota);
    if (overQuota !== undefined) return overQuota;
    this.kvBytes += growth;
    const index = this.cur.index;
    const value = typeof cmd.value === 'string' ? cmd.value : new Uint8Array(cmd.value); // own copy
    const entry: KvEntry = { key: cmd.key, value, version: index, createVersion: cur?.createVersion ?? index };
    this.kv.set(cmd.key, entry);
    this.emit({ type: 'kv.put', key: cmd.key, version: index });
    const result: ApplyResult<KvWriteResult> = { ok: true, value: { key: cmd.key, version: index, createVersion: entry.createVersion } };
    this.remember(cmd, result);
    return result;
  }

  private kvDel(cmd: KvDelCommand): ApplyResult<KvDelResult> {
    const seen = this.seenRequest(cmd);
    if (seen !== undefined) return seen as ApplyResult<KvDelResult>;
    const cur = this.kv.get(cmd.key);
    const conflict = this.casConflict('delete', cmd.key, cur, cmd.cas);
    if (conflict !== undefined) return conflict;
    if (cur === undefined) return { ok: true, value: { deleted: false, key: cmd.key } };
    this.kv.delete(cmd.key);
    this.kvBytes -= kvEntryBytes(cur.key, valueBytes(cur.value));
    this.emit({ type: 'kv.deleted', key: cmd.key, version: this.cur.index });
    const result: ApplyResult<KvDelResult> = { ok: true, value: { deleted: true, key: cmd.key, version: cur.version } };
    this.remember(cmd, result);
    return result;
  }

  private casConflict(verb: string, key: string, cur: KvEntry | undefined, cas: number | undefined): ApplyResult<never> | undefined {
    if (cas === undefined) return undefined;
    const version = cur?.version ?? 0;
    if (version === cas) return undefined;
    const why =
      cur === undefined ? 'it does not exist' : cas === 0 ? `it already exists (version ${version})` : `its version is ${version}, not ${cas}`;
    return fail('conflict', `Cannot ${verb} '${key}' as ${why}`);
  }

  /**
   * Estimated size of the replicated state (kv keys and values plus a per-entry overhead, and
   * a fixed estimate per task): what the state-size quota (`--quota-bytes`) limits. Every
   * replica computes the same number from the same entries.
   */
  stateBytes(): number {
    return this.kvBytes + this.tasks.size * TASK_BYTES_ESTIMATE;
  }

  /**
   * The `quota_exceeded` error `cmd` would get if applied now (undefined when it fits): lets the
   * leader refuse it before proposing. Apply checks again, with the same rule.
   */
  quotaCheck(cmd: KvPutCommand | TaskCreateCommand): ErrorInfo | undefined {
    let r: ApplyResult<never> | undefined;
    if (cmd.type === 'kv.put') {
      const cur = this.kv.get(cmd.key);
      const growth = kvEntryBytes(cmd.key, valueBytes(cmd.value)) - (cur === undefined ? 0 : kvEntryBytes(cur.key, valueBytes(cur.value)));
      r = this.quotaRefusal(`put '${cmd.key}'`, growth, cmd.quota);
    } else if (!this.tasks.has(cmd.id)) r = this.quotaRefusal(`create task '${cmd.id}'`, TASK_BYTES_ESTIMATE, cmd.quota);
    return r !== undefined && !r.ok ? r.error : undefined;
  }

  /** A `quota_exceeded` failure when a write growing the state by `growth` would pass `quota`. */
  private quotaRefusal(what: string, growth: number, quota: number | undefined): ApplyResult<never> | undefined {
    if (quota === undefined || growth <= 0) return undefined;
    const now = this.stateBytes();
    if (now + growth <= quota) return undefined;
    return fail(
      'quota_exceeded',
      `Cannot ${what} as the replicated state would grow to ${formatBytes(now + growth)}, past the ${formatBytes(quota)} quota (--quota-bytes); delete keys or tasks to make room`,
    );
  }

  /**
   * The answer for a write whose request id was seen before (same scope): the first result if
   * it is the same command (a retry), a conflict if the id was used for a different one;
   * undefined = a new request.
   */
  private seenRequest(cmd: KvPutCommand | KvDelCommand): ApplyResult | undefined {
    if (cmd.requestId === undefined) return undefined;
    const seen = this.requests.get(requestKey(cmd.scope, cmd.requestId));
    if (seen === undefined) return undefined;
    if (seen.digest === undefined || seen.digest === commandDigest(cmd)) return seen.result;
    const verb = cmd.type === 'kv.put' ? 'put' : 'delete';
    const first = seen.result.ok ? (seen.result.value as { key?: unknown }).key : undefined;
    const was = typeof first === 'string' ? ` (a write of '${first}' at index ${seen.index})` : ` (at index ${seen.index})`;
    return fail(
      'conflict',
      `Cannot ${verb} '${cmd.key}' as request id '${cmd.requestId}' was already used for a different write${was}; send a new x-request-id for every new write (reuse one only to retry the same write)`,
    );
  }

  /** Remember a successful kv result under its (scoped) request id (bounded, FIFO). */
  private remember(cmd: KvPutCommand | KvDelCommand, result: ApplyResult): void {
    if (cmd.requestId === undefined) return;
    this.requests.set(requestKey(cmd.scope, cmd.requestId), { index: this.cur.index, result, digest: commandDigest(cmd) });
    while (this.requests.size > REQUEST_MEMORY) {
      const oldest = this.requests.keys().next().value as string;
      this.requests.delete(oldest);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Tasks

  private taskCreate(cmd: TaskCreateCommand): ApplyResult<Task> {
    if (this.tasks.has(cmd.id)) {
      return fail('conflict', `Cannot create task '${cmd.id}' as a task with that id already exists`);
    }
    const overQuota = this.quotaRefusal(`create task '${cmd.id}'`, TASK_BYTES_ESTIMATE, cmd.quota);
    if (overQuota !== undefined) return overQuota;
    let spec: TaskSpec;
    try {
      spec = parseSpecCached(cmd.spec);
    } catch (err) {
      return { ok: false, error: FlotillaError.is(err) ? err.toInfo() : errorInfo('bad_request', String(err)) };
    }
    const index = this.cur.index;
    const reason = 'waiting for a node';
    const task: Task = {
      id: cmd.id,
      name: spec.name,
      spec,
      desired: 'running',
      state: 'pending',
      node: null,
      reason,
      detail: '',
      restarts: 0,
      attempt: 1,
      history: [{ state: 'pending', reason, at: cmd.at, node: null, attempt: 1 }],
      createdAt: cmd.at,
      updatedAt: cmd.at,
      version: index,
      createVersion: index,
    };
    this.writeTask(task, undefined);
    this.emit({ type: 'task.created', task: summarize(task) });
    return { ok: true, value: task };
  }

  private taskStop(cmd: TaskStopCommand): ApplyResult<Task> {
    const task = this.tasks.get(cmd.id);
    if (task === undefined) return fail('not_found', `Cannot stop task '${cmd.id}' as it does not exist`);
    if (task.desired === 'shutdown') return { ok: true, value: task }; // already asked: no change
    const reason = cmd.reason ?? 'stop requested';
    if (task.state === 'pending') {
      // Never placed: nothing to tell a worker, it is stopped now.
      this.transition(task, 'stopped', { reason, at: cmd.at, desired: 'shutdown' });
    } else {
      // Placed (or already terminal): record the wish; the worker stops it and reports
      // `stopped`. A pending restart is cancelled.
      const next = changed(task, {
        desired: 'shutdown',
        detail: isTerminal(task.state) ? '' : reason,
        nextRestartAt: undefined,
        updatedAt: cmd.at,
        version: this.cur.index,
      });
      this.writeTask(next, task);
      this.emit({ type: 'task.updated', task: summarize(next), prevState: task.state, change: 'desired' });
    }
    return { ok: true, value: this.tasks.get(cmd.id)! };
  }

  private taskRemove(cmd: TaskRemoveCommand): ApplyResult<{ removed: string }> {
    const task = this.tasks.get(cmd.id);
    if (task === undefined) return fail('not_found', `Cannot remove task '${cmd.id}' as it does not exist`);
    if (!isTerminal(task.state)) {
      return fail('conflict', `Cannot remove task '${cmd.id}' as it is ${task.state}; stop it first`);
    }
    this.tasks.delete(task.id);
    this.pending.delete(task.id);
    this.emit({ type: 'task.removed', task: summarize(task) });
    return { ok: true, value: { removed: task.id } };
  }

  private taskAssign(cmd: TaskAssignCommand): ApplyResult<AssignResult> {
    const assigned: Placement[] = [];
    const skipped: AssignResult['skipped'] = [];
    for (const p of cmd.placements) {
      const why = this.placementProblem(p);
      if (why !== undefined) {
        skipped.push({ taskId: p.taskId, nodeId: p.nodeId, reason: why });
        continue;
      }
      const task = this.tasks.get(p.taskId)!;
      this.transition(task, 'assigned', { reason: `scheduled on ${p.nodeId}`, at: cmd.at, node: p.nodeId });
      assigned.push({ taskId: p.taskId, nodeId: p.nodeId });
    }
    return { ok: true, value: { assigned, skipped } };
  }

  /** Why a placement cannot be applied now, or undefined if it can. */
  private placementProblem(p: Placement): string | undefined {
    const task = this.tasks.get(p.taskId);
    if (task === undefined) return 'no such task';
    if (task.desired !== 'running') return 'task is being stopped';
    if (task.state !== 'pending') return `task is ${task.state}${task.node !== null ? ` on ${task.node}` : ''}`;
    const node = this.nodes.get(p.nodeId);
    if (node === undefined) return 'no such node';
    if (node.status !== 'ready') return `node is ${node.status}`;
    if (node.availability !== 'active') return `node availability is ${node.availability}`;
    if (!node.drivers.includes(task.spec.driver)) return `node has no ${task.spec.driver} driver`;
    for (const text of task.spec.constraints) {
      const c = parseConstraint(text);
      if (c !== undefined && !matchConstraint(c, node)) return `node does not satisfy constraint ${formatConstraint(c)}`;
    }
    const u = this.usageByNode.get(node.id);
    const { cpu, memory } = task.spec.resources;
    const usedCpu = u?.cpu ?? 0;
    const usedMem = u?.memory ?? 0;
    if (usedCpu + cpu > node.resources.cpu) {
      return `insufficient cpu: needs ${formatCpu(cpu)}, free ${formatCpu(Math.max(0, node.resources.cpu - usedCpu))}`;
    }
    if (usedMem + memory > node.resources.memory) {
      return `insufficient memory: needs ${formatBytes(memory)}, free ${formatBytes(Math.max(0, node.resources.memory - usedMem))}`;
    }
    for (const port of specHostPorts(task.spec)) {
      if ((u?.ports.get(port) ?? 0) > 0) return `host port ${port} is in use on the node`;
    }
    return undefined;
  }

  private taskReport(cmd: TaskReportCommand): ApplyResult<ReportResult> {
    let applied = 0;
    const ignored: ReportResult['ignored'] = [];
    for (const item of cmd.reports) {
      const parsed = reportSchema.safeParse(item, { error: issueMessage });
      if (!parsed.success) {
        const raw = (typeof item === 'object' && item !== null ? item : {}) as { taskId?: unknown; nodeId?: unknown };
        const why = badRequestFromZod('apply report', parsed.error, 'the report').details![0]!;
        ignored.push({
          taskId: typeof raw.taskId === 'string' ? raw.taskId : '',
          nodeId: typeof raw.nodeId === 'string' ? raw.nodeId : '',
          reason: `invalid report: '${why.path}' ${why.message}`,
        });
        continue;
      }
      const r = parsed.data;
      this.cur.at = r.at;
      const ignore = (reason: string): void => {
        ignored.push({ taskId: r.taskId, nodeId: r.nodeId, reason });
      };
      const task = this.tasks.get(r.taskId);
      if (task === undefined) {
        ignore('no such task');
        continue;
      }
      if (task.node !== r.nodeId) {
        ignore(task.node === null ? 'task is not assigned to a node' : `task is assigned to ${task.node}`);
        continue;
      }
      if (r.attempt !== undefined && r.attempt !== task.attempt) {
        ignore(`report is for attempt ${r.attempt}, task is on attempt ${task.attempt}`);
        continue;
      }
      if (isTerminal(task.state)) {
        ignore(`task is already ${task.state}`);
        continue;
      }
      if (STATE_RANK[r.state] < STATE_RANK[task.state]) {
        ignore(`task is already ${task.state}`);
        continue;
      }
      if (r.state === task.state) {
        if (r.detail !== undefined && r.detail !== task.detail) {
          const next = changed(task, { detail: r.detail, updatedAt: r.at, version: this.cur.index });
          this.writeTask(next, task);
          this.emit({ type: 'task.updated', task: summarize(next), prevState: task.state, change: 'detail' });
          applied++;
        } else {
          ignore('no change');
        }
        continue;
      }
      this.transition(task, r.state, {
        reason: r.reason ?? defaultReason(r.state, r.exitCode),
        at: r.at,
        exitCode: r.exitCode,
        detail: r.detail,
      });
      applied++;
    }
    return { ok: true, value: { applied, ignored } };
  }

  private taskRestart(cmd: TaskRestartCommand): ApplyResult<Task> {
    const task = this.tasks.get(cmd.taskId);
    const force = cmd.force === true;
    if (task === undefined) return fail('not_found', `Cannot restart task '${cmd.taskId}' as it does not exist`);
    if (task.desired !== 'running') return fail('conflict', `Cannot restart task '${cmd.taskId}' as it was stopped`);
    if (task.state === 'pending') return fail('conflict', `Cannot restart task '${cmd.taskId}' as it is pending`);
    const live = !isTerminal(task.state);
    if (live && !force) return fail('conflict', `Cannot restart task '${cmd.taskId}' as it is ${task.state}`);
    if (!force && task.nextRestartAt === undefined) {
      return fail('conflict', `Cannot restart task '${cmd.taskId}' as its restart policy allows no restart (${task.detail || task.reason})`);
    }
    const restarts = task.restarts + (force ? 0 : 1);
    const attempt = task.attempt + 1;
    const reason =
      cmd.reason ?? (force ? `restarted by request ${live ? 'while' : 'after'} ${task.state}` : `restart ${restarts} after ${task.state}`);
    // A live task's old attempt keeps running until its worker sees it is no longer assigned
    // there; its reports are then ignored (node and attempt no longer match).
    const next = changed(task, {
      state: 'pending',
      node: null,
      reason,
      detail: '',
      exitCode: undefined,
      nextRestartAt: undefined,
      restarts,
      attempt,
      history: pushHistory(task.history, { state: 'pending', reason, at: cmd.at, node: null, attempt }),
      updatedAt: cmd.at,
      version: this.cur.index,
    });
    this.writeTask(next, task);
    this.emit({ type: 'task.updated', task: summarize(next), prevState: task.state, change: 'restart' });
    return { ok: true, value: next };
  }

  private taskPending(cmd: TaskPendingCommand): ApplyResult<PendingResult> {
    let updated = 0;
    const skipped: PendingResult['skipped'] = [];
    for (const item of cmd.items) {
      const task = this.tasks.get(item.taskId);
      if (task === undefined) {
        skipped.push({ taskId: item.taskId, reason: 'no such task' });
        continue;
      }
      if (task.state !== 'pending') {
        skipped.push({ taskId: item.taskId, reason: `task is ${task.state}` });
        continue;
      }
      if (task.reason === item.reason) continue;
      // The reason of a waiting task, not a state change: no history entry.
      const next = changed(task, { reason: item.reason, updatedAt: cmd.at, version: this.cur.index });
      this.writeTask(next, task);
      this.emit({ type: 'task.updated', task: summarize(next), prevState: task.state, change: 'detail' });
      updated++;
    }
    return { ok: true, value: { updated, skipped } };
  }

  /**
   * Move a task to a new observed state (the one place state changes are made): history,
   * restart plan on terminal states, indexes, event.
   */
  private transition(
    task: Task,
    state: TaskState,
    o: { reason: string; at: number; node?: string; exitCode?: number; detail?: string; desired?: DesiredState },
  ): Task {
    const node = o.node ?? task.node;
    const desired = o.desired ?? task.desired;
    const entry: TaskHistoryEntry = { state, reason: o.reason, at: o.at, node, attempt: task.attempt };
    if (o.exitCode !== undefined) entry.exitCode = o.exitCode;
    const next = changed(task, {
      state,
      desired,
      node,
      reason: o.reason,
      detail: o.detail ?? '',
      exitCode: o.exitCode,
      nextRestartAt: undefined,
      updatedAt: o.at,
      version: this.cur.index,
    });
    next.history = pushHistory(task.history, entry);
    if (isTerminal(state)) {
      const plan = planRestart(next, state, o.at);
      if (plan.nextRestartAt !== undefined) next.nextRestartAt = plan.nextRestartAt;
      if (plan.note !== '') next.detail = plan.note;
    }
    this.writeTask(next, task);
    this.emit({ type: 'task.updated', task: summarize(next), prevState: task.state, change: 'state' });
    return next;
  }

  /** Store a task version and keep the pending queue and per-node usage in step. */
  private writeTask(next: Task, prev: Task | undefined): void {
    const wasActive = prev !== undefined && prev.node !== null && !isTerminal(prev.state);
    const isActive = next.node !== null && !isTerminal(next.state);
    if (wasActive) this.release(prev);
    if (isActive) this.reserve(next);
    const wasPending = prev !== undefined && prev.state === 'pending';
    const isPending = next.state === 'pending';
    if (wasPending && !isPending) this.pending.delete(next.id);
    if (!wasPending && isPending) this.pending.set(next.id, true);
    this.tasks.set(next.id, next);
  }

  private usageAcc(nodeId: string): UsageAcc {
    let u = this.usageByNode.get(nodeId);
    if (u === undefined) {
      u = { cpu: 0, memory: 0, tasks: new Set(), ports: new Map() };
      this.usageByNode.set(nodeId, u);
    }
    return u;
  }

  private reserve(task: Task): void {
    const u = this.usageAcc(task.node!);
    u.cpu += task.spec.resources.cpu;
    u.memory += task.spec.resources.memory;
    u.tasks.add(task.id);
    for (const port of specHostPorts(task.spec)) u.ports.set(port, (u.ports.get(port) ?? 0) + 1);
  }

  private release(task: Task): void {
    const u = this.usageAcc(task.node!);
    u.cpu -= task.spec.resources.cpu;
    u.memory -= task.spec.resources.memory;
    u.tasks.delete(task.id);
    for (const port of specHostPorts(task.spec)) {
      const n = (u.ports.get(port) ?? 0) - 1;
      if (n > 0) u.ports.set(port, n);
      else u.ports.delete(port);
    }
    if (u.tasks.size === 0) this.usageByNode.delete(task.node!);
  }

  // -------------------------------------------------------------------------------------------
  // Nodes

  private nodeRegister(cmd: NodeRegisterCommand): ApplyResult<NodeInfo> {
    const reg = cmd.node;
    const prev = this.nodes.get(reg.id);
    const node: NodeInfo = {
      id: reg.id,
      labels: { ...(reg.labels ?? {}) },
      resources: { cpu: reg.resources.cpu, memory: reg.resources.memory },
      drivers: [...reg.drivers],
      availability: prev?.availability ?? 'active',
      status: 'ready',
      statusReason: '',
      lastHeartbeat: cmd.at,
      registeredAt: prev?.registeredAt ?? cmd.at,
      version: this.cur.index,
    };
    if (reg.addr !== undefined) node.addr = reg.addr;
    this.nodes.set(node.id, node);
    if (prev === undefined) this.emit({ type: 'node.registered', node });
    else this.emit({ type: 'node.updated', node, prevStatus: prev.status, change: 'registration' });
    return { ok: true, value: node };
  }

  /** node.heartbeat (`heartbeat`: also records lastHeartbeat) and node.status. */
  private setNodeStatus(id: string, status: NodeStatus, reason: string | undefined, at: number, heartbeat: boolean): ApplyResult<unknown> {
    if (status === 'down') return this.nodeDown(id, reason ?? (heartbeat ? 'left the cluster' : 'declared down'), at, heartbeat);
    const prev = this.nodes.get(id);
    if (prev === undefined) {
      return fail('not_found', heartbeat ? `Cannot record a heartbeat from node '${id}' as it is not registered` : `Cannot set the status of node '${id}' as it is not registered`);
    }
    if (prev.status === status && !heartbeat) return { ok: true, value: prev };
    const node: NodeInfo = {
      ...prev,
      status,
      statusReason: status === 'ready' ? '' : reason ?? '',
      lastHeartbeat: heartbeat ? at : prev.lastHeartbeat,
      version: this.cur.index,
    };
    this.nodes.set(id, node);
    if (prev.status !== status) this.emit({ type: 'node.updated', node, prevStatus: prev.status, change: 'status' });
    return { ok: true, value: node };
  }

  private nodeSetAvailability(cmd: NodeSetAvailabilityCommand): ApplyResult<NodeInfo> {
    const prev = this.nodes.get(cmd.id);
    if (prev === undefined) return fail('not_found', `Cannot set the availability of node '${cmd.id}' as it is not registered`);
    if (prev.availability === cmd.availability) return { ok: true, value: prev };
    const node: NodeInfo = { ...prev, availability: cmd.availability, version: this.cur.index };
    this.nodes.set(node.id, node);
    this.emit({ type: 'node.updated', node, prevStatus: prev.status, change: 'availability' });
    return { ok: true, value: node };
  }

  private nodesMarkUnknown(cmd: NodesMarkUnknownCommand): ApplyResult<{ nodes: string[] }> {
    const marked: string[] = [];
    for (const id of [...this.nodes.keys()].sort()) {
      const prev = this.nodes.get(id)!;
      if (prev.status !== 'ready') continue;
      const node: NodeInfo = { ...prev, status: 'unknown', statusReason: `new leader in term ${cmd.term}: waiting for a heartbeat`, version: this.cur.index };
      this.nodes.set(id, node);
      this.emit({ type: 'node.updated', node, prevStatus: prev.status, change: 'status' });
      marked.push(id);
    }
    return { ok: true, value: { nodes: marked } };
  }

  private nodeDown(id: string, reason: string, at: number, heartbeat: boolean): ApplyResult<{ node: NodeInfo; lost: string[] }> {
    const prev = this.nodes.get(id);
    if (prev === undefined) return fail('not_found', `Cannot mark node '${id}' down as it is not registered`);
    let node = prev;
    if (prev.status !== 'down' || heartbeat) {
      node = { ...prev, status: 'down', statusReason: reason, lastHeartbeat: heartbeat ? at : prev.lastHeartbeat, version: this.cur.index };
      this.nodes.set(id, node);
      if (prev.status !== 'down') this.emit({ type: 'node.updated', node, prevStatus: prev.status, change: 'status' });
    }
    const lost: string[] = [];
    for (const taskId of [...(this.usageByNode.get(id)?.tasks ?? [])].sort()) {
      const task = this.tasks.get(taskId)!;
      this.transition(task, 'lost', { reason: `node ${id} is down (${reason})`, at });
      lost.push(taskId);
    }
    return { ok: true, value: { node, lost } };
  }

  private clusterLeader(cmd: ClusterLeaderCommand): ApplyResult<LeaderInfo> {
    this.leaderInfo = { id: cmd.leader, term: cmd.term, at: cmd.at };
    this.emit({ type: 'cluster.leader', leader: cmd.leader, term: cmd.term });
    return { ok: true, value: this.leaderInfo };
  }

  // -------------------------------------------------------------------------------------------
  // Queries (returned objects are never mutated by the state: it copies on write)

  getTask(id: string): Task | undefined {
    return this.tasks.get(id);
  }

  /** Tasks sorted by id, optionally filtered. */
  listTasks(filter: TaskFilter = {}): Task[] {
    const states = filter.state === undefined ? undefined : new Set<TaskState>(typeof filter.state === 'string' ? [filter.state] : filter.state);
    const out: Task[] = [];
    for (const t of this.tasks.values()) {
      if (states !== undefined && !states.has(t.state)) continue;
      if (filter.node !== undefined && t.node !== filter.node) continue;
      if (filter.desired !== undefined && t.desired !== filter.desired) continue;
      if (filter.name !== undefined && t.name !== filter.name) continue;
      out.push(t);
    }
    return out.sort(byId);
  }

  /** Pending tasks in queue order (oldest first): what the scheduler places. */
  pendingTasks(): Task[] {
    return [...this.pending.keys()].map((id) => this.tasks.get(id)!);
  }

  /** Non-terminal tasks placed on a node (what its worker should run or stop), sorted by id. */
  tasksOnNode(nodeId: string): Task[] {
    const ids = this.usageByNode.get(nodeId)?.tasks;
    return ids === undefined ? [] : [...ids].sort().map((id) => this.tasks.get(id)!);
  }

  /** Terminal tasks the restart policy will restart, soonest first (for the restart loop). */
  tasksAwaitingRestart(): Task[] {
    const out: Task[] = [];
    for (const t of this.tasks.values()) if (t.nextRestartAt !== undefined && t.desired === 'running' && isTerminal(t.state)) out.push(t);
    return out.sort((a, b) => a.nextRestartAt! - b.nextRestartAt! || byId(a, b));
  }

  getNode(id: string): NodeInfo | undefined {
    return this.nodes.get(id);
  }

  /** Nodes sorted by id. */
  listNodes(): NodeInfo[] {
    return [...this.nodes.values()].sort(byId);
  }

  kvGet(key: string): KvEntry | undefined {
    return this.kv.get(key);
  }

  /** Entries whose key starts with `prefix`, sorted by key. */
  kvList(prefix = ''): KvEntry[] {
    const out: KvEntry[] = [];
    for (const e of this.kv.values()) if (e.key.startsWith(prefix)) out.push(e);
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  /** Resources reserved on a node by its non-terminal tasks. */
  nodeUsage(nodeId: string): NodeUsage {
    const u = this.usageByNode.get(nodeId);
    if (u === undefined) return { cpu: 0, memory: 0, tasks: 0, hostPorts: [] };
    return { cpu: u.cpu, memory: u.memory, tasks: u.tasks.size, hostPorts: [...u.ports.keys()].sort() };
  }

  /** `nodeUsage` for every registered node (the scheduler's input). */
  usage(): Map<string, NodeUsage> {
    const out = new Map<string, NodeUsage>();
    for (const id of [...this.nodes.keys()].sort()) out.set(id, this.nodeUsage(id));
    return out;
  }

  // -------------------------------------------------------------------------------------------
  // Events

  /** The seq of the newest event (0 before any). */
  get lastEventSeq(): number {
    return this.eventSeq;
  }

  /**
   * Events after `seq` (oldest first, at most `limit`). If `seq` is older than the ring
   * holds, or newer than any event, answers `{ resetNeeded: true }`: the watcher should
   * re-list and follow from `lastSeq`.
   */
  eventsSince(seq: number, limit = Infinity): EventsPage {
    const oldestSeq = this.eventSeq - this.ring.length + 1;
    if (seq > this.eventSeq || seq < oldestSeq - 1) {
      return { resetNeeded: true, oldestSeq, lastSeq: this.eventSeq };
    }
    const events: ClusterEvent[] = [];
    for (let s = seq + 1; s <= this.eventSeq && events.length < limit; s++) {
      events.push(this.ring[(this.ringStart + (s - oldestSeq)) % this.ring.length]!);
    }
    return { resetNeeded: false, events, lastSeq: this.eventSeq };
  }

  /** Live events, delivered after each applied command. Returns an unsubscribe function. */
  onEvent(cb: EventListener): () => void {
    this.listeners.add(cb);
    return () => this.listeners.delete(cb);
  }

  /** Called after `restore()` replaced the state (watchers must re-list). */
  onReset(cb: () => void): () => void {
    this.resetListeners.add(cb);
    return () => this.resetListeners.delete(cb);
  }

  private emit(body: EventBody): void {
    this.eventSeq++;
    // `body` is always a fresh literal built by the caller: complete it in place.
    const event = body as ClusterEvent;
    event.seq = this.eventSeq;
    event.index = this.cur.index;
    event.at = this.cur.at;
    if (this.ring.length < this.capacity) {
      this.ring.push(event);
    } else {
      this.ring[this.ringStart] = event;
      this.ringStart = (this.ringStart + 1) % this.capacity;
    }
    this.outbox.push(event);
  }

  private flushEvents(): void {
    if (this.outbox.length === 0) return;
    const batch = this.outbox;
    this.outbox = [];
    for (const event of batch) {
      for (const cb of this.listeners) {
        try {
          cb(event);
        } catch {
          // A listener's failure must not affect the state machine.
        }
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Snapshots

  /**
   * Canonical bytes of the whole replicated state (events ring excluded; its seq included).
   * Synchronous: for small states, tests and offline tools. A manager uses `snapshotAsync`.
   */
  snapshot(): Uint8Array {
    const w = new SnapshotWriter(this.captureImage(), WHOLE);
    while (!w.step(Infinity));
    return w.bytes();
  }

  /**
   * The same bytes as `snapshot()`, of the state as it is at the call (captured synchronously:
   * arrays of the immutable entry objects), encoded in slices of about `sliceMs` that yield to
   * the event loop, so the state may keep changing meanwhile. Returns the bytes in parts.
   */
  async snapshotAsync(slicer: Slicer = WHOLE, sliceMs = 8): Promise<Uint8Array[]> {
    const w = new SnapshotWriter(this.captureImage(), slicer);
    while (!w.step(sliceMs)) await slicer.turn();
    return w.parts;
  }

  /** The state at this instant, as arrays of entries the state never mutates (copy on write). */
  private captureImage(): SnapshotImage {
    return {
      appliedIndex: this.applied,
      eventSeq: this.eventSeq,
      format: 'flotilla-state',
      kv: [...this.kv.values()],
      leader: this.leaderInfo,
      nodes: [...this.nodes.values()],
      pending: [...this.pending.keys()],
      requests: [...this.requests.entries()],
      tasks: [...this.tasks.values()],
      v: 1,
    };
  }

  /** A new state from snapshot bytes. Throws `bad_request` on a corrupt snapshot. */
  static restore(data: Uint8Array, opts: ClusterStateOptions = {}): ClusterState {
    const state = new ClusterState(opts);
    state.load(data);
    return state;
  }

  /** Replace this state with a snapshot's (listeners stay; `onReset` listeners are told). */
  restore(data: Uint8Array): void {
    this.load(data);
    this.tellReset();
  }

  /**
   * `restore`, parsing the snapshot in slices of about `sliceMs` that yield to the event loop.
   * The state stays as it was until the whole snapshot is parsed and checked, then is replaced
   * at once. Snapshots written before the line layout (one JSON line) are parsed in one go.
   */
  async restoreAsync(bytes: Uint8Array, slicer: Slicer = WHOLE, sliceMs = 8): Promise<void> {
    const { data, kvBytes } = await parseSnapshot(bytes, slicer, sliceMs);
    this.install(data, kvBytes);
    this.tellReset();
  }

  private tellReset(): void {
    for (const cb of this.resetListeners) {
      try {
        cb();
      } catch {
        // ignore listener failures
      }
    }
  }

  private load(bytes: Uint8Array): void {
    let data: SnapshotData;
    try {
      data = JSON.parse(textDecoder.decode(bytes)) as SnapshotData;
    } catch (err) {
      throw new FlotillaError('bad_request', 'Cannot restore state as the snapshot is not UTF-8 JSON', { cause: err });
    }
    this.install(data);
  }

  /** `kvBytes`: the kv size when the parser already added it up (else computed here). */
  private install(data: SnapshotData, kvBytes?: number): void {
    if (!isPlainObject(data) || data.format !== 'flotilla-state' || data.v !== 1) {
      throw new FlotillaError('bad_request', 'Cannot restore state as the snapshot is not a flotilla state (format v1)');
    }
    const nodes = new Map<string, NodeInfo>();
    for (const n of data.nodes) nodes.set(n.id, n);
    const kv = new Map<string, KvEntry>();
    let sum = 0;
    for (const e of data.kv) {
      const value = reviveBytes(e.value) as Uint8Array | string;
      kv.set(e.key, { ...e, value });
      if (kvBytes === undefined) sum += kvEntryBytes(e.key, valueBytes(value));
    }
    // Checked before anything changes, so a corrupt snapshot leaves the state as it was.
    const tasks = new Map<string, Task>();
    for (const t of data.tasks) tasks.set(t.id, t);
    for (const id of data.pending) {
      if (tasks.get(id)?.state !== 'pending') {
        throw new FlotillaError('bad_request', `Cannot restore state as pending task '${id}' is not pending`);
      }
    }
    this.nodes = nodes;
    this.kv = kv;
    this.kvBytes = kvBytes ?? sum;
    this.tasks = tasks;
    this.pending = new Map();
    this.usageByNode = new Map();
    for (const t of this.tasks.values()) {
      if (t.node !== null && !isTerminal(t.state)) this.reserve(t);
    }
    for (const id of data.pending) this.pending.set(id, true);
    for (const t of this.tasks.values()) {
      if (t.state === 'pending' && !this.pending.has(t.id)) this.pending.set(t.id, true);
    }
    this.requests = new Map(data.requests);
    this.leaderInfo = data.leader;
    this.applied = data.appliedIndex;
    this.eventSeq = data.eventSeq;
    this.ring = [];
    this.ringStart = 0;
    this.outbox = [];
  }
}

// ---------------------------------------------------------------------------------------------
// Snapshot layout: one canonical JSON document (sorted keys), with every element of its
// arrays on a line of its own ("kv":[\n{…},\n{…}\n]). JSON.parse reads it whole; the line
// breaks let a restore parse it element by element (JSON text never holds a raw line break
// inside a value, so every '\n' byte is a separator).

/** The captured state: scalars, and arrays of entries (sorted when written). */
interface SnapshotImage {
  appliedIndex: number;
  eventSeq: number;
  format: 'flotilla-state';
  kv: KvEntry[];
  leader: LeaderInfo | null;
  nodes: NodeInfo[];
  pending: string[];
  requests: [string, RequestRecord][];
  tasks: Task[];
  v: 1;
}

const PART_BYTES = 1024 * 1024;

/**
 * How long work on the state (encoding or parsing a snapshot) gives the event loop a turn. The
 * state reads no clock and owns no loop (it stays pure): the manager passes one built on the
 * monotonic clock and setImmediate (src/clock.ts `eventLoopSlicer`).
 */
export interface Slicer {
  /** Monotonic milliseconds. */
  now(): number;
  /** Resolves after other work had a turn. */
  turn(): Promise<void>;
}

/** No slicing: the work runs in one go (tests, offline tools, small states). */
const WHOLE: Slicer = { now: () => 0, turn: () => Promise.resolve() };

/** Encodes a SnapshotImage step by step into byte parts of about PART_BYTES. */
class SnapshotWriter {
  readonly parts: Uint8Array[] = [];
  private pending: string[] = [];
  private pendingLength = 0;
  private readonly keys: (keyof SnapshotImage)[];
  private key = 0;
  /** Index of the next element of the current array key; -1 before its opening bracket. */
  private item = -1;
  private sorted = false;
  private started = false;

  constructor(
    private readonly img: SnapshotImage,
    private readonly slicer: Slicer,
  ) {
    this.keys = (Object.keys(img) as (keyof SnapshotImage)[]).sort();
  }

  /** Encodes for about `budgetMs`; true when the document is complete. */
  step(budgetMs: number): boolean {
    const t0 = this.slicer.now();
    let n = 0;
    if (!this.started) {
      this.started = true;
      this.push('{');
    }
    while (this.key < this.keys.length) {
      const name = this.keys[this.key]!;
      const value = this.img[name];
      if (!Array.isArray(value)) {
        this.push(`${this.key > 0 ? ',' : ''}${JSON.stringify(name)}:${canonicalJson(value)}`);
        this.key++;
        continue;
      }
      if (this.item === -1) {
        if (!this.sorted) {
          sortSection(name, value);
          this.sorted = true;
        }
        this.push(`${this.key > 0 ? ',' : ''}${JSON.stringify(name)}:[`);
        this.item = 0;
      }
      while (this.item < value.length) {
        this.push(`\n${canonicalJson(value[this.item])}${this.item < value.length - 1 ? ',' : ''}`);
        this.item++;
        if (++n % 16 === 0 && this.slicer.now() - t0 > budgetMs) return false;
      }
      this.push(value.length > 0 ? '\n]' : ']');
      this.key++;
      this.item = -1;
      this.sorted = false;
      if (this.slicer.now() - t0 > budgetMs) return false;
    }
    this.push('}');
    this.flush();
    return true;
  }

  /** The whole document in one buffer (for the synchronous `snapshot()`). */
  bytes(): Uint8Array {
    if (this.parts.length === 1) return this.parts[0]!;
    const out = new Uint8Array(this.parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of this.parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  private push(text: string): void {
    this.pending.push(text);
    this.pendingLength += text.length;
    if (this.pendingLength >= PART_BYTES) this.flush();
  }

  private flush(): void {
    if (this.pending.length === 0) return;
    this.parts.push(textEncoder.encode(this.pending.join('')));
    this.pending = [];
    this.pendingLength = 0;
  }
}

function sortSection(name: keyof SnapshotImage, items: unknown[]): void {
  if (name === 'kv') (items as KvEntry[]).sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  else if (name === 'nodes' || name === 'tasks') (items as { id: string }[]).sort(byId);
  // pending (queue order) and requests (oldest first) keep their order.
}

function badSnapshot(cause?: unknown): FlotillaError {
  return new FlotillaError('bad_request', 'Cannot restore state as the snapshot is not UTF-8 JSON', { cause });
}

/** Parses snapshot bytes line by line, yielding to the event loop about every `sliceMs`. */
async function parseSnapshot(bytes: Uint8Array, slicer: Slicer, sliceMs: number): Promise<{ data: SnapshotData; kvBytes?: number }> {
  const firstBreak = bytes.indexOf(0x0a);
  if (firstBreak < 0) {
    // One line: a snapshot written before the line layout, or an empty state.
    try {
      return { data: JSON.parse(textDecoder.decode(bytes)) as SnapshotData };
    } catch (err) {
      throw badSnapshot(err);
    }
  }
  const doc: Record<string, unknown> = {};
  let section: unknown[] | null = null;
  let sectionName = '';
  let done = false;
  let kvBytes = 0;
  let t0 = slicer.now();
  let n = 0;
  try {
    for (let start = 0; start < bytes.length; ) {
      let end = bytes.indexOf(0x0a, start);
      if (end < 0) end = bytes.length;
      const line = textDecoder.decode(bytes.subarray(start, end));
      start = end + 1;
      if (done) throw new Error('text after the end of the document');
      if (section !== null && line[0] !== ']') {
        const item = JSON.parse(line.endsWith(',') ? line.slice(0, -1) : line) as unknown;
        if (sectionName === 'kv' && isPlainObject(item)) {
          item.value = reviveBytes(item.value);
          if (typeof item.key === 'string' && (typeof item.value === 'string' || item.value instanceof Uint8Array)) kvBytes += kvEntryBytes(item.key, valueBytes(item.value));
        }
        section.push(item);
      } else {
        // "{…,"name":[" opens the document, "],…,"name":[" closes one array and opens the next,
        // "],…}" ends it.
        let text: string;
        if (section === null) {
          if (line[0] !== '{' || Object.keys(doc).length > 0) throw new Error('unexpected line');
          text = line;
        } else {
          text = line.startsWith('],') ? `{${line.slice(2)}` : line === ']}' ? '{}' : '';
          if (text === '') throw new Error('unexpected line');
        }
        const opens = text.endsWith('[');
        const part = JSON.parse(opens ? `${text}]}` : text) as Record<string, unknown>;
        Object.assign(doc, part);
        if (opens) {
          sectionName = Object.keys(part).at(-1)!;
          section = [];
          doc[sectionName] = section;
        } else {
          section = null;
          done = true;
        }
      }
      if (++n % 16 === 0 && slicer.now() - t0 > sliceMs) {
        await slicer.turn();
        t0 = slicer.now();
      }
    }
  } catch (err) {
    throw badSnapshot(err);
  }
  if (!done) throw badSnapshot(new Error('the document is incomplete'));
  return { data: doc as unknown as SnapshotData, kvBytes };
}

/** The de-duplication key: scopes are ids (no spaces), so the first space ends the scope. */
function requestKey(scope: string | undefined, requestId: string): string {
  return `${scope ?? ''} ${requestId}`;
}

/**
 * A 64-bit fingerprint of what a kv write does (type, key, cas, value; not its time stamp), to
 * tell a retry from a different write that reuses a request id. Deterministic and pure (two
 * multiply-xor lanes over the UTF-16 code units or bytes, then a final avalanche of each lane
 * into the other); not a cryptographic hash: a caller can only confuse its own request ids.
 */
function commandDigest(cmd: KvPutCommand | KvDelCommand): string {
  let a = 0x9e3779b9;
  let b = 0x7f4a7c15;
  const mix = (c: number): void => {
    a = Math.imul(a ^ c, 0x85ebca6b);
    b = Math.imul(b ^ c, 0xc2b2ae35);
    a = (a << 13) | (a >>> 19);
    b = (b << 17) | (b >>> 15);
  };
  const text = (s: string): void => {
    for (let i = 0; i < s.length; i++) mix(s.charCodeAt(i));
    mix(0x10000); // not a code unit: ends the field unambiguously
  };
  text(cmd.type);
  text(cmd.key);
  text(cmd.cas === undefined ? '-' : String(cmd.cas));
  if (cmd.type === 'kv.put') {
    if (typeof cmd.value === 'string') {
      mix(0x10001);
      text(cmd.value);
    } else {
      mix(0x10002);
      for (const x of cmd.value) mix(x);
      mix(0x10000);
    }
  }
  let x = Math.imul(a ^ (a >>> 16), 0x85ebca6b) ^ Math.imul(b ^ (b >>> 13), 0xc2b2ae35);
  let y = Math.imul(b ^ (b >>> 16), 0x85ebca6b) ^ Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  x ^= y >>> 15;
  y ^= x >>> 16;
  return (x >>> 0).toString(16).padStart(8, '0') + (y >>> 0).toString(16).padStart(8, '0');
}

function byId(a: { id: string }, b: { id: string }): number {
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

function defaultReason(state: ReportedState, exitCode: number | undefined): string {
  switch (state) {
    case 'starting':
      return 'starting';
    case 'running':
      return 'running';
    case 'succeeded':
      return `exited with code ${exitCode ?? 0}`;
    case 'failed':
      return exitCode !== undefined ? `exited with code ${exitCode}` : 'failed';
    case 'stopped':
      return 'stopped';
  }
}
