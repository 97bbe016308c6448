// The board's live usage: GET /v1/usage (fetched with the nodes) attached to the node and task
// rows, and the columns that show it — the CPU history as a sparkline, then CPU and memory now.
import type { Column } from './layout.js';
import type { NodeRow, TaskRow } from './data.js';
import { arr, num, obj, str } from './data.js';
import { UNICODE_GLYPHS, type Glyphs } from './text.js';
import { fmtCpu, fmtMem, sparkline } from '../usage-format.js';

/** What a row shows of its measured use. */
export interface LiveUsage {
  cpu: number;
  memory: number;
  /** Millicores, oldest first. */
  cpuHistory: number[];
  /** The sparkline's top (a node's capacity; a task's own peak when 0). */
  cpuTop: number;
}

export type WithUsage<R> = R & { live?: LiveUsage | null };

/** Usage by node id and by task id, from an untrusted GET /v1/usage answer. */
export function parseUsage(raw: unknown): { nodes: Map<string, LiveUsage>; tasks: Map<string, LiveUsage> } {
  const o = obj(raw);
  const hist = (v: unknown): number[] => arr(v).map((p) => num(obj(p).cpu) ?? 0).slice(-60);
  const nodes = new Map<string, LiveUsage>();
  for (const x of arr(o.nodes)) {
    const n = obj(x);
    const cpu = num(n.cpu);
    const memory = num(n.memory);
    if (cpu === null || memory === null) continue;
    nodes.set(str(n.node, '?'), { cpu, memory, cpuHistory: hist(n.history), cpuTop: num(n.cpuCapacity) ?? 0 });
  }
  const tasks = new Map<string, LiveUsage>();
  for (const x of arr(o.tasks)) {
    const t = obj(x);
    const cpu = num(t.cpu);
    const memory = num(t.memory);
    if (cpu === null || memory === null || t.current !== true) continue;
    tasks.set(str(t.task, '?'), { cpu, memory, cpuHistory: hist(t.history), cpuTop: 0 });
  }
  return { nodes, tasks };
}

/** Sets (or clears) each row's `live` from the last usage answer (null: none). */
export function attachUsage(nodes: WithUsage<NodeRow>[], tasks: WithUsage<TaskRow>[], u: ReturnType<typeof parseUsage> | null): void {
  for (const n of nodes) n.live = u?.nodes.get(n.id) ?? null;
  for (const t of tasks) t.live = u?.tasks.get(t.id) ?? null;
}

const ASCII_LEVELS = '_.-:=+*#';

/** A sparkline `w` wide (ASCII levels on a terminal without Unicode). */
export function spark(values: readonly number[], w: number, top: number, g: Glyphs = UNICODE_GLYPHS): string {
  const s = sparkline(values, w, top > 0 ? top : undefined);
  if (g === UNICODE_GLYPHS) return s;
  return [...s].map((c) => ASCII_LEVELS['▁▂▃▄▅▆▇█'.indexOf(c)] ?? '_').join('');
}

/** "▁▂▃▅ 350m 1.2Gi": as much history as the width leaves beside the numbers. */
export function liveCell(l: LiveUsage | null | undefined, w: number, g: Glyphs, withMem: boolean): string {
  if (!l) return '-';
  const text = withMem ? `${fmtCpu(l.cpu)} ${fmtMem(l.memory)}` : fmtCpu(l.cpu);
  const room = w - text.length - 1;
  return room >= 3 ? `${spark(l.cpuHistory, room, l.cpuTop, g)} ${text}` : text;
}

export function nodeUsageColumn(g: Glyphs): Column<WithUsage<NodeRow>> {
  return { title: 'USED', min: 10, max: 34, prio: 4, flex: true, text: (n, w) => liveCell(n.live, w, g, true) };
}

export function taskUsageColumn(g: Glyphs): Column<WithUsage<TaskRow>> {
  return { title: 'CPU', min: 6, max: 24, prio: 3, text: (t, w) => liveCell(t.live, w, g, false) };
}
