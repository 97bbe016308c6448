// The worker's end of `flotilla exec`: a WebSocket upgrade on /v1/exec (protocol/exec.ts) that
// runs a command in a running task through its driver (`Driver.exec`) and carries its input,
// output, terminal size and exit status. Only managers reach it: http-server.ts checks the
// caller (a manager's certificate with TLS, and the node credential or join token) before it
// hands the upgrade here, exactly as for the log API — a worker runs nothing for anyone
// without the cluster's authority; the manager has checked the user's token (operator role).
//
// Every refusal before the command runs (bad request, unknown task or container, task not
// running, no tty to be had) is an HTTP answer to the upgrade, which the manager passes on.
// Once running: output frames as it comes (bounded frames; when the manager reads slower than
// the command writes, the command's output is paused), then one `exit` frame once the
// command ended and all its output was sent, then a normal close. A bad frame from the
// manager closes the session (EXEC_CLOSE_BAD_FRAME, the reason says what) and ends the
// command; so does the connection going away, and the worker closing.

import type http from 'node:http';
import type { Duplex, Readable } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { FlotillaError, toFlotillaError } from '../protocol/errors.js';
import {
  CHANNEL_STDERR,
  CHANNEL_STDOUT,
  EXEC_CLOSE_BAD_FRAME,
  EXEC_CLOSE_LOST,
  EXEC_MAX_MESSAGE,
  closeReason,
  decodeClientFrame,
  encodeControl,
  encodeData,
  parseExecQuery,
  upgradeRefusal,
  type ExecRequest,
} from '../protocol/exec.js';
import type { Logger } from '../log.js';
import { isFinished, type Driver, type ExecProcess } from './driver.js';

/** Output waiting to be sent past this pauses the command's output. */
const HIGH_WATER = 1024 * 1024;

export interface WorkerExecHost {
  readonly id: string;
  taskDriver(taskId: string): Driver | null | undefined;
}

function ended(s: Readable | null): Promise<void> {
  if (s === null || s.readableEnded || s.destroyed) return Promise.resolve();
  return new Promise((res) => {
    s.once('end', res);
    s.once('close', res);
    s.once('error', res);
  });
}

export class WorkerExec {
  private readonly wss = new WebSocketServer({ noServer: true, maxPayload: EXEC_MAX_MESSAGE, perMessageDeflate: false });
  private readonly sessions = new Map<WebSocket, ExecProcess>();

  constructor(
    private readonly host: WorkerExecHost,
    private readonly log: Logger,
  ) {}

  /** An authenticated upgrade on EXEC_PATH (http-server.ts checked the caller). */
  async handle(req: http.IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    let r: ExecRequest;
    let proc: ExecProcess;
    let driver: Driver | null | undefined;
    try {
      r = parseExecQuery(new URL(req.url ?? '/', 'http://worker').searchParams);
      driver = this.host.taskDriver(r.task);
      if (driver === null || driver === undefined) throw new FlotillaError('not_found', `Cannot exec in task '${r.task}' as it is not on worker ${this.host.id}`);
      if (driver.exec === undefined) throw new FlotillaError('bad_request', `Cannot exec in task '${r.task}' as its driver (${driver.name}) cannot run commands in a task`);
      const opts = { command: r.command, stdin: r.stdin, tty: r.tty, ...(r.container !== undefined ? { container: r.container } : {}), ...(r.cols !== undefined ? { cols: r.cols, rows: r.rows } : {}) };
      proc = await driver.exec(r.task, opts);
    } catch (e) {
      if (!socket.destroyed) socket.end(upgradeRefusal(toFlotillaError(e)));
      return;
    }
    if (socket.destroyed) {
      proc.kill();
      return;
    }
    this.log.info('exec: session started', { taskId: r.task, container: r.container ?? null, program: r.command[0], args: r.command.length - 1, tty: r.tty });
    const taskDriver = driver!;
    this.wss.handleUpgrade(req, socket, head, (ws) => this.run(ws, proc, r, taskDriver));
  }

  private run(ws: WebSocket, proc: ExecProcess, r: ExecRequest, driver: Driver): void {
    this.sessions.set(ws, proc);
    // The task ended (stopped, failed): what was exec'd in it ends too, as in a container.
    const unwatch = driver.watch((st) => {
      if (st.taskId === r.task && isFinished(st.state)) proc.kill();
    });
    let over = false;
    const pump = (s: Readable | null, channel: typeof CHANNEL_STDOUT | typeof CHANNEL_STDERR): void => {
      if (s === null) return;
      s.on('error', () => undefined);
      s.on('data', (chunk: Buffer) => {
        if (ws.readyState !== ws.OPEN) return;
        const frames = encodeData(channel, chunk);
        frames.forEach((f, i) => {
          const last = i === frames.length - 1;
          if (last && ws.bufferedAmount + f.length > HIGH_WATER) {
            // Resumed once what is queued has been written out.
            s.pause();
            ws.send(f, () => s.resume());
          } else ws.send(f);
        });
      });
    };
    pump(proc.stdout, CHANNEL_STDOUT);
    pump(proc.stderr, CHANNEL_STDERR);
    void Promise.all([proc.exited, ended(proc.stdout), ended(proc.stderr)]).then(([code]) => {
      over = true;
      if (ws.readyState !== ws.OPEN) return;
      ws.send(encodeControl({ t: 'exit', code: Math.max(0, Math.min(255, code)) }));
      ws.close(1000, 'exited');
    });

    let stdinEnded = false;
    const refuse = (why: string): void => {
      ws.close(EXEC_CLOSE_BAD_FRAME, closeReason(why));
      proc.kill();
    };
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      let f;
      try {
        f = decodeClientFrame(data, isBinary);
      } catch (e) {
        return refuse(toFlotillaError(e).message);
      }
      if (f.t === 'resize') return proc.resize(f.cols, f.rows);
      if (!r.stdin || proc.stdin === null) return refuse(`bad exec frame: '${f.t}' but the session has no input (ask for it with -i)`);
      if (stdinEnded) return refuse(`bad exec frame: '${f.t}' after 'eof'`);
      if (f.t === 'eof') {
        stdinEnded = true;
        proc.stdin.end();
        return;
      }
      if (!proc.stdin.write(f.data)) {
        // The command reads slower than the caller types (or pipes): stop reading frames.
        ws.pause();
        proc.stdin.once('drain', () => ws.resume());
        proc.stdin.once('close', () => ws.resume());
      }
    });
    ws.on('error', () => undefined);
    ws.on('close', () => {
      unwatch();
      this.sessions.delete(ws);
      if (!over) proc.kill();
    });
  }

  /** The worker is closing: end every session (their commands too). */
  closeAll(): void {
    for (const [ws, proc] of this.sessions) {
      proc.kill();
      ws.close(EXEC_CLOSE_LOST, 'the worker is shutting down');
    }
    this.sessions.clear();
  }
}
