// Writes waiting for a leader (src/manager/leader-change.ts) go on at the node's leader change,
// not at the next poll; the wait is still bounded when no change comes.
import { describe, expect, it } from 'vitest';
import { LeaderChange } from '../src/manager/leader-change.js';

describe('LeaderChange', () => {
  it('wakes every waiter at the change, long before its bound', async () => {
    const lc = new LeaderChange();
    const woke: string[] = [];
    const a = lc.wait(60_000).then(() => woke.push('a'));
    const b = lc.wait(60_000).then(() => woke.push('b'));
    expect(lc.waiting).toBe(2);
    await Promise.resolve();
    expect(woke).toEqual([]);
    lc.fire();
    await Promise.all([a, b]); // would hang for a minute (test timeout) without the change
    expect(woke.sort()).toEqual(['a', 'b']);
    expect(lc.waiting).toBe(0);
  });

  it('a waiter that timed out is forgotten; a change wakes only those waiting then', async () => {
    const lc = new LeaderChange();
    await lc.wait(5);
    expect(lc.waiting).toBe(0);
    lc.fire(); // nobody waits: nothing happens
    let later = false;
    const p = lc.wait(60_000).then(() => (later = true));
    await Promise.resolve();
    expect(later).toBe(false);
    lc.fire();
    await p;
    expect(later).toBe(true);
  });
});
