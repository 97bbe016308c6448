// The event stream of the board: a WebSocket on /v1/events that fills the events pane and
// triggers early refreshes. It starts at the manager the HTTP client uses, goes round the
// managers when one fails, and resumes from the last event seen (seqs are replicated, so they
// mean the same on every manager).
import type WebSocket from 'ws';
import type { FlotillaClient } from '../../client/client.js';
import { monoNow } from '../../clock.js';
import { errMsg } from './actions.js';
import { describeEvent, num, obj, str, type EventLine } from './data.js';

/** How many events the pane keeps (and how far back a resync starts). */
export const EVENT_LIMIT = 200;

/** What the stream tells the board. */
export interface StreamHost {
  closed(): boolean;
  addEvent(e: EventLine): void;
  /** An event about a task (for its details pane). */
  noteTaskEvent(id: string, e: EventLine): void;
  refresh(): void;
  refreshAfterEvent(): void;
  scheduleRender(): void;
}

export class EventStream {
  private ws: WebSocket | null = null;
  /** The manager connected to (or being connected to), its id once it said hello, and whether it is open. */
  addr: string | null = null;
  manager: string | null = null;
  open = false;
  private next = 0;
  private lastSeq = 0;
  private lastFrameAt = 0;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly client: FlotillaClient,
    private readonly WS: typeof WebSocket,
    private readonly host: StreamHost,
  ) {}

  connect(): void {
    if (this.host.closed()) return;
    const managers = this.client.managers;
    // Start with the manager the HTTP client uses, then go round.
    const cur = managers.indexOf(this.client.current());
    const addr = managers[(Math.max(0, cur) + this.next) % managers.length]!;
    this.addr = addr;
    this.open = false;
    let ws: WebSocket;
    try {
      ws = new this.WS(this.client.url(addr, `/v1/events?since=${this.lastSeq}`, true), { handshakeTimeout: 2000, maxPayload: 4 * 1024 * 1024, ...this.client.wsOptions() });
    } catch (e) {
      this.host.addEvent({ at: Date.now(), text: `events: cannot connect to ${addr}: ${errMsg(e)}`, color: 'red-fg' });
      this.next++;
      this.timer = setTimeout(() => this.connect(), 1000);
      return;
    }
    this.ws = ws;
    ws.on('open', () => {
      this.open = true;
      this.lastFrameAt = monoNow();
      this.next = 0;
      this.host.scheduleRender();
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
        this.host.addEvent({ at: Date.now(), text: `events: bad frame: ${errMsg(e)}`, color: 'red-fg' });
      }
    });
    ws.on('error', () => {});
    ws.on('close', () => {
      if (this.ws !== ws) return;
      const wasOpen = this.open;
      this.ws = null;
      this.open = false;
      this.manager = null;
      if (this.host.closed()) return;
      if (wasOpen) this.host.addEvent({ at: Date.now(), text: `events: lost the stream from ${addr}; reconnecting`, color: 'yellow-fg' });
      this.next++;
      this.host.refresh();
      this.timer = setTimeout(() => this.connect(), wasOpen ? 200 : 700);
      this.host.scheduleRender();
    });
  }

  private onFrame(frame: unknown, addr: string): void {
    const f = obj(frame);
    if (f.kind === 'hello') {
      this.manager = str(f.manager) || addr;
      this.host.addEvent({ at: Date.now(), text: `events: streaming from ${this.manager} (${addr})`, color: 'gray-fg' });
      return;
    }
    if (f.kind === 'reset') {
      const last = num(f.lastSeq);
      const oldest = num(f.oldestSeq);
      if (last !== null && oldest !== null && this.lastSeq < oldest - 1) {
        // We fell out of the ring (or this is the first connect to a long-lived cluster):
        // resume from the last ~200 events that still exist.
        this.lastSeq = Math.max(0, oldest - 1, last - EVENT_LIMIT);
        this.host.addEvent(describeEvent(f)!);
        this.ws?.close();
      }
      // Otherwise this manager is behind us: its events up to lastSeq are skipped as duplicates.
      this.host.refreshAfterEvent();
      return;
    }
    const seq = num(f.seq);
    if (seq !== null) {
      if (seq <= this.lastSeq) return;
      this.lastSeq = seq;
    }
    const line = describeEvent(f);
    if (line) {
      this.host.addEvent(line);
      const tid = typeof f.type === 'string' && f.type.startsWith('task.') ? str(obj(f.task).id) : '';
      if (tid) this.host.noteTaskEvent(tid, line);
    }
    this.host.refreshAfterEvent();
  }

  /** A silent stream (a paused manager) is dropped after 40 s; the server pings every 15 s. */
  dropIfSilent(): void {
    if (this.ws && this.open && monoNow() - this.lastFrameAt > 40_000) this.ws.terminate();
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
    try {
      this.ws?.terminate();
    } catch {}
  }
}
