// Unit tests tied to the rules of the Raft paper (Ongaro & Ousterhout, "In Search of an
// Understandable Consensus Algorithm", extended version), one `it` per rule, in the spirit of
// etcd-io/raft's raft_paper_test.go. Most tests run the "paper" Raft (no PreVote, no CheckQuorum)
// so that the rules are visible without the extensions; the extensions are covered in
// raft-features.test.ts.
import { describe, expect, it } from 'vitest';
import { RaftCore } from '../src/raft/core.js';
import { EntryType, RaftError, type Entry, type Message, type NodeId, type RaftConfig, type Ready } from '../src/raft/types.js';
import { Net, bytes, type Disk } from './helpers/net.js';

const ET = 10; // election tick used everywhere
const PAPER: Partial<RaftConfig> = { preVote: false, checkQuorum: false };

// ------------------------------------------------------------------ helpers

function ent(index: number, term: number, data = ''): Entry {
  return { index, term, type: EntryType.Normal, data: bytes(data) };
}

function msg(p: Partial<Message> & Pick<Message, 'type' | 'from' | 'to' | 'term'>): Message {
  return { index: 0, logTerm: 0, ...p };
}

interface Craft {
  voters?: NodeId[];
  learners?: NodeId[];
  /** Terms of the log entries 1..n. */
  terms?: number[];
  term?: number;
  vote?: NodeId | null;
  commit?: number;
  cfg?: Partial<RaftConfig>;
}

/** A persisted state with a "snapshot" at index 0 that only carries the configuration. */
function craftDisk(o: Craft): Disk {
  const terms = o.terms ?? [];
  return {
    hardState: { term: o.term ?? terms[terms.length - 1] ?? 0, vote: o.vote ?? null, commit: o.commit ?? 0 },
    snapshot: { meta: { index: 0, term: 0, conf: { voters: o.voters ?? ['a', 'b', 'c'], learners: o.learners ?? [] } }, data: new Uint8Array() },
    entries: terms.map((t, i) => ent(i + 1, t)),
  };
}

/** A standalone core started from a crafted disk; rand() always returns 0 (timeout = ET). */
function craft(id: NodeId, o: Craft = {}): RaftCore {
  return new RaftCore({ id, heartbeatTick: 1, electionTick: ET, rand: () => 0, ...PAPER, ...o.cfg, persisted: craftDisk(o) });
}

/** Processes every Ready of a standalone core (as if persisted at once); returns the messages. */
function drain(c: RaftCore, readys: Ready[] = []): Message[] {
  const out: Message[] = [];
  for (let i = 0; i < 100 && c.hasReady(); i++) {
    const rd = c.ready();
    readys.push(rd);
    out.push(...rd.earlyMessages, ...rd.messages);
    c.advance(rd);
  }
  return out;
}

function ticks(c: RaftCore, n: number): void {
  for (let i = 0; i < n; i++) c.tick();
}

/** A crafted 'a' (voters a,b,c) that became leader: election timeout, then b's vote. */
function craftLeader(o: Craft = {}): RaftCore {
  const c = craft('a', o);
  ticks(c, ET);
  drain(c);
  expect(c.status().role).toBe('candidate');
  c.step(msg({ type: 'voteResp', from: 'b', to: 'a', term: c.status().term }));
  drain(c);
  expect(c.status().role).toBe('leader');
  return c;
}

function craftCandidate(o: Craft = {}): RaftCore {
  const c = craft('a', o);
  ticks(c, ET);
  drain(c);
  expect(c.status().role).toBe('candidate');
  return c;
}

function logTerms(c: RaftCore): number[] {
  const s = c.status();
  const out: number[] = [];
  for (let i = s.snapshotIndex + 1; i <= s.lastIndex; i++) out.push(c.termAt(i)!);
  return out;
}

function net(ids: NodeId[], opts: Partial<RaftConfig> = {}): Net {
  const n = new Net(ids, { ...PAPER, ...opts });
  n.settle();
  return n;
}

/** index -> term of every entry each node handed to its state machine; returns disagreements. */
function appliedConflicts(n: Net): string[] {
  const seen = new Map<number, { term: number; id: NodeId }>();
  const out: string[] = [];
  for (const [id, ents] of n.applied) {
    for (const e of ents) {
      const s = seen.get(e.index);
      if (!s) seen.set(e.index, { term: e.term, id });
      else if (s.term !== e.term) out.push(`index ${e.index}: ${s.id} applied term ${s.term}, ${id} applied term ${e.term}`);
    }
  }
  return out;
}

const votesFrom = (n: Net, id: NodeId, since = 0): Message[] =>
  n.sent.slice(since).filter((m) => m.from === id && (m.type === 'vote' || m.type === 'preVote'));

// ------------------------------------------------------------------ Figure 2: all servers

describe('Figure 2 — rules for all servers', () => {
  it('commitIndex > lastApplied: the newly committed entries are handed out for apply and lastApplied advances', () => {
    const f = craft('b', { terms: [1, 1], term: 2 });
    drain(f);
    expect(f.status().applied).toBe(0);
    f.step(msg({ type: 'app', from: 'a', to: 'b', term: 2, index: 2, logTerm: 1, entries: [ent(3, 2, 'x')], commit: 3 }));
    const readys: Ready[] = [];
    drain(f, readys);
    const applied = readys.flatMap((r) => r.committedEntries.map((e) => e.index));
    expect(applied).toEqual([1, 2, 3]); // every committed entry, once, in order
    expect(f.status().commit).toBe(3);
    expect(f.status().applied).toBe(3);
    expect(f.hasReady()).toBe(false);

    // In a cluster: a follower learns the commit and applies the entry.
    const n = net(['a', 'b', 'c']);
    const l = n.elect('a');
    const { index } = l.propose(bytes('x'));
    n.settle();
    expect(l.status().applied).toBeGreaterThanOrEqual(index);
    n.tick(2);
    for (const id of ['a', 'b', 'c']) {
      expect(n.core(id).status().applied).toBeGreaterThanOrEqual(index);
      expect(n.data(id)).toEqual(['x']);
    }
  });

  it('an RPC request or response with a higher term: set currentTerm = T and convert to follower', () => {
    const types = ['app', 'heartbeat', 'vote', 'appResp', 'voteResp', 'heartbeatResp'] as const;
    const makers: Record<string, () => RaftCore> = {
      follower: () => {
        const c = craft('a', { terms: [1, 1], term: 2 });
        drain(c);
        return c;
      },
      candidate: () => craftCandidate({ terms: [1, 1], term: 2 }),
      leader: () => craftLeader({ terms: [1, 1], term: 2 }),
    };
    for (const [role, make] of Object.entries(makers)) {
      for (const type of types) {
        const c = make();
        expect(c.status().role).toBe(role);
        const t = c.status().term + 5;
        c.step(msg({ type, from: 'b', to: 'a', term: t, index: type === 'vote' ? 10 : 0, logTerm: type === 'vote' ? 9 : 0, commit: 0 }));
        const s = c.status();
        expect({ role, type, term: s.term, state: s.role }).toEqual({ role, type, term: t, state: 'follower' });
        if (type === 'app' || type === 'heartbeat') expect(s.leader).toBe('b');
      }
    }
  });

  it('followers respond to RPCs from candidates and leaders', () => {
    const f = craft('b', { terms: [1, 1], term: 2 });
    drain(f);
    f.step(msg({ type: 'vote', from: 'c', to: 'b', term: 3, index: 2, logTerm: 1 }));
    f.step(msg({ type: 'app', from: 'c', to: 'b', term: 3, index: 2, logTerm: 1, entries: [ent(3, 3)], commit: 0 }));
    f.step(msg({ type: 'heartbeat', from: 'c', to: 'b', term: 3, commit: 0 }));
    const out = drain(f);
    expect(out.map((m) => [m.type, m.to, m.term, !!m.reject])).toEqual([
      ['voteResp', 'c', 3, false],
      ['appResp', 'c', 3, false],
      ['heartbeatResp', 'c', 3, false],
    ]);
  });
});

// ------------------------------------------------------------------ Figure 2: followers

describe('Figure 2 — followers', () => {
  it('election timeout without AppendEntries or a granted vote → convert to candidate (timeout randomized in [ET, 2ET))', () => {
    for (const r of [0, 3, ET - 1]) {
      const f = craft('a', { terms: [1], term: 1, cfg: { rand: () => r } });
      drain(f);
      ticks(f, ET + r - 1);
      expect(f.status().role).toBe('follower');
      f.tick();
      expect(f.status().role).toBe('candidate');
    }
    // In a cluster with the seeded random, the three followers time out at different ticks.
    const n = net(['a', 'b', 'c']);
    const first = new Map<NodeId, number>();
    for (let t = 1; t <= 2 * ET && first.size < 3; t++) {
      for (const [id, c] of n.cores) {
        c.tick();
        if (!first.has(id) && c.status().role === 'candidate') first.set(id, t);
      }
    }
    expect(first.size).toBe(3);
    for (const t of first.values()) {
      expect(t).toBeGreaterThanOrEqual(ET);
      expect(t).toBeLessThan(2 * ET);
    }
  });

  it('AppendEntries from the current leader resets the election timer', () => {
    const f = craft('b', { terms: [1], term: 2 });
    drain(f);
    for (let round = 0; round < 5; round++) {
      ticks(f, ET - 1);
      f.step(msg({ type: 'heartbeat', from: 'a', to: 'b', term: 2, commit: 0 }));
      drain(f);
      expect(f.status().role).toBe('follower');
    }
    ticks(f, ET - 1);
    f.step(msg({ type: 'app', from: 'a', to: 'b', term: 2, index: 1, logTerm: 1, entries: [], commit: 0 }));
    drain(f);
    ticks(f, ET - 1);
    expect(f.status().role).toBe('follower');
    f.tick();
    expect(f.status().role).toBe('candidate');
  });

  it('granting a vote resets the election timer; rejecting one does not', () => {
    const f = craft('b', { terms: [1, 1], term: 2 });
    drain(f);
    ticks(f, ET - 1);
    f.step(msg({ type: 'vote', from: 'c', to: 'b', term: 2, index: 2, logTerm: 1 }));
    expect(drain(f).filter((m) => m.type === 'voteResp' && !m.reject)).toHaveLength(1);
    ticks(f, ET - 1);
    expect(f.status().role).toBe('follower');
    f.tick();
    expect(f.status().role).toBe('candidate');

    const g = craft('b', { terms: [1, 1], term: 2 });
    drain(g);
    ticks(g, ET - 1);
    g.step(msg({ type: 'vote', from: 'c', to: 'b', term: 2, index: 1, logTerm: 1 })); // log behind: rejected
    expect(drain(g).filter((m) => m.type === 'voteResp' && m.reject)).toHaveLength(1);
    g.tick();
    expect(g.status().role).toBe('candidate');
  });
});

// ------------------------------------------------------------------ Figure 2: candidates

describe('Figure 2 — candidates', () => {
  it('on conversion: increment currentTerm, vote for self, persist both, then send RequestVote to all other servers', () => {
    const c = craft('a', { terms: [1, 1, 2], term: 3, voters: ['a', 'b', 'c', 'd', 'e'] });
    drain(c);
    ticks(c, ET);
    expect(c.status().role).toBe('candidate');
    expect(c.status().term).toBe(4);
    expect(c.status().vote).toBe('a');
    const rd = c.ready();
    expect(rd.hardState).toMatchObject({ term: 4, vote: 'a' });
    expect(rd.mustSync).toBe(true);
    expect(rd.earlyMessages).toEqual([]); // vote requests wait for the write of term + vote
    const votes = rd.messages.filter((m) => m.type === 'vote');
    expect(votes.map((m) => m.to).sort()).toEqual(['b', 'c', 'd', 'e']);
    for (const v of votes) expect(v).toMatchObject({ term: 4, index: 3, logTerm: 2 });
    c.advance(rd);
  });

  it('on conversion: reset the election timer (the next election starts a full timeout later)', () => {
    const c = craftCandidate({ terms: [1], term: 1 });
    expect(c.status().term).toBe(2);
    ticks(c, ET - 1);
    expect(c.status().term).toBe(2);
  });

  it('votes received from a majority of servers → become leader', () => {
    const cases: { voters: NodeId[]; grant: NodeId[]; reject: NodeId[]; want: string }[] = [
      { voters: ['a'], grant: [], reject: [], want: 'leader' },
      { voters: ['a', 'b', 'c'], grant: ['b'], reject: [], want: 'leader' },
      { voters: ['a', 'b', 'c'], grant: [], reject: ['b'], want: 'candidate' },
      { voters: ['a', 'b', 'c', 'd', 'e'], grant: ['b', 'c'], reject: [], want: 'leader' },
      { voters: ['a', 'b', 'c', 'd', 'e'], grant: ['b'], reject: ['c'], want: 'candidate' },
      { voters: ['a', 'b', 'c', 'd', 'e'], grant: ['b'], reject: ['c', 'd', 'e'], want: 'follower' },
    ];
    for (const tc of cases) {
      const c = craft('a', { terms: [1], term: 1, voters: tc.voters });
      drain(c);
      ticks(c, ET);
      drain(c);
      const t = c.status().term;
      expect(t).toBe(2);
      for (const v of tc.grant) c.step(msg({ type: 'voteResp', from: v, to: 'a', term: t }));
      for (const v of tc.reject) c.step(msg({ type: 'voteResp', from: v, to: 'a', term: t, reject: true }));
      expect({ ...tc, got: c.status().role }).toEqual({ ...tc, got: tc.want });
    }
  });

  it('AppendEntries received from a new leader (same term) → convert to follower', () => {
    for (const type of ['app', 'heartbeat'] as const) {
      const c = craftCandidate({ terms: [1], term: 1 });
      const t = c.status().term;
      c.step(msg({ type, from: 'c', to: 'a', term: t, index: 1, logTerm: 1, entries: [], commit: 0 }));
      expect(c.status()).toMatchObject({ role: 'follower', term: t, leader: 'c' });
      const out = drain(c);
      expect(out.some((m) => m.to === 'c' && (m.type === 'appResp' || m.type === 'heartbeatResp') && !m.reject)).toBe(true);
    }
  });

  it('election timeout elapses (split vote) → start a new election with a higher term', () => {
    const c = craftCandidate({ terms: [1], term: 1 });
    expect(c.status().term).toBe(2);
    c.step(msg({ type: 'voteResp', from: 'b', to: 'a', term: 2, reject: true }));
    ticks(c, ET);
    expect(c.status()).toMatchObject({ role: 'candidate', term: 3, vote: 'a' });
    const votes = drain(c).filter((m) => m.type === 'vote');
    expect(votes.map((m) => [m.to, m.term])).toEqual([
      ['b', 3],
      ['c', 3],
    ]);
  });
});

// ------------------------------------------------------------------ Figure 2: leaders

describe('Figure 2 — leaders', () => {
  it('upon election: send an initial AppendEntries to each server (carrying the no-op of its term)', () => {
    const c = craft('a', { terms: [1, 1], term: 1 });
    drain(c);
    ticks(c, ET);
    drain(c);
    c.step(msg({ type: 'voteResp', from: 'b', to: 'a', term: 2 }));
    const apps = drain(c).filter((m) => m.type === 'app');
    expect(apps.map((m) => m.to).sort()).toEqual(['b', 'c']);
    for (const m of apps) {
      expect(m.term).toBe(2);
      expect(m.entries?.map((e) => [e.index, e.term, e.data.length])).toEqual([[3, 2, 0]]);
    }
  });

  it('repeat heartbeats to every server during idle periods (every heartbeatTick)', () => {
    const c = craftLeader({ terms: [1], term: 1, cfg: { heartbeatTick: 3 } });
    for (let round = 0; round < 4; round++) {
      ticks(c, 2);
      expect(drain(c).filter((m) => m.type === 'heartbeat')).toEqual([]);
      c.tick();
      const hb = drain(c).filter((m) => m.type === 'heartbeat');
      expect(hb.map((m) => [m.to, m.term]).sort()).toEqual([
        ['b', 2],
        ['c', 2],
      ]);
    }
    expect(c.status().role).toBe('leader');
  });

  it('command from client: append the entry to the local log; respond (apply) once it is committed', () => {
    const n = net(['a', 'b', 'c']);
    const l = n.elect('a');
    n.settle();
    const before = l.status().lastIndex;
    n.cut.add('a>b').add('a>c'); // nothing can commit
    const p = l.propose(bytes('cmd'));
    expect(p).toEqual({ index: before + 1, term: l.status().term });
    expect(l.status().lastIndex).toBe(before + 1);
    expect(l.termAt(before + 1)).toBe(p.term);
    n.settle();
    expect(n.data('a')).toEqual([]); // not applied (so not answered) before it commits
    n.heal();
    n.tick(1);
    expect(n.data('a')).toEqual(['cmd']);
    const e = n.applied.get('a')!.find((x) => x.index === p.index)!;
    expect(e.term).toBe(p.term);
  });

  it('§8: a server that is not the leader rejects client requests and names the leader it knows', () => {
    const n = net(['a', 'b', 'c']);
    n.elect('a');
    n.settle();
    let err: unknown = null;
    try {
      n.core('b').propose(bytes('x'));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(RaftError);
    expect(err).toMatchObject({ code: 'not_leader', leader: 'a' });
    expect(n.core('b').status().lastIndex).toBe(n.core('a').status().lastIndex);
  });

  it('a single-server cluster commits an entry only once it is on its own disk', () => {
    const n = net(['a']);
    const a = n.elect('a');
    n.settle();
    const p = a.propose(bytes('solo'));
    const rd = a.ready();
    expect(rd.entries.map((e) => e.index)).toEqual([p.index]);
    expect(rd.committedEntries.filter((e) => e.index === p.index)).toEqual([]);
    expect(a.status().commit).toBeLessThan(p.index);
    a.advance(rd);
    expect(a.status().commit).toBe(p.index);
    const rd2 = a.ready();
    expect(rd2.committedEntries.map((e) => e.index)).toEqual([p.index]);
    a.advance(rd2);
  });

  it('last log index ≥ nextIndex: send AppendEntries from nextIndex; on success update nextIndex and matchIndex', () => {
    const n = net(['a', 'b', 'c']);
    const l = n.elect('a');
    n.settle();
    n.delivered = [];
    const p = l.propose(bytes('x'));
    n.settle();
    const apps = n.delivered.filter((m) => m.type === 'app' && m.from === 'a' && (m.entries?.length ?? 0) > 0);
    expect(apps.map((m) => m.to).sort()).toEqual(['b', 'c']);
    for (const m of apps) {
      expect(m.index).toBe(p.index - 1);
      expect(m.entries!.map((e) => e.index)).toEqual([p.index]);
    }
    const pr = l.status().progress;
    for (const id of ['b', 'c']) {
      expect(pr[id]!.match).toBe(p.index);
      expect(pr[id]!.next).toBe(p.index + 1);
      expect(n.core(id).termAt(p.index)).toBe(p.term);
    }
  });

  it('AppendEntries rejected for log inconsistency: decrement nextIndex and retry until the logs match (Figure 7, followers a–f)', () => {
    const leader = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    const followers: Record<string, number[]> = {
      a: [1, 1, 1, 4, 4, 5, 5, 6, 6],
      b: [1, 1, 1, 4],
      c: [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
      d: [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
      e: [1, 1, 1, 4, 4, 4, 4],
      f: [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
    };
    for (const [name, terms] of Object.entries(followers)) {
      const n = Net.empty(PAPER);
      const voters = ['l', 'f', 'v'];
      n.disks.set('l', craftDisk({ voters, terms: leader, term: 7 }));
      n.disks.set('f', craftDisk({ voters, terms, term: Math.max(...terms) }));
      n.disks.set('v', craftDisk({ voters, terms: [], term: 0 }));
      for (const id of voters) n.start(id);
      n.settle();
      const l = n.elect('l');
      expect(l.status().term).toBe(8);
      n.settle();
      n.tick(1);
      const got = logTerms(n.core('f'));
      expect({ name, got }).toEqual({ name, got: [...leader, 8] });
      expect(n.core('f').status().commit).toBe(11);
    }
  });

  it('fast backtracking: a follower with a long divergent tail is repaired in O(terms) round trips, not O(entries)', () => {
    const n = Net.empty(PAPER);
    const voters = ['l', 'f', 'v'];
    const rep = (t: number, k: number): number[] => Array.from({ length: k }, () => t);
    const leader = [1, 1, 1, ...rep(6, 30)];
    const follower = [1, 1, 1, ...rep(2, 20), ...rep(3, 20), ...rep(5, 20)]; // 60 divergent entries in 3 terms
    n.disks.set('l', craftDisk({ voters, terms: leader, term: 7 }));
    n.disks.set('f', craftDisk({ voters, terms: follower, term: 7 }));
    n.disks.set('v', craftDisk({ voters, terms: [], term: 0 }));
    for (const id of voters) n.start(id);
    n.settle();
    n.elect('l');
    n.settle();
    n.tick(1);
    expect(logTerms(n.core('f'))).toEqual([...leader, 8]);
    const rejections = n.delivered.filter((m) => m.type === 'appResp' && m.from === 'f' && m.reject);
    expect(rejections.length).toBeGreaterThan(0);
    expect(rejections.length).toBeLessThanOrEqual(3); // ≤ number of divergent terms, far below 60
  });

  it('commit rule: N > commitIndex with a majority of matchIndex ≥ N and log[N].term == currentTerm → commitIndex = N', () => {
    const n = net(['a', 'b', 'c', 'd', 'e']);
    const l = n.elect('a');
    n.settle();
    n.tick(1);
    n.cut.add('a>c').add('a>d').add('a>e');
    const p = l.propose(bytes('x'));
    n.settle();
    expect(l.status().progress['b']!.match).toBe(p.index); // 2 of 5 hold it
    expect(l.status().commit).toBe(p.index - 1);
    n.cut.delete('a>c'); // now 3 of 5 can hold it
    n.tick(1, ['a']);
    expect(l.status().progress['c']!.match).toBe(p.index);
    expect(l.status().commit).toBe(p.index);
    expect(n.data('a')).toEqual(['x']);
  });
});

// ------------------------------------------------------------------ AppendEntries receiver

describe('Figure 2 — AppendEntries receiver', () => {
  it('rule 1: reply false if term < currentTerm (the stale request changes nothing; with CheckQuorum the reply carries the newer term)', () => {
    for (const checkQuorum of [false, true]) {
      const f = craft('b', { terms: [1, 1], term: 5, cfg: { checkQuorum } });
      drain(f);
      f.step(msg({ type: 'app', from: 'a', to: 'b', term: 4, index: 2, logTerm: 1, entries: [ent(3, 4)], commit: 3 }));
      const out = drain(f);
      expect(f.status()).toMatchObject({ term: 5, lastIndex: 2, commit: 0, leader: null });
      expect(out.filter((m) => m.type === 'appResp' && !m.reject && m.term <= 4)).toEqual([]);
      if (checkQuorum) expect(out.filter((m) => m.type === 'appResp').map((m) => m.term)).toEqual([5]);
    }
    // ... and the stale leader that receives that reply steps down.
    const l = craftLeader({ terms: [1], term: 1, cfg: { checkQuorum: true } });
    l.step(msg({ type: 'appResp', from: 'b', to: 'a', term: l.status().term + 3 }));
    expect(l.status().role).toBe('follower');
  });

  it('rule 2: reply false if the log has no entry at prevLogIndex whose term matches prevLogTerm', () => {
    const mk = (): RaftCore => {
      const f = craft('b', { terms: [1, 2, 2], term: 3 });
      drain(f);
      return f;
    };
    for (const [prevIndex, prevTerm, ok] of [
      [3, 3, false], // term mismatch
      [4, 2, false], // missing entry
      [2, 1, false],
      [3, 2, true],
      [1, 1, true],
      [0, 0, true],
    ] as const) {
      const f = mk();
      f.step(msg({ type: 'app', from: 'a', to: 'b', term: 3, index: prevIndex, logTerm: prevTerm, entries: [], commit: 0 }));
      const [r, ...rest] = drain(f).filter((m) => m.type === 'appResp');
      expect(rest).toEqual([]);
      expect({ prevIndex, prevTerm, reject: !!r!.reject }).toEqual({ prevIndex, prevTerm, reject: !ok });
      if (!ok) {
        expect(r!.index).toBe(prevIndex);
        // the hint points at an entry that exists here and whose term is ≤ prevLogTerm
        expect(r!.rejectHint!).toBeLessThanOrEqual(3);
        expect(r!.logTerm).toBe(f.termAt(r!.rejectHint!));
        expect(r!.logTerm).toBeLessThanOrEqual(prevTerm);
      }
      expect(logTerms(f)).toEqual([1, 2, 2]);
    }
  });

  it('rule 3: an existing entry conflicting with a new one (same index, different term): delete it and all that follow', () => {
    const f = craft('b', { terms: [1, 1, 2, 2, 2], term: 3, commit: 2 });
    drain(f);
    f.step(msg({ type: 'app', from: 'a', to: 'b', term: 3, index: 2, logTerm: 1, entries: [ent(3, 3)], commit: 2 }));
    const out = drain(f);
    expect(logTerms(f)).toEqual([1, 1, 3]);
    const r = out.find((m) => m.type === 'appResp')!;
    expect([!!r.reject, r.index]).toEqual([false, 3]);
  });

  it('rule 4: append any new entries not already in the log (a stale, matching append never truncates)', () => {
    const f = craft('b', { terms: [1, 1, 2, 2], term: 2 });
    drain(f);
    f.step(msg({ type: 'app', from: 'a', to: 'b', term: 2, index: 2, logTerm: 1, entries: [ent(3, 2)], commit: 0 }));
    expect(drain(f).find((m) => m.type === 'appResp')).toMatchObject({ index: 3 });
    expect(logTerms(f)).toEqual([1, 1, 2, 2]);
    f.step(msg({ type: 'app', from: 'a', to: 'b', term: 2, index: 3, logTerm: 2, entries: [ent(4, 2), ent(5, 2), ent(6, 2)], commit: 0 }));
    expect(drain(f).find((m) => m.type === 'appResp')).toMatchObject({ index: 6 });
    expect(logTerms(f)).toEqual([1, 1, 2, 2, 2, 2]);
  });

  it('rule 5: leaderCommit > commitIndex → commitIndex = min(leaderCommit, index of last new entry)', () => {
    const f = craft('b', { terms: [1, 1, 1], term: 1 });
    drain(f);
    f.step(msg({ type: 'app', from: 'a', to: 'b', term: 1, index: 1, logTerm: 1, entries: [ent(2, 1)], commit: 3 }));
    drain(f);
    expect(f.status().commit).toBe(2); // entry 3 was not covered by this append
    f.step(msg({ type: 'app', from: 'a', to: 'b', term: 1, index: 3, logTerm: 1, entries: [], commit: 3 }));
    drain(f);
    expect(f.status().commit).toBe(3);
    f.step(msg({ type: 'app', from: 'a', to: 'b', term: 1, index: 3, logTerm: 1, entries: [ent(4, 1)], commit: 10 }));
    drain(f);
    expect(f.status().commit).toBe(4);
    f.step(msg({ type: 'app', from: 'a', to: 'b', term: 1, index: 4, logTerm: 1, entries: [], commit: 2 }));
    drain(f);
    expect(f.status().commit).toBe(4); // never decreases
  });
});

// ------------------------------------------------------------------ RequestVote receiver

describe('Figure 2 — RequestVote receiver', () => {
  it('rule 1: reply false if term < currentTerm', () => {
    const v = craft('b', { terms: [1], term: 5 });
    drain(v);
    v.step(msg({ type: 'vote', from: 'c', to: 'b', term: 4, index: 9, logTerm: 4 }));
    const out = drain(v);
    expect(out.filter((m) => m.type === 'voteResp' && !m.reject)).toEqual([]);
    expect(v.status()).toMatchObject({ term: 5, vote: null });
  });

  it('rule 2: grant iff votedFor is null or candidateId, and the candidate log is at least as up-to-date (§5.4.1 comparison)', () => {
    // voter log terms, candidate (lastTerm, lastIndex), granted?
    const cases: [number[], number, number, boolean][] = [
      [[1], 1, 1, true],
      [[1], 1, 2, true],
      [[1, 1], 1, 1, false], // same last term, shorter log
      [[1, 1], 1, 2, true],
      [[1, 1], 2, 1, true], // higher last term wins even with a shorter log
      [[1, 2], 1, 3, false], // lower last term loses even with a longer log
      [[1, 2], 2, 1, false],
      [[1, 2], 2, 2, true],
      [[1, 2], 3, 1, true],
      [[], 0, 0, true],
    ];
    for (const [terms, lastTerm, lastIndex, want] of cases) {
      const v = craft('b', { terms, term: 3 });
      drain(v);
      v.step(msg({ type: 'vote', from: 'c', to: 'b', term: 4, index: lastIndex, logTerm: lastTerm }));
      const resp = drain(v).filter((m) => m.type === 'voteResp');
      expect(resp).toHaveLength(1);
      expect({ terms, lastTerm, lastIndex, granted: !resp[0]!.reject }).toEqual({ terms, lastTerm, lastIndex, granted: want });
      expect(v.status().vote).toBe(want ? 'c' : null);
    }
    // votedFor: one vote per term; the same candidate may ask again.
    const v = craft('b', { terms: [1], term: 1 });
    drain(v);
    v.step(msg({ type: 'vote', from: 'c', to: 'b', term: 2, index: 1, logTerm: 1 }));
    const rd = v.ready();
    expect(rd.hardState).toMatchObject({ term: 2, vote: 'c' }); // persisted ...
    expect(rd.earlyMessages).toEqual([]); // ... before the grant goes out
    expect(rd.messages.map((m) => [m.type, m.to, !!m.reject])).toEqual([['voteResp', 'c', false]]);
    v.advance(rd);
    v.step(msg({ type: 'vote', from: 'a', to: 'b', term: 2, index: 5, logTerm: 1 }));
    v.step(msg({ type: 'vote', from: 'c', to: 'b', term: 2, index: 1, logTerm: 1 }));
    expect(drain(v).map((m) => [m.type, m.to, !!m.reject])).toEqual([
      ['voteResp', 'a', true],
      ['voteResp', 'c', false],
    ]);
  });
});

// ------------------------------------------------------------------ §5.4 safety

describe('§5.4 safety', () => {
  it('§5.4.1 election restriction: a candidate whose log lacks a committed entry cannot win; one that has it can', () => {
    const n = net(['a', 'b', 'c']);
    const l = n.elect('a');
    n.settle();
    n.cut.add('a>c');
    const p = l.propose(bytes('x'));
    n.settle();
    expect(l.status().commit).toBe(p.index); // committed on a and b only
    n.crash('a');
    n.heal();
    for (let i = 0; i < 6 * ET; i++) n.tick(1, ['c']);
    expect(n.core('c').status().role).not.toBe('leader');
    expect(n.core('c').status().term).toBeGreaterThan(p.term + 1); // it did campaign, repeatedly
    const b = n.elect('b');
    n.settle();
    n.tick(2, ['b']);
    expect(b.termAt(p.index)).toBe(p.term);
    expect(n.core('c').termAt(p.index)).toBe(p.term);
    expect(n.data('c')).toEqual(['x']);
  });

  /**
   * Figure 8. (a) a (term 2) replicates x at index 7 to b only; (b) a crashes, e wins term 3 with
   * c and d and appends its no-op at 7, kept to itself; (c) e crashes, a wins term 4 and brings
   * 7@2 to c and d (its term-4 no-op at 8 is held back): a majority now stores 7@2.
   * Returns a's commit at that point. With `bug: 'figure8'`, (d) continues: a crashes, e wins
   * term 5 and overwrites index 7.
   */
  function figure8(bug: RaftConfig['bug']): { n: Net; commitAtC: number } {
    const n = net(['a', 'b', 'c', 'd', 'e'], { maxSizePerMsg: 1, bug });
    const a = n.elect('a');
    n.settle();
    n.tick(1);
    expect(a.status()).toMatchObject({ term: 2, lastIndex: 6, commit: 6 });
    // (a)
    n.cut.add('a>c').add('a>d').add('a>e');
    expect(a.propose(bytes('x'))).toEqual({ index: 7, term: 2 });
    n.settle();
    expect(n.core('b').termAt(7)).toBe(2);
    expect(a.status().commit).toBe(6);
    // (b)
    n.crash('a');
    n.heal();
    n.intercept = (m) => (m.from === 'e' && (m.type === 'app' || m.type === 'heartbeat') ? null : m);
    const e = n.elect('e');
    expect(e.status().term).toBe(3);
    expect(e.termAt(7)).toBe(3);
    n.crash('e');
    // (c)
    // a's term-4 no-op (index 8) is held back, and (as if a crashed right after committing) no
    // follower hears a commit index beyond 6 from it.
    n.intercept = (m) =>
      m.from === 'a' && (m.type === 'app' || m.type === 'heartbeat')
        ? { ...m, entries: m.entries?.filter((x) => x.index < 8), commit: Math.min(m.commit ?? 0, 6) }
        : m;
    n.applied.set('a', []);
    n.start('a');
    const a2 = n.elect('a');
    n.settle();
    expect(a2.status().term).toBe(4);
    for (const id of ['b', 'c', 'd']) expect(n.core(id).termAt(7)).toBe(2); // 7@2 is on a majority (a, b, c, d)
    for (const id of ['b', 'c', 'd']) expect(n.core(id).status().lastIndex).toBe(7);
    return { n, commitAtC: a2.status().commit };
  }

  it('§5.4.2 (Figure 8): a leader does not commit a previous-term entry by counting replicas; it commits it with a current-term entry', () => {
    const { n, commitAtC } = figure8('none');
    expect(commitAtC).toBe(6);
    // Once the term-4 no-op reaches a majority, index 7 is committed indirectly.
    n.intercept = null;
    n.tick(1, ['a']);
    const a = n.core('a');
    expect(a.status().commit).toBe(8);
    n.tick(2, ['a']);
    for (const id of ['a', 'b', 'c', 'd']) {
      expect(n.core(id).status().commit).toBe(8);
      expect(n.core(id).termAt(7)).toBe(2);
    }
    expect(n.data('a')).toEqual(['x']);
    expect(appliedConflicts(n)).toEqual([]);
  });

  it("§5.4.2 (Figure 8) with bug: 'figure8' the leader commits by counting replicas and a later leader overwrites the entry (the check can fail)", () => {
    const { n, commitAtC } = figure8('figure8');
    expect(commitAtC).toBe(7); // the rule above is violated ...
    expect(n.data('a')).toEqual(['x']); // ... and x reaches a's state machine
    // (d) a crashes; e (7@3) is more up-to-date than b, c, d (7@2), wins term 5 and overwrites 7.
    n.intercept = null;
    n.crash('a');
    n.start('e');
    const e = n.elect('e');
    n.settle();
    n.tick(2, ['e']);
    expect(e.status().term).toBe(5);
    expect(n.core('b').termAt(7)).toBe(3);
    expect(appliedConflicts(n)).not.toEqual([]); // State Machine Safety broken
  });
});

// ------------------------------------------------------------------ §6 membership

describe('§6 cluster membership changes', () => {
  function withLearner(commitByHeartbeatOnly = false): Net {
    const n = net(['a', 'b', 'c']);
    // optionally b and c only ever learn a commit index from heartbeats (commit-only appends are lost)
    if (commitByHeartbeatOnly) n.intercept = (m) => (m.type === 'app' && m.to !== 'd' && (m.entries?.length ?? 0) === 0 ? null : m);
    const l = n.elect('a');
    n.settle();
    l.propose(bytes('x'));
    n.settle();
    l.proposeConfChange({ type: 'addLearner', node: 'd' });
    n.start('d'); // an empty node: it learns everything by replication
    n.settle();
    n.tick(2);
    return n;
  }

  it('a committed configuration change takes effect on every member (also when the commit index arrives by heartbeat)', () => {
    for (const hbOnly of [false, true]) {
      const n = withLearner(hbOnly);
      const want = { voters: ['a', 'b', 'c'], learners: ['d'] };
      for (const id of ['a', 'b', 'c', 'd']) expect({ hbOnly, id, conf: n.core(id).conf() }).toEqual({ hbOnly, id, conf: want });
      expect(n.core('b').status().commit).toBe(n.core('a').status().commit);
    }
  });

  it('add learner: the learner receives the log but neither votes nor campaigns nor counts toward commit', () => {
    const n = withLearner();
    const a = n.core('a');
    expect(n.data('d')).toEqual(['x']);
    expect(n.core('d').status().lastIndex).toBe(a.status().lastIndex);
    expect(a.status().progress['d']).toMatchObject({ learner: true });
    // never campaigns, even with no leader for a long time
    n.isolate('d');
    const since = n.sent.length;
    n.tick(10 * ET, ['d']);
    expect(votesFrom(n, 'd', since)).toEqual([]);
    expect(n.core('d').status().role).toBe('follower');
    n.heal();
    // does not count toward the commit quorum
    n.cutBoth('a', 'b');
    n.cutBoth('a', 'c');
    const p = a.propose(bytes('y'));
    n.settle();
    n.tick(1, ['a']);
    expect(a.status().progress['d']!.match).toBe(p.index);
    expect(a.status().commit).toBeLessThan(p.index);
    // is not asked for a vote
    n.heal();
    n.crash('a');
    const since2 = n.sent.length;
    n.elect('b');
    const asked = n.sent.slice(since2).filter((m) => m.type === 'vote').map((m) => m.to);
    expect(asked).not.toContain('d');
    expect(asked).toContain('c');
  });

  it('promote a learner to voter: it counts toward the quorum and may campaign', () => {
    const n = withLearner();
    const a = n.core('a');
    a.proposeConfChange({ type: 'addVoter', node: 'd' });
    n.settle();
    n.tick(2);
    expect(a.conf()).toEqual({ voters: ['a', 'b', 'c', 'd'], learners: [] });
    // 4 voters: quorum 3. With c cut off, a + b + d commit; with b cut off too, a + d cannot.
    n.cutBoth('a', 'c');
    const p = a.propose(bytes('y'));
    n.settle();
    expect(a.status().commit).toBe(p.index);
    n.cutBoth('a', 'b');
    const q = a.propose(bytes('z'));
    n.settle();
    n.tick(1, ['a']);
    expect(a.status().commit).toBeLessThan(q.index);
    // d may now campaign and win
    n.heal();
    n.crash('a');
    n.tick(2, ['d']);
    expect(n.core('d').conf().voters).toContain('d');
    const d = n.elect('d');
    expect(d.status().role).toBe('leader');
  });

  it('remove node: the removed node never campaigns', () => {
    const n = net(['a', 'b', 'c']);
    const a = n.elect('a');
    n.settle();
    const r = a.proposeConfChange({ type: 'removeNode', node: 'c' });
    n.settle();
    n.tick(3);
    expect(a.status().commit).toBeGreaterThanOrEqual(r.index);
    expect(a.conf()).toEqual({ voters: ['a', 'b'], learners: [] });
    const since = n.sent.length;
    const term = a.status().term;
    n.tick(20 * ET);
    expect(votesFrom(n, 'c', since)).toEqual([]);
    expect(a.status()).toMatchObject({ role: 'leader', term });
    expect(n.core('c').conf()).toEqual({ voters: ['a', 'b'], learners: [] }); // it knows it was removed
  });

  it('remove a lagging node (far behind, one entry per message): it still learns its removal and never campaigns', () => {
    const n = net(['a', 'b', 'c'], { maxSizePerMsg: 1 });
    const a = n.elect('a');
    n.settle();
    n.tick(1);
    n.intercept = (m) => (m.type === 'app' && m.to === 'c' && (m.entries?.length ?? 0) > 0 ? null : m);
    for (let i = 0; i < 8; i++) a.propose(bytes(`v${i}`));
    n.settle();
    n.intercept = null;
    const r = a.proposeConfChange({ type: 'removeNode', node: 'c' });
    n.settle();
    n.tick(3);
    expect(a.status().commit).toBeGreaterThanOrEqual(r.index);
    const since = n.sent.length;
    n.tick(20 * ET);
    expect(votesFrom(n, 'c', since)).toEqual([]);
    expect(n.core('c').conf().voters).not.toContain('c');
  });

  // Plain Raft cannot stop a removed server that never heard of its removal from bumping terms
  // (dissertation §4.2.3); the cure is the leader lease on votes, which flotilla enables with
  // PreVote and CheckQuorum (its defaults). A configuration check on votes is not a cure: a voter
  // must grant votes to candidates outside its own, possibly stale, configuration (§4.1).
  it('a removed node that missed its removal cannot disrupt the cluster (PreVote + CheckQuorum, the defaults)', () => {
    const n = net(['a', 'b', 'c'], { preVote: true, checkQuorum: true });
    const a = n.elect('a');
    n.settle();
    n.isolate('c');
    const r = a.proposeConfChange({ type: 'removeNode', node: 'c' });
    n.settle();
    n.tick(2, ['a', 'b']);
    expect(a.status().commit).toBeGreaterThanOrEqual(r.index);
    n.tick(10 * ET, ['c']); // c pre-campaigns alone: its term does not climb
    const term = a.status().term;
    n.heal();
    n.tick(20 * ET);
    expect(a.status()).toMatchObject({ role: 'leader', term });
    expect(n.core('b').status()).toMatchObject({ term, leader: 'a' });
    expect(n.core('b').conf()).toEqual({ voters: ['a', 'b'], learners: [] });
  });

  it('remove the leader: it steps down and never campaigns again; the rest elect a leader', () => {
    const n = net(['a', 'b', 'c']);
    const a = n.elect('a');
    n.settle();
    const r = a.proposeConfChange({ type: 'removeNode', node: 'a' });
    n.settle();
    expect(n.core('b').status().lastIndex).toBeGreaterThanOrEqual(r.index);
    expect(a.status().role).toBe('follower');
    const since = n.sent.length;
    n.tick(20 * ET);
    expect(votesFrom(n, 'a', since)).toEqual([]);
    const l = n.leader()!;
    expect(['b', 'c']).toContain(l.id);
    expect(l.conf()).toEqual({ voters: ['b', 'c'], learners: [] });
  });

  it('invalid configuration changes are refused', () => {
    const n = net(['a', 'b']);
    const a = n.elect('a');
    n.settle();
    const code = (f: () => unknown): string | null => {
      try {
        f();
        return null;
      } catch (e) {
        return (e as RaftError).code;
      }
    };
    expect(code(() => a.proposeConfChange({ type: 'addVoter', node: 'b' }))).toBe('invalid');
    expect(code(() => a.proposeConfChange({ type: 'addLearner', node: 'b' }))).toBe('invalid');
    expect(code(() => a.proposeConfChange({ type: 'removeNode', node: 'zz' }))).toBe('invalid');
    a.proposeConfChange({ type: 'removeNode', node: 'b' });
    n.settle();
    expect(a.conf().voters).toEqual(['a']);
    expect(code(() => a.proposeConfChange({ type: 'removeNode', node: 'a' }))).toBe('invalid'); // the last voter
    expect(code(() => n.core('b').proposeConfChange({ type: 'addLearner', node: 'q' }))).toBe('not_leader');
  });

  it('only one configuration change may be pending (uncommitted) at a time', () => {
    const n = net(['a', 'b', 'c']);
    const a = n.elect('a');
    n.settle();
    n.dropTypes.add('appResp');
    a.proposeConfChange({ type: 'addLearner', node: 'd' });
    n.settle();
    expect(() => a.proposeConfChange({ type: 'addLearner', node: 'e' })).toThrow(
      expect.objectContaining({ code: 'conf_change_pending' }) as unknown as Error,
    );
    n.dropTypes.clear();
    n.tick(1);
    expect(a.conf().learners).toEqual(['d']);
    a.proposeConfChange({ type: 'addLearner', node: 'e' });
    n.settle();
    n.tick(1);
    expect(a.conf().learners).toEqual(['d', 'e']);
  });

  it('a new leader cannot propose a configuration change before the no-op of its term commits', () => {
    const n = net(['a', 'b', 'c']);
    n.dropTypes.add('appResp');
    const a = n.elect('a');
    n.settle();
    n.tick(2, ['a']);
    const err = (() => {
      try {
        a.proposeConfChange({ type: 'addLearner', node: 'd' });
      } catch (e) {
        return e;
      }
      return null;
    })();
    expect(err).toBeInstanceOf(RaftError);
    expect((err as RaftError).code).toBe('conf_change_pending');
    a.propose(bytes('normal proposals are fine'));
    n.dropTypes.clear();
    n.tick(1, ['a']);
    expect(a.termAt(a.status().commit)).toBe(a.status().term);
    expect(() => a.proposeConfChange({ type: 'addLearner', node: 'd' })).not.toThrow();
  });
});

// ------------------------------------------------------------------ §7 log compaction

describe('§7 log compaction', () => {
  /** Compacts `id` at its applied index and persists the snapshot as a driver would. */
  function compact(n: Net, id: NodeId): number {
    const c = n.core(id);
    const idx = c.status().applied;
    const snap = c.compact(idx, bytes(`state@${idx}`));
    const disk = n.disks.get(id)!;
    disk.snapshot = snap;
    disk.entries = disk.entries.filter((e) => e.index > idx);
    return idx;
  }

  it('compact + a lagging follower receives a snap message and catches up', () => {
    const n = net(['a', 'b', 'c']);
    const a = n.elect('a');
    n.settle();
    n.isolate('c');
    for (let i = 0; i < 10; i++) a.propose(bytes(`v${i}`));
    n.settle();
    n.tick(1, ['a', 'b']);
    const idx = compact(n, 'a');
    expect(a.status().snapshotIndex).toBe(idx);
    expect(a.termAt(idx - 1)).toBeUndefined();
    n.heal();
    n.tick(2, ['a', 'b']);
    const snaps = n.delivered.filter((m) => m.type === 'snap' && m.to === 'c');
    expect(snaps).toHaveLength(1);
    expect(snaps[0]!.snapshot!.meta.index).toBe(idx);
    const c = n.core('c');
    expect(c.status().snapshotIndex).toBe(idx);
    expect(n.snapshotOf('c')!.meta.index).toBe(idx);
    expect(new TextDecoder().decode(n.snapshotOf('c')!.data)).toBe(`state@${idx}`);
    const p = a.propose(bytes('after'));
    n.settle();
    n.tick(1, ['a', 'b']);
    expect(c.termAt(p.index)).toBe(p.term);
    expect(c.status().commit).toBe(p.index);
    expect(n.data('c')).toEqual(['after']);
  });

  it("after restoring a snapshot the follower's configuration comes from the snapshot (also after a restart)", () => {
    const n = net(['a', 'b', 'c']);
    const a = n.elect('a');
    n.settle();
    n.isolate('c');
    a.proposeConfChange({ type: 'addLearner', node: 'd' }); // d never started: c can only learn it from the snapshot
    n.settle();
    a.propose(bytes('y'));
    n.settle();
    n.tick(1, ['a', 'b']);
    const idx = compact(n, 'a');
    const want = { voters: ['a', 'b', 'c'], learners: ['d'] };
    expect(a.conf()).toEqual(want);
    expect(n.core('c').conf()).toEqual({ voters: ['a', 'b', 'c'], learners: [] });
    n.heal();
    n.tick(2, ['a', 'b']);
    expect(n.core('c').status().snapshotIndex).toBe(idx);
    expect(n.snapshotOf('c')!.meta.conf).toEqual(want);
    expect(n.core('c').conf()).toEqual(want);
    n.crash('c');
    const c2 = n.start('c');
    expect(c2.conf()).toEqual(want);
    expect(c2.status().snapshotIndex).toBe(idx);
  });

  it('InstallSnapshot receiver: a snapshot at or below the commit index is ignored', () => {
    const f = craft('b', { terms: [1, 1, 1, 2, 2], term: 2, commit: 4 });
    drain(f);
    const conf = { voters: ['a', 'b', 'c', 'x'], learners: [] };
    f.step(msg({ type: 'snap', from: 'a', to: 'b', term: 2, snapshot: { meta: { index: 3, term: 1, conf }, data: bytes('s') } }));
    const out = drain(f);
    expect(f.status()).toMatchObject({ snapshotIndex: 0, lastIndex: 5, commit: 4 });
    expect(f.conf().voters).toEqual(['a', 'b', 'c']);
    expect(out.filter((m) => m.type === 'appResp').map((m) => [m.index, !!m.reject])).toEqual([[4, false]]);
  });

  it('InstallSnapshot receiver: if an entry matches the snapshot’s last index and term, keep the entries after it', () => {
    const f = craft('b', { terms: [1, 1, 1, 2, 2, 2], term: 2, commit: 2 });
    drain(f);
    const conf = { voters: ['a', 'b', 'c'], learners: [] };
    f.step(msg({ type: 'snap', from: 'a', to: 'b', term: 2, snapshot: { meta: { index: 5, term: 2, conf }, data: bytes('s') } }));
    drain(f);
    expect(f.status()).toMatchObject({ lastIndex: 6, commit: 5 });
    expect(logTerms(f).slice(-2)).toEqual([2, 2]);
  });

  it('InstallSnapshot receiver: otherwise discard the whole log and reset the state (and configuration) from the snapshot', () => {
    const f = craft('b', { terms: [1, 1, 1, 2, 2, 2], term: 3, commit: 2 });
    drain(f);
    const conf = { voters: ['a', 'b', 'c'], learners: ['z'] };
    f.step(msg({ type: 'snap', from: 'a', to: 'b', term: 3, snapshot: { meta: { index: 4, term: 3, conf }, data: bytes('s') } }));
    const readys: Ready[] = [];
    const out = drain(f, readys);
    expect(f.status()).toMatchObject({ snapshotIndex: 4, lastIndex: 4, commit: 4, applied: 4 });
    expect(f.termAt(5)).toBeUndefined();
    expect(f.conf()).toEqual(conf);
    expect(readys.filter((r) => r.snapshot).map((r) => r.snapshot!.meta.index)).toEqual([4]);
    expect(readys.flatMap((r) => r.committedEntries).filter((e) => e.index > 2)).toEqual([]); // nothing from the discarded log
    expect(out.filter((m) => m.type === 'appResp').map((m) => [m.index, !!m.reject])).toEqual([[4, false]]);
  });

  it('a lost snapshot is sent again once the driver reports the failure (snapStatus)', () => {
    const n = net(['a', 'b', 'c']);
    const a = n.elect('a');
    n.settle();
    n.isolate('c');
    for (let i = 0; i < 3; i++) a.propose(bytes(`v${i}`));
    n.settle();
    n.tick(1, ['a', 'b']);
    const idx = compact(n, 'a');
    n.heal();
    n.dropTypes.add('snap');
    n.tick(3, ['a', 'b']);
    expect(a.status().progress['c']!.state).toBe('snapshot');
    expect(n.core('c').status().snapshotIndex).toBe(0);
    n.dropTypes.clear();
    a.step(msg({ type: 'snapStatus', from: 'c', to: 'a', term: 0, failed: true }));
    n.tick(3, ['a', 'b']);
    expect(n.core('c').status().snapshotIndex).toBe(idx);
    expect(a.status().progress['c']!.match).toBe(a.status().lastIndex);
  });

  it('a learner added after compaction is initialized from the snapshot, then the log (and learns its own membership)', () => {
    const n = net(['a', 'b', 'c']);
    const a = n.elect('a');
    n.settle();
    a.propose(bytes('x'));
    n.settle();
    n.tick(1);
    const idx = compact(n, 'a');
    a.proposeConfChange({ type: 'addLearner', node: 'd' });
    n.start('d');
    n.settle();
    a.propose(bytes('y'));
    n.settle();
    n.tick(2);
    const d = n.core('d');
    expect(n.delivered.filter((m) => m.type === 'snap' && m.to === 'd')).toHaveLength(1);
    expect(d.status()).toMatchObject({ snapshotIndex: idx, lastIndex: a.status().lastIndex, commit: a.status().commit });
    expect(d.conf()).toEqual({ voters: ['a', 'b', 'c'], learners: ['d'] });
    expect(n.data('d')).toEqual(['y']); // x is inside the snapshot
  });

  it('the snapshot records the configuration as of its index, not a later one', () => {
    const n = net(['a', 'b', 'c']);
    const a = n.elect('a');
    n.settle();
    a.propose(bytes('x'));
    n.settle();
    n.tick(1);
    const idx = a.status().applied;
    a.proposeConfChange({ type: 'addLearner', node: 'd' });
    n.settle();
    n.tick(1);
    expect(a.conf().learners).toEqual(['d']);
    const snap = a.compact(idx, bytes('s'));
    expect(snap.meta).toMatchObject({ index: idx, term: a.termAt(idx) ?? snap.meta.term, conf: { voters: ['a', 'b', 'c'], learners: [] } });
  });
});
