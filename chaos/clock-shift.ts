// A preload that steps this process's WALL clock: `Date.now()` and `new Date()` read the real
// time plus an offset (ms) kept in the file named by FLOTILLA_CLOCK_SHIFT_FILE, re-read every
// 50 ms. The monotonic clock (performance.now, timers) is untouched — exactly what happens
// when an operator or NTP sets the system clock. Used by the chaos "clock-step" nemesis and
// the clock tests:
//
//   NODE_OPTIONS="--import /path/to/dist/chaos/clock-shift.js" FLOTILLA_CLOCK_SHIFT_FILE=/tmp/x
//
// The file holds one integer (ms; may be negative); a missing or unreadable file means 0.
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const file = process.env.FLOTILLA_CLOCK_SHIFT_FILE;

if (file) {
  const RealDate = Date;
  const realNow = RealDate.now.bind(RealDate);
  let offset = 0;
  const read = (): void => {
    try {
      const v = Number(readFileSync(file, 'utf8').trim());
      offset = Number.isFinite(v) ? v : 0;
    } catch {
      offset = 0;
    }
  };
  read();
  setInterval(read, 50).unref();

  class ShiftedDate extends RealDate {
    constructor(...args: unknown[]) {
      if (args.length === 0) super(realNow() + offset);
      else super(...(args as [string | number | Date]));
    }
    static override now(): number {
      return realNow() + offset;
    }
  }
  globalThis.Date = ShiftedDate as DateConstructor;
}

/** Writes the wall-clock offset (ms) that processes started with this preload apply. */
export function writeClockShift(path: string, offsetMs: number): void {
  // Write-then-rename: a reader never sees a half-written number.
  writeFileSync(`${path}.tmp`, String(Math.round(offsetMs)));
  renameSync(`${path}.tmp`, path);
}

/** Path of the built preload (this file in dist/, also when called from the TypeScript source). */
export function clockShiftPreload(): string {
  const here = fileURLToPath(import.meta.url);
  return here.endsWith('.ts') ? here.replace(/[\\/]chaos[\\/]clock-shift\.ts$/, '/dist/chaos/clock-shift.js') : here;
}
