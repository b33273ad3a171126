// The only validator: a caller's (q, k, v, options) become one normalised AttentionProblem, the
// buffers to write, and the backend to run on. Nothing downstream re-checks what is checked here,
// so every rule of the public contract lives in this file (the mask options in mask-options.ts).
import { availableParallelism } from 'node:os';
import { constants as bufferConstants } from 'node:buffer';
import { isFloat32Array } from 'node:util/types';
import type { AttentionBuffers, BackendImpl } from './backends/backend';
import { BACKEND_NAMES, resolveBackend } from './backends/registry';
import { argumentError, describeValue, rangeError, typeError } from './errors';
import { normaliseGlobalTokens, normaliseKvLengths, normaliseWindow } from './mask-options';
import type { AttentionProblem, Backend, Strides } from './problem';
import type { BackendChoice, Layout } from './types';

export type AttentionKind = 'fullAttention' | 'localGlobalAttention';

export interface ValidatedCall {
  problem: AttentionProblem;
  buffers: AttentionBuffers;
  backend: BackendImpl;
}

export const BACKEND_ENV = 'GLOBAL_LOCAL_ATTENTION_BACKEND';

const COMMON_KEYS = [
  'batch', 'heads', 'seqLen', 'headDim', 'kvHeads', 'kvSeqLen', 'layout', 'scale', 'causal',
  'kvLengths', 'out', 'lse', 'backend', 'threads',
] as const;
const LOCAL_GLOBAL_KEYS = ['window', 'globalTokens'] as const;

/** Positions are Int32 in the native params and the CSR lists. */
const MAX_SEQ_LEN = 2 ** 31 - 1;
/** The most elements one Float32Array can hold in this Node (2³² in Node 20, larger later). */
const MAX_ELEMENTS = Math.min(bufferConstants.MAX_LENGTH, Math.floor(Number.MAX_SAFE_INTEGER / 4));

export function validateCall(
  kind: AttentionKind,
  q: unknown,
  k: unknown,
  v: unknown,
  options: unknown,
): ValidatedCall {
  const o = checkOptionsObject(kind, options);

  const batch = positiveInteger('options.batch', o.batch);
  const heads = positiveInteger('options.heads', o.heads);
  const seqLen = positiveInteger('options.seqLen', o.seqLen, MAX_SEQ_LEN);
  const headDim = positiveInteger('options.headDim', o.headDim);
  const kvHeads = o.kvHeads === undefined ? heads : positiveInteger('options.kvHeads', o.kvHeads);
  if (heads % kvHeads !== 0) {
    throw rangeError('options.kvHeads', kvHeads, `a divisor of heads = ${heads}`);
  }
  const kvSeqLen = o.kvSeqLen === undefined ? seqLen : positiveInteger('options.kvSeqLen', o.kvSeqLen, MAX_SEQ_LEN);

  const qLength = elementCount('q and out', ['batch', 'heads', 'seqLen', 'headDim'], [batch, heads, seqLen, headDim]);
  const kvLength = elementCount('k and v', ['batch', 'kvHeads', 'kvSeqLen', 'headDim'], [batch, kvHeads, kvSeqLen, headDim]);
  const lseLength = elementCount('lse', ['batch', 'heads', 'seqLen'], [batch, heads, seqLen]);

  const layout = checkLayout(o.layout);
  const qArray = float32Array('q', q, qLength, `batch·heads·seqLen·headDim = ${batch}·${heads}·${seqLen}·${headDim}`);
  const kvFormula = `batch·kvHeads·kvSeqLen·headDim = ${batch}·${kvHeads}·${kvSeqLen}·${headDim}`;
  const kArray = float32Array('k', k, kvLength, kvFormula);
  const vArray = float32Array('v', v, kvLength, kvFormula);

  const scale = o.scale === undefined ? 1 / Math.sqrt(headDim) : finiteNumber('options.scale', o.scale);
  const causal = o.causal === undefined ? false : boolean('options.causal', o.causal);
  const kvLengths = o.kvLengths === undefined ? null : normaliseKvLengths(o.kvLengths, batch, kvSeqLen);

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

  const outFormula = `batch·heads·seqLen·headDim = ${batch}·${heads}·${seqLen}·${headDim}`;
  const givenOut = o.out === undefined ? null : float32Array('options.out', o.out, qLength, outFormula);
  const lse = o.lse === undefined
    ? null
    : float32Array('options.lse', o.lse, lseLength, `batch·heads·seqLen = ${batch}·${heads}·${seqLen}`);
  if (givenOut !== null) checkNoOverlap('options.out', givenOut, { q: qArray, k: kArray, v: vArray, 'options.lse': lse });
  if (lse !== null) checkNoOverlap('options.lse', lse, { q: qArray, k: kArray, v: vArray });

  const threads = o.threads === undefined ? availableParallelism() : positiveInteger('options.threads', o.threads);
  // Resolved last: an invalid call is a TypeError/RangeError whichever backends this machine has.
  const backend = resolveBackend(backendChoice(o.backend));

  const qStrides = layoutStrides(layout, heads, seqLen, headDim);
  const kvStrides = layoutStrides(layout, kvHeads, kvSeqLen, headDim);
  const problem: AttentionProblem = {
    batch, heads, kvHeads, seqLen, kvSeqLen, headDim,
    qStrides, kStrides: kvStrides, vStrides: { ...kvStrides }, outStrides: { ...qStrides },
    scale, causal, windowLeft, windowRight, kvLengths, globalOffsets, globalIndices,
    // An upper bound, so asking for more than this machine has means all it has.
    threads: Math.min(threads, availableParallelism()),
  };
  // Allocated only once the call is known to be valid.
  const out = givenOut ?? new Float32Array(qLength);
  return { problem, buffers: { q: qArray, k: kArray, v: vArray, out, lse }, backend };
}

function checkOptionsObject(kind: AttentionKind, options: unknown): Record<string, unknown> {
  if (typeof options !== 'object' || options === null || Array.isArray(options) || ArrayBuffer.isView(options)) {
    throw typeError('options', options, 'an object such as { batch, heads, seqLen, headDim }');
  }
  const o = options as Record<string, unknown>;
  const valid: readonly string[] = kind === 'localGlobalAttention' ? [...COMMON_KEYS, ...LOCAL_GLOBAL_KEYS] : COMMON_KEYS;
  for (const key of Object.keys(o)) {
    // An explicit undefined is how JS spells "not given" (e.g. { ...defaults, causal: undefined }).
    if (valid.includes(key) || o[key] === undefined) continue;
    if (kind === 'fullAttention' && (LOCAL_GLOBAL_KEYS as readonly string[]).includes(key)) {
      throw argumentError(
        RangeError, `options.${key}`, 'is not an option of fullAttention',
        'localGlobalAttention(q, k, v, options) for windows and global tokens',
      );
    }
    const hint = closestKey(key, valid);
    throw argumentError(
      RangeError, 'options', `has an unknown key ${JSON.stringify(key)}${hint ? ` (did you mean ${JSON.stringify(hint)}?)` : ''}`,
      `only these keys: ${valid.join(', ')}`,
    );
  }
  return o;
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

function elementCount(what: string, names: string[], sizes: number[]): number {
  // Past MAX_ELEMENTS the float product may be inexact, but it is still past MAX_ELEMENTS.
  const count = sizes.reduce((a, b) => a * b, 1);
  if (count > MAX_ELEMENTS) {
    throw argumentError(
      RangeError, names.join('·'), `is ${sizes.join('·')} = ${count} elements for ${what}`,
      `at most ${MAX_ELEMENTS}, the most a Float32Array can hold`,
    );
  }
  return count;
}

function checkLayout(value: unknown): Layout {
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

function float32Array(name: string, value: unknown, length: number, formula: string): Float32Array {
  if (!isFloat32Array(value)) throw typeError(name, value, 'a Float32Array');
  if (isDetached(value)) {
    throw argumentError(TypeError, name, 'is a Float32Array whose buffer is detached (transferred or freed)', 'a usable Float32Array');
  }
  if (value.length !== length) {
    throw argumentError(RangeError, name, `has length ${value.length}`, `${formula} = ${length}`);
  }
  return value;
}

function isDetached(array: Float32Array): boolean {
  const buffer = array.buffer as ArrayBuffer & { detached?: boolean };
  if (typeof buffer.detached === 'boolean') return buffer.detached;
  // Node 20 has no ArrayBuffer.prototype.detached; a detached buffer reads as empty and refuses views.
  if (buffer.byteLength !== 0) return false;
  try {
    new Uint8Array(buffer, 0, 0);
    return false;
  } catch {
    return true;
  }
}

function checkNoOverlap(name: string, target: Float32Array, others: Record<string, Float32Array | null>): void {
  for (const [otherName, other] of Object.entries(others)) {
    if (other === null || other.buffer !== target.buffer) continue;
    const overlaps =
      target.byteOffset < other.byteOffset + other.byteLength && other.byteOffset < target.byteOffset + target.byteLength;
    if (overlaps) {
      throw argumentError(RangeError, name, `overlaps the memory of ${otherName}`, 'a Float32Array that shares no memory with q, k, v or lse');
    }
  }
}

function finiteNumber(name: string, value: unknown): number {
  if (typeof value !== 'number') throw typeError(name, value, 'a finite number');
  if (!Number.isFinite(value)) throw rangeError(name, value, 'a finite number');
  return value;
}

function boolean(name: string, value: unknown): boolean {
  if (typeof value !== 'boolean') throw typeError(name, value, 'true or false');
  return value;
}

function backendChoice(value: unknown): BackendChoice {
  const expected = `'auto' or one of ${BACKEND_NAMES.map((n) => `'${n}'`).join(', ')}`;
  if (value === undefined) {
    const fromEnv = process.env[BACKEND_ENV];
    if (fromEnv === undefined || fromEnv === '') return 'auto';
    if (!isBackendChoice(fromEnv)) {
      throw argumentError(RangeError, `the environment variable ${BACKEND_ENV}`, `is ${describeValue(fromEnv)}`, expected);
    }
    return fromEnv;
  }
  if (typeof value !== 'string') throw typeError('options.backend', value, expected);
  if (!isBackendChoice(value)) throw rangeError('options.backend', value, expected);
  return value;
}

function isBackendChoice(value: string): value is BackendChoice {
  return value === 'auto' || (BACKEND_NAMES as readonly string[]).includes(value as Backend);
}
