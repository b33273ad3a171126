// Messages between the main thread and the JS backend's workers. Buffers are Float32Arrays over
// SharedArrayBuffers, so every worker writes its own rows of the same out and lse.
import type { AttentionProblem, KernelBuffers } from '../problem';

export interface WorkerRequest {
  /** Structured-cloned with each request: its typed-array fields (kvLengths, qLengths, alibiSlopes,
   *  sinkLogits, the global-token CSR) arrive as copies of the same type, so it needs no encoding. */
  problem: AttentionProblem;
  buffers: KernelBuffers;
  firstUnit: number;
  endUnit: number;
}

export type WorkerReply = { ok: true } | { ok: false; message: string };
