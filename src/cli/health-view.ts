// How the CLI shows a task's health check and health (ps, inspect, service ps).
import type { TaskView } from '../protocol/api.js';
import { describeHealthCheck } from '../protocol/health.js';

/** "running (healthy)", "running (starting)" for a running task with a check; the state otherwise. */
export function stateWithHealth(t: Pick<TaskView, 'state' | 'health' | 'spec'>): string {
  if (t.state !== 'running' || t.spec.health === undefined) return t.state;
  return `${t.state} (${t.health?.status ?? 'starting'})`;
}

/** The `Health:` lines of `inspect` (none for a task without a check). */
export function healthLines(t: Pick<TaskView, 'health' | 'spec'>): string[] {
  if (t.spec.health === undefined) return [];
  const h = t.health;
  const now = h === undefined ? 'not reported yet' : `${h.status}${h.failingStreak > 0 ? ` (failing streak ${h.failingStreak})` : ''} since ${new Date(h.at).toISOString().replace('T', ' ').slice(0, 19)}`;
  const out = [`Health:    ${now}`, `  Check:   ${describeHealthCheck(t.spec.health)}`];
  if (h?.output) out.push(`  Output:  ${h.output.replace(/\s+/g, ' ').slice(0, 200)}`);
  return out;
}
