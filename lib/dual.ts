/**
 * Scalar dual numbers, for teaching forward mode: each number carries its primal value and its
 * tangent (the derivative w.r.t. one chosen input), and every operation applies the chain rule
 * to both at once, so evaluating `f` on `x + 1·ε` yields `f(x)` and `f'(x)` in a single pass.
 *
 * The engine runs the same rules vectorized: a tangent block rides along each primal as a
 * trailing axis `T` (see the tangent layout in `lib/layers/layer.ts`: input tangent `[B, ...in, T]`,
 * `jvp` returns `[B, ...out, T]`), so every scalar carries `T` derivative parts instead of one, and
 * `T` columns of a Jacobian come out of one pass. {@link Dual} is that with `T = 1` and one scalar.
 * @module
 */
import { type ActivationName, LEAKY_RELU_SLOPE, SELU_ALPHA, SELU_SCALE, activationName, activationScalar, sigmoid } from './activations.js';
import { erfc } from './erf.js';
import { ConfigError, fmtValue } from './errors.js';

/**
 * A dual number `primal + tangent·ε` with `ε² = 0`.
 * @example
 * const x = Dual.variable(2);
 * const y = x.mul(x).add(x.exp()); // y.primal = 4 + e², y.tangent = 4 + e²
 */
export class Dual {
  /** The value. */
  readonly primal: number;
  /** The derivative of the value w.r.t. the seeded input. */
  readonly tangent: number;

  constructor(primal: number, tangent = 0) {
    if (typeof primal !== 'number' || typeof tangent !== 'number') {
      throw new ConfigError(`Dual: expected numbers (primal, tangent), received ${fmtValue(primal)}, ${fmtValue(tangent)}`);
    }
    this.primal = primal;
    this.tangent = tangent;
  }

  /** The input being differentiated against: tangent seeded with 1. */
  static variable(x: number): Dual {
    return new Dual(x, 1);
  }

  /** A constant: tangent 0. */
  static constant(c: number): Dual {
    return new Dual(c, 0);
  }

  /** `a + b`: tangents add. */
  add(o: Dual | number): Dual {
    const b = lift(o);
    return new Dual(this.primal + b.primal, this.tangent + b.tangent);
  }

  /** `a − b`. */
  sub(o: Dual | number): Dual {
    const b = lift(o);
    return new Dual(this.primal - b.primal, this.tangent - b.tangent);
  }

  /** `a b`: product rule, `a' b + a b'`. */
  mul(o: Dual | number): Dual {
    const b = lift(o);
    return new Dual(this.primal * b.primal, this.tangent * b.primal + this.primal * b.tangent);
  }

  /** `a / b`: quotient rule, `(a' b − a b') / b²`. */
  div(o: Dual | number): Dual {
    const b = lift(o);
    return new Dual(this.primal / b.primal, (this.tangent * b.primal - this.primal * b.tangent) / (b.primal * b.primal));
  }

  /** `−a`. */
  neg(): Dual {
    return new Dual(-this.primal, -this.tangent);
  }

  /** `exp a`: `(exp a) a'`. */
  exp(): Dual {
    const e = Math.exp(this.primal);
    return new Dual(e, e * this.tangent);
  }

  /** `log a`: `a' / a`. */
  log(): Dual {
    return new Dual(Math.log(this.primal), this.tangent / this.primal);
  }

  /** `tanh a`: `(1 − tanh² a) a'`, from the output as the engine's rule does. */
  tanh(): Dual {
    const y = Math.tanh(this.primal);
    return new Dual(y, (1 - y * y) * this.tangent);
  }

  /** `σ(a) = 1 / (1 + e^{−a})`: `σ (1 − σ) a'`. */
  sigmoid(): Dual {
    const v = this.primal;
    // The same two branches as the engine keep exp from overflowing.
    const y = v >= 0 ? 1 / (1 + Math.exp(-v)) : Math.exp(v) / (1 + Math.exp(v));
    return new Dual(y, y * (1 - y) * this.tangent);
  }

  /**
   * `max(a, 0)`: `a'` where `a > 0`, else 0 (the subgradient 0 at the kink, as the engine).
   * NaN stays NaN, as TensorFlow's relu.
   */
  relu(): Dual {
    if (Number.isNaN(this.primal)) return new Dual(Number.NaN, 0);
    return this.primal > 0 ? new Dual(this.primal, this.tangent) : new Dual(0, 0);
  }

  /** `a` itself (Keras' `linear`). */
  linear(): Dual {
    return this;
  }

  /** `min(max(a, 0), 6)`: `a'` strictly inside `(0, 6)`, else 0. */
  relu6(): Dual {
    const v = this.primal;
    return new Dual(activationScalar('relu6', v), v > 0 && v < 6 ? this.tangent : 0);
  }

  /** `a` for `a > 0`, `0.2 a` otherwise (Keras' `leaky_relu` activation): `a'` or `0.2 a'`. */
  leakyRelu(): Dual {
    const k = this.primal > 0 ? 1 : LEAKY_RELU_SLOPE;
    return new Dual(k * this.primal, k * this.tangent);
  }

  /** elu (α = 1): `a` for `a > 0`, `e^a − 1` otherwise; slope 1 or `e^a`. */
  elu(): Dual {
    const v = this.primal;
    return v > 0 ? new Dual(v, this.tangent) : new Dual(Math.expm1(v), Math.exp(v) * this.tangent);
  }

  /** selu: `λ a` for `a > 0`, `λ α (e^a − 1)` otherwise (Keras' λ, α); slope `λ` or `λ α e^a`. */
  selu(): Dual {
    const v = this.primal;
    return v > 0 ? new Dual(SELU_SCALE * v, SELU_SCALE * this.tangent) : new Dual(SELU_SCALE * SELU_ALPHA * Math.expm1(v), SELU_SCALE * SELU_ALPHA * Math.exp(v) * this.tangent);
  }

  /**
   * gelu: exact `a Φ(a) = ½ a (1 + erf(a/√2))`, slope `Φ(a) + a φ(a)`; with `approximate`,
   * the tanh form `½ a (1 + tanh(√(2/π)(a + 0.044715 a³)))` (Keras' `approximate=True`,
   * TF.js' `gelu_new`), differentiated by the chain rule through the Dual operations.
   */
  gelu(approximate = false): Dual {
    if (approximate) {
      // ½ a (1 + tanh u) written as a σ(2u), which does not cancel for large negative a.
      const u = this.add(this.pow(3).mul(0.044715)).mul(Math.sqrt(2 / Math.PI));
      return this.mul(u.mul(2).sigmoid());
    }
    const v = this.primal;
    const Phi = 0.5 * erfc(-v / Math.SQRT2);
    const phi = Math.exp(-0.5 * v * v) / Math.sqrt(2 * Math.PI);
    return new Dual(v * Phi, (Phi + v * phi) * this.tangent);
  }

  /** softplus `log(1 + e^a)`: slope `σ(a)`. */
  softplus(): Dual {
    return new Dual(activationScalar('softplus', this.primal), sigmoid(this.primal) * this.tangent);
  }

  /** softsign `a / (1 + |a|)`: slope `1 / (1 + |a|)²`. */
  softsign(): Dual {
    const d = 1 + Math.abs(this.primal);
    return new Dual(this.primal / d, this.tangent / (d * d));
  }

  /** swish `a σ(a)` (Keras' `silu`): the product rule through the Dual operations. */
  swish(): Dual {
    return this.mul(this.sigmoid());
  }

  /** silu: the same function as {@link Dual.swish}. */
  silu(): Dual {
    return this.swish();
  }

  /** hard_sigmoid `relu6(a + 3) / 6` (Keras 3): slope `1/6` strictly inside `(−3, 3)`, else 0. */
  hardSigmoid(): Dual {
    return this.add(3).relu6().div(6);
  }

  /** `e^a` (Keras' `exponential`). */
  exponential(): Dual {
    return this.exp();
  }

  /**
   * The element-wise activation Keras names `name` (softmax is not element-wise: refused).
   * @example
   * Dual.variable(0.5).activation('gelu').tangent; // Φ(0.5) + 0.5 φ(0.5)
   */
  activation(name: ActivationName): Dual {
    const n = activationName(name, 'Dual.activation');
    switch (n) {
      case 'softmax':
        throw new ConfigError('Dual.activation: softmax couples a whole row, so it has no scalar form; expected an element-wise activation (compose softmax from exp, add and div)');
      case 'gelu_new':
        return this.gelu(true);
      case 'hard_sigmoid':
        return this.hardSigmoid();
      case 'leaky_relu':
        return this.leakyRelu();
      default:
        return this[n]();
    }
  }

  /** `a^c` for a constant `c`: `c a^{c−1} a'`. */
  pow(c: number): Dual {
    if (typeof c !== 'number' || !Number.isFinite(c)) throw new ConfigError(`Dual.pow: expected a finite constant exponent, received ${typeof c === 'number' ? String(c) : fmtValue(c)}`);
    // c = 0 would give 0·a^{−1}: NaN at a = 0, although the derivative of a constant 1 is 0.
    if (c === 0) return new Dual(1, 0);
    return new Dual(this.primal ** c, c * this.primal ** (c - 1) * this.tangent);
  }

  /** `a + b·ε`, for printing. */
  toString(): string {
    return `${this.primal} + ${this.tangent}ε`;
  }
}

/** A number as a constant dual; a dual as is. */
function lift(v: Dual | number): Dual {
  return v instanceof Dual ? v : Dual.constant(v);
}

/**
 * `f'(x)`, by evaluating `f` once on `x + 1·ε` (forward mode). A function returning a plain
 * number does not depend on `x`: its derivative is 0.
 * @example
 * derivative((x) => x.pow(3).sub(x.mul(2)), 2); // 3·2² − 2 = 10
 */
export function derivative(f: (x: Dual) => Dual | number, x: number): number {
  return valueAndDerivative(f, x).tangent;
}

/** `f(x)` and `f'(x)` from the same pass, as a {@link Dual}. */
export function valueAndDerivative(f: (x: Dual) => Dual | number, x: number): Dual {
  if (typeof x !== 'number') throw new ConfigError(`derivative: expected a number to differentiate at, received ${fmtValue(x)}`);
  const y = f(Dual.variable(x));
  return lift(y);
}
