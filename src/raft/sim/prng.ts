// Seeded pseudo-random numbers for the simulator. Pure: no Math.random, no clocks.
// mulberry32 for the stream, splitmix-style mixing to derive independent sub-streams.

/** 32-bit integer mix (murmur3 finalizer). */
export function mix32(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

/** FNV-1a style hash of a string, continuing from `h`. */
export function hashString(s: string, h = 0x811c9dc5): number {
  for (let i = 0; i < s.length; i++) {
    h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  }
  return h >>> 0;
}

/** Combines a running hash with one 32-bit number. */
export function hashNum(h: number, n: number): number {
  h = Math.imul(h ^ (n | 0), 0x01000193);
  h = Math.imul(h ^ Math.floor(n / 4294967296), 0x01000193);
  return mix32(h);
}

export class Prng {
  private state: number;

  constructor(seed: number) {
    this.state = mix32((seed >>> 0) ^ 0x9e3779b9) || 0x6d2b79f5;
  }

  /** Next raw 32-bit unsigned integer (mulberry32). */
  nextU32(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** Float in [0, 1). */
  next(): number {
    return this.nextU32() / 4294967296;
  }

  /** Integer in [0, n). */
  int(n: number): number {
    if (n <= 1) return 0;
    return Math.floor(this.next() * n);
  }

  /** Integer in [lo, hi] (inclusive). */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  /** True with probability p. */
  chance(p: number): boolean {
    if (p <= 0) return false;
    if (p >= 1) return true;
    return this.next() < p;
  }

  pick<T>(arr: readonly T[]): T {
    if (arr.length === 0) throw new Error('prng: pick from an empty array');
    return arr[this.int(arr.length)]!;
  }

  /** Fisher–Yates shuffle in place. */
  shuffle<T>(arr: T[]): T[] {
    for (let i = arr.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const t = arr[i]!;
      arr[i] = arr[j]!;
      arr[j] = t;
    }
    return arr;
  }

  /** An independent generator derived from this one's seed material and a label. */
  fork(label: string | number): Prng {
    const l = typeof label === 'number' ? mix32(label + 0x632be5ab) : hashString(label);
    return new Prng(mix32(this.nextU32() ^ l));
  }
}

/** A generator for (seed, stream): independent of how much other streams consumed. */
export function derive(seed: number, stream: string | number): Prng {
  const l = typeof stream === 'number' ? mix32(stream + 0x632be5ab) : hashString(stream);
  return new Prng(mix32(mix32(seed >>> 0) ^ l));
}
