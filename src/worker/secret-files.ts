// Where a task finds its secrets on a worker: one file per secret, mode 0400, in a directory of
// the task, mode 0700 (owner: the worker's user). The process driver points the task at the
// directory (FLOTILLA_SECRETS_DIR). (The docker driver writes no file on the worker: it puts the
// values into a tmpfs of the pod, see drivers/docker-secrets.ts.) Values arrive in the leader's
// `assignments` frame.
import { chmodSync, closeSync, existsSync, fsyncSync, lstatSync, mkdirSync, openSync, readdirSync, renameSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { FlotillaError } from '../protocol/errors.js';
import { validResourceName } from '../protocol/secrets.js';

/** A secret as the worker receives it: the opened value (never logged, never persisted elsewhere). */
export interface TaskSecret {
  name: string;
  data: Uint8Array;
}

/**
 * Makes `dir` (0700) hold exactly `secrets`, each as `dir/NAME` (0400), written atomically
 * (temporary file, fsync, rename) so a task never reads half a value; files of secrets no
 * longer named are removed. Refuses a name that is not a plain file name, and a `dir` that is a
 * symbolic link (a task must not be able to redirect where values are written).
 */
export function writeSecretFiles(dir: string, secrets: readonly TaskSecret[]): void {
  for (const s of secrets) {
    if (!validResourceName(s.name)) throw new FlotillaError('bad_request', `Cannot write secret ${JSON.stringify(s.name)} as it is not a valid secret name`);
  }
  if (existsSync(dir) && !lstatSync(dir).isDirectory()) throw new FlotillaError('conflict', `Cannot write secrets into ${dir} as it is not a directory`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  const want = new Set(secrets.map((s) => s.name));
  for (const f of readdirSync(dir)) if (!want.has(f)) rmSync(join(dir, f), { force: true, recursive: true });
  for (const s of secrets) {
    const target = join(dir, s.name);
    const tmp = join(dir, `.${s.name}.tmp-${process.pid}`);
    rmSync(tmp, { force: true });
    const fd = openSync(tmp, 'wx', 0o600);
    try {
      let off = 0;
      while (off < s.data.length) off += writeSync(fd, s.data, off, s.data.length - off);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    chmodSync(tmp, 0o400);
    renameSync(tmp, target);
  }
}

/** Deletes a task's secrets directory (when the task ends or is removed). Never throws for a missing one. */
export function removeSecretFiles(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}
