// A tiny synchronous network of RaftCores for unit tests: messages are delivered instantly
// unless a link is cut; persistence is immediate.
import { RaftCore } from '../../src/raft/core.js';
import type { Entry, Message, NodeId, PersistedState, RaftConfig, ReadState, Ready, Snapshot } from '../../src/raft/types.js';

export interface Disk extends PersistedState {}

export class Net {
  cores = new Map<NodeId, RaftCore>();
  disks = new Map<NodeId, Disk>();
  applied = new Map<NodeId, Entry[]>();
  reads = new Map<NodeId, ReadState[]>();
  cut = new Set<string>();
  dropTypes = new Set<string>();
  delivered: Message[] = [];
  /** Every message a core handed out (before cuts, drops and the interceptor), in order. */
  sent: Message[] = [];
  /**
   * Optional interceptor consulted after cuts and dropTypes: return the message (possibly a
   * modified copy) to deliver it, or null to drop it.
   */
  intercept: ((m: Message) => Message | null) | null = null;
  /** Optional observer of every Ready, called before it is written to the disk. */
  onReady: ((id: NodeId, rd: Ready, disk: Disk) => void) | null = null;
  private seed = 1;

  /** A network with no node started yet (use `disks.set` + `start` to build crafted nodes). */
  static empty(cfg: Partial<RaftConfig> = {}): Net {
    return new Net([], cfg, cfg);
  }

  constructor(ids: NodeId[], opts: Partial<RaftConfig> = {}, readonly cfg: Partial<RaftConfig> = opts) {
    for (const id of ids) this.start(id, { bootstrap: { voters: ids, learners: [] }, ...opts });
  }

  rand = (n: number): number => {
    this.seed = (this.seed * 1103515245 + 12345) & 0x7fffffff;
    return this.seed % n;
  };

  start(id: NodeId, extra: Partial<RaftConfig> = {}): RaftCore {
    const disk = this.disks.get(id);
    const core = new RaftCore({
      id,
      heartbeatTick: 1,
      electionTick: 10,
      rand: this.rand,
      ...this.cfg,
      ...extra,
      persisted: disk ? structuredClone(disk) : undefined,
    });
    if (!disk) this.disks.set(id, { hardState: { term: 0, vote: null, commit: 0 }, snapshot: null, entries: [] });
    this.cores.set(id, core);
    if (!this.applied.has(id)) this.applied.set(id, []);
    this.reads.set(id, []);
    return core;
  }

  crash(id: NodeId): void {
    this.cores.delete(id);
  }

  isolate(id: NodeId): void {
    for (const other of this.disks.keys()) if (other !== id) { this.cut.add(`${id}>${other}`); this.cut.add(`${other}>${id}`); }
  }

  /** Cuts both directions between a and b. */
  cutBoth(a: NodeId, b: NodeId): void {
    this.cut.add(`${a}>${b}`);
    this.cut.add(`${b}>${a}`);
  }

  heal(): void {
    this.cut.clear();
  }

  /** Processes every Ready and delivers every message until quiet. */
  settle(limit = 10_000): void {
    for (let i = 0; i < limit; i++) {
      let any = false;
      for (const [id, core] of this.cores) {
        if (!core.hasReady()) continue;
        any = true;
        const rd = core.ready();
        const disk = this.disks.get(id)!;
        this.onReady?.(id, rd, disk);
        if (rd.hardState) disk.hardState = { ...rd.hardState };
        if (rd.snapshot) {
          disk.snapshot = rd.snapshot;
          disk.entries = disk.entries.filter((e) => e.index > rd.snapshot!.meta.index);
          this.applied.set(id, []);
        }
        if (rd.entries.length > 0) {
          const first = rd.entries[0]!.index;
          disk.entries = disk.entries.filter((e) => e.index < first).concat(rd.entries);
        }
        for (const m of [...rd.earlyMessages, ...rd.messages]) this.deliver(m);
        this.applied.get(id)!.push(...rd.committedEntries);
        this.reads.get(id)!.push(...rd.readStates);
        core.advance(rd);
      }
      if (!any) return;
    }
    throw new Error('network did not settle');
  }

  deliver(m: Message): void {
    this.sent.push(m);
    if (this.cut.has(`${m.from}>${m.to}`) || this.dropTypes.has(m.type)) return;
    if (this.intercept) {
      const r = this.intercept(m);
      if (!r) return;
      m = r;
    }
    const core = this.cores.get(m.to);
    if (!core) return;
    this.delivered.push(m);
    core.step(m);
  }

  tick(n = 1, ids?: NodeId[]): void {
    for (let i = 0; i < n; i++) {
      for (const [id, core] of this.cores) if (!ids || ids.includes(id)) core.tick();
      this.settle();
    }
  }

  /** Ticks the given nodes (default: all) one at a time until `pred` holds; returns the ticks used. */
  tickUntil(pred: () => boolean, ids?: NodeId[], max = 1000): number {
    for (let i = 0; i < max; i++) {
      if (pred()) return i;
      this.tick(1, ids);
    }
    if (pred()) return max;
    throw new Error(`condition not reached within ${max} ticks`);
  }

  core(id: NodeId): RaftCore {
    const c = this.cores.get(id);
    if (!c) throw new Error(`no core ${id}`);
    return c;
  }

  leader(): RaftCore | undefined {
    const leaders = [...this.cores.values()].filter((c) => c.status().role === 'leader');
    return leaders.sort((a, b) => b.status().term - a.status().term)[0];
  }

  elect(id: NodeId): RaftCore {
    // Campaign by ticking only `id` past its election timeout.
    for (let i = 0; i < 100; i++) {
      this.tick(1, [id]);
      if (this.cores.get(id)!.status().role === 'leader') return this.cores.get(id)!;
    }
    throw new Error(`${id} did not become leader`);
  }

  data(id: NodeId): string[] {
    return this.applied.get(id)!.filter((e) => e.type === 0 && e.data.length > 0).map((e) => new TextDecoder().decode(e.data));
  }

  snapshotOf(id: NodeId): Snapshot | null {
    return this.disks.get(id)!.snapshot;
  }
}

export const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
