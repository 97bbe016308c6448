// Orchestration invariants over what the chaos harness observed of tasks. PURE: no IO, no clocks.
//
// Inputs (all times on the harness's clock):
//   submissions   tasks the harness created; `acknowledged` = the create request returned success
//                 (at time `at`); `removedAt` = when the harness removed the task, if it did.
//   observations  task states read from the API: { taskId, node, state, attempt, at, reason? }.
//                 `state` is a task state ('pending' … 'stopped'), or 'absent' when the harness
//                 looked the task up and it did not exist.
//   processes     processes seen running on workers: { taskId, attempt, node, pid, from, to };
//                 `from`/`to` are the first/last time the process was seen alive (to = null:
//                 still alive at the end). Observed intervals are inside the real ones, so an
//                 observed overlap is a real overlap.
//
// Invariants (each violation is reported with its evidence):
//   double-run           two process intervals of the same taskId overlap in time (strictly:
//                        a.from < b.to and b.from < a.to; touching ends do not count) and differ
//                        in node or attempt. (Same node, same attempt, different pid is not
//                        reported: a restart within an attempt may be seen as two pids.)
//                        Exception, the orphans of a dead agent (`deadAgents`: a worker the
//                        nemesis SIGKILLed for good at time k): its processes keep running until
//                        its orphan window ends, while the manager reschedules the task elsewhere
//                        after the node grace. An overlap in which one side runs on such a node
//                        (the overlap starting at or after k) is excused as long as it ends by
//                        k + `orphanBoundMs`; past that it is reported as `orphan-outlived`. So:
//                        no task runs twice on LIVE agents at all, and a dead agent's copy is
//                        gone within the bound (see chaos/README.md for the bound's terms).
//   never-started        an acknowledged submission for which no observation in state 'running'
//                        or a terminal state ('succeeded', 'failed', 'lost', 'stopped') and no
//                        process interval exists — at any time, or when `settleWithin` is given,
//                        by `at + settleWithin`.
//   lost-without-reason  an observation in state 'lost' whose `reason` is empty or missing
//                        (reported once per taskId and attempt).
//   vanished             an 'absent' observation of a task that had been acknowledged (at an
//                        earlier time) or observed present earlier, and that was not removed by
//                        the harness before the observation.

export const RUNNING_OR_TERMINAL: ReadonlySet<string> = new Set(['running', 'succeeded', 'failed', 'lost', 'stopped']);

export interface TaskSubmission {
  taskId: string;
  /** When the create request was acknowledged (or failed / timed out). */
  at: number;
  acknowledged: boolean;
  /** When the harness removed the task, if it did. */
  removedAt?: number;
}

export interface TaskObservation {
  taskId: string;
  node: string | null;
  /** A task state, or 'absent' (the task did not exist when looked up). */
  state: string;
  attempt: number;
  at: number;
  reason?: string;
}

export interface ProcessInterval {
  taskId: string;
  attempt: number;
  node: string;
  pid: number;
  from: number;
  /** null = still running when the harness stopped looking. */
  to: number | null;
}

export interface TaskEvents {
  submissions?: readonly TaskSubmission[];
  observations: readonly TaskObservation[];
  processes?: readonly ProcessInterval[];
}

export interface TaskCheckOptions {
  /** Acknowledged tasks must reach running/terminal within this many time units. */
  settleWithin?: number;
  /** Workers killed for good (never restarted) and when. */
  deadAgents?: readonly { node: string; at: number }[];
  /** How long after its agent's death a task process may still overlap a successor. */
  orphanBoundMs?: number;
  /**
   * Workers down for a while (killed then restarted, paused then resumed) and when: an overlap
   * with a copy on such a worker, beginning while it was down, is excused as long as it ends by
   * `to` + `orphanBoundMs` (the worker, back, is told to stop it); past that: `orphan-outlived`.
   */
  downWindows?: readonly { node: string; from: number; to: number }[];
}

export type TaskViolation =
  | { kind: 'double-run' | 'orphan-outlived'; taskId: string; message: string; a: ProcessInterval; b: ProcessInterval; overlap: { from: number; to: number | null } }
  | { kind: 'never-started'; taskId: string; message: string; submission: TaskSubmission }
  | { kind: 'lost-without-reason'; taskId: string; message: string; observation: TaskObservation }
  | { kind: 'vanished'; taskId: string; message: string; observation: TaskObservation };

export interface TasksResult {
  ok: boolean;
  /** Overlaps excused as the orphans of a dead agent within the bound (when any). */
  orphanOverlaps?: number;
  /** Distinct task ids seen in any input. */
  tasks: number;
  violations: TaskViolation[];
}

export function checkTasks(events: TaskEvents, opts: TaskCheckOptions = {}): TasksResult {
  const submissions = events.submissions ?? [];
  const processes = events.processes ?? [];
  const observations = [...events.observations].sort((a, b) => a.at - b.at);
  const violations: TaskViolation[] = [];
  const ids = new Set<string>();
  for (const s of submissions) ids.add(s.taskId);
  for (const o of observations) ids.add(o.taskId);
  for (const p of processes) ids.add(p.taskId);

  // double-run
  const deadAt = new Map<string, number>();
  for (const d of opts.deadAgents ?? []) deadAt.set(d.node, Math.min(d.at, deadAt.get(d.node) ?? Infinity));
  const orphanBound = opts.orphanBoundMs ?? 0;
  let orphanOverlaps = 0;
  const procByTask = group(processes, (p) => p.taskId);
  for (const [taskId, list] of procByTask) {
    const sorted = [...list].sort((a, b) => a.from - b.from);
    for (let i = 0; i < sorted.length; i++) {
      const a = sorted[i]!;
      const aTo = a.to ?? Infinity;
      for (let j = i + 1; j < sorted.length; j++) {
        const b = sorted[j]!;
        if (b.from >= aTo) break; // sorted by from: no later interval overlaps a either
        const bTo = b.to ?? Infinity;
        if (!(a.from < bTo)) continue;
        if (a.node === b.node && a.attempt === b.attempt) continue;
        const to = Math.min(aTo, bTo);
        const from = Math.max(a.from, b.from);
        // The orphan of a dead agent: excused while it ends within the bound after the death.
        // A worker down for a while counts from when it came back.
        const killed = [a, b].map((p) => deadAt.get(p.node)).filter((k): k is number => k !== undefined && k <= from);
        const dead = killed.length > 0 ? [Math.min(...killed)] : [];
        for (const p of [a, b]) for (const w of opts.downWindows ?? []) if (w.node === p.node && w.from <= from && from <= w.to + orphanBound) dead.push(w.to);
        if (dead.length > 0) {
          const k = Math.max(...dead);
          if (to <= k + orphanBound) {
            orphanOverlaps++;
            continue;
          }
          violations.push({
            kind: 'orphan-outlived',
            taskId,
            a,
            b,
            overlap: { from, to: to === Infinity ? null : to },
            message: `task ${taskId} ran twice past the orphan bound: attempt ${a.attempt} on ${a.node} (pid ${a.pid}) and attempt ${b.attempt} on ${b.node} (pid ${b.pid}) overlapped until ${to === Infinity ? 'the end' : to}, more than ${orphanBound} after the dead agent was killed at ${k}`,
          });
          continue;
        }
        violations.push({
          kind: 'double-run',
          taskId,
          a,
          b,
          overlap: { from: b.from, to: to === Infinity ? null : to },
          message: `task ${taskId} ran twice at once: attempt ${a.attempt} on ${a.node} (pid ${a.pid}) and attempt ${b.attempt} on ${b.node} (pid ${b.pid}) from ${b.from} to ${to === Infinity ? 'the end' : to}`,
        });
      }
    }
  }

  // never-started
  const obsByTask = group(observations, (o) => o.taskId);
  for (const s of submissions) {
    if (!s.acknowledged) continue;
    const deadline = opts.settleWithin === undefined ? Infinity : s.at + opts.settleWithin;
    const started =
      (obsByTask.get(s.taskId) ?? []).some((o) => RUNNING_OR_TERMINAL.has(o.state) && o.at <= deadline) ||
      (procByTask.get(s.taskId) ?? []).some((p) => p.from <= deadline);
    if (!started) {
      violations.push({
        kind: 'never-started',
        taskId: s.taskId,
        submission: s,
        message: `task ${s.taskId} was acknowledged at ${s.at} but never reached running or a terminal state${deadline === Infinity ? '' : ` within ${opts.settleWithin}`}`,
      });
    }
  }

  // lost-without-reason
  const reported = new Set<string>();
  for (const o of observations) {
    if (o.state !== 'lost' || (o.reason !== undefined && o.reason.trim() !== '')) continue;
    const k = `${o.taskId}\u0000${o.attempt}`;
    if (reported.has(k)) continue;
    reported.add(k);
    violations.push({ kind: 'lost-without-reason', taskId: o.taskId, observation: o, message: `task ${o.taskId} attempt ${o.attempt} is lost with no reason (seen at ${o.at}${o.node === null ? '' : ` on ${o.node}`})` });
  }

  // vanished
  const subByTask = group(submissions, (s) => s.taskId);
  for (const [taskId, list] of obsByTask) {
    const subs = subByTask.get(taskId) ?? [];
    let seenPresentAt: number | undefined;
    for (const o of list) {
      if (o.state !== 'absent') {
        seenPresentAt ??= o.at;
        continue;
      }
      const removed = subs.some((s) => s.removedAt !== undefined && s.removedAt <= o.at);
      if (removed) continue;
      const acked = subs.find((s) => s.acknowledged && s.at < o.at);
      if (acked === undefined && seenPresentAt === undefined) continue;
      violations.push({
        kind: 'vanished',
        taskId,
        observation: o,
        message: `task ${taskId} did not exist at ${o.at} although it was ${acked !== undefined ? `acknowledged at ${acked.at}` : `seen at ${seenPresentAt}`} and never removed`,
      });
      break; // once per task
    }
  }

  return { ok: violations.length === 0, tasks: ids.size, violations, ...(deadAt.size > 0 || (opts.downWindows ?? []).length > 0 ? { orphanOverlaps } : {}) };
}

function group<T>(items: readonly T[], key: (t: T) => string): Map<string, T[]> {
  const m = new Map<string, T[]>();
  for (const it of items) {
    const k = key(it);
    let l = m.get(k);
    if (l === undefined) m.set(k, (l = []));
    l.push(it);
  }
  return m;
}
