// The whole-cluster simulator's virtual time: one event queue ordered by (time, sequence), a
// monotonic clock that only the queue moves, a wall clock that may be stepped beside it, and
// one `Timers` per simulated process (a paused process's timers and deliveries wait until it
// resumes, like a SIGSTOPped process). Pure: no real timers; `run` yields to the event loop
// between events only so that promise continuations run in a fixed order.
import type { Clock, Timers } from '../../clock.js';

interface Ev {
  at: number;
  seq: number;
  owner: string;
  fn: () => void;
  dead: boolean;
}

export class Sched implements Clock {
  now = 0;
  wallOffset = 1_700_000_000_000;
  private seq = 0;
  private heap: Ev[] = [];
  private paused = new Map<string, Ev[]>();
  events = 0;

  mono(): number {
    return this.now;
  }
  wall(): number {
    return this.now + this.wallOffset;
  }

  /** Runs `fn` for `owner` at `now + ms`; returns a cancel. */
  at(ms: number, owner: string, fn: () => void): () => void {
    const ev: Ev = { at: this.now + Math.max(0, ms), seq: this.seq++, owner, fn, dead: false };
    this.push(ev);
    return () => {
      ev.dead = true;
    };
  }

  pause(owner: string): void {
    if (!this.paused.has(owner)) this.paused.set(owner, []);
  }

  isPaused(owner: string): boolean {
    return this.paused.has(owner);
  }

  /** The process runs again: what came due meanwhile runs now, in order. */
  resume(owner: string): void {
    const held = this.paused.get(owner);
    if (!held) return;
    this.paused.delete(owner);
    for (const ev of held) {
      ev.at = this.now;
      ev.seq = this.seq++;
      this.push(ev);
    }
  }

  /** Drops every pending event of `owner` (a crashed process). */
  kill(owner: string): void {
    for (const ev of this.heap) if (ev.owner === owner) ev.dead = true;
    this.paused.delete(owner);
  }

  timers(owner: string): Timers {
    return {
      every: (ms, fn) => {
        let cancel = (): void => {};
        let stopped = false;
        const arm = (): void => {
          cancel = this.at(Math.round(ms), owner, () => {
            if (stopped) return;
            arm();
            fn();
          });
        };
        arm();
        return () => {
          stopped = true;
          cancel();
        };
      },
      // Whole ms, as Node's timers (a jittered backoff is fractional; clocks stay integral).
      after: (ms, fn) => this.at(Math.round(ms), owner, fn),
      soon: (fn) => void this.at(0, owner, fn),
    };
  }

  /** Runs events up to virtual time `until` (inclusive); `after` is called after each one. */
  async run(until: number, after: () => boolean): Promise<boolean> {
    for (;;) {
      const ev = this.peek();
      if (!ev || ev.at > until) break;
      this.pop();
      if (ev.dead) continue;
      const held = this.paused.get(ev.owner);
      if (held) {
        held.push(ev);
        continue;
      }
      if (ev.at > this.now) this.now = ev.at;
      this.events++;
      ev.fn();
      await turn();
      if (!after()) return false;
    }
    if (until > this.now) this.now = until;
    return true;
  }

  private push(ev: Ev): void {
    const h = this.heap;
    h.push(ev);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (less(h[p]!, ev)) break;
      h[i] = h[p]!;
      i = p;
    }
    h[i] = ev;
  }

  private peek(): Ev | undefined {
    return this.heap[0];
  }

  private pop(): void {
    const h = this.heap;
    const last = h.pop()!;
    if (h.length === 0) return;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= h.length) break;
      const r = l + 1;
      const c = r < h.length && less(h[r]!, h[l]!) ? r : l;
      if (less(last, h[c]!)) break;
      h[i] = h[c]!;
      i = c;
    }
    h[i] = last;
  }
}

function less(a: Ev, b: Ev): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}

/**
 * Lets the promise continuations an event started run before the next event: a few microtask
 * hops (enough for the services' await chains). No macrotask is involved, so the order is the
 * same on every run; a longer chain only finishes during a later event.
 */
async function turn(): Promise<void> {
  for (let i = 0; i < 12; i++) await null;
}
