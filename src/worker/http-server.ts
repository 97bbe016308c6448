// The worker's HTTP API, served on `listen` (plain, or HTTPS with the cluster's TLS):
//   GET /healthz                          → 200 {"ok":true,…} (no auth)
//   GET /v1/tasks/:id/logs?follow=1&container=c0&stream=stdout&tail=N&format=text|ndjson
//       with `authorization: Bearer <join token>` (or the node credential the leader gave;
//       with TLS also a manager's certificate). Text format: one line per output line,
//       `<container> | <line>` — raw `<line>` when `container` is given. ndjson: one
//       {"container","stream","line"} object per line. `follow` streams until the task
//       finishes or the client goes away.
//       `since=<ms since the epoch>` leaves out older lines; `timestamps=1` starts each text
//       line with its time (RFC 3339, ms); with either, ndjson lines carry `at` (when the
//       driver knows it).
//       `attempt=N`: that attempt's output (the run here, or the copy kept of the previous one,
//       see previous-logs.ts); 404 when this worker no longer has it.
//   WebSocket /v1/exec?task=…&cmd=…          `flotilla exec`, from managers only (same checks as
//       the logs; see exec.ts and src/protocol/exec.ts).
// What it serves comes from the agent through `WorkerHttpHost`.

import { timingSafeEqual, createHash } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import type { TLSSocket } from 'node:tls';
import { identityOf, type NodeTls } from '../tls/pki.js';
import { FlotillaError, toFlotillaError } from '../protocol/errors.js';
import type { Logger } from '../log.js';
import type { Driver, LogLine, LogOptions } from './driver.js';
import { WorkerExec } from './exec.js';
import { EXEC_PATH, upgradeRefusal } from '../protocol/exec.js';
import type { Duplex } from 'node:stream';

/** What the HTTP server asks of the agent. */
export interface WorkerHttpHost {
  readonly id: string;
  /** For /healthz. */
  health(): { connected: boolean; manager: string | null; tasks: number };
  /** The driver holding a task (reported or retired); null/undefined: no logs here. */
  taskDriver(taskId: string): Driver | null | undefined;
  /** The node credential from the leader, if any (accepted like the join token). */
  credential(): string | null;
  /** One attempt's output, or undefined when this worker does not have it (any more). */
  attemptLogs?(taskId: string, attempt: number, opts: LogOptions): AsyncIterable<LogLine> | undefined;
}

export interface WorkerHttpOptions {
  /** host:port to listen on; port 0 picks one. Default 127.0.0.1:0. */
  listen?: string;
  /** host:port managers and clients use. Default: the bound address. */
  advertise?: string;
  tls?: NodeTls;
  token: string;
  log: Logger;
}

function errMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export class WorkerHttpServer {
  private readonly host: WorkerHttpHost;
  private readonly opts: WorkerHttpOptions;
  private readonly log: Logger;
  private readonly tokenDigest: Buffer;
  private server: http.Server | null = null;
  private readonly exec: WorkerExec;

  constructor(host: WorkerHttpHost, opts: WorkerHttpOptions) {
    this.host = host;
    this.opts = opts;
    this.log = opts.log;
    this.tokenDigest = createHash('sha256').update(opts.token).digest();
    this.exec = new WorkerExec(host, opts.log);
  }

  /** Listen; resolves with the address to advertise. */
  async listen(): Promise<string> {
    const listen = this.opts.listen ?? '127.0.0.1:0';
    const m = /^(.*):(\d{1,5})$/.exec(listen);
    if (m === null || Number(m[2]) > 65535) throw new FlotillaError('bad_request', `Cannot start worker as 'listen' must be host:port (got '${listen}')`);
    const host = m[1]!.replace(/^\[(.*)\]$/, '$1');
    const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
      this.handle(req, res).catch((e) => {
        this.log.error('http handler failed', { url: req.url, error: errMessage(e) });
        if (!res.headersSent) sendError(res, toFlotillaError(e));
        else res.destroy();
      });
    };
    const tls = this.opts.tls;
    // With TLS, log requests must come from a manager's certificate (checked per request).
    const server = tls
      ? (https.createServer({ key: tls.key, cert: tls.cert + tls.ca, ca: tls.ca, requestCert: true, rejectUnauthorized: false }, handler) as unknown as http.Server)
      : http.createServer(handler);
    this.server = server;
    server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => this.upgrade(req, socket, head));
    await new Promise<void>((res, rej) => {
      server.once('error', rej);
      server.listen(Number(m[2]), host, () => {
        server.off('error', rej);
        res();
      });
    });
    server.on('error', (e) => this.log.error('http server error', { error: errMessage(e) }));
    const a = server.address() as AddressInfo;
    let addr = this.opts.advertise ?? `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
    if (this.opts.advertise === undefined && (a.address === '0.0.0.0' || a.address === '::')) {
      addr = `${firstExternalAddress() ?? '127.0.0.1'}:${a.port}`;
    }
    return addr;
  }

  /** Stop listening and drop every open connection (log streams included). */
  async close(): Promise<void> {
    const server = this.server;
    if (server === null) return;
    this.exec.closeAll();
    await new Promise<void>((res) => {
      server.close(() => res());
      server.closeAllConnections();
    });
  }

  private authorized(req: http.IncomingMessage): boolean {
    const h = req.headers.authorization;
    if (typeof h !== 'string') return false;
    const m = /^Bearer\s+(.+)$/i.exec(h.trim());
    if (m === null) return false;
    const got = createHash('sha256').update(m[1]!).digest();
    if (timingSafeEqual(got, this.tokenDigest)) return true;
    // Managers present this node's credential (the join token may have been rotated since).
    const credential = this.host.credential();
    return credential !== null && timingSafeEqual(got, createHash('sha256').update(credential).digest());
  }

  /** WebSocket upgrades: only /v1/exec, only for managers (the same checks as the logs). */
  private upgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => undefined);
    const path = new URL(req.url ?? '/', 'http://worker').pathname;
    let refusal: FlotillaError | null = null;
    if (path !== EXEC_PATH) refusal = new FlotillaError('not_found', `Cannot upgrade ${path} as there is no such WebSocket on this worker`);
    else if (this.opts.tls && !this.fromManager(req)) refusal = new FlotillaError('forbidden', 'Cannot exec as the request does not come with a manager certificate of this cluster');
    else if (!this.authorized(req)) refusal = new FlotillaError('unauthorized', "Cannot exec as the request has no valid 'authorization: Bearer <node credential>' header");
    if (refusal !== null) {
      socket.end(upgradeRefusal(refusal));
      return;
    }
    this.exec.handle(req, socket, head).catch((e) => {
      this.log.error('exec upgrade failed', { error: errMessage(e) });
      socket.destroy();
    });
  }

  private fromManager(req: http.IncomingMessage): boolean {
    const sock = req.socket as TLSSocket;
    const who = sock.authorized ? identityOf(sock.getPeerCertificate()) : null;
    return who?.role === 'manager';
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://worker');
    if (url.pathname === '/healthz') {
      if (req.method !== 'GET' && req.method !== 'HEAD') return sendError(res, methodNotAllowed());
      const st = this.host.health();
      return sendJson(res, 200, { ok: true, id: this.host.id, connected: st.connected, manager: st.manager, tasks: st.tasks });
    }
    const m = /^\/v1\/tasks\/([^/]+)\/logs$/.exec(url.pathname);
    if (m === null) return sendError(res, new FlotillaError('not_found', `Cannot ${req.method} ${url.pathname} as there is no such route on this worker`));
    if (req.method !== 'GET') return sendError(res, methodNotAllowed());
    if (this.opts.tls) {
      const sock = req.socket as TLSSocket;
      const who = sock.authorized ? identityOf(sock.getPeerCertificate()) : null;
      if (!who || who.role !== 'manager') return sendError(res, new FlotillaError('forbidden', 'Cannot read task logs as the request does not come with a manager certificate of this cluster'));
    }
    if (!this.authorized(req)) {
      res.setHeader('www-authenticate', 'Bearer');
      return sendError(res, new FlotillaError('unauthorized', "Cannot read task logs as the request has no valid 'authorization: Bearer <join token>' header"));
    }
    let taskId: string;
    try {
      taskId = decodeURIComponent(m[1]!);
    } catch {
      return sendError(res, new FlotillaError('bad_request', 'Cannot read task logs as the task id is not valid percent-encoding'));
    }
    const q = url.searchParams;
    const bool = (name: string): boolean => {
      const v = q.get(name);
      if (v === null || v === '0' || v === 'false') return false;
      if (v === '' || v === '1' || v === 'true') return true;
      throw new FlotillaError('bad_request', `Cannot read task logs as '${name}' must be 1, 0, true or false (got '${v}')`);
    };
    let follow: boolean;
    let tail: number | undefined;
    let since: number | undefined;
    let attempt: number | undefined;
    let timestamps: boolean;
    try {
      follow = bool('follow');
      timestamps = bool('timestamps');
      since = wholeNumber('since', q.get('since'));
      attempt = wholeNumber('attempt', q.get('attempt'));
      const tailRaw = q.get('tail');
      if (tailRaw !== null) {
        if (!/^\d{1,9}$/.test(tailRaw)) throw new FlotillaError('bad_request', `Cannot read task logs as 'tail' must be a whole number >= 0 (got '${tailRaw}')`);
        tail = Number(tailRaw);
      }
    } catch (e) {
      return sendError(res, toFlotillaError(e));
    }
    const stream = q.get('stream');
    if (stream !== null && stream !== 'stdout' && stream !== 'stderr') {
      return sendError(res, new FlotillaError('bad_request', `Cannot read task logs as 'stream' must be 'stdout' or 'stderr' (got '${stream}')`));
    }
    const format = q.get('format') ?? 'text';
    if (format !== 'text' && format !== 'ndjson') {
      return sendError(res, new FlotillaError('bad_request', `Cannot read task logs as 'format' must be 'text' or 'ndjson' (got '${format}')`));
    }
    const container = q.get('container') ?? undefined;
    const driver = this.host.taskDriver(taskId);
    if (attempt === undefined && (driver === undefined || driver === null)) {
      return sendError(res, new FlotillaError('not_found', `Cannot read the logs of task '${taskId}' as it has none on worker ${this.host.id}`));
    }

    const ac = new AbortController();
    const onClose = (): void => ac.abort();
    const logOpts: LogOptions = { follow, container, tail, since, timestamps: timestamps || undefined, stream: stream ?? undefined, signal: ac.signal };
    const source = attempt === undefined ? driver!.logs(taskId, logOpts) : this.host.attemptLogs?.(taskId, attempt, logOpts);
    if (source === undefined) {
      return sendError(res, new FlotillaError('not_found', `Cannot read the logs of attempt ${attempt} of task '${taskId}' as worker ${this.host.id} no longer has them`));
    }
    res.on('close', onClose);
    const iter = sinceFiltered(source, since)[Symbol.asyncIterator]();
    const stamp = (l: LogLine): string => (timestamps ? `${l.at !== undefined ? new Date(l.at).toISOString() : '-'} ` : '');
    const fmt = (l: LogLine): string =>
      format === 'ndjson' ? JSON.stringify(l) + '\n' : container !== undefined ? `${stamp(l)}${l.line}\n` : `${stamp(l)}${l.container} | ${l.line}\n`;
    try {
      let first: IteratorResult<LogLine>;
      try {
        first = await iter.next(); // errors (unknown container…) become a proper status
      } catch (e) {
        return sendError(res, toFlotillaError(e));
      }
      res.writeHead(200, {
        'content-type': format === 'ndjson' ? 'application/x-ndjson; charset=utf-8' : 'text/plain; charset=utf-8',
        'cache-control': 'no-store',
        'x-content-type-options': 'nosniff',
      });
      res.flushHeaders();
      for (let r = first; !r.done; r = await iter.next()) {
        if (ac.signal.aborted) break;
        if (!res.write(fmt(r.value))) {
          await new Promise<void>((ok) => {
            const done = (): void => {
              res.off('drain', done);
              ac.signal.removeEventListener('abort', done);
              ok();
            };
            res.on('drain', done);
            ac.signal.addEventListener('abort', done, { once: true });
          });
        }
      }
      if (!ac.signal.aborted) res.end();
    } finally {
      res.off('close', onClose);
      await iter.return?.(undefined);
    }
  }
}

/** A query value that must be a whole number (undefined when absent). */
function wholeNumber(name: string, v: string | null): number | undefined {
  if (v === null) return undefined;
  if (!/^\d{1,15}$/.test(v)) throw new FlotillaError('bad_request', `Cannot read task logs as '${name}' must be a whole number (got '${v}')`);
  return Number(v);
}

/** Leaves out lines written before `since` (lines without a time are kept). */
async function* sinceFiltered(lines: AsyncIterable<LogLine>, since: number | undefined): AsyncGenerator<LogLine> {
  for await (const l of lines) if (since === undefined || l.at === undefined || l.at >= since) yield l;
}

function methodNotAllowed(): FlotillaError {
  return new FlotillaError('bad_request', 'Cannot serve this request as only GET is allowed here', { httpStatus: 405 });
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

function sendError(res: http.ServerResponse, e: FlotillaError): void {
  sendJson(res, e.httpStatus, e.toJSON());
}

function firstExternalAddress(): string | undefined {
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return undefined;
}
