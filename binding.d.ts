// The exact raw surface of the native addon (build/Release/global_local_attention.node).
// Callers are lib/backends/native.ts only; inputs are validated and normalised by lib/options.ts
// before they get here. The addon re-checks its own invariants and throws a plain Error whose
// message starts with the failing status ("invalid_argument: ...").

/**
 * The numeric fields of struct gla::AttentionProblem (native/include/gla/problem.h), minus buffers
 * and the optional metadata arrays, packed into one Float64Array: one napi_get_typedarray_info reads
 * them all, where ~30 named-property lookups of a plain object were most of a tiny call's native
 * time. Entry 0 is the layout version, then the fields in the order of the addon's field table
 * (GLA_PROBLEM_FIELDS in native/addon/problem_reader.h), which problemFields() returns and
 * lib/backends/native.ts (NATIVE_PROBLEM_FIELDS) checks at load. The addon rejects any other
 * version or length with an invalid_argument error.
 */
export type NativeProblemFields = Float64Array;

/** The layout the addon reads: its version and the JS name of every entry, "layoutVersion" first. */
export interface NativeProblemLayout {
  version: number;
  names: string[];
}

export type NativeIsa = 'avx512' | 'avx2' | 'neon' | 'scalar';

/** A tensor of the problem's dtype (q, k, v) or outDtype (out): a Float32Array for float32, a
 *  Uint16Array of bit patterns for float16 and bfloat16. */
export type NativeTensor = Float32Array | Uint16Array;

export interface NativeBinding {
  /** The problem-fields layout this build of the addon reads. */
  problemFields(): NativeProblemLayout;
  /** The ISAs this CPU and OS support, best first (always ends with 'scalar'). */
  isas(): NativeIsa[];
  /** The ISAs whose kernels have bfloat16 dot products on this CPU (AVX512_BF16). */
  bfloat16Isas(): NativeIsa[];
  /** Number of hardware threads the native pool may use. */
  hardwareThreads(): number;
  /** Computes on the calling thread (plus the native pool); fills out (a new array of outDtype
   *  shaped like q when out is null) and, when given, lse. Returns out. */
  attentionSync(
    q: NativeTensor, k: NativeTensor, v: NativeTensor,
    out: NativeTensor | null, lse: Float32Array | null,
    fields: NativeProblemFields,
    kvLengths: Int32Array | null, globalOffsets: Int32Array | null, globalIndices: Int32Array | null,
    qLengths: Int32Array | null, alibiSlopes: Float32Array | null, sinkLogits: Float32Array | null,
    blockTable: Int32Array | null, qStarts: Int32Array | null, kvStarts: Int32Array | null,
    isa: NativeIsa,
  ): NativeTensor;
  /**
   * Same work off the JS thread; resolves with out. Before it returns, everything the caller could
   * detach or shrink meanwhile is replaced by memory the call owns (native/addon/staging.h): q, k
   * and v on non-shared ArrayBuffers are copied, out and lse on non-shared ArrayBuffers are computed
   * aside and copied in when the call settles, or the call rejects, writing nothing, if one of them
   * no longer has its length. SharedArrayBuffer views are used in place. Fields and the Int32Arrays
   * are copied too.
   */
  attentionAsync(
    q: NativeTensor, k: NativeTensor, v: NativeTensor,
    out: NativeTensor | null, lse: Float32Array | null,
    fields: NativeProblemFields,
    kvLengths: Int32Array | null, globalOffsets: Int32Array | null, globalIndices: Int32Array | null,
    qLengths: Int32Array | null, alibiSlopes: Float32Array | null, sinkLogits: Float32Array | null,
    blockTable: Int32Array | null, qStarts: Int32Array | null, kvStarts: Int32Array | null,
    isa: NativeIsa,
  ): Promise<NativeTensor>;
  /** CUDA plugin probe: null when usable, else the reason it is not. Never throws. */
  cudaUnavailableReason(): string | null;
  /** As attentionSync / attentionAsync, on the CUDA plugin; only after cudaUnavailableReason() is null. */
  cudaAttentionSync(
    q: NativeTensor, k: NativeTensor, v: NativeTensor,
    out: NativeTensor | null, lse: Float32Array | null,
    fields: NativeProblemFields,
    kvLengths: Int32Array | null, globalOffsets: Int32Array | null, globalIndices: Int32Array | null,
    qLengths: Int32Array | null, alibiSlopes: Float32Array | null, sinkLogits: Float32Array | null,
    blockTable: Int32Array | null, qStarts: Int32Array | null, kvStarts: Int32Array | null,
  ): NativeTensor;
  cudaAttentionAsync(
    q: NativeTensor, k: NativeTensor, v: NativeTensor,
    out: NativeTensor | null, lse: Float32Array | null,
    fields: NativeProblemFields,
    kvLengths: Int32Array | null, globalOffsets: Int32Array | null, globalIndices: Int32Array | null,
    qLengths: Int32Array | null, alibiSlopes: Float32Array | null, sinkLogits: Float32Array | null,
    blockTable: Int32Array | null, qStarts: Int32Array | null, kvStarts: Int32Array | null,
  ): Promise<NativeTensor>;
}

declare const binding: NativeBinding;
export default binding;
