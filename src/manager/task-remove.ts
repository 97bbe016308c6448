// `POST /v1/tasks/:id/remove[?force=true]` (flotilla rm): forget a finished task. A task that
// still runs, waits for a node or has a restart pending is refused (409) unless `force`: then it
// is stopped first (task.stop) and removed (task.remove) once it has ended, waited for here up
// to FORCE_WAIT_MS. A service's task is refused: its service owns it (scale or remove the
// service). DELETE /v1/tasks/:id keeps its meaning (stop), which older clients rely on.
import { FlotillaError } from '../protocol/errors.js';
import type { TaskRemoved } from '../protocol/api.js';
import { isTerminal, removeRefusal, type Task } from './state.js';
import { findTask } from './api.js';
import type { CommandProposer, LeaderForward, RouteTable, StateView } from './ports.js';
import { monoNow } from '../clock.js';

/** How long a forced remove waits for the task to end (below the 15 s a forwarded request gets). */
export const FORCE_WAIT_MS = 12_000;

export function registerTaskRemove(d: { routes: RouteTable; state: StateView; writes: LeaderForward; proposer: CommandProposer }): void {
  d.routes.router.on('POST', '/v1/tasks/:id/remove', async (ctx) => {
    const raw = ctx.query.get('force');
    if (raw !== null && !['', '1', '0', 'true', 'false'].includes(raw)) {
      throw new FlotillaError('bad_request', `Cannot remove task as 'force' must be true or false (got '${raw}')`);
    }
    const force = raw === '' || raw === '1' || raw === 'true';
    const idOrName = ctx.params.id!;
    return d.writes.onLeader(ctx, async () => {
      const t = findTask(d.state, idOrName);
      if (t.service !== undefined) {
        throw new FlotillaError('conflict', `Cannot remove task '${t.id}' as it belongs to service '${t.service.name}': use 'flotilla service scale ${t.service.name} N' or 'flotilla service rm ${t.service.name}'`);
      }
      let stopped = false;
      if (!removable(t)) {
        if (!force) {
          const what = isTerminal(t.state) ? `${t.state} with a restart pending` : t.state;
          throw new FlotillaError('conflict', `Cannot remove task '${t.id}' as it is ${what}; stop it first or force it (flotilla rm -f ${t.id})`);
        }
        await d.proposer.propose({ type: 'task.stop', id: t.id, at: Date.now(), reason: 'stopped to be removed' });
        stopped = true;
        await ended(d.state, t.id);
      }
      await d.proposer.propose({ type: 'task.remove', id: t.id, at: Date.now() });
      return { id: t.id, name: t.name, removed: true, stopped } satisfies TaskRemoved;
    });
  });
}

function removable(t: Task): boolean {
  return isTerminal(t.state) && removeRefusal(t) === undefined;
}

/** Waits (bounded) until a stopped task has ended here. */
async function ended(state: StateView, id: string): Promise<void> {
  const deadline = monoNow() + FORCE_WAIT_MS;
  for (;;) {
    const t = state.getTask(id);
    if (t === undefined || isTerminal(t.state)) return;
    if (monoNow() >= deadline) {
      throw new FlotillaError('conflict', `Cannot remove task '${id}' yet as it is still ${t.state} ${FORCE_WAIT_MS / 1000} s after it was asked to stop; run the remove again once it has ended`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
