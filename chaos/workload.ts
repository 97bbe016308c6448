// The workload: kv clients recording a history for the checkers, and a task workload with its
// observations.
//
// KV: `clients` concurrent clients, each doing one request at a time on a few keys: reads (GET,
// linearizable), writes (PUT, unique values `c<client>-<seq>`) and compare-and-set (PUT ?cas=,
// expecting the last version that client saw of the key, or 0). Every request goes to a random
// manager through the client's own proxy link, once: no retry, no failover, a per-op timeout, so
// each outcome belongs to one request. Outcomes: 2xx → ok; 409/400/413 → fail (the state
// machine refused it); anything else (timeout, reset, 5xx, 421) → unknown. Every write carries a
// fresh x-request-id, so the manager's own internal retries (forwarding across a leader change)
// stay idempotent.
//
// Plain clients (`plainClients`, labelled p1, p2, …) behave like curl or any HTTP library: the
// same mix of reads, writes and cas to random managers (followers and the leader alike), but
// with no x-request-id, so de-duplication rests on the ids the managers invent. Their ops are
// recorded with `plain: true`, and the checkers count their acknowledged writes.
//
// Tasks: every tick, submit a process-driver task (`sleep 600`, restart always) through a random
// manager, or stop one; acknowledged submissions are recorded. Observations of the task list
// (linearizable GET /v1/tasks?all=true on the real addresses) and of the task processes on the
// workers (their process-driver records + /proc) are sampled for checkTasks.
import http from 'node:http';
import { createHash } from 'node:crypto';
import type { Op, KvVersioned } from './checker/index.js';
import type { ProcessInterval, TaskObservation, TaskSubmission } from './checker/index.js';
import type { ChaosCluster } from './cluster.js';
import { sleep } from './cluster.js';
import { HttpFailure, request, type HttpResult } from './http.js';
import { Rng } from './prng.js';

export interface KvWorkloadOptions {
  clients: number;
  /** Clients that send no x-request-id (plain HTTP users); default 0. */
  plainClients?: number;
  keys: string[];
  opTimeoutMs: number;
  seed: number;
  runId: string;
  /** Test-only: during partitions, read with ?stale=true from cut-off managers (writes go to the others). */
  injectStaleReads?: boolean;
}

/** An Op as recorded: plus the manager asked and, for fail/unknown, what happened. */
export type RecordedOp = Op & { manager?: string; stale?: boolean; error?: string };

function describeHttp(r: HttpResult): string {
  const code = errorCode(r);
  const b = r.body as { error?: { message?: string } } | null;
  const msg = typeof b === 'object' && b !== null ? b.error?.message : undefined;
  return `HTTP ${r.status}${code ? ` ${code}` : ''}${msg ? `: ${msg.slice(0, 160)}` : ''}`;
}

export function clientLabel(i: number | string): string {
  return typeof i === 'number' ? `c${i}` : i;
}

/** The label (proxy link and Op.client) of the i-th plain client. */
export function plainClientLabel(i: number): string {
  return `p${i}`;
}

export class KvWorkload {
  readonly ops: RecordedOp[] = [];
  private nextId = 1;
  /** How many injected stale reads were sent (test-only flag). */
  staleReads = 0;

  constructor(
    private readonly cluster: ChaosCluster,
    private readonly clock: () => number,
    private readonly o: KvWorkloadOptions,
    private readonly minority: () => string[],
  ) {}

  async run(signal: AbortSignal): Promise<void> {
    await Promise.all([
      ...Array.from({ length: this.o.clients }, (_, i) => this.client(i + 1, signal)),
      ...Array.from({ length: this.o.plainClients ?? 0 }, (_, i) => this.client(plainClientLabel(i + 1), signal)),
    ]);
  }

  /** One client: `n` a number (x-request-id on every write) or a plain client's label. */
  private async client(n: number | string, signal: AbortSignal): Promise<void> {
    const rng = Rng.derive(this.o.seed, typeof n === 'number' ? `client-${n}` : `plain-${n}`);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const known = new Map<string, number>();
    let seq = 0;
    try {
      while (!signal.aborted) {
        const key = rng.pick(this.o.keys);
        const r = rng.next();
        let manager = rng.pick(this.cluster.managerIds);
        // Test-only sabotage: while some managers are cut off, read them with ?stale=true and
        // write through the others, so that the reads fall behind acknowledged writes.
        const cut = this.o.injectStaleReads ? this.minority() : [];
        if (cut.length > 0 && r >= 0.5) manager = rng.pick(this.cluster.managerIds.filter((m) => !cut.includes(m)));
        if (r < 0.5) {
          let stale = false;
          if (cut.length > 0) {
            manager = rng.pick(cut);
            stale = true;
            this.staleReads++;
          }
          const op = await this.read(n, agent, manager, key, stale);
          if (op.outcome === 'ok' && op.result?.version !== null && op.result?.version !== undefined) known.set(key, op.result.version);
        } else {
          const value = `${clientLabel(n)}-${++seq}`;
          const cas = r >= 0.75 ? (known.get(key) ?? 0) : undefined;
          const op = await this.write(n, agent, manager, key, value, cas);
          if (op.outcome === 'ok' && op.result?.version != null) known.set(key, op.result.version);
        }
        await sleep(rng.between(5, 25), signal);
      }
    } finally {
      agent.destroy();
    }
  }

  private begin(client: number | string, key: string, type: Op['type'], extra: Partial<RecordedOp> = {}): RecordedOp {
    const op: RecordedOp = { id: this.nextId++, client, key, type, invoke: this.clock(), complete: null, outcome: 'unknown', ...extra };
    this.ops.push(op);
    return op;
  }

  private async read(client: number | string, agent: http.Agent | undefined, manager: string, key: string, stale: boolean, addr?: string): Promise<RecordedOp> {
    const op = this.begin(client, key, 'read', { manager, ...(stale ? { stale } : {}), ...(typeof client === 'string' && client !== 'final' ? { plain: true } : {}) });
    const to = addr ?? this.cluster.clientAddr(clientLabel(client), manager);
    try {
      const res = await request(to, `/v1/kv/${encodeURIComponent(key)}${stale ? '?stale=true' : ''}`, { timeoutMs: this.o.opTimeoutMs, agent, headers: this.cluster.authHeaders() });
      op.complete = this.clock();
      if (res.status === 200) {
        const b = res.body as { value: string; version: number };
        op.outcome = 'ok';
        op.result = { value: b.value, version: b.version };
      } else if (res.status === 404 && errorCode(res) === 'not_found') {
        op.outcome = 'ok';
        op.result = { value: null, version: null };
      } else {
        op.outcome = res.status >= 400 && res.status < 500 && res.status !== 421 ? 'fail' : 'unknown';
        op.error = describeHttp(res);
      }
    } catch (e) {
      op.complete = this.clock();
      op.outcome = 'unknown';
      op.error = (e as Error).message;
      if (!(e instanceof HttpFailure)) throw e;
    }
    return op;
  }

  private async write(client: number | string, agent: http.Agent, manager: string, key: string, value: string, cas: number | undefined): Promise<RecordedOp> {
    const plain = typeof client === 'string';
    const op = this.begin(client, key, cas === undefined ? 'write' : 'cas', {
      value,
      manager,
      ...(cas === undefined ? {} : { expectVersion: cas }),
      ...(plain ? { plain: true } : {}),
    });
    try {
      const res = await request(
        this.cluster.clientAddr(clientLabel(client), manager),
        `/v1/kv/${encodeURIComponent(key)}${cas === undefined ? '' : `?cas=${cas}`}`,
        { method: 'PUT', body: value, timeoutMs: this.o.opTimeoutMs, agent, headers: { ...this.cluster.authHeaders(), ...(plain ? {} : { 'x-request-id': `${this.o.runId}-${op.id}` }) } },
      );
      op.complete = this.clock();
      if (res.status >= 200 && res.status < 300) {
        op.outcome = 'ok';
        const v = (res.body as { version?: unknown }).version;
        op.result = { value, version: typeof v === 'number' ? v : null };
      } else {
        op.outcome = definitelyRefused(res) ? 'fail' : 'unknown';
        op.error = describeHttp(res);
      }
    } catch (e) {
      op.complete = this.clock();
      op.outcome = 'unknown';
      op.error = (e as Error).message;
      if (!(e instanceof HttpFailure)) throw e;
    }
    return op;
  }

  /**
   * Linearizable reads of every key after the cluster healed, retried (each attempt is recorded
   * in the history as a read of client 'final') until one succeeds or the deadline passes.
   */
  async finalReads(deadline: number, managers: () => string[]): Promise<Map<string, KvVersioned | null>> {
    const out = new Map<string, KvVersioned | null>();
    for (const key of this.o.keys) {
      let attempt = 0;
      while (Date.now() < deadline) {
        const ms = managers();
        const m = ms[attempt++ % Math.max(1, ms.length)] ?? this.cluster.managerIds[0]!;
        const op = await this.read('final', undefined, m, key, false, this.cluster.realAddr.get(m));
        if (op.outcome === 'ok') {
          out.set(key, op.result!.value === null ? null : { value: op.result!.value, version: op.result!.version! });
          break;
        }
        await sleep(200);
      }
    }
    return out;
  }
}

/**
 * A write the state machine certainly did not perform: 409/400/413, and 507 quota_exceeded (the
 * leader refuses before proposing, or every replica refuses the same entry at apply).
 */
function definitelyRefused(r: HttpResult): boolean {
  return r.status === 409 || r.status === 400 || r.status === 413 || (r.status === 507 && errorCode(r) === 'quota_exceeded');
}

function errorCode(r: HttpResult): string | undefined {
  const b = r.body as { error?: { code?: string } } | null;
  return typeof b === 'object' && b !== null ? b.error?.code : undefined;
}

// ------------------------------------------------------------------------------------------ tasks

export interface TaskWorkloadOptions {
  seed: number;
  opTimeoutMs: number;
  tickMs: number;
  /** Most tasks the workload keeps running at once. */
  maxTasks: number;
}

export interface TaskEvent {
  at: number;
  kind: 'submit' | 'stop';
  taskId: string | null;
  manager: string;
  outcome: 'ok' | 'fail' | 'unknown';
  detail?: string;
}

export const TASK_LINK = 'tasks';
export const TASK_PREFIX = 'chaos-';

export class TaskWorkload {
  readonly submissions: TaskSubmission[] = [];
  readonly observations: TaskObservation[] = [];
  readonly events: TaskEvent[] = [];
  private readonly intervals = new Map<string, ProcessInterval & { lastSeen: number }>();
  private readonly live = new Set<string>();
  private readonly stopped = new Set<string>();
  private seq = 0;

  constructor(
    private readonly cluster: ChaosCluster,
    private readonly clock: () => number,
    private readonly o: TaskWorkloadOptions,
  ) {}

  get processes(): ProcessInterval[] {
    return [...this.intervals.values()].map(({ lastSeen: _l, ...p }) => p);
  }

  /** Submits and stops tasks until the signal. */
  async run(signal: AbortSignal): Promise<void> {
    if (this.cluster.workerIds.length === 0) return;
    const rng = Rng.derive(this.o.seed, 'tasks');
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      while (!signal.aborted) {
        const manager = rng.pick(this.cluster.managerIds);
        if (this.live.size < this.o.maxTasks && !(this.live.size > 0 && rng.chance(0.25))) await this.submit(manager, agent);
        else if (this.live.size > 0) await this.stop(rng.pick([...this.live].sort()), manager, agent);
        await sleep(this.o.tickMs, signal);
      }
    } finally {
      agent.destroy();
    }
  }

  private async submit(manager: string, agent: http.Agent): Promise<void> {
    const name = `${TASK_PREFIX}${++this.seq}`;
    const spec = { name, driver: 'process', containers: [{ command: ['/bin/sh', '-c', 'sleep 600'] }], restart: { policy: 'always' } };
    const at0 = this.clock();
    try {
      const res = await request(this.cluster.clientAddr(TASK_LINK, manager), '/v1/tasks', { method: 'POST', json: spec, timeoutMs: this.o.opTimeoutMs, agent, headers: this.cluster.authHeaders() });
      const at = this.clock();
      if (res.status === 201 || res.status === 200) {
        const id = (res.body as { id: string }).id;
        this.submissions.push({ taskId: id, at, acknowledged: true });
        this.live.add(id);
        this.events.push({ at, kind: 'submit', taskId: id, manager, outcome: 'ok' });
      } else {
        this.events.push({ at, kind: 'submit', taskId: null, manager, outcome: res.status >= 400 && res.status < 500 && res.status !== 421 ? 'fail' : 'unknown', detail: `HTTP ${res.status} (${name})` });
      }
    } catch (e) {
      this.events.push({ at: this.clock(), kind: 'submit', taskId: null, manager, outcome: 'unknown', detail: `${(e as Error).message} (${name}, sent at ${at0.toFixed(0)})` });
    }
  }

  private async stop(id: string, manager: string, agent: http.Agent): Promise<void> {
    try {
      const res = await request(this.cluster.clientAddr(TASK_LINK, manager), `/v1/tasks/${encodeURIComponent(id)}`, { method: 'DELETE', timeoutMs: this.o.opTimeoutMs, agent, headers: this.cluster.authHeaders() });
      const ok = res.status >= 200 && res.status < 300;
      if (ok) {
        this.live.delete(id);
        this.stopped.add(id);
      }
      this.events.push({ at: this.clock(), kind: 'stop', taskId: id, manager, outcome: ok ? 'ok' : res.status === 404 ? 'fail' : 'unknown', detail: ok ? undefined : `HTTP ${res.status}` });
    } catch (e) {
      this.events.push({ at: this.clock(), kind: 'stop', taskId: id, manager, outcome: 'unknown', detail: (e as Error).message });
    }
  }

  /** Samples the task list and the task processes until the signal. */
  async observe(signal: AbortSignal, everyMs = 500): Promise<void> {
    if (this.cluster.workerIds.length === 0) return;
    let i = 0;
    while (!signal.aborted) {
      this.sampleProcesses();
      if (i++ % 2 === 0) await this.sampleTasks();
      await sleep(everyMs, signal);
    }
  }

  /** One linearizable read of the task list (real addresses; first manager that answers). */
  async sampleTasks(): Promise<boolean> {
    const ms = this.cluster.managerIds.filter((m) => this.cluster.isUp(m));
    for (const m of ms.sort(() => Math.random() - 0.5)) {
      const invoke = this.clock();
      let res: HttpResult;
      try {
        res = await request(this.cluster.realAddr.get(m)!, '/v1/tasks?all=true', { timeoutMs: 2000, headers: this.cluster.authHeaders() });
      } catch {
        continue;
      }
      if (res.status !== 200) continue;
      const complete = this.clock();
      const tasks = (res.body as { tasks: { id: string; name: string; node: string | null; state: string; attempt: number; reason: string }[] }).tasks;
      const seen = new Set<string>();
      for (const t of tasks) {
        if (!t.name.startsWith(TASK_PREFIX)) continue;
        seen.add(t.id);
        // Present: the state held at some point of [invoke, complete]; recorded at complete.
        this.observations.push({ taskId: t.id, node: t.node, state: t.state, attempt: t.attempt, at: complete, reason: t.reason });
      }
      // Absent: only acknowledged before this read was sent count (recorded at invoke).
      for (const s of this.submissions) {
        if (s.acknowledged && s.at < invoke && !seen.has(s.taskId)) this.observations.push({ taskId: s.taskId, node: null, state: 'absent', attempt: 0, at: invoke });
      }
      return true;
    }
    return false;
  }

  sampleProcesses(): void {
    const at = this.clock();
    const present = new Set<string>();
    for (const p of this.cluster.scanTaskProcesses()) {
      const key = `${p.taskId}|${p.attempt}|${p.node}|${p.pid}`;
      present.add(key);
      const cur = this.intervals.get(key);
      if (p.alive) {
        if (cur === undefined) this.intervals.set(key, { taskId: p.taskId, attempt: p.attempt, node: p.node, pid: p.pid, from: at, to: null, lastSeen: at });
        else if (cur.to === null) cur.lastSeen = at;
      } else if (cur !== undefined && cur.to === null) {
        cur.to = cur.lastSeen; // last time it was seen alive
      }
    }
    // Records that disappeared (retired and removed by the driver) end where they were last seen.
    for (const [key, iv] of this.intervals) {
      if (iv.to === null && !present.has(key)) iv.to = iv.lastSeen;
    }
  }

  /** Acknowledged, never stopped tasks not yet seen running. */
  unsettled(): string[] {
    const running = new Set(this.observations.filter((o) => o.state === 'running').map((o) => o.taskId));
    return this.submissions.filter((s) => s.acknowledged && !this.stopped.has(s.taskId) && !running.has(s.taskId)).map((s) => s.taskId);
  }
}

// ------------------------------------------------------------------------------------- grow

export const GROW_LINK = 'grow';

/** What the history records of a large value: its length and a digest (never the value). */
export function valueDigest(v: string): string {
  return `${Buffer.byteLength(v)}:${createHash('sha256').update(v).digest('hex').slice(0, 20)}`;
}

export interface GrowWorkloadOptions {
  seed: number;
  runId: string;
  opTimeoutMs: number;
  /** The fixed key set (`big-0` …): bounds the state the bursts can build. */
  keys: number;
  /** Concurrent writers of a burst. */
  concurrency?: number;
}

/**
 * The grow nemesis' writer: bursts of large values through the API (its own proxy links),
 * recorded as Ops whose `value` is the digest of the value (lost-write check by length+digest).
 * 507 quota_exceeded is an expected refusal (outcome fail, counted).
 */
export class GrowWorkload {
  readonly ops: RecordedOp[] = [];
  refusedQuota = 0;
  private nextId = 1;

  constructor(
    private readonly cluster: ChaosCluster,
    private readonly clock: () => number,
    private readonly o: GrowWorkloadOptions,
  ) {}

  async burst(b: { step: number; bytes: number; valueBytes: number; maxMs: number }, signal?: AbortSignal): Promise<{ ok: number; refusedQuota: number; failed: number; unknown: number; bytes: number }> {
    const rng = Rng.derive(this.o.seed, `grow-${b.step}`);
    const end = this.clock() + b.maxMs;
    const r = { ok: 0, refusedQuota: 0, failed: 0, unknown: 0, bytes: 0 };
    let sent = 0;
    let n = 0;
    const writer = async (): Promise<void> => {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      try {
        while (sent + b.valueBytes <= b.bytes && this.clock() < end && !signal?.aborted) {
          sent += b.valueBytes;
          const key = `big-${rng.between(0, this.o.keys - 1)}`;
          const head = `g${b.step}-${++n}-${this.o.runId}:`;
          const value = head + 'x'.repeat(Math.max(0, b.valueBytes - head.length));
          const manager = rng.pick(this.cluster.managerIds);
          const op: RecordedOp = { id: `g${this.nextId++}`, client: GROW_LINK, key, type: 'write', value: valueDigest(value), invoke: this.clock(), complete: null, outcome: 'unknown', manager };
          this.ops.push(op);
          try {
            const res = await request(this.cluster.clientAddr(GROW_LINK, manager), `/v1/kv/${key}`, {
              method: 'PUT',
              body: value,
              timeoutMs: this.o.opTimeoutMs,
              agent,
              headers: { ...this.cluster.authHeaders(), 'x-request-id': `${this.o.runId}-${op.id}` },
            });
            op.complete = this.clock();
            if (res.status >= 200 && res.status < 300) {
              const v = (res.body as { version?: unknown }).version;
              op.outcome = 'ok';
              op.result = { value: op.value!, version: typeof v === 'number' ? v : null };
              r.ok++;
              r.bytes += value.length;
            } else if (definitelyRefused(res)) {
              op.outcome = 'fail';
              op.error = describeHttp(res);
              if (res.status === 507) {
                r.refusedQuota++;
                this.refusedQuota++;
              } else r.failed++;
            } else {
              op.error = describeHttp(res);
              r.unknown++;
            }
          } catch (e) {
            op.complete = this.clock();
            op.error = (e as Error).message;
            r.unknown++;
            if (!(e instanceof HttpFailure)) throw e;
            await sleep(100, signal); // a manager down: do not spin
          }
        }
      } finally {
        agent.destroy();
      }
    };
    await Promise.all(Array.from({ length: this.o.concurrency ?? 3 }, () => writer()));
    return r;
  }

  /**
   * Final reads of every key a burst wrote, as digests: the paged kv list (`GET /v1/kv?prefix=big-`,
   * each page a linearizable read; nothing writes after healing), so a few requests instead of
   * one per key. A key written but not listed is absent (null). Empty map if the deadline passes.
   */
  async finalReads(deadline: number, managers: () => string[]): Promise<Map<string, KvVersioned | null>> {
    const written = [...new Set(this.ops.filter((o) => o.outcome !== 'fail').map((o) => o.key))].sort();
    const seen = new Map<string, KvVersioned>();
    let cont: string | undefined;
    let attempt = 0;
    let complete = false;
    while (Date.now() < deadline && !complete) {
      const ms = managers();
      const m = ms[attempt % Math.max(1, ms.length)] ?? this.cluster.managerIds[0]!;
      try {
        const q = `/v1/kv?prefix=big-&limit=500${cont === undefined ? '' : `&continue=${encodeURIComponent(cont)}`}`;
        const res = await request(this.cluster.realAddr.get(m)!, q, { timeoutMs: 15_000, headers: this.cluster.authHeaders() });
        if (res.status === 200) {
          const body = res.body as { items: { key: string; value: string; version: number }[]; continue?: string };
          for (const it of body.items) seen.set(it.key, { value: valueDigest(it.value), version: it.version });
          cont = body.continue;
          if (cont === undefined) complete = true;
          continue;
        }
      } catch {
        /* the next manager */
      }
      attempt++;
      await sleep(200);
    }
    const out = new Map<string, KvVersioned | null>();
    if (!complete) return out;
    for (const k of written) out.set(k, seen.get(k) ?? null);
    return out;
  }
}
