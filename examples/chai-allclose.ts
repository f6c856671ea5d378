// The chai plugin of jacobian-chain/chai: expect(actual).to.be.allclose(expected, { rtol, atol }) on
// tensors, Jacobians, {shape, data} objects, nested arrays and numbers, by NumPy's rule
// |actual − expected| ≤ atol + rtol·|expected| (rtol 1e-5, atol 1e-8 by default), shapes first.
// Run: npx tsx examples/chai-allclose.ts
import * as chai from 'chai';
import { fromJSON } from 'jacobian-chain';
import { chaiAllclose } from 'jacobian-chain/chai';

chai.use(chaiAllclose);
const { expect } = chai;

const t = fromJSON({ shape: [2, 2], data: [1, 2, 3, 4] }); // a [2, 2] tensor

expect(t).to.be.allclose([[1, 2], [3, 4 + 1e-9]]); // passes: within the tolerances
console.log('close: passed');

for (const expected of [[[1, 2], [3, 4.5]], [1, 2, 3, 4]]) {
  try {
    expect(t).to.be.allclose(expected, { rtol: 1e-6 }); // fails, and says where and by how much
  } catch (e) {
    console.log(`${(e as Error).name}: ${(e as Error).message}`);
  }
}
