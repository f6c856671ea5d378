/**
 * One data holder of the load spec (spec/remote/load.spec.ts), as its own process: connects to a
 * shared stage server as `--client <id>`, trains its own model_0 for `--steps` steps on its own
 * seeded examples, resends the Apply of one step mid-run (a retry the server must not apply
 * again), and prints one JSON line: its steps, each step's wall time, and what the retry got.
 * Run: node --import tsx spec/helpers/load-client.ts --port P --client c0 --model m.json --steps 50 --seed 7 --retry-at 25
 */
import { parseArgs } from 'node:util';
import { loadModelFile } from '../../lib/model-io.js';
import { seededBatch } from '../../lib/models.js';
import type { OptimizerConfig } from '../../lib/optimizers.js';
import { RemoteStageRunner } from '../../lib/remote/client.js';
import { fitRemote } from '../../lib/remote/fit.js';

const { values: v } = parseArgs({ options: { port: { type: 'string' }, client: { type: 'string' }, model: { type: 'string' }, steps: { type: 'string' }, seed: { type: 'string' }, 'retry-at': { type: 'string' }, batch: { type: 'string' } } });
const steps = Number(v.steps);
const batch = Number(v.batch ?? 4);
const seed = Number(v.seed);
const retryAt = Number(v['retry-at']);
const optimizer: OptimizerConfig = { name: 'adam', learning_rate: 0.01 };
const [model_0] = loadModelFile(v.model!).split([3]);
const remote = await RemoteStageRunner.connect({ address: `127.0.0.1:${v.port}`, clientId: v.client, timeoutMs: 60_000 }, optimizer);
const data = seededBatch(model_0.inputShape, { batch: steps * batch, seed });
const stepMs: number[] = [];
const retries: { stepId: number; applied: boolean }[] = [];
const pending: Promise<void>[] = [];
const res = await fitRemote([model_0], remote, data, {
  loss: 'binary_crossentropy',
  optimizer,
  batchSize: batch,
  seed,
  firstStepId: remote.lastApplied + 1,
  onStep: (s) => {
    stepMs.push(s.stepMs);
    // The step's Apply again, as a client whose reply was lost would send it: same client, same id.
    if (s.stepId === retryAt) pending.push(remote.apply().then((r) => void retries.push({ stepId: s.stepId, applied: r.applied })));
  },
});
await Promise.all(pending);
remote.close();
console.log(JSON.stringify({ client: v.client, steps: res.steps, stopped: res.stopped, stepMs, retries }));
