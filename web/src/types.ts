// The API's shapes, as the page uses them (the server's own types live in src/manager/state.ts
// and spec.ts; these mirror the JSON, kept separate so the browser bundle imports no server code).

export type TaskState = 'pending' | 'assigned' | 'starting' | 'running' | 'succeeded' | 'failed' | 'lost' | 'stopped';
export const TASK_STATES: readonly TaskState[] = ['pending', 'assigned', 'starting', 'running', 'succeeded', 'failed', 'lost', 'stopped'];
export const TERMINAL: ReadonlySet<TaskState> = new Set<TaskState>(['succeeded', 'failed', 'lost', 'stopped']);
export type NodeStatus = 'ready' | 'unknown' | 'down';
export type Availability = 'active' | 'pause' | 'drain';

export interface PortSpec {
  container: number;
  host?: number;
  protocol: 'tcp' | 'udp';
}

export interface ContainerSpec {
  name: string;
  image?: string;
  command: string[];
  args: string[];
  env: Record<string, string>;
  ports: PortSpec[];
  workdir?: string;
}

export interface TaskSpec {
  name: string;
  containers: ContainerSpec[];
  resources: { cpu: number; memory: number };
  constraints: string[];
  restart: { policy: 'always' | 'on-failure' | 'never'; maxAttempts: number; backoffMs: number; maxBackoffMs: number };
  driver: 'docker' | 'process';
  labels: Record<string, string>;
  privileged: boolean;
  mounts: { source: string; target: string; readonly: boolean }[];
}

export interface HistoryEntry {
  state: TaskState;
  reason: string;
  at: number;
  node: string | null;
  attempt: number;
  exitCode?: number;
}

/** What events carry about a task. */
export interface TaskSummary {
  id: string;
  name: string;
  state: TaskState;
  desired: 'running' | 'shutdown';
  node: string | null;
  reason: string;
  detail: string;
  exitCode?: number;
  attempt: number;
  restarts: number;
  nextRestartAt?: number;
  version: number;
}

/** A task as the page keeps it: the summary always, the rest once listed or fetched. */
export interface Task extends TaskSummary {
  spec?: TaskSpec;
  history?: HistoryEntry[];
  createdAt?: number;
  updatedAt?: number;
  pendingReason?: string;
  createVersion?: number;
}

export interface NodeUsage {
  cpu: number;
  memory: number;
  tasks: number;
  hostPorts: string[];
}

export interface NodeInfo {
  id: string;
  addr?: string;
  labels: Record<string, string>;
  resources: { cpu: number; memory: number };
  drivers: string[];
  availability: Availability;
  status: NodeStatus;
  statusReason: string;
  lastHeartbeat: number;
  registeredAt: number;
  version: number;
  usage?: NodeUsage;
  /** From /v1/nodes (the leader's memory; heartbeats are not replicated). */
  heartbeatAgeMs?: number | null;
  /** Page clock time of the last heartbeat, derived from heartbeatAgeMs when polled. */
  heartbeatSeenAt?: number;
}

export type ClusterEvent = { seq: number; index: number; at: number | null } & (
  | { type: 'task.created'; task: TaskSummary }
  | { type: 'task.updated'; task: TaskSummary; prevState: TaskState; change: string }
  | { type: 'task.removed'; task: TaskSummary }
  | { type: 'node.registered'; node: NodeInfo }
  | { type: 'node.updated'; node: NodeInfo; prevStatus: NodeStatus; change: string }
  | { type: 'kv.put'; key: string; version: number }
  | { type: 'kv.deleted'; key: string; version: number }
  | { type: 'cluster.leader'; leader: string; term: number }
);

export type StreamFrame =
  | { kind: 'hello'; manager: string; lastSeq: number }
  | { kind: 'reset'; lastSeq: number; oldestSeq: number }
  | (ClusterEvent & { kind?: undefined });

export interface ManagerRow {
  id: string;
  addr: string;
  role: string;
  voter: boolean;
  term: number | null;
  commitIndex: number | null;
  appliedIndex: number | null;
  lastIndex: number | null;
  lag: number | null;
  lastContactMs: number | null;
  healthy: boolean;
}

export interface ClusterInfo {
  leader: string | null;
  /** Set when there is no leader: why, and what still works. */
  message?: string;
  term: number;
  managers: ManagerRow[];
}

export interface LocalStatus {
  id: string;
  addr: string;
  role: string;
  leader: string | null;
  leaderAddr: string | null;
  term: number;
  members: Record<string, string>;
}

export interface Snapshot {
  manager: string;
  lastSeq: number;
  index: number;
  leader: { id: string; term: number; at: number } | null;
  leaderHistory: { seq: number; at: number | null; leader: string; term: number }[];
  status: LocalStatus;
  tasks: Task[];
  truncated: number;
  nodes: NodeInfo[];
}

export interface ErrorDetail {
  path: string;
  message: string;
}

export interface ErrorInfo {
  code: string;
  message: string;
  details?: ErrorDetail[];
}
