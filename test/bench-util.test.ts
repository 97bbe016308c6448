import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { median, summarize } from '../bench/lib/util.js';
import { windowMedian, writeReport } from '../bench/report.js';
import { summarizeHeap } from '../bench/heap.js';
import { execFileSync } from 'node:child_process';

describe('benchmark summaries', () => {
  it('takes the mean of the two middle values as the median of an even count', () => {
    // the failover trials of one run: the lower middle value is 450, the upper 540
    expect(median([1078, 420, 450, 540, 300, 610, 380, 700, 900, 400])).toBe(495);
    expect(median([4, 1, 3, 2])).toBe(2.5);
  });
  it('takes the middle value of an odd count, and NaN of none', () => {
    expect(median([5, 1, 3])).toBe(3);
    expect(median([7])).toBe(7);
    expect(Number.isNaN(median([]))).toBe(true);
  });
  it('keeps nearest-rank p90/p99 and the extremes', () => {
    const s = summarize(Array.from({ length: 100 }, (_, i) => 100 - i));
    expect(s).toMatchObject({ n: 100, min: 1, max: 100, p50: 50.5, p90: 90, p99: 99 });
  });
});

describe('the failover report', () => {
  const trials = (ws: number[]) => ws.map((windowMs) => ({ windowMs }));
  // The stored results of 2026-12-04: medians written as the lower middle value.
  const flotilla = { label: 'flotilla (defaults: heartbeat 50 ms, election 300–600 ms)', trials: trials([1077.9, 450.3, 441.4, 633.5, 778.5, 438.6, 435.1, 539.1, 405.9, 871.7]), windowMs: { n: 10, min: 405.9, median: 450.3, max: 1077.9 }, failedTrials: 0 };
  const etcd = { label: 'etcd (defaults: heartbeat 100 ms, election 1000 ms)', trials: trials([1572.7, 1553.1, 2542.8, 1541.6, 1558.5, 1570.3, 1543.9, 1037.1, 2633.5, 2160.1]), windowMs: { n: 10, min: 1037.1, median: 1558.5, max: 2633.5 }, failedTrials: 0 };
  const etcdFast = { label: 'etcd --heartbeat-interval 50 --election-timeout 300', trials: trials([743.7, 372.2, 323.4, 517.3, 758.1, 653.8, 422.8, 363.6, 526.1, 394]), windowMs: { n: 10, min: 323.4, median: 422.8, max: 758.1 }, failedTrials: 0 };

  it('recomputes each median from the trials (mean of the two middle windows), ignoring failed trials', () => {
    expect(windowMedian(flotilla)).toBeCloseTo(494.7, 5);
    expect(windowMedian(etcd)).toBeCloseTo(1564.4, 5);
    expect(windowMedian({ trials: [{ windowMs: 300 }, { windowMs: null }, { windowMs: 500 }], windowMs: { median: 300 } })).toBe(400);
    expect(windowMedian({ windowMs: { median: 123 } })).toBe(123); // no trials kept: the stored figure
  });

  it('prints those medians and their ratios in BENCHMARKS.md', () => {
    const dir = mkdtempSync(join(tmpdir(), 'flotilla-report-'));
    try {
      const result = {
        date: '2026-12-04T19:36:00.000Z',
        command: 'npm run bench -- failover',
        durationSeconds: 97,
        flotilla: { gitSha: '568e62294885' },
        peers: { etcd: '3.4.23' },
        machine: { cpus: 2, cpuModel: 'AMD EPYC', memoryGiB: 23.5, os: 'Linux', node: 'v20', loadavg: [1, 1, 1] },
        parameters: { clients: 16, requestTimeoutMs: 500, retryDelayMs: 10 },
        results: { configs: [flotilla, etcd, etcdFast] },
      };
      writeFileSync(join(dir, 'failover.json'), JSON.stringify(result));
      writeReport(dir, join(dir, 'BENCHMARKS.md'));
      const md = readFileSync(join(dir, 'BENCHMARKS.md'), 'utf8');
      expect(md).toContain('| flotilla (defaults: heartbeat 50 ms, election 300–600 ms) | 10 | 495 | 406 | 1,078 | 0.32× / 1.05× |');
      expect(md).toContain('| etcd (defaults: heartbeat 100 ms, election 1000 ms) | 10 | 1,564 |');
      expect(md).toContain('| etcd --heartbeat-interval 50 --election-timeout 300 | 10 | 470 |');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('heap snapshot summary', () => {
  it('groups a real snapshot by constructor: 50,000 objects of one class come out as one group of that count', () => {
    const dir = mkdtempSync(join(tmpdir(), 'flotilla-heap-test-'));
    try {
      const file = join(dir, 'x.heapsnapshot');
      const script = `const v8 = require('v8'); class SampleRecord { constructor(i) { this.i = i; } } const keep = []; for (let i = 0; i < 50000; i++) keep.push(new SampleRecord(i)); v8.writeHeapSnapshot(${JSON.stringify(file)}); console.log(keep.length);`;
      execFileSync(process.execPath, ['-e', script], { timeout: 60_000 });
      const h = summarizeHeap(file, 50);
      const g = h.groups.find((x) => x.type === 'object' && x.name === 'SampleRecord');
      expect(g?.count).toBe(50_000);
      expect(g!.bytes).toBeGreaterThan(50_000 * 8);
      expect(h.totalBytes).toBeGreaterThan(g!.bytes);
      // sorted by bytes, largest first
      expect(h.groups.map((x) => x.bytes)).toEqual([...h.groups.map((x) => x.bytes)].sort((a, b) => b - a));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('the schedule report', () => {
  const recorded = JSON.parse(readFileSync(join(import.meta.dirname, '..', 'bench', 'results', 'schedule.json'), 'utf8'));
  const render = (r: unknown): string => {
    const dir = mkdtempSync(join(tmpdir(), 'flotilla-report-'));
    try {
      writeFileSync(join(dir, 'schedule.json'), JSON.stringify(r));
      writeReport(dir, join(dir, 'BENCHMARKS.md'));
      return readFileSync(join(dir, 'BENCHMARKS.md'), 'utf8');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };

  it('gives no rate for a second point that had elections, and says how far it got', () => {
    const l = recorded.results.large;
    expect(l.termAtEnd).toBeGreaterThan(l.termAtStart); // the recorded run had elections
    const md = render(recorded);
    expect(md).toContain(`**no figure: ${l.termAtEnd - l.termAtStart} elections** (term ${l.termAtStart} → ${l.termAtEnd})`);
    expect(md).not.toContain(`**${l.placementsPerSecond.toLocaleString('en-US')}**; `);
  });

  it('gives the rate of a second point without an election; prints the CPU of every process and the heap table', () => {
    const quiet = structuredClone(recorded);
    quiet.results.large.termAtEnd = quiet.results.large.termAtStart;
    quiet.results.large.placementsPerSecond = 1234;
    const md = render(quiet);
    expect(md).toContain('| **1,234**; 0; ');
    expect(md).toMatch(/\| CPU seconds of every process over the [\d.]+ s run \(2 cores: at most [\d.]+\) \| leader [\d.]+; follower m\d [\d.]+; follower m\d [\d.]+; simulated workers [\d.]+; benchmark client [\d.]+; \*\*total [\d.]+\*\* \|/);
    expect(md).toContain('| bytes | objects | type | constructor |');
  });
});
