/**
 * A chai plugin: `expect(actual).to.be.allclose(expected, { rtol, atol, equalNan })` for tensors,
 * Jacobians, `{shape, data}` objects, nested arrays and numbers. On failure it names the worst
 * element, both values and both errors; the shape is checked first. NaN matches NaN only with
 * `equalNan: true`, as NumPy. The message reaches mocha's report whole (no diff is attached).
 *
 * @example
 * import * as chai from 'chai';
 * import { chaiAllclose } from 'jacobian-chain/chai';
 * chai.use(chaiAllclose);
 * chai.expect(jacobianWrtInput(layer, x)).to.be.allclose(expectedJ, { rtol: 1e-10 });
 * @module
 */
import { type AllcloseOptions, type Comparable, allcloseReport, describeReport } from './allclose.js';

export type { AllcloseOptions, AllcloseReport, Comparable } from './allclose.js';
export { allclose, allcloseReport } from './allclose.js';

declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Chai {
    interface Assertion {
      /** Asserts element-wise closeness, `|a - e| <= atol + rtol·|e|`, after checking shapes. */
      allclose(expected: unknown, opts?: { rtol?: number; atol?: number; equalNan?: boolean }): Assertion;
    }
  }
}

/** Minimal view of the chai object the plugin needs (so that this module does not import chai). */
interface ChaiLike {
  // `any` because chai types `this` as its own AssertionStatic, which this module does not import.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  Assertion: { addMethod(name: string, fn: (this: any, ...args: any[]) => void): void };
}

/** The plugin: pass it to `chai.use`. */
export function chaiAllclose(chai: ChaiLike): void {
  chai.Assertion.addMethod('allclose', function (this: { _obj: unknown; assert: (...a: unknown[]) => void }, ...args: unknown[]) {
    const [expected, opts = {}] = args as [Comparable, AllcloseOptions];
    const report = allcloseReport(this._obj as Comparable, expected, opts);
    const detail = describeReport(report, opts);
    // showDiff false: mocha's reporter, when it shows a diff, cuts a message matching
    // /^([^:]+): expected/ to its first part, which would drop the detail ("shapes: expected ...",
    // or a custom message "JVP: expected ..."); and a diff of two stringified tensors tells nothing
    // the detail does not. The 6th argument has meant showDiff since chai 4, so chai 5 and 6 agree.
    this.assert(report.pass, `expected values to be allclose: ${detail}`, `expected values not to be allclose, but they are (max rel error ${report.maxRelError.toExponential(3)})`, expected, this._obj, false);
  });
}

export default chaiAllclose;
