// `flotilla exec TASK [-c CONTAINER] [-i] [-t] -- CMD…`: run a command in a running task — in
// its container (docker driver), or in its environment and working directory (process
// driver) — over the WebSocket /v1/exec of a manager, which proxies it to the task's worker
// (src/protocol/exec.ts, src/manager/exec-proxy.ts, src/worker/exec.ts). flotilla's exit
// status is the command's; 1 when the command could not be run (with the reason), 2 for a
// usage error.
import type { Command } from 'commander';
import WebSocket from 'ws';
import { FlotillaError, type ErrorInfo } from '../protocol/errors.js';
import {
  CHANNEL_STDIN,
  EXEC_CLOSE_UNAUTHORIZED,
  EXEC_MAX_MESSAGE,
  EXEC_PATH,
  decodeServerFrame,
  encodeControl,
  encodeData,
  execQuery,
  type ExecRequest,
} from '../protocol/exec.js';
import { tlsHint, type FlotillaClient } from '../client/client.js';
import { action, commandClient, UsageError } from './util.js';

/** Input waiting to be sent past this pauses reading it. */
const HIGH_WATER = 1024 * 1024;

export function registerExecCommand(program: Command): void {
  program
    .command('exec <task> <command...>')
    .description("run a command in a running task: in its container (docker), or in its environment and working directory (process)")
    .option('-c, --container <name>', 'in this container of the pod (default: the first)')
    .option('-i, --stdin', 'pass this input (terminal or pipe) to the command')
    .option('-t, --tty', 'give the command a terminal (process driver: needs `script` from util-linux on the worker)')
    .addHelpText(
      'after',
      `
Examples:
  flotilla exec web -- ls -l /
  flotilla exec -it web -c server -- sh
  echo hi | flotilla exec -i web -- cat
Options go before TASK; everything after -- is the command. The exit status is the command's.
Needs an admin token (a viewer token is refused).`,
    )
    .action(
      action(async (task: string, command: string[], o: { container?: string; stdin?: boolean; tty?: boolean }, cmd: Command) => {
        if (command.length === 0 || command[0] === '') throw new UsageError('no command given: flotilla exec TASK -- CMD [ARGS…]');
        const req: ExecRequest = { task, command, stdin: o.stdin === true, tty: o.tty === true };
        if (o.container !== undefined) req.container = o.container;
        if (req.tty && process.stdout.isTTY && process.stdout.columns > 0 && process.stdout.rows > 0) {
          req.cols = process.stdout.columns;
          req.rows = process.stdout.rows;
        }
        const code = await runExec(commandClient(cmd), req);
        // Everything written, then out with the command's status (stdin may still be open).
        await new Promise<void>((res) => process.stdout.write('', () => res()));
        await new Promise<void>((res) => process.stderr.write('', () => res()));
        process.exit(code);
      }),
    );
}

/** Opens the session on the first manager that answers; refusals are FlotillaErrors. */
function connect(c: FlotillaClient, req: ExecRequest): Promise<WebSocket> {
  const path = `${EXEC_PATH}?${execQuery(req)}`;
  const start = Math.max(0, c.managers.indexOf(c.current()));
  const tryAt = (i: number, last: FlotillaError | null): Promise<WebSocket> => {
    if (i >= c.managers.length) return Promise.reject(last ?? new FlotillaError('unavailable', 'no manager answered'));
    const addr = c.managers[(start + i) % c.managers.length]!;
    return new Promise<WebSocket>((resolve, reject) => {
      const ws = new WebSocket(c.url(addr, path, true), { ...c.wsOptions(), maxPayload: EXEC_MAX_MESSAGE, perMessageDeflate: false, handshakeTimeout: 20_000 });
      let done = false;
      ws.once('open', () => {
        done = true;
        resolve(ws);
      });
      ws.once('unexpected-response', (_r, res) => {
        done = true;
        const chunks: Buffer[] = [];
        res.on('data', (b: Buffer) => chunks.length < 64 && chunks.push(b));
        res.on('end', () => {
          let info: ErrorInfo | undefined;
          try {
            info = (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { error?: ErrorInfo }).error;
          } catch {
            info = undefined;
          }
          ws.terminate();
          reject(info ? FlotillaError.fromInfo(info, res.statusCode) : new FlotillaError('unavailable', `${addr} answered HTTP ${res.statusCode} to exec`));
        });
      });
      ws.once('error', (e: Error & { code?: string }) => {
        if (done) return;
        done = true;
        const hint = tlsHint(e, addr, c.link.secure);
        if (hint?.code === 'unauthorized') return reject(hint);
        // This manager is down: the next one.
        resolve(tryAt(i + 1, hint ?? new FlotillaError('unavailable', `${addr}: ${e.message}`)));
      });
    });
  };
  return tryAt(0, null);
}

/** Runs the session; resolves with the command's exit status. */
export async function runExec(c: FlotillaClient, req: ExecRequest): Promise<number> {
  const ws = await connect(c, req);
  const stdin = process.stdin;
  const raw = req.tty && req.stdin && stdin.isTTY === true;
  if (raw) stdin.setRawMode(true);
  const cleanup: (() => void)[] = [];
  if (raw) cleanup.push(() => stdin.setRawMode(false));

  return new Promise<number>((resolve, reject) => {
    let exitCode: number | null = null;
    let failure: FlotillaError | null = null;

    // Output: paused while this terminal (or pipe) is slower than the command.
    const write = (out: NodeJS.WriteStream, data: Uint8Array): void => {
      if (!out.write(data)) {
        ws.pause();
        out.once('drain', () => ws.resume());
      }
    };
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      let f;
      try {
        f = decodeServerFrame(data, isBinary);
      } catch (e) {
        failure = new FlotillaError('internal', `exec session: the manager sent a ${(e as Error).message}`);
        ws.terminate();
        return;
      }
      if (f.t === 'stdout') write(process.stdout, f.data);
      else if (f.t === 'stderr') write(process.stderr, f.data);
      else if (f.t === 'exit') exitCode = f.code;
      else failure = new FlotillaError(f.code, f.message);
    });

    if (req.stdin) {
      const onData = (chunk: Buffer): void => {
        if (ws.readyState !== WebSocket.OPEN) return;
        const frames = encodeData(CHANNEL_STDIN, chunk);
        frames.forEach((f, i) => {
          if (i === frames.length - 1 && ws.bufferedAmount + f.length > HIGH_WATER) {
            stdin.pause();
            ws.send(f, () => stdin.resume());
          } else ws.send(f);
        });
      };
      const onEnd = (): void => {
        if (ws.readyState === WebSocket.OPEN) ws.send(encodeControl({ t: 'eof' }));
      };
      stdin.on('data', onData);
      stdin.once('end', onEnd);
      stdin.on('error', () => undefined);
      cleanup.push(() => {
        stdin.off('data', onData);
        stdin.off('end', onEnd);
        stdin.pause();
      });
    }
    if (req.tty && process.stdout.isTTY) {
      const onResize = (): void => {
        if (ws.readyState === WebSocket.OPEN && process.stdout.columns > 0 && process.stdout.rows > 0) {
          ws.send(encodeControl({ t: 'resize', cols: process.stdout.columns, rows: process.stdout.rows }));
        }
      };
      process.stdout.on('resize', onResize);
      cleanup.push(() => process.stdout.off('resize', onResize));
    }
    // Without a terminal of its own, ^C (or a TERM) here ends the command there too.
    const onSignal = (sig: NodeJS.Signals): void => {
      failure ??= new FlotillaError('unavailable', `exec session ended by ${sig}`);
      exitCode = sig === 'SIGINT' ? 130 : sig === 'SIGTERM' ? 143 : 129;
      ws.close(1000, `the caller got ${sig}`);
      resolveWith();
    };
    for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
      process.on(s, onSignal);
      cleanup.push(() => process.off(s, onSignal));
    }

    let settled = false;
    const resolveWith = (): void => {
      if (settled) return;
      settled = true;
      for (const f of cleanup) f();
      if (exitCode !== null) resolve(exitCode);
      else reject(failure ?? new FlotillaError('unavailable', 'exec session closed before the command ended'));
    };
    ws.on('close', (code: number, reason: Buffer) => {
      const why = reason.toString('utf8');
      if (exitCode === null && failure === null) {
        failure = new FlotillaError(code === EXEC_CLOSE_UNAUTHORIZED ? 'unauthorized' : 'unavailable', `exec session closed before the command ended: ${why || `code ${code}`}`);
      }
      resolveWith();
    });
    ws.on('error', () => undefined);
  });
}
