// The previous attempt's output (`flotilla logs --previous`). When the manager restarts a task
// in place on the same worker, the new attempt replaces the old one's files (the driver removes
// the old container / task directory). Just before that, the agent copies the old attempt's
// lines — with their times — to `<stateDir>/previous-logs/<task>.ndjson` (its last
// PREVIOUS_MAX_LINES lines): one file per task, the attempt before the one that runs. It is
// deleted when the task is purged from the worker (retention, see agent.ts). Both drivers are
// answered from this copy, so docker and process tasks behave the same way: docker's previous
// container is not kept.
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LogLine, LogOptions } from './driver.js';

export const PREVIOUS_MAX_LINES = 10_000;

function fileOf(stateDir: string, taskId: string): string {
  const name = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$/.test(taskId) ? taskId : '_' + createHash('sha256').update(taskId).digest('hex').slice(0, 40);
  return join(stateDir, 'previous-logs', `${name}.ndjson`);
}

/** Keeps `lines` (the last PREVIOUS_MAX_LINES) as attempt `attempt`'s output. */
export async function savePrevious(stateDir: string, taskId: string, attempt: number, lines: AsyncIterable<LogLine>): Promise<void> {
  const kept: LogLine[] = [];
  for await (const l of lines) {
    kept.push(l);
    if (kept.length > PREVIOUS_MAX_LINES) kept.shift();
  }
  const file = fileOf(stateDir, taskId);
  mkdirSync(join(stateDir, 'previous-logs'), { recursive: true });
  const text = [JSON.stringify({ taskId, attempt }), ...kept.map((l) => JSON.stringify(l))].join('\n') + '\n';
  writeFileSync(`${file}.tmp`, text);
  renameSync(`${file}.tmp`, file);
}

/** Attempt `attempt`'s kept lines (filtered like a driver's `logs()`), or undefined when not kept. */
export function readPrevious(stateDir: string, taskId: string, attempt: number, opts: LogOptions): LogLine[] | undefined {
  let text: string;
  try {
    text = readFileSync(fileOf(stateDir, taskId), 'utf8');
  } catch {
    return undefined;
  }
  const [head, ...rest] = text.split('\n').filter((l) => l !== '');
  let meta: { taskId?: unknown; attempt?: unknown };
  try {
    meta = JSON.parse(head ?? '{}') as typeof meta;
  } catch {
    return undefined;
  }
  if (meta.taskId !== taskId || meta.attempt !== attempt) return undefined;
  const lines: LogLine[] = [];
  for (const raw of rest) {
    try {
      const l = JSON.parse(raw) as LogLine;
      if (!opts.timestamps && opts.since === undefined) delete l.at; // like the drivers: times when asked
      if (opts.container !== undefined && l.container !== opts.container) continue;
      if (opts.stream !== undefined && l.stream !== opts.stream) continue;
      lines.push(l);
    } catch {
      // a damaged line: skipped
    }
  }
  if (opts.tail === undefined) return lines;
  // The last `tail` lines of each (container, stream), like the drivers.
  const seen = new Map<string, number>();
  const out: LogLine[] = [];
  for (let i = lines.length - 1; i >= 0; i--) {
    const k = `${lines[i]!.container}\0${lines[i]!.stream}`;
    const n = seen.get(k) ?? 0;
    if (n >= opts.tail) continue;
    seen.set(k, n + 1);
    out.push(lines[i]!);
  }
  return out.reverse();
}

export function dropPrevious(stateDir: string, taskId: string): void {
  rmSync(fileOf(stateDir, taskId), { force: true });
}
