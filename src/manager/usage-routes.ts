// GET /v1/usage: the live usage the leader keeps in memory (usage.ts). A follower forwards
// the request to the leader (the usage is not replicated), as GET /v1/nodes does for heartbeats.
import { FlotillaError } from '../protocol/errors.js';
import type { LeaderForward, RouteTable } from './ports.js';
import type { UsageStore } from './usage.js';
import type { UsageReport } from '../protocol/api.js';

export function registerUsageRoutes(d: { routes: RouteTable; writes: LeaderForward; usage: UsageStore }): void {
  d.routes.router.on('GET', '/v1/usage', async (ctx) => {
    const h = ctx.query.get('history');
    if (h !== null && h !== 'true' && h !== 'false') throw new FlotillaError('bad_request', `Cannot read usage as 'history' must be true or false, got '${h}'`);
    const q = { history: h !== 'false', node: ctx.query.get('node') ?? undefined, task: ctx.query.get('task') ?? undefined };
    return d.writes.onLeader(ctx, async () => d.usage.report(q) satisfies UsageReport);
  });
}
