// The services workload (`--workload services`): a few replicated services of the process
// driver, created at the start through any manager, then scaled, updated (a new template: its
// environment changes) and rolled back at random through random managers, while the nemesis
// breaks managers and workers. Every request goes once, through the workload's own proxy link
// ('services'), with a per-op timeout; outcomes are recorded like the kv workload's.
//
// Observation, for checker/services.ts: every second each service is read from the leader's
// API (linearizable `GET /v1/services/:name?all=true` with its tasks, and `GET /v1/nodes` for
// the nodes' status, on the managers' real addresses, outside the fault model), giving the
// leader's view of slots, versions and update progress over time. The workers' own view is the
// task processes the task workload already samples from their process-driver records and /proc.
import http from 'node:http';
import type { ServiceOpRecord, ServiceSample, ServiceTaskSample } from './checker/services.js';
import { isConverged } from './checker/services.js';
import type { ChaosCluster } from './cluster.js';
import { sleep } from './cluster.js';
import { HttpFailure, request } from './http.js';
import { Rng } from './prng.js';

export const SERVICE_LINK = 'services';
export const SERVICE_PREFIX = 'chaos-svc-';

/** The workload's services: one stop-first by one, one start-first, one stop-first by two. */
export const SERVICE_PLANS: readonly { name: string; replicas: number; order: 'stop-first' | 'start-first'; parallelism: number }[] = [
  { name: `${SERVICE_PREFIX}a`, replicas: 3, order: 'stop-first', parallelism: 1 },
  { name: `${SERVICE_PREFIX}b`, replicas: 2, order: 'start-first', parallelism: 1 },
  { name: `${SERVICE_PREFIX}c`, replicas: 4, order: 'stop-first', parallelism: 2 },
];

export interface ServiceWorkloadOptions {
  seed: number;
  opTimeoutMs: number;
  /** Time between two operations. */
  tickMs: number;
  /** Most replicas a scale asks for. */
  maxReplicas: number;
  /** The current leader if the monitor knows it (samples prefer it). */
  leader: () => string | null;
}

interface ServiceBody {
  name: string;
  replicas: number;
  templateVersion: number;
  ready: number;
  running: number;
  spec: { update: { order: 'stop-first' | 'start-first'; parallelism: number } };
  update: { state: string; startIndex: number };
  tasks: { id: string; state: string; desired: string; node: string | null; service?: { slot: number; version: number } }[];
}

/**
 * The replicas' command: like a server draining its connections, it takes a second to stop after
 * SIGTERM (within the workers' 2 s stop grace), so a successor started before its predecessor
 * is gone overlaps it for long enough to be seen.
 */
export const STOP_SLOWLY = "trap 'kill $! 2>/dev/null; sleep 1; exit 0' TERM; sleep 600 & wait";

export function serviceSpec(plan: (typeof SERVICE_PLANS)[number], generation: number, replicas = plan.replicas): Record<string, unknown> {
  return {
    name: plan.name,
    driver: 'process',
    replicas,
    containers: [{ command: ['/bin/sh', '-c', STOP_SLOWLY], env: { CHAOS_GENERATION: String(generation) } }],
    resources: { cpu: 10, memory: '8m' },
    restart: { policy: 'on-failure', backoffMs: 200, maxBackoffMs: 2000 },
    update: { parallelism: plan.parallelism, order: plan.order, monitorMs: 1000, failureAction: 'rollback' },
  };
}

export class ServiceWorkload {
  readonly ops: ServiceOpRecord[] = [];
  readonly samples: ServiceSample[] = [];
  /** The last sample of each service. */
  private readonly last = new Map<string, ServiceSample>();
  /** Services whose create was acknowledged (or found to exist). */
  readonly created = new Set<string>();
  private generation = 1;
  /** The replicas each service was last asked for (for the next update's spec). */
  private readonly asked = new Map<string, number>();

  constructor(
    private readonly cluster: ChaosCluster,
    private readonly clock: () => number,
    private readonly o: ServiceWorkloadOptions,
  ) {}

  get services(): string[] {
    return SERVICE_PLANS.map((p) => p.name);
  }

  /** Creates the services, then scales, updates and rolls back until the signal. */
  async run(signal: AbortSignal): Promise<void> {
    if (this.cluster.workerIds.length === 0) return;
    const rng = Rng.derive(this.o.seed, 'services');
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      while (!signal.aborted) {
        const manager = rng.pick(this.cluster.managerIds);
        const missing = SERVICE_PLANS.find((p) => !this.created.has(p.name));
        if (missing !== undefined) await this.create(missing, manager, agent);
        else {
          const plan = rng.pick(SERVICE_PLANS);
          const seen = this.last.get(plan.name);
          const active = seen !== undefined && (seen.updateState === 'updating' || seen.updateState === 'rolling_back');
          const r = rng.next();
          if (r < 0.25 && !active) await this.scale(plan, rng.between(1, this.o.maxReplicas), manager, agent);
          else if (r < 0.8) await this.update(plan, manager, agent);
          else await this.rollback(plan, manager, agent);
        }
        await sleep(this.o.tickMs, signal);
      }
    } finally {
      agent.destroy();
    }
  }

  private async send(kind: ServiceOpRecord['kind'], service: string, manager: string, agent: http.Agent, method: string, path: string, json: unknown, extra: Partial<ServiceOpRecord> = {}): Promise<ServiceOpRecord> {
    const sent = this.clock();
    const op: ServiceOpRecord = { at: sent, sent, service, kind, outcome: 'unknown', ...extra };
    this.ops.push(op);
    try {
      const res = await request(this.cluster.clientAddr(SERVICE_LINK, manager), path, { method, ...(json === undefined ? {} : { json }), timeoutMs: this.o.opTimeoutMs, agent, headers: this.cluster.authHeaders() });
      op.at = this.clock();
      if (res.status >= 200 && res.status < 300) op.outcome = 'ok';
      else {
        op.outcome = res.status >= 400 && res.status < 500 && res.status !== 421 ? 'fail' : 'unknown';
        const code = (res.body as { error?: { code?: string } } | null)?.error?.code;
        op.detail = `HTTP ${res.status}${code ? ` ${code}` : ''} via ${manager}`;
      }
    } catch (e) {
      op.at = this.clock();
      op.detail = `${(e as Error).message} via ${manager}`;
      if (!(e instanceof HttpFailure)) throw e;
    }
    return op;
  }

  private async create(plan: (typeof SERVICE_PLANS)[number], manager: string, agent: http.Agent): Promise<void> {
    const op = await this.send('create', plan.name, manager, agent, 'POST', '/v1/services', serviceSpec(plan, this.generation), { replicas: plan.replicas });
    // 409: it exists (an earlier create whose answer was lost took effect).
    if (op.outcome === 'ok' || op.detail?.startsWith('HTTP 409') === true) {
      this.created.add(plan.name);
      this.asked.set(plan.name, plan.replicas);
    }
  }

  private async scale(plan: (typeof SERVICE_PLANS)[number], replicas: number, manager: string, agent: http.Agent): Promise<void> {
    const op = await this.send('scale', plan.name, manager, agent, 'POST', `/v1/services/${plan.name}/scale`, { replicas }, { replicas });
    if (op.outcome !== 'fail') this.asked.set(plan.name, replicas);
  }

  private async update(plan: (typeof SERVICE_PLANS)[number], manager: string, agent: http.Agent): Promise<void> {
    const replicas = this.last.get(plan.name)?.replicas ?? this.asked.get(plan.name) ?? plan.replicas;
    const g = ++this.generation;
    await this.send('update', plan.name, manager, agent, 'PUT', `/v1/services/${plan.name}`, serviceSpec(plan, g, replicas), { replicas, detail: `generation ${g}` });
  }

  private async rollback(plan: (typeof SERVICE_PLANS)[number], manager: string, agent: http.Agent): Promise<void> {
    await this.send('rollback', plan.name, manager, agent, 'POST', `/v1/services/${plan.name}/rollback`, undefined);
  }

  /** Samples every service until the signal. */
  async observe(signal: AbortSignal, everyMs = 1000): Promise<void> {
    if (this.cluster.workerIds.length === 0) return;
    while (!signal.aborted) {
      await this.sample();
      await sleep(everyMs, signal);
    }
  }

  /** One read of every created service (leader first, else any manager up); false if none answered. */
  async sample(): Promise<boolean> {
    const l = this.o.leader();
    const up = this.cluster.managerIds.filter((m) => this.cluster.isUp(m));
    const order = l !== null && up.includes(l) ? [l, ...up.filter((m) => m !== l)] : up;
    for (const m of order) {
      const addr = this.cluster.realAddr.get(m)!;
      try {
        const nodes = await request(addr, '/v1/nodes', { timeoutMs: 2000, headers: this.cluster.authHeaders() });
        if (nodes.status !== 200) continue;
        const status = new Map(((nodes.body as { nodes: { id: string; status: string }[] }).nodes ?? []).map((n) => [n.id, n.status]));
        let all = true;
        for (const name of this.services) {
          const res = await request(addr, `/v1/services/${name}?all=true`, { timeoutMs: 2000, headers: this.cluster.authHeaders() });
          if (res.status === 404) continue; // not created (yet)
          if (res.status !== 200) {
            all = false;
            break;
          }
          const at = this.clock();
          const b = res.body as ServiceBody;
          const tasks: ServiceTaskSample[] = b.tasks
            .filter((t) => t.service !== undefined)
            .map((t) => ({ id: t.id, slot: t.service!.slot, version: t.service!.version, state: t.state, desired: t.desired, node: t.node, nodeStatus: t.node === null ? null : (status.get(t.node) ?? 'unknown') }));
          const s: ServiceSample = {
            at,
            service: name,
            replicas: b.replicas,
            order: b.spec.update.order,
            parallelism: b.spec.update.parallelism,
            updateState: b.update.state,
            updateStart: b.update.startIndex,
            templateVersion: b.templateVersion,
            ready: b.ready,
            running: b.running,
            tasks,
          };
          this.samples.push(s);
          this.last.set(name, s);
          this.created.add(name);
        }
        if (all) return true;
      } catch {
        /* next manager */
      }
    }
    return false;
  }

  /** Services not (yet) seen converged in their last sample. */
  unsettled(): string[] {
    return this.services.filter((n) => {
      const s = this.last.get(n);
      return s === undefined || !isConverged(s);
    });
  }
}
