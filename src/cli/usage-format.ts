// Live usage as the CLI and the board print it: millicores, bytes, sparklines, and the one
// GET /v1/usage fetch that must not fail a command whose main answer is something else.
import type { FlotillaClient } from '../client/client.js';
import type { TaskLiveUsage, UsagePoint, UsageReport } from '../protocol/api.js';

/** 350m, 1.5 (cores from 1000m up). */
export function fmtCpu(mc: number | undefined): string {
  if (mc === undefined || !Number.isFinite(mc)) return '-';
  if (mc < 1000) return `${Math.round(mc)}m`;
  return `${+(mc / 1000).toFixed(2)}`;
}

/** 12Mi, 1.5Gi. */
export function fmtMem(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n)) return '-';
  if (n >= 1024 ** 3) return `${+(n / 1024 ** 3).toFixed(1)}Gi`;
  if (n >= 1024 ** 2) return `${Math.round(n / 1024 ** 2)}Mi`;
  if (n >= 1024) return `${Math.round(n / 1024)}Ki`;
  return `${Math.round(n)}`;
}

/** A share in percent, or '-' without a total. */
export function fmtPct(part: number, total: number): string {
  return total > 0 ? `${Math.round((part / total) * 100)}%` : '-';
}

const BARS = '▁▂▃▄▅▆▇█';

/**
 * A text sparkline of the last `width` values: each one a bar of eight heights, scaled to
 * `max` (default: the largest value shown; a flat zero line stays at the bottom).
 */
export function sparkline(values: readonly number[], width = 20, max?: number): string {
  const v = values.slice(-width);
  if (v.length === 0) return '';
  const top = max ?? Math.max(...v);
  return v
    .map((x) => {
      if (!(top > 0) || !(x > 0)) return BARS[0]!;
      return BARS[Math.min(BARS.length - 1, Math.max(0, Math.round((x / top) * (BARS.length - 1))))]!;
    })
    .join('');
}

export function cpuHistory(h: readonly UsagePoint[] | undefined): number[] {
  return (h ?? []).map((p) => p.cpu);
}

/** GET /v1/usage, or null when the cluster cannot say (an older manager, no leader): usage columns then show '-'. */
export async function fetchUsage(c: FlotillaClient, history = false): Promise<UsageReport | null> {
  try {
    return await c.get<UsageReport>(`/v1/usage${history ? '' : '?history=false'}`);
  } catch {
    return null;
  }
}

/** Task usage by task id (current samples only: a task its node no longer reports shows '-'). */
export function taskUsageMap(r: UsageReport | null): Map<string, TaskLiveUsage> {
  return new Map((r?.tasks ?? []).filter((t) => t.current).map((t) => [t.task, t]));
}
