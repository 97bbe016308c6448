// Secret and volume names, the `-v NAME:/path[:ro]` shorthand and what the API shows of a secret:
// the parts of protocol/secrets.ts that need no schema library, so the CLI can use them without
// loading one at start-up.
//
// Pure module: no IO, no clocks, no randomness.

import { FlotillaError } from './errors.js';

// ---------------------------------------------------------------------------------------------
// Names

/**
 * Secret and volume names: 1–64 letters, digits, '.', '_' or '-', starting and ending with a
 * letter or digit. A name becomes a file name (`/run/secrets/NAME`, the process driver's
 * secrets directory) and a Docker volume name, so it can never be '.', '..', contain '/' or
 * start with '-'.
 */
export const RESOURCE_NAME_RE = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9])?$/;
export const NAME_RULE = "must be 1-64 letters, digits, '.', '_' or '-', starting and ending with a letter or digit";

/** Largest secret value, in bytes (it travels in one Raft command and one session frame). */
export const MAX_SECRET_BYTES = 64 * 1024;
/** Most secrets and volumes one task may name. */
export const MAX_TASK_SECRETS = 32;
export const MAX_TASK_VOLUMES = 32;

export type ResourceKind = 'secret' | 'volume';

export function validResourceName(name: unknown): name is string {
  return typeof name === 'string' && RESOURCE_NAME_RE.test(name);
}

/** A secret or volume name, or a `bad_request` naming the rule ("Cannot create secret as 'name' must be …"). */
export function parseResourceName(kind: ResourceKind, input: unknown, action = `create ${kind}`, path = 'name'): string {
  if (validResourceName(input)) return input;
  const message = input === undefined ? 'is required' : typeof input !== 'string' ? 'must be a string' : NAME_RULE;
  const shown = typeof input === 'string' ? ` (got ${JSON.stringify(input.length > 80 ? input.slice(0, 80) + '…' : input)})` : '';
  throw new FlotillaError('bad_request', `Cannot ${action} as '${path}' ${message}${shown}`, { details: [{ path, message }] });
}

/** What the API and the CLI show of a secret: never its value. */
export interface SecretInfo {
  name: string;
  /** Bytes of the value. */
  size: number;
  /** Raft index of the command that created it. */
  version: number;
  createdAt: number;
  /** The data key the stored value is encrypted with (rotation: `flotilla secret rotate-key`). */
  keyId: number;
  /** Tasks (not finished) that name it. */
  usedBy?: string[];
}

// ---------------------------------------------------------------------------------------------
// Volume mounts

export interface VolumeMount {
  /** The named volume (created on the node on first use). */
  name: string;
  /** Where the volume appears inside the container (docker driver). */
  path: string;
  readOnly: boolean;
}

/** Absolute, normalised (no '.', '..' or empty segments), not '/' and not under /run/secrets. */
export function volumePathProblem(p: string): string | undefined {
  if (!p.startsWith('/')) return 'must be an absolute path';
  if (p.length > 4096) return 'must be at most 4096 characters';
  if (p === '/') return "must not be '/'";
  const segs = p.slice(1).split('/');
  if (segs.some((s) => s === '' || s === '.' || s === '..')) return "must be a normalised path (no '.', '..' or empty segments, no trailing '/')";
  if (p.includes('\0') || p.includes(':')) return "must not contain ':' or NUL";
  if (p === '/run/secrets' || p.startsWith('/run/secrets/')) return 'must not be /run/secrets or under it (where secrets are mounted)';
  return undefined;
}

export const VOLUME_SHORTHAND_RE = /^([^:]*):([^:]*)(?::([^:]*))?$/;

/**
 * `NAME:/path`, `NAME:/path:ro` or `NAME:/path:rw` (the `run -v` flag) as a volume mount, or a
 * `bad_request` saying which part is wrong.
 */
export function parseVolumeFlag(text: string, action = 'run task'): VolumeMount {
  const m = VOLUME_SHORTHAND_RE.exec(text);
  const bad = (message: string): never => {
    throw new FlotillaError('bad_request', `Cannot ${action} as volume ${JSON.stringify(text)} ${message}`, { details: [{ path: 'volumes', message }] });
  };
  if (m === null) return bad('must be NAME:/path or NAME:/path:ro');
  const [, name, path, mode] = m as unknown as [string, string, string, string | undefined];
  if (!validResourceName(name)) return bad(`has a bad name: it ${NAME_RULE}`);
  const problem = volumePathProblem(path);
  if (problem !== undefined) return bad(`has a bad path: it ${problem}`);
  if (mode !== undefined && mode !== 'ro' && mode !== 'rw') return bad("has a bad mode: it must be 'ro' or 'rw'");
  return { name, path, readOnly: mode === 'ro' };
}
