// The page's link to the cluster: one manager at a time, first the one that served the page.
//
// - Data: a snapshot (/v1/ui/snapshot) plus the event stream (WebSocket /v1/events?since=N),
//   applied to the local store (store.ts). Managers and node usage, which events do not carry,
//   are polled (/v1/cluster every 2 s, /v1/nodes every 5 s and shortly after task events).
// - Failure: when the stream drops (or the manager stops answering polls), the page shows
//   "Reconnecting…", and tries the other managers the cluster published (/v1/status members,
//   /v1/cluster addrs) directly — `http://<addr>`, `ws://<addr>` (the API grants CORS to the
//   cluster's own page origins) — healthy ones first, the one that failed last. It resumes the
//   stream from the last seq it applied (so it also learns what happened while it was away,
//   such as the election that followed) and re-lists from the new manager, so nothing stale
//   stays on screen. A `reset` frame (the seq fell out of the ring) also re-lists.
import { createSignal } from 'solid-js';
import {
  applyEvent,
  applySnapshot,
  dismissKind,
  leaderHooks,
  noteConnection,
  observeLeader,
  refreshNodes,
  setStore,
  showBanner,
  store,
} from './store';
import type { ClusterInfo, ErrorInfo, LocalStatus, NodeInfo, Snapshot, StreamFrame } from './types';

interface Candidate {
  id: string | null;
  addr: string | null;
  /** URL prefix for API calls: '' for the page's own origin, else 'http://host:port'. */
  base: string;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly info: ErrorInfo,
  ) {
    super(info.message);
  }
}

const [base, setBase] = createSignal('');
/** The API prefix in use (reactive: the log view reopens its stream when it changes). */
export { base };

let current: Candidate = { id: null, addr: null, base: '' };
let ws: WebSocket | null = null;
let gen = 0;
let lastSeq = 0;
let pollFailures = 0;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------------------------------------
// API token. A cluster that holds API tokens answers 401 to a request without a valid one. Any
// 401 — a fetch, the probe that follows a refused event stream (browsers do not expose why a
// WebSocket handshake failed), a log stream — stops the page from following the cluster and
// opens the login box (App.tsx, LoginBox) on whatever view is showing. The token typed there is
// checked against the manager before it is kept; a wrong one is said so and asked again. Once
// accepted it is kept in sessionStorage (this tab only), sent as `authorization: Bearer …`
// (`?token=` on the event WebSocket, where browsers cannot set headers), and the page connects
// again in place — no reload — resuming the event stream from the last seq it applied.

const TOKEN_KEY = 'flotilla-token';

function storedToken(): string | null {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

const [token, setTokenSignal] = createSignal<string | null>(storedToken());
/** The token in use (reactive: the log view reopens its stream when it changes). */
export { token };

function keepToken(t: string | null): void {
  setTokenSignal(t);
  try {
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    /* storage disabled: the token lives as long as the page */
  }
}

export function authToken(): string | null {
  return token();
}

/** Headers that authenticate a fetch to the API (empty without a token). */
export function authHeaders(t: string | null = token()): Record<string, string> {
  return t ? { authorization: `Bearer ${t}` } : {};
}

export interface LoginRequest {
  /** missing: no token yet; rejected: the tab's token was refused when (re)connecting;
   *  expired: the token stopped working while the page was live (revoked). */
  reason: 'missing' | 'rejected' | 'expired';
  /** What the manager said. */
  detail: string;
}

const [login, setLogin] = createSignal<LoginRequest | null>(null);
/** Non-null while the page waits for a token (the login box is showing). */
export { login };

/**
 * The cluster answered 401 to a request made with token `sent`: forget that token, stop
 * following the cluster, and ask for one. An answer to an older token than the one now in use
 * (a request in flight while the user signed in) changes nothing.
 */
export function unauthorized(sent: string | null, detail: string): void {
  if (sent !== token() || login()) return;
  const reason: LoginRequest['reason'] = sent === null ? 'missing' : store.conn.status === 'live' ? 'expired' : 'rejected';
  if (sent !== null) keepToken(null);
  ++gen;
  const sock = ws;
  ws = null;
  if (sock) {
    sock.onclose = null;
    sock.close();
  }
  dismissKind('reconnecting');
  setStore('conn', { status: 'login', detail: 'waiting for an API token' });
  setLogin({ reason, detail });
}

/**
 * Checks `t` against the manager the page follows and, when it is accepted, keeps it and
 * connects again (no reload). Resolves to the reason it was not accepted, or null.
 */
export async function signIn(t: string): Promise<string | null> {
  let res: Response;
  try {
    res = await fetch(`${current.base}/v1/nodes?stale=true`, { headers: authHeaders(t), signal: AbortSignal.timeout(8000) });
  } catch {
    return 'The manager could not be reached to check the token; try again.';
  }
  if (res.status === 401) return 'That token was not accepted: it is unknown or has been revoked. Check it and try again.';
  // Anything else (200, or 403 for a token whose role cannot read this) means the token is known.
  keepToken(t);
  setLogin(null);
  connect();
  return null;
}

/**
 * After a stream failed to open on `c`: whether it was refused for want of a valid token. The
 * probe's 401 opens the login box (apiAt), which also ends the caller's connection attempt.
 */
async function authRefused(c: Candidate): Promise<boolean> {
  try {
    await apiAt(c.base, '/v1/nodes?stale=true', { timeoutMs: 3000 });
    return false;
  } catch (e) {
    return e instanceof ApiError && e.status === 401;
  }
}

/** fetch + JSON against the manager the page follows; throws ApiError with the server's error. */
export async function api<T>(path: string, init: RequestInit & { timeoutMs?: number } = {}): Promise<T> {
  return apiAt<T>(current.base, path, init);
}

async function apiAt<T>(prefix: string, path: string, init: RequestInit & { timeoutMs?: number } = {}): Promise<T> {
  const { timeoutMs = 10_000, ...rest } = init;
  const sent = token();
  let res: Response;
  try {
    res = await fetch(prefix + path, { ...rest, headers: { ...authHeaders(sent), ...((rest.headers as Record<string, string> | undefined) ?? {}) }, signal: rest.signal ?? AbortSignal.timeout(timeoutMs) });
  } catch (e) {
    const name = (e as Error).name;
    if (name === 'AbortError') throw e;
    throw new ApiError(0, {
      code: name === 'TimeoutError' ? 'timeout' : 'unavailable',
      message: name === 'TimeoutError' ? 'the manager did not answer in time' : 'the manager is unreachable',
    });
  }
  const text = await res.text();
  let body: unknown = undefined;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    /* not JSON */
  }
  if (!res.ok) {
    const err = (body as { error?: ErrorInfo } | undefined)?.error;
    if (res.status === 401) unauthorized(sent, err?.message ?? 'The API answered 401 Unauthorized.');
    throw new ApiError(res.status, err ?? { code: `http_${res.status}`, message: text || res.statusText });
  }
  return body as T;
}

/** A write (or any call) that, if the manager is gone, starts a failover and says so. */
export async function write<T>(path: string, init: RequestInit): Promise<T> {
  try {
    return await api<T>(path, init);
  } catch (e) {
    if (e instanceof ApiError && e.status === 0 && store.conn.status === 'live') drop('the manager did not answer a request');
    throw e;
  }
}

function baseFor(addr: string): string {
  if (addr === location.host) return '';
  const i = addr.lastIndexOf(':');
  let host = addr.slice(0, i);
  if (host === '0.0.0.0' || host === '[::]' || host === '::') host = location.hostname;
  return `${location.protocol}//${host}:${addr.slice(i + 1)}`;
}

function wsUrl(prefix: string): string {
  if (prefix === '') return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}`;
  return prefix.replace(/^http/, 'ws');
}

// ------------------------------------------------------------------------------------------
// Stream

/** Opens the event stream on `c`; resolves once the manager said hello, rejects otherwise. */
function openStream(c: Candidate, since: number | null, myGen: number): Promise<void> {
  return new Promise((resolve, reject) => {
    // With no position yet, ask for one past any event: the manager answers `reset` with its
    // last seq, and the snapshot taken right after is the starting state.
    const s = since ?? Number.MAX_SAFE_INTEGER;
    const tok = authToken();
    const sock = new WebSocket(`${wsUrl(c.base)}/v1/events?since=${s}${tok ? `&token=${encodeURIComponent(tok)}` : ''}`);
    let hello = false;
    const timer = setTimeout(() => {
      if (!hello) {
        sock.onclose = null;
        sock.close();
        reject(new Error('no hello'));
      }
    }, 3000);
    sock.onmessage = (m) => {
      if (myGen !== gen) {
        sock.onclose = null;
        sock.close();
        return;
      }
      let f: StreamFrame;
      try {
        f = JSON.parse(String(m.data)) as StreamFrame;
      } catch {
        return;
      }
      if (f.kind === 'hello') {
        hello = true;
        clearTimeout(timer);
        ws?.close();
        ws = sock;
        current = { ...c, id: f.manager, addr: c.addr ?? store.members[f.manager] ?? location.host };
        setBase(c.base);
        setStore('conn', { manager: f.manager, addr: current.addr });
        resolve();
        void resync(myGen);
        return;
      }
      if (f.kind === 'reset') {
        lastSeq = f.lastSeq;
        setStore('conn', 'lastSeq', lastSeq);
        if (since !== null) void resync(myGen);
        return;
      }
      applyEvent(f);
      lastSeq = f.seq;
      setStore('conn', 'lastSeq', lastSeq);
      if (f.type.startsWith('task.')) scheduleNodes();
    };
    sock.onclose = (ev: CloseEvent) => {
      clearTimeout(timer);
      if (!hello) {
        reject(new Error('closed'));
        return;
      }
      // 4401: the manager ended the stream because its token was revoked (or the API now
      // demands one): ask for a token at once, as a revocation mid-session.
      if (ev.code === 4401 && myGen === gen && ws === sock) {
        unauthorized(token(), ev.reason || 'the API token was revoked');
        return;
      }
      if (myGen === gen && ws === sock) drop('the event stream closed');
    };
    sock.onerror = () => {
      /* onclose follows */
    };
  });
}

/** The connection generation whose re-list is under way (one at a time per connection). */
let resyncing = -1;
/** Re-lists from the manager the stream is on (after connecting and after a reset). */
async function resync(myGen: number): Promise<void> {
  if (resyncing === myGen) return;
  resyncing = myGen;
  try {
    for (let attempt = 0; myGen === gen; attempt++) {
      try {
        const snap = await apiAt<Snapshot>(current.base, '/v1/ui/snapshot', { timeoutMs: 8000 });
        if (myGen !== gen) return;
        applySnapshot(snap);
        const wasReconnecting = store.conn.status === 'reconnecting';
        setStore('conn', { status: 'live', detail: '' });
        dismissKind('error');
        if (wasReconnecting) {
          // Served by a manager that is gone, the page cannot be reloaded from there: offer the
          // same view from the manager it follows now.
          const link = current.base !== '' ? { href: `${current.base}${location.pathname}${location.search}`, label: `open this page from ${snap.manager}` } : undefined;
          showBanner('reconnected', `Reconnected to ${snap.manager} (${current.addr ?? location.host}); the page is live again`, link ? 15_000 : 6000, link);
          noteConnection(`page now follows ${snap.manager}`);
        }
        void pollCluster();
        void pollNodes();
        return;
      } catch (e) {
        if (myGen !== gen) return;
        const msg = e instanceof Error ? e.message : String(e);
        setStore('conn', 'detail', `${current.id ?? 'the manager'} cannot serve reads yet: ${msg}`);
        if (attempt >= 2) {
          showBanner('error', `${current.id ?? 'The manager'} cannot serve reads: ${msg}. Retrying…`);
          // Cut off from the others, perhaps: one of them may still have a quorum.
          if (Object.keys(store.members).length > 1) {
            drop(`${current.id ?? 'the manager'} cannot serve reads`, false);
            return;
          }
        }
        await sleep(Math.min(4000, 500 * 2 ** attempt));
      }
    }
  } finally {
    if (resyncing === myGen) resyncing = -1;
  }
}

/** The stream (or the manager) is gone: show it, and find another manager. */
function drop(why: string, unreachable = true): void {
  const failed = current;
  const myGen = ++gen;
  const sock = ws;
  ws = null;
  if (sock) {
    sock.onclose = null;
    sock.close();
  }
  setStore('conn', { status: 'reconnecting', reconnects: store.conn.reconnects + 1, detail: why });
  // What the page saw itself: the manager it followed is gone (until a poll says otherwise).
  if (unreachable && failed.id && store.cluster) {
    const i = store.cluster.managers.findIndex((m) => m.id === failed.id);
    if (i >= 0) setStore('cluster', 'managers', i, { role: 'unreachable', healthy: false, lastContactMs: null });
  }
  showBanner('reconnecting', `Reconnecting… lost ${failed.id ?? 'the manager'} (${why})`);
  noteConnection(`lost ${failed.id ?? 'the manager'}: ${why}`);
  void reconnect(failed, myGen);
}

function candidates(failed: Candidate): Candidate[] {
  const addrs = new Map<string, string>(Object.entries(store.members));
  const healthy = new Map<string, boolean>();
  for (const m of store.cluster?.managers ?? []) {
    addrs.set(m.id, m.addr);
    healthy.set(m.id, m.healthy && m.role !== 'unreachable');
  }
  const others = [...addrs.entries()]
    .filter(([id]) => id !== failed.id)
    .sort(([a], [b]) => Number(healthy.get(b) ?? false) - Number(healthy.get(a) ?? false) || a.localeCompare(b))
    .map(([id, addr]) => ({ id, addr, base: baseFor(addr) }));
  const last: Candidate[] = failed.id && addrs.has(failed.id) ? [{ id: failed.id, addr: addrs.get(failed.id)!, base: baseFor(addrs.get(failed.id)!) }] : [failed];
  return [...others, ...last];
}

async function reconnect(failed: Candidate, myGen: number): Promise<void> {
  for (let round = 0; myGen === gen; round++) {
    for (const c of candidates(failed)) {
      if (myGen !== gen) return;
      setStore('conn', 'detail', `trying ${c.id ?? 'the page origin'}${c.addr ? ` at ${c.addr}` : ''}`);
      let st: LocalStatus;
      try {
        // A cheap probe first (open to all): it also refreshes the member list from a live manager.
        st = await apiAt<LocalStatus>(c.base, '/v1/status', { timeoutMs: 1500 });
      } catch {
        continue;
      }
      if (myGen !== gen) return;
      if (st.members && Object.keys(st.members).length > 0) setStore('members', { ...st.members });
      try {
        await openStream({ ...c, id: st.id, addr: c.addr ?? st.addr }, lastSeq, myGen);
        noteConnection(`stream resumed on ${st.id} from seq ${lastSeq}`);
        return;
      } catch {
        // Up, but the stream was refused: for want of a valid token (the login box takes over)?
        if (myGen !== gen || (await authRefused(c)) || myGen !== gen) return;
      }
    }
    await sleep(Math.min(5000, 500 * 2 ** round));
  }
}

// ------------------------------------------------------------------------------------------
// Polls

async function pollCluster(): Promise<void> {
  if (store.conn.status !== 'live') return;
  const myGen = gen;
  try {
    const c = await api<ClusterInfo>('/v1/cluster', { timeoutMs: 4000 });
    if (myGen !== gen) return;
    pollFailures = 0;
    setStore('cluster', c);
    const members: Record<string, string> = {};
    for (const m of c.managers) members[m.id] = m.addr;
    setStore('members', members);
    const row = c.managers.find((m) => m.id === c.leader);
    if (c.leader && row && row.role === 'leader' && row.term !== null) observeLeader(c.leader, row.term, 'observed', null);
  } catch (e) {
    if (myGen !== gen) return;
    if (e instanceof ApiError && e.status === 0 && ++pollFailures >= 2 && store.conn.status === 'live') {
      pollFailures = 0;
      drop('the manager stopped answering');
    }
  }
}

async function pollNodes(): Promise<void> {
  if (store.conn.status !== 'live') return;
  const myGen = gen;
  try {
    const r = await api<{ nodes: NodeInfo[] }>('/v1/nodes', { timeoutMs: 6000 });
    if (myGen === gen) refreshNodes(r.nodes);
  } catch {
    /* the cluster poll notices a dead manager */
  }
}

let nodesTimer: ReturnType<typeof setTimeout> | null = null;
function scheduleNodes(): void {
  if (nodesTimer) return;
  nodesTimer = setTimeout(() => {
    nodesTimer = null;
    void pollNodes();
  }, 400);
}

/**
 * Opens the stream on the manager the page follows (first: the one that served it), from the
 * last seq applied if the page has data, else from a fresh snapshot.
 */
function connect(): void {
  const myGen = ++gen;
  const since = store.loaded ? lastSeq : null;
  setStore('conn', { status: 'connecting', detail: `connecting to ${current.id ?? 'the manager that served this page'}` });
  void (async () => {
    for (let round = 0; myGen === gen; round++) {
      try {
        await openStream(current, since, myGen);
        return;
      } catch {
        if (myGen !== gen || (await authRefused(current)) || myGen !== gen) return;
        if (Object.keys(store.members).length > 0) {
          drop('could not open the event stream');
          return;
        }
        await sleep(Math.min(5000, 500 * 2 ** round));
      }
    }
  })();
}

let started = false;
export function start(): void {
  if (started) return;
  started = true;
  connect();
  leaderHooks.add(() => void pollCluster());
  setInterval(() => void pollCluster(), 2000);
  setInterval(() => void pollNodes(), 3000);
}
