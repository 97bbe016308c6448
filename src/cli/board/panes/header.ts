// The two header lines and the help text.
// =============================================================================================
// The header
import type { Widgets } from 'blessed';
import { ago } from '../../util.js';
import type { ClusterInfo, NodeRow, TaskRow } from '../data.js';
import { ASCII_GLYPHS, clock, esc, fit, sanitize, UNICODE_GLYPHS, type Glyphs } from '../text.js';

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
  '  S              services: ready/desired, update progress,',
  '                 task health; there s scales (asks for N),',
  '                 b rolls back, j/k move, esc/S/q close',
  '  r              refresh now',
  '  ?              this help (any key closes it)',
];


/** The help overlay, shown over everything while `shown`. */
export function drawHelp(box: Widgets.BoxElement, shown: boolean, W: number, H: number, g: Glyphs): void {
  if (!shown) {
    box.hide();
    return;
  }
  const hw = Math.min(W, 60);
  box.width = hw;
  box.height = Math.min(H, HELP_TEXT.length + 2);
  box.setContent(HELP_TEXT.map((l) => esc(fit(l, Math.max(0, hw - 2), false, g))).join('\n'));
  box.show();
  box.setFront();
}
