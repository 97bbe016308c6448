// Service specs: "keep N replicas of this task running, update them a few at a time".
//
// A service spec is a task template (every field of a task spec, src/protocol/spec.ts) plus
// `replicas`, an `update` policy and an optional `health` check. Users write it flat, the task
// fields beside the service fields:
//
//   { "name": "web", "replicas": 4, "driver": "process",
//     "containers": [{ "command": ["node", "server.js"] }],
//     "update": { "parallelism": 2, "order": "start-first", "failureAction": "rollback" },
//     "health": { "type": "http", "port": 8080, "path": "/healthz" } }
//
// `parseServiceSpec` turns untrusted input into a fully defaulted `ServiceSpec` (template and
// service settings apart) or throws one `FlotillaError('bad_request')` whose details list every
// bad field, the task template's and the service's together, by the path the user wrote.
// `serviceSpecInput` gives the flat form back, so parse(serviceSpecInput(parse(x))) is
// parse(x): the state machine re-validates what it applies.
//
// The template (task spec + health check) is what a rolling update replaces; `replicas` and
// the update policy are service settings that change without replacing any task.
//
// Pure module: no IO, no clocks, no randomness.

import { z } from 'zod';
import { FlotillaError, type ErrorDetail } from './errors.js';
import { detailsMessage, issueMessage, issuesToDetails, parseTaskSpec, type ParseTaskSpecOptions, type TaskSpec } from './spec.js';
import { durationSchema, formatDuration, HealthCheckSchema, intIn, normalizeHealthCheck, tryDuration, type HealthCheck } from './health.js';

// Health checks and durations live in health.ts (a plain task spec may carry a check too).
export { DEFAULT_HEALTH_TIMING, HEALTH_CHECK_TYPES, formatDuration, tryDuration, type HealthCheck, type HealthCheckType } from './health.js';

// ---------------------------------------------------------------------------------------------
// Types

export type UpdateOrder = 'stop-first' | 'start-first';
export type FailureAction = 'pause' | 'rollback' | 'continue';

export const UPDATE_ORDERS: readonly UpdateOrder[] = ['stop-first', 'start-first'];
export const FAILURE_ACTIONS: readonly FailureAction[] = ['pause', 'rollback', 'continue'];

/** How a changed template replaces the running tasks. */
export interface UpdatePolicy {
  /** Slots replaced per batch (>= 1). */
  parallelism: number;
  /** Pause after a batch's monitor period before the next batch starts (ms). */
  delayMs: number;
  /**
   * stop-first: stop a slot's old task, then start its new one (no slot ever runs two tasks).
   * start-first: start the new task beside the old one and stop the old one once the new one
   * is ready (needs room for the extra tasks; ready replicas never drop).
   */
  order: UpdateOrder;
  /** How long a batch's new tasks must stay ready before the batch counts as done (ms). */
  monitorMs: number;
  /** Fraction of the replicas whose new task may fail before `failureAction` (0..1). */
  maxFailureRatio: number;
  /** What a failed update does: pause where it is, roll back to the previous template, or go on. */
  failureAction: FailureAction;
}

/** What a rolling update replaces: the task spec and its health check. */
export interface ServiceTemplate {
  task: TaskSpec;
  health: HealthCheck | null;
}

/**
 * A port the service publishes. `ingress` (the default): the routing mesh serves `published`
 * on every worker's address and spreads connections over the ready replicas, which listen on
 * `target`. `host`: today's per-node port — it becomes the task's port spec
 * `{ container: target, host: published }` (so `publish` keeps only the ingress entries).
 */
export interface PublishSpec {
  published: number;
  target: number;
  protocol: 'tcp';
  mode: 'ingress';
}

export const PUBLISH_MODES = ['ingress', 'host'] as const;

export interface ServiceSpec {
  /** DNS label; its tasks are the slots `name.1` … `name.replicas`. */
  name: string;
  replicas: number;
  /** Ports served by the routing mesh (ingress mode). Absent in specs stored before the mesh. */
  publish?: PublishSpec[];
  update: UpdatePolicy;
  template: ServiceTemplate;
}

// The state of a service's rolling update (replicated in the service record).

export type UpdateState =
  /** No update has run since the service was created. */
  | 'none'
  | 'updating'
  /** A failed update that stopped where it was (failureAction pause, or no previous template). */
  | 'paused'
  | 'completed'
  | 'rolling_back'
  /** A rollback that failed too; stopped where it was. */
  | 'rollback_paused'
  | 'rolled_back';

export const ACTIVE_UPDATE_STATES: ReadonlySet<UpdateState> = new Set<UpdateState>(['updating', 'rolling_back']);

/** The update (or rollback) a service is in, or was in last: replicated in the service record. */
export interface UpdateStatus {
  state: UpdateState;
  /** The version the update moves to (the service's current version while it runs). */
  target: number;
  /** The version it moves away from (null for a new service). */
  from: number | null;
  /** When it started (leader wall time in the command). */
  startedAt: number;
  /** Log index of the command that started it: tasks created after it are the update's own. */
  startIndex: number;
  /** Batches started so far. */
  batches: number;
  /** Human-readable progress or the reason it paused / rolled back. */
  message: string;
  /** When this status was last changed. */
  updatedAt: number;
}

export const MAX_REPLICAS = 1000;

export const DEFAULT_UPDATE_POLICY: Readonly<UpdatePolicy> = Object.freeze({
  parallelism: 1,
  delayMs: 0,
  order: 'stop-first',
  monitorMs: 5000,
  maxFailureRatio: 0,
  failureAction: 'rollback',
});

// ---------------------------------------------------------------------------------------------
// Durations (tryDuration and formatDuration: health.ts)

/** Like `tryDuration` but throws `bad_request` naming `what` (e.g. "--update-delay"). */
export function parseDuration(input: string | number, what = 'duration'): number {
  const n = tryDuration(input);
  if (n === undefined) {
    throw new FlotillaError('bad_request', `Cannot parse ${what} ${JSON.stringify(input)} as it must be milliseconds or a duration such as 500ms, 5s, 1m30s`);
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// Schema of the service fields (the task fields are parsed by parseTaskSpec)

const SERVICE_FIELDS = ['replicas', 'update', 'health', 'publish'] as const;

const HOUR = 3_600_000;

const UpdateSchema = z
  .strictObject(
    {
      parallelism: intIn(1, MAX_REPLICAS).default(DEFAULT_UPDATE_POLICY.parallelism),
      delayMs: durationSchema(HOUR).default(DEFAULT_UPDATE_POLICY.delayMs),
      order: z.enum(['stop-first', 'start-first']).default(DEFAULT_UPDATE_POLICY.order),
      monitorMs: durationSchema(HOUR).default(DEFAULT_UPDATE_POLICY.monitorMs),
      maxFailureRatio: z
        .number({ error: 'must be a number from 0 to 1' })
        .min(0, { error: 'must be a number from 0 to 1' })
        .max(1, { error: 'must be a number from 0 to 1' })
        .default(DEFAULT_UPDATE_POLICY.maxFailureRatio),
      failureAction: z.enum(['pause', 'rollback', 'continue']).default(DEFAULT_UPDATE_POLICY.failureAction),
    },
    { error: (iss) => (iss.code === 'invalid_type' ? 'must be an object' : undefined) },
  )
  .prefault({});

const PUBLISH_SHORTHAND_RE = /^\s*(\d+):(\d+)(?:\/(tcp))?\s*$/i;

/** `{ published, target, protocol?, mode? }` or the shorthand "8080:80" (ingress). */
const PublishSchema = z.preprocess(
  (v) => {
    if (typeof v !== 'string') return v;
    const m = PUBLISH_SHORTHAND_RE.exec(v);
    if (m === null) return v;
    return { published: Number(m[1]), target: Number(m[2]) };
  },
  z.strictObject(
    {
      published: intIn(1, 65535),
      target: intIn(1, 65535),
      protocol: z.literal('tcp', { error: "must be 'tcp' (the routing mesh carries TCP)" }).default('tcp'),
      mode: z.enum(PUBLISH_MODES, { error: "must be 'ingress' or 'host'" }).default('ingress'),
    },
    { error: (iss) => (iss.code === 'invalid_type' ? 'must be a port like {"published": 8080, "target": 80} or "8080:80"' : undefined) },
  ),
);

const ServiceFieldsSchema = z.object({
  replicas: intIn(0, MAX_REPLICAS).default(1),
  publish: z.array(PublishSchema).max(64, { error: 'must list at most 64 ports' }).default([]),
  update: UpdateSchema,
  health: HealthCheckSchema.optional(),
});

// ---------------------------------------------------------------------------------------------
// Parsing

export interface ParseServiceSpecOptions extends Pick<ParseTaskSpecOptions, 'allowHostMounts'> {
  /** Verb used in messages: "Cannot <action> as …". Default "create service". */
  action?: string;
}

/**
 * Validate and normalise a service spec (flat: task fields beside `replicas`, `update`,
 * `health`). Throws one `FlotillaError('bad_request')` listing every bad field.
 */
export function parseServiceSpec(input: unknown, opts: ParseServiceSpecOptions = {}): ServiceSpec {
  const action = opts.action ?? 'create service';
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    const details: ErrorDetail[] = [{ path: '', message: 'must be an object' }];
    throw new FlotillaError('bad_request', detailsMessage(action, details, 'the spec'), { details });
  }
  const taskInput: Record<string, unknown> = {};
  const serviceInput: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(input)) {
    if ((SERVICE_FIELDS as readonly string[]).includes(k)) serviceInput[k] = v;
    else taskInput[k] = v;
  }
  const details: ErrorDetail[] = [];
  let task: TaskSpec | undefined;
  try {
    task = parseTaskSpec(taskInput, { allowHostMounts: opts.allowHostMounts, action });
  } catch (err) {
    if (!FlotillaError.is(err, 'bad_request')) throw err;
    details.push(...(err.details ?? [{ path: '', message: err.message }]));
  }
  const svc = ServiceFieldsSchema.safeParse(serviceInput, { error: issueMessage });
  if (!svc.success) details.push(...issuesToDetails(svc.error.issues));

  let health: HealthCheck | null = null;
  if (svc.success && svc.data.health !== undefined) {
    const n = normalizeHealthCheck(svc.data.health, task?.containers.map((c) => c.name) ?? []);
    if (n.problem !== undefined) details.push({ path: 'health.container', message: n.problem });
    health = n.check;
  }
  const publish: PublishSpec[] = [];
  if (svc.success && task !== undefined) publishInto(task, svc.data.publish, publish, details);
  // Every field path once, in the order the user is most likely to read them.
  const seen = new Set<string>();
  const unique = details.filter((d) => (seen.has(d.path) ? false : (seen.add(d.path), true)));
  if (unique.length > 0 || task === undefined || !svc.success) {
    throw new FlotillaError('bad_request', detailsMessage(action, unique, 'the spec'), { details: unique });
  }
  const u = svc.data.update;
  return {
    name: task.name,
    replicas: svc.data.replicas,
    ...(publish.length > 0 ? { publish } : {}),
    update: {
      parallelism: u.parallelism,
      delayMs: u.delayMs,
      order: u.order,
      monitorMs: u.monitorMs,
      maxFailureRatio: u.maxFailureRatio,
      failureAction: u.failureAction,
    },
    template: { task, health },
  };
}

/** The flat input form of a spec (what a user would write); parsing it gives the spec back. */
export function serviceSpecInput(spec: ServiceSpec): Record<string, unknown> {
  return {
    ...spec.template.task,
    name: spec.name,
    replicas: spec.replicas,
    ...(spec.publish !== undefined && spec.publish.length > 0 ? { publish: spec.publish.map((p) => ({ ...p })) } : {}),
    update: { ...spec.update },
    ...(spec.template.health !== null ? { health: { ...spec.template.health } } : {}),
  };
}

type PublishIn = { published: number; target: number; protocol: 'tcp'; mode: 'ingress' | 'host' };

/**
 * Sort the parsed `publish` entries: host mode becomes a port of the task's first container
 * (`{ container: target, host: published }`); ingress entries stay in `out`. A process-driver
 * task binds `target` on its node's address itself, so an ingress entry also reserves
 * `target` as a host port of the task (the scheduler then never puts two replicas that would
 * bind the same port on one node). A docker task's `target` is a port in its own network
 * namespace, published by the engine on a host port it picks (nothing to reserve). Each entry is added once: parsing the flat form again
 * gives the same spec.
 */
function publishInto(task: TaskSpec, input: readonly PublishIn[], out: PublishSpec[], details: ErrorDetail[]): void {
  const container = task.containers[0];
  if (container === undefined) return;
  const hostPort = (host: number, target: number, where: string): void => {
    const same = container.ports.find((p) => p.host === host && p.protocol === 'tcp');
    if (same === undefined) container.ports.push({ container: target, host, protocol: 'tcp' });
    else if (same.container !== target) details.push({ path: where, message: `conflicts with the container port ${host}:${same.container}/tcp of containers[0].ports` });
  };
  const published = new Map<number, number>();
  input.forEach((p, i) => {
    const where = `publish[${i}]`;
    const prev = published.get(p.published);
    if (prev !== undefined) {
      details.push({ path: `${where}.published`, message: `must be unique (${p.published} is also published by publish[${prev}])` });
      return;
    }
    published.set(p.published, i);
    if (p.mode === 'host') {
      hostPort(p.published, p.target, `${where}.published`);
      return;
    }
    if (task.driver === 'process' && p.target === p.published) {
      details.push({ path: `${where}.target`, message: `must differ from 'published' for the process driver (the replica and the routing mesh both listen on the node's address)` });
      return;
    }
    const clash = task.containers.flatMap((c) => c.ports).find((q) => q.host === p.published && q.protocol === 'tcp');
    if (clash !== undefined) {
      details.push({ path: `${where}.published`, message: `must differ from the task's host port ${p.published}/tcp (the routing mesh listens on it on every worker)` });
      return;
    }
    // A docker replica's target is published by its engine on a dynamic host port (the worker
    // reports it back); a process replica binds `target` on its node itself.
    if (task.driver === 'process') hostPort(p.target, p.target, `${where}.target`);
    out.push({ published: p.published, target: p.target, protocol: 'tcp', mode: 'ingress' });
  });
}

/** The ingress ports of a service (none for specs stored before the mesh). */
export function ingressPorts(spec: Pick<ServiceSpec, 'publish'>): PublishSpec[] {
  return spec.publish ?? [];
}

/**
 * Validate a replica count (scale). Throws `bad_request` with the detail path `replicas`.
 */
export function parseReplicas(input: unknown): number {
  const n = typeof input === 'string' && /^\s*\d+\s*$/.test(input) ? Number(input) : input;
  if (typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= MAX_REPLICAS) return n;
  const message = input === undefined ? 'is required' : `must be an integer from 0 to ${MAX_REPLICAS}`;
  throw new FlotillaError('bad_request', `Cannot scale service as 'replicas' ${message}`, { details: [{ path: 'replicas', message }] });
}

// ---------------------------------------------------------------------------------------------
// Comparing templates

/** JSON with sorted object keys: equal for equal values however the objects were built. */
export function stableJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map((v) => stableJson(v === undefined ? null : v)).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${stableJson(v)}`).join(',')}}`;
}

/** Whether two templates would run the same tasks (a rolling update is needed otherwise). */
export function sameTemplate(a: ServiceTemplate, b: ServiceTemplate): boolean {
  return stableJson(a) === stableJson(b);
}

/** The name shown for a slot's task: `web.3`. */
export function slotName(service: string, slot: number): string {
  return `${service}.${slot}`;
}
