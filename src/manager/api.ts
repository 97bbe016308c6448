// The workload API on every manager: tasks, nodes, the event stream and task logs.
// Writes go to the leader (forwarded by Manager.onLeader); reads are linearizable unless
// ?stale=true.
import type { TaskList, TaskView } from '../protocol/api.js';
import { expectWorker } from '../tls/pki.js';
import http from 'node:http';
import type { Duplex } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { WebSocketServer, type WebSocket } from 'ws';
import { FlotillaError } from '../protocol/errors.js';
import { Reply } from './http.js';
import { applyByName } from './task-apply.js';
import { page, parsePage } from './paging.js';
import { parseNodeAvailability } from '../protocol/spec.js';
import { SpecMemo } from '../protocol/spec-memo.js';
import { missingSecretsError } from '../protocol/secrets.js';
import { TASK_STATES, type ClusterEvent, type Task, type TaskState } from './state.js';
import { splitAddr } from '../protocol/address.js';
import { allowedOrigin } from './cors.js';
import { watchStream } from './auth.js';
import { logSource } from './logs-options.js';
import type { Link } from '../tls/link.js';
import type { CommandProposer, LeaderForward, Membership, ReadBarrier, RouteTable, StateView } from './ports.js';

/** WebSocket close code of a stream whose credential was revoked (application range 4000-4999; 4401 as HTTP 401). */
export const WS_CLOSE_UNAUTHORIZED = 4401;

export interface ApiOptions {
  /** Allow task specs with host mounts or privileged containers. */
  allowPrivileged?: boolean;
  /** Join token, used to fetch logs from workers. */
  workerToken: string;
  /** The credential a node accepts on its log API (auth.ts nodeCredential); else the join token. */
  nodeAuth?: (nodeId: string) => string;
}

/** Why pending tasks are not placed, as the leader's placement controller last found. */
export interface UnplacedReasons {
  unplacedReason(taskId: string): string | undefined;
}

/** How long ago the leader last heard from each node (the dispatcher; null: not leading or never). */
export interface HeartbeatAges {
  heartbeatAge(nodeId: string): number | null;
}

export function taskView(unplaced: UnplacedReasons | null, t: Task): TaskView {
  const pendingReason = t.state === 'pending' ? (unplaced?.unplacedReason(t.id) ?? (t.reason || undefined)) : undefined;
  return { ...t, pendingReason } satisfies TaskView;
}

export interface ApiDeps {
  routes: RouteTable;
  state: StateView;
  reads: ReadBarrier;
  writes: LeaderForward;
  proposer: CommandProposer;
  members: Pick<Membership, 'id' | 'addr' | 'members'>;
  /** The applied index reads are answered at. */
  appliedIndex: () => number;
  /** Requests to workers (their log API), over TLS when the cluster has it. */
  link: Link;
  unplaced: UnplacedReasons | null;
  heartbeats: HeartbeatAges | null;
}

export function registerApi(d: ApiDeps, opts: ApiOptions): void {
  const r = d.routes.router;
  const orch = d.unplaced;
  const m = { state: d.state, tls: d.link.tls !== undefined };
  // Specs validated once per template (name aside): a batch of 1,000 replicas is one parse.
  const specs = new SpecMemo(256);

  r.on('POST', '/v1/tasks', async (ctx) => {
    const body = await ctx.json();
    const list: unknown[] = Array.isArray(body) ? body : [body];
    // ?apply=true: keyed by name, idempotent (task-apply.ts).
    const byName = ctx.query.get('apply') === 'true';
    if (list.length === 0 || list.length > 1000) throw new FlotillaError('bad_request', 'Cannot create tasks as the list must hold 1–1000 specs');
    // Validate everything before writing anything.
    const parsed = list.map((s, i) =>
      specs.parse(s, { allowHostMounts: opts.allowPrivileged, action: list.length > 1 ? `create task [${i}]` : 'create task' }),
    );
    for (const p of parsed) {
      if (p.privileged && !opts.allowPrivileged) {
        throw new FlotillaError('bad_request', "Cannot create task as 'privileged' containers are not allowed in this cluster (start managers with --allow-privileged)", {
          details: [{ path: 'privileged', message: 'not allowed in this cluster' }],
        });
      }
    }
    return d.writes.onLeader(ctx, async () => {
      // Every named secret must exist (the state checks again on apply): nothing is created otherwise.
      parsed.forEach((p, i) => {
        const missing = d.state.secretsTable.missing(p.secrets ?? []);
        if (missing.length > 0) throw missingSecretsError(missing, parsed.length > 1 ? `create task [${i}]` : 'create task');
      });
      const at = Date.now();
      const ids = parsed.map((p) => `${p.name}-${randomBytes(4).toString('hex')}`);
      if (byName) {
        const r = await applyByName(d.state, d.proposer, parsed, ids, at);
        const tasks = r.tasks.map((t) => taskView(orch, t));
        const created = r.results.includes('created');
        return new Reply(created ? 201 : 200, Array.isArray(body) ? { tasks, results: r.results } : { ...tasks[0]!, result: r.results[0] });
      }
      const cmds = parsed.map((spec, i) => ({ type: 'task.create' as const, id: ids[i]!, spec, at }));
      await d.proposer.propose(cmds.length === 1 ? cmds[0]! : { type: 'batch', commands: cmds });
      const tasks = ids.map((id) => m.state.getTask(id)).filter((t): t is Task => t !== undefined).map((t) => taskView(orch, t));
      return new Reply(201, Array.isArray(body) ? { tasks } : tasks[0]);
    });
  });

  r.on('GET', '/v1/tasks', async (ctx) => {
    await d.reads.readable(ctx);
    const state = ctx.query.get('state');
    const node = ctx.query.get('node') ?? undefined;
    let states: TaskState[] | undefined;
    if (state) {
      states = state.split(',') as TaskState[];
      for (const s of states) {
        if (!TASK_STATES.includes(s)) throw new FlotillaError('bad_request', `Cannot list tasks as 'state' must be one of ${TASK_STATES.join(', ')}; got '${s}'`);
      }
    }
    const all = ctx.query.get('all') === 'true';
    let tasks = m.state.listTasks({ state: states, node });
    if (!all && !states) tasks = tasks.filter((t) => t.desired === 'running' || !['stopped'].includes(t.state));
    // Paged when asked (`limit` or `continue`, tasks in id order); the whole list otherwise.
    if (ctx.query.has('limit') || ctx.query.has('continue')) {
      const p = page(tasks, parsePage(ctx.query, 'tasks'), (t) => t.id);
      return { tasks: p.items.map((t) => taskView(orch, t)), index: d.appliedIndex(), ...(p.continue ? { continue: p.continue } : {}) } satisfies TaskList;
    }
    return { tasks: tasks.map((t) => taskView(orch, t)), index: d.appliedIndex() } satisfies TaskList;
  });

  r.on('GET', '/v1/tasks/:id', async (ctx) => {
    await d.reads.readable(ctx);
    const t = findTask(d.state, ctx.params.id!);
    return taskView(orch, t);
  });

  r.on('DELETE', '/v1/tasks/:id', async (ctx) => {
    const id = ctx.params.id!;
    return d.writes.onLeader(ctx, async () => {
      const t = findTask(d.state, id);
      await d.proposer.propose({ type: 'task.stop', id: t.id, at: Date.now(), reason: 'stopped by user' });
      return taskView(orch, m.state.getTask(t.id)!);
    });
  });

  r.on('GET', '/v1/nodes', async (ctx) => {
    const view = () => ({
      nodes: m.state.listNodes().map((n) => ({ ...n, usage: m.state.nodeUsage(n.id), heartbeatAgeMs: d.heartbeats?.heartbeatAge(n.id) ?? null })),
      index: d.appliedIndex(),
    });
    // Heartbeats live in the leader's memory (they are not replicated): ask the leader.
    if (ctx.query.get('stale') === 'true') return view();
    return d.writes.onLeader(ctx, async () => view());
  });

  r.on('PATCH', '/v1/nodes/:id', async (ctx) => {
    const body = (await ctx.json()) as { availability?: unknown };
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new FlotillaError('bad_request', 'Cannot update the node as the body must be a JSON object');
    const extra = Object.keys(body).filter((k) => k !== 'availability');
    if (extra.length > 0) throw new FlotillaError('bad_request', `Cannot update the node as '${extra[0]}' is not a known field (only 'availability')`);
    const availability = parseNodeAvailability(body.availability);
    const id = ctx.params.id!;
    return d.writes.onLeader(ctx, async () => {
      if (!m.state.getNode(id)) throw new FlotillaError('not_found', `node '${id}' not found`);
      await d.proposer.propose({ type: 'node.setAvailability', id, availability, at: Date.now() });
      return m.state.getNode(id);
    });
  });

  // Task logs: any manager proxies to the worker that runs (or ran) the task.
  r.on('GET', '/v1/tasks/:id/logs', async (ctx) => {
    const t = findTask(d.state, ctx.params.id!);
    const qs = new URLSearchParams();
    for (const k of ['follow', 'container', 'tail', 'timestamps']) {
      const v = ctx.query.get(k);
      if (v !== null) qs.set(k, v);
    }
    // --since and --previous (logs-options.ts): the worker gets ms since the epoch and the attempt.
    const where = logSource(t, ctx.query, qs);
    if (!where) throw new FlotillaError('conflict', `task ${t.id} has not been placed on a node yet (${t.state})`);
    const node = m.state.getNode(where);
    if (!node?.addr) throw new FlotillaError('unavailable', `node ${where} has no log address`);
    const [host, port] = splitAddr(node.addr);
    await new Promise<void>((resolve, reject) => {
      const up = d.link.requestOnce(
        { host, port, path: `/v1/tasks/${encodeURIComponent(t.id)}/logs?${qs}`, headers: { authorization: `Bearer ${opts.nodeAuth?.(node.id) ?? opts.workerToken}` }, timeout: 5000 },
        expectWorker(node.id),
        (res) => {
          up.setTimeout(0);
          ctx.res.writeHead(res.statusCode ?? 502, { 'content-type': String(res.headers['content-type'] ?? 'text/plain; charset=utf-8') });
          res.pipe(ctx.res, { end: false });
          // A followed log ends when the token it was opened with is revoked: the last line says why.
          const unwatch = watchStream(m, ctx.req, (reason) => {
            res.unpipe(ctx.res);
            up.destroy();
            ctx.res.end(`\n[flotilla: log stream closed: ${reason}]\n`);
            resolve();
          });
          res.on('end', () => {
            unwatch();
            ctx.res.end();
            resolve();
          });
          res.on('error', (e) => {
            unwatch();
            reject(e);
          });
          ctx.res.on('close', () => {
            unwatch();
            up.destroy();
            resolve();
          });
        },
      );
      up.end();
      up.on('timeout', () => up.destroy(new FlotillaError('unavailable', `worker ${where} (${node.addr}) did not answer`)));
      up.on('error', (e) => reject(e instanceof FlotillaError ? e : new FlotillaError('unavailable', `worker ${where} (${node.addr}) is unreachable: ${e.message}`)));
    });
  });

  // ---- events: GET /v1/events?since=N as SSE, or WebSocket upgrade on the same path.
  r.on('GET', '/v1/events', async (ctx) => {
    const since = parseSince(ctx.query.get('since'));
    const res = ctx.res;
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    // (Not after the end: a stream closed on revocation may still be handed that very event.)
    const stop = streamEvents(d.state, d.members.id, since, (frame) => void (res.writableEnded || res.write(`id: ${frame.seq ?? ''}\ndata: ${JSON.stringify(frame)}\n\n`)));
    const ka = setInterval(() => void (res.writableEnded || res.write(': keep-alive\n\n')), 15_000);
    await new Promise<void>((resolve) => {
      // Ends when the token the stream was opened with is revoked: a last `closed` event says why.
      const unwatch = watchStream(m, ctx.req, (reason) => {
        res.end(`event: closed\ndata: ${JSON.stringify(new FlotillaError('unauthorized', `event stream closed: ${reason}`).toJSON())}\n\n`);
        resolve();
      });
      ctx.req.on('close', () => {
        unwatch();
        resolve();
      });
    });
    clearInterval(ka);
    stop();
  });

  const wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024 });
  d.routes.upgrades.set('/v1/events', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    // Browsers send an Origin: only the cluster's own pages may read the stream from a browser.
    const origin = req.headers.origin;
    if (typeof origin === 'string' && !allowedOrigin(d.members, origin)) {
      socket.end('HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\n\r\norigin not allowed\n');
      return;
    }
    let since: number;
    try {
      since = parseSince(new URL(req.url ?? '/', 'http://x').searchParams.get('since'));
    } catch (e) {
      socket.end(`HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\r\n${JSON.stringify((e as FlotillaError).toJSON())}`);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
      const stop = streamEvents(d.state, d.members.id, since, (frame) => {
        if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(frame));
      });
      const ping = setInterval(() => ws.ping(), 15_000);
      // Closed (code 4401, the reason as text) when the token it was opened with is revoked.
      const unwatch = watchStream(
        m,
        req,
        (reason) => ws.close(WS_CLOSE_UNAUTHORIZED, `unauthorized: ${reason}`.slice(0, 120)),
        true,
      );
      ws.on('close', () => {
        clearInterval(ping);
        unwatch();
        stop();
      });
      ws.on('error', () => {});
    });
  });
}

function parseSince(v: string | null): number {
  if (v === null || v === '') return 0;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new FlotillaError('bad_request', `Cannot stream events as 'since' must be a non-negative integer, got '${v}'`);
  return n;
}

type Frame =
  | (ClusterEvent & { kind?: undefined })
  | { kind: 'reset'; lastSeq: number; oldestSeq: number; seq?: undefined }
  | { kind: 'hello'; manager: string; lastSeq: number; seq?: undefined };

/** Replays events after `since`, then follows live. Returns an unsubscribe function. */
function streamEvents(state: StateView, manager: string, since: number, send: (f: Frame | ClusterEvent) => void): () => void {
  const page = state.eventsSince(since);
  send({ kind: 'hello', manager, lastSeq: page.lastSeq });
  let last = since;
  if (page.resetNeeded) {
    send({ kind: 'reset', lastSeq: page.lastSeq, oldestSeq: page.oldestSeq });
    last = page.lastSeq;
  } else {
    for (const e of page.events) {
      send(e);
      last = e.seq;
    }
  }
  return state.onEvent((e) => {
    if (e.seq <= last) return;
    last = e.seq;
    send(e);
  });
}

export function findTask(state: StateView, idOrName: string): Task {
  const t = state.getTask(idOrName);
  if (t) return t;
  const byName = state.listTasks({ name: idOrName });
  if (byName.length === 1) return byName[0]!;
  // A name reused over time: the one task that is still wanted wins.
  const live = byName.filter((x) => x.desired === 'running');
  if (live.length === 1) return live[0]!;
  if (byName.length > 1) throw new FlotillaError('conflict', `'${idOrName}' names ${byName.length} tasks; use a task id (${byName.map((x) => x.id).slice(0, 3).join(', ')}…)`);
  throw new FlotillaError('not_found', `task '${idOrName}' not found`);
}
