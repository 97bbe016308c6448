// flotilla's scheduler: decide which node runs each pending task.
//
// `schedule` is a pure function. The leader's scheduling loop calls it with
// `state.pendingTasks()`, `state.listNodes()` and `state.usage()`, then proposes one
// `task.assign` command (tagged with its term) carrying every placement. The state machine
// re-checks each placement when it applies it, so a stale decision can be skipped but never
// double-places a task or overfills a node.
//
// How a task is placed:
//  1. Filter: node status `ready`, availability `active`, the task's driver offered, every
//     constraint (`key==value` / `key!=value` on labels, `node.id==…`), enough free cpu and
//     memory, and the task's host ports free. Placements made earlier in the same round count.
//  2. Score: `spread` picks the node with the fewest tasks, then the least reserved (cpu and
//     memory fractions); `binpack` picks the most reserved node that still fits. Ties go to
//     the smallest node id, so the result is deterministic.
//  3. Explain: a task that cannot be placed gets the reason of the first filter that left no
//     node ("no node satisfies constraint zone==eu (3 nodes checked)", "insufficient memory:
//     needs 8 GiB, largest free 2 GiB on w2", …).
//
// Speed: tasks are grouped into classes with identical requirements (driver, constraints,
// resources, host ports). The static filters run once per driver/constraint combination and
// each class walks a binary heap of its candidate nodes, so a round costs about
// O(classes × nodes + tasks × log nodes); 10,000 tasks on 1,000 nodes take milliseconds.
// Classes are served in the order of their first task, tasks within a class in queue order.
//
// Pure module: no IO, no clocks, no randomness.

import {
  formatBytes,
  formatConstraint,
  formatCpu,
  matchConstraint,
  parseConstraint,
  specHostPorts,
  type Constraint,
  type Driver,
} from '../protocol/spec.js';
import type { NodeInfo, Placement, Task, VolumePlacement } from './state.js';

export type Strategy = 'spread' | 'binpack';

export interface ScheduleOptions {
  strategy: Strategy;
  /**
   * The volume placement rule (state/volumes.ts): a task mounting volumes that exist on some
   * nodes goes to one of those nodes. Absent: volumes do not restrict placement.
   */
  volumePlacement?: (t: SchedulableTask) => VolumePlacement;
}

/** What the scheduler reads of a task. */
export type SchedulableTask = Pick<Task, 'id' | 'spec'>;
/** What the scheduler reads of a node. */
export type SchedulableNode = Pick<NodeInfo, 'id' | 'labels' | 'resources' | 'drivers' | 'availability' | 'status'>;

/** Reserved resources per node (`ClusterState.usage()`); nodes missing from the map are idle. */
export interface UsageInput {
  cpu: number;
  memory: number;
  tasks: number;
  /** Host ports in use, as "port/protocol". */
  hostPorts?: Iterable<string>;
}

export interface Unplaced {
  taskId: string;
  reason: string;
}

export interface ScheduleResult {
  placements: Placement[];
  unplaced: Unplaced[];
}

// ---------------------------------------------------------------------------------------------
// Working state

/** A node during one round: capacity and what is reserved so far (incl. this round). */
interface WorkNode {
  id: string;
  labels: Record<string, string>;
  drivers: readonly string[];
  cpuCap: number;
  memCap: number;
  cpu: number;
  mem: number;
  tasks: number;
  /** Host ports in use; null when none. */
  ports: Set<string> | null;
}

/** Tasks with identical requirements: they see the same candidate nodes. */
interface TaskClass {
  staticKey: string;
  driver: Driver;
  constraints: string[];
  cpu: number;
  memory: number;
  ports: string[];
  taskIds: string[];
  volumes: VolumePlacement;
}

/** The outcome of the static filters for one driver + constraints combination. */
type StaticResult = { nodes: WorkNode[] } | { reason: string };

function loadOf(n: WorkNode): number {
  return (n.cpuCap > 0 ? n.cpu / n.cpuCap : 0) + (n.memCap > 0 ? n.mem / n.memCap : 0);
}

function compareIds(a: WorkNode, b: WorkNode): number {
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** Negative when `a` is the better node. */
type NodeOrder = (a: WorkNode, b: WorkNode) => number;

const spreadOrder: NodeOrder = (a, b) => a.tasks - b.tasks || loadOf(a) - loadOf(b) || compareIds(a, b);
const binpackOrder: NodeOrder = (a, b) => loadOf(b) - loadOf(a) || b.tasks - a.tasks || compareIds(a, b);

/** A binary heap with the best node on top. */
class NodeHeap {
  private items: WorkNode[];

  constructor(
    items: WorkNode[],
    private readonly better: NodeOrder,
  ) {
    this.items = items;
    for (let i = (items.length >> 1) - 1; i >= 0; i--) this.down(i);
  }

  get size(): number {
    return this.items.length;
  }

  pop(): WorkNode | undefined {
    const items = this.items;
    if (items.length === 0) return undefined;
    const top = items[0]!;
    const last = items.pop()!;
    if (items.length > 0) {
      items[0] = last;
      this.down(0);
    }
    return top;
  }

  push(node: WorkNode): void {
    const items = this.items;
    items.push(node);
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (this.better(items[i]!, items[parent]!) >= 0) break;
      [items[i], items[parent]] = [items[parent]!, items[i]!];
      i = parent;
    }
  }

  private down(i: number): void {
    const items = this.items;
    const n = items.length;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let best = i;
      if (l < n && this.better(items[l]!, items[best]!) < 0) best = l;
      if (r < n && this.better(items[r]!, items[best]!) < 0) best = r;
      if (best === i) return;
      [items[i], items[best]] = [items[best]!, items[i]!];
      i = best;
    }
  }
}

function fits(n: WorkNode, c: TaskClass): boolean {
  if (n.cpu + c.cpu > n.cpuCap || n.mem + c.memory > n.memCap) return false;
  if (c.ports.length > 0 && n.ports !== null) {
    for (const p of c.ports) if (n.ports.has(p)) return false;
  }
  return true;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

// ---------------------------------------------------------------------------------------------
// Static filters: status, availability, driver, constraints

function staticFilter(all: WorkNode[], readyActive: WorkNode[], statusOf: Map<string, SchedulableNode>, cls: TaskClass): StaticResult {
  if (all.length === 0) return { reason: 'no nodes registered' };
  if (readyActive.length === 0) {
    const ready = all.filter((n) => statusOf.get(n.id)!.status === 'ready');
    if (ready.length === 0) {
      const counts = new Map<string, number>();
      for (const n of all) {
        const s = statusOf.get(n.id)!.status;
        counts.set(s, (counts.get(s) ?? 0) + 1);
      }
      const parts = [...counts.entries()].sort().map(([s, k]) => `${k} ${s}`);
      return { reason: `no ready node (${plural(all.length, 'node')}: ${parts.join(', ')})` };
    }
    return { reason: `all nodes paused or draining (${plural(ready.length, 'ready node')} checked)` };
  }
  const withDriver = readyActive.filter((n) => n.drivers.includes(cls.driver));
  if (withDriver.length === 0) {
    return { reason: `no ready node with driver ${cls.driver} (${plural(readyActive.length, 'node')} checked)` };
  }
  const parsed: Constraint[] = [];
  for (const text of cls.constraints) {
    const c = parseConstraint(text);
    if (c === undefined) return { reason: `invalid constraint '${text}'` };
    parsed.push(c);
  }
  let current = withDriver;
  for (const c of parsed) {
    const next = current.filter((n) => matchConstraint(c, n));
    if (next.length === 0) {
      const aloneOk = current !== withDriver && withDriver.some((n) => matchConstraint(c, n));
      if (!aloneOk) {
        return { reason: `no node satisfies constraint ${formatConstraint(c)} (${plural(withDriver.length, 'node')} checked)` };
      }
      const upTo = parsed.slice(0, parsed.indexOf(c) + 1).map(formatConstraint).join(', ');
      return { reason: `no node satisfies all of the constraints ${upTo} (${plural(withDriver.length, 'node')} checked)` };
    }
    current = next;
  }
  if (cls.volumes.kind === 'none') return { reason: cls.volumes.reason };
  if (cls.volumes.kind === 'nodes') {
    const holders = cls.volumes.nodes;
    const next = current.filter((n) => holders.has(n.id));
    if (next.length === 0) {
      return { reason: `its volumes are on ${[...holders].sort().join(', ')}, and none of those nodes qualifies (ready, active, driver ${cls.driver}, constraints; ${plural(withDriver.length, 'node')} checked)` };
    }
    current = next;
  }
  return { nodes: current };
}

/** Why none of `candidates` can take a task of class `cls` right now (ports or resources). */
function capacityReason(candidates: WorkNode[], cls: TaskClass): string {
  const portFree = candidates.filter((n) => n.ports === null || cls.ports.every((p) => !n.ports!.has(p)));
  if (portFree.length === 0) {
    const busy = cls.ports.filter((p) => candidates.some((n) => n.ports?.has(p)));
    return `host port${busy.length === 1 ? '' : 's'} ${busy.join(', ')} already in use on all ${plural(candidates.length, 'candidate node')}`;
  }
  let bestCpu = portFree[0]!;
  let bestMem = portFree[0]!;
  for (const n of portFree) {
    if (n.cpuCap - n.cpu > bestCpu.cpuCap - bestCpu.cpu) bestCpu = n;
    if (n.memCap - n.mem > bestMem.memCap - bestMem.mem) bestMem = n;
  }
  const freeCpu = Math.max(0, bestCpu.cpuCap - bestCpu.cpu);
  const freeMem = Math.max(0, bestMem.memCap - bestMem.mem);
  const cpuShort = freeCpu < cls.cpu;
  const memShort = freeMem < cls.memory;
  if (cpuShort && memShort) {
    return (
      `insufficient cpu and memory: needs ${formatCpu(cls.cpu)} and ${formatBytes(cls.memory)}, ` +
      `largest free ${formatCpu(freeCpu)} on ${bestCpu.id} and ${formatBytes(freeMem)} on ${bestMem.id}`
    );
  }
  if (memShort) return `insufficient memory: needs ${formatBytes(cls.memory)}, largest free ${formatBytes(freeMem)} on ${bestMem.id}`;
  if (cpuShort) return `insufficient cpu: needs ${formatCpu(cls.cpu)}, largest free ${formatCpu(freeCpu)} on ${bestCpu.id}`;
  return (
    `insufficient resources: no node has ${formatCpu(cls.cpu)} cpu and ${formatBytes(cls.memory)} memory free together ` +
    `(largest free ${formatCpu(freeCpu)} on ${bestCpu.id}, ${formatBytes(freeMem)} on ${bestMem.id}; ${plural(portFree.length, 'node')} checked)`
  );
}

// ---------------------------------------------------------------------------------------------
// The scheduler

/**
 * Place pending tasks on nodes. Each task id is placed at most once (a repeated id is
 * ignored); every task not placed is listed in `unplaced` with the reason.
 */
export function schedule(
  pending: readonly SchedulableTask[],
  nodes: readonly SchedulableNode[],
  usage: ReadonlyMap<string, UsageInput>,
  opts: ScheduleOptions,
): ScheduleResult {
  const order = opts.strategy === 'binpack' ? binpackOrder : spreadOrder;

  // Working copies of the nodes, sorted by id so input order never matters.
  const statusOf = new Map<string, SchedulableNode>();
  const all: WorkNode[] = [];
  for (const n of [...nodes].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))) {
    if (statusOf.has(n.id)) continue;
    statusOf.set(n.id, n);
    const u = usage.get(n.id);
    const ports = u?.hostPorts !== undefined ? new Set(u.hostPorts) : null;
    all.push({
      id: n.id,
      labels: n.labels,
      drivers: n.drivers,
      cpuCap: n.resources.cpu,
      memCap: n.resources.memory,
      cpu: u?.cpu ?? 0,
      mem: u?.memory ?? 0,
      tasks: u?.tasks ?? 0,
      ports: ports !== null && ports.size > 0 ? ports : null,
    });
  }
  const readyActive = all.filter((n) => {
    const info = statusOf.get(n.id)!;
    return info.status === 'ready' && info.availability === 'active';
  });

  // Group tasks into classes, in order of first appearance.
  const classes = new Map<string, TaskClass>();
  const seen = new Set<string>();
  for (const t of pending) {
    if (seen.has(t.id)) continue;
    seen.add(t.id);
    const spec = t.spec;
    // Constraint order does not matter for grouping; messages keep the first task's order.
    const constraints = spec.constraints;
    const ports = specHostPorts(spec).sort();
    const volumes: VolumePlacement = spec.volumes !== undefined && opts.volumePlacement ? opts.volumePlacement(t) : { kind: 'any' };
    const volumeKey = volumes.kind === 'any' ? '' : volumes.kind === 'none' ? `!${volumes.reason}` : [...volumes.nodes].sort().join('\u0001');
    const staticKey = `${spec.driver}\u0000${[...constraints].sort().join('\u0001')}\u0000${volumeKey}`;
    const key = `${staticKey}\u0000${spec.resources.cpu}\u0000${spec.resources.memory}\u0000${ports.join(',')}`;
    let cls = classes.get(key);
    if (cls === undefined) {
      cls = { staticKey, driver: spec.driver, constraints, cpu: spec.resources.cpu, memory: spec.resources.memory, ports, taskIds: [], volumes };
      classes.set(key, cls);
    }
    cls.taskIds.push(t.id);
  }

  const statics = new Map<string, StaticResult>();
  const placements: Placement[] = [];
  const unplaced: Unplaced[] = [];

  for (const cls of classes.values()) {
    let st = statics.get(cls.staticKey);
    if (st === undefined) {
      st = staticFilter(all, readyActive, statusOf, cls);
      statics.set(cls.staticKey, st);
    }
    if ('reason' in st) {
      for (const id of cls.taskIds) unplaced.push({ taskId: id, reason: st.reason });
      continue;
    }
    const candidates = st.nodes;
    const heap = new NodeHeap(
      candidates.filter((n) => fits(n, cls)),
      order,
    );
    let i = 0;
    for (; i < cls.taskIds.length; i++) {
      const node = heap.pop();
      if (node === undefined) break;
      placements.push({ taskId: cls.taskIds[i]!, nodeId: node.id });
      node.cpu += cls.cpu;
      node.mem += cls.memory;
      node.tasks += 1;
      if (cls.ports.length > 0) {
        node.ports ??= new Set();
        for (const p of cls.ports) node.ports.add(p);
      }
      // Only this class changes nodes while its heap is alive, so keys stay exact.
      if (fits(node, cls)) heap.push(node);
    }
    if (i < cls.taskIds.length) {
      const reason = capacityReason(candidates, cls);
      for (; i < cls.taskIds.length; i++) unplaced.push({ taskId: cls.taskIds[i]!, reason });
    }
  }
  return { placements, unplaced };
}
