// The routing mesh's table, computed on the leader from the replicated state: for every port a
// service publishes in ingress mode, its ready replicas and where each listens. A replica is
// ready when its task runs on a node that is not down and its health check (if any) passes.
// A process-driver replica listens on `target` on its node's advertised host (the host of the
// address the worker registered, which the managers also use for logs). A docker replica is
// published by its worker's engine on a host port the engine picks (`meshPublish` asks for
// it in the assignment) and reached where the worker reported it (`Task.ports`: the binding's
// address, or the node's host when the engine binds every address); a docker replica whose
// worker reported no binding (an older worker) is left out.
import type { MeshBackend, MeshPort, PublishedPort, ServiceNames } from '../protocol/session.js';
import { ingressPorts } from '../protocol/service.js';
import type { StateView } from './ports.js';
import type { ServiceEndpoint } from '../protocol/api.js';
import type { Service, Task } from './state.js';
import { healthOk } from './state/task-health.js';

/** host of "host:port" ("[::1]:7000" → "::1"); null when there is none. */
export function hostOf(addr: string | undefined): string | null {
  if (addr === undefined || addr === '') return null;
  const i = addr.lastIndexOf(':');
  const host = (i < 0 ? addr : addr.slice(0, i)).replace(/^\[(.*)\]$/, '$1');
  return host === '' ? null : host;
}

/** Every ingress port of every service with its ready replicas, sorted (equal tables compare equal). */
export function meshTable(state: Pick<StateView, 'listServices' | 'serviceTasks' | 'getNode'>): MeshPort[] {
  const out: MeshPort[] = [];
  for (const svc of state.listServices()) {
    const ports = ingressPorts(svc.spec);
    if (ports.length === 0) continue;
    const tasks = state.serviceTasks(svc.name);
    for (const p of ports) {
      const backends: MeshBackend[] = [];
      for (const t of tasks) {
        if (t.state !== 'running' || t.desired !== 'running' || t.node === null) continue;
        if (t.service !== undefined && t.service.slot > svc.spec.replicas) continue;
        if (!healthOk(t)) continue;
        const node = state.getNode(t.node);
        if (node === undefined || node.status === 'down') continue;
        const at = replicaAddress(t, node.addr, p.target);
        if (at === null) continue;
        backends.push({ taskId: t.id, ...at });
      }
      backends.sort((a, b) => (a.taskId < b.taskId ? -1 : a.taskId > b.taskId ? 1 : 0));
      out.push({ service: svc.name, published: p.published, protocol: 'tcp', backends });
    }
  }
  out.sort((a, b) => a.published - b.published);
  return out;
}

/**
 * Every service's names for the workers' DNS servers (discovery): whether the mesh serves it,
 * and the hosts of the nodes of its ready replicas — the same readiness as `meshTable` (runs,
 * desired running, in its slots, passes its check, on a node not `down`), any driver. Sorted.
 */
export function nameTable(state: Pick<StateView, 'listServices' | 'serviceTasks' | 'getNode'>): ServiceNames[] {
  const out: ServiceNames[] = [];
  for (const svc of state.listServices()) {
    const hosts = new Set<string>();
    for (const t of state.serviceTasks(svc.name)) {
      if (t.state !== 'running' || t.desired !== 'running' || t.node === null) continue;
      if (t.service !== undefined && t.service.slot > svc.spec.replicas) continue;
      if (!healthOk(t)) continue;
      const node = state.getNode(t.node);
      if (node === undefined || node.status === 'down') continue;
      const host = hostOf(node.addr);
      if (host !== null) hosts.add(host);
    }
    out.push({ service: svc.name, mesh: ingressPorts(svc.spec).length > 0, tasks: [...hosts].sort() });
  }
  return out.sort((a, b) => (a.service < b.service ? -1 : a.service > b.service ? 1 : 0));
}

/**
 * Where the mesh reaches `target` of a replica: a process replica on its node's host; a docker
 * replica at the binding its worker reported (null: none reported, or no host known).
 */
export function replicaAddress(t: Pick<Task, 'spec' | 'ports'>, nodeAddr: string | undefined, target: number): { host: string; port: number } | null {
  const host = hostOf(nodeAddr);
  if (t.spec.driver === 'process') return host === null ? null : { host, port: target };
  const b = t.ports?.find((x) => x.container === target);
  if (b === undefined) return null;
  const h = b.hostIp ?? host;
  return h === null ? null : { host: h, port: b.hostPort };
}

/**
 * The container ports a docker task must publish on a dynamic host port (the assignment's
 * `publish`): the targets of its service's ingress entries. Empty for process tasks (they
 * listen on `target` themselves) and plain tasks.
 */
export function meshPublish(state: Pick<StateView, 'getService'>, t: Pick<Task, 'spec' | 'service'>): number[] {
  if (t.service === undefined || t.spec.driver !== 'docker') return [];
  const svc = state.getService(t.service.name);
  return svc === undefined ? [] : [...new Set(ingressPorts(svc.spec).map((p) => p.target))].sort((a, b) => a - b);
}

/** The endpoints of one service for `service inspect`: its live replicas, ready or not. */
export function serviceEndpoints(state: Pick<StateView, 'listServices' | 'serviceTasks' | 'getNode'>, svc: Pick<Service, 'name' | 'spec'>): ServiceEndpoint[] {
  const ports = ingressPorts(svc.spec);
  if (ports.length === 0) return [];
  const inTable = new Set(meshTable(state).filter((p) => p.service === svc.name).flatMap((p) => p.backends.map((b) => `${p.published}/${b.taskId}`)));
  const out: ServiceEndpoint[] = [];
  for (const t of state.serviceTasks(svc.name)) {
    if (t.desired !== 'running' || t.node === null || !['assigned', 'starting', 'running'].includes(t.state)) continue;
    const nodeAddr = state.getNode(t.node)?.addr;
    for (const p of ports) {
      const at = replicaAddress(t, nodeAddr, p.target);
      const host = at?.host ?? hostOf(nodeAddr) ?? '?';
      out.push({
        published: p.published,
        taskId: t.id,
        addr: `${host.includes(':') ? `[${host}]` : host}:${at?.port ?? '?'}`,
        ready: inTable.has(`${p.published}/${t.id}`),
        node: t.node,
        state: t.state,
        health: t.health?.status ?? '-',
      });
    }
  }
  return out.sort((a, b) => a.published - b.published || (a.taskId < b.taskId ? -1 : 1));
}

/** A worker's `ports` of a report, kept only when well-formed (at most 64 bindings); else undefined. */
export function reportedPorts(v: unknown): PublishedPort[] | undefined {
  if (!Array.isArray(v) || v.length > 64) return undefined;
  const out: PublishedPort[] = [];
  const port = (x: unknown): x is number => Number.isInteger(x) && (x as number) >= 1 && (x as number) <= 65535;
  for (const p of v as { container?: unknown; hostPort?: unknown; hostIp?: unknown }[]) {
    if (p === null || typeof p !== 'object' || !port(p.container) || !port(p.hostPort)) return undefined;
    const ip = typeof p.hostIp === 'string' && p.hostIp.length > 0 && p.hostIp.length <= 64 ? p.hostIp : undefined;
    out.push({ container: p.container, hostPort: p.hostPort, ...(ip !== undefined ? { hostIp: ip } : {}) });
  }
  return out;
}
