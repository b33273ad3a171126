// What the registry needs from a backend: whether it can run here, and how to run one validated call.
import type { AttentionProblem, Backend } from '../problem';

/** The buffers of one call, beside its problem. out and lse are written; q, k, v never are. */
export interface AttentionBuffers {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  out: Float32Array;
  lse: Float32Array | null;
}

export interface BackendImpl {
  readonly name: Backend;
  /** null when this backend can run here, else why not. May be slow (loads the addon); cached by the registry. */
  probe(): string | null;
  /** Blocks until out (and lse) are filled. Only called after probe() returned null. */
  runSync(problem: AttentionProblem, buffers: AttentionBuffers): void;
  /** Does the work off the JS thread. Only called after probe() returned null. */
  runAsync(problem: AttentionProblem, buffers: AttentionBuffers): Promise<void>;
}
