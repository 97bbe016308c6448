// Leadership: starts and stops the leader services (the dispatcher and the controllers) as this
// manager gains and loses leadership, and fences their decisions by term.
//
// When Raft makes this manager leader in term T, every service is started, then the election
// is announced (`cluster.leader` and `nodes.markUnknown`, tagged with T). Until that entry is
// applied here this leader's state may lag what its predecessor committed, so no service
// decides anything; once it is applied every service is told `caughtUp(T)`. When leadership is
// lost (or the manager closes) every service is stopped. Each decision goes through `decide`:
// built for the current term and proposed tagged with it, so a deposed leader's late decision
// is refused by the state machine.
import type { SingleCommand, Command } from './state.js';
import type { CommandProposer, LeaderService, LeaderTerm } from './ports.js';
import type { Logger } from '../log.js';
import type { NodeId } from '../raft/types.js';
import { wallNow } from '../clock.js';

export class Leadership implements LeaderTerm {
  private leaderTerm: number | null = null;
  private isCaughtUp = false;
  private readonly services: LeaderService[] = [];

  constructor(
    private readonly o: { id: NodeId; proposer: CommandProposer; log: Logger },
  ) {}

  /** Services are started in the order added and stopped in the reverse order. */
  add(...services: LeaderService[]): this {
    this.services.push(...services);
    return this;
  }

  term(): number | null {
    return this.leaderTerm;
  }

  caughtUp(): boolean {
    return this.leaderTerm !== null && this.isCaughtUp;
  }

  /** Raft told a leader change (null: no leader known). */
  onLeaderChange(leader: NodeId | null, term: number): void {
    if (leader === this.o.id) this.start(term);
    else this.stop();
  }

  /** Ends leadership for good (the manager closes). */
  close(): void {
    this.stop();
  }

  async decide(build: (term: number) => SingleCommand[]): Promise<unknown> {
    const term = this.leaderTerm;
    if (term === null) return;
    const cmds = build(term);
    if (cmds.length === 0) return;
    const cmd: Command = cmds.length === 1 ? cmds[0]! : { type: 'batch', commands: cmds };
    try {
      return await this.o.proposer.propose(cmd);
    } catch (e) {
      if (this.leaderTerm !== null) this.o.log.warn('leader decision failed', { type: cmd.type, err: (e as Error).message });
      return undefined;
    }
  }

  private start(term: number): void {
    if (this.leaderTerm === term) return;
    this.stop();
    this.leaderTerm = term;
    this.o.log.info('leader services started', { term });
    this.isCaughtUp = false;
    // Announce the election and give every node a grace period to reconnect (never kill healthy
    // work): the node monitor counts each node's grace from when this leader caught up.
    void this.announce(term);
    for (const s of this.services) s.start(term);
  }

  private async announce(term: number): Promise<void> {
    for (let attempt = 0; this.leaderTerm === term; attempt++) {
      const at = wallNow();
      const r = await this.decide(() => [
        { type: 'cluster.leader', leader: this.o.id, term, at },
        { type: 'nodes.markUnknown', term, at },
      ]);
      if (r !== undefined && this.leaderTerm === term) {
        this.isCaughtUp = true;
        for (const s of this.services) s.caughtUp(term);
        return;
      }
      await new Promise((res) => setTimeout(res, Math.min(1000, 50 * (attempt + 1))));
    }
  }

  private stop(): void {
    if (this.leaderTerm === null) return;
    this.o.log.info('leader services stopped', { term: this.leaderTerm });
    this.leaderTerm = null;
    this.isCaughtUp = false;
    for (const s of [...this.services].reverse()) s.stop();
  }
}
