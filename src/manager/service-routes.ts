// The services API: /v1/services. Specs are validated here (per-field errors, 400, nothing
// written) and the writes go to the leader; reads are linearizable unless ?stale=true.
import { FlotillaError } from '../protocol/errors.js';
import { ingressPorts, parseReplicas, parseServiceSpec, type ServiceSpec } from '../protocol/service.js';
import { serviceEndpoints } from './endpoints.js';
import type { ServiceInfo, ServiceInspect } from '../protocol/api.js';
import { isLiveTask, type Service, type Task } from './state.js';
import { taskView, type UnplacedReasons } from './api.js';
import { Reply } from './http.js';
import { healthOk } from './state/task-health.js';
import type { CommandProposer, LeaderForward, ReadBarrier, RouteTable, StateView } from './ports.js';

export interface ServiceRouteDeps {
  routes: RouteTable;
  state: StateView;
  reads: ReadBarrier;
  writes: LeaderForward;
  proposer: CommandProposer;
  appliedIndex: () => number;
  unplaced: UnplacedReasons | null;
}

export interface ServiceRouteOptions {
  /** Allow specs with host mounts or privileged containers. */
  allowPrivileged?: boolean;
}

/** A service as the API answers it: the record and its replicas' counts. */
export function serviceInfo(state: StateView, s: Service): ServiceInfo {
  const tasks = state.serviceTasks(s.name);
  const slots = (pred: (t: Task) => boolean): number =>
    new Set(tasks.filter((t) => t.service!.slot <= s.spec.replicas && isLiveTask(t) && pred(t)).map((t) => t.service!.slot)).size;
  const nodeReady = (id: string | null): boolean => id !== null && state.getNode(id)?.status === 'ready';
  return {
    name: s.name,
    spec: s.spec,
    templateVersion: s.templateVersion,
    previousVersion: s.previous?.version ?? null,
    update: s.update,
    replicas: s.spec.replicas,
    running: slots((t) => t.state === 'running'),
    ready: slots((t) => t.state === 'running' && nodeReady(t.node) && healthOk(t)),
    upToDate: slots((t) => t.service!.version === s.templateVersion),
    createdAt: s.createdAt,
    updatedAt: s.updatedAt,
    version: s.version,
  };
}

export function registerServices(d: ServiceRouteDeps, opts: ServiceRouteOptions = {}): void {
  const r = d.routes.router;

  const parse = (body: unknown, action: string): ServiceSpec => {
    const spec = parseServiceSpec(body, { allowHostMounts: opts.allowPrivileged, action });
    if (spec.template.task.privileged && !opts.allowPrivileged) {
      throw new FlotillaError('bad_request', `Cannot ${action} as 'privileged' containers are not allowed in this cluster (start managers with --allow-privileged)`, {
        details: [{ path: 'privileged', message: 'not allowed in this cluster' }],
      });
    }
    // One service per mesh port: the routing mesh holds it on every worker.
    for (const p of ingressPorts(spec)) {
      const other = d.state.listServices().find((o) => o.name !== spec.name && ingressPorts(o.spec).some((q) => q.published === p.published));
      if (other !== undefined) throw new FlotillaError('conflict', `Cannot ${action} as port ${p.published} is already published by service '${other.name}'`, { details: [{ path: 'publish', message: `${p.published} is published by '${other.name}'` }] });
    }
    return spec;
  };
  const find = (name: string): Service => {
    const s = d.state.getService(name);
    if (s === undefined) throw new FlotillaError('not_found', `service '${name}' not found`);
    return s;
  };
  const answer = (name: string): ServiceInfo => serviceInfo(d.state, find(name));

  r.on('GET', '/v1/services', async (ctx) => {
    await d.reads.readable(ctx);
    return { services: d.state.listServices().map((s) => serviceInfo(d.state, s)), index: d.appliedIndex() };
  });

  r.on('POST', '/v1/services', async (ctx) => {
    const spec = parse(await ctx.json(), 'create service');
    return d.writes.onLeader(ctx, async () => {
      await d.proposer.propose({ type: 'service.create', spec, at: Date.now() });
      return new Reply(201, answer(spec.name));
    });
  });

  r.on('GET', '/v1/services/:name', async (ctx) => {
    await d.reads.readable(ctx);
    const s = find(ctx.params.name!);
    const all = ctx.query.get('all') === 'true';
    const tasks = d.state
      .serviceTasks(s.name)
      .filter((t) => all || t.desired === 'running' || !['stopped', 'succeeded', 'failed', 'lost'].includes(t.state))
      .sort((a, b) => a.service!.slot - b.service!.slot || a.createdAt - b.createdAt || (a.id < b.id ? -1 : 1))
      .map((t) => taskView(d.unplaced, t));
    const endpoints = serviceEndpoints(d.state, s);
    const out: ServiceInspect = { ...serviceInfo(d.state, s), tasks, ...(endpoints.length > 0 ? { endpoints } : {}), index: d.appliedIndex() };
    return out;
  });

  r.on('PUT', '/v1/services/:name', async (ctx) => {
    const name = ctx.params.name!;
    const body = await ctx.json();
    const withName = typeof body === 'object' && body !== null && !Array.isArray(body) && !('name' in body) ? { ...body, name } : body;
    const spec = parse(withName, 'update service');
    if (spec.name !== name) {
      throw new FlotillaError('bad_request', `Cannot update service as 'name' must be '${name}' (the service in the path)`, { details: [{ path: 'name', message: `must be '${name}'` }] });
    }
    return d.writes.onLeader(ctx, async () => {
      find(name);
      await d.proposer.propose({ type: 'service.update', name, spec, at: Date.now() });
      return answer(name);
    });
  });

  r.on('DELETE', '/v1/services/:name', async (ctx) => {
    const name = ctx.params.name!;
    return d.writes.onLeader(ctx, async () => {
      find(name);
      return d.proposer.propose({ type: 'service.remove', name, at: Date.now() });
    });
  });

  r.on('POST', '/v1/services/:name/scale', async (ctx) => {
    const name = ctx.params.name!;
    const body = (await ctx.json()) as { replicas?: unknown } | null;
    const replicas = parseReplicas(typeof body === 'object' && body !== null ? body.replicas : undefined);
    return d.writes.onLeader(ctx, async () => {
      find(name);
      await d.proposer.propose({ type: 'service.scale', name, replicas, at: Date.now() });
      return answer(name);
    });
  });

  r.on('POST', '/v1/services/:name/rollback', async (ctx) => {
    const name = ctx.params.name!;
    return d.writes.onLeader(ctx, async () => {
      find(name);
      await d.proposer.propose({ type: 'service.rollback', name, at: Date.now(), reason: 'rollback requested' });
      return answer(name);
    });
  });
}
