// Hand-written checks for the most frequent log items — a `task.create` command and one worker
// report — that accept exactly the well-formed common shape, so the zod schemas run only for
// the rest. A submission of 1,000 tasks is 1,000 commands and their 1,000 reports, applied on
// every manager: zod was the largest part of applying them.
//
// The rule: a fast check may only ACCEPT what the schema accepts (and then hands back the
// same values); when in doubt it answers "not sure" and the schema decides, with its own
// messages. test/fast-checks.test.ts compares both on many generated inputs. Pure module.

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9._:-]*$/;
const REPORT_STATES = new Set(['starting', 'running', 'succeeded', 'failed', 'stopped']);

/** commands.ts `idString`: 1–128 characters, letters, digits, '.', '_', ':' or '-'. */
function isId(v: unknown): v is string {
  return typeof v === 'string' && v.length >= 1 && v.length <= 128 && ID_RE.test(v);
}

/** commands.ts `count`: a safe integer ≥ 0. */
function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function isPlain(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/**
 * Whether `c` is a `task.create` command in its usual form (its spec is validated when applied,
 * as with the schema); false: let the schema decide.
 */
export function isFastTaskCreate(c: unknown): boolean {
  if (!isPlain(c)) return false;
  let n = 0;
  for (const k of Object.keys(c)) {
    if (k === 'type' || k === 'id' || k === 'spec' || k === 'at') n++;
    else if (k === 'quota') {
      if (c.quota !== undefined && !isCount(c.quota)) return false;
    } else if (k === 'byName') {
      if (c.byName !== undefined && typeof c.byName !== 'boolean') return false;
    } else return false;
  }
  return n === 4 && c.type === 'task.create' && isId(c.id) && isCount(c.at) && c.spec !== undefined;
}

/** Whether `r` is a worker report in its usual form (no health: the schema checks that); false: let the schema decide. */
export function isFastReport(r: unknown): boolean {
  if (!isPlain(r)) return false;
  let n = 0;
  for (const k of Object.keys(r)) {
    const v = r[k];
    switch (k) {
      case 'taskId':
      case 'nodeId':
      case 'state':
      case 'at':
        n++;
        break;
      // Optional fields: absent or undefined, or of their type.
      case 'reason':
      case 'detail':
        if (v === undefined) break;
        if (typeof v !== 'string' || v.length > 4096) return false;
        break;
      case 'exitCode':
        if (v === undefined) break;
        if (typeof v !== 'number' || !Number.isSafeInteger(v)) return false;
        break;
      case 'attempt':
        if (v === undefined) break;
        if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) return false;
        break;
      case 'health':
        if (v === undefined) break;
        return false;
      default:
        return false;
    }
  }
  return n === 4 && isId(r.taskId) && isId(r.nodeId) && typeof r.state === 'string' && REPORT_STATES.has(r.state) && isCount(r.at);
}
