// Small display helpers.

export function fmtBytes(bytes: number): string {
  const units: [number, string][] = [
    [1024 ** 4, 'TiB'],
    [1024 ** 3, 'GiB'],
    [1024 ** 2, 'MiB'],
    [1024, 'KiB'],
  ];
  for (const [size, name] of units) {
    if (bytes >= size) {
      const v = bytes / size;
      return `${Number.isInteger(v) ? v : Number(v.toFixed(1))} ${name}`;
    }
  }
  return `${bytes} B`;
}

/** Millicores as cores ("0.25", "2") or millicores below one core ("250m"). */
export function fmtCpu(milli: number): string {
  if (milli < 1000) return `${milli}m`;
  const cores = milli / 1000;
  return `${Number.isInteger(cores) ? cores : Number(cores.toFixed(2))} cores`;
}

/** "3 s", "4 min", "2 h", "5 d". */
export function fmtDuration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h`;
  return `${Math.floor(h / 24)} d`;
}

export function fmtAgo(at: number | null | undefined, now: number): string {
  if (at === null || at === undefined || at === 0) return '—';
  const d = now - at;
  if (d < 1500) return 'just now';
  return `${fmtDuration(d)} ago`;
}

export function fmtTime(at: number | null | undefined): string {
  if (!at) return '—';
  const d = new Date(at);
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtDateTime(at: number | null | undefined): string {
  if (!at) return '—';
  const d = new Date(at);
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${fmtTime(at)}`;
}

export function pct(used: number, total: number): number {
  if (!total || total <= 0) return 0;
  return Math.max(0, Math.min(100, (used / total) * 100));
}

/** Splits a command line like a POSIX shell does for words and quotes (no expansions). */
export function splitCommand(line: string): { words: string[] } | { error: string } {
  const words: string[] = [];
  let cur = '';
  let has = false;
  let quote: '"' | "'" | null = null;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (quote === "'") {
      if (c === "'") quote = null;
      else cur += c;
      continue;
    }
    if (quote === '"') {
      if (c === '"') quote = null;
      else if (c === '\\' && i + 1 < line.length && '"\\$`'.includes(line[i + 1]!)) cur += line[++i];
      else cur += c;
      continue;
    }
    if (c === "'" || c === '"') {
      quote = c;
      has = true;
    } else if (c === '\\' && i + 1 < line.length) {
      cur += line[++i];
      has = true;
    } else if (/\s/.test(c)) {
      if (has) words.push(cur);
      cur = '';
      has = false;
    } else {
      cur += c;
      has = true;
    }
  }
  if (quote) return { error: `has an unterminated ${quote === '"' ? 'double' : 'single'} quote` };
  if (has) words.push(cur);
  return { words };
}

/** Quotes words back into a command line (for display). */
export function joinCommand(words: string[]): string {
  return words.map((w) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(w) ? w : `'${w.replace(/'/g, `'\\''`)}'`)).join(' ');
}
