/**
 * Split learning across processes over gRPC (issue #15): the wire format (`proto/stage.proto`),
 * the stage server, the stage client (a `StageRunner`) and the training loop that drives them.
 * Node only (it opens sockets), so it is its own entry point rather than part of `lib/index.ts`.
 * @module
 */
export * from './wire.js';
export * from './server.js';
export * from './client.js';
export * from './fit.js';
export * from './checkpoint.js';
export * from './explicit.js';
export * from './signature.js';
