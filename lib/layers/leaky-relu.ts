/**
 * LeakyReLU: `f(x) = x` for `x ≥ 0`, `negative_slope · x` below, element-wise on any shape
 * (Keras 3; Keras 2 called the slope `alpha`). Its rules are ReLU's (`relu.ts`) with no
 * saturation and threshold 0; the derivative at 0 is `negative_slope`, TensorFlow's LeakyReluGrad.
 * @module
 */
import { ConfigError, fmtValue } from '../errors.js';
import { BASE_KEYS, checkKeys } from './layer.js';
import { PiecewiseLinearUnit, type ReLUSaved, nonNegative } from './relu.js';

/** Keras config of {@link LeakyReLU}. */
export interface LeakyReLUConfig {
  /** Slope below zero; default 0.3 (Keras 3). Non-negative. */
  negative_slope?: number;
  /** Keras 2's name of `negative_slope`; one of the two at most. */
  alpha?: number;
}

/** What LeakyReLU's forward pass saves: ReLU's residuals, its input `x` (the sign of each element is its slope). */
export type LeakyReLUSaved = ReLUSaved;

/**
 * Leaky rectifier, element-wise; diagonal Jacobian of slopes `1` (x > 0) and `negative_slope`.
 * @example
 * const leaky = new LeakyReLU({ negative_slope: 0.1 }).build([3]);
 * const { y } = leaky.forward(tensor([-2, 0, 3], [1, 3])); // [[-0.2, 0, 3]]
 */
export class LeakyReLU extends PiecewiseLinearUnit {
  readonly className = 'LeakyReLU';
  readonly maxValue = Infinity;
  readonly threshold = 0;
  readonly negativeSlope: number;

  constructor(config: LeakyReLUConfig = {}, name?: string) {
    super(name, config);
    checkKeys(config, ['negative_slope', 'alpha', ...BASE_KEYS], 'LeakyReLU');
    // Keras 2 model files write `alpha`; both at once would leave the slope ambiguous.
    if (config.negative_slope !== undefined && config.alpha !== undefined) {
      throw new ConfigError(`LeakyReLU: expected one of negative_slope or alpha (Keras 2's name for it), received both: negative_slope ${fmtValue(config.negative_slope)}, alpha ${fmtValue(config.alpha)}`);
    }
    const given = config.negative_slope !== undefined ? 'negative_slope' : 'alpha';
    this.negativeSlope = nonNegative(config.negative_slope ?? config.alpha, 0.3, given, 'LeakyReLU');
  }

  getConfig(): Record<string, unknown> {
    return { negative_slope: this.negativeSlope };
  }
}
