// Name-keyed task creates (`task.create` with `byName`, what `flotilla apply` and
// `POST /v1/tasks?apply=true` send): the task a user declared by name exists once.
//
// Decided here, in the state machine, so the check and the create are one step of the log:
// two applies racing (two CLIs, a CLI retrying on another manager after a leader change, a
// plain HTTP client) cannot both create, whatever the managers saw when they proposed.
//
// A name is taken by a standalone (non-service) task whose desired state is still `running`
// (a task the user stopped frees its name; one that ended by itself still holds it, like a
// finished job). Same name and same normalised spec: unchanged (the existing task is the
// result). Same name, other spec: a conflict naming the differing fields.
//
// Pure module: no IO, no clocks.

import { errorInfo } from '../../protocol/errors.js';
import { describeChange, fieldChanges } from '../../protocol/diff.js';
import type { TaskSpec } from '../../protocol/spec.js';
import type { ApplyResult, Task } from './model.js';

/** The standalone tasks that hold `name`, oldest first. */
export function tasksHoldingName(tasks: Iterable<Task>, name: string): Task[] {
  const out: Task[] = [];
  for (const t of tasks) if (t.service === undefined && t.name === name && t.desired === 'running') out.push(t);
  return out.sort((a, b) => a.createdAt - b.createdAt || (a.id < b.id ? -1 : 1));
}

/**
 * The outcome of a name-keyed create when the name is taken: ok with the existing task
 * (unchanged) or a `conflict`. Undefined when the name is free (create as usual).
 */
export function createByName(tasks: Iterable<Task>, spec: TaskSpec): ApplyResult<Task> | undefined {
  const holders = tasksHoldingName(tasks, spec.name);
  if (holders.length === 0) return undefined;
  const same = holders.find((t) => fieldChanges(t.spec, spec).length === 0);
  if (same !== undefined) return { ok: true, value: same };
  const first = holders[0]!;
  const changes = fieldChanges(first.spec, spec);
  const fields = changes.map((c) => c.path);
  return {
    ok: false,
    error: errorInfo(
      'conflict',
      `Cannot apply task '${spec.name}' as task ${first.id} of that name runs with another spec (differs in ${fields.join(', ')}); stop it first (flotilla stop ${first.id}) or give the task another name`,
      changes.map((c) => ({ path: c.path, message: `differs: ${describeChange(c, 200).slice(c.path.length + 2)}` })),
    ),
  };
}
