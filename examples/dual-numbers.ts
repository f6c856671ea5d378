// Forward mode from a scalar Dual up to the engine's vectorized tangents (trailing axis T).
// Run: npx tsx examples/dual-numbers.ts
import {
  Dense, Dual, Rng, allclose, derivative, jacobianWrtInput, jacobianWrtInputByVjp, randomUniform, tensor, zeros,
} from 'jacobian-chain';

// 1. A dual number a + a'ε with ε² = 0: every operation carries the derivative along.
const x = Dual.variable(2); // 2 + 1ε: "the input we differentiate against"
const f = x.pow(3).sub(x.mul(2)); // x³ − 2x
console.log(`f(2 + 1ε) = ${f}   (f(2) = 4, f'(2) = 3·2² − 2 = 10)`);

// 2. derivative(f, x) is that one pass; it matches the calculus and a central difference.
const s = derivative((v) => v.sigmoid(), 0.3);
const sig = (v: number) => 1 / (1 + Math.exp(-v));
console.log(`sigmoid'(0.3): dual ${s.toFixed(12)}, σ(1−σ) ${(sig(0.3) * (1 - sig(0.3))).toFixed(12)}, central difference ${((sig(0.3 + 1e-5) - sig(0.3 - 1e-5)) / 2e-5).toFixed(12)}`);

// 3. Several inputs: one pass per seeded input gives one partial derivative (one Jacobian column).
const g = (a: Dual, b: Dual) => a.mul(b).add(a.exp()); // a·b + eᵃ
console.log(`∂g/∂a at (1, 2) = ${g(Dual.variable(1), Dual.constant(2)).tangent} (= 2 + e), ∂g/∂b = ${g(Dual.constant(1), Dual.variable(2)).tangent} (= 1)`);

// 4. The engine: every scalar carries T tangents at once, stored as a trailing axis. A Dense layer
//    on x [B, 3] takes a tangent block [B, 3, T] and returns [B, 2, T]; seeding the identity
//    (T = 3) returns all 3 Jacobian columns in one pass.
const dense = new Dense({ units: 2, activation: 'tanh' }).build([3], { rng: new Rng(1) });
const xb = randomUniform([1, 3], new Rng(2)); // B = 1
const seed = zeros([1, 3, 3]);
for (let i = 0; i < 3; i++) seed.set(0, i, i, 1); // tangent t = basis direction e_t
const { saved } = dense.forward(xb);
const block = dense.jvp(saved, { xDot: seed, paramDots: null, T: 3 }); // [1, 2, 3]: row o, column t
console.log(`jvp block shape [${block.shape}]:`);
for (let o = 0; o < 2; o++) console.log(`  [${[0, 1, 2].map((t) => block.get(0, o, t).toFixed(6)).join(', ')}]`);

// 5. The same column by scalar Duals: y_0 = tanh(Σ_i x_i W[i, 0] + b_0), seeding x_1.
const W = dense.params[0].value;
const b = dense.params[1].value;
const xs = [0, 1, 2].map((i) => (i === 1 ? Dual.variable(xb.get(0, i)) : Dual.constant(xb.get(0, i))));
const y0 = xs.reduce((acc, xi, i) => acc.add(xi.mul(W.get(i, 0))), Dual.constant(b.get(0))).tanh();
console.log(`scalar Dual ∂y_0/∂x_1 = ${y0.tangent.toFixed(6)}, engine block[0, 0, 1] = ${block.get(0, 0, 1).toFixed(6)}`);

// 6. The library's builder does step 4 for any layer or stage, in blocks of T columns; any T gives
//    the same Jacobian, and so do the rows built by reverse mode (one VJP per output).
const J1 = jacobianWrtInput(dense, xb, { tangents: 1 }); // 3 passes of 1 tangent
const J3 = jacobianWrtInput(dense, xb, { tangents: 3 }); // 1 pass of 3 tangents
const Jr = jacobianWrtInputByVjp(dense, xb); // 2 reverse passes
const J = tensor(Float64Array.from(block.data), [1, 2, 3]);
console.log(`T = 1 equals T = 3: ${allclose(J1, J3, { rtol: 0, atol: 0 })}; equals the jvp block: ${allclose(J3, J, { rtol: 0, atol: 0 })}; equals reverse mode: ${allclose(J3, Jr, { rtol: 1e-12 })}`);
