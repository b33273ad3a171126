// The public API of global-local-attention. Every function validates with lib/options.ts, then runs
// on one backend from lib/backends/registry.ts.
import { availableBackends, backendStatuses, resolveBackend as backendFor } from './backends/registry';
import { multiplyAddBound, runInline } from './inline-async';
import { type AttentionKind, backendChoice, resultOf, validateCall } from './options';
import { typeError } from './errors';
import type {
  AttentionInput, AttentionOutput, Backend, BackendChoice, BackendStatus, DType, FullAttentionOptions, LocalGlobalAttentionOptions,
} from './types';

export type {
  AttentionInput,
  AttentionOptions,
  AttentionOutput,
  Backend,
  BackendChoice,
  BackendStatus,
  DType,
  Float16ArrayLike,
  FullAttentionOptions,
  IntegerList,
  Layout,
  LocalGlobalAttentionOptions,
  LocalGlobalFields,
  PackedAttentionOptions,
  Precision,
  WindowOption,
} from './types';
export { decodeBfloat16, decodeFloat16, encodeBfloat16, encodeFloat16 } from './half';
export { mergeAttentionStates, mergeAttentionStatesSync } from './merge';
export type { AttentionState, MergeAttentionStatesOptions } from './merge';

function runSync(kind: AttentionKind, q: unknown, k: unknown, v: unknown, options: unknown): unknown {
  const { problem, buffers, backend: choice, result } = validateCall(kind, q, k, v, options);
  const out = backendFor(choice).runSync(problem, buffers);
  return result === 'as-is' ? out : resultOf(result, out);
}

async function runAsync(kind: AttentionKind, q: unknown, k: unknown, v: unknown, options: unknown): Promise<unknown> {
  // Inside an async function, so a validation error becomes a rejection, never a synchronous throw.
  const { problem, buffers, backend: choice, result } = validateCall(kind, q, k, v, options);
  const backend = backendFor(choice);
  const out = multiplyAddBound(problem) <= backend.inlineMultiplyAdds
    ? await runInline(backend, problem, buffers)
    : await backend.runAsync(problem, buffers);
  return result === 'as-is' ? out : resultOf(result, out);
}

/**
 * Softmax attention in which every query sees every key (subject to `causal` and `kvLengths`),
 * computed blockwise without materialising the seqLen × kvSeqLen score matrix.
 *
 * @param q Queries, `batch·heads·seqLen·headDim` floats in `options.layout`.
 * @param k Keys, `batch·kvHeads·kvSeqLen·headDim` floats in `options.layout`.
 * @param v Values, same shape as k.
 * @returns `options.out` when given, else a new array of `outDtype` shaped like q (a Float32Array
 *   for float32 calls).
 * @throws TypeError / RangeError for invalid arguments (naming the argument, the value and what is
 *   expected); Error when the requested backend is not available here.
 *
 * @example
 * ```ts
 * const out = fullAttentionSync(q, k, v, { batch: 1, heads: 8, seqLen: 128, headDim: 64, causal: true });
 * ```
 */
export function fullAttentionSync(
  q: Float32Array, k: Float32Array, v: Float32Array, options: FullAttentionOptions,
): Float32Array;
export function fullAttentionSync(
  q: AttentionInput, k: AttentionInput, v: AttentionInput, options: FullAttentionOptions<DType>,
): AttentionOutput;
export function fullAttentionSync(
  q: AttentionInput, k: AttentionInput, v: AttentionInput, options: FullAttentionOptions<DType>,
): AttentionOutput {
  return runSync('fullAttention', q, k, v, options) as AttentionOutput;
}

/**
 * {@link fullAttentionSync} off the JavaScript thread (native thread pool or worker threads), so the
 * event loop keeps running. Rejects with the same errors the sync function throws. q, k, v, out and
 * lse must not be modified until the promise settles.
 */
export function fullAttention(
  q: Float32Array, k: Float32Array, v: Float32Array, options: FullAttentionOptions,
): Promise<Float32Array>;
export function fullAttention(
  q: AttentionInput, k: AttentionInput, v: AttentionInput, options: FullAttentionOptions<DType>,
): Promise<AttentionOutput>;
export function fullAttention(
  q: AttentionInput, k: AttentionInput, v: AttentionInput, options: FullAttentionOptions<DType>,
): Promise<AttentionOutput> {
  return runAsync('fullAttention', q, k, v, options) as Promise<AttentionOutput>;
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
  q: Float32Array, k: Float32Array, v: Float32Array, options: LocalGlobalAttentionOptions,
): Float32Array;
export function localGlobalAttentionSync(
  q: AttentionInput, k: AttentionInput, v: AttentionInput, options: LocalGlobalAttentionOptions<DType>,
): AttentionOutput;
export function localGlobalAttentionSync(
  q: AttentionInput, k: AttentionInput, v: AttentionInput, options: LocalGlobalAttentionOptions<DType>,
): AttentionOutput {
  return runSync('localGlobalAttention', q, k, v, options) as AttentionOutput;
}

/**
 * {@link localGlobalAttentionSync} off the JavaScript thread. Rejects with the same errors the sync
 * function throws. q, k, v, out and lse must not be modified until the promise settles.
 */
export function localGlobalAttention(
  q: Float32Array, k: Float32Array, v: Float32Array, options: LocalGlobalAttentionOptions,
): Promise<Float32Array>;
export function localGlobalAttention(
  q: AttentionInput, k: AttentionInput, v: AttentionInput, options: LocalGlobalAttentionOptions<DType>,
): Promise<AttentionOutput>;
export function localGlobalAttention(
  q: AttentionInput, k: AttentionInput, v: AttentionInput, options: LocalGlobalAttentionOptions<DType>,
): Promise<AttentionOutput> {
  return runAsync('localGlobalAttention', q, k, v, options) as Promise<AttentionOutput>;
}

/** The backends that can run here, best first; `'auto'` uses the first. Always ends with `'js'`. */
export function backends(): Backend[] {
  return availableBackends();
}

/**
 * The backend a call with these options would run on: `options.backend`, else the
 * GLOBAL_LOCAL_ATTENTION_BACKEND environment variable, else `'auto'` (the first of `backends()`).
 * Throws what the call would: a RangeError for an unknown name, an Error (with the reason) for a
 * backend that cannot run here.
 */
export function resolveBackend(options: { backend?: BackendChoice } = {}): Backend {
  if (typeof options !== 'object' || options === null) throw typeError('options', options, 'an object or undefined');
  return backendFor(backendChoice(options.backend)).name;
}

/**
 * Every backend, best first, with whether it is available here and, if not, why
 * (e.g. the native addon is not built, or the CPU lacks AVX-512).
 */
export function backendReport(): BackendStatus[] {
  return backendStatuses();
}
