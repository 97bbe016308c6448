// The Raft core's link-down signal (src/raft/core-linkdown.ts): a follower whose connection to
// its leader closed (a SIGKILLed process's sockets close at once) pre-votes after a short delay
// instead of a whole election timeout, and a voter whose own link to that leader closed does not
// ignore the (pre-)votes; one flapping link never deposes a healthy leader, and a frozen leader
// (links open) is still replaced by the election timeout.
import { describe, expect, it } from 'vitest';
import type { RaftCore } from '../src/raft/core.js';
import { linkDownDelay } from '../src/raft/core-linkdown.js';
import type { Message, NodeId } from '../src/raft/types.js';
import { Net, bytes } from './helpers/net.js';

const ET = 10; // election ticks of the helper network (heartbeat: 1 tick)

function cluster(ids: NodeId[] = ['a', 'b', 'c']): { n: Net; a: RaftCore } {
  const n = new Net(ids);
  n.settle();
  const a = n.elect('a');
  n.settle();
  n.tick(1);
  return { n, a };
}

/** What the driver reports when its connections with `peer` closed. */
function linkDown(n: Net, at: NodeId, peer: NodeId): void {
  const m: Message = { type: 'linkDown', from: peer, to: at, term: 0, index: 0, logTerm: 0 };
  n.core(at).step(m);
  n.settle();
}

const leaderOf = (n: Net, ids: NodeId[]): RaftCore | undefined => ids.map((id) => n.core(id)).find((c) => c.status().role === 'leader');

describe('link down: the leader was killed', () => {
  it('both followers saw their links close: a new leader well within one election timeout', () => {
    const { n, a } = cluster();
    const term = a.status().term;
    n.crash('a');
    linkDown(n, 'b', 'a');
    linkDown(n, 'c', 'a');
    const ticks = n.tickUntil(() => leaderOf(n, ['b', 'c']) !== undefined, ['b', 'c'], 10 * ET);
    // Without the signal the first pre-vote waits a whole randomised timeout (≥ ET ticks).
    expect(ticks).toBeLessThan(ET / 2);
    const l = leaderOf(n, ['b', 'c'])!;
    expect(l.status().term).toBe(term + 1);
    // It serves writes, committed by the two survivors.
    const p = l.propose(bytes('after the kill'));
    n.settle();
    n.tick(1, ['b', 'c']);
    expect(n.data('b')).toContain('after the kill');
    expect(n.data('c')).toContain('after the kill');
    expect(n.core('b').status().commit).toBeGreaterThanOrEqual(p.index);
  });

  it('the follower first in rank is behind: the one with the newer log wins, still early', () => {
    const { n, a } = cluster();
    // b misses the last writes (rank: b before c).
    n.cut.add('a>b');
    a.propose(bytes('x1'));
    a.propose(bytes('x2'));
    n.settle();
    n.tick(1, ['a', 'c']);
    expect(n.core('c').status().lastIndex).toBeGreaterThan(n.core('b').status().lastIndex);
    n.crash('a');
    n.heal();
    linkDown(n, 'b', 'a');
    linkDown(n, 'c', 'a');
    const ticks = n.tickUntil(() => leaderOf(n, ['b', 'c']) !== undefined, ['b', 'c'], 10 * ET);
    expect(ticks).toBeLessThan(ET);
    expect(leaderOf(n, ['b', 'c'])!.id).toBe('c');
  });

  it('five members: the survivors elect a leader early too', () => {
    const ids = ['a', 'b', 'c', 'd', 'e'];
    const { n } = cluster(ids);
    n.crash('a');
    for (const id of ids.slice(1)) linkDown(n, id, 'a');
    const ticks = n.tickUntil(() => leaderOf(n, ids.slice(1)) !== undefined, ids.slice(1), 10 * ET);
    expect(ticks).toBeLessThan(ET);
  });
});

describe('link down: two followers do not campaign at once', () => {
  it('a follower that granted another one\'s pre-vote drops its own early timer', () => {
    const { n } = cluster();
    n.crash('a');
    linkDown(n, 'b', 'a');
    linkDown(n, 'c', 'a');
    n.cut.add('c>b'); // c's answers are lost: b stays a pre-candidate
    const since = n.sent.length;
    n.tickUntil(() => n.sent.slice(since).some((m) => m.from === 'b' && m.type === 'preVote'), ['b'], ET);
    expect(n.sent.slice(since).some((m) => m.from === 'c' && m.to === 'b' && m.type === 'preVoteResp' && !m.reject)).toBe(true);
    // c's own early turn (rank 1) passes without a campaign: it waits for the ordinary timeout.
    const mark = n.sent.length;
    n.tick(ET / 2 + 1, ['c']);
    expect(n.sent.slice(mark).some((m) => m.from === 'c' && m.type === 'preVote')).toBe(false);
  });
});

describe('link down: a healthy leader is not deposed', () => {
  it('one flapping link (leader ↔ one follower): the early pre-vote is ignored, no term changes, the follower comes back', () => {
    const { n, a } = cluster();
    const term = a.status().term;
    const since = n.sent.length;
    n.cutBoth('a', 'c');
    linkDown(n, 'c', 'a');
    n.tick(ET / 2);
    // c did campaign early (a pre-vote, which changes no term) ...
    expect(n.sent.slice(since).some((m) => m.from === 'c' && m.type === 'preVote')).toBe(true);
    // ... and b, which still hears from a, did not grant it.
    expect(n.sent.slice(since).some((m) => m.from === 'b' && m.to === 'c' && m.type === 'preVoteResp' && !m.reject)).toBe(false);
    n.heal();
    n.tick(2);
    expect(a.status()).toMatchObject({ role: 'leader', term });
    for (const id of ['b', 'c']) expect(n.core(id).status()).toMatchObject({ role: 'follower', term, leader: 'a' });
    expect(n.sent.slice(since).some((m) => m.type === 'vote')).toBe(false);
  });

  it('a link closes and reconnects at once: the leader’s next heartbeat restores the lease', () => {
    const { n, a } = cluster();
    const term = a.status().term;
    linkDown(n, 'b', 'a');
    linkDown(n, 'c', 'a');
    n.tick(1, ['a']); // a's heartbeat reaches both: they know it is alive
    // Then a is quiet for a while (less than an election timeout): no early timer is left to fire
    // (had both fired, each would grant the other's pre-vote and one would depose a).
    n.isolate('a');
    n.tick(ET / 2, ['b', 'c']);
    expect(n.core('b').status().role).toBe('follower');
    expect(n.core('c').status().role).toBe('follower');
    n.heal();
    n.tick(3 * ET);
    expect(a.status()).toMatchObject({ role: 'leader', term });
    for (const id of ['b', 'c']) expect(n.core(id).status()).toMatchObject({ term, leader: 'a' });
  });

  it('a link to a peer that is not the leader changes nothing', () => {
    const { n, a } = cluster();
    const term = a.status().term;
    const since = n.sent.length;
    linkDown(n, 'b', 'c');
    n.tick(ET);
    expect(n.sent.slice(since).some((m) => m.type === 'preVote' || m.type === 'vote')).toBe(false);
    expect(a.status()).toMatchObject({ role: 'leader', term });
  });
});

describe('no link down: a frozen leader (SIGSTOP, its links stay open)', () => {
  it('is replaced by the election timeout, not earlier', () => {
    const { n, a } = cluster();
    const term = a.status().term;
    n.isolate('a'); // nothing in or out, no connection closed
    const ticks = n.tickUntil(() => leaderOf(n, ['b', 'c']) !== undefined, ['b', 'c'], 10 * ET);
    expect(ticks).toBeGreaterThanOrEqual(ET - 1);
    expect(leaderOf(n, ['b', 'c'])!.status().term).toBe(term + 1);
  });
});

describe('linkDownDelay', () => {
  it('gives each surviving voter its own window by rank, the lost leader left out', () => {
    const voters = new Set(['m1', 'm2', 'm3']);
    const all = (self: string, lost: string) => Array.from({ length: 5 }, (_, r) => linkDownDelay(self, lost, voters, 30, () => r));
    // window = 30 / 6 = 5 ticks, gap 2: rank 0 in [1, 5], rank 1 in [8, 12]
    expect(all('m2', 'm1')).toEqual([1, 2, 3, 4, 5]);
    expect(all('m3', 'm1')).toEqual([8, 9, 10, 11, 12]);
    expect(all('m1', 'm2')).toEqual([1, 2, 3, 4, 5]);
    expect(all('m3', 'm2')).toEqual([8, 9, 10, 11, 12]);
    expect(linkDownDelay('m1', 'm3', voters, 2, () => 0)).toBe(1);
  });
});
