// The worker ↔ manager session protocol (WebSocket at /v1/worker, binary frames: a version
// byte then msgpack). One session is one registration; any error ends it and the worker
// reconnects (capped exponential backoff + jitter) to whichever manager answers, which
// redirects it to the leader.
import type { TaskSpec } from './spec.js';
import type { TaskHealth } from './health.js';
import type { DeliveredSecret } from './secrets.js';

export const SESSION_PATH = '/v1/worker';
export const SESSION_PROTOCOL_VERSION = 1;
/** Largest session frame accepted either way. */
export const MAX_SESSION_FRAME = 4 * 1024 * 1024;

/** What a worker knows of one of its tasks. */
export interface TaskStatusReport {
  taskId: string;
  /** The attempt this report is about (a restarted task runs again with attempt + 1). */
  attempt: number;
  state: 'starting' | 'running' | 'succeeded' | 'failed' | 'stopped';
  reason?: string;
  exitCode?: number;
  /** Free text shown to users, e.g. "pulling 43%". */
  detail?: string;
  /** ms timestamp on the worker when the state was observed. */
  at: number;
  /** The task's health (tasks with a check, once the worker runs it); changes are reported, not probes. */
  health?: TaskHealth;
  /**
   * Where the task's published tcp ports are reached from other nodes, as the driver observed
   * them (docker: the engine's bindings, dynamic ports included). Absent from older workers
   * and from drivers that publish nothing of their own.
   */
  ports?: PublishedPort[];
}

/** One tcp port of a task published on its node: `container` is reached at `hostIp`:`hostPort`. */
export interface PublishedPort {
  container: number;
  hostPort: number;
  /** The address the engine binds; absent when it binds every address (the node's own address then). */
  hostIp?: string;
}

export interface WorkerResources {
  /** millicores */
  cpu: number;
  /** bytes */
  memory: number;
}

// ---- worker → manager
export interface RegisterMsg {
  t: 'register';
  nodeId: string;
  token: string;
  /** The node credential from an earlier `welcome`: accepted instead of the join token (which may have been rotated since). */
  credential?: string;
  /** host:port of the worker's own small HTTP server (task logs). */
  addr: string;
  labels: Record<string, string>;
  resources: WorkerResources;
  drivers: string[];
  version: string;
  /**
   * What this worker understands beyond the first protocol: 'endpoints' (the routing mesh's
   * table). A manager sends a message type only to workers that list it (older workers end
   * the session on a type they do not know). Absent from older workers.
   */
  features?: string[];
  /** Every task the worker currently has (re-reported on every new session). */
  tasks: TaskStatusReport[];
}
export interface HeartbeatMsg {
  t: 'heartbeat';
}
export interface StatusMsg {
  t: 'status';
  reports: TaskStatusReport[];
}
/** One task's measured use in a `usage` message (validated by `parseUsageMessage` in frames.ts). */
export interface TaskUsageSample {
  taskId: string;
  attempt: number;
  /** Millicores used over the last sampling interval. */
  cpu: number;
  /** Resident memory, bytes. */
  memory: number;
}
/**
 * Measured CPU and memory of the node and its running tasks (every few seconds). An
 * observation only: the leader keeps it in memory, never in the Raft log. A manager that does
 * not know `usage` ignores it (the dispatcher drops unknown message types).
 */
export interface UsageMsg {
  t: 'usage';
  /** Worker wall ms when sampled. */
  at: number;
  /** The sampling interval the worker uses (ms). */
  intervalMs: number;
  node: { cpu: number; memory: number; cpuCapacity: number; memoryTotal: number };
  tasks: TaskUsageSample[];
}
export type WorkerToManager = RegisterMsg | HeartbeatMsg | StatusMsg | UsageMsg;

// ---- manager → worker
/** Not the leader: connect to `leader` (host:port) instead; `managers` is every manager's address. */
export interface RedirectMsg {
  t: 'redirect';
  leader: string | null;
  managers: string[];
}
/** Registration accepted by the leader. */
export interface WelcomeMsg {
  t: 'welcome';
  sessionId: string;
  /** The worker sends a heartbeat every heartbeatMs (the leader adds jitter per session). */
  heartbeatMs: number;
  managers: string[];
  term: number;
  /** This node's credential: keep it (mode 0600) and send it in every later `register`. */
  credential?: string;
  /**
   * The cluster's id (see `workerClusterId`): the worker scopes what it finds on shared
   * stores (a Docker engine) to it. Absent from older managers.
   */
  clusterId?: string;
}
/** Registration refused (bad token, bad fields): the worker logs `reason` and retries later. */
export interface RejectMsg {
  t: 'reject';
  reason: string;
}
export interface AssignedTask {
  taskId: string;
  /**
   * Which run of the task this is. When the manager restarts a task (restart policy) the same
   * taskId comes back with a higher attempt: the worker discards the old run and starts anew.
   */
  attempt: number;
  spec: TaskSpec;
  /** running: make sure it runs; shutdown: stop it (and forget it once stopped). */
  desired: 'running' | 'shutdown';
  /**
   * Container ports (tcp) the driver publishes on a host port of its own choosing and reports
   * back in `TaskStatusReport.ports`: the targets of a docker service's routing-mesh entries.
   * Absent when none, and from older managers.
   */
  publish?: number[];
}
/** The complete set of tasks assigned to this worker (anything else it runs must be stopped). */
export interface AssignmentsMsg {
  t: 'assignments';
  tasks: AssignedTask[];
  /**
   * The opened values of the secrets this worker's running tasks name, each once (over the TLS
   * session; see docs/security.md). Absent when none.
   */
  secrets?: DeliveredSecret[];
  /** Named volumes this node must delete its copy of (`flotilla volume rm`). Absent when none. */
  dropVolumes?: string[];
}
export interface ManagersMsg {
  t: 'managers';
  managers: string[];
}
/** One ready replica the routing mesh may send a connection to. */
export interface MeshBackend {
  taskId: string;
  /** Host (IP or name) and port where the replica listens. */
  host: string;
  port: number;
}
/** One port the routing mesh serves on every worker. */
export interface MeshPort {
  service: string;
  published: number;
  protocol: 'tcp';
  backends: MeshBackend[];
}
/**
 * The routing mesh's whole table (every ingress-published port of every service and its ready
 * replicas), sent when it changes and after every welcome, only to workers whose `register`
 * lists the 'endpoints' feature. A worker keeps the last table while it has no session.
 */
export interface EndpointsMsg {
  t: 'endpoints';
  ports: MeshPort[];
  /**
   * Every service's names for the worker's DNS server (`worker/dns.ts`), only to workers whose
   * `register` lists the 'names' feature (others never see the field). Absent from older managers.
   */
  names?: ServiceNames[];
}
/** What a worker's DNS server answers for one service. */
export interface ServiceNames {
  service: string;
  /** The routing mesh serves it (an ingress port): `<service>` is the asking worker's own address. */
  mesh: boolean;
  /** The hosts of the nodes its ready replicas run on, sorted, each once (`tasks.<service>`). */
  tasks: string[];
}
export const MESH_FEATURE = 'endpoints';
export const NAMES_FEATURE = 'names';
export type ManagerToWorker = RedirectMsg | WelcomeMsg | RejectMsg | AssignmentsMsg | ManagersMsg | EndpointsMsg;
