// The docker driver's names and labels: label keys, the container name parts (cluster hash,
// name-safe node and task ids), image references, flotilla's version (a label), the stop
// mark on the infra's name, and how the engine's errors and times read. See docker.ts for
// the naming scheme.

import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const DEFAULT_SOCKET_PATH = '/var/run/docker.sock';
export const DEFAULT_INFRA_IMAGE = 'flotilla/busybox:test';
/** The infra container's command: sleep forever, exit at once on SIGTERM/SIGINT. */
export const INFRA_SCRIPT = 'trap "exit 0" TERM INT; while :; do sleep 3600 & wait $!; done';

/** Label keys. */
export const LABELS = {
  task: 'io.flotilla.task',
  attempt: 'io.flotilla.attempt',
  pod: 'io.flotilla.pod',
  container: 'io.flotilla.container',
  node: 'io.flotilla.node',
  version: 'io.flotilla.version',
  role: 'io.flotilla.role',
  index: 'io.flotilla.index',
  specHash: 'io.flotilla.spec-hash',
  containers: 'io.flotilla.containers',
  cluster: 'io.flotilla.cluster',
  lockHolder: 'io.flotilla.lock-holder',
} as const;

export const INFRA_NAME = 'infra';
export const CLUSTER_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
export const STOP_MARK_RE = /\.stop-(\d+)-(\d+)$/;

/** flotilla's version, from the package.json above this file (src/ or dist/src/). */
export const FLOTILLA_VERSION: string = (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 8; i++) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'flotilla' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // not here
    }
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return '0.0.0';
})();


export function errMessage(e: unknown): string {
  if (e !== null && typeof e === 'object') {
    const json = (e as { json?: unknown }).json;
    if (json !== null && typeof json === 'object' && typeof (json as { message?: unknown }).message === 'string') {
      return (json as { message: string }).message.trim();
    }
    if (e instanceof Error) return e.message.trim();
  }
  return String(e);
}

export function statusCode(e: unknown): number | undefined {
  const c = (e as { statusCode?: unknown } | null)?.statusCode;
  return typeof c === 'number' ? c : undefined;
}

/** A name-safe part of a docker container name (no '.', which separates the parts). */
export function nameSafe(s: string, max = 40): string {
  if (s.length <= max && /^[A-Za-z0-9][A-Za-z0-9_-]*$/.test(s)) return s;
  const clean = s.replace(/[^A-Za-z0-9_-]/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, max - 11);
  const hash = createHash('sha256').update(s).digest('hex').slice(0, 10);
  return clean === '' ? `x${hash}` : `${clean}-${hash}`;
}

/** An image reference with an explicit tag (`busybox` → `busybox:latest`). */
export function normalizeImage(ref: string): string {
  if (ref.includes('@')) return ref;
  const lastSlash = ref.lastIndexOf('/');
  return ref.slice(lastSlash + 1).includes(':') ? ref : `${ref}:latest`;
}

/** Docker time → ms, or undefined for the zero time ("0001-01-01T00:00:00Z") and garbage. */
export function dockerTime(s: string | undefined): number | undefined {
  if (s === undefined || s === '' || s.startsWith('0001-')) return undefined;
  const t = Date.parse(s);
  return Number.isFinite(t) && t > 0 ? t : undefined;
}

export function exitReason(container: string, code: number | undefined, oom: boolean): string {
  if (code === undefined) return `container '${container}' was killed (its exit status is unknown)`;
  let r = `container '${container}' exited with code ${code}`;
  if (code > 128 && code < 160) r += ` (signal ${code - 128})`;
  if (oom) r += ': out of memory (OOM killed)';
  return r;
}

export function defaultSocketPath(): string {
  const host = process.env.DOCKER_HOST;
  if (host !== undefined && host.startsWith('unix://')) return host.slice('unix://'.length);
  return DEFAULT_SOCKET_PATH;
}
