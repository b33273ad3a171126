// Merging attention states: attention computed over disjoint key sets for the same queries, each
// part with its log-sum-exp, combined into attention over the union of the key sets (xformers
// `merge_attentions`, FlashInfer `merge_state`). Per query row, with parts i = 1..n:
//   L = log Σ_i exp(lse_i),   out = Σ_i exp(lse_i − L) · out_i,
// which is exactly softmax attention over all the parts' keys together. Validation, the kernel
// (float64 per row) and the async driver all live here.
import { isFloat32Array, isUint16Array } from 'node:util/types';
import { isDetached } from './detached';
import { argumentError, typeError } from './errors';
import { decodeHalf, encodeHalf, float16ArrayConstructor, isFloat16Array } from './half';
import { arrayKinds, checkLayout, dtypeName, positiveInteger, tensorArray as attentionTensorArray } from './options';
import type { AttentionInput, AttentionOutput, DType, Layout } from './types';

/**
 * The result of attention over some set of keys: the output rows and the log-sum-exp of each row's
 * scores (what the attention functions write to `options.lse`). `out` has batch·heads·seqLen·headDim
 * elements in the call's layout; `lse` is a Float32Array of batch·heads·seqLen in [batch, heads, seq]
 * order whatever the layout, −Infinity for a row that saw no key.
 */
export interface AttentionState<Out extends AttentionInput = AttentionInput> {
  out: Out;
  lse: Float32Array;
}

/** Options of {@link mergeAttentionStates}: the shape every part shares, and where to write. */
export interface MergeAttentionStatesOptions<Out extends DType = 'float32'> {
  /** Number of sequences. Positive safe integer. */
  batch: number;
  /** Number of query heads. Positive safe integer. */
  heads: number;
  /** Query rows per sequence. Positive safe integer. */
  seqLen: number;
  /** Size of each output row. Positive safe integer. */
  headDim: number;
  /** Memory layout of every part's `out` and of the result's, default `'bhsd'`. lse is always [batch, heads, seq]. */
  layout?: Layout;
  /**
   * Element type of every part's `out`. Default: from `parts[0].out` (Float32Array: `'float32'`,
   * Float16Array: `'float16'`); required when it is a Uint16Array. All parts share it.
   */
  dtype?: DType;
  /** Element type of the result's `out` (and of `options.out`), default `dtype`. */
  outDtype?: Out;
  /**
   * Where to write the merged output: an array of `outDtype` of batch·heads·seqLen·headDim elements.
   * It is filled and returned, and the sync function allocates nothing for it. Must not overlap any
   * part's out or lse, nor `options.lse`.
   */
  out?: AttentionOutput;
  /** Where to write the merged lse: a Float32Array of batch·heads·seqLen. Must not overlap any part's arrays. */
  lse?: Float32Array;
}

const OPTION_KEYS = ['batch', 'heads', 'seqLen', 'headDim', 'layout', 'dtype', 'outDtype', 'out', 'lse'] as const;

/** Everything the kernel needs, normalised. Half arrays (Float16Array included) are Uint16Array views. */
interface MergeJob {
  heads: number;
  seqLen: number;
  headDim: number;
  rows: number;
  bshd: boolean;
  dtype: DType;
  outDtype: DType;
  outs: Array<Float32Array | Uint16Array>;
  lses: Float32Array[];
}

interface ValidatedMerge {
  job: MergeJob;
  /** The caller's options.out as a writable view (a Float16Array becomes a Uint16Array view), or null. */
  out: Float32Array | Uint16Array | null;
  /** What the result's `out` is when options.out was given: the caller's own object. */
  outObject: unknown;
  lse: Float32Array | null;
}

function validateMerge(parts: unknown, options: unknown): ValidatedMerge {
  if (!Array.isArray(parts)) throw typeError('parts', parts, 'a non-empty array of { out, lse } objects');
  if (parts.length === 0) {
    throw argumentError(RangeError, 'parts', 'is an empty array', 'at least one { out, lse } object');
  }
  if (typeof options !== 'object' || options === null || Array.isArray(options) || ArrayBuffer.isView(options)) {
    throw typeError('options', options, 'an object such as { batch, heads, seqLen, headDim }');
  }
  const o = readOptions(options as Record<string, unknown>);

  const batch = positiveInteger('options.batch', o.batch);
  const heads = positiveInteger('options.heads', o.heads);
  const seqLen = positiveInteger('options.seqLen', o.seqLen);
  const headDim = positiveInteger('options.headDim', o.headDim);
  const layout = checkLayout(o.layout);
  const rows = batch * heads * seqLen;
  const elements = rows * headDim;
  const outShape = `batch·heads·seqLen·headDim = ${batch}·${heads}·${seqLen}·${headDim} = ${elements}`;
  const lseShape = `batch·heads·seqLen = ${batch}·${heads}·${seqLen} = ${rows}`;

  // Each part is read once: a getter is called once, and what it gave is what the kernel reads.
  const given: Array<{ out: unknown; lse: unknown }> = [];
  for (let i = 0; i < parts.length; i++) {
    const part: unknown = parts[i];
    if (typeof part !== 'object' || part === null || Array.isArray(part) || ArrayBuffer.isView(part)) {
      throw typeError(`parts[${i}]`, part, 'an object { out, lse }');
    }
    const { out, lse } = part as { out?: unknown; lse?: unknown };
    given.push({ out, lse });
  }

  const dtype = o.dtype === undefined ? inferDtype(given[0].out) : dtypeName('options.dtype', o.dtype);
  const outDtype = o.outDtype === undefined ? dtype : dtypeName('options.outDtype', o.outDtype);

  const outs: Array<Float32Array | Uint16Array> = [];
  const lses: Float32Array[] = [];
  for (let i = 0; i < given.length; i++) {
    const out = tensorArray(`parts[${i}].out`, given[i].out, dtype, 'dtype');
    if (out.length !== elements) throw lengthError(`parts[${i}].out`, out.length, outShape);
    const lse = float32Array(`parts[${i}].lse`, given[i].lse);
    if (lse.length !== rows) throw lengthError(`parts[${i}].lse`, lse.length, lseShape);
    outs.push(out);
    lses.push(lse);
  }

  let out: Float32Array | Uint16Array | null = null;
  if (o.out !== undefined) {
    out = tensorArray('options.out', o.out, outDtype, 'outDtype');
    if (out.length !== elements) throw lengthError('options.out', out.length, outShape);
  }
  let lse: Float32Array | null = null;
  if (o.lse !== undefined) {
    lse = float32Array('options.lse', o.lse);
    if (lse.length !== rows) throw lengthError('options.lse', lse.length, lseShape);
  }
  // The kernel writes a row's lse before it has read every part's out for that row (and out rows
  // blockwise), so a target sharing memory with an input would read values it already overwrote.
  const targets: Array<[string, ArrayBufferView]> = [];
  if (out !== null) targets.push(['options.out', out]);
  if (lse !== null) targets.push(['options.lse', lse]);
  for (const [name, target] of targets) {
    for (let i = 0; i < outs.length; i++) {
      checkNoOverlap(name, target, `parts[${i}].out`, outs[i]);
      checkNoOverlap(name, target, `parts[${i}].lse`, lses[i]);
    }
  }
  if (out !== null && lse !== null) checkNoOverlap('options.out', out, 'options.lse', lse);

  return {
    job: { heads, seqLen, headDim, rows, bshd: layout === 'bshd', dtype, outDtype, outs, lses },
    out,
    outObject: o.out,
    lse,
  };
}

interface GivenOptions {
  batch: unknown;
  heads: unknown;
  seqLen: unknown;
  headDim: unknown;
  layout: unknown;
  dtype: unknown;
  outDtype: unknown;
  out: unknown;
  lse: unknown;
}

function readOptions(o: Record<string, unknown>): GivenOptions {
  const given: GivenOptions = {
    batch: undefined, heads: undefined, seqLen: undefined, headDim: undefined, layout: undefined,
    dtype: undefined, outDtype: undefined, out: undefined, lse: undefined,
  };
  for (const key of Object.keys(o)) {
    const value = o[key];
    // An explicit undefined is how JS spells "not given", as in the attention functions.
    if (value === undefined) continue;
    if (!(OPTION_KEYS as readonly string[]).includes(key)) {
      throw argumentError(
        RangeError, 'options', `has an unknown key ${JSON.stringify(key)}`,
        `only these keys: ${OPTION_KEYS.join(', ')} (a merge needs no attention options such as causal or scale)`,
      );
    }
    given[key as keyof GivenOptions] = value;
  }
  return given;
}

function inferDtype(out: unknown): DType {
  if (isFloat32Array(out)) return 'float32';
  if (isFloat16Array(out)) return 'float16';
  if (isUint16Array(out)) {
    throw argumentError(
      TypeError, 'options.dtype', 'is missing, and parts[0].out is a Uint16Array (raw 16-bit patterns of an unknown type)',
      "'float16' or 'bfloat16' to say what the bits are",
    );
  }
  throw typeError('parts[0].out', out, arrayKinds('float32'));
}

/** A usable array of dtype (options.ts's rules: a Float16Array becomes a Uint16Array view of it). */
function tensorArray(name: string, value: unknown, dtype: DType, option: 'dtype' | 'outDtype'): Float32Array | Uint16Array {
  return attentionTensorArray(name, value, dtype, option === 'outDtype');
}

function float32Array(name: string, value: unknown): Float32Array {
  if (!isFloat32Array(value)) throw typeError(name, value, 'a Float32Array');
  if (isDetached(value)) throw detachedError(name);
  return value;
}

function detachedError(name: string): TypeError {
  return argumentError(TypeError, name, 'is a typed array whose buffer is detached (transferred or freed)', 'a usable typed array');
}

function lengthError(name: string, length: number, expected: string): RangeError {
  return argumentError(RangeError, name, `has length ${length}`, expected);
}

function checkNoOverlap(name: string, target: ArrayBufferView, otherName: string, other: ArrayBufferView): void {
  if (other.buffer !== target.buffer) return;
  const overlaps =
    target.byteOffset < other.byteOffset + other.byteLength && other.byteOffset < target.byteOffset + target.byteLength;
  if (overlaps) {
    throw argumentError(
      RangeError, name, `overlaps the memory of ${otherName}`,
      "an array that shares no memory with any part's out or lse, nor with the other output",
    );
  }
}

// ---------------------------------------------------------------------------------------------
// The kernel. Rows are taken in memory order of `out`, in blocks of about BLOCK_ELEMENTS elements,
// so that half parts are decoded (and a half result encoded) a contiguous block at a time with the
// codecs of half.ts. Per row, in float64:
//   m = max_i lse_i; L = m + log Σ_i exp(lse_i − m); w_i = exp(lse_i − L); out = Σ_i w_i·out_i.
// Rules (documented on the public functions):
// - a part whose lse is −Infinity for a row saw no key there: it is skipped, its out row is not
//   read (as the attention kernels never multiply a masked key's value), so a row where every part
//   is −Infinity is zeros with lse −Infinity, never NaN;
// - a NaN lse, or a +Infinity lse (no finite scores give one: it is exp(∞ − ∞) in the attention
//   functions, whose row is NaN), makes the row NaN, out and lse;
// - a NaN or ±Infinity in a contributing part's out propagates to that column as IEEE arithmetic does.
// A half result is rounded float64 → float32 → half, as the attention functions round their float32 rows.

const BLOCK_ELEMENTS = 4096;

interface Scratch {
  blockRows: number;
  acc: Float64Array;
  rowL: Float64Array;
  rowIndex: Float64Array;
  /** A half part's block, decoded; a half result's block, before encoding. */
  floats: Float32Array | null;
}

function scratchFor(job: MergeJob): Scratch {
  const blockRows = Math.max(1, Math.min(job.rows, Math.floor(BLOCK_ELEMENTS / job.headDim)));
  const n = blockRows * job.headDim;
  const half = job.dtype !== 'float32' || job.outDtype !== 'float32';
  return {
    blockRows,
    acc: new Float64Array(n),
    rowL: new Float64Array(blockRows),
    rowIndex: new Float64Array(blockRows),
    floats: half ? new Float32Array(n) : null,
  };
}

/** Merges rows [firstRow, endRow) (in out's memory order) into out and lse. */
function mergeRows(job: MergeJob, s: Scratch, out: Float32Array | Uint16Array, lse: Float32Array, firstRow: number, endRow: number): void {
  for (let r0 = firstRow; r0 < endRow; r0 += s.blockRows) mergeBlock(job, s, out, lse, r0, Math.min(endRow, r0 + s.blockRows));
}

function mergeBlock(job: MergeJob, s: Scratch, out: Float32Array | Uint16Array, lse: Float32Array, r0: number, r1: number): void {
  const { headDim, outs, lses, heads, seqLen } = job;
  const { acc, rowL, rowIndex } = s;
  const rows = r1 - r0;
  const n = rows * headDim;
  const e0 = r0 * headDim;
  const parts = outs.length;

  for (let r = 0; r < rows; r++) {
    // Memory row → lse index: the same in bhsd; in bshd memory row (b, s, h) is lse row (b, h, s).
    let index = r0 + r;
    if (job.bshd) {
      const h = index % heads;
      const t = (index - h) / heads;
      const q = t % seqLen;
      index = ((t - q) / seqLen * heads + h) * seqLen + q;
    }
    rowIndex[r] = index;
    let m = -Infinity;
    let nan = false;
    for (let p = 0; p < parts; p++) {
      const x = lses[p][index];
      if (x > m) m = x;
      else if (x !== x) nan = true;
    }
    let L: number;
    if (nan || m === Infinity) L = NaN;
    else if (m === -Infinity) L = -Infinity;
    else {
      let sum = 0;
      for (let p = 0; p < parts; p++) sum += Math.exp(lses[p][index] - m);
      L = m + Math.log(sum);
    }
    rowL[r] = L;
  }

  acc.fill(0, 0, n);
  for (let p = 0; p < parts; p++) {
    const part = outs[p];
    const partLse = lses[p];
    let src: Float32Array;
    let offset: number;
    if (job.dtype === 'float32') {
      src = part as Float32Array;
      offset = e0;
    } else {
      src = s.floats as Float32Array;
      decodeHalf(job.dtype, (part as Uint16Array).subarray(e0, e0 + n), src.subarray(0, n));
      offset = 0;
    }
    for (let r = 0; r < rows; r++) {
      const x = partLse[rowIndex[r]];
      if (x === -Infinity) continue;
      const w = Math.exp(x - rowL[r]);
      const base = r * headDim;
      const from = offset + base;
      for (let d = 0; d < headDim; d++) acc[base + d] += w * src[from + d];
    }
  }

  for (let r = 0; r < rows; r++) lse[rowIndex[r]] = rowL[r];
  if (job.outDtype === 'float32') {
    const o = out as Float32Array;
    for (let i = 0; i < n; i++) o[e0 + i] = acc[i];
  } else {
    const floats = s.floats as Float32Array;
    for (let i = 0; i < n; i++) floats[i] = acc[i];
    encodeHalf(job.outDtype, floats.subarray(0, n), (out as Uint16Array).subarray(e0, e0 + n));
  }
}

function newOut(job: MergeJob): Float32Array | Uint16Array {
  const elements = job.rows * job.headDim;
  return job.outDtype === 'float32' ? new Float32Array(elements) : new Uint16Array(elements);
}

/** The result's out: the caller's own object, a Float16Array over a float16 result where the runtime has one, or the array. */
function resultOut(job: MergeJob, v: ValidatedMerge, written: Float32Array | Uint16Array): unknown {
  if (v.out !== null) return v.outObject;
  if (job.outDtype === 'float16') {
    const Float16 = float16ArrayConstructor();
    if (Float16 !== undefined) return new Float16(written.buffer, written.byteOffset, written.length);
  }
  return written;
}

function mergeSync(parts: unknown, options: unknown): AttentionState<AttentionOutput> {
  const v = validateMerge(parts, options);
  const { job } = v;
  const out = v.out ?? newOut(job);
  const lse = v.lse ?? new Float32Array(job.rows);
  mergeRows(job, scratchFor(job), out, lse, 0, job.rows);
  return { out: resultOut(job, v, out) as AttentionOutput, lse };
}

// The async function. The JS worker pool (lib/js/pool.ts) takes attention jobs only: its protocol
// and worker script run the attention kernel, so a generic job would mean changing both. And a
// merge is memory-bound, one multiply-add per element read: copying the parts into
// SharedArrayBuffers for workers would cost about what merging them on this thread does. So a large
// merge runs here, in chunks of about CHUNK_WORK multiply-adds (around a millisecond), with a
// macrotask turn (setImmediate) between chunks so that timers and I/O run meanwhile. A merge that
// fits in one chunk computes at once and settles behind a resolved promise.
const CHUNK_WORK = 1 << 20;

function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

async function mergeAsync(parts: unknown, options: unknown): Promise<AttentionState<AttentionOutput>> {
  // Inside an async function, so a validation error becomes a rejection, never a synchronous throw.
  const v = validateMerge(parts, options);
  const { job } = v;
  // Computed into memory of this call's own and delivered when it settles, as the attention
  // functions deliver out and lse: all or nothing.
  const out = newOut(job);
  const lse = new Float32Array(job.rows);
  const scratch = scratchFor(job);
  const rowsPerChunk = Math.max(1, Math.floor(CHUNK_WORK / (job.headDim * job.outs.length)));
  for (let r0 = 0; r0 < job.rows; r0 += rowsPerChunk) {
    if (r0 > 0) {
      await nextTurn();
      checkPartsIntact(job);
    }
    mergeRows(job, scratch, out, lse, r0, Math.min(job.rows, r0 + rowsPerChunk));
  }
  await undefined;
  if (v.out !== null) checkStillWritable('options.out', v.out, out.length);
  if (v.lse !== null) checkStillWritable('options.lse', v.lse, lse.length);
  if (v.out !== null) (v.out as Float32Array).set(out as Float32Array);
  if (v.lse !== null) v.lse.set(lse);
  return { out: resultOut(job, v, v.out ?? out) as AttentionOutput, lse: v.lse ?? lse };
}

/** A large async merge reads the parts over several turns of the event loop; one given up meanwhile fails it. */
function checkPartsIntact(job: MergeJob): void {
  const elements = job.rows * job.headDim;
  for (let i = 0; i < job.outs.length; i++) {
    checkStillReadable(`parts[${i}].out`, job.outs[i], elements);
    checkStillReadable(`parts[${i}].lse`, job.lses[i], job.rows);
  }
}

function changedMessage(name: string, array: ArrayBufferView & { length: number }, length: number, what: string): string {
  return isDetached(array)
    ? `${name} was detached (its ArrayBuffer was transferred) while the call ran; ${what}`
    : `${name} has ${array.length} elements now, ${length} when the call started (its resizable ArrayBuffer was resized while the call ran); ${what}`;
}

function checkStillReadable(name: string, array: Float32Array | Uint16Array, length: number): void {
  if (array.length !== length) throw new Error(changedMessage(name, array, length, 'the merge was abandoned and nothing was written'));
}

function checkStillWritable(name: string, array: Float32Array | Uint16Array, length: number): void {
  if (array.length !== length) throw new Error(changedMessage(name, array, length, 'the result was discarded'));
}

/**
 * Merges attention states computed over disjoint sets of keys for the same queries into attention
 * over the union of the key sets: per query row, lse = log Σ exp(lse_i) and
 * out = Σ exp(lse_i − lse)·out_i, in float64 (xformers `merge_attentions`, FlashInfer
 * `merge_state`). The parts come from the attention functions called with `lse` (e.g. one call per
 * key range via `kvLengths` or a slice of k and v, per worker thread, or a shared prefix and each
 * sequence's suffix); they may be given in any order, and merging is associative.
 *
 * - A part whose lse is −Infinity for a row (it saw no key there) adds nothing and its out row is
 *   not read; a row where every part is −Infinity comes out zeros with lse −Infinity, never NaN.
 * - A NaN lse, or a +Infinity lse (which no finite scores produce), makes the row NaN, out and lse;
 *   a NaN or ±Infinity in a contributing part's out reaches that column as IEEE arithmetic says.
 * - Every part's out has `dtype`; the result has `outDtype` (default `dtype`), rounded once from
 *   float32 as the attention functions round their output.
 *
 * @param parts One or more `{ out, lse }`, each shaped by `options` (out in `options.layout`, lse in
 *   [batch, heads, seq] order).
 * @returns `{ out, lse }`: `options.out` / `options.lse` when given (filled, nothing allocated), else
 *   new arrays (out of `outDtype`: a Float32Array for float32).
 * @throws TypeError / RangeError for invalid arguments, naming the argument (e.g. `parts[1].lse`),
 *   what it is and what is expected; nothing is written then.
 *
 * @example
 * ```ts
 * const merged = mergeAttentionStatesSync([first, second], { batch: 1, heads: 8, seqLen: 1, headDim: 64 });
 * ```
 */
export function mergeAttentionStatesSync(
  parts: readonly AttentionState<Float32Array>[], options: MergeAttentionStatesOptions,
): AttentionState<Float32Array>;
export function mergeAttentionStatesSync(
  parts: readonly AttentionState[], options: MergeAttentionStatesOptions<DType>,
): AttentionState<AttentionOutput>;
export function mergeAttentionStatesSync(
  parts: readonly AttentionState[], options: MergeAttentionStatesOptions<DType>,
): AttentionState<AttentionOutput> {
  return mergeSync(parts, options);
}

/**
 * {@link mergeAttentionStatesSync} without blocking the event loop: a small merge computes at once
 * and settles behind a resolved Promise; a large one runs in chunks of about a millisecond with a
 * turn of the event loop (setImmediate) between them. Rejects with the same errors the sync
 * function throws. The result is computed into memory of the call's own and copied into
 * `options.out` / `options.lse` when the Promise settles (rejecting, and writing neither, if one
 * was transferred or resized meanwhile). A large merge reads the parts until it settles: do not
 * write them meanwhile; one transferred or shrunk makes the Promise reject with an Error naming it.
 */
export function mergeAttentionStates(
  parts: readonly AttentionState<Float32Array>[], options: MergeAttentionStatesOptions,
): Promise<AttentionState<Float32Array>>;
export function mergeAttentionStates(
  parts: readonly AttentionState[], options: MergeAttentionStatesOptions<DType>,
): Promise<AttentionState<AttentionOutput>>;
export function mergeAttentionStates(
  parts: readonly AttentionState[], options: MergeAttentionStatesOptions<DType>,
): Promise<AttentionState<AttentionOutput>> {
  return mergeAsync(parts, options);
}
