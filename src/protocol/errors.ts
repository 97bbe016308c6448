// flotilla's one error type (design principle 8, after tRPC's TRPCError + codes.ts).
//
// Every edge of flotilla (API server, worker session, CLI, state machine results) speaks in
// `FlotillaError`s: a stable machine-readable `code`, an HTTP status derived from it, a precise
// human message in the Deno style ("Cannot create task as 'containers[0].image' must be a
// non-empty string") and optional per-field `details`. Unknown failures are wrapped with
// `toFlotillaError()` so nothing leaks out as an untyped crash.
//
// This module is pure (no IO), so the replicated state machine may use it.

/** Every error code flotilla uses, with the HTTP status an API edge answers with. */
export const ERROR_CODES = {
  bad_request: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  too_large: 413,
  /**
   * This manager is not the leader. 421 Misdirected Request when the leader is known (the
   * client should retry there, `leader` says where); 503 when no leader is known (election).
   */
  not_leader: 421,
  internal: 500,
  unavailable: 503,
  timeout: 504,
  /**
   * The write would grow the replicated state past the managers' quota (--quota-bytes). 507
   * Insufficient Storage: not retried by clients; deleting data makes room again.
   */
  quota_exceeded: 507,
} as const satisfies Record<string, number>;

export type ErrorCode = keyof typeof ERROR_CODES;

/** One problem with one input field; `path` is a JS-like path such as `containers[0].image`. */
export interface ErrorDetail {
  path: string;
  message: string;
}

/**
 * The plain-data shape of an error: what a state machine result carries, what crosses the wire
 * inside `{ error: … }`, and what `FlotillaError.from()` accepts back.
 */
export interface ErrorInfo {
  code: ErrorCode;
  message: string;
  details?: ErrorDetail[];
  /** For `not_leader`: the id (or address) of the leader, when known. */
  leader?: string | null;
}

export interface FlotillaErrorOptions {
  details?: ErrorDetail[];
  /** Override the status derived from the code (e.g. 503 for `not_leader` with no leader). */
  httpStatus?: number;
  leader?: string | null;
  cause?: unknown;
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(ERROR_CODES, value);
}

export class FlotillaError extends Error {
  override readonly name = 'FlotillaError';
  readonly code: ErrorCode;
  readonly httpStatus: number;
  readonly details?: ErrorDetail[];
  readonly leader?: string | null;

  constructor(code: ErrorCode, message: string, opts: FlotillaErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.code = code;
    this.httpStatus =
      opts.httpStatus ?? (code === 'not_leader' && opts.leader === null ? 503 : ERROR_CODES[code]);
    if (opts.details !== undefined && opts.details.length > 0) this.details = opts.details;
    if (opts.leader !== undefined) this.leader = opts.leader;
  }

  /** The wire form: `{ error: { code, message, details } }` (plus `leader` for `not_leader`). */
  toJSON(): { error: ErrorInfo } {
    return { error: this.toInfo() };
  }

  /** Plain data (no stack, no prototype): safe to put in a state machine result. */
  toInfo(): ErrorInfo {
    const info: ErrorInfo = { code: this.code, message: this.message };
    if (this.details !== undefined) info.details = this.details;
    if (this.leader !== undefined) info.leader = this.leader;
    return info;
  }

  /** Rebuild an error from its plain-data form (a state machine result, a decoded response). */
  static fromInfo(info: ErrorInfo, httpStatus?: number): FlotillaError {
    return new FlotillaError(info.code, info.message, {
      details: info.details,
      leader: info.leader,
      httpStatus,
    });
  }

  static is(err: unknown, code?: ErrorCode): err is FlotillaError {
    return err instanceof FlotillaError && (code === undefined || err.code === code);
  }
}

/** Plain-data error, without building an Error (cheap: used for every failed state command). */
export function errorInfo(code: ErrorCode, message: string, details?: ErrorDetail[]): ErrorInfo {
  return details !== undefined && details.length > 0 ? { code, message, details } : { code, message };
}

/**
 * Turn anything thrown into a FlotillaError. FlotillaErrors pass through; objects shaped like
 * `ErrorInfo` (or `{ error: ErrorInfo }`, the wire form) are rebuilt; everything else becomes
 * `internal` with the original kept as `cause`.
 */
export function toFlotillaError(err: unknown, fallbackMessage = 'internal error'): FlotillaError {
  if (err instanceof FlotillaError) return err;
  if (typeof err === 'object' && err !== null) {
    const wrapped = (err as { error?: unknown }).error;
    const candidate = typeof wrapped === 'object' && wrapped !== null ? wrapped : err;
    const { code, message } = candidate as { code?: unknown; message?: unknown };
    if (isErrorCode(code) && typeof message === 'string') {
      return FlotillaError.fromInfo(candidate as ErrorInfo);
    }
  }
  if (err instanceof Error) {
    if (err.name === 'AbortError' || err.name === 'TimeoutError') {
      const code = err.name === 'TimeoutError' ? 'timeout' : 'unavailable';
      return new FlotillaError(code, err.message || fallbackMessage, { cause: err });
    }
    return new FlotillaError('internal', err.message || fallbackMessage, { cause: err });
  }
  return new FlotillaError('internal', typeof err === 'string' ? err : fallbackMessage, { cause: err });
}
