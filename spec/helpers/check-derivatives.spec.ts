/**
 * The checker checked: deliberately wrong derivative rules must make checkDerivatives throw, each
 * caught by the check meant to catch it. A checker that cannot fail would prove nothing.
 */
import { Dense, type DenseSaved } from '../../lib/layers/dense.js';
import type { Cotangents, Differentiable, Forward, Tangents } from '../../lib/layers/layer.js';
import { Rng } from '../../lib/rng.js';
import { type Tensor, assertShape, contiguous, copy, randomNormal, zeros } from '../../lib/tensor.js';
import { checkDerivatives } from './check-derivatives.js';
import { expect } from './setup.js';

/** A small error, far below what a glance at the numbers would notice. */
const OFF = 1 + 1e-4;

function scaled(t: Tensor, c: number): Tensor {
  const out = copy(t);
  for (let i = 0; i < out.size; i++) out.data[i] *= c;
  return out;
}

/** VJP w.r.t. the input off by a factor; the JVP is right. */
class VjpInputOff extends Dense {
  override vjp(saved: DenseSaved, dy: Tensor): Cotangents {
    const ct = super.vjp(saved, dy);
    return { dx: scaled(ct.dx, OFF), dParams: ct.dParams };
  }
}

/** VJP w.r.t. the kernel off by a factor; the rest is right. */
class VjpKernelOff extends Dense {
  override vjp(saved: DenseSaved, dy: Tensor): Cotangents {
    const ct = super.vjp(saved, dy);
    return { dx: ct.dx, dParams: [scaled(ct.dParams[0], OFF), ...ct.dParams.slice(1)] };
  }
}

/** JVP forgets the bias tangent; the VJP is right. */
class JvpMissesBias extends Dense {
  override jvp(saved: DenseSaved, t: Tangents): Tensor {
    return super.jvp(saved, { ...t, paramDots: t.paramDots ? [t.paramDots[0], null] : null });
  }
}

/** JVP and VJP wrong in the same way: transposes of each other, so only finite differences see it. */
class ConsistentlyWrong extends Dense {
  override jvp(saved: DenseSaved, t: Tangents): Tensor {
    return super.jvp(saved, { ...t, xDot: t.xDot ? scaled(t.xDot, OFF) : null });
  }
  override vjp(saved: DenseSaved, dy: Tensor): Cotangents {
    const ct = super.vjp(saved, dy);
    return { dx: scaled(ct.dx, OFF), dParams: ct.dParams };
  }
}

/** Right for one tangent, wrong for a block: swaps tangents 0 and 1 when T > 1 (input or parameters). */
class BlockSwap extends Dense {
  constructor(private readonly which: 'input' | 'params') {
    super({ units: 3, activation: 'tanh' });
  }
  override jvp(saved: DenseSaved, t: Tangents): Tensor {
    const out = contiguous(super.jvp(saved, t));
    const hit = this.which === 'input' ? t.xDot !== null : t.xDot === null;
    if (t.T > 1 && hit) {
      for (let r = 0; r < out.size / t.T; r++) {
        const a = out.data[r * t.T];
        out.data[r * t.T] = out.data[r * t.T + 1];
        out.data[r * t.T + 1] = a;
      }
    }
    return out;
  }
}

/** Not a layer: `y = x²` element-wise, written against the bare Differentiable contract. */
class Square implements Differentiable<{ x: Tensor }> {
  readonly params = [];
  constructor(
    readonly inputShape: number[],
    /** The derivative factor: 2 is right. */
    private readonly k = 2,
  ) {}
  get outputShape(): number[] {
    return this.inputShape;
  }
  forward(x: Tensor): Forward<{ x: Tensor }> {
    const y = copy(x);
    for (let i = 0; i < y.size; i++) y.data[i] **= 2;
    return { y, saved: { x: copy(x) } };
  }
  jvp({ x }: { x: Tensor }, { xDot, T }: Tangents): Tensor {
    const out = zeros([...x.shape, T]);
    if (!xDot) return out;
    assertShape(xDot, [...x.shape, T], 'Square jvp xDot');
    const d = contiguous(xDot).data;
    for (let i = 0; i < x.size; i++) for (let t = 0; t < T; t++) out.data[i * T + t] = this.k * x.data[i] * d[i * T + t];
    return out;
  }
  vjp({ x }: { x: Tensor }, dy: Tensor): Cotangents {
    const dx = copy(dy);
    for (let i = 0; i < x.size; i++) dx.data[i] *= this.k * x.data[i];
    return { dx, dParams: [] };
  }
}

function built<L extends Dense>(layer: L): L {
  return layer.build([5], { rng: new Rng(3) });
}

describe('checkDerivatives (meta: the checker can fail)', () => {
  const x = randomNormal([3, 5], new Rng(4));

  it('passes on correct rules (the control: the failures below come from the bugs alone)', () => {
    checkDerivatives(built(new Dense({ units: 3, activation: 'tanh' })), x);
    checkDerivatives(new Square([2, 3]), randomNormal([2, 2, 3], new Rng(5)));
  });

  it('catches a VJP w.r.t. the input off by 1e-4 (adjoint identity)', () => {
    expect(() => checkDerivatives(built(new VjpInputOff({ units: 3, activation: 'tanh' })), x)).to.throw(/adjoint identity w\.r\.t\. input/);
  });

  it('catches a VJP w.r.t. the kernel off by 1e-4 (adjoint identity, parameters)', () => {
    expect(() => checkDerivatives(built(new VjpKernelOff({ units: 3, activation: 'sigmoid' })), x)).to.throw(/adjoint identity w\.r\.t\. parameters/);
  });

  it('catches a JVP that forgets the bias (finite differences, parameters)', () => {
    expect(() => checkDerivatives(built(new JvpMissesBias({ units: 3, activation: 'relu' })), x)).to.throw(/JVP w\.r\.t\. parameters vs central finite differences/);
  });

  it('catches JVP and VJP wrong in the same way, which the adjoint identity cannot see (finite differences)', () => {
    expect(() => checkDerivatives(built(new ConsistentlyWrong({ units: 3, activation: 'linear' })), x)).to.throw(/JVP w\.r\.t\. input vs central finite differences/);
    expect(() => checkDerivatives(new Square([2, 3], 2.001), randomNormal([2, 2, 3], new Rng(5)))).to.throw(/JVP w\.r\.t\. input vs central finite differences/);
  });

  it('catches a JVP right for one tangent but wrong for a block of T > 1 (dual Jacobian vs stacked VJPs)', () => {
    expect(() => checkDerivatives(built(new BlockSwap('input')), x)).to.throw(/dual-number Jacobian vs stacked VJPs \(input\)/);
    expect(() => checkDerivatives(built(new BlockSwap('params')), x)).to.throw(/dual-number Jacobian vs stacked VJPs \(kernel\)/);
  });
});
