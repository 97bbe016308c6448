// The services controller's brain: a pure function from a service's replicated record and its
// tasks to the decisions that move it toward its spec (design principles 4 and 5).
//
// It is level-triggered: every decision is recomputed from what the Raft log holds (the
// service record, the tasks with their versions, states, readiness and history), never from
// what a leader remembers. A new leader that calls `planService` on the state it applied makes
// the same decisions the old one would have, so an update resumes where it was, no slot is
// lost and none is filled twice. The controller proposes the decisions fenced by its term; the
// state machine re-checks each one's precondition (see `CreateDecision.exclusive`).
//
// The model:
//  * A service has slots 1..replicas. A slot's *live* tasks are the ones desired running that
//    are not finished (or that the restart policy will restart in place). A task desired
//    shutdown that has not ended yet is *stopping*.
//  * Each template a service has had is a *version* (a number). The service record holds the
//    current one (the target) and the previous one (what a rollback returns to). A rollback
//    makes the previous version current again, so the tasks that never left it are already up
//    to date: a rollback replaces only the tasks that run the new template.
//  * A task is *ready* once healthy (once running when there is no health check); the caller
//    says so, and since when.
//
// What `planService` decides, in this order:
//  1. scale down: live tasks of slots above `replicas` are stopped (the highest slots go);
//  2. duplicates: a slot keeps at most one live task of the target version and one other (the
//     old task of a start-first update); an old task is stopped once the target's is ready and
//     has stayed ready through `monitorMs` (a new task that crashes soon after it starts does
//     not take the old one with it);
//  3. fill: a slot with no live and no stopping task gets a task of the target version (after
//     a back-off when its last task failed, so a crashing template is not a hot loop);
//  4. rolling update (state `updating` or `rolling_back`): count failures of the tasks this
//     update created; past `maxFailureRatio`, apply `failureAction`. Otherwise, once the last
//     batch's new tasks are ready and have stayed ready through `monitorMs` and `delayMs` has
//     passed, start the next batch of up to `parallelism` out-of-date slots: stop-first stops
//     their old tasks (step 3 fills them once stopped), start-first creates the new tasks
//     beside the old ones (step 2 stops the old ones once the new ones are ready). When every
//     slot runs a settled task of the target version, the update is `completed` (or
//     `rolled_back`);
//  5. garbage: finished tasks beyond the per-slot history limit are removed.
//
// Availability: a stop-first batch stops at most `ready − (replicas − parallelism)` ready
// tasks (out-of-date tasks that are not ready are replaced first, at no cost), and only once
// every new task of the update has stayed ready through its monitor period, so ready replicas
// never drop below `replicas − parallelism` by the update's doing (a new task that crashes
// within its monitor period is not counted on: no further batch starts, and the failure
// pauses or rolls back the update). A start-first batch stops nothing until a replacement has
// stayed ready through its monitor period, so ready replicas never drop.
//
// Pure module: no IO, no clocks (time comes in as `now`), no randomness.

import type { UpdatePolicy, UpdateStatus } from '../../protocol/service.js';
import { ACTIVE_UPDATE_STATES, slotName } from '../../protocol/service.js';

export { ACTIVE_UPDATE_STATES, type UpdateState, type UpdateStatus } from '../../protocol/service.js';

// =============================================================================================
// Inputs

/** What the planner needs of a service record. */
export interface ServiceView {
  name: string;
  replicas: number;
  update: UpdatePolicy;
  /** The target template version. */
  version: number;
  /** The version a rollback returns to, if there is one. */
  previousVersion: number | null;
  status: UpdateStatus;
  /** Back-off before a slot whose last task failed gets a new one (ms). */
  replaceBackoffMs: number;
}

export type SlotTaskState = 'pending' | 'assigned' | 'starting' | 'running' | 'succeeded' | 'failed' | 'lost' | 'stopped';

const FINISHED: ReadonlySet<SlotTaskState> = new Set<SlotTaskState>(['succeeded', 'failed', 'lost', 'stopped']);

/** What the planner needs of a service task. */
export interface SlotTask {
  id: string;
  slot: number;
  /** The template version it runs. */
  version: number;
  desired: 'running' | 'shutdown';
  state: SlotTaskState;
  /** Finished, but its restart policy will restart it in place (it is still the slot's task). */
  willRestart: boolean;
  /** Healthy (or running, without a health check) on a node that is up. */
  ready: boolean;
  /** Since when it has been ready (when `ready`). */
  readySince?: number;
  /** It failed at least once (an attempt ended `failed`); losing its node does not count. */
  failed: boolean;
  createdAt: number;
  /** Log index of its creation (orders it against `UpdateStatus.startIndex`). */
  createIndex: number;
  /** When it finished (for finished tasks). */
  endedAt?: number;
}

export interface PlanOptions {
  /** Finished tasks kept per slot within `replicas` (older ones are removed). Default 5. */
  historyLimit?: number;
  /** Finished tasks kept per slot above `replicas` (scaled away). Default 1. */
  removedSlotHistory?: number;
}

// =============================================================================================
// Decisions

export interface CreateDecision {
  kind: 'create';
  slot: number;
  version: number;
  /**
   * true: only if the slot has no live and no stopping task (fills and stop-first batches: a
   * slot never runs two tasks). false (start-first): only if the slot has no live task of
   * this version. The state machine re-checks this when it applies the create.
   */
  exclusive: boolean;
  reason: string;
}
export interface StopDecision {
  kind: 'stop';
  taskId: string;
  slot: number;
  reason: string;
}
export interface RemoveDecision {
  kind: 'remove';
  taskId: string;
}
/** Record a new update status (a batch started, paused, completed, rolled back). */
export interface StatusDecision {
  kind: 'status';
  status: UpdateStatus;
}
/** Roll back by itself: the previous version becomes current again, state `rolling_back`. */
export interface RollbackDecision {
  kind: 'rollback';
  reason: string;
}

export type Decision = CreateDecision | StopDecision | RemoveDecision | StatusDecision | RollbackDecision;

export interface Plan {
  decisions: Decision[];
  /** When a timed condition (monitor, delay, back-off) may change the plan: plan again then. */
  wakeAt?: number;
  /** Slots 1..replicas with a ready task. */
  ready: number;
  /** Slots 1..replicas whose live task runs the target version. */
  upToDate: number;
}

// =============================================================================================
// Planning

export function isFinished(state: SlotTaskState): boolean {
  return FINISHED.has(state);
}

/** A task that is (or, after a restart in place, will again be) the slot's task. */
export function isLive(t: SlotTask): boolean {
  return t.desired === 'running' && (!isFinished(t.state) || t.willRestart);
}

/** A task told to stop that has not ended yet. */
export function isStopping(t: SlotTask): boolean {
  return t.desired === 'shutdown' && !isFinished(t.state);
}

interface Slot {
  slot: number;
  live: SlotTask[];
  stopping: SlotTask[];
  finished: SlotTask[];
}

/** Better first: ready, then ready longer, then older, then by id (deterministic). */
function better(a: SlotTask, b: SlotTask): number {
  if (a.ready !== b.ready) return a.ready ? -1 : 1;
  if (a.ready && b.ready && a.readySince !== b.readySince) return (a.readySince ?? 0) - (b.readySince ?? 0);
  if (a.createdAt !== b.createdAt) return a.createdAt - b.createdAt;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

function groupSlots(tasks: readonly SlotTask[]): Map<number, Slot> {
  const slots = new Map<number, Slot>();
  for (const t of tasks) {
    let s = slots.get(t.slot);
    if (s === undefined) {
      s = { slot: t.slot, live: [], stopping: [], finished: [] };
      slots.set(t.slot, s);
    }
    if (isLive(t)) s.live.push(t);
    else if (isStopping(t)) s.stopping.push(t);
    else s.finished.push(t);
  }
  for (const s of slots.values()) s.live.sort(better);
  return slots;
}

/**
 * The decisions that move `svc` toward its spec, given all its tasks (any slot, any state) at
 * leader wall time `now`.
 */
export function planService(svc: ServiceView, tasks: readonly SlotTask[], now: number, opts: PlanOptions = {}): Plan {
  const historyLimit = opts.historyLimit ?? 5;
  const removedSlotHistory = opts.removedSlotHistory ?? 1;
  const R = svc.replicas;
  const V = svc.version;
  const name = svc.name;
  const decisions: Decision[] = [];
  let wakeAt: number | undefined;
  const wake = (at: number): void => {
    if (at > now && (wakeAt === undefined || at < wakeAt)) wakeAt = at;
  };
  const slots = groupSlots(tasks);
  const slot = (k: number): Slot => slots.get(k) ?? { slot: k, live: [], stopping: [], finished: [] };
  /** Tasks this plan stops: they no longer count as live below. */
  const stopped = new Set<string>();
  const stop = (t: SlotTask, reason: string): void => {
    if (stopped.has(t.id)) return;
    stopped.add(t.id);
    decisions.push({ kind: 'stop', taskId: t.id, slot: t.slot, reason });
  };
  const liveOf = (k: number): SlotTask[] => slot(k).live.filter((t) => !stopped.has(t.id));

  // 1. Scale down: the slots above `replicas` go.
  for (const s of [...slots.values()].sort((a, b) => b.slot - a.slot)) {
    if (s.slot <= R) continue;
    for (const t of s.live) stop(t, `service ${name} scaled to ${R}`);
  }

  // 2. Duplicates: at most one live task of the target version and one other per slot; an
  // old task goes once the slot's target-version task is ready.
  for (let k = 1; k <= R; k++) {
    const live = liveOf(k);
    if (live.length < 2) continue;
    const current = live.filter((t) => t.version === V);
    const other = live.filter((t) => t.version !== V);
    for (const t of current.slice(1)) stop(t, `${slotName(name, k)} has another task of version ${V}`);
    for (const t of other.slice(1)) stop(t, `${slotName(name, k)} has another task`);
    // The old task goes only once the new one has stayed ready through the monitor period: a
    // new task that crashes soon after it starts (counted ready while it ran) must not take
    // its slot's old task with it (start-first keeps `replicas` ready).
    const cur = current[0];
    if (cur !== undefined && cur.ready && other[0] !== undefined) {
      const settled = cur.readySince === undefined ? now : cur.readySince + svc.update.monitorMs;
      if (settled <= now) stop(other[0], `replaced by version ${V} (ready through its monitor period)`);
      else wake(settled);
    }
  }

  // 3. Fill empty slots with the target version.
  const filled = new Set<number>();
  function fill(): void {
    for (let k = 1; k <= R; k++) {
      if (filled.has(k)) continue;
      const s = slot(k);
      if (liveOf(k).length > 0 || s.stopping.length > 0 || s.live.some((t) => stopped.has(t.id))) continue;
      const last = [...s.finished].sort((a, b) => (b.endedAt ?? b.createdAt) - (a.endedAt ?? a.createdAt))[0];
      // A template that just failed here is not started again at once (no hot loop); a
      // different version (a rollback's) is.
      if (last !== undefined && last.state === 'failed' && last.desired === 'running' && last.version === V) {
        const at = (last.endedAt ?? last.createdAt) + svc.replaceBackoffMs;
        if (now < at) {
          wake(at);
          continue;
        }
      }
      filled.add(k);
      decisions.push({
        kind: 'create',
        slot: k,
        version: V,
        exclusive: true,
        reason: last === undefined ? `${slotName(name, k)} has no task` : `${slotName(name, k)}'s last task ${last.state}`,
      });
    }
  }
  // 4a. Failures of the update's own tasks decide before anything new is created.
  const active = ACTIVE_UPDATE_STATES.has(svc.status.state);
  const rollingBack = svc.status.state === 'rolling_back';
  if (active) {
    const own = tasks.filter((t) => t.version === V && t.createIndex > svc.status.startIndex && t.slot <= R);
    const failedSlots = new Set(own.filter((t) => t.failed).map((t) => t.slot));
    const ratio = R === 0 ? 0 : failedSlots.size / R;
    if (failedSlots.size > 0 && ratio > svc.update.maxFailureRatio && svc.update.failureAction !== 'continue') {
      const which = [...failedSlots].sort((a, b) => a - b).map((k) => slotName(name, k));
      const why = `${failedSlots.size} of ${R} new task${failedSlots.size === 1 ? '' : 's'} failed (${which.join(', ')}; max failure ratio ${svc.update.maxFailureRatio})`;
      if (!rollingBack && svc.update.failureAction === 'rollback' && svc.previousVersion !== null) {
        decisions.push({ kind: 'rollback', reason: `update to version ${V} failed: ${why}` });
        // The rollback changes the target: nothing more is decided against the failed one.
        return finish(svc, slots, stopped, decisions, now, wakeAt, historyLimit, removedSlotHistory);
      }
      decisions.push({
        kind: 'status',
        status: {
          ...svc.status,
          state: rollingBack ? 'rollback_paused' : 'paused',
          message: `${rollingBack ? 'rollback' : 'update'} paused: ${why}`,
          updatedAt: now,
        },
      });
      // Paused: fill and scale below still apply; no further batch.
      fill();
      return finish(svc, slots, stopped, decisions, now, wakeAt, historyLimit, removedSlotHistory);
    }
  }

  fill();

  // 4b. Batches.
  if (active) {
    const own = (t: SlotTask): boolean => t.createIndex > svc.status.startIndex;
    const settledAt = (t: SlotTask): number | undefined => (t.ready && t.readySince !== undefined ? t.readySince + svc.update.monitorMs : undefined);
    const waiting: string[] = [];
    const outdated: { k: number; old: SlotTask; failedAt: number | null }[] = [];
    let lastSettled = 0;
    let readyNow = 0;
    for (let k = 1; k <= R; k++) {
      const live = liveOf(k);
      const s = slot(k);
      const cur = live.find((t) => t.version === V);
      const old = live.find((t) => t.version !== V);
      if (live.some((t) => t.ready)) readyNow++;
      if (cur !== undefined) {
        if (!own(cur)) continue; // already on the target before this update: not its business
        const at = settledAt(cur);
        // A failed new task within the failure ratio (or with failureAction continue) does not
        // hold the update back.
        if (at === undefined && cur.failed) continue;
        if (at === undefined) waiting.push(`${slotName(name, k)} to become ready`);
        else if (at > now) {
          waiting.push(`${slotName(name, k)} to stay ready until its monitor period ends`);
          wake(at);
        } else if (old !== undefined && !stopped.has(old.id)) waiting.push(`${slotName(name, k)}'s old task to stop`);
        if (at !== undefined) lastSettled = Math.max(lastSettled, at);
      } else if (old !== undefined) {
        // A slot whose new task already failed in this update (start-first: the old task is
        // still there) is retried last, and not before the back-off.
        const fails = s.finished.filter((t) => t.version === V && own(t) && t.failed).map((t) => t.endedAt ?? t.createdAt);
        outdated.push({ k, old, failedAt: fails.length > 0 ? Math.max(...fails) : null });
      } else if (s.stopping.length > 0 || filled.has(k)) {
        waiting.push(`${slotName(name, k)} to get its new task`);
      } else if (s.finished.some((t) => t.version === V && own(t) && t.failed)) {
        // Its new task failed and waits out the back-off: as above, it does not hold the update.
      } else {
        waiting.push(`${slotName(name, k)} to be filled`);
      }
    }
    const P = svc.update.parallelism;
    const word = rollingBack ? 'rollback' : 'update';
    const total = svc.status.batches + Math.ceil(outdated.length / P);
    if (waiting.length > 0) {
      // The batch in flight is not done yet.
    } else if (outdated.length === 0) {
      decisions.push({
        kind: 'status',
        status: {
          ...svc.status,
          state: rollingBack ? 'rolled_back' : 'completed',
          message: `${word} to version ${V} ${rollingBack ? 'rolled back' : 'completed'}: ${R} of ${R} tasks on version ${V}`,
          updatedAt: now,
        },
      });
    } else if (now < lastSettled + svc.update.delayMs && svc.status.batches > 0) {
      wake(lastSettled + svc.update.delayMs);
    } else {
      // Out-of-date tasks that are not ready first: replacing them costs no availability.
      // Then slots not tried yet, then the ones whose new task failed.
      const rank = (o: (typeof outdated)[number]): number => (o.old.ready ? 1 : 0) * 2 + (o.failedAt !== null ? 1 : 0);
      outdated.sort((a, b) => rank(a) - rank(b) || a.k - b.k);
      const batch: typeof outdated = [];
      let readyStops = Math.max(0, readyNow - (R - P));
      for (const o of outdated) {
        if (batch.length >= P) break;
        if (o.failedAt !== null && now < o.failedAt + svc.replaceBackoffMs) {
          wake(o.failedAt + svc.replaceBackoffMs);
          continue;
        }
        if (svc.update.order === 'stop-first' && o.old.ready) {
          if (readyStops === 0) continue;
          readyStops--;
        }
        batch.push(o);
      }
      if (batch.length === 0) {
        const status = { ...svc.status, message: `${word} to version ${V} waiting: ${readyNow} of ${R} ready, at least ${R - P} must stay ready`, updatedAt: now };
        if (status.message !== svc.status.message) decisions.push({ kind: 'status', status });
      } else {
        const n = svc.status.batches + 1;
        const slotsText = batch.map((o) => slotName(name, o.k)).join(', ');
        decisions.push({
          kind: 'status',
          status: { ...svc.status, batches: n, message: `${word} to version ${V}: batch ${n} of ${total} (${slotsText})`, updatedAt: now },
        });
        for (const o of batch) {
          if (svc.update.order === 'stop-first') {
            stop(o.old, `${word} to version ${V} (batch ${n})`);
          } else {
            decisions.push({ kind: 'create', slot: o.k, version: V, exclusive: false, reason: `${word} to version ${V} (batch ${n}, start-first)` });
          }
        }
      }
    }
  }

  return finish(svc, slots, stopped, decisions, now, wakeAt, historyLimit, removedSlotHistory);
}

function finish(
  svc: ServiceView,
  slots: Map<number, Slot>,
  stopped: Set<string>,
  decisions: Decision[],
  _now: number,
  wakeAt: number | undefined,
  historyLimit: number,
  removedSlotHistory: number,
): Plan {
  // 5. Garbage: finished tasks beyond the history limit of their slot.
  for (const s of [...slots.values()].sort((a, b) => a.slot - b.slot)) {
    const keep = s.slot <= svc.replicas ? historyLimit : removedSlotHistory;
    const old = [...s.finished].sort((a, b) => (b.endedAt ?? b.createdAt) - (a.endedAt ?? a.createdAt) || (a.id < b.id ? -1 : 1));
    for (const t of old.slice(keep)) decisions.push({ kind: 'remove', taskId: t.id });
  }
  let ready = 0;
  let upToDate = 0;
  for (let k = 1; k <= svc.replicas; k++) {
    const live = (slots.get(k)?.live ?? []).filter((t) => !stopped.has(t.id));
    if (live.some((t) => t.ready)) ready++;
    if (live.some((t) => t.version === svc.version)) upToDate++;
  }
  return wakeAt === undefined ? { decisions, ready, upToDate } : { decisions, wakeAt, ready, upToDate };
}

/** One line for `service ls`: "3/4 ready, updating: batch 2 of 4 (web.3)". */
export function describeProgress(svc: Pick<ServiceView, 'replicas' | 'status'>, ready: number): string {
  const head = `${ready}/${svc.replicas} ready`;
  return svc.status.state === 'none' ? head : `${head}, ${svc.status.state.replace('_', ' ')}: ${svc.status.message}`;
}
