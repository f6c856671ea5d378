/**
 * The explicit way across the wire (issue #15), the parts both sides share: the shapes and bytes
 * of the batch Jacobians a stage server ships with `--ship-jacobian`, judged against the largest
 * message before anything is built, so that a Jacobian that cannot cross is refused naming its
 * size, the limit and the option that raises it.
 * @module
 */
import * as grpc from '@grpc/grpc-js';
import { fmtBytes } from '../memory.js';
import { fmtShape } from '../errors.js';
import { type DType, bytesPerElement, sizeOf } from '../tensor.js';
import { RemoteError } from './wire.js';

/** One hosted stage as the explicit way sees it: its name and per-sample shapes. */
export interface ShippedStage {
  /** `model_1`. */
  name: string;
  /** Per-sample input shape. */
  inputShape: readonly number[];
  /** Per-sample output shape. */
  outputShape: readonly number[];
  /** Whether its samples are coupled (then its Jacobian is the full `[B, ...out, B, ...in]`); false when unknown. */
  coupled?: boolean;
}

/** `[B, ...out, ...in]`, or `[B, ...out, B, ...in]` for a stage whose samples are coupled. */
export function shippedJacobianShape(stage: ShippedStage, batch: number): number[] {
  return [batch, ...stage.outputShape, ...(stage.coupled ? [batch] : []), ...stage.inputShape];
}

/** Protobuf's share of a Jacobian reply besides the values: field tags, lengths, shapes, dtype, per stage and in all (an upper bound). */
const OVERHEAD_PER_STAGE = 96;
const OVERHEAD = 64;

/**
 * Bytes of the Jacobian reply for `stages` at `batch`: every Jacobian's values plus an upper bound
 * of protobuf's framing, which is what gRPC's message limit is judged on.
 * @example
 * shippedJacobianBytes([{ name: 'model_1', inputShape: [3, 3, 8], outputShape: [1] }], 32, 'float64'); // 18592 (32·1·72·8 + 160)
 */
export function shippedJacobianBytes(stages: readonly ShippedStage[], batch: number, dtype: DType): number {
  return stages.reduce((n, s) => n + sizeOf(shippedJacobianShape(s, batch)) * bytesPerElement(dtype) + OVERHEAD_PER_STAGE, OVERHEAD);
}

/**
 * Refuses, with RESOURCE_EXHAUSTED, a Jacobian reply over `maxBytes`, from the shapes alone: the
 * error names each Jacobian's shape, the message's size, the limit, and how to raise it.
 * @throws RemoteError quoting the size and the limit.
 * @example
 * checkShippedJacobian(stages, 32, 'float64', 64 << 20, "the server's"); // passes, or throws before anything is built
 */
export function checkShippedJacobian(stages: readonly ShippedStage[], batch: number, dtype: DType, maxBytes: number, whose: string): void {
  const need = shippedJacobianBytes(stages, batch, dtype);
  if (need <= maxBytes) return;
  const shapes = stages.map((s) => `${s.name} dOut/dIn ${fmtShape(shippedJacobianShape(s, batch))}`).join(', ');
  throw new RemoteError(
    `the batch Jacobians at batch ${batch} (${shapes}, ${dtype}) need a message of ${need} bytes (${fmtBytes(need)}), over ${whose} maximum of ${maxBytes} bytes (${fmtBytes(maxBytes)}); raise it on both sides (serve --max-message-bytes and train --max-message-bytes, or maxMessageBytes), use a smaller batch, or send the cotangent instead (without --ship-jacobian)`,
    grpc.status.RESOURCE_EXHAUSTED,
  );
}
