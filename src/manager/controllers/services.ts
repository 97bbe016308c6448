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
import { monoNow, systemTimers, wallNow, type Timers } from '../../clock.js';
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
  private timer: (() => void) | null = null;
  private wakeTimer: (() => void) | null = null;
  private wakeAt = Infinity;
  private unsubscribe: (() => void) | null = null;
  private scheduled = false;
  /** Services with a proposal in flight (and `''` for the removed services' tasks). */
  private inflight = new Set<string>();
  private readonly intervalMs: number;
  /** Monotonic ms this leader dates each replicated timestamp of a task to (see `steady`). */
  private seen = new Map<string, number>();

  constructor(
    private readonly d: { state: StateView; lead: LeaderTerm; log: Logger; timers?: Timers; newId?: () => string },
    opts: ServicesOptions = {},
  ) {
    this.intervalMs = opts.intervalMs ?? 1000;
  }

  start(): void {
    this.stop();
    this.timer = this.t.every(this.intervalMs, () => this.kick());
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
    this.timer?.();
    this.timer = null;
    this.wakeTimer?.();
    this.wakeTimer = null;
    this.wakeAt = Infinity;
    this.inflight.clear();
    this.seen.clear();
  }

  /**
   * A task's replicated wall-clock times (ready since, ended at: a worker's or a leader's clock)
   * in a frame where `now` (this leader's wall clock) moves with the monotonic clock. The age of
   * each is read once, bounded by the longest wait the planner measures from it, and then counted
   * monotonically (as the restart controller does with backoffs): a wall clock stepped back does
   * not stretch a monitor period or back-off, one stepped forward does not skip it.
   */
  private steady(t: SlotTask, view: ServiceView, now: number, mono: number, used: Set<string>): SlotTask {
    // `used`: the ids of the tasks still planned (the others' entries are dropped).
    const horizon = Math.max(view.update.monitorMs + view.update.delayMs, view.replaceBackoffMs);
    const rebase = (what: string, at: number): number => {
      const key = `${t.id}\u0000${what}:${at}`;
      used.add(t.id);
      let m = this.seen.get(key);
      if (m === undefined) {
        m = mono - Math.min(horizon, Math.max(0, now - at));
        this.seen.set(key, m);
      }
      return now - (mono - m);
    };
    const out = { ...t };
    if (t.readySince !== undefined) out.readySince = rebase('ready', t.readySince);
    if (t.endedAt !== undefined) out.endedAt = rebase('ended', t.endedAt);
    return out;
  }

  /** Plans soon (coalesced). */
  kick(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    this.t.after(20, () => {
      this.scheduled = false;
      this.run();
    });
  }

  private get t(): Timers {
    return this.d.timers ?? systemTimers;
  }

  private run(): void {
    if (this.d.lead.term() === null || !this.d.lead.caughtUp()) return;
    const now = wallNow();
    const mono = monoNow();
    const used = new Set<string>();
    const nodeReady = (id: string): boolean => this.d.state.getNode(id)?.status === 'ready';
    const owners = new Set(this.d.state.serviceTaskOwners());
    let wake = Infinity;
    for (const s of this.d.state.listServices()) {
      const tasks = this.d.state.serviceTasks(s.name);
      owners.delete(s.name);
      if (this.inflight.has(s.name)) {
        for (const t of tasks) used.add(t.id);
        continue;
      }
      const view = serviceView(s);
      const plan = planService(
        view,
        tasks.map((t) => this.steady(slotTask(t, nodeReady), view, now, mono, used)),
        now,
      );
      if (plan.wakeAt !== undefined) wake = Math.min(wake, plan.wakeAt);
      if (plan.decisions.length > 0) this.propose(s.name, (term) => decisionCommands(view, plan.decisions, term, wallNow(), this.d.newId));
    }
    // What is left belongs to removed services: remove each task once it has ended.
    const orphans = [...owners].flatMap((n) => this.d.state.serviceTasks(n)).filter((t) => isTerminal(t.state) && t.nextRestartAt === undefined && !(t.state === 'lost' && t.desired === 'running'));
    if (orphans.length > 0 && !this.inflight.has('')) {
      this.propose('', (term) => orphans.map((t): SingleCommand => ({ type: 'service.removeTask', taskId: t.id, term, at: wallNow() })));
    }
    for (const k of this.seen.keys()) if (!used.has(k.slice(0, k.indexOf('\u0000')))) this.seen.delete(k);
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
    this.wakeTimer?.();
    this.wakeAt = at;
    this.wakeTimer = this.t.after(Math.max(0, inMs) + 5, () => {
      this.wakeTimer = null;
      this.wakeAt = Infinity;
      this.kick();
    });
  }
}
