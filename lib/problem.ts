// The one normalised description of an attention call, produced by options.ts and consumed by
// every backend. It mirrors native/include/gla/problem.h field for field (in camelCase), minus the
// buffers, which travel beside it (AttentionBuffers, below).

/** gla::DType: the element type of q, k and v (dtype) and of out (outDtype). */
export const DTYPE_CODES = { float32: 0, float16: 1, bfloat16: 2 } as const;
export type DTypeCode = (typeof DTYPE_CODES)[keyof typeof DTYPE_CODES];
/** gla::Precision: the precision of the products' inputs. */
export const PRECISION_CODES = { float32: 0, bfloat16: 1 } as const;
export type PrecisionCode = (typeof PRECISION_CODES)[keyof typeof PRECISION_CODES];

/** Element strides of a [batch, head, seq, dim] tensor; the dim stride is always 1. */
export interface Strides {
  batch: number;
  head: number;
  seq: number;
}

export interface AttentionProblem {
  /** Element type of q, k and v; a half type travels as a Uint16Array of bit patterns. */
  dtype: DTypeCode;
  /** Element type of out. */
  outDtype: DTypeCode;
  precision: PrecisionCode;
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
  /** One per batch item in [0, seqLen], or null when every query row is real. Query i of item b
   *  sits at position p = i + kvLength(b) - qLength(b); rows i >= qLength(b) are padding (zeros,
   *  lse -Infinity, no work). kvLength(b) is kvLengths[b] or kvSeqLen, qLength(b) qLengths[b] or seqLen. */
  qLengths: Int32Array | null;
  /** > 0: every scaled score s becomes softcap·tanh(s / softcap) (Gemma 2); 0 = off. */
  softcap: number;
  /** One slope per query head, or null: the score (after softcap) gains -slope·|p - j| (ALiBi). */
  alibiSlopes: Float32Array | null;
  /** One logit per query head, or null: exp(sink - max) joins each row's softmax denominator with no
   *  value vector (gpt-oss sinks); lse includes it, and a row that sees no key gets zeros, lse = sink. */
  sinkLogits: Float32Array | null;
  /** Paged K/V: k and v are pools of pageCount pages of pageSize rows ([pageCount, pageSize, kvHeads,
   *  headDim]; kStrides/vStrides.batch are 0), and key j of item b is pool row
   *  blockTable[b·maxBlocks + ⌊j/pageSize⌋]·pageSize + j mod pageSize. Null (and the three counts 0)
   *  when K and V are plain tensors. Entries for keys ≥ kvLength(b) are never read. */
  blockTable: Int32Array | null;
  maxBlocks: number;
  pageSize: number;
  pageCount: number;
  /** Packed variable-length sequences (cuSeqlensQ / cuSeqlensK, batch + 1 entries each), or null:
   *  q and out are [totalQ, heads, headDim], k and v [totalK, kvHeads, headDim] (batch strides 0),
   *  sequence b owns query rows qStarts[b] .. qStarts[b+1]−1 and key rows kvStarts[b] ..
   *  kvStarts[b+1]−1; qLengths and kvLengths hold those counts, seqLen and kvSeqLen their maxima,
   *  and lse is [heads, totalQ]. */
  qStarts: Int32Array | null;
  kvStarts: Int32Array | null;
  /** CSR global tokens: batch b owns globalIndices[globalOffsets[b] .. globalOffsets[b+1]),
   *  sorted ascending and unique, each in [0, kvSeqLen). Both null when there are none. */
  globalOffsets: Int32Array | null;
  globalIndices: Int32Array | null;
  /** Upper bound on CPU threads for this call, >= 1. */
  threads: number;
}

/** A tensor as the backends see it: float32 values, or the bit patterns of a half type. */
export type TensorArray = Float32Array | Uint16Array;

/** The buffers of one call, beside its problem. out and lse are written; q, k, v never are. */
export interface AttentionBuffers {
  q: TensorArray;
  k: TensorArray;
  v: TensorArray;
  /** The caller's `out` (a Uint16Array view of a Float16Array), or null: the backend then
   *  allocates the output (shaped like q, of outDtype). */
  out: TensorArray | null;
  lse: Float32Array | null;
}

/** The buffers a kernel writes: out resolved (the caller's, or one the backend allocated). */
export interface KernelBuffers extends AttentionBuffers {
  out: TensorArray;
}

/** Elements of q and of the output: batch·heads·seqLen·headDim, or totalQ·heads·headDim packed. */
export function outputLength(problem: AttentionProblem): number {
  const rows = problem.qStarts === null ? problem.batch * problem.seqLen : problem.qStarts[problem.batch];
  return rows * problem.heads * problem.headDim;
}

/** A new output array of the problem's outDtype, shaped like q. */
export function newOutput(problem: AttentionProblem): TensorArray {
  const length = outputLength(problem);
  return problem.outDtype === DTYPE_CODES.float32 ? new Float32Array(length) : new Uint16Array(length);
}
