import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EXIT } from '../bin/exit-codes.js';
import { loadModel, saveModelFile } from '../lib/model-io.js';
import { expect } from './helpers/setup.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** Runs `jacobian-chain <args>` as a user would (node with the tsx loader, from the repository root). */
function cli(...args: string[]) {
  const r = spawnSync('node', ['--import', 'tsx', 'bin/cli.ts', ...args], { cwd: ROOT, encoding: 'utf8', timeout: 180_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe('cli: model files (--init-weights, inspect)', () => {
  let dir: string;
  const fixture = () => JSON.parse(readFileSync(join(ROOT, 'spec/fixtures/seed_reference.json'), 'utf8'));
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'jc-cli-files-'));
    writeFileSync(join(dir, 'topology.json'), JSON.stringify({ modelTopology: fixture().modelTopology }));
    const f = fixture();
    f.stages = 5;
    writeFileSync(join(dir, 'stages5.json'), JSON.stringify(f));
    const frozen = fixture();
    frozen.modelTopology.config.layers[3].config.trainable = false;
    writeFileSync(join(dir, 'frozen.json'), JSON.stringify({ modelTopology: frozen.modelTopology, weights: frozen.weights }));
    saveModelFile(loadModel(fixture()), join(dir, 'model.json'), { format: 'tfjs' });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('seed --model: a topology without weights is refused, saying how to ask; --init-weights runs it and says so', () => {
    const refused = cli('seed', '--model', join(dir, 'topology.json'));
    expect(refused.code, 'a bad input file').to.equal(EXIT.badInput);
    expect(refused.err).to.match(/no weights .*--init-weights/);
    const fresh = cli('seed', '--model', join(dir, 'topology.json'), '--init-weights', '--batch', '2');
    expect(fresh.code, fresh.err).to.equal(0);
    expect(fresh.out).to.match(/weights: freshly initialized \(each layer's initializers, seed 0; --init-weights\), not read from .*topology.json/);
    expect(fresh.out.trim().endsWith('all valid')).to.equal(true);
    const alone = cli('seed', '--init-weights');
    expect(alone.code).to.equal(2);
    expect(alone.err).to.match(/expected --init-weights together with --model <file>/);
  });

  it('seed --model: a TF.js model.json with its shard runs; a fixture with "stages": 5 is a clear error', () => {
    const tfjs = cli('seed', '--model', join(dir, 'model.json'), '--batch', '2');
    expect(tfjs.code, tfjs.err).to.equal(0);
    expect(tfjs.out).to.not.match(/freshly initialized/);
    const bad = cli('seed', '--model', join(dir, 'stages5.json'));
    expect(bad.code, 'a bad input file').to.equal(EXIT.badInput);
    expect(bad.err).to.match(/stages5.json": expected "stages" to be lists of layer indices like \[\[0\], \[1, 2\]\], received 5/);
    expect(bad.err).to.not.match(/TypeError/);
  });

  it('jacobian --model --init-weights says the weights are fresh', () => {
    const r = cli('jacobian', '--model', join(dir, 'topology.json'), '--init-weights', '--split', '1');
    expect(r.code, r.err).to.equal(0);
    expect(r.out).to.match(/weights: freshly initialized/);
  });

  it('inspect: the Keras-style summary, and per stage the bytes each way costs, from the shapes', () => {
    const r = cli('inspect', 'spec/fixtures/seed_reference.json', '--split', '1,2', '--batch', '3', '--json');
    expect(r.code, r.err).to.equal(0);
    // Parameters from the shapes: Conv2D 2·2·1·6 + 6, Conv2D 2·2·6·6 + 6, Dense 384 + 1.
    expect(r.out).to.match(/conv2d \(Conv2D\)\s+\(None, 9, 9, 6\)\s+30\s+yes/);
    expect(r.out).to.match(/conv2d_1 \(Conv2D\)\s+\(None, 8, 8, 6\)\s+150\s+yes/);
    expect(r.out).to.match(/flatten \(Flatten\)\s+\(None, 384\)\s+0\s+-/);
    expect(r.out).to.match(/dense \(Dense\)\s+\(None, 1\)\s+385\s+yes/);
    expect(r.out).to.match(/Total params: 565 /);
    const j = JSON.parse(r.out.trim().split('\n').at(-1)!);
    const B = 3;
    const [s0, s1, s2] = j.stages;
    // Stage 0: out 9·9·6 = 486 per sample, in 10·10·1 = 100, kernel+bias 24 + 6, float64.
    expect(s0.inputJacobianBytes).to.equal(B * 486 * 100 * 8);
    expect(s0.weightJacobianBytes).to.equal(B * 486 * (24 + 6) * 8);
    expect(s0.boundaryCotangentBytes).to.equal(B * 486 * 8);
    // Stage 1: out 8·8·6 = 384, in 486, kernel+bias 144 + 6.
    expect(s1.inputJacobianBytes).to.equal(B * 384 * 486 * 8);
    expect(s1.weightJacobianBytes).to.equal(B * 384 * (144 + 6) * 8);
    // Stage 2 ends in one sigmoid unit: its input Jacobian has 384 columns, its weights 385.
    expect(s2.inputJacobianBytes).to.equal(B * 1 * 384 * 8);
    expect(s2.weightJacobianBytes).to.equal(B * 1 * 385 * 8);
    expect(s2.boundaryCotangentBytes).to.equal(B * 8);
    // The structured Jacobian of a convolution is far smaller than its dense one.
    expect(s0.structured.bytes).to.be.below(s0.inputJacobianBytes / 4);
    expect(s0.residualBytes).to.be.above(0);
  });

  it('inspect: trainable false shows, a topology needs --init-weights (exit 3), bad options exit 2', () => {
    const frozen = cli('inspect', join(dir, 'frozen.json'));
    expect(frozen.code, frozen.err).to.equal(0);
    expect(frozen.out).to.match(/dense \(Dense\)\s+\(None, 1\)\s+385\s+no/);
    expect(frozen.out).to.match(/Trainable params: 180 .*\nNon-trainable params: 385 /);
    const bare = cli('inspect', join(dir, 'topology.json'));
    expect(bare.code, 'a bad input file').to.equal(EXIT.badInput);
    expect(bare.err).to.match(/--init-weights/);
    const fresh = cli('inspect', join(dir, 'topology.json'), '--init-weights', '--split', '3');
    expect(fresh.code, fresh.err).to.equal(0);
    expect(fresh.out).to.match(/model_1\s+3\.\.4/);
    expect(cli('inspect').err).to.match(/expected a model file/);
    expect(cli('inspect', join(dir, 'frozen.json'), '--split', '9').code).to.equal(2);
  });
});
