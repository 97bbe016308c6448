// Services: the leader keeps every service at its spec. For each service it reads the record
// and the service's tasks from the replicated state, asks the pure planner (service-plan.ts)
// what to do, and proposes the decisions as one fenced batch (service.task, service.stopTask,
// service.removeTask, service.progress, service.rollback). Each decision's precondition is
// checked again when applied, so a plan made from a state that moved on meanwhile does no harm.
//
// It runs when a task or service changes, when a node changes, when a timed condition of a
// plan comes due (monitor period, delay, back-off) and every second. One proposal per service
// is in flight at a time: the next plan is made from the state that includes the last one's
// effects. A removed service's tasks are removed once they have ended.
import { randomBytes } from 'node:crypto';
import type { Service, SingleCommand, Task } from '../state.js';
import { isTerminal } from '../state.js';
import type { LeaderService, LeaderTerm, Logger, StateView } from '../ports.js';
import { planService, type Decision, type ServiceView, type SlotTask } from './service-plan.js';
import { monoNow, wallNow } from '../../clock.js';
import { healthOk } from '../state/task-health.js';

export interface ServicesOptions {
  /** How often every service is planned even without a change (ms). Default 1000. */
  intervalMs?: number;
}

/** The planner's view of a service record. */
export function serviceView(s: Service): ServiceView {
  return {
    name: s.name,
    replicas: s.spec.replicas,
    update: s.spec.update,
    version: s.templateVersion,
    previousVersion: s.previous?.version ?? null,
    status: s.update,
    replaceBackoffMs: s.spec.template.task.restart.backoffMs,
  };
}

/**
 * The planner's view of a service task. Ready = running on a node that is up and, when the
 * task has a health check, reported healthy by its worker (state/task-health.ts).
 */
export function slotTask(t: Task, nodeReady: (id: string) => boolean): SlotTask {
  const ready = t.state === 'running' && t.desired === 'running' && t.node !== null && nodeReady(t.node) && healthOk(t);
  let readySince: number | undefined;
  if (ready) {
    for (let i = t.history.length - 1; i >= 0; i--) {
      const h = t.history[i]!;
      if (h.attempt === t.attempt && h.state === 'running') {
        readySince = h.at;
        break;
      }
    }
    readySince ??= t.updatedAt;
    // With a check: ready since it became healthy (the worker's time of the change).
    if (t.spec.health !== undefined && t.health !== undefined) readySince = Math.max(readySince, t.health.at);
  }
  const terminal = isTerminal(t.state);
  const out: SlotTask = {
    id: t.id,
    slot: t.service!.slot,
    version: t.service!.version,
    desired: t.desired,
    state: t.state,
    willRestart: terminal && t.desired === 'running' && (t.nextRestartAt !== undefined || t.state === 'lost'),
    ready,
    failed: t.state === 'failed' || t.history.some((h) => h.state === 'failed'),
    createdAt: t.createdAt,
    createIndex: t.createVersion,
  };
  if (readySince !== undefined) out.readySince = readySince;
  if (terminal) out.endedAt = t.updatedAt;
  return out;
}

/** The commands that carry a plan's decisions, decided in `term` at `at`. */
export function decisionCommands(svc: ServiceView, decisions: readonly Decision[], term: number, at: number, newId: () => string = randomId): SingleCommand[] {
  return decisions.map((d): SingleCommand => {
    switch (d.kind) {
      case 'create':
        return { type: 'service.task', name: svc.name, id: `${svc.name}.${d.slot}.${newId()}`, slot: d.slot, version: d.version, exclusive: d.exclusive, reason: d.reason, term, at };
      case 'stop':
        return { type: 'service.stopTask', name: svc.name, taskId: d.taskId, reason: d.reason, term, at };
      case 'remove':
        return { type: 'service.removeTask', taskId: d.taskId, term, at };
      case 'status':
        return { type: 'service.progress', name: svc.name, status: d.status, term, at };
      case 'rollback':
        return { type: 'service.rollback', name: svc.name, reason: d.reason, from: svc.version, term, at };
    }
  });
}

function randomId(): string {
  return randomBytes(4).toString('hex');
}

export class Services implements LeaderService {
  readonly name = 'services';
  private timer: NodeJS.Timeout | null = null;
  private wakeTimer: NodeJS.Timeout | null = null;
  private wakeAt = Infinity;
  private unsubscribe: (() => void) | null = null;
  private scheduled = false;
  /** Services with a proposal in flight (and `''` for the removed services' tasks). */
  private inflight = new Set<string>();
  private readonly intervalMs: number;

  constructor(
    private readonly d: { state: StateView; lead: LeaderTerm; log: Logger },
    opts: ServicesOptions = {},
  ) {
    this.intervalMs = opts.intervalMs ?? 1000;
  }

  start(): void {
    this.stop();
    this.timer = setInterval(() => this.kick(), this.intervalMs);
    this.timer.unref();
    this.unsubscribe = this.d.state.onEvent((ev) => {
      if (ev.type === 'service.updated' || ev.type === 'node.updated') this.kick();
      else if ((ev.type === 'task.updated' || ev.type === 'task.removed') && ev.task.service !== undefined) this.kick();
    });
  }

  caughtUp(): void {
    this.kick();
  }

  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = null;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (this.wakeTimer) clearTimeout(this.wakeTimer);
    this.wakeTimer = null;
    this.wakeAt = Infinity;
    this.inflight.clear();
  }

  /** Plans soon (coalesced). */
  kick(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setTimeout(() => {
      this.scheduled = false;
      this.run();
    }, 20).unref();
  }

  private run(): void {
    if (this.d.lead.term() === null || !this.d.lead.caughtUp()) return;
    const now = wallNow();
    const nodeReady = (id: string): boolean => this.d.state.getNode(id)?.status === 'ready';
    const owners = new Set(this.d.state.serviceTaskOwners());
    let wake = Infinity;
    for (const s of this.d.state.listServices()) {
      const tasks = this.d.state.serviceTasks(s.name);
      owners.delete(s.name);
      if (this.inflight.has(s.name)) continue;
      const view = serviceView(s);
      const plan = planService(
        view,
        tasks.map((t) => slotTask(t, nodeReady)),
        now,
      );
      if (plan.wakeAt !== undefined) wake = Math.min(wake, plan.wakeAt);
      if (plan.decisions.length > 0) this.propose(s.name, (term) => decisionCommands(view, plan.decisions, term, wallNow()));
    }
    // What is left belongs to removed services: remove each task once it has ended.
    const orphans = [...owners].flatMap((n) => this.d.state.serviceTasks(n)).filter((t) => isTerminal(t.state) && t.nextRestartAt === undefined && !(t.state === 'lost' && t.desired === 'running'));
    if (orphans.length > 0 && !this.inflight.has('')) {
      this.propose('', (term) => orphans.map((t): SingleCommand => ({ type: 'service.removeTask', taskId: t.id, term, at: wallNow() })));
    }
    if (wake < Infinity) this.wakeUp(wake - now);
  }

  private propose(key: string, build: (term: number) => SingleCommand[]): void {
    this.inflight.add(key);
    void this.d.lead
      .decide(build)
      .catch((e: unknown) => this.d.log.warn('service decision failed', { service: key, err: (e as Error).message }))
      .finally(() => {
        this.inflight.delete(key);
        this.kick();
      });
  }

  private wakeUp(inMs: number): void {
    const at = monoNow() + Math.max(0, inMs);
    if (this.wakeTimer !== null && this.wakeAt <= at) return;
    if (this.wakeTimer) clearTimeout(this.wakeTimer);
    this.wakeAt = at;
    this.wakeTimer = setTimeout(() => {
      this.wakeTimer = null;
      this.wakeAt = Infinity;
      this.kick();
    }, Math.max(0, inMs) + 5);
    this.wakeTimer.unref();
  }
}
