// `flotilla exec`: the request (a WebSocket upgrade's query string) and the frames of an exec
// session, shared by the CLI, the manager (which proxies the session) and the worker (which
// runs the command). Pure: no IO.
//
// Path: CLI ──WS /v1/exec?task=…──► any manager ──WS /v1/exec?task=<id>…──► the task's worker.
//
// The request travels in the query string, so every refusal (unknown task, task not running,
// unknown container, no authority) is an ordinary HTTP error answer to the upgrade:
//   task=ID|NAME   container=NAME (default: the first)   cmd=ARG (repeated, in order, ≥ 1)
//   stdin=1 (send the caller's input)   tty=1 (a terminal)   cols=N rows=N (its size)
//
// Frames, once upgraded (every frame is checked on receipt; a bad one closes the session with
// EXEC_CLOSE_BAD_FRAME and a reason that says what was wrong):
//   binary: byte 0 = channel (0 stdin: caller → command; 1 stdout, 2 stderr: command →
//           caller), then at most EXEC_MAX_DATA bytes of data.
//   text:   one JSON object of at most EXEC_MAX_CONTROL bytes:
//           caller → command: {"t":"resize","cols":N,"rows":N} | {"t":"eof"} (no more input)
//           command → caller: {"t":"exit","code":N} (the last frame; then a normal close)
//                             {"t":"error","code":…,"message":…} (it failed; then a close)
import { FlotillaError, ERROR_CODES, type ErrorCode } from './errors.js';

/** The WebSocket path of an exec session, on managers and on workers. */
export const EXEC_PATH = '/v1/exec';
/** Largest data payload of one binary frame (bigger output is cut into several frames). */
export const EXEC_MAX_DATA = 32 * 1024;
/** Largest control (text) frame. */
export const EXEC_MAX_CONTROL = 1024;
/** Largest WebSocket message either end accepts (a data frame with its channel byte fits). */
export const EXEC_MAX_MESSAGE = EXEC_MAX_DATA + 64;
/** At most this many command words, of at most this many bytes together. */
export const EXEC_MAX_ARGS = 256;
export const EXEC_MAX_COMMAND_BYTES = 8 * 1024;
/** Terminal sizes accepted (columns and rows). */
export const EXEC_MAX_TTY_SIZE = 10_000;

/** Close codes (application range). 1000: the command exited (after its `exit` frame). */
export const EXEC_CLOSE_BAD_FRAME = 4400;
/** The credential the session was opened with was revoked. */
export const EXEC_CLOSE_UNAUTHORIZED = 4401;
/** The other end (worker or manager) went away, or the command could not be run. */
export const EXEC_CLOSE_LOST = 4502;

export const CHANNEL_STDIN = 0;
export const CHANNEL_STDOUT = 1;
export const CHANNEL_STDERR = 2;

export interface ExecRequest {
  /** Task id (or, on a manager, a name). */
  task: string;
  container?: string;
  command: string[];
  stdin: boolean;
  tty: boolean;
  cols?: number;
  rows?: number;
}

export type ExecClientFrame = { t: 'stdin'; data: Uint8Array } | { t: 'resize'; cols: number; rows: number } | { t: 'eof' };
export type ExecServerFrame =
  | { t: 'stdout'; data: Uint8Array }
  | { t: 'stderr'; data: Uint8Array }
  | { t: 'exit'; code: number }
  | { t: 'error'; code: ErrorCode; message: string };

const QUERY_KEYS = new Set(['task', 'container', 'cmd', 'stdin', 'tty', 'cols', 'rows']);

function bad(message: string): never {
  throw new FlotillaError('bad_request', `Cannot exec as ${message}`);
}

function flag(q: URLSearchParams, name: string): boolean {
  const v = q.get(name);
  if (v === null || v === '0' || v === 'false') return false;
  if (v === '' || v === '1' || v === 'true') return true;
  bad(`'${name}' must be 1, 0, true or false (got '${v.slice(0, 20)}')`);
}

function size(q: URLSearchParams, name: string): number | undefined {
  const v = q.get(name);
  if (v === null) return undefined;
  if (!/^\d{1,5}$/.test(v) || Number(v) < 1 || Number(v) > EXEC_MAX_TTY_SIZE) bad(`'${name}' must be a whole number from 1 to ${EXEC_MAX_TTY_SIZE} (got '${v.slice(0, 20)}')`);
  return Number(v);
}

/** Validates an exec request's query string; throws `bad_request` naming the problem. */
export function parseExecQuery(q: URLSearchParams): ExecRequest {
  for (const k of q.keys()) if (!QUERY_KEYS.has(k)) bad(`'${k.slice(0, 40)}' is not a known parameter (task, container, cmd, stdin, tty, cols, rows)`);
  for (const k of ['task', 'container', 'stdin', 'tty', 'cols', 'rows']) if (q.getAll(k).length > 1) bad(`'${k}' is given more than once`);
  const task = q.get('task');
  if (task === null || task === '') bad("'task' is required (a task id or name)");
  if (task.length > 256) bad("'task' is longer than 256 characters");
  const container = q.get('container') ?? undefined;
  if (container !== undefined && (container === '' || container.length > 256)) bad("'container' must be 1 to 256 characters");
  const command = q.getAll('cmd');
  if (command.length === 0) bad("no command was given (e.g. flotilla exec TASK -- sh)");
  if (command.length > EXEC_MAX_ARGS) bad(`the command has ${command.length} words; at most ${EXEC_MAX_ARGS}`);
  if (command[0] === '') bad('the command name is empty');
  const bytes = command.reduce((n, a) => n + Buffer.byteLength(a) + 1, 0);
  if (bytes > EXEC_MAX_COMMAND_BYTES) bad(`the command is ${bytes} bytes; at most ${EXEC_MAX_COMMAND_BYTES}`);
  if (command.some((a) => a.includes('\0'))) bad('the command contains a NUL character');
  const req: ExecRequest = { task, command, stdin: flag(q, 'stdin'), tty: flag(q, 'tty') };
  if (container !== undefined) req.container = container;
  const cols = size(q, 'cols');
  const rows = size(q, 'rows');
  if ((cols === undefined) !== (rows === undefined)) bad("'cols' and 'rows' go together");
  if (cols !== undefined && !req.tty) bad("'cols' and 'rows' need 'tty'");
  if (cols !== undefined) {
    req.cols = cols;
    req.rows = rows;
  }
  return req;
}

/** The query string of a request (`task` as given: an id for workers, an id or name for managers). */
export function execQuery(req: ExecRequest): string {
  const q = new URLSearchParams();
  q.set('task', req.task);
  if (req.container !== undefined) q.set('container', req.container);
  for (const a of req.command) q.append('cmd', a);
  if (req.stdin) q.set('stdin', '1');
  if (req.tty) q.set('tty', '1');
  if (req.cols !== undefined && req.rows !== undefined) {
    q.set('cols', String(req.cols));
    q.set('rows', String(req.rows));
  }
  return q.toString();
}

// ---- frames

function frameError(message: string): FlotillaError {
  return new FlotillaError('bad_request', `bad exec frame: ${message}`);
}

function dataFrame(channel: number, data: Uint8Array): Buffer {
  if (data.length > EXEC_MAX_DATA) throw new FlotillaError('too_large', `Cannot send ${data.length} bytes in one exec frame; at most ${EXEC_MAX_DATA}`);
  const b = Buffer.allocUnsafe(1 + data.length);
  b[0] = channel;
  b.set(data, 1);
  return b;
}

/** Cuts data into frames of at most EXEC_MAX_DATA bytes on one channel. */
export function encodeData(channel: typeof CHANNEL_STDIN | typeof CHANNEL_STDOUT | typeof CHANNEL_STDERR, data: Uint8Array): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < data.length; i += EXEC_MAX_DATA) out.push(dataFrame(channel, data.subarray(i, i + EXEC_MAX_DATA)));
  return out;
}

export function encodeControl(f: Exclude<ExecClientFrame, { t: 'stdin' }> | Exclude<ExecServerFrame, { t: 'stdout' | 'stderr' }>): string {
  const s = JSON.stringify(f.t === 'error' ? { t: 'error', code: f.code, message: f.message.slice(0, 900) } : f);
  if (Buffer.byteLength(s) > EXEC_MAX_CONTROL) throw new FlotillaError('too_large', `Cannot send an exec '${f.t}' frame of ${Buffer.byteLength(s)} bytes; at most ${EXEC_MAX_CONTROL}`);
  return s;
}

function asBuffer(data: Buffer | ArrayBuffer | Buffer[]): Buffer {
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.isBuffer(data) ? data : Buffer.from(data);
}

function control(data: Buffer): Record<string, unknown> {
  if (data.length > EXEC_MAX_CONTROL) throw frameError(`a control frame of ${data.length} bytes; at most ${EXEC_MAX_CONTROL}`);
  let v: unknown;
  try {
    v = JSON.parse(data.toString('utf8'));
  } catch {
    throw frameError('a text frame that is not JSON');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw frameError('a text frame that is not a JSON object');
  return v as Record<string, unknown>;
}

function onlyKeys(o: Record<string, unknown>, keys: string[]): void {
  const extra = Object.keys(o).find((k) => !keys.includes(k));
  if (extra !== undefined) throw frameError(`'${String(o.t)}' has an unknown field '${extra.slice(0, 40)}'`);
}

function binary(data: Buffer, allowed: number[], dir: string): { channel: number; data: Buffer } {
  if (data.length < 1) throw frameError('an empty binary frame');
  if (data.length - 1 > EXEC_MAX_DATA) throw frameError(`${data.length - 1} bytes of data in one frame; at most ${EXEC_MAX_DATA}`);
  const channel = data[0]!;
  if (!allowed.includes(channel)) throw frameError(`channel ${channel} is not one ${dir} may send (${allowed.join(', ')})`);
  return { channel, data: data.subarray(1) };
}

/** Decodes and checks a frame the caller sent (throws `bad_request`). */
export function decodeClientFrame(raw: Buffer | ArrayBuffer | Buffer[], isBinary: boolean): ExecClientFrame {
  const data = asBuffer(raw);
  if (isBinary) return { t: 'stdin', data: binary(data, [CHANNEL_STDIN], 'the caller').data };
  const o = control(data);
  if (o.t === 'eof') {
    onlyKeys(o, ['t']);
    return { t: 'eof' };
  }
  if (o.t === 'resize') {
    onlyKeys(o, ['t', 'cols', 'rows']);
    const ok = (n: unknown): n is number => Number.isInteger(n) && (n as number) >= 1 && (n as number) <= EXEC_MAX_TTY_SIZE;
    if (!ok(o.cols) || !ok(o.rows)) throw frameError(`'resize' needs whole 'cols' and 'rows' from 1 to ${EXEC_MAX_TTY_SIZE}`);
    return { t: 'resize', cols: o.cols, rows: o.rows };
  }
  throw frameError(`'${String(o.t).slice(0, 40)}' is not a frame the caller may send (resize, eof)`);
}

/** Decodes and checks a frame the command's side sent (throws `bad_request`). */
export function decodeServerFrame(raw: Buffer | ArrayBuffer | Buffer[], isBinary: boolean): ExecServerFrame {
  const data = asBuffer(raw);
  if (isBinary) {
    const b = binary(data, [CHANNEL_STDOUT, CHANNEL_STDERR], 'the command');
    return { t: b.channel === CHANNEL_STDOUT ? 'stdout' : 'stderr', data: b.data };
  }
  const o = control(data);
  if (o.t === 'exit') {
    onlyKeys(o, ['t', 'code']);
    if (!Number.isInteger(o.code) || (o.code as number) < 0 || (o.code as number) > 255) throw frameError("'exit' needs a whole 'code' from 0 to 255");
    return { t: 'exit', code: o.code as number };
  }
  if (o.t === 'error') {
    onlyKeys(o, ['t', 'code', 'message']);
    if (typeof o.code !== 'string' || !(o.code in ERROR_CODES) || typeof o.message !== 'string') throw frameError("'error' needs a known 'code' and a 'message'");
    return { t: 'error', code: o.code as ErrorCode, message: o.message };
  }
  throw frameError(`'${String(o.t).slice(0, 40)}' is not a frame the command's side may send (exit, error)`);
}

/** A WebSocket close reason (at most 123 bytes of UTF-8). */
export function closeReason(s: string): string {
  let r = s;
  while (Buffer.byteLength(r) > 123) r = r.slice(0, -1);
  return r;
}

const STATUS_TEXT: Record<number, string> = { 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 409: 'Conflict', 500: 'Internal Server Error', 503: 'Service Unavailable', 504: 'Gateway Timeout' };

/** The raw HTTP answer that refuses a WebSocket upgrade with a FlotillaError's JSON body. */
export function upgradeRefusal(e: FlotillaError): string {
  const body = JSON.stringify(e.toJSON());
  const status = e.httpStatus;
  const auth = status === 401 ? 'www-authenticate: Bearer realm="flotilla"\r\n' : '';
  return `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Error'}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${auth}connection: close\r\n\r\n${body}`;
}
