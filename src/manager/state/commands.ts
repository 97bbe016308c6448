// The commands the cluster state applies: their types (what a log entry carries), which of
// them are fenced leader decisions, what each returns, and their zod schemas. The log is input
// like any other (commands come from our own leader, but a bug or a corrupt entry must not
// corrupt the state): `validateCommand` checks every command before it is applied.

import { z } from 'zod';
import { errorInfo, type ErrorInfo } from '../../protocol/errors.js';
import { badRequestFromZod, issueMessage, type NodeAvailability, type TaskSpec } from '../../protocol/spec.js';
import { FENCED_SERVICE_COMMANDS, SERVICE_COMMAND_TYPES, serviceCommandSchemas, type ServiceCommand } from './service-commands.js';
import { MAX_KEY_LENGTH, type NodeResources, type NodeStatus, type ReportedState } from './model.js';
import { secretCommandSchemas, type SecretCommand } from './secrets.js';
import { volumeCommandSchemas, type VolumeRemoveCommand } from './volumes.js';
import { taskHealthSchema } from './task-health.js';
import { isFastTaskCreate } from './fast-checks.js';
import type { TaskHealth } from '../../protocol/health.js';
import type { PublishedPort } from '../../protocol/session.js';
import type { KvDelResult, KvWriteResult } from '../../protocol/api.js';

export type { SecretCommand, VolumeRemoveCommand };

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
  /** Keyed by name (apply): unchanged if a task of that name has this spec, a conflict if another (task-names.ts). */
  byName?: boolean;
}
export interface TaskStopCommand {
  type: 'task.stop';
  id: string;
  at: number;
  reason?: string;
}
/**
 * Forget a terminal task (cancels any pending restart). `flotilla rm` proposes it after its
 * route checked the task may go (tasks.ts `removeRefusal`: no restart pending, no service's task).
 */
export interface TaskRemoveCommand {
  type: 'task.remove';
  id: string;
  at: number;
}
/**
 * The leader's garbage collection of finished tasks (controllers/gc.ts): each listed task is
 * removed if, when the entry is applied, it is still terminal, has no restart pending and is
 * no service's task; the others are skipped (they changed since the leader looked).
 */
export interface TasksGcCommand {
  type: 'tasks.gc';
  ids: string[];
  term: number;
  at: number;
}
export interface TasksGcResult {
  removed: string[];
  skipped: { taskId: string; reason: string }[];
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
  /** The task's health, when it has a check (see task-health.ts). */
  health?: TaskHealth;
  /** Where its published tcp ports are reached (docker bindings; see Task.ports). */
  ports?: PublishedPort[];
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
  | TasksGcCommand
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
  | ClusterLeaderCommand
  | ServiceCommand
  | SecretCommand
  | VolumeRemoveCommand;
export type Command = SingleCommand | BatchCommand;
export type CommandType = Command['type'];

export const COMMAND_TYPES: readonly CommandType[] = [
  'kv.put',
  'kv.del',
  'task.create',
  'task.stop',
  'task.remove',
  'tasks.gc',
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
  ...SERVICE_COMMAND_TYPES,
  'secret.key.add',
  'secret.key.retire',
  'secret.create',
  'secret.reseal',
  'secret.update',
  'secret.remove',
  'volume.remove',
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
  'tasks.gc',
  'nodes.markUnknown',
  'node.down',
  'cluster.leader',
  ...FENCED_SERVICE_COMMANDS,
]);

// Result values, per command.
export type { KvDelResult, KvWriteResult };
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
// Validation

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
  z.strictObject({ type: z.literal('task.create'), id: idString, spec: z.custom<TaskSpec>(() => true), at: count, quota: count.optional(), byName: z.boolean().optional() }),
  z.strictObject({ type: z.literal('task.stop'), id: idString, at: count, reason: z.string().max(1024).optional() }),
  z.strictObject({ type: z.literal('task.remove'), id: idString, at: count }),
  z.strictObject({ type: z.literal('tasks.gc'), ids: z.array(idString).min(1).max(10_000), term: count, at: count }),
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
  ...serviceCommandSchemas,
  ...secretCommandSchemas,
  ...volumeCommandSchemas,
] as const;

const singleCommandSchema = z.discriminatedUnion('type', singleCommandSchemas);

/** One worker report (validated per item, so one bad report does not reject its batch). */
export const reportSchema = z.strictObject({
  taskId: idString,
  nodeId: idString,
  state: z.enum(['starting', 'running', 'succeeded', 'failed', 'stopped']),
  reason: z.string().max(4096).optional(),
  exitCode: z.number().int().optional(),
  detail: z.string().max(4096).optional(),
  at: count,
  attempt: z.number().int().min(1).optional(),
  health: taskHealthSchema.optional(),
  ports: z
    .array(z.strictObject({ container: z.number().int().min(1).max(65535), hostPort: z.number().int().min(1).max(65535), hostIp: z.string().min(1).max(64).optional() }))
    .max(64)
    .optional(),
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
export function validateCommand(cmd: unknown, allowBatch: boolean): { cmd: Command } | { error: ErrorInfo } {
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
  // The common, well-formed task.create skips the schema (fast-checks.ts accepts only what it would).
  if (type === 'task.create') {
    if (isFastTaskCreate(cmd)) return { cmd: cmd as TaskCreateCommand };
  }
  return validateBySchema(cmd, type);
}

/** `validateCommand` by the zod schemas alone, no fast path (the reference the fast checks are tested against). */
export function validateBySchema(cmd: unknown, type: string): { cmd: Command } | { error: ErrorInfo } {
  const schema = type === 'batch' ? batchSchema : singleCommandSchema;
  const parsed = schema.safeParse(cmd, { error: issueMessage });
  if (!parsed.success) {
    return { error: badRequestFromZod(`apply ${type}`, parsed.error, 'the command').toInfo() };
  }
  return { cmd: parsed.data as Command };
}
