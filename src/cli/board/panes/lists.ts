// The four panels (managers, nodes, tasks, events): each drawn into its blessed box from the
// board's rows. A panel too small to show anything is hidden.
import type { Widgets } from 'blessed';
import type { ClusterInfo, EventLine, NodeRow, TaskRow } from '../data.js';
import { managerColumns, nodeColumns, renderEvents, renderList, taskColumns } from '../layout.js';
import { esc, sanitize, type Glyphs } from '../text.js';
import { nodeUsageColumn, taskUsageColumn } from '../usage.js';

/** Where a box goes; false (and hidden) when it has no room for a border and a line. */
export function place(el: Widgets.BoxElement, top: number, left: number, width: number, height: number): boolean {
  if (width < 3 || height < 3) {
    el.hide();
    return false;
  }
  el.show();
  el.top = top;
  el.left = left;
  el.width = width;
  el.height = height;
  return true;
}

export function focusStyle(el: Widgets.BoxElement, on: boolean): void {
  const st = el.style as { border?: { fg?: string } };
  if (st.border) st.border.fg = on ? 'cyan' : 'gray';
}

/** A list panel's place, selection and scroll; `staleTag` is shown in its label. */
export interface ListPane {
  box: Widgets.BoxElement;
  top: number;
  left: number;
  width: number;
  height: number;
  sel: number;
  /** The first row shown (kept across draws). */
  scrollTop: number;
  focused: boolean;
  staleTag: string;
  g: Glyphs;
}

/** Draws the managers panel; returns its new first row (or the old one when hidden). */
export function drawManagers(p: ListPane, cluster: ClusterInfo | null, leader: string | null): number {
  if (!place(p.box, p.top, p.left, p.width, p.height)) return p.scrollTop;
  const rows = cluster?.managers ?? [];
  const r = renderList(managerColumns(leader, p.g), rows, p.width - 2, p.height - 2, rows.length && p.focused ? p.sel : -1, p.scrollTop, p.focused, p.g);
  p.box.setLabel(` managers ${p.staleTag}`);
  p.box.setContent(r.lines.join('\n'));
  focusStyle(p.box, p.focused);
  return r.top;
}

export function drawNodes(p: ListPane, nodes: NodeRow[]): number {
  if (!place(p.box, p.top, p.left, p.width, p.height)) return p.scrollTop;
  const r = renderList([...nodeColumns(p.g), nodeUsageColumn(p.g)], nodes, p.width - 2, p.height - 2, nodes.length ? p.sel : -1, p.scrollTop, p.focused, p.g);
  p.box.setLabel(` nodes ${nodes.length} ${p.staleTag}`);
  p.box.setContent(r.lines.join('\n'));
  focusStyle(p.box, p.focused);
  return r.top;
}

/** The tasks panel: `shown` are the tasks the filter selects out of `all`. */
export function drawTasks(p: ListPane, t: { shown: TaskRow[]; all: TaskRow[]; filter: string; loaded: boolean; now: number }): number {
  if (!place(p.box, p.top, p.left, p.width, p.height)) return p.scrollTop;
  const vt = t.shown;
  // The measured CPU (a sparkline and the latest value) goes before the reason.
  const cols = taskColumns(t.now);
  cols.splice(cols.length - 1, 0, taskUsageColumn(p.g));
  const r = renderList(cols, vt, p.width - 2, p.height - 2, vt.length ? p.sel : -1, p.scrollTop, p.focused, p.g);
  const count = t.filter ? `${vt.length}/${t.all.length} matching "${esc(sanitize(t.filter.slice(0, 30)))}"` : `${t.all.length}`;
  p.box.setLabel(` tasks ${count} ${p.staleTag}`);
  const lines = r.lines;
  if (vt.length === 0) lines.push(!t.loaded ? '{gray-fg}loading…{/gray-fg}' : t.filter ? '{gray-fg}no task matches the filter{/gray-fg}' : '{gray-fg}no tasks{/gray-fg}');
  p.box.setContent(lines.join('\n'));
  focusStyle(p.box, p.focused);
  return r.top;
}

export function drawEvents(p: Omit<ListPane, 'sel' | 'scrollTop' | 'staleTag'>, events: EventLine[], scrollBack: number): void {
  if (!place(p.box, p.top, p.left, p.width, p.height)) return;
  p.box.setLabel(` events ${scrollBack > 0 ? `(scrolled back ${scrollBack}) ` : ''}`);
  p.box.setContent(renderEvents(events, p.width - 2, p.height - 2, scrollBack, p.g).join('\n'));
  focusStyle(p.box, p.focused);
}
