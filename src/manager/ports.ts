// Ports: the narrow doors the manager's services and HTTP handlers are given instead of the
// whole `Manager`. Each names one thing a service does with the rest of the manager; manager.ts
// (the composition root) hands every service the ports it needs, and nothing here imports
// manager.ts. Types only: no code, no IO.
//
//   CommandProposer  write a command through Raft (here if leader) and get its result
//   LeaderTerm       the term this manager leads in, and leader decisions fenced by it
//   StateView        the replicated state, read-only (getters and event subscriptions)
//   ReadBarrier      linearizable reads (ReadIndex) and the ?stale=true switch
//   LeaderForward    run a write on the leader: here, or forwarded to it
//   RouteTable       where HTTP routes, upgrade handlers and the static page are registered
//   Membership       who this manager is and who the other managers are
//   LeaderService    a leader-only service (dispatcher, controllers): started and stopped on leadership
//
// The clock is `monoNow()`/`wallNow()` from src/clock.ts (replaceable in tests); the logger is
// src/log.ts `Logger`.
import type http from 'node:http';
import type { Duplex } from 'node:stream';
import type { ClusterState, Command, SingleCommand } from './state.js';
import type { RequestContext, Router } from './http.js';
import type { NodeId } from '../raft/types.js';

export type { Logger } from '../log.js';

/** Writes through the replicated log (Manager.propose). */
export interface CommandProposer {
  /**
   * Proposes `cmd` (this manager must lead) and resolves with its result value once it is
   * committed and applied here; rejects with a FlotillaError: the command's own error (e.g.
   * `conflict`), or `not_leader`/`unavailable`/`timeout` when it could not be (or may not have
   * been) committed. A write past the state's quota is refused before it is proposed.
   */
  propose(cmd: Command, timeoutMs?: number): Promise<unknown>;
}

/**
 * Leadership as the leader services see it. A decision (placement, node down, restart) is made
 * in a term and proposed tagged with it: a deposed leader's late decision carries an old term
 * and the state machine refuses it (fencing).
 */
export interface LeaderTerm {
  /** The term this manager leads in, or null when it does not lead. */
  term(): number | null;
  /**
   * This leader has applied its own first entry of the term (the leader announcement): its
   * state holds everything committed before it, so decisions may be made from it.
   */
  caughtUp(): boolean;
  /**
   * Proposes decisions made now, built for the current term; resolves with the result value,
   * or undefined when not leading, when `build` returned nothing, or when the proposal failed
   * (logged; the service retries on its next round).
   */
  decide(build: (term: number) => SingleCommand[]): Promise<unknown>;
}

/** The replicated state, read-only: getters, events and snapshots; never apply or restore. */
export type StateView = Omit<ClusterState, 'apply' | 'applyEntry' | 'markApplied' | 'restore' | 'restoreAsync'>;

/** Reads that see every write committed before they started. */
export interface ReadBarrier {
  /** A linearizable read barrier (ReadIndex), retried across a leader change until the deadline. */
  linearizable(timeoutMs?: number): Promise<void>;
  /** The barrier unless the request asks for `?stale=true` (bad values are a 400). */
  readable(ctx: RequestContext): Promise<void>;
}

/** Writes that must run on the leader (Manager.onLeader). */
export interface LeaderForward {
  /** Runs `fn` here if this manager leads, else forwards the request to the leader (waiting for an election). */
  onLeader(ctx: RequestContext, fn: () => Promise<unknown>): Promise<unknown>;
}

export type UpgradeHandler = (req: http.IncomingMessage, socket: Duplex, head: Buffer) => void;

/** The manager's one HTTP port: every part registers the routes it serves here. */
export interface RouteTable {
  readonly router: Router;
  /** WebSocket upgrade handlers by path (/raft is the transport's own). */
  readonly upgrades: Map<string, UpgradeHandler>;
}

/** This manager and its peers, by id and address. */
export interface Membership {
  readonly id: NodeId;
  /** The address peers, workers and clients reach this manager at. */
  readonly addr: string;
  /** The managers of the cluster (id → advertised address), this one included. */
  members(): ReadonlyMap<NodeId, string>;
  /** The leader this manager knows of, or null. */
  leader(): NodeId | null;
}

/**
 * A leader-only service. `start(term)` when this manager becomes leader (nothing may be decided
 * yet: its state may lag what the previous leader committed), `caughtUp(term)` once the term's
 * first entry is applied here (decide from now on), `stop()` when it stops leading or closes.
 * Adding one (services, rolling updates) = a class with these three methods in controllers/,
 * listed in manager.ts where the others are.
 */
export interface LeaderService {
  readonly name: string;
  start(term: number): void;
  caughtUp(term: number): void;
  stop(): void;
}
