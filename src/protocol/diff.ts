// Field-by-field differences between two specs: what `apply --dry-run` prints and what a
// name-keyed create (apply of a task) names when the existing task has another spec.
//
// Pure module: no IO, no clocks.

/** One differing field, by the path a user writes it (`containers[0].command`, `update.order`). */
export interface FieldChange {
  path: string;
  /** Undefined: the field is absent on that side. */
  from?: unknown;
  to?: unknown;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Arrays of scalars compare as one value (a command is one field, not one per word). */
function scalarArray(v: unknown): boolean {
  return Array.isArray(v) && v.every((x) => x === null || typeof x !== 'object');
}

function same(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => same(x, b[i]));
  if (isPlainObject(a) && isPlainObject(b)) {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    for (const k of keys) if (!same(a[k], b[k])) return false;
    return true;
  }
  return false;
}

/**
 * The fields that differ between `from` and `to`, depth first, keys sorted. Objects recurse;
 * arrays of objects recurse by index (`containers[0]…`); other arrays and scalars compare
 * whole. A key whose value is undefined counts as absent.
 */
export function fieldChanges(from: unknown, to: unknown, path = ''): FieldChange[] {
  if (same(from, to)) return [];
  if (isPlainObject(from) && isPlainObject(to)) {
    const keys = [...new Set([...Object.keys(from), ...Object.keys(to)])].sort();
    return keys.flatMap((k) => fieldChanges(from[k], to[k], path === '' ? k : `${path}.${k}`));
  }
  if (Array.isArray(from) && Array.isArray(to) && !(scalarArray(from) && scalarArray(to))) {
    const out: FieldChange[] = [];
    for (let i = 0; i < Math.max(from.length, to.length); i++) out.push(...fieldChanges(from[i], to[i], `${path}[${i}]`));
    return out;
  }
  return [{ path: path || '(spec)', ...(from !== undefined ? { from } : {}), ...(to !== undefined ? { to } : {}) }];
}

/** `containers[0].command: ["sleep","60"] → ["sleep","70"]` (values as JSON, cut past `max` characters). */
export function describeChange(c: FieldChange, max = Infinity): string {
  const show = (v: unknown): string => {
    if (v === undefined) return '(unset)';
    const s = JSON.stringify(v);
    return s.length > max ? `${s.slice(0, Math.max(0, max - 3))}...` : s;
  };
  return `${c.path}: ${show(c.from)} → ${show(c.to)}`;
}
