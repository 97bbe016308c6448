// Secrets and named volumes at the edge: name rules, the references a task spec makes to them
// (`secrets: [dbpass]`, `volumes: [{name, path, readOnly}]`), the `-v NAME:/path[:ro]` shorthand,
// and what the API says about a secret (metadata only: a value never leaves the cluster through
// the API, see docs/security.md).
//
// Pure module: no IO, no clocks, no randomness.

import { z } from 'zod';
import { FlotillaError } from './errors.js';
import {
  MAX_SECRET_BYTES,
  MAX_TASK_SECRETS,
  MAX_TASK_VOLUMES,
  NAME_RULE,
  RESOURCE_NAME_RE,
  VOLUME_SHORTHAND_RE,
  parseResourceName,
  validResourceName,
  volumePathProblem,
  type VolumeMount,
} from './names.js';

export {
  MAX_SECRET_BYTES,
  MAX_TASK_SECRETS,
  MAX_TASK_VOLUMES,
  NAME_RULE,
  RESOURCE_NAME_RE,
  parseResourceName,
  parseVolumeFlag,
  validResourceName,
  type ResourceKind,
  type SecretInfo,
  type VolumeMount,
} from './names.js';

export const parseSecretName = (input: unknown, action?: string): string => parseResourceName('secret', input, action);
export const parseVolumeName = (input: unknown, action?: string): string => parseResourceName('volume', input, action);

// ---------------------------------------------------------------------------------------------
// Secret values

// Secret values are parsed on the manager (`parseSecretData` in src/manager/secrets.ts): the
// browser bundle, which imports this file's types, has no Buffer.

// ---------------------------------------------------------------------------------------------
// References in a task spec

const nameSchema = z.string({ error: (iss) => (iss.input === undefined ? 'is required' : 'must be a string') }).regex(RESOURCE_NAME_RE, { error: NAME_RULE });

const volumePathSchema = z
  .string({ error: (iss) => (iss.input === undefined ? 'is required' : 'must be an absolute path') })
  .superRefine((p, ctx) => {
    const problem = volumePathProblem(p);
    if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem, input: p });
  });

/** `secrets: ["dbpass", …]` in a task spec: distinct names. */
export const SecretRefsSchema = z
  .array(nameSchema, { error: (iss) => (iss.input === undefined ? 'is required' : 'must be an array of secret names') })
  .max(MAX_TASK_SECRETS)
  .superRefine((names, ctx) => {
    const seen = new Set<string>();
    names.forEach((n, i) => {
      if (seen.has(n)) ctx.addIssue({ code: 'custom', path: [i], message: `must be distinct ('${n}' is named twice)`, input: n });
      seen.add(n);
    });
  });

/** `volumes: [{name, path, readOnly?} | "NAME:/path[:ro]", …]`: distinct paths. */
export const VolumeMountsSchema = z
  .array(
    z.preprocess(
      (v) => {
        if (typeof v !== 'string') return v;
        const m = VOLUME_SHORTHAND_RE.exec(v);
        if (m === null) return v;
        const out: Record<string, unknown> = { name: m[1], path: m[2] };
        if (m[3] !== undefined) out.readOnly = m[3] === 'ro' ? true : m[3] === 'rw' ? false : m[3];
        return out;
      },
      z.strictObject(
        {
          name: nameSchema,
          path: volumePathSchema,
          readOnly: z.boolean({ error: "must be a boolean (or 'ro'/'rw' in the shorthand)" }).default(false),
        },
        { error: (iss) => (iss.code === 'invalid_type' ? 'must be a volume like {"name": "data", "path": "/data"} or "data:/data:ro"' : undefined) },
      ),
    ),
    { error: (iss) => (iss.input === undefined ? 'is required' : 'must be an array of volumes') },
  )
  .max(MAX_TASK_VOLUMES)
  .superRefine((vols, ctx) => {
    const paths = new Map<string, number>();
    vols.forEach((v, i) => {
      const prev = paths.get(v.path);
      if (prev !== undefined) ctx.addIssue({ code: 'custom', path: [i, 'path'], message: `must be distinct (${v.path} is also the path of volumes[${prev}])`, input: v.path });
      else paths.set(v.path, i);
    });
  });

/** The volume names a spec mounts, each once, in order. */
export function specVolumeNames(spec: { volumes?: readonly VolumeMount[] }): string[] {
  return [...new Set((spec.volumes ?? []).map((v) => v.name))];
}

/** The secret names a spec asks for (empty when none). */
export function specSecretNames(spec: { secrets?: readonly string[] }): string[] {
  return [...(spec.secrets ?? [])];
}

/** The error for a task naming secrets the cluster does not have: one message naming them all. */
export function missingSecretsError(missing: readonly string[], action = 'create task'): FlotillaError {
  const list = missing.map((n) => `'${n}'`).join(', ');
  const message = missing.length === 1 ? `names secret ${list}, which does not exist` : `names secrets ${list}, which do not exist`;
  return new FlotillaError('bad_request', `Cannot ${action} as 'secrets' ${message} (create it with: flotilla secret create NAME --from-file FILE)`, {
    details: missing.map((n) => ({ path: 'secrets', message: `secret '${n}' does not exist` })),
  });
}

// ---------------------------------------------------------------------------------------------
// Delivery: the `secrets` field of an `assignments` frame (leader → the worker running the task)

/** One opened secret value, sent once per frame however many of the worker's tasks name it. */
export interface DeliveredSecret {
  name: string;
  data: Uint8Array;
}

/** Most secret bytes in one assignments frame (below the 4 MiB session frame limit). */
export const MAX_DELIVERED_SECRET_BYTES = 3 * 1024 * 1024;

export const DeliveredSecretsSchema = z
  .array(
    z.strictObject({
      name: nameSchema,
      data: z.custom<Uint8Array>((v) => v instanceof Uint8Array && v.length >= 1 && v.length <= MAX_SECRET_BYTES, { error: `must be 1 to ${MAX_SECRET_BYTES} bytes` }),
    }),
  )
  .max(10_000);

/**
 * The secrets of one task out of a frame's delivered set, in the order the spec names them, or
 * the names the frame lacks (the leader could not open them: the task must not start without).
 */
export function secretsForTask(names: readonly string[], delivered: ReadonlyMap<string, Uint8Array>): { secrets: DeliveredSecret[]; missing: string[] } {
  const secrets: DeliveredSecret[] = [];
  const missing: string[] = [];
  for (const n of names) {
    const d = delivered.get(n);
    if (d === undefined) missing.push(n);
    else secrets.push({ name: n, data: d });
  }
  return { secrets, missing };
}
