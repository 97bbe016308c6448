// `flotilla exec` on a manager: the WebSocket /v1/exec (protocol/exec.ts), proxied to the
// worker that runs the task.
//
// Why through the manager (and not the CLI straight to the worker with a short-lived token):
// the worker's API already trusts exactly one kind of caller — a manager of its cluster (its
// certificate under TLS, and the node credential the cluster secret derives). Keeping it that
// way means a worker can only ever be made to run a command by the cluster's authority, no
// new credential has to be minted, checked, expired or revoked on workers (which do not know
// the API tokens), and workers need not be reachable from where users sit. The manager checks
// the user's API token (writes: the `admin` role; a viewer token gets 403), binds the session
// to it (revoking the token closes the session), and audits it in its log. The cost is one
// extra hop for the bytes, which interactive use does not notice.
//
// Every refusal before the command runs is an HTTP answer to the upgrade with a FlotillaError
// body: bad request (400), no or invalid token (401), viewer token or foreign origin (403),
// unknown task (404), task not running or not placed (409), worker unreachable (503); the
// worker's own refusals (unknown container, …) are passed on as it gave them. Then every
// frame either way is checked (protocol/exec.ts) before it is passed on: a bad frame from the
// caller closes the session with EXEC_CLOSE_BAD_FRAME and the reason; the worker going away
// closes it with EXEC_CLOSE_LOST. When one side reads slower than the other sends, the
// sender is paused (no unbounded buffering here).

import type http from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer } from 'ws';
import { FlotillaError, toFlotillaError, type ErrorInfo } from '../protocol/errors.js';
import {
  EXEC_CLOSE_BAD_FRAME,
  EXEC_CLOSE_LOST,
  EXEC_CLOSE_UNAUTHORIZED,
  EXEC_MAX_MESSAGE,
  EXEC_PATH,
  closeReason,
  decodeClientFrame,
  decodeServerFrame,
  execQuery,
  parseExecQuery,
  upgradeRefusal,
  type ExecRequest,
} from '../protocol/exec.js';
import { expectWorker } from '../tls/pki.js';
import type { Link } from '../tls/link.js';
import type { Logger } from '../log.js';
import { allowedOrigin } from './cors.js';
import { authenticateFresh, credentialOf, watchStream } from './auth.js';
import { findTask } from './api.js';
import type { Membership, ReadBarrier, RouteTable, StateView } from './ports.js';

/** Bytes queued toward one side past which the other side is paused. */
const HIGH_WATER = 1024 * 1024;
/** Longest a worker may take to accept the session (it starts the command first). */
const WORKER_HANDSHAKE_MS = 10_000;

export interface ExecProxyDeps {
  routes: RouteTable;
  state: StateView;
  reads: ReadBarrier;
  members: Pick<Membership, 'addr' | 'members'>;
  /** To workers (TLS with this manager's certificate when the cluster has it). */
  link: Link;
  /** The credential a node's API accepts from managers (auth.ts nodeCredential). */
  nodeAuth: (nodeId: string) => string;
  log: Logger;
}

/** Registers the /v1/exec upgrade. */
export function registerExecProxy(d: ExecProxyDeps): void {
  const tls = d.link.tls !== undefined;
  const scope = { state: d.state, tls };
  const auth = { state: d.state, linearizable: (ms?: number) => d.reads.linearizable(ms) };
  const wss = new WebSocketServer({ noServer: true, maxPayload: EXEC_MAX_MESSAGE, perMessageDeflate: false });

  const refuse = (socket: Duplex, e: FlotillaError): void => {
    if (!socket.destroyed) socket.end(upgradeRefusal(e));
  };

  const open = async (req: http.IncomingMessage, socket: Duplex, head: Buffer): Promise<void> => {
    socket.on('error', () => undefined);
    // Browsers send an Origin: only the cluster's own pages (which do not exec) pass.
    const origin = req.headers.origin;
    if (typeof origin === 'string' && !allowedOrigin(d.members, origin)) return refuse(socket, new FlotillaError('forbidden', `Cannot exec as origin ${origin.slice(0, 100)} is not one of this cluster's managers`));
    const r: ExecRequest = parseExecQuery(new URL(req.url ?? '/', 'http://x').searchParams);
    const err = await authenticateFresh(auth, req, { tls, write: true, what: `exec in task '${r.task}'` });
    if (err) return refuse(socket, err);
    // A task created a moment ago through another manager: catch up first (no leader: go on
    // with what this manager knows — exec needs no quorum).
    await d.reads.linearizable(2000).catch(() => undefined);
    const t = findTask(d.state, r.task);
    if (t.state !== 'running' || !t.node) throw new FlotillaError('conflict', `Cannot exec in task '${t.id}' as it is not running (${t.state})`);
    const nodeId = t.node;
    const node = d.state.getNode(nodeId);
    if (!node?.addr) throw new FlotillaError('unavailable', `Cannot exec in task '${t.id}' as its node ${nodeId} has no address`);
    const cred = credentialOf(d.state, req, { tls, what: 'exec' });
    d.log.info('exec: session requested', {
      taskId: t.id,
      node: nodeId,
      container: r.container ?? null,
      program: r.command[0],
      args: r.command.length - 1,
      tty: r.tty,
      by: cred instanceof FlotillaError ? null : cred.kind === 'token' ? cred.id : cred.kind,
    });

    const up = new WebSocket(d.link.url(node.addr, `${EXEC_PATH}?${execQuery({ ...r, task: t.id })}`, true), {
      headers: { authorization: `Bearer ${d.nodeAuth(nodeId)}` },
      ...d.link.tlsOptions(expectWorker(nodeId)),
      maxPayload: EXEC_MAX_MESSAGE,
      perMessageDeflate: false,
      handshakeTimeout: WORKER_HANDSHAKE_MS,
    });
    const lost = (why: string): FlotillaError => new FlotillaError('unavailable', `Cannot exec in task '${t.id}' as worker ${nodeId} (${node.addr}) ${why}`);
    await new Promise<void>((resolve) => {
      let settled = false;
      const settle = (): void => {
        settled = true;
        socket.off('close', gone);
        resolve();
      };
      // The caller gave up while the worker was still starting the command.
      const gone = (): void => {
        if (settled) return;
        up.terminate();
        settle();
      };
      socket.once('close', gone);
      up.once('unexpected-response', (_req, res) => {
        // The worker's refusal: passed on as it gave it.
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size <= 64 * 1024) chunks.push(c);
        });
        res.on('end', () => {
          let e: FlotillaError;
          try {
            const info = (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { error?: ErrorInfo }).error;
            e = info ? FlotillaError.fromInfo(info, res.statusCode) : lost(`answered HTTP ${res.statusCode}`);
          } catch {
            e = lost(`answered HTTP ${res.statusCode}`);
          }
          if (!settled) refuse(socket, e);
          up.terminate();
          settle();
        });
        res.on('error', () => {
          if (!settled) refuse(socket, lost('broke off its answer'));
          settle();
        });
      });
      up.once('error', (e) => {
        if (settled) return;
        refuse(socket, lost(`is unreachable: ${e.message}`));
        settle();
      });
      up.once('open', () => {
        if (settled) {
          up.terminate();
          return;
        }
        settle();
        wss.handleUpgrade(req, socket, head, (client) => bridge(client, up, req, nodeId));
      });
    });
  };

  const bridge = (client: WebSocket, up: WebSocket, req: http.IncomingMessage, nodeId: string): void => {
    let closed = false;
    const closeBoth = (code: number, reason: string): void => {
      if (closed) return;
      closed = true;
      unwatch();
      clearInterval(ping);
      if (client.readyState === WebSocket.OPEN) client.close(code, closeReason(reason));
      if (up.readyState === WebSocket.OPEN || up.readyState === WebSocket.CONNECTING) up.close(1000, 'the caller left');
      else up.terminate();
    };
    // Closed when the token the session was opened with is revoked.
    const unwatch = watchStream(scope, req, (reason) => closeBoth(EXEC_CLOSE_UNAUTHORIZED, `unauthorized: ${reason}`));
    const ping = setInterval(() => client.readyState === WebSocket.OPEN && client.ping(), 15_000);

    /** Sends to `to`; when too much waits for it, pauses `from` until it is written out. */
    const forward = (from: WebSocket, to: WebSocket, data: Buffer, isBinary: boolean): void => {
      if (to.readyState !== WebSocket.OPEN) return;
      if (to.bufferedAmount + data.length > HIGH_WATER) {
        from.pause();
        to.send(data, { binary: isBinary }, () => from.resume());
      } else to.send(data, { binary: isBinary });
    };
    client.on('message', (data: Buffer, isBinary: boolean) => {
      try {
        decodeClientFrame(data, isBinary);
      } catch (e) {
        return closeBoth(EXEC_CLOSE_BAD_FRAME, toFlotillaError(e).message);
      }
      forward(client, up, data, isBinary);
    });
    up.on('message', (data: Buffer, isBinary: boolean) => {
      try {
        decodeServerFrame(data, isBinary);
      } catch (e) {
        return closeBoth(EXEC_CLOSE_LOST, `worker ${nodeId} sent a ${toFlotillaError(e).message}`);
      }
      forward(up, client, data, isBinary);
    });
    up.on('close', (code: number, reason: Buffer) => {
      // 1000 after the exit frame, or the worker's own code and reason; else it is gone.
      const why = reason.toString('utf8');
      if (code === 1000 || (code >= 4000 && code <= 4999)) closeBoth(code, why || 'closed by the worker');
      else closeBoth(EXEC_CLOSE_LOST, `lost worker ${nodeId}${why ? `: ${why}` : ''} (code ${code})`);
    });
    client.on('close', () => closeBoth(1000, 'the caller left'));
    up.on('error', () => undefined);
    client.on('error', () => undefined);
  };

  d.routes.upgrades.set(EXEC_PATH, (req, socket, head) => {
    open(req, socket, head).catch((e: unknown) => refuse(socket, toFlotillaError(e)));
  });
}
