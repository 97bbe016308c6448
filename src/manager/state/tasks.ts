// The tasks: their lifecycle (create, place, progress by worker reports, stop, restart in
// place, remove) and the indexes kept in step with every change: the pending queue the
// scheduler reads and, per node, the tasks placed there and the resources and host ports they
// reserve. `transition` is the one place a task's observed state changes.

import { FlotillaError, errorInfo } from '../../protocol/errors.js';
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
  type RestartPolicy,
  type TaskSpec,
} from '../../protocol/spec.js';
import {
  reportSchema,
  type AssignResult,
  type PendingResult,
  type Placement,
  type ReportResult,
  type TaskAssignCommand,
  type TaskCreateCommand,
  type TaskPendingCommand,
  type TaskRemoveCommand,
  type TaskReport,
  type TaskReportCommand,
  type TaskRestartCommand,
  type TaskStopCommand,
} from './commands.js';
import { summarize, type EventLog } from './events.js';
import { createByName } from './task-names.js';
import { SpecMemo } from '../../protocol/spec-memo.js';
import { isFastReport } from './fast-checks.js';
import {
  byId,
  fail,
  HISTORY_LIMIT,
  isTerminal,
  STATE_RANK,
  TASK_BYTES_ESTIMATE,
  type ApplyResult,
  type DesiredState,
  type NodeInfo,
  type NodeUsage,
  type QuotaGuard,
  type ReportedState,
  type Task,
  type TaskFilter,
  type TaskHistoryEntry,
  type TaskServiceRef,
  type TaskState,
} from './model.js';
import { healthChanged } from './task-health.js';

/** What the non-terminal tasks placed on one node reserve there. */
interface UsageAcc {
  cpu: number;
  memory: number;
  tasks: Set<string>;
  ports: Map<string, number>;
}

export class TaskTable {
  private tasks = new Map<string, Task>();
  /** Pending task ids in FIFO order (Map keeps insertion order). */
  private pending = new Map<string, true>();
  /** Per node: the non-terminal tasks placed on it and what they reserve. */
  private usageByNode = new Map<string, UsageAcc>();

  constructor(
    private readonly log: EventLog,
    private readonly quota: QuotaGuard,
  ) {}

  /**
   * A table holding a snapshot's tasks, its pending queue in `pending` order, and the usage
   * they reserve. Throws `bad_request` if the queue names a task that is not pending.
   */
  static restore(log: EventLog, quota: QuotaGuard, tasks: Task[], pending: string[]): TaskTable {
    const table = new TaskTable(log, quota);
    for (const t of tasks) table.tasks.set(t.id, t);
    for (const id of pending) {
      if (table.tasks.get(id)?.state !== 'pending') {
        throw new FlotillaError('bad_request', `Cannot restore state as pending task '${id}' is not pending`);
      }
    }
    for (const t of table.tasks.values()) {
      if (t.node !== null && !isTerminal(t.state)) table.reserve(t);
    }
    for (const id of pending) table.pending.set(id, true);
    for (const t of table.tasks.values()) {
      if (t.state === 'pending' && !table.pending.has(t.id)) table.pending.set(t.id, true);
    }
    return table;
  }

  /** How many tasks there are (live and terminal). */
  get size(): number {
    return this.tasks.size;
  }

  has(id: string): boolean {
    return this.tasks.has(id);
  }

  /** The tasks and the pending queue in queue order, for a snapshot. */
  image(): { tasks: Task[]; pending: string[] } {
    return { tasks: [...this.tasks.values()], pending: [...this.pending.keys()] };
  }

  // -------------------------------------------------------------------------------------------
  // Commands

  /** task.create; `service` makes it a service's task (named `service.slot`, see services.ts). */
  create(cmd: TaskCreateCommand, service?: TaskServiceRef): ApplyResult<Task> {
    if (this.tasks.has(cmd.id)) {
      return fail('conflict', `Cannot create task '${cmd.id}' as a task with that id already exists`);
    }
    if (cmd.byName === true) {
      let parsed: TaskSpec | undefined;
      try {
        parsed = parseSpecCached(cmd.spec);
      } catch {
        parsed = undefined; // refused below with the spec's errors
      }
      const taken = parsed === undefined ? undefined : createByName(this.tasks.values(), parsed);
      if (taken !== undefined) return taken;
    }
    const overQuota = this.quota(`create task '${cmd.id}'`, TASK_BYTES_ESTIMATE, cmd.quota);
    if (overQuota !== undefined) return overQuota;
    let spec: TaskSpec;
    try {
      spec = parseSpecCached(cmd.spec);
    } catch (err) {
      return { ok: false, error: FlotillaError.is(err) ? err.toInfo() : errorInfo('bad_request', String(err)) };
    }
    const index = this.log.entry.index;
    const reason = 'waiting for a node';
    const task: Task = {
      id: cmd.id,
      name: service === undefined ? spec.name : `${service.name}.${service.slot}`,
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
      ...(service === undefined ? {} : { service: { name: service.name, slot: service.slot, version: service.version } }),
    };
    this.writeTask(task, undefined);
    this.log.emit({ type: 'task.created', task: summarize(task) });
    return { ok: true, value: task };
  }

  stop(cmd: TaskStopCommand): ApplyResult<Task> {
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
        version: this.log.entry.index,
      });
      this.writeTask(next, task);
      this.log.emit({ type: 'task.updated', task: summarize(next), prevState: task.state, change: 'desired' });
    }
    return { ok: true, value: this.tasks.get(cmd.id)! };
  }

  remove(cmd: TaskRemoveCommand): ApplyResult<{ removed: string }> {
    const task = this.tasks.get(cmd.id);
    if (task === undefined) return fail('not_found', `Cannot remove task '${cmd.id}' as it does not exist`);
    if (!isTerminal(task.state)) {
      return fail('conflict', `Cannot remove task '${cmd.id}' as it is ${task.state}; stop it first`);
    }
    this.tasks.delete(task.id);
    this.pending.delete(task.id);
    this.log.emit({ type: 'task.removed', task: summarize(task) });
    return { ok: true, value: { removed: task.id } };
  }

  /** task.assign; `node` looks a node up (placement checks it is ready, active and has room). */
  assign(cmd: TaskAssignCommand, node: (id: string) => NodeInfo | undefined): ApplyResult<AssignResult> {
    const assigned: Placement[] = [];
    const skipped: AssignResult['skipped'] = [];
    for (const p of cmd.placements) {
      const why = this.placementProblem(p, node(p.nodeId));
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
  private placementProblem(p: Placement, node: NodeInfo | undefined): string | undefined {
    const task = this.tasks.get(p.taskId);
    if (task === undefined) return 'no such task';
    if (task.desired !== 'running') return 'task is being stopped';
    if (task.state !== 'pending') return `task is ${task.state}${task.node !== null ? ` on ${task.node}` : ''}`;
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

  report(cmd: TaskReportCommand): ApplyResult<ReportResult> {
    let applied = 0;
    const ignored: ReportResult['ignored'] = [];
    for (const item of cmd.reports) {
      // The common, well-formed report skips the schema (fast-checks.ts accepts only what it would).
      const parsed = isFastReport(item) ? { success: true as const, data: item } : reportSchema.safeParse(item, { error: issueMessage });
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
      this.log.entry.at = r.at;
      const ignore = (reason: string): void => {
        ignored.push({ taskId: r.taskId, nodeId: r.nodeId, reason });
      };
      const task = this.tasks.get(r.taskId);
      const why = reportIgnored(task, r);
      if (task === undefined || why !== null) {
        ignore(why ?? 'no such task');
        continue;
      }
      const health = healthChanged(r.health, task.health) ? { health: r.health } : {};
      const ports = portsChanged(r.ports, task.ports) ? { ports: r.ports } : {};
      if (r.state === task.state) {
        const next = changed(task, { detail: r.detail ?? task.detail, ...health, ...ports, updatedAt: r.at, version: this.log.entry.index });
        this.writeTask(next, task);
        this.log.emit({ type: 'task.updated', task: summarize(next), prevState: task.state, change: 'health' in health ? 'health' : 'detail' });
        applied++;
        continue;
      }
      this.transition(task, r.state, {
        reason: r.reason ?? defaultReason(r.state, r.exitCode),
        at: r.at,
        exitCode: r.exitCode,
        detail: r.detail,
        ...health,
        ...ports,
      });
      applied++;
    }
    return { ok: true, value: { applied, ignored } };
  }

  restart(cmd: TaskRestartCommand): ApplyResult<Task> {
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
      health: undefined,
      restarts,
      attempt,
      history: pushHistory(task.history, { state: 'pending', reason, at: cmd.at, node: null, attempt }),
      updatedAt: cmd.at,
      version: this.log.entry.index,
    });
    this.writeTask(next, task);
    this.log.emit({ type: 'task.updated', task: summarize(next), prevState: task.state, change: 'restart' });
    return { ok: true, value: next };
  }

  setPendingReasons(cmd: TaskPendingCommand): ApplyResult<PendingResult> {
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
      const next = changed(task, { reason: item.reason, updatedAt: cmd.at, version: this.log.entry.index });
      this.writeTask(next, task);
      this.log.emit({ type: 'task.updated', task: summarize(next), prevState: task.state, change: 'detail' });
      updated++;
    }
    return { ok: true, value: { updated, skipped } };
  }

  /** The non-terminal tasks of a node that went down become `lost`; returns their ids. */
  loseTasksOn(nodeId: string, why: string, at: number): string[] {
    const lost: string[] = [];
    for (const taskId of [...(this.usageByNode.get(nodeId)?.tasks ?? [])].sort()) {
      const task = this.tasks.get(taskId)!;
      this.transition(task, 'lost', { reason: `node ${nodeId} is down (${why})`, at });
      lost.push(taskId);
    }
    return lost;
  }

  // -------------------------------------------------------------------------------------------
  // Keeping the indexes in step

  /**
   * Move a task to a new observed state (the one place state changes are made): history,
   * restart plan on terminal states, indexes, event.
   */
  private transition(
    task: Task,
    state: TaskState,
    o: { reason: string; at: number; node?: string; exitCode?: number; detail?: string; desired?: DesiredState; health?: Task['health']; ports?: Task['ports'] },
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
      ...(o.health !== undefined ? { health: o.health } : {}),
      ...(o.ports !== undefined ? { ports: o.ports } : {}),
      updatedAt: o.at,
      version: this.log.entry.index,
    });
    next.history = pushHistory(task.history, entry);
    if (isTerminal(state)) {
      const plan = planRestart(next, state, o.at);
      if (plan.nextRestartAt !== undefined) next.nextRestartAt = plan.nextRestartAt;
      if (plan.note !== '') next.detail = plan.note;
    }
    this.writeTask(next, task);
    this.log.emit({ type: 'task.updated', task: summarize(next), prevState: task.state, change: 'state' });
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
  // Queries

  get(id: string): Task | undefined {
    return this.tasks.get(id);
  }

  /** Tasks sorted by id, optionally filtered. */
  list(filter: TaskFilter = {}): Task[] {
    const states = filter.state === undefined ? undefined : new Set<TaskState>(typeof filter.state === 'string' ? [filter.state] : filter.state);
    const out: Task[] = [];
    for (const t of this.tasks.values()) {
      if (states !== undefined && !states.has(t.state)) continue;
      if (filter.node !== undefined && t.node !== filter.node) continue;
      if (filter.desired !== undefined && t.desired !== filter.desired) continue;
      if (filter.name !== undefined && t.name !== filter.name) continue;
      if (filter.service !== undefined && t.service?.name !== filter.service) continue;
      out.push(t);
    }
    return out.sort(byId);
  }

  /** Pending tasks in queue order (oldest first): what the scheduler places. */
  pendingQueue(): Task[] {
    return [...this.pending.keys()].map((id) => this.tasks.get(id)!);
  }

  /** Non-terminal tasks placed on a node (what its worker should run or stop), sorted by id. */
  onNode(nodeId: string): Task[] {
    const ids = this.usageByNode.get(nodeId)?.tasks;
    return ids === undefined ? [] : [...ids].sort().map((id) => this.tasks.get(id)!);
  }

  /** Terminal tasks the restart policy will restart, soonest first (for the restart loop). */
  awaitingRestart(): Task[] {
    const out: Task[] = [];
    for (const t of this.tasks.values()) if (t.nextRestartAt !== undefined && t.desired === 'running' && isTerminal(t.state)) out.push(t);
    return out.sort((a, b) => a.nextRestartAt! - b.nextRestartAt! || byId(a, b));
  }

  /** Resources reserved on a node by its non-terminal tasks. */
  usageOf(nodeId: string): NodeUsage {
    const u = this.usageByNode.get(nodeId);
    if (u === undefined) return { cpu: 0, memory: 0, tasks: 0, hostPorts: [] };
    return { cpu: u.cpu, memory: u.memory, tasks: u.tasks.size, hostPorts: [...u.ports.keys()].sort() };
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/**
 * Why a terminal task may not be removed by an operator (checked by the route,
 * manager/task-remove.ts) or the garbage collector (re-checked on apply, state/task-gc.ts);
 * undefined: it may. Its restart is pending, or it is a service's task (the service prunes its own).
 */
export function removeRefusal(task: Task): string | undefined {
  if (task.service !== undefined) return `it belongs to service '${task.service.name}' (use 'flotilla service scale' or 'flotilla service rm')`;
  if (task.desired === 'running' && task.nextRestartAt !== undefined) return 'its restart is pending; stop it first (or use force)';
  return undefined;
}

/**
 * Task specs re-validated on apply, memoised per template (protocol/spec-memo.ts): a batch of
 * tasks from one template is validated once and its tasks share one frozen copy of it. Pure
 * (a hit gives what a full parse gives); a miss only costs a parse.
 */
const specMemo = new SpecMemo(256);
function parseSpecCached(input: unknown): TaskSpec {
  return specMemo.parse(input, { allowHostMounts: true });
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
    ...(t.service === undefined ? {} : { service: t.service }),
    ...withHealth('health' in c ? c.health : t.health),
    // The bindings belong to one attempt on one node: another attempt or node reports its own.
    ...withPorts('ports' in c ? c.ports : (c.attempt ?? t.attempt) === t.attempt && (c.node === undefined || c.node === t.node) ? t.ports : undefined),
  };
}

function withPorts(p: Task['ports']): Pick<Task, 'ports'> {
  return p === undefined ? {} : { ports: p };
}

/**
 * Why `task.report` would ignore this report for `task` (null: it applies and changes the
 * task). One place decides, for the apply and for the leader, which drops such reports before
 * proposing them (a worker registering again after a leader change reports every task it
 * runs, almost all unchanged: proposing them would send them through the log for nothing).
 */
export function reportIgnored(task: Task | undefined, r: Omit<TaskReport, 'taskId' | 'at'>): string | null {
  if (task === undefined) return 'no such task';
  if (task.node !== r.nodeId) return task.node === null ? 'task is not assigned to a node' : `task is assigned to ${task.node}`;
  if (r.attempt !== undefined && r.attempt !== task.attempt) return `report is for attempt ${r.attempt}, task is on attempt ${task.attempt}`;
  if (isTerminal(task.state)) return `task is already ${task.state}`;
  if (STATE_RANK[r.state] < STATE_RANK[task.state]) return `task is already ${task.state}`;
  if (r.state === task.state && !(r.detail !== undefined && r.detail !== task.detail) && !healthChanged(r.health, task.health) && !portsChanged(r.ports, task.ports)) {
    return 'no change';
  }
  return null;
}

/** Whether a report's port bindings change the task's (a report without any changes nothing). */
function portsChanged(reported: Task['ports'], known: Task['ports']): boolean {
  if (reported === undefined) return false;
  return JSON.stringify(reported.map((p) => [p.container, p.hostPort, p.hostIp ?? ''])) !== JSON.stringify((known ?? []).map((p) => [p.container, p.hostPort, p.hostIp ?? '']));
}

function withHealth(h: Task['health']): Pick<Task, 'health'> {
  return h === undefined ? {} : { health: h };
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
