// Applying the leader's garbage collection of finished tasks (`tasks.gc`, decided by
// controllers/gc.ts). Pure: every replica re-checks each listed task against its own state and
// removes only those that are still terminal, have no restart pending and are no service's task.
import type { TasksGcCommand, TasksGcResult } from './commands.js';
import { isTerminal, type ApplyResult } from './model.js';
import { removeRefusal, type TaskTable } from './tasks.js';

export function applyTasksGc(tasks: TaskTable, cmd: TasksGcCommand): ApplyResult<TasksGcResult> {
  const removed: string[] = [];
  const skipped: TasksGcResult['skipped'] = [];
  for (const id of cmd.ids) {
    const t = tasks.get(id);
    const why = t === undefined ? 'no such task' : !isTerminal(t.state) ? `task is ${t.state}` : removeRefusal(t);
    if (why !== undefined) {
      skipped.push({ taskId: id, reason: why });
      continue;
    }
    const r = tasks.remove({ type: 'task.remove', id, at: cmd.at });
    if (r.ok) removed.push(id);
    else skipped.push({ taskId: id, reason: r.error.message });
  }
  return { ok: true, value: { removed, skipped } };
}
