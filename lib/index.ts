// The public API of global-local-attention. Every function validates with lib/options.ts, then runs
// on one backend from lib/backends/registry.ts.
import { availableBackends, backendStatuses, resolveBackend } from './backends/registry';
import { multiplyAddBound, runInline } from './inline-async';
import { type AttentionKind, validateCall } from './options';
import type { Backend, BackendStatus, FullAttentionOptions, LocalGlobalAttentionOptions } from './types';

export type {
  AttentionOptions,
  Backend,
  BackendChoice,
  BackendStatus,
  FullAttentionOptions,
  IntegerList,
  Layout,
  LocalGlobalAttentionOptions,
  WindowOption,
} from './types';

function runSync(kind: AttentionKind, q: unknown, k: unknown, v: unknown, options: unknown): Float32Array {
  const { problem, buffers, backend: choice } = validateCall(kind, q, k, v, options);
  return resolveBackend(choice).runSync(problem, buffers);
}

async function runAsync(kind: AttentionKind, q: unknown, k: unknown, v: unknown, options: unknown): Promise<Float32Array> {
  // Inside an async function, so a validation error becomes a rejection, never a synchronous throw.
  const { problem, buffers, backend: choice } = validateCall(kind, q, k, v, options);
  const backend = resolveBackend(choice);
  if (multiplyAddBound(problem) <= backend.inlineMultiplyAdds) return runInline(backend, problem, buffers);
  return backend.runAsync(problem, buffers);
}

/**
 * Softmax attention in which every query sees every key (subject to `causal` and `kvLengths`),
 * computed blockwise without materialising the seqLen × kvSeqLen score matrix.
 *
 * @param q Queries, `batch·heads·seqLen·headDim` floats in `options.layout`.
 * @param k Keys, `batch·kvHeads·kvSeqLen·headDim` floats in `options.layout`.
 * @param v Values, same shape as k.
 * @returns `options.out` when given, else a new Float32Array shaped like q.
 * @throws TypeError / RangeError for invalid arguments (naming the argument, the value and what is
 *   expected); Error when the requested backend is not available here.
 *
 * @example
 * ```ts
 * const out = fullAttentionSync(q, k, v, { batch: 1, heads: 8, seqLen: 128, headDim: 64, causal: true });
 * ```
 */
export function fullAttentionSync(q: Float32Array, k: Float32Array, v: Float32Array, options: FullAttentionOptions): Float32Array {
  return runSync('fullAttention', q, k, v, options);
}

/**
 * {@link fullAttentionSync} off the JavaScript thread (native thread pool or worker threads), so the
 * event loop keeps running. Rejects with the same errors the sync function throws. q, k, v, out and
 * lse must not be modified until the promise settles.
 */
export function fullAttention(q: Float32Array, k: Float32Array, v: Float32Array, options: FullAttentionOptions): Promise<Float32Array> {
  return runAsync('fullAttention', q, k, v, options);
}

/**
 * Local-window attention plus global tokens: the query at position p sees the keys in its window
 * `[p − left, p + right]`, every global key, and, if p is itself global, every key. The cost is
 * O(seqLen·(window + globals)·headDim) + O(globals·kvSeqLen·headDim) instead of O(seqLen·kvSeqLen·headDim).
 *
 * @returns `options.out` when given, else a new Float32Array shaped like q.
 * @throws TypeError / RangeError for invalid arguments; Error when the requested backend is not available.
 *
 * @example
 * ```ts
 * // Mistral-style sliding window of 4096 keys with 4 attention sinks:
 * const out = localGlobalAttentionSync(q, k, v, {
 *   batch: 1, heads: 32, kvHeads: 8, seqLen: 8192, headDim: 128,
 *   causal: true, window: [4095, 0], globalTokens: [0, 1, 2, 3],
 * });
 * ```
 */
export function localGlobalAttentionSync(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  options: LocalGlobalAttentionOptions,
): Float32Array {
  return runSync('localGlobalAttention', q, k, v, options);
}

/**
 * {@link localGlobalAttentionSync} off the JavaScript thread. Rejects with the same errors the sync
 * function throws. q, k, v, out and lse must not be modified until the promise settles.
 */
export function localGlobalAttention(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  options: LocalGlobalAttentionOptions,
): Promise<Float32Array> {
  return runAsync('localGlobalAttention', q, k, v, options);
}

/** The backends that can run here, best first; `'auto'` uses the first. Always ends with `'js'`. */
export function backends(): Backend[] {
  return availableBackends();
}

/**
 * Every backend, best first, with whether it is available here and, if not, why
 * (e.g. the native addon is not built, or the CPU lacks AVX-512).
 */
export function backendReport(): BackendStatus[] {
  return backendStatuses();
}
