// Text helpers of the board: glyph sets, sanitising, fitting, bars, units and the clock.
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

