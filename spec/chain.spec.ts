import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { type ChainResult, LocalStageRunner, type StageRunner, type TensorMessage, fromMessage, jacobianChain, referenceGradients, toMessage, vjpChain } from '../lib/chain.js';
import { ConfigError } from '../lib/errors.js';
import { ACTIVATIONS } from '../lib/activations.js';
import { type LayerSpec, layerFromConfig, loadModel } from '../lib/model-io.js';
import { Rng } from '../lib/rng.js';
import { Sequential } from '../lib/sequential.js';
import { catsVsDogsCnn } from '../lib/models.js';
import { type Tensor, type TensorJSON, fromJSON, randomNormal, tensor, zeros } from '../lib/tensor.js';
import { expect, expectReject } from './helpers/setup.js';

/** The golden fixtures (PyTorch autograd, cross-checked by JAX; see spec/fixtures/README.md). */
const FIXTURES = ['seed_reference.json', 'dense_mlp.json'] as const;
const TOL = { rtol: 1e-10, atol: 1e-14 };

function loadFixture(name: string) {
  const text = readFileSync(new URL(`./fixtures/${name}`, import.meta.url), 'utf8');
  const fx = JSON.parse(text) as {
    x: TensorJSON;
    y: TensorJSON;
    loss: string;
    stages: number[][];
    expected: { loss: number; stageOutputs: TensorJSON[]; dLoss_dStageOutput: TensorJSON[]; dLoss_dWeights: TensorJSON[][] };
  };
  const model = loadModel(text);
  return { fx, stages: model.split(Sequential.pointsFromStages(fx.stages, model.layers.length)), x: fromJSON(fx.x), y: fromJSON(fx.y) };
}

/** Asserts that two ways agree on everything they return. */
function expectSame(a: ChainResult, b: ChainResult, tol: { rtol: number; atol: number }, what: string): void {
  expect(a.loss, `${what}: loss`).to.be.closeTo(b.loss, tol.atol + tol.rtol * Math.abs(b.loss));
  expect(a.dLoss_dWeights.length, `${what}: layers`).to.equal(b.dLoss_dWeights.length);
  a.dLoss_dWeights.forEach((ps, i) => ps.forEach((g, k) => expect(g, `${what}: dLoss/dWeights layer ${i} param ${k}`).to.be.allclose(b.dLoss_dWeights[i][k], tol)));
  a.dLoss_dOut.forEach((g, s) => expect(g, `${what}: dLoss/dOut stage ${s}`).to.be.allclose(b.dLoss_dOut[s], tol));
  a.stageOutputs.forEach((o, s) => expect(o, `${what}: output of stage ${s}`).to.be.allclose(b.stageOutputs[s], tol));
}

describe('chain: the reference, the explicit-Jacobian chain and the VJP chain', () => {
  for (const name of FIXTURES) {
    it(`all three ways equal the golden fixture ${name}: loss, stage outputs, dLoss/dOut at every boundary, dLoss/dWeights of every layer`, async () => {
      const { fx, stages, x, y } = loadFixture(name);
      const results = [referenceGradients(stages, x, y, fx.loss), jacobianChain(stages, x, y, fx.loss), await vjpChain(stages, x, y, fx.loss)];
      for (const r of results) {
        expect(r.loss, `${r.method} loss`).to.be.closeTo(fx.expected.loss, 1e-12 * fx.expected.loss);
        expect(r.dLoss_dOut).to.have.length(fx.stages.length);
        r.stageOutputs.forEach((o, s) => expect(o, `${r.method} output ${s}`).to.be.allclose(fx.expected.stageOutputs[s], TOL));
        r.dLoss_dOut.forEach((g, s) => expect(g, `${r.method} dLoss_dStageOutput[${s}]`).to.be.allclose(fx.expected.dLoss_dStageOutput[s], TOL));
        fx.expected.dLoss_dWeights.forEach((ps, i) => {
          expect(r.dLoss_dWeights[i], `${r.method} layer ${i}`).to.have.length(ps.length);
          ps.forEach((e, k) => expect(r.dLoss_dWeights[i][k], `${r.method} dLoss_dWeights[${i}][${k}]`).to.be.allclose(e, TOL));
        });
      }
    });
  }

  it('the explicit way reports every Jacobian it materialized; the VJP way only cotangents of activation size', async () => {
    const { fx, stages, x, y } = loadFixture('seed_reference.json');
    const jac = jacobianChain(stages, x, y, fx.loss);
    expect(jac.memory.map((m) => m.jacobians.map((J) => [J.label, J.shape]))).to.deep.equal([
      [
        ['dOut/d conv2d.kernel', [3, 9, 9, 6, 2, 2, 1, 6]],
        ['dOut/d conv2d.bias', [3, 9, 9, 6, 6]],
      ],
      [
        ['dOut/dIn', [3, 8, 8, 6, 9, 9, 6]],
        ['dOut/d conv2d_1.kernel', [3, 8, 8, 6, 2, 2, 6, 6]],
        ['dOut/d conv2d_1.bias', [3, 8, 8, 6, 6]],
      ],
      [
        ['dOut/dIn', [3, 1, 8, 8, 6]],
        ['dOut/d dense.kernel', [3, 1, 384, 1]],
        ['dOut/d dense.bias', [3, 1, 1]],
      ],
    ]);
    expect(jac.memory[1].jacobians[0].bytes).to.equal(3 * 8 * 8 * 6 * 9 * 9 * 6 * 8);
    const vjp = await vjpChain(stages, x, y, fx.loss);
    // Stage 1: dy [3, 8, 8, 6] in, dx [3, 9, 9, 6] out.
    expect(vjp.memory[1].cotangentBytes).to.equal((3 * 8 * 8 * 6 + 3 * 9 * 9 * 6) * 8);
    expect(vjp.memory.every((m) => m.residualBytes > 0 && m.jacobians.length === 0)).to.equal(true);
  });

  /** The cats-vs-dogs CNN at 24², B = 2, Dropout in training, and its reference gradients. */
  function cnn24() {
    const stages = catsVsDogsCnn({ side: 24, channels: 3 }).split([9]);
    const x = randomNormal([2, 24, 24, 3], new Rng(11));
    const y = tensor([1, 0], [2, 1]);
    const opts = { training: true, seed: 5 };
    return { stages, x, y, opts, ref: referenceGradients(stages, x, y, 'binary_crossentropy', opts) };
  }

  it('the explicit chain over structured sparse Jacobians ({ format: "sparse", mode: "auto" }) equals the reference on the cats-vs-dogs CNN, with Dropout in training', () => {
    const { stages, x, y, opts, ref } = cnn24();
    const sparse = jacobianChain(stages, x, y, 'binary_crossentropy', { ...opts, jacobian: { format: 'sparse', mode: 'auto' } });
    expectSame(sparse, ref, { rtol: 1e-10, atol: 1e-14 }, 'sparse explicit vs reference');
    const formats = sparse.memory.flatMap((m) => m.jacobians.map((J) => J.format));
    expect(formats).to.have.length(11); // model_0: 3 convolutions × (kernel, bias); model_1: dOut/dIn and 2 Dense × (kernel, bias)
    expect(formats.every((f) => f === 'sparse'), formats.join(', ')).to.equal(true);
  });

  it('the explicit chain over factored weight Jacobians ({ format: "factored", mode: "auto" }) equals the reference and the VJP chain on the cats-vs-dogs CNN, with Dropout in training, and holds less than the CSR chain', async () => {
    const { stages, x, y, opts, ref } = cnn24();
    const factored = jacobianChain(stages, x, y, 'binary_crossentropy', { ...opts, jacobian: { format: 'factored', mode: 'auto' } });
    expectSame(factored, ref, { rtol: 1e-10, atol: 1e-14 }, 'factored explicit vs reference');
    expectSame(factored, await vjpChain(stages, x, y, 'binary_crossentropy', opts), { rtol: 1e-10, atol: 1e-14 }, 'factored explicit vs VJP');
    const records = factored.memory.flatMap((m) => m.jacobians);
    // model_1's dOut/dIn stays CSR; every weight Jacobian (3 convolutions and 2 Dense, kernel and bias) is factored.
    expect(records.map((J) => J.format)).to.deep.equal(['factored', 'factored', 'factored', 'factored', 'factored', 'factored', 'sparse', 'factored', 'factored', 'factored', 'factored']);
    const sparse = jacobianChain(stages, x, y, 'binary_crossentropy', { ...opts, jacobian: { format: 'sparse', mode: 'auto' } });
    const bytes = (r: typeof sparse) => r.memory.flatMap((m) => m.jacobians).reduce((a, J) => a + J.bytes, 0);
    expect(bytes(factored)).to.be.below(bytes(sparse));
  });

  it('the explicit chain refuses, before its first forward pass, Jacobians whose total exceeds the memory budget, and names the VJP way', () => {
    const { fx, stages, x, y } = loadFixture('seed_reference.json');
    let forwards = 0;
    const spied = stages.map((st) => {
      const f = st.forward.bind(st);
      st.forward = ((...a: Parameters<typeof f>) => (forwards++, f(...a))) as typeof st.forward;
      return st;
    });
    // The seed's stages hold 5.94 MiB of Jacobians in all (each alone fits in 4.5 MiB), 11.06 MiB with a tangent block and the tapes' residuals.
    expect(() => jacobianChain(spied, x, y, fx.loss, { jacobian: { memoryBudget: 4.5 * 1024 ** 2 } })).to.throw(/explicit-Jacobian way .* over the memory budget of 4\.50 MiB; use the VJP way/);
    expect(() => jacobianChain(spied, x, y, fx.loss, { jacobian: { memoryBudget: 8 * 1024 ** 2 } }), 'the Jacobians alone would fit: the tangent block counts too').to.throw(/needs an estimated 11\.06 MiB/);
    expect(forwards).to.equal(0);
    jacobianChain(spied, x, y, fx.loss, { jacobian: { memoryBudget: 12 * 1024 ** 2 } });
    expect(forwards, 'the spy sees forward passes when the chain runs').to.be.greaterThan(0);
  });

  it('with Dropout in training, all three ways use the same mask and agree; the mask does act', async () => {
    const rng = new Rng(3);
    const model = new Sequential(
      [layerFromConfig({ class_name: 'Dense', config: { units: 8, activation: 'tanh' } }), layerFromConfig({ class_name: 'Dropout', config: { rate: 0.5 } }), layerFromConfig({ class_name: 'Dense', config: { units: 1, activation: 'sigmoid' } })],
      { inputShape: [4], rng },
    );
    const stages = model.split([1, 2]);
    const x = randomNormal([3, 4], rng);
    const y = tensor([1, 0, 1], [3, 1]);
    const opts = { training: true, seed: 17 };
    const ref = referenceGradients(stages, x, y, 'binary_crossentropy', opts);
    expectSame(jacobianChain(stages, x, y, 'binary_crossentropy', opts), ref, { rtol: 1e-12, atol: 1e-15 }, 'explicit vs reference');
    expectSame(await vjpChain(stages, x, y, 'binary_crossentropy', opts), ref, { rtol: 1e-12, atol: 1e-15 }, 'vjp vs reference');
    const inference = referenceGradients(stages, x, y, 'binary_crossentropy');
    expect(inference.dLoss_dWeights[0][0]).to.not.be.allclose(ref.dLoss_dWeights[0][0], { rtol: 1e-6 });
    const otherMask = referenceGradients(stages, x, y, 'binary_crossentropy', { training: true, seed: 18 });
    expect(otherMask.dLoss_dWeights[0][0]).to.not.be.allclose(ref.dLoss_dWeights[0][0], { rtol: 1e-6 });
  });

  it('the VJP chain works over any StageRunner that only exchanges plain messages (structured-cloned, as a worker would receive them)', async () => {
    const { fx, stages, x, y } = loadFixture('seed_reference.json');
    const sent: string[] = [];
    const clone = (m: TensorMessage, tag: string): TensorMessage => {
      sent.push(`${tag} [${m.shape.join(', ')}]`);
      return structuredClone(m);
    };
    /** A runner whose stage sits behind a clone: nothing but messages goes in or out. */
    const remote = (stage: Sequential): StageRunner => {
      const inner = new LocalStageRunner(stage);
      return {
        name: stage.name,
        forward: async (m) => clone(await inner.forward(clone(m, `${stage.name} <- x`)), `${stage.name} -> y`),
        backward: async (m) => clone(await inner.backward(clone(m, `${stage.name} <- dy`)), `${stage.name} -> dx`),
        gradients: async () => (await inner.gradients()).map((l) => l.map((g) => structuredClone(g))),
        memory: () => inner.memory(),
      };
    };
    const viaMessages = await vjpChain(stages.map(remote), x, y, fx.loss);
    expectSame(viaMessages, referenceGradients(stages, x, y, fx.loss), TOL, 'remote vjp vs reference');
    expect(sent).to.deep.equal([
      'model_0 <- x [3, 10, 10, 1]',
      'model_0 -> y [3, 9, 9, 6]',
      'model_1 <- x [3, 9, 9, 6]',
      'model_1 -> y [3, 8, 8, 6]',
      'model_2 <- x [3, 8, 8, 6]',
      'model_2 -> y [3, 1]',
      'model_2 <- dy [3, 1]',
      'model_2 -> dx [3, 8, 8, 6]',
      'model_1 <- dy [3, 8, 8, 6]',
      'model_1 -> dx [3, 9, 9, 6]',
      'model_0 <- dy [3, 9, 9, 6]',
      'model_0 -> dx [3, 10, 10, 1]',
    ]);
  });

  it("the VJP chain's results survive the next step, which reuses its stages' buffers (activations big enough to be pooled cross the boundaries), and a step on the same batch gives the same results", async () => {
    for (const dtype of ['float64', 'float32'] as const) {
      const model = catsVsDogsCnn({ side: 32, channels: 3, dtype, filters: [8, 8, 8], units: 8 });
      const stages = model.split([2, 5]);
      const x = randomNormal([4, 32, 32, 3], new Rng(1), dtype);
      const other = randomNormal([4, 32, 32, 3], new Rng(2), dtype);
      const y = tensor([1, 0, 1, 0], [4, 1], dtype);
      const snapshot = (r: ChainResult) => [r.loss, ...[...r.stageOutputs, ...r.dLoss_dOut, ...r.dLoss_dWeights.flat()].flatMap((t) => (t ? Array.from(t.data) : []))];
      const first = await vjpChain(stages, x, y, 'binary_crossentropy');
      const before = snapshot(first);
      await vjpChain(stages, other, y, 'binary_crossentropy');
      expect(snapshot(first)).to.deep.equal(before);
      expect(snapshot(await vjpChain(stages, x, y, 'binary_crossentropy'))).to.deep.equal(before);
    }
  });

  it('float32 stays float32 through all three ways and agrees to float32 precision', async () => {
    const { fx } = loadFixture('dense_mlp.json');
    const text = readFileSync(new URL('./fixtures/dense_mlp.json', import.meta.url), 'utf8');
    const model = loadModel(text, { dtype: 'float32' });
    const stages = model.split([1, 2]);
    const x = fromJSON(fx.x, 'float32');
    const y = fromJSON(fx.y, 'float32');
    const ref = referenceGradients(stages, x, y, fx.loss);
    for (const r of [jacobianChain(stages, x, y, fx.loss), await vjpChain(stages, x, y, fx.loss)]) {
      expect(r.dLoss_dWeights[0][0]!.data).to.be.instanceOf(Float32Array);
      expectSame(r, ref, { rtol: 1e-4, atol: 1e-6 }, `${r.method} float32`);
    }
    expect(ref.dLoss_dWeights[0][0]).to.be.allclose(fx.expected.dLoss_dWeights[0][0], { rtol: 1e-4, atol: 1e-6 });
  });

  describe('bad input', () => {
    it('stages that are not an array, and a non-finite cotangent sent to a runner, are refused naming them', async () => {
      const { fx, stages, x, y } = loadFixture('seed_reference.json');
      await expectReject(vjpChain(stages[0] as never, x, y, fx.loss), /vjpChain: expected a non-empty array of stages \(Sequential or StageRunner\), received/);
      const runner = new LocalStageRunner(stages[2]);
      const out = await runner.forward(toMessage(stages[1].forward(stages[0].forward(x).y).y));
      const dy = toMessage(tensor(new Array(out.data.length).fill(NaN), out.shape));
      await expectReject(runner.backward(dy), /stage runner ".*" backward dy: expected finite values, received NaN at index \[0, 0\]/);
    });

    it('a batch that is not a tensor, of the wrong shape, non-finite, or with labels for another batch: refused before any stage runs', async () => {
      const { fx, stages, x, y } = loadFixture('seed_reference.json');
      expect(() => jacobianChain(stages, undefined as never, y, fx.loss)).to.throw(/jacobianChain x: expected a tensor, received undefined/);
      expect(() => referenceGradients(stages, tensor([1, 2], [2]), y, fx.loss)).to.throw(/referenceGradients x: expected shape \[B, 10, 10, 1\] \(rank 4\), received \[2\]/);
      const bad = tensor(Array.from(x.data), x.shape);
      bad.data[5] = NaN;
      expect(() => jacobianChain(stages, bad, y, fx.loss)).to.throw(/jacobianChain x: expected finite values, received NaN at index \[0, 0, 5, 0\]/);
      await vjpChain(stages, x, zeros([2, 1]), fx.loss).then(
        () => expect.fail('should have thrown'),
        (e: Error) => expect(e.message).to.match(/vjpChain yTrue: expected 3 samples \(the batch of x\), received shape \[2, 1\]/),
      );
    });

    it('stages that do not chain, or none', async () => {
      const a = new Sequential([layerFromConfig({ class_name: 'Dense', config: { units: 3 } })], { inputShape: [2] });
      const b = new Sequential([layerFromConfig({ class_name: 'Dense', config: { units: 1 } })], { inputShape: [4] });
      const x = zeros([1, 2]);
      const y = zeros([1, 1]);
      expect(() => jacobianChain([a, b], x, y, 'mse')).to.throw(ConfigError, /stage 1 \(sequential\) expects input \[4\], but stage 0 \(sequential\) outputs \[3\]/);
      expect(() => referenceGradients([], x, y, 'mse')).to.throw(ConfigError, /expected a non-empty array of stages, received an empty array/);
      await vjpChain([a, b], x, y, 'mse').then(
        () => expect.fail('should have thrown'),
        (e: Error) => expect(e.message).to.match(/vjpChain: stage 1 .* expects input \[4\]/),
      );
      expect(() => jacobianChain([a], x, y, 'hinge')).to.throw(ConfigError, /unknown loss "hinge"/);
    });

    it('a runner used out of order, and malformed messages', async () => {
      const a = new Sequential([layerFromConfig({ class_name: 'Dense', config: { units: 3 } })], { inputShape: [2] });
      const r = new LocalStageRunner(a);
      await r.backward(toMessage(zeros([1, 3]))).then(
        () => expect.fail('should have thrown'),
        (e: Error) => expect(e.message).to.match(/backward before forward/),
      );
      expect(() => fromMessage({ shape: [2, 2], dtype: 'float64', data: new Float64Array(3) })).to.throw(ConfigError, /shape \[2, 2\] needs 4 values, received 3/);
      expect(() => fromMessage({ shape: [1], dtype: 'float32', data: new Float64Array(1) })).to.throw(ConfigError, /dtype says float32 but data is float64/);
      expect(() => fromMessage({ shape: [1], data: [1] } as never)).to.throw(ConfigError, /expected \{shape: number\[\], dtype, data: Float64Array \| Float32Array\}, received keys shape, data/);
    });
  });

  // ------------------------------------------------------------------------------------------
  // Property: random small Sequential models from every layer type and option, random split
  // points, random batches: explicit chain = VJP chain = single tape.

  /** One raw choice per candidate layer; those that do not fit the running shape are skipped. */
  const activation = fc.constantFrom(...ACTIVATIONS);
  // Tenths, not fc.double: its bias towards tiny values would draw masks that keep everything.
  const dropoutRate = fc.integer({ min: 0, max: 6 }).map((k) => k / 10);
  const imageChoice = fc.oneof(
    fc.record({ kind: fc.constant('Conv2D' as const), filters: fc.integer({ min: 1, max: 3 }), kh: fc.integer({ min: 1, max: 3 }), kw: fc.integer({ min: 1, max: 3 }), s: fc.integer({ min: 1, max: 2 }), padding: fc.constantFrom('valid', 'same'), activation, use_bias: fc.boolean() }),
    fc.record({ kind: fc.constant('MaxPooling2D' as const), pool: fc.integer({ min: 1, max: 3 }), strides: fc.option(fc.integer({ min: 1, max: 2 })), padding: fc.constantFrom('valid', 'same') }),
    fc.record({ kind: fc.constant('Activation' as const), activation }),
    fc.record({ kind: fc.constant('Dropout' as const), rate: dropoutRate }),
  );
  const vectorChoice = fc.oneof(
    fc.record({ kind: fc.constant('Dense' as const), units: fc.integer({ min: 1, max: 4 }), activation, use_bias: fc.boolean() }),
    fc.record({ kind: fc.constant('Activation' as const), activation }),
    fc.record({ kind: fc.constant('Dropout' as const), rate: dropoutRate }),
  );
  const arbChoices = fc.record({
    image: fc.boolean(),
    H: fc.integer({ min: 2, max: 6 }),
    W: fc.integer({ min: 2, max: 6 }),
    C: fc.integer({ min: 1, max: 2 }),
    n: fc.integer({ min: 1, max: 5 }),
    imageLayers: fc.array(imageChoice, { maxLength: 3 }),
    vectorLayers: fc.array(vectorChoice, { maxLength: 3 }),
    loss: fc.constantFrom('mse', 'binary_crossentropy', 'categorical_crossentropy'),
    headUnits: fc.integer({ min: 1, max: 3 }),
    fusedHead: fc.boolean(),
  });
  type Choices = typeof arbChoices extends fc.Arbitrary<infer T> ? T : never;

  /** The valid layer specs of a set of choices, and the input shape. */
  function materialize(c: Choices): { inputShape: number[]; specs: LayerSpec[] } {
    const specs: LayerSpec[] = [];
    const fits = (n: number, k: number, pad: string) => pad === 'same' || k <= n;
    const out = (n: number, k: number, s: number, pad: string) => (pad === 'same' ? Math.ceil(n / s) : Math.floor((n - k) / s) + 1);
    let inputShape: number[];
    if (c.image) {
      let [h, w, ch] = [c.H, c.W, c.C];
      inputShape = [h, w, ch];
      for (const l of c.imageLayers) {
        if (l.kind === 'Conv2D') {
          if (!fits(h, l.kh, l.padding) || !fits(w, l.kw, l.padding)) continue;
          specs.push({ class_name: 'Conv2D', config: { filters: l.filters, kernel_size: [l.kh, l.kw], strides: [l.s, l.s], padding: l.padding, activation: l.activation, use_bias: l.use_bias } });
          [h, w, ch] = [out(h, l.kh, l.s, l.padding), out(w, l.kw, l.s, l.padding), l.filters];
        } else if (l.kind === 'MaxPooling2D') {
          const s = l.strides ?? l.pool;
          if (!fits(h, l.pool, l.padding) || !fits(w, l.pool, l.padding)) continue;
          specs.push({ class_name: 'MaxPooling2D', config: { pool_size: [l.pool, l.pool], strides: l.strides === null ? null : [s, s], padding: l.padding } });
          [h, w] = [out(h, l.pool, s, l.padding), out(w, l.pool, s, l.padding)];
        } else if (l.kind === 'Activation') specs.push({ class_name: 'Activation', config: { activation: l.activation } });
        else specs.push({ class_name: 'Dropout', config: { rate: l.rate } });
      }
      specs.push({ class_name: 'Flatten', config: {} });
    } else {
      inputShape = [c.n];
    }
    for (const l of c.vectorLayers) {
      if (l.kind === 'Dense') specs.push({ class_name: 'Dense', config: { units: l.units, activation: l.activation, use_bias: l.use_bias } });
      else if (l.kind === 'Activation') specs.push({ class_name: 'Activation', config: { activation: l.activation } });
      else specs.push({ class_name: 'Dropout', config: { rate: l.rate } });
    }
    // The head suits the loss: probabilities for the cross-entropies.
    const last = c.loss === 'binary_crossentropy' ? 'sigmoid' : c.loss === 'categorical_crossentropy' ? 'softmax' : 'linear';
    const units = c.loss === 'categorical_crossentropy' ? c.headUnits + 1 : c.headUnits;
    if (c.fusedHead) specs.push({ class_name: 'Dense', config: { units, activation: last } });
    else specs.push({ class_name: 'Dense', config: { units } }, { class_name: 'Activation', config: { activation: last } });
    return { inputShape, specs };
  }

  const arbCase = arbChoices.chain((choices) => {
    const { inputShape, specs } = materialize(choices);
    const inner = Array.from({ length: specs.length - 1 }, (_, i) => i + 1);
    return fc.record({
      choices: fc.constant(choices),
      inputShape: fc.constant(inputShape),
      specs: fc.constant(specs),
      points: fc.subarray(inner),
      batch: fc.integer({ min: 1, max: 3 }),
      seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
      training: fc.boolean(),
    });
  });

  function labels(loss: string, shape: number[], rng: Rng): Tensor {
    const y = zeros(shape);
    const cols = shape[shape.length - 1];
    if (loss === 'mse') for (let i = 0; i < y.size; i++) y.data[i] = rng.normal();
    else if (loss === 'binary_crossentropy') for (let i = 0; i < y.size; i++) y.data[i] = rng.uniform() > 0.5 ? 1 : 0;
    else for (let r = 0; r < y.size / cols; r++) y.data[r * cols + rng.int(cols)] = 1;
    return y;
  }

  /**
   * Runs of the property below: `JC_PROPERTY_RUNS` (a positive integer) when set, else 100, so that
   * a long soak (`JC_PROPERTY_RUNS=10000 npx mocha spec/chain.spec.ts -g property`) needs no edit.
   */
  function propertyRuns(): number {
    const text = process.env.JC_PROPERTY_RUNS;
    if (text === undefined || text === '') return 100;
    const n = Number(text);
    if (!/^\s*\d+\s*$/.test(text) || !Number.isSafeInteger(n) || n < 1) throw new Error(`JC_PROPERTY_RUNS: expected a positive integer, received ${JSON.stringify(text)}`);
    return n;
  }

  it('property (fast-check): explicit chain = VJP chain = single tape on random models, splits, batches, Dropout modes', async function () {
    const runs = propertyRuns();
    // A run takes well under 100 ms; the allowance keeps a long soak from tripping mocha's timeout.
    this.timeout(Math.max(120_000, runs * 1_000));
    const seen = new Set<string>();
    let maskedRuns = 0;
    await fc.assert(
      fc.asyncProperty(arbCase, async ({ choices, inputShape, specs, points, batch, seed, training }) => {
        const rng = new Rng(seed);
        const model = new Sequential(
          specs.map((s, i) => layerFromConfig(s, i)),
          { inputShape, rng },
        );
        specs.forEach((s) => seen.add(s.class_name));
        if (training && specs.some((s) => s.class_name === 'Dropout' && (s.config!.rate as number) > 0)) maskedRuns++;
        const stages = model.split(points);
        const x = randomNormal([batch, ...inputShape], rng);
        const lossName = choices.loss;
        const y = labels(lossName, [batch, ...model.outputShape], rng);
        const opts = { training, seed };
        const ref = referenceGradients(stages, x, y, lossName, opts);
        const tol = { rtol: 1e-9, atol: 1e-12 };
        expectSame(jacobianChain(stages, x, y, lossName, opts), ref, tol, 'explicit-Jacobian chain vs single tape');
        expectSame(await vjpChain(stages, x, y, lossName, opts), ref, tol, 'VJP chain vs single tape');
      }),
      { numRuns: runs },
    );
    // Every layer type was drawn (fast-check prints the seed of a failing run; this checks the
    // coverage). Below 100 runs a quick smoke run may miss a layer type, so coverage is not asked.
    if (runs >= 100) {
      expect([...seen].sort()).to.deep.equal(['Activation', 'Conv2D', 'Dense', 'Dropout', 'Flatten', 'MaxPooling2D']);
      expect(maskedRuns, 'runs with a Dropout mask in training').to.be.greaterThan(5);
    }
  });
});
