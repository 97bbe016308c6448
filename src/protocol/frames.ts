// Session frames (see src/manager/dispatch-protocol.ts): one binary WebSocket message is byte 0
// = SESSION_PROTOCOL_VERSION, then one MessagePack-encoded object (plain maps, no msgpackr
// records). Everything the worker decodes from a manager is validated here before the agent
// looks at it; a frame that fails is a protocol error that ends the session.
import { Packr } from 'msgpackr';
import { z } from 'zod';
import {
  MAX_SESSION_FRAME,
  SESSION_PROTOCOL_VERSION,
  type ManagerToWorker,
  type WorkerToManager,
} from './session.js';
import { FlotillaError } from './errors.js';
import { DeliveredSecretsSchema, RESOURCE_NAME_RE } from './secrets.js';

const packr = new Packr({ useRecords: false, int64AsType: 'number' });

/** Encode one session frame. Throws `too_large` beyond MAX_SESSION_FRAME. */
export function encodeSessionFrame(msg: WorkerToManager | ManagerToWorker | Record<string, unknown>): Buffer {
  const body = packr.pack(msg);
  const frame = Buffer.allocUnsafe(1 + body.length);
  frame[0] = SESSION_PROTOCOL_VERSION;
  body.copy(frame, 1);
  if (frame.length > MAX_SESSION_FRAME) {
    throw new FlotillaError('too_large', `Cannot send a '${String((msg as { t?: unknown }).t)}' frame of ${frame.length} bytes as frames must be at most ${MAX_SESSION_FRAME} bytes`);
  }
  return frame;
}

/** Decode one session frame into an object (not validated as a message yet). */
export function decodeSessionFrame(data: Uint8Array): Record<string, unknown> {
  if (data.length > MAX_SESSION_FRAME) throw new FlotillaError('too_large', `frame of ${data.length} bytes exceeds ${MAX_SESSION_FRAME} bytes`);
  if (data.length < 2) throw new FlotillaError('bad_request', `frame of ${data.length} bytes is too short`);
  if (data[0] !== SESSION_PROTOCOL_VERSION) {
    throw new FlotillaError('bad_request', `frame has protocol version ${data[0]}, expected ${SESSION_PROTOCOL_VERSION}`);
  }
  let value: unknown;
  try {
    value = packr.unpack(data.subarray(1));
  } catch (e) {
    throw new FlotillaError('bad_request', `frame is not valid MessagePack: ${(e as Error).message}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value) || value instanceof Uint8Array) {
    throw new FlotillaError('bad_request', 'frame payload is not an object');
  }
  return value as Record<string, unknown>;
}

// ---- manager → worker validation

const addr = z.string().min(1).max(1024);
const managersList = z.array(addr).max(64);

/** An assigned task as the worker accepts it; `spec` is re-validated per task by the agent. */
const AssignedTaskSchema = z.looseObject({
  taskId: z.string().min(1).max(128),
  spec: z.unknown(),
  desired: z.enum(['running', 'shutdown']),
  attempt: z.number().int().min(1),
});

const ManagerToWorkerSchema = z.discriminatedUnion('t', [
  z.looseObject({ t: z.literal('redirect'), leader: addr.nullable(), managers: managersList }),
  z.looseObject({
    t: z.literal('welcome'),
    sessionId: z.string().min(1).max(256),
    heartbeatMs: z.number().int().min(1).max(3_600_000),
    managers: managersList,
    term: z.number().int().min(0),
    clusterId: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/).optional(),
  }),
  z.looseObject({ t: z.literal('reject'), reason: z.string().max(4096) }),
  z.looseObject({
    t: z.literal('assignments'),
    tasks: z.array(AssignedTaskSchema).max(100_000),
    secrets: DeliveredSecretsSchema.optional(),
    dropVolumes: z.array(z.string().regex(RESOURCE_NAME_RE)).max(10_000).optional(),
  }),
  z.looseObject({ t: z.literal('managers'), managers: managersList }),
  z.looseObject({
    t: z.literal('endpoints'),
    ports: z
      .array(
        z.looseObject({
          service: z.string().min(1).max(128),
          published: z.number().int().min(1).max(65535),
          protocol: z.literal('tcp'),
          backends: z
            .array(z.looseObject({ taskId: z.string().min(1).max(128), host: z.string().min(1).max(253), port: z.number().int().min(1).max(65535) }))
            .max(10_000),
        }),
      )
      .max(10_000),
    names: z
      .array(z.looseObject({ service: z.string().min(1).max(128), mesh: z.boolean(), tasks: z.array(z.string().min(1).max(253)).max(10_000) }))
      .max(10_000)
      .optional(),
  }),
]);

/** Message types this worker knows; a newer manager's other types are ignored (see `isKnownManagerMessage`). */
const KNOWN_MANAGER_TYPES = new Set(['redirect', 'welcome', 'reject', 'assignments', 'managers', 'endpoints']);

/** Whether a decoded frame is of a type this worker knows (an unknown one is skipped, not a protocol error). */
export function isKnownManagerMessage(obj: Record<string, unknown>): boolean {
  return typeof obj.t === 'string' && KNOWN_MANAGER_TYPES.has(obj.t);
}

export type AssignedTaskIn = z.infer<typeof AssignedTaskSchema>;
export type ManagerMessage = z.infer<typeof ManagerToWorkerSchema>;

/** Validate a decoded frame as a manager → worker message; throws `bad_request` naming the problem. */
export function parseManagerMessage(obj: Record<string, unknown>): ManagerMessage {
  const r = ManagerToWorkerSchema.safeParse(obj);
  if (r.success) return r.data;
  const iss = r.error.issues[0];
  const where = iss === undefined || iss.path.length === 0 ? 'the message' : `'${iss.path.join('.')}'`;
  throw new FlotillaError('bad_request', `invalid '${String(obj.t)}' message: ${where} ${iss?.message ?? 'is invalid'}`);
}

// ---- worker → manager: usage (the only worker message validated by schema: it is new, and
// a bad one is dropped by the dispatcher without ending the session — it is an observation)

/** Tasks one `usage` message may carry. */
export const MAX_USAGE_TASKS = 10_000;

const millicores = z.number().finite().min(0).max(1e9);
const bytes = z.number().finite().min(0).max(Number.MAX_SAFE_INTEGER);

const UsageMsgSchema = z.looseObject({
  t: z.literal('usage'),
  at: z.number().finite().min(0),
  intervalMs: z.number().int().min(100).max(3_600_000),
  node: z.looseObject({ cpu: millicores, memory: bytes, cpuCapacity: millicores, memoryTotal: bytes }),
  tasks: z
    .array(z.looseObject({ taskId: z.string().min(1).max(128), attempt: z.number().int().min(1), cpu: millicores, memory: bytes }))
    .max(MAX_USAGE_TASKS),
});

export type UsageMessage = z.infer<typeof UsageMsgSchema>;

/** Validate a decoded frame as a worker's `usage` message; throws `bad_request` naming the problem. */
export function parseUsageMessage(obj: Record<string, unknown>): UsageMessage {
  const r = UsageMsgSchema.safeParse(obj);
  if (r.success) return r.data;
  const iss = r.error.issues[0];
  const where = iss === undefined || iss.path.length === 0 ? 'the message' : `'${iss.path.join('.')}'`;
  throw new FlotillaError('bad_request', `invalid 'usage' message: ${where} ${iss?.message ?? 'is invalid'}`);
}
