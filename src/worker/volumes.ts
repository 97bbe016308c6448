// Named volumes on a worker. The process driver keeps each as a directory (mode 0700) under its
// own directory, `<dir>/volumes/<name>`, and tells the task where through an environment
// variable; the docker driver uses a Docker volume named after the cluster and the volume,
// labelled with both, and touches no volume without its cluster's label.
import { existsSync, lstatSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { FlotillaError } from '../protocol/errors.js';
import { validResourceName } from '../protocol/secrets.js';

export const VOLUME_LABELS = {
  cluster: 'io.flotilla.cluster',
  volume: 'io.flotilla.volume',
} as const;

function checkName(name: string): void {
  if (!validResourceName(name)) throw new FlotillaError('bad_request', `Cannot use volume ${JSON.stringify(name)} as it is not a valid volume name`);
}

/** The environment variable a process task finds volume `name` in: FLOTILLA_VOLUME_<NAME>, '.'/'-' as '_'. */
export function volumeEnvName(name: string): string {
  return 'FLOTILLA_VOLUME_' + name.toUpperCase().replace(/[.-]/g, '_');
}

/** The process driver's directory of volume `name` under the driver's directory, created (0700) if missing. */
export function ensureProcessVolume(driverDir: string, name: string): string {
  checkName(name);
  const dir = join(driverDir, 'volumes', name);
  if (existsSync(dir) && !lstatSync(dir).isDirectory()) throw new FlotillaError('conflict', `Cannot use volume '${name}' as ${dir} is not a directory`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return dir;
}

/** Deletes the process driver's copy of volume `name` (no-op when absent). */
export function removeProcessVolume(driverDir: string, name: string): void {
  checkName(name);
  rmSync(join(driverDir, 'volumes', name), { recursive: true, force: true });
}

/** The Docker volume of volume `name` in cluster `clusterId`. */
export function dockerVolumeName(clusterId: string, name: string): string {
  checkName(name);
  return `flotilla-${clusterId}-${name}`;
}

export function dockerVolumeLabels(clusterId: string, name: string): Record<string, string> {
  return { [VOLUME_LABELS.cluster]: clusterId, [VOLUME_LABELS.volume]: name };
}

/** What `ensureDockerVolume` needs of a Docker client (dockerode's shape). */
export interface DockerVolumeApi {
  getVolume(name: string): { inspect(): Promise<{ Labels?: Record<string, string> | null }>; remove(): Promise<unknown> };
  createVolume(opts: { Name: string; Labels: Record<string, string> }): Promise<unknown>;
}

function statusOf(e: unknown): number | undefined {
  return (e as { statusCode?: number }).statusCode;
}

/**
 * The Docker volume of `name` for `clusterId`, created with the cluster's labels when missing.
 * A volume of that name without this cluster's label is never used (another cluster's, or
 * someone's own): a `conflict`.
 */
export async function ensureDockerVolume(docker: DockerVolumeApi, clusterId: string, name: string): Promise<string> {
  const vname = dockerVolumeName(clusterId, name);
  const labels = dockerVolumeLabels(clusterId, name);
  try {
    const info = await docker.getVolume(vname).inspect();
    if (info.Labels?.[VOLUME_LABELS.cluster] !== clusterId) {
      throw new FlotillaError('conflict', `Cannot use volume '${name}' as the Docker volume ${vname} exists without this cluster's label (${VOLUME_LABELS.cluster}=${clusterId}); flotilla does not touch it`);
    }
    return vname;
  } catch (e) {
    if (statusOf(e) !== 404) throw e;
  }
  await docker.createVolume({ Name: vname, Labels: labels });
  return vname;
}

/** Removes this cluster's Docker volume of `name` (no-op when absent; refused when it lacks the cluster label). */
export async function removeDockerVolume(docker: DockerVolumeApi, clusterId: string, name: string): Promise<void> {
  const vname = dockerVolumeName(clusterId, name);
  let info: { Labels?: Record<string, string> | null };
  try {
    info = await docker.getVolume(vname).inspect();
  } catch (e) {
    if (statusOf(e) === 404) return;
    throw e;
  }
  if (info.Labels?.[VOLUME_LABELS.cluster] !== clusterId) return; // not ours: never touched
  await docker.getVolume(vname).remove();
}

/** `Binds` entries for a task's volumes (docker driver). */
export function volumeBinds(clusterId: string, volumes: readonly { name: string; path: string; readOnly: boolean }[] | undefined): string[] {
  return (volumes ?? []).map((v) => `${dockerVolumeName(clusterId, v.name)}:${v.path}${v.readOnly ? ':ro' : ''}`);
}

/** `Binds` entries that show a task's secret files read-only at /run/secrets/NAME (docker driver). */
export function secretBinds(hostDir: string, names: readonly string[] | undefined): string[] {
  return (names ?? []).map((n) => {
    checkName(n);
    return `${join(hostDir, n)}:/run/secrets/${n}:ro`;
  });
}
