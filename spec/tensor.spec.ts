import { MemoryBudgetError, ShapeError, fmtShape, fmtValue } from '../lib/errors.js';
import { getMemoryBudget, setMemoryBudget } from '../lib/memory.js';
import { Rng } from '../lib/rng.js';
import { allocData, asType, copy, fromJSON, randomNormal, randomUniform, reshape, tensor, zeros } from '../lib/tensor.js';
import { expect } from './helpers/setup.js';

describe('errors: fmtValue and fmtShape quote what they received', () => {
  it('numbers as JavaScript writes them, never as JSON null', () => {
    expect(fmtValue(Infinity)).to.equal('Infinity');
    expect(fmtValue(-Infinity)).to.equal('-Infinity');
    expect(fmtValue(NaN)).to.equal('NaN');
    expect(fmtValue(-0)).to.equal('-0');
    expect(fmtValue({ units: 1e999 })).to.equal('{"units": Infinity}');
    expect(fmtValue([1, NaN, -Infinity])).to.equal('[1, NaN, -Infinity]');
  });

  it('strings in quotes, bigint with n, undefined, null, nested values and typed arrays', () => {
    expect(fmtValue('abc')).to.equal('"abc"');
    expect(fmtValue('2')).to.equal('"2"');
    expect(fmtValue(12n)).to.equal('12n');
    expect(fmtValue(undefined)).to.equal('undefined');
    expect(fmtValue(null)).to.equal('null');
    expect(fmtValue({ a: undefined, b: ['x', 2] })).to.equal('{"a": undefined, "b": ["x", 2]}');
    expect(fmtValue(new Float32Array([1, 2]))).to.equal('Float32Array [1, 2]');
  });

  it('cycles and long values are cut, not thrown or unbounded', () => {
    const o: Record<string, unknown> = { a: 1 };
    o.self = o;
    expect(fmtValue(o)).to.equal('{"a": 1, "self": [Circular]}');
    const long = fmtValue(Array.from({ length: 500 }, (_, i) => i));
    expect(long.length).to.be.at.most(120);
    expect(long.endsWith('...')).to.equal(true);
  });

  it('a shape with a string extent reads as a string', () => {
    expect(fmtShape([3, 10, 10, 1])).to.equal('[3, 10, 10, 1]');
    expect(fmtShape(['2'])).to.equal('["2"]');
    expect(fmtShape([NaN, Infinity])).to.equal('[NaN, Infinity]');
    expect(fmtShape('2')).to.equal('"2"');
  });
});

describe('tensor: bad data and shapes are ShapeErrors naming the expected and the received', () => {
  it('too many and too few values (no silent zero padding)', () => {
    expect(() => tensor([1, 2, 3, 4, 5], [2, 2])).to.throw(ShapeError, 'tensor: expected 4 values for shape [2, 2], received 5');
    expect(() => tensor([1, 2, 3], [2, 2])).to.throw(ShapeError, 'tensor: expected 4 values for shape [2, 2], received 3');
    expect(() => tensor(new Float64Array(3), [2, 2])).to.throw(ShapeError, 'received 3');
    expect(() => tensor(new Float64Array(5), [2, 2], 'float32')).to.throw(ShapeError, 'received 5');
    expect(tensor([1, 2, 3, 4], [2, 2]).get(1, 0)).to.equal(3);
  });

  it('non-numeric values are quoted as received, not as NaN', () => {
    expect(() => tensor(['abc'] as never, [1])).to.throw(ShapeError, 'tensor: expected numbers, received "abc" at index 0');
    expect(() => tensor([1, undefined] as never, [2])).to.throw(ShapeError, 'received undefined at index 1');
    expect(() => tensor('abc' as never, [3])).to.throw(ShapeError, 'expected data to be an array or typed array of numbers, received "abc"');
    expect(() => tensor(null as never, [1])).to.throw(ShapeError, 'received null');
    expect(() => tensor(new BigInt64Array(1) as never, [1])).to.throw(ShapeError, 'BigInt64Array');
    // NaN is a number: a tensor may hold it (assertFinite is where it is refused).
    expect(Number.isNaN(tensor([NaN], [1]).data[0])).to.equal(true);
  });

  it('shapes: strings, fractions, negatives, non-finite values and non-arrays', () => {
    const re = (s: string) => new RegExp(`expected a shape of non-negative integers.*, received ${s.replace(/[[\]]/g, '\\$&')}$`);
    expect(() => tensor([1, 2], ['2'] as never)).to.throw(ShapeError, re('["2"]'));
    expect(() => zeros([2.5])).to.throw(ShapeError, re('[2.5]'));
    expect(() => zeros([-1])).to.throw(ShapeError, re('[-1]'));
    expect(() => zeros([Infinity])).to.throw(ShapeError, re('[Infinity]'));
    expect(() => zeros([NaN, 2])).to.throw(ShapeError, re('[NaN, 2]'));
    expect(() => zeros('3' as never)).to.throw(ShapeError, 'zeros: expected a shape (an array of non-negative integers), received "3"');
    expect(() => tensor([1], [1], 'float16' as never)).to.throw(ShapeError, 'expected dtype "float64" or "float32", received "float16"');
    expect(() => reshape(zeros([4]), ['2', 2] as never)).to.throw(ShapeError, 'to ["2", 2]');
  });

  it('fromJSON checks the shape, the count and every value', () => {
    expect(() => fromJSON({ shape: [2], data: [1, 'x'] } as never, 'float64', 'x')).to.throw(ShapeError, 'x: expected numbers in "data", received "x" at index 1');
    expect(() => fromJSON({ shape: ['2'], data: [1, 2] } as never, 'float64', 'x')).to.throw(ShapeError, 'received ["2"]');
    expect(() => fromJSON({ shape: [3], data: [1, 2] }, 'float64', 'x')).to.throw(ShapeError, 'x: shape [3] needs 3 values, received 2');
    expect(() => fromJSON({ shape: [1], data: 'abc' } as never, 'float64', 'x')).to.throw(ShapeError, 'x: expected {"shape": [...], "data": [...]}, received {"shape": [1], "data": "abc"}');
  });
});

describe('tensor: every allocator refuses a huge size before allocating', () => {
  const huge = [100000, 100000, 3];
  const refused = (f: () => unknown, what: RegExp) => {
    let err: unknown;
    try {
      f();
    } catch (e) {
      err = e;
    }
    expect(err, 'thrown').to.be.instanceOf(MemoryBudgetError);
    const e = err as MemoryBudgetError;
    expect(e.message).to.match(what);
    expect(e.message).to.include('223.52 GiB (240000000000 bytes)');
    expect(e.message).to.include(`over the memory budget of 4.00 GiB`);
    expect(e.estimateBytes).to.equal(240000000000);
    expect(e.budgetBytes).to.equal(getMemoryBudget());
  };

  it('zeros, randomUniform, randomNormal and allocData name the bytes and the budget', () => {
    refused(() => zeros(huge), /^tensor \[100000, 100000, 3\] \(float64\): needs an estimated/);
    refused(() => randomUniform(huge, new Rng(0)), /^tensor \[100000, 100000, 3\]/);
    refused(() => randomNormal(huge, new Rng(0)), /^tensor \[100000, 100000, 3\]/);
    refused(() => allocData(3e10), /^buffer of 30000000000 float64 values/);
    // Float32 halves the bytes: the same shape at 2^29 + 1 values is refused only in float64.
    expect(() => zeros([2 ** 29 + 1], 'float64')).to.throw(MemoryBudgetError);
    expect(() => allocData(-1)).to.throw(ShapeError, 'received -1');
    expect(() => allocData(1.5)).to.throw(ShapeError, 'received 1.5');
  });

  it('a lower budget applies to every later allocation, and copy goes through the same guard', () => {
    const before = getMemoryBudget();
    const t = zeros([1000]);
    try {
      setMemoryBudget(4000);
      expect(() => zeros([1000])).to.throw(MemoryBudgetError, 'needs an estimated 7.81 KiB (8000 bytes), over the memory budget of 3.91 KiB');
      expect(() => copy(t)).to.throw(MemoryBudgetError);
      expect(zeros([1000], 'float32').size).to.equal(1000);
    } finally {
      setMemoryBudget(before);
    }
  });
});

describe('tensor: asType', () => {
  it('converts buffer to buffer, row-major from any view, under the same guard', () => {
    const t = tensor([1, 2, 3, 4, 5, 6], [2, 3]).transpose(1, 0);
    const f = asType(t, 'float32');
    expect(f.data).to.be.instanceOf(Float32Array);
    expect(Array.from(f.data)).to.deep.equal([1, 4, 2, 5, 3, 6]);
    expect(f.shape).to.deep.equal([3, 2]);
    const five = tensor([1, 2, 3, 4, 5], [5]);
    const before = getMemoryBudget();
    try {
      setMemoryBudget(16);
      expect(() => asType(five, 'float32')).to.throw(MemoryBudgetError, 'tensor [5] (float32): needs an estimated 20 B (20 bytes), over the memory budget of 16 B');
    } finally {
      setMemoryBudget(before);
    }
  });
});
