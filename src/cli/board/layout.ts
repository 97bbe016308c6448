// Tables: the columns of the managers, nodes and tasks panes, fitted to the width, and the
// scrolled lists and event lines drawn from them.
import type { EventLine, ManagerRow, NodeRow, TaskRow } from './data.js';
import { stateColor } from './data.js';
import { ago } from '../util.js';
import { bar, clock, esc, fit, fmtCpu, fmtMem, sanitize, UNICODE_GLYPHS, type Glyphs } from './text.js';
function usageCell(used: number | null, cap: number | null, fmt: (n: number | null) => string, w: number, g: Glyphs): string {
  const text = `${fmt(used)}/${fmt(cap)}`;
  if (w - text.length - 1 >= 4) return `${bar(used, cap, w - text.length - 1, g)} ${text}`;
  const pct = cap && used !== null && cap > 0 ? `${Math.min(999, Math.round((used / cap) * 100))}%` : '-';
  const bw = w - 5;
  return bw >= 2 ? `${bar(used, cap, bw, g)} ${pct.padStart(4)}` : pct;
}

// =============================================================================================
// Tables

export interface Column<R> {
  title: string;
  min: number;
  max: number;
  /** Higher numbers are dropped first when the width is short. */
  prio: number;
  right?: boolean;
  /** Takes the spare width. */
  flex?: boolean;
  text: (r: R, w: number) => string;
  color?: (r: R) => string;
}

export interface Fitted<R> {
  col: Column<R>;
  w: number;
}

/** Chooses the columns and their widths so a row is exactly `width` columns wide. */
export function fitColumns<R>(cols: Column<R>[], rows: R[], width: number): Fitted<R>[] {
  width = Math.max(0, Math.floor(width));
  let use = cols.slice();
  const need = (cs: Column<R>[]) => cs.reduce((s, c) => s + c.min, 0) + Math.max(0, cs.length - 1);
  while (use.length > 1 && need(use) > width) {
    const worst = use.reduce((a, b) => (b.prio > a.prio ? b : a));
    use = use.filter((c) => c !== worst);
  }
  const sample = rows.slice(0, 300);
  const ws = use.map((c) => {
    let natural = c.title.length;
    for (const r of sample) {
      let t = '';
      try {
        t = c.text(r, c.max);
      } catch {
        t = '';
      }
      natural = Math.max(natural, t.length);
    }
    return Math.min(c.max, Math.max(c.min, natural));
  });
  let total = ws.reduce((s, w) => s + w, 0) + Math.max(0, use.length - 1);
  while (total > width) {
    // Shrink flexible columns first, then whichever has the most room above its minimum.
    let pick = -1;
    for (let i = 0; i < use.length; i++) {
      if (ws[i]! <= use[i]!.min) continue;
      if (pick < 0) pick = i;
      else {
        const better = use[i]!.flex && !use[pick]!.flex;
        const worse = !use[i]!.flex && use[pick]!.flex;
        if (better || (!worse && ws[i]! - use[i]!.min > ws[pick]! - use[pick]!.min)) pick = i;
      }
    }
    if (pick < 0) {
      // Even the minimums do not fit (a single very narrow column): cut the last one.
      const last = use.length - 1;
      if (last < 0) break;
      const cut = Math.min(ws[last]!, total - width);
      ws[last] = ws[last]! - cut;
      total -= cut;
      break;
    }
    ws[pick] = ws[pick]! - 1;
    total--;
  }
  if (total < width && use.length > 0) {
    let fi = -1;
    for (let i = 0; i < use.length; i++) if (use[i]!.flex) fi = i;
    if (fi < 0) fi = use.length - 1;
    ws[fi] = ws[fi]! + (width - total);
  }
  return use.map((col, i) => ({ col, w: ws[i]! }));
}

export function renderHeaderRow<R>(fitted: Fitted<R>[], g: Glyphs = UNICODE_GLYPHS): string {
  const line = fitted.map(({ col, w }) => fit(col.title, w, col.right, g)).join(' ');
  return `{bold}${esc(line)}{/bold}`;
}

export function renderRow<R>(fitted: Fitted<R>[], r: R, mark: 'none' | 'focused' | 'blurred' = 'none', g: Glyphs = UNICODE_GLYPHS): string {
  const cells = fitted.map(({ col, w }) => {
    let t = '';
    try {
      t = col.text(r, w);
    } catch {
      t = '?';
    }
    let color = '';
    try {
      color = col.color?.(r) ?? '';
    } catch {
      color = '';
    }
    return { t: fit(t, w, col.right, g), color };
  });
  if (mark === 'focused') return `{inverse}${esc(cells.map((c) => c.t).join(' '))}{/inverse}`;
  if (mark === 'blurred') return `{underline}${esc(cells.map((c) => c.t).join(' '))}{/underline}`;
  return cells.map((c) => (c.color && /^[a-z-]+$/.test(c.color) ? `{${c.color}}${esc(c.t)}{/${c.color}}` : esc(c.t))).join(' ');
}

export function managerColumns(leader: string | null, g: Glyphs = UNICODE_GLYPHS): Column<ManagerRow>[] {
  void g;
  return [
    { title: 'ID', min: 4, max: 16, prio: 0, text: (m) => (m.id === leader ? `*${m.id}` : ` ${m.id}`), color: (m) => (m.id === leader ? 'green-fg' : '') },
    {
      title: 'ROLE',
      min: 7,
      max: 11,
      prio: 0,
      text: (m) => (m.role === 'unreachable' ? 'down' : m.role) + (m.voter ? '' : '(l)'),
      color: (m) => (m.role === 'leader' ? 'green-fg' : m.role === 'candidate' || m.role === 'precandidate' ? 'yellow-fg' : m.role === 'unreachable' ? 'red-fg' : ''),
    },
    { title: 'TERM', min: 4, max: 8, prio: 1, right: true, text: (m) => (m.term === null ? '-' : String(m.term)) },
    { title: 'COMMIT', min: 6, max: 10, prio: 3, right: true, text: (m) => (m.commitIndex === null ? '-' : String(m.commitIndex)) },
    { title: 'APPLIED', min: 7, max: 10, prio: 4, right: true, text: (m) => (m.appliedIndex === null ? '-' : String(m.appliedIndex)) },
    { title: 'LAG', min: 3, max: 8, prio: 2, right: true, text: (m) => (m.lag === null ? '-' : String(m.lag)), color: (m) => (m.lag !== null && m.lag > 100 ? 'yellow-fg' : '') },
    { title: 'CONTACT', min: 7, max: 8, prio: 5, right: true, text: (m) => ago(m.lastContactMs) },
    { title: 'HEALTH', min: 6, max: 7, prio: 0, flex: true, text: (m) => (m.healthy ? 'ok' : 'DOWN'), color: (m) => (m.healthy ? 'green-fg' : 'red-fg') },
  ];
}

export function nodeColumns(g: Glyphs = UNICODE_GLYPHS): Column<NodeRow>[] {
  return [
    { title: 'ID', min: 4, max: 20, prio: 0, text: (n) => n.id },
    { title: 'STATUS', min: 6, max: 7, prio: 0, text: (n) => n.status, color: (n) => (n.status === 'ready' ? 'green-fg' : n.status === 'down' ? 'red-fg' : 'yellow-fg') },
    { title: 'AVAIL', min: 6, max: 6, prio: 1, text: (n) => n.availability, color: (n) => (n.availability === 'active' ? '' : n.availability === 'drain' ? 'magenta-fg' : 'yellow-fg') },
    { title: 'TASKS', min: 5, max: 5, prio: 2, right: true, text: (n) => (n.tasks === null ? '-' : String(n.tasks)) },
    { title: 'CPU', min: 7, max: 24, prio: 3, flex: true, text: (n, w) => usageCell(n.cpuUsed, n.cpuCap, fmtCpu, w, g) },
    { title: 'MEM', min: 7, max: 24, prio: 3, flex: true, text: (n, w) => usageCell(n.memUsed, n.memCap, fmtMem, w, g) },
  ];
}

export function taskColumns(now: number): Column<TaskRow>[] {
  return [
    { title: 'NAME', min: 6, max: 28, prio: 0, text: (t) => t.name, color: (t) => (t.desired === 'shutdown' ? 'gray-fg' : '') },
    { title: 'ID', min: 8, max: 40, prio: 2, text: (t) => t.id },
    { title: 'STATE', min: 7, max: 9, prio: 0, text: (t) => t.state, color: (t) => stateColor(t.state) },
    { title: 'NODE', min: 4, max: 16, prio: 1, text: (t) => t.node ?? '-' },
    { title: 'RESTARTS', min: 3, max: 8, prio: 3, right: true, text: (t) => (t.restarts === null ? '-' : String(t.restarts)) },
    { title: 'AGE', min: 4, max: 5, prio: 2, right: true, text: (t) => (t.createdAt === null ? '-' : ago(Math.max(0, now - t.createdAt))) },
    { title: 'REASON', min: 6, max: 200, prio: 4, flex: true, text: (t) => t.reason || '' },
  ];
}

/** The rows of a list panel: a header line and `height - 1` data lines, the selected row visible. */
export function renderList<R>(
  cols: Column<R>[],
  rows: R[],
  width: number,
  height: number,
  selected: number,
  top: number,
  focused: boolean,
  g: Glyphs = UNICODE_GLYPHS,
): { lines: string[]; top: number } {
  if (width <= 0 || height <= 0) return { lines: [], top: 0 };
  const fitted = fitColumns(cols, rows, width);
  const visible = Math.max(0, height - 1);
  let t = Math.max(0, Math.min(top, Math.max(0, rows.length - visible)));
  if (selected >= 0) {
    if (selected < t) t = selected;
    if (selected >= t + visible) t = selected - visible + 1;
  }
  const lines = [renderHeaderRow(fitted, g)];
  for (let i = t; i < Math.min(rows.length, t + visible); i++) {
    lines.push(renderRow(fitted, rows[i]!, i === selected ? (focused ? 'focused' : 'blurred') : 'none', g));
  }
  return { lines, top: t };
}

export function renderEvents(events: EventLine[], width: number, height: number, scrollBack: number, g: Glyphs = UNICODE_GLYPHS): string[] {
  if (width <= 0 || height <= 0) return [];
  const end = Math.max(0, events.length - Math.max(0, scrollBack));
  const start = Math.max(0, end - height);
  return events.slice(start, end).map((e) => {
    const line = fit(sanitize(`${clock(e.at)} ${e.text}`), width, false, g);
    return e.color && /^[a-z-]+$/.test(e.color) ? `{${e.color}}${esc(line)}{/${e.color}}` : esc(line);
  });
}


// =============================================================================================
// Screen layout: header (2), managers | nodes, tasks, events, footer (1).

export interface BoardLayout {
  /** Height of the managers and nodes row (borders included). */
  topH: number;
  tasksH: number;
  eventsH: number;
  /** Width of the managers panel (the nodes panel takes the rest). */
  mgrW: number;
}

export function boardLayout(W: number, H: number, managers: number, nodes: number): BoardLayout {
  const avail = Math.max(0, H - 3);
  const topRows = Math.max(1, managers, Math.min(nodes, 8)) + 1;
  const topH = Math.min(topRows + 2, Math.max(4, Math.floor(avail * 0.4)));
  const rest = Math.max(0, avail - topH);
  const eventsH = Math.max(Math.min(rest, 4), Math.floor(rest * 0.38));
  const tasksH = Math.max(0, rest - eventsH);
  const mgrW = W >= 120 ? Math.min(72, Math.floor(W * 0.45)) : Math.min(38, Math.floor(W / 2));
  return { topH, tasksH, eventsH, mgrW };
}
