// The task log options the manager resolves before it asks a worker (GET /v1/tasks/:id/logs):
//   since=D       a duration back from now (10m), an RFC 3339 time or ms since the epoch:
//                 sent on as ms since the epoch (the worker leaves out older lines)
//   previous=true the attempt before the current one: sent as attempt=N to the node that ran
//                 it (from the task's history), which answers from that run or from the copy
//                 it kept when the new attempt replaced it (worker/previous-logs.ts)
import { FlotillaError } from '../protocol/errors.js';
import { parseLogSince } from '../protocol/logs.js';
import type { Task } from './state.js';

/** Adds `since`/`attempt` to the worker's query; returns the node to ask (null: none yet). */
export function logSource(t: Task, query: URLSearchParams, qs: URLSearchParams): string | null {
  const since = query.get('since');
  if (since !== null && since !== '') qs.set('since', String(parseLogSince(since, Date.now())));
  const previous = query.get('previous');
  if (previous === null || previous === '0' || previous === 'false') return t.node;
  if (previous !== '' && previous !== '1' && previous !== 'true') {
    throw new FlotillaError('bad_request', `Cannot read task logs as 'previous' must be true or false (got '${previous}')`);
  }
  if (t.attempt <= 1) throw new FlotillaError('not_found', `Cannot read the previous attempt's logs of task '${t.id}' as it is on its first attempt`);
  const attempt = t.attempt - 1;
  qs.set('attempt', String(attempt));
  qs.delete('follow'); // that attempt is over
  const ran = [...t.history].reverse().find((h) => h.attempt === attempt && h.node !== null);
  return ran?.node ?? t.node;
}
