// The deterministic Raft simulator: 2,000 clean seeds, the bug variants caught, every checker
// shown able to fail on a hand-made bad trace, and determinism.
import { describe, expect, it } from 'vitest';
import {
  Checkers,
  ElectionSafety,
  LeaderCompleteness,
  LinearizableReads,
  LogMatching,
  StateMachineSafety,
  chainHash,
  checkCommitQuorum,
  checkDurability,
  convergence,
  type Property,
  type Report,
} from '../src/raft/sim/checkers.js';
import { Prng, derive } from '../src/raft/sim/prng.js';
import { runSeed, seedParams, type RunResult } from '../src/raft/sim/run.js';
import type { SimBug } from '../src/raft/sim/network.js';

/** A Report that records what fired. */
function recorder(): { report: Report; got: { property: Property; detail: string }[] } {
  const got: { property: Property; detail: string }[] = [];
  return { report: (property, detail) => got.push({ property, detail }), got };
}

/** Seeds to hunt per variant (first catching seed, measured, times ~3). */
const SEEDS: Record<string, number> = {
  'read-any-ack': 150,
  'learner-read-quorum': 150,
  'commit-past-new': 270,
  'conf-at-append': 200,
  'self-count-before-sync': 80,
  'conf-before-noop': 40,
};

function fmt(r: RunResult): string {
  const v = r.violations[0]!;
  return `${v.property} seed ${r.seed} tick ${v.tick}: ${v.detail} (replay: npm run sim -- --seed ${r.seed}${r.bug !== 'none' ? ` --bug ${r.bug}` : ''})`;
}

/** Runs seeds 1..n with a bug; returns every violating run. */
function hunt(bug: SimBug, n: number, stopAfter = Infinity): RunResult[] {
  const bad: RunResult[] = [];
  for (let seed = 1; seed <= n && bad.length < stopAfter; seed++) {
    const r = runSeed({ seed, bug });
    if (r.violations.length > 0) bad.push(r);
  }
  return bad;
}

describe('sim: 2,000 seeds, no violation', () => {
  const CHUNK = 250;
  for (let c = 0; c < 8; c++) {
    const from = c * CHUNK + 1;
    const to = from + CHUNK - 1;
    it(`seeds ${from}..${to}`, () => {
      const bad: string[] = [];
      for (let seed = from; seed <= to; seed++) {
        const r = runSeed({ seed });
        if (r.violations.length > 0) bad.push(fmt(r));
        else expect(r.healTicks, `seed ${seed} converged`).toBeGreaterThanOrEqual(0);
      }
      expect(bad).toEqual([]);
    });
  }
  it('the seeds cover clusters of 3, 5 and 7 nodes and every scenario family', () => {
    const sizes = new Map<number, number>();
    const families = new Map<string, number>();
    for (let seed = 1; seed <= 2000; seed++) {
      const p = seedParams(seed);
      sizes.set(p.n, (sizes.get(p.n) ?? 0) + 1);
      families.set(p.family, (families.get(p.family) ?? 0) + 1);
    }
    expect([...sizes.keys()].sort()).toEqual([3, 5, 7]);
    for (const n of [3, 5, 7]) expect(sizes.get(n)!).toBeGreaterThan(100);
    expect([...families.keys()].sort()).toEqual(['deposed-read', 'figure8', 'no-sync', 'ongaro', 'random']);
  });
});

describe('sim: deliberately broken variants are caught within 200 seeds', () => {
  it('figure8 (commit old-term entries by counting replicas) breaks leader completeness', () => {
    const bad = hunt('figure8', 200);
    expect(bad.length).toBeGreaterThan(0);
    // What a lost committed entry can break first, depending on timing:
    for (const r of bad) expect(['leader-completeness', 'state-machine-safety', 'durability']).toContain(r.violations[0]!.property);
    expect(bad.some((r) => r.violations[0]!.property === 'leader-completeness')).toBe(true);
    console.log(`figure8: first violating seed ${bad[0]!.seed} (${bad.length}/200): ${fmt(bad[0]!)}`);
  });

  it('no-sync (a crash forgets the vote) breaks election safety', () => {
    const bad = hunt('no-sync', 200);
    expect(bad.length).toBeGreaterThan(0);
    for (const r of bad) {
      expect(['election-safety', 'log-matching', 'leader-completeness', 'state-machine-safety', 'durability']).toContain(r.violations[0]!.property);
    }
    expect(bad.some((r) => r.violations[0]!.property === 'election-safety')).toBe(true);
    console.log(`no-sync: first violating seed ${bad[0]!.seed} (${bad.length}/200): ${fmt(bad[0]!)}`);
  });

  it('stale-read (serve reads locally, no ReadIndex) breaks linearizable reads', () => {
    const bad = hunt('stale-read', 200);
    expect(bad.length).toBeGreaterThan(0);
    for (const r of bad) expect(r.violations[0]!.property).toBe('linearizable-reads');
  });
});

// Bugs an earlier simulator missed (issue 19): each must show up as a safety violation (never
// only as liveness) within a few hundred seeds. Seed counts: about 3× the first catching seed.
describe('sim: the review\'s blind spots are caught', () => {
  const SAFETY = ['election-safety', 'log-matching', 'leader-completeness', 'state-machine-safety', 'linearizable-reads', 'durability', 'commit-quorum', 'leader-match', 'append-commit'];
  const cases: [SimBug, number, string[]][] = [
    ['read-any-ack', SEEDS['read-any-ack'], ['linearizable-reads']],
    ['learner-read-quorum', SEEDS['learner-read-quorum'], ['linearizable-reads']],
    ['commit-past-new', SEEDS['commit-past-new'], ['append-commit']],
    ['conf-at-append', SEEDS['conf-at-append'], ['commit-quorum']],
    ['self-count-before-sync', SEEDS['self-count-before-sync'], ['commit-quorum']],
    ['conf-before-noop', SEEDS['conf-before-noop'], ['leader-completeness', 'state-machine-safety']],
  ];
  for (const [bug, n, expected] of cases) {
    it(`${bug} is caught within ${n} seeds`, () => {
      const bad = hunt(bug, n, 1);
      expect(bad.length, `${bug}: no violation in seeds 1..${n}`).toBeGreaterThan(0);
      for (const r of bad) expect(SAFETY).toContain(r.violations[0]!.property);
      expect(bad.some((r) => expected.includes(r.violations[0]!.property))).toBe(true);
      console.log(`${bug}: first violating seed ${bad[0]!.seed}: ${fmt(bad[0]!)}`);
    });
  }
});

describe('sim: determinism', () => {
  it('the same seed gives the same trace hash and result, traced or not', () => {
    for (const seed of [1, 2, 3, 9, 4, 77, 1234]) {
      const a = runSeed({ seed });
      const b = runSeed({ seed });
      const lines: string[] = [];
      const c = runSeed({ seed, trace: (l) => lines.push(l) });
      expect(b).toEqual(a);
      expect(c).toEqual(a);
      expect(lines.length).toBeGreaterThan(0);
    }
  });

  it('the same seed with a bug replays to the same violation', () => {
    const a = runSeed({ seed: 9, bug: 'figure8' });
    const b = runSeed({ seed: 9, bug: 'figure8' });
    expect(b).toEqual(a);
  });

  it('different seeds give different traces', () => {
    const hashes = new Set<string>();
    for (let seed = 1; seed <= 20; seed++) hashes.add(runSeed({ seed }).hash);
    expect(hashes.size).toBe(20);
  });

  it('the PRNG is seeded and stream-independent', () => {
    const a = new Prng(42);
    const b = new Prng(42);
    const xs = Array.from({ length: 100 }, () => a.int(1000));
    expect(Array.from({ length: 100 }, () => b.int(1000))).toEqual(xs);
    expect(derive(7, 'x').nextU32()).toBe(derive(7, 'x').nextU32());
    expect(derive(7, 'x').nextU32()).not.toBe(derive(7, 'y').nextU32());
    for (let i = 0; i < 1000; i++) {
      const v = a.int(7);
      expect(v >= 0 && v < 7 && Number.isInteger(v)).toBe(true);
    }
  });
});

describe('sim checkers fail on hand-made bad traces', () => {
  it('election safety: two leaders in one term', () => {
    const { report, got } = recorder();
    const c = new ElectionSafety(report);
    c.onLeader('n1', 2);
    c.onLeader('n1', 2); // the same leader seen again is fine
    c.onLeader('n2', 3);
    expect(got).toEqual([]);
    c.onLeader('n3', 3);
    expect(got.map((g) => g.property)).toEqual(['election-safety']);
    expect(got[0]!.detail).toContain('term 3');
  });

  it('log matching: same (index, term) with different data, or after a different entry', () => {
    const { report, got } = recorder();
    const c = new LogMatching(report);
    c.onPersist('n1', 1, 1, 0, '0:a');
    c.onPersist('n1', 2, 1, 1, '0:b');
    c.onPersist('n2', 1, 1, 0, '0:a');
    c.onPersist('n2', 2, 1, 1, '0:b');
    expect(got).toEqual([]);
    c.onPersist('n3', 2, 1, 1, '0:X');
    expect(got.map((g) => g.property)).toEqual(['log-matching']);
    c.onPersist('n3', 2, 1, 2, '0:b'); // same entry, but it follows an entry of term 2 there
    expect(got.map((g) => g.property)).toEqual(['log-matching', 'log-matching']);
  });

  it('leader completeness: a new leader lacks an entry committed in an earlier term', () => {
    const { report, got } = recorder();
    const c = new LeaderCompleteness(report);
    c.onCommit('n1', 2, 1, 1);
    c.onCommit('n1', 2, 2, 2);
    const logOk = [0, 1, 2, 3];
    const logBad = [0, 1, 3]; // entry 2 has term 3: the committed (2, term 2) was overwritten
    c.onLeader('n2', 3, 0, 0, (i) => logOk[i]);
    c.onLeader('n3', 2, 0, 0, (i) => logBad[i]); // same term as the commit: not required
    c.onLeader('n4', 4, 2, 2, () => undefined); // covered by its snapshot
    expect(got).toEqual([]);
    c.onLeader('n5', 4, 0, 0, (i) => logBad[i]);
    expect(got.map((g) => g.property)).toEqual(['leader-completeness']);
    expect(got[0]!.detail).toContain('(2, term 2)');
    // Two leaders committing different terms at one index is a state machine violation.
    c.onCommit('n9', 5, 2, 3);
    expect(got.map((g) => g.property)).toEqual(['leader-completeness', 'state-machine-safety']);
  });

  it('state machine safety: divergent applied histories, gaps, wrong snapshots', () => {
    const { report, got } = recorder();
    const c = new StateMachineSafety(report);
    c.onApply('n1', 0, 1, 1, '0:a');
    c.onApply('n1', 1, 2, 1, '0:b');
    c.onApply('n2', 0, 1, 1, '0:a');
    c.onRestore('n3', 2, chainHash(chainHash(0, 1, 1, '0:a'), 2, 1, '0:b'));
    expect(got).toEqual([]);
    c.onApply('n2', 1, 2, 1, '0:c'); // divergent
    expect(got.map((g) => g.property)).toEqual(['state-machine-safety']);
    c.onApply('n3', 2, 4, 1, '0:d'); // skipped index 3
    c.onRestore('n4', 2, 12345); // a snapshot whose state is not the history's
    expect(got.map((g) => g.property)).toEqual(['state-machine-safety', 'state-machine-safety', 'state-machine-safety']);
  });

  it('linearizable reads: a read started after an acknowledged write must see it', () => {
    const { report, got } = recorder();
    const c = new LinearizableReads(report);
    c.onReadStart('r:early', 'n2', 1); // started before the ack: may miss it
    c.onWriteAck('w:1', 10);
    c.onReadStart('r:ok', 'n1', 2);
    c.onReadStart('r:stale', 'n2', 3);
    c.onReadServed('r:early', 'n2', 9, 9);
    c.onReadServed('r:ok', 'n1', 10, 11);
    expect(got).toEqual([]);
    c.onReadServed('r:stale', 'n2', 9, 9); // a stale leader's read index
    expect(got.map((g) => g.property)).toEqual(['linearizable-reads']);
    expect(got[0]!.detail).toContain('w:1');
    c.onWriteAck('w:2', 12);
    c.onReadStart('r:early-serve', 'n1', 4);
    c.onReadServed('r:early-serve', 'n1', 12, 11); // served before applied reached the read index
    expect(got.map((g) => g.property)).toEqual(['linearizable-reads', 'linearizable-reads']);
  });

  it('durability: an acknowledged write missing from the final state', () => {
    const history = new StateMachineSafety(() => {});
    history.onApply('n1', 0, 1, 1, '0:w:1');
    history.onApply('n1', 1, 2, 1, '0:w:2');
    const ok = recorder();
    checkDurability(ok.report, [{ id: 'w:1', index: 1, term: 1 }, { id: 'w:2', index: 2, term: 1 }], history, new Map([['n1', 2], ['n2', 2]]));
    expect(ok.got).toEqual([]);
    const lost = recorder();
    checkDurability(lost.report, [{ id: 'w:3', index: 2, term: 1 }], history, new Map([['n1', 2]]));
    expect(lost.got.map((g) => g.property)).toEqual(['durability']);
    const behind = recorder();
    checkDurability(behind.report, [{ id: 'w:2', index: 2, term: 1 }], history, new Map([['n1', 2], ['n2', 1]]));
    expect(behind.got.map((g) => g.property)).toEqual(['durability']);
    expect(behind.got[0]!.detail).toContain('n2');
  });

  it('liveness: no leader, uncommitted log, unacknowledged writes, a member behind or down', () => {
    const leader = { id: 'n1', commit: 5, lastIndex: 5, members: ['n1', 'n2', 'n3'] };
    const nodes = new Map([
      ['n1', { alive: true, applied: 5 }],
      ['n2', { alive: true, applied: 5 }],
      ['n3', { alive: true, applied: 5 }],
    ]);
    expect(convergence({ leader, unacked: [], nodes })).toBe('');
    expect(convergence({ leader: null, unacked: [], nodes })).toBe('no leader');
    expect(convergence({ leader: { ...leader, lastIndex: 6 }, unacked: [], nodes })).toContain('commit 5 < last 6');
    expect(convergence({ leader, unacked: ['w:7'], nodes })).toContain('w:7');
    expect(convergence({ leader, unacked: [], nodes: new Map([...nodes, ['n3', { alive: true, applied: 4 }]]) })).toContain('n3 applied 4');
    expect(convergence({ leader, unacked: [], nodes: new Map([...nodes, ['n2', { alive: false, applied: 5 }]]) })).toContain('n2 down');
  });

  it('commit quorum: a commit index the disks of a majority do not hold', () => {
    const { report, got } = recorder();
    const disks = new Set(['n1', 'n2']);
    const holds = (id: string): boolean => disks.has(id);
    expect(checkCommitQuorum(report, 'n1', 5, 2, [['n1', 'n2', 'n3']], holds)).toBe(true);
    // Either configuration (before or after a change) may be the one that counted.
    expect(checkCommitQuorum(report, 'n1', 5, 2, [['n1', 'n2', 'n3', 'n4', 'n5'], ['n1', 'n2', 'n3']], holds)).toBe(true);
    expect(got).toEqual([]);
    expect(checkCommitQuorum(report, 'n1', 5, 2, [['n1', 'n2', 'n3', 'n4']], holds)).toBe(false);
    expect(got.map((g) => g.property)).toEqual(['commit-quorum']);
    expect(got[0]!.detail).toContain('(5, term 2)');
  });

  it('the suite stamps violations with seed and tick', () => {
    const c = new Checkers(99);
    c.tick = 17;
    c.election.onLeader('a', 1);
    c.election.onLeader('b', 1);
    expect(c.failed).toBe(true);
    expect(c.violations).toEqual([{ property: 'election-safety', seed: 99, tick: 17, detail: expect.stringContaining('two leaders') }]);
  });
});
