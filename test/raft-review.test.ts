// Regression tests for three defects found by an independent review of the Raft core and
// driver (issue 19): a removed member never dropped by the leader, a client write left hanging
// when its index is proposed again, and a snapshot fast-forward that acknowledged a stale tail.
import { describe, expect, it } from 'vitest';
import { RaftCore, encodeConfChange } from '../src/raft/core.js';
import { RaftNode, type NodeStorage, type NodeTransport } from '../src/raft/node.js';
import { EntryType, RaftError, type Entry, type Message, type NodeId } from '../src/raft/types.js';
import { Net, bytes } from './helpers/net.js';

const ET = 10;

function settled(ids: NodeId[]): Net {
  const n = new Net(ids);
  n.settle();
  return n;
}

describe('a removed member is dropped by the leader', () => {
  it('once it has its removal entry and the removal committed: no more heartbeats to it', () => {
    const n = settled(['a', 'b', 'c', 'd']);
    const a = n.elect('a');
    n.settle();
    n.tick(2);
    const r = a.proposeConfChange({ type: 'removeNode', node: 'b' });
    n.settle();
    n.tick(3);
    expect(a.status().commit).toBeGreaterThanOrEqual(r.index);
    expect(n.core('b').status().commit).toBeGreaterThanOrEqual(r.index); // b knows its removal committed
    const since = n.sent.length;
    n.tick(30 * ET);
    expect(a.status()).toMatchObject({ role: 'leader' });
    expect(Object.keys(a.status().progress).sort()).toEqual(['a', 'c', 'd']);
    const toB = n.sent.slice(since).filter((m) => m.from === 'a' && m.to === 'b');
    expect(toB).toEqual([]);
  });

  it('a removed node that never answers is given up after 10 election timeouts', () => {
    const n = settled(['a', 'b', 'c', 'd']);
    const a = n.elect('a');
    n.settle();
    n.tick(2);
    n.crash('b');
    a.proposeConfChange({ type: 'removeNode', node: 'b' });
    n.settle();
    n.tick(2);
    expect(a.status().progress['b']).toBeDefined(); // still told about its removal for a while
    n.tick(10 * ET + 2);
    expect(a.status().progress['b']).toBeUndefined();
    const since = n.sent.length;
    n.tick(5 * ET);
    expect(n.sent.slice(since).filter((m) => m.to === 'b')).toEqual([]);
  });
});

describe('snapshot fast-forward', () => {
  it("acknowledges the snapshot's index, not a stale tail after it", () => {
    // Entries 1..5 of term 1, then a stale, uncommitted 6..8 of term 2; commit 3.
    const ents: Entry[] = [];
    for (let i = 1; i <= 8; i++) ents.push({ term: i <= 5 ? 1 : 2, index: i, type: EntryType.Normal, data: bytes(`e${i}`) });
    ents[0] = { term: 1, index: 1, type: EntryType.ConfChange, data: encodeConfChange({ type: 'addVoter', node: 'f' }) };
    const f = new RaftCore({
      id: 'f',
      heartbeatTick: 1,
      electionTick: ET,
      rand: () => 0,
      persisted: { hardState: { term: 3, vote: null, commit: 3 }, snapshot: null, entries: ents },
    });
    f.step({
      type: 'snap',
      from: 'x',
      to: 'f',
      term: 3,
      index: 0,
      logTerm: 0,
      snapshot: { meta: { index: 5, term: 1, conf: { voters: ['f', 'x'], learners: [] } }, data: bytes('state at 5') },
    });
    const rd = f.ready();
    const resp = [...rd.earlyMessages, ...rd.messages].filter((m: Message) => m.type === 'appResp');
    expect(resp).toHaveLength(1);
    expect(resp[0]).toMatchObject({ to: 'x', index: 5 });
    expect(resp[0]!.reject).toBeFalsy();
    expect(f.status().commit).toBe(5);
  });
});

describe('RaftNode: a proposal displaced at its index settles at once', () => {
  it('the first promise is rejected with proposal_dropped when a second proposal takes its index', async () => {
    const storage: NodeStorage = { save: async () => {}, saveSnapshot: async () => {} };
    const sm = { apply: () => null, snapshot: () => new Uint8Array(0), restore: () => {} };
    const node = new RaftNode({ id: 'a', storage, stateMachine: sm, bootstrap: { a: 'x', b: 'y', c: 'z' } });
    // The driver's own bookkeeping, as propose() calls it: the same index proposed in term 2,
    // then again in term 4 (after the term-2 tail was truncated and this node led again).
    const track = (node as unknown as { track(i: number, t: number, ms: number): Promise<unknown> }).track.bind(node);
    const first = track(7, 2, 60_000);
    const firstOutcome = first.then(
      () => 'resolved',
      (e: unknown) => e,
    );
    const second = track(7, 4, 60_000);
    second.catch(() => {});
    const out = await Promise.race([firstOutcome, new Promise((r) => setTimeout(() => r('still pending'), 200))]);
    expect(out).toBeInstanceOf(RaftError);
    expect((out as RaftError).code).toBe('proposal_dropped');
    await node.stop();
  });
});

describe('RaftNode: removed members are forgotten by the transport', () => {
  it('removePeer is called for a removed member once the leader no longer replicates to it', async () => {
    const removed: NodeId[] = [];
    const sent: Message[] = [];
    const transport: NodeTransport = { send: (ms) => sent.push(...ms), removePeer: (id) => removed.push(id) };
    const storage: NodeStorage = { save: async () => {}, saveSnapshot: async () => {} };
    const sm = { apply: () => null, snapshot: () => new Uint8Array(0), restore: () => {} };
    // A two-voter cluster led by a (b answers nothing): removing b commits on a alone.
    const node = new RaftNode({
      id: 'a',
      storage,
      transport,
      stateMachine: sm,
      bootstrap: { a: 'x' },
      tickMs: 1,
      heartbeatTicks: 1,
      electionTicks: 5,
    });
    node.start();
    try {
      for (let i = 0; i < 400 && !node.isLeader(); i++) await new Promise((r) => setTimeout(r, 5));
      expect(node.isLeader()).toBe(true);
      await node.proposeConfChange({ type: 'addLearner', node: 'b', context: 'y' }, 5_000);
      await node.proposeConfChange({ type: 'removeNode', node: 'b' }, 5_000);
      // b never answers: after 10 election timeouts (50 ticks of 1 ms) the leader gives up on it.
      for (let i = 0; i < 400 && removed.length === 0; i++) await new Promise((r) => setTimeout(r, 5));
      expect(removed).toEqual(['b']);
      expect(node.status().progress['b']).toBeUndefined();
      const before = sent.filter((m) => m.to === 'b').length;
      await new Promise((r) => setTimeout(r, 50));
      expect(sent.filter((m) => m.to === 'b').length).toBe(before);
    } finally {
      await node.stop();
    }
  });
});

describe('PeerTransport: a removed peer is not recreated', () => {
  it('after removePeer, messages to that id are dropped instead of opening a new connection', async () => {
    const { PeerTransport } = await import('../src/raft/transport.js');
    const unreachable: string[] = [];
    // Nothing listens at this address: the peer exists (and retries) but never connects.
    const t = new PeerTransport({
      id: 'a',
      secret: 'test secret',
      onMessage: () => {},
      resolveAddr: () => '127.0.0.1:1',
      onUnreachable: (p) => unreachable.push(p),
    });
    try {
      const hb = (to: string): Message => ({ type: 'heartbeat', from: 'a', to, term: 1, index: 0, logTerm: 0 });
      t.send([hb('b'), hb('c')]);
      expect(Object.keys(t.stats().peers).sort()).toEqual(['b', 'c']);
      t.removePeer('b');
      expect(Object.keys(t.stats().peers)).toEqual(['c']);
      t.send([hb('b'), hb('c')]);
      expect(Object.keys(t.stats().peers)).toEqual(['c']);
    } finally {
      await t.close();
    }
  });
});
