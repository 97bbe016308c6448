// `since` of task logs (CLI --since, the page's selector, GET /v1/tasks/:id/logs?since=): a
// duration back from now (10m, 1h30m, 45s, 500ms), an RFC 3339 time (2026-12-06T06:00:00Z,
// with an offset or fractional seconds), or a whole number of ms since the epoch (what the
// manager sends on to the worker). Pure: the web page imports it too.
import { FlotillaError } from './errors.js';
import { tryDuration } from './service.js';

/** Ms since the epoch that `since` names, seen at `now`; throws `bad_request` when it is neither form. */
export function parseLogSince(input: string, now: number): number {
  const text = input.trim();
  if (/^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)$/i.test(text)) {
    const ms = Date.parse(text);
    if (Number.isFinite(ms)) return ms;
  } else if (/^\d{1,15}$/.test(text)) {
    return Number(text);
  } else if (/[a-z]$/i.test(text)) {
    const d = tryDuration(text);
    if (d !== undefined) return now - d;
  }
  throw new FlotillaError('bad_request', `Cannot read task logs as 'since' must be a duration such as 10m or 1h30m, or an RFC 3339 time such as 2026-12-06T06:00:00Z (got '${input}')`);
}
