// The services view (key S): every service with ready/desired, its update's state and
// progress ("batch i/n") and template version, and below the list the selected service's
// tasks with their state and health, and its routing-mesh endpoints (published port, the
// replica's address:port, node, task state, health, and whether the mesh sends to it). `s` scales the selected service (asks for N), `b` rolls
// it back (after a confirmation). Pure rows and lines here; app.ts wires keys and requests.
import type { Widgets } from 'blessed';
import { arr, num, obj, str } from '../data.js';
import { renderList, type Column } from '../layout.js';
import { esc, fit, type Glyphs } from '../text.js';
import { place } from './lists.js';

export interface ServiceRow {
  name: string;
  replicas: number | null;
  ready: number | null;
  upToDate: number | null;
  templateVersion: number | null;
  previousVersion: number | null;
  updateState: string;
  /** "batch i/n" while an update or rollback runs (or for the last one), '' when none ran. */
  progress: string;
  message: string;
}

export interface ServiceTaskRow {
  id: string;
  name: string;
  slot: number | null;
  version: number | null;
  state: string;
  desired: string;
  node: string;
  /** starting | healthy | unhealthy, or '-' when the task reports no health. */
  health: string;
  reason: string;
}

/** One routing-mesh endpoint of the selected service (GET /v1/services/:name's `endpoints`). */
export interface ServiceEndpointRow {
  published: number | null;
  addr: string;
  node: string;
  taskId: string;
  state: string;
  health: string;
  ready: boolean;
}

/**
 * "batch i/n" of an update: i is the batches started; n from the controller's message
 * ("… batch 2 of 4 …") when it says, i for a finished update, else the batches the whole
 * service needs.
 */
export function updateProgress(update: unknown, replicas: number | null, parallelism: number | null): string {
  const u = obj(update);
  const state = str(u.state);
  if (state === '' || state === 'none') return '';
  const m = /batch (\d+) of (\d+)/.exec(str(u.message));
  if (m) return `batch ${m[1]}/${m[2]}`;
  const i = num(u.batches) ?? 0;
  // A finished update ran all its batches (replicas scaled since do not add any).
  if (state === 'completed' || state === 'rolled_back') return `batch ${i}/${i}`;
  const n = replicas !== null && parallelism !== null && parallelism > 0 ? Math.max(i, Math.ceil(replicas / parallelism)) : null;
  return `batch ${i}/${n ?? '?'}`;
}

export function normalizeServices(raw: unknown): ServiceRow[] {
  return arr(obj(raw).services).map((x): ServiceRow => {
    const s = obj(x);
    const replicas = num(s.replicas);
    const parallelism = num(obj(obj(s.spec).update).parallelism);
    return {
      name: str(s.name, '?'),
      replicas,
      ready: num(s.ready),
      upToDate: num(s.upToDate),
      templateVersion: num(s.templateVersion),
      previousVersion: num(s.previousVersion),
      updateState: str(obj(s.update).state, '-'),
      progress: updateProgress(s.update, replicas, parallelism),
      message: str(obj(s.update).message),
    };
  });
}

/** The tasks of GET /v1/services/:name, slot order. */
export function normalizeServiceTasks(raw: unknown): ServiceTaskRow[] {
  return arr(obj(raw).tasks).map((x): ServiceTaskRow => {
    const t = obj(x);
    const svc = obj(t.service);
    const health = obj(t.health);
    return {
      id: str(t.id, '?'),
      name: str(t.name),
      slot: num(svc.slot),
      version: num(svc.version),
      state: str(t.state, '?'),
      desired: str(t.desired),
      node: str(t.node, '-') || '-',
      health: str(health.status) || '-',
      reason: str(t.reason),
    };
  });
}

/** The endpoints of GET /v1/services/:name, port then task order (as the manager sends them). */
export function normalizeServiceEndpoints(raw: unknown): ServiceEndpointRow[] {
  return arr(obj(raw).endpoints).map((x): ServiceEndpointRow => {
    const e = obj(x);
    return {
      published: num(e.published),
      addr: str(e.addr, '?') || '?',
      node: str(e.node, '-') || '-',
      taskId: str(e.taskId, '?'),
      state: str(e.state, '-') || '-',
      health: str(e.health, '-') || '-',
      ready: e.ready === true,
    };
  });
}

const n = (v: number | null) => (v === null ? '-' : String(v));

export function serviceColumns(): Column<ServiceRow>[] {
  return [
    { title: 'SERVICE', min: 6, max: 30, prio: 0, text: (r) => r.name },
    { title: 'READY', min: 5, max: 9, prio: 0, text: (r) => `${n(r.ready)}/${n(r.replicas)}`, color: (r) => (r.ready !== null && r.ready === r.replicas ? 'green-fg' : 'yellow-fg') },
    { title: 'UP-TO-DATE', min: 5, max: 10, prio: 3, text: (r) => n(r.upToDate) },
    { title: 'VERSION', min: 7, max: 9, prio: 1, text: (r) => `v${n(r.templateVersion)}` },
    {
      title: 'UPDATE',
      min: 8,
      max: 16,
      prio: 0,
      text: (r) => (r.updateState === 'none' ? '-' : r.updateState),
      color: (r) => (['paused', 'rollback_paused', 'rolled_back'].includes(r.updateState) ? 'red-fg' : ['updating', 'rolling_back'].includes(r.updateState) ? 'yellow-fg' : ''),
    },
    { title: 'PROGRESS', min: 9, max: 13, prio: 1, text: (r) => r.progress || '-' },
    { title: 'MESSAGE', min: 10, max: 200, prio: 2, flex: true, text: (r) => r.message || '-' },
  ];
}

export function serviceTaskColumns(current: number | null): Column<ServiceTaskRow>[] {
  return [
    { title: 'TASK', min: 6, max: 24, prio: 0, text: (r) => r.name },
    { title: 'ID', min: 8, max: 30, prio: 2, text: (r) => r.id },
    { title: 'VERSION', min: 7, max: 9, prio: 1, text: (r) => `v${n(r.version)}${r.version !== current ? '*' : ''}` },
    { title: 'STATE', min: 7, max: 22, prio: 0, text: (r) => r.state + (r.desired === 'shutdown' && !['stopped', 'succeeded', 'failed', 'lost'].includes(r.state) ? ' (stopping)' : '') },
    {
      title: 'HEALTH',
      min: 6,
      max: 9,
      prio: 0,
      text: (r) => r.health,
      color: (r) => (r.health === 'healthy' ? 'green-fg' : r.health === 'unhealthy' ? 'red-fg' : r.health === 'starting' ? 'yellow-fg' : ''),
    },
    { title: 'NODE', min: 4, max: 16, prio: 1, text: (r) => r.node },
    { title: 'REASON', min: 8, max: 200, prio: 3, flex: true, text: (r) => r.reason || '-' },
  ];
}

export function serviceEndpointColumns(): Column<ServiceEndpointRow>[] {
  return [
    { title: 'PORT', min: 4, max: 6, prio: 0, right: true, text: (r) => n(r.published) },
    { title: 'ENDPOINT', min: 21, max: 47, prio: 0, text: (r) => r.addr },
    { title: 'NODE', min: 4, max: 16, prio: 0, text: (r) => r.node },
    { title: 'READY', min: 5, max: 5, prio: 0, text: (r) => (r.ready ? 'yes' : 'no'), color: (r) => (r.ready ? 'green-fg' : 'red-fg') },
    { title: 'STATE', min: 7, max: 10, prio: 2, text: (r) => r.state },
    {
      title: 'HEALTH',
      min: 6,
      max: 9,
      prio: 1,
      text: (r) => r.health,
      color: (r) => (r.health === 'healthy' ? 'green-fg' : r.health === 'unhealthy' ? 'red-fg' : r.health === 'starting' ? 'yellow-fg' : ''),
    },
    { title: 'TASK', min: 8, max: 40, prio: 3, flex: true, text: (r) => r.taskId },
  ];
}

export interface ServicesPane {
  box: Widgets.BoxElement;
  width: number;
  height: number;
  sel: number;
  services: ServiceRow[];
  /** The selected service's tasks (null: not read yet). */
  tasks: ServiceTaskRow[] | null;
  /** The selected service's routing-mesh endpoints (null or absent: not read, or none). */
  endpoints?: ServiceEndpointRow[] | null;
  loaded: boolean;
  error: string | null;
  g: Glyphs;
}

/** The lines of the services view (list, then the selected service's tasks), `height` at most. */
export function servicesLines(p: Omit<ServicesPane, 'box'>, width: number, height: number): string[] {
  if (width <= 0 || height <= 0) return [];
  const listH = Math.max(2, Math.min(p.services.length + 1, Math.floor(height / 2)));
  const list = renderList(serviceColumns(), p.services, width, listH, p.services.length ? p.sel : -1, 0, true, p.g).lines;
  if (p.services.length === 0) list.push(p.loaded ? '{gray-fg}no services (flotilla service create, or apply a kind: service file){/gray-fg}' : '{gray-fg}loading…{/gray-fg}');
  if (p.error) list.push(`{red-fg}${esc(fit(p.error, width, false, p.g))}{/red-fg}`);
  const sel = p.services[p.sel];
  const lines = [...list];
  if (sel) {
    lines.push('', `{bold}${esc(fit(`tasks of ${sel.name}`, width, false, p.g))}{/bold}`);
    // The endpoints (when the service publishes a mesh port) get their header, title and rows
    // below the tasks; the tasks keep at least half of what is left.
    const eps = p.tasks !== null ? (p.endpoints ?? []) : [];
    const left = Math.max(0, height - lines.length);
    const epH = eps.length === 0 ? 0 : Math.min(eps.length + 3, Math.max(0, left - Math.max(2, Math.ceil(left / 2))));
    const rest = Math.max(0, left - epH);
    if (p.tasks === null) lines.push('{gray-fg}loading…{/gray-fg}');
    else if (p.tasks.length === 0) lines.push('{gray-fg}no tasks{/gray-fg}');
    else lines.push(...renderList(serviceTaskColumns(sel.templateVersion), p.tasks, width, rest, -1, 0, false, p.g).lines);
    if (epH >= 3) {
      lines.push('', `{bold}${esc(fit(`endpoints of ${sel.name} (routing mesh)`, width, false, p.g))}{/bold}`);
      lines.push(...renderList(serviceEndpointColumns(), eps, width, epH - 2, -1, 0, false, p.g).lines);
    }
  }
  return lines.slice(0, height);
}

export function drawServices(p: ServicesPane): void {
  if (!place(p.box, 2, 0, p.width, Math.max(0, p.height - 3))) return;
  p.box.setLabel(` services ${p.services.length} `);
  p.box.setContent(servicesLines(p, p.width - 2, p.height - 5).join('\n'));
  p.box.setFront();
}
