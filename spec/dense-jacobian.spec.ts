import { ConfigError, ShapeError } from '../lib/errors.js';
import { jacobianWrtInput, jacobianWrtWeights } from '../lib/jacobian.js';
import { fullJacobianWrtInput, jacobianWrtInputByVjp } from '../lib/dense-jacobian.js';
import { Conv2D } from '../lib/layers/conv2d.js';
import { Dense } from '../lib/layers/dense.js';
import { Flatten } from '../lib/layers/flatten.js';
import { Rng } from '../lib/rng.js';
import { Sequential } from '../lib/sequential.js';
import { randomNormal, tensor, zeros } from '../lib/tensor.js';
import { expect } from './helpers/setup.js';

describe('dense-jacobian: building J into a buffer of the caller (into)', () => {
  const model = () => new Sequential([new Conv2D({ filters: 3, kernel_size: 2, activation: 'relu' }), new Flatten({}), new Dense({ units: 4, activation: 'tanh' })], { inputShape: [5, 4, 2], rng: new Rng(3) });

  it('gives the bits of a fresh J, in the buffer given, and zeroes what the buffer held before', () => {
    const f = model();
    const x = randomNormal([2, 5, 4, 2], new Rng(5));
    const fresh = jacobianWrtInput(f, x);
    const into = randomNormal([2, 4, 5, 4, 2], new Rng(6)); // stale values: each must be overwritten or zeroed
    const J = jacobianWrtInput(f, x, { into, tangents: 7 });
    expect(J.values.data).to.equal(into.data);
    expect(Array.from(into.data)).to.deep.equal(Array.from(fresh.values.data));
    const again = jacobianWrtInput(f, randomNormal([2, 5, 4, 2], new Rng(8)), { into });
    expect(Array.from(again.values.data)).to.not.deep.equal(Array.from(fresh.values.data));
  });

  it('refuses a buffer of another shape, dtype or layout, quoting what it received, before any work', () => {
    const f = model();
    const x = randomNormal([2, 5, 4, 2], new Rng(5));
    expect(() => jacobianWrtInput(f, x, { into: zeros([2, 4, 40]) })).to.throw(ShapeError, /into.*\[2, 4, 5, 4, 2\].*\[2, 4, 40\]/);
    expect(() => jacobianWrtInput(f, x, { into: zeros([2, 4, 5, 4, 2], 'float32') })).to.throw(ShapeError, /expected dtype float64.*received float32/);
    const big = zeros([4, 4, 5, 4, 2]);
    expect(() => jacobianWrtInput(f, x, { into: big.hi(2, 4, 5, 4, 2) as typeof big })).to.throw(ShapeError, /contiguous.*received a view/);
    const xInJ = zeros([2, 4, 5, 4, 2]);
    const aliased = tensor(xInJ.data.subarray(0, 2 * 5 * 4 * 2), [2, 5, 4, 2]);
    aliased.data.set(x.data);
    expect(() => jacobianWrtInput(f, aliased, { into: xInJ })).to.throw(ShapeError, /shared with the input x/);
    expect(() => jacobianWrtInput(f, x, { into: zeros([2, 4, 5, 4, 2]), mode: 'auto' })).to.throw(ConfigError, /into only with the dense forward builder.*"mode":"auto"/);
    expect(() => jacobianWrtWeights(f, x, { into: zeros([2, 4, 5, 4, 2]) })).to.throw(ConfigError, /expected no into/);
    expect(() => fullJacobianWrtInput(f, x, { into: zeros([2, 4, 5, 4, 2]) })).to.throw(ConfigError, /expected no into/);
  });
});

describe('dense-jacobian: buffers reused from one build to the next', () => {
  it('a second build, on the seeds and tangent blocks the first gave back, has the first one\'s bits and the VJP rows\' values', () => {
    // Wide enough that the seeds and the tangent blocks are pooled (at least 8192 elements each).
    const f = new Sequential([new Conv2D({ filters: 4, kernel_size: 3, activation: 'relu' }), new Flatten({}), new Dense({ units: 3 })], { inputShape: [12, 12, 3], rng: new Rng(4) });
    const x = randomNormal([2, 12, 12, 3], new Rng(9));
    const first = jacobianWrtInput(f, x, { tangents: 64 });
    const other = jacobianWrtInput(f, randomNormal([2, 12, 12, 3], new Rng(10)), { tangents: 64 });
    const second = jacobianWrtInput(f, x, { tangents: 64 });
    expect(Array.from(second.values.data)).to.deep.equal(Array.from(first.values.data));
    expect(Array.from(other.values.data)).to.not.deep.equal(Array.from(first.values.data));
    expect(second.values).to.be.allclose(jacobianWrtInputByVjp(f, x).values, { rtol: 1e-12, atol: 1e-14 });
  });
});
