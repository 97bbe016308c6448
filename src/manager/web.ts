// The web page: every manager serves the built single-page app (web/dist) at `/`, plus a few
// read routes the page needs that the workload API does not have (`/v1/ui/*`), and CORS for
// the page's own origins.
//
// Why CORS: the page is loaded from one manager, but when that manager dies it keeps running
// in the browser and talks to another manager directly (fetch + WebSocket to `http://<addr>`,
// the addresses the cluster publishes in /v1/status `members`). Those are other origins, so the
// API answers with `access-control-allow-origin` — but only for origins that are this
// cluster's managers (its member addresses, with loopback spellings treated alike): an
// arbitrary web site the operator visits gets no CORS grant, so it cannot read the API or send
// preflighted writes (PATCH, DELETE, JSON POST) to it.
import http from 'node:http';
import { createReadStream, existsSync, statSync } from 'node:fs';
import { dirname, extname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { taskView, type UnplacedReasons } from './api.js';
import type { Membership, ReadBarrier, RouteTable, StateView } from './ports.js';
import { registerCors } from './cors.js';
import { FlotillaError } from '../protocol/errors.js';
import { parseTaskSpec } from '../protocol/spec.js';
import { isTerminal, type ClusterEvent, type Task } from './state.js';

export interface WebOptions {
  /** Directory holding the built page (default: FLOTILLA_WEB_DIR, else <package>/web/dist). */
  dir?: string;
}

/** Terminal tasks the page snapshot carries at most (newest first); live ones are all sent. */
const SNAPSHOT_TERMINAL_LIMIT = 500;
/** Leader announcements the snapshot carries (newest last). */
const LEADER_HISTORY = 50;

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.map': 'application/json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.ico': 'image/x-icon',
  '.webp': 'image/webp',
  '.woff': 'font/woff',
  '.woff2': 'font/woff2',
  '.txt': 'text/plain; charset=utf-8',
  '.webmanifest': 'application/manifest+json',
};

/** Paths that belong to the API, the peer link or metrics: never served by the page. */
function reserved(path: string): boolean {
  return path === '/v1' || path.startsWith('/v1/') || path === '/raft' || path.startsWith('/raft/') || path === '/metrics' || path.startsWith('/metrics/');
}

export function defaultWebDir(): string {
  if (process.env.FLOTILLA_WEB_DIR) return resolve(process.env.FLOTILLA_WEB_DIR);
  // Compiled: <root>/dist/src/manager/web.js; from source: <root>/src/manager/web.ts.
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [join(here, '..', '..', '..', 'web', 'dist'), join(here, '..', '..', 'web', 'dist')];
  return candidates.find((c) => existsSync(join(c, 'index.html'))) ?? candidates[0]!;
}

export interface WebDeps {
  routes: RouteTable;
  members: Pick<Membership, 'id' | 'addr' | 'members'>;
  state: StateView;
  reads: ReadBarrier;
  /** Why pending tasks are not placed (the leader's placement controller). */
  unplaced: UnplacedReasons | null;
  /** This manager's /v1/status. */
  status: () => unknown;
  /** Serves the page for requests no route matched (Manager.setStatic). */
  setStatic: (h: (req: http.IncomingMessage, res: http.ServerResponse) => boolean) => void;
}

export function registerWeb(d: WebDeps, opts: WebOptions = {}): void {
  const dir = resolve(opts.dir ?? defaultWebDir());
  registerCors(d.routes, d.members);
  registerUiRoutes(d);
  d.setStatic((req, res) => serveStatic(dir, req, res));
}

// ---------------------------------------------------------------------------------------------
// /v1/ui/*: what the page needs in one consistent read

function registerUiRoutes(m: WebDeps): void {
  const r = m.routes.router;

  // Everything the page shows, read at one instant (after a ReadIndex barrier) together with
  // the event seq it corresponds to: the page follows /v1/events?since=<lastSeq> from here.
  r.on('GET', '/v1/ui/snapshot', async (ctx) => {
    await m.reads.readable(ctx);
    const st = m.state;
    const lastSeq = st.lastEventSeq;
    const index = st.appliedIndex;
    const all = st.listTasks();
    const live = all.filter((t) => !isTerminal(t.state) || t.desired === 'running');
    const done = all
      .filter((t) => isTerminal(t.state) && t.desired !== 'running')
      .sort((a, b) => b.updatedAt - a.updatedAt);
    const tasks: Task[] = [...live, ...done.slice(0, SNAPSHOT_TERMINAL_LIMIT)];
    const leader = st.leader;
    return {
      manager: m.members.id,
      lastSeq,
      index,
      leader: leader ? { id: leader.id, term: leader.term, at: leader.at } : null,
      leaderHistory: leaderHistory(m.state),
      status: m.status(),
      tasks: tasks.map((t) => taskView(m.unplaced, t)),
      truncated: done.length > SNAPSHOT_TERMINAL_LIMIT ? done.length - SNAPSHOT_TERMINAL_LIMIT : 0,
      nodes: st.listNodes().map((n) => ({ ...n, usage: st.nodeUsage(n.id) })),
    };
  });

  // Validates a spec exactly as POST /v1/tasks does, without creating anything; answers 200
  // with { ok, spec } or { ok: false, error } so a form can show per-field messages.
  r.on('POST', '/v1/ui/validate', async (ctx) => {
    const body = await ctx.json();
    try {
      const spec = parseTaskSpec(body, { allowHostMounts: false });
      return { ok: true, spec };
    } catch (e) {
      if (FlotillaError.is(e)) return { ok: false, error: e.toInfo() };
      throw e;
    }
  });
}

function leaderHistory(state: StateView): { seq: number; at: number | null; leader: string; term: number }[] {
  let page = state.eventsSince(0);
  if (page.resetNeeded) page = state.eventsSince(Math.max(0, page.oldestSeq - 1));
  if (page.resetNeeded) return [];
  const out: { seq: number; at: number | null; leader: string; term: number }[] = [];
  for (const e of page.events as ClusterEvent[]) {
    if (e.type === 'cluster.leader') out.push({ seq: e.seq, at: e.at, leader: e.leader, term: e.term });
  }
  return out.slice(-LEADER_HISTORY);
}

// ---------------------------------------------------------------------------------------------
// Static files

function serveStatic(dir: string, req: http.IncomingMessage, res: http.ServerResponse): boolean {
  if (req.method !== 'GET' && req.method !== 'HEAD') return false;
  let path: string;
  try {
    path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
  } catch {
    return false;
  }
  if (reserved(path) || path.includes('\0')) return false;
  const index = join(dir, 'index.html');
  if (!existsSync(index)) {
    if (extname(path) !== '' && path !== '/index.html') return false;
    sendNotBuilt(req, res, dir);
    return true;
  }
  const file = resolve(dir, '.' + path);
  if (file !== dir && !file.startsWith(dir + sep)) return false;
  if (path !== '/' && isFile(file)) {
    sendFile(req, res, file, path.startsWith('/assets/'));
    return true;
  }
  // Client routes (/tasks/abc, /nodes, /submit): the page itself. Missing files (a name with an
  // extension) stay 404 so a broken asset is visible as such.
  if (path === '/' || extname(path) === '') {
    sendFile(req, res, index, false);
    return true;
  }
  return false;
}

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

function sendFile(req: http.IncomingMessage, res: http.ServerResponse, file: string, immutable: boolean): void {
  const type = CONTENT_TYPES[extname(file).toLowerCase()] ?? 'application/octet-stream';
  const size = statSync(file).size;
  const headers: Record<string, string | number> = {
    'content-type': type,
    'content-length': size,
    'x-content-type-options': 'nosniff',
    'cache-control': immutable ? 'public, max-age=31536000, immutable' : 'no-cache',
  };
  if (type.startsWith('text/html')) {
    headers['x-frame-options'] = 'DENY';
    // The page talks to any of the cluster's managers (failover), hence the wide connect-src.
    headers['content-security-policy'] =
      "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self' http: https: ws: wss:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
    headers['referrer-policy'] = 'no-referrer';
  }
  res.writeHead(200, headers);
  if (req.method === 'HEAD') {
    res.end();
    return;
  }
  const s = createReadStream(file);
  s.on('error', () => res.destroy());
  s.pipe(res);
}

function sendNotBuilt(req: http.IncomingMessage, res: http.ServerResponse, dir: string): void {
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>flotilla — web page not built</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;color:#1f2933}code{background:#eef1f4;padding:.1em .3em;border-radius:3px}</style>
</head><body>
<h1>flotilla</h1>
<p>The API is up, but the web page has not been built, so there is nothing to show here yet.</p>
<p>Build it from the flotilla checkout with <code>npm run build</code> (it runs <code>vite build web</code>), then reload.
The page is looked for in <code>${escapeHtml(dir)}</code> (set <code>FLOTILLA_WEB_DIR</code> to use another directory).</p>
<p>Meanwhile: <a href="/v1/cluster">/v1/cluster</a>, <a href="/v1/tasks">/v1/tasks</a>, <a href="/v1/nodes">/v1/nodes</a>.</p>
</body></html>
`;
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(html), 'cache-control': 'no-cache' });
  res.end(req.method === 'HEAD' ? undefined : html);
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}
