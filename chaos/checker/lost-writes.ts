// Lost-write checker: every acknowledged write must survive to the end of the run, unless a
// later write replaced it. PURE: no IO, no clocks.
//
// Definitions. For each key, `finalState` holds what a (linearizable, after the cluster healed)
// read returned at the end: `{ value, version }`, or null when the key is absent. Keys missing
// from the map were not read and are reported as `unchecked`. For every acknowledged (`ok`)
// write or cas W of key k, with F = finalState(k):
//   - F absent                    → LOST (the store has no deletes in these histories).
//   - W reported version w:
//       F.version == w            → visible if F.value == W.value, else LOST (the version
//                                   W was acknowledged with now holds another value);
//       F.version >  w            → overwritten in version order: fine;
//       F.version <  w            → LOST (the key went back to an older state).
//   - W without a reported version:
//       F.value == W.value        → visible;
//       some other write/cas W2 (ok or unknown) of F.value that did not complete before W was
//       invoked (so it may be ordered after W)  → overwritten in real-time order: fine;
//       otherwise                 → LOST.
// Also reported, as `unexplained`: a final value that no write, cas (ok or unknown) or the
// initial contents ever held ("phantom" value), or one whose writers all reported a version other
// than the final one.

import { describeOp, type KvVersioned, type Op } from './types.js';

export interface LostWrite {
  key: string;
  op: Op;
  reason: string;
  final: KvVersioned | null;
}

export interface LostWritesResult {
  ok: boolean;
  /** Acknowledged writes/cas that were checked. */
  checked: number;
  /** Of those, writes/cas of plain clients (no x-request-id); present when any. */
  plainWrites?: number;
  lost: LostWrite[];
  /** Keys whose final value no operation wrote. */
  unexplained: { key: string; final: KvVersioned; reason: string }[];
  /** Keys written in the history but absent from `finalState` (not judged). */
  unchecked: string[];
}

export function checkNoLostWrites(
  history: readonly Op[],
  finalState: ReadonlyMap<string, KvVersioned | null>,
  opts: { initial?: ReadonlyMap<string, KvVersioned | null> } = {},
): LostWritesResult {
  const writesByKey = new Map<string, Op[]>();
  for (const op of history) {
    if (op.type === 'read' || op.outcome === 'fail') continue;
    let l = writesByKey.get(op.key);
    if (l === undefined) writesByKey.set(op.key, (l = []));
    l.push(op);
  }
  const result: LostWritesResult = { ok: true, checked: 0, lost: [], unexplained: [], unchecked: [] };
  const end = (op: Op): number => (op.outcome === 'unknown' || op.complete === null ? Infinity : op.complete);

  for (const [key, writes] of writesByKey) {
    if (!finalState.has(key)) {
      if (writes.some((w) => w.outcome === 'ok')) result.unchecked.push(key);
      continue;
    }
    const final = finalState.get(key) ?? null;
    const init = opts.initial?.get(key) ?? null;
    if (final !== null) {
      const writers = writes.filter((w) => w.value === final.value);
      if (writers.length === 0 && init?.value !== final.value) {
        result.unexplained.push({ key, final, reason: `final value ${JSON.stringify(final.value)} v${final.version} was never written` });
      } else if (
        init?.value !== final.value &&
        writers.every((w) => w.outcome === 'ok' && w.result?.version !== null && w.result?.version !== undefined && w.result.version !== final.version)
      ) {
        const w = writers[0]!;
        result.unexplained.push({ key, final, reason: `final value ${JSON.stringify(final.value)} has v${final.version}, but it was written at v${w.result!.version} (#${w.id})` });
      }
    }
    for (const w of writes) {
      if (w.outcome !== 'ok') continue;
      result.checked++;
      if (w.plain === true) result.plainWrites = (result.plainWrites ?? 0) + 1;
      const lost = (reason: string): void => {
        result.lost.push({ key, op: w, reason: `${describeOp(w)}: ${reason}`, final });
      };
      if (final === null) {
        lost('the key is absent at the end');
        continue;
      }
      const v = w.result?.version;
      if (v !== null && v !== undefined) {
        if (final.version === v) {
          if (final.value !== w.value) lost(`the key ends at v${v}, the version this write was acknowledged with, but holds ${JSON.stringify(final.value)}`);
        } else if (final.version < v) {
          lost(`the key ends at v${final.version} (${JSON.stringify(final.value)}), older than the acknowledged v${v}`);
        }
        continue;
      }
      if (final.value === w.value) continue;
      const later = writes.some((o) => o !== w && o.value === final.value && !(end(o) < w.invoke));
      if (!later) lost(`the key ends at ${JSON.stringify(final.value)} v${final.version}, which no write ordered after this one wrote`);
    }
  }
  result.ok = result.lost.length === 0 && result.unexplained.length === 0;
  return result;
}
