// Live usage on the leader: what the workers measure of their node and tasks (CPU, memory),
// kept in memory only — a bounded ring per node and per task covering the last `windowMs`
// (10 minutes). It is an observation no decision depends on, so it never goes through the
// Raft log; followers forward GET /v1/usage to the leader (usage-routes.ts), like the node
// heartbeats of GET /v1/nodes. A new leader starts with empty rings: the report's `since`
// says from when its history runs.
//
// Bounds: a node's samples are taken at most every `minSpacingMs` (a faster worker is thinned
// out), so a ring holds at most windowMs / minSpacingMs points; at most `maxTasks` task rings;
// rings with no sample in the window are dropped.

import type { NodeLiveUsage, TaskLiveUsage, UsagePoint, UsageReport } from '../protocol/api.js';
import type { UsageMessage } from '../protocol/frames.js';
import type { LeaderService, StateView } from './ports.js';
import { monoNow, wallNow } from '../clock.js';

export const DEFAULT_USAGE_WINDOW_MS = 10 * 60_000;

/** A bounded ring of samples, oldest first; `mono` is the leader's monotonic ms of each. */
export class UsageRing {
  private pts: (UsagePoint & { mono: number })[] = [];
  private head = 0;

  constructor(readonly capacity: number) {}

  get length(): number {
    return this.pts.length - this.head;
  }

  push(p: UsagePoint, mono: number): void {
    this.pts.push({ ...p, mono });
    if (this.length > this.capacity) this.head++;
    this.compact();
  }

  /** Drop samples taken before `mono`. */
  dropBefore(mono: number): void {
    while (this.head < this.pts.length && this.pts[this.head]!.mono < mono) this.head++;
    this.compact();
  }

  last(): (UsagePoint & { mono: number }) | undefined {
    return this.length === 0 ? undefined : this.pts[this.pts.length - 1];
  }

  points(): UsagePoint[] {
    return this.pts.slice(this.head).map(({ at, cpu, memory }) => ({ at, cpu, memory }));
  }

  private compact(): void {
    if (this.head > 64 && this.head * 2 > this.pts.length) {
      this.pts = this.pts.slice(this.head);
      this.head = 0;
    }
  }
}

interface NodeEntry {
  ring: UsageRing;
  cpuCapacity: number;
  memoryTotal: number;
  intervalMs: number;
}

interface TaskEntry {
  ring: UsageRing;
  node: string;
  attempt: number;
}

export interface UsageStoreOptions {
  windowMs?: number;
  minSpacingMs?: number;
  maxTasks?: number;
}

export interface UsageQuery {
  history?: boolean;
  node?: string;
  task?: string;
}

export class UsageStore implements LeaderService {
  readonly name = 'usage';
  readonly windowMs: number;
  private readonly minSpacingMs: number;
  private readonly maxTasks: number;
  private readonly capacity: number;
  private nodes = new Map<string, NodeEntry>();
  private tasks = new Map<string, TaskEntry>();
  private since = wallNow();

  constructor(
    private readonly d: { state: Pick<StateView, 'getTask'>; id: string },
    o: UsageStoreOptions = {},
  ) {
    this.windowMs = o.windowMs ?? DEFAULT_USAGE_WINDOW_MS;
    this.minSpacingMs = o.minSpacingMs ?? 450;
    this.maxTasks = o.maxTasks ?? 10_000;
    this.capacity = Math.ceil(this.windowMs / this.minSpacingMs) + 1;
  }

  // ---- LeaderService: a new leadership starts with nothing.
  start(): void {
    this.clear();
  }
  caughtUp(): void {}
  stop(): void {
    this.clear();
  }

  private clear(): void {
    this.nodes.clear();
    this.tasks.clear();
    this.since = wallNow();
  }

  /** A worker's `usage` message (validated). Returns false when it was thinned out. */
  record(nodeId: string, msg: UsageMessage, mono = monoNow(), at = wallNow()): boolean {
    let n = this.nodes.get(nodeId);
    const prev = n?.ring.last();
    if (prev !== undefined && mono - prev.mono < this.minSpacingMs) return false;
    if (n === undefined) this.nodes.set(nodeId, (n = { ring: new UsageRing(this.capacity), cpuCapacity: 0, memoryTotal: 0, intervalMs: 0 }));
    n.cpuCapacity = msg.node.cpuCapacity;
    n.memoryTotal = msg.node.memoryTotal;
    n.intervalMs = msg.intervalMs;
    n.ring.push({ at, cpu: msg.node.cpu, memory: msg.node.memory }, mono);
    for (const s of msg.tasks) {
      // Only tasks the state places on this node: a worker speaks for its own tasks only.
      const task = this.d.state.getTask(s.taskId);
      if (task === undefined || task.node !== nodeId) continue;
      let t = this.tasks.get(s.taskId);
      if (t !== undefined && (t.attempt !== s.attempt || t.node !== nodeId)) {
        this.tasks.delete(s.taskId); // a new run: its own history
        t = undefined;
      }
      if (t === undefined) {
        if (this.tasks.size >= this.maxTasks) continue;
        this.tasks.set(s.taskId, (t = { ring: new UsageRing(this.capacity), node: nodeId, attempt: s.attempt }));
      }
      t.ring.push({ at, cpu: s.cpu, memory: s.memory }, mono);
    }
    this.prune(mono);
    return true;
  }

  private prune(mono: number): void {
    const cut = mono - this.windowMs;
    for (const [id, e] of this.nodes) {
      e.ring.dropBefore(cut);
      if (e.ring.length === 0) this.nodes.delete(id);
    }
    for (const [id, e] of this.tasks) {
      e.ring.dropBefore(cut);
      if (e.ring.length === 0) this.tasks.delete(id);
    }
  }

  report(q: UsageQuery = {}, mono = monoNow()): UsageReport {
    this.prune(mono);
    const history = q.history !== false;
    const nodes: NodeLiveUsage[] = [];
    for (const [id, e] of [...this.nodes].sort(([a], [b]) => (a < b ? -1 : 1))) {
      if (q.node !== undefined && q.node !== id) continue;
      const last = e.ring.last()!;
      const v: NodeLiveUsage = { node: id, cpu: last.cpu, memory: last.memory, cpuCapacity: e.cpuCapacity, memoryTotal: e.memoryTotal, at: last.at, ageMs: mono - last.mono, intervalMs: e.intervalMs };
      if (history) v.history = e.ring.points();
      nodes.push(v);
    }
    const tasks: TaskLiveUsage[] = [];
    for (const [id, e] of [...this.tasks].sort(([a], [b]) => (a < b ? -1 : 1))) {
      if (q.task !== undefined && q.task !== id) continue;
      if (q.node !== undefined && q.node !== e.node) continue;
      const last = e.ring.last()!;
      const nodeLast = this.nodes.get(e.node)?.ring.last();
      const v: TaskLiveUsage = { task: id, node: e.node, attempt: e.attempt, cpu: last.cpu, memory: last.memory, at: last.at, ageMs: mono - last.mono, current: nodeLast !== undefined && nodeLast.mono === last.mono };
      if (history) v.history = e.ring.points();
      tasks.push(v);
    }
    return { leader: this.d.id, since: this.since, windowMs: this.windowMs, nodes, tasks };
  }
}
