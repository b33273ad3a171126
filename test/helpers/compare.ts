// The tolerance of the contract: relative L2 error ≤ 1e-5 against the float64 reference, lse within
// 1e-5·max(1, |lse|), and rows that see no key exactly zero with lse -Infinity (the sink logit with
// sinkLogits), padding rows past qLengths exactly zero with lse -Infinity.
import { expect } from 'vitest';
import { type HalfDType, halfUlp } from './half-bits';
import { type ReferenceOptions, type ReferenceResult, referenceAttention, tensorIndex } from '../reference';

export const OUT_TOLERANCE = 1e-5;
export const LSE_TOLERANCE = 1e-5;

export function relativeL2(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < expected.length; i++) {
    diff += (actual[i] - expected[i]) ** 2;
    norm += expected[i] ** 2;
  }
  if (norm === 0) return diff === 0 ? 0 : Infinity;
  return Math.sqrt(diff / norm);
}

export function expectMatchesReference(
  options: ReferenceOptions,
  reference: ReferenceResult,
  out: Float32Array,
  lse: Float32Array | null,
): void {
  expect(out.length).toBe(reference.out.length);
  const firstNaN = out.findIndex((x) => Number.isNaN(x));
  expect(firstNaN, `out[${firstNaN}] is NaN`).toBe(-1);
  expect(relativeL2(out, reference.out)).toBeLessThanOrEqual(OUT_TOLERANCE);

  expectEmptyRowsZero(options, reference, out);

  if (lse === null) return;
  expect(lse.length).toBe(reference.lse.length);
  for (let r = 0; r < lse.length; r++) {
    const want: number = reference.lse[r];
    const got: number = lse[r];
    const ok = want === -Infinity ? got === -Infinity : Math.abs(got - want) <= LSE_TOLERANCE * Math.max(1, Math.abs(want));
    if (!ok) expect.fail(`lse[${r}] = ${got}, expected ${want}`);
  }
}

/**
 * Rows that see nothing (and padding rows past qLengths) must be exact zeros, however small the rest
 * of the error is. Their lse is -Infinity, or the sink logit for a real row with sinkLogits, which
 * the lse comparison checks. `out` holds the result's values (a half out decoded).
 */
export function emptyRowMismatches(options: ReferenceOptions, reference: ReferenceResult, out: ArrayLike<number>): string[] {
  const found: string[] = [];
  const { batch, heads, seqLen, headDim } = options;
  const layout = options.layout ?? 'bhsd';
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < seqLen && found.length < 5; i++) {
        if (reference.empty[(b * heads + h) * seqLen + i] === 0) continue;
        for (let d = 0; d < headDim; d++) {
          const x = out[tensorIndex(layout, heads, seqLen, headDim, b, h, i, d)];
          if (x !== 0) {
            found.push(`row (b=${b}, h=${h}, i=${i}) sees no key${i >= (options.qLengths?.[b] ?? seqLen) ? ' (padding)' : ''} but out[.., d=${d}] = ${x}`);
            break;
          }
        }
      }
    }
  }
  return found;
}

export function expectEmptyRowsZero(options: ReferenceOptions, reference: ReferenceResult, out: ArrayLike<number>): void {
  const found = emptyRowMismatches(options, reference, out);
  if (found.length > 0) expect.fail(found.join('; '));
}

/** Bit-for-bit equality, fast on large arrays (vitest's deep equality walks them generically). */
export function expectSameContents(actual: Float32Array, expected: Float32Array, what: string): void {
  expect(actual.length, `${what}: length`).toBe(expected.length);
  const a = new Uint32Array(actual.buffer, actual.byteOffset, actual.length);
  const b = new Uint32Array(expected.buffer, expected.byteOffset, expected.length);
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) expect.fail(`${what}: element ${i} is ${actual[i]}, expected ${expected[i]}`);
  }
}

/** The reference's inputs, for the bounds that depend on their magnitudes. */
export interface ReferenceInputs {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
}

/**
 * Where a result computed with precision 'bfloat16' (q, k, the weights and v may be rounded to
 * bfloat16 before they are multiplied) departs from the float64 reference `reference` of `inputs`:
 * - out within 1e-2 relative L2, where the scale is the reference on |v|: v is rounded before the
 *   weighted sum, so where the values a row averages cancel the error is relative to the average
 *   of |v|, not to the result; a half out is rounded once more, so each element may also be half
 *   an ulp of `outDtype` off (which matters where results are tiny: a large sink logit gives
 *   e^-40-sized outputs, below float16's smallest subnormal);
 * - rows that see nothing exact zeros;
 * - lse within 1e-2·max(1, |lse|) plus what rounding q and k costs a score: each rounding is at
 *   most 2^-8 relative, so a score moves by at most 2^-7·|scale|·Σ|q_d·k_d| (softcap only shrinks
 *   that, ALiBi and sinks add nothing), and lse moves by at most its largest score's move; the
 *   largest |scale|·Σ|q_d·k_d| over visible pairs is the reference on |q|, |k|, |scale|.
 * `out` holds the result's values (a half out decoded).
 */
export function bfloat16Mismatches(
  options: ReferenceOptions, reference: ReferenceResult, inputs: ReferenceInputs, out: ArrayLike<number>, lse: Float32Array | null,
  outDtype: 'float32' | HalfDType = 'float32',
): string[] {
  const abs = (x: Float32Array) => x.map(Math.abs);
  const magnitude = referenceAttention(inputs.q, inputs.k, abs(inputs.v), options).out;
  let error = 0;
  let scale = 0;
  for (let i = 0; i < out.length; i++) {
    const rounding = outDtype === 'float32' ? 0 : halfUlp(outDtype, reference.out[i]) * 1.0001;
    const diff = Math.abs(out[i] - reference.out[i]);
    error += Number.isNaN(diff) ? NaN : Math.max(0, diff - rounding) ** 2;
    scale += magnitude[i] ** 2;
  }
  const found = Number.isNaN(error) || Math.sqrt(error) > 1e-2 * Math.sqrt(scale)
    ? [`out is ${Math.sqrt(error)} from the reference, more than 1e-2 of ${Math.sqrt(scale)} (the reference on |v|)`]
    : [];
  found.push(...emptyRowMismatches(options, reference, out));
  if (lse !== null) {
    const plain = { ...options, scale: Math.abs(options.scale ?? 1 / Math.sqrt(options.headDim)) };
    delete plain.softcap;
    delete plain.alibiSlopes;
    delete plain.sinkLogits;
    const scoreShift = 2 ** -7 * referenceAttention(abs(inputs.q), abs(inputs.k), inputs.v, plain).maxAbsScore;
    for (let r = 0; r < lse.length && found.length < 5; r++) {
      const want = reference.lse[r];
      const ok = want === -Infinity ? lse[r] === -Infinity : Math.abs(lse[r] - want) <= 1e-2 * Math.max(1, Math.abs(want)) + scoreShift;
      if (!ok) found.push(`lse[${r}] is ${lse[r]}, expected ${want} ± ${1e-2 * Math.max(1, Math.abs(want)) + scoreShift}`);
    }
  }
  return found;
}
