// The docker driver's container configuration: labels and the create options of a pod's app
// containers (see docker.ts, "Container config").

import type Docker from 'dockerode';
import type { TaskSpec } from '../../protocol/spec.js';
import { FLOTILLA_VERSION, LABELS, normalizeImage } from './docker-names.js';
import type { Task } from './docker-pod.js';
import { SECRETS_PATH } from './docker-secrets.js';
import { volumeEnvName } from '../volumes.js';

/** The labels of one of a task's containers (the engine is the driver's only state store). */
export function containerLabels(t: Task, nodeId: string, container: string, role: 'infra' | 'app'): Record<string, string> {
  return {
    [LABELS.task]: t.taskId,
    [LABELS.attempt]: String(t.attempt),
    [LABELS.pod]: t.podName,
    [LABELS.container]: container,
    [LABELS.node]: nodeId,
    [LABELS.cluster]: t.cluster,
    [LABELS.version]: FLOTILLA_VERSION,
    [LABELS.role]: role,
    [LABELS.specHash]: t.specHash,
  };
}

/**
 * The create options of app container `i` of a pod: it joins the infra's network namespace;
 * resources are clamped to the engine's CPUs (`hostCpus`, 0 when unknown).
 */
export function appConfig(
  t: Task,
  spec: TaskSpec,
  i: number,
  infraId: string,
  node: { nodeId: string; hostCpus: number },
  /** `secretsFrom`: the infra holding the secrets tmpfs (mounted read-only); `volumeBinds`: named volumes. */
  extra: { secretsFrom?: string | undefined; volumeBinds?: string[] } = {},
): Docker.ContainerCreateOptions {
  const c = spec.containers[i]!;
  const env: Record<string, string> = {
    FLOTILLA_TASK_ID: t.taskId,
    FLOTILLA_TASK_NAME: spec.name,
    FLOTILLA_CONTAINER: c.name,
    // As with the process driver: where the secrets and each named volume are.
    ...(extra.secretsFrom !== undefined ? { FLOTILLA_SECRETS_DIR: SECRETS_PATH } : {}),
    ...Object.fromEntries((spec.volumes ?? []).map((v) => [volumeEnvName(v.name), v.path])),
    ...c.env,
  };
  const cpu = spec.resources.cpu;
  let nanoCpus = 0;
  if (cpu > 0) {
    let milli = Math.max(10, cpu);
    if (node.hostCpus > 0) milli = Math.min(milli, node.hostCpus * 1000);
    nanoCpus = milli * 1_000_000;
  }
  const memory = spec.resources.memory;
  const cfg: Docker.ContainerCreateOptions = {
    Image: normalizeImage(c.image!),
    Env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
    Labels: { ...containerLabels(t, node.nodeId, c.name, 'app'), [LABELS.index]: String(i) },
    AttachStdin: false,
    AttachStdout: false,
    AttachStderr: false,
    Tty: false,
    OpenStdin: false,
    HostConfig: {
      NetworkMode: `container:${infraId}`,
      RestartPolicy: { Name: 'no' },
      NanoCpus: nanoCpus,
      Memory: memory,
      ...(memory > 0 ? { MemorySwap: memory } : {}),
      Privileged: spec.privileged === true,
      Binds: [...(spec.mounts ?? []).map((m) => `${m.source}:${m.target}${m.readonly ? ':ro' : ''}`), ...(extra.volumeBinds ?? [])],
      ...(extra.secretsFrom !== undefined ? { VolumesFrom: [`${extra.secretsFrom}:ro`] } : {}),
      LogConfig: { Type: 'json-file', Config: { 'max-size': '10m', 'max-file': '3' } },
    },
  };
  if (c.command.length > 0) {
    cfg.Entrypoint = c.command;
    cfg.Cmd = c.args;
  } else if (c.args.length > 0) {
    cfg.Cmd = c.args;
  }
  if (c.workdir !== undefined) cfg.WorkingDir = c.workdir;
  return cfg;
}
