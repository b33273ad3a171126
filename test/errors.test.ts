// One test per validation rule: the sync function throws, the async one rejects (never throws) with
// an error of the same class and the same message, naming the argument, the value and what is expected.
import { describe, expect, it } from 'vitest';
import { MODES, attention } from './helpers/call';
import type { Kind } from './helpers/cases';
import { gla } from './helpers/package';

type ErrorClass = typeof TypeError | typeof RangeError | typeof Error;

interface Rule {
  rule: string;
  kind: Kind;
  /** Receives valid arguments; returns the invalid call. */
  args: (valid: Args) => Args;
  error: ErrorClass;
  message: RegExp;
  env?: Record<string, string>;
}

interface Args {
  q: unknown;
  k: unknown;
  v: unknown;
  options: Record<string, unknown>;
}

// batch 1, heads 2, kvHeads 1, seqLen 4, kvSeqLen 5, headDim 3.
const SHAPE = { batch: 1, heads: 2, kvHeads: 1, seqLen: 4, kvSeqLen: 5, headDim: 3 };
const Q_LENGTH = 24;
const KV_LENGTH = 15;
const LSE_LENGTH = 8;

function valid(kind: Kind): Args {
  const options: Record<string, unknown> = { ...SHAPE };
  if (kind === 'localGlobal') options.window = [1, 1];
  return {
    q: new Float32Array(Q_LENGTH).fill(0.5),
    k: new Float32Array(KV_LENGTH).fill(0.25),
    v: new Float32Array(KV_LENGTH).fill(1),
    options,
  };
}

const withOptions = (extra: Record<string, unknown>) => (a: Args): Args => ({ ...a, options: { ...a.options, ...extra } });
const without = (key: string) => (a: Args): Args => {
  const options = { ...a.options };
  delete options[key];
  return { ...a, options };
};

/** The shape of onnxruntime-node's and transformers.js's Tensor: a typed array in .data beside its dims. */
class Tensor {
  constructor(readonly data: Float32Array, readonly dims: number[]) {}
}

function detachedFloat32Array(length: number): Float32Array {
  const array = new Float32Array(length);
  structuredClone(array.buffer, { transfer: [array.buffer] });
  return array;
}

const unavailable = gla.backendReport().find((s) => !s.available);

const RULES: Rule[] = [
  // options itself
  { rule: 'options must be an object (null)', kind: 'full', args: (a) => ({ ...a, options: null as never }), error: TypeError, message: /^options is null, expected an object/ },
  { rule: 'options must be an object (number)', kind: 'full', args: (a) => ({ ...a, options: 5 as never }), error: TypeError, message: /^options is 5, expected an object/ },
  { rule: 'options must be an object (array)', kind: 'localGlobal', args: (a) => ({ ...a, options: [] as never }), error: TypeError, message: /^options is \[\], expected an object/ },
  {
    rule: 'unknown keys are rejected, with the closest valid key', kind: 'full', args: withOptions({ casual: true }), error: RangeError,
    message: /^options has an unknown key "casual" \(did you mean "causal"\?\), expected only these keys: batch, heads, .*threads, dtype, outDtype, precision, qLengths, softcap, alibiSlopes, sinkLogits(, [a-zA-Z, ]+)?$/,
  },
  { rule: 'fullAttention rejects window', kind: 'full', args: withOptions({ window: [1, 1] }), error: RangeError, message: /^options\.window is not an option of fullAttention, expected localGlobalAttention/ },
  { rule: 'fullAttention rejects globalTokens', kind: 'full', args: withOptions({ globalTokens: [0] }), error: RangeError, message: /^options\.globalTokens is not an option of fullAttention/ },

  // shape
  { rule: 'batch is required', kind: 'full', args: without('batch'), error: TypeError, message: /^options\.batch is undefined, expected a positive integer$/ },
  { rule: 'batch must be a number', kind: 'full', args: withOptions({ batch: '1' }), error: TypeError, message: /^options\.batch is "1", expected a positive integer$/ },
  { rule: 'batch must be positive', kind: 'full', args: withOptions({ batch: 0 }), error: RangeError, message: /^options\.batch is 0, expected a positive safe integer$/ },
  { rule: 'heads must be an integer', kind: 'full', args: withOptions({ heads: 2.5 }), error: RangeError, message: /^options\.heads is 2\.5, expected a positive safe integer$/ },
  { rule: 'headDim must be finite', kind: 'full', args: withOptions({ headDim: Infinity }), error: RangeError, message: /^options\.headDim is Infinity, expected/ },
  { rule: 'headDim must not be NaN', kind: 'full', args: withOptions({ headDim: NaN }), error: RangeError, message: /^options\.headDim is NaN, expected/ },
  { rule: 'batch must be a safe integer', kind: 'full', args: withOptions({ batch: 2 ** 53 }), error: RangeError, message: /^options\.batch is 9007199254740992, expected a positive safe integer$/ },
  { rule: 'kvHeads must divide heads', kind: 'full', args: withOptions({ heads: 3, kvHeads: 2 }), error: RangeError, message: /^options\.kvHeads is 2, expected a divisor of heads = 3$/ },
  { rule: 'kvHeads must be positive', kind: 'full', args: withOptions({ kvHeads: -1 }), error: RangeError, message: /^options\.kvHeads is -1, expected a positive safe integer$/ },
  { rule: 'seqLen fits in an Int32', kind: 'full', args: withOptions({ seqLen: 2 ** 31 }), error: RangeError, message: /^options\.seqLen is 2147483648, expected a positive integer ≤ 2147483647$/ },
  { rule: 'kvSeqLen fits in an Int32', kind: 'localGlobal', args: withOptions({ kvSeqLen: 2 ** 31 }), error: RangeError, message: /^options\.kvSeqLen is 2147483648, expected a positive integer ≤ 2147483647$/ },
  {
    rule: 'element counts that overflow a Float32Array are rejected', kind: 'full', args: withOptions({ batch: 2 ** 20, heads: 2 ** 20, kvHeads: 1 }), error: RangeError,
    message: /^batch·heads·seqLen·headDim is 1048576·1048576·4·3 = \d+ elements for q and out, expected at most \d+, the most a Float32Array can hold$/,
  },
  { rule: 'layout must be bhsd or bshd', kind: 'full', args: withOptions({ layout: 'bsdh' }), error: RangeError, message: /^options\.layout is "bsdh", expected 'bhsd' or 'bshd'$/ },
  { rule: 'layout must be a string', kind: 'full', args: withOptions({ layout: 1 }), error: TypeError, message: /^options\.layout is 1, expected 'bhsd' or 'bshd'$/ },

  // q, k, v
  { rule: 'q must be a Float32Array', kind: 'full', args: (a) => ({ ...a, q: new Float64Array(Q_LENGTH) }), error: TypeError, message: /^q is a Float64Array of length 24, expected a Float32Array \(or a Float16Array \/ a Uint16Array with options\.dtype 'float16' or 'bfloat16'\)$/ },
  { rule: 'v must not be a plain array', kind: 'localGlobal', args: (a) => ({ ...a, v: Array(KV_LENGTH).fill(0) }), error: TypeError, message: /^v is an array of length 15, expected a Float32Array \(or a Float16Array/ },
  { rule: 'k must have the right length', kind: 'full', args: (a) => ({ ...a, k: new Float32Array(14) }), error: RangeError, message: /^k has length 14, expected batch·kvHeads·kvSeqLen·headDim = 1·1·5·3 = 15$/ },
  // An onnxruntime-node / transformers.js Tensor (data + dims; its class is called Tensor) is told to pass .data.
  { rule: 'q must not be a Tensor object', kind: 'full', args: (a) => ({ ...a, q: new Tensor(a.q as Float32Array, [1, 4, 6]) }), error: TypeError, message: /^q is a Tensor, expected a Float32Array .*; for a Tensor pass its \.data \(q\.data\) with layout 'bshd' for \[batch, seq, heads·headDim\] dims$/ },
  { rule: 'v must not be a Tensor object', kind: 'localGlobal', args: (a) => ({ ...a, v: new Tensor(a.v as Float32Array, [1, 5, 3]) }), error: TypeError, message: /^v is a Tensor, expected a Float32Array .*pass its \.data \(v\.data\)/ },
  { rule: 'out must not be a Tensor object', kind: 'full', args: withOptions({ out: { data: new Float32Array(Q_LENGTH), dims: [1, 4, 6] } }), error: TypeError, message: /^options\.out is an object, expected a Float32Array; for a Tensor pass its \.data \(options\.out\.data\)/ },
  { rule: 'q must have the right length', kind: 'localGlobal', args: (a) => ({ ...a, q: new Float32Array(0) }), error: RangeError, message: /^q has length 0, expected batch·heads·seqLen·headDim = 1·2·4·3 = 24$/ },
  { rule: 'q must not be detached', kind: 'full', args: (a) => ({ ...a, q: detachedFloat32Array(Q_LENGTH) }), error: TypeError, message: /^q is a Float32Array whose buffer is detached/ },
  { rule: 'k must not be detached', kind: 'localGlobal', args: (a) => ({ ...a, k: detachedFloat32Array(KV_LENGTH) }), error: TypeError, message: /^k is a Float32Array whose buffer is detached/ },

  // scale, causal
  { rule: 'scale must be finite', kind: 'full', args: withOptions({ scale: NaN }), error: RangeError, message: /^options\.scale is NaN, expected a finite number$/ },
  { rule: 'scale must be a number', kind: 'full', args: withOptions({ scale: '0.5' }), error: TypeError, message: /^options\.scale is "0\.5", expected a finite number$/ },
  { rule: 'causal must be a boolean', kind: 'full', args: withOptions({ causal: 1 }), error: TypeError, message: /^options\.causal is 1, expected true or false$/ },

  // kvLengths
  { rule: 'kvLengths must be a list', kind: 'full', args: withOptions({ kvLengths: 5 }), error: TypeError, message: /^options\.kvLengths is 5, expected an array or typed array of batch = 1 integers$/ },
  { rule: 'kvLengths needs one entry per batch item', kind: 'full', args: withOptions({ kvLengths: [5, 5] }), error: RangeError, message: /^options\.kvLengths has length 2, expected batch = 1$/ },
  { rule: 'kvLengths must be ≤ kvSeqLen', kind: 'localGlobal', args: withOptions({ kvLengths: [6] }), error: RangeError, message: /^options\.kvLengths\[0\] is 6, expected an integer in \[0, kvSeqLen\] = \[0, 5\]$/ },
  { rule: 'kvLengths must be ≥ 0', kind: 'full', args: withOptions({ kvLengths: new Int32Array([-1]) }), error: RangeError, message: /^options\.kvLengths\[0\] is -1, expected an integer in \[0, kvSeqLen\]/ },
  { rule: 'kvLengths must be integers', kind: 'full', args: withOptions({ kvLengths: [1.5] }), error: RangeError, message: /^options\.kvLengths\[0\] is 1\.5, expected an integer/ },
  { rule: 'kvLengths entries must be numbers', kind: 'full', args: withOptions({ kvLengths: ['1'] }), error: TypeError, message: /^options\.kvLengths\[0\] is "1", expected an integer/ },

  // qLengths (the same grammar as kvLengths, bounded by seqLen)
  { rule: 'qLengths must be a list', kind: 'full', args: withOptions({ qLengths: 4 }), error: TypeError, message: /^options\.qLengths is 4, expected an array or typed array of batch = 1 integers$/ },
  { rule: 'qLengths must not be a string', kind: 'localGlobal', args: withOptions({ qLengths: '4' }), error: TypeError, message: /^options\.qLengths is "4", expected an array or typed array of batch = 1 integers$/ },
  { rule: 'qLengths needs one entry per batch item', kind: 'full', args: withOptions({ qLengths: [4, 4] }), error: RangeError, message: /^options\.qLengths has length 2, expected batch = 1$/ },
  { rule: 'qLengths must not be empty', kind: 'localGlobal', args: withOptions({ qLengths: new Int32Array(0) }), error: RangeError, message: /^options\.qLengths has length 0, expected batch = 1$/ },
  { rule: 'qLengths must be ≤ seqLen', kind: 'full', args: withOptions({ qLengths: [5] }), error: RangeError, message: /^options\.qLengths\[0\] is 5, expected an integer in \[0, seqLen\] = \[0, 4\]$/ },
  { rule: 'qLengths must be ≥ 0', kind: 'localGlobal', args: withOptions({ qLengths: new Int32Array([-1]) }), error: RangeError, message: /^options\.qLengths\[0\] is -1, expected an integer in \[0, seqLen\] = \[0, 4\]$/ },
  { rule: 'qLengths must be integers', kind: 'full', args: withOptions({ qLengths: [2.5] }), error: RangeError, message: /^options\.qLengths\[0\] is 2\.5, expected an integer in \[0, seqLen\]/ },
  { rule: 'qLengths must not be NaN', kind: 'full', args: withOptions({ qLengths: new Float64Array([NaN]) }), error: RangeError, message: /^options\.qLengths\[0\] is NaN, expected an integer in \[0, seqLen\]/ },
  { rule: 'qLengths entries must be numbers', kind: 'localGlobal', args: withOptions({ qLengths: [null] }), error: TypeError, message: /^options\.qLengths\[0\] is null, expected an integer in \[0, seqLen\]/ },
  {
    rule: 'qLengths names the bad entry (the second of two)', kind: 'full', args: (a) => ({
      q: new Float32Array(2 * Q_LENGTH), k: new Float32Array(2 * KV_LENGTH), v: new Float32Array(2 * KV_LENGTH),
      options: { ...a.options, batch: 2, qLengths: [4, 7] },
    }), error: RangeError, message: /^options\.qLengths\[1\] is 7, expected an integer in \[0, seqLen\] = \[0, 4\]$/,
  },
  {
    rule: 'qLengths is bounded by seqLen, not kvSeqLen', kind: 'localGlobal', args: withOptions({ qLengths: [5], kvLengths: [5] }), error: RangeError,
    message: /^options\.qLengths\[0\] is 5, expected an integer in \[0, seqLen\] = \[0, 4\]$/,
  },

  // softcap
  { rule: 'softcap must not be negative', kind: 'full', args: withOptions({ softcap: -1 }), error: RangeError, message: /^options\.softcap is -1, expected 0 \(off\) or a finite number > 0 \(at most 3\.4028234663852886e\+38\)$/ },
  { rule: 'softcap must not be NaN', kind: 'localGlobal', args: withOptions({ softcap: NaN }), error: RangeError, message: /^options\.softcap is NaN, expected 0 \(off\) or a finite number > 0/ },
  { rule: 'softcap must be finite', kind: 'full', args: withOptions({ softcap: Infinity }), error: RangeError, message: /^options\.softcap is Infinity, expected 0 \(off\) or a finite number > 0/ },
  { rule: 'softcap must be finite as a float32', kind: 'full', args: withOptions({ softcap: 1e39 }), error: RangeError, message: /^options\.softcap is 1e\+39, expected 0 \(off\) or a finite number > 0/ },
  { rule: 'softcap must be a number', kind: 'localGlobal', args: withOptions({ softcap: '30' }), error: TypeError, message: /^options\.softcap is "30", expected 0 \(off\) or a finite number > 0/ },
  { rule: 'softcap must not be null', kind: 'full', args: withOptions({ softcap: null }), error: TypeError, message: /^options\.softcap is null, expected 0 \(off\) or a finite number > 0/ },

  // alibiSlopes, sinkLogits: one finite number per query head (heads = 2 here)
  ...(['alibiSlopes', 'sinkLogits'] as const).flatMap((name): Rule[] => [
    { rule: `${name} must be a list`, kind: 'full', args: withOptions({ [name]: 0.5 }), error: TypeError, message: new RegExp(`^options\\.${name} is 0\\.5, expected an array or typed array of heads = 2 finite numbers$`) },
    { rule: `${name} must not be a string`, kind: 'localGlobal', args: withOptions({ [name]: '12' }), error: TypeError, message: new RegExp(`^options\\.${name} is "12", expected an array or typed array of heads = 2 finite numbers$`) },
    { rule: `${name} must not be an object`, kind: 'full', args: withOptions({ [name]: { 0: 1, 1: 1, length: 2 } }), error: TypeError, message: new RegExp(`^options\\.${name} is an object, expected an array or typed array of heads = 2`) },
    { rule: `${name} needs one entry per query head (not per kv head)`, kind: 'full', args: withOptions({ [name]: [0.5] }), error: RangeError, message: new RegExp(`^options\\.${name} has length 1, expected heads = 2$`) },
    { rule: `${name} must not be longer than heads`, kind: 'localGlobal', args: withOptions({ [name]: new Float32Array(3) }), error: RangeError, message: new RegExp(`^options\\.${name} has length 3, expected heads = 2$`) },
    { rule: `${name} entries must not be NaN`, kind: 'full', args: withOptions({ [name]: [0.5, NaN] }), error: RangeError, message: new RegExp(`^options\\.${name}\\[1\\] is NaN, expected a finite number, \\|x\\| ≤ 3\\.4028234663852886e\\+38$`) },
    { rule: `${name} entries must be finite`, kind: 'localGlobal', args: withOptions({ [name]: new Float64Array([-Infinity, 0]) }), error: RangeError, message: new RegExp(`^options\\.${name}\\[0\\] is -Infinity, expected a finite number`) },
    { rule: `${name} entries must be finite as float32`, kind: 'full', args: withOptions({ [name]: [1, -1e39] }), error: RangeError, message: new RegExp(`^options\\.${name}\\[1\\] is -1e\\+39, expected a finite number`) },
    { rule: `${name} entries must be numbers`, kind: 'full', args: withOptions({ [name]: [0.5, '1'] }), error: TypeError, message: new RegExp(`^options\\.${name}\\[1\\] is "1", expected a finite number`) },
    { rule: `${name} entries must not be bigints`, kind: 'localGlobal', args: withOptions({ [name]: [1n, 1] }), error: TypeError, message: new RegExp(`^options\\.${name}\\[0\\] is 1n, expected a finite number`) },
  ]),

  // window
  { rule: 'localGlobalAttention requires window', kind: 'localGlobal', args: without('window'), error: TypeError, message: /^options\.window is undefined, expected \[left, right\]/ },
  { rule: 'window sides must be ≥ -1', kind: 'localGlobal', args: withOptions({ window: [-2, 0] }), error: RangeError, message: /^options\.window\[0\] is -2, expected an integer ≥ -1 \(-1 = unbounded\)$/ },
  { rule: 'window sides must be integers', kind: 'localGlobal', args: withOptions({ window: [1, 0.5] }), error: RangeError, message: /^options\.window\[1\] is 0\.5, expected an integer ≥ -1/ },
  { rule: 'window sides must be numbers', kind: 'localGlobal', args: withOptions({ window: [1, null] }), error: TypeError, message: /^options\.window\[1\] is null, expected an integer ≥ -1/ },
  { rule: 'window must have two sides', kind: 'localGlobal', args: withOptions({ window: [1, 2, 3] }), error: RangeError, message: /^options\.window has length 3, expected \[left, right\]$/ },
  { rule: 'a window number must be a non-negative integer', kind: 'localGlobal', args: withOptions({ window: -1 }), error: RangeError, message: /^options\.window is -1, expected a non-negative integer W/ },
  { rule: 'a window number must be an integer', kind: 'localGlobal', args: withOptions({ window: 2.5 }), error: RangeError, message: /^options\.window is 2\.5, expected a non-negative integer W/ },
  { rule: 'window must be a number or a pair', kind: 'localGlobal', args: withOptions({ window: '3' }), error: TypeError, message: /^options\.window is "3", expected \[left, right\]/ },

  // globalTokens
  { rule: 'globalTokens must be a list', kind: 'localGlobal', args: withOptions({ globalTokens: 3 }), error: TypeError, message: /^options\.globalTokens is 3, expected a list of key positions/ },
  { rule: 'global tokens must be < kvSeqLen', kind: 'localGlobal', args: withOptions({ globalTokens: [0, 5] }), error: RangeError, message: /^options\.globalTokens\[1\] is 5, expected an integer key position in \[0, kvSeqLen\) = \[0, 5\)$/ },
  { rule: 'global tokens must be ≥ 0', kind: 'localGlobal', args: withOptions({ globalTokens: [-1] }), error: RangeError, message: /^options\.globalTokens\[0\] is -1, expected an integer key position/ },
  { rule: 'global tokens must be integers', kind: 'localGlobal', args: withOptions({ globalTokens: [0.5] }), error: RangeError, message: /^options\.globalTokens\[0\] is 0\.5, expected an integer/ },
  { rule: 'per-batch global lists must number batch', kind: 'localGlobal', args: withOptions({ globalTokens: [[0], [1]] }), error: RangeError, message: /^options\.globalTokens has 2 lists, expected one list per batch item, batch = 1$/ },
  { rule: 'per-batch global tokens are range-checked', kind: 'localGlobal', args: withOptions({ globalTokens: [[0, 9]] }), error: RangeError, message: /^options\.globalTokens\[0\]\[1\] is 9, expected an integer key position/ },
  { rule: 'a flat global list must not hold lists', kind: 'localGlobal', args: withOptions({ globalTokens: [0, [1]] }), error: TypeError, message: /^options\.globalTokens\[1\] is \[1\], expected an integer key position .*one flat list\)$/ },
  { rule: 'per-batch global lists must all be lists', kind: 'localGlobal', args: (a) => ({
      q: new Float32Array(2 * Q_LENGTH), k: new Float32Array(2 * KV_LENGTH), v: new Float32Array(2 * KV_LENGTH),
      options: { ...a.options, batch: 2, globalTokens: [[0], 1] },
    }), error: TypeError, message: /^options\.globalTokens\[1\] is 1, expected a list of key positions/ },

  // out, lse
  { rule: 'out must be a Float32Array', kind: 'full', args: withOptions({ out: new Float64Array(Q_LENGTH) }), error: TypeError, message: /^options\.out is a Float64Array of length 24, expected a Float32Array$/ },
  { rule: 'out must have the output length', kind: 'full', args: withOptions({ out: new Float32Array(25) }), error: RangeError, message: /^options\.out has length 25, expected batch·heads·seqLen·headDim = 1·2·4·3 = 24$/ },
  { rule: 'out must not be detached', kind: 'localGlobal', args: withOptions({ out: detachedFloat32Array(Q_LENGTH) }), error: TypeError, message: /^options\.out is a Float32Array whose buffer is detached/ },
  { rule: 'out must not be q', kind: 'full', args: (a) => withOptions({ out: a.q })(a), error: RangeError, message: /^options\.out overlaps the memory of q, expected an array that shares no memory with q, k, v or lse$/ },
  {
    rule: 'out must not partly overlap v', kind: 'localGlobal',
    args: (a) => {
      const shared = new Float32Array(Q_LENGTH + 10);
      return { ...a, v: shared.subarray(0, KV_LENGTH), options: { ...a.options, out: shared.subarray(10, 10 + Q_LENGTH) } };
    },
    error: RangeError, message: /^options\.out overlaps the memory of v,/,
  },
  {
    rule: 'out must not overlap lse', kind: 'full',
    args: (a) => {
      const shared = new Float32Array(Q_LENGTH + 4);
      return withOptions({ out: shared.subarray(0, Q_LENGTH), lse: shared.subarray(Q_LENGTH - 4) })(a);
    },
    error: RangeError, message: /^options\.out overlaps the memory of options\.lse,/,
  },
  { rule: 'lse must not overlap k', kind: 'full', args: (a) => withOptions({ lse: (a.k as Float32Array).subarray(0, LSE_LENGTH) })(a), error: RangeError, message: /^options\.lse overlaps the memory of k,/ },
  { rule: 'lse must be a Float32Array', kind: 'full', args: withOptions({ lse: [0] }), error: TypeError, message: /^options\.lse is \[0\], expected a Float32Array$/ },
  { rule: 'lse must have batch·heads·seqLen elements', kind: 'localGlobal', args: withOptions({ lse: new Float32Array(24) }), error: RangeError, message: /^options\.lse has length 24, expected batch·heads·seqLen = 1·2·4 = 8$/ },

  // backend, threads
  { rule: 'backend names are checked', kind: 'full', args: withOptions({ backend: 'gpu' }), error: RangeError, message: /^options\.backend is "gpu", expected 'auto' or one of 'cuda', 'avx512', 'avx2', 'neon', 'scalar', 'js'$/ },
  { rule: 'backend must be a string', kind: 'full', args: withOptions({ backend: 1 }), error: TypeError, message: /^options\.backend is 1, expected 'auto' or one of/ },
  {
    rule: 'GLOBAL_LOCAL_ATTENTION_BACKEND is checked like options.backend', kind: 'localGlobal', args: (a) => a, env: { GLOBAL_LOCAL_ATTENTION_BACKEND: 'fast' },
    error: RangeError, message: /^the environment variable GLOBAL_LOCAL_ATTENTION_BACKEND is "fast", expected 'auto' or one of/,
  },
  { rule: 'threads must be positive', kind: 'full', args: withOptions({ threads: 0 }), error: RangeError, message: /^options\.threads is 0, expected a positive safe integer$/ },
  { rule: 'threads must be an integer', kind: 'localGlobal', args: withOptions({ threads: 1.5 }), error: RangeError, message: /^options\.threads is 1\.5, expected a positive safe integer$/ },
  { rule: 'threads must be a number', kind: 'full', args: withOptions({ threads: '2' }), error: TypeError, message: /^options\.threads is "2", expected a positive integer$/ },
];

if (unavailable !== undefined) {
  RULES.push({
    rule: `a named backend that is unavailable says why (here: ${unavailable.name})`, kind: 'full', args: withOptions({ backend: unavailable.name }),
    error: Error, message: new RegExp(`^backend '${unavailable.name}' is not available: .+`),
  });
} else {
  RULES.push({
    rule: 'an unavailable named backend says why (every backend is available here, so this checks GLOBAL_LOCAL_ATTENTION_BACKEND=bogus instead)',
    kind: 'full', args: (a) => a, env: { GLOBAL_LOCAL_ATTENTION_BACKEND: 'bogus' }, error: RangeError, message: /GLOBAL_LOCAL_ATTENTION_BACKEND/,
  });
}

async function withEnv<T>(env: Record<string, string> | undefined, body: () => Promise<T>): Promise<T> {
  const saved = Object.keys(env ?? {}).map((key) => [key, process.env[key]] as const);
  Object.assign(process.env, env);
  try {
    return await body();
  } finally {
    for (const [key, value] of saved) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
  }
}

/** The sync call's error, or the async call's rejection; an async call that throws synchronously fails the test. */
async function errorOf(rule: Rule, mode: (typeof MODES)[number]): Promise<Error> {
  const { q, k, v, options } = rule.args(valid(rule.kind));
  return withEnv(rule.env, async () => {
    if (mode === 'sync') {
      try {
        await attention(rule.kind, 'sync', q, k, v, options);
      } catch (error) {
        return error as Error;
      }
      throw new Error('the sync call did not throw');
    }
    const fn = rule.kind === 'full' ? gla.fullAttention : gla.localGlobalAttention;
    let pending: Promise<unknown>;
    try {
      pending = (fn as (...args: unknown[]) => Promise<unknown>)(q, k, v, options);
    } catch (error) {
      throw new Error(`the async call threw synchronously instead of rejecting: ${String(error)}`);
    }
    return pending.then(
      () => { throw new Error('the async call did not reject'); },
      (error: Error) => error,
    );
  });
}

describe('validation', () => {
  it.each(RULES.map((r): [string, Rule] => [`${r.kind}: ${r.rule}`, r]))('%s', async (_title, rule) => {
    const thrown = await errorOf(rule, 'sync');
    expect(thrown.constructor).toBe(rule.error);
    expect(thrown.message).toMatch(rule.message);
    const rejected = await errorOf(rule, 'async');
    expect(rejected.constructor).toBe(rule.error);
    expect(rejected.message).toBe(thrown.message);
  });

  // Validation happens before any backend runs: a call rejected for a serving option leaves the
  // caller's out and lse exactly as they were, on every backend.
  const SERVING = /qLengths|softcap|alibiSlopes|sinkLogits/;
  it.each(RULES.filter((r) => SERVING.test(r.rule)).map((r): [string, Rule] => [`${r.kind}: ${r.rule}`, r]))('%s: nothing is written to out or lse', async (_title, rule) => {
    for (const backend of gla.backends()) {
      for (const mode of MODES) {
        const { q, k, v, options } = rule.args(valid(rule.kind));
        const out = new Float32Array((q as Float32Array).length).fill(-7.25);
        const lse = new Float32Array((options.batch as number) * (options.heads as number) * (options.seqLen as number)).fill(-7.25);
        await expect(attention(rule.kind, mode, q, k, v, { ...options, out, lse, backend }), `${backend} ${mode}`).rejects.toThrow(rule.error);
        expect(out.every((x) => x === -7.25) && lse.every((x) => x === -7.25), `${backend} ${mode}: out or lse was written`).toBe(true);
      }
    }
  });

  it('accepts the serving options at their bounds: qLengths 0 and seqLen, softcap 0, slopes and sinks of 0 and ±3.4e38', async () => {
    const a = valid('localGlobal');
    const big = 3.4028234663852886e38;
    for (const mode of MODES) {
      const lse = new Float32Array(LSE_LENGTH);
      const out = await attention('localGlobal', mode, a.q, a.k, a.v, {
        ...a.options, qLengths: [0], softcap: 0, alibiSlopes: new Float64Array([0, -0]), sinkLogits: [big, -big], lse, backend: 'js',
      });
      expect(out.every((x) => x === 0)).toBe(true);
      expect(lse.every((x) => x === -Infinity)).toBe(true);
      const full = await attention('full', mode, a.q, a.k, a.v, { ...valid('full').options, qLengths: new Uint8Array([4]), softcap: big, backend: 'js' });
      expect(full).toHaveLength(Q_LENGTH);
    }
  });

  it('accepts options whose unused keys are explicitly undefined', async () => {
    const a = valid('full');
    for (const mode of MODES) {
      const out = await attention('full', mode, a.q, a.k, a.v, {
        ...a.options, window: undefined, causal: undefined, qLengths: undefined, softcap: undefined, alibiSlopes: undefined, sinkLogits: undefined, backend: 'js',
      });
      expect(out).toHaveLength(Q_LENGTH);
    }
  });
});
