/**
 * Fuzzing the model-file readers (issue #12): valid files (this library's JSON with weights, a
 * TF.js model.json with its shard, a Keras 3 Functional topology) mutated at random — a value
 * replaced by another JSON type, NaN, null, a size up to 1e12; a key deleted, or added (`__proto__`,
 * `constructor`, `toString`, `hasOwnProperty` among them); the JSON text truncated; the shard cut,
 * lengthened or poisoned with NaN. Every outcome must be a loaded model or one of the library's
 * own errors, with a message saying what was expected — never a TypeError or RangeError.
 *
 * Sizes: a `units: 1e12` in a file with weights is refused from the shapes before any allocation
 * (the loader's preflight); fresh weights are held to a 64 MiB budget for the run, so nothing here
 * allocates more than that.
 */
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { JacobianChainError } from '../lib/errors.js';
import { getMemoryBudget, setMemoryBudget } from '../lib/memory.js';
import { type LoadOptions, loadModel, saveTfjsModel } from '../lib/model-io.js';
import { seedReferenceModel } from '../lib/models.js';
import { Sequential } from '../lib/sequential.js';
import { expect } from './helpers/setup.js';

const RUNS_PER_BASE = 1000;

const seedText = readFileSync(new URL('./fixtures/seed_reference.json', import.meta.url), 'utf8');
const seedFile = (() => {
  const f = JSON.parse(seedText);
  return { modelTopology: f.modelTopology, weights: f.weights };
})();
const tfjs = saveTfjsModel(seedReferenceModel({ seed: 1 }));
const keras3 = {
  module: 'keras.src.models.functional', class_name: 'Functional', registered_name: 'Functional',
  config: {
    name: 'functional', trainable: true,
    layers: [
      { module: 'keras.layers', class_name: 'InputLayer', config: { batch_shape: [null, 6, 6, 2], dtype: 'float32', sparse: false, name: 'input_layer' }, registered_name: null, name: 'input_layer', inbound_nodes: [] },
      ...[['Conv2D', 'conv2d', { filters: 3, kernel_size: [3, 3], strides: [1, 1], padding: 'same', activation: 'relu', use_bias: true, dilation_rate: [1, 1], data_format: 'channels_last' }, 'input_layer'],
        ['MaxPooling2D', 'max_pooling2d', { pool_size: [2, 2], strides: [2, 2], padding: 'valid' }, 'conv2d'],
        ['Flatten', 'flatten', { data_format: 'channels_last' }, 'max_pooling2d'],
        ['Dropout', 'dropout', { rate: 0.25, seed: null, noise_shape: null }, 'flatten'],
        ['Dense', 'dense', { units: 4, activation: 'softmax', use_bias: true }, 'dropout']].map(([cls, name, config, src]) => ({
        module: 'keras.layers', class_name: cls, registered_name: null, name,
        config: { name, trainable: true, dtype: { module: 'keras', class_name: 'DTypePolicy', config: { name: 'float32' }, registered_name: null }, ...(config as object) },
        inbound_nodes: [{ args: [{ class_name: '__keras_tensor__', config: { shape: [null, 4], dtype: 'float32', keras_history: [src, 0, 0] } }], kwargs: {} }],
      })),
    ],
    input_layers: [['input_layer', 0, 0]],
    output_layers: [['dense', 0, 0]],
  },
};

const KEYS = ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf', 'units', 'trainable', 'dtype', 'weights', 'x'];
const protoObject = () => JSON.parse('{"__proto__": {"ok": 1}}');
const SIZES = [0, 1, 2, 3, 7, 1e4, 1e9, 1e12, -1, 2.5];

/** A JSON-ish value: every type, the awkward numbers, and the sizes. */
const value = fc.oneof(
  fc.constantFrom<unknown>(null, NaN, Infinity, -Infinity, true, false, '', '3', 'relu', '__proto__', [], {}, [null], [1e12], [NaN], [null, 4]),
  fc.constantFrom(...SIZES),
  fc.constant(0).map(() => protoObject()),
  fc.double({ noNaN: false }),
  fc.array(fc.constantFrom<unknown>(1, 2, 1e9, null, 'a', -3), { maxLength: 4 }),
);

type Mutation =
  | { kind: 'replace'; at: number; v: unknown }
  | { kind: 'delete'; at: number }
  | { kind: 'add'; at: number; key: string; v: unknown };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('replace' as const), at: fc.nat(), v: value }),
  fc.record({ kind: fc.constant('delete' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('add' as const), at: fc.nat(), key: fc.oneof(fc.constantFrom(...KEYS), fc.string({ maxLength: 6 })), v: value }),
);

/** Every container in the tree with its keys (object keys or array indices), so a mutation can pick one uniformly. */
function slots(root: unknown): { parent: Record<string, unknown> | unknown[]; key: string | number }[] {
  const out: { parent: Record<string, unknown> | unknown[]; key: string | number }[] = [];
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) {
      // Long weight arrays: a few slots each, so that structure keys are not drowned out.
      const idx = v.length > 8 ? [0, 1, v.length - 1] : v.map((_, i) => i);
      for (const i of idx) {
        out.push({ parent: v, key: i });
        walk(v[i]);
      }
    } else if (v && typeof v === 'object') {
      for (const k of Object.keys(v)) {
        out.push({ parent: v as Record<string, unknown>, key: k });
        walk((v as Record<string, unknown>)[k]);
      }
    }
  };
  walk(root);
  return out;
}

function mutate(root: unknown, ms: Mutation[]): void {
  for (const m of ms) {
    const all = slots(root);
    if (all.length === 0) return;
    const { parent, key } = all[m.at % all.length];
    if (m.kind === 'replace') (parent as Record<string, unknown>)[key] = m.v;
    else if (m.kind === 'delete') {
      if (Array.isArray(parent)) parent.splice(key as number, 1);
      else delete parent[key as string];
    } else {
      const target = (parent as Record<string, unknown>)[key];
      // defineProperty, so that "__proto__" becomes an own key as JSON.parse makes it.
      if (target && typeof target === 'object' && !Array.isArray(target)) Object.defineProperty(target, m.key, { value: m.v, enumerable: true, writable: true, configurable: true });
    }
  }
}

/** Loads and classifies: a model, or one of our errors with a message that says what it expected. */
function outcome(source: string | object, opts: LoadOptions): 'loaded' | 'refused' {
  try {
    const m = loadModel(source, opts);
    expect(m).to.be.instanceOf(Sequential);
    // A model that loads is usable: every weight finite, every shape as built.
    for (const p of m.params) for (let i = 0; i < p.value.size; i++) expect(Number.isFinite(p.value.data[i])).to.equal(true);
    return 'loaded';
  } catch (e) {
    if (!(e instanceof JacobianChainError)) throw new Error(`not a library error: ${(e as Error)?.name}: ${(e as Error)?.message}\n${(e as Error)?.stack}`);
    expect(e.message, e.message).to.match(/expected|needs|missing|unknown|cannot|matches no|refused|only|must|not a layer|hold|called|branches|the chain|has both|no weights|over the memory budget/);
    return 'refused';
  }
}

const clone = <T>(v: T): T => structuredClone(v);

describe('fuzz: mutated model files load or are refused by a library error, never a TypeError or a crash', function () {
  this.timeout(60_000);
  const budget = getMemoryBudget();
  const tally = { loaded: 0, refused: 0 };
  before(() => setMemoryBudget(64 * 1024 ** 2));
  after(() => {
    setMemoryBudget(budget);
    console.log(`      model-file fuzz: ${tally.loaded + tally.refused} mutants, ${tally.loaded} loaded, ${tally.refused} refused by a library error`);
    // Both outcomes must occur, or the mutations are not reaching the readers.
    expect(tally.loaded, 'some mutants load').to.be.greaterThan(0);
    expect(tally.refused, 'some mutants are refused').to.be.greaterThan(0);
  });
  const count = (o: 'loaded' | 'refused') => tally[o]++;

  it(`this library's JSON (topology + weights), as objects: ${RUNS_PER_BASE} mutants`, () => {
    fc.assert(fc.property(fc.array(mutation, { minLength: 1, maxLength: 3 }), (ms) => {
      const f = clone(seedFile);
      mutate(f, ms);
      count(outcome(f, {}));
    }), { numRuns: RUNS_PER_BASE, seed: 11 });
  });

  it(`the same as JSON text, mutated then truncated at random: ${RUNS_PER_BASE} mutants`, () => {
    fc.assert(fc.property(fc.array(mutation, { maxLength: 2 }), fc.option(fc.nat(), { nil: undefined }), (ms, cut) => {
      const f = clone(seedFile);
      mutate(f, ms);
      const text = JSON.stringify(f);
      count(outcome(cut === undefined ? text : text.slice(0, cut % text.length), {}));
    }), { numRuns: RUNS_PER_BASE, seed: 12 });
  });

  it(`TF.js model.json + shard, the JSON mutated and the bytes cut, lengthened or poisoned: ${RUNS_PER_BASE} mutants`, () => {
    const shard = fc.oneof(
      fc.constant({ op: 'keep' as const }),
      fc.record({ op: fc.constant('cut' as const), n: fc.nat() }),
      fc.record({ op: fc.constant('grow' as const), n: fc.integer({ min: 1, max: 9 }) }),
      fc.record({ op: fc.constant('poison' as const), n: fc.nat(), v: fc.constantFrom(NaN, Infinity, -Infinity, 3.5e38 * 10) }),
      fc.constant({ op: 'absent' as const }),
    );
    fc.assert(fc.property(fc.array(mutation, { maxLength: 3 }), shard, (ms, s) => {
      const json = clone(tfjs.modelJson) as unknown;
      mutate(json, ms);
      let bytes = new Uint8Array(tfjs.weightData.slice(0));
      if (s.op === 'cut') bytes = bytes.subarray(0, s.n % bytes.byteLength);
      if (s.op === 'grow') bytes = Uint8Array.from([...bytes, ...new Array(s.n).fill(0)]);
      if (s.op === 'poison') new DataView(bytes.buffer).setFloat32(4 * (s.n % (bytes.byteLength / 4)), s.v, true);
      count(outcome(json as object, { shards: s.op === 'absent' ? {} : { 'weights.bin': bytes } }));
    }), { numRuns: RUNS_PER_BASE, seed: 13 });
  });

  it(`a Keras 3 Functional topology with fresh weights (sizes up to 1e12, 64 MiB budget): ${RUNS_PER_BASE} mutants`, () => {
    fc.assert(fc.property(fc.array(mutation, { minLength: 1, maxLength: 3 }), (ms) => {
      const f = clone(keras3);
      mutate(f, ms);
      count(outcome(f, { weights: 'initialize' }));
    }), { numRuns: RUNS_PER_BASE, seed: 14 });
  });
});
