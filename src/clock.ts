// Time sources. Every duration flotilla measures (heartbeat ages, grace periods, timeouts,
// backoffs, deadlines) is taken on the MONOTONIC clock: it never steps when an operator or NTP
// sets the wall clock, and it keeps counting while the process is stopped (SIGSTOP) or its
// event loop is blocked, so such stalls are visible as a gap. The WALL clock (Date.now) is used
// only for what people read (logs, displayed times) and for timestamps written into replicated
// commands (`at` fields), never to decide that time has passed.
//
// Deadlines persisted for a successor process use `bootMonoNow()` (see there).
//
// Both are read through one replaceable clock so tests (and a whole-system simulator) can
// drive them; production code calls `monoNow()` / `wallNow()`.

import { readFileSync } from 'node:fs';

export interface Clock {
  /** Monotonic milliseconds (arbitrary origin; only differences mean anything). */
  mono(): number;
  /** Wall-clock milliseconds since the epoch (display and command timestamps only). */
  wall(): number;
}

export const systemClock: Clock = {
  mono: () => performance.now(),
  wall: () => Date.now(),
};

let current: Clock = systemClock;

/** Monotonic ms: the only clock to measure durations with. */
export function monoNow(): number {
  return current.mono();
}

/** Wall-clock ms: for display and for `at` timestamps written into commands. */
export function wallNow(): number {
  return current.wall();
}

/**
 * Monotonic ms that mean the same in every process of this boot: the system's CLOCK_MONOTONIC
 * (Node's hrtime; on Linux it counts from boot and is shared by all processes), unlike
 * `monoNow()`, whose origin is this process's start. For deadlines written to disk that a
 * successor process must honour (the process driver's SIGTERM→SIGKILL deadline): store them
 * with `bootId()`; a record from another boot (or without one) has no comparable deadline.
 */
export function bootMonoNow(): number {
  return Number(process.hrtime.bigint() / 1000n) / 1000;
}

let bootIdCache: string | undefined;
/** The kernel's id of this boot (Linux), or 'unknown' elsewhere. */
export function bootId(): string {
  if (bootIdCache === undefined) {
    try {
      bootIdCache = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() || 'unknown';
    } catch {
      bootIdCache = 'unknown';
    }
  }
  return bootIdCache;
}

/** Replaces the process clock (tests, simulator); returns a function that restores the previous one. */
export function setClock(c: Clock): () => void {
  const prev = current;
  current = c;
  return () => {
    current = prev;
  };
}

/** A clock that moves only when told to (tests). */
export class ManualClock implements Clock {
  constructor(
    private monoMs = 0,
    private wallMs = 1_700_000_000_000,
  ) {}
  mono(): number {
    return this.monoMs;
  }
  wall(): number {
    return this.wallMs;
  }
  /** Real time passes: both clocks move. */
  advance(ms: number): void {
    this.monoMs += ms;
    this.wallMs += ms;
  }
  /** Someone sets the wall clock: only it moves. */
  stepWall(ms: number): void {
    this.wallMs += ms;
  }
}

/**
 * Detects stalls of this process: a check that should run every `periodMs` and finds a larger
 * gap on the monotonic clock means the process could not run for the difference (blocked event
 * loop, SIGSTOP, VM pause). `check()` returns the stalled ms since the previous check (0 when
 * on time), counting only the part beyond `periodMs + slackMs`.
 */
export class StallDetector {
  private last: number;
  constructor(
    private readonly periodMs: number,
    private readonly slackMs = 500,
    private readonly clock: () => number = monoNow,
  ) {
    this.last = clock();
  }
  check(): number {
    const now = this.clock();
    const gap = now - this.last;
    this.last = now;
    return gap > this.periodMs + this.slackMs ? gap - this.periodMs : 0;
  }
  reset(): void {
    this.last = this.clock();
  }
}

/**
 * Gives the event loop a turn between slices of long work on the replicated state (snapshot
 * encoding and parsing: `ClusterState.snapshotAsync`/`restoreAsync`), timed on the monotonic clock.
 */
export const eventLoopSlicer = {
  now: (): number => monoNow(),
  turn: (): Promise<void> => new Promise<void>((r) => setImmediate(r)),
};

/**
 * Timers, as the leader services (leadership, dispatcher, controllers) schedule work: a port so
 * that a simulator can run them on virtual time. Production uses `systemTimers` (Node timers,
 * unref'd: they never keep the process alive). Each returns a function that cancels it.
 */
export interface Timers {
  /** Runs `fn` every `ms` until cancelled. */
  every(ms: number, fn: () => void): () => void;
  /** Runs `fn` once after `ms`, unless cancelled first. */
  after(ms: number, fn: () => void): () => void;
  /** Runs `fn` on the next turn of the event loop (after the current work and its promises). */
  soon(fn: () => void): void;
}

export const systemTimers: Timers = {
  every(ms, fn) {
    const t = setInterval(fn, ms);
    t.unref();
    return () => clearInterval(t);
  },
  after(ms, fn) {
    const t = setTimeout(fn, ms);
    t.unref();
    return () => clearTimeout(t);
  },
  soon(fn) {
    setImmediate(fn);
  },
};
