// The registered worker nodes: registration, heartbeats and status (ready, unknown, down), and
// the operator's availability (active, pause, drain). What happens to a down node's tasks is
// the tasks' business: `ClusterState` asks the task table to mark them lost.

import type { NodeRegisterCommand, NodeSetAvailabilityCommand, NodesMarkUnknownCommand } from './commands.js';
import type { EventLog } from './events.js';
import { byId, fail, type ApplyResult, type NodeInfo, type NodeStatus } from './model.js';

export class NodeTable {
  private nodes = new Map<string, NodeInfo>();

  constructor(private readonly log: EventLog) {}

  /** A table holding a snapshot's nodes. */
  static restore(log: EventLog, nodes: NodeInfo[]): NodeTable {
    const table = new NodeTable(log);
    for (const n of nodes) table.nodes.set(n.id, n);
    return table;
  }

  get(id: string): NodeInfo | undefined {
    return this.nodes.get(id);
  }

  /** Nodes sorted by id. */
  list(): NodeInfo[] {
    return [...this.nodes.values()].sort(byId);
  }

  /** Node ids, sorted. */
  ids(): string[] {
    return [...this.nodes.keys()].sort();
  }

  /** The nodes in table order, for a snapshot (which sorts them). */
  image(): NodeInfo[] {
    return [...this.nodes.values()];
  }

  register(cmd: NodeRegisterCommand): ApplyResult<NodeInfo> {
    const reg = cmd.node;
    const prev = this.nodes.get(reg.id);
    const node: NodeInfo = {
      id: reg.id,
      labels: { ...(reg.labels ?? {}) },
      resources: { cpu: reg.resources.cpu, memory: reg.resources.memory },
      drivers: [...reg.drivers],
      availability: prev?.availability ?? 'active',
      status: 'ready',
      statusReason: '',
      lastHeartbeat: cmd.at,
      registeredAt: prev?.registeredAt ?? cmd.at,
      version: this.log.entry.index,
    };
    if (reg.addr !== undefined) node.addr = reg.addr;
    this.nodes.set(node.id, node);
    if (prev === undefined) this.log.emit({ type: 'node.registered', node });
    else this.log.emit({ type: 'node.updated', node, prevStatus: prev.status, change: 'registration' });
    return { ok: true, value: node };
  }

  /**
   * node.heartbeat (`heartbeat`: also records lastHeartbeat) and node.status, for a status
   * other than `down` (see `down`).
   */
  setStatus(id: string, status: Exclude<NodeStatus, 'down'>, reason: string | undefined, at: number, heartbeat: boolean): ApplyResult<NodeInfo> {
    const prev = this.nodes.get(id);
    if (prev === undefined) {
      return fail('not_found', heartbeat ? `Cannot record a heartbeat from node '${id}' as it is not registered` : `Cannot set the status of node '${id}' as it is not registered`);
    }
    if (prev.status === status && !heartbeat) return { ok: true, value: prev };
    const node: NodeInfo = {
      ...prev,
      status,
      statusReason: status === 'ready' ? '' : reason ?? '',
      lastHeartbeat: heartbeat ? at : prev.lastHeartbeat,
      version: this.log.entry.index,
    };
    this.nodes.set(id, node);
    if (prev.status !== status) this.log.emit({ type: 'node.updated', node, prevStatus: prev.status, change: 'status' });
    return { ok: true, value: node };
  }

  /** Mark a node down (a worker leaving says so with its last heartbeat: `heartbeat`). */
  down(id: string, reason: string, at: number, heartbeat: boolean): ApplyResult<NodeInfo> {
    const prev = this.nodes.get(id);
    if (prev === undefined) return fail('not_found', `Cannot mark node '${id}' down as it is not registered`);
    let node = prev;
    if (prev.status !== 'down' || heartbeat) {
      node = { ...prev, status: 'down', statusReason: reason, lastHeartbeat: heartbeat ? at : prev.lastHeartbeat, version: this.log.entry.index };
      this.nodes.set(id, node);
      if (prev.status !== 'down') this.log.emit({ type: 'node.updated', node, prevStatus: prev.status, change: 'status' });
    }
    return { ok: true, value: node };
  }

  setAvailability(cmd: NodeSetAvailabilityCommand): ApplyResult<NodeInfo> {
    const prev = this.nodes.get(cmd.id);
    if (prev === undefined) return fail('not_found', `Cannot set the availability of node '${cmd.id}' as it is not registered`);
    if (prev.availability === cmd.availability) return { ok: true, value: prev };
    const node: NodeInfo = { ...prev, availability: cmd.availability, version: this.log.entry.index };
    this.nodes.set(node.id, node);
    this.log.emit({ type: 'node.updated', node, prevStatus: prev.status, change: 'availability' });
    return { ok: true, value: node };
  }

  markUnknown(cmd: NodesMarkUnknownCommand): ApplyResult<{ nodes: string[] }> {
    const marked: string[] = [];
    for (const id of this.ids()) {
      const prev = this.nodes.get(id)!;
      if (prev.status !== 'ready') continue;
      const node: NodeInfo = { ...prev, status: 'unknown', statusReason: `new leader in term ${cmd.term}: waiting for a heartbeat`, version: this.log.entry.index };
      this.nodes.set(id, node);
      this.log.emit({ type: 'node.updated', node, prevStatus: prev.status, change: 'status' });
      marked.push(id);
    }
    return { ok: true, value: { nodes: marked } };
  }
}
