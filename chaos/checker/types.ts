// Shared types of the chaos history checkers. Everything under chaos/checker is PURE: no IO,
// no clocks, no randomness; the harness records a history and hands it over as plain data.

/** The value and version of one key of the replicated config store. */
export interface KvVersioned {
  value: string;
  version: number;
}

/**
 * One operation of one client against the kv store, as recorded by the harness.
 *
 * - `read`  = `GET /v1/kv/:key`
 * - `write` = `PUT /v1/kv/:key`
 * - `cas`   = `PUT /v1/kv/:key?cas=<expectVersion>` (expectVersion 0 = the key must not exist)
 *
 * Outcomes:
 * - `ok`      the operation happened; `result` holds what it returned.
 * - `fail`    it definitely did not happen (409 CAS conflict, 400, …). Ignored by the checkers.
 * - `unknown` timeout / connection lost: it may or may not have taken effect, at any time after
 *             `invoke`. Its completion is treated as +∞ whatever `complete` says.
 */
export interface Op {
  id: number | string;
  client: number | string;
  key: string;
  type: 'read' | 'write' | 'cas';
  /** The written value (write), or the new value (cas). */
  value?: string;
  /** cas only: the version the key must have (0 = must not exist). */
  expectVersion?: number;
  /** When the client sent the request (ms or any logical clock; only the order matters). */
  invoke: number;
  /** When the client got the answer; null = never. */
  complete: number | null;
  outcome: 'ok' | 'fail' | 'unknown';
  /**
   * read: what was read (value null = the key was absent; version null = not recorded).
   * write/cas: `version` is the key's new version (value may be omitted or echo the value).
   */
  result?: { value: string | null; version: number | null };
  /** Sent by a plain HTTP client: no x-request-id (the managers invented the request id). */
  plain?: boolean;
}

/** Acknowledged (ok) writes and cas of plain clients in a history. */
export function plainAcknowledgedWrites(history: readonly Op[]): number {
  let n = 0;
  for (const op of history) if (op.plain === true && op.type !== 'read' && op.outcome === 'ok') n++;
  return n;
}

/** Short human description of an operation, e.g. `#12 c3 cas x=b expect v7 → ok v9 [10..14]`. */
export function describeOp(op: Op): string {
  const q = (v: string | null | undefined): string => (v === null || v === undefined ? '∅' : JSON.stringify(v));
  const when = `[${op.invoke}..${op.outcome === 'unknown' || op.complete === null ? '∞' : op.complete}]`;
  let what: string;
  if (op.type === 'read') {
    what = `read ${op.key}`;
    if (op.outcome === 'ok') {
      const r = op.result;
      what += ` → ${r === undefined ? '?' : r.value === null ? 'absent' : `${q(r.value)}${r.version === null ? '' : ` v${r.version}`}`}`;
    } else what += ` → ${op.outcome}`;
  } else {
    what = `${op.type} ${op.key}=${q(op.value)}${op.type === 'cas' ? ` expect v${op.expectVersion ?? '?'}` : ''}`;
    what += op.outcome === 'ok' ? ` → ok${op.result?.version === null || op.result?.version === undefined ? '' : ` v${op.result.version}`}` : ` → ${op.outcome}`;
  }
  return `#${op.id} ${typeof op.client === 'number' ? `c${op.client}` : op.client} ${what} ${when}`;
}
