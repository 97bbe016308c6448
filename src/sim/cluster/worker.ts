// A simulated worker: registers with a manager (following redirects to the leader), heartbeats,
// receives its full assignment set, and runs tasks whose outcome (run on, exit 0, fail) the seed
// decides, reporting every state change. It speaks the real session protocol
// (src/protocol/session.ts) over a simulated link; it is a model of the agent, not the agent.
import type { AssignedTask, ManagerToWorker, TaskStatusReport, WorkerToManager } from '../../protocol/session.js';
import type { Timers } from '../../clock.js';
import { derive, type Prng } from '../../raft/sim/prng.js';

export interface LocalTask {
  taskId: string;
  attempt: number;
  state: TaskStatusReport['state'];
  exitCode?: number;
  cancel: (() => void) | null;
}

/** The worker's side of a link (the simulation's network implements it). */
export interface WorkerSide {
  send(msg: WorkerToManager): void;
  close(): void;
  /** Whether the manager end exists (false: the connection attempt goes nowhere and times out). */
  connected?(): boolean;
}

/** What the simulator's network and checkers use of a worker (the real agent, or the model with --model-worker). */
export interface SimWorkerLike {
  readonly id: string;
  readonly alive: boolean;
  readonly welcomed: boolean;
  readonly linkTo: string | null;
  readonly tasks: Map<string, LocalTask>;
  running(): LocalTask[];
  start(): void;
  crash(): void;
  onMessage(link: WorkerSide, msg: ManagerToWorker): void;
  onClose(link: WorkerSide): void;
  onPong(link: WorkerSide): void;
}

export interface WorkerHost {
  seed: number;
  rng: Prng;
  managers: () => string[];
  wall: () => number;
  now: () => number;
  /** Opens a link to `manager`; frames and the close come back through `onMessage`/`onClose`. */
  dial(w: SimWorkerLike, manager: string): WorkerSide;
  trace(kind: string, text: string): void;
  /** The worker stops a running task because its assignment set no longer has it (checker). */
  onUnassigned(w: SimWorkerLike, taskId: string, attempt: number): void;
  /** A frame the agent's session refuses as out of protocol (src/worker/session.ts): checker. */
  onProtocolError(w: SimWorkerLike, what: string): void;
}

export class SimWorker implements SimWorkerLike {
  alive = true;
  readonly tasks = new Map<string, LocalTask>();
  /**
   * Tasks stopped because the assignments dropped them, with their final report: every new
   * session's register carries them (their end may not have been committed before the last
   * session ended), as the agent's retired list does. The most recent 100 are kept.
   */
  private readonly retired = new Map<string, TaskStatusReport>();
  /** `task#attempt` of desired-shutdown assignments answered in this session (as the agent's reportedGone). */
  private reportedGone = new Set<string>();
  link: WorkerSide | null = null;
  /** The manager the current link goes to. */
  linkTo: string | null = null;
  welcomed = false;
  private credential: string | undefined;
  private leaderHint: string | null = null;
  private cancelHb: (() => void) | null = null;
  private cancelRegister: (() => void) | null = null;
  private gen = 0;
  /** Monotonic ms of the last frame or pong from the manager (as the agent's session keeps). */
  private lastHeard = 0;

  constructor(
    readonly id: string,
    private readonly token: string,
    private readonly h: WorkerHost,
    readonly timers: Timers,
  ) {}

  start(): void {
    this.connectSoon(0);
  }

  /** The machine dies and never returns. */
  crash(): void {
    this.alive = false;
    this.drop();
    for (const t of this.tasks.values()) t.cancel?.();
    this.tasks.clear();
  }

  running(): LocalTask[] {
    return [...this.tasks.values()].filter((t) => t.state === 'running' || t.state === 'starting');
  }

  // ---------------------------------------------------------------- session

  private connectSoon(ms: number): void {
    const gen = ++this.gen;
    this.timers.after(ms, () => {
      if (!this.alive || gen !== this.gen || this.link) return;
      const managers = this.h.managers();
      const to = this.leaderHint && managers.includes(this.leaderHint) ? this.leaderHint : this.h.rng.pick(managers);
      this.leaderHint = null;
      this.linkTo = to;
      this.link = this.h.dial(this, to);
      this.link.send({
        t: 'register',
        nodeId: this.id,
        token: this.token,
        credential: this.credential,
        addr: `${this.id}:7000`,
        labels: {},
        resources: { cpu: 8000, memory: 16 * 1024 ** 3 },
        drivers: ['process'],
        version: 'sim',
        tasks: [...this.tasks.values()].map((t) => this.report(t)).concat([...this.retired.values()].filter((r) => !this.tasks.has(r.taskId))),
      });
      this.cancelRegister = this.timers.after(5000, () => {
        if (!this.welcomed) this.drop(), this.connectSoon(this.h.rng.range(100, 500));
      });
    });
  }

  /** Ends the current link from this side. */
  private drop(): void {
    this.cancelHb?.();
    this.cancelHb = null;
    this.cancelRegister?.();
    this.cancelRegister = null;
    this.welcomed = false;
    const l = this.link;
    this.link = null;
    this.linkTo = null;
    l?.close();
  }

  /** The link closed (the manager ended it, or the network did). */
  onClose(link: WorkerSide): void {
    if (link !== this.link || !this.alive) return;
    this.drop();
    this.connectSoon(this.h.rng.range(100, 1000));
  }

  /** The manager's WebSocket layer answered a ping (only a running manager process does). */
  onPong(link: WorkerSide): void {
    if (link === this.link) this.lastHeard = this.h.now();
  }

  onMessage(link: WorkerSide, msg: ManagerToWorker): void {
    if (link !== this.link || !this.alive) return;
    this.lastHeard = this.h.now();
    switch (msg.t) {
      case 'redirect':
        this.leaderHint = msg.leader;
        this.drop();
        this.connectSoon(this.h.rng.range(20, 200));
        return;
      case 'reject':
        this.h.trace('reject', `${this.id}: ${msg.reason}`);
        this.drop();
        this.connectSoon(1000);
        return;
      case 'welcome': {
        this.welcomed = true;
        this.reportedGone.clear();
        this.credential = msg.credential;
        this.cancelRegister?.();
        this.cancelRegister = null;
        // What changed between the register and the welcome goes now (the agent sends what
        // waited for the session once it runs; reports are idempotent).
        if (this.tasks.size > 0) this.link?.send({ t: 'status', reports: [...this.tasks.values()].map((t) => this.report(t)) });
        // The worker's own period (the leader's jittered one comes from Math.random: not replayable).
        // A manager silent for max(4 periods, 3 s) (no pong: frozen) ends the session (src/worker/session.ts).
        this.cancelHb = this.timers.every(1000, () => {
          if (this.h.now() - this.lastHeard > 4000) {
            this.h.trace('silent', `${this.id}: manager ${this.linkTo} silent; session ended`);
            this.drop();
            this.connectSoon(this.h.rng.range(100, 500));
            return;
          }
          this.link?.send({ t: 'heartbeat' });
        });
        return;
      }
      case 'assignments':
        if (!this.welcomed) {
          // The agent's session refuses it and ends (session.ts): only a committed registration's
          // session may tell a worker what to run.
          this.h.onProtocolError(this, `'assignments' before 'welcome' from ${this.linkTo}`);
          this.drop();
          this.connectSoon(this.h.rng.range(100, 500));
          return;
        }
        this.reconcile(msg.tasks);
        return;
      default:
        return;
    }
  }

  // ---------------------------------------------------------------- tasks

  private report(t: LocalTask): TaskStatusReport {
    return { taskId: t.taskId, attempt: t.attempt, state: t.state, exitCode: t.exitCode, at: this.h.wall() };
  }

  private setState(t: LocalTask, state: LocalTask['state'], exitCode?: number): void {
    t.state = state;
    t.exitCode = exitCode;
    this.h.trace('task', `${this.id} ${t.taskId} attempt ${t.attempt} ${state}${this.welcomed ? ` (reported to ${this.linkTo})` : ' (no session yet: sent once welcomed)'}`);
    if (this.welcomed) this.link?.send({ t: 'status', reports: [this.report(t)] });
  }

  private reconcile(assigned: AssignedTask[]): void {
    const want = new Map(assigned.map((a) => [a.taskId, a]));
    for (const [id, t] of this.tasks) {
      const a = want.get(id);
      if (a && a.attempt === t.attempt && a.desired === 'running') continue;
      if (a && a.attempt < t.attempt) continue;
      // Not assigned any more, to be shut down, or replaced by a newer attempt: stop it.
      t.cancel?.();
      t.cancel = null;
      if (a && a.attempt === t.attempt) this.reportedGone.add(`${id}#${t.attempt}`);
      if (!a && (t.state === 'running' || t.state === 'starting')) this.h.onUnassigned(this, id, t.attempt);
      if (t.state === 'running' || t.state === 'starting') this.setState(t, 'stopped');
      this.tasks.delete(id);
      this.retired.delete(id);
      this.retired.set(id, this.report(t));
      if (this.retired.size > 100) this.retired.delete(this.retired.keys().next().value!);
    }
    for (const a of assigned) {
      if (a.desired === 'shutdown') {
        // An attempt to shut down that does not run here (never started, or its final report
        // missed): say so once per session, so the manager can settle it (as the agent does).
        const key = `${a.taskId}#${a.attempt}`;
        if (this.reportedGone.has(key)) continue;
        this.reportedGone.add(key);
        const r = this.retired.get(a.taskId);
        const report: TaskStatusReport = r && r.attempt === a.attempt ? r : { taskId: a.taskId, attempt: a.attempt, state: 'stopped', reason: 'not running on this worker', at: this.h.wall() };
        this.link?.send({ t: 'status', reports: [report] });
        continue;
      }
      if (a.desired !== 'running' || this.tasks.has(a.taskId)) continue;
      this.run(a);
    }
  }

  private run(a: AssignedTask): void {
    const t: LocalTask = { taskId: a.taskId, attempt: a.attempt, state: 'starting', cancel: null };
    this.tasks.set(a.taskId, t);
    this.setState(t, 'starting');
    // The seed decides what this run does: derived from (seed, task, attempt), not from the order of events.
    const r = derive(this.h.seed, `${a.taskId}/${a.attempt}`);
    // A service template says what its tasks do: `svc` runs on, `crash` fails soon after it starts.
    const kind = a.spec.containers[0]?.command?.[0];
    const fate = kind === 'svc' ? 0 : kind === 'crash' ? 0.95 : r.next();
    t.cancel = this.timers.after(r.range(20, 300), () => {
      if (this.tasks.get(a.taskId) !== t) return;
      this.setState(t, 'running');
      if (fate < 0.8) return;
      t.cancel = this.timers.after(kind === 'crash' ? r.range(200, 800) : r.range(500, 8000), () => {
        if (this.tasks.get(a.taskId) !== t) return;
        t.cancel = null;
        if (fate < 0.9) this.setState(t, 'succeeded', 0);
        else this.setState(t, 'failed', 1);
      });
    });
  }
}
