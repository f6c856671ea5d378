import { BatchNormalization } from '../../lib/layers/batch-normalization.js';
import { Dense } from '../../lib/layers/dense.js';
import { loadModelFile } from '../../lib/model-io.js';
import { seededBatch } from '../../lib/models.js';
import type { OptimizerConfig } from '../../lib/optimizers.js';
import { RemoteStageRunner } from '../../lib/remote/client.js';
import { fitRemote } from '../../lib/remote/fit.js';
import { StageServer } from '../../lib/remote/server.js';
import { Rng } from '../../lib/rng.js';
import { Sequential } from '../../lib/sequential.js';
import type { Tensor } from '../../lib/tensor.js';
import { fit, takeRows } from '../../lib/train.js';
import { EXIT } from '../../bin/exit-codes.js';
import { cli, modelFileFixture, serve, stop } from '../helpers/remote.js';
import { expect, expectReject } from '../helpers/setup.js';

const LOSS = 'binary_crossentropy';
/** Summation rounding only: the batch's sum grouped by micro-batch, a few ulps a step. */
const RTOL = 1e-12;

function weightsOf(layers: readonly { params: readonly { value: Tensor }[] }[]): Tensor[][] {
  return layers.map((l) => l.params.map((p) => p.value));
}

/** The largest |a - b| / |a| over every weight (|a| floored at 1e-300). */
function maxRelDiff(a: readonly (readonly Tensor[])[], b: readonly (readonly Tensor[])[]): number {
  let worst = 0;
  a.forEach((ps, i) => ps.forEach((t, k) => t.data.forEach((v, j) => (worst = Math.max(worst, Math.abs(v - b[i][k].data[j]) / Math.max(Math.abs(v), 1e-300))))));
  return worst;
}

describe('remote/pipeline: GPipe-style micro-batches across two processes', function () {
  this.timeout(180_000);
  const fixture = modelFileFixture('pipeline_spec');
  const data = seededBatch([5, 5, 1], { batch: 12, seed: 3 });

  const cases: [string, OptimizerConfig][] = [
    ['SGD with momentum', { name: 'sgd', learning_rate: 0.1, momentum: 0.9 }],
    ['Adam', { name: 'adam', learning_rate: 0.01 }],
  ];
  for (const [label, optimizer] of cases) {
    it(`${label}, 3 micro-batches against jacobian-chain serve: the three Backwards of a step in flight at once, the weights fit's to ${RTOL} relative, the losses fit's`, async () => {
      const server = await serve(['--model', fixture.file(), '--split', '3', '--stages', '1..']);
      let remote: RemoteStageRunner | null = null;
      try {
        const stages = loadModelFile(fixture.file()).split([3]);
        remote = await RemoteStageRunner.connect({ address: `127.0.0.1:${server.port}`, timeoutMs: 20_000 }, optimizer);
        const opts = { loss: LOSS, optimizer, epochs: 2, batchSize: 4, seed: 5 } as const;
        const inFlight: number[] = [];
        const res = await fitRemote([stages[0]], remote, data, { ...opts, microBatches: 3, onStep: (s) => inFlight.push(s.wire.maxInFlight) });
        expect(res.steps).to.equal(6);
        // The three Backwards at least are sent at once (the Forwards too, when the local pass is the slower).
        expect(inFlight).to.deep.equal([3, 3, 3, 3, 3, 3]);
        const across = [...weightsOf(stages[0].layers), ...(await remote.weights())];

        const single = loadModelFile(fixture.file());
        const ref = await fit(single, data, { split: [3], ...opts });
        const diff = maxRelDiff(weightsOf(single.layers), across);
        expect(diff, `max relative difference from fit ${diff}`).to.be.at.most(RTOL);
        res.history.forEach((h, e) => expect(Math.abs(h.loss - ref.history[e].loss)).to.be.at.most(RTOL * Math.abs(ref.history[e].loss)));
        // Not a test that passes by doing nothing: the weights moved far more than the tolerance.
        expect(maxRelDiff(weightsOf(loadModelFile(fixture.file()).layers), across)).to.be.greaterThan(1e-3);
      } finally {
        remote?.close();
        await stop(server);
      }
    });
  }

  it('jacobian-chain train --connect --micro-batches 2 says it pipelines and how many calls were in flight', async () => {
    const server = await serve(['--model', fixture.file(), '--split', '3', '--stages', '1..']);
    try {
      const c = cli(['train', '--connect', `127.0.0.1:${server.port}`, '--model', fixture.file(), '--split', '3', '--examples', '8', '--batch-size', '4', '--micro-batches', '2', '--timeout-ms', '20000']);
      const { code } = await c.exited(120_000);
      const out = c.out.join('');
      expect(code, out).to.equal(EXIT.ok);
      expect(out).to.match(/batch 4 in 2 micro-batches \(pipelined\)/);
      expect(out).to.match(/step 1 \(epoch 1, batch 2\/2\): loss [\d.]+ \| sent .* in 5 calls \(up to 2 in flight\)/);
      // With calls overlapping, the compute here is timed section by section, not what the round trips leave of the step.
      const here = [...out.matchAll(/^step \d+ .* compute ([\d.]+) ms here/gm)].map((m) => Number(m[1]));
      expect(here).to.have.length(2);
      here.forEach((ms) => expect(ms).to.be.greaterThan(0));
    } finally {
      await stop(server);
    }
  });

  it('refused: a model whose layer couples the samples (BatchNormalization in training), micro-batches with labels on the server, bad micro-batch fields', async () => {
    const model = new Sequential([new Dense({ units: 4 }), new BatchNormalization(), new Dense({ units: 1, activation: 'sigmoid' })], { inputShape: [3], rng: new Rng(2) });
    const [m0, m1] = model.split([1]);
    const server = new StageServer([m1]);
    const { port } = await server.listen();
    const remote = await RemoteStageRunner.connect({ address: `127.0.0.1:${port}` }, { name: 'sgd', learning_rate: 0.1 });
    try {
      const d = seededBatch([3], { batch: 4, seed: 1 });
      const opts = { loss: LOSS, optimizer: { name: 'sgd', learning_rate: 0.1 }, batchSize: 4, microBatches: 2 } as const;
      // m0 alone is shardable: the server refuses for its BatchNormalization.
      await expectReject(fitRemote([m0], remote, d, opts), /INVALID_ARGUMENT: Forward: Forward of step 0 in 2 micro-batches: layer 1 \(.*BatchNormalization.*\) couples the samples of a batch in training \(batch statistics\), so a micro-batch cannot compute its part alone; expected micro-batches 1 for this model/);
      await expectReject(fitRemote([m0], remote, { x: d.x }, { ...opts, labels: 'server' }), /expected microBatches 1 with labels on the server/);
      // In inference BatchNormalization uses its moving statistics: micro-batches are allowed, their fields checked.
      remote.beginStep(1, { training: false });
      const h = m0.forward(d.x).y;
      await expectReject(remote.forwardPart(h, { index: 2, count: 2, rowOffset: 0, batchRows: 4 }), /INVALID_ARGUMENT: Forward: Forward of step 1: expected micro_batch in \[0, 1\] \(micro_batches 2\), received 2/);
      await expectReject(remote.forwardPart(h, { index: 0, count: 2, rowOffset: 2, batchRows: 4 }), /INVALID_ARGUMENT: Forward: Forward of step 1, micro-batch 0: expected rows within the batch's 4, received 4 rows from row 2/);
      await expectReject(remote.backwardPart(h, 1), /FAILED_PRECONDITION: Backward: Backward of step 1, but no step is recorded; expected Forward of step 1 first/);
      const y0 = await remote.forwardPart(takeRows(h, [0, 1]), { index: 0, count: 2, rowOffset: 0, batchRows: 4 });
      expect(y0.shape).to.deep.equal([2, 1]);
      await expectReject(remote.backwardPart(y0, 1), /FAILED_PRECONDITION: Backward: Backward of step 1, micro-batch 1, before its Forward; expected Forward of micro-batch 1 first/);
      await remote.backwardPart(y0, 0);
      await expectReject(remote.apply(), /FAILED_PRECONDITION: Apply: Apply of step 1, but micro-batch 1 of 2 has no Backward; expected Forward and Backward of step 1 first/);
    } finally {
      remote.close();
      await server.close();
    }
  });
});
