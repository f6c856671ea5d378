/**
 * The layer registry: Keras `class_name` → a factory that makes the layer from its Keras config.
 * The one place that lists the layer classes (and exports them for `lib/index.ts`); every engine
 * asks the layer itself (its structure hooks, see `layer.ts`), never this list. Adding a layer is
 * its own file, its spec and its entry here.
 * @module
 */
import { Activation, type ActivationConfig } from './activation.js';
import { AveragePooling2D, type AveragePooling2DConfig } from './average-pooling2d.js';
import { BatchNormalization, type BatchNormalizationConfig } from './batch-normalization.js';
import { Conv2D, type Conv2DConfig } from './conv2d.js';
import { Cropping2D, type Cropping2DConfig } from './cropping2d.js';
import { Dense, type DenseConfig } from './dense.js';
import { Dropout, type DropoutConfig } from './dropout.js';
import { Flatten, type FlattenConfig } from './flatten.js';
import { GlobalAveragePooling2D, type GlobalAveragePooling2DConfig } from './global-average-pooling2d.js';
import { GlobalMaxPooling2D, type GlobalMaxPooling2DConfig } from './global-max-pooling2d.js';
import type { Layer } from './layer.js';
import { LeakyReLU, type LeakyReLUConfig } from './leaky-relu.js';
import { MaxPooling2D, type MaxPooling2DConfig } from './max-pooling2d.js';
import { ReLU, type ReLUConfig } from './relu.js';
import { Reshape, type ReshapeConfig } from './reshape.js';
import { ZeroPadding2D, type ZeroPadding2DConfig } from './zero-padding2d.js';

export * from './activation.js';
export * from './average-pooling2d.js';
export * from './batch-normalization.js';
export * from './conv2d.js';
export * from './cropping2d.js';
export * from './dense.js';
export * from './dropout.js';
export * from './flatten.js';
export * from './global-average-pooling2d.js';
export * from './global-max-pooling2d.js';
export * from './leaky-relu.js';
export * from './max-pooling2d.js';
export * from './relu.js';
export * from './reshape.js';
export * from './zero-padding2d.js';

/** Makes a layer from its Keras config (snake_case keys) and name. */
export type LayerFactory = (config: Record<string, unknown>, name?: string) => Layer;

const REGISTRY = new Map<string, LayerFactory>([
  ['Conv2D', (c, n) => new Conv2D(c as unknown as Conv2DConfig, n)],
  ['MaxPooling2D', (c, n) => new MaxPooling2D(c as unknown as MaxPooling2DConfig, n)],
  ['Flatten', (c, n) => new Flatten(c as unknown as FlattenConfig, n)],
  ['Dense', (c, n) => new Dense(c as unknown as DenseConfig, n)],
  ['Dropout', (c, n) => new Dropout(c as unknown as DropoutConfig, n)],
  ['Activation', (c, n) => new Activation(c as unknown as ActivationConfig, n)],
  ['AveragePooling2D', (c, n) => new AveragePooling2D(c as AveragePooling2DConfig, n)],
  ['GlobalAveragePooling2D', (c, n) => new GlobalAveragePooling2D(c as GlobalAveragePooling2DConfig, n)],
  ['GlobalMaxPooling2D', (c, n) => new GlobalMaxPooling2D(c as GlobalMaxPooling2DConfig, n)],
  ['ZeroPadding2D', (c, n) => new ZeroPadding2D(c as ZeroPadding2DConfig, n)],
  ['Cropping2D', (c, n) => new Cropping2D(c as Cropping2DConfig, n)],
  ['Reshape', (c, n) => new Reshape(c as unknown as ReshapeConfig, n)],
  ['LeakyReLU', (c, n) => new LeakyReLU(c as LeakyReLUConfig, n)],
  ['ReLU', (c, n) => new ReLU(c as ReLUConfig, n)],
  ['BatchNormalization', (c, n) => new BatchNormalization(c as BatchNormalizationConfig, n)],
]);

/** Keras' aliases for the same classes. */
const ALIASES = new Map<string, string>([
  ['Convolution2D', 'Conv2D'],
  ['MaxPool2D', 'MaxPooling2D'],
  ['AvgPool2D', 'AveragePooling2D'],
  ['GlobalAvgPool2D', 'GlobalAveragePooling2D'],
  ['GlobalMaxPool2D', 'GlobalMaxPooling2D'],
]);

/**
 * Registers a layer class under its Keras `class_name`, so model files can name it.
 * @example
 * registerLayer('MyLayer', (config, name) => new MyLayer(config, name));
 */
export function registerLayer(className: string, factory: LayerFactory): void {
  REGISTRY.set(className, factory);
}

/** The class names the loader knows. */
export function knownLayers(): string[] {
  return [...REGISTRY.keys()];
}

/** A registry entry: the canonical class name and its factory. */
export interface RegisteredLayer {
  /** The canonical Keras class name (an alias resolved). */
  className: string;
  /** Makes the layer from its config. */
  factory: LayerFactory;
}

/** The factory registered under a class name or one of Keras' aliases, and the canonical name; null when unknown. */
export function layerFactory(className: string): RegisteredLayer | null {
  const cls = ALIASES.get(className) ?? className;
  const factory = REGISTRY.get(cls);
  return factory ? { className: cls, factory } : null;
}
