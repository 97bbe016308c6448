// "A wiped manager never becomes part of the cluster" and "the API still demands tokens after
// healing". PURE: no IO, no clocks.
//
// Wipes. The `wipe` nemesis SIGKILLs a follower manager, moves its data directory aside and
// starts it again with the very same command line (same id, --bootstrap, now an empty data
// directory). The expected outcome (docs/operations.md, "A manager whose data directory was
// wiped") is a refusal: the process exits with status 1 and the wiped-member message, within
// `boundMs`. For each wipe the harness records what happened; a violation is:
//   stayed-up      the wiped process was still running `boundMs` after its start (the harness
//                  then SIGKILLs it), i.e. it did not refuse;
//   led            the wiped process was seen as leader (its own /v1/status, or the leader
//                  monitor) while it ran with the empty directory;
//   joined         its own /v1/status showed it as a follower that had applied entries
//                  (appliedIndex > 0) with the empty directory: it took part in the log;
//   wrong-exit     it exited, but not with status 1 and the wiped-member message (it did not
//                  refuse for the right reason).
// A wipe cut short by the end of the run (`aborted`) is not judged.
//
// Auth. The harness creates an admin token at setup, so the cluster "had tokens"; after healing
// it sends an anonymous PUT to every manager: each must answer 401. Any other answer is a
// violation (a 2xx means an anonymous write went through); no answer at all makes the check
// inconclusive.

export interface WipeStatus {
  at: number;
  role: string;
  term: number;
  appliedIndex: number;
}

export interface WipeRecord {
  manager: string;
  step: number | null;
  /** When the wiped process was started (harness clock). */
  at: number;
  outcome: 'refused' | 'exited' | 'stayed-up' | 'aborted';
  exitCode: number | null;
  /** How long the wiped process lived (ms), or how long it was watched. */
  aliveMs: number;
  /** The refusal line of its log, if any (shortened). */
  message?: string;
  /** Its own /v1/status answers while it ran. */
  statuses: WipeStatus[];
  /** The leader monitor named it leader during its life. */
  seenLeaderByMonitor?: boolean;
}

export interface WipeViolation {
  kind: 'stayed-up' | 'led' | 'joined' | 'wrong-exit';
  manager: string;
  step: number | null;
  message: string;
}

export interface WipesResult {
  ok: boolean;
  wipes: number;
  refused: number;
  violations: WipeViolation[];
}

/** The refusal a wiped manager prints (src/manager/incarnation.ts wipedMessage). */
export const WIPED_REFUSAL = /its data was wiped or replaced[\s\S]*Refusing to start/;

export function checkWipes(records: readonly WipeRecord[], boundMs: number): WipesResult {
  const violations: WipeViolation[] = [];
  let refused = 0;
  for (const r of records) {
    if (r.outcome === 'aborted') continue;
    const v = (kind: WipeViolation['kind'], message: string): void => {
      violations.push({ kind, manager: r.manager, step: r.step, message: `wipe of ${r.manager}${r.step === null ? '' : ` (step ${r.step})`} at ${r.at}: ${message}` });
    };
    const led = r.statuses.find((s) => s.role === 'leader');
    if (led !== undefined || r.seenLeaderByMonitor === true) v('led', `the wiped manager led${led !== undefined ? ` term ${led.term} (its status at ${led.at})` : ' (seen by the leader monitor)'}`);
    const joined = r.statuses.find((s) => s.role !== 'leader' && s.appliedIndex > 0);
    if (joined !== undefined) v('joined', `the wiped manager applied entries with an empty data directory: ${joined.role}, term ${joined.term}, applied index ${joined.appliedIndex} at ${joined.at}`);
    if (r.outcome === 'stayed-up' || r.aliveMs > boundMs) v('stayed-up', `it was still running ${Math.round(r.aliveMs)} ms after its start (bound ${boundMs} ms) instead of refusing`);
    else if (r.outcome === 'exited' || (r.outcome === 'refused' && (r.exitCode !== 1 || r.message === undefined)))
      v('wrong-exit', `it exited with status ${r.exitCode} ${r.message === undefined ? 'without the wiped-member refusal' : `(${r.message})`}`);
    else if (r.outcome === 'refused') refused++;
  }
  return { ok: violations.length === 0, wipes: records.filter((r) => r.outcome !== 'aborted').length, refused, violations };
}

export interface AuthProbe {
  manager: string;
  /** HTTP status of the anonymous PUT, or null when the manager did not answer. */
  status: number | null;
  detail?: string;
}

export interface AuthResult {
  ok: boolean | 'unknown';
  probes: AuthProbe[];
  violations: string[];
}

export function checkAuthAfterHeal(probes: readonly AuthProbe[], managers: readonly string[]): AuthResult {
  const violations: string[] = [];
  let missing = false;
  for (const m of managers) {
    const p = probes.find((x) => x.manager === m);
    if (p === undefined || p.status === null) {
      missing = true;
      continue;
    }
    if (p.status !== 401) violations.push(`${m} answered an anonymous PUT with HTTP ${p.status}${p.detail ? ` (${p.detail})` : ''}, not 401: the API stopped demanding tokens`);
  }
  return { ok: violations.length > 0 ? false : missing ? 'unknown' : true, probes: [...probes], violations };
}
