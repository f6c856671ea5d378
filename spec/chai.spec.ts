import { AssertionError } from 'chai';
import { DenseJacobian } from '../lib/jacobian.js';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { allclose, allcloseReport } from '../lib/allclose.js';
import { ConfigError, ShapeError } from '../lib/errors.js';
import { tensor } from '../lib/tensor.js';
import { expect } from './helpers/setup.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** The message of the assertion error `fn` throws; fails the spec if it throws nothing. */
function failure(fn: () => void): string {
  try {
    fn();
  } catch (e) {
    expect(e).to.be.instanceOf(AssertionError);
    return (e as Error).message;
  }
  throw new Error('expected the assertion to fail, but it passed');
}

describe('chai allclose', () => {
  it('passes on values within |a - e| <= atol + rtol·|e|, with NumPy\'s defaults', () => {
    expect(tensor([1, 2, 3], [3])).to.be.allclose(tensor([1 + 5e-6, 2 - 1e-5, 3], [3]));
    expect(1e-9).to.be.allclose(0);
    expect([1.001]).to.be.allclose([1], { rtol: 1e-3, atol: 0 });
    expect([0.5]).to.be.allclose([0], { rtol: 0, atol: 0.5 });
  });

  it('fails on far values, naming the worst index, both values and both errors', () => {
    const msg = failure(() => expect(tensor([1, 2, 3, 4.5], [2, 2])).to.be.allclose(tensor([1, 2, 3, 4], [2, 2]), { rtol: 1e-6, atol: 0 }));
    expect(msg).to.contain('1 of 4 elements differ beyond rtol=0.000001, atol=0');
    expect(msg).to.contain('worst at [1, 1]');
    expect(msg).to.contain('actual 4.5, expected 4');
    expect(msg).to.contain('abs error 5.000e-1');
    expect(msg).to.contain('rel error 1.250e-1');
  });

  it('the worst element is the one furthest beyond its own tolerance, not the largest absolute error', () => {
    // 1000.1 vs 1000 is 10 tolerances off; 1.01 vs 1 is about 1000 tolerances off.
    const msg = failure(() => expect([[1000.1, 1.01], [7, 7]]).to.be.allclose([[1000, 1], [7, 7]], { rtol: 1e-5, atol: 0 }));
    expect(msg).to.contain('2 of 4 elements differ');
    expect(msg).to.contain('worst at [0, 1]: actual 1.01, expected 1');
  });

  it('reports a shape mismatch first, before any value', () => {
    const msg = failure(() => expect(tensor([1, 2, 3, 4], [4])).to.be.allclose(tensor([1, 2, 3, 4], [2, 2])));
    expect(msg).to.match(/expected shape \[2, 2\], received shape \[4\]/);
    expect(msg).to.not.contain('worst');
    const rank = failure(() => expect([[1, 2, 3]]).to.be.allclose([1, 2, 3]));
    expect(rank).to.match(/expected shape \[3\], received shape \[1, 3\]/);
    expect(failure(() => expect(5).to.be.allclose([5]))).to.match(/expected shape \[1\], received shape \[\]/);
  });

  it('works on tensors, Jacobians, {shape, data}, nested arrays and numbers, in any pairing', () => {
    const values = tensor([1, 2, 3, 4, 5, 6], [1, 2, 3]);
    const J = new DenseJacobian(values, 1, [2], [3]);
    const nested = [[[1, 2, 3], [4, 5, 6]]];
    const plain = { shape: [1, 2, 3], data: [1, 2, 3, 4, 5, 6] };
    for (const a of [values, J, nested, plain]) for (const e of [values, J, nested, plain]) expect(a).to.be.allclose(e, { rtol: 0, atol: 0 });
    expect(J).to.be.allclose(values);
    expect(3).to.be.allclose(3 + 1e-12);
    expect(tensor([3], [])).to.be.allclose(3);
    const msg = failure(() => expect(J).to.be.allclose([[[1, 2, 3], [4, 5, 7]]]));
    expect(msg).to.contain('worst at [0, 1, 2]: actual 6, expected 7');
    // A strided view (a transpose) is read in its own logical order, not its buffer's.
    const t = tensor([1, 2, 3, 4, 5, 6], [2, 3]).transpose(1, 0);
    expect(t).to.be.allclose([[1, 4], [2, 5], [3, 6]], { rtol: 0, atol: 0 });
  });

  it('handles NaN as NumPy: NaN never matches by default, NaN matches NaN with equalNan; equal infinities match', () => {
    expect([1, Number.NaN]).to.not.be.allclose([1, Number.NaN]);
    expect(allclose(Number.NaN, Number.NaN)).to.equal(false);
    expect(allclose(Number.NaN, Number.NaN, { equalNan: true })).to.equal(true);
    expect(allclose(Number.NaN, 1, { equalNan: true })).to.equal(false);
    expect([1, Number.NaN]).to.be.allclose([1, Number.NaN], { equalNan: true });
    const nanMsg = failure(() => expect([1, Number.NaN]).to.be.allclose([1, Number.NaN]));
    expect(nanMsg).to.contain('1 of 2 elements differ');
    expect(nanMsg).to.contain('worst at [1]: actual NaN, expected NaN');
    expect(nanMsg).to.contain('NaN matches NaN only with { equalNan: true }');
    expect(allcloseReport([Number.NaN, 2], [Number.NaN, 2]).mismatches).to.equal(1);
    expect([Infinity, -Infinity]).to.be.allclose([Infinity, -Infinity]);
    const msg = failure(() => expect([1.5, Number.NaN, 3]).to.be.allclose([1, 2, 3]));
    expect(msg).to.contain('2 of 3 elements differ');
    expect(msg).to.contain('worst at [1]: actual NaN, expected 2');
    expect(failure(() => expect([2]).to.be.allclose([Number.NaN]))).to.contain('actual 2, expected NaN');
    expect(failure(() => expect([Infinity]).to.be.allclose([-Infinity]))).to.contain('actual Infinity, expected -Infinity');
    // An infinite expected value would make the tolerance infinite: only the same infinity matches it.
    expect(failure(() => expect([1, 1e300]).to.be.allclose([1, Infinity]))).to.contain('worst at [1]: actual 1e+300, expected Infinity');
  });

  it('negates: .not.allclose passes on far values and fails on close ones', () => {
    expect([1, 2]).to.not.be.allclose([1, 3]);
    expect([1, 2]).to.not.be.allclose([1, 2, 3]);
    expect(failure(() => expect([1, 2]).to.not.be.allclose([1, 2 + 1e-7], { rtol: 1e-6 }))).to.match(/expected values not to be allclose, but they are \(max rel error 5\.000e-8\)/);
  });

  it('includes a custom message', () => {
    expect(failure(() => expect([1], 'JVP vs finite differences').to.be.allclose([2]))).to.match(/^JVP vs finite differences: expected values to be allclose/);
  });
});

describe('allclose: bad input is refused, not compared as NaN', () => {
  it('ragged or non-numeric nested arrays and unknown values are ShapeErrors quoting them', () => {
    expect(() => allclose([[1, 2], [3]], [[1, 2], [3, 4]])).to.throw(ShapeError, 'allclose: expected rectangular nested arrays of shape [2, 2], received a row of 1 at [1]');
    expect(() => allclose([1, 'abc'] as never, [1, 2])).to.throw(ShapeError, 'allclose: expected numbers in nested arrays, received "abc" at [1]');
    expect(() => allclose({ shape: [3], data: [1, 2] }, [1, 2, 3])).to.throw(ShapeError, 'expected {shape, data} with 3 values for shape [3], received 2');
    expect(() => allclose('abc' as never, 1)).to.throw(ShapeError, 'received "abc"');
    // null (a non-trainable parameter's gradient) is comparable: it equals only null.
    expect(allclose(null as never, 1)).to.equal(false);
    expect(allclose(null as never, null as never)).to.equal(true);
  });

  it('bad options are ConfigErrors, not silent defaults', () => {
    expect(() => allclose(1, 1, { rtol: -1 })).to.throw(ConfigError, 'expected rtol to be a non-negative finite number, received -1');
    expect(() => allclose(1, 1, { atol: Number.NaN })).to.throw(ConfigError, 'expected atol to be a non-negative finite number, received NaN');
    expect(() => allclose(1, 1, { rtol: '1e-3' } as never)).to.throw(ConfigError, 'received "1e-3"');
    expect(() => allclose(1, 1, { equalNan: 'yes' } as never)).to.throw(ConfigError, 'expected equalNan to be a boolean, received "yes"');
    expect(() => allclose(1, 1, { rtl: 1 } as never)).to.throw(ConfigError, 'unknown option "rtl"');
  });
});

describe("chai allclose under mocha's reporter", () => {
  /** Runs mocha on `source` in a child process (no .mocharc: only this file), returning its exit code and output. */
  function runMocha(source: string): Promise<{ code: number | null; out: string }> {
    const dir = mkdtempSync(join(tmpdir(), 'jc-chai-'));
    const file = join(dir, 'failing.spec.ts');
    writeFileSync(file, source);
    return new Promise((resolve, reject) => {
      const child = spawn('npx', ['mocha', '--no-config', '--node-option', 'import=tsx', '--reporter', 'spec', '--no-color', file], { cwd: ROOT, env: { ...process.env, FORCE_COLOR: '0' } });
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (out += d));
      child.on('error', reject);
      child.on('close', (code) => {
        rmSync(dir, { recursive: true, force: true });
        resolve({ code, out });
      });
    });
  }

  it('prints the whole failure message (shape mismatch, value mismatch, with and without a custom message)', async function () {
    this.timeout(60_000);
    const url = (p: string) => JSON.stringify(pathToFileURL(join(ROOT, p)).href);
    const source = `
      import * as chai from ${url('node_modules/chai/index.js')};
      import { chaiAllclose } from ${url('lib/chai.ts')};
      import { tensor } from ${url('lib/tensor.ts')};
      chai.use(chaiAllclose);
      const { expect } = chai;
      describe('plugin', () => {
        it('shape', () => expect(tensor([1, 2, 3, 4], [4])).to.be.allclose(tensor([1, 2, 3, 4], [2, 2])));
        it('shape with a message', () => expect(tensor([1, 2, 3, 4], [4]), 'stage 0 dOut/dIn').to.be.allclose(tensor([1, 2, 3, 4], [2, 2])));
        it('values', () => expect(tensor([1, 2, 3, 4.5], [2, 2])).to.be.allclose(tensor([1, 2, 3, 4], [2, 2]), { rtol: 1e-6, atol: 0 }));
        it('values with a message', () => expect([1, 7], 'JVP vs finite differences').to.be.allclose([1, 2]));
      });
    `;
    const { code, out } = await runMocha(source);
    expect(out, out).to.contain('4 failing');
    expect(code, out).to.equal(4);
    expect(out).to.contain('expected values to be allclose: expected shape [2, 2], received shape [4]');
    expect(out).to.contain('stage 0 dOut/dIn: expected values to be allclose: expected shape [2, 2], received shape [4]');
    expect(out).to.contain('expected values to be allclose: 1 of 4 elements differ beyond rtol=0.000001, atol=0; worst at [1, 1]: actual 4.5, expected 4, abs error 5.000e-1, rel error 1.250e-1');
    expect(out).to.contain('JVP vs finite differences: expected values to be allclose: 1 of 2 elements differ beyond rtol=0.00001, atol=1e-8; worst at [1]: actual 7, expected 2');
  });
});

describe('maxDifference', () => {
  it('gives the largest absolute difference and the same relative to the largest reference magnitude', async () => {
    const { maxDifference } = await import('../lib/allclose.js');
    expect(maxDifference(tensor([1, 2.5, -4], [3]), tensor([1, 2, -5], [3]))).to.deep.equal({ maxAbs: 1, maxRef: 5, rel: 0.2 });
    expect(maxDifference([0, 0], [0, 0]).rel).to.equal(0);
    expect(() => maxDifference([1, 2], [1])).to.throw(/expected 1 values, received 2/);
  });
});
