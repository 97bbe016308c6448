// Tick accounting for the Raft driver (node.ts): how many core ticks a timer callback fires.
//
// A Node interval timer fires late when the event loop is busy (a long apply, GC, a loaded
// machine) and then fires once: counting callbacks loses the time of every stall, so election
// timeouts stretch exactly when the process is slow. Instead the ticks owed are counted from
// elapsed monotonic time, and paid back in bounded steps:
//  - at most `maxPerCall` ticks per callback, so a stall is never replayed as several election
//    timeouts at once: between two callbacks the event loop reads the sockets, so a follower
//    sees the heartbeats that queued up during the stall and a leader sees the responses that
//    keep its check-quorum satisfied before the next ticks fire;
//  - at most `maxOwed` ticks owed in all (the longest randomised election timeout): beyond it,
//    older time changes nothing (every timer of the core has run out) and is dropped.
// Pure: the caller passes the time in.

export class TickAccount {
  private last: number;
  private owed = 0;

  constructor(
    private readonly tickMs: number,
    private readonly maxPerCall: number,
    private readonly maxOwed: number,
    now: number,
  ) {
    if (!(tickMs > 0) || !(maxPerCall >= 1) || !(maxOwed >= maxPerCall)) throw new RangeError('TickAccount: tickMs > 0 and 1 <= maxPerCall <= maxOwed');
    this.last = now;
  }

  /** Ticks to fire now (0 when called early). */
  due(now: number): number {
    const whole = Math.floor((now - this.last) / this.tickMs);
    if (whole > 0) {
      this.last += whole * this.tickMs;
      this.owed = Math.min(this.maxOwed, this.owed + whole);
    } else if (now < this.last) {
      this.last = now; // a clock that went back (cannot happen with a monotonic one): start over
    }
    const n = Math.min(this.owed, this.maxPerCall);
    this.owed -= n;
    return n;
  }

  /** Ticks owed and not fired yet. */
  get pending(): number {
    return this.owed;
  }
}
