// How flotilla processes end: on signals, and when whoever reads their output goes away.
//
// - CLI commands (`quietOnClosedOutput`, installed for every command by main.ts): when stdout's
//   reader goes away (`flotilla events | head -1`), the command ends at once, quietly, status 0,
//   like any Unix filter; an error writing stderr is ignored.
// - Node processes (managers, workers; `nodeShutdown`): the first SIGINT, SIGTERM or SIGHUP
//   starts a clean stop, bounded in time (past it the process exits anyway, status 1); another
//   signal a second or more later exits at once (one Ctrl-C often brings two: the terminal's
//   SIGINT and the parent's SIGTERM, or npm's forwarded copy). Output that cannot be written (a closed pipe) never crashes the
//   process or delays its stop: it is dropped, and the process stops as if told to (nobody
//   reads it any more: an orphan of a `flotilla up` that died must not keep its data locked).
//   With FLOTILLA_STOP_ON_STDIN_EOF=1 (set by `flotilla up`), the end of stdin stops it too: its
//   parent is gone.

import { fstatSync } from 'node:fs';
import { monoNow } from './clock.js';

/** A signal this long after the first one is a second request (exit at once), not an echo. */
export const REPEAT_MS = 1000;

const SIGNAL_NUMBERS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 };

/** True for the errors a write gets when the reading end of its pipe or socket is gone. */
export function isClosedOutput(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException | null)?.code;
  return code === 'EPIPE' || code === 'ECONNRESET' || code === 'ERR_STREAM_DESTROYED' || code === 'ERR_STREAM_WRITE_AFTER_END';
}

/** For CLI commands: end quietly (status 0) when stdout's reader goes away; ignore stderr errors. */
export function quietOnClosedOutput(): void {
  process.stdout.on('error', (e) => {
    if (isClosedOutput(e)) process.exit(0);
    throw e;
  });
  process.stderr.on('error', () => undefined);
}

export interface NodeShutdownOptions {
  /** Stops the node (closes servers, storage); the process exits 0 once it resolves. */
  close: () => Promise<void>;
  /** A line about the stop (written only while the output can take it). */
  say?: (msg: string) => void;
  /** Bound on `close` (ms); past it the process exits 1. */
  graceMs?: number;
}

let installed: { stop: (why: string) => void } | null = null;

/**
 * Installs the stop rules of a node process (see the top of this file). Returns `stop(why)`,
 * which starts the same bounded stop (for callers with their own reasons to stop).
 */
export function nodeShutdown(o: NodeShutdownOptions): (why: string) => void {
  if (installed) return installed.stop;
  const graceMs = o.graceMs ?? 8000;
  let outputGone = false;
  let stopping = false;
  let stoppingSince = 0;
  const say = (msg: string): void => {
    if (outputGone) return;
    try {
      o.say?.(msg);
    } catch {
      // the output went away while we wrote: nothing more to say
    }
  };
  const stop = (why: string): void => {
    if (stopping) return;
    stopping = true;
    stoppingSince = monoNow();
    say(`${why}: stopping`);
    const timer = setTimeout(() => {
      say(`${why}: the stop did not finish within ${graceMs} ms; exiting anyway`);
      process.exit(1);
    }, graceMs);
    o.close().then(
      () => {
        clearTimeout(timer);
        process.exit(0);
      },
      (e) => {
        clearTimeout(timer);
        say(`${why}: the stop failed: ${(e as Error)?.message ?? String(e)}`);
        process.exit(1);
      },
    );
  };
  const onSignal = (sig: NodeJS.Signals): void => {
    if (stopping) {
      if (monoNow() - stoppingSince >= REPEAT_MS) process.exit(128 + (SIGNAL_NUMBERS[sig] ?? 15)); // asked again: at once
      return;
    }
    stop(sig);
  };
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.removeAllListeners(sig);
    process.on(sig, onSignal);
  }
  const onOutputError = (e: unknown): void => {
    if (!isClosedOutput(e)) return;
    outputGone = true;
    stop('output closed');
  };
  for (const s of [process.stdout, process.stderr]) {
    s.removeAllListeners('error');
    s.on('error', onOutputError);
  }
  if (process.env.FLOTILLA_STOP_ON_STDIN_EOF === '1' && stdinIsPipe()) {
    process.stdin.on('end', () => stop('parent gone (stdin closed)'));
    process.stdin.on('error', () => stop('parent gone (stdin closed)'));
    process.stdin.resume();
  }
  installed = { stop };
  return stop;
}

/** stdin is a pipe or socket (a parent's), not a terminal, a file or /dev/null. */
function stdinIsPipe(): boolean {
  try {
    const st = fstatSync(0);
    return st.isFIFO() || st.isSocket();
  } catch {
    return false;
  }
}
