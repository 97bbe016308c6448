import { describe, expect, it } from 'vitest';
import { median, summarize } from '../bench/lib/util.js';

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
