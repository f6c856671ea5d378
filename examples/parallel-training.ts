// Every core: the same training run on 1 and 2 worker threads, through the pool of
// jacobian-chain/node. The batch is cut into fixed shards whose gradients are summed in shard
// order, so the thread count cannot change a bit; today's one-thread fit agrees to rounding.
// Run: npx tsx examples/parallel-training.ts
import { Conv2D, Dense, Dropout, Flatten, MaxPooling2D, Rng, Sequential, fit } from 'jacobian-chain';
import { fitParallel, loadMnistBinary } from 'jacobian-chain/node';

const { train } = loadMnistBinary({ positive: 3, negative: 8, limit: 40, seed: 0 });
const build = () =>
  new Sequential(
    [new Conv2D({ filters: 4, kernel_size: 3, activation: 'relu' }), new MaxPooling2D({ pool_size: 2 }), new Flatten(), new Dropout({ rate: 0.3 }), new Dense({ units: 1, activation: 'sigmoid' })],
    { inputShape: [28, 28, 1], rng: new Rng(0) },
  );
const opts = { split: [2], loss: 'binary_crossentropy', optimizer: { name: 'adam', learning_rate: 0.01 }, epochs: 2, batchSize: 16, seed: 0 } as const;

const weights: Float64Array[] = [];
for (const threads of [1, 2]) {
  const model = build();
  const { history } = await fitParallel(model, train, { ...opts, threads }); // the pool is closed after the run
  console.log(`${threads} thread${threads > 1 ? 's' : ' '}: loss per epoch ${history.map((h) => h.loss.toFixed(6)).join(', ')}`);
  weights.push(Float64Array.from(model.params.flatMap((p) => Array.from(p.value.data))));
}
console.log(`bit-identical weights, 1 and 2 threads: ${weights[0].every((v, i) => Object.is(v, weights[1][i]))}`);

const model = build();
await fit(model, train, opts); // one step over the whole batch: its sums are grouped otherwise
const w = Float64Array.from(model.params.flatMap((p) => Array.from(p.value.data)));
const worst = Math.max(...w.map((v, i) => Math.abs(v - weights[0][i]) / Math.max(Math.abs(v), 1e-300)));
console.log(`one-thread fit: max relative difference ${worst.toExponential(1)}`);
