// The one normalised description of an attention call, produced by options.ts and consumed by
// every backend. It mirrors native/include/gla/problem.h field for field (in camelCase), minus the
// buffers, which travel beside it (AttentionBuffers, below).

/** Element strides of a [batch, head, seq, dim] tensor; the dim stride is always 1. */
export interface Strides {
  batch: number;
  head: number;
  seq: number;
}

export interface AttentionProblem {
  batch: number;
  heads: number;
  kvHeads: number;
  seqLen: number;
  kvSeqLen: number;
  headDim: number;
  qStrides: Strides;
  kStrides: Strides;
  vStrides: Strides;
  outStrides: Strides;
  scale: number;
  causal: boolean;
  /** -1 = unbounded. Full attention is windowLeft = windowRight = -1 with no global tokens. */
  windowLeft: number;
  windowRight: number;
  /** One per batch item in [0, kvSeqLen], or null when every key is present. */
  kvLengths: Int32Array | null;
  /** CSR global tokens: batch b owns globalIndices[globalOffsets[b] .. globalOffsets[b+1]),
   *  sorted ascending and unique, each in [0, kvSeqLen). Both null when there are none. */
  globalOffsets: Int32Array | null;
  globalIndices: Int32Array | null;
  /** Upper bound on CPU threads for this call, >= 1. */
  threads: number;
}

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
