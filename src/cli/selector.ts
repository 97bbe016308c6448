// Label selectors for `ps -l` and `nodes -l`: `k=v`, `k==v`, `k!=v`, comma-separated (all must
// hold). A missing label never equals anything, so `k!=v` holds where there is no `k`.
import { UsageError } from './args.js';

export interface Requirement {
  key: string;
  op: '=' | '!=';
  value: string;
}

const KEY_RE = /^[A-Za-z0-9]([A-Za-z0-9._\/-]*[A-Za-z0-9])?$/;
const VALUE_RE = /^[^\s,=!]*$/;

/** Parses one or more selectors (each comma-separated); a malformed one is a usage error. */
export function parseSelectors(flag: string, texts: string[]): Requirement[] {
  const out: Requirement[] = [];
  for (const text of texts) {
    for (const part of text.split(',')) {
      const p = part.trim();
      const m = /^([^=!\s]+)\s*(==|=|!=)\s*(.*)$/.exec(p);
      if (!m || !KEY_RE.test(m[1]!) || !VALUE_RE.test(m[3]!)) {
        throw new UsageError(`${flag}: '${p}' is not a label selector; use key=value or key!=value (comma-separated: all must hold), e.g. ${flag} tier=web,zone!=a`);
      }
      out.push({ key: m[1]!, op: m[2] === '!=' ? '!=' : '=', value: m[3]! });
    }
  }
  return out;
}

export function matches(reqs: readonly Requirement[], labels: Record<string, string> | undefined): boolean {
  const l = labels ?? {};
  return reqs.every((r) => {
    const v = Object.hasOwn(l, r.key) ? l[r.key] : undefined;
    return r.op === '=' ? v === r.value : v !== r.value;
  });
}

export function formatLabels(labels: Record<string, string> | undefined): string {
  const e = Object.entries(labels ?? {});
  return e.length ? e.map(([k, v]) => `${k}=${v}`).join(',') : '-';
}
