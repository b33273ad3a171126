// What the registry needs from a backend: whether it can run here, and how to run one validated call.
import type { AttentionBuffers, AttentionProblem, TensorArray } from '../problem';
import type { Backend } from '../types';

export interface BackendImpl {
  readonly name: Backend;
  /** Async calls of at most this many multiply-adds run inline (lib/inline-async.ts); 0: never. */
  readonly inlineMultiplyAdds: number;
  /** Whether precision 'bfloat16' runs bfloat16 products here (only asked once probe() is null). */
  bfloat16Products(): boolean;
  /** Where this backend's code comes from, for backendReport() (only asked once probe() is null). */
  origin(): string;
  /** null when this backend can run here, else why not. May be slow (loads the addon); cached by the registry. */
  probe(): string | null;
  /** Blocks until out (and lse) are filled; returns out. Only called after probe() returned null. */
  runSync(problem: AttentionProblem, buffers: AttentionBuffers): TensorArray;
  /**
   * Does the work off the JS thread; resolves with out. Whatever the caller does to its buffers
   * meanwhile (transfer, resize), the call touches only memory it owns, and rejects with an Error
   * naming the buffer if out or lse can no longer take the result. Only called after probe()
   * returned null.
   */
  runAsync(problem: AttentionProblem, buffers: AttentionBuffers): Promise<TensorArray>;
}
