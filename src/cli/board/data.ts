// The board's data: API answers normalised into display rows (every answer is treated as
// untrusted shape), and event frames turned into lines for the events pane.
// =============================================================================================
// Normalized data (everything the API sends is treated as untrusted shape)
import type { ClusterStatus, ManagerRow as ApiManagerRow } from '../../protocol/api.js';
import { sanitize } from './text.js';

/** A manager row: the fields of GET /v1/cluster's managers the board shows. */
export type ManagerRow = Omit<ApiManagerRow, 'lastIndex' | 'wiped'>;

/** GET /v1/cluster as the board keeps it (term null when the answer had none). */
export interface ClusterInfo extends Pick<ClusterStatus, 'leader'> {
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

export const MAX_ROWS = 5000;

export type Obj = Record<string, unknown>;
export const obj = (v: unknown): Obj => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Obj) : {});
export const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v.slice(0, MAX_ROWS) : []);
export const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
/** A display string from untrusted data (sanitized: single-width, no control characters). */
export function str(v: unknown, d = ''): string {
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

