// `flotilla exec` for the docker driver: the engine's exec (`POST /containers/{id}/exec`, then
// a hijacked `POST /exec/{id}/start`) in a running app container of the pod. Without a tty the
// engine multiplexes stdout and stderr on the connection (demuxed here); with one it is a
// single stream. Input goes on the same connection; its end is a half-close, which the engine
// turns into the end of the command's stdin. A resize is the engine's exec resize. The status
// is the exec's ExitCode once the stream ended.
//
// Limit: the engine has no call to kill an exec'd process. When the caller goes away the
// connection is closed: a command on a tty gets the terminal's hangup, one reading its stdin
// sees its end; anything else runs until it ends (or the container stops).

import { PassThrough, type Duplex } from 'node:stream';
import type Docker from 'dockerode';
import { FlotillaError } from '../../protocol/errors.js';
import type { ExecOptions, ExecProcess } from '../driver.js';
import { podStatus, type Task } from './docker-pod.js';
import { errMessage, statusCode } from './docker-names.js';
import { execContainer } from './process-exec.js';
import { sleep } from './base.js';

export async function dockerExec(docker: Docker, taskId: string, t: Task | undefined, opts: ExecOptions): Promise<ExecProcess> {
  if (t === undefined) throw new FlotillaError('not_found', `Cannot exec in task '${taskId}' as it is not on this worker`);
  const st = podStatus(t);
  if (st.state !== 'running') throw new FlotillaError('conflict', `Cannot exec in task '${taskId}' as it is not running (${st.state})`);
  const c = execContainer(taskId, t.apps, opts.container);
  if (c.id === undefined || c.status !== 'running') {
    throw new FlotillaError('conflict', `Cannot exec in container '${c.name}' of task '${taskId}' as it is not running (${c.status ?? 'not created'})`);
  }
  const notRunning = (e: unknown): FlotillaError => {
    const code = statusCode(e);
    if (code === 404 || code === 409) return new FlotillaError('conflict', `Cannot exec in container '${c.name}' of task '${taskId}' as it is not running: ${errMessage(e)}`);
    return new FlotillaError('unavailable', `Cannot exec in container '${c.name}' of task '${taskId}' as the Docker engine refused: ${errMessage(e)}`);
  };
  let exec: Docker.Exec;
  let sock: Duplex;
  try {
    exec = await docker.getContainer(c.id).exec({ Cmd: opts.command, AttachStdin: opts.stdin || opts.tty, AttachStdout: true, AttachStderr: true, Tty: opts.tty });
    sock = (await exec.start({ hijack: true, stdin: true, Tty: opts.tty })) as Duplex;
  } catch (e) {
    throw notRunning(e);
  }
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  if (opts.tty) {
    sock.pipe(stdout);
    stderr.end();
  } else {
    docker.modem.demuxStream(sock, stdout, stderr);
    const end = (): void => {
      stdout.end();
      stderr.end();
    };
    sock.once('end', end);
    sock.once('close', end);
  }
  sock.on('error', () => undefined);
  let stdin: PassThrough | null = null;
  if (opts.stdin) {
    stdin = new PassThrough();
    stdin.pipe(sock); // its end half-closes the connection: the command's stdin ends
  }
  let ended = false;
  const streamDone = new Promise<void>((res) => {
    sock.once('close', () => res());
    sock.once('end', () => res());
  });
  const exited = streamDone.then(async () => {
    // The stream may end a moment before the engine records the status.
    for (let i = 0; i < 50; i++) {
      try {
        const info = await exec.inspect();
        if (!info.Running && typeof info.ExitCode === 'number') return info.ExitCode;
      } catch {
        break;
      }
      await sleep(100);
    }
    return 126;
  }).finally(() => {
    ended = true;
  });
  const resize = (cols: number, rows: number): void => {
    if (!opts.tty || ended) return;
    exec.resize({ h: rows, w: cols }).catch(() => undefined);
  };
  if (opts.cols !== undefined && opts.rows !== undefined) resize(opts.cols, opts.rows);
  return {
    stdin,
    stdout,
    stderr,
    exited,
    resize,
    kill: () => {
      if (!ended) sock.destroy();
    },
  };
}
