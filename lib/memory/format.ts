/**
 * A memory account, printed as a markdown table.
 * @module
 */
import { fmtShape } from '../errors.js';
import { fmtBytes } from '../memory.js';
import { type MemoryReport, fmtRatio } from './account.js';

/**
 * A report as a markdown table: every Jacobian, then the VJP way's residuals and cotangents; then
 * the totals of the materialized and of the streamed explicit way.
 * @example
 * console.log(formatMemoryReport(estimateMemory(conv, 3)));
 */
export function formatMemoryReport(r: MemoryReport): string {
  const lines = [
    `**${r.what}**, batch ${r.batch}, ${r.dtype} (${r.kind}): input ${fmtShape(r.inputShape)} → output ${fmtShape(r.outputShape)}`,
    '',
    '| way | what | shape | bytes |',
    '|---|---|---|---:|',
    ...r.explicit.jacobians.map((j) => `| explicit | J w.r.t. ${j.wrt} | ${fmtShape(j.shape)} | ${fmtBytes(j.bytes)} |`),
    `| explicit | one tangent block (T = ${Math.max(...r.explicit.jacobians.map((j) => j.tangents), 0)}) | | ${fmtBytes(r.explicit.tangentBlockBytes)} |`,
    ...r.vjp.residuals.map((b) => `| vjp | ${b.what} | ${fmtShape(b.shape)} ${b.dtype} | ${fmtBytes(b.bytes)} |`),
    ...r.vjp.cotangents.map((b) => `| vjp | ${b.what} | ${fmtShape(b.shape)} | ${fmtBytes(b.bytes)} |`),
    '',
    `Jacobians ${fmtBytes(r.explicit.jacobianBytes)} vs VJP ${fmtBytes(r.vjp.bytes)} (residuals ${fmtBytes(r.vjp.residualBytes)} + cotangents ${fmtBytes(r.vjp.cotangentBytes)}): ratio ${fmtRatio(r.ratio)}`,
    `Streamed explicit way (no Jacobian held): the largest block ${fmtBytes(r.explicit.streamed.blockBytes)} + gradients ${fmtBytes(r.explicit.streamed.gradientBytes)} + residuals ${fmtBytes(r.vjp.residualBytes)} = ${fmtBytes(r.explicit.streamed.bytes)}`,
  ];
  return lines.join('\n');
}

