// The exact raw surface of the native addon (build/Release/global_local_attention.node).
// Callers are lib/backends/native.ts only; inputs are validated and normalised by lib/options.ts
// before they get here. The addon re-checks its own invariants and throws a plain Error whose
// message starts with the failing status ("invalid_argument: ...").

/** Field for field the struct gla::AttentionProblem of native/include/gla/problem.h, minus buffers. */
export interface NativeProblem {
  batch: number;
  heads: number;
  kvHeads: number;
  seqLen: number;
  kvSeqLen: number;
  headDim: number;
  qStrides: { batch: number; head: number; seq: number };
  kStrides: { batch: number; head: number; seq: number };
  vStrides: { batch: number; head: number; seq: number };
  outStrides: { batch: number; head: number; seq: number };
  scale: number;
  causal: boolean;
  windowLeft: number;
  windowRight: number;
  kvLengths: Int32Array | null;
  globalOffsets: Int32Array | null;
  globalIndices: Int32Array | null;
  threads: number;
}

export type NativeIsa = 'avx512' | 'avx2' | 'scalar';

export interface NativeBinding {
  /** The ISAs this CPU and OS support, best first (always ends with 'scalar'). */
  isas(): NativeIsa[];
  /** Number of hardware threads the native pool may use. */
  hardwareThreads(): number;
  /** Computes on the calling thread (plus the native pool); fills out and, when given, lse. */
  attentionSync(
    q: Float32Array, k: Float32Array, v: Float32Array,
    out: Float32Array, lse: Float32Array | null,
    problem: NativeProblem, isa: NativeIsa,
  ): void;
  /** Same work off the JS thread; q, k, v, out and lse stay referenced until it settles. */
  attentionAsync(
    q: Float32Array, k: Float32Array, v: Float32Array,
    out: Float32Array, lse: Float32Array | null,
    problem: NativeProblem, isa: NativeIsa,
  ): Promise<void>;
  /** CUDA plugin probe: null when usable, else the reason it is not. Never throws. */
  cudaUnavailableReason(): string | null;
  /** As attentionSync / attentionAsync, on the CUDA plugin; only after cudaUnavailableReason() is null. */
  cudaAttentionSync(
    q: Float32Array, k: Float32Array, v: Float32Array,
    out: Float32Array, lse: Float32Array | null, problem: NativeProblem,
  ): void;
  cudaAttentionAsync(
    q: Float32Array, k: Float32Array, v: Float32Array,
    out: Float32Array, lse: Float32Array | null, problem: NativeProblem,
  ): Promise<void>;
}

declare const binding: NativeBinding;
export default binding;
