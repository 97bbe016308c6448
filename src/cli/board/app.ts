// The Board: wires blessed, timers, the HTTP client and the event stream together; what it
// draws comes from the pure functions of the other files.
// =============================================================================================
// The board
import type { Widgets } from 'blessed';
import type WebSocket from 'ws';
import { FlotillaClient } from '../../client/client.js';
import { monoNow } from '../../clock.js';
import { ago, upDir } from '../util.js';
import { askKill, askRestart, errMsg, processLines, upProcesses, upRecord, type ActionHost } from './actions.js';
import { arr, MAX_ROWS, normalizeCluster, normalizeNodes, normalizeTasks, obj, str, taskMatches, type ClusterInfo, type EventLine, type NodeRow, type TaskRow } from './data.js';
import { boardLayout } from './layout.js';
import { EVENT_LIMIT, EventStream } from './stream.js';
import { nodeDetailSections, safeJson, taskDetailSections, drawDetails, type DetailSection, type Loaded } from './panes/details.js';
import { footerContent } from './panes/footer.js';
import { drawHelp, hasLeader, HELP_TEXT, renderHeader } from './panes/header.js';
import { drawEvents, drawManagers, drawNodes, drawTasks } from './panes/lists.js';
import { attachUsage, parseUsage } from './usage.js';
import { ASCII_GLYPHS, esc, fit, sanitize, UNICODE_GLYPHS, type Glyphs } from './text.js';
import { drawServices, normalizeServiceEndpoints, normalizeServices, normalizeServiceTasks, type ServiceEndpointRow, type ServiceRow, type ServiceTaskRow } from './panes/services.js';

type Focus = 'tasks' | 'managers' | 'nodes' | 'events';
const FOCUS_ORDER: Focus[] = ['tasks', 'managers', 'nodes', 'events'];
type Mode = 'normal' | 'filter' | 'confirm' | 'help' | 'details' | 'prompt';

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

const TASK_EVENT_LIMIT = 100;
const LOG_TAIL = 200;

export class Board {
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
  private svcBox!: Widgets.BoxElement;
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
  /** The last GET /v1/usage (fetched with the nodes; null when the cluster cannot say). */
  private usage: ReturnType<typeof parseUsage> | null = null;
  private nodesAt = 0;
  private nodesErr: string | null = null;
  private tasks: TaskRow[] = [];
  private tasksAt = 0;
  private tasksErr: string | null = null;
  private events: EventLine[] = [];
  // the services view (S)
  private svcOpen = false;
  private services: ServiceRow[] = [];
  private servicesAt = 0;
  private servicesErr: string | null = null;
  private svcSel = 0;
  private svcSelName: string | null = null;
  private svcTasks: { name: string; rows: ServiceTaskRow[]; endpoints: ServiceEndpointRow[] } | null = null;
  private prompt: { label: string; text: string; submit: (text: string) => void } | null = null;
  private inflight = { cluster: false, nodes: false, tasks: false, services: false };
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
  private readonly stream: EventStream;

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
    this.stream = new EventStream(this.client, libs.WebSocket, {
      closed: () => this.closed,
      addEvent: (e) => this.addEvent(e),
      noteTaskEvent: (id, e) => this.noteTaskEvent(id, e),
      refresh: () => this.refresh(),
      refreshAfterEvent: () => this.refreshAfterEvent(),
      scheduleRender: () => this.scheduleRender(),
    });
  }

  run(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.done = resolve;
      this.setup();
      this.refresh();
      this.stream.connect();
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
    this.svcBox = box({ border: { type: 'line' }, label: ' services ', hidden: true, style: { border: { fg: 'cyan' }, label: { bold: true } } });
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
    if (this.svcOpen) void this.fetchServices();
  }

  /** GET /v1/services, then the selected service's tasks (with their health). */
  private async fetchServices(): Promise<void> {
    if (this.inflight.services) return;
    this.inflight.services = true;
    try {
      this.services = normalizeServices(await this.client.get('/v1/services'));
      this.servicesAt = monoNow();
      this.servicesErr = null;
      this.keepServiceSelection();
      const sel = this.services[this.svcSel];
      if (sel) {
        const raw = await this.client.get(`/v1/services/${encodeURIComponent(sel.name)}`);
        this.svcTasks = { name: sel.name, rows: normalizeServiceTasks(raw), endpoints: normalizeServiceEndpoints(raw) };
      } else this.svcTasks = null;
    } catch (e) {
      this.servicesErr = errMsg(e);
    } finally {
      this.inflight.services = false;
      this.scheduleRender();
    }
  }

  private keepServiceSelection(): void {
    if (this.svcSelName) {
      const i = this.services.findIndex((x) => x.name === this.svcSelName);
      if (i >= 0) this.svcSel = i;
    }
    this.svcSel = Math.max(0, Math.min(this.services.length - 1, this.svcSel));
    this.svcSelName = this.services[this.svcSel]?.name ?? null;
  }

  /** Keys of the services view (normal mode while it is open). */
  private servicesKey(ch: string | undefined, name: string): void {
    const move = (d: number) => {
      this.svcSel = Math.max(0, Math.min(this.services.length - 1, this.svcSel + d));
      this.svcSelName = this.services[this.svcSel]?.name ?? null;
      if (this.svcTasks?.name !== this.svcSelName) this.svcTasks = null;
      void this.fetchServices();
    };
    if (ch === 'q' || ch === 'S' || name === 'escape') {
      this.svcOpen = false;
      return;
    }
    if (ch === '?') {
      this.mode = 'help';
      return;
    }
    if (ch === 'j' || name === 'down') return move(1);
    if (ch === 'k' || name === 'up') return move(-1);
    if (ch === 'g' || name === 'home') return move(-1e9);
    if (ch === 'G' || name === 'end') return move(1e9);
    if (ch === 'r') {
      this.refresh();
      return this.flash('refreshing');
    }
    const svc = this.services[this.svcSel];
    if (ch === 's' || ch === 'b') {
      if (!svc) return this.flash('no service selected', 'yellow-fg');
      const path = `/v1/services/${encodeURIComponent(svc.name)}`;
      if (ch === 's') {
        this.mode = 'prompt';
        this.prompt = {
          label: `Scale ${svc.name} to how many replicas (now ${svc.replicas ?? '?'})?`,
          text: '',
          submit: (text) => {
            if (!/^\d{1,4}$/.test(text)) return this.flash(`not a number of replicas: '${text}'`, 'red-fg');
            this.actionHost.runNow(`scaling ${svc.name} to ${Number(text)}…`, async () => {
              await this.client.post(`${path}/scale`, { replicas: Number(text) }, { timeoutMs: 10_000 });
              return `service ${svc.name} scaled to ${Number(text)} replicas`;
            });
          },
        };
        return;
      }
      if (svc.previousVersion === null) return this.flash(`service ${svc.name} has no previous version to roll back to`, 'yellow-fg');
      this.actionHost.ask(`Roll back service ${svc.name} to version ${svc.previousVersion}? [y/N]`, async () => {
        await this.client.post(`${path}/rollback`, undefined, { timeoutMs: 10_000 });
        return `rollback of ${svc.name} to version ${svc.previousVersion} started`;
      });
    }
  }

  private promptKey(ch: string | undefined, name: string, key: KeyInfo): void {
    const p = this.prompt;
    if (!p || name === 'escape') {
      this.prompt = null;
      this.mode = 'normal';
      return this.flash('cancelled');
    }
    if (name === 'enter' || name === 'linefeed') {
      this.prompt = null;
      this.mode = 'normal';
      return p.submit(p.text.trim());
    }
    if (name === 'backspace' || name === 'delete') p.text = p.text.slice(0, -1);
    else if (key.full === 'C-u') p.text = '';
    else if (ch && ch.length === 1 && ch >= ' ' && ch !== '\x7f' && p.text.length < 16) p.text += ch;
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
      const [raw, used] = await Promise.all([this.client.get('/v1/nodes'), this.client.get('/v1/usage', { timeoutMs: 3000 }).catch(() => null)]);
      this.usage = used === null ? null : parseUsage(used);
      this.nodes = normalizeNodes(raw);
      attachUsage(this.nodes, this.tasks, this.usage);
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
      attachUsage([], this.tasks, this.usage);
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
    this.stream.dropIfSilent();
    this.scheduleRender();
  }

  // ---- event stream

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
      case 'prompt':
        this.promptKey(ch, name, key);
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
        if (this.svcOpen) this.servicesKey(ch, name);
        else this.normalKey(ch, name);
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
      case 'S':
        this.svcOpen = true;
        void this.fetchServices();
        return;
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
    this.actionHost.runNow(`setting node ${n.id} to ${availability}…`, run);
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
    return { label: ` ${d.kind} ${d.id} `, sections: nodeDetailSections(d.kind, raw, processLines(this.upProcesses(), d.id), tasks, now) };
  }

  // ---- K and R: kill and restart a node of a `flotilla up` cluster (actions.ts)

  private upProcesses() {
    return upProcesses(this.opts.upDir ?? upDir(), this.client.managers);
  }

  /** The manager or node selected in the focused panel. */
  private selectedNodeId(): string | null {
    if (this.focus === 'managers') return this.cluster?.managers[this.mgrSel]?.id ?? null;
    if (this.focus === 'nodes') return this.nodes[this.nodeSel]?.id ?? null;
    return null;
  }

  private askKill(): void {
    askKill(this.actionHost, upRecord(this.actionHost, 'K', this.selectedNodeId(), this.upProcesses()));
  }

  private askRestart(): void {
    askRestart(this.actionHost, upRecord(this.actionHost, 'R', this.selectedNodeId(), this.upProcesses()));
  }

  private readonly actionHost: ActionHost = {
    flash: (text, color) => this.flash(text, color),
    ask: (prompt, run) => {
      this.mode = 'confirm';
      this.confirm = { prompt, run };
    },
    runNow: (pending, run) => {
      this.flash(pending, 'yellow-fg');
      run().then(
        (m) => {
          this.flash(m, 'green-fg');
          this.refresh();
        },
        (e) => this.flash(`error: ${errMsg(e)}`, 'red-fg'),
      );
    },
    addEvent: (e) => this.addEvent(e),
  };

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

  /** Draws every pane from the board's state (each pane in its own function, see panes/). */
  private draw(): void {
    const W = Math.max(1, Number(this.screen.width) || 80);
    const H = Math.max(1, Number(this.screen.height) || 24);
    const now = Date.now(); // wall: the clock shown, ages of the cluster's timestamps
    const mono = monoNow(); // how old this board's own reads and messages are
    const g = this.g;
    this.keepSelections();
    const L = boardLayout(W, H, this.cluster?.managers.length ?? 1, this.nodes.length);
    this.header.top = 0;
    this.header.left = 0;
    this.header.width = W;
    this.header.height = Math.min(2, H);
    this.footer.top = Math.max(0, H - 1);
    this.footer.width = W;
    this.drawHeader(W, now, mono);

    const staleTag = (at: number, err: string | null) => (this.isStale(at, err, mono) ? ` {yellow-fg}stale ${ago(mono - at)}{/yellow-fg} ` : '');
    const pane = (box: Widgets.BoxElement, focus: Focus, top: number, left: number, width: number, height: number) => ({ box, top, left, width, height, focused: this.focus === focus, g });
    const leader = hasLeader(this.cluster) ? (this.cluster?.leader ?? null) : null;
    this.mgrTop = drawManagers({ ...pane(this.mgrBox, 'managers', 2, 0, L.mgrW, L.topH), sel: this.mgrSel, scrollTop: this.mgrTop, staleTag: staleTag(this.clusterAt, this.clusterErr) }, this.cluster, leader);
    this.nodeTop = drawNodes({ ...pane(this.nodeBox, 'nodes', 2, L.mgrW, W - L.mgrW, L.topH), sel: this.nodeSel, scrollTop: this.nodeTop, staleTag: staleTag(this.nodesAt, this.nodesErr) }, this.nodes);
    if (W >= 3 && L.tasksH >= 3) this.lastTaskRows = Math.max(1, L.tasksH - 3);
    this.taskTop = drawTasks(
      { ...pane(this.taskBox, 'tasks', 2 + L.topH, 0, W, L.tasksH), sel: this.taskSel, scrollTop: this.taskTop, staleTag: staleTag(this.tasksAt, this.tasksErr) },
      { shown: this.visibleTasks(), all: this.tasks, filter: this.filter, loaded: this.tasksAt !== 0, now },
    );
    drawEvents(pane(this.eventBox, 'events', 2 + L.topH + L.tasksH, 0, W, L.eventsH), this.events, this.eventScroll);

    this.footer.setContent(
      footerContent({ mode: this.mode, width: W, mono, message: this.message, filter: this.filter, confirm: this.confirm, details: this.details, prompt: this.prompt, services: this.svcOpen }, g),
    );
    if (this.svcOpen) {
      const cur = this.svcTasks !== null && this.svcTasks.name === this.services[this.svcSel]?.name ? this.svcTasks : null;
      const tasks = cur?.rows ?? null;
      drawServices({ box: this.svcBox, width: W, height: H, sel: this.svcSel, services: this.services, tasks, endpoints: cur?.endpoints ?? null, loaded: this.servicesAt !== 0, error: this.servicesErr, g });
    } else this.svcBox.hide();
    if (this.mode === 'details' && this.details) {
      const d = this.details;
      const { label, sections } = this.detailSections(now);
      const r = drawDetails(this.detailBox, { label, sections, width: W, height: H, scroll: d.scroll }, g);
      if (r) {
        d.maxScroll = r.maxScroll;
        d.scroll = Math.min(d.scroll, r.maxScroll);
      }
    } else this.detailBox.hide();
    drawHelp(this.helpBox, this.mode === 'help', W, H, g);
  }

  /** Keeps the selections on the same task, node and manager across refreshes. */
  private keepSelections(): void {
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
  }

  /** Data that failed to refresh or is older than a few intervals. */
  private isStale(at: number, err: string | null, mono: number): boolean {
    return at > 0 && (err !== null || mono - at > Math.max(3000, this.opts.intervalMs * 3));
  }

  private drawHeader(W: number, now: number, mono: number): void {
    const oldest = [this.clusterAt, this.nodesAt, this.tasksAt].filter((a, i) => a > 0 && this.isStale(a, [this.clusterErr, this.nodesErr, this.tasksErr][i]!, mono));
    // The header wants a wall time: now, less how long ago (monotonic) the oldest stale read was.
    const staleSince = oldest.length > 0 ? now - (mono - Math.min(...oldest)) : null;
    const waiting = this.waitingSince > 0 && (this.inflight.cluster || this.inflight.nodes || this.inflight.tasks);
    const reconnecting = this.clusterErr !== null || !this.stream.open || waiting;
    let problem: string | null = null;
    if (this.clusterErr) problem = `no manager answers (${this.clusterErr}); reconnecting`;
    else if (this.tasksErr || this.nodesErr) problem = `cannot read ${this.tasksErr ? 'tasks' : 'nodes'}: ${this.tasksErr ?? this.nodesErr}`;
    else if (!this.stream.open) problem = `event stream disconnected; reconnecting to ${this.stream.addr ?? '?'}`;
    if (this.clusterAt === 0 && !this.clusterErr) problem = 'connecting…';
    const [h1, h2] = renderHeader(
      { now, cluster: this.cluster, clusterAt: this.clusterAt, via: this.client.current(), reconnecting, problem, eventsFrom: this.stream.open ? this.stream.manager : null, nodes: this.nodes, tasks: this.tasks, staleSince },
      W,
      this.g,
    );
    this.header.setContent(`${h1}\n${h2}`);
  }

  // ---- shutdown

  quit(exitCode = 0): void {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    if (this.refreshSoon) clearTimeout(this.refreshSoon);
    this.stream.close();
    try {
      this.screen.destroy();
    } catch {}
    if (exitCode !== 0) process.exitCode = exitCode;
    this.done();
  }
}
