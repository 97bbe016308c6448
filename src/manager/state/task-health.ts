// Task health in the replicated state: what a worker's report may say of a task's health
// check, when a reported health is a change worth a log write, and what "ready" means.
//
// A task with a health check (`spec.health`) is ready only while its worker reports it
// `healthy`; a task without one is ready once it runs. Workers report health changes
// (starting → healthy → unhealthy …), not every probe, inside their ordinary status reports;
// the report is applied only to the attempt it is about, and a restart (a new attempt)
// forgets the old attempt's health. Older snapshots hold no `health` field: such a task has
// not reported any (a task with a check is then not ready until its worker reports again).
//
// Pure module.

import { z } from 'zod';
import { MAX_HEALTH_OUTPUT, type TaskHealth } from '../../protocol/health.js';
import type { Task } from './model.js';

export const taskHealthSchema = z.strictObject({
  status: z.enum(['starting', 'healthy', 'unhealthy']),
  failingStreak: z.number().int().min(0).max(1_000_000),
  output: z.string().max(MAX_HEALTH_OUTPUT * 4).optional(),
  at: z.number().int().min(0),
});

const _healthMatchesType: (h: z.output<typeof taskHealthSchema>) => TaskHealth = (h) => h;
void _healthMatchesType;

/** A worker's reported health as a report may carry it (output truncated), or undefined when malformed. */
export function reportedHealth(h: unknown): TaskHealth | undefined {
  if (h === undefined || h === null || typeof h !== 'object') return undefined;
  const raw = h as Record<string, unknown>;
  const out = typeof raw.output === 'string' ? { ...raw, output: raw.output.slice(0, MAX_HEALTH_OUTPUT) } : raw;
  const parsed = taskHealthSchema.safeParse(out);
  return parsed.success ? parsed.data : undefined;
}

/** Whether a reported health differs from the recorded one (a change to write). */
export function healthChanged(reported: TaskHealth | undefined, recorded: TaskHealth | undefined): boolean {
  if (reported === undefined) return false;
  if (recorded === undefined) return true;
  return (
    reported.status !== recorded.status ||
    reported.failingStreak !== recorded.failingStreak ||
    (reported.output ?? '') !== (recorded.output ?? '') ||
    reported.at !== recorded.at
  );
}

/** Whether a task's health lets it count as ready: no check, or its worker says healthy. */
export function healthOk(t: Pick<Task, 'spec' | 'health'>): boolean {
  return t.spec.health === undefined || t.health?.status === 'healthy';
}
