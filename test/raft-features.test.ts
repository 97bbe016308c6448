// Unit tests of the Raft core's extensions beyond the paper's Figure 2: PreVote, CheckQuorum,
// ReadIndex, leadership transfer, flow control, durability ordering and restart.
import { describe, expect, it } from 'vitest';
import { RaftCore } from '../src/raft/core.js';
import { RaftError, type Entry, type Message, type NodeId, type RaftConfig, type Ready } from '../src/raft/types.js';
import { Net, bytes, type Disk } from './helpers/net.js';

const ET = 10;

function net(ids: NodeId[], opts: Partial<RaftConfig> = {}): Net {
  const n = new Net(ids, opts);
  n.settle();
  return n;
}

/** A 3-node cluster (defaults: PreVote + CheckQuorum) with `a` elected and everything settled. */
function cluster(opts: Partial<RaftConfig> = {}): { n: Net; a: RaftCore } {
  const n = net(['a', 'b', 'c'], opts);
  const a = n.elect('a');
  n.settle();
  n.tick(1);
  return { n, a };
}

function msg(p: Partial<Message> & Pick<Message, 'type' | 'from' | 'to' | 'term'>): Message {
  return { index: 0, logTerm: 0, ...p };
}

function errorOf(f: () => unknown): unknown {
  try {
    f();
  } catch (e) {
    return e;
  }
  return null;
}

const votesFrom = (n: Net, id: NodeId, since = 0): Message[] =>
  n.sent.slice(since).filter((m) => m.from === id && (m.type === 'vote' || m.type === 'preVote'));

// ------------------------------------------------------------------ PreVote

describe('PreVote', () => {
  it('a partitioned node does not bump its term (and without PreVote it does)', () => {
    for (const preVote of [true, false]) {
      const { n, a } = cluster({ preVote });
      const term = a.status().term;
      n.isolate('c');
      const since = n.sent.length;
      n.tick(10 * ET);
      expect(votesFrom(n, 'c', since).length).toBeGreaterThan(0); // it did try
      if (preVote) {
        expect(n.core('c').status().term).toBe(term);
        expect(votesFrom(n, 'c', since).every((m) => m.type === 'preVote')).toBe(true);
      } else {
        expect(n.core('c').status().term).toBeGreaterThan(term);
      }
    }
  });

  it('a rejoining partitioned node does not disrupt the leader', () => {
    const { n, a } = cluster();
    const term = a.status().term;
    n.isolate('c');
    n.tick(10 * ET);
    n.heal();
    n.tick(5 * ET);
    expect(a.status()).toMatchObject({ role: 'leader', term });
    expect(n.core('c').status()).toMatchObject({ role: 'follower', term, leader: 'a' });
    expect(n.core('b').status()).toMatchObject({ term, leader: 'a' });
    const p = a.propose(bytes('after'));
    n.settle();
    n.tick(1);
    expect(n.core('c').termAt(p.index)).toBe(p.term);
  });

  it('PreVote without CheckQuorum: a rejoining node whose log is behind does not disrupt the leader', () => {
    const { n, a } = cluster({ checkQuorum: false });
    const term = a.status().term;
    n.isolate('c');
    a.propose(bytes('progress'));
    n.settle();
    n.tick(3 * ET);
    n.heal();
    const since = n.sent.length;
    n.tickUntil(() => votesFrom(n, 'c', since).length > 0, ['c'], 3 * ET); // c pre-campaigns before hearing a
    n.tick(3 * ET);
    expect(a.status()).toMatchObject({ role: 'leader', term });
    expect(votesFrom(n, 'c', since).every((m) => m.type === 'preVote')).toBe(true);
  });

  it('PreVote without CheckQuorum: a node that hears from a leader denies pre-votes, so an up-to-date rejoining node does not disrupt (dissertation §9.6)', () => {
    const { n, a } = cluster({ checkQuorum: false });
    const term = a.status().term;
    n.isolate('c');
    n.tick(3 * ET);
    n.heal();
    const since = n.sent.length;
    n.tickUntil(() => votesFrom(n, 'c', since).length > 0, ['c'], 3 * ET); // c pre-campaigns before hearing a
    n.tick(3 * ET);
    expect(votesFrom(n, 'c', since).filter((m) => m.type === 'vote')).toEqual([]);
    expect(a.status()).toMatchObject({ role: 'leader', term });
  });

  it('a pre-vote never changes the term or the vote of the node asked', () => {
    const { n, a } = cluster();
    n.isolate('c'); // c's own view must not matter: we hand-deliver
    n.tick(2 * ET, ['b']); // b's lease on a expires ... and b itself pre-campaigns
    const b = n.core('b');
    const before = b.status();
    b.step(msg({ type: 'preVote', from: 'c', to: 'b', term: before.term + 1, index: 100, logTerm: before.term }));
    expect(b.status().term).toBe(before.term);
    expect(b.status().vote).toBe(before.vote);
    expect(a.status().role).toBe('leader');
  });

  it('PreVote + CheckQuorum: a pre-candidate forgets the leader, so another node can win (etcd #10355)', () => {
    const { n, a } = cluster();
    n.isolate('a'); // the leader is gone; b and c still believe in it
    n.tickUntil(() => n.core('c').status().role === 'preCandidate', ['c'], 3 * ET);
    // c's pre-vote was ignored by b (b is within its lease of a). Now only b's clock runs:
    // b must be able to win with c's (pre-)vote.
    n.tickUntil(() => n.core('b').status().role === 'leader', ['b'], 3 * ET);
    expect(n.core('c').status()).toMatchObject({ role: 'follower', leader: 'b' });
    expect(n.core('b').status().term).toBe(a.status().term + 1);
  });

  it('PreVote + CheckQuorum: a node with a smaller term can complete an election (etcd #9586)', () => {
    const { n, a } = cluster();
    n.isolate('c');
    n.tick(3 * ET, ['a', 'b', 'c']); // c pre-campaigns in vain, its term stays
    a.transferLeader('b'); // b leads a newer term that c never heard of
    n.settle();
    const b = n.core('b');
    expect(b.status().role).toBe('leader');
    const t = b.status().term;
    expect(n.core('c').status().term).toBe(t - 1);
    n.heal();
    n.crash('b'); // the leader dies right away
    n.tickUntil(() => [a, n.core('c')].some((x) => x.status().role === 'leader'), ['a', 'c'], 20 * ET);
    const l = [a, n.core('c')].find((x) => x.status().role === 'leader')!;
    expect(l.status().term).toBeGreaterThan(t);
  });
});

// ------------------------------------------------------------------ CheckQuorum

describe('CheckQuorum', () => {
  it('an isolated leader steps down within an election timeout of losing its quorum (and without CheckQuorum it does not)', () => {
    for (const checkQuorum of [true, false]) {
      const { n, a } = cluster({ checkQuorum });
      n.tick(3);
      n.isolate('a');
      if (checkQuorum) {
        // the first check after the cut may still see the old acks: at most two timeouts
        const used = n.tickUntil(() => a.status().role !== 'leader', ['a'], 2 * ET);
        expect(used).toBeGreaterThan(0);
        expect(a.status()).toMatchObject({ role: 'follower', leader: null });
        expect(() => a.propose(bytes('x'))).toThrow(RaftError);
      } else {
        n.tick(10 * ET, ['a']);
        expect(a.status().role).toBe('leader');
      }
    }
  });

  it('only voters count: a leader that hears only from a learner steps down', () => {
    const n = net(['a', 'b', 'c']);
    const a = n.elect('a');
    n.settle();
    a.proposeConfChange({ type: 'addLearner', node: 'd' });
    n.start('d');
    n.settle();
    n.tick(3);
    expect(a.status().progress['d']!.match).toBe(a.status().lastIndex);
    n.cutBoth('a', 'b');
    n.cutBoth('a', 'c');
    n.tick(2 * ET, ['a', 'd']);
    expect(a.status().role).not.toBe('leader');
  });

  it('a leader that hears from a quorum stays leader indefinitely', () => {
    const { n, a } = cluster();
    n.isolate('c');
    n.tick(20 * ET, ['a', 'b']);
    expect(a.status().role).toBe('leader');
  });

  it('disruptive vote requests are ignored while a leader is known and alive (leader lease, hashicorp behaviour)', () => {
    const { n, a } = cluster({ preVote: false });
    const b = n.core('b');
    const term = a.status().term;
    const last = a.status().lastIndex;
    for (const target of [a, b]) {
      target.step(msg({ type: 'vote', from: 'c', to: target.id, term: term + 5, index: last + 10, logTerm: term }));
    }
    expect(a.status()).toMatchObject({ role: 'leader', term });
    expect(b.status()).toMatchObject({ role: 'follower', term, leader: 'a', vote: 'a' });
    expect(a.hasReady() && a.ready().messages.some((m) => m.type === 'voteResp')).toBe(false);
    n.settle();
    expect(n.delivered.filter((m) => m.type === 'voteResp' && m.to === 'c')).toEqual([]);
    // Once b has not heard from the leader for an election timeout, the same request is honoured.
    n.cutBoth('a', 'b');
    n.cutBoth('b', 'c');
    for (let i = 0; i < ET; i++) b.tick();
    b.step(msg({ type: 'vote', from: 'c', to: 'b', term: term + 5, index: last + 10, logTerm: term }));
    expect(b.status()).toMatchObject({ term: term + 5, vote: 'c' });
  });
});

// ------------------------------------------------------------------ ReadIndex

describe('ReadIndex', () => {
  it('leader: a read is answered only once a heartbeat quorum confirms leadership, at the commit index', () => {
    const { n, a } = cluster();
    const commit = a.status().commit;
    n.dropTypes.add('heartbeatResp');
    a.readIndex('r1');
    n.settle();
    n.tick(3, ['a']);
    expect(n.reads.get('a')).toEqual([]);
    n.dropTypes.clear();
    n.cutBoth('a', 'c'); // one follower's ack + the leader = quorum of 3
    n.tick(1, ['a']);
    expect(n.reads.get('a')).toEqual([{ index: commit, context: 'r1' }]);
    const hb = n.delivered.filter((m) => m.type === 'heartbeatResp' && m.context === 'r1');
    expect(hb.length).toBeGreaterThan(0);

    // 5 voters: the leader plus one ack is not a quorum.
    const n5 = net(['a', 'b', 'c', 'd', 'e']);
    const a5 = n5.elect('a');
    n5.settle();
    n5.tick(1);
    for (const id of ['c', 'd', 'e']) n5.cutBoth('a', id);
    a5.readIndex('r5');
    n5.settle();
    n5.tick(3, ['a']);
    expect(n5.reads.get('a')).toEqual([]);
    n5.heal();
    n5.cutBoth('a', 'e');
    n5.cutBoth('a', 'd');
    n5.tick(1, ['a']); // b + c + a
    expect(n5.reads.get('a')!.map((r) => r.context)).toEqual(['r5']);
  });

  it('acknowledgements from a learner do not confirm leadership for a read', () => {
    const n = net(['a', 'b', 'c']);
    const a = n.elect('a');
    n.settle();
    a.proposeConfChange({ type: 'addLearner', node: 'd' });
    n.start('d');
    n.settle();
    n.tick(3);
    n.cutBoth('a', 'b');
    n.cutBoth('a', 'c');
    a.readIndex('r');
    n.settle();
    n.tick(3, ['a', 'd']);
    expect(n.delivered.some((m) => m.type === 'heartbeatResp' && m.from === 'd' && m.context === 'r')).toBe(true);
    expect(n.reads.get('a')).toEqual([]);
  });

  it("a follower's read is forwarded to the leader and answered with the leader's commit index", () => {
    const { n, a } = cluster();
    const p = a.propose(bytes('x'));
    n.settle();
    n.cut.add('a>c'); // c is behind on the commit index, but the read must still see x
    const p2 = a.propose(bytes('y'));
    n.settle();
    expect(a.status().commit).toBe(p2.index);
    n.heal();
    const c = n.core('c');
    expect(c.status().commit).toBeLessThan(p2.index);
    c.readIndex('r2');
    n.settle();
    expect(n.reads.get('c')).toEqual([{ index: p2.index, context: 'r2' }]);
    expect(n.delivered.some((m) => m.type === 'readIndex' && m.from === 'c' && m.to === 'a')).toBe(true);
    expect(p.index).toBeLessThan(p2.index);
    // a follower with no known leader refuses at once
    const lonely = net(['x', 'y', 'z']).core('x');
    expect((errorOf(() => lonely.readIndex('r')) as RaftError).code).toBe('not_leader');
  });

  it('a fresh leader defers reads until the no-op of its term commits', () => {
    const n = net(['a', 'b', 'c']);
    n.dropTypes.add('appResp');
    const a = n.elect('a');
    n.settle();
    const noop = a.status().lastIndex;
    expect(a.termAt(noop)).toBe(a.status().term);
    expect(a.status().commit).toBeLessThan(noop);
    a.readIndex('r3');
    n.core('b').readIndex('r4'); // forwarded
    n.settle();
    n.tick(3, ['a']); // heartbeats are acknowledged, but the no-op is not committed
    expect(n.reads.get('a')).toEqual([]);
    expect(n.reads.get('b')).toEqual([]);
    n.dropTypes.clear();
    n.tick(1, ['a']);
    expect(a.status().commit).toBeGreaterThanOrEqual(noop);
    expect(n.reads.get('a')).toEqual([{ index: a.status().commit, context: 'r3' }]);
    expect(n.reads.get('b')!.map((r) => r.context)).toEqual(['r4']);
    expect(n.reads.get('b')![0]!.index).toBeGreaterThanOrEqual(noop);
  });

  it('an isolated ex-leader never answers a read', () => {
    const { n, a } = cluster();
    n.isolate('a');
    a.readIndex('stale');
    n.settle();
    // a steps down (CheckQuorum) while b/c elect a new leader that accepts writes
    for (let i = 0; i < 6 * ET; i++) n.tick(1);
    expect(a.status().role).not.toBe('leader');
    const l = n.leader()!;
    expect(l.id).not.toBe('a');
    l.propose(bytes('new'));
    n.settle();
    n.tick(5);
    expect(n.reads.get('a')).toEqual([]);
    expect((errorOf(() => a.readIndex('again')) as RaftError).code).toBe('not_leader');
    n.tick(3 * ET, ['a']);
    expect(n.reads.get('a')).toEqual([]);
  });
});

// ------------------------------------------------------------------ leadership transfer

describe('leadership transfer', () => {
  it('TimeoutNow to an up-to-date follower: it campaigns at once and wins', () => {
    const { n, a } = cluster();
    const term = a.status().term;
    n.delivered = [];
    a.transferLeader('b');
    n.settle();
    expect(n.delivered.filter((m) => m.type === 'timeoutNow').map((m) => [m.from, m.to])).toEqual([['a', 'b']]);
    expect(n.core('b').status()).toMatchObject({ role: 'leader', term: term + 1 });
    expect(a.status()).toMatchObject({ role: 'follower', leader: 'b' });
    // the campaign bypassed PreVote and the others' leases
    expect(n.delivered.some((m) => m.type === 'vote' && m.from === 'b' && m.transfer === true)).toBe(true);
  });

  it('a forwarded transfer request (from a follower) works too', () => {
    const { n } = cluster();
    n.core('c').transferLeader('c');
    n.settle();
    expect(n.core('c').status().role).toBe('leader');
  });

  it('a lagging transferee is caught up first, then receives TimeoutNow', () => {
    const { n, a } = cluster();
    n.cutBoth('a', 'c');
    const ps = [a.propose(bytes('1')), a.propose(bytes('2')), a.propose(bytes('3'))];
    n.settle();
    n.heal();
    const last = a.status().lastIndex;
    expect(n.core('c').status().lastIndex).toBeLessThan(last);
    n.delivered = [];
    a.transferLeader('c');
    n.settle();
    const d = n.delivered;
    const tn = d.findIndex((m) => m.type === 'timeoutNow' && m.to === 'c');
    const caughtUp = d.findIndex((m) => m.type === 'appResp' && m.from === 'c' && !m.reject && m.index >= last);
    expect(caughtUp).toBeGreaterThanOrEqual(0);
    expect(tn).toBeGreaterThan(caughtUp);
    const c = n.core('c');
    expect(c.status().role).toBe('leader');
    for (const p of ps) expect(c.termAt(p.index)).toBe(p.term);
  });

  it('proposals are refused while a transfer is in progress', () => {
    const { n, a } = cluster();
    n.cutBoth('a', 'c');
    a.transferLeader('c');
    n.settle();
    expect(a.status().leadTransferee).toBe('c');
    const err = errorOf(() => a.propose(bytes('x')));
    expect(err).toBeInstanceOf(RaftError);
    expect((err as RaftError).code).toBe('transfer_in_progress');
    expect((errorOf(() => a.proposeConfChange({ type: 'addLearner', node: 'd' })) as RaftError).code).toBe('transfer_in_progress');
  });

  it('a transfer to a learner or a non-member is refused; a transfer to the leader itself is a no-op', () => {
    const { n, a } = cluster();
    a.proposeConfChange({ type: 'addLearner', node: 'd' });
    n.settle();
    n.tick(1);
    expect((errorOf(() => a.transferLeader('d')) as RaftError).code).toBe('invalid');
    expect((errorOf(() => a.transferLeader('zz')) as RaftError).code).toBe('invalid');
    a.transferLeader('a');
    n.settle();
    expect(a.status()).toMatchObject({ role: 'leader', leadTransferee: null });
    expect(() => a.propose(bytes('ok'))).not.toThrow();
  });

  it('a transfer that does not complete within an election timeout is aborted', () => {
    const { n, a } = cluster();
    n.cutBoth('a', 'c');
    a.transferLeader('c');
    n.settle();
    n.tick(ET - 1, ['a', 'b']);
    expect(a.status().leadTransferee).toBe('c');
    n.tick(1, ['a', 'b']);
    expect(a.status()).toMatchObject({ role: 'leader', leadTransferee: null });
    expect(() => a.propose(bytes('x'))).not.toThrow();
  });
});

// ------------------------------------------------------------------ flow control

describe('pipelining and flow control', () => {
  const appsWithEntries = (n: Net, to: NodeId, since: number): Message[] =>
    n.delivered.slice(since).filter((m) => m.type === 'app' && m.to === to && (m.entries?.length ?? 0) > 0);

  it('with maxInflightMsgs = 2 the leader has at most 2 unacknowledged appends in flight to a follower', () => {
    const { n, a } = cluster({ maxInflightMsgs: 2 });
    expect(a.status().progress['b']!.state).toBe('replicate');
    n.cut.add('b>a'); // b's acknowledgements are lost
    const since = n.delivered.length;
    const ps = [];
    for (let i = 0; i < 6; i++) {
      ps.push(a.propose(bytes(`v${i}`)));
      n.settle(); // one append per proposal
    }
    expect(appsWithEntries(n, 'b', since)).toHaveLength(2);
    expect(appsWithEntries(n, 'c', since)).toHaveLength(6); // c acknowledges: it is not throttled
    expect(a.status().commit).toBe(ps[5]!.index);
    // Acknowledgements free the window: pipelining resumes.
    n.heal();
    n.tick(2);
    expect(n.core('b').status().lastIndex).toBe(a.status().lastIndex);
  });

  it('appends lost in flight do not stall a follower whose window is full (heartbeat responses reopen it)', () => {
    const { n, a } = cluster({ maxInflightMsgs: 2 });
    n.cut.add('a>b'); // the appends themselves are lost (b keeps answering heartbeats once healed)
    for (let i = 0; i < 4; i++) {
      a.propose(bytes(`v${i}`));
      n.settle();
    }
    n.heal();
    n.tick(5 * ET);
    expect(n.core('b').status().lastIndex).toBe(a.status().lastIndex);
    expect(a.status().progress['b']!.match).toBe(a.status().lastIndex);
  });

  it('maxInflightBytes bounds the unacknowledged bytes in flight to a follower', () => {
    const { n, a } = cluster({ maxInflightBytes: 20 });
    n.cut.add('b>a');
    const since = n.delivered.length;
    for (let i = 0; i < 6; i++) {
      a.propose(bytes('12345678')); // 8 bytes each
      n.settle();
    }
    const toB = appsWithEntries(n, 'b', since);
    expect(toB).toHaveLength(3); // 8, 16, 24 ≥ 20: paused after the third
    expect(appsWithEntries(n, 'c', since)).toHaveLength(6);
  });

  it('maxSizePerMsg: a catching-up follower gets appends no larger than the limit (unless one entry is larger)', () => {
    const { n, a } = cluster({ maxSizePerMsg: 300 });
    n.isolate('c');
    for (let i = 0; i < 10; i++) a.propose(new Uint8Array(100));
    a.propose(new Uint8Array(1000));
    n.settle();
    const since = n.delivered.length;
    n.heal();
    n.tick(3);
    const apps = appsWithEntries(n, 'c', since);
    expect(apps.length).toBeGreaterThan(1);
    for (const m of apps) {
      const size = m.entries!.reduce((s, e) => s + e.data.length, 0);
      expect(m.entries!.length === 1 || size <= 300).toBe(true);
    }
    expect(n.core('c').status().lastIndex).toBe(a.status().lastIndex);
  });

  it('several proposals between two ready() calls go out as one append per follower', () => {
    const { n, a } = cluster();
    const captured: Ready[] = [];
    n.onReady = (id, rd) => {
      if (id === 'a') captured.push(rd);
    };
    const ps = [a.propose(bytes('x')), a.propose(bytes('y')), a.propose(bytes('z'))];
    n.settle();
    const first = captured[0]!;
    const apps = [...first.earlyMessages, ...first.messages].filter((m) => m.type === 'app');
    expect(apps.map((m) => m.to).sort()).toEqual(['b', 'c']);
    for (const m of apps) expect(m.entries!.map((e) => e.index)).toEqual(ps.map((p) => p.index));
    const allApps = captured.flatMap((rd) => [...rd.earlyMessages, ...rd.messages]).filter((m) => m.type === 'app' && (m.entries?.length ?? 0) > 0);
    expect(allApps).toHaveLength(2);
    expect(first.entries.map((e) => e.index)).toEqual(ps.map((p) => p.index)); // and one write
  });
});

// ------------------------------------------------------------------ durability ordering

/** For every Ready: committed entries are on disk once `rd` is written; early messages are leader appends. */
function watchReadys(n: Net): string[] {
  const problems: string[] = [];
  n.onReady = (id, rd, disk) => {
    const after = new Map<number, number>();
    for (const e of disk.entries) after.set(e.index, e.term);
    if (rd.entries.length > 0) {
      for (const k of [...after.keys()]) if (k >= rd.entries[0]!.index) after.delete(k);
      for (const e of rd.entries) after.set(e.index, e.term);
    }
    const snapIndex = (rd.snapshot ?? disk.snapshot)?.meta.index ?? 0;
    for (const e of rd.committedEntries) {
      if (e.index > snapIndex && after.get(e.index) !== e.term) problems.push(`${id}: applies ${e.index}@${e.term} not on disk`);
    }
    const role = n.core(id).status().role;
    for (const m of rd.earlyMessages) {
      if (m.type !== 'app' || role !== 'leader') problems.push(`${id} (${role}): early ${m.type}`);
    }
    const hs = rd.hardState;
    if (hs && (hs.term !== disk.hardState.term || hs.vote !== disk.hardState.vote) && rd.earlyMessages.length > 0) {
      problems.push(`${id}: early messages in a Ready that changes term/vote`);
    }
  };
  return problems;
}

describe('durability ordering', () => {
  function follower(): { f: RaftCore; disk: Disk } {
    const n = net(['a', 'b', 'c']); // only to get b's bootstrapped disk
    const disk = structuredClone(n.disks.get('b')!);
    const f = new RaftCore({ id: 'b', heartbeatTick: 1, electionTick: ET, rand: () => 0, persisted: structuredClone(disk) });
    return { f, disk };
  }

  function write(disk: Disk, rd: Ready): void {
    if (rd.hardState) disk.hardState = { ...rd.hardState };
    if (rd.entries.length > 0) {
      const first = rd.entries[0]!.index;
      disk.entries = disk.entries.filter((e) => e.index < first).concat(rd.entries);
    }
  }

  const onDisk = (disk: Disk, e: Entry): boolean => disk.entries.some((d) => d.index === e.index && d.term === e.term);

  it('entries + commit in one append: a Ready never hands out a committed entry that is not persisted', () => {
    const { f, disk } = follower();
    const last = disk.entries.length; // 3 bootstrap entries
    const ents: Entry[] = [4, 5, 6].map((i) => ({ index: i, term: 2, type: 0, data: bytes(`e${i}`) }));
    f.step(msg({ type: 'app', from: 'a', to: 'b', term: 2, index: last, logTerm: 1, entries: ents, commit: 6 }));
    const applied: Entry[] = [];
    for (let i = 0; i < 10 && f.hasReady(); i++) {
      const rd = f.ready();
      for (const e of rd.committedEntries) {
        // applying happens after writing rd; an entry must be on disk (written before or by rd)
        const d2 = structuredClone(disk);
        write(d2, rd);
        expect(onDisk(d2, e)).toBe(true);
      }
      // stricter, what this core does: nothing unpersisted before this Ready is applied by it
      for (const e of rd.committedEntries) expect(onDisk(disk, e) || rd.entries.some((x) => x.index === e.index && x.term === e.term)).toBe(true);
      write(disk, rd);
      applied.push(...rd.committedEntries);
      f.advance(rd);
    }
    expect(applied.map((e) => e.index)).toEqual([1, 2, 3, 4, 5, 6]); // and it is live
    expect(f.status()).toMatchObject({ commit: 6, applied: 6, stableIndex: 6 });
  });

  it('entries rewritten by a conflicting append are applied only in their new, persisted version', () => {
    const { f, disk } = follower();
    const mk = (i: number, t: number): Entry => ({ index: i, term: t, type: 0, data: bytes(`${i}@${t}`) });
    f.step(msg({ type: 'app', from: 'a', to: 'b', term: 2, index: 3, logTerm: 1, entries: [mk(4, 2), mk(5, 2)], commit: 3 }));
    const applied: Entry[] = [];
    const run = (): void => {
      for (let i = 0; i < 10 && f.hasReady(); i++) {
        const rd = f.ready();
        write(disk, rd);
        for (const e of rd.committedEntries) expect(onDisk(disk, e)).toBe(true);
        applied.push(...rd.committedEntries);
        f.advance(rd);
      }
    };
    run();
    expect(f.status().stableIndex).toBe(5);
    // a new leader (term 3) overwrites 4 and 5 and says they are committed, in one message
    f.step(msg({ type: 'app', from: 'c', to: 'b', term: 3, index: 3, logTerm: 1, entries: [mk(4, 3), mk(5, 3)], commit: 5 }));
    const rd = f.ready();
    expect(rd.committedEntries.filter((e) => e.term === 2)).toEqual([]);
    write(disk, rd);
    for (const e of rd.committedEntries) expect(onDisk(disk, e)).toBe(true);
    applied.push(...rd.committedEntries);
    f.advance(rd);
    run();
    expect(applied.filter((e) => e.index > 3).map((e) => `${e.index}@${e.term}`)).toEqual(['4@3', '5@3']);
  });

  it('the leader counts its own entry toward the quorum only once it is persisted', () => {
    const n = net(['a', 'b', 'c', 'd', 'e']);
    const a = n.elect('a');
    n.settle();
    n.tick(1);
    const p = a.propose(bytes('x'));
    const rd = a.ready(); // the leader's write of x has not completed
    expect(rd.entries.map((e) => e.index)).toEqual([p.index]);
    const apps = rd.earlyMessages.filter((m) => m.type === 'app' && (m.to === 'b' || m.to === 'c'));
    expect(apps).toHaveLength(2);
    for (const m of apps) {
      const f = n.core(m.to);
      f.step(m);
      const frd = f.ready();
      f.advance(frd);
      for (const r of frd.messages.filter((x) => x.type === 'appResp')) a.step(r);
    }
    // b and c (2 of 5) hold x durably; a does not yet: no quorum
    expect(a.status().progress['b']!.match).toBe(p.index);
    expect(a.status().progress['c']!.match).toBe(p.index);
    expect(a.status().commit).toBeLessThan(p.index);
    a.advance(rd);
    expect(a.status().commit).toBe(p.index);
    const rd2 = a.ready();
    expect(rd2.committedEntries.map((e) => e.index)).toEqual([p.index]);
    a.advance(rd2);
  });

  it('earlyMessages only ever holds leader appends; vote responses and anything after a term/vote change wait for the write', () => {
    const n = net(['a', 'b', 'c', 'd', 'e'], { preVote: false, checkQuorum: false });
    const problems = watchReadys(n);
    const kinds = new Set<string>();
    const early = new Set<string>();
    const prev = n.onReady!;
    n.onReady = (id, rd, disk) => {
      prev(id, rd, disk);
      for (const m of rd.messages) kinds.add(m.type);
      for (const m of rd.earlyMessages) early.add(m.type);
    };
    const a = n.elect('a');
    n.settle();
    for (let i = 0; i < 5; i++) a.propose(bytes(`p${i}`));
    n.settle();
    n.tick(2);
    a.readIndex('r');
    n.settle();
    a.transferLeader('b');
    n.settle();
    n.isolate('b');
    n.tick(6 * ET);
    n.heal();
    n.tick(6 * ET);
    const l = n.leader()!;
    l.propose(bytes('late'));
    n.settle();
    n.tick(3);
    expect(problems).toEqual([]);
    expect([...early]).toEqual(['app']);
    for (const k of ['vote', 'voteResp', 'appResp', 'heartbeat', 'heartbeatResp', 'timeoutNow']) expect(kinds).toContain(k);
  });

  it('the same durability invariants hold in a run with PreVote, CheckQuorum, a snapshot and a restart', () => {
    const n = net(['a', 'b', 'c']);
    const problems = watchReadys(n);
    const a = n.elect('a');
    n.settle();
    n.isolate('c');
    for (let i = 0; i < 8; i++) a.propose(bytes(`p${i}`));
    n.settle();
    n.tick(2, ['a', 'b']);
    const idx = a.status().applied;
    const snap = a.compact(idx, bytes('s'));
    n.disks.get('a')!.snapshot = snap;
    n.disks.get('a')!.entries = n.disks.get('a')!.entries.filter((e) => e.index > idx);
    n.heal();
    n.tick(3);
    expect(n.core('c').status().snapshotIndex).toBe(idx);
    n.crash('b');
    n.applied.set('b', []);
    n.start('b');
    n.tick(3 * ET);
    expect(problems).toEqual([]);
  });
});

// ------------------------------------------------------------------ restart

describe('restart from persisted state', () => {
  it('crash + restart restores term, vote, log, commit and configuration from the disk', () => {
    const n = net(['a', 'b', 'c']);
    const a = n.elect('a');
    n.settle();
    a.propose(bytes('x'));
    n.settle();
    a.proposeConfChange({ type: 'addLearner', node: 'd' });
    n.settle();
    a.propose(bytes('y'));
    n.settle();
    n.tick(2);
    const before = n.core('b').status();
    const terms = Array.from({ length: before.lastIndex }, (_, i) => n.core('b').termAt(i + 1));
    n.crash('b');
    n.applied.set('b', []);
    const b = n.start('b');
    const after = b.status();
    expect(after).toMatchObject({ term: before.term, vote: before.vote, lastIndex: before.lastIndex, role: 'follower', leader: null });
    expect(after.commit).toBe(n.disks.get('b')!.hardState.commit);
    expect(after.commit).toBe(before.commit);
    expect(Array.from({ length: after.lastIndex }, (_, i) => b.termAt(i + 1))).toEqual(terms);
    expect(b.conf()).toEqual(a.conf());
    expect(b.conf()).toEqual({ voters: ['a', 'b', 'c'], learners: ['d'] });
    // it re-applies the committed log and rejoins
    n.settle();
    expect(n.data('b')).toEqual(['x', 'y']);
    const p = a.propose(bytes('z'));
    n.settle();
    n.tick(1);
    expect(b.termAt(p.index)).toBe(p.term);
    expect(n.data('b')).toEqual(['x', 'y', 'z']);
  });

  it('a restart with the application\'s applied index does not apply entries again', () => {
    const n = net(['a', 'b', 'c']);
    const a = n.elect('a');
    n.settle();
    a.propose(bytes('x'));
    a.propose(bytes('y'));
    n.settle();
    n.tick(1);
    const applied = n.core('b').status().applied;
    expect(n.data('b')).toEqual(['x', 'y']);
    n.crash('b');
    n.applied.set('b', []);
    const b = n.start('b', { applied });
    expect(b.status().applied).toBe(applied);
    n.settle();
    expect(n.applied.get('b')).toEqual([]);
    a.propose(bytes('z'));
    n.settle();
    n.tick(1);
    expect(n.data('b')).toEqual(['z']);
  });

  it('restart from a compacted disk: the snapshot plus the later entries give the log and the configuration', () => {
    const n = net(['a', 'b', 'c']);
    const a = n.elect('a');
    n.settle();
    a.proposeConfChange({ type: 'addLearner', node: 'd' });
    n.settle();
    a.propose(bytes('x'));
    n.settle();
    n.tick(1);
    // b (a follower) compacts its own log, as its driver would
    const b = n.core('b');
    const idx = b.status().applied;
    const snap = b.compact(idx, bytes('b-state'));
    expect(snap.meta.conf).toEqual({ voters: ['a', 'b', 'c'], learners: ['d'] });
    const disk = n.disks.get('b')!;
    disk.snapshot = snap;
    disk.entries = disk.entries.filter((e) => e.index > idx);
    // a later conf change, only in the entries after the snapshot
    a.proposeConfChange({ type: 'addLearner', node: 'e' });
    n.settle();
    a.propose(bytes('y'));
    n.settle();
    n.tick(1);
    const before = b.status();
    n.crash('b');
    n.applied.set('b', []);
    const b2 = n.start('b', { applied: before.applied });
    expect(b2.status()).toMatchObject({ snapshotIndex: idx, lastIndex: before.lastIndex, commit: before.commit, term: before.term });
    expect(b2.conf()).toEqual({ voters: ['a', 'b', 'c'], learners: ['d', 'e'] });
    expect(b2.conf()).toEqual(a.conf());
  });

  it('a restarted node keeps its vote within a term', () => {
    const n = net(['a', 'b', 'c'], { preVote: false });
    const b = n.core('b');
    const t = b.status().term + 1;
    const last = b.status().lastIndex;
    b.step(msg({ type: 'vote', from: 'c', to: 'b', term: t, index: last, logTerm: 1 }));
    n.settle();
    expect(n.disks.get('b')!.hardState).toMatchObject({ term: t, vote: 'c' });
    n.crash('b');
    const b2 = n.start('b');
    expect(b2.status()).toMatchObject({ term: t, vote: 'c' });
    b2.step(msg({ type: 'vote', from: 'a', to: 'b', term: t, index: last + 5, logTerm: 1 }));
    b2.step(msg({ type: 'vote', from: 'c', to: 'b', term: t, index: last, logTerm: 1 }));
    const rd = b2.ready();
    expect(rd.messages.map((m) => [m.type, m.to, !!m.reject])).toEqual([
      ['voteResp', 'a', true],
      ['voteResp', 'c', false],
    ]);
    b2.advance(rd);
    expect(b2.status().vote).toBe('c');
  });

  it('a node that crashed before persisting its vote has not voted', () => {
    const n = net(['a', 'b', 'c'], { preVote: false });
    const b = n.core('b');
    const t = b.status().term + 1;
    b.step(msg({ type: 'vote', from: 'c', to: 'b', term: t, index: 3, logTerm: 1 }));
    const rd = b.ready();
    expect(rd.earlyMessages.filter((m) => m.type === 'voteResp')).toEqual([]); // the grant is not out yet
    // crash before the write: the grant is never sent, and after restart b may vote for a
    n.crash('b');
    const b2 = n.start('b');
    expect(b2.status().vote).toBe(null);
    b2.step(msg({ type: 'vote', from: 'a', to: 'b', term: t, index: 3, logTerm: 1 }));
    const rd2 = b2.ready();
    expect(rd2.messages.filter((m) => m.type === 'voteResp').map((m) => [m.to, !!m.reject])).toEqual([['a', false]]);
  });
});
