// Tick accounting (src/raft/ticker.ts): Raft ticks follow elapsed monotonic time, so a stalled
// event loop neither loses its ticks (election timeouts stretching exactly when a process is
// slow) nor replays a long stall as several election timeouts at once.
import { describe, expect, it } from 'vitest';
import { RaftNode } from '../src/raft/node.js';
import { TickAccount } from '../src/raft/ticker.js';

describe('TickAccount', () => {
  it('fires one tick per elapsed tick period, none when called early', () => {
    const t = new TickAccount(10, 5, 60, 1000);
    expect(t.due(1004)).toBe(0);
    expect(t.due(1010)).toBe(1);
    expect(t.due(1019)).toBe(0);
    expect(t.due(1020)).toBe(1);
    expect(t.due(1045)).toBe(2); // a late timer: both ticks, the 5 ms remainder kept
    expect(t.due(1050)).toBe(1);
  });

  it('a stall is paid back in bounded steps, none lost up to the cap', () => {
    const t = new TickAccount(10, 5, 60, 0);
    const fired: number[] = [];
    fired.push(t.due(250)); // a 250 ms stall: 25 ticks owed
    for (let now = 260; now <= 300; now += 10) fired.push(t.due(now));
    expect(Math.max(...fired)).toBeLessThanOrEqual(5);
    expect(fired.reduce((a, b) => a + b, 0)).toBe(30); // 25 + 5 more periods: all of them
    expect(t.pending).toBe(0);
  });

  it('never owes more than the cap (older time changes nothing)', () => {
    const t = new TickAccount(10, 5, 60, 0);
    let total = 0;
    total += t.due(10_000); // a 10 s stall (SIGSTOP)
    expect(total).toBe(5);
    expect(t.pending).toBe(55);
    for (let i = 0; i < 100 && t.pending > 0; i++) total += t.due(10_000);
    expect(total).toBe(60);
  });

  it('refuses nonsense settings', () => {
    expect(() => new TickAccount(0, 1, 1, 0)).toThrow(RangeError);
    expect(() => new TickAccount(10, 5, 4, 0)).toThrow(RangeError);
  });
});

describe('RaftNode ticks under a stalled event loop', () => {
  it('a follower whose loop is blocked again and again still campaigns after its election timeout of real time', async () => {
    // Three voters, the other two absent: this follower hears nothing and must pre-vote once
    // its randomised timeout (30..59 ticks of 10 ms) has passed. Its event loop is blocked for
    // 60 ms at a time, so the interval timer fires at most once per block: counted in
    // callbacks, 20 blocks would be 20 ticks — below any election timeout.
    const node = new RaftNode({
      id: 'a',
      storage: { save: async () => {}, saveSnapshot: async () => {} },
      stateMachine: { apply: () => null, snapshot: () => new Uint8Array(0), restore: () => {} },
      bootstrap: { a: 'x:1', b: 'x:2', c: 'x:3' },
      tickMs: 10,
      heartbeatTicks: 5,
      electionTicks: 30,
    });
    node.start();
    try {
      let blocks = 0;
      for (; blocks < 20 && node.status().role === 'follower'; blocks++) {
        const until = performance.now() + 60;
        while (performance.now() < until) {
          /* a blocked event loop */
        }
        await new Promise<void>((r) => setTimeout(r, 0)); // one turn of the loop: timers run once
      }
      expect(node.status().role, `still a follower after ${blocks} stalls of 60 ms`).not.toBe('follower');
      expect(node.status().term).toBe(1); // a pre-vote: no term was spent
    } finally {
      await node.stop();
    }
  });
});
