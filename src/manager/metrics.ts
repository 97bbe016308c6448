// Prometheus metrics of one manager (prom-client, one registry per manager so several managers
// can live in one process). Hot-path hooks (storage writes, Raft persists, API requests) only
// observe a histogram or bump a counter; everything else is read from the manager when
// /metrics is scraped.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { RaftNode } from '../raft/node.js';
import type { StateView } from './ports.js';
import type { RequestRecord } from './http.js';
import type { NodeStatus, TaskState } from './state.js';
import { TASK_STATES } from './state.js';
import { clusterEpoch } from './cluster-id.js';
import { monoNow } from '../clock.js';

/** Disk latencies: etcd's guidance is a WAL fsync p99 under 10 ms. */
const DISK_BUCKETS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
const API_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const SCHED_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];
const ROLES = ['follower', 'preCandidate', 'candidate', 'leader'] as const;
const NODE_STATUSES: NodeStatus[] = ['ready', 'unknown', 'down'];

/** What the gauges read when scraped. */
export interface MetricsSource {
  id: string;
  node: RaftNode;
  state: StateView;
  /** Worker sessions connected here (the dispatcher; 0 on followers). */
  sessionCount: () => number;
}

export class ManagerMetrics {
  readonly registry = new Registry();

  // ---- raft (hooks)
  readonly leaderChanges = new Counter({ name: 'flotilla_raft_leader_changes_total', help: 'Times this manager saw the leader change (including to none).', registers: [this.registry] });
  readonly proposals = new Counter({ name: 'flotilla_raft_proposals_total', help: 'Commands proposed to Raft by this manager (as leader).', registers: [this.registry] });
  readonly proposalFailures = new Counter({ name: 'flotilla_raft_proposals_failed_total', help: 'Proposals that failed (lost leadership, timeout, shutdown).', registers: [this.registry] });
  readonly appendSeconds = new Histogram({
    name: 'flotilla_raft_append_seconds',
    help: 'Time to make one Raft Ready durable (entries + hard state, synced) before it is sent and applied.',
    buckets: DISK_BUCKETS,
    registers: [this.registry],
  });
  readonly appendEntries = new Counter({ name: 'flotilla_raft_appended_entries_total', help: 'Log entries made durable.', registers: [this.registry] });
  readonly fsyncSeconds = new Histogram({
    name: 'flotilla_raft_fsync_seconds',
    help: 'Duration of each synced LevelDB batch (group commit). Alert when p99 > 10 ms.',
    buckets: DISK_BUCKETS,
    registers: [this.registry],
  });
  readonly storageBytes = new Counter({ name: 'flotilla_raft_storage_written_bytes_total', help: 'Bytes written to Raft storage in synced batches.', registers: [this.registry] });
  readonly snapshotBytes = new Gauge({ name: 'flotilla_raft_snapshot_bytes', help: 'Size of the latest Raft snapshot taken or received.', registers: [this.registry] });
  readonly snapshots = new Counter({ name: 'flotilla_raft_snapshots_total', help: 'Snapshots taken locally (taken) or installed from the leader (restored).', labelNames: ['kind'] as const, registers: [this.registry] });

  // ---- scheduler (hooks)
  readonly placements = new Counter({ name: 'flotilla_scheduler_placements_total', help: 'Tasks placed on a node (counted by the leader).', registers: [this.registry] });
  readonly schedulingSeconds = new Histogram({
    name: 'flotilla_scheduler_latency_seconds',
    help: 'Time a task waited in pending before it was placed (counted by the leader).',
    buckets: SCHED_BUCKETS,
    registers: [this.registry],
  });

  // ---- dispatcher (hook)
  readonly heartbeatsMissed = new Counter({
    name: 'flotilla_dispatcher_heartbeats_missed_total',
    help: 'Worker nodes this manager, as leader, declared down because no heartbeat arrived within the node grace (--node-grace).',
    registers: [this.registry],
  });

  // ---- API (hook)
  readonly requests = new Counter({ name: 'flotilla_api_requests_total', help: 'API requests by method, route pattern and status.', labelNames: ['method', 'route', 'status'] as const, registers: [this.registry] });
  readonly requestSeconds = new Histogram({
    name: 'flotilla_api_request_seconds',
    help: 'API request latency by method and route pattern (forwarded writes include the leader round trip).',
    labelNames: ['method', 'route'] as const,
    buckets: API_BUCKETS,
    registers: [this.registry],
  });

  // ---- transport
  readonly foreignPeers = new Counter({ name: 'flotilla_raft_foreign_cluster_refusals_total', help: 'Peer connections refused because the peer proved another cluster id.', registers: [this.registry] });

  constructor() {
    collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: 10 });
  }

  /** RaftStorage onWrite: one synced batch. */
  readonly onWrite = (ms: number, bytes: number): void => {
    this.fsyncSeconds.observe(ms / 1000);
    this.storageBytes.inc(bytes);
  };

  /** RaftNode onPersist: one Ready made durable. */
  readonly onPersist = (ms: number, entries: number): void => {
    this.appendSeconds.observe(ms / 1000);
    if (entries > 0) this.appendEntries.inc(entries);
  };

  /** Router.observe: one answered API request. */
  readonly onRequest = (r: RequestRecord): void => {
    this.requests.inc({ method: r.method, route: r.route, status: String(r.status) });
    this.requestSeconds.observe({ method: r.method, route: r.route }, r.ms / 1000);
  };

  /** Gauges read from the manager when scraped. */
  bind(m: MetricsSource, clusterId: () => string | null): void {
    const reg = [this.registry];
    const status = () => m.node.status();
    new Gauge({ name: 'flotilla_raft_term', help: 'Current Raft term.', registers: reg, collect() { this.set(status().term); } });
    new Gauge({
      name: 'flotilla_raft_role',
      help: 'Raft role of this manager (1 for the current role).',
      labelNames: ['role'] as const,
      registers: reg,
      collect() {
        const role = status().role;
        for (const r of ROLES) this.set({ role: r }, r === role ? 1 : 0);
      },
    });
    new Gauge({ name: 'flotilla_raft_has_leader', help: '1 when this manager knows a leader, 0 during elections and quorum loss.', registers: reg, collect() { this.set(m.node.leader() ? 1 : 0); } });
    new Gauge({ name: 'flotilla_raft_commit_index', help: 'Highest log index known committed.', registers: reg, collect() { this.set(status().commit); } });
    new Gauge({ name: 'flotilla_raft_applied_index', help: 'Highest log index applied to the state.', registers: reg, collect() { this.set(m.node.appliedIndex()); } });
    new Gauge({ name: 'flotilla_raft_last_index', help: 'Index of the last log entry.', registers: reg, collect() { this.set(status().lastIndex); } });
    new Gauge({ name: 'flotilla_raft_snapshot_index', help: 'Index of the latest snapshot.', registers: reg, collect() { this.set(status().snapshotIndex); } });
    new Gauge({
      name: 'flotilla_raft_voters',
      help: 'Voting managers in the configuration.',
      registers: reg,
      collect() {
        this.set(status().conf.voters.length);
      },
    });
    new Gauge({
      name: 'flotilla_raft_peer_lag_entries',
      help: 'Leader only: entries each peer is behind the leader\'s last index.',
      labelNames: ['peer'] as const,
      registers: reg,
      collect() {
        this.reset();
        const st = status();
        if (st.role !== 'leader') return;
        for (const [peer, pr] of Object.entries(st.progress)) {
          if (peer !== st.id) this.set({ peer }, Math.max(0, st.lastIndex - pr.match));
        }
      },
    });
    new Gauge({
      name: 'flotilla_raft_peer_last_contact_seconds',
      help: 'Seconds since this manager last heard from each peer.',
      labelNames: ['peer'] as const,
      registers: reg,
      collect() {
        this.reset();
        const now = monoNow();
        for (const [peer, t] of m.node.lastContact) if (m.node.members.has(peer)) this.set({ peer }, (now - t) / 1000);
      },
    });
    new Gauge({
      name: 'flotilla_cluster_info',
      help: 'Cluster identity: the cluster id and its epoch (bumped by `flotilla manager recover`).',
      labelNames: ['cluster_id', 'epoch', 'manager'] as const,
      registers: reg,
      collect() {
        this.reset();
        const id = clusterId();
        this.set({ cluster_id: id ?? '', epoch: String(clusterEpoch(id)), manager: m.id }, 1);
      },
    });

    // Scheduler and dispatcher.
    new Gauge({ name: 'flotilla_scheduler_pending_tasks', help: 'Tasks waiting to be placed.', registers: reg, collect() { this.set(m.state.pendingTasks().length); } });
    new Gauge({
      name: 'flotilla_tasks',
      help: 'Tasks by observed state.',
      labelNames: ['state'] as const,
      registers: reg,
      collect() {
        const counts = new Map<TaskState, number>(TASK_STATES.map((s) => [s, 0]));
        for (const t of m.state.listTasks()) counts.set(t.state, (counts.get(t.state) ?? 0) + 1);
        for (const [state, n] of counts) this.set({ state }, n);
      },
    });
    new Gauge({ name: 'flotilla_dispatcher_sessions', help: 'Worker sessions connected to this manager (non-zero on the leader only).', registers: reg, collect() { this.set(m.sessionCount()); } });
    new Gauge({
      name: 'flotilla_nodes',
      help: 'Worker nodes by status.',
      labelNames: ['status'] as const,
      registers: reg,
      collect() {
        const counts = new Map<NodeStatus, number>(NODE_STATUSES.map((s) => [s, 0]));
        for (const n of m.state.listNodes()) counts.set(n.status, (counts.get(n.status) ?? 0) + 1);
        for (const [status, n] of counts) this.set({ status }, n);
      },
    });
  }
}
