// Task specs: what a user asks flotilla to run, validated and normalised at the edge.
//
// A task is a pod: one or more containers that run together on one node. `parseTaskSpec`
// turns untrusted input (JSON from the API, flags from the CLI) into a fully defaulted
// `TaskSpec`, or throws one `FlotillaError('bad_request')` whose message names the first bad
// field in the Deno style ("Cannot create task as 'containers[0].image' must be a non-empty
// string") and whose `details` list every bad field by path.
//
// The normalised spec is what goes into the Raft log, so parsing it again gives the same
// spec (the state machine re-validates every `task.create` it applies).
//
// Pure module: no IO, no clocks, no randomness.

import { z } from 'zod';
import { FlotillaError, type ErrorDetail } from './errors.js';
import { SecretRefsSchema, VolumeMountsSchema, type VolumeMount } from './secrets.js';
import { HealthCheckSchema, normalizeHealthCheck, type HealthCheck } from './health.js';

// ---------------------------------------------------------------------------------------------
// Types

export type Driver = 'docker' | 'process';
export type Protocol = 'tcp' | 'udp';
export type RestartPolicyName = 'always' | 'on-failure' | 'never';
export type NodeAvailability = 'active' | 'pause' | 'drain';

export const DRIVERS: readonly Driver[] = ['docker', 'process'];
export const NODE_AVAILABILITIES: readonly NodeAvailability[] = ['active', 'pause', 'drain'];

export interface PortSpec {
  /** Port inside the container (for the process driver: the port the process listens on). */
  container: number;
  /** Port published on the node; unique per protocol within a task and within a node. */
  host?: number;
  protocol: Protocol;
}

export interface ContainerSpec {
  /** DNS label, unique within the task; defaults to c0, c1, … by position. */
  name: string;
  /** Image reference; required by the docker driver, ignored by the process driver. */
  image?: string;
  /** Entrypoint override (docker) or the program and its leading arguments (process). */
  command: string[];
  args: string[];
  env: Record<string, string>;
  ports: PortSpec[];
  workdir?: string;
}

export interface Resources {
  /** CPU in millicores (1000 = one core). */
  cpu: number;
  /** Memory in bytes. */
  memory: number;
}

export interface RestartPolicy {
  policy: RestartPolicyName;
  /** Most restarts the policy allows; 0 = unlimited (the default for `always`, otherwise 5). */
  maxAttempts: number;
  /** Delay before the first restart; doubles on each restart up to `maxBackoffMs`. */
  backoffMs: number;
  maxBackoffMs: number;
}

export interface MountSpec {
  /** Absolute path on the node. */
  source: string;
  /** Absolute path in the container. */
  target: string;
  readonly: boolean;
}

export interface TaskSpec {
  name: string;
  containers: ContainerSpec[];
  resources: Resources;
  /** `key==value` / `key!=value` on node labels; `node.id==w1` pins to a node. */
  constraints: string[];
  restart: RestartPolicy;
  driver: Driver;
  labels: Record<string, string>;
  privileged: boolean;
  /** Host bind mounts; rejected unless the edge allows them (`allowHostMounts`). */
  mounts: MountSpec[];
  /** Secrets the task reads as files (names; present only when the spec names some). */
  secrets?: string[];
  /** Named volumes the task mounts (present only when the spec names some). */
  volumes?: VolumeMount[];
  /** The health check its worker runs (present only when there is one; see health.ts). */
  health?: HealthCheck;
}

export interface ParseTaskSpecOptions {
  /** Accept `mounts` (host paths). Off by default: a bind mount can read or write any file. */
  allowHostMounts?: boolean;
  /** Verb used in messages: "Cannot <action> as …". Default "create task". */
  action?: string;
}

// ---------------------------------------------------------------------------------------------
// Sizes and CPU quantities

const KIB = 1024;
const MIB = 1024 * KIB;
const GIB = 1024 * MIB;
const TIB = 1024 * GIB;

export const DEFAULT_CPU = 100;
export const DEFAULT_MEMORY = 64 * MIB;

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, k: KIB, m: MIB, g: GIB, t: TIB };

/**
 * Bytes from a number of bytes or a string such as "512Mi", "256m", "1g", "1.5GiB", "4096".
 * Units are binary whatever their spelling (k/Ki/KB = 1024, like Docker's `--memory`), case
 * does not matter. Returns undefined when the input is not a size.
 */
export function trySize(input: unknown): number | undefined {
  if (typeof input === 'number') {
    return Number.isSafeInteger(input) && input >= 0 ? input : undefined;
  }
  if (typeof input !== 'string') return undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)\s*$/i.exec(input);
  if (m === null) return undefined;
  const [, num, unit, i, b] = m as unknown as [string, string, string, string, string];
  if (unit === '' && i !== '') return undefined; // "5i"
  if (unit === '' && b === '' && num.includes('.')) return undefined; // "1.5" bytes
  const bytes = Math.round(Number(num) * SIZE_UNITS[unit.toLowerCase()]!);
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

/** Like `trySize` but throws `bad_request`. */
export function parseSize(input: string | number): number {
  const n = trySize(input);
  if (n === undefined) {
    throw new FlotillaError(
      'bad_request',
      `Cannot parse size ${JSON.stringify(input)} as it must be a whole number of bytes or a number with a unit such as 512Mi, 256m or 1g`,
    );
  }
  return n;
}

/**
 * Millicores from an integer number of millicores, "500m" (millicores) or "0.5" / "2" (cores).
 * Fractions of a millicore round up (like Kubernetes). Decimal strings are parsed exactly,
 * without floating point, so "0.1" is 100 and never 101.
 */
export function tryCpu(input: unknown): number | undefined {
  if (typeof input === 'number') {
    return Number.isSafeInteger(input) && input >= 0 ? input : undefined;
  }
  if (typeof input !== 'string') return undefined;
  const milli = /^\s*(\d+)\s*m\s*$/i.exec(input);
  if (milli !== null) {
    const n = Number(milli[1]);
    return Number.isSafeInteger(n) ? n : undefined;
  }
  const cores = /^\s*(\d+)(?:\.(\d+))?\s*$/.exec(input);
  if (cores === null) return undefined;
  const whole = Number(cores[1]);
  const frac = cores[2] ?? '';
  const first3 = Number((frac + '000').slice(0, 3));
  const roundUp = /[1-9]/.test(frac.slice(3)) ? 1 : 0;
  const n = whole * 1000 + first3 + roundUp;
  return Number.isSafeInteger(n) ? n : undefined;
}

/** Like `tryCpu` but throws `bad_request`. */
export function parseCpu(input: string | number): number {
  const n = tryCpu(input);
  if (n === undefined) {
    throw new FlotillaError(
      'bad_request',
      `Cannot parse CPU ${JSON.stringify(input)} as it must be whole millicores (250 or "250m") or cores ("0.5", "2")`,
    );
  }
  return n;
}

/** "8 GiB", "1.5 MiB", "100 B": for messages and displays. */
export function formatBytes(bytes: number): string {
  const units: [number, string][] = [
    [TIB, 'TiB'],
    [GIB, 'GiB'],
    [MIB, 'MiB'],
    [KIB, 'KiB'],
  ];
  for (const [size, name] of units) {
    if (bytes >= size) {
      const v = bytes / size;
      return `${Number.isInteger(v) ? v : Number(v.toFixed(1))} ${name}`;
    }
  }
  return `${bytes} B`;
}

/** "500m", "2000m": millicores, for messages and displays. */
export function formatCpu(millicores: number): string {
  return `${millicores}m`;
}

// ---------------------------------------------------------------------------------------------
// Constraints

export interface Constraint {
  /** Label key, or `node.id` for the node's id. `node.labels.<k>` is normalised to `<k>`. */
  key: string;
  op: '==' | '!=';
  value: string;
}

const CONSTRAINT_RE = /^\s*([A-Za-z0-9_][A-Za-z0-9_.\/-]*)\s*(==|!=)\s*([^\s=!]+)\s*$/;

/** Parse `key==value` / `key!=value`; undefined when malformed. */
export function parseConstraint(text: string): Constraint | undefined {
  const m = CONSTRAINT_RE.exec(text);
  if (m === null) return undefined;
  let key = m[1]!;
  if (key.startsWith('node.labels.') && key.length > 'node.labels.'.length) {
    key = key.slice('node.labels.'.length);
  }
  return { key, op: m[2] as '==' | '!=', value: m[3]! };
}

export function formatConstraint(c: Constraint): string {
  return `${c.key}${c.op}${c.value}`;
}

/**
 * Whether a node satisfies a constraint. A missing label never equals anything, so
 * `zone==eu` fails and `zone!=eu` holds on a node without a `zone` label.
 */
export function matchConstraint(c: Constraint, node: { id: string; labels: Record<string, string> }): boolean {
  const actual = c.key === 'node.id' ? node.id : Object.prototype.hasOwnProperty.call(node.labels, c.key) ? node.labels[c.key] : undefined;
  return c.op === '==' ? actual === c.value : actual !== c.value;
}

// ---------------------------------------------------------------------------------------------
// Issue formatting (zod issues -> Deno-style messages and details)

/** `['containers', 0, 'env', 'a-b']` -> `containers[0].env["a-b"]`. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (typeof seg === 'string' && /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(seg)) out += out === '' ? seg : `.${seg}`;
    else out += `[${JSON.stringify(String(seg))}]`;
  }
  return out;
}

function article(word: string): string {
  return /^[aeiou]/.test(word) ? `an ${word}` : `a ${word}`;
}

const TYPE_NAMES: Record<string, string> = { int: 'integer', nan: 'number' };

/**
 * The default "must be …" phrase for a zod issue; used as the per-parse error map so schemas
 * only spell out messages where the generic one would be vague.
 */
function describeIssue(iss: z.core.$ZodRawIssue): string {
  switch (iss.code) {
    case 'invalid_type': {
      if (iss.input === undefined) return 'is required';
      const expected = TYPE_NAMES[iss.expected] ?? iss.expected;
      return `must be ${article(expected)}`;
    }
    case 'too_small': {
      const min = Number(iss.minimum);
      if (iss.origin === 'string') return min === 1 ? 'must be a non-empty string' : `must be at least ${min} characters`;
      if (iss.origin === 'array' || iss.origin === 'set') return `must have at least ${min} item${min === 1 ? '' : 's'}`;
      return `must be ${iss.inclusive ? '>=' : '>'} ${min}`;
    }
    case 'too_big': {
      const max = Number(iss.maximum);
      if (iss.origin === 'string') return `must be at most ${max} characters`;
      if (iss.origin === 'array' || iss.origin === 'set') return `must have at most ${max} item${max === 1 ? '' : 's'}`;
      return `must be ${iss.inclusive ? '<=' : '<'} ${max}`;
    }
    case 'invalid_value':
      return `must be one of ${iss.values.map((v) => `'${String(v)}'`).join(', ')}`;
    case 'invalid_format':
      return 'has an invalid format';
    case 'unrecognized_keys':
      return 'has unknown fields';
    case 'invalid_union':
      return 'has an invalid value';
    default:
      return 'is invalid';
  }
}

/** zod's per-parse error map: our phrasing for every issue a schema did not word itself. */
export const issueMessage = (iss: z.core.$ZodRawIssue): string => describeIssue(iss);

/** Flatten zod issues into one detail per field path (the first problem found for it). */
export function issuesToDetails(issues: readonly z.core.$ZodIssue[], basePath: readonly PropertyKey[] = []): ErrorDetail[] {
  const out: ErrorDetail[] = [];
  const seen = new Set<string>();
  const push = (path: readonly PropertyKey[], message: string): void => {
    const p = formatPath([...basePath, ...path]);
    if (seen.has(p)) return;
    seen.add(p);
    out.push({ path: p, message });
  };
  for (const iss of issues) {
    if (iss.code === 'unrecognized_keys') {
      for (const key of iss.keys) push([...iss.path, key], 'is not a known field');
    } else if (iss.code === 'invalid_key') {
      const inner = iss.issues[0];
      push(iss.path, inner !== undefined ? `is not a valid key: ${inner.message}` : 'is not a valid key');
    } else {
      push(iss.path, iss.message);
    }
  }
  return out;
}

/** One Deno-style sentence for the first detail: "Cannot <action> as '<path>' <message>". */
export function detailsMessage(action: string, details: readonly ErrorDetail[], subject = 'the input'): string {
  const first = details[0];
  if (first === undefined) return `Cannot ${action} as ${subject} is invalid`;
  const where = first.path === '' ? subject : `'${first.path}'`;
  const more = details.length > 1 ? ` (and ${details.length - 1} more problem${details.length > 2 ? 's' : ''})` : '';
  return `Cannot ${action} as ${where} ${first.message}${more}`;
}

/** A `bad_request` FlotillaError for a failed zod parse. */
export function badRequestFromZod(action: string, error: z.ZodError, subject = 'the input', basePath: readonly PropertyKey[] = []): FlotillaError {
  const details = issuesToDetails(error.issues, basePath);
  return new FlotillaError('bad_request', detailsMessage(action, details, subject), { details });
}

// ---------------------------------------------------------------------------------------------
// Schema

const DNS_LABEL_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const ENV_KEY_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
const LABEL_KEY_RE = /^[A-Za-z0-9]([A-Za-z0-9._\/-]*[A-Za-z0-9])?$/;

const dnsLabelMessage = "must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit";

/** A DNS-label-like name (task and container names). */
const dnsLabel = z
  .string()
  .min(1, { error: dnsLabelMessage })
  .max(63, { error: dnsLabelMessage })
  .regex(DNS_LABEL_RE, { error: dnsLabelMessage });

const nonEmpty = (max: number) =>
  z
    .string({ error: (iss) => (iss.input === undefined ? 'is required' : 'must be a non-empty string') })
    .min(1, { error: 'must be a non-empty string' })
    .max(max);

/**
 * A zod record, refusing an own `__proto__` key (JSON.parse makes one): zod's record skips that
 * key without a word, so `{"env": {"__proto__": "x"}}` would otherwise lose it silently.
 */
const noProtoKey = <T extends z.ZodType>(record: T) =>
  z.preprocess((v, ctx) => {
    if (typeof v === 'object' && v !== null && Object.hasOwn(v, '__proto__')) {
      ctx.addIssue({ code: 'custom', path: ['__proto__'], message: 'is not allowed as a key', input: v });
    }
    return v;
  }, record);

const stringList = (maxItems: number, maxLen: number) => z.array(z.string().max(maxLen)).max(maxItems);

const portNumber = z
  .number({ error: (iss) => (iss.input === undefined ? 'is required' : 'must be an integer from 1 to 65535') })
  .int({ error: 'must be an integer from 1 to 65535' })
  .min(1, { error: 'must be an integer from 1 to 65535' })
  .max(65535, { error: 'must be an integer from 1 to 65535' });

const PORT_SHORTHAND_RE = /^\s*(?:(\d+):)?(\d+)(?:\/(tcp|udp))?\s*$/i;

/** Ports: `{ container, host?, protocol? }`, or shorthand 80, "80", "8080:80", "8080:80/udp". */
const PortSchema = z.preprocess(
  (v) => {
    if (typeof v === 'number') return { container: v };
    if (typeof v !== 'string') return v;
    const m = PORT_SHORTHAND_RE.exec(v);
    if (m === null) return v;
    const out: Record<string, unknown> = { container: Number(m[2]) };
    if (m[1] !== undefined) out.host = Number(m[1]);
    if (m[3] !== undefined) out.protocol = m[3].toLowerCase();
    return out;
  },
  z.strictObject(
    {
      container: portNumber,
      host: portNumber.optional(),
      protocol: z.enum(['tcp', 'udp']).default('tcp'),
    },
    {
      error: (iss) =>
        iss.code === 'invalid_type' ? 'must be a port like {"container": 80, "host": 8080} or "8080:80/tcp"' : undefined,
    },
  ),
);

const ContainerSchema = z.strictObject({
  name: dnsLabel.optional(),
  image: z
    .string({ error: 'must be a non-empty string' })
    .min(1, { error: 'must be a non-empty string' })
    .max(512)
    .optional(),
  command: stringList(256, 16_384).default([]),
  args: stringList(256, 16_384).default([]),
  env: noProtoKey(
    z.record(
      z.string().regex(ENV_KEY_RE, { error: 'must match /^[A-Za-z_][A-Za-z0-9_]*$/' }),
      z.string({ error: 'must be a string' }).max(65_536),
    ),
  ).default({}),
  ports: z.array(PortSchema).max(64).default([]),
  workdir: nonEmpty(4096).optional(),
});

const cpuSchema = z.unknown().transform((v, ctx) => {
  const n = tryCpu(v);
  if (n === undefined) {
    ctx.addIssue({
      code: 'custom',
      message: 'must be whole millicores (e.g. 250 or "250m") or cores (e.g. "0.5", "2")',
      input: v,
    });
    return z.NEVER;
  }
  return n;
});

const memorySchema = z.unknown().transform((v, ctx) => {
  const n = trySize(v);
  if (n === undefined) {
    ctx.addIssue({
      code: 'custom',
      message: 'must be whole bytes or a size such as "512Mi", "256m" or "1g"',
      input: v,
    });
    return z.NEVER;
  }
  return n;
});

const ResourcesSchema = z
  .strictObject({
    cpu: cpuSchema.default(DEFAULT_CPU),
    memory: memorySchema.default(DEFAULT_MEMORY),
  })
  .prefault({});

const ms = (max: number) => z.number().int({ error: 'must be a whole number of milliseconds' }).min(0).max(max);

const RestartSchema = z
  .preprocess(
    (v) => (typeof v === 'string' ? { policy: v } : v),
    z
      .strictObject({
        policy: z.enum(['always', 'on-failure', 'never']).default('on-failure'),
        maxAttempts: z.number().int().min(0).max(1_000_000).optional(),
        backoffMs: ms(3_600_000).default(1000),
        maxBackoffMs: ms(86_400_000).default(30_000),
      })
      .superRefine((r, ctx) => {
        if (r.maxBackoffMs < r.backoffMs) {
          ctx.addIssue({ code: 'custom', path: ['maxBackoffMs'], message: `must be >= backoffMs (${r.backoffMs})` });
        }
      }),
  )
  .prefault({});

const constraintSchema = z
  .string()
  .refine((s) => parseConstraint(s) !== undefined, {
    error: "must be 'key==value' or 'key!=value' (a node label, or node.id)",
  })
  .transform((s) => formatConstraint(parseConstraint(s)!));

const MOUNT_SHORTHAND_RE = /^([^:]+):([^:]+)(?::(ro|rw))?$/;
const absPath = z
  .string({ error: (iss) => (iss.input === undefined ? 'is required' : 'must be an absolute path') })
  .max(4096)
  .regex(/^\//, { error: 'must be an absolute path' });

/** Mounts: `{ source, target, readonly? }` or shorthand "/host:/ctr[:ro]". */
const MountSchema = z.preprocess(
  (v) => {
    if (typeof v !== 'string') return v;
    const m = MOUNT_SHORTHAND_RE.exec(v);
    return m === null ? v : { source: m[1], target: m[2], readonly: m[3] === 'ro' };
  },
  z.strictObject(
    { source: absPath, target: absPath, readonly: z.boolean().default(false) },
    { error: (iss) => (iss.code === 'invalid_type' ? 'must be a mount like {"source": "/data", "target": "/data"} or "/data:/data:ro"' : undefined) },
  ),
);

const TaskSpecSchema = z.strictObject(
  {
    name: dnsLabel,
    containers: z
      .array(ContainerSchema, { error: (iss) => (iss.input === undefined ? 'is required' : 'must be an array of containers') })
      .min(1, { error: 'must have at least 1 container' })
      .max(16, { error: 'must have at most 16 containers' }),
    resources: ResourcesSchema,
    constraints: z.array(constraintSchema).max(64).default([]),
    restart: RestartSchema,
    driver: z.enum(['docker', 'process']).default('docker'),
    labels: noProtoKey(
      z.record(
        z.string().max(253).regex(LABEL_KEY_RE, { error: "must be letters, digits, '.', '_', '/' or '-', starting and ending with a letter or digit" }),
        z.string({ error: 'must be a string' }).max(256),
      ),
    ).default({}),
    privileged: z.boolean().default(false),
    mounts: z.array(MountSchema).max(32).default([]),
    secrets: SecretRefsSchema.optional(),
    volumes: VolumeMountsSchema.optional(),
    health: HealthCheckSchema.optional(),
  },
  { error: (iss) => (iss.code === 'invalid_type' && iss.path?.length === 0 ? 'must be an object' : undefined) },
);

// ---------------------------------------------------------------------------------------------
// Parsing

/**
 * Validate and normalise a task spec. Throws `FlotillaError('bad_request')` with a Deno-style
 * message and one detail per bad field.
 */
export function parseTaskSpec(input: unknown, opts: ParseTaskSpecOptions = {}): TaskSpec {
  const action = opts.action ?? 'create task';
  const parsed = TaskSpecSchema.safeParse(input, { error: issueMessage });
  if (!parsed.success) throw badRequestFromZod(action, parsed.error, 'the spec');
  const raw = parsed.data;
  const details: ErrorDetail[] = [];
  const problem = (path: string, message: string): void => {
    details.push({ path, message });
  };

  // Containers: default names by position, then the cross-field rules.
  const containers: ContainerSpec[] = raw.containers.map((c, i) => {
    const out: ContainerSpec = {
      name: c.name ?? `c${i}`,
      ...(c.image !== undefined ? { image: c.image } : {}),
      command: c.command,
      args: c.args,
      env: c.env,
      ports: c.ports.map((p) => (p.host === undefined ? { container: p.container, protocol: p.protocol } : { container: p.container, host: p.host, protocol: p.protocol })),
    };
    if (c.workdir !== undefined) out.workdir = c.workdir;
    return out;
  });
  const names = new Map<string, number>();
  const hostPorts = new Map<string, string>();
  containers.forEach((c, i) => {
    const prev = names.get(c.name);
    if (prev !== undefined) {
      problem(`containers[${i}].name`, `must be unique ('${c.name}' is also the name of containers[${prev}])`);
    } else {
      names.set(c.name, i);
    }
    if (raw.driver === 'docker' && c.image === undefined) {
      problem(`containers[${i}].image`, 'must be a non-empty string (the docker driver runs an image)');
    }
    if (raw.driver === 'process' && c.command.length === 0) {
      problem(`containers[${i}].command`, 'must be a non-empty array of strings (the process driver runs the command directly)');
    }
    c.ports.forEach((p, j) => {
      if (p.host === undefined) return;
      const key = `${p.host}/${p.protocol}`;
      const where = `containers[${i}].ports[${j}]`;
      const other = hostPorts.get(key);
      if (other !== undefined) problem(`${where}.host`, `must be unique within the task (${key} is also published by ${other})`);
      else hostPorts.set(key, where);
    });
  });
  if (raw.mounts.length > 0 && raw.driver === 'process') {
    problem('mounts', 'must be empty for the process driver (a process sees the host filesystem)');
  } else if (raw.mounts.length > 0 && opts.allowHostMounts !== true) {
    problem('mounts', 'must be empty: host mounts are disabled on this cluster (a manager option enables them)');
  }
  (raw.volumes ?? []).forEach((v, i) => {
    const m = raw.mounts.findIndex((x) => x.target === v.path);
    if (m >= 0) problem(`volumes[${i}].path`, `must differ from the mount target of mounts[${m}] (${v.path})`);
  });
  const health = raw.health === undefined ? undefined : normalizeHealthCheck(raw.health, containers.map((c) => c.name));
  if (health?.problem !== undefined) problem('health.container', health.problem);
  if (details.length > 0) {
    throw new FlotillaError('bad_request', detailsMessage(action, details, 'the spec'), { details });
  }

  const restart: RestartPolicy = {
    policy: raw.restart.policy,
    maxAttempts: raw.restart.maxAttempts ?? (raw.restart.policy === 'always' ? 0 : 5),
    backoffMs: raw.restart.backoffMs,
    maxBackoffMs: raw.restart.maxBackoffMs,
  };
  return {
    name: raw.name,
    containers,
    resources: { cpu: raw.resources.cpu, memory: raw.resources.memory },
    constraints: raw.constraints,
    restart,
    driver: raw.driver,
    labels: raw.labels,
    privileged: raw.privileged,
    mounts: raw.mounts.map((m) => ({ source: m.source, target: m.target, readonly: m.readonly })),
    // Only when named: specs without them normalise (and hash) exactly as before.
    ...(raw.secrets !== undefined && raw.secrets.length > 0 ? { secrets: [...raw.secrets] } : {}),
    ...(raw.volumes !== undefined && raw.volumes.length > 0 ? { volumes: raw.volumes.map((v) => ({ name: v.name, path: v.path, readOnly: v.readOnly })) } : {}),
    ...(health !== undefined ? { health: health.check } : {}),
  };
}

/** Validate a node availability ('active' | 'pause' | 'drain'). */
export function parseNodeAvailability(input: unknown): NodeAvailability {
  if (typeof input === 'string' && (NODE_AVAILABILITIES as readonly string[]).includes(input)) {
    return input as NodeAvailability;
  }
  const message = input === undefined ? 'is required' : `must be one of ${NODE_AVAILABILITIES.map((a) => `'${a}'`).join(', ')}`;
  throw new FlotillaError('bad_request', `Cannot set node availability as 'availability' ${message}`, {
    details: [{ path: 'availability', message }],
  });
}

/** Host ports a spec publishes, as "port/protocol" strings (what the scheduler keeps apart). */
export function specHostPorts(spec: Pick<TaskSpec, 'containers'>): string[] {
  const out: string[] = [];
  for (const c of spec.containers) for (const p of c.ports) if (p.host !== undefined) out.push(`${p.host}/${p.protocol}`);
  return out;
}
