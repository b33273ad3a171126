// The public option types. They are documented here because this is what editors show on hover.
/** Every backend, best first: the order in which `'auto'` tries them. */
export const BACKEND_NAMES = ['cuda', 'avx512', 'avx2', 'neon', 'scalar', 'js'] as const;

/** A backend name (see {@link BACKEND_NAMES}, and `backends()` for the ones available here). */
export type Backend = (typeof BACKEND_NAMES)[number];

/**
 * Memory layout of q, k, v and the output.
 * - `'bhsd'`: [batch, heads, seq, dim], the layout attention kernels usually take.
 * - `'bshd'`: [batch, seq, heads, dim], what a linear projection followed by a reshape produces.
 *
 * q and the output use `heads` and `seqLen`; k and v use `kvHeads` and `kvSeqLen`.
 * Your arrays are never transposed. In bshd the CPU kernels copy each head's K and V rows into
 * contiguous scratch once per call for full and causal attention (decode and bounded windows read
 * them in place), since rows heads·headDim floats apart would otherwise thrash the cache on every
 * re-read.
 */
export type Layout = 'bhsd' | 'bshd';

/** `'auto'` picks the best available backend (see {@link backends}); a name forces that backend. */
export type BackendChoice = 'auto' | Backend;

/**
 * Element type of q, k and v (`dtype`) or of the output (`outDtype`). float16 and bfloat16 values
 * are passed as their 16-bit patterns in a Uint16Array, or for float16 as a Float16Array where
 * the runtime has one (Node 24+).
 */
export type DType = 'float32' | 'float16' | 'bfloat16';

/**
 * Precision of the two products' inputs (q·k and weights·v). Accumulation, the running max and the
 * softmax are float32 always. `'bfloat16'` allows q, k, the softmax weights and v to be rounded to
 * bfloat16 before they are multiplied, where a backend has a bfloat16 product (see
 * `backendReport()`); a backend without one computes in float32, which is more accurate.
 */
export type Precision = 'float32' | 'bfloat16';

/** A Float16Array (Node 24+), described by shape so that the types also build where the runtime has none. */
export interface Float16ArrayLike extends ArrayBufferView {
  readonly length: number;
  readonly BYTES_PER_ELEMENT: 2;
  readonly [Symbol.toStringTag]: 'Float16Array';
}

/** An input tensor: float32 values, float16/bfloat16 bits in a Uint16Array, or a Float16Array. */
export type AttentionInput = Float32Array | Uint16Array | Float16ArrayLike;

/** The output: a Float32Array for float32, a Uint16Array of bits for bfloat16, and for float16 a
 *  Float16Array where the runtime has one, else a Uint16Array of float16 bits. */
export type AttentionOutput = Float32Array | Uint16Array | Float16ArrayLike;

/** A list of integers: a plain array or any typed array. */
export type IntegerList = ArrayLike<number>;

/**
 * Options shared by {@link fullAttention} and {@link localGlobalAttention}. `Out` is the output's
 * element type: the default, float32, types the result as a Float32Array; name a half type
 * (`AttentionOptions<'bfloat16'>`, or `DType` for any) when `outDtype` or a half `dtype` makes the
 * output 16-bit.
 */
export interface AttentionOptions<Out extends DType = 'float32'> {
  /** Number of independent sequences. Positive safe integer. */
  batch: number;
  /** Number of query heads. Positive safe integer. */
  heads: number;
  /** Query (and output) sequence length. Positive integer ≤ 2³¹−1. */
  seqLen: number;
  /** Size of each head's vectors. Positive safe integer. */
  headDim: number;
  /**
   * Number of key/value heads, default `heads`. Must divide `heads`; query head h reads kv head
   * ⌊h / (heads / kvHeads)⌋. `kvHeads < heads` is grouped-query attention, `kvHeads = 1` multi-query
   * attention; K and V are never copied per query head.
   */
  kvHeads?: number;
  /** Key/value sequence length, default `seqLen`. Positive integer ≤ 2³¹−1. */
  kvSeqLen?: number;
  /** Memory layout of q, k, v and the output, default `'bhsd'`. */
  layout?: Layout;
  /** Multiplies every q·k score before the softmax. Finite; default 1/√headDim. */
  scale?: number;
  /**
   * Causal masking, bottom-right aligned as in FlashAttention, per sequence: query i of batch item b
   * sits at absolute position p = i + kvLength(b) − qLength(b) (kvLength(b) is `kvLengths[b]` or
   * kvSeqLen, qLength(b) is `qLengths[b]` or seqLen) and sees keys j ≤ p. A single decode query
   * (seqLen 1) sees the whole of its own cache. Queries with p < 0 see nothing: zeros and lse −Infinity.
   */
  causal?: boolean;
  /**
   * One valid length per batch item, each an integer in [0, kvSeqLen]: keys j ≥ kvLengths[b] are
   * invisible (right-padded batches, a decode batch over caches of different lengths), and each
   * sequence's queries are aligned to the end of its own keys (see `causal`). Default: every key is present.
   */
  kvLengths?: IntegerList;
  /**
   * One count of real query rows per batch item, each an integer in [0, seqLen]; rows i ≥ qLengths[b]
   * are padding: they come out zeros with lse −Infinity, and no work is spent on them. A
   * right-padded prefill batch passes `qLengths` = `kvLengths`. Default: seqLen for every item.
   */
  qLengths?: IntegerList;
  /**
   * Soft-capping of the scores (Gemma 2, Grok): each scaled score s becomes softcap·tanh(s / softcap)
   * before the ALiBi bias and the softmax. A number > 0; 0 or absent is off.
   */
  softcap?: number;
  /**
   * ALiBi: one slope per query head (`heads` finite numbers). The score of the query at position p
   * for key j (after scale and softcap) gains −slope·|p − j|, with p as in `causal`.
   */
  alibiSlopes?: ArrayLike<number>;
  /**
   * Learned attention sinks (gpt-oss `sinks`, onnxruntime `head_sink`): one logit per query head
   * (`heads` finite numbers) that joins every row's softmax denominator with no value vector, so the
   * weights are exp(s_j − m) / (Σ exp(s_i − m) + exp(sink − m)). `lse` includes the sink; a row that
   * sees no key gets zeros and lse = the sink logit. Not the same as StreamingLLM's sink *tokens*,
   * which are real keys (`globalTokens` of {@link localGlobalAttention}).
   */
  sinkLogits?: ArrayLike<number>;
  /**
   * Element type of q, k and v. Default: from q's array (Float32Array: `'float32'`, Float16Array:
   * `'float16'`); required for a Uint16Array, whose bits could be either half type. q, k and v
   * must all be arrays of this type.
   */
  dtype?: DType;
  /** Element type of the output (and of `out`), default `dtype`. */
  outDtype?: Out;
  /** Precision of the products' inputs; default `'bfloat16'` when dtype is bfloat16, else `'float32'`. */
  precision?: Precision;
  /**
   * Where to write the output: an array of `outDtype` (a Float32Array for float32, a Uint16Array of
   * bits or a Float16Array for the half types) with exactly as many elements as q. It is filled and
   * returned, and nothing is allocated. It must not overlap q, k, v or lse.
   */
  out?: AttentionOutput;
  /**
   * Optional Float32Array of batch·heads·seqLen elements, in [batch, heads, seq] order for both
   * layouts, filled with the natural log of the sum of exp of each query row's scaled visible scores
   * (and of its sink logit, with `sinkLogits`; −Infinity for a row that sees no key, and for
   * padding rows). Must not overlap q, k or v.
   */
  lse?: Float32Array;
  /**
   * Which backend runs the call: `'auto'` (the best available, see {@link backends}) or a backend name.
   * A named backend that is not available throws an Error saying why. When omitted, the environment
   * variable `GLOBAL_LOCAL_ATTENTION_BACKEND` supplies the default, else `'auto'`.
   */
  backend?: BackendChoice;
  /** Upper bound on the CPU threads this call may use. Positive integer; default: every available core. */
  threads?: number;
  /**
   * A paged KV cache (vLLM's and FlashAttention's `block_table`): `batch × maxBlocks` page indices,
   * row-major. k and v are then page pools shaped [numPages, pageSize, kvHeads, headDim] (whatever
   * `layout` says, which applies to q and the output), and key j of batch item b is row
   * j mod pageSize of page blockTable[b·maxBlocks + ⌊j / pageSize⌋]. Requires `pageSize` and
   * `kvLengths`; `kvSeqLen` defaults to maxBlocks·pageSize. Entries for keys ≥ kvLengths[b] are
   * never read (−1 is fine); every other one must be a page of the pool.
   */
  blockTable?: Int32Array;
  /** Rows per page of a paged KV cache (with `blockTable`). Any positive integer; 16 and 256 are common. */
  pageSize?: number;
}

/**
 * Packed variable-length batches (FlashAttention's `flash_attn_varlen_func`): sequence b owns query
 * rows cuSeqlensQ[b] .. cuSeqlensQ[b+1]−1 of q (and the output), packed [totalQ, heads, headDim], and
 * key rows cuSeqlensK[b] .. cuSeqlensK[b+1]−1 of k and v, [totalK, kvHeads, headDim]; it sees only its
 * own keys, aligned as `causal` says. `lse` is [heads, totalQ]. The lengths come from the offsets, so
 * `seqLen`, `kvSeqLen`, `layout`, `kvLengths`, `qLengths` and the paged cache are not given; `batch`
 * may be (it must then be cuSeqlensQ.length − 1). Empty sequences are allowed.
 */
export type PackedAttentionOptions<Out extends DType = 'float32'> =
  Omit<AttentionOptions<Out>, 'batch' | 'seqLen' | 'kvSeqLen' | 'layout' | 'kvLengths' | 'qLengths' | 'blockTable' | 'pageSize'> & {
    batch?: number;
    /** batch + 1 query row offsets, from 0, non-decreasing. */
    cuSeqlensQ: Int32Array;
    /** batch + 1 key row offsets, from 0, non-decreasing. */
    cuSeqlensK: Int32Array;
  };

/** Options of {@link fullAttention}: every query sees every key (subject to `causal` and `kvLengths`). */
export type FullAttentionOptions<Out extends DType = 'float32'> = AttentionOptions<Out> | PackedAttentionOptions<Out>;

/**
 * A window as `[left, right]`: the query at position p sees keys j with p − left ≤ j ≤ p + right;
 * −1 leaves that side unbounded (FlashAttention's `window_size`). A number W means `[⌊W/2⌋, ⌊W/2⌋]`
 * (Longformer's `attention_window`). A causal window of W keys including the current one
 * (Mistral, Hugging Face `sliding_window = W`) is `[W − 1, 0]`, with or without `causal: true`.
 */
export type WindowOption = number | readonly [left: number, right: number];

/** The options {@link localGlobalAttention} adds. */
export interface LocalGlobalFields {
  /** Required. The local window; see {@link WindowOption}. */
  window: WindowOption;
  /**
   * Key positions (integers in [0, kvSeqLen)) that are global: every query sees them, and a query
   * whose own position is global sees every key. Either one list for the whole batch or an array
   * with one list per batch item. Duplicates are allowed; order does not matter. `causal` and
   * `kvLengths` still apply, so `causal` + a window + globals `[0, 1, 2, 3]` gives StreamingLLM-style
   * attention sinks.
   */
  globalTokens?: IntegerList | readonly IntegerList[];
}

/** Options of {@link localGlobalAttention}: a local window plus optional global tokens. */
export type LocalGlobalAttentionOptions<Out extends DType = 'float32'> = FullAttentionOptions<Out> & LocalGlobalFields;

/** Whether a backend can run here, and if not, why. */
export interface BackendStatus {
  name: Backend;
  available: boolean;
  /** Why the backend is unavailable; null when it is available. */
  reason: string | null;
  /**
   * Whether `precision: 'bfloat16'` runs bfloat16 products here (avx512 on a CPU with AVX512_BF16);
   * false: this backend computes in float32 whatever the precision, which is more accurate.
   */
  bfloat16Products: boolean;
  /**
   * Where the backend's code comes from, when it is available: `'prebuilt (prebuilds/linux-x64/…)'`
   * for the binary shipped in the package, `'built here (build/Release/…)'` for one that npm install
   * compiled, `'pure TypeScript (dist/js/)'` for js. null when the backend is unavailable.
   */
  origin: string | null;
}
