// The footer line: the filter prompt, a confirmation, a message or the key hints.
import { esc, fit, sanitize, type Glyphs } from '../text.js';

/** How long a flashed message stays (ms, monotonic). */
export const MESSAGE_MS = 6000;

export interface FooterInput {
  mode: 'normal' | 'filter' | 'confirm' | 'help' | 'details' | 'prompt';
  width: number;
  /** Monotonic now. */
  mono: number;
  message: { text: string; color: string; at: number } | null;
  filter: string;
  confirm: { prompt: string } | null;
  /** The open details pane's scroll and kind. */
  details: { kind: string; scroll: number; maxScroll: number } | null;
  /** A line being typed (the replicas of a scale). */
  prompt?: { label: string; text: string } | null;
  /** The services view is open. */
  services?: boolean;
}

export function footerContent(f: FooterInput, g: Glyphs): string {
  const W = f.width;
  const msg = f.message && f.mono - f.message.at < MESSAGE_MS ? f.message : null;
  if (f.mode === 'details' && !msg) {
    const d = f.details;
    const more = d && d.maxScroll > 0 ? `  j/k/PgUp/PgDn scroll (${d.scroll}/${d.maxScroll})` : '';
    const live = d?.kind === 'task' ? '  r re-read  (follows the task live)' : '';
    return `{gray-fg}${esc(fit(`esc/enter/q close${more}${live}`, W, false, g))}{/gray-fg}`;
  }
  if (f.mode === 'prompt' && f.prompt) return `{bold}${esc(sanitize(f.prompt.label))}{/bold} ${esc(sanitize(f.prompt.text))}_  {gray-fg}enter: ok  esc: cancel{/gray-fg}`;
  if (f.mode === 'filter') return `{bold}/{/bold}${esc(sanitize(f.filter))}_  {gray-fg}enter: keep  esc: clear{/gray-fg}`;
  if (f.mode === 'confirm' && f.confirm) return `{black-fg}{yellow-bg}${esc(fit(` ${sanitize(f.confirm.prompt)} `, Math.min(W, f.confirm.prompt.length + 2), false, g))}{/yellow-bg}{/black-fg}`;
  if (msg) {
    const t = esc(fit(sanitize(msg.text), W, false, g));
    return msg.color ? `{${msg.color}}${t}{/${msg.color}}` : t;
  }
  if (f.services && f.mode === 'normal') return `{gray-fg}${esc(fit('esc/S/q close  j/k move  s scale (asks for N)  b roll back  r refresh  ? help', W, false, g))}{/gray-fg}`;
  const hints =
    W >= 140
      ? 'q quit  tab focus  j/k move  enter details  / filter  s stop task  d/p/a drain/pause/activate node  K/R kill/restart node  S services  r refresh  ? help'
      : W >= 100
        ? 'q quit  tab focus  j/k move  enter details  / filter  s stop  d/p/a node  K/R kill/restart  S services  ? help'
        : 'q quit  tab focus  enter details  / filter  s stop  K/R  S services  ? help';
  return `{gray-fg}${esc(fit(hints, W, false, g))}{/gray-fg}`;
}
