// `POST /v1/tasks?apply=true`: declarative, name-keyed task creates (what `flotilla apply`
// sends; plain HTTP clients get the same guarantee).
//
// Each spec becomes a `task.create` with `byName`: the state machine creates it only if no
// standalone task of that name is live, answers the existing task when it has the same spec
// (unchanged), and refuses with a `conflict` naming the differing fields otherwise
// (state/task-names.ts). The check lives in the log, not here, so racing applies cannot both
// create. Here the leader only checks first, so that a request with a conflicting or doubly
// named spec changes nothing at all (a batch applies item by item).
import { FlotillaError, toFlotillaError } from '../protocol/errors.js';
import type { TaskSpec } from '../protocol/spec.js';
import type { ApplyResult, Task } from './state.js';
import { createByName } from './state/task-names.js';
import type { CommandProposer, StateView } from './ports.js';

export type ApplyOutcome = 'created' | 'unchanged';

export async function applyByName(
  state: StateView,
  proposer: CommandProposer,
  specs: TaskSpec[],
  ids: string[],
  at: number,
): Promise<{ tasks: Task[]; results: ApplyOutcome[] }> {
  const seen = new Set<string>();
  for (const s of specs) {
    if (seen.has(s.name)) {
      throw new FlotillaError('bad_request', `Cannot apply tasks as the name '${s.name}' is given twice (a name-keyed apply declares each task once)`, {
        details: [{ path: 'name', message: `'${s.name}' is given twice` }],
      });
    }
    seen.add(s.name);
  }
  const live = state.listTasks();
  for (const s of specs) {
    const r = createByName(live, s);
    if (r !== undefined && !r.ok) throw toFlotillaError(r.error);
  }
  const cmds = specs.map((spec, i) => ({ type: 'task.create' as const, id: ids[i]!, spec, at, byName: true }));
  const value = await proposer.propose(cmds.length === 1 ? cmds[0]! : { type: 'batch', commands: cmds });
  // A batch answers item by item; a single command's failure was thrown by propose.
  const items: ApplyResult[] = cmds.length === 1 ? [{ ok: true, value }] : (value as ApplyResult[]);
  const failed = items.find((r) => !r.ok);
  if (failed !== undefined && !failed.ok) throw toFlotillaError(failed.error);
  const tasks = items.map((r) => (r as { value: Task }).value);
  return { tasks: tasks.map((t) => state.getTask(t.id) ?? t), results: tasks.map((t, i) => (t.id === ids[i] ? 'created' : 'unchanged')) };
}
