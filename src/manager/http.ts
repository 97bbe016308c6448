// A small HTTP router for the manager API: path patterns with :params, a bounded body reader,
// and one place where every failure becomes a FlotillaError response.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomBytes } from 'node:crypto';
import { FlotillaError, toFlotillaError } from '../protocol/errors.js';

export interface RequestContext {
  req: IncomingMessage;
  res: ServerResponse;
  method: string;
  path: string;
  params: Record<string, string>;
  query: URLSearchParams;
  /**
   * The client's x-request-id, or 128 random bits (hex) invented here when it sent none. Either
   * way it names this one request across managers (it goes along when a follower forwards a
   * write) and de-duplicates retries of a kv write (state.ts, scoped to the caller).
   */
  requestId: string;
  /** Reads the body (bounded); rejects with too_large past the limit. */
  body(): Promise<Buffer>;
  json(): Promise<unknown>;
}

export type Handler = (ctx: RequestContext) => Promise<unknown> | unknown;

/** A handler may return this to control the status and raw body itself. */
export class Reply {
  constructor(
    readonly status: number,
    readonly body: unknown,
    readonly headers: Record<string, string> = {},
  ) {}
}

/** One routed request, told to `Router.observe` once it is answered (metrics, access logs). */
export interface RequestRecord {
  method: string;
  /** The route's pattern (e.g. /v1/kv/*), so labels stay few. */
  route: string;
  status: number;
  ms: number;
  requestId: string;
}

interface Route {
  method: string;
  pattern: string;
  parts: string[];
  handler: Handler;
}

/** Longest x-request-id accepted (the state machine's limit for a kv write's request id). */
export const MAX_REQUEST_ID = 128;

/**
 * A request id for a request that came without one: 128 random bits, so no two managers (or
 * restarts of one) ever invent the same id; a per-process counter did, and the leader then
 * took two followers' different writes for retries of one.
 */
export function newRequestId(): string {
  // 128 random bits each, drawn from a pool filled 256 ids at a time: one randomBytes call per
  // request was ~4% of a leader's CPU under a write load.
  if (idAt >= idPool.length) {
    idPool = randomBytes(16 * 256);
    idAt = 0;
  }
  const id = idPool.toString('hex', idAt, idAt + 16);
  idAt += 16;
  return id;
}

let idPool = Buffer.alloc(0);
let idAt = 0;

export class Router {
  private routes: Route[] = [];
  /** Called once per routed request after it was answered; must be cheap and must not throw. */
  observe: ((r: RequestRecord) => void) | null = null;
  /** Called before every matched handler with the route's pattern; throw to refuse (authentication, auth.ts). */
  guard: ((ctx: RequestContext, route: string) => void | Promise<void>) | null = null;
  constructor(private readonly maxBodyBytes = 1024 * 1024) {}

  on(method: string, pattern: string, handler: Handler): this {
    this.routes.push({ method, pattern, parts: pattern.split('/').filter(Boolean), handler });
    return this;
  }

  /** Returns false when no route matched the path (so the caller can serve something else). */
  async handle(req: IncomingMessage, res: ServerResponse): Promise<boolean> {
    const url = new URL(req.url ?? '/', 'http://x');
    const segs = url.pathname.split('/').filter(Boolean).map(safeDecode);
    let pathMatched = false;
    let route: Route | undefined;
    let params: Record<string, string> = {};
    for (const r of this.routes) {
      const p = match(r.parts, segs);
      if (!p) continue;
      pathMatched = true;
      if (r.method === req.method) {
        route = r;
        params = p;
        break;
      }
    }
    if (!pathMatched) return false;
    const raw = req.headers['x-request-id'];
    const given = raw === undefined ? undefined : String(raw);
    const badId = given !== undefined && (given.length === 0 || given.length > MAX_REQUEST_ID || !/^[\x21-\x7e]+$/.test(given));
    const requestId = given !== undefined && !badId ? given : newRequestId();
    const t0 = this.observe ? performance.now() : 0;
    try {
      if (!route) throw new FlotillaError('bad_request', `Cannot ${req.method} ${url.pathname}: method not allowed`, { httpStatus: 405 });
      if (badId) {
        throw new FlotillaError('bad_request', `Cannot accept x-request-id as it must be 1 to ${MAX_REQUEST_ID} printable ASCII characters without spaces; send a fresh id per request, or none`);
      }
      let bodyP: Promise<Buffer> | null = null;
      const ctx: RequestContext = {
        req,
        res,
        method: req.method!,
        path: url.pathname,
        params,
        query: url.searchParams,
        requestId,
        body: () => (bodyP ??= readBody(req, this.maxBodyBytes)),
        json: async () => {
          const b = await ctx.body();
          if (b.length === 0) throw new FlotillaError('bad_request', 'Cannot parse the request as the body is empty; send a JSON object');
          try {
            return JSON.parse(b.toString('utf8'));
          } catch (e) {
            throw new FlotillaError('bad_request', `Cannot parse the request as the body is not valid JSON: ${(e as Error).message}`);
          }
        },
      };
      if (this.guard) await this.guard(ctx, route.pattern);
      const out = await route.handler(ctx);
      if (res.headersSent || res.writableEnded) return true;
      if (out instanceof Reply) send(res, out.status, out.body, out.headers);
      else send(res, 200, out ?? { ok: true });
    } catch (e) {
      const err = toFlotillaError(e);
      // An oversized body is read and thrown away (up to a bound) so that the 413 reaches the
      // client: closing while its body is still arriving resets the connection, and the client
      // sees EPIPE/ECONNRESET instead of the answer. Past the bound the connection is closed.
      let close: Record<string, string> = {};
      if (err.code === 'too_large') {
        const declared = Number(req.headers['content-length'] ?? NaN);
        if (declared > MAX_DRAIN_BYTES) close = { connection: 'close' };
        else drainBody(req);
      }
      if (!res.headersSent) send(res, err.httpStatus, err.toJSON(), { 'x-request-id': requestId, ...close });
      else res.destroy();
    }
    if (this.observe) {
      try {
        this.observe({ method: req.method ?? '', route: route?.pattern ?? 'method_not_allowed', status: res.statusCode, ms: performance.now() - t0, requestId });
      } catch {
        // metrics must never break a request
      }
    }
    return true;
  }
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

function match(parts: string[], segs: string[]): Record<string, string> | null {
  const params: Record<string, string> = {};
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i]!;
    if (p === '*') {
      params['*'] = segs.slice(i).join('/');
      return segs.length > i ? params : null;
    }
    const s = segs[i];
    if (s === undefined) return null;
    if (p.startsWith(':')) params[p.slice(1)] = s;
    else if (p !== s) return null;
  }
  return parts.length === segs.length ? params : null;
}

export function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (Buffer.isBuffer(body) || body instanceof Uint8Array) {
    res.writeHead(status, { 'content-type': 'application/octet-stream', 'content-length': body.length, ...headers });
    res.end(body);
    return;
  }
  if (typeof body === 'string') {
    res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body), ...headers });
    res.end(body);
    return;
  }
  const s = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(s), ...headers });
  res.end(s);
}

/** How much of an oversized request body is read and discarded so that its 413 gets through. */
const MAX_DRAIN_BYTES = 16 * 1024 * 1024;

/** Discards the rest of a request body; a body past MAX_DRAIN_BYTES closes the connection. */
function drainBody(req: IncomingMessage): void {
  let drained = 0;
  req.on('data', (c: Buffer) => {
    drained += c.length;
    if (drained > MAX_DRAIN_BYTES) req.socket.destroy();
  });
  req.resume();
}

export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? NaN);
    if (declared > limit) {
      req.resume();
      reject(new FlotillaError('too_large', `Cannot accept the request as the body is ${declared} bytes; the limit is ${limit} bytes`));
      return;
    }
    let chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        // Keep nothing more, but let the 413 reach the client (destroying the request here
        // would reset the connection before any answer); the rest of the body is discarded.
        chunks = [];
        reject(new FlotillaError('too_large', `Cannot accept the request as the body exceeds ${limit} bytes`));
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}
