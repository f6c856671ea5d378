import type { MemoryReport } from '../../lib/memory-report.js';
import { expect } from './setup.js';

/** Estimate and measurement must agree on every figure they both have. */
export function expectSame(est: MemoryReport, got: MemoryReport, jacobians = true): void {
  expect(got.kind).to.equal('measured');
  expect(est.kind).to.equal('estimate');
  if (jacobians) expect(got.explicit.jacobians.map((j) => [j.wrt, j.shape, j.bytes])).to.deep.equal(est.explicit.jacobians.map((j) => [j.wrt, j.shape, j.bytes]));
  else expect(got.explicit.jacobians).to.deep.equal([]);
  if (!jacobians) {
    expect(got.vjp.residualBytes, 'residual bytes').to.equal(est.vjp.residualBytes);
    expect(got.vjp.cotangentBytes, 'cotangent bytes').to.equal(est.vjp.cotangentBytes);
    return;
  }
  expect(got.vjp.residualBytes, 'residual bytes').to.equal(est.vjp.residualBytes);
  expect(got.vjp.cotangentBytes, 'cotangent bytes').to.equal(est.vjp.cotangentBytes);
  expect(got.vjp.residuals.length, 'residual buffers').to.equal(est.vjp.residuals.length);
  expect(got.vjp.cotangents.length, 'cotangent buffers').to.equal(est.vjp.cotangents.length);
  expect(got.ratio).to.equal(est.ratio);
}

