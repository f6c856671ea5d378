/**
 * The memory cost of the two ways, accounted: the types (`memory/account.ts`), the estimate from
 * shapes alone (`memory/estimate.ts`), the measurement of what was allocated (`memory/measure.ts`)
 * and the printed table (`memory/format.ts`).
 * @module
 */
export * from './memory/account.js';
export * from './memory/estimate.js';
export * from './memory/measure.js';
export * from './memory/format.js';
