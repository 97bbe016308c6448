// The docker driver's container configuration: labels and the create options of a pod's app
// containers (see docker.ts, "Container config").

import type Docker from 'dockerode';
import type { TaskSpec } from '../../protocol/spec.js';
import { FLOTILLA_VERSION, LABELS, normalizeImage } from './docker-names.js';
import type { Task } from './docker-pod.js';
import type { ContainerDns } from './docker-dns.js';
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
 * Whether the pod runs as its one container alone, without an infra container ("solo"): a
 * pod of exactly one container that names no secrets (the secrets tmpfs lives in the infra).
 * The container then owns the pod's network namespace, hostname and published ports itself,
 * and the engine creates and starts one container instead of two.
 */
export function soloPod(spec: TaskSpec): boolean {
  return spec.containers.length === 1 && (spec.secrets ?? []).length === 0;
}

/** Where a pod's network is published and resolved: the driver's settings for every pod. */
export interface PodNet {
  /** HostIp of every published port ('' = every address; `--publish-host`). */
  publishHost: string;
  /** The routing mesh's targets (the assignment's `publish`): each on a host port the engine picks. */
  publish: number[];
  /** The pods' DNS settings (the node's DNS server, docker-dns.ts), or null: Docker's default. */
  dns: ContainerDns | null;
}

/**
 * The pod's ports: every container port exposed, those with a `host` published on the node
 * (on `net.publishHost`), and each mesh target on a host port the engine picks unless the spec
 * already fixes one.
 */
export function podPorts(spec: TaskSpec, net: Pick<PodNet, 'publishHost' | 'publish'> = { publishHost: '', publish: [] }): { exposed: Record<string, object>; bindings: Record<string, { HostIp: string; HostPort: string }[]> } {
  const exposed: Record<string, object> = {};
  const bindings: Record<string, { HostIp: string; HostPort: string }[]> = {};
  for (const c of spec.containers) {
    for (const p of c.ports) {
      const key = `${p.container}/${p.protocol}`;
      exposed[key] = {};
      if (p.host !== undefined) (bindings[key] ??= []).push({ HostIp: net.publishHost, HostPort: String(p.host) });
    }
  }
  for (const port of net.publish) {
    const key = `${port}/tcp`;
    exposed[key] = {};
    if (bindings[key] === undefined) bindings[key] = [{ HostIp: net.publishHost, HostPort: '' }];
  }
  return { exposed, bindings };
}

/**
 * The create options of app container `i` of a pod: it joins the infra's network namespace
 * (`infraId`), or, for a solo pod (`infraId` null), is the pod's network itself (hostname,
 * exposed and published ports); resources are clamped to the engine's CPUs (`hostCpus`, 0
 * when unknown).
 *
 * Entrypoint = `command` when non-empty (then the image's Cmd is dropped, like `docker run
 * --entrypoint`), Cmd = `args` when non-empty; Env = FLOTILLA_TASK_ID, FLOTILLA_TASK_NAME,
 * FLOTILLA_CONTAINER, then the spec's `env`; WorkingDir = `workdir`; `privileged`, `mounts`
 * (binds) as given. The pod's `resources` apply to EACH app container (NanoCpus = millicores
 * × 10⁶, clamped to [10m, the engine's CPUs]; 0 = no limit. Memory = bytes with MemorySwap =
 * Memory, i.e. no swap; 0 = unlimited). Restart policy `no`; json-file logs, 3 × 10 MB.
 */
export function appConfig(
  t: Task,
  spec: TaskSpec,
  i: number,
  infraId: string | null,
  node: { nodeId: string; hostCpus: number },
  /** `secretsFrom`: the infra holding the secrets tmpfs (mounted read-only); `volumeBinds`: named volumes; `net`: a solo pod's ports and DNS. */
  extra: { secretsFrom?: string | undefined; volumeBinds?: string[]; net?: PodNet } = {},
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
      ...(infraId !== null ? { NetworkMode: `container:${infraId}` } : {}),
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
  if (infraId === null) {
    const { exposed, bindings } = podPorts(spec, extra.net);
    if (extra.net?.dns) Object.assign(cfg.HostConfig!, extra.net.dns);
    cfg.Hostname = spec.name.slice(0, 63);
    cfg.Labels![LABELS.containers] = JSON.stringify([c.name]); // marks the solo pod (read on adoption)
    cfg.ExposedPorts = exposed;
    cfg.HostConfig!.PortBindings = bindings;
  }
  if (c.command.length > 0) {
    cfg.Entrypoint = c.command;
    cfg.Cmd = c.args;
  } else if (c.args.length > 0) {
    cfg.Cmd = c.args;
  }
  if (c.workdir !== undefined) cfg.WorkingDir = c.workdir;
  return cfg;
}
