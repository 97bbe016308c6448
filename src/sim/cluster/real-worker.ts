// A simulated worker that is the real `WorkerAgent` (src/worker/agent.ts, with
// its SessionClient and StatusReporter) over a fake in-memory driver, on the simulation's
// virtual clock (the worker's `Timers`), network (a `SessionDialer` over the sim's links) and
// memory (`memoryStore`); the simulator's default (`--model-worker` runs worker.ts's model
// instead). Only the containers are a model: they start, run, exit and crash as
// the seed says (derived per task and attempt, as the model worker's do).
import type { ManagerToWorker, WorkerToManager } from '../../protocol/session.js';
import { decodeSessionFrame, encodeSessionFrame } from '../../protocol/frames.js';
import type { Timers } from '../../clock.js';
import { derive, type Prng } from '../../raft/sim/prng.js';
import { WorkerAgent } from '../../worker/agent.js';
import { memoryStore, type SessionDialer, type SessionLinkEvents } from '../../worker/ports.js';
import type { Driver, DriverEventListener, DriverTaskStatus, LogLine } from '../../worker/driver.js';
import type { TaskSpec } from '../../protocol/spec.js';
import { FlotillaError } from '../../protocol/errors.js';
import type { LocalTask, SimWorkerLike, WorkerHost, WorkerSide } from './worker.js';

interface FakeTask {
  status: DriverTaskStatus;
  cancel: (() => void) | null;
  onEvent?: DriverEventListener;
}

/** Containers in memory whose fate the seed decides. */
export class FakeDriver implements Driver {
  readonly name = 'process' as const;
  readonly tasks = new Map<string, FakeTask>();
  private readonly listeners = new Set<DriverEventListener>();
  /** The machine died: nothing runs or reports any more. */
  dead = false;

  constructor(
    private readonly seed: number,
    private readonly timers: Timers,
    private readonly wall: () => number,
    private readonly trace: (text: string) => void = () => undefined,
  ) {}

  private set(t: FakeTask, patch: Partial<DriverTaskStatus>): void {
    if (this.dead) return;
    t.status = { ...t.status, ...patch };
    const s = { ...t.status };
    this.trace(`${s.taskId} attempt ${s.attempt ?? 1} ${s.state}`);
    t.onEvent?.(s);
    for (const l of [...this.listeners]) l(s);
  }

  start(taskId: string, spec: TaskSpec, onEvent?: DriverEventListener, opts?: { attempt?: number }): Promise<void> {
    const attempt = opts?.attempt ?? 1;
    const old = this.tasks.get(taskId);
    if (old !== undefined) {
      if (old.status.attempt === attempt && (old.status.state === 'starting' || old.status.state === 'running')) return Promise.resolve();
      return Promise.reject(new FlotillaError('conflict', `task ${taskId} ran here before: remove it first`));
    }
    const t: FakeTask = { status: { taskId, attempt, state: 'starting' }, cancel: null, onEvent };
    this.tasks.set(taskId, t);
    const r = derive(this.seed, `${taskId}/${attempt}`);
    const kind = spec.containers[0]?.command?.[0];
    const fate = kind === 'svc' ? 0 : kind === 'crash' ? 0.95 : r.next();
    t.cancel = this.timers.after(r.range(20, 300), () => {
      if (this.tasks.get(taskId) !== t || t.status.state !== 'starting') return;
      this.set(t, { state: 'running', startedAt: this.wall() });
      if (fate < 0.8) return;
      t.cancel = this.timers.after(kind === 'crash' ? r.range(200, 800) : r.range(500, 8000), () => {
        if (this.tasks.get(taskId) !== t || t.status.state !== 'running') return;
        t.cancel = null;
        if (fate < 0.9) this.set(t, { state: 'succeeded', exitCode: 0, finishedAt: this.wall() });
        else this.set(t, { state: 'failed', exitCode: 1, reason: "container 'main' exited with code 1", finishedAt: this.wall() });
      });
    });
    return Promise.resolve();
  }

  stop(taskId: string): Promise<void> {
    const t = this.tasks.get(taskId);
    if (t !== undefined && (t.status.state === 'starting' || t.status.state === 'running')) {
      t.cancel?.();
      t.cancel = null;
      this.set(t, { state: 'stopped', finishedAt: this.wall() });
    }
    return Promise.resolve();
  }

  inspect(taskId: string): Promise<DriverTaskStatus | null> {
    const t = this.tasks.get(taskId);
    return Promise.resolve(t ? { ...t.status } : null);
  }

  list(): Promise<DriverTaskStatus[]> {
    return Promise.resolve([...this.tasks.values()].map((t) => ({ ...t.status })));
  }

  // eslint-disable-next-line require-yield
  async *logs(): AsyncIterable<LogLine> {
    return;
  }

  remove(taskId: string): Promise<void> {
    const t = this.tasks.get(taskId);
    t?.cancel?.();
    this.tasks.delete(taskId);
    return Promise.resolve();
  }

  watch(listener: DriverEventListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  /** The machine dies: every container with it, silently. */
  kill(): void {
    this.dead = true;
    for (const t of this.tasks.values()) t.cancel?.();
    this.tasks.clear();
  }
}

/** The surface the simulator's checkers and network use (the model worker has it too). */
export class RealSimWorker implements SimWorkerLike {
  alive = true;
  readonly driver: FakeDriver;
  readonly agent: WorkerAgent;
  private readonly links = new Map<WorkerSide, { ev: SessionLinkEvents; welcomed: boolean; ended: boolean }>();

  constructor(
    readonly id: string,
    token: string,
    private readonly h: WorkerHost,
    readonly timers: Timers,
  ) {
    this.driver = new FakeDriver(h.seed, timers, h.wall, (text) => h.trace('task', `${id} ${text}`));
    const rng: Prng = h.rng;
    const dial: SessionDialer = (target, _opts, ev) => {
      const side = this.h.dial(this, target);
      const st = { ev, welcomed: false, ended: false };
      this.links.set(side, st);
      // The connection opens a moment later (when the manager is reachable at all).
      this.timers.after(1, () => {
        if (!st.ended && side.connected?.() === true) ev.open();
      });
      return {
        get isOpen() {
          return !st.ended && side.connected?.() === true;
        },
        send: (frame, cb) => {
          if (st.ended) return cb(new Error('link closed'));
          side.send(decodeSessionFrame(frame) as unknown as WorkerToManager);
          cb();
        },
        ping: () => undefined, // the network answers the ping riding with each heartbeat
        end: () => {
          if (st.ended) return;
          st.ended = true;
          this.links.delete(side);
          side.close();
        },
      };
    };
    this.agent = new WorkerAgent({
      id,
      managers: h.managers(),
      token,
      labels: {},
      resources: { cpu: 8000, memory: 16 * 1024 ** 3 },
      drivers: [this.driver],
      stateDir: `/sim/${id}`,
      store: memoryStore(),
      http: false,
      advertise: `${id}:7000`,
      usageIntervalMs: 0,
      stopGraceMs: 1000,
      dial,
      timers,
      random: () => rng.next(),
    });
  }

  start(): void {
    void this.agent.start();
  }

  /** In session: a link whose welcome the agent took and that still runs (cheaper than agent.status()). */
  get welcomed(): boolean {
    if (!this.alive) return false;
    for (const st of this.links.values()) if (st.welcomed && !st.ended) return true;
    return false;
  }

  get linkTo(): string | null {
    return this.agent.status().manager;
  }

  /** What runs here, as the containers are (the driver's view). */
  get tasks(): Map<string, LocalTask> {
    const out = new Map<string, LocalTask>();
    for (const [id, t] of this.driver.tasks) out.set(id, { taskId: id, attempt: t.status.attempt ?? 1, state: t.status.state, exitCode: t.status.exitCode, cancel: null });
    return out;
  }

  running(): LocalTask[] {
    const out: LocalTask[] = [];
    for (const [id, t] of this.driver.tasks) {
      const st = t.status.state;
      if (st === 'running' || st === 'starting') out.push({ taskId: id, attempt: t.status.attempt ?? 1, state: st, cancel: null });
    }
    return out;
  }

  /** The machine dies and never returns. */
  crash(): void {
    this.alive = false;
    this.driver.kill();
    for (const st of this.links.values()) st.ended = true;
    this.links.clear();
  }

  onClose(link: WorkerSide): void {
    const st = this.links.get(link);
    if (!st || st.ended || !this.alive) return;
    st.ended = true;
    this.links.delete(link);
    st.ev.close(1006, '');
  }

  onPong(link: WorkerSide): void {
    const st = this.links.get(link);
    if (st && !st.ended && this.alive) st.ev.pong();
  }

  onMessage(link: WorkerSide, msg: ManagerToWorker): void {
    const st = this.links.get(link);
    if (!st || st.ended || !this.alive) return;
    if (msg.t === 'welcome') {
      st.welcomed = true;
      // The dispatcher jitters the period with Math.random: fixed here so that a seed replays.
      msg = { ...msg, heartbeatMs: 1000 };
    }
    if (msg.t === 'assignments') {
      // The agent's session refuses it and ends: only a committed registration's session may
      // tell a worker what to run (checker).
      if (!st.welcomed) this.h.onProtocolError(this, `'assignments' before 'welcome' from ${this.linkTo ?? '?'}`);
      else {
        const want = new Set(msg.tasks.map((a) => a.taskId));
        for (const t of this.running()) if (!want.has(t.taskId)) this.h.onUnassigned(this, t.taskId, t.attempt);
      }
    }
    st.ev.message(encodeSessionFrame(msg as never), true);
  }
}
