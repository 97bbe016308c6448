// Service invariants over what the chaos harness observed of services. PURE: no IO, no clocks.
//
// Inputs (all times on the harness's clock):
//   samples     the leader's view of each service, read from its API over time: the service's
//               desired replicas, update policy and state, and its tasks (slot, template
//               version, state, node) with the status of each task's node.
//   processes   task processes seen alive on the workers (the workers' own records + /proc;
//               observed intervals are inside the real ones, so an observed overlap is real).
//               A process is attributed to a service slot through the task ids of the samples.
//   downs       windows in which a worker was down (killed, paused, crash-restarted, killed for
//               good: `to` null) by the nemesis' doing.
//   healedAt    when every fault was healed.
//
// Invariants:
//   slot-double-run     (leader view) a sample in which one slot has two tasks running on nodes
//                       that are not down; (workers' view) two processes of different tasks of
//                       one slot alive at once. Allowed: start-first services, while a task of
//                       the old template and one of the new share a slot (that is the order's
//                       point), and a worker's copy while that worker was down (it cannot be
//                       told to stop) until `downBoundMs` after it came back
//                       (`down-outlived` past that).
//   availability-drop   during a rolling update or rollback (state updating / rolling_back),
//                       the number of slots with a running task on a node that is not down
//                       drops (compared with the previous sample of the same update and the same
//                       replicas) below the minimum: replicas − parallelism for stop-first,
//                       replicas for start-first. Excused within `downBoundMs` of a worker
//                       being down, and right after a scale (`scaleGraceMs`).
//   not-converged       after `healedAt`, within `convergeWithin`, no sample of the service in
//                       which every slot 1..replicas has exactly one running task of the current
//                       template on a ready node, no slot above replicas has a live task, and no
//                       update is in progress.

export interface ServiceTaskSample {
  id: string;
  slot: number;
  version: number;
  state: string;
  desired: string;
  node: string | null;
  /** The status of the task's node in the same read: ready | unknown | down (null: no node). */
  nodeStatus: string | null;
}

export interface ServiceSample {
  at: number;
  service: string;
  replicas: number;
  order: 'stop-first' | 'start-first';
  parallelism: number;
  updateState: string;
  /** Log index of the command that started the update (identifies one update). */
  updateStart: number;
  templateVersion: number;
  /** The API's own counts, for the report. */
  ready: number;
  running: number;
  tasks: ServiceTaskSample[];
}

export interface ServiceProcess {
  taskId: string;
  attempt: number;
  node: string;
  pid: number;
  from: number;
  to: number | null;
}

export interface WorkerDown {
  node: string;
  from: number;
  /** When it came back; null = never (killed for good). */
  to: number | null;
  how: string;
}

export interface ServiceOpRecord {
  at: number;
  service: string;
  kind: 'create' | 'scale' | 'update' | 'rollback';
  outcome: 'ok' | 'fail' | 'unknown';
  /** When the request was sent. */
  sent?: number;
  replicas?: number;
  detail?: string;
}

export interface ServicesCheckInput {
  samples: readonly ServiceSample[];
  processes?: readonly ServiceProcess[];
  downs?: readonly WorkerDown[];
  ops?: readonly ServiceOpRecord[];
  /** Services that must converge (default: every service sampled). */
  services?: readonly string[];
  /** When every fault was healed (null: not healed, convergence not checked). */
  healedAt: number | null;
}

export interface ServicesCheckOptions {
  /** How long after healing each service must have converged. */
  convergeWithin: number;
  /** How long a down worker's copy may overlap (after it came back), and excuses availability. */
  downBoundMs: number;
  /** Availability drops this soon after a scale request are not judged. */
  scaleGraceMs?: number;
}

export type ServiceViolation =
  | { kind: 'slot-double-run'; view: 'leader' | 'workers'; service: string; slot: number; message: string; at: number; tasks: string[] }
  | { kind: 'down-outlived'; view: 'workers'; service: string; slot: number; message: string; at: number; tasks: string[] }
  | { kind: 'availability-drop'; service: string; message: string; at: number; ready: number; minimum: number; previous: number }
  | { kind: 'not-converged'; service: string; message: string; last: ServiceSample | null };

export interface ServicesResult {
  ok: boolean;
  services: number;
  samples: number;
  /** Samples taken while an update or rollback was in progress. */
  updateSamples: number;
  /** Updates (distinct update starts) seen in progress. */
  updatesSeen: number;
  /** Process intervals attributed to a slot. */
  processes: number;
  /** Overlaps excused: a down worker's copy within the bound, or start-first old+new. */
  excused: { downOverlaps: number; startFirstOverlaps: number; availabilityWhileDown: number };
  /** Per service: ms after healing when it was first seen converged (null: never). */
  convergedAfter: Record<string, number | null>;
  violations: ServiceViolation[];
}

const ACTIVE = new Set(['updating', 'rolling_back']);

/** Slots with a running task on a node not down (the available replicas of a sample). */
export function availableSlots(s: ServiceSample): number {
  const slots = new Set<number>();
  for (const t of s.tasks) if (t.slot <= s.replicas && t.state === 'running' && t.nodeStatus !== 'down' && t.node !== null) slots.add(t.slot);
  return slots.size;
}

/** The minimum available replicas a rolling update of this sample's service may leave. */
export function updateMinimum(s: ServiceSample): number {
  return s.order === 'start-first' ? s.replicas : Math.max(0, s.replicas - s.parallelism);
}

/** Every slot 1..replicas runs one task of the current template on a ready node, nothing above, no update running. */
export function isConverged(s: ServiceSample): boolean {
  if (ACTIVE.has(s.updateState)) return false;
  const bySlot = new Map<number, ServiceTaskSample[]>();
  for (const t of s.tasks) {
    const live = t.desired === 'running' && (t.state === 'running' || t.state === 'pending' || t.state === 'assigned' || t.state === 'starting');
    if (!live) continue;
    if (t.slot > s.replicas) return false;
    let l = bySlot.get(t.slot);
    if (l === undefined) bySlot.set(t.slot, (l = []));
    l.push(t);
  }
  for (let slot = 1; slot <= s.replicas; slot++) {
    const l = bySlot.get(slot) ?? [];
    if (l.length !== 1) return false;
    const t = l[0]!;
    if (t.state !== 'running' || t.version !== s.templateVersion || t.nodeStatus !== 'ready') return false;
  }
  return true;
}

export function checkServices(input: ServicesCheckInput, opts: ServicesCheckOptions): ServicesResult {
  const samples = [...input.samples].sort((a, b) => a.at - b.at);
  const downs = input.downs ?? [];
  const violations: ServiceViolation[] = [];
  const excused = { downOverlaps: 0, startFirstOverlaps: 0, availabilityWhileDown: 0 };
  const bound = opts.downBoundMs;
  const scaleGrace = opts.scaleGraceMs ?? bound;
  /** A window of `node` being down that covers `at` (with the bound after it came back). */
  const downAt = (node: string | null, at: number): WorkerDown | undefined =>
    node === null ? undefined : downs.find((d) => d.node === node && d.from <= at && (d.to === null || at <= d.to + bound));
  const anyDownNear = (at: number): boolean => downs.some((d) => d.from <= at && (d.to === null || at <= d.to + bound));

  // Which task is which slot (and the service's order), from every sample.
  const slotOf = new Map<string, { service: string; slot: number; version: number }>();
  const orderOf = new Map<string, ServiceSample['order']>();
  for (const s of samples) {
    orderOf.set(s.service, s.order);
    for (const t of s.tasks) slotOf.set(t.id, { service: s.service, slot: t.slot, version: t.version });
  }

  // ---- slot-double-run, the leader's view (one violation per service slot)
  const reported = new Set<string>();
  for (const s of samples) {
    const bySlot = new Map<number, ServiceTaskSample[]>();
    for (const t of s.tasks) {
      if (t.state !== 'running' || t.nodeStatus === 'down') continue;
      let l = bySlot.get(t.slot);
      if (l === undefined) bySlot.set(t.slot, (l = []));
      l.push(t);
    }
    for (const [slot, l] of bySlot) {
      if (l.length < 2) continue;
      const key = `${s.service}.${slot}`;
      if (s.order === 'start-first' && l.length === 2 && l[0]!.version !== l[1]!.version) {
        excused.startFirstOverlaps++;
        continue;
      }
      if (l.some((t) => downAt(t.node, s.at) !== undefined)) {
        excused.downOverlaps++;
        continue;
      }
      if (reported.has(`leader ${key}`)) continue;
      reported.add(`leader ${key}`);
      violations.push({
        kind: 'slot-double-run',
        view: 'leader',
        service: s.service,
        slot,
        at: s.at,
        tasks: l.map((t) => t.id),
        message: `slot ${key} had ${l.length} tasks running at ${s.at} in the leader's view: ${l.map((t) => `${t.id} (v${t.version}) on ${t.node}`).join(', ')}`,
      });
    }
  }

  // ---- slot-double-run, the workers' view
  const procs = (input.processes ?? []).filter((p) => slotOf.has(p.taskId));
  const bySlot = new Map<string, ServiceProcess[]>();
  for (const p of procs) {
    const x = slotOf.get(p.taskId)!;
    const k = `${x.service}.${x.slot}`;
    let l = bySlot.get(k);
    if (l === undefined) bySlot.set(k, (l = []));
    l.push(p);
  }
  for (const [key, list] of bySlot) {
    const sorted = [...list].sort((a, b) => a.from - b.from);
    let done = false;
    for (let i = 0; i < sorted.length && !done; i++) {
      const a = sorted[i]!;
      const aTo = a.to ?? Infinity;
      for (let j = i + 1; j < sorted.length; j++) {
        const b = sorted[j]!;
        if (b.from >= aTo) break;
        if (a.taskId === b.taskId) continue; // one task's attempts: the task checker's business
        const bTo = b.to ?? Infinity;
        const from = Math.max(a.from, b.from);
        const to = Math.min(aTo, bTo);
        if (!(from < to)) continue;
        const xa = slotOf.get(a.taskId)!;
        const xb = slotOf.get(b.taskId)!;
        if (orderOf.get(xa.service) === 'start-first' && xa.version !== xb.version) {
          excused.startFirstOverlaps++;
          continue;
        }
        const slot = xa.slot;
        const service = xa.service;
        const what = `${a.taskId} (v${xa.version}, pid ${a.pid} on ${a.node}) and ${b.taskId} (v${xb.version}, pid ${b.pid} on ${b.node})`;
        // A copy on a worker that was down when the overlap began: excused within the bound.
        const w = [a, b].map((p) => downs.find((d) => d.node === p.node && d.from <= from && (d.to === null || from <= d.to + bound))).find((d) => d !== undefined);
        if (w !== undefined) {
          const limit = (w.to ?? w.from) + bound;
          if (to <= limit) {
            excused.downOverlaps++;
            continue;
          }
          violations.push({
            kind: 'down-outlived',
            view: 'workers',
            service,
            slot,
            at: from,
            tasks: [a.taskId, b.taskId],
            message: `slot ${key} ran two tasks past the bound after ${w.node} was down (${w.how} at ${w.from}${w.to === null ? ', never back' : `, back at ${w.to}`}): ${what} overlapped from ${from} until ${to === Infinity ? 'the end' : to}, past ${limit}`,
          });
          done = true;
          break;
        }
        violations.push({
          kind: 'slot-double-run',
          view: 'workers',
          service,
          slot,
          at: from,
          tasks: [a.taskId, b.taskId],
          message: `slot ${key} ran two tasks at once on live workers: ${what} from ${from} to ${to === Infinity ? 'the end' : to}`,
        });
        done = true; // once per slot
        break;
      }
    }
  }

  // ---- availability-drop
  const scales = (input.ops ?? []).filter((o) => o.kind === 'scale' && o.outcome !== 'fail');
  const byService = new Map<string, ServiceSample[]>();
  for (const s of samples) {
    let l = byService.get(s.service);
    if (l === undefined) byService.set(s.service, (l = []));
    l.push(s);
  }
  let updateSamples = 0;
  const updates = new Set<string>();
  for (const [service, list] of byService) {
    let prev: ServiceSample | null = null;
    for (const s of list) {
      if (!ACTIVE.has(s.updateState)) {
        prev = null;
        continue;
      }
      updateSamples++;
      updates.add(`${service}@${s.updateStart}`);
      const same = prev !== null && prev.updateStart === s.updateStart && prev.updateState === s.updateState && prev.replicas === s.replicas;
      const cur = availableSlots(s);
      const min = updateMinimum(s);
      if (same && cur < min && cur < availableSlots(prev!)) {
        const scaled = scales.some((o) => o.service === service && (o.sent ?? o.at) <= s.at && s.at - o.at <= scaleGrace);
        if (anyDownNear(s.at) || scaled) excused.availabilityWhileDown++;
        else
          violations.push({
            kind: 'availability-drop',
            service,
            at: s.at,
            ready: cur,
            minimum: min,
            previous: availableSlots(prev!),
            message: `${service}: ${cur} of ${s.replicas} replicas available at ${s.at} during ${s.updateState} (${s.order}, parallelism ${s.parallelism}: minimum ${min}), ${availableSlots(prev!)} at ${prev!.at}, with every worker up`,
          });
      }
      prev = s;
    }
  }

  // ---- not-converged
  const convergedAfter: Record<string, number | null> = {};
  const names = input.services ?? [...byService.keys()];
  if (input.healedAt !== null) {
    const healed = input.healedAt;
    for (const service of names) {
      const after = (byService.get(service) ?? []).filter((s) => s.at >= healed);
      const first = after.find((s) => isConverged(s));
      convergedAfter[service] = first === undefined ? null : first.at - healed;
      if (first === undefined || first.at - healed > opts.convergeWithin) {
        const last = after.length > 0 ? after[after.length - 1]! : null;
        violations.push({
          kind: 'not-converged',
          service,
          last,
          message:
            first === undefined
              ? `${service} did not converge after healing (${after.length} samples after healing; last: ${last === null ? 'none' : describeSample(last)})`
              : `${service} converged only ${first.at - healed} after healing (bound ${opts.convergeWithin})`,
        });
      }
    }
  }

  return {
    ok: violations.length === 0,
    services: new Set([...names, ...byService.keys()]).size,
    samples: samples.length,
    updateSamples,
    updatesSeen: updates.size,
    processes: procs.length,
    excused,
    convergedAfter,
    violations,
  };
}

export function describeSample(s: ServiceSample): string {
  const live = s.tasks.filter((t) => t.desired === 'running').map((t) => `${t.slot}:v${t.version}:${t.state}@${t.node ?? '-'}${t.nodeStatus !== null && t.nodeStatus !== 'ready' ? `(${t.nodeStatus})` : ''}`);
  return `replicas ${s.replicas}, template v${s.templateVersion}, update ${s.updateState}, ${availableSlots(s)} available; tasks ${live.join(' ') || 'none'}`;
}
