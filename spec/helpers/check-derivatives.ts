/**
 * The one helper every derivative rule is checked through, four ways:
 * 1. central finite differences along a random direction (input and each parameter);
 * 2. the adjoint identity ⟨u, J v⟩ = ⟨uᵀJ, v⟩ (the JVP and the VJP are transposes);
 * 3. the dual-number Jacobian equal to the Jacobian stacked from VJPs of basis cotangents;
 * 4. an exact case, supplied by each spec as `exact` (Dense: ∂y/∂x = W).
 * And every structured engine (propagate, compressed forward, compressed reverse) builds the same
 * Jacobians as the dense one, through the layer's structure hooks or their generic fallbacks.
 *
 * Where `f` couples the samples (BatchNormalization in training), the batch Jacobian and the
 * structured engines must refuse it; check 3 then compares the full Jacobian `[B, ...out, B, ...in]`
 * with the one stacked from VJPs of every (sample, output) basis cotangent. Only trainable
 * parameters have Jacobians; the finite differences and the adjoint identity move every parameter.
 */
import { type Differentiable, type ForwardOptions, trainableParams } from '../../lib/layers/layer.js';
import { type DenseJacobian, firstCouplingLayer, fullJacobianWrtInput, jacobianWrtInput, jacobianWrtInputByVjp, jacobianWrtWeights, jacobianWrtWeightsByVjp, jvpAlong } from '../../lib/jacobian.js';
import { Rng } from '../../lib/rng.js';
import { type Tensor, axpy, contiguous, copy, dot, randomNormal, sizeOf, zeros } from '../../lib/tensor.js';
import { expect } from './setup.js';

export interface CheckOptions {
  /** Seed of the random directions. */
  seed?: number;
  /** Fresh forward options per call (same Dropout mask each time: give a new Rng with one seed). */
  forwardOptions?: () => ForwardOptions;
  /** Tolerance of the finite-difference check (truncation error is O(h²)). */
  fdRtol?: number;
  /** Step of the finite differences. */
  h?: number;
  /** Skip the input derivative (e.g. for a non-differentiable input). */
  skipInput?: boolean;
  /** Check 4, the exact case: called with the dual-number Jacobians (input, then each parameter). */
  exact?: (Jx: DenseJacobian | null, Jw: DenseJacobian[]) => void;
  /** Skip the structured engines (for a Differentiable they cannot take, which should be none). */
  skipEngines?: boolean;
}

/** The structured engines every derivative is also built with, and checked against the dense one. */
const ENGINES = [
  { mode: 'forward', engine: 'propagate' },
  { mode: 'forward', engine: 'compressed' },
  { mode: 'reverse', engine: 'compressed' },
] as const;

/** Runs checks 1–3 and every structured engine on `f` at `x`, then check 4 (`opts.exact`) when given. Returns the dual-number Jacobians. */
export function checkDerivatives<S>(f: Differentiable<S>, x: Tensor, opts: CheckOptions = {}) {
  const rng = new Rng(opts.seed ?? 1234);
  const fo = opts.forwardOptions ?? (() => ({}));
  const h = opts.h ?? 1e-6;
  const fdRtol = opts.fdRtol ?? 1e-6;
  const params = f.params;
  const v = randomNormal(x.shape, rng);
  const dTheta = params.map((p) => randomNormal(p.value.shape, rng));
  const { y } = f.forward(x, fo());
  const u = randomNormal(y.shape, rng);

  // 1. Central finite differences along v (input) and along dθ (all parameters at once).
  if (!opts.skipInput) {
    const xp = axpy(copy(x), h, v);
    const xm = axpy(copy(x), -h, v);
    const fd = axpy(copy(f.forward(xp, fo()).y), -1, f.forward(xm, fo()).y);
    fd.data.forEach((_, i) => (fd.data[i] /= 2 * h));
    const { jv } = jvpAlong(f, x, v, null, fo());
    expect(jv, 'JVP w.r.t. input vs central finite differences').to.be.allclose(fd, { rtol: fdRtol, atol: fdRtol });
  }
  if (params.length > 0) {
    const saved = params.map((p) => p.value);
    const shift = (s: number) => params.forEach((p, k) => (p.value = axpy(copy(saved[k]), s * h, dTheta[k])));
    shift(1);
    const yp = f.forward(x, fo()).y;
    shift(-1);
    const ym = f.forward(x, fo()).y;
    params.forEach((p, k) => (p.value = saved[k]));
    const fd = axpy(copy(yp), -1, ym);
    fd.data.forEach((_, i) => (fd.data[i] /= 2 * h));
    const { jv } = jvpAlong(f, x, null, dTheta, fo());
    expect(jv, 'JVP w.r.t. parameters vs central finite differences').to.be.allclose(fd, { rtol: fdRtol, atol: fdRtol });
  }

  // 2. Adjoint identity: ⟨u, J v⟩ = ⟨uᵀJ, v⟩, for the input and for the parameters.
  const fwd = f.forward(x, fo());
  const ct = f.vjp(fwd.saved, u);
  if (!opts.skipInput) {
    const lhs = dot(u, jvpAlong(f, x, v, null, fo()).jv);
    const rhs = dot(ct.dx, v);
    expect(lhs, 'adjoint identity w.r.t. input').to.be.allclose(rhs, { rtol: 1e-12, atol: 1e-12 });
  }
  if (params.length > 0) {
    const lhs = dot(u, jvpAlong(f, x, null, dTheta, fo()).jv);
    const rhs = ct.dParams.reduce((s, g, k) => s + dot(g, dTheta[k]), 0);
    expect(lhs, 'adjoint identity w.r.t. parameters').to.be.allclose(rhs, { rtol: 1e-12, atol: 1e-12 });
  }

  // 3. Dual-number Jacobians equal the Jacobians stacked from VJPs of basis cotangents.
  const coupled = firstCouplingLayer(f, fo()) !== null;
  if (coupled && !opts.skipInput) {
    expect(() => jacobianWrtInput(f, x, fo()), 'the batch Jacobian of a coupled stage').to.throw(/couples the samples/);
    expect(() => jacobianWrtInput(f, x, { ...fo(), format: 'sparse', mode: 'auto' }), 'the sparse batch Jacobian of a coupled stage').to.throw(/couples the samples/);
    const full = fullJacobianWrtInput(f, x, fo());
    expect(full, 'full dual-number Jacobian vs stacked VJPs (input, samples coupled)').to.be.allclose(fullJacobianByVjp(f, x, fo()), { rtol: 1e-12, atol: 1e-14 });
    expect(fullJacobianWrtInput(f, x, { ...fo(), tangents: 3 }), 'full dual-number Jacobian in blocks of 3').to.be.allclose(full, { rtol: 1e-12, atol: 1e-14 });
  }
  const trainable = trainableParams(f);
  const Jx = opts.skipInput || coupled ? null : jacobianWrtInput(f, x, fo());
  if (Jx) expect(Jx, 'dual-number Jacobian vs stacked VJPs (input)').to.be.allclose(jacobianWrtInputByVjp(f, x, fo()), { rtol: 1e-12, atol: 1e-14 });
  const Jw = jacobianWrtWeights(f, x, fo());
  const JwRev = jacobianWrtWeightsByVjp(f, x, fo());
  expect(Jw.length, 'one Jacobian per trainable parameter').to.equal(trainable.length);
  Jw.forEach((J, k) => expect(J, `dual-number Jacobian vs stacked VJPs (${trainable[k].name})`).to.be.allclose(JwRev[k], { rtol: 1e-12, atol: 1e-14 }));
  // Narrow blocks (T = 3, the last one partial) exercise the per-block seeding and the rows hint.
  if (Jx) expect(jacobianWrtInput(f, x, { ...fo(), tangents: 3 }), 'dual-number Jacobian in blocks of 3 (input)').to.be.allclose(Jx, { rtol: 1e-12, atol: 1e-14 });
  jacobianWrtWeights(f, x, { ...fo(), tangents: 3 }).forEach((J, k) => expect(J, `dual-number Jacobian in blocks of 3 (${trainable[k].name})`).to.be.allclose(JwRev[k], { rtol: 1e-12, atol: 1e-14 }));

  // The structured engines, sparse storage, against the dense Jacobians.
  if (!opts.skipEngines && coupled) {
    for (const e of ENGINES) expect(() => jacobianWrtWeights(f, x, { ...fo(), ...e, format: 'sparse' }), `${e.mode}/${e.engine} on a coupled stage`).to.throw(/couples the samples/);
  } else if (!opts.skipEngines) {
    for (const e of ENGINES) {
      const what = `${e.mode}/${e.engine}`;
      if (Jx) expect(jacobianWrtInput(f, x, { ...fo(), ...e, format: 'sparse' }), `${what} (input)`).to.be.allclose(Jx, { rtol: 1e-12, atol: 1e-14 });
      jacobianWrtWeights(f, x, { ...fo(), ...e, format: 'sparse' }).forEach((J, k) => expect(J, `${what} (${trainable[k].name})`).to.be.allclose(Jw[k], { rtol: 1e-12, atol: 1e-14 }));
    }
  }

  // 4. The exact case.
  opts.exact?.(Jx, Jw);
  return { Jx, Jw, y };
}

/** The full Jacobian `[B, ...out, B, ...in]` stacked row by row from VJPs of every (sample, output) basis cotangent: the reference for a coupled stage. */
function fullJacobianByVjp<S>(f: Differentiable<S>, x: Tensor, fo: ForwardOptions): Tensor {
  const fwd = f.forward(x, fo);
  const rows = fwd.y.size;
  const J = zeros([...fwd.y.shape, ...x.shape]);
  const dy = zeros(fwd.y.shape);
  for (let r = 0; r < rows; r++) {
    dy.data.fill(0);
    dy.data[r] = 1;
    const dx = contiguous(f.vjp(fwd.saved, dy).dx);
    J.data.set(dx.data.subarray(dx.offset, dx.offset + sizeOf(x.shape)), r * x.size);
  }
  return J;
}
