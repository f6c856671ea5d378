import { readFileSync } from 'node:fs';
import { derivative, parse } from 'mathjs';
import { ConfigError, ShapeError } from '../lib/errors.js';
import { type Loss, binary_crossentropy, categorical_crossentropy, lossByName, mse } from '../lib/losses.js';
import { Rng } from '../lib/rng.js';
import { type Tensor, type TensorJSON, copy, fromJSON, tensor, zeros } from '../lib/tensor.js';
import { expect } from './helpers/setup.js';

interface Fixture {
  loss: string;
  y: TensorJSON;
  expected: { loss: number; stageOutputs: TensorJSON[]; dLoss_dStageOutput: TensorJSON[] };
}

function loadFixture(name: string): Fixture {
  return JSON.parse(readFileSync(new URL(`./fixtures/${name}`, import.meta.url), 'utf8')) as Fixture;
}

/** Central finite differences of `loss.value` w.r.t. every element of `p`. */
function fdGradient(loss: Loss, y: Tensor, p: Tensor, h: number): Tensor {
  const g = zeros(p.shape);
  for (let k = 0; k < p.size; k++) {
    const pp = copy(p);
    const pm = copy(p);
    pp.data[k] += h;
    pm.data[k] -= h;
    g.data[k] = (loss.value(y, pp) - loss.value(y, pm)) / (2 * h);
  }
  return g;
}

/** The whole batch loss as one mathjs formula in `p0..pN` and `y0..yN`: an oracle independent of the code. */
function symbolicLoss(name: string, rows: number, cols: number): string {
  const rowTerms: string[] = [];
  for (let r = 0; r < rows; r++) {
    const ks = Array.from({ length: cols }, (_, c) => r * cols + c);
    const S = `(${ks.map((k) => `p${k}`).join(' + ')})`;
    if (name === 'mse') rowTerms.push(`(${ks.map((k) => `(y${k} - p${k})^2`).join(' + ')}) / ${cols}`);
    if (name === 'binary_crossentropy') rowTerms.push(`-(${ks.map((k) => `y${k} * log(p${k}) + (1 - y${k}) * log(1 - p${k})`).join(' + ')}) / ${cols}`);
    if (name === 'categorical_crossentropy') rowTerms.push(`-(${ks.map((k) => `y${k} * log(p${k} / ${S})`).join(' + ')})`);
  }
  return `(${rowTerms.join(' + ')}) / ${rows}`;
}

/** Random labels and predictions inside the clip range, suited to each loss. */
function randomBatch(name: string, shape: number[], rng: Rng): { y: Tensor; p: Tensor } {
  const y = zeros(shape);
  const p = zeros(shape);
  const cols = shape[shape.length - 1];
  for (let k = 0; k < p.size; k++) {
    if (name === 'mse') {
      y.data[k] = rng.normal();
      p.data[k] = rng.normal();
    } else {
      // Soft labels for bce; one-hot rows for cce. Unnormalized p for cce exercises the normalization.
      y.data[k] = name === 'binary_crossentropy' ? rng.uniform() : 0;
      p.data[k] = rng.uniform(0.05, 0.95);
    }
  }
  if (name === 'categorical_crossentropy') for (let r = 0; r < p.size / cols; r++) y.data[r * cols + rng.int(cols)] = 1;
  return { y, p };
}

const ALL: Loss[] = [mse, binary_crossentropy, categorical_crossentropy];

describe('losses', () => {
  describe('golden fixtures (PyTorch autograd, float64)', () => {
    for (const [file, lossName] of [
      ['seed_reference.json', 'mse'],
      ['dense_mlp.json', 'categorical_crossentropy'],
    ] as const) {
      it(`${file}: ${lossName} value and dLoss/dyPred within 1e-10 relative`, () => {
        const fx = loadFixture(file);
        expect(fx.loss).to.equal(lossName);
        const loss = lossByName(fx.loss);
        const last = fx.expected.stageOutputs.length - 1;
        const yTrue = fromJSON(fx.y);
        const yPred = fromJSON(fx.expected.stageOutputs[last]);
        expect(loss.value(yTrue, yPred)).to.be.allclose(fx.expected.loss, { rtol: 1e-10, atol: 0 });
        expect(loss.gradient(yTrue, yPred)).to.be.allclose(fromJSON(fx.expected.dLoss_dStageOutput[last]), { rtol: 1e-10, atol: 0 });
      });
    }
  });

  for (const loss of ALL) {
    describe(loss.name, () => {
      it('gradient matches central finite differences (rank 2 and rank 3 batches)', () => {
        const rng = new Rng(21);
        for (const shape of [[4, 3], [2, 3, 4]]) {
          const { y, p } = randomBatch(loss.name, shape, rng);
          expect(loss.gradient(y, p)).to.be.allclose(fdGradient(loss, y, p, 1e-6), { rtol: 1e-6, atol: 1e-9 });
        }
      });

      it('value and gradient match the symbolic derivative of the formula (mathjs) at random points', () => {
        const rows = 2;
        const cols = 3;
        const formula = symbolicLoss(loss.name, rows, cols);
        const node = parse(formula);
        const grads = Array.from({ length: rows * cols }, (_, k) => derivative(node, `p${k}`, { simplify: false }).compile());
        const valueFn = node.compile();
        const rng = new Rng(31);
        for (let trial = 0; trial < 10; trial++) {
          const { y, p } = randomBatch(loss.name, [rows, cols], rng);
          const scope: Record<string, number> = {};
          for (let k = 0; k < p.size; k++) {
            scope[`p${k}`] = p.data[k];
            scope[`y${k}`] = y.data[k];
          }
          expect(loss.value(y, p), `value at trial ${trial}`).to.be.allclose(valueFn.evaluate(scope) as number, { rtol: 1e-12, atol: 0 });
          const symbolic = grads.map((g) => g.evaluate(scope) as number);
          expect(loss.gradient(y, p), `gradient at trial ${trial}`).to.be.allclose(tensor(symbolic, [rows, cols]), { rtol: 1e-12, atol: 1e-15 });
        }
      });

      it('reduces over the last axis, then takes the mean over the batch', () => {
        const { y, p } = randomBatch(loss.name, [3, 2, 4], new Rng(41));
        const perSample = [0, 1, 2].map((b) =>
          [0, 1].map((i) => loss.value(tensor(y.data.slice((b * 2 + i) * 4, (b * 2 + i + 1) * 4), [1, 4]), tensor(p.data.slice((b * 2 + i) * 4, (b * 2 + i + 1) * 4), [1, 4]))),
        );
        const mean = perSample.flat().reduce((a, b) => a + b, 0) / 6;
        expect(loss.value(y, p)).to.be.allclose(mean, { rtol: 1e-14, atol: 0 });
      });

      it('gives a gradient of yPred\'s shape and dtype (float32 too)', () => {
        const { y, p } = randomBatch(loss.name, [2, 3], new Rng(51));
        const p32 = tensor(Array.from(p.data), [2, 3], 'float32');
        const g = loss.gradient(y, p32);
        expect(g.shape).to.deep.equal([2, 3]);
        expect(g.data).to.be.instanceOf(Float32Array);
        expect(g).to.be.allclose(loss.gradient(y, tensor(Array.from(p32.data), [2, 3])), { rtol: 1e-6 });
      });

      it('rejects mismatched shapes, rank 0, empty batches and NaN, quoting what it received', () => {
        const a = tensor([0.5, 0.5, 0.5, 0.5, 0.5, 0.5], [2, 3]);
        expect(() => loss.value(a, tensor([0.5, 0.5, 0.5], [3, 1]))).to.throw(ShapeError, new RegExp(`${loss.name}: expected yTrue and yPred of the same shape, received yTrue \\[2, 3\\] and yPred \\[3, 1\\]`));
        expect(() => loss.gradient(a, tensor([0.5, 0.5, 0.5, 0.5, 0.5, 0.5], [6]))).to.throw(ShapeError, /received yTrue \[2, 3\] and yPred \[6\]/);
        expect(() => loss.value(tensor([1], []), tensor([1], []))).to.throw(ShapeError, /expected yPred of rank >= 1 .* received shape \[\]/);
        expect(() => loss.value(zeros([0, 3]), zeros([0, 3]))).to.throw(ShapeError, /expected a non-empty batch, received shape \[0, 3\]/);
        const bad = tensor([0.5, 0.5, 0.5, 0.5, Number.NaN, 0.5], [2, 3]);
        expect(() => loss.value(a, bad)).to.throw(ShapeError, new RegExp(`${loss.name} yPred: expected finite values, received NaN at index \\[1, 1\\]`));
        expect(() => loss.gradient(bad, a)).to.throw(ShapeError, new RegExp(`${loss.name} yTrue: expected finite values, received NaN at index \\[1, 1\\]`));
        expect(() => loss.gradient(a, tensor([0.5, Infinity, 0.5, 0.5, 0.5, 0.5], [2, 3]))).to.throw(ShapeError, /received Infinity at index \[0, 1\]/);
      });
    });
  }

  describe('Keras values and clipping', () => {
    it('matches hand-computed Keras values', () => {
      expect(mse.value(tensor([1, 0], [1, 2]), tensor([0.5, 0.5], [1, 2]))).to.equal(0.25);
      expect(mse.value(tensor([1, 0, 0, 0], [2, 2]), tensor([0, 0, 0, 2], [2, 2]))).to.equal((0.5 + 2) / 2);
      expect(binary_crossentropy.value(tensor([1, 0], [1, 2]), tensor([0.9, 0.2], [1, 2]))).to.be.allclose(-(Math.log(0.9) + Math.log(0.8)) / 2, { rtol: 1e-15 });
      // p is normalized first: [2, 1, 1] → [0.5, 0.25, 0.25].
      expect(categorical_crossentropy.value(tensor([1, 0, 0], [1, 3]), tensor([2, 1, 1], [1, 3]))).to.be.allclose(-Math.log(0.5), { rtol: 1e-15 });
      expect(categorical_crossentropy.value(tensor([0.2, 0.8], [1, 2]), tensor([0.4, 0.6], [1, 2]))).to.be.allclose(-(0.2 * Math.log(0.4) + 0.8 * Math.log(0.6)), { rtol: 1e-15 });
    });

    it('binary_crossentropy clips p to [1e-7, 1 - 1e-7] and passes no gradient where it clips', () => {
      const y = tensor([1, 0, 1, 0, 1, 0.3], [2, 3]);
      const p = tensor([0, 1, 1e-9, 1 - 1e-9, 1e-7, 0.4], [2, 3]);
      // p = 0 and 1e-9 become 1e-7; p = 1 and 1 − 1e-9 become 1 − 1e-7, whose log(1 − q) is logHi.
      const logLo = Math.log(1e-7);
      const logHi = Math.log(1 - (1 - 1e-7));
      const row0 = -(logLo + logHi + logLo) / 3;
      const row1 = -(logHi + logLo + (0.3 * Math.log(0.4) + 0.7 * Math.log(0.6))) / 3;
      expect(binary_crossentropy.value(y, p)).to.be.allclose((row0 + row1) / 2, { rtol: 1e-15 });
      const g = binary_crossentropy.gradient(y, p);
      expect(Array.from(g.data.slice(0, 4))).to.deep.equal([0, 0, 0, 0]);
      // At the bound itself the clip passes the gradient (autograd's clamp): −y/p / (rows·cols).
      expect(g.data[4]).to.be.allclose(-1 / 1e-7 / 6, { rtol: 1e-12 });
      expect(g.data[5]).to.be.allclose((-0.3 / 0.4 + 0.7 / 0.6) / 6, { rtol: 1e-12 });
      // Finite differences with a step too small to cross a bound agree, clipped elements included.
      const inner = tensor([1e-9, 0.3, 1 - 1e-9, 0.5, 0.7, 0.2], [2, 3]);
      expect(binary_crossentropy.gradient(y, inner)).to.be.allclose(fdGradient(binary_crossentropy, y, inner, 1e-10), { rtol: 1e-5, atol: 1e-5 });
    });

    it('categorical_crossentropy clips after normalizing; the normalization still carries gradient to clipped entries', () => {
      const y = tensor([0, 1, 0, 1, 0, 0], [2, 3]);
      // Row 0: one entry is 0 (q clipped below); row 1: q_0 ≈ 1 − 1e-9 (clipped above).
      const p = tensor([0, 0.6, 0.4, 1, 5e-10, 5e-10], [2, 3]);
      expect(categorical_crossentropy.value(y, p)).to.be.allclose((-Math.log(0.6) - Math.log(1 - 1e-7)) / 2, { rtol: 1e-14 });
      const g = categorical_crossentropy.gradient(y, p);
      // Row 0: g_q = [0, −1/0.6, 0] / 2; dL/dp_j = g_j − Σ g_k p_k (S = 1).
      const s0 = (-1 / 0.6) * 0.6 * 0.5;
      expect(Array.from(g.data.slice(0, 3))).to.be.allclose([0 - s0, -1 / 0.6 / 2 - s0, 0 - s0], { rtol: 1e-14 });
      // Row 1: every entry clipped, so no gradient at all.
      expect(Array.from(g.data.slice(3))).to.deep.equal([0, 0, 0]);
      expect(g).to.be.allclose(fdGradient(categorical_crossentropy, y, p, 1e-10), { rtol: 1e-5, atol: 1e-5 });
    });

    it('categorical_crossentropy refuses a row that sums to zero (its normalization would be NaN)', () => {
      expect(() => categorical_crossentropy.value(tensor([1, 0, 0, 1], [2, 2]), tensor([0.5, 0.5, 0, 0], [2, 2]))).to.throw(ShapeError, /non-zero sum .* row 1/);
      expect(() => categorical_crossentropy.gradient(tensor([1, 0], [1, 2]), tensor([0, 0], [1, 2]))).to.throw(ShapeError, /row 0/);
    });
  });

  describe('lossByName', () => {
    it('finds each loss by its Keras name, and mean_squared_error as mse', () => {
      for (const loss of ALL) expect(lossByName(loss.name)).to.equal(loss);
      expect(lossByName('mean_squared_error')).to.equal(mse);
    });

    it('rejects unknown names, listing the known ones', () => {
      expect(() => lossByName('hinge')).to.throw(ConfigError, /unknown loss "hinge"; expected one of mse, binary_crossentropy, categorical_crossentropy, mean_squared_error/);
      expect(() => lossByName(3 as never)).to.throw(ConfigError, /unknown loss 3/);
      expect(() => lossByName('toString')).to.throw(ConfigError, /unknown loss "toString"/);
    });
  });
});
