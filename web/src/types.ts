// The API's shapes, as the page uses them. The wire types are src/protocol/api.ts (shared with
// the manager, the client and the CLI), imported as types only so the browser bundle pulls in
// no server code; the page's own models (a task or node it may know only in part) are here.
import type {
  ClusterEvent,
  ClusterStatus,
  ErrorDetail,
  ErrorInfo as ApiErrorInfo,
  LocalStatus,
  ManagerRow,
  NodeAvailability,
  NodeInfo as ApiNodeInfo,
  NodeStatus,
  NodeUsage,
  StreamFrame,
  TaskHistoryEntry,
  TaskSpec,
  TaskState,
  TaskSummary,
  TaskView,
  UiSnapshot,
} from '../../src/protocol/api';
import type { ContainerSpec, PortSpec } from '../../src/protocol/spec';

export type { ClusterEvent, ContainerSpec, ErrorDetail, LocalStatus, ManagerRow, NodeStatus, NodeUsage, PortSpec, StreamFrame, TaskSpec, TaskState, TaskSummary };
export type Availability = NodeAvailability;
export type HistoryEntry = TaskHistoryEntry;
export type ClusterInfo = ClusterStatus;
export type Snapshot = UiSnapshot;

export const TASK_STATES: readonly TaskState[] = ['pending', 'assigned', 'starting', 'running', 'succeeded', 'failed', 'lost', 'stopped'];
export const TERMINAL: ReadonlySet<TaskState> = new Set<TaskState>(['succeeded', 'failed', 'lost', 'stopped']);

/** A task as the page keeps it: the summary always (from events), the rest once listed or fetched. */
export interface Task extends TaskSummary, Partial<Omit<TaskView, keyof TaskSummary>> {}

/** A node as the page keeps it. */
export interface NodeInfo extends ApiNodeInfo {
  usage?: NodeUsage;
  /** From /v1/nodes (the leader's memory; heartbeats are not replicated). */
  heartbeatAgeMs?: number | null;
  /** Page clock time of the last heartbeat, derived from heartbeatAgeMs when polled. */
  heartbeatSeenAt?: number;
}

/** An error as the page shows it: the API's, or one of its own (code `http_<status>`, `network`…). */
export interface ErrorInfo extends Omit<ApiErrorInfo, 'code'> {
  code: ApiErrorInfo['code'] | (string & {});
}
