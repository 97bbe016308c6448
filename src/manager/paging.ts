// Paged list endpoints (GET /v1/kv, GET /v1/tasks): `limit` items per page and an opaque
// `continue` token naming where the next page starts, like Kubernetes list calls. Items are
// listed in key order and a token holds the last key returned, so a page is always "the next
// keys after this one": keys written or deleted between pages simply show up or not, nothing
// repeats, and an old token never becomes invalid.
import { FlotillaError } from '../protocol/errors.js';

/** Items per page when no `limit` is given. */
export const DEFAULT_PAGE_LIMIT = 500;
/** Largest `limit` accepted. */
export const MAX_PAGE_LIMIT = 5000;
/** A page also ends once its values reach this many bytes (at least one item is returned). */
export const MAX_PAGE_BYTES = 4 * 1024 * 1024;

export interface PageRequest {
  limit: number;
  /** Return items whose key sorts after this one (null: from the start). */
  after: string | null;
}

/** Reads `limit` and `continue`; bad values are a 400 that names the parameter. */
export function parsePage(query: URLSearchParams, what: string, defaultLimit = DEFAULT_PAGE_LIMIT): PageRequest {
  const rawLimit = query.get('limit');
  let limit = defaultLimit;
  if (rawLimit !== null) {
    limit = /^\d{1,9}$/.test(rawLimit) ? Number(rawLimit) : NaN;
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE_LIMIT) {
      throw new FlotillaError('bad_request', `Cannot list ${what} as 'limit' must be an integer from 1 to ${MAX_PAGE_LIMIT}, got '${rawLimit}'`);
    }
  }
  const token = query.get('continue');
  return { limit, after: token === null || token === '' ? null : decodeToken(token, what) };
}

export function continueToken(lastKey: string): string {
  return Buffer.from(JSON.stringify({ after: lastKey }), 'utf8').toString('base64url');
}

function decodeToken(token: string, what: string): string {
  const bad = () => new FlotillaError('bad_request', `Cannot list ${what} as 'continue' is not a token from a previous page`);
  if (!/^[A-Za-z0-9_-]{1,8192}$/.test(token)) throw bad();
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
  } catch {
    throw bad();
  }
  const after = (parsed as { after?: unknown } | null)?.after;
  if (typeof after !== 'string') throw bad();
  return after;
}

/**
 * One page of `items` (sorted by `keyOf`, ascending): those after `req.after`, at most
 * `req.limit`, ending early once `sizeOf` adds up to MAX_PAGE_BYTES. `continue` is set when
 * more items follow.
 */
export function page<T>(items: readonly T[], req: PageRequest, keyOf: (t: T) => string, sizeOf: (t: T) => number = () => 0): { items: T[]; continue?: string } {
  let lo = 0;
  if (req.after !== null) {
    // First item whose key sorts after `after` (binary search: items are sorted).
    let hi = items.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (keyOf(items[mid]!) <= req.after) lo = mid + 1;
      else hi = mid;
    }
  }
  const out: T[] = [];
  let bytes = 0;
  let i = lo;
  for (; i < items.length && out.length < req.limit; i++) {
    if (out.length > 0 && bytes >= MAX_PAGE_BYTES) break;
    const it = items[i]!;
    out.push(it);
    bytes += sizeOf(it);
  }
  return i < items.length && out.length > 0 ? { items: out, continue: continueToken(keyOf(out[out.length - 1]!)) } : { items: out };
}
