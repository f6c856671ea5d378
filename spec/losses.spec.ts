import { readFileSync } from 'node:fs';
import { derivative, parse } from 'mathjs';
import { ConfigError, ShapeError } from '../lib/errors.js';
import {
  type Loss,
  binary_crossentropy,
  binary_crossentropy_from_logits,
  categorical_crossentropy,
  categorical_crossentropy_from_logits,
  huber,
  huberLoss,
  kl_divergence,
  lossByName,
  lossFrom,
  mae,
  mse,
  sparse_categorical_crossentropy,
  sparse_categorical_crossentropy_from_logits,
} from '../lib/losses.js';
import { referenceGradients } from '../lib/chain.js';
import { seedReferenceModel, seededBatch, SEED_REFERENCE_SPLIT } from '../lib/index.js';
import { Rng } from '../lib/rng.js';
import { type Tensor, type TensorJSON, copy, fromJSON, randomNormal, tensor, zeros } from '../lib/tensor.js';
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
      expect(() => lossByName('hinge')).to.throw(ConfigError, /unknown loss "hinge"; expected one of mse, mae, binary_crossentropy, categorical_crossentropy, sparse_categorical_crossentropy, huber, kl_divergence, mean_squared_error, mean_absolute_error/);
      expect(() => lossByName(3 as never)).to.throw(ConfigError, /unknown loss 3/);
      expect(() => lossByName('toString')).to.throw(ConfigError, /unknown loss "toString"/);
    });
  });

  describe('Keras 3 losses beyond the first three', () => {
    /** A batch suited to each loss, and the loss written as one mathjs formula (chosen per point for huber's branches). */
    interface Case {
      title: string;
      loss: Loss;
      batch: (shape: number[], rng: Rng) => { y: Tensor; p: Tensor };
      formula: (rows: number, cols: number, y: Tensor, p: Tensor) => string;
    }
    const normalBatch = (shape: number[], rng: Rng) => {
      const y = randomNormal(shape, rng);
      const p = randomNormal(shape, rng);
      return { y, p };
    };
    const probBatch = (shape: number[], rng: Rng) => {
      const y = zeros(shape);
      const p = zeros(shape);
      for (let k = 0; k < p.size; k++) {
        y.data[k] = rng.uniform(0.05, 0.95);
        p.data[k] = rng.uniform(0.05, 0.95);
      }
      return { y, p };
    };
    const logitBatch = (shape: number[], rng: Rng) => {
      const y = zeros(shape);
      const p = zeros(shape);
      for (let k = 0; k < p.size; k++) {
        y.data[k] = rng.uniform();
        p.data[k] = 3 * rng.normal();
      }
      return { y, p };
    };
    /** Σ over rows of `row(ks)`, divided by the row count: Keras' mean over the batch. */
    const perRow = (rows: number, cols: number, row: (ks: number[]) => string) =>
      `(${Array.from({ length: rows }, (_, r) => `(${row(Array.from({ length: cols }, (_, c) => r * cols + c))})`).join(' + ')}) / ${rows}`;
    const huberFormula = (delta: number) => (rows: number, cols: number, y: Tensor, p: Tensor) =>
      perRow(rows, cols, (ks) =>
        `(${ks.map((k) => (Math.abs(p.data[k] - y.data[k]) <= delta ? `0.5 * (p${k} - y${k})^2` : `${delta} * abs(p${k} - y${k}) - ${0.5 * delta * delta}`)).join(' + ')}) / ${cols}`,
      );
    const CASES: Case[] = [
      { title: 'mae', loss: mae, batch: normalBatch, formula: (rows, cols) => perRow(rows, cols, (ks) => `(${ks.map((k) => `abs(y${k} - p${k})`).join(' + ')}) / ${cols}`) },
      { title: 'huber (delta 1)', loss: huber, batch: normalBatch, formula: huberFormula(1) },
      { title: 'huber (delta 0.3)', loss: huberLoss(0.3), batch: normalBatch, formula: huberFormula(0.3) },
      { title: 'kl_divergence', loss: kl_divergence, batch: probBatch, formula: (rows, cols) => perRow(rows, cols, (ks) => ks.map((k) => `y${k} * log(y${k} / p${k})`).join(' + ')) },
      {
        title: 'binary_crossentropy from_logits',
        loss: binary_crossentropy_from_logits,
        batch: logitBatch,
        formula: (rows, cols) => perRow(rows, cols, (ks) => `-(${ks.map((k) => `y${k} * log(1 / (1 + exp(-p${k}))) + (1 - y${k}) * log(1 - 1 / (1 + exp(-p${k})))`).join(' + ')}) / ${cols}`),
      },
      {
        title: 'categorical_crossentropy from_logits (soft labels that do not sum to 1)',
        loss: categorical_crossentropy_from_logits,
        batch: logitBatch,
        formula: (rows, cols) => perRow(rows, cols, (ks) => `-(${ks.map((k) => `y${k} * log(exp(p${k}) / (${ks.map((j) => `exp(p${j})`).join(' + ')}))`).join(' + ')})`),
      },
    ];
    for (const c of CASES) {
      describe(c.title, () => {
        it('gradient matches central finite differences (rank 2 and rank 3 batches)', () => {
          const rng = new Rng(61);
          for (const shape of [[4, 3], [2, 3, 4]]) {
            const { y, p } = c.batch(shape, rng);
            expect(c.loss.gradient(y, p)).to.be.allclose(fdGradient(c.loss, y, p, 1e-6), { rtol: 1e-6, atol: 1e-9 });
          }
        });

        it('value and gradient match the symbolic derivative of the formula (mathjs)', () => {
          const rows = 2;
          const cols = 3;
          const rng = new Rng(67);
          for (let trial = 0; trial < 6; trial++) {
            const { y, p } = c.batch([rows, cols], rng);
            const node = parse(c.formula(rows, cols, y, p));
            const scope: Record<string, number> = {};
            for (let k = 0; k < p.size; k++) {
              scope[`p${k}`] = p.data[k];
              scope[`y${k}`] = y.data[k];
            }
            expect(c.loss.value(y, p), `value at trial ${trial}`).to.be.allclose(node.evaluate(scope) as number, { rtol: 1e-12, atol: 1e-15 });
            const symbolic = Array.from({ length: p.size }, (_, k) => derivative(node, `p${k}`, { simplify: false }).evaluate(scope) as number);
            expect(c.loss.gradient(y, p), `gradient at trial ${trial}`).to.be.allclose(tensor(symbolic, [rows, cols]), { rtol: 1e-11, atol: 1e-14 });
          }
        });
      });
    }

    it('hand-computed Keras values', () => {
      expect(mae.value(tensor([1, 0], [1, 2]), tensor([0.5, 0.5], [1, 2]))).to.equal(0.5);
      // |e| = 3 > δ = 2: δ (|e| − δ/2) = 4; |e| = 1 ≤ δ: e²/2 = 0.5; mean over the last axis.
      expect(huberLoss(2).value(tensor([0, 0], [1, 2]), tensor([3, -1], [1, 2]))).to.equal((4 + 0.5) / 2);
      expect(kl_divergence.value(tensor([0.5, 0.5], [1, 2]), tensor([0.5, 0.5], [1, 2]))).to.equal(0);
      expect(kl_divergence.value(tensor([1, 0], [1, 2]), tensor([0.25, 0.75], [1, 2]))).to.be.allclose(Math.log(4) + 1e-7 * Math.log(1e-7 / 0.75), { rtol: 1e-14 });
      expect(sparse_categorical_crossentropy.value(tensor([1], [1]), tensor([0.2, 0.8], [1, 2]))).to.be.allclose(-Math.log(0.8), { rtol: 1e-15 });
    });

    it('kl_divergence clips y and p to [1e-7, 1] (Keras 3) and passes no gradient where p is clipped', () => {
      const y = tensor([0, 1, 0.5, 0.5], [2, 2]);
      const p = tensor([0, 1, 1e-9, 0.5], [2, 2]);
      const e = 1e-7;
      expect(kl_divergence.value(y, p)).to.be.allclose((e * Math.log(e / e) + 0 + 0.5 * Math.log(0.5 / e) + 0) / 2, { rtol: 1e-14 });
      const g = kl_divergence.gradient(y, p);
      expect(g.data[0]).to.equal(0);
      expect(g.data[2]).to.equal(0);
      expect(g.data[1]).to.be.allclose(-1 / 2, { rtol: 1e-15 });
    });

    it('mae has gradient 0 where p = y (TensorFlow\'s sign(0)); huber is continuous at |e| = delta', () => {
      expect(Array.from(mae.gradient(tensor([1, 2], [1, 2]), tensor([1, 3], [1, 2])).data)).to.deep.equal([0, 0.5]);
      const at = (p: number) => huberLoss(0.5).gradient(tensor([0], [1, 1]), tensor([p], [1, 1])).data[0];
      expect(at(0.5)).to.equal(0.5);
      expect(at(0.5 + 1e-12)).to.equal(0.5);
      expect(at(-7)).to.equal(-0.5);
      expect(() => huberLoss(0)).to.throw(ConfigError, /huber: expected delta to be a positive finite number, received 0/);
    });

    describe('from_logits equals the probability form on sigmoid / softmax of the logits (away from the clip)', () => {
      const rng = new Rng(71);
      const z = tensor(Array.from({ length: 12 }, () => 2 * rng.normal()), [4, 3]);
      const yb = tensor(Array.from({ length: 12 }, () => rng.uniform()), [4, 3]);
      const yc = zeros([4, 3]);
      for (let r = 0; r < 4; r++) yc.data[r * 3 + rng.int(3)] = 1;
      const sig = tensor(Array.from(z.data, (v) => 1 / (1 + Math.exp(-v))), [4, 3]);
      const soft = zeros([4, 3]);
      for (let r = 0; r < 4; r++) {
        const e = [0, 1, 2].map((c) => Math.exp(z.data[r * 3 + c]));
        const S = e[0] + e[1] + e[2];
        e.forEach((v, c) => (soft.data[r * 3 + c] = v / S));
      }

      it('binary: value, and gradient = dL/dp · σ\'(z)', () => {
        expect(binary_crossentropy_from_logits.value(yb, z)).to.be.allclose(binary_crossentropy.value(yb, sig), { rtol: 1e-12 });
        const gp = binary_crossentropy.gradient(yb, sig);
        const chained = tensor(Array.from(gp.data, (g, k) => g * sig.data[k] * (1 - sig.data[k])), [4, 3]);
        expect(binary_crossentropy_from_logits.gradient(yb, z)).to.be.allclose(chained, { rtol: 1e-10, atol: 1e-15 });
      });

      it('categorical and sparse categorical: value, and gradient = softmax\'s Jacobianᵀ · dL/dp', () => {
        const labels = tensor(Array.from({ length: 4 }, (_, r) => [0, 1, 2].findIndex((c) => yc.data[r * 3 + c] === 1)), [4]);
        const want = categorical_crossentropy.value(yc, soft);
        expect(categorical_crossentropy_from_logits.value(yc, z)).to.be.allclose(want, { rtol: 1e-12 });
        expect(sparse_categorical_crossentropy_from_logits.value(labels, z)).to.be.allclose(want, { rtol: 1e-12 });
        const gp = categorical_crossentropy.gradient(yc, soft);
        const chained = zeros([4, 3]);
        for (let r = 0; r < 4; r++) {
          let s = 0;
          for (let c = 0; c < 3; c++) s += soft.data[r * 3 + c] * gp.data[r * 3 + c];
          for (let c = 0; c < 3; c++) chained.data[r * 3 + c] = soft.data[r * 3 + c] * (gp.data[r * 3 + c] - s);
        }
        expect(categorical_crossentropy_from_logits.gradient(yc, z)).to.be.allclose(chained, { rtol: 1e-10, atol: 1e-15 });
        expect(sparse_categorical_crossentropy_from_logits.gradient(labels, z)).to.be.allclose(chained, { rtol: 1e-10, atol: 1e-15 });
      });

      it('logits far out stay finite (no clip, no overflow)', () => {
        const big = tensor([800, -800], [1, 2]);
        expect(binary_crossentropy_from_logits.value(tensor([1, 0], [1, 2]), big)).to.equal(0);
        expect(categorical_crossentropy_from_logits.value(tensor([0, 1], [1, 2]), big)).to.equal(1600);
      });
    });

    describe('sparse_categorical_crossentropy', () => {
      it('equals categorical_crossentropy on the one-hot labels, for labels [B] and [B, 1], value and gradient', () => {
        const rng = new Rng(81);
        const p = tensor(Array.from({ length: 20 }, () => rng.uniform(0.05, 1)), [5, 4]);
        const idx = Array.from({ length: 5 }, () => rng.int(4));
        const hot = zeros([5, 4]);
        idx.forEach((c, r) => (hot.data[r * 4 + c] = 1));
        for (const labels of [tensor(idx, [5]), tensor(idx, [5, 1])]) {
          expect(sparse_categorical_crossentropy.value(labels, p)).to.equal(categorical_crossentropy.value(hot, p));
          expect(sparse_categorical_crossentropy.gradient(labels, p)).to.be.allclose(categorical_crossentropy.gradient(hot, p), { rtol: 0, atol: 0 });
        }
        expect(sparse_categorical_crossentropy.gradient(tensor(idx, [5]), p)).to.be.allclose(fdGradient(sparse_categorical_crossentropy, tensor(idx, [5]), p, 1e-6), { rtol: 1e-6, atol: 1e-9 });
      });

      it('refuses non-integer, out-of-range and misshaped labels, quoting them', () => {
        const p = tensor([0.5, 0.5, 0.5, 0.5], [2, 2]);
        expect(() => sparse_categorical_crossentropy.value(tensor([0, 1.5], [2]), p)).to.throw(ShapeError, /expected integer class indices in \[0, 1\] \(yPred has 2 classes\), received 1.5 at sample 1/);
        expect(() => sparse_categorical_crossentropy.value(tensor([2, 0], [2]), p)).to.throw(ShapeError, /received 2 at sample 0/);
        expect(() => sparse_categorical_crossentropy.gradient(tensor([-1, 0], [2]), p)).to.throw(ShapeError, /received -1 at sample 0/);
        expect(() => sparse_categorical_crossentropy.value(tensor([0, 1, 0, 1], [2, 2]), p)).to.throw(ShapeError, /expected yTrue of class indices shaped \[2\] or \[2, 1\] for yPred \[2, 2\], received yTrue \[2, 2\]/);
        expect(() => sparse_categorical_crossentropy.value(tensor([0], [1]), tensor([0.5], [1]))).to.throw(ShapeError, /expected yPred of rank >= 2/);
      });
    });

    describe('lossFrom: one resolver for names, config objects and Keras\' serialized form', () => {
      it('resolves every form to the same loss', () => {
        expect(lossFrom('mse')).to.equal(mse);
        expect(lossFrom('mean_squared_error')).to.equal(mse);
        expect(lossFrom('mean_absolute_error')).to.equal(mae);
        expect(lossFrom('kld')).to.equal(kl_divergence);
        expect(lossFrom(huber)).to.equal(huber);
        expect(lossFrom({ name: 'categorical_crossentropy', from_logits: true })).to.equal(categorical_crossentropy_from_logits);
        expect(lossFrom({ class_name: 'BinaryCrossentropy', config: { from_logits: true, label_smoothing: 0, reduction: 'sum_over_batch_size', name: 'binary_crossentropy' } })).to.equal(binary_crossentropy_from_logits);
        expect(lossFrom({ module: 'keras.losses', class_name: 'SparseCategoricalCrossentropy', config: { from_logits: false, ignore_class: null, reduction: 'sum_over_batch_size', name: 'x' }, registered_name: null })).to.equal(sparse_categorical_crossentropy);
        expect(lossFrom({ module: 'keras.losses', class_name: 'function', config: 'mean_squared_error', registered_name: 'mean_squared_error' })).to.equal(mse);
        const y = tensor([0, 0], [1, 2]);
        const p = tensor([3, -0.5], [1, 2]);
        for (const spec of [{ name: 'huber', delta: 2 }, { class_name: 'Huber', config: { delta: 2 } }]) {
          expect(lossFrom(spec).value(y, p), JSON.stringify(spec)).to.equal(huberLoss(2).value(y, p));
          expect(lossFrom(spec).config).to.deep.equal({ delta: 2 });
        }
      });

      it('refuses what it does not understand, naming it', () => {
        expect(() => lossFrom({ name: 'huber', delt: 2 })).to.throw(ConfigError, /loss huber: unknown option\(s\) "delt"; expected delta, reduction, dtype/);
        expect(() => lossFrom({ class_name: 'Hinge', config: {} })).to.throw(ConfigError, /unknown loss class "Hinge"; expected one of MeanSquaredError/);
        expect(() => lossFrom({ class_name: 'CategoricalCrossentropy', config: { label_smoothing: 0.1 } })).to.throw(ConfigError, /label_smoothing 0.1 is not supported; expected 0/);
        expect(() => lossFrom({ name: 'mse', reduction: 'sum' })).to.throw(ConfigError, /reduction "sum" is not supported/);
        expect(() => lossFrom({ name: 'binary_crossentropy', from_logits: 'yes' })).to.throw(ConfigError, /expected from_logits to be true or false, received "yes"/);
        expect(() => lossFrom({ name: 'hinge' })).to.throw(ConfigError, /unknown loss "hinge"/);
        expect(() => lossFrom(42 as never)).to.throw(ConfigError, /loss: expected a loss name, .* received 42/);
        expect(() => lossFrom({ delta: 2 } as never)).to.throw(ConfigError, /expected a config object to name its loss/);
      });

      it('the chain callers take a config: the same gradients as the name', () => {
        const model = seedReferenceModel({ seed: 0 });
        const stages = model.split(SEED_REFERENCE_SPLIT);
        const { x, y } = seededBatch(model.inputShape, { batch: 2, seed: 0 });
        const byName = referenceGradients(stages, x, y, 'mse');
        const byConfig = referenceGradients(stages, x, y, { class_name: 'MeanSquaredError', config: { reduction: 'sum_over_batch_size' } });
        expect(byConfig.loss).to.equal(byName.loss);
        byName.dLoss_dWeights.forEach((layer, i) => layer.forEach((g, k) => expect(byConfig.dLoss_dWeights[i][k]).to.be.allclose(g, { rtol: 0, atol: 0 })));
        expect(byName.dLoss_dWeights.flat().length).to.be.above(0);
      });
    });
  });
});
