// The managers themselves: this manager's /v1/status, the cluster's /v1/cluster (asking every
// member), membership changes (/v1/managers: add as a learner, promoted to voter once caught
// up; remove; transfer leadership) and POST /v1/snapshot (compact the log now).
import http from 'node:http';
import type { Link } from '../tls/link.js';
import type { RaftNode } from '../raft/node.js';
import { RaftError, type ConfChange, type NodeId } from '../raft/types.js';
import { FlotillaError, toFlotillaError } from '../protocol/errors.js';
import { splitAddr } from '../protocol/address.js';
import { incarnations } from './incarnation.js';
import { raftToFlotilla } from './raft-errors.js';
import type { LeaderForward, Logger, RouteTable, StateView } from './ports.js';
import { monoNow } from '../clock.js';

export interface ClusterAdminDeps {
  id: NodeId;
  addr: string;
  node: RaftNode;
  state: StateView;
  routes: RouteTable;
  writes: LeaderForward;
  /** Requests to the other managers, over TLS when the cluster has it. */
  link: Link;
  log: Logger;
  /** Monotonic ms this manager started at (uptime). */
  started: number;
  clusterId: () => string | null;
  storageId: () => string;
  /** A fresh store still asking its bootstrap peers whether it is a wiped member. */
  probing: () => boolean;
  /** Peers that came back with a wiped data directory (incarnation.ts). */
  wiped: () => ReadonlyMap<NodeId, string> | undefined;
  noLeaderError: () => FlotillaError;
}

export class ClusterAdmin {
  constructor(private readonly d: ClusterAdminDeps) {}

  /** Registers /v1/status, /v1/cluster, /v1/managers and POST /v1/snapshot. */
  register(): void {
    const r = this.d.routes.router;
    r.on('GET', '/v1/status', () => this.localStatus());
    r.on('GET', '/v1/cluster', () => this.clusterStatus());
    r.on('POST', '/v1/managers', async (ctx) => {
      const body = (await ctx.json()) as { id?: unknown; addr?: unknown };
      if (typeof body?.id !== 'string' || !/^[a-z0-9][a-z0-9_-]{0,62}$/.test(body.id)) throw new FlotillaError('bad_request', "Cannot add a manager as 'id' must be a lowercase id");
      if (typeof body.addr !== 'string' || !/^[^\s:]+:\d{1,5}$/.test(body.addr)) throw new FlotillaError('bad_request', "Cannot add a manager as 'addr' must be host:port");
      const id = body.id;
      const addr = body.addr;
      return this.d.writes.onLeader(ctx, () => this.addManager(id, addr));
    });
    r.on('DELETE', '/v1/managers/:id', (ctx) => this.d.writes.onLeader(ctx, () => this.removeManager(ctx.params.id!)));
    r.on('POST', '/v1/managers/:id/transfer-leader', (ctx) => this.d.writes.onLeader(ctx, () => this.transferLeader(ctx.params.id!)));
    r.on('POST', '/v1/snapshot', (ctx) => this.d.writes.onLeader(ctx, async () => {
      const s = await this.d.node.snapshotNow();
      return { index: s?.meta.index ?? this.d.node.status().snapshotIndex };
    }));
  }

  localStatus() {
    const st = this.d.node.status();
    return {
      id: this.d.id,
      addr: this.d.addr,
      role: st.role,
      leader: st.leader,
      leaderAddr: st.leader ? (this.d.node.members.get(st.leader) ?? null) : null,
      term: st.term,
      commitIndex: st.commit,
      appliedIndex: this.d.node.appliedIndex(),
      lastIndex: st.lastIndex,
      snapshotIndex: st.snapshotIndex,
      voters: st.conf.voters,
      learners: st.conf.learners,
      members: Object.fromEntries(this.d.node.members),
      uptimeMs: monoNow() - this.d.started,
      progress: st.progress,
      ...(st.role === 'leader' ? { contactMs: this.contactAges() } : {}),
      clusterId: this.d.clusterId(),
      storageId: this.d.storageId(),
      /** Storage ids of the managers of this cluster, as recorded in the replicated state. */
      incarnations: incarnations(this.d.state, this.d.clusterId(), this.d.node.members.keys()),
      ...(this.d.probing() ? { phase: 'probing' } : {}),
      ...(st.leader ? {} : { message: this.d.noLeaderError().message }),
    };
  }

  /**
   * How long ago this manager last heard from each peer (monotonic ms, measured now). Only a
   * leader hears from every manager; a follower hears from the leader alone.
   */
  private contactAges(): Record<string, number> {
    const now = monoNow();
    const out: Record<string, number> = {};
    for (const [id, at] of this.d.node.lastContact) if (this.d.node.members.has(id)) out[id] = Math.max(0, Math.round(now - at));
    return out;
  }

  async clusterStatus() {
    const me = this.localStatus();
    const members = [...this.d.node.members.entries()];
    const results = await Promise.all(
      members.map(async ([id, addr]) => {
        if (id === this.d.id) return { id, addr, status: me as ReturnType<ClusterAdmin['localStatus']> | null };
        try {
          const s = await getJson(addr, '/v1/status', 1000, this.d.link);
          return { id, addr, status: s as ReturnType<ClusterAdmin['localStatus']> };
        } catch {
          return { id, addr, status: null };
        }
      }),
    );
    const leaderStatus = results.find((r) => r.status && r.status.role === 'leader' && r.status.term >= me.term)?.status ?? null;
    const leaderCommit = leaderStatus?.commitIndex ?? me.commitIndex;
    const leader = leaderStatus?.id ?? me.leader;
    // CONTACT is the leader's measure (it hears from every manager), taken when it answered; a
    // follower's own clock would show other followers as never heard from. Without a leader's
    // answer, this manager's own view, measured now (never negative).
    const contact = (leaderStatus as { contactMs?: Record<string, number> } | null)?.contactMs ?? null;
    const own = contact === null ? this.contactAges() : null;
    return {
      leader,
      ...(leader ? {} : { message: this.d.noLeaderError().message }),
      term: Math.max(...results.map((r) => r.status?.term ?? 0)),
      managers: results.map(({ id, addr, status }) => ({
        id,
        addr,
        role: status ? status.role : 'unreachable',
        voter: me.voters.includes(id),
        term: status?.term ?? null,
        commitIndex: status?.commitIndex ?? null,
        appliedIndex: status?.appliedIndex ?? null,
        lastIndex: status?.lastIndex ?? null,
        lag: status ? Math.max(0, leaderCommit - status.appliedIndex) : null,
        lastContactMs: id === (contact !== null ? leader : this.d.id) ? 0 : ((contact ?? own)![id] ?? null),
        healthy: status !== null && status.leader !== null && !this.d.wiped()?.has(id),
        ...(this.d.wiped()?.has(id) ? { wiped: true } : {}),
      })),
    };
  }

  private async addManager(id: string, addr: string): Promise<unknown> {
    if (this.d.node.members.has(id)) throw new FlotillaError('conflict', `manager ${id} is already a member`);
    if (this.d.node.removed.has(id)) throw new FlotillaError('conflict', `manager id ${id} was removed before and cannot be reused; pick a new id`);
    await this.confChange({ type: 'addLearner', node: id, context: addr });
    // Promoted to voter by promoteLearners() once caught up; wait for it (bounded).
    const deadline = monoNow() + 30_000;
    while (monoNow() < deadline) {
      if (this.d.node.status().conf.voters.includes(id)) return { id, addr, role: 'voter' };
      if (!this.d.node.isLeader()) break;
      await sleep(50);
    }
    return { id, addr, role: this.d.node.status().conf.voters.includes(id) ? 'voter' : 'learner' };
  }

  private async removeManager(id: string): Promise<unknown> {
    if (!this.d.node.members.has(id)) throw new FlotillaError('not_found', `manager ${id} is not a member`);
    if (id === this.d.id) {
      // Hand leadership over first so the cluster does not wait for an election.
      const other = this.d.node.status().conf.voters.find((v) => v !== this.d.id);
      if (other) {
        this.d.node.transferLeader(other);
        throw new FlotillaError('unavailable', `leadership is moving to ${other} before ${id} is removed; retry`, { leader: null });
      }
    }
    await this.confChange({ type: 'removeNode', node: id });
    return { id, removed: true };
  }

  private async transferLeader(id: string): Promise<unknown> {
    if (!this.d.node.status().conf.voters.includes(id)) throw new FlotillaError('bad_request', `Cannot transfer leadership as ${id} is not a voting manager`);
    if (id === this.d.id) return { leader: id };
    try {
      this.d.node.transferLeader(id);
    } catch (e) {
      throw raftToFlotilla(e);
    }
    const deadline = monoNow() + 3000;
    while (monoNow() < deadline) {
      const l = this.d.node.leader();
      if (l === id) return { leader: id };
      await sleep(20);
    }
    throw new FlotillaError('timeout', `leadership did not move to ${id} within 3 s; the current leader is ${this.d.node.leader() ?? 'unknown'}`);
  }

  private async confChange(cc: ConfChange): Promise<void> {
    const deadline = monoNow() + 10_000;
    for (;;) {
      try {
        await this.d.node.proposeConfChange(cc, 10_000);
        return;
      } catch (e) {
        if (e instanceof RaftError && e.code === 'conf_change_pending' && monoNow() < deadline) {
          await sleep(50);
          continue;
        }
        throw raftToFlotilla(e);
      }
    }
  }

  /** Leader: promote learners whose log has caught up with the commit index. */
  async promoteLearners(): Promise<void> {
    if (!this.d.node.isLeader()) return;
    const st = this.d.node.status();
    for (const id of st.conf.learners) {
      const pr = st.progress[id];
      if (!pr || pr.match < st.commit) continue;
      try {
        this.d.log.info(`promoting ${id}: caught up at ${pr.match}`);
        await this.d.node.proposeConfChange({ type: 'addVoter', node: id, context: this.d.node.members.get(id) }, 5000);
      } catch (e) {
        this.d.log.debug('promotion deferred', { id, err: String(e) });
      }
      return; // one change at a time
    }
  }
}

export function getJson(addr: string, path: string, timeoutMs: number, link?: Link): Promise<unknown> {
  const [host, port] = splitAddr(addr);
  return new Promise((resolve, reject) => {
    const opts = { host, port, path, timeout: timeoutMs };
    const req = (link ? link.request(opts) : http.request(opts)).end();
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        try {
          const j = JSON.parse(Buffer.concat(chunks).toString('utf8'));
          if ((res.statusCode ?? 500) >= 400) reject(toFlotillaError(j));
          else resolve(j);
        } catch (e) {
          reject(e);
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
