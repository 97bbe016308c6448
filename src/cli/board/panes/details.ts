// The details pane (enter on a task, a manager or a node): its sections and their rendering.
// =============================================================================================
// The details pane (enter on a task, a manager or a node)
import type { Widgets } from 'blessed';
import { stringify as toYaml } from 'yaml';
import { ago } from '../../util.js';
import { arr, num, obj, str, stateColor, type EventLine, type TaskRow } from '../data.js';
import { ASCII_GLYPHS, clock, esc, fit, sanitize, UNICODE_GLYPHS, type Glyphs } from '../text.js';

export interface DetailLine {
  text: string;
  /** A blessed color name, or '' for the default. */
  color: string;
}

export interface DetailSection {
  title: string;
  /** Shown after the title, as is. */
  note?: string;
  lines: DetailLine[];
  /** Wide screens: 'right' sections share the right column, each showing its newest lines. */
  side: 'left' | 'right';
}

/** A fetched value shown in the pane: not yet loaded, loaded, or failed. */
export interface Loaded<T> {
  value: T | null;
  error: string | null;
  at: number;
}

export const line = (text: string, color = ''): DetailLine => ({ text: sanitize(text), color });
const textLines = (text: string, color = ''): DetailLine[] => text.replace(/\n$/, '').split('\n').map((l) => line(l.replace(/\t/g, '  '), color));

function loadingLines<T>(l: Loaded<T> | null, what: string): DetailLine[] | null {
  if (!l || (l.value === null && l.error === null)) return [line(`loading ${what}...`, 'gray-fg')];
  if (l.value === null) return [line(`cannot read ${what}: ${l.error}`, 'red-fg')];
  return null;
}

/** YAML of any value, as display lines (untrusted data: the YAML text is sanitized per line). */
function yamlLines(v: unknown): DetailLine[] {
  let text: string;
  try {
    text = toYaml(v, { lineWidth: 0 });
  } catch {
    try {
      text = JSON.stringify(v, null, 2);
    } catch {
      text = String(v);
    }
  }
  return textLines(text);
}

/**
 * The sections of a task's details: its state, node and attempt, its spec (YAML), its state
 * history, the events the board saw for it, and the tail of its logs.
 */
export function taskDetailSections(task: Loaded<unknown> | null, events: EventLine[], logs: Loaded<string> | null, now = Date.now()): DetailSection[] {
  const out: DetailSection[] = [];
  const t = obj(task?.value);
  const waiting = loadingLines(task, 'the task');
  if (waiting) out.push({ title: 'task', lines: waiting, side: 'left' });
  else {
    const state = str(t.state, '?');
    const rows: [string, string, string?][] = [
      ['id', str(t.id, '?')],
      ['name', str(t.name, '?')],
      ['state', `${state}${str(t.desired) ? ` (desired ${str(t.desired)})` : ''}${num(t.exitCode) !== null ? `, exit code ${num(t.exitCode)}` : ''}`, stateColor(state)],
      ['node', str(t.node) || '-'],
      ['attempt', `${str(t.attempt, '?')} (restarts ${str(t.restarts, '0')})`],
      ['reason', str(t.pendingReason) || str(t.reason) || '-'],
    ];
    if (str(t.detail)) rows.push(['detail', str(t.detail)]);
    const created = num(t.createdAt);
    const updated = num(t.updatedAt);
    if (created !== null) rows.push(['created', `${clock(created)} (${ago(Math.max(0, now - created))} ago)`]);
    if (updated !== null) rows.push(['updated', `${clock(updated)} (${ago(Math.max(0, now - updated))} ago)`]);
    out.push({ title: 'task', lines: rows.map(([k, v, c]) => line(`${k.padEnd(9)}${v}`, c ?? '')), side: 'left' });
    out.push({ title: 'spec', lines: t.spec === undefined ? [line('(none)', 'gray-fg')] : yamlLines(t.spec), side: 'left' });
    const hist = arr(t.history).map((x) => {
      const h = obj(x);
      const at = num(h.at);
      const hs = str(h.state, '?');
      return line(`${at === null ? '--:--:--' : clock(at)} ${hs.padEnd(9)} #${str(h.attempt, '?')} ${(str(h.node) || '-').padEnd(6)} ${str(h.reason)}`, stateColor(hs));
    });
    out.push({ title: 'history', lines: hist.length ? hist : [line('(none)', 'gray-fg')], side: 'left' });
  }
  out.push({
    title: 'events',
    lines: events.length ? events.map((e) => line(`${clock(e.at)} ${e.text}`, e.color)) : [line('(no events for this task in the stream yet)', 'gray-fg')],
    side: 'right',
  });
  const lw = loadingLines(logs, 'the logs');
  const logText = logs?.value ?? '';
  out.push({
    title: 'logs',
    note: logs?.at ? `(tail, read ${clock(logs.at)})` : undefined,
    lines: lw ?? (logText.trim() ? textLines(logText) : [line('(no output yet)', 'gray-fg')]),
    side: 'right',
  });
  return out;
}

/** The sections of a manager's or a node's details: its fields, its process, its tasks. */
export function nodeDetailSections(kind: 'manager' | 'node', raw: unknown, proc: DetailLine[] | null, tasks: TaskRow[], now = Date.now()): DetailSection[] {
  const out: DetailSection[] = [{ title: kind === 'manager' ? 'manager' : 'node', lines: raw === undefined ? [line('(not in the last listing)', 'gray-fg')] : textLines(safeJson(raw)), side: 'left' }];
  if (proc) out.push({ title: 'process (flotilla up)', lines: proc, side: 'right' });
  if (kind === 'node') {
    const lines = tasks.map((t) => line(`${fit(t.name, 20)} ${fit(t.id, 28)} ${fit(t.state, 9)} ${t.createdAt === null ? '-' : ago(Math.max(0, now - t.createdAt))}`, stateColor(t.state)));
    out.push({ title: `tasks on this node (${tasks.length})`, lines: lines.length ? lines : [line('(none)', 'gray-fg')], side: 'right' });
  }
  return out;
}

export function safeJson(v: unknown): string {
  try {
    return JSON.stringify(v, null, 2) ?? String(v);
  } catch {
    return String(v);
  }
}

/**
 * Wraps a line to `w` columns, at a space when there is one in the second half of the row;
 * continuations are indented two more than the line itself (at most half the width).
 */
function wrap(l: DetailLine, w: number): DetailLine[] {
  if (w <= 0) return [];
  if (l.text.length <= w) return [l];
  const indent = ' '.repeat(Math.min(Math.floor(w / 2), (/^ */.exec(l.text)?.[0].length ?? 0) + 2));
  const out: DetailLine[] = [];
  let rest = l.text;
  let first = true;
  while (rest.length > 0) {
    const room = first ? w : w - indent.length;
    let piece = rest.slice(0, room);
    if (rest.length > room) {
      const sp = piece.lastIndexOf(' ');
      if (sp >= Math.floor(room / 2)) piece = piece.slice(0, sp + 1);
    }
    out.push({ text: (first ? '' : indent) + piece, color: l.color });
    rest = rest.slice(piece.length).replace(/^ +/, '');
    first = false;
  }
  return out;
}

function tagLine(l: DetailLine, w: number, g: Glyphs): string {
  const t = esc(fit(l.text, w, false, g));
  return l.color && /^[a-z-]+$/.test(l.color) ? `{${l.color}}${t}{/${l.color}}` : t;
}

function sectionTitle(s: DetailSection): string {
  return sanitize(s.title.toUpperCase() + (s.note ? ` ${s.note}` : ''));
}

function sectionLines(secs: DetailSection[], w: number): DetailLine[] {
  const out: DetailLine[] = [];
  for (const s of secs) {
    if (out.length) out.push({ text: '', color: '' });
    out.push({ text: sectionTitle(s), color: 'cyan-fg' });
    for (const l of s.lines) out.push(...wrap({ text: '  ' + l.text, color: l.color }, w));
  }
  return out;
}

/**
 * The details pane's inner lines, each exactly `width` columns, at most `height` of them.
 * Wide (>= 110 columns): 'left' sections scroll by `scroll` in the left column; 'right'
 * sections share the right column, each showing its newest lines. Narrow: one column, every
 * section in order, scrolled by `scroll`. Returns the lines and the largest useful scroll.
 */
export function renderDetails(secs: DetailSection[], width: number, height: number, scroll: number, g: Glyphs = UNICODE_GLYPHS): { lines: string[]; maxScroll: number } {
  if (width <= 0 || height <= 0) return { lines: [], maxScroll: 0 };
  const left = secs.filter((s) => s.side === 'left');
  const right = secs.filter((s) => s.side === 'right');
  if (width < 110 || right.length === 0 || left.length === 0) {
    const all = sectionLines(secs, width);
    const maxScroll = Math.max(0, all.length - height);
    const top = Math.max(0, Math.min(scroll, maxScroll));
    return { lines: all.slice(top, top + height).map((l) => tagLine(l, width, g)), maxScroll };
  }
  const lw = Math.floor((width - 3) / 2);
  const rw = width - 3 - lw;
  const ll = sectionLines(left, lw);
  const maxScroll = Math.max(0, ll.length - height);
  const top = Math.max(0, Math.min(scroll, maxScroll));
  const lcol = ll.slice(top, top + height);
  // Right column: every section gets its title and a share of the rows; the last one (the
  // logs) takes what the others leave. Each shows its newest lines.
  const rcol: DetailLine[] = [];
  let rowsLeft = height;
  right.forEach((s, i) => {
    const body = s.lines.flatMap((l) => wrap({ text: '  ' + l.text, color: l.color }, rw));
    const sep = rcol.length ? 1 : 0;
    const lastOne = i === right.length - 1;
    const share = lastOne ? rowsLeft - sep - 1 : Math.min(body.length, Math.max(2, Math.floor(height * (0.45 / (right.length - 1))) - sep - 1));
    if (rowsLeft - sep - 1 < 1) return;
    if (sep) rcol.push({ text: '', color: '' });
    const shown = Math.max(0, Math.min(share, rowsLeft - sep - 1));
    const cut = body.length > shown;
    rcol.push({ text: sectionTitle(s) + (cut ? ` (last ${shown} of ${body.length} lines)` : ''), color: 'cyan-fg' });
    rcol.push(...body.slice(body.length - shown));
    rowsLeft = height - rcol.length;
  });
  const lines: string[] = [];
  const bar = g === ASCII_GLYPHS ? '|' : '│';
  for (let i = 0; i < height; i++) {
    const a = lcol[i] ?? { text: '', color: '' };
    const b = rcol[i] ?? { text: '', color: '' };
    lines.push(`${tagLine(a, lw, g)} {gray-fg}${bar}{/gray-fg} ${tagLine(b, rw, g)}`);
  }
  return { lines, maxScroll };
}


/** Draws the details pane over the panels; returns its scroll bounds, or null when it has no room. */
export function drawDetails(
  box: Widgets.BoxElement,
  d: { label: string; sections: DetailSection[]; width: number; height: number; scroll: number },
  g: Glyphs,
): { maxScroll: number } | null {
  const W = d.width;
  const dh = Math.max(0, d.height - 3);
  if (W < 10 || dh < 3) {
    box.hide();
    return null;
  }
  box.top = 2;
  box.left = 0;
  box.width = W;
  box.height = dh;
  const r = renderDetails(d.sections, W - 2, dh - 2, d.scroll, g);
  const lt = sanitize(d.label);
  box.setLabel(esc(lt.length > W - 4 ? fit(lt, Math.max(0, W - 4), false, g) : lt));
  box.setContent(r.lines.join('\n'));
  box.show();
  box.setFront();
  return { maxScroll: r.maxScroll };
}
