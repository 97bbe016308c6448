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
import type { Widgets } from 'blessed';
import type WebSocket from 'ws';
import type { Command } from 'commander';
import { FlotillaClient, splitAddr } from '../client/client.js';
import { FlotillaError } from '../protocol/errors.js';
import { stringify as toYaml } from 'yaml';
import { action, ago, managersFrom, parseIntFlag, tokenFrom, upDir, UsageError, caFrom } from './util.js';
import { monoNow } from '../clock.js';
import { pidRunsNode, readProcesses, type ProcessesFile, type ProcessRecord } from './up.js';

// =============================================================================================
// Normalized data (everything the API sends is treated as untrusted shape)

export interface ManagerRow {
  id: string;
  addr: string;
  role: string;
  voter: boolean;
  term: number | null;
  commitIndex: number | null;
  appliedIndex: number | null;
  lag: number | null;
  lastContactMs: number | null;
  healthy: boolean;
}

export interface ClusterInfo {
  leader: string | null;
  term: number | null;
  managers: ManagerRow[];
}

export interface NodeRow {
  id: string;
  status: string;
  statusReason: string;
  availability: string;
  tasks: number | null;
  cpuUsed: number | null;
  cpuCap: number | null;
  memUsed: number | null;
  memCap: number | null;
  lastHeartbeat: number | null;
}

export interface TaskRow {
  id: string;
  name: string;
  state: string;
  desired: string;
  node: string | null;
  restarts: number | null;
  reason: string;
  createdAt: number | null;
  updatedAt: number | null;
}

export interface EventLine {
  at: number;
  text: string;
  /** A blessed color name, or '' for the default. */
  color: string;
}

const MAX_ROWS = 5000;

type Obj = Record<string, unknown>;
const obj = (v: unknown): Obj => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Obj) : {});
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v.slice(0, MAX_ROWS) : []);
const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
/** A display string from untrusted data (sanitized: single-width, no control characters). */
function str(v: unknown, d = ''): string {
  if (typeof v === 'string') return sanitize(v.length > 500 ? v.slice(0, 500) : v);
  if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  if (typeof v === 'boolean') return String(v);
  return d;
}

export function normalizeCluster(raw: unknown): ClusterInfo {
  const o = obj(raw);
  const managers = arr(o.managers).map((x): ManagerRow => {
    const m = obj(x);
    return {
      id: str(m.id, '?'),
      addr: str(m.addr),
      role: str(m.role, '?'),
      voter: m.voter !== false,
      term: num(m.term),
      commitIndex: num(m.commitIndex),
      appliedIndex: num(m.appliedIndex),
      lag: num(m.lag),
      lastContactMs: num(m.lastContactMs),
      healthy: m.healthy === true,
    };
  });
  return { leader: str(o.leader) || null, term: num(o.term), managers };
}

export function normalizeNodes(raw: unknown): NodeRow[] {
  return arr(obj(raw).nodes)
    .map((x): NodeRow => {
      const n = obj(x);
      const usage = obj(n.usage);
      const res = obj(n.resources);
      return {
        id: str(n.id, '?'),
        status: str(n.status, '?'),
        statusReason: str(n.statusReason),
        availability: str(n.availability, '?'),
        tasks: num(usage.tasks),
        cpuUsed: num(usage.cpu),
        cpuCap: num(res.cpu),
        memUsed: num(usage.memory),
        memCap: num(res.memory),
        lastHeartbeat: num(n.lastHeartbeat),
      };
    })
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

export function normalizeTasks(raw: unknown): TaskRow[] {
  return arr(obj(raw).tasks)
    .map((x): TaskRow => {
      const t = obj(x);
      const pending = str(t.pendingReason);
      return {
        id: str(t.id, '?'),
        name: str(t.name) || str(t.id, '?'),
        state: str(t.state, '?'),
        desired: str(t.desired),
        node: str(t.node) || null,
        restarts: num(t.restarts),
        reason: pending || str(t.reason),
        createdAt: num(t.createdAt) ?? num(t.updatedAt),
        updatedAt: num(t.updatedAt),
      };
    })
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : (a.createdAt ?? 0) - (b.createdAt ?? 0) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)));
}

/** True when the filter (case-insensitive, space-separated words, all must match) selects the task. */
export function taskMatches(t: TaskRow, filter: string): boolean {
  const words = filter.toLowerCase().split(/\s+/).filter(Boolean);
  if (words.length === 0) return true;
  const hay = `${t.name} ${t.id} ${t.state} ${t.node ?? ''} ${t.reason}`.toLowerCase();
  return words.every((w) => hay.includes(w));
}

export function stateColor(state: string): string {
  switch (state) {
    case 'running':
      return 'green-fg';
    case 'pending':
    case 'assigned':
    case 'starting':
      return 'yellow-fg';
    case 'succeeded':
      return 'cyan-fg';
    case 'failed':
    case 'lost':
      return 'red-fg';
    case 'stopped':
      return 'gray-fg';
    default:
      return '';
  }
}

/** One line for the events pane, or null for frames that are not events. */
export function describeEvent(raw: unknown, now = Date.now()): EventLine | null {
  const e = obj(raw);
  if (e.kind === 'hello') return null;
  const at = num(e.at) ?? now;
  if (e.kind === 'reset') return { at: now, text: 'event stream reset: older events were dropped by the manager; resynced', color: 'yellow-fg' };
  const type = str(e.type);
  const task = obj(e.task);
  const node = obj(e.node);
  const tname = str(task.id) || str(task.name, '?');
  const reason = str(task.reason);
  switch (type) {
    case 'cluster.leader':
      return { at, text: `leader elected: ${str(e.leader, '?')} (term ${str(e.term, '?')})`, color: 'magenta-fg' };
    case 'task.created':
      return { at, text: `task ${tname} created`, color: '' };
    case 'task.updated': {
      const state = str(task.state, '?');
      const change = str(e.change);
      if (change === 'desired') return { at, text: `task ${tname} stop requested${reason ? `: ${reason}` : ''}`, color: 'yellow-fg' };
      if (change === 'restart') return { at, text: `task ${tname} restarting (attempt ${str(task.attempt, '?')})${reason ? `: ${reason}` : ''}`, color: 'yellow-fg' };
      if (change === 'detail') return { at, text: `task ${tname} ${state}: ${str(task.detail) || reason || 'progress'}`, color: 'gray-fg' };
      const on = str(task.node) ? ` on ${str(task.node)}` : '';
      return { at, text: `task ${tname} ${str(e.prevState, '?')} -> ${state}${on}${reason ? ` (${reason})` : ''}`, color: stateColor(state) };
    }
    case 'task.removed':
      return { at, text: `task ${tname} removed`, color: 'gray-fg' };
    case 'node.registered':
      return { at, text: `node ${str(node.id, '?')} registered`, color: 'cyan-fg' };
    case 'node.updated': {
      const id = str(node.id, '?');
      const change = str(e.change);
      if (change === 'availability') return { at, text: `node ${id} availability -> ${str(node.availability, '?')}`, color: 'yellow-fg' };
      if (change === 'registration') return { at, text: `node ${id} re-registered`, color: 'cyan-fg' };
      const status = str(node.status, '?');
      const why = str(node.statusReason);
      return { at, text: `node ${id} ${str(e.prevStatus, '?')} -> ${status}${why ? ` (${why})` : ''}`, color: status === 'ready' ? 'green-fg' : status === 'down' ? 'red-fg' : 'yellow-fg' };
    }
    case 'kv.put':
      return { at, text: `kv ${str(e.key, '?')} written (version ${str(e.version, '?')})`, color: 'gray-fg' };
    case 'kv.deleted':
      return { at, text: `kv ${str(e.key, '?')} deleted`, color: 'gray-fg' };
    default:
      return { at, text: type ? `event ${type}` : 'unrecognized event frame', color: 'gray-fg' };
  }
}

// =============================================================================================
// Text helpers

export interface Glyphs {
  ellipsis: string;
  full: string;
  empty: string;
}
export const UNICODE_GLYPHS: Glyphs = { ellipsis: '…', full: '█', empty: '░' };
export const ASCII_GLYPHS: Glyphs = { ellipsis: '~', full: '#', empty: '.' };

/** Printable, single-width text: control characters become spaces, anything beyond Latin-1 '?'. */
export function sanitize(s: string): string {
  return s.replace(/[\x00-\x1f\x7f-\x9f]/g, ' ').replace(/[^\x20-\x7e\xa0-\xff]/gu, '?');
}

/** Escapes blessed tag braces (after padding: the escape does not change the shown width). */
export function esc(s: string): string {
  return s.replace(/[{}]/g, (c) => (c === '{' ? '{open}' : '{close}'));
}

/** Pads or truncates plain text to exactly w columns. */
export function fit(s: string, w: number, right = false, g: Glyphs = UNICODE_GLYPHS): string {
  if (w <= 0) return '';
  if (s.length > w) return w === 1 ? s.slice(0, 1) : s.slice(0, w - 1) + g.ellipsis;
  return right ? s.padStart(w) : s.padEnd(w);
}

export function bar(used: number | null, cap: number | null, w: number, g: Glyphs = UNICODE_GLYPHS): string {
  if (w <= 0) return '';
  if (used === null || cap === null || cap <= 0) return g.empty.repeat(w);
  const frac = Math.min(1, Math.max(0, used / cap));
  const n = used > 0 ? Math.max(1, Math.round(frac * w)) : 0;
  return g.full.repeat(n) + g.empty.repeat(w - n);
}

export function fmtCpu(m: number | null): string {
  if (m === null) return '-';
  return m >= 1000 ? `${+(m / 1000).toFixed(1)}` : `${Math.round(m)}m`;
}

export function fmtMem(b: number | null): string {
  if (b === null) return '-';
  const units = ['', 'K', 'M', 'G', 'T', 'P'];
  let v = Math.max(0, b);
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v >= 10 || i === 0 ? Math.round(v) : +v.toFixed(1)}${units[i]}`;
}

export function clock(ms: number): string {
  const d = new Date(Number.isFinite(ms) ? ms : Date.now());
  const p = (n: number) => String(n).padStart(2, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

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
// The details pane (enter on a task, a manager or a node)

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

const line = (text: string, color = ''): DetailLine => ({ text: sanitize(text), color });
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

function safeJson(v: unknown): string {
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

// =============================================================================================
// The header

export interface HeaderInput {
  now: number;
  cluster: ClusterInfo | null;
  /** When this board last read the cluster, on its monotonic clock (0: never). */
  clusterAt: number;
  /** The manager the HTTP client talks to (address). */
  via: string;
  reconnecting: boolean;
  /** Why, for the banner. */
  problem: string | null;
  eventsFrom: string | null;
  nodes: NodeRow[];
  tasks: TaskRow[];
  staleSince: number | null;
}

/** True when the cluster view names a leader that itself reports being leader. */
export function hasLeader(c: ClusterInfo | null): boolean {
  if (!c || !c.leader) return false;
  const row = c.managers.find((m) => m.id === c.leader);
  return row ? row.role === 'leader' : true;
}

export function managerName(c: ClusterInfo | null, addr: string): string {
  const m = c?.managers.find((x) => x.addr === addr);
  return m ? `${m.id} (${addr})` : addr;
}

export function renderHeader(h: HeaderInput, width: number, g: Glyphs = UNICODE_GLYPHS): [string, string] {
  if (width <= 0) return ['', ''];
  const c = h.cluster;
  const leaderOk = hasLeader(c);
  const parts: string[] = [];
  parts.push('{bold}flotilla{/bold}');
  if (c) {
    parts.push(leaderOk ? `leader {green-fg}{bold}${esc(sanitize(c.leader ?? ''))}{/bold}{/green-fg}` : '{red-fg}{bold}no leader{/bold}{/red-fg}');
    parts.push(`term ${c.term ?? '-'}`);
  } else parts.push('{yellow-fg}cluster unknown{/yellow-fg}');
  parts.push(h.reconnecting ? '{yellow-fg}reconnecting…{/yellow-fg}'.replace('…', g.ellipsis) : `via ${esc(sanitize(managerName(c, h.via)))}`);
  if (c) parts.push(`${c.managers.filter((m) => m.healthy).length}/${c.managers.length} managers healthy`);
  const right = clock(h.now);
  // The tagged parts vary in markup length; fit by plain length and drop trailing parts.
  const plainLen = (s: string) => s.replace(/\{[^{}]*\}/g, '').length;
  let left = parts.join('  ');
  while (parts.length > 1 && plainLen(left) + right.length + 1 > width) {
    parts.pop();
    left = parts.join('  ');
  }
  const pad = Math.max(1, width - plainLen(left) - right.length);
  const line1 = plainLen(left) + right.length + 1 > width ? esc(fit(left.replace(/\{[^{}]*\}/g, ''), width, false, g)) : left + ' '.repeat(pad) + right;

  let line2: string;
  const staleFor = h.staleSince !== null ? ` ${g === ASCII_GLYPHS ? '-' : '—'} showing data from ${ago(h.now - h.staleSince)} ago (stale)` : '';
  if (c && !leaderOk) {
    line2 = `{white-fg}{red-bg}{bold}${esc(fit(` NO LEADER: an election is under way${staleFor}`, width, false, g))}{/bold}{/red-bg}{/white-fg}`;
  } else if (h.problem) {
    line2 = `{black-fg}{yellow-bg}${esc(fit(` ${sanitize(h.problem)}${staleFor}`, width, false, g))}{/yellow-bg}{/black-fg}`;
  } else {
    const ready = h.nodes.filter((n) => n.status === 'ready').length;
    const running = h.tasks.filter((t) => t.state === 'running').length;
    const summary = ` nodes ${ready}/${h.nodes.length} ready  tasks ${running}/${h.tasks.length} running  events ${h.eventsFrom ? `from ${h.eventsFrom}` : 'disconnected'}`;
    line2 = `{gray-fg}${esc(fit(sanitize(summary), width, false, g))}{/gray-fg}`;
  }
  return [line1, line2];
}

export const HELP_TEXT = [
  'flotilla board keys',
  '',
  '  q, Ctrl-C      quit',
  '  tab, S-tab     focus: tasks, managers, nodes, events',
  '  up/down, k/j   move the selection (or scroll events)',
  '  PgUp/PgDn      page; g/G or Home/End: first/last',
  '  enter          details of the selected task, manager or',
  '                 node (esc, enter or q closes them)',
  '  /              filter tasks by text (enter keeps it,',
  '                 esc clears it)',
  '  s              stop the selected task (confirm with y)',
  '  d              drain the selected node (confirm with y)',
  '  p / a          pause / activate the selected node',
  '  K              kill the selected manager or node process',
  '                 (SIGKILL; clusters of `flotilla up` only)',
  '  R              restart it (through `flotilla up`)',
  '  r              refresh now',
  '  ?              this help (any key closes it)',
];

// =============================================================================================
// The board

type Focus = 'tasks' | 'managers' | 'nodes' | 'events';
const FOCUS_ORDER: Focus[] = ['tasks', 'managers', 'nodes', 'events'];
type Mode = 'normal' | 'filter' | 'confirm' | 'help' | 'details';

/** What the details pane shows. */
type Details =
  | { kind: 'task'; id: string; task: Loaded<unknown> | null; logs: Loaded<string> | null; scroll: number; maxScroll: number; busy: boolean; fetchedAt: number }
  | { kind: 'manager' | 'node'; id: string; scroll: number; maxScroll: number };

interface KeyInfo {
  name?: string;
  full?: string;
  ctrl?: boolean;
  shift?: boolean;
}

export interface BoardOptions {
  managers: string[];
  intervalMs: number;
  /** API token (flt_…), if the cluster requires one. */
  token?: string;
  /** The cluster CA (PEM) when the cluster uses TLS. */
  ca?: string;
  /** Where `flotilla up` keeps the cluster (for K and R: <dir>/processes.json). */
  upDir?: string;
}

interface Libs {
  blessed: typeof import('blessed');
  WebSocket: typeof WebSocket;
}

const EVENT_LIMIT = 200;
const TASK_EVENT_LIMIT = 100;
const LOG_TAIL = 200;

class Board {
  private readonly client: FlotillaClient;
  private screen!: Widgets.Screen;
  private header!: Widgets.BoxElement;
  private mgrBox!: Widgets.BoxElement;
  private nodeBox!: Widgets.BoxElement;
  private taskBox!: Widgets.BoxElement;
  private eventBox!: Widgets.BoxElement;
  private footer!: Widgets.BoxElement;
  private helpBox!: Widgets.BoxElement;
  private detailBox!: Widgets.BoxElement;
  private g: Glyphs = UNICODE_GLYPHS;

  // data
  private cluster: ClusterInfo | null = null;
  /** The last answers as sent (for the details pane), by id. */
  private rawManagers = new Map<string, unknown>();
  private rawNodes = new Map<string, unknown>();
  /** What the event stream said about each task (newest last), for the details pane. */
  private taskEvents = new Map<string, EventLine[]>();
  private clusterAt = 0;
  private clusterErr: string | null = null;
  private nodes: NodeRow[] = [];
  private nodesAt = 0;
  private nodesErr: string | null = null;
  private tasks: TaskRow[] = [];
  private tasksAt = 0;
  private tasksErr: string | null = null;
  private events: EventLine[] = [];
  private inflight = { cluster: false, nodes: false, tasks: false };
  private waitingSince = 0;

  // view state
  private focus: Focus = 'tasks';
  private mode: Mode = 'normal';
  private filter = '';
  private taskSel = 0;
  private taskSelId: string | null = null;
  private taskTop = 0;
  private nodeSel = 0;
  private nodeSelId: string | null = null;
  private nodeTop = 0;
  private mgrSel = 0;
  private mgrSelId: string | null = null;
  private mgrTop = 0;
  private eventScroll = 0;
  private details: Details | null = null;
  private confirm: { prompt: string; run: () => Promise<string> } | null = null;
  private message: { text: string; color: string; at: number } | null = null;
  private lastTaskRows = 6;

  // events stream
  private ws: WebSocket | null = null;
  private wsAddr: string | null = null;
  private wsManager: string | null = null;
  private wsOpen = false;
  private wsNext = 0;
  private lastSeq = 0;
  private lastFrameAt = 0;
  private wsTimer: NodeJS.Timeout | null = null;

  private timers: NodeJS.Timeout[] = [];
  private refreshSoon: NodeJS.Timeout | null = null;
  private renderQueued = false;
  private closed = false;
  private done!: () => void;

  constructor(
    private readonly opts: BoardOptions,
    private readonly libs: Libs,
  ) {
    this.client = new FlotillaClient(opts.managers, {
      timeoutMs: Math.max(2500, Math.min(10_000, opts.intervalMs * 3)),
      attemptTimeoutMs: 1500,
      token: opts.token,
      ca: opts.ca,
      onWait: () => {
        this.waitingSince = monoNow();
        this.scheduleRender();
      },
    });
  }

  run(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.done = resolve;
      this.setup();
      this.refresh();
      this.connectEvents();
      this.timers.push(setInterval(() => this.refresh(), this.opts.intervalMs));
      this.timers.push(setInterval(() => this.tick(), 1000));
    });
  }

  // ---- UI setup

  private setup(): void {
    const { blessed } = this.libs;
    this.screen = blessed.screen({ smartCSR: true, warnings: false, title: 'flotilla board', fullUnicode: false, autoPadding: false });
    const tput = (this.screen as unknown as { program?: { tput?: { unicode?: boolean } } }).program?.tput;
    this.g = tput?.unicode === false ? ASCII_GLYPHS : UNICODE_GLYPHS;
    // On a UTF-8 terminal, draw borders and bars as UTF-8 rather than through the alternate
    // character set: tmux (and capture-pane) do not map every ACS glyph, e.g. the block.
    if (tput?.unicode) (tput as { brokenACS?: boolean }).brokenACS = true;
    const box = (o: Widgets.BoxOptions) =>
      blessed.box({ parent: this.screen, tags: true, wrap: false, ...o } as Widgets.BoxOptions);
    const bordered = (label: string) => box({ border: { type: 'line' }, label, style: { border: { fg: 'gray' }, label: { bold: true } } });
    this.header = box({ top: 0, left: 0, height: 2 });
    this.mgrBox = bordered(' managers ');
    this.nodeBox = bordered(' nodes ');
    this.taskBox = bordered(' tasks ');
    this.eventBox = bordered(' events ');
    this.footer = box({ height: 1, left: 0 });
    this.helpBox = box({
      top: 'center',
      left: 'center',
      width: 60,
      height: HELP_TEXT.length + 2,
      border: { type: 'line' },
      label: ' help ',
      hidden: true,
      style: { border: { fg: 'cyan' }, bg: 'black' },
    });
    this.detailBox = box({ border: { type: 'line' }, label: ' details ', hidden: true, style: { border: { fg: 'cyan' }, label: { bold: true } } });
    this.screen.on('keypress', (ch: string | undefined, key: KeyInfo | undefined) => {
      try {
        this.onKey(ch, key ?? {});
      } catch (e) {
        this.flash(`error: ${(e as Error)?.message ?? String(e)}`, 'red-fg');
      }
    });
    this.screen.on('resize', () => this.scheduleRender());
    this.render();
  }

  private flash(text: string, color = ''): void {
    this.message = { text, color, at: monoNow() };
    this.scheduleRender();
  }

  // ---- data

  private refresh(): void {
    if (this.closed) return;
    void this.fetchCluster();
    void this.fetchNodes();
    void this.fetchTasks();
    if (this.details?.kind === 'task') void this.fetchTaskDetails();
  }

  private refreshAfterEvent(): void {
    if (this.refreshSoon || this.closed) return;
    this.refreshSoon = setTimeout(() => {
      this.refreshSoon = null;
      this.refresh();
    }, 150);
  }

  private async fetchCluster(): Promise<void> {
    if (this.inflight.cluster) return;
    this.inflight.cluster = true;
    try {
      const raw = await this.client.get('/v1/cluster');
      this.cluster = normalizeCluster(raw);
      this.rawManagers = new Map(arr(obj(raw).managers).map((m) => [str(obj(m).id, '?'), m] as const));
      this.clusterAt = monoNow();
      this.clusterErr = null;
      this.waitingSince = 0;
    } catch (e) {
      this.clusterErr = errMsg(e);
    } finally {
      this.inflight.cluster = false;
      this.scheduleRender();
    }
  }

  private async fetchNodes(): Promise<void> {
    if (this.inflight.nodes) return;
    this.inflight.nodes = true;
    try {
      const raw = await this.client.get('/v1/nodes');
      this.nodes = normalizeNodes(raw);
      this.rawNodes = new Map(arr(obj(raw).nodes).map((n) => [str(obj(n).id, '?'), n] as const));
      this.nodesAt = monoNow();
      this.nodesErr = null;
    } catch (e) {
      this.nodesErr = errMsg(e);
    } finally {
      this.inflight.nodes = false;
      this.scheduleRender();
    }
  }

  private async fetchTasks(): Promise<void> {
    if (this.inflight.tasks) return;
    this.inflight.tasks = true;
    try {
      const raw = await this.client.get('/v1/tasks');
      this.tasks = normalizeTasks(raw);
      this.tasksAt = monoNow();
      this.tasksErr = null;
    } catch (e) {
      this.tasksErr = errMsg(e);
    } finally {
      this.inflight.tasks = false;
      this.scheduleRender();
    }
  }

  private tick(): void {
    if (this.closed) return;
    // A silent event stream (a paused manager) is dropped after 40 s; the server pings every 15 s.
    if (this.ws && this.wsOpen && monoNow() - this.lastFrameAt > 40_000) this.ws.terminate();
    this.scheduleRender();
  }

  // ---- event stream

  private connectEvents(): void {
    if (this.closed) return;
    const managers = this.client.managers;
    // Start with the manager the HTTP client uses, then go round.
    const cur = managers.indexOf(this.client.current());
    const addr = managers[(Math.max(0, cur) + this.wsNext) % managers.length]!;
    this.wsAddr = addr;
    this.wsOpen = false;
    let ws: WebSocket;
    try {
      ws = new this.libs.WebSocket(this.client.url(addr, `/v1/events?since=${this.lastSeq}`, true), { handshakeTimeout: 2000, maxPayload: 4 * 1024 * 1024, ...this.client.wsOptions() });
    } catch (e) {
      this.addEvent({ at: Date.now(), text: `events: cannot connect to ${addr}: ${errMsg(e)}`, color: 'red-fg' });
      this.wsNext++;
      this.wsTimer = setTimeout(() => this.connectEvents(), 1000);
      return;
    }
    this.ws = ws;
    ws.on('open', () => {
      this.wsOpen = true;
      this.lastFrameAt = monoNow();
      this.wsNext = 0;
      this.scheduleRender();
    });
    ws.on('ping', () => {
      this.lastFrameAt = monoNow();
    });
    ws.on('message', (data: WebSocket.RawData) => {
      this.lastFrameAt = monoNow();
      let frame: unknown;
      try {
        frame = JSON.parse(data.toString());
      } catch {
        return;
      }
      try {
        this.onFrame(frame, addr);
      } catch (e) {
        this.addEvent({ at: Date.now(), text: `events: bad frame: ${errMsg(e)}`, color: 'red-fg' });
      }
    });
    ws.on('error', () => {});
    ws.on('close', () => {
      if (this.ws !== ws) return;
      const wasOpen = this.wsOpen;
      this.ws = null;
      this.wsOpen = false;
      this.wsManager = null;
      if (this.closed) return;
      if (wasOpen) this.addEvent({ at: Date.now(), text: `events: lost the stream from ${addr}; reconnecting`, color: 'yellow-fg' });
      this.wsNext++;
      this.refresh();
      this.wsTimer = setTimeout(() => this.connectEvents(), wasOpen ? 200 : 700);
      this.scheduleRender();
    });
  }

  private onFrame(frame: unknown, addr: string): void {
    const f = obj(frame);
    if (f.kind === 'hello') {
      this.wsManager = str(f.manager) || addr;
      this.addEvent({ at: Date.now(), text: `events: streaming from ${this.wsManager} (${addr})`, color: 'gray-fg' });
      return;
    }
    if (f.kind === 'reset') {
      const last = num(f.lastSeq);
      const oldest = num(f.oldestSeq);
      if (last !== null && oldest !== null && this.lastSeq < oldest - 1) {
        // We fell out of the ring (or this is the first connect to a long-lived cluster):
        // resume from the last ~200 events that still exist.
        this.lastSeq = Math.max(0, oldest - 1, last - EVENT_LIMIT);
        this.addEvent(describeEvent(f)!);
        this.ws?.close();
      }
      // Otherwise this manager is behind us: its events up to lastSeq are skipped as duplicates.
      this.refreshAfterEvent();
      return;
    }
    const seq = num(f.seq);
    if (seq !== null) {
      if (seq <= this.lastSeq) return;
      this.lastSeq = seq;
    }
    const line = describeEvent(f);
    if (line) {
      this.addEvent(line);
      const tid = typeof f.type === 'string' && f.type.startsWith('task.') ? str(obj(f.task).id) : '';
      if (tid) this.noteTaskEvent(tid, line);
    }
    this.refreshAfterEvent();
  }

  private noteTaskEvent(id: string, e: EventLine): void {
    let list = this.taskEvents.get(id);
    if (!list) {
      if (this.taskEvents.size >= MAX_ROWS) this.taskEvents.delete(this.taskEvents.keys().next().value!);
      list = [];
      this.taskEvents.set(id, list);
    }
    list.push(e);
    if (list.length > TASK_EVENT_LIMIT) list.splice(0, list.length - TASK_EVENT_LIMIT);
    if (this.details?.kind === 'task' && this.details.id === id) this.scheduleRender();
  }

  private addEvent(e: EventLine): void {
    this.events.push(e);
    if (this.events.length > EVENT_LIMIT) this.events.splice(0, this.events.length - EVENT_LIMIT);
    if (this.eventScroll > 0) this.eventScroll = Math.min(this.eventScroll + 1, this.events.length);
    this.scheduleRender();
  }

  // ---- keys

  private visibleTasks(): TaskRow[] {
    return this.filter ? this.tasks.filter((t) => taskMatches(t, this.filter)) : this.tasks;
  }

  private onKey(ch: string | undefined, key: KeyInfo): void {
    // blessed reports shift-tab as name 'tab' with shift set.
    const name = key.name === 'tab' && (key.shift || key.full === 'S-tab') ? 'S-tab' : (key.name ?? '');
    if (key.full === 'C-c' || (key.ctrl && name === 'c')) return this.quit();
    if (name === 'return') return; // blessed follows it with 'enter'
    switch (this.mode) {
      case 'help':
        this.mode = 'normal';
        break;
      case 'details':
        this.detailsKey(ch, name);
        break;
      case 'filter':
        if (name === 'enter' || name === 'linefeed') this.mode = 'normal';
        else if (name === 'escape') {
          this.filter = '';
          this.mode = 'normal';
        } else if (name === 'backspace' || name === 'delete') this.filter = this.filter.slice(0, -1);
        else if (key.full === 'C-u') this.filter = '';
        else if (name === 'up' || name === 'down') this.move(name === 'up' ? -1 : 1);
        else if (ch && ch.length === 1 && ch >= ' ' && ch !== '\x7f' && this.filter.length < 64) this.filter += ch;
        this.taskTop = 0;
        break;
      case 'confirm': {
        const c = this.confirm;
        this.confirm = null;
        this.mode = 'normal';
        if (c && (ch === 'y' || ch === 'Y')) {
          this.flash(`${c.prompt.replace(/\?.*$/, '')}…`, 'yellow-fg');
          c.run().then(
            (msg) => {
              this.flash(msg, 'green-fg');
              this.refresh();
            },
            (e) => this.flash(`error: ${errMsg(e)}`, 'red-fg'),
          );
        } else this.flash('cancelled');
        break;
      }
      default:
        this.normalKey(ch, name);
    }
    this.scheduleRender();
  }

  private normalKey(ch: string | undefined, name: string): void {
    switch (ch) {
      case 'q':
        return this.quit();
      case '?':
        this.mode = 'help';
        return;
      case '/':
        this.mode = 'filter';
        this.focus = 'tasks';
        return;
      case 'j':
        return this.move(1);
      case 'k':
        return this.move(-1);
      case 'g':
        return this.move(-1e9);
      case 'G':
        return this.move(1e9);
      case 'r':
        this.refresh();
        this.flash('refreshing');
        return;
      case 's':
        return this.askStop();
      case 'd':
        return this.nodeAction('drain');
      case 'p':
        return this.nodeAction('pause');
      case 'a':
        return this.nodeAction('active');
      case 'K':
        return this.askKill();
      case 'R':
        return this.askRestart();
    }
    switch (name) {
      case 'enter':
      case 'linefeed':
        return this.openDetails();
      case 'tab':
        this.focus = FOCUS_ORDER[(FOCUS_ORDER.indexOf(this.focus) + 1) % FOCUS_ORDER.length]!;
        return;
      case 'S-tab':
        this.focus = FOCUS_ORDER[(FOCUS_ORDER.indexOf(this.focus) + FOCUS_ORDER.length - 1) % FOCUS_ORDER.length]!;
        return;
      case 'up':
        return this.move(-1);
      case 'down':
        return this.move(1);
      case 'pageup':
        return this.move(-Math.max(1, this.lastTaskRows - 1));
      case 'pagedown':
        return this.move(Math.max(1, this.lastTaskRows - 1));
      case 'home':
        return this.move(-1e9);
      case 'end':
        return this.move(1e9);
      case 'escape':
        if (this.filter) {
          this.filter = '';
          this.flash('filter cleared');
        }
        return;
    }
  }

  private move(delta: number): void {
    if (this.focus === 'tasks') {
      const n = this.visibleTasks().length;
      this.taskSel = Math.max(0, Math.min(n - 1, this.taskSel + delta));
      this.taskSelId = this.visibleTasks()[this.taskSel]?.id ?? null;
    } else if (this.focus === 'nodes') {
      this.nodeSel = Math.max(0, Math.min(this.nodes.length - 1, this.nodeSel + delta));
      this.nodeSelId = this.nodes[this.nodeSel]?.id ?? null;
    } else if (this.focus === 'managers') {
      const ms = this.cluster?.managers ?? [];
      this.mgrSel = Math.max(0, Math.min(ms.length - 1, this.mgrSel + delta));
      this.mgrSelId = ms[this.mgrSel]?.id ?? null;
    } else {
      // Events: up scrolls back in time.
      this.eventScroll = Math.max(0, Math.min(this.events.length - 1, this.eventScroll - delta));
    }
  }

  private askStop(): void {
    const t = this.visibleTasks()[this.taskSel];
    if (!t) return this.flash('no task selected', 'yellow-fg');
    if (t.desired === 'shutdown' && ['stopped', 'succeeded', 'failed', 'lost'].includes(t.state)) return this.flash(`task ${t.id} is already ${t.state}`);
    this.mode = 'confirm';
    this.confirm = {
      prompt: `Stop task ${t.id}? [y/N]`,
      run: async () => {
        await this.client.delete(`/v1/tasks/${encodeURIComponent(t.id)}`, { timeoutMs: 10_000 });
        return `stop requested for task ${t.id}`;
      },
    };
  }

  private nodeAction(availability: 'drain' | 'pause' | 'active'): void {
    const n = this.nodes[this.nodeSel];
    if (!n) return this.flash('no node selected (tab to the nodes panel)', 'yellow-fg');
    const run = async () => {
      await this.client.patch(`/v1/nodes/${encodeURIComponent(n.id)}`, { availability }, { timeoutMs: 10_000 });
      return `node ${n.id} is now ${availability}`;
    };
    if (availability === 'drain') {
      this.mode = 'confirm';
      this.confirm = { prompt: `Drain node ${n.id} (its tasks move elsewhere)? [y/N]`, run };
      return;
    }
    this.flash(`setting node ${n.id} to ${availability}…`, 'yellow-fg');
    run().then(
      (m) => {
        this.flash(m, 'green-fg');
        this.refresh();
      },
      (e) => this.flash(`error: ${errMsg(e)}`, 'red-fg'),
    );
  }

  // ---- details pane

  private openDetails(): void {
    if (this.focus === 'tasks') {
      const t = this.visibleTasks()[this.taskSel];
      if (!t) return this.flash('no task selected', 'yellow-fg');
      this.details = { kind: 'task', id: t.id, task: null, logs: null, scroll: 0, maxScroll: 0, busy: false, fetchedAt: -Infinity };
      void this.fetchTaskDetails();
    } else if (this.focus === 'managers') {
      const m = this.cluster?.managers[this.mgrSel];
      if (!m) return this.flash('no manager selected', 'yellow-fg');
      this.details = { kind: 'manager', id: m.id, scroll: 0, maxScroll: 0 };
    } else if (this.focus === 'nodes') {
      const n = this.nodes[this.nodeSel];
      if (!n) return this.flash('no node selected', 'yellow-fg');
      this.details = { kind: 'node', id: n.id, scroll: 0, maxScroll: 0 };
    } else return this.flash('enter shows details of a task, a manager or a node (tab to their panel)', 'yellow-fg');
    this.mode = 'details';
  }

  private detailsKey(ch: string | undefined, name: string): void {
    const d = this.details;
    if (!d || ch === 'q' || name === 'escape' || name === 'enter' || name === 'linefeed') {
      this.details = null;
      this.mode = 'normal';
      return;
    }
    const page = Math.max(1, (Number(this.screen.height) || 24) - 8);
    let delta = 0;
    if (name === 'up' || ch === 'k') delta = -1;
    else if (name === 'down' || ch === 'j') delta = 1;
    else if (name === 'pageup') delta = -page;
    else if (name === 'pagedown' || ch === ' ') delta = page;
    else if (name === 'home' || ch === 'g') delta = -1e9;
    else if (name === 'end' || ch === 'G') delta = 1e9;
    else if (ch === 'r' && d.kind === 'task') {
      void this.fetchTaskDetails(true);
      return this.flash('refreshing the details');
    }
    d.scroll = Math.max(0, Math.min(d.maxScroll, d.scroll + delta));
  }

  /** Reads the task (spec, state, history) and the tail of its logs for the open details pane. */
  private async fetchTaskDetails(now = false): Promise<void> {
    const d = this.details;
    if (!d || d.kind !== 'task' || d.busy) return;
    // The pane follows the task live, but at most once a second.
    if (!now && monoNow() - d.fetchedAt < 1000) return;
    d.busy = true;
    const id = encodeURIComponent(d.id);
    try {
      await Promise.all([
        this.client.get(`/v1/tasks/${id}?stale=true`, { timeoutMs: 5000 }).then(
          (v) => (d.task = { value: v, error: null, at: Date.now() }),
          (e) => (d.task = { value: d.task?.value ?? null, error: errMsg(e), at: Date.now() }),
        ),
        this.client.get<unknown>(`/v1/tasks/${id}/logs?tail=${LOG_TAIL}`, { timeoutMs: 5000 }).then(
          (v) => (d.logs = { value: typeof v === 'string' ? v : Buffer.isBuffer(v) ? v.toString('utf8') : safeJson(v), error: null, at: Date.now() }),
          (e) => (d.logs = { value: null, error: errMsg(e), at: Date.now() }),
        ),
      ]);
    } finally {
      d.busy = false;
      d.fetchedAt = monoNow();
      this.scheduleRender();
    }
  }

  private detailSections(now: number): { label: string; sections: DetailSection[] } {
    const d = this.details!;
    if (d.kind === 'task') {
      const name = str(obj(d.task?.value).name);
      return { label: ` task ${d.id}${name ? ` (${name})` : ''} `, sections: taskDetailSections(d.task, this.taskEvents.get(d.id) ?? [], d.logs, now) };
    }
    const raw = d.kind === 'manager' ? this.rawManagers.get(d.id) : this.rawNodes.get(d.id);
    const tasks = d.kind === 'node' ? this.tasks.filter((t) => t.node === d.id) : [];
    return { label: ` ${d.kind} ${d.id} `, sections: nodeDetailSections(d.kind, raw, this.processLines(d.id), tasks, now) };
  }

  /** What processes.json says about a node's process, when this cluster was started by `flotilla up`. */
  private processLines(id: string): DetailLine[] | null {
    const p = this.upProcesses();
    if ('error' in p) return [line('K/R are only available for clusters started by `flotilla up`', 'gray-fg'), line(`(${p.error})`, 'gray-fg')];
    const rec = p.file.processes.find((r) => r.node === id);
    if (!rec) return [line(`not started by the flotilla up in ${p.file.dir}`, 'gray-fg')];
    const ok = rec.pid !== null && pidRunsNode(rec.pid, rec);
    const exit = rec.exit ? `exited (${rec.exit.signal ?? rec.exit.code}) at ${clock(rec.exit.at)}` : 'not running';
    return [
      line(`pid      ${rec.pid ?? '-'} ${rec.pid === null ? `(${exit})` : ok ? '(running)' : '(gone: that pid no longer runs this node)'}`, ok ? 'green-fg' : 'red-fg'),
      line(`started  ${clock(rec.startedAt)}${rec.starts > 1 ? ` (start ${rec.starts})` : ''}`),
      line(`command  ${rec.argv.join(' ')}`),
      line(`env      ${Object.entries(rec.env).map(([k, v]) => `${k}=${v}`).join(' ') || '-'} (on top of flotilla up's own)`),
      line(`up       pid ${p.file.up.pid}, control ${p.file.up.control}`),
    ];
  }

  // ---- K and R: kill and restart a node of a `flotilla up` cluster

  /** The processes file of the `flotilla up` that runs this board's cluster, or why there is none. */
  private upProcesses(): { file: ProcessesFile } | { error: string } {
    const dir = this.opts.upDir ?? upDir();
    let file: ProcessesFile | null;
    try {
      file = readProcesses(dir);
    } catch (e) {
      return { error: errMsg(e) };
    }
    if (!file) return { error: `no ${dir}/processes.json: run the board where flotilla up runs, or set FLOTILLA_DIR` };
    const mine = new Set(this.client.managers);
    if (!file.managers.some((a) => mine.has(a))) return { error: `the flotilla up in ${dir} runs another cluster (${file.managers.join(',')})` };
    return { file };
  }

  /** The manager or node selected in the focused panel. */
  private selectedNodeId(): string | null {
    if (this.focus === 'managers') return this.cluster?.managers[this.mgrSel]?.id ?? null;
    if (this.focus === 'nodes') return this.nodes[this.nodeSel]?.id ?? null;
    return null;
  }

  private upRecord(verb: 'K' | 'R'): { file: ProcessesFile; rec: ProcessRecord } | null {
    const what = verb === 'K' ? 'K (kill)' : 'R (restart)';
    const id = this.selectedNodeId();
    if (!id) {
      this.flash(`${what}: select a manager or a node first (tab to the managers or nodes panel)`, 'yellow-fg');
      return null;
    }
    const p = this.upProcesses();
    if ('error' in p) {
      this.flash(`${what} is only available for clusters started by \`flotilla up\` (${p.error})`, 'yellow-fg');
      return null;
    }
    const rec = p.file.processes.find((r) => r.node === id);
    if (!rec) {
      this.flash(`${id} was not started by the flotilla up in ${p.file.dir}`, 'yellow-fg');
      return null;
    }
    return { file: p.file, rec };
  }

  private askKill(): void {
    const r = this.upRecord('K');
    if (!r) return;
    const { rec } = r;
    if (rec.pid === null) return this.flash(`${rec.node} is not running${rec.exit ? ` (exited ${rec.exit.signal ?? rec.exit.code})` : ''}; R starts it again`, 'yellow-fg');
    if (!pidRunsNode(rec.pid, rec)) return this.flash(`not killing pid ${rec.pid}: it no longer runs ${rec.node}`, 'red-fg');
    const pid = rec.pid;
    this.mode = 'confirm';
    this.confirm = {
      prompt: `Kill ${rec.kind} ${rec.node} (SIGKILL to pid ${pid})? [y/N]`,
      run: async () => {
        // Checked again: the process may have changed while the question was on screen.
        if (!pidRunsNode(pid, rec)) throw new Error(`not killing pid ${pid}: it no longer runs ${rec.node}`);
        process.kill(pid, 'SIGKILL');
        this.addEvent({ at: Date.now(), text: `board: killed ${rec.node} (SIGKILL to pid ${pid})`, color: 'red-fg' });
        return `killed ${rec.node} (SIGKILL to pid ${pid})`;
      },
    };
  }

  private askRestart(): void {
    const r = this.upRecord('R');
    if (!r) return;
    const { file, rec } = r;
    const run = async () => {
      const res = await controlPost(file.up.control, file.up.token, '/v1/restart', { node: rec.node });
      const pid = num(obj(res).pid);
      this.addEvent({ at: Date.now(), text: `board: restarted ${rec.node} through flotilla up (pid ${pid ?? '?'})`, color: 'cyan-fg' });
      return `restarted ${rec.node} (pid ${pid ?? '?'})`;
    };
    if (rec.pid !== null && pidRunsNode(rec.pid, rec)) {
      this.mode = 'confirm';
      this.confirm = { prompt: `Restart ${rec.kind} ${rec.node} (stop pid ${rec.pid}, then start it again)? [y/N]`, run };
      return;
    }
    this.flash(`restarting ${rec.node}…`, 'yellow-fg');
    run().then(
      (m) => {
        this.flash(m, 'green-fg');
        this.refresh();
      },
      (e) => this.flash(`error: ${errMsg(e)}`, 'red-fg'),
    );
  }

  // ---- rendering

  private scheduleRender(): void {
    if (this.renderQueued || this.closed) return;
    this.renderQueued = true;
    setImmediate(() => {
      this.renderQueued = false;
      this.render();
    });
  }

  private render(): void {
    if (this.closed) return;
    try {
      this.draw();
    } catch (e) {
      try {
        this.footer.setContent(esc(fit(`render error: ${sanitize(errMsg(e))}`, Math.max(0, Number(this.screen.width) || 80), false, this.g)));
      } catch {}
    }
    try {
      this.screen.render();
    } catch {}
  }

  private draw(): void {
    const W = Math.max(1, Number(this.screen.width) || 80);
    const H = Math.max(1, Number(this.screen.height) || 24);
    const now = Date.now(); // wall: the clock shown, ages of the cluster's timestamps
    const mono = monoNow(); // how old this board's own reads and messages are
    const g = this.g;

    // Keep selections on the same task/node across refreshes.
    const vt = this.visibleTasks();
    if (this.taskSelId) {
      const i = vt.findIndex((t) => t.id === this.taskSelId);
      if (i >= 0) this.taskSel = i;
    }
    this.taskSel = Math.max(0, Math.min(vt.length - 1, this.taskSel));
    this.taskSelId = vt[this.taskSel]?.id ?? null;
    if (this.nodeSelId) {
      const i = this.nodes.findIndex((n) => n.id === this.nodeSelId);
      if (i >= 0) this.nodeSel = i;
    }
    this.nodeSel = Math.max(0, Math.min(this.nodes.length - 1, this.nodeSel));
    this.nodeSelId = this.nodes[this.nodeSel]?.id ?? null;
    const mgrs = this.cluster?.managers ?? [];
    if (this.mgrSelId) {
      const i = mgrs.findIndex((m) => m.id === this.mgrSelId);
      if (i >= 0) this.mgrSel = i;
    }
    this.mgrSel = Math.max(0, Math.min(mgrs.length - 1, this.mgrSel));
    this.mgrSelId = mgrs[this.mgrSel]?.id ?? null;

    // Layout: header (2), managers | nodes, tasks, events, footer (1).
    const avail = Math.max(0, H - 3);
    const mgrCount = this.cluster?.managers.length ?? 1;
    const topRows = Math.max(1, mgrCount, Math.min(this.nodes.length, 8)) + 1;
    const topH = Math.min(topRows + 2, Math.max(4, Math.floor(avail * 0.4)));
    const rest = Math.max(0, avail - topH);
    const eventsH = Math.max(Math.min(rest, 4), Math.floor(rest * 0.38));
    const tasksH = Math.max(0, rest - eventsH);
    const mgrW = W >= 120 ? Math.min(72, Math.floor(W * 0.45)) : Math.min(38, Math.floor(W / 2));
    const place = (el: Widgets.BoxElement, top: number, left: number, width: number, height: number) => {
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
    };
    this.header.top = 0;
    this.header.left = 0;
    this.header.width = W;
    this.header.height = Math.min(2, H);
    this.footer.top = Math.max(0, H - 1);
    this.footer.width = W;

    // Staleness: data that failed to refresh or is older than a few intervals.
    const staleLimit = Math.max(3000, this.opts.intervalMs * 3);
    const stale = (at: number, err: string | null) => at > 0 && (err !== null || mono - at > staleLimit);
    const oldest = [this.clusterAt, this.nodesAt, this.tasksAt].filter((a, i) => a > 0 && stale(a, [this.clusterErr, this.nodesErr, this.tasksErr][i]!));
    // The header wants a wall time: now, less how long ago (monotonic) the oldest stale read was.
    const staleSince = oldest.length > 0 ? now - (mono - Math.min(...oldest)) : null;
    const waiting = this.waitingSince > 0 && (this.inflight.cluster || this.inflight.nodes || this.inflight.tasks);
    const reconnecting = this.clusterErr !== null || !this.wsOpen || waiting;
    let problem: string | null = null;
    if (this.clusterErr) problem = `no manager answers (${this.clusterErr}); reconnecting`;
    else if (this.tasksErr || this.nodesErr) problem = `cannot read ${this.tasksErr ? 'tasks' : 'nodes'}: ${this.tasksErr ?? this.nodesErr}`;
    else if (!this.wsOpen) problem = `event stream disconnected; reconnecting to ${this.wsAddr ?? '?'}`;
    if (this.clusterAt === 0 && !this.clusterErr) problem = 'connecting…';

    const [h1, h2] = renderHeader(
      { now, cluster: this.cluster, clusterAt: this.clusterAt, via: this.client.current(), reconnecting, problem, eventsFrom: this.wsOpen ? this.wsManager : null, nodes: this.nodes, tasks: this.tasks, staleSince },
      W,
      g,
    );
    this.header.setContent(`${h1}\n${h2}`);

    const staleTag = (at: number, err: string | null) => (stale(at, err) ? ` {yellow-fg}stale ${ago(mono - at)}{/yellow-fg} ` : '');
    const focusStyle = (el: Widgets.BoxElement, on: boolean) => {
      const st = el.style as { border?: { fg?: string } };
      if (st.border) st.border.fg = on ? 'cyan' : 'gray';
    };

    // Managers.
    if (place(this.mgrBox, 2, 0, mgrW, topH)) {
      const rows = this.cluster?.managers ?? [];
      const leader = hasLeader(this.cluster) ? (this.cluster?.leader ?? null) : null;
      const r = renderList(managerColumns(leader, g), rows, mgrW - 2, topH - 2, rows.length && this.focus === 'managers' ? this.mgrSel : -1, this.mgrTop, this.focus === 'managers', g);
      this.mgrTop = r.top;
      this.mgrBox.setLabel(` managers ${staleTag(this.clusterAt, this.clusterErr)}`);
      this.mgrBox.setContent(r.lines.join('\n'));
      focusStyle(this.mgrBox, this.focus === 'managers');
    }
    // Nodes.
    if (place(this.nodeBox, 2, mgrW, W - mgrW, topH)) {
      const r = renderList(nodeColumns(g), this.nodes, W - mgrW - 2, topH - 2, this.nodes.length ? this.nodeSel : -1, this.nodeTop, this.focus === 'nodes', g);
      this.nodeTop = r.top;
      this.nodeBox.setLabel(` nodes ${this.nodes.length} ${staleTag(this.nodesAt, this.nodesErr)}`);
      this.nodeBox.setContent(r.lines.join('\n'));
      focusStyle(this.nodeBox, this.focus === 'nodes');
    }
    // Tasks.
    if (place(this.taskBox, 2 + topH, 0, W, tasksH)) {
      this.lastTaskRows = Math.max(1, tasksH - 3);
      const r = renderList(taskColumns(now), vt, W - 2, tasksH - 2, vt.length ? this.taskSel : -1, this.taskTop, this.focus === 'tasks', g);
      this.taskTop = r.top;
      const count = this.filter ? `${vt.length}/${this.tasks.length} matching "${esc(sanitize(this.filter.slice(0, 30)))}"` : `${this.tasks.length}`;
      this.taskBox.setLabel(` tasks ${count} ${staleTag(this.tasksAt, this.tasksErr)}`);
      const lines = r.lines;
      if (vt.length === 0) lines.push(this.tasksAt === 0 ? '{gray-fg}loading…{/gray-fg}' : this.filter ? '{gray-fg}no task matches the filter{/gray-fg}' : '{gray-fg}no tasks{/gray-fg}');
      this.taskBox.setContent(lines.join('\n'));
      focusStyle(this.taskBox, this.focus === 'tasks');
    }
    // Events.
    if (place(this.eventBox, 2 + topH + tasksH, 0, W, eventsH)) {
      this.eventBox.setLabel(` events ${this.eventScroll > 0 ? `(scrolled back ${this.eventScroll}) ` : ''}`);
      this.eventBox.setContent(renderEvents(this.events, W - 2, eventsH - 2, this.eventScroll, g).join('\n'));
      focusStyle(this.eventBox, this.focus === 'events');
    }

    // Footer: prompt, confirmation, message or key hints.
    let foot: string;
    if (this.mode === 'details' && !(this.message && mono - this.message.at < 6000)) {
      const d = this.details;
      const more = d && d.maxScroll > 0 ? `  j/k/PgUp/PgDn scroll (${d.scroll}/${d.maxScroll})` : '';
      const live = d?.kind === 'task' ? '  r re-read  (follows the task live)' : '';
      foot = `{gray-fg}${esc(fit(`esc/enter/q close${more}${live}`, W, false, g))}{/gray-fg}`;
    } else if (this.mode === 'filter') foot = `{bold}/{/bold}${esc(sanitize(this.filter))}_  {gray-fg}enter: keep  esc: clear{/gray-fg}`;
    else if (this.mode === 'confirm' && this.confirm) foot = `{black-fg}{yellow-bg}${esc(fit(` ${sanitize(this.confirm.prompt)} `, Math.min(W, this.confirm.prompt.length + 2), false, g))}{/yellow-bg}{/black-fg}`;
    else if (this.message && mono - this.message.at < 6000) {
      const t = esc(fit(sanitize(this.message.text), W, false, g));
      foot = this.message.color ? `{${this.message.color}}${t}{/${this.message.color}}` : t;
    } else {
      const hints =
        W >= 140
          ? 'q quit  tab focus  j/k move  enter details  / filter  s stop task  d/p/a drain/pause/activate node  K/R kill/restart node  r refresh  ? help'
          : W >= 100
            ? 'q quit  tab focus  j/k move  enter details  / filter  s stop  d/p/a node  K/R kill/restart  ? help'
            : 'q quit  tab focus  enter details  / filter  s stop  K/R kill/restart  ? help';
      foot = `{gray-fg}${esc(fit(hints, W, false, g))}{/gray-fg}`;
    }
    this.footer.setContent(foot);

    // Details pane, over the panels.
    if (this.mode === 'details' && this.details) {
      const d = this.details;
      const dh = Math.max(0, H - 3);
      if (W >= 10 && dh >= 3) {
        const { label, sections } = this.detailSections(now);
        this.detailBox.top = 2;
        this.detailBox.left = 0;
        this.detailBox.width = W;
        this.detailBox.height = dh;
        const r = renderDetails(sections, W - 2, dh - 2, d.scroll, g);
        d.maxScroll = r.maxScroll;
        d.scroll = Math.min(d.scroll, r.maxScroll);
        const lt = sanitize(label);
        this.detailBox.setLabel(esc(lt.length > W - 4 ? fit(lt, Math.max(0, W - 4), false, g) : lt));
        this.detailBox.setContent(r.lines.join('\n'));
        this.detailBox.show();
        this.detailBox.setFront();
      } else this.detailBox.hide();
    } else this.detailBox.hide();

    // Help overlay.
    if (this.mode === 'help') {
      const hw = Math.min(W, 60);
      const hh = Math.min(H, HELP_TEXT.length + 2);
      this.helpBox.width = hw;
      this.helpBox.height = hh;
      this.helpBox.setContent(HELP_TEXT.map((l) => esc(fit(l, Math.max(0, hw - 2), false, g))).join('\n'));
      this.helpBox.show();
      this.helpBox.setFront();
    } else this.helpBox.hide();
  }

  // ---- shutdown

  quit(exitCode = 0): void {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    if (this.refreshSoon) clearTimeout(this.refreshSoon);
    if (this.wsTimer) clearTimeout(this.wsTimer);
    try {
      this.ws?.terminate();
    } catch {}
    try {
      this.screen.destroy();
    } catch {}
    if (exitCode !== 0) process.exitCode = exitCode;
    this.done();
  }
}

function errMsg(e: unknown): string {
  if (e instanceof FlotillaError) return e.message;
  if (e instanceof Error) return e.message;
  return String(e);
}

/** POSTs JSON to the control endpoint of `flotilla up` (127.0.0.1:port) and returns its answer. */
async function controlPost(addr: string, token: string, path: string, body: unknown): Promise<unknown> {
  const http = await import('node:http');
  const [host, port] = splitAddr(addr);
  const payload = Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host, port, path, method: 'POST', timeout: 20_000, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': payload.length } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => {
          let v: unknown = text;
          try {
            v = JSON.parse(text);
          } catch {}
          if ((res.statusCode ?? 500) >= 400) reject(new Error(str(obj(v).error) || `flotilla up answered HTTP ${res.statusCode}`));
          else resolve(v);
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`flotilla up (control ${addr}) did not answer within 20 s`)));
    req.on('error', (e) => reject(/ECONNREFUSED/.test(e.message) ? new Error(`flotilla up does not answer on ${addr}: is it still running? (R needs it; K works without)`) : e));
    req.end(payload);
  });
}

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
