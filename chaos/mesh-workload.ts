// The mesh workload (on with `--workload services`, or `--mesh`): one service published in
// ingress mode through the routing mesh, and a few clients that keep asking it through every
// worker's mesh address, while the nemesis breaks managers, workers and (freeze-replica) the
// service's own replicas.
//
// Setup (before the run's clock starts): the service `chaos-mesh` is created on the leader's
// real address — process driver, one replica per worker (at most 3; the scheduler never puts two
// replicas that bind the same target port on one node), the replica command is
// `node test/fixtures/mesh-server.mjs` (it listens on FLOTILLA_NODE_HOST:PORT, answers its task
// id, and writes PID_DIR/<taskId>.<pid>); then the harness waits until the leader's mesh table
// lists every replica and every worker's mesh address has answered.
//
// Clients (`mc1…`): sequential requests, each on a new connection (`connection: close`, no
// agent) with an overall timeout, round-robin over the workers' mesh addresses, a short pause
// between two; one request in flight per client; they stop with the workload (the one in
// flight ends within its timeout). Every request is recorded (checker/mesh.ts MeshRequest).
// A timeout is decided only after the event loop had a chance to read a pending answer (two
// setImmediate turns after the timer): the harness also carries every proxy, and a stalled
// loop must not turn an answer waiting in the socket into a failure.
//
// Observation: every second the leader's mesh table for the service (the ready endpoints of
// `GET /v1/services/chaos-mesh`), for the checker (a frozen replica leaving the table).
//
// Freeze (the freeze-replica fault, ReplicaFreezer): among the replicas the leader lists as
// ready whose pid file names a live mesh-server process (same pid, command line, not a zombie),
// SIGSTOP one drawn by the step's PRNG, provided another stays un-frozen; SIGCONT at the next
// heal (checked to be the same process by its /proc start time).
import http from 'node:http';
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readCmdline, readProcStat } from '../src/worker/drivers/proc.js';
import type { MeshRequest, MeshTableSample } from './checker/mesh.js';
import type { ChaosCluster } from './cluster.js';
import { sleep } from './cluster.js';
import { request } from './http.js';
import type { ReplicaFreezer } from './nemesis.js';
import type { Rng } from './prng.js';

export const MESH_SERVICE = 'chaos-mesh';
const SERVER_FILE = 'mesh-server.mjs';

/** The replica program (test/fixtures/mesh-server.mjs), from the built harness (dist/chaos) or the sources (chaos/). */
export function meshServerPath(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [join(here, '..', '..', 'test', 'fixtures', SERVER_FILE), join(here, '..', 'test', 'fixtures', SERVER_FILE)];
  const found = candidates.find((f) => existsSync(f));
  if (found === undefined) throw new Error(`the mesh replica program is missing (looked for ${candidates.join(', ')})`);
  return found;
}

export interface MeshWorkloadOptions {
  /** Concurrent clients (each one request at a time). */
  clients: number;
  /** Overall timeout of one request (connect + answer). */
  requestTimeoutMs: number;
  /** Pause between two requests of a client. */
  pauseMs: number;
  /** The port the mesh listens on (every worker) and the port each replica listens on. */
  published: number;
  target: number;
  replicas: number;
  /** Where the replicas write their pid files. */
  pidDir: string;
  /** The current leader if the monitor knows it (reads prefer it). */
  leader: () => string | null;
}

interface Endpoint {
  taskId: string;
  ready: boolean;
  node?: string;
  addr: string;
}

export class MeshWorkload implements ReplicaFreezer {
  readonly requests: MeshRequest[] = [];
  readonly samples: MeshTableSample[] = [];
  private frozen: { taskId: string; pid: number; procStart: string } | null = null;

  constructor(
    private readonly cluster: ChaosCluster,
    private readonly clock: () => number,
    private readonly o: MeshWorkloadOptions,
  ) {
    mkdirSync(o.pidDir, { recursive: true });
  }

  /** Each worker's mesh address (its listen host, the published port). */
  addrs(): { worker: string; addr: string }[] {
    return this.cluster.workerIds.map((w) => ({ worker: w, addr: `${this.cluster.workerHost(w)}:${this.o.published}` }));
  }

  spec(): Record<string, unknown> {
    return {
      name: MESH_SERVICE,
      driver: 'process',
      replicas: this.o.replicas,
      containers: [{ command: [process.execPath, meshServerPath()], env: { PORT: String(this.o.target), PID_DIR: this.o.pidDir } }],
      publish: [{ published: this.o.published, target: this.o.target }],
      resources: { cpu: 10, memory: '16m' },
      restart: { policy: 'always', backoffMs: 200, maxBackoffMs: 2000 },
    };
  }

  /**
   * Creates the service on the leader (real address) and waits until the leader's table lists
   * every replica and every worker's mesh answers; throws after `timeoutMs`.
   */
  async setup(leader: string, timeoutMs: number): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    const addr = this.cluster.realAddr.get(leader)!;
    let last = '';
    for (;;) {
      try {
        const r = await request(addr, '/v1/services', { method: 'POST', json: this.spec(), timeoutMs: 5000, headers: this.cluster.authHeaders() });
        if (r.status === 201 || r.status === 200 || r.status === 409) break; // 409: an earlier try whose answer was lost
        last = `HTTP ${r.status} ${JSON.stringify(r.body).slice(0, 300)}`;
        if (r.status >= 400 && r.status < 500 && r.status !== 421) throw new Error(`cannot create the mesh service: ${last}`);
      } catch (e) {
        if ((e as Error).message.startsWith('cannot create')) throw e;
        last = (e as Error).message;
      }
      if (Date.now() > deadline) throw new Error(`cannot create the mesh service: ${last}`);
      await sleep(500);
    }
    const answered = new Map<string, Set<string>>();
    while (Date.now() < deadline) {
      const eps = await this.endpoints();
      const ready = eps?.filter((e) => e.ready) ?? [];
      if (ready.length >= this.o.replicas) {
        for (const { worker, addr: a } of this.addrs()) {
          const r = await this.ask(a, this.o.requestTimeoutMs);
          if (r.ok) {
            const s = answered.get(worker) ?? new Set<string>();
            s.add(r.taskId);
            answered.set(worker, s);
          }
        }
        if (this.cluster.workerIds.every((w) => answered.has(w))) {
          return `${MESH_SERVICE}: ${ready.length} replicas (${ready.map((e) => `${e.taskId} on ${e.node ?? '?'}`).join(', ')}), mesh on ${this.addrs().map((x) => x.addr).join(', ')}`;
        }
      }
      await sleep(300);
    }
    throw new Error(`the mesh service did not become ready within ${timeoutMs} ms (replicas in the table, every worker's mesh answering: ${[...answered.keys()].join(',') || 'none answered'})`);
  }

  /** The clients, until the signal (each ends its request in flight first). */
  async run(signal: AbortSignal): Promise<void> {
    await Promise.all(Array.from({ length: this.o.clients }, (_, i) => this.client(i + 1, signal)));
  }

  private async client(n: number, signal: AbortSignal): Promise<void> {
    const name = `mc${n}`;
    const addrs = this.addrs();
    let seq = 0;
    let k = n - 1; // clients start on different workers
    while (!signal.aborted) {
      const { worker, addr } = addrs[k++ % addrs.length]!;
      const sent = this.clock();
      const r = await this.ask(addr, this.o.requestTimeoutMs);
      const done = this.clock();
      this.requests.push({ client: name, seq: ++seq, worker, addr, sent, done, ...(r.ok ? { outcome: 'ok', taskId: r.taskId } : { outcome: 'failed', error: r.error }) });
      await sleep(this.o.pauseMs, signal);
    }
  }

  /** One GET / on a new connection: the task id that answered, or why it failed. */
  ask(addr: string, timeoutMs: number): Promise<{ ok: true; taskId: string } | { ok: false; error: string }> {
    const i = addr.lastIndexOf(':');
    const host = addr.slice(0, i);
    const port = Number(addr.slice(i + 1));
    const t0 = performance.now();
    return new Promise((resolve) => {
      let done = false;
      const finish = (r: { ok: true; taskId: string } | { ok: false; error: string }): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        req.destroy();
        resolve(r);
      };
      const req = http.get({ host, port, path: '/', agent: false, headers: { connection: 'close' } }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('error', (e) => finish({ ok: false, error: `response: ${e.message}` }));
        res.on('end', () => {
          const id = body.trim();
          finish(res.statusCode === 200 && id !== '' ? { ok: true, taskId: id } : { ok: false, error: `HTTP ${res.statusCode} ${JSON.stringify(body.slice(0, 80))}` });
        });
      });
      req.on('error', (e: NodeJS.ErrnoException) => finish({ ok: false, error: e.code ?? e.message }));
      // The answer may be waiting in the socket while the loop was busy: let it be read first.
      const timer = setTimeout(() => {
        setImmediate(() =>
          setImmediate(() => {
            const ms = Math.round(performance.now() - t0);
            finish({ ok: false, error: `timeout: no answer within ${timeoutMs} ms${ms > timeoutMs + 250 ? ` (decided after ${ms} ms: the harness's event loop was late)` : ''}` });
          }),
        );
      }, timeoutMs);
    });
  }

  /** The service's endpoints from the leader (or any manager up); null if none answered. */
  private async endpoints(): Promise<Endpoint[] | null> {
    const l = this.o.leader();
    const up = this.cluster.managerIds.filter((m) => this.cluster.isUp(m));
    const order = l !== null && up.includes(l) ? [l, ...up.filter((m) => m !== l)] : up;
    for (const m of order) {
      try {
        const r = await request(this.cluster.realAddr.get(m)!, `/v1/services/${MESH_SERVICE}`, { timeoutMs: 2000, headers: this.cluster.authHeaders() });
        if (r.status !== 200) continue;
        return ((r.body as { endpoints?: Endpoint[] }).endpoints ?? []).filter((e) => typeof e.taskId === 'string');
      } catch {
        /* next manager */
      }
    }
    return null;
  }

  /** Samples the leader's mesh table for the service until the signal. */
  async observe(signal: AbortSignal, everyMs = 1000): Promise<void> {
    while (!signal.aborted) {
      const eps = await this.endpoints();
      if (eps !== null) this.samples.push({ at: this.clock(), ready: eps.filter((e) => e.ready).map((e) => e.taskId).sort() });
      await sleep(everyMs, signal);
    }
  }

  /** Live mesh-server processes of a task, from the pid files (newest first). */
  private livePids(taskId: string): { pid: number; start: string }[] {
    let files: string[];
    try {
      files = readdirSync(this.o.pidDir);
    } catch {
      return [];
    }
    const out: { pid: number; start: string }[] = [];
    for (const f of files) {
      if (!f.startsWith(`${taskId}.`)) continue;
      const pid = Number(f.slice(taskId.length + 1));
      if (!Number.isInteger(pid) || pid <= 0) continue;
      const st = readProcStat(pid);
      if (st === null || st.state === 'Z' || st.state === 'X' || st.state === 'T' || st.state === 't') continue;
      if (!(readCmdline(pid) ?? []).some((a) => a.endsWith(SERVER_FILE))) continue; // the pid was reused
      out.push({ pid, start: st.start });
    }
    return out.sort((a, b) => Number(b.start) - Number(a.start));
  }

  async freeze(rng: Rng): Promise<{ taskId: string; pid: number; node: string | null; detail: string } | { skipped: string }> {
    if (this.frozen !== null) return { skipped: `replica ${this.frozen.taskId} is frozen already` };
    const eps = await this.endpoints();
    if (eps === null) return { skipped: 'no manager answered for the mesh table' };
    const ready = eps.filter((e) => e.ready).sort((a, b) => (a.taskId < b.taskId ? -1 : 1));
    const live = ready.map((e) => ({ e, procs: this.livePids(e.taskId) })).filter((x) => x.procs.length > 0);
    if (live.length < 2) return { skipped: `${live.length} ready replica${live.length === 1 ? '' : 's'} with a live process (${ready.length} in the table): never the last un-frozen one` };
    const { e, procs } = rng.pick(live);
    const p = procs[0]!;
    try {
      process.kill(p.pid, 'SIGSTOP');
    } catch (err) {
      return { skipped: `SIGSTOP ${p.pid} failed: ${(err as Error).message}` };
    }
    this.frozen = { taskId: e.taskId, pid: p.pid, procStart: p.start };
    return { taskId: e.taskId, pid: p.pid, node: e.node ?? null, detail: `SIGSTOP replica ${e.taskId} (pid ${p.pid}${e.node !== undefined ? ` on ${e.node}` : ''}, ${e.addr}) of ${MESH_SERVICE}; ${live.length - 1} other ready replica${live.length === 2 ? '' : 's'} un-frozen` };
  }

  thaw(): string | null {
    const f = this.frozen;
    if (f === null) return null;
    this.frozen = null;
    const st = readProcStat(f.pid);
    if (st === null || st.start !== f.procStart) return `replica ${f.taskId} (pid ${f.pid}) is gone (nothing to SIGCONT)`;
    try {
      process.kill(f.pid, 'SIGCONT');
    } catch (err) {
      return `SIGCONT replica ${f.taskId} (pid ${f.pid}) failed: ${(err as Error).message}`;
    }
    return `SIGCONT replica ${f.taskId} (pid ${f.pid})`;
  }
}
