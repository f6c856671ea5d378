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

  /** `max(a, 0)`: `a'` where `a > 0`, else 0 (the subgradient 0 at the kink, as the engine). */
  relu(): Dual {
    return this.primal > 0 ? new Dual(this.primal, this.tangent) : new Dual(0, 0);
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
