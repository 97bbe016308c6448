// Named volumes on a worker. The process driver keeps each as a directory (mode 0700) under its
// own directory, `<dir>/volumes/<name>`, and tells the task where through an environment
// variable; the docker driver uses a Docker volume named after the cluster, the node and the
// volume, labelled with all three, and touches no volume without its cluster's (and node's) label.
// The node is part of the name because a volume is local to a node (the placement rule): two
// workers of one cluster on one engine (a test bed) must not share or remove each other's copy.
import { existsSync, lstatSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { FlotillaError } from '../protocol/errors.js';
import { validResourceName } from '../protocol/secrets.js';

export const VOLUME_LABELS = {
  cluster: 'io.flotilla.cluster',
  node: 'io.flotilla.node',
  volume: 'io.flotilla.volume',
} as const;

/** A node id as part of a Docker volume name: itself when name-safe and short, else a safe prefix and a hash. */
function nodePart(nodeId: string): string {
  if (/^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/.test(nodeId)) return nodeId;
  const safe = nodeId.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 16);
  return `${safe}_${createHash('sha256').update(nodeId).digest('hex').slice(0, 8)}`;
}

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

/** The Docker volume of volume `name` in cluster `clusterId` (on node `nodeId`, when given). */
export function dockerVolumeName(clusterId: string, name: string, nodeId?: string): string {
  checkName(name);
  return nodeId === undefined ? `flotilla-${clusterId}-${name}` : `flotilla-${clusterId}-${nodePart(nodeId)}-${name}`;
}

export function dockerVolumeLabels(clusterId: string, name: string, nodeId?: string): Record<string, string> {
  return { [VOLUME_LABELS.cluster]: clusterId, ...(nodeId !== undefined ? { [VOLUME_LABELS.node]: nodeId } : {}), [VOLUME_LABELS.volume]: name };
}

/** Whether a Docker volume's labels say it is this cluster's (and node's) copy of `name`. */
function ours(labels: Record<string, string> | null | undefined, clusterId: string, name: string, nodeId?: string): boolean {
  return labels?.[VOLUME_LABELS.cluster] === clusterId && labels[VOLUME_LABELS.volume] === name && (nodeId === undefined || labels[VOLUME_LABELS.node] === nodeId);
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
export async function ensureDockerVolume(docker: DockerVolumeApi, clusterId: string, name: string, nodeId?: string): Promise<string> {
  const vname = dockerVolumeName(clusterId, name, nodeId);
  const labels = dockerVolumeLabels(clusterId, name, nodeId);
  try {
    const info = await docker.getVolume(vname).inspect();
    if (!ours(info.Labels, clusterId, name, nodeId)) {
      throw new FlotillaError('conflict', `Cannot use volume '${name}' as the Docker volume ${vname} exists without this cluster's label (${VOLUME_LABELS.cluster}=${clusterId}); flotilla does not touch it`);
    }
    return vname;
  } catch (e) {
    if (statusOf(e) !== 404) throw e;
  }
  try {
    await docker.createVolume({ Name: vname, Labels: labels });
  } catch (e) {
    // Two tasks of this node creating it at once: the engine answers 409 or returns the existing one.
    if (statusOf(e) !== 409) throw e;
  }
  return vname;
}

/** Removes this cluster's Docker volume of `name` (no-op when absent; refused when it lacks the cluster label). */
export async function removeDockerVolume(docker: DockerVolumeApi, clusterId: string, name: string, nodeId?: string): Promise<void> {
  const vname = dockerVolumeName(clusterId, name, nodeId);
  let info: { Labels?: Record<string, string> | null };
  try {
    info = await docker.getVolume(vname).inspect();
  } catch (e) {
    if (statusOf(e) === 404) return;
    throw e;
  }
  if (!ours(info.Labels, clusterId, name, nodeId)) return; // not ours: never touched
  await docker.getVolume(vname).remove();
}

/** `Binds` entries for a task's volumes (docker driver). */
export function volumeBinds(clusterId: string, volumes: readonly { name: string; path: string; readOnly: boolean }[] | undefined, nodeId?: string): string[] {
  return (volumes ?? []).map((v) => `${dockerVolumeName(clusterId, v.name, nodeId)}:${v.path}${v.readOnly ? ':ro' : ''}`);
}
