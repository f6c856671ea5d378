/**
 * A small seedable generator (SplitMix32 seeding a xoshiro128** state) so that weights, labels,
 * Dropout masks and shuffles are reproducible across runs and across machines.
 * @module
 */
import { ConfigError, fmtValue } from './errors.js';

/** Seedable uniform random numbers with the few distributions the engine needs. */
export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  /**
   * A generator whose whole stream is fixed by `seed`, an integer in `[-2^31, 2^32 - 1]` (a 32-bit
   * pattern, signed or not). NaN, a fraction or a larger integer is refused: `>>> 0` would map
   * them silently onto another seed (NaN onto 0).
   * @throws ConfigError e.g. `Rng: expected seed to be an integer in [-2147483648, 4294967295], received NaN`
   * @example
   * const rng = new Rng(42);
   * rng.uniform(); // same number on every machine
   */
  constructor(seed = 0) {
    if (typeof seed !== 'number' || !Number.isInteger(seed) || seed < -(2 ** 31) || seed > 2 ** 32 - 1) {
      throw new ConfigError(`Rng: expected seed to be an integer in [-2147483648, 4294967295], received ${fmtValue(seed)}`);
    }
    let x = seed >>> 0;
    const next = (): number => {
      // SplitMix32: spreads a small seed over the 128-bit state.
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s0 = next();
    this.s1 = next();
    this.s2 = next();
    this.s3 = next();
  }

  /**
   * The generator's whole state, four unsigned 32-bit words: {@link Rng.setState} on any generator
   * continues this one's stream exactly (what a checkpoint saves of the data order).
   * @example
   * const s = rng.state();
   * const again = new Rng(); again.setState(s); again.uniform() === rng.uniform(); // true
   */
  state(): [number, number, number, number] {
    return [this.s0 >>> 0, this.s1 >>> 0, this.s2 >>> 0, this.s3 >>> 0];
  }

  /**
   * Restores a state from {@link Rng.state}.
   * @throws ConfigError unless it is four integers in `[0, 2^32 - 1]`, not all zero.
   */
  setState(state: readonly number[]): void {
    if (!Array.isArray(state) || state.length !== 4 || state.some((w) => !Number.isInteger(w) || w < 0 || w > 2 ** 32 - 1) || state.every((w) => w === 0)) {
      throw new ConfigError(`Rng.setState: expected four integers in [0, 4294967295], not all zero, received ${fmtValue(state)}`);
    }
    [this.s0, this.s1, this.s2, this.s3] = state;
  }

  /** The next 32 random bits as an unsigned integer (xoshiro128**). */
  nextUint32(): number {
    const r = Math.imul(rotl(Math.imul(this.s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (this.s1 << 9) >>> 0;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return r;
  }

  /** Uniform in `[lo, hi)` with 53 random bits. */
  uniform(lo = 0, hi = 1): number {
    const a = this.nextUint32() >>> 5;
    const b = this.nextUint32() >>> 6;
    return lo + (hi - lo) * ((a * 67108864 + b) / 9007199254740992);
  }

  /** Standard normal (Box–Muller). */
  normal(): number {
    let u = 0;
    while (u === 0) u = this.uniform();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.uniform());
  }

  /** Integer in `[0, n)`. */
  int(n: number): number {
    return Math.floor(this.uniform() * n);
  }

  /** A Fisher–Yates permutation of `0..n-1`. */
  permutation(n: number): Int32Array {
    const p = new Int32Array(n);
    for (let i = 0; i < n; i++) p[i] = i;
    for (let i = n - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const t = p[i];
      p[i] = p[j];
      p[j] = t;
    }
    return p;
  }

  /** A new generator derived from this one, for an independent stream. */
  fork(): Rng {
    return new Rng(this.nextUint32());
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
