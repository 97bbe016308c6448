// The events the cluster state emits: every change appends one to a bounded ring, with a
// replicated, monotonic `seq` (the same event has the same seq on every manager), and live
// listeners get them after each applied command. Watchers follow with `eventsSince` and
// re-list when they fall out of the ring or the state was restored from a snapshot.

import type { SecretEvent } from './secrets.js';
import type { VolumeEvent } from './volumes.js';
import type { UpdateStatus } from '../../protocol/service.js';
import type { TaskSummary } from '../../protocol/api.js';
import type { DesiredState, NodeInfo, NodeStatus, Task, TaskServiceRef, TaskState } from './model.js';

/** The parts of a task an event carries: the protocol's shape. */
export type { TaskSummary };

export type EventBody =
  | { type: 'task.created'; task: TaskSummary }
  | {
      type: 'task.updated';
      task: TaskSummary;
      prevState: TaskState;
      /** state: observed state moved; desired: stop asked; detail: progress only; restart: re-queued. */
      change: 'state' | 'desired' | 'detail' | 'restart' | 'health';
    }
  | { type: 'task.removed'; task: TaskSummary }
  | { type: 'node.registered'; node: NodeInfo }
  | { type: 'node.updated'; node: NodeInfo; prevStatus: NodeStatus; change: 'status' | 'availability' | 'registration' }
  | { type: 'kv.put'; key: string; version: number }
  | { type: 'kv.deleted'; key: string; version: number }
  | { type: 'cluster.leader'; leader: string; term: number }
  | {
      type: 'service.updated';
      service: ServiceSummary;
      /** created, spec (new spec or template), scale, rollback, status (update progress), removed. */
      change: 'created' | 'spec' | 'scale' | 'rollback' | 'status' | 'removed';
    }
  | SecretEvent
  | VolumeEvent;

/** The parts of a service an event carries. */
export interface ServiceSummary {
  name: string;
  replicas: number;
  /** The current template version. */
  templateVersion: number;
  update: UpdateStatus;
  version: number;
}

export type ClusterEvent = EventBody & {
  /** Monotonic, replicated: the same event has the same seq on every manager. */
  seq: number;
  /** Log index of the command that caused it. */
  index: number;
  /** `at` of the command (null for commands without a timestamp). */
  at: number | null;
};
export type EventType = ClusterEvent['type'];

export type EventsPage =
  | { resetNeeded: false; events: ClusterEvent[]; lastSeq: number }
  /** `seq` fell out of the ring (or is from another history): re-list, then follow from lastSeq. */
  | { resetNeeded: true; oldestSeq: number; lastSeq: number };

export function summarize(t: Task): TaskSummary {
  const s: TaskSummary = {
    id: t.id,
    name: t.name,
    state: t.state,
    desired: t.desired,
    node: t.node,
    reason: t.reason,
    detail: t.detail,
    attempt: t.attempt,
    restarts: t.restarts,
    version: t.version,
  };
  if (t.exitCode !== undefined) s.exitCode = t.exitCode;
  if (t.nextRestartAt !== undefined) s.nextRestartAt = t.nextRestartAt;
  if (t.service !== undefined) s.service = t.service;
  if (t.health !== undefined) s.health = t.health;
  return s;
}

export type EventListener = (event: ClusterEvent) => void;

/**
 * The event ring and its listeners, and the log entry being applied: it stamps each event, and
 * the parts of the state read its index as the version of what they write.
 */
export class EventLog {
  /** Meta of the entry being applied (`at`: the command's time stamp, null without one). */
  entry: { index: number; term: number; at: number | null } = { index: 0, term: 0, at: null };
  private seq = 0;
  private readonly capacity: number;
  private ring: ClusterEvent[] = [];
  private ringStart = 0;
  private outbox: ClusterEvent[] = [];
  private listeners = new Set<EventListener>();
  private resetListeners = new Set<() => void>();

  constructor(capacity: number) {
    this.capacity = capacity;
  }

  /** The seq of the newest event (0 before any). */
  get lastSeq(): number {
    return this.seq;
  }

  /** Events after `seq`, or `resetNeeded` (see `ClusterState.eventsSince`). */
  since(seq: number, limit: number): EventsPage {
    const oldestSeq = this.seq - this.ring.length + 1;
    if (seq > this.seq || seq < oldestSeq - 1) {
      return { resetNeeded: true, oldestSeq, lastSeq: this.seq };
    }
    const events: ClusterEvent[] = [];
    for (let s = seq + 1; s <= this.seq && events.length < limit; s++) {
      events.push(this.ring[(this.ringStart + (s - oldestSeq)) % this.ring.length]!);
    }
    return { resetNeeded: false, events, lastSeq: this.seq };
  }

  onEvent(cb: EventListener): () => void {
    this.listeners.add(cb);
    return () => this.listeners.delete(cb);
  }

  onReset(cb: () => void): () => void {
    this.resetListeners.add(cb);
    return () => this.resetListeners.delete(cb);
  }

  emit(body: EventBody): void {
    this.seq++;
    // `body` is always a fresh literal built by the caller: complete it in place.
    const event = body as ClusterEvent;
    event.seq = this.seq;
    event.index = this.entry.index;
    event.at = this.entry.at;
    if (this.ring.length < this.capacity) {
      this.ring.push(event);
    } else {
      this.ring[this.ringStart] = event;
      this.ringStart = (this.ringStart + 1) % this.capacity;
    }
    this.outbox.push(event);
  }

  /** Deliver the events of the command just applied to the live listeners. */
  flush(): void {
    if (this.outbox.length === 0) return;
    const batch = this.outbox;
    this.outbox = [];
    for (const event of batch) {
      for (const cb of this.listeners) {
        try {
          cb(event);
        } catch {
          // A listener's failure must not affect the state machine.
        }
      }
    }
  }

  /** After a restore: an empty ring that continues from the snapshot's `seq`. */
  restart(seq: number): void {
    this.seq = seq;
    this.ring = [];
    this.ringStart = 0;
    this.outbox = [];
  }

  /** Tell the `onReset` listeners the state was replaced. */
  tellReset(): void {
    for (const cb of this.resetListeners) {
      try {
        cb();
      } catch {
        // ignore listener failures
      }
    }
  }
}
