import { ConfigError } from '../lib/errors.js';
import { Rng } from '../lib/rng.js';
import { expect } from './helpers/setup.js';

describe('Rng', () => {
  it('a seed that is not a 32-bit integer is refused, quoted as received (NaN no longer acts as seed 0)', () => {
    for (const [seed, quoted] of [[Number.NaN, 'NaN'], [Infinity, 'Infinity'], [-Infinity, '-Infinity'], [1.5, '1.5'], [2 ** 32, '4294967296'], [-(2 ** 31) - 1, '-2147483649'], ['7', '"7"'], [null, 'null'], [3n, '3n']] as const) {
      expect(() => new Rng(seed as never), quoted).to.throw(ConfigError, `Rng: expected seed to be an integer in [-2147483648, 4294967295], received ${quoted}`);
    }
  });

  it('every accepted seed gives its own stream, the same on every construction', () => {
    const first = (seed?: number) => new Rng(seed).nextUint32();
    expect(first(0)).to.equal(first());
    expect(first(42)).to.equal(first(42));
    const seeds = [0, 1, 2 ** 32 - 1, -1, -(2 ** 31), 12345];
    // -1 and 2^32 - 1 are the same 32-bit pattern: the one alias the range allows, by design.
    expect(first(-1)).to.equal(first(2 ** 32 - 1));
    expect(new Set(seeds.map(first)).size).to.equal(seeds.length - 1);
  });
});
