// "No healthy worker declared down". PURE.
//
// The nemesis of a chaos run faults managers and links; a worker itself is harmed only when the
// nemesis crash-restarts it (or it exits on its own). Every other worker stays reachable by
// every manager the whole run (partitions cut manager↔manager links only), so a leader that
// declares it down blamed the worker for the control plane's own trouble — a leader change, a
// stalled or paused manager, a stepped clock. Declarations are read from the managers' logs
// (`node <id> is down: <reason>`): a decision a leader made counts even when fencing later
// rejected it, since it shows the leader's failure detector blamed the worker.

export interface DownDeclaration {
  /** The manager that decided. */
  manager: string;
  node: string;
  reason: string;
  /** The log line (for the report). */
  line: string;
}

export interface WorkersCheckInput {
  /** Every worker of the run. */
  workers: readonly string[];
  /** Workers the nemesis harmed (crash-restarts) or that exited on their own: excused. */
  harmed: readonly string[];
  declarations: readonly DownDeclaration[];
}

export interface WorkersResult {
  ok: boolean;
  workers: number;
  /** Declarations against workers nothing harmed. */
  violations: DownDeclaration[];
  /** Declarations against harmed workers (allowed; listed for the report). */
  excused: number;
}

const DOWN_LINE = /node (\S+) is down: (.*?)(?:\s+\{.*)?$/;

/** Down declarations in one manager's log (text or JSON lines). */
export function parseDownDeclarations(manager: string, log: string): DownDeclaration[] {
  const out: DownDeclaration[] = [];
  for (const raw of log.split('\n')) {
    if (!raw.includes(' is down: ')) continue;
    let msg = raw;
    if (raw.startsWith('{')) {
      try {
        const j = JSON.parse(raw) as { msg?: unknown };
        if (typeof j.msg !== 'string') continue;
        msg = j.msg;
      } catch {
        continue; // a line cut by a SIGKILL
      }
    }
    const m = DOWN_LINE.exec(msg);
    if (m === null) continue;
    out.push({ manager, node: m[1]!, reason: m[2]!.trim(), line: raw.trim().slice(0, 300) });
  }
  return out;
}

export function checkNoHealthyWorkerDown(input: WorkersCheckInput): WorkersResult {
  const harmed = new Set(input.harmed);
  const known = new Set(input.workers);
  const violations: DownDeclaration[] = [];
  let excused = 0;
  for (const d of input.declarations) {
    if (!known.has(d.node)) continue;
    if (harmed.has(d.node)) excused++;
    else violations.push(d);
  }
  return { ok: violations.length === 0, workers: input.workers.length, violations, excused };
}
