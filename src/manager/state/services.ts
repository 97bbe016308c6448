// The services: their records (spec, template versions, update status) and the service
// commands. A service's tasks live in the task table like any other, tagged with their service,
// slot and template version (`Task.service`); this table creates, stops and removes them
// through it.
//
// Template versions: every template a service has had gets a number. The record holds the
// current one (`spec.template`, `templateVersion`) and the previous one (`previous`), which a
// rollback makes current again — with its old number, so the tasks that never left it are
// already up to date and a rollback replaces only the tasks of the failed template. An update
// back to the previous template reuses its number the same way.
//
// The controller's decisions (service.task, service.stopTask, service.removeTask,
// service.progress, and an automatic service.rollback) are fenced by term, and each re-checks
// its precondition here: a task is created only for a slot within `replicas`, from the current
// template, and only if the slot has no live task (no live or stopping task when exclusive), so
// two leaders can never fill one slot twice.

import { FlotillaError, errorInfo } from '../../protocol/errors.js';
import {
  parseServiceSpec,
  sameTemplate,
  serviceSpecInput,
  type ServiceSpec,
  type ServiceTemplate,
  type UpdateStatus,
} from '../../protocol/service.js';
import type { EventLog, ServiceSummary } from './events.js';
import { fail, isTerminal, type ApplyResult, type QuotaGuard, type Task } from './model.js';
import type {
  ServiceCreateCommand,
  ServiceProgressCommand,
  ServiceRemoveCommand,
  ServiceRemoveTaskCommand,
  ServiceRollbackCommand,
  ServiceScaleCommand,
  ServiceStopTaskCommand,
  ServiceTaskCommand,
  ServiceUpdateCommand,
} from './service-commands.js';
import type { TaskTable } from './tasks.js';
import type { TaskSpec } from '../../protocol/spec.js';

/** What one service record costs in `stateBytes` (two templates and a status), estimated. */
export const SERVICE_BYTES_ESTIMATE = 8192;

export interface Service {
  name: string;
  /** The desired spec; `spec.template` is template version `templateVersion`. */
  spec: ServiceSpec;
  templateVersion: number;
  /** The template a rollback returns to. */
  previous: { version: number; template: ServiceTemplate } | null;
  /** The highest template version handed out (new templates get the next). */
  lastVersion: number;
  /** The rolling update in progress, or the last one. */
  update: UpdateStatus;
  createdAt: number;
  updatedAt: number;
  /** Log index of the last change. */
  version: number;
  /** Log index of the service.create. */
  createVersion: number;
}

/**
 * A task that is, or will again be after a restart in place, its slot's task: desired running
 * and not ended, or ended but to be restarted (by its policy, or at once when its node was lost).
 */
export function isLiveTask(t: Task): boolean {
  return t.desired === 'running' && (!isTerminal(t.state) || t.nextRestartAt !== undefined || t.state === 'lost');
}

/** A task told to stop that has not ended yet. */
export function isStoppingTask(t: Task): boolean {
  return t.desired === 'shutdown' && !isTerminal(t.state);
}

export function summarizeService(s: Service): ServiceSummary {
  return { name: s.name, replicas: s.spec.replicas, templateVersion: s.templateVersion, update: s.update, version: s.version };
}

export class ServiceTable {
  private services = new Map<string, Service>();
  /**
   * Task ids by service name (a removed service's too, until its tasks are gone): the tasks of
   * a service without a scan of all tasks. Derived data, pruned as tasks go (any `task.remove`).
   */
  private byService = new Map<string, Set<string>>();

  constructor(
    private readonly log: EventLog,
    private readonly quota: QuotaGuard,
    /** The task table (a getter: a restore replaces it). */
    private readonly tasks: () => TaskTable,
  ) {}

  static restore(log: EventLog, quota: QuotaGuard, tasks: () => TaskTable, services: Service[] | undefined, taskList: readonly Task[]): ServiceTable {
    const table = new ServiceTable(log, quota, tasks);
    for (const t of taskList) if (t.service !== undefined) table.index(t.service.name, t.id);
    for (const s of services ?? []) {
      if (typeof s !== 'object' || s === null || typeof s.name !== 'string' || typeof s.templateVersion !== 'number') {
        throw new FlotillaError('bad_request', 'Cannot restore state as a service record is malformed');
      }
      table.services.set(s.name, s);
    }
    return table;
  }

  get size(): number {
    return this.services.size;
  }

  get(name: string): Service | undefined {
    return this.services.get(name);
  }

  /** Services sorted by name. */
  list(): Service[] {
    return [...this.services.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  image(): Service[] {
    return this.list();
  }

  /** The tasks of service `name` (or of a removed service of that name), sorted by id. */
  tasksOf(name: string): Task[] {
    const ids = this.byService.get(name);
    if (ids === undefined) return [];
    const out: Task[] = [];
    for (const id of ids) {
      const t = this.tasks().get(id);
      if (t === undefined || t.service?.name !== name) ids.delete(id);
      else out.push(t);
    }
    if (ids.size === 0) this.byService.delete(name);
    return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /** Names that have tasks: services, and removed services whose tasks are still there. */
  taskOwners(): string[] {
    return [...this.byService.keys()].sort();
  }

  private index(name: string, id: string): void {
    let ids = this.byService.get(name);
    if (ids === undefined) this.byService.set(name, (ids = new Set()));
    ids.add(id);
  }

  // -------------------------------------------------------------------------------------------
  // Commands from the API

  create(cmd: ServiceCreateCommand): ApplyResult<Service> {
    const spec = revalidate(cmd.spec, 'create service');
    if ('error' in spec) return spec.error;
    const s = spec.spec;
    if (this.services.has(s.name)) return fail('conflict', `Cannot create service '${s.name}' as a service with that name already exists`);
    const overQuota = this.quota(`create service '${s.name}'`, SERVICE_BYTES_ESTIMATE, cmd.quota);
    if (overQuota !== undefined) return overQuota;
    const index = this.log.entry.index;
    const svc: Service = {
      name: s.name,
      spec: s,
      templateVersion: 1,
      previous: null,
      lastVersion: 1,
      update: { state: 'none', target: 1, from: null, startedAt: cmd.at, startIndex: index, batches: 0, message: '', updatedAt: cmd.at },
      createdAt: cmd.at,
      updatedAt: cmd.at,
      version: index,
      createVersion: index,
    };
    this.write(svc, 'created');
    return { ok: true, value: svc };
  }

  update(cmd: ServiceUpdateCommand): ApplyResult<Service> {
    const cur = this.services.get(cmd.name);
    if (cur === undefined) return notFound('update', cmd.name);
    const spec = revalidate(cmd.spec, 'update service');
    if ('error' in spec) return spec.error;
    const s = spec.spec;
    if (s.name !== cur.name) return fail('bad_request', `Cannot update service '${cur.name}' as the spec names another service ('${s.name}')`);
    const index = this.log.entry.index;
    if (sameTemplate(s.template, cur.spec.template)) {
      // Replicas and update policy only: no task is replaced.
      this.write({ ...cur, spec: { ...s, template: cur.spec.template }, updatedAt: cmd.at, version: index }, 'spec');
      return { ok: true, value: this.services.get(cur.name)! };
    }
    // A new template, or the previous one again (which keeps its number).
    const back = cur.previous !== null && sameTemplate(s.template, cur.previous.template);
    const target = back ? cur.previous!.version : cur.lastVersion + 1;
    const next: Service = {
      ...cur,
      spec: s,
      templateVersion: target,
      previous: { version: cur.templateVersion, template: cur.spec.template },
      lastVersion: Math.max(cur.lastVersion, target),
      update: {
        state: 'updating',
        target,
        from: cur.templateVersion,
        startedAt: cmd.at,
        startIndex: index,
        batches: 0,
        message: `update to version ${target} started`,
        updatedAt: cmd.at,
      },
      updatedAt: cmd.at,
      version: index,
    };
    this.write(next, 'spec');
    return { ok: true, value: next };
  }

  scale(cmd: ServiceScaleCommand): ApplyResult<Service> {
    const cur = this.services.get(cmd.name);
    if (cur === undefined) return notFound('scale', cmd.name);
    if (cmd.replicas === cur.spec.replicas) return { ok: true, value: cur };
    const spec = revalidate({ ...cur.spec, replicas: cmd.replicas }, 'scale service');
    if ('error' in spec) return spec.error;
    this.write({ ...cur, spec: spec.spec, updatedAt: cmd.at, version: this.log.entry.index }, 'scale');
    return { ok: true, value: this.services.get(cur.name)! };
  }

  /**
   * Secret `secret` got a new value: every service whose template names it moves to a new
   * template version with the same template (a rolling update by its update policy), so its
   * tasks are replaced and the new ones read the new value. Returns the services rolled.
   * (A rollback returns to the old version number; the secret keeps its new value.)
   */
  rollForSecret(secret: string, at: number): string[] {
    const rolled: string[] = [];
    const index = this.log.entry.index;
    for (const cur of this.list()) {
      if (!(cur.spec.template.task.secrets ?? []).includes(secret)) continue;
      const target = cur.lastVersion + 1;
      this.write(
        {
          ...cur,
          templateVersion: target,
          previous: { version: cur.templateVersion, template: cur.spec.template },
          lastVersion: target,
          update: { state: 'updating', target, from: cur.templateVersion, startedAt: at, startIndex: index, batches: 0, message: `secret '${secret}' updated: rolling to version ${target}`, updatedAt: at },
          updatedAt: at,
          version: index,
        },
        'spec',
      );
      rolled.push(cur.name);
    }
    return rolled;
  }

  rollback(cmd: ServiceRollbackCommand): ApplyResult<Service> {
    const cur = this.services.get(cmd.name);
    if (cur === undefined) return notFound('roll back', cmd.name);
    if (cur.previous === null) return fail('conflict', `Cannot roll back service '${cmd.name}' as it has no previous template`);
    if (cmd.from !== undefined && (cmd.from !== cur.templateVersion || cur.update.state !== 'updating')) {
      return fail('conflict', `Cannot roll back service '${cmd.name}' from version ${cmd.from} as it is on version ${cur.templateVersion} (${cur.update.state})`);
    }
    const index = this.log.entry.index;
    const target = cur.previous.version;
    const next: Service = {
      ...cur,
      spec: { ...cur.spec, template: cur.previous.template },
      templateVersion: target,
      previous: { version: cur.templateVersion, template: cur.spec.template },
      update: {
        state: 'rolling_back',
        target,
        from: cur.templateVersion,
        startedAt: cmd.at,
        startIndex: index,
        batches: 0,
        message: cmd.reason ?? `rollback to version ${target} requested`,
        updatedAt: cmd.at,
      },
      updatedAt: cmd.at,
      version: index,
    };
    this.write(next, 'rollback');
    return { ok: true, value: next };
  }

  remove(cmd: ServiceRemoveCommand): ApplyResult<{ removed: string; stopping: string[] }> {
    const cur = this.services.get(cmd.name);
    if (cur === undefined) return notFound('remove', cmd.name);
    const stopping: string[] = [];
    for (const t of this.tasksOf(cmd.name)) {
      if (t.desired === 'running') {
        this.tasks().stop({ type: 'task.stop', id: t.id, at: cmd.at, reason: `service ${cmd.name} removed` });
        if (!isTerminal(this.tasks().get(t.id)!.state)) stopping.push(t.id);
      }
    }
    this.services.delete(cmd.name);
    this.log.emit({ type: 'service.updated', service: summarizeService({ ...cur, version: this.log.entry.index }), change: 'removed' });
    return { ok: true, value: { removed: cmd.name, stopping } };
  }

  // -------------------------------------------------------------------------------------------
  // The controller's decisions (fenced by term in ClusterState)

  progress(cmd: ServiceProgressCommand): ApplyResult<Service> {
    const cur = this.services.get(cmd.name);
    if (cur === undefined) return notFound('record progress of', cmd.name);
    if (cmd.status.target !== cur.templateVersion || cmd.status.startIndex !== cur.update.startIndex) {
      return fail('conflict', `Cannot record progress of service '${cmd.name}' as its update changed meanwhile`);
    }
    this.write({ ...cur, update: cmd.status, updatedAt: cmd.at, version: this.log.entry.index }, 'status');
    return { ok: true, value: this.services.get(cur.name)! };
  }

  createTask(cmd: ServiceTaskCommand): ApplyResult<Task> {
    const cur = this.services.get(cmd.name);
    if (cur === undefined) return notFound('create a task of', cmd.name);
    const what = `Cannot create task ${cmd.name}.${cmd.slot}`;
    if (cmd.version !== cur.templateVersion) return fail('conflict', `${what} of version ${cmd.version} as the service is on version ${cur.templateVersion}`);
    if (cmd.slot > cur.spec.replicas) return fail('conflict', `${what} as the service has ${cur.spec.replicas} replicas`);
    const inSlot = this.tasksOf(cmd.name).filter((t) => t.service!.slot === cmd.slot);
    const blocker = cmd.exclusive
      ? inSlot.find((t) => isLiveTask(t) || isStoppingTask(t))
      : inSlot.find((t) => isLiveTask(t) && t.service!.version === cmd.version);
    if (blocker !== undefined) return fail('conflict', `${what} as the slot has task '${blocker.id}' (${blocker.state})`);
    const created = this.tasks().create(
      { type: 'task.create', id: cmd.id, spec: templateTaskSpec(cur.spec.template), at: cmd.at, ...(cmd.quota !== undefined ? { quota: cmd.quota } : {}) },
      { name: cmd.name, slot: cmd.slot, version: cmd.version },
    );
    if (created.ok) this.index(cmd.name, cmd.id);
    return created;
  }

  stopTask(cmd: ServiceStopTaskCommand): ApplyResult<Task> {
    const t = this.tasks().get(cmd.taskId);
    if (t === undefined || t.service?.name !== cmd.name) return fail('not_found', `Cannot stop task '${cmd.taskId}' as service '${cmd.name}' has no such task`);
    return this.tasks().stop({ type: 'task.stop', id: t.id, at: cmd.at, reason: cmd.reason ?? `stopped by service ${cmd.name}` });
  }

  removeTask(cmd: ServiceRemoveTaskCommand): ApplyResult<{ removed: string }> {
    const t = this.tasks().get(cmd.taskId);
    if (t === undefined || t.service === undefined) return fail('not_found', `Cannot remove task '${cmd.taskId}' as it is no service's task`);
    if (isLiveTask(t)) return fail('conflict', `Cannot remove task '${cmd.taskId}' as it is still its slot's task`);
    return this.tasks().remove({ type: 'task.remove', id: t.id, at: cmd.at });
  }

  private write(s: Service, change: 'created' | 'spec' | 'scale' | 'rollback' | 'status'): void {
    this.services.set(s.name, s);
    this.log.emit({ type: 'service.updated', service: summarizeService(s), change });
  }
}

/** The spec of a task a template creates: the task spec with the template's health check. */
export function templateTaskSpec(t: ServiceTemplate): TaskSpec {
  return t.health === null ? t.task : { ...t.task, health: t.health };
}

function notFound(verb: string, name: string): ApplyResult<never> {
  return fail('not_found', `Cannot ${verb} service '${name}' as it does not exist`);
}

/** Parse a logged spec again (the log is input like any other); host mounts were the edge's call. */
function revalidate(spec: ServiceSpec, action: string): { spec: ServiceSpec } | { error: ApplyResult<never> } {
  try {
    return { spec: parseServiceSpec(serviceSpecInput(spec), { allowHostMounts: true, action }) };
  } catch (err) {
    return { error: { ok: false, error: FlotillaError.is(err) ? err.toInfo() : errorInfo('bad_request', String(err)) } };
  }
}
