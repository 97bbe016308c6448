// API authentication and the worker join token.
//
// - API bearer tokens: `flt_` + 32 random bytes (base64url), with a role: `admin` (everything) or
//   `viewer` (read-only: GETs, the event stream, task logs). Only the SHA-256 of a token is
//   stored, replicated through Raft as a reserved kv record (`__flotilla/api-tokens/<id>`, which
//   the public kv API refuses).
// - An empty state never opens the API of a TLS cluster: there the first admin token is created
//   with the cluster's admin client certificate (CN=admin, OU=admin, signed by the cluster CA;
//   `flotilla init` writes admin.crt/admin.key beside the CA), which the API takes as an admin
//   credential on any route. A follower that forwards such a request to the leader says so in a
//   header the leader believes only over a link authenticated by a manager certificate.
// - A cluster started with `--insecure` (no CA, so no certificate to prove anything with) keeps
//   its API open while it has no token — but only while no token was ever created: the first
//   creation also sets a replicated flag (`__flotilla/auth-enforced`) that is never cleared, so
//   a state without tokens after that demands a token anyway.
//   `GET /v1/status` stays open (liveness, and managers ask each other for it).
// - Streams (the event stream over SSE or WebSocket, followed task logs) are bound to the
//   credential that opened them: when that token is revoked (or an open API starts to demand
//   tokens), every such stream on every manager is closed as the revocation is applied.
// - The worker join token: the derived `workerToken(secret)` until rotated, then the hash of a
//   random one (`__flotilla/worker-join`). A registered worker gets a node credential
//   (HMAC(secret, 'node:<id>:<epoch>')) and re-registers with it, so rotating the join token
//   does not lock out joined workers. The same credential authorizes managers on the worker's
//   log API.
// Peer links (/raft) and worker sessions (/v1/worker) authenticate on their own.
import type http from 'node:http';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { KvEntry } from './state.js';
import type { CommandProposer, LeaderForward, ReadBarrier, RouteTable, StateView } from './ports.js';
import { FlotillaError, toFlotillaError } from '../protocol/errors.js';
import { Reply, type RequestContext } from './http.js';
import type { Logger } from '../log.js';
import { caFingerprint, formatJoinToken, identityOf, isAdminCert, parseJoinToken } from '../tls/pki.js';

export const RESERVED_KV_PREFIX = '__flotilla/';
const TOKENS_PREFIX = `${RESERVED_KV_PREFIX}api-tokens/`;
const JOIN_KEY = `${RESERVED_KV_PREFIX}worker-join`;
/** Set by the first token creation and never cleared: from then on the API always demands a token. */
const ENFORCED_KEY = `${RESERVED_KV_PREFIX}auth-enforced`;

/** Whether a token was ever created in this cluster. */
export function authEverEnforced(state: StateView): boolean {
  return state.kvGet(ENFORCED_KEY) !== undefined;
}

export type Role = 'admin' | 'viewer';
export const ROLES: readonly Role[] = ['admin', 'viewer'];

export interface ApiTokenRecord {
  id: string;
  role: Role;
  /** hex SHA-256 of the token. */
  hash: string;
  createdAt: number;
}

export interface JoinRecord {
  /** hex SHA-256 of the current worker join token. */
  hash: string;
  rotatedAt: number;
  /** Node credentials are bound to this epoch; bumping it revokes every joined worker. */
  epoch: number;
}

const HOW_TO = 'pass a token: flotilla --token-file FILE … or FLOTILLA_TOKEN=… (HTTP: authorization: Bearer <token>)';

/** Routes that never need a token (liveness). */
const OPEN = new Set(['GET /v1/status', 'GET /v1/ca', 'POST /v1/join']);
/** Reads only an admin may do. */
const ADMIN_READS = new Set(['GET /v1/tokens', 'GET /v1/snapshot', 'GET /v1/tokens/join']);

export function sha256hex(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}

export function newApiToken(): string {
  return 'flt_' + randomBytes(32).toString('base64url');
}

export function newJoinToken(): string {
  return 'flt-w-' + randomBytes(32).toString('base64url');
}

/** The credential a registered worker re-registers with (and that opens its log API to managers). */
/** The worker join token is derived from the cluster secret (never the secret itself) until it is rotated. */
export function workerToken(secret: string): string {
  return 'flt-w-' + createHmac('sha256', secret).update('flotilla worker join token v1').digest('hex').slice(0, 40);
}

export function nodeCredential(secret: string, nodeId: string, epoch: number): string {
  return 'flt-n-' + createHmac('sha256', secret).update(`node:${nodeId}:${epoch}`).digest('base64url');
}

function parse<T>(e: KvEntry | undefined): T | undefined {
  if (!e) return undefined;
  try {
    return JSON.parse(typeof e.value === 'string' ? e.value : Buffer.from(e.value).toString('utf8')) as T;
  } catch {
    return undefined;
  }
}

/** Tokens by state, recomputed only when an entry was applied since (every request checks them). */
const tokenCache = new WeakMap<StateView, { applied: number; tokens: ApiTokenRecord[] }>();

export function apiTokens(state: StateView): ApiTokenRecord[] {
  const c = tokenCache.get(state);
  if (c && c.applied === state.appliedIndex) return c.tokens;
  const tokens = readApiTokens(state);
  tokenCache.set(state, { applied: state.appliedIndex, tokens });
  return tokens;
}

function readApiTokens(state: StateView): ApiTokenRecord[] {
  return state
    .kvList(TOKENS_PREFIX)
    .map((e) => parse<ApiTokenRecord>(e))
    .filter((r): r is ApiTokenRecord => r !== undefined && typeof r.hash === 'string' && ROLES.includes(r.role));
}

export function joinRecord(state: StateView): JoinRecord | undefined {
  return parse<JoinRecord>(state.kvGet(JOIN_KEY));
}

export function nodeEpoch(state: StateView): number {
  return joinRecord(state)?.epoch ?? 1;
}

export function sameHexDigest(a: string, b: string): boolean {
  return sameHex(a, b);
}

export function sameSecret(a: string, b: string): boolean {
  return sameString(a, b);
}

function sameHex(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex');
  const y = Buffer.from(b, 'hex');
  return x.length === y.length && x.length > 0 && timingSafeEqual(x, y);
}

function sameString(a: string, b: string): boolean {
  const x = createHash('sha256').update(a).digest();
  const y = createHash('sha256').update(b).digest();
  return timingSafeEqual(x, y);
}

/**
 * Whether a registration may proceed: a valid node credential for that node id, or the current
 * join token (`derived` = workerToken(secret) until the token is rotated). Returns the refusal.
 */
export function checkJoin(state: StateView, secret: string, derived: string, msg: { nodeId?: unknown; token?: unknown; credential?: unknown }): string | null {
  if (typeof msg.credential === 'string' && typeof msg.nodeId === 'string') {
    if (sameString(msg.credential, nodeCredential(secret, msg.nodeId, nodeEpoch(state)))) return null;
  }
  if (typeof msg.token !== 'string') return typeof msg.credential === 'string' ? 'invalid node credential' : 'missing join token';
  // A token as printed (FLT1-<CA fingerprint>-<secret part>) or its secret part alone.
  const token = parseJoinToken(msg.token).secret;
  const rec = joinRecord(state);
  const ok = rec ? sameHex(sha256hex(token), rec.hash) : sameString(token, derived);
  if (ok) return null;
  return typeof msg.credential === 'string' ? 'invalid node credential and join token' : 'invalid join token';
}

/** The token a request presents: `authorization: Bearer …`, or `?token=` (WebSocket only). */
function presented(req: http.IncomingMessage, allowQuery: boolean): string | null {
  const h = req.headers.authorization;
  if (typeof h === 'string') {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
    return m ? m[1]! : null;
  }
  if (allowQuery) return new URL(req.url ?? '/', 'http://x').searchParams.get('token');
  return null;
}

/** What authorised a request: an API token (by id), the admin client certificate, or an open API. */
export type Credential = { kind: 'token'; id: string; role: Role } | { kind: 'cert' } | { kind: 'open' };

/** Header a follower adds when it forwards a request it authorised by the admin client certificate. */
export const FORWARDED_ADMIN_CERT = 'x-flotilla-admin-cert';

function peerCert(req: http.IncomingMessage): ReturnType<TLSSocket['getPeerCertificate']> | null {
  const sock = req.socket as Partial<TLSSocket>;
  if (typeof sock.getPeerCertificate !== 'function' || sock.authorized !== true) return null;
  return sock.getPeerCertificate();
}

/** Whether the request itself carries the cluster's admin client certificate (verified against the CA). */
export function hasAdminCert(req: http.IncomingMessage): boolean {
  return isAdminCert(peerCert(req));
}

/** The admin certificate, directly or vouched for by a manager that forwarded the request. */
function adminByCert(req: http.IncomingMessage): boolean {
  const cert = peerCert(req);
  if (!cert) return false;
  if (isAdminCert(cert)) return true;
  return req.headers[FORWARDED_ADMIN_CERT] !== undefined && identityOf(cert)?.role === 'manager';
}

/** Whether the API is open: never with TLS; without, only while no token was ever created. */
function apiOpen(state: StateView, tls: boolean): boolean {
  return !tls && apiTokens(state).length === 0 && !authEverEnforced(state);
}

/**
 * Who a request is: the credential it proves, or the refusal. A bearer token, when presented,
 * decides (a caller may narrow itself to a viewer token even where the admin certificate is at
 * hand); without one, the admin client certificate (TLS clusters only).
 */
export function credentialOf(state: StateView, req: http.IncomingMessage, opts: { tls: boolean; allowQuery?: boolean; what: string }): Credential | FlotillaError {
  if (apiOpen(state, opts.tls)) return { kind: 'open' };
  const tok = presented(req, opts.allowQuery ?? false);
  if (tok === null) {
    if (opts.tls && adminByCert(req)) return { kind: 'cert' };
    const how = opts.tls ? `${HOW_TO}; or use the cluster's admin client certificate (admin.crt/admin.key from flotilla init)` : HOW_TO;
    return new FlotillaError('unauthorized', `Cannot ${opts.what} as the request carries no API token; ${how}`);
  }
  const h = sha256hex(tok);
  const rec = apiTokens(state).find((r) => sameHex(h, r.hash));
  if (!rec) return new FlotillaError('unauthorized', `Cannot ${opts.what} as the API token is not valid (unknown or revoked); ${HOW_TO}`);
  return { kind: 'token', id: rec.id, role: rec.role };
}

/** Authenticates a request; null = allowed. */
export function authenticate(state: StateView, req: http.IncomingMessage, opts: { tls: boolean; write: boolean; adminOnly?: boolean; allowQuery?: boolean; what: string }): FlotillaError | null {
  const cred = credentialOf(state, req, opts);
  if (cred instanceof FlotillaError) return cred;
  if (cred.kind === 'token' && (opts.write || opts.adminOnly) && cred.role !== 'admin') {
    return new FlotillaError('forbidden', `Cannot ${opts.what} as token ${cred.id} has the '${cred.role}' role, which may only read; use an admin token`);
  }
  return null;
}

/** Managers (by their state) whose state has been brought up to date by a read barrier since they started. */
const authFresh = new WeakSet<StateView>();

/**
 * `authenticate` on a state that is not behind the cluster where that matters. A manager's own
 * state may lag (just restarted and still replaying, or a follower behind the leader): a token
 * created a moment ago would look unknown (a valid caller refused), and a state from before the
 * first token would look open (anyone let in). So an unknown token is checked again after a
 * read barrier (ReadIndex: this manager has applied everything committed when the request
 * came), and an open API is believed only once such a barrier has passed since this manager
 * started (the open rule ends for good when a token is first created, so one is enough). No
 * barrier to be had (no leader): an unknown token stays refused, an open API is not believed
 * (503) — never a guess that lets anyone in.
 */
export async function authenticateFresh(m: { state: StateView; linearizable: ReadBarrier['linearizable'] }, req: http.IncomingMessage, opts: { tls: boolean; write: boolean; adminOnly?: boolean; allowQuery?: boolean; what: string }): Promise<FlotillaError | null> {
  const first = authenticate(m.state, req, opts);
  const unknownToken = first?.code === 'unauthorized' && presented(req, opts.allowQuery ?? false) !== null;
  const open = first === null && apiOpen(m.state, opts.tls);
  if (!unknownToken && !(open && !authFresh.has(m.state))) return first;
  try {
    await m.linearizable();
  } catch (e) {
    // No barrier to be had: a refusal stands (refusing is safe; the caller may retry), an
    // open API is not believed (503).
    if (unknownToken) return first;
    throw e;
  }
  authFresh.add(m.state);
  return authenticate(m.state, req, opts);
}

/** Why a credential no longer holds (null: it still does). */
function credentialLost(state: StateView, cred: Credential, tls: boolean): string | null {
  if (cred.kind === 'cert') return null;
  if (cred.kind === 'open') return apiOpen(state, tls) ? null : 'the API now requires a token';
  return apiTokens(state).some((t) => t.id === cred.id) ? null : `API token ${cred.id} was revoked`;
}

/** Whose streams: a manager's state, and whether its API runs over TLS. */
export interface StreamScope {
  state: StateView;
  tls: boolean;
}

interface StreamWatch {
  cred: Credential;
  close: (reason: string) => void;
}
/** Watched streams of each manager (by its state). */
const streamWatches = new WeakMap<StateView, Set<StreamWatch>>();

/**
 * Binds a stream (event stream, followed logs) to the credential its request was authorised
 * with: `close(reason)` is called once when that credential stops holding (token revoked, or
 * an open API starting to demand tokens). Returns the function that unbinds it.
 */
export function watchStream(m: StreamScope, req: http.IncomingMessage, close: (reason: string) => void, allowQuery = false): () => void {
  const set = streamWatches.get(m.state);
  const cred = credentialOf(m.state, req, { tls: m.tls, allowQuery, what: 'stream' });
  if (!set || cred instanceof FlotillaError || cred.kind === 'cert') return () => {};
  let done = false;
  const w: StreamWatch = {
    cred,
    close: (reason) => {
      if (done) return;
      done = true;
      set.delete(w);
      close(reason);
    },
  };
  set.add(w);
  return () => {
    done = true;
    set.delete(w);
  };
}

/** Closes the watched streams whose credential no longer holds (run as tokens change). */
function recheckStreams(m: StreamScope, log: Logger): void {
  const set = streamWatches.get(m.state);
  if (!set || set.size === 0) return;
  const tls = m.tls;
  for (const w of [...set]) {
    const why = credentialLost(m.state, w.cred, tls);
    if (why === null) continue;
    log.info('closing a stream: its credential no longer holds', { reason: why });
    try {
      w.close(why);
    } catch {
      /* the stream was going away anyway */
    }
  }
}

/** A request body that must be a JSON object with only `fields`; throws bad_request naming the problem. */
function objectBody(body: unknown, fields: readonly string[], action: string): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new FlotillaError('bad_request', `Cannot ${action} as the body must be a JSON object`);
  const extra = Object.keys(body).find((k) => !fields.includes(k));
  if (extra !== undefined) {
    throw new FlotillaError('bad_request', `Cannot ${action} as '${extra}' is not a known field (only ${fields.map((f) => `'${f}'`).join(', ')})`);
  }
  return body as Record<string, unknown>;
}

/** What the token routes and the request guard need. */
export interface AuthDeps {
  routes: RouteTable;
  state: StateView;
  reads: ReadBarrier;
  writes: LeaderForward;
  proposer: CommandProposer;
  /** The API runs over TLS (the cluster has a CA). */
  tls: boolean;
  /** The cluster CA (PEM), to print join tokens with its fingerprint; null without TLS. */
  ca: string | null;
}

export function registerAuth(d: AuthDeps, log: Logger): void {
  const r = d.routes.router;
  const tls = d.tls;
  const scope: StreamScope = { state: d.state, tls };
  const m = { state: d.state, linearizable: (ms?: number) => d.reads.linearizable(ms) };
  // Streams end when the credential they were opened with is revoked: checked as each token
  // change is applied (here, on every manager) and after a snapshot replaced the state.
  streamWatches.set(d.state, new Set());
  d.state.onEvent((e) => {
    const key = (e as { key?: unknown }).key;
    if (typeof key === 'string' && (key.startsWith(TOKENS_PREFIX) || key === ENFORCED_KEY)) recheckStreams(scope, log);
  });
  d.state.onReset(() => recheckStreams(scope, log));
  const prevGuard = r.guard;
  r.guard = async (ctx: RequestContext, route: string) => {
    await prevGuard?.(ctx, route);
    const key = `${ctx.method} ${route}`;
    if (OPEN.has(key)) return;
    const read = ctx.method === 'GET' || ctx.method === 'HEAD';
    const err = await authenticateFresh(m, ctx.req, { tls, write: !read, adminOnly: ADMIN_READS.has(key), what: `${ctx.method} ${ctx.path}` });
    if (err) {
      if (err.code === 'unauthorized') ctx.res.setHeader('www-authenticate', 'Bearer realm="flotilla"');
      throw err;
    }
  };

  // The event stream over WebSocket: browsers cannot set headers there, so ?token= works too.
  const events = d.routes.upgrades.get('/v1/events');
  if (events) {
    d.routes.upgrades.set('/v1/events', async (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
      const err = await authenticateFresh(m, req, { tls, write: false, allowQuery: true, what: 'stream events' }).catch((e: unknown) => toFlotillaError(e));
      if (socket.destroyed) return;
      if (err) {
        const body = JSON.stringify(err.toJSON());
        socket.end(`HTTP/1.1 ${err.httpStatus} ${err.httpStatus === 401 ? 'Unauthorized' : 'Forbidden'}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
        return;
      }
      events(req, socket, head);
    });
  }

  r.on('GET', '/v1/tokens', async (ctx) => {
    await d.reads.readable(ctx);
    return { tokens: apiTokens(m.state).map(({ id, role, createdAt }) => ({ id, role, createdAt })).sort((a, b) => a.createdAt - b.createdAt) };
  });

  r.on('POST', '/v1/tokens', async (ctx) => {
    const body = objectBody(await ctx.json(), ['role'], 'create a token');
    if (!ROLES.includes(body.role as Role)) {
      throw new FlotillaError('bad_request', `Cannot create a token as 'role' must be one of ${ROLES.join(', ')}`);
    }
    const role = body.role as Role;
    return d.writes.onLeader(ctx, async () => {
      const token = newApiToken();
      const rec: ApiTokenRecord = { id: 'tok-' + randomBytes(5).toString('hex'), role, hash: sha256hex(token), createdAt: Date.now() };
      if (!authEverEnforced(m.state)) {
        try {
          await d.proposer.propose({ type: 'kv.put', key: ENFORCED_KEY, value: JSON.stringify({ at: rec.createdAt, by: rec.id }), cas: 0 });
        } catch (e) {
          if (!(e instanceof FlotillaError && e.code === 'conflict')) throw e; // set meanwhile by another creation
        }
      }
      await d.proposer.propose({ type: 'kv.put', key: TOKENS_PREFIX + rec.id, value: JSON.stringify(rec), cas: 0 });
      log.info('api token created', { id: rec.id, role });
      return new Reply(201, { id: rec.id, role, createdAt: rec.createdAt, token });
    });
  });

  r.on('DELETE', '/v1/tokens/:id', async (ctx) => {
    const id = ctx.params.id!;
    return d.writes.onLeader(ctx, async () => {
      const e = m.state.kvGet(TOKENS_PREFIX + id);
      if (!e) throw new FlotillaError('not_found', `token '${id}' not found (see flotilla token ls)`);
      const all = apiTokens(m.state);
      if (all.find((t) => t.id === id)?.role === 'admin' && all.filter((t) => t.role === 'admin').length === 1) {
        throw new FlotillaError('conflict', `Cannot revoke ${id} as it is the last admin token (nobody could manage the cluster); create another admin token first`);
      }
      await d.proposer.propose({ type: 'kv.del', key: TOKENS_PREFIX + id, cas: e.version });
      log.info('api token revoked', { id });
      return { id, revoked: true };
    });
  });

  r.on('POST', '/v1/tokens/worker/rotate', async (ctx) => {
    const raw = await ctx.body();
    let revokeNodes = false;
    if (raw.length > 0) {
      const body = objectBody(await ctx.json(), ['revokeNodes'], 'rotate the join token');
      if (body.revokeNodes !== undefined && typeof body.revokeNodes !== 'boolean') throw new FlotillaError('bad_request', "Cannot rotate the join token as 'revokeNodes' must be a boolean");
      revokeNodes = body.revokeNodes === true;
    }
    return d.writes.onLeader(ctx, async () => {
      const cur = m.state.kvGet(JOIN_KEY);
      const prev = parse<JoinRecord>(cur);
      const token = newJoinToken();
      const epoch = (prev?.epoch ?? 1) + (revokeNodes ? 1 : 0);
      const rec: JoinRecord = { hash: sha256hex(token), rotatedAt: Date.now(), epoch };
      await d.proposer.propose({ type: 'kv.put', key: JOIN_KEY, value: JSON.stringify(rec), cas: cur?.version ?? 0 });
      log.info('worker join token rotated', { epoch, revokedNodes: revokeNodes });
      const shown = d.ca !== null ? formatJoinToken(caFingerprint(d.ca), token) : token;
      return { token: shown, epoch, revokedNodes: revokeNodes };
    });
  });
}

/** Scope of the de-duplication of unauthenticated callers (a cluster without API tokens). */
export const ANONYMOUS_SCOPE = 'anonymous';

/** Scope of writes authorised by the cluster's admin client certificate. */
export const ADMIN_CERT_SCOPE = 'admin-cert';

/**
 * Who sent a request, as the scope of its request id (kv writes de-duplicate per scope): the id
 * of the API token it presents, 'admin-cert' for the admin client certificate, or 'anonymous'
 * on an open API (the guard has refused a request without a valid credential otherwise). A
 * forwarded write carries its client's authorization header (or the admin-certificate header),
 * so the leader derives the same scope as the manager it reached.
 */
export function callerScope(state: StateView, req: http.IncomingMessage): string {
  const tok = presented(req, false);
  if (tok === null) return adminByCert(req) ? ADMIN_CERT_SCOPE : ANONYMOUS_SCOPE;
  const tokens = apiTokens(state);
  if (tokens.length === 0) return ANONYMOUS_SCOPE;
  const h = sha256hex(tok);
  return tokens.find((r) => sameHex(h, r.hash))?.id ?? ANONYMOUS_SCOPE;
}
