// Validation of the options that shape the mask and the scores (kvLengths, qLengths, window,
// globalTokens, softcap, alibiSlopes, sinkLogits), kept apart from
// options.ts because each has its own small grammar. Called only by options.ts.
import { argumentError, rangeError, typeError } from './errors';

type List = ArrayLike<unknown>;

/** A plain array or a typed array (not a DataView, not a string). */
function isList(value: unknown): value is List {
  return Array.isArray(value) || (ArrayBuffer.isView(value) && !(value instanceof DataView));
}

function integerIn(name: string, value: unknown, min: number, max: number, expected: string): number {
  if (typeof value !== 'number') throw typeError(name, value, expected);
  if (!Number.isInteger(value) || value < min || value > max) throw rangeError(name, value, expected);
  return value;
}

/** kvLengths or qLengths: one integer per batch item in [0, max]. */
export function normaliseLengths(name: string, value: unknown, batch: number, max: number, maxName: string): Int32Array {
  if (!isList(value)) {
    throw typeError(name, value, `an array or typed array of batch = ${batch} integers`);
  }
  if (value.length !== batch) {
    throw argumentError(RangeError, name, `has length ${value.length}`, `batch = ${batch}`);
  }
  const lengths = new Int32Array(batch);
  const expected = `an integer in [0, ${maxName}] = [0, ${max}]`;
  for (let b = 0; b < batch; b++) lengths[b] = integerIn(`${name}[${b}]`, value[b], 0, max, expected);
  return lengths;
}

// The kernels compute in float32, where a larger magnitude is Infinity.
const FLOAT32_MAX = 3.4028234663852886e38;

/** softcap: 0 (off) or a finite positive float32. */
export function normaliseSoftcap(value: unknown): number {
  const expected = `0 (off) or a finite number > 0 (at most ${FLOAT32_MAX})`;
  if (typeof value !== 'number') throw typeError('options.softcap', value, expected);
  if (!(value >= 0 && value <= FLOAT32_MAX)) throw rangeError('options.softcap', value, expected);
  return value;
}

/** alibiSlopes or sinkLogits: one finite float32 per query head. */
export function normaliseHeadValues(name: string, value: unknown, heads: number): Float32Array {
  if (!isList(value)) throw typeError(name, value, `an array or typed array of heads = ${heads} finite numbers`);
  if (value.length !== heads) {
    throw argumentError(RangeError, name, `has length ${value.length}`, `heads = ${heads}`);
  }
  const values = new Float32Array(heads);
  const expected = `a finite number, |x| ≤ ${FLOAT32_MAX}`;
  for (let h = 0; h < heads; h++) {
    const x = value[h];
    if (typeof x !== 'number') throw typeError(`${name}[${h}]`, x, expected);
    if (!(Math.abs(x) <= FLOAT32_MAX)) throw rangeError(`${name}[${h}]`, x, expected);
    values[h] = x;
  }
  return values;
}

/** [left, right] with -1 for an unbounded side. */
export function normaliseWindow(value: unknown): [number, number] {
  const forms = '[left, right] (each an integer ≥ -1, -1 = unbounded) or a number W meaning [⌊W/2⌋, ⌊W/2⌋]';
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value) || value < 0) {
      throw rangeError('options.window', value, 'a non-negative integer W meaning [⌊W/2⌋, ⌊W/2⌋] (use [-1, -1] for no window)');
    }
    const half = Math.floor(value / 2);
    return [half, half];
  }
  if (!isList(value)) throw typeError('options.window', value, forms);
  if (value.length !== 2) {
    throw argumentError(RangeError, 'options.window', `has length ${value.length}`, '[left, right]');
  }
  const side = (i: 0 | 1): number =>
    integerIn(`options.window[${i}]`, value[i], -1, Number.MAX_SAFE_INTEGER, 'an integer ≥ -1 (-1 = unbounded)');
  return [side(0), side(1)];
}

/** CSR form: batch b owns indices[offsets[b] .. offsets[b + 1]), sorted and unique. Nulls when empty. */
export function normaliseGlobalTokens(
  value: unknown,
  batch: number,
  kvSeqLen: number,
): { offsets: Int32Array | null; indices: Int32Array | null } {
  if (!isList(value)) {
    throw typeError('options.globalTokens', value, 'a list of key positions, or an array with one such list per batch item');
  }
  // Nested lists mean one list per batch item; a flat list is shared by the whole batch.
  const perBatch = Array.isArray(value) && value.length > 0 && isList(value[0]);
  let lists: Array<{ name: string; list: List }>;
  if (perBatch) {
    if (value.length !== batch) {
      throw argumentError(RangeError, 'options.globalTokens', `has ${value.length} lists`, `one list per batch item, batch = ${batch}`);
    }
    lists = Array.from({ length: batch }, (_, b) => {
      const name = `options.globalTokens[${b}]`;
      const list = value[b];
      if (!isList(list)) {
        throw typeError(name, list, 'a list of key positions (globalTokens[0] is a list, so globalTokens holds one list per batch item)');
      }
      return { name, list };
    });
  } else {
    lists = Array.from({ length: batch }, () => ({ name: 'options.globalTokens', list: value }));
  }

  const expected = `an integer key position in [0, kvSeqLen) = [0, ${kvSeqLen})`;
  const perItem = lists.map(({ name, list }, b) => {
    // A shared list is validated once; the other batch items reuse its result.
    if (!perBatch && b > 0) return null;
    const tokens = new Int32Array(list.length);
    for (let i = 0; i < list.length; i++) {
      const item = list[i];
      if (!perBatch && isList(item)) {
        throw typeError(`${name}[${i}]`, item, `${expected} (globalTokens[0] is a number, so globalTokens is one flat list)`);
      }
      tokens[i] = integerIn(`${name}[${i}]`, item, 0, kvSeqLen - 1, expected);
    }
    return sortedUnique(tokens);
  });
  const tokensOf = (b: number): Int32Array => (perBatch ? perItem[b] : perItem[0]) as Int32Array;

  let total = 0;
  for (let b = 0; b < batch; b++) total += tokensOf(b).length;
  if (total > 2 ** 31 - 1) {
    // The CSR offsets are Int32 in the native params.
    throw argumentError(RangeError, 'options.globalTokens', `holds ${total} tokens over the batch`, `at most ${2 ** 31 - 1}`);
  }
  const offsets = new Int32Array(batch + 1);
  for (let b = 0; b < batch; b++) offsets[b + 1] = offsets[b] + tokensOf(b).length;
  if (offsets[batch] === 0) return { offsets: null, indices: null };
  const indices = new Int32Array(offsets[batch]);
  for (let b = 0; b < batch; b++) indices.set(tokensOf(b), offsets[b]);
  return { offsets, indices };
}

function sortedUnique(tokens: Int32Array): Int32Array {
  tokens.sort();
  let kept = 0;
  for (let i = 0; i < tokens.length; i++) {
    if (i === 0 || tokens[i] !== tokens[kept - 1]) tokens[kept++] = tokens[i];
  }
  return tokens.slice(0, kept);
}
