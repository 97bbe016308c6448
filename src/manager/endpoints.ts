// The routing mesh's table, computed on the leader from the replicated state: for every port a
// service publishes in ingress mode, its ready replicas and where each listens. A replica is
// ready when its task runs on a node that is not down and its health check (if any) passes.
// A process-driver replica listens on `target` on its node's advertised host (the host of the
// address the worker registered, which the managers also use for logs).
//
// Docker replicas are left out in this slice: the docker driver publishes no port for an
// ingress entry and reports no dynamic host port back, so the mesh has nowhere to send them.
import type { MeshBackend, MeshPort } from '../protocol/session.js';
import { ingressPorts } from '../protocol/service.js';
import type { StateView } from './ports.js';
import type { ServiceEndpoint } from '../protocol/api.js';
import type { Service } from './state.js';
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
        if (t.state !== 'running' || t.desired !== 'running' || t.node === null || t.spec.driver !== 'process') continue;
        if (t.service !== undefined && t.service.slot > svc.spec.replicas) continue;
        if (!healthOk(t)) continue;
        const node = state.getNode(t.node);
        if (node === undefined || node.status === 'down') continue;
        const host = hostOf(node.addr);
        if (host === null) continue;
        backends.push({ taskId: t.id, host, port: p.target });
      }
      backends.sort((a, b) => (a.taskId < b.taskId ? -1 : a.taskId > b.taskId ? 1 : 0));
      out.push({ service: svc.name, published: p.published, protocol: 'tcp', backends });
    }
  }
  out.sort((a, b) => a.published - b.published);
  return out;
}

/** The endpoints of one service for `service inspect`: its live replicas, ready or not. */
export function serviceEndpoints(state: Pick<StateView, 'listServices' | 'serviceTasks' | 'getNode'>, svc: Pick<Service, 'name' | 'spec'>): ServiceEndpoint[] {
  const ports = ingressPorts(svc.spec);
  if (ports.length === 0) return [];
  const inTable = new Set(meshTable(state).filter((p) => p.service === svc.name).flatMap((p) => p.backends.map((b) => `${p.published}/${b.taskId}`)));
  const out: ServiceEndpoint[] = [];
  for (const t of state.serviceTasks(svc.name)) {
    if (t.desired !== 'running' || t.node === null || !['assigned', 'starting', 'running'].includes(t.state)) continue;
    const host = hostOf(state.getNode(t.node)?.addr) ?? '?';
    for (const p of ports) {
      out.push({
        published: p.published,
        taskId: t.id,
        addr: `${host.includes(':') ? `[${host}]` : host}:${p.target}`,
        ready: inTable.has(`${p.published}/${t.id}`),
        node: t.node,
        state: t.state,
        health: t.health?.status ?? '-',
      });
    }
  }
  return out.sort((a, b) => a.published - b.published || (a.taskId < b.taskId ? -1 : 1));
}
