/** Registers the package's own chai `allclose` assertion for every spec. */
import * as chai from 'chai';
import { chaiAllclose } from '../../lib/chai.js';

chai.use(chaiAllclose);
export const { expect } = chai;

/** Awaits `p` and expects it to reject with an error whose message matches `re`. */
export async function expectReject(p: Promise<unknown>, re: RegExp): Promise<void> {
  let err: unknown = null;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(err, `expected a rejection matching ${re}`).to.be.instanceOf(Error);
  expect((err as Error).message).to.match(re);
}
