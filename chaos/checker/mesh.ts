// The routing mesh's promises, judged on the requests the chaos harness sent through it. PURE:
// no IO, no clocks.
//
// Inputs (all times on the harness's clock):
//   requests   one record per mesh request: the client (each sends one request at a time, on a
//              new connection, with a timeout), the worker whose mesh address it went to, when
//              it was sent and when it ended, and its outcome (ok + the task id that answered,
//              or failed + why).
//   freezes    each freeze-replica fault: the replica (task id, pid) SIGSTOPped at `from`,
//              SIGCONTed at `to` (null: never, counted to `end`).
//   downs      windows in which a worker was down by the nemesis' doing (SIGKILLed, SIGSTOPped,
//              crash-restarted, killed for good: `to` null) or crashed on its own until the heal
//              that restarted it.
//   samples    the mesh table as the leader saw it over time (the task ids of the service's
//              ready endpoints), to see the frozen replica leave the table and come back.
//   context    the other faults (manager kill/pause/partition/clock-step, link faults), used
//              only to say what was going on when a request failed.
//
// Promises:
//   (a) mesh-failure     outside every worker-affecting window — a worker down (its window,
//                        then `settleMs` after it came back) or a replica frozen (the freeze,
//                        then `freezeSettleMs` after the SIGCONT) — every request succeeds.
//                        Manager faults (kill, pause, partition, clock steps) and link faults
//                        excuse nothing: the mesh serves from the last table it got, whether or
//                        not a leader is there to send the next one.
//   (b) repeated-stall   during a freeze (requests whose [sent, done] meets [from, to]) each
//                        client loses at most ONE request per worker address: the first
//                        connection that worker's mesh routes to the frozen replica stalls, and
//                        after its stall timeout the replica is set aside for new connections.
//                        Allowed more only when the freeze outlasts the set-aside (10 s at
//                        first, doubling while it stalls again: one more stall each time it
//                        expires), or when the frozen replica was seen leaving the leader's
//                        table and coming back within the window (the mesh forgets what it knew
//                        of a replica no longer in its table, so its first connection after it
//                        comes back may stall again). The harness never causes the latter
//                        (one fault at a time; a frozen process's task keeps running on a ready
//                        node); a spontaneous leader change that computed a table without it
//                        would. A table change that only touches the other replicas adds
//                        nothing: the set-aside is kept per replica address.
//   (c) late-stall       during a freeze, through one worker address (any client), a request
//                        failed that was sent more than the stall timeout + `stallSlackMs` after
//                        the earliest failed request of that address in the freeze: by then the
//                        first connection that worker's mesh routed to the frozen replica (sent
//                        no later than that earliest failure) had been silent for the stall
//                        timeout, so the replica was set aside and no later connection went to
//                        it. The slack covers the delays between the harness sending and the
//                        worker's mesh reading the bytes, and a late timer on a loaded host.
//                        Failures are grouped greedily into such spans; as many spans as (b)
//                        allows stalls are fine (an aside that expired, a re-entry). This is what
//                        catches a mesh whose stall watch is off in a short freeze, where each
//                        client, blocked by its own stalled request, cannot lose two through one
//                        address.
// Requests to a worker that was itself down while they ran are not judged (its mesh is gone or
// frozen with it). Requests in the settle margins are not judged either (counted as `settling`).

export interface MeshRequest {
  /** The client that sent it (one request in flight per client). */
  client: string;
  /** The client's request number (1, 2, …). */
  seq: number;
  /** The worker whose mesh address it went to. */
  worker: string;
  /** host:port of that mesh listener. */
  addr: string;
  sent: number;
  done: number;
  outcome: 'ok' | 'failed';
  /** The replica that answered (ok). */
  taskId?: string;
  /** Why it failed. */
  error?: string;
}

export interface ReplicaFreeze {
  step: number | null;
  taskId: string;
  pid: number;
  /** The worker the replica runs on (null: unknown). */
  node: string | null;
  from: number;
  /** When it was SIGCONTed (null: never; counted to the end). */
  to: number | null;
}

export interface MeshWorkerDown {
  node: string;
  from: number;
  /** When it came back (null: never). */
  to: number | null;
  how: string;
}

export interface MeshTableSample {
  at: number;
  /** Task ids of the replicas in the leader's mesh table for the service. */
  ready: string[];
}

export interface MeshFaultContext {
  kind: string;
  from: number;
  to: number;
  detail: string;
}

export interface MeshCheckInput {
  requests: readonly MeshRequest[];
  freezes?: readonly ReplicaFreeze[];
  downs?: readonly MeshWorkerDown[];
  samples?: readonly MeshTableSample[];
  context?: readonly MeshFaultContext[];
  /** End of the recorded history (freezes never thawed end here). */
  end: number;
}

export interface MeshCheckOptions {
  /** After a worker came back, requests are not judged for this long. */
  settleMs: number;
  /** After a frozen replica was SIGCONTed, requests are not judged for this long. */
  freezeSettleMs: number;
  /** The workers' --mesh-stall-timeout (ms). */
  stallTimeoutMs: number;
  /** How long the mesh first sets a stalled replica aside (doubling per stall in a row, ≤ 8×). Default 10000. */
  setAsideMs?: number;
  /** The clients' request timeout (a request in flight when a freeze began may be its stall). Default 2000. */
  requestTimeoutMs?: number;
  /** (c): slack on top of the stall timeout between the first and a later stall through one address. Default 1000. */
  stallSlackMs?: number;
  /** Violations listed at most (the rest counted). Default 50. */
  maxViolations?: number;
}

export type MeshViolation =
  | { kind: 'mesh-failure'; message: string; request: MeshRequest }
  | { kind: 'repeated-stall'; message: string; client: string; addr: string; freeze: ReplicaFreeze; allowed: number; requests: MeshRequest[] }
  | { kind: 'late-stall'; message: string; addr: string; freeze: ReplicaFreeze; allowed: number; first: MeshRequest; requests: MeshRequest[] };

export interface MeshFreezeSummary {
  step: number | null;
  taskId: string;
  node: string | null;
  from: number;
  to: number | null;
  /** Requests judged under (b) in this freeze. */
  requests: number;
  failures: number;
  /** The most failures of one client through one worker address. */
  maxPerClientAddr: number;
  /** The most spans of stalls through one address (c). */
  maxSpansPerAddr: number;
  /** What (b) allowed per client and address. */
  allowed: number;
  /** Times the frozen replica was seen leaving the table and coming back within the freeze. */
  reentries: number;
}

export interface MeshResult {
  ok: boolean | 'unknown';
  reason?: string;
  requests: number;
  succeeded: number;
  failed: number;
  clients: number;
  /** Worker addresses used. */
  addrs: string[];
  /** Requests judged under (a), and how many of them failed (each a violation). */
  judged: number;
  /** Requests to a worker that was down while they ran (not judged), and how many failed. */
  toDownWorker: { requests: number; failed: number };
  /** Requests in a settle margin after a heal (not judged), and how many failed. */
  settling: { requests: number; failed: number };
  /** Requests judged under (b), and how many failed (within the allowance or not). */
  inFreezes: { requests: number; failed: number };
  freezes: MeshFreezeSummary[];
  /** Replicas that answered (task ids), with how many requests each. */
  answeredBy: Record<string, number>;
  violations: MeshViolation[];
  moreViolations: number;
}

const secs = (ms: number): string => `+${(ms / 1000).toFixed(3)}s`;

/** One request, for a violation message. */
export function describeMeshRequest(r: MeshRequest): string {
  const what = r.outcome === 'ok' ? `answered by ${r.taskId ?? '?'}` : `FAILED: ${r.error ?? 'no reason recorded'}`;
  return `${r.client}#${r.seq} via ${r.worker} ${r.addr} sent ${secs(r.sent)}, ended ${secs(r.done)} (${Math.round(r.done - r.sent)} ms): ${what}`;
}

/**
 * Stall episodes a freeze of `lengthMs` may cost one client through one address: one, plus one
 * each time the set-aside (`setAsideMs`, doubling per stall in a row, at most 8×) can have
 * expired within the window (its length + a request timeout, since a request sent just before
 * the freeze may be the first stall).
 */
export function stallEpisodes(lengthMs: number, setAsideMs: number, requestTimeoutMs: number): number {
  if (setAsideMs <= 0) return Number.POSITIVE_INFINITY;
  let n = 1;
  let t = 0;
  for (let k = 0; k < 10_000; k++) {
    t += setAsideMs * 2 ** Math.min(k, 3);
    if (t >= lengthMs + requestTimeoutMs) break;
    n++;
  }
  return n;
}

const meets = (aFrom: number, aTo: number, bFrom: number, bTo: number): boolean => aFrom <= bTo && bFrom <= aTo;

export function checkMesh(input: MeshCheckInput, o: MeshCheckOptions): MeshResult {
  const setAside = o.setAsideMs ?? 10_000;
  const timeout = o.requestTimeoutMs ?? 2000;
  const maxV = o.maxViolations ?? 50;
  const span = o.stallTimeoutMs + (o.stallSlackMs ?? 1000);
  const requests = [...input.requests].sort((a, b) => a.sent - b.sent || (a.client < b.client ? -1 : a.client > b.client ? 1 : a.seq - b.seq));
  const freezes = [...(input.freezes ?? [])].sort((a, b) => a.from - b.from);
  const downs = input.downs ?? [];
  const samples = [...(input.samples ?? [])].sort((a, b) => a.at - b.at);
  const violations: MeshViolation[] = [];
  let more = 0;
  const add = (v: MeshViolation): void => {
    if (violations.length < maxV) violations.push(v);
    else more++;
  };
  const last = requests.reduce((m, r) => Math.max(m, r.done), input.end);
  const end = (to: number | null): number => to ?? last;

  const result: MeshResult = {
    ok: true,
    requests: requests.length,
    succeeded: requests.filter((r) => r.outcome === 'ok').length,
    failed: requests.filter((r) => r.outcome !== 'ok').length,
    clients: new Set(requests.map((r) => r.client)).size,
    addrs: [...new Set(requests.map((r) => r.addr))].sort(),
    judged: 0,
    toDownWorker: { requests: 0, failed: 0 },
    settling: { requests: 0, failed: 0 },
    inFreezes: { requests: 0, failed: 0 },
    freezes: [],
    answeredBy: {},
    violations,
    moreViolations: 0,
  };
  for (const r of requests) if (r.outcome === 'ok' && r.taskId !== undefined) result.answeredBy[r.taskId] = (result.answeredBy[r.taskId] ?? 0) + 1;
  if (requests.length === 0) {
    result.ok = 'unknown';
    result.reason = 'no mesh request was recorded';
    return result;
  }

  /** The other faults going on while a request ran (for messages). */
  const during = (r: MeshRequest): string => {
    const c = (input.context ?? []).filter((x) => meets(x.from, x.to, r.sent, r.done));
    return c.length === 0 ? 'no fault was active' : `during ${c.map((x) => `${x.kind} (${x.detail}, ${secs(x.from)}…${secs(x.to)})`).join('; ')}`;
  };

  // Per freeze, per (client, addr): the requests judged under (b).
  const inFreeze = new Map<ReplicaFreeze, Map<string, MeshRequest[]>>();
  for (const f of freezes) inFreeze.set(f, new Map());

  for (const r of requests) {
    const ownDown = downs.some((d) => d.node === r.worker && meets(d.from, end(d.to), r.sent, r.done));
    if (ownDown) {
      result.toDownWorker.requests++;
      if (r.outcome !== 'ok') result.toDownWorker.failed++;
      continue;
    }
    const f = freezes.find((x) => meets(x.from, end(x.to), r.sent, r.done));
    if (f !== undefined) {
      result.inFreezes.requests++;
      if (r.outcome !== 'ok') result.inFreezes.failed++;
      const key = `${r.client}|${r.addr}`;
      const m = inFreeze.get(f)!;
      const list = m.get(key) ?? [];
      list.push(r);
      m.set(key, list);
      continue;
    }
    const settling =
      downs.some((d) => d.to !== null && meets(d.from, d.to + o.settleMs, r.sent, r.done)) ||
      downs.some((d) => d.to === null && r.done >= d.from && r.sent <= d.from + o.settleMs) ||
      freezes.some((x) => meets(x.from, end(x.to) + o.freezeSettleMs, r.sent, r.done));
    if (settling) {
      result.settling.requests++;
      if (r.outcome !== 'ok') result.settling.failed++;
      continue;
    }
    result.judged++;
    if (r.outcome !== 'ok') add({ kind: 'mesh-failure', request: r, message: `${describeMeshRequest(r)} — through a live worker, outside every worker or replica fault and its settle margin; ${during(r)}` });
  }

  for (const f of freezes) {
    const to = end(f.to);
    // Re-entries of the frozen replica into the leader's table within the freeze.
    let reentries = 0;
    let prev: boolean | null = null;
    for (const s of samples) {
      if (s.at < f.from || s.at > to) continue;
      const present = s.ready.includes(f.taskId);
      if (prev === false && present) reentries++;
      prev = present;
    }
    const allowed = stallEpisodes(to - f.from, setAside, timeout) + reentries;
    let n = 0;
    let failures = 0;
    let maxPer = 0;
    for (const [key, list] of inFreeze.get(f)!) {
      n += list.length;
      const failed = list.filter((r) => r.outcome !== 'ok');
      failures += failed.length;
      maxPer = Math.max(maxPer, failed.length);
      if (failed.length > allowed) {
        const [client, addr] = [key.slice(0, key.indexOf('|')), key.slice(key.indexOf('|') + 1)];
        add({
          kind: 'repeated-stall',
          client,
          addr,
          freeze: f,
          allowed,
          requests: failed,
          message:
            `${client} lost ${failed.length} requests through ${addr} while replica ${f.taskId} (pid ${f.pid}${f.node === null ? '' : ` on ${f.node}`}) was frozen ${secs(f.from)}…${f.to === null ? 'the end' : secs(f.to)}; ` +
            `at most ${allowed} allowed (the mesh should set the frozen replica aside after its first stall${reentries > 0 ? `; ${reentries} re-entries into the table seen` : ''}): ` +
            failed.map(describeMeshRequest).join(' | '),
        });
      }
    }
    // (c) per address, any client: failures grouped into spans from the earliest failure of each.
    const byAddr = new Map<string, MeshRequest[]>();
    for (const list of inFreeze.get(f)!.values()) for (const r of list) if (r.outcome !== 'ok') byAddr.set(r.addr, [...(byAddr.get(r.addr) ?? []), r]);
    let maxSpans = 0;
    for (const [addr, fails] of [...byAddr].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
      fails.sort((a, b) => a.sent - b.sent);
      const spans: MeshRequest[][] = [];
      for (const r of fails) {
        const cur = spans[spans.length - 1];
        if (cur !== undefined && r.sent <= cur[0]!.sent + span) cur.push(r);
        else spans.push([r]);
      }
      maxSpans = Math.max(maxSpans, spans.length);
      if (spans.length > allowed) {
        const late = spans.slice(allowed).flat();
        add({
          kind: 'late-stall',
          addr,
          freeze: f,
          allowed,
          first: fails[0]!,
          requests: late,
          message:
            `through ${addr}, ${late.length} request${late.length === 1 ? '' : 's'} failed more than the stall timeout (${o.stallTimeoutMs} ms) + ${span - o.stallTimeoutMs} ms after the first failure of that address while replica ${f.taskId} (pid ${f.pid}${f.node === null ? '' : ` on ${f.node}`}) was frozen ${secs(f.from)}…${f.to === null ? 'the end' : secs(f.to)} ` +
            `(${spans.length} spans of stalls, ${allowed} allowed): the mesh kept routing connections to the frozen replica. First: ${describeMeshRequest(fails[0]!)}; late: ${late.map(describeMeshRequest).join(' | ')}`,
        });
      }
    }
    result.freezes.push({ step: f.step, taskId: f.taskId, node: f.node, from: f.from, to: f.to, requests: n, failures, maxPerClientAddr: maxPer, maxSpansPerAddr: maxSpans, allowed, reentries });
  }
  result.moreViolations = more;
  if (violations.length > 0) result.ok = false;
  return result;
}
