// `flotilla board`: a live terminal dashboard (k9s-like) built on blessed.
//
// Data comes from polling /v1/cluster, /v1/nodes and /v1/tasks every --interval ms, and from
// the WebSocket event stream (/v1/events), which both fills the events pane and triggers an
// early refresh. The HTTP client fails over between managers by itself; the event stream
// reconnects to the next manager and resumes from the last event seen (seqs are replicated,
// so they mean the same on every manager).
//
// `enter` opens a details pane over the panels: for a task, GET /v1/tasks/:id (spec, state,
// history), the events the stream delivered for it, and the tail of GET /v1/tasks/:id/logs, all
// re-read while the pane is open; for a manager or a node, the fields of its last listing.
// `K` and `R` act on the node processes of a `flotilla up` cluster through the processes.json
// that `up` keeps (see up.ts): K sends SIGKILL to a verified pid, R asks `up` to restart it.
//
// Everything that turns API data into screen lines is a pure function exported from here
// (normalize*, describeEvent, fitColumns, render*), so odd data can be tested without a
// terminal; the Board class only wires blessed, timers and sockets together.
// blessed and ws are loaded only when the board runs (every other CLI command stays fast).
import type { Command } from 'commander';
import { action, caFrom, managersFrom, parseIntFlag, tokenFrom, upDir, UsageError } from '../util.js';
import { Board, type BoardOptions } from './app.js';

export * from './data.js';
export * from './text.js';
export * from './layout.js';
export * from './panes/details.js';
export * from './panes/header.js';
export type { BoardOptions };

/** Runs the board until the user quits. */
export async function runBoard(opts: BoardOptions): Promise<void> {
  const blessed = (await import('blessed')).default;
  const { default: WS } = await import('ws');
  const board = new Board(opts, { blessed, WebSocket: WS });
  const onSignal = () => board.quit();
  // The terminal went away (tmux killed, ssh dropped): nothing can be drawn or read any more,
  // so leave now instead of spinning on a dead tty.
  const onHangUp = () => {
    board.quit(129);
    setTimeout(() => process.exit(129), 200).unref();
  };
  process.stdin.once('end', onHangUp);
  process.stdin.once('error', onHangUp);
  process.stdout.once('error', onHangUp);
  const onCrash = (e: unknown) => {
    // Restore the terminal before reporting anything.
    board.quit(1);
    process.stderr.write(`flotilla board: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', onHangUp);
  process.on('uncaughtException', onCrash);
  try {
    await board.run();
  } finally {
    process.off('SIGTERM', onSignal);
    process.off('SIGHUP', onHangUp);
    process.off('uncaughtException', onCrash);
  }
  // Keep-alive sockets or a half-closed stdin must not keep the CLI alive after quitting.
  setTimeout(() => process.exit(), 500).unref();
}

export function registerBoard(program: Command): void {
  program
    .command('board')
    .description('live terminal dashboard: managers, nodes, tasks and the event stream (like k9s)')
    .option('--interval <ms>', 'refresh interval in milliseconds (events also trigger a refresh)', '1000')
    .addHelpText(
      'after',
      [
        '',
        'Keys:',
        '  q / Ctrl-C quit   tab switch focus   up/down or j/k move   / filter tasks',
        '  enter details of the selected task (spec, events, logs tail), manager or node',
        '  s stop the selected task (confirm with y)   d/p/a drain/pause/activate the selected node',
        '  K kill the selected manager or node process (SIGKILL), R restart it: clusters of',
        '    `flotilla up` only (it records its processes in <dir>/processes.json)',
        '  ? help',
        '',
        'Examples:',
        '  flotilla board',
        '  flotilla --managers 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003 board --interval 500',
      ].join('\n'),
    )
    .action(
      action(async (o: { interval?: string }, cmd: Command) => {
        const intervalMs = parseIntFlag('--interval', o.interval ?? '1000', 100, 600_000);
        const managers = managersFrom(cmd.optsWithGlobals().managers);
        if (!process.stdout.isTTY || !process.stdin.isTTY) {
          throw new UsageError('flotilla board needs an interactive terminal (stdin and stdout must be a TTY); use `flotilla cluster status` in scripts');
        }
        await runBoard({ managers, intervalMs, token: tokenFrom(), ca: caFrom(cmd.optsWithGlobals().managers), upDir: upDir() });
      }),
    );
}
