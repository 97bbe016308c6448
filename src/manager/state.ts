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
// The parts live in state/, one per object: model.ts (the data model and the apply vocabulary),
// commands.ts (command types, results, zod schemas), codec.ts (canonical encoding of entries),
// nodes.ts, tasks.ts and kv.ts (each object's table and its command handlers), events.ts (the
// event ring) and snapshot.ts (snapshot bytes). This file is the one door: ClusterState checks
// and fences each command, hands it to its object, and owns the whole (the quota over kv and
// tasks together, snapshot and restore). Other modules import from here only.
//
// This module never imports Raft; a `Proposer` (proposer.ts) sits in between.

import { errorInfo, FlotillaError, type ErrorInfo } from '../protocol/errors.js';
import { formatBytes } from '../protocol/spec.js';
import { decodeCommand, isPlainObject } from './state/codec.js';
import { validateCommand, type AssignResult, type ClusterLeaderCommand, type Command, type KvPutCommand, type SingleCommand, type TaskAssignCommand, type TaskCreateCommand } from './state/commands.js';
import type { ServiceCreateCommand, ServiceTaskCommand } from './state/service-commands.js';
import { EventLog, type EventListener, type EventsPage } from './state/events.js';
import { KvStore } from './state/kv.js';
import {
  DEFAULT_EVENT_CAPACITY,
  fail,
  TASK_BYTES_ESTIMATE,
  type ApplyMeta,
  type ApplyResult,
  type KvEntry,
  type LeaderInfo,
  type NodeInfo,
  type NodeStatus,
  type NodeUsage,
  type QuotaGuard,
  type Task,
  type TaskFilter,
  valueBytes,
} from './state/model.js';
import { NodeTable } from './state/nodes.js';
import { parseSnapshot, parseSnapshotWhole, SnapshotWriter, WHOLE, type SnapshotData, type SnapshotImage, type Slicer } from './state/snapshot.js';
import { TaskTable } from './state/tasks.js';
import { applyTasksGc } from './state/task-gc.js';
import { SecretsTable, type SecretCommand, type SecretEvent } from './state/secrets.js';
import { VolumesTable, type VolumePlacement, type VolumeRecord, type VolumeRemoveCommand } from './state/volumes.js';
import { isTerminal } from './state/model.js';
import { missingSecretsError } from '../protocol/secrets.js';
import { SERVICE_BYTES_ESTIMATE, ServiceTable, type Service } from './state/services.js';

export {
  DEFAULT_EVENT_CAPACITY,
  HISTORY_LIMIT,
  isTerminal,
  KV_ENTRY_OVERHEAD,
  MAX_KEY_LENGTH,
  MAX_VALUE_BYTES,
  REQUEST_MEMORY,
  TASK_BYTES_ESTIMATE,
  TASK_STATES,
  TERMINAL_STATES,
  type ApplyMeta,
  type ApplyResult,
  type DesiredState,
  type KvEntry,
  type LeaderInfo,
  type NodeInfo,
  type NodeResources,
  type NodeStatus,
  type NodeUsage,
  type ReportedState,
  type Task,
  type TaskFilter,
  type TaskHistoryEntry,
  type TaskServiceRef,
  type TaskState,
} from './state/model.js';
export {
  COMMAND_TYPES,
  FENCED_COMMANDS,
  type AssignResult,
  type BatchCommand,
  type ClusterLeaderCommand,
  type Command,
  type CommandType,
  type KvDelCommand,
  type KvDelResult,
  type KvPutCommand,
  type KvWriteResult,
  type NodeDownCommand,
  type NodeHeartbeatCommand,
  type NodeRegisterCommand,
  type NodeRegistration,
  type NodeSetAvailabilityCommand,
  type NodesMarkUnknownCommand,
  type NodeStatusCommand,
  type PendingResult,
  type Placement,
  type ReportResult,
  type SingleCommand,
  type TaskAssignCommand,
  type TaskCreateCommand,
  type TaskPendingCommand,
  type TaskRemoveCommand,
  type TaskReport,
  type TaskReportCommand,
  type TaskRestartCommand,
  type TaskStopCommand,
  type TasksGcCommand,
  type TasksGcResult,
} from './state/commands.js';
export { canonicalJson, decodeCommand, encodeCommand, fromBase64, MAX_COMMAND_BYTES, toBase64 } from './state/codec.js';
export type { ClusterEvent, EventBody, EventsPage, EventType, TaskSummary } from './state/events.js';
export { planRestart, removeRefusal, restartBackoff } from './state/tasks.js';
export { SecretsTable, type SecretRecord, type WrappedDataKey, type SecretCommand } from './state/secrets.js';
export type { VolumePlacement, VolumeRecord, VolumeRemoveCommand } from './state/volumes.js';
export { isLiveTask, isStoppingTask, SERVICE_BYTES_ESTIMATE, type Service } from './state/services.js';
export type {
  ServiceCommand,
  ServiceCreateCommand,
  ServiceProgressCommand,
  ServiceRemoveCommand,
  ServiceRemoveTaskCommand,
  ServiceRollbackCommand,
  ServiceScaleCommand,
  ServiceStopTaskCommand,
  ServiceTaskCommand,
  ServiceUpdateCommand,
} from './state/service-commands.js';
export type { ServiceSummary } from './state/events.js';
export type { Slicer } from './state/snapshot.js';

export interface ClusterStateOptions {
  /** Events kept for `eventsSince` (default 10,000). */
  eventCapacity?: number;
}

export class ClusterState {
  private readonly log: EventLog;
  private readonly quota: QuotaGuard = (what, growth, quota) => this.quotaRefusal(what, growth, quota);
  private nodes: NodeTable;
  private tasks: TaskTable;
  private kv: KvStore;
  private secrets = new SecretsTable();
  private volumes = new VolumesTable();
  private services: ServiceTable;
  private leaderInfo: LeaderInfo | null = null;
  private applied = 0;

  constructor(opts: ClusterStateOptions = {}) {
    this.log = new EventLog(Math.max(1, Math.floor(opts.eventCapacity ?? DEFAULT_EVENT_CAPACITY)));
    this.nodes = new NodeTable(this.log);
    this.tasks = new TaskTable(this.log, this.quota);
    this.kv = new KvStore(this.log, this.quota);
    this.services = new ServiceTable(this.log, this.quota, () => this.tasks);
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
    this.log.flush();
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
    this.log.entry = { index: meta.index, term: meta.term, at: 'at' in cmd && cmd.at !== undefined ? cmd.at : null };
    switch (cmd.type) {
      case 'kv.put':
        return this.kv.put(cmd);
      case 'kv.del':
        return this.kv.del(cmd);
      case 'task.create':
        return this.taskCreate(cmd);
      case 'task.stop':
        return this.tasks.stop(cmd);
      case 'task.remove':
        return this.tasks.remove(cmd);
      case 'tasks.gc':
        return applyTasksGc(this.tasks, cmd);
      case 'task.assign':
        return this.taskAssign(cmd);
      case 'task.report':
        return this.tasks.report(cmd);
      case 'task.restart':
        return this.tasks.restart(cmd);
      case 'task.pending':
        return this.tasks.setPendingReasons(cmd);
      case 'node.register':
        return this.nodes.register(cmd);
      case 'node.heartbeat':
        return this.nodeStatus(cmd.id, cmd.status ?? 'ready', cmd.reason, cmd.at, true);
      case 'node.status':
        return this.nodeStatus(cmd.id, cmd.status, cmd.reason, cmd.at, false);
      case 'node.setAvailability':
        return this.nodes.setAvailability(cmd);
      case 'nodes.markUnknown':
        return this.nodes.markUnknown(cmd);
      case 'node.down':
        return this.nodeDown(cmd.id, cmd.reason ?? 'declared down', cmd.at, false);
      case 'cluster.leader':
        return this.clusterLeader(cmd);
      case 'secret.key.add':
      case 'secret.key.retire':
      case 'secret.create':
      case 'secret.reseal':
      case 'secret.remove':
        return this.secretCommand(cmd);
      case 'secret.update': {
        // A new value: every service whose template names the secret rolls to a new template
        // version (its update policy applies), so its tasks restart with the new value.
        const r = this.secretCommand(cmd);
        if (r.ok) (r.value as { rolled?: string[] }).rolled = this.services.rollForSecret(cmd.name, cmd.at);
        return r;
      }
      case 'volume.remove':
        return this.volumes.remove(cmd, this.volumeUsers(cmd.name), this.log.entry.index, (e) => this.log.emit(e));
      case 'service.create':
        return this.missingTemplateSecrets(cmd.spec, `create service '${cmd.spec.name}'`) ?? this.services.create(cmd);
      case 'service.update':
        return this.missingTemplateSecrets(cmd.spec, `update service '${cmd.name}'`) ?? this.services.update(cmd);
      case 'service.scale':
        return this.services.scale(cmd);
      case 'service.rollback':
        return this.services.rollback(cmd);
      case 'service.remove':
        return this.services.remove(cmd);
      case 'service.progress':
        return this.services.progress(cmd);
      case 'service.task':
        return this.services.createTask(cmd);
      case 'service.stopTask':
        return this.services.stopTask(cmd);
      case 'service.removeTask':
        return this.services.removeTask(cmd);
      default: {
        const never: never = cmd;
        return fail('bad_request', `Cannot apply ${String((never as { type?: unknown }).type)} as it is not a known command`);
      }
    }
  }

  /** The refusal of a service spec whose task template names secrets the cluster does not have. */
  private missingTemplateSecrets(spec: ServiceCreateCommand['spec'], action: string): ApplyResult<never> | undefined {
    const named = (spec?.template?.task as { secrets?: unknown } | undefined)?.secrets;
    if (!Array.isArray(named)) return undefined;
    const missing = this.secrets.missing(named.filter((n): n is string => typeof n === 'string'));
    return missing.length > 0 ? { ok: false, error: missingSecretsError(missing, action).toInfo() } : undefined;
  }

  /** task.create, refused (nothing created) when the spec names a secret the cluster does not have. */
  private taskCreate(cmd: TaskCreateCommand): ApplyResult<unknown> {
    const named = (cmd.spec as { secrets?: unknown }).secrets;
    if (Array.isArray(named)) {
      const missing = this.secrets.missing(named.filter((n): n is string => typeof n === 'string'));
      if (missing.length > 0) return { ok: false, error: missingSecretsError(missing, `create task '${cmd.id}'`).toInfo() };
    }
    return this.tasks.create(cmd);
  }

  /** task.assign; a task that mounts volumes records them on its node (the volume placement rule). */
  private taskAssign(cmd: TaskAssignCommand): ApplyResult<unknown> {
    const r = this.tasks.assign(cmd, (id) => this.nodes.get(id));
    if (r.ok && r.value !== undefined) {
      for (const p of (r.value as AssignResult).assigned) {
        const t = this.tasks.get(p.taskId);
        if (t?.spec.volumes !== undefined) this.volumes.recordUse(t.spec.volumes, p.nodeId, cmd.at, this.log.entry.index, (e) => this.log.emit(e));
      }
    }
    return r;
  }

  private secretCommand(cmd: SecretCommand): ApplyResult<unknown> {
    return this.secrets.apply(cmd, {
      index: this.log.entry.index,
      emit: (e: SecretEvent) => this.log.emit(e),
      usedBy: (name) => this.secretUsers(name),
      quotaRefusal: (what, growth, quota) => {
        const r = this.quotaRefusal(what, growth, quota);
        return r !== undefined && !r.ok ? r.error : undefined;
      },
    });
  }

  /** node.heartbeat (`heartbeat`: also records lastHeartbeat) and node.status. */
  private nodeStatus(id: string, status: NodeStatus, reason: string | undefined, at: number, heartbeat: boolean): ApplyResult<unknown> {
    if (status === 'down') return this.nodeDown(id, reason ?? (heartbeat ? 'left the cluster' : 'declared down'), at, heartbeat);
    return this.nodes.setStatus(id, status, reason, at, heartbeat);
  }

  /** A node is down, and so its non-terminal tasks are lost. */
  private nodeDown(id: string, reason: string, at: number, heartbeat: boolean): ApplyResult<{ node: NodeInfo; lost: string[] }> {
    const down = this.nodes.down(id, reason, at, heartbeat);
    if (!down.ok) return down;
    return { ok: true, value: { node: down.value!, lost: this.tasks.loseTasksOn(id, reason, at) } };
  }

  private clusterLeader(cmd: ClusterLeaderCommand): ApplyResult<LeaderInfo> {
    this.leaderInfo = { id: cmd.leader, term: cmd.term, at: cmd.at };
    this.log.emit({ type: 'cluster.leader', leader: cmd.leader, term: cmd.term });
    return { ok: true, value: this.leaderInfo };
  }

  // -------------------------------------------------------------------------------------------
  // The state-size quota (kv entries and tasks together)

  /**
   * Estimated size of the replicated state (kv keys and values plus a per-entry overhead, and
   * a fixed estimate per task): what the state-size quota (`--quota-bytes`) limits. Every
   * replica computes the same number from the same entries.
   */
  stateBytes(): number {
    return this.kv.bytes + this.tasks.size * TASK_BYTES_ESTIMATE + this.services.size * SERVICE_BYTES_ESTIMATE + this.secrets.bytes();
  }

  /**
   * The `quota_exceeded` error `cmd` would get if applied now (undefined when it fits): lets the
   * leader refuse it before proposing. Apply checks again, with the same rule.
   */
  quotaCheck(cmd: KvPutCommand | TaskCreateCommand | ServiceCreateCommand | ServiceTaskCommand): ErrorInfo | undefined {
    let r: ApplyResult<never> | undefined;
    if (cmd.type === 'kv.put') r = this.quotaRefusal(`put '${cmd.key}'`, this.kv.growth(cmd.key, valueBytes(cmd.value)), cmd.quota);
    else if (cmd.type === 'service.create') r = this.quotaRefusal(`create service '${cmd.spec.name}'`, SERVICE_BYTES_ESTIMATE, cmd.quota);
    else if (!this.tasks.has(cmd.id)) r = this.quotaRefusal(`create task '${cmd.id}'`, TASK_BYTES_ESTIMATE, cmd.quota);
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

  // -------------------------------------------------------------------------------------------
  // Queries (returned objects are never mutated by the state: it copies on write)

  getTask(id: string): Task | undefined {
    return this.tasks.get(id);
  }

  /** Tasks sorted by id, optionally filtered. */
  listTasks(filter: TaskFilter = {}): Task[] {
    return this.tasks.list(filter);
  }

  /** Pending tasks in queue order (oldest first): what the scheduler places. */
  pendingTasks(): Task[] {
    return this.tasks.pendingQueue();
  }

  /** Non-terminal tasks placed on a node (what its worker should run or stop), sorted by id. */
  tasksOnNode(nodeId: string): Task[] {
    return this.tasks.onNode(nodeId);
  }

  /** Terminal tasks the restart policy will restart, soonest first (for the restart loop). */
  tasksAwaitingRestart(): Task[] {
    return this.tasks.awaitingRestart();
  }

  getService(name: string): Service | undefined {
    return this.services.get(name);
  }

  /** Services sorted by name. */
  listServices(): Service[] {
    return this.services.list();
  }

  /** The tasks of a service (or of a removed service whose tasks are still there), by id. */
  serviceTasks(name: string): Task[] {
    return this.services.tasksOf(name);
  }

  /** Names that have service tasks: services, and removed services whose tasks remain. */
  serviceTaskOwners(): string[] {
    return this.services.taskOwners();
  }

  getNode(id: string): NodeInfo | undefined {
    return this.nodes.get(id);
  }

  /** Nodes sorted by id. */
  listNodes(): NodeInfo[] {
    return this.nodes.list();
  }

  kvGet(key: string): KvEntry | undefined {
    return this.kv.get(key);
  }

  /** Entries whose key starts with `prefix`, sorted by key. */
  kvList(prefix = ''): KvEntry[] {
    return this.kv.list(prefix);
  }

  /** The replicated secrets (sealed values and wrapped data keys; never a plaintext). */
  get secretsTable(): SecretsTable {
    return this.secrets;
  }

  /** Tasks still to run (not finished, or finished with a restart pending) that name secret `name`, sorted. */
  secretUsers(name: string): string[] {
    return this.tasks.list({ desired: 'running' }).filter((t) => (t.spec.secrets ?? []).includes(name) && (!isTerminal(t.state) || t.nextRestartAt !== undefined)).map((t) => t.id);
  }

  /** Tasks still to run that mount volume `name`, sorted. */
  volumeUsers(name: string): string[] {
    // Not finished: still running (a task being stopped included: its containers still mount the
    // volume), or ended with a restart to come.
    return this.tasks
      .list()
      .filter((t) => (t.spec.volumes ?? []).some((v) => v.name === name) && (!isTerminal(t.state) || (t.desired === 'running' && t.nextRestartAt !== undefined)))
      .map((t) => t.id);
  }

  /** Named volumes and the nodes holding them, sorted by name. */
  listVolumes(): VolumeRecord[] {
    return this.volumes.list();
  }

  /** Where a task mounting `volumes` may be placed (the volume placement rule). */
  volumePlacement(volumes: Task['spec']['volumes']): VolumePlacement {
    return this.volumes.placement(volumes);
  }

  /** Volumes a node must delete its copy of (removed with `volume rm`). */
  volumeDrops(nodeId: string): string[] {
    return this.volumes.dropsFor(nodeId);
  }

  /** Resources reserved on a node by its non-terminal tasks. */
  nodeUsage(nodeId: string): NodeUsage {
    return this.tasks.usageOf(nodeId);
  }

  /** `nodeUsage` for every registered node (the scheduler's input). */
  usage(): Map<string, NodeUsage> {
    const out = new Map<string, NodeUsage>();
    for (const id of this.nodes.ids()) out.set(id, this.nodeUsage(id));
    return out;
  }

  // -------------------------------------------------------------------------------------------
  // Events

  /** The seq of the newest event (0 before any). */
  get lastEventSeq(): number {
    return this.log.lastSeq;
  }

  /**
   * Events after `seq` (oldest first, at most `limit`). If `seq` is older than the ring
   * holds, or newer than any event, answers `{ resetNeeded: true }`: the watcher should
   * re-list and follow from `lastSeq`.
   */
  eventsSince(seq: number, limit = Infinity): EventsPage {
    return this.log.since(seq, limit);
  }

  /** Live events, delivered after each applied command. Returns an unsubscribe function. */
  onEvent(cb: EventListener): () => void {
    return this.log.onEvent(cb);
  }

  /** Called after `restore()` replaced the state (watchers must re-list). */
  onReset(cb: () => void): () => void {
    return this.log.onReset(cb);
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
    const { kv, requests } = this.kv.image();
    const { tasks, pending } = this.tasks.image();
    // Only when used: a state without secrets or volumes snapshots exactly as before.
    const secrets = this.secrets.image();
    const volumes = this.volumes.image();
    const extra: Partial<SnapshotImage> = {};
    if (secrets.secretKeys.length > 0) extra.secretKeys = secrets.secretKeys;
    if (secrets.secrets.length > 0) extra.secrets = secrets.secrets;
    if (volumes.volumes.length > 0) extra.volumes = volumes.volumes;
    if (volumes.volumeTombstones.length > 0) extra.volumeTombstones = volumes.volumeTombstones;
    return {
      ...extra,
      appliedIndex: this.applied,
      eventSeq: this.log.lastSeq,
      format: 'flotilla-state',
      kv,
      leader: this.leaderInfo,
      nodes: this.nodes.image(),
      pending,
      requests,
      ...(this.services.size > 0 ? { services: this.services.image() } : {}),
      tasks,
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
    this.log.tellReset();
  }

  /**
   * `restore`, parsing the snapshot in slices of about `sliceMs` that yield to the event loop.
   * The state stays as it was until the whole snapshot is parsed and checked, then is replaced
   * at once. Snapshots written before the line layout (one JSON line) are parsed in one go.
   */
  async restoreAsync(bytes: Uint8Array, slicer: Slicer = WHOLE, sliceMs = 8): Promise<void> {
    const { data, kvBytes } = await parseSnapshot(bytes, slicer, sliceMs);
    this.install(data, kvBytes);
    this.log.tellReset();
  }

  private load(bytes: Uint8Array): void {
    this.install(parseSnapshotWhole(bytes));
  }

  /** `kvBytes`: the kv size when the parser already added it up (else computed here). */
  private install(data: SnapshotData, kvBytes?: number): void {
    if (!isPlainObject(data) || data.format !== 'flotilla-state' || data.v !== 1) {
      throw new FlotillaError('bad_request', 'Cannot restore state as the snapshot is not a flotilla state (format v1)');
    }
    // Every part is built and checked before anything changes, so a corrupt snapshot leaves
    // the state as it was.
    const nodes = NodeTable.restore(this.log, data.nodes);
    const kv = KvStore.restore(this.log, this.quota, data.kv, data.requests, kvBytes);
    const tasks = TaskTable.restore(this.log, this.quota, data.tasks, data.pending);
    let secrets: SecretsTable;
    let volumes: VolumesTable;
    try {
      secrets = SecretsTable.fromImage(data);
      volumes = VolumesTable.fromImage(data);
    } catch (err) {
      throw new FlotillaError('bad_request', `Cannot restore state as ${(err as Error).message}`);
    }
    // Snapshots written before services have none.
    const services = ServiceTable.restore(this.log, this.quota, () => this.tasks, data.services, data.tasks);
    this.services = services;
    this.nodes = nodes;
    this.kv = kv;
    this.tasks = tasks;
    this.secrets = secrets;
    this.volumes = volumes;
    this.leaderInfo = data.leader;
    this.applied = data.appliedIndex;
    this.log.restart(data.eventSeq);
  }
}
