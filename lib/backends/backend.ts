// What the registry needs from a backend: whether it can run here, and how to run one validated call.
import type { AttentionProblem, Backend } from '../problem';

/** The buffers of one call, beside its problem. out and lse are written; q, k, v never are. */
export interface AttentionBuffers {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  /** The caller's `out`, or null: the backend then allocates the output (shaped like q). */
  out: Float32Array | null;
  lse: Float32Array | null;
}

/** The buffers a kernel writes: out resolved (the caller's, or one the backend allocated). */
export interface KernelBuffers extends AttentionBuffers {
  out: Float32Array;
}

export interface BackendImpl {
  readonly name: Backend;
  /** Async calls of at most this many multiply-adds run inline (lib/inline-async.ts); 0: never. */
  readonly inlineMultiplyAdds: number;
  /** null when this backend can run here, else why not. May be slow (loads the addon); cached by the registry. */
  probe(): string | null;
  /** Blocks until out (and lse) are filled; returns out. Only called after probe() returned null. */
  runSync(problem: AttentionProblem, buffers: AttentionBuffers): Float32Array;
  /**
   * Does the work off the JS thread; resolves with out. Whatever the caller does to its buffers
   * meanwhile (transfer, resize), the call touches only memory it owns, and rejects with an Error
   * naming the buffer if out or lse can no longer take the result. Only called after probe()
   * returned null.
   */
  runAsync(problem: AttentionProblem, buffers: AttentionBuffers): Promise<Float32Array>;
}
