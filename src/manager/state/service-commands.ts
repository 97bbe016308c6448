// The service commands: what the API (create, update, scale, rollback, remove) and the leader's
// services controller (progress, task create/stop/remove, automatic rollback) write to the log,
// and their zod schemas. The spec inside is re-validated when applied (see services.ts).

import { z } from 'zod';
import type { ServiceSpec, UpdateStatus } from '../../protocol/service.js';

/** A new service (its name is the spec's). */
export interface ServiceCreateCommand {
  type: 'service.create';
  spec: ServiceSpec;
  at: number;
  /** The state-size quota of the proposing manager (see KvPutCommand.quota). */
  quota?: number;
}
/**
 * A new spec for a service. A changed template (task spec or health check) starts a rolling
 * update; replicas and update policy change at once.
 */
export interface ServiceUpdateCommand {
  type: 'service.update';
  name: string;
  spec: ServiceSpec;
  at: number;
}
export interface ServiceScaleCommand {
  type: 'service.scale';
  name: string;
  replicas: number;
  at: number;
}
/**
 * Back to the previous template. By hand (no term), or the controller's automatic rollback of
 * a failed update (fenced by `term`, and only while the service is still on version `from`).
 */
export interface ServiceRollbackCommand {
  type: 'service.rollback';
  name: string;
  at: number;
  reason?: string;
  term?: number;
  from?: number;
}
/** Forget the service; its tasks are told to stop (the controller removes them once ended). */
export interface ServiceRemoveCommand {
  type: 'service.remove';
  name: string;
  at: number;
}
/** The controller's new update status (batch started, paused, completed, rolled back). */
export interface ServiceProgressCommand {
  type: 'service.progress';
  name: string;
  status: UpdateStatus;
  term: number;
  at: number;
}
/**
 * The controller creates slot `slot`'s task from template `version` (which must be current).
 * `exclusive`: only if the slot has no live and no stopping task; otherwise only if it has no
 * live task of that version (start-first).
 */
export interface ServiceTaskCommand {
  type: 'service.task';
  name: string;
  id: string;
  slot: number;
  version: number;
  exclusive: boolean;
  reason?: string;
  term: number;
  at: number;
  quota?: number;
}
export interface ServiceStopTaskCommand {
  type: 'service.stopTask';
  name: string;
  taskId: string;
  reason?: string;
  term: number;
  at: number;
}
/** Remove a finished service task (history beyond the limit, or a removed service's). */
export interface ServiceRemoveTaskCommand {
  type: 'service.removeTask';
  taskId: string;
  term: number;
  at: number;
}

export type ServiceCommand =
  | ServiceCreateCommand
  | ServiceUpdateCommand
  | ServiceScaleCommand
  | ServiceRollbackCommand
  | ServiceRemoveCommand
  | ServiceProgressCommand
  | ServiceTaskCommand
  | ServiceStopTaskCommand
  | ServiceRemoveTaskCommand;

export const SERVICE_COMMAND_TYPES = [
  'service.create',
  'service.update',
  'service.scale',
  'service.rollback',
  'service.remove',
  'service.progress',
  'service.task',
  'service.stopTask',
  'service.removeTask',
] as const satisfies readonly ServiceCommand['type'][];

/** Leader decisions among them (they carry the deciding term). */
export const FENCED_SERVICE_COMMANDS = ['service.progress', 'service.task', 'service.stopTask', 'service.removeTask'] as const satisfies readonly ServiceCommand['type'][];

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9._:-]*$/;
const idString = z
  .string()
  .min(1)
  .max(128)
  .regex(ID_RE, { error: "must be letters, digits, '.', '_', ':' or '-' (starting with a letter or digit)" });
const name = z.string().min(1).max(63);
const count = z.number().int().min(0);
const spec = z.custom<ServiceSpec>((v) => typeof v === 'object' && v !== null, { error: 'must be a service spec' });

const statusSchema = z.strictObject({
  state: z.enum(['none', 'updating', 'paused', 'completed', 'rolling_back', 'rollback_paused', 'rolled_back']),
  target: z.number().int().min(1),
  from: z.number().int().min(1).nullable(),
  startedAt: count,
  startIndex: count,
  batches: count,
  message: z.string().max(4096),
  updatedAt: count,
});

export const serviceCommandSchemas = [
  z.strictObject({ type: z.literal('service.create'), spec, at: count, quota: count.optional() }),
  z.strictObject({ type: z.literal('service.update'), name, spec, at: count }),
  z.strictObject({ type: z.literal('service.scale'), name, replicas: count, at: count }),
  z.strictObject({
    type: z.literal('service.rollback'),
    name,
    at: count,
    reason: z.string().max(4096).optional(),
    term: count.optional(),
    from: z.number().int().min(1).optional(),
  }),
  z.strictObject({ type: z.literal('service.remove'), name, at: count }),
  z.strictObject({ type: z.literal('service.progress'), name, status: statusSchema, term: count, at: count }),
  z.strictObject({
    type: z.literal('service.task'),
    name,
    id: idString,
    slot: z.number().int().min(1),
    version: z.number().int().min(1),
    exclusive: z.boolean(),
    reason: z.string().max(1024).optional(),
    term: count,
    at: count,
    quota: count.optional(),
  }),
  z.strictObject({ type: z.literal('service.stopTask'), name, taskId: idString, reason: z.string().max(1024).optional(), term: count, at: count }),
  z.strictObject({ type: z.literal('service.removeTask'), taskId: idString, term: count, at: count }),
] as const;
