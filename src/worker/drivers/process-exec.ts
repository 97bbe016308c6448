// `flotilla exec` for the process driver: a command run beside a running container's process,
// in that process's working directory and with its environment.
//
// Where: the container's wrapper process (pid from the driver) was started with the
// container's environment and working directory, so they are read back from
// /proc/<pid>/environ and /proc/<pid>/cwd — exactly what the container got (secrets dir,
// volume paths, the spec's env), with nothing of the worker's own environment. The program
// is found in that environment's PATH (relative to that directory when it contains a '/');
// one that cannot be found prints a message on stderr and exits 127, as a shell would.
//
// A terminal (-t) without native modules: the command runs under `script` (util-linux; the
// `bsdutils` package, essential on Debian), which opens a pseudo-terminal for it and copies
// between the pty and its own pipes:
//     script -q -e -c 'stty rows R cols C; exec PROGRAM ARGS…' /dev/null
// (every word single-quoted: nothing in the request is interpreted by the shell; `-e` makes
// script exit with the command's status). A resize runs `stty -F /dev/pts/N rows R cols C`
// on the pty script opened (found as its child's stdin), which the kernel follows with a
// SIGWINCH to the command. No `script` on the node: a clear `unavailable` error.
//
// The command runs in a process group of its own (with a tty: script's; the command is in
// the pty's session). When the session ends — the command exited, or the caller went away —
// whatever is left in that group is killed: nothing an exec started outlives its session.
// It is not part of the pod (stopping the task does not wait for it), but it is hung up when
// the task ends (worker/exec.ts watches the task), as a container's end ends its execs.

import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { constants } from 'node:os';
import { PassThrough } from 'node:stream';
import { FlotillaError } from '../../protocol/errors.js';
import type { DriverTaskStatus, ExecOptions, ExecProcess } from '../driver.js';
import { childrenOf, killGroup, resolveExecutable } from './proc.js';

/** Where `script` is looked for (the worker's PATH may be anything). */
const SCRIPT_PATHS = ['/usr/bin/script', '/bin/script'];

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The container's environment and working directory, read from its process. */
function containerContext(pid: number): { env: Record<string, string>; cwd: string } | null {
  try {
    const env: Record<string, string> = {};
    for (const kv of readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0')) {
      const eq = kv.indexOf('=');
      if (eq > 0) env[kv.slice(0, eq)] = kv.slice(eq + 1);
    }
    return { env, cwd: readlinkSync(`/proc/${pid}/cwd`) };
  } catch {
    return null;
  }
}

/** A command that never ran: its message on stderr, status 127. */
function notFound(message: string): ExecProcess {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  stdout.end();
  stderr.end(`flotilla exec: ${message}\n`);
  return { stdin: null, stdout, stderr, exited: Promise.resolve(127), resize: () => undefined, kill: () => undefined };
}

/** Picks the container and checks it runs; shared wording with the docker driver. */
export function execContainer<C extends { name: string }>(taskId: string, containers: C[], wanted: string | undefined): C {
  const c = wanted === undefined ? containers[0] : containers.find((x) => x.name === wanted);
  if (c === undefined) {
    throw new FlotillaError('not_found', `Cannot exec in task '${taskId}' as it has no container '${wanted}' (it has ${containers.map((x) => `'${x.name}'`).join(', ')})`);
  }
  return c;
}

export function processExec(taskId: string, status: DriverTaskStatus | null, opts: ExecOptions): ExecProcess {
  if (status === null) throw new FlotillaError('not_found', `Cannot exec in task '${taskId}' as it is not on this worker`);
  if (status.state !== 'running') throw new FlotillaError('conflict', `Cannot exec in task '${taskId}' as it is not running (${status.state})`);
  const c = execContainer(taskId, status.containers ?? [], opts.container);
  const ctx = c.state === 'running' && c.pid !== undefined ? containerContext(c.pid) : null;
  if (ctx === null) throw new FlotillaError('conflict', `Cannot exec in container '${c.name}' of task '${taskId}' as it is not running (${c.state})`);
  const program = opts.command[0]!;
  const exe = resolveExecutable(program, ctx.env.PATH ?? '', ctx.cwd);
  if (exe === null) {
    return notFound(program.includes('/') ? `'${program}' is not an executable file` : `executable '${program}' was not found in PATH (${ctx.env.PATH ?? ''})`);
  }
  const args = opts.command.slice(1);
  if (!opts.tty) {
    const child = spawn(exe, args, { cwd: ctx.cwd, env: ctx.env, argv0: program, detached: true, stdio: [opts.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
    return wrap(child, opts.stdin, null);
  }
  const script = SCRIPT_PATHS.find((p) => existsSync(p));
  if (script === undefined) {
    throw new FlotillaError('unavailable', "Cannot give the command a terminal (-t) as 'script' (util-linux, Debian's bsdutils) is not installed on this worker; run it without -t");
  }
  const size = opts.cols !== undefined && opts.rows !== undefined ? `stty rows ${opts.rows} cols ${opts.cols} 2>/dev/null; ` : '';
  // script runs `$SHELL -c …`: /bin/sh, whatever the container's SHELL; the command gets its own back.
  const restore = ctx.env.SHELL !== undefined ? `export SHELL=${shellQuote(ctx.env.SHELL)}; ` : 'unset SHELL; ';
  const line = `${size}${restore}exec ${[exe, ...args].map(shellQuote).join(' ')}`;
  const child = spawn(script, ['-q', '-e', '-c', line, '/dev/null'], { cwd: ctx.cwd, env: { ...ctx.env, SHELL: '/bin/sh' }, detached: true, stdio: ['pipe', 'pipe', 'pipe'] });
  let pty: string | null = null;
  const findPty = (): string | null => {
    if (pty !== null || child.pid === undefined) return pty;
    for (const kid of childrenOf(child.pid)) {
      try {
        const p = readlinkSync(`/proc/${kid}/fd/0`);
        if (p.startsWith('/dev/pts/')) return (pty = p);
      } catch {
        // gone
      }
    }
    return null;
  };
  return wrap(child, true, (cols, rows) => {
    const p = findPty();
    if (p !== null) execFile('stty', ['-F', p, 'rows', String(rows), 'cols', String(cols)], () => undefined);
  });
}

function wrap(child: ChildProcess, stdin: boolean, resize: ((cols: number, rows: number) => void) | null): ExecProcess {
  const pgid = child.pid;
  let ended = false;
  const exited = new Promise<number>((resolve) => {
    child.on('error', (e) => {
      child.stderr?.push(`flotilla exec: ${e.message}\n`);
      ended = true;
      resolve(126);
    });
    child.on('exit', (code, signal) => {
      ended = true;
      // Whatever the command left running in its group goes with the session; output still
      // held open by something that left the group is cut after a moment.
      if (pgid !== undefined) killGroup(pgid, 'SIGKILL');
      const cut = setTimeout(() => {
        child.stdout?.destroy();
        child.stderr?.destroy();
      }, 2000);
      cut.unref();
      child.on('close', () => clearTimeout(cut));
      resolve(code ?? 128 + signalNumber(signal));
    });
  });
  child.stdin?.on('error', () => undefined);
  return {
    stdin: stdin ? child.stdin : null,
    stdout: child.stdout!,
    // With a tty the command's stderr is the terminal too; this one only carries script's own complaints.
    stderr: child.stderr!,
    exited,
    resize: (cols, rows) => {
      if (!ended) resize?.(cols, rows);
    },
    kill: () => {
      if (ended || pgid === undefined) return;
      // A hangup first (what a closed terminal sends), then no more waiting.
      killGroup(pgid, 'SIGHUP');
      setTimeout(() => !ended && killGroup(pgid, 'SIGKILL'), 2000).unref();
    },
  };
}

function signalNumber(signal: NodeJS.Signals | null): number {
  return signal === null ? 0 : ((constants.signals as Record<string, number>)[signal] ?? 0);
}
