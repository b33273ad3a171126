// The only validator: a caller's (q, k, v, options) become one normalised AttentionProblem, the
// buffers to write, and the backend to run on. Nothing downstream re-checks what is checked here,
// so every rule of the public contract lives in this file (the mask options in mask-options.ts).
import { availableParallelism } from 'node:os';
import { constants as bufferConstants } from 'node:buffer';
import { isFloat32Array, isUint16Array } from 'node:util/types';
import { isDetached } from './detached';
import { argumentError, describeValue, rangeError, typeError } from './errors';
import { float16ArrayConstructor, isFloat16Array } from './half';
import { normaliseGlobalTokens, normaliseHeadValues, normaliseLengths, normaliseSoftcap, normaliseWindow } from './mask-options';
import {
  type AttentionBuffers, type AttentionProblem, DTYPE_CODES, type DTypeCode, PRECISION_CODES, type Strides,
  type TensorArray,
} from './problem';
import { BACKEND_NAMES, type BackendChoice, type DType, type Layout, type Precision } from './types';

export type AttentionKind = 'fullAttention' | 'localGlobalAttention';

export interface ValidatedCall {
  problem: AttentionProblem;
  buffers: AttentionBuffers;
  /** Which backend the caller asked for; index.ts resolves it (lib/backends/registry.ts). */
  backend: BackendChoice;
  /** What the call returns for the output array a backend returns (see resultOf). */
  result: ResultKind;
}

/**
 * How the backends' output becomes the caller's result: the caller's own `out` object (a
 * Float16Array travels as a Uint16Array view of it), a Float16Array over the output's memory (a
 * float16 result without `out`, where the runtime has Float16Array), or the output itself.
 */
export type ResultKind = { out: unknown } | 'float16array' | 'as-is';

export function resultOf(kind: ResultKind, output: TensorArray): unknown {
  if (kind === 'as-is') return output;
  if (kind === 'float16array') {
    const Float16 = float16ArrayConstructor() as new (buffer: ArrayBufferLike, offset: number, length: number) => unknown;
    return new Float16(output.buffer, output.byteOffset, output.length);
  }
  return kind.out;
}

export const BACKEND_ENV = 'GLOBAL_LOCAL_ATTENTION_BACKEND';

const COMMON_KEYS = [
  'batch', 'heads', 'seqLen', 'headDim', 'kvHeads', 'kvSeqLen', 'layout', 'scale', 'causal',
  'kvLengths', 'out', 'lse', 'backend', 'threads', 'dtype', 'outDtype', 'precision',
  'qLengths', 'softcap', 'alibiSlopes', 'sinkLogits', 'blockTable', 'pageSize', 'cuSeqlensQ', 'cuSeqlensK',
] as const;
const LOCAL_GLOBAL_KEYS = ['window', 'globalTokens'] as const;
const FULL_KEY_SET: ReadonlySet<string> = new Set(COMMON_KEYS);
const LOCAL_GLOBAL_KEY_SET: ReadonlySet<string> = new Set([...COMMON_KEYS, ...LOCAL_GLOBAL_KEYS]);

/** Positions are Int32 in the native params and the CSR lists. */
const MAX_SEQ_LEN = 2 ** 31 - 1;
/** The most elements one Float32Array can hold in this Node (2³² in Node 20, larger later). */
const MAX_ELEMENTS = Math.min(bufferConstants.MAX_LENGTH, Math.floor(Number.MAX_SAFE_INTEGER / 4));

// The sync API's cost on a tiny problem is mostly this file, so its success path allocates little
// and formats nothing: every message, and every string that goes into one, is built only on the
// way to a throw.

/** The cores this process may use, read once: os.availableParallelism() is a syscall per call. */
let cpuCount: number | undefined;
function availableCores(): number {
  cpuCount ??= availableParallelism();
  return cpuCount;
}

export function validateCall(
  kind: AttentionKind,
  q: unknown,
  k: unknown,
  v: unknown,
  options: unknown,
): ValidatedCall {
  const o = readOptions(kind, options);

  // Packed sequences (cuSeqlensQ/K) bring their own batch and lengths.
  const packed = o.cuSeqlensQ === undefined && o.cuSeqlensK === undefined ? null : packedOf(o);
  const batch = packed === null ? positiveInteger('options.batch', o.batch) : packed.batch;
  const heads = positiveInteger('options.heads', o.heads);
  const seqLen = packed === null ? positiveInteger('options.seqLen', o.seqLen, MAX_SEQ_LEN) : packed.seqLen;
  const headDim = positiveInteger('options.headDim', o.headDim);
  const kvHeads = o.kvHeads === undefined ? heads : positiveInteger('options.kvHeads', o.kvHeads);
  if (heads % kvHeads !== 0) {
    throw rangeError('options.kvHeads', kvHeads, `a divisor of heads = ${heads}`);
  }
  const paging = o.blockTable === undefined ? null : pagingOf(o, batch);
  if (paging === null && o.pageSize !== undefined) {
    throw argumentError(RangeError, 'options.pageSize', 'is given without options.blockTable', 'both, for a paged KV cache, or neither');
  }
  const kvSeqLen = packed !== null ? packed.kvSeqLen : o.kvSeqLen === undefined
    ? (paging === null ? seqLen : Math.min(paging.maxBlocks * paging.pageSize, MAX_SEQ_LEN))
    : positiveInteger('options.kvSeqLen', o.kvSeqLen, paging === null ? MAX_SEQ_LEN : paging.maxBlocks * paging.pageSize);

  // What q (and out), k and v hold, as the error messages name it.
  const qShape: [string[], number[]] = packed === null
    ? [Q_NAMES, [batch, heads, seqLen, headDim]]
    : [['totalQ', 'heads', 'headDim'], [packed.totalQ, heads, headDim]];
  const kvShape: [string[], number[]] = packed === null
    ? [KV_NAMES, [batch, kvHeads, kvSeqLen, headDim]]
    : [['totalK', 'kvHeads', 'headDim'], [packed.totalK, kvHeads, headDim]];
  const lseShape: [string[], number[]] = packed === null ? [LSE_NAMES, [batch, heads, seqLen]] : [['heads', 'totalQ'], [heads, packed.totalQ]];
  const product = (sizes: number[]): number => sizes.reduce((a, b) => a * b, 1);
  const qLength = product(qShape[1]);
  // A paged pool holds whole pages: its length says how many (checked below).
  const kvLength = paging === null ? product(kvShape[1]) : -1;
  const lseLength = product(lseShape[1]);
  if (qLength > MAX_ELEMENTS) throw tooManyElements('q and out', ...qShape);
  if (paging === null && kvLength > MAX_ELEMENTS) throw tooManyElements('k and v', ...kvShape);
  if (lseLength > MAX_ELEMENTS) throw tooManyElements('lse', ...lseShape);

  const layout = checkLayout(o.layout);
  // The common case (a Float32Array and no dtype) decides without a call.
  const dtype = o.dtype === undefined && isFloat32Array(q) ? 'float32' : inputDtype(q, o.dtype);
  const qArray = tensorArray('q', q, dtype);
  if (qArray.length !== qLength) throw lengthError('q', qArray, ...qShape);
  const kArray = tensorArray('k', k, dtype);
  const vArray = tensorArray('v', v, dtype);
  let pageCount = 0;
  if (paging === null) {
    if (kArray.length !== kvLength) throw lengthError('k', kArray, ...kvShape);
    if (vArray.length !== kvLength) throw lengthError('v', vArray, ...kvShape);
  } else {
    const pageElements = paging.pageSize * kvHeads * headDim;
    if (kArray.length % pageElements !== 0) {
      throw argumentError(
        RangeError, 'k', `has length ${kArray.length}`,
        `whole pages of pageSize·kvHeads·headDim = ${paging.pageSize}·${kvHeads}·${headDim} = ${pageElements} elements (a paged pool [pageCount, pageSize, kvHeads, headDim])`,
      );
    }
    if (vArray.length !== kArray.length) {
      throw argumentError(RangeError, 'v', `has length ${vArray.length}`, `k's length ${kArray.length} (the same page pool shape)`);
    }
    pageCount = kArray.length / pageElements;
  }
  const outDtype = o.outDtype === undefined ? dtype : dtypeName('options.outDtype', o.outDtype);
  const precision = precisionName(o.precision, dtype);

  const scale = o.scale === undefined ? 1 / Math.sqrt(headDim) : float32Scale(o.scale);
  const causal = o.causal === undefined ? false : boolean('options.causal', o.causal);
  if (paging !== null && o.kvLengths === undefined) {
    throw argumentError(TypeError, 'options.kvLengths', 'is missing', 'one cache length per batch item with options.blockTable');
  }
  const kvLengths = packed !== null ? packed.kvLengths
    : o.kvLengths === undefined ? null : normaliseLengths('options.kvLengths', o.kvLengths, batch, kvSeqLen, 'kvSeqLen');
  if (paging !== null && kvLengths !== null) checkBlockTable(paging, kvLengths, pageCount);
  const qLengths = packed !== null ? packed.qLengths
    : o.qLengths === undefined ? null : normaliseLengths('options.qLengths', o.qLengths, batch, seqLen, 'seqLen');
  const softcap = o.softcap === undefined ? 0 : normaliseSoftcap(o.softcap);
  const alibiSlopes = o.alibiSlopes === undefined ? null : normaliseHeadValues('options.alibiSlopes', o.alibiSlopes, heads);
  const sinkLogits = o.sinkLogits === undefined ? null : normaliseHeadValues('options.sinkLogits', o.sinkLogits, heads);

  let windowLeft = -1;
  let windowRight = -1;
  let globalOffsets: Int32Array | null = null;
  let globalIndices: Int32Array | null = null;
  if (kind === 'localGlobalAttention') {
    [windowLeft, windowRight] = normaliseWindow(o.window);
    if (o.globalTokens !== undefined) {
      ({ offsets: globalOffsets, indices: globalIndices } = normaliseGlobalTokens(o.globalTokens, batch, kvSeqLen));
    }
  }

  let givenOut: TensorArray | null = null;
  if (o.out !== undefined) {
    givenOut = outArray(o.out, outDtype);
    if (givenOut.length !== qLength) throw lengthError('options.out', givenOut, ...qShape);
  }
  let lse: Float32Array | null = null;
  if (o.lse !== undefined) {
    lse = float32Array('options.lse', o.lse);
    if (lse.length !== lseLength) throw lengthError('options.lse', lse, ...lseShape);
  }
  if (givenOut !== null) {
    checkNoOverlap('options.out', givenOut, 'q', qArray);
    checkNoOverlap('options.out', givenOut, 'k', kArray);
    checkNoOverlap('options.out', givenOut, 'v', vArray);
    if (lse !== null) checkNoOverlap('options.out', givenOut, 'options.lse', lse);
  }
  if (lse !== null) {
    checkNoOverlap('options.lse', lse, 'q', qArray);
    checkNoOverlap('options.lse', lse, 'k', kArray);
    checkNoOverlap('options.lse', lse, 'v', vArray);
  }

  const threads = o.threads === undefined ? availableCores() : positiveInteger('options.threads', o.threads);
  // Only named here: resolving it is index.ts's, after every check, so that an invalid call is a
  // TypeError/RangeError whichever backends this machine has.
  const backend = backendChoice(o.backend);

  // Packed sequences are [total, heads, headDim] rows, every sequence's after the previous one's.
  const qStrides = packed === null ? layoutStrides(layout, heads, seqLen, headDim) : { batch: 0, head: headDim, seq: heads * headDim };
  // A page pool is [pageCount, pageSize, kvHeads, headDim] whatever the layout of q and out: its rows
  // are kvHeads·headDim apart, and batch items reach them through the block table only.
  const kvStrides = paging === null && packed === null
    ? layoutStrides(layout, kvHeads, kvSeqLen, headDim)
    : { batch: 0, head: headDim, seq: kvHeads * headDim };
  // One object literal with every field always present, so that every problem has the same shape.
  const problem: AttentionProblem = {
    dtype: dtypeCode(dtype), outDtype: dtypeCode(outDtype),
    precision: precision === 'float32' ? PRECISION_CODES.float32 : PRECISION_CODES.bfloat16,
    batch, heads, kvHeads, seqLen, kvSeqLen, headDim,
    qStrides, kStrides: kvStrides, vStrides: kvStrides, outStrides: qStrides,
    scale, causal, windowLeft, windowRight, kvLengths, qLengths, softcap, alibiSlopes, sinkLogits,
    blockTable: paging === null ? null : paging.table,
    maxBlocks: paging === null ? 0 : paging.maxBlocks,
    pageSize: paging === null ? 0 : paging.pageSize,
    pageCount,
    qStarts: packed === null ? null : packed.qStarts,
    kvStarts: packed === null ? null : packed.kvStarts,
    globalOffsets, globalIndices,
    // An upper bound, so asking for more than this machine has means all it has.
    threads: Math.min(threads, availableCores()),
  };
  // Without `out`, the backend allocates the output once the call is known to be valid (the addon
  // creates it natively, so that an async call can write it in place: no JavaScript has seen it).
  // The backends return the array they wrote: the caller's out itself, except a Float16Array out,
  // which travels as a Uint16Array view.
  let result: ResultKind = 'as-is';
  if (outDtype === 'float16') {
    if (o.out !== undefined) result = o.out !== givenOut ? { out: o.out } : 'as-is';
    else if (float16ArrayConstructor() !== undefined) result = 'float16array';
  }
  return { problem, buffers: { q: qArray, k: kArray, v: vArray, out: givenOut, lse }, backend, result };
}

interface Packed {
  batch: number;
  qStarts: Int32Array;
  kvStarts: Int32Array;
  qLengths: Int32Array;
  kvLengths: Int32Array;
  seqLen: number;
  kvSeqLen: number;
  totalQ: number;
  totalK: number;
}

/** Options that packed sequences define themselves, so that giving them is a mistake. */
const NOT_WITH_PACKED = ['seqLen', 'kvSeqLen', 'layout', 'kvLengths', 'qLengths', 'blockTable', 'pageSize'] as const;

/** cuSeqlensQ and cuSeqlensK (FlashAttention's varlen offsets): batch, lengths and totals. */
function packedOf(o: GivenOptions): Packed {
  const qStarts = cuSeqlens('options.cuSeqlensQ', o.cuSeqlensQ);
  const kvStarts = cuSeqlens('options.cuSeqlensK', o.cuSeqlensK);
  if (kvStarts.length !== qStarts.length) {
    throw argumentError(RangeError, 'options.cuSeqlensK', `has length ${kvStarts.length}`, `cuSeqlensQ's length ${qStarts.length} (batch + 1)`);
  }
  const batch = qStarts.length - 1;
  if (o.batch !== undefined) {
    const given = positiveInteger('options.batch', o.batch);
    if (given !== batch) throw argumentError(RangeError, 'options.batch', `is ${given}`, `cuSeqlensQ.length − 1 = ${batch} (or omit it)`);
  }
  for (const name of NOT_WITH_PACKED) {
    if (o[name] !== undefined) {
      throw argumentError(
        RangeError, `options.${name}`, 'is given with cuSeqlensQ/cuSeqlensK',
        'to leave it out: packed sequences take their lengths from cuSeqlensQ and cuSeqlensK, and q, k, v and out are [total, heads, headDim]',
      );
    }
  }
  const lengths = (starts: Int32Array): Int32Array => Int32Array.from({ length: batch }, (_, b) => starts[b + 1] - starts[b]);
  const qLengths = lengths(qStarts);
  const kvLengths = lengths(kvStarts);
  return {
    batch, qStarts, kvStarts, qLengths, kvLengths,
    seqLen: Math.max(1, ...qLengths), kvSeqLen: Math.max(1, ...kvLengths),
    totalQ: qStarts[batch], totalK: kvStarts[batch],
  };
}

/** A cu_seqlens array: batch + 1 offsets from 0, non-decreasing; copied (an async call keeps it). */
function cuSeqlens(name: string, value: unknown): Int32Array {
  const expected = 'an Int32Array of batch + 1 offsets, starting at 0 and non-decreasing (cuSeqlensQ and cuSeqlensK go together)';
  if (value === undefined) throw argumentError(TypeError, name, 'is missing', expected);
  if (!(value instanceof Int32Array)) throw typeError(name, value, expected);
  if (isDetached(value)) throw argumentError(TypeError, name, 'is an Int32Array whose buffer is detached', 'a usable Int32Array');
  if (value.length < 2) throw argumentError(RangeError, name, `has length ${value.length}`, 'at least 2 (batch + 1, batch ≥ 1)');
  if (value[0] !== 0) throw rangeError(`${name}[0]`, value[0], '0');
  for (let i = 1; i < value.length; i++) {
    if (value[i] < value[i - 1]) throw rangeError(`${name}[${i}]`, value[i], `≥ ${name}[${i - 1}] = ${value[i - 1]} (offsets never decrease)`);
  }
  return value.slice();
}

interface Paging {
  table: Int32Array;
  maxBlocks: number;
  pageSize: number;
}

/** blockTable (batch × maxBlocks, row-major) and pageSize; the entries are checked by checkBlockTable. */
function pagingOf(o: GivenOptions, batch: number): Paging {
  const table = o.blockTable;
  if (!(table instanceof Int32Array)) {
    throw typeError('options.blockTable', table, 'an Int32Array of batch × maxBlocks page indices (row-major)');
  }
  if (isDetached(table)) {
    throw argumentError(TypeError, 'options.blockTable', 'is an Int32Array whose buffer is detached', 'a usable Int32Array');
  }
  if (table.length === 0 || table.length % batch !== 0) {
    throw argumentError(RangeError, 'options.blockTable', `has length ${table.length}`, `a positive multiple of batch = ${batch} (batch × maxBlocks)`);
  }
  if (o.pageSize === undefined) {
    throw argumentError(TypeError, 'options.pageSize', 'is missing', 'the rows per page (a positive integer) with options.blockTable');
  }
  const pageSize = positiveInteger('options.pageSize', o.pageSize, MAX_SEQ_LEN);
  return { table, maxBlocks: table.length / batch, pageSize };
}

/** Every entry that covers a key below its item's length is a page of the pool, checked before any work. */
function checkBlockTable(paging: Paging, kvLengths: Int32Array, pageCount: number): void {
  const { table, maxBlocks, pageSize } = paging;
  for (let b = 0; b < kvLengths.length; b++) {
    const used = Math.ceil(kvLengths[b] / pageSize);
    for (let n = 0; n < used; n++) {
      const index = b * maxBlocks + n;
      const page = table[index];
      if (!(page >= 0 && page < pageCount)) {
        throw argumentError(
          RangeError, `options.blockTable[${index}]`, `is ${page} (batch item ${b}, block ${n}, which holds keys below kvLengths[${b}] = ${kvLengths[b]})`,
          `a page index in [0, pageCount) = [0, ${pageCount}) (k holds ${pageCount} pages)`,
        );
      }
    }
  }
}

/** Every option, read once; undefined where not given. */
interface GivenOptions {
  batch: unknown;
  heads: unknown;
  seqLen: unknown;
  headDim: unknown;
  kvHeads: unknown;
  kvSeqLen: unknown;
  layout: unknown;
  scale: unknown;
  causal: unknown;
  kvLengths: unknown;
  out: unknown;
  lse: unknown;
  backend: unknown;
  threads: unknown;
  window: unknown;
  globalTokens: unknown;
  dtype: unknown;
  outDtype: unknown;
  precision: unknown;
  qLengths: unknown;
  blockTable: unknown;
  pageSize: unknown;
  cuSeqlensQ: unknown;
  cuSeqlensK: unknown;
  softcap: unknown;
  alibiSlopes: unknown;
  sinkLogits: unknown;
}

/**
 * Reads the options object in one pass over its own keys into a record of fixed shape. Reading
 * each known name instead cost 2-3 µs on objects built with a spread (`{ ...base, out }`), which
 * V8 keeps as dictionaries, where every lookup of an absent option is a hash probe.
 */
function readOptions(kind: AttentionKind, options: unknown): GivenOptions {
  if (typeof options !== 'object' || options === null || Array.isArray(options) || ArrayBuffer.isView(options)) {
    throw typeError('options', options, 'an object such as { batch, heads, seqLen, headDim }');
  }
  const o = options as Record<string, unknown>;
  const given: GivenOptions = {
    batch: undefined, heads: undefined, seqLen: undefined, headDim: undefined, kvHeads: undefined,
    kvSeqLen: undefined, layout: undefined, scale: undefined, causal: undefined, kvLengths: undefined,
    out: undefined, lse: undefined, backend: undefined, threads: undefined, window: undefined, globalTokens: undefined,
    dtype: undefined, outDtype: undefined, precision: undefined,
    qLengths: undefined, blockTable: undefined, pageSize: undefined, cuSeqlensQ: undefined, cuSeqlensK: undefined, softcap: undefined, alibiSlopes: undefined, sinkLogits: undefined,
  };
  const local = kind === 'localGlobalAttention';
  for (const key of Object.keys(o)) {
    const value = o[key];
    // An explicit undefined is how JS spells "not given" (e.g. { ...defaults, causal: undefined }).
    if (value === undefined) continue;
    switch (key) {
      case 'batch': given.batch = value; break;
      case 'heads': given.heads = value; break;
      case 'seqLen': given.seqLen = value; break;
      case 'headDim': given.headDim = value; break;
      case 'kvHeads': given.kvHeads = value; break;
      case 'kvSeqLen': given.kvSeqLen = value; break;
      case 'layout': given.layout = value; break;
      case 'scale': given.scale = value; break;
      case 'causal': given.causal = value; break;
      case 'kvLengths': given.kvLengths = value; break;
      case 'out': given.out = value; break;
      case 'lse': given.lse = value; break;
      case 'backend': given.backend = value; break;
      case 'threads': given.threads = value; break;
      case 'dtype': given.dtype = value; break;
      case 'outDtype': given.outDtype = value; break;
      case 'precision': given.precision = value; break;
      case 'qLengths': given.qLengths = value; break;
      case 'blockTable': given.blockTable = value; break;
      case 'pageSize': given.pageSize = value; break;
      case 'cuSeqlensQ': given.cuSeqlensQ = value; break;
      case 'cuSeqlensK': given.cuSeqlensK = value; break;
      case 'softcap': given.softcap = value; break;
      case 'alibiSlopes': given.alibiSlopes = value; break;
      case 'sinkLogits': given.sinkLogits = value; break;
      case 'window': if (local) { given.window = value; break; } throw unknownKey(kind, key);
      case 'globalTokens': if (local) { given.globalTokens = value; break; } throw unknownKey(kind, key);
      default: throw unknownKey(kind, key);
    }
  }
  return given;
}

function unknownKey(kind: AttentionKind, key: string): RangeError {
  const valid = [...(kind === 'localGlobalAttention' ? LOCAL_GLOBAL_KEY_SET : FULL_KEY_SET)];
  if (kind === 'fullAttention' && (LOCAL_GLOBAL_KEYS as readonly string[]).includes(key)) {
    return argumentError(
      RangeError, `options.${key}`, 'is not an option of fullAttention',
      'localGlobalAttention(q, k, v, options) for windows and global tokens',
    );
  }
  const hint = closestKey(key, valid);
  return argumentError(
    RangeError, 'options', `has an unknown key ${JSON.stringify(key)}${hint ? ` (did you mean ${JSON.stringify(hint)}?)` : ''}`,
    `only these keys: ${valid.join(', ')}`,
  );
}

/** The valid key within edit distance 2 of a typo, if there is exactly one best. */
function closestKey(key: string, valid: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = 3;
  for (const candidate of valid) {
    const d = editDistance(key.toLowerCase(), candidate.toLowerCase());
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  return best;
}

/** Optimal-string-alignment distance: a swap of two neighbours ("casual" for "causal") is one edit. */
function editDistance(a: string, b: string): number {
  const rows: number[][] = [Array.from({ length: b.length + 1 }, (_, j) => j)];
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      const up = rows[i - 1];
      let d = Math.min(up[j] + 1, row[j - 1] + 1, up[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d = Math.min(d, rows[i - 2][j - 2] + 1);
      row.push(d);
    }
    rows.push(row);
  }
  return rows[a.length][b.length];
}

export function positiveInteger(name: string, value: unknown, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number') throw typeError(name, value, 'a positive integer');
  if (!Number.isSafeInteger(value) || value < 1 || value > max) {
    throw rangeError(name, value, max === Number.MAX_SAFE_INTEGER ? 'a positive safe integer' : `a positive integer ≤ ${max}`);
  }
  return value;
}

const Q_NAMES = ['batch', 'heads', 'seqLen', 'headDim'];
const KV_NAMES = ['batch', 'kvHeads', 'kvSeqLen', 'headDim'];
const LSE_NAMES = ['batch', 'heads', 'seqLen'];

/** Past MAX_ELEMENTS the float product may be inexact, but it is still past MAX_ELEMENTS. */
function tooManyElements(what: string, names: string[], sizes: number[]): RangeError {
  const count = sizes.reduce((a, b) => a * b, 1);
  return argumentError(
    RangeError, names.join('·'), `is ${sizes.join('·')} = ${count} elements for ${what}`,
    `at most ${MAX_ELEMENTS}, the most a Float32Array can hold`,
  );
}

/** e.g. "k has length 1000, expected batch·kvHeads·kvSeqLen·headDim = 2·4·32·4 = 1024". */
function lengthError(name: string, array: { length: number }, names: string[], sizes: number[]): RangeError {
  const length = sizes.reduce((a, b) => a * b, 1);
  return argumentError(RangeError, name, `has length ${array.length}`, `${names.join('·')} = ${sizes.join('·')} = ${length}`);
}

export function checkLayout(value: unknown): Layout {
  if (value === undefined) return 'bhsd';
  if (typeof value !== 'string') throw typeError('options.layout', value, "'bhsd' or 'bshd'");
  if (value !== 'bhsd' && value !== 'bshd') throw rangeError('options.layout', value, "'bhsd' or 'bshd'");
  return value;
}

/** Element strides of a [batch, heads, seq, dim] tensor stored in the given layout. */
function layoutStrides(layout: Layout, heads: number, seqLen: number, headDim: number): Strides {
  return layout === 'bhsd'
    ? { batch: heads * seqLen * headDim, head: seqLen * headDim, seq: headDim }
    : { batch: seqLen * heads * headDim, head: headDim, seq: heads * headDim };
}

const DTYPES = "'float32', 'float16' or 'bfloat16'";

/** A comparison, not DTYPE_CODES[dtype]: a keyed load with a variable key is the slow kind in V8. */
function dtypeCode(dtype: DType): DTypeCode {
  return dtype === 'float32' ? DTYPE_CODES.float32 : dtype === 'float16' ? DTYPE_CODES.float16 : DTYPE_CODES.bfloat16;
}

export function dtypeName(name: string, value: unknown): DType {
  if (typeof value !== 'string') throw typeError(name, value, DTYPES);
  if (value !== 'float32' && value !== 'float16' && value !== 'bfloat16') throw rangeError(name, value, DTYPES);
  return value;
}

/** The element type of q, k and v: options.dtype, or what q's array says. */
function inputDtype(q: unknown, given: unknown): DType {
  if (given !== undefined) return dtypeName('options.dtype', given);
  if (isFloat32Array(q)) return 'float32';
  if (isFloat16Array(q)) return 'float16';
  if (isUint16Array(q)) {
    throw argumentError(
      TypeError, 'options.dtype', 'is missing, and q is a Uint16Array (raw 16-bit patterns of an unknown type)',
      "'float16' or 'bfloat16' to say what the bits are",
    );
  }
  throw arrayTypeError('q', q, arrayKinds('float32'));
}

function precisionName(value: unknown, dtype: DType): Precision {
  const expected = "'float32' or 'bfloat16'";
  if (value === undefined) return dtype === 'bfloat16' ? 'bfloat16' : 'float32';
  if (typeof value !== 'string') throw typeError('options.precision', value, expected);
  if (value !== 'float32' && value !== 'bfloat16') throw rangeError('options.precision', value, expected);
  return value;
}

/** What arrays hold a dtype, as a message says it. */
export function arrayKinds(dtype: DType): string {
  if (dtype === 'float32') return "a Float32Array (or a Float16Array / a Uint16Array with options.dtype 'float16' or 'bfloat16')";
  if (dtype === 'bfloat16') return 'a Uint16Array of bfloat16 bits (dtype is bfloat16)';
  return float16ArrayConstructor() !== undefined
    ? 'a Float16Array or a Uint16Array of float16 bits (dtype is float16)'
    : 'a Uint16Array of float16 bits (dtype is float16)';
}

/**
 * A usable array of `dtype`, as the backends take it: a Float32Array, or a Uint16Array of bits (a
 * Float16Array becomes a Uint16Array view of the same memory: no copy). Its length is the caller's
 * to check.
 */
export function tensorArray(name: string, value: unknown, dtype: DType, out = false): TensorArray {
  if (dtype === 'float32') {
    if (!isFloat32Array(value)) throw arrayTypeError(name, value, out ? 'a Float32Array' : arrayKinds(dtype));
    return float32Array(name, value);
  }
  let array: Uint16Array;
  if (isUint16Array(value)) {
    array = value;
  } else if (dtype === 'float16' && isFloat16Array(value)) {
    const f16 = value as ArrayBufferView & { length: number };
    if (isDetached(f16)) throw detachedError(name);
    array = new Uint16Array(f16.buffer, f16.byteOffset, f16.length);
  } else {
    throw arrayTypeError(name, value, out ? arrayKinds(dtype).replace('dtype is', 'outDtype is') : arrayKinds(dtype));
  }
  if (isDetached(array)) throw detachedError(name);
  return array;
}

/** The TypeError for a value that is not the array wanted; a Tensor object is told to pass its .data. */
function arrayTypeError(name: string, value: unknown, expected: string): TypeError {
  // An onnxruntime-node or transformers.js Tensor holds its typed array in .data, and after a
  // projection its dims are [batch, seq, heads·headDim]: layout 'bshd'.
  if (isTensorObject(value)) {
    return typeError(name, value, `${expected}; for a Tensor pass its .data (${name}.data) with layout 'bshd' for [batch, seq, heads·headDim] dims`);
  }
  return typeError(name, value, expected);
}

/** An object that holds a typed array in .data beside its dims: a Tensor of onnxruntime or transformers.js. */
function isTensorObject(value: unknown): boolean {
  if (typeof value !== 'object' || value === null || ArrayBuffer.isView(value)) return false;
  const { data, dims } = value as { data?: unknown; dims?: unknown };
  return ArrayBuffer.isView(data) && Array.isArray(dims);
}

function detachedError(name: string): TypeError {
  return argumentError(TypeError, name, 'is a typed array whose buffer is detached (transferred or freed)', 'a usable typed array');
}

function outArray(value: unknown, outDtype: DType): TensorArray {
  return tensorArray('options.out', value, outDtype, true);
}

/** A usable Float32Array; its length is the caller's to check. */
function float32Array(name: string, value: unknown): Float32Array {
  if (!isFloat32Array(value)) throw typeError(name, value, 'a Float32Array');
  if (isDetached(value)) {
    throw argumentError(TypeError, name, 'is a Float32Array whose buffer is detached (transferred or freed)', 'a usable Float32Array');
  }
  return value;
}

function checkNoOverlap(name: string, target: ArrayBufferView, otherName: string, other: ArrayBufferView): void {
  if (other.buffer !== target.buffer) return;
  const overlaps =
    target.byteOffset < other.byteOffset + other.byteLength && other.byteOffset < target.byteOffset + target.byteLength;
  if (overlaps) {
    throw argumentError(RangeError, name, `overlaps the memory of ${otherName}`, 'an array that shares no memory with q, k, v or lse');
  }
}

function finiteNumber(name: string, value: unknown): number {
  if (typeof value !== 'number') throw typeError(name, value, 'a finite number');
  if (!Number.isFinite(value)) throw rangeError(name, value, 'a finite number');
  return value;
}

// Every backend computes in float32, where a larger scale is Infinity.
const FLOAT32_MAX = 3.4028234663852886e38;

function float32Scale(value: unknown): number {
  const scale = finiteNumber('options.scale', value);
  if (Math.abs(scale) > FLOAT32_MAX) throw rangeError('options.scale', value, `a finite float32, |scale| ≤ ${FLOAT32_MAX}`);
  return scale;
}

function boolean(name: string, value: unknown): boolean {
  if (typeof value !== 'boolean') throw typeError(name, value, 'true or false');
  return value;
}

const EXPECTED_BACKEND = `'auto' or one of ${BACKEND_NAMES.map((n) => `'${n}'`).join(', ')}`;

/** options.backend, else GLOBAL_LOCAL_ATTENTION_BACKEND, else 'auto'; validated. */
export function backendChoice(value: unknown): BackendChoice {
  if (value === undefined) {
    // Read on every call that names no backend, so that a change to the variable takes effect at
    // once (~0.5 µs: process.env is a getenv() behind an interceptor). Naming the backend skips it.
    const fromEnv = process.env[BACKEND_ENV];
    if (fromEnv === undefined || fromEnv === '') return 'auto';
    if (!isBackendChoice(fromEnv)) {
      throw argumentError(RangeError, `the environment variable ${BACKEND_ENV}`, `is ${describeValue(fromEnv)}`, EXPECTED_BACKEND);
    }
    return fromEnv;
  }
  if (typeof value !== 'string') throw typeError('options.backend', value, EXPECTED_BACKEND);
  if (!isBackendChoice(value)) throw rangeError('options.backend', value, EXPECTED_BACKEND);
  return value;
}

const BACKEND_CHOICES: ReadonlySet<string> = new Set(['auto', ...BACKEND_NAMES]);

function isBackendChoice(value: string): value is BackendChoice {
  return BACKEND_CHOICES.has(value);
}
