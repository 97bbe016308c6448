// Types shared by the pure Raft core, its driver, storage, transport and the simulator.
// This module is pure: no IO, no clocks, no randomness.

export type NodeId = string;

/** Entry kinds. A no-op entry is a Normal entry with empty data (written at the start of each term). */
export const enum EntryType {
  Normal = 0,
  ConfChange = 1,
}

export interface Entry {
  term: number;
  index: number;
  type: EntryType;
  data: Uint8Array;
}

export interface HardState {
  term: number;
  vote: NodeId | null;
  commit: number;
}

export interface ConfState {
  voters: NodeId[];
  learners: NodeId[];
}

export interface SnapshotMeta {
  index: number;
  term: number;
  conf: ConfState;
}

export interface Snapshot {
  meta: SnapshotMeta;
  data: Uint8Array;
}

export type ConfChangeType = 'addVoter' | 'addLearner' | 'removeNode';

/** One configuration change (one server at a time). `context` is opaque to the core (e.g. the address). */
export interface ConfChange {
  type: ConfChangeType;
  node: NodeId;
  context?: string;
}

export type MessageType =
  | 'app' // AppendEntries (also carries commit); entries may be empty (probe)
  | 'appResp'
  | 'heartbeat'
  | 'heartbeatResp'
  | 'vote'
  | 'voteResp'
  | 'preVote'
  | 'preVoteResp'
  | 'snap' // InstallSnapshot (the driver chunks it on the wire)
  | 'snapStatus' // local only: driver reports a snapshot send finished/failed
  | 'timeoutNow' // leadership transfer: campaign at once
  | 'readIndex' // follower -> leader: request a read index for ctx
  | 'readIndexResp'
  | 'transferLeader' // follower -> leader: forwarded transfer request
  | 'prop' // follower -> leader: forwarded proposal
  | 'unreachable' // local only: driver reports a peer unreachable
  | 'linkDown'; // local only: driver reports its connection with a peer closed (core-linkdown.ts)

export interface Message {
  type: MessageType;
  from: NodeId;
  to: NodeId;
  term: number;
  /** app: index of the entry preceding `entries`; appResp: the index acknowledged or rejected. */
  index: number;
  /** app: term of entry at `index`; appResp reject: term of the follower's entry at rejectHint. */
  logTerm: number;
  entries?: Entry[];
  commit?: number;
  reject?: boolean;
  /** appResp reject: the follower's hint (largest index that may match). */
  rejectHint?: number;
  snapshot?: Snapshot;
  /** readIndex / heartbeat context (opaque). */
  context?: string;
  /** vote/preVote sent because of a leadership transfer: bypasses the leader-lease check. */
  transfer?: boolean;
  /** snapStatus: whether the snapshot send failed. */
  failed?: boolean;
}

export type Role = 'follower' | 'preCandidate' | 'candidate' | 'leader';

export interface SoftState {
  leader: NodeId | null;
  role: Role;
}

export interface ReadState {
  /** The commit index at the time the read was requested; serve the read once applied >= index. */
  index: number;
  context: string;
}

/**
 * What the driver must do, in order:
 *  1. send `earlyMessages` (appends from a leader: safe before its own write, thesis §10.2.1);
 *  2. persist `hardState`, `snapshot` and `entries` in one atomic, synced write
 *     (`entries[0].index` truncates any persisted entry at or after it);
 *  3. send `messages` (they depend on what was persisted);
 *  4. apply `snapshot` (if any) then `committedEntries` (only entries durable on this node);
 *  5. serve `readStates` once applied >= their index;
 *  6. call `advance(ready)`.
 */
export interface Ready {
  softState?: SoftState;
  hardState?: HardState;
  entries: Entry[];
  snapshot?: Snapshot;
  earlyMessages: Message[];
  messages: Message[];
  committedEntries: Entry[];
  readStates: ReadState[];
  /** True when hardState/entries/snapshot must be written with sync before `messages` go out. */
  mustSync: boolean;
}

/** What a restarted core is built from: exactly what was persisted. */
export interface PersistedState {
  hardState: HardState;
  snapshot: Snapshot | null;
  /** Entries after the snapshot index, contiguous. */
  entries: Entry[];
}

export interface RaftConfig {
  id: NodeId;
  /** Ticks between heartbeats. */
  heartbeatTick: number;
  /** Base election timeout in ticks; the randomized timeout is in [electionTick, 2*electionTick). */
  electionTick: number;
  /** Injected randomness: returns an integer in [0, n). */
  rand: (n: number) => number;
  preVote?: boolean;
  checkQuorum?: boolean;
  /** Max entries' bytes in one append message. */
  maxSizePerMsg?: number;
  /** Max in-flight append messages per follower. */
  maxInflightMsgs?: number;
  /** Max in-flight bytes per follower. */
  maxInflightBytes?: number;
  /**
   * Initial membership for a brand-new cluster: ignored when persisted state exists. It becomes the
   * first committed entries of the log (term 1), identical on every bootstrapping node.
   */
  bootstrap?: ConfState;
  /** Per-node context (e.g. address) recorded in the bootstrap configuration entries. */
  bootstrapContext?: Record<NodeId, string>;
  /** Persisted state to restart from. */
  persisted?: PersistedState;
  /** Index already applied by the state machine (restart); default: the snapshot index. */
  applied?: number;
  /**
   * TEST ONLY. Deliberately broken variants, used only by the simulator (src/raft/sim) to prove
   * its checkers can fail. Never set by RaftNode (production builds its config without it).
   */
  bug?: CoreBug;
}

/**
 * Deliberately broken core variants (test only, see RaftConfig.bug):
 *  figure8: commits old-term entries by counting replicas;
 *  read-any-ack: any heartbeat response confirms the pending reads, whatever its context;
 *  learner-read-quorum: learners' heartbeat responses count toward a read's quorum;
 *  commit-past-new: a follower commits up to its own last index, not the last new entry;
 *  conf-at-append: followers apply a configuration change when appended, never rolled back;
 *  self-count-before-sync: the leader counts itself toward a quorum before its own write;
 *  conf-before-noop: a new leader may propose a configuration change before its no-op commits.
 */
export type CoreBug =
  | 'none'
  | 'figure8'
  | 'read-any-ack'
  | 'learner-read-quorum'
  | 'commit-past-new'
  | 'conf-at-append'
  | 'self-count-before-sync'
  | 'conf-before-noop';

export const CORE_BUGS: readonly CoreBug[] = [
  'figure8',
  'read-any-ack',
  'learner-read-quorum',
  'commit-past-new',
  'conf-at-append',
  'self-count-before-sync',
  'conf-before-noop',
];

export class RaftError extends Error {
  constructor(
    readonly code: 'not_leader' | 'transfer_in_progress' | 'conf_change_pending' | 'proposal_dropped' | 'invalid' | 'too_many_uncommitted',
    message: string,
    readonly leader: NodeId | null = null,
  ) {
    super(message);
    this.name = 'RaftError';
  }
}
