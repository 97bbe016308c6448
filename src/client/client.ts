// The typed API client shared by the CLI, the board, the chaos harness and the benchmarks.
// It knows every manager: when one is down it tries the next, and while the cluster has no
// leader it retries until its deadline. Writes carry one request id across retries, so a retried
// write is applied at most once.
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { splitAddr } from '../protocol/address.js';
import { FlotillaError, toFlotillaError, type ErrorInfo } from '../protocol/errors.js';
import { Link } from '../tls/link.js';
import type { ApiRequestBody, ApiResponse } from '../protocol/api.js';
import { monoNow } from '../clock.js';

export interface ClientOptions {
  /** Overall deadline for one call, retries included (ms). */
  timeoutMs?: number;
  /** Timeout of one HTTP attempt (ms). */
  attemptTimeoutMs?: number;
  /** Called when a call has been waiting longer than ~1 s (e.g. to show a spinner). */
  onWait?: (reason: string) => void;
  /** API token (flt_…), sent as `authorization: Bearer <token>` on every call. */
  token?: string;
  /** The cluster CA certificate (PEM): speak HTTPS and accept only managers certified by it. */
  ca?: string;
  /** A client certificate and key (PEM) for mutual TLS: the cluster's admin certificate. */
  cert?: string;
  key?: string;
}

export interface CallOptions {
  body?: unknown;
  raw?: Buffer | string;
  headers?: Record<string, string>;
  timeoutMs?: number;
  /** Do not fail over to other managers (ask exactly the first one). */
  pinned?: boolean;
  signal?: AbortSignal;
}

export type PagedOptions = CallOptions & { limit?: number; maxPages?: number };
/** The names of the array fields of a list answer (`tasks`, `items`). */
type ListField<R> = unknown extends R ? string : { [K in keyof R]-?: R[K] extends readonly unknown[] ? K : never }[keyof R] & string;
type ListItem<R, F> = unknown extends R ? unknown : F extends keyof R ? (R[F] extends readonly (infer I)[] ? I : never) : never;

const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 512 });

const TLS_TRUST_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_SIGNATURE_FAILURE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'CERT_HAS_EXPIRED',
]);

/** A connection error, with what to do when it is about TLS. Returns null for ordinary ones. */
export function tlsHint(e: Error & { code?: string }, addr: string, secure: boolean): FlotillaError | null {
  if (secure && e.code && TLS_TRUST_CODES.has(e.code)) {
    return new FlotillaError('unauthorized', `the manager at ${addr} presents a certificate not issued by the cluster CA given (${e.code}): check --ca-file / FLOTILLA_CA`);
  }
  if (secure && (e.code === 'EPROTO' || /wrong version number|packet length too long/i.test(e.message))) {
    return new FlotillaError('unavailable', `the manager at ${addr} does not speak TLS (a cluster started with --insecure?): drop --ca-file / FLOTILLA_CA`);
  }
  if (!secure && (e.code === 'ECONNRESET' || /socket hang up/.test(e.message))) {
    return new FlotillaError('unavailable', `${addr}: ${e.message} (if the cluster uses TLS, pass its CA: --ca-file FILE or FLOTILLA_CA)`);
  }
  return null;
}

export class FlotillaClient {
  private preferred = 0;
  readonly managers: string[];
  /** HTTP or HTTPS (with the cluster CA) to the managers. */
  readonly link: Link;

  constructor(
    managers: string[],
    private readonly opts: ClientOptions = {},
  ) {
    if (managers.length === 0) throw new FlotillaError('bad_request', 'Cannot create a client as no manager address was given');
    this.managers = managers.map((m) => m.replace(/^https?:\/\//, '').replace(/\/$/, ''));
    this.link = new Link(opts.ca ? { ca: opts.ca, ...(opts.cert && opts.key ? { cert: opts.cert, key: opts.key } : {}) } : undefined);
  }

  /** URL of a manager's endpoint (ws: true for a WebSocket). */
  url(addr: string, path: string, ws = false): string {
    return this.link.url(addr, path, ws);
  }

  /** Options for a WebSocket or a raw request to a manager: TLS trust and authentication. */
  wsOptions(): Record<string, unknown> {
    return { ...this.link.tlsOptions(), headers: this.authHeaders() };
  }

  // Typed calls: the answer's type comes from the method and path (src/protocol/api.ts), e.g.
  // `get(\`/v1/tasks/${id}\`)` is a TaskView. A path the route map does not know answers
  // `unknown`; an explicit type argument (`get<T>(path)`) still names the answer by hand.
  get<P extends string>(path: P, o?: CallOptions): Promise<ApiResponse<'GET', P>>;
  get<T>(path: string, o?: CallOptions): Promise<T>;
  get(path: string, o: CallOptions = {}): Promise<unknown> {
    return this.call('GET', path, o);
  }
  post<P extends string>(path: P, body?: ApiRequestBody<'POST', P>, o?: CallOptions): Promise<ApiResponse<'POST', P>>;
  post<T>(path: string, body?: unknown, o?: CallOptions): Promise<T>;
  post(path: string, body?: unknown, o: CallOptions = {}): Promise<unknown> {
    return this.call('POST', path, { ...o, body });
  }
  put<P extends string>(path: P, raw: Buffer | string, o?: CallOptions): Promise<ApiResponse<'PUT', P>>;
  put<T>(path: string, raw: Buffer | string, o?: CallOptions): Promise<T>;
  put(path: string, raw: Buffer | string, o: CallOptions = {}): Promise<unknown> {
    return this.call('PUT', path, { ...o, raw });
  }
  patch<P extends string>(path: P, body?: ApiRequestBody<'PATCH', P>, o?: CallOptions): Promise<ApiResponse<'PATCH', P>>;
  patch<T>(path: string, body?: unknown, o?: CallOptions): Promise<T>;
  patch(path: string, body?: unknown, o: CallOptions = {}): Promise<unknown> {
    return this.call('PATCH', path, { ...o, body });
  }
  delete<P extends string>(path: P, o?: CallOptions): Promise<ApiResponse<'DELETE', P>>;
  delete<T>(path: string, o?: CallOptions): Promise<T>;
  delete(path: string, o: CallOptions = {}): Promise<unknown> {
    return this.call('DELETE', path, o);
  }

  /**
   * Every item of a paged list endpoint (GET /v1/kv, GET /v1/tasks): follows the `continue`
   * tokens page by page. `field` names the array in each page (`items`, `tasks`).
   */
  getAll<P extends string, F extends ListField<ApiResponse<'GET', P>>>(path: P, field: F, o?: PagedOptions): Promise<ListItem<ApiResponse<'GET', P>, F>[]>;
  getAll<T>(path: string, field: string, o?: PagedOptions): Promise<T[]>;
  async getAll(path: string, field: string, o: PagedOptions = {}): Promise<unknown[]> {
    const out: unknown[] = [];
    let token: string | undefined;
    const sep = path.includes('?') ? '&' : '?';
    for (let pages = 0; pages < (o.maxPages ?? 100_000); pages++) {
      const q = [o.limit !== undefined ? `limit=${o.limit}` : '', token ? `continue=${encodeURIComponent(token)}` : ''].filter(Boolean).join('&');
      const r = await this.get<Record<string, unknown> & { continue?: string }>(q ? `${path}${sep}${q}` : path, o);
      const items = r[field];
      if (!Array.isArray(items)) throw new FlotillaError('internal', `${path}: the answer has no '${field}' list`);
      out.push(...(items as unknown[]));
      if (typeof r.continue !== 'string' || r.continue === '') return out;
      token = r.continue;
    }
    throw new FlotillaError('internal', `${path}: more than ${o.maxPages ?? 100_000} pages`);
  }

  /** Headers that authenticate a raw request (event stream, logs) like the client's own calls. */
  authHeaders(): Record<string, string> {
    return this.opts.token ? { authorization: `Bearer ${this.opts.token}` } : {};
  }

  /** The manager that answered last. */
  current(): string {
    return this.managers[this.preferred % this.managers.length]!;
  }

  /** The low-level call behind the typed ones (any method and path; the answer as given). */
  async call<T = unknown>(method: string, path: string, o: CallOptions = {}): Promise<T> {
    const deadline = monoNow() + (o.timeoutMs ?? this.opts.timeoutMs ?? 15_000);
    const requestId = o.headers?.['x-request-id'] ?? randomUUID();
    let lastErr: FlotillaError | null = null;
    let tlsErr: FlotillaError | null = null;
    let waitedNotice = false;
    // Managers that said the cluster has lost quorum (or did not answer): when that is all of
    // them, waiting longer helps nobody — fail now with the managers' explanation.
    const quorumLost = new Set<string>();
    let quorumErr: FlotillaError | null = null;
    const started = monoNow();
    for (let attempt = 0; ; attempt++) {
      const idx = o.pinned ? 0 : (this.preferred + attempt) % this.managers.length;
      const addr = this.managers[idx]!;
      try {
        const r = await this.once(addr, method, path, o, requestId, Math.min(this.opts.attemptTimeoutMs ?? 5_000, Math.max(1, deadline - monoNow())));
        if (r.status < 400) {
          this.preferred = idx;
          return r.body as T;
        }
        const info = (r.body as { error?: ErrorInfo })?.error;
        const err = info ? FlotillaError.fromInfo(info, r.status) : new FlotillaError('internal', `HTTP ${r.status} from ${addr}`, { httpStatus: r.status });
        // Retry elsewhere only when the cluster is between leaders or this manager cannot serve.
        if (!(err.code === 'not_leader' || err.code === 'unavailable')) throw err;
        lastErr = err;
        if (err.message.startsWith('no leader:')) {
          quorumLost.add(addr);
          quorumErr = err;
        }
      } catch (e) {
        const err = e instanceof FlotillaError ? e : toFlotillaError(e);
        if (err.message.includes('TLS')) tlsErr = err;
        if (e instanceof FlotillaError && e.code === 'unauthorized' && /certificate/.test(e.message)) throw e;
        if (e instanceof FlotillaError && !(e.code === 'not_leader' || e.code === 'unavailable' || e.code === 'timeout')) throw e;
        lastErr = err.code === 'internal' ? new FlotillaError('unavailable', `${addr}: ${err.message}`) : err;
        if (lastErr.code === 'unavailable' && !lastErr.message.startsWith('no leader')) quorumLost.add(addr);
      }
      if (quorumErr && !o.pinned && quorumLost.size >= this.managers.length) throw quorumErr;
      if (o.signal?.aborted) throw new FlotillaError('unavailable', 'aborted');
      if (monoNow() >= deadline) break;
      if (!waitedNotice && monoNow() - started > 1000) {
        waitedNotice = true;
        this.opts.onWait?.(lastErr?.message ?? 'waiting for the cluster');
      }
      // After a full round over every manager, back off a little.
      if ((attempt + 1) % this.managers.length === 0) await sleep(Math.min(500, 50 * (attempt + 1)));
    }
    // A TLS mismatch seen on any attempt says more than the timeout that ended the last one.
    throw tlsErr ?? lastErr ?? new FlotillaError('unavailable', 'no manager answered');
  }

  private once(
    addr: string,
    method: string,
    path: string,
    o: CallOptions,
    requestId: string,
    timeoutMs: number,
  ): Promise<{ status: number; body: unknown }> {
    const [host, port] = splitAddr(addr);
    let payload: Buffer | undefined;
    const headers: Record<string, string | number> = { 'x-request-id': requestId, ...this.authHeaders(), ...(o.headers ?? {}) };
    if (o.raw !== undefined) {
      payload = Buffer.isBuffer(o.raw) ? o.raw : Buffer.from(o.raw);
      headers['content-type'] ??= 'application/octet-stream';
    } else if (o.body !== undefined) {
      payload = Buffer.from(JSON.stringify(o.body));
      headers['content-type'] = 'application/json';
    }
    if (payload) headers['content-length'] = payload.length;
    return new Promise((resolve, reject) => {
      const opts = { host, port, method, path, headers, timeout: timeoutMs };
      const req = this.link.secure ? this.link.request(opts) : http.request({ ...opts, agent: keepAlive });
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const buf = Buffer.concat(chunks);
          const ct = String(res.headers['content-type'] ?? '');
          let body: unknown = buf;
          if (ct.includes('json')) {
            try {
              body = JSON.parse(buf.toString('utf8'));
            } catch {
              body = buf.toString('utf8');
            }
          } else if (ct.startsWith('text/')) body = buf.toString('utf8');
          resolve({ status: res.statusCode ?? 0, body });
        });
      });
      req.on('timeout', () => req.destroy(new FlotillaError('timeout', `${addr} did not answer within ${timeoutMs} ms`)));
      req.on('error', (e) => reject(e instanceof FlotillaError ? e : (tlsHint(e, addr, this.link.secure) ?? new FlotillaError('unavailable', `${addr}: ${(e as Error).message}`))));
      if (o.signal) o.signal.addEventListener('abort', () => req.destroy(new FlotillaError('unavailable', 'aborted')), { once: true });
      req.end(payload);
    });
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export { splitAddr };
