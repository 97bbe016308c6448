// The task flags `flotilla run`, `service create` and `service update` share: one set of options
// and one parser, so a service replica is described with exactly the words a task is.
//
// `applyTaskFlags` writes the flags onto a flat task spec (what POST /v1/tasks and the flat
// service spec take) and its first container. On a fresh spec (run, service create) that is
// the whole story; on an existing one (service update) the repeatable flags add to what the
// spec has — `-e` and `-l` set keys, `--secret` adds a name, `-v` adds a mount or replaces the
// one at the same path — and the `--*-rm` flags (update only) remove first, so
// `--env-rm A -e A=2` ends with A=2. `-p` and `--constraint` replace their lists.
import type { Command } from 'commander';
import { parseVolumeFlag, type VolumeMount } from '../protocol/names.js';
import { collect, UsageError } from './util.js';

/** Registers the task flags on `c`; `per` words the resource flags ("per replica"). */
export function taskFlagOptions(c: Command, per = ''): Command {
  const p = per ? ` ${per}` : '';
  return c
    .option('--cpu <cpu>', `CPU${p}, millicores or cores (e.g. 500m, 0.5)`)
    .option('--memory <size>', `memory${p} (e.g. 256m, 1g)`)
    .option('-e, --env <k=v>', 'environment variable (repeatable)', collect)
    .option('-p, --port <spec>', 'publish a port: [host:]container[/udp] (repeatable)', collect)
    .option('-w, --workdir <dir>', 'working directory of the command')
    .option('--restart <policy>', 'always | on-failure | never')
    .option('--max-restarts <n>', 'restart limit (0 = unlimited)')
    .option('--constraint <expr>', 'node constraint, e.g. zone==a (repeatable)', collect)
    .option('-l, --label <k=v>', 'task label (repeatable); `ps -l k=v` selects by it', collect)
    .option('--driver <driver>', 'docker | process')
    .option('--secret <name>', 'a secret the task reads as a file: $FLOTILLA_SECRETS_DIR/NAME (process) or /run/secrets/NAME (docker) (repeatable)', collect)
    .option('-v, --volume <spec>', 'mount a named volume: NAME:/path[:ro] (repeatable; see flotilla volume --help)', collect);
}

/** The removal flags of `service update` (applied before the additions). */
export function taskRemovalOptions(c: Command): Command {
  return c
    .option('--env-rm <key>', 'remove an environment variable (repeatable)', collect)
    .option('--label-rm <key>', 'remove a label (repeatable)', collect)
    .option('--secret-rm <name>', 'stop giving the tasks this secret (repeatable)', collect)
    .option('--volume-rm <path|name>', 'remove the volume mounted at PATH, or every mount of volume NAME (repeatable)', collect);
}

/** `K=V` words as a map; anything without a key before '=' is a usage error naming the flag. */
export function keyValues(flag: string, words: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of words) {
    const i = kv.indexOf('=');
    if (i <= 0) throw new UsageError(`${flag} expects KEY=VALUE, got '${kv}'`);
    out[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return out;
}

/** A whole number >= 0 (flag values like --replicas, --max-restarts). */
export function wholeNumber(flag: string, v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n)) throw new UsageError(`${flag} must be a whole number, got '${v}'`);
  return n;
}

function withoutKeys(m: Record<string, string> | undefined, keys: readonly string[]): Record<string, string> {
  const out = { ...(m ?? {}) };
  for (const k of keys) delete out[k];
  return out;
}

/**
 * Applies the task flags in `o` (commander's option values) to the flat spec `spec`, in place,
 * and returns it. `action` names the request in errors ("run task", "update service").
 * Parses everything before anything is sent: a bad value is a usage error and changes nothing.
 */
export function applyTaskFlags(spec: Record<string, any>, o: Record<string, any>, action: string): Record<string, any> {
  const containers: Record<string, any>[] = Array.isArray(spec.containers) && spec.containers.length > 0 ? spec.containers.map((c: object) => ({ ...c })) : [{}];
  const c0 = containers[0]!;
  const env = keyValues('--env', o.env ?? []);
  const labels = keyValues('--label', o.label ?? []);
  const volumes: VolumeMount[] = ((o.volume as string[] | undefined) ?? []).map((v) => parseVolumeFlag(v, action));
  const maxRestarts = o.maxRestarts === undefined ? undefined : wholeNumber('--max-restarts', o.maxRestarts);

  if (o.driver !== undefined) spec.driver = o.driver;
  if (o.envRm !== undefined || o.env !== undefined) c0.env = { ...withoutKeys(c0.env, o.envRm ?? []), ...env };
  if (o.port !== undefined) c0.ports = o.port;
  if (o.workdir !== undefined) c0.workdir = o.workdir;
  spec.containers = containers;
  if (o.cpu !== undefined || o.memory !== undefined) spec.resources = { ...(spec.resources ?? {}), ...(o.cpu !== undefined ? { cpu: o.cpu } : {}), ...(o.memory !== undefined ? { memory: o.memory } : {}) };
  if (o.restart !== undefined || maxRestarts !== undefined) {
    spec.restart = { ...(typeof spec.restart === 'object' && spec.restart !== null ? spec.restart : {}), ...(o.restart !== undefined ? { policy: o.restart } : {}) };
    if (maxRestarts !== undefined) spec.restart.maxAttempts = maxRestarts;
  }
  if (o.constraint !== undefined) spec.constraints = o.constraint;
  if (o.labelRm !== undefined || o.label !== undefined) spec.labels = { ...withoutKeys(spec.labels, o.labelRm ?? []), ...labels };
  if (o.secretRm !== undefined || o.secret !== undefined) {
    const names = ((spec.secrets as string[] | undefined) ?? []).filter((n) => !(o.secretRm ?? []).includes(n));
    for (const n of (o.secret as string[] | undefined) ?? []) if (!names.includes(n)) names.push(n);
    spec.secrets = names;
  }
  if (o.volumeRm !== undefined || o.volume !== undefined) {
    const rm: string[] = o.volumeRm ?? [];
    let mounts = ((spec.volumes as VolumeMount[] | undefined) ?? []).filter((v) => !rm.includes(v.path) && !rm.includes(v.name));
    for (const v of volumes) mounts = [...mounts.filter((m) => m.path !== v.path), v];
    spec.volumes = mounts;
  }
  return spec;
}
