// The tolerance of the contract: relative L2 error ≤ 1e-5 against the float64 reference, lse within
// 1e-5·max(1, |lse|), and rows that see no key exactly zero with lse -Infinity.
import { expect } from 'vitest';
import { type ReferenceOptions, type ReferenceResult, tensorIndex } from '../reference';

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

  // Rows that see nothing must be exact zeros, however small the rest of the error is.
  const { batch, heads, seqLen, headDim } = options;
  const layout = options.layout ?? 'bhsd';
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < seqLen; i++) {
        if (reference.lse[(b * heads + h) * seqLen + i] !== -Infinity) continue;
        for (let d = 0; d < headDim; d++) {
          const x = out[tensorIndex(layout, heads, seqLen, headDim, b, h, i, d)];
          if (x !== 0) expect.fail(`row (b=${b}, h=${h}, i=${i}) sees no key but out[.., d=${d}] = ${x}`);
        }
      }
    }
  }

  if (lse === null) return;
  expect(lse.length).toBe(reference.lse.length);
  for (let r = 0; r < lse.length; r++) {
    const want: number = reference.lse[r];
    const got: number = lse[r];
    const ok = want === -Infinity ? got === -Infinity : Math.abs(got - want) <= LSE_TOLERANCE * Math.max(1, Math.abs(want));
    if (!ok) expect.fail(`lse[${r}] = ${got}, expected ${want}`);
  }
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
