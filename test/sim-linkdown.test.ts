// The Raft simulator models connections closing (the core's 'linkDown', src/raft/core-linkdown.ts):
// a killed leader's peers see their links close and elect a successor early; without the
// signal (a machine that lost power, a frozen process) they wait out the election timeout.
import { describe, expect, it } from 'vitest';
import { SimCluster } from '../src/raft/sim/network.js';

const ET = 10;

function ticksToReplaceLeader(seed: number, linkCloseOnCrash: number): number {
  const s = new SimCluster({ seed, bug: 'none', electionTick: ET, heartbeatTick: 1, compactEvery: 0 });
  const conf = { voters: ['n1', 'n2', 'n3'], learners: [] };
  for (const id of conf.voters) s.addNode(id, conf);
  for (let i = 0; i < 50 * ET && s.leaders().length === 0; i++) s.step();
  for (let i = 0; i < 5; i++) s.step();
  const old = s.leaders()[0];
  if (!old) throw new Error('no leader elected');
  s.linkCloseOnCrash = linkCloseOnCrash;
  s.crash(old, 'killed');
  for (let i = 1; i <= 50 * ET; i++) {
    s.step();
    if (s.leaders().length > 0) {
      expect(s.checkers.failed).toBe(false);
      return i;
    }
  }
  throw new Error('no new leader');
}

describe('sim: link down', () => {
  it('a killed leader (its links close) is replaced within half an election timeout; a silent one after a whole one', () => {
    for (let seed = 1; seed <= 20; seed++) {
      expect(ticksToReplaceLeader(seed, 1), `seed ${seed}`).toBeLessThan(ET / 2 + 3);
      expect(ticksToReplaceLeader(seed, 0), `seed ${seed}`).toBeGreaterThanOrEqual(ET - 1);
    }
  });
});
