// The HTTP API's request and response shapes, as they cross the wire (JSON). One definition for
// the manager's handlers to answer with and for every client to read: the typed client
// (src/client), the CLI and the board (src/cli) and, as type-only imports, the web page
// (web/src). Types only, so the browser bundle pulls in no server code.
//
// `ApiRoutes` maps "METHOD /path" (with `:param` and a trailing `*` as the manager's router
// writes them) to the body a call sends and the answer it gets; `ApiResponse<M, P>` finds the
// answer's type from a concrete path such as `/v1/tasks/${id}?stale=true`.
import type { ErrorDetail, ErrorInfo } from './errors.js';
import type { NodeAvailability, TaskSpec } from './spec.js';
import type { ServiceSpec, UpdateStatus } from './service.js';
import type { HealthStatus, TaskHealth } from './health.js';

export type { ErrorDetail, ErrorInfo, HealthStatus, NodeAvailability, ServiceSpec, TaskHealth, TaskSpec, UpdateStatus };

// ---------------------------------------------------------------------------------------------
// Tasks

export type TaskState = 'pending' | 'assigned' | 'starting' | 'running' | 'succeeded' | 'failed' | 'lost' | 'stopped';
export type DesiredState = 'running' | 'shutdown';

export interface TaskHistoryEntry {
  state: TaskState;
  reason: string;
  at: number;
  node: string | null;
  attempt: number;
  exitCode?: number;
}

/** The parts of a task an event carries (query the task for its spec and history). */
export interface TaskSummary {
  id: string;
  name: string;
  state: TaskState;
  desired: DesiredState;
  node: string | null;
  reason: string;
  /** Progress or advice, e.g. "pulling 43%", "restarting in 2000 ms (restart 2 of 5)". */
  detail: string;
  exitCode?: number;
  /** 1 for the first run; +1 on every restart (policy or forced). */
  attempt: number;
  /** Restarts caused by the restart policy. */
  restarts: number;
  /** Set on a terminal task the restart policy will restart: the earliest time to do so. */
  nextRestartAt?: number;
  /** Log index of the last change. */
  version: number;
  /** A service's task: its service, slot and template version. */
  service?: { name: string; slot: number; version: number };
  /** Its health check's last reported state (tasks with a check, once their worker ran it). */
  health?: TaskHealth;
}

/** A task as the API answers it (GET/DELETE /v1/tasks/:id, lists, creation). */
export interface TaskView extends TaskSummary {
  spec: TaskSpec;
  /** The last state changes, oldest first. */
  history: TaskHistoryEntry[];
  createdAt: number;
  updatedAt: number;
  /** Log index of the task.create. */
  createVersion: number;
  /** Why a pending task is not placed yet (pending tasks only). */
  pendingReason?: string;
}

// ---------------------------------------------------------------------------------------------
// Services

/** A service as the API answers it (GET/POST/PUT /v1/services…). */
export interface ServiceInfo {
  name: string;
  spec: ServiceSpec;
  /** The current template version (the target of an update in progress). */
  templateVersion: number;
  /** The version a rollback returns to. */
  previousVersion: number | null;
  /** The rolling update in progress, or the last one. */
  update: UpdateStatus;
  replicas: number;
  /** Slots with a running task. */
  running: number;
  /** Slots with a ready task (running on a node that is up, and healthy when it has a check). */
  ready: number;
  /** Slots whose task runs the current template. */
  upToDate: number;
  createdAt: number;
  updatedAt: number;
  version: number;
}

export interface ServiceList {
  services: ServiceInfo[];
  index: number;
}

/** GET /v1/services/:name: the service and its tasks (finished ones too with ?all=true). */
/** Where the routing mesh sends a published port's connections: one live replica. */
export interface ServiceEndpoint {
  published: number;
  taskId: string;
  /** host:port the replica listens on. */
  addr: string;
  /** In the mesh's table (running, healthy, on a node that is not down). */
  ready: boolean;
  /** The node the replica runs on (absent from older managers). */
  node?: string;
  /** The replica's task state and its health check's status ('-': it has no check; absent from older managers). */
  state?: string;
  health?: string;
}

export interface ServiceInspect extends ServiceInfo {
  tasks: TaskView[];
  /** The routing mesh's endpoints of the ingress-published ports (absent from older managers). */
  endpoints?: ServiceEndpoint[];
  index: number;
}

export interface ServiceRemoved {
  removed: string;
  /** Its tasks that were told to stop and have not ended yet. */
  stopping: string[];
}

/** POST /v1/tasks/:id/remove: the task is gone (`stopped`: it was live and `force` stopped it first). */
export interface TaskRemoved {
  id: string;
  name: string;
  removed: true;
  stopped: boolean;
}

/** GET /v1/tasks (paged when `limit` or `continue` is given). */
export interface TaskList {
  tasks: TaskView[];
  /** Applied log index the list reflects. */
  index: number;
  continue?: string;
}

/** POST /v1/tasks with a list of specs. */
export interface TaskBatch {
  tasks: TaskView[];
}

// ---------------------------------------------------------------------------------------------
// Nodes

export type NodeStatus = 'ready' | 'unknown' | 'down';

export interface NodeResources {
  /** Millicores. */
  cpu: number;
  /** Bytes. */
  memory: number;
}

export interface NodeInfo {
  id: string;
  addr?: string;
  labels: Record<string, string>;
  resources: NodeResources;
  drivers: string[];
  availability: NodeAvailability;
  status: NodeStatus;
  /** Why the status is what it is ('' when ready). */
  statusReason: string;
  lastHeartbeat: number;
  registeredAt: number;
  version: number;
}

/** Resources reserved on a node by its non-terminal tasks. */
export interface NodeUsage {
  cpu: number;
  memory: number;
  tasks: number;
  /** Host ports in use, as "port/protocol". */
  hostPorts: string[];
}

/** A node in GET /v1/nodes: with its usage and the leader's view of its heartbeat. */
export interface NodeView extends NodeInfo {
  usage: NodeUsage;
  /** Since the last heartbeat the leader saw (heartbeats are not replicated); null: none seen. */
  heartbeatAgeMs: number | null;
}

export interface NodeList {
  nodes: NodeView[];
  index: number;
}

/** PATCH /v1/nodes/:id */
export interface NodeUpdate {
  availability: NodeAvailability;
}

// ---------------------------------------------------------------------------------------------
// Live usage (GET /v1/usage): measured by the workers, kept in the leader's memory only

/** One sample: leader wall ms when it arrived, millicores used, resident bytes. */
export interface UsagePoint {
  at: number;
  cpu: number;
  memory: number;
}

export interface NodeLiveUsage {
  node: string;
  /** The latest sample (millicores, bytes) and how old it is on the leader's clock. */
  cpu: number;
  memory: number;
  /** What the node has: millicores of its CPUs, bytes of memory. */
  cpuCapacity: number;
  memoryTotal: number;
  at: number;
  ageMs: number;
  /** The worker's sampling interval (ms). */
  intervalMs: number;
  /** Oldest first; absent with ?history=false. */
  history?: UsagePoint[];
}

export interface TaskLiveUsage {
  task: string;
  node: string;
  attempt: number;
  cpu: number;
  memory: number;
  at: number;
  ageMs: number;
  /** The task was in its node's latest sample (false: it has stopped, or the node went quiet). */
  current: boolean;
  history?: UsagePoint[];
}

export interface UsageReport {
  /** The leader that measured it. */
  leader: string;
  /** Wall ms since which this leader collects: history does not go back further (it starts again after a failover). */
  since: number;
  /** How far back history goes at most (ms). */
  windowMs: number;
  nodes: NodeLiveUsage[];
  tasks: TaskLiveUsage[];
}

// ---------------------------------------------------------------------------------------------
// Config store

export interface KvItem {
  key: string;
  value: string;
  version: number;
  createVersion?: number;
}

export interface KvList {
  items: KvItem[];
  index: number;
  continue?: string;
}

/** PUT /v1/kv/<key> */
export interface KvWriteResult {
  key: string;
  version: number;
  createVersion: number;
}

/** DELETE /v1/kv/<key> */
export interface KvDelResult {
  deleted: boolean;
  key: string;
  version?: number;
}

// ---------------------------------------------------------------------------------------------
// Cluster and managers

export type RaftRole = 'follower' | 'preCandidate' | 'candidate' | 'leader';

export interface PeerProgress {
  match: number;
  next: number;
  state: 'probe' | 'replicate' | 'snapshot';
  recentActive: boolean;
  learner: boolean;
}

/** GET /v1/status: the answering manager's own view. */
export interface LocalStatus {
  id: string;
  addr: string;
  role: RaftRole;
  leader: string | null;
  leaderAddr: string | null;
  term: number;
  commitIndex: number;
  appliedIndex: number;
  lastIndex: number;
  snapshotIndex: number;
  voters: string[];
  learners: string[];
  members: Record<string, string>;
  uptimeMs: number;
  progress: Record<string, PeerProgress>;
  /** Leader only: ms since it last heard from each peer, measured when it answered. */
  contactMs?: Record<string, number>;
  clusterId: string | null;
  storageId: string;
  /** Storage ids of the managers of this cluster, as recorded in the replicated state. */
  incarnations: Record<string, string>;
  /** Set while the manager is still probing its peers after a start. */
  phase?: 'probing';
  /** Set when there is no leader: why, and what still works. */
  message?: string;
}

/** One manager in GET /v1/cluster. */
export interface ManagerRow {
  id: string;
  addr: string;
  /** A Raft role, or 'unreachable'. */
  role: string;
  voter: boolean;
  term: number | null;
  commitIndex: number | null;
  appliedIndex: number | null;
  lastIndex: number | null;
  lag: number | null;
  /** Ms since the leader last heard from this manager (0 for the leader itself); null if unknown. */
  lastContactMs: number | null;
  healthy: boolean;
  /** Set when the manager came back with an empty data directory. */
  wiped?: true;
}

/** GET /v1/cluster */
export interface ClusterStatus {
  leader: string | null;
  /** Set when there is no leader: what is wrong and what to do. */
  message?: string;
  term: number;
  managers: ManagerRow[];
}

/** POST /v1/managers */
export interface ManagerAdd {
  id: string;
  addr: string;
}
export interface ManagerAdded {
  id: string;
  addr: string;
  role: 'voter' | 'learner';
}

// ---------------------------------------------------------------------------------------------
// Credentials

export type TokenRole = 'admin' | 'viewer';

export interface TokenInfo {
  id: string;
  role: TokenRole;
  createdAt: number;
}

/** POST /v1/tokens: the secret is shown only here. */
export interface TokenCreated extends TokenInfo {
  token: string;
}

export interface JoinTokens {
  caFingerprint: string | null;
  /** null once rotated: a rotated token is only shown when it is created. */
  worker: string | null;
  manager: string | null;
}

export interface WorkerTokenRotated {
  token: string;
  epoch: number;
  revokedNodes: boolean;
}

export interface JoinRequest {
  role: 'worker' | 'manager';
  id: string;
  publicKey: string;
  token: string;
  hosts?: string[];
}

export interface JoinReply {
  cert: string;
  ca: string;
  /** Managers only. */
  caKey?: string;
  secret?: string;
}

// ---------------------------------------------------------------------------------------------
// Events (GET /v1/events as SSE or WebSocket)

export type EventBody =
  | { type: 'task.created'; task: TaskSummary }
  | { type: 'task.updated'; task: TaskSummary; prevState: TaskState; change: 'state' | 'desired' | 'detail' | 'restart' | 'health' }
  | { type: 'task.removed'; task: TaskSummary }
  | { type: 'node.registered'; node: NodeInfo }
  | { type: 'node.updated'; node: NodeInfo; prevStatus: NodeStatus; change: 'status' | 'availability' | 'registration' }
  | { type: 'kv.put'; key: string; version: number }
  | { type: 'kv.deleted'; key: string; version: number }
  | { type: 'cluster.leader'; leader: string; term: number };

export type ClusterEvent = EventBody & {
  /** Monotonic, replicated: the same event has the same seq on every manager. */
  seq: number;
  /** Log index of the command that caused it. */
  index: number;
  /** `at` of the command (null for commands without a timestamp). */
  at: number | null;
};
export type EventType = ClusterEvent['type'];

/** What the event stream sends: a hello first, a reset when `since` is gone, then events. */
export type StreamFrame =
  | { kind: 'hello'; manager: string; lastSeq: number; seq?: undefined }
  | { kind: 'reset'; lastSeq: number; oldestSeq: number; seq?: undefined }
  | (ClusterEvent & { kind?: undefined });

// ---------------------------------------------------------------------------------------------
// The web page's own routes

export interface LeaderChange {
  seq: number;
  at: number | null;
  leader: string;
  term: number;
}

/** GET /v1/ui/snapshot: everything the page shows, at one instant. */
export interface UiSnapshot {
  manager: string;
  lastSeq: number;
  index: number;
  leader: { id: string; term: number; at: number } | null;
  leaderHistory: LeaderChange[];
  status: LocalStatus;
  tasks: TaskView[];
  /** Terminal tasks left out. */
  truncated: number;
  nodes: (NodeInfo & { usage: NodeUsage })[];
}

/** POST /v1/ui/validate */
export type ValidateResult = { ok: true; spec: TaskSpec } | { ok: false; error: ErrorInfo };

// ---------------------------------------------------------------------------------------------
// Errors

/** The body of every 4xx/5xx JSON answer. */
export interface ErrorBody {
  error: ErrorInfo;
}

// ---------------------------------------------------------------------------------------------
// The route map

export interface ApiRoutes {
  /** One spec answers a TaskView, a list of specs a TaskBatch (specs as written: sizes may be strings). */
  'POST /v1/tasks': { body: unknown; res: TaskView | TaskBatch };
  'GET /v1/tasks': { res: TaskList };
  'GET /v1/tasks/:id': { res: TaskView };
  /** Stops the task (the task stays, listed as stopped, until removed). */
  'DELETE /v1/tasks/:id': { res: TaskView };
  /** Forgets a finished task; `?force=true` stops a live one first (see TaskRemoved). */
  'POST /v1/tasks/:id/remove': { res: TaskRemoved };
  /** Plain text (followed with ?follow=true). */
  'GET /v1/tasks/:id/logs': { res: string };
  'GET /v1/events': { res: string };
  'GET /v1/nodes': { res: NodeList };
  'PATCH /v1/nodes/:id': { body: NodeUpdate; res: NodeInfo };
  /** Measured CPU and memory (?history=false, ?node=ID, ?task=ID). */
  'GET /v1/usage': { res: UsageReport };

  'GET /v1/services': { res: ServiceList };
  /** A flat service spec (task fields beside replicas, update, health), as written. */
  'POST /v1/services': { body: unknown; res: ServiceInfo };
  'GET /v1/services/:name': { res: ServiceInspect };
  'PUT /v1/services/:name': { body: unknown; res: ServiceInfo };
  'DELETE /v1/services/:name': { res: ServiceRemoved };
  'POST /v1/services/:name/scale': { body: { replicas: number }; res: ServiceInfo };
  'POST /v1/services/:name/rollback': { res: ServiceInfo };

  'GET /v1/kv': { res: KvList };
  'GET /v1/kv/*': { res: KvItem };
  'PUT /v1/kv/*': { body: string; res: KvWriteResult };
  'DELETE /v1/kv/*': { res: KvDelResult };

  'GET /v1/status': { res: LocalStatus };
  'GET /v1/cluster': { res: ClusterStatus };
  'POST /v1/managers': { body: ManagerAdd; res: ManagerAdded };
  'DELETE /v1/managers/:id': { res: { id: string; removed: true } };
  'POST /v1/managers/:id/transfer-leader': { res: { leader: string } };
  /** Takes a Raft snapshot now. */
  'POST /v1/snapshot': { res: { index: number } };
  /** A backup file (application/octet-stream). */
  'GET /v1/snapshot': { res: Uint8Array };
  /** Prometheus text. */
  'GET /metrics': { res: string };

  'GET /v1/tokens': { res: { tokens: TokenInfo[] } };
  'POST /v1/tokens': { body: { role: TokenRole }; res: TokenCreated };
  'DELETE /v1/tokens/:id': { res: { id: string; revoked: true } };
  'POST /v1/tokens/worker/rotate': { body: { revokeNodes?: boolean }; res: WorkerTokenRotated };
  'POST /v1/tokens/manager/rotate': { res: { token: string } };
  'GET /v1/tokens/join': { res: JoinTokens };
  'GET /v1/ca': { res: { ca: string; fingerprint: string } };
  'POST /v1/join': { body: JoinRequest; res: JoinReply };

  'GET /v1/ui/snapshot': { res: UiSnapshot };
  'POST /v1/ui/validate': { body: unknown; res: ValidateResult };
}

export type ApiMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
export type ApiRoute = keyof ApiRoutes;

/** The path without its query string. */
type PathOf<P extends string> = P extends `${infer A}?${string}` ? A : P;

/**
 * Whether a concrete path matches a route pattern: `:param` stands for one non-empty segment
 * (no '/'), a trailing `*` for the rest of the path.
 */
type PathMatches<Pat extends string, P extends string> = Pat extends `${infer A}:${string}/${infer B}`
  ? P extends `${A}${infer X}/${B}`
    ? X extends `${string}/${string}` | ''
      ? false
      : true
    : false
  : Pat extends `${infer A}:${string}`
    ? P extends `${A}${infer X}`
      ? X extends `${string}/${string}` | ''
        ? false
        : true
      : false
    : Pat extends `${infer A}*`
      ? P extends `${A}${string}`
        ? true
        : false
      : P extends Pat
        ? true
        : false;

/** The route a method and concrete path are served by (never when none). */
export type RouteFor<M extends ApiMethod, P extends string> = {
  [K in ApiRoute]: K extends `${M} ${infer Pat}` ? (PathMatches<Pat, PathOf<P>> extends true ? K : never) : never;
}[ApiRoute];

type OrUnknown<T> = [T] extends [never] ? unknown : T;

/** The answer to `M P`; unknown for a path the map does not know (or a plain `string`). */
export type ApiResponse<M extends ApiMethod, P extends string> = OrUnknown<ApiRoutes[RouteFor<M, P>]['res']>;

/** The body `M P` takes; unknown when the map does not say. */
export type ApiRequestBody<M extends ApiMethod, P extends string> = OrUnknown<
  ApiRoutes[RouteFor<M, P>] extends { body: infer B } ? B : never
>;
