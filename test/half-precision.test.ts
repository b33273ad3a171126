// float16 and bfloat16: every backend against the float64 reference applied to the exact values of
// the 16-bit patterns, with half and float32 outputs, NaN-prefilled; the IEEE rules; bad input.
import { describe, expect, it } from 'vitest';
import { attention } from './helpers/call';
import { PARITY_CASES, inputLengths, makeInputs } from './helpers/cases';
import { expectMatchesReference, relativeL2 } from './helpers/compare';
import { type HalfDType, halfUlp, halfValue, halfValues, toHalfBits } from './helpers/half-bits';
import { BACKENDS, gla } from './helpers/package';
import { type ReferenceOptions, referenceAttention, tensorIndex } from './reference';

const HALF_TYPES: HalfDType[] = ['float16', 'bfloat16'];

/** A parity case's inputs stored in a half type, with the reference of their exact values. */
function halfCase(name: string, options: ReferenceOptions, dtype: HalfDType, magnitude = 1) {
  const inputs = makeInputs(`${name} ${dtype}`, options, magnitude);
  const bits = { q: toHalfBits(dtype, inputs.q), k: toHalfBits(dtype, inputs.k), v: toHalfBits(dtype, inputs.v) };
  const values = { q: halfValues(dtype, bits.q), k: halfValues(dtype, bits.k), v: halfValues(dtype, bits.v) };
  return { bits, reference: referenceAttention(values.q, values.k, values.v, options) };
}

/** Every element of a half out is the float64 result rounded once: within half an ulp of it, plus
 *  the float32 computation's own error (2e-5 relative to the row scale). */
function expectRoundedOnce(dtype: HalfDType, out: Uint16Array, reference: Float64Array): void {
  let scale = 0;
  for (const x of reference) scale = Math.max(scale, Math.abs(x));
  for (let i = 0; i < out.length; i++) {
    const got = halfValue(dtype, out[i]);
    const want = reference[i];
    const bound = halfUlp(dtype, want) * 1.0001 + 2e-5 * scale;
    if (!(Math.abs(got - want) <= bound)) expect.fail(`out[${i}] = ${got} (bits ${out[i]}), expected ${want} ± ${bound}`);
  }
}

const GRID = PARITY_CASES.filter((_, i) => i % 3 === 0).slice(0, 8);

/** precision 'bfloat16' (bfloat16 products where the backend has them): 1e-2 relative L2, rows
 *  that see nothing still exact zeros, lse within 1e-2 of the reference's scale. */
function expectWithinBfloat16(options: ReferenceOptions, reference: { out: Float64Array; lse: Float64Array }, out: ArrayLike<number>, lse: Float32Array | null): void {
  expect(Array.from(out).findIndex(Number.isNaN)).toBe(-1);
  expect(relativeL2(out, reference.out)).toBeLessThanOrEqual(1e-2);
  const { batch, heads, seqLen, headDim } = options;
  const layout = options.layout ?? 'bhsd';
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < seqLen; i++) {
        const row = (b * heads + h) * seqLen + i;
        if (reference.lse[row] !== -Infinity) {
          if (lse !== null && !(Math.abs(lse[row] - reference.lse[row]) <= 1e-2 * Math.max(1, Math.abs(reference.lse[row])))) {
            expect.fail(`lse[${row}] = ${lse[row]}, expected ${reference.lse[row]}`);
          }
          continue;
        }
        if (lse !== null) expect(lse[row]).toBe(-Infinity);
        for (let d = 0; d < headDim; d++) expect(out[tensorIndex(layout, heads, seqLen, headDim, b, h, i, d)]).toBe(0);
      }
    }
  }
}

const PRECISIONS = ['float32', 'bfloat16'] as const;

describe.each(BACKENDS)('backend %s with half-precision inputs', (backend) => {
  for (const dtype of HALF_TYPES) {
    for (const precision of PRECISIONS) {
      it.each(GRID.map((c) => [c.name, c] as const))(`${dtype}, precision ${precision}: %s`, async (_name, c) => {
        const { bits, reference } = halfCase(c.name, c.options, dtype, c.magnitude);
        const n = inputLengths(c.options);
        const copies = { q: bits.q.slice(), k: bits.k.slice(), v: bits.v.slice() };
        const base = { ...c.options, dtype, precision, backend };
        const check = (out: ArrayLike<number>, lse: Float32Array | null) =>
          precision === 'float32'
            ? expectMatchesReference(c.options, reference, out as Float32Array, lse)
            : expectWithinBfloat16(c.options, reference, out, lse);

        // float32 out, sync, NaN-prefilled.
        const out = new Float32Array(n.q).fill(NaN);
        const lse = new Float32Array(n.lse).fill(NaN);
        const returned = await attention(c.kind, 'sync', bits.q, bits.k, bits.v, { ...base, outDtype: 'float32', out, lse });
        expect(returned).toBe(out);
        check(out, lse);

        // Half out (the default outDtype), async, allocated by the package; then sync into a
        // caller's out prefilled with a NaN pattern: the same bits.
        const allocated = (await attention(c.kind, 'async', bits.q, bits.k, bits.v, base)) as unknown as Uint16Array;
        expect(allocated).toBeInstanceOf(Uint16Array);
        if (precision === 'float32') expectRoundedOnce(dtype, allocated, reference.out);
        else check(halfValues(dtype, allocated), null);
        const halfOut = new Uint16Array(n.q).fill(0x7fff);
        await attention(c.kind, 'sync', bits.q, bits.k, bits.v, { ...base, out: halfOut });
        expect(Array.from(halfOut)).toEqual(Array.from(allocated));

        expect(Array.from(bits.q)).toEqual(Array.from(copies.q));
        expect(Array.from(bits.k)).toEqual(Array.from(copies.k));
        expect(Array.from(bits.v)).toEqual(Array.from(copies.v));
      });
    }
  }

  it.each(GRID.map((c) => [c.name, c] as const))('float32 inputs with precision bfloat16: %s', async (_name, c) => {
    const { q, k, v } = makeInputs(`${c.name} precision bfloat16`, c.options, c.magnitude);
    const reference = referenceAttention(q, k, v, c.options);
    const n = inputLengths(c.options);
    for (const mode of ['sync', 'async'] as const) {
      const lse = new Float32Array(n.lse).fill(NaN);
      const out = await attention(c.kind, mode, q, k, v, { ...c.options, precision: 'bfloat16', lse, backend });
      expect(out).toBeInstanceOf(Float32Array);
      expectWithinBfloat16(c.options, reference, out, lse);
    }
  });

  it.each(HALF_TYPES.flatMap((d) => PRECISIONS.map((p) => [d, p] as const)))('%s, precision %s, follows the IEEE rules: a NaN pattern is NaN, an Inf in a masked key stays out, empty rows are 0 / -Infinity', async (dtype, precision) => {
    const options: ReferenceOptions = { batch: 2, heads: 1, seqLen: 50, headDim: 16, causal: true, kvLengths: [50, 0] };
    const { bits } = halfCase('ieee', options, dtype);
    const nan = dtype === 'float16' ? 0x7e01 : 0x7f81;
    const inf = dtype === 'float16' ? 0x7c00 : 0x7f80;
    const at = (s: number, d: number) => tensorIndex('bhsd', 1, 50, 16, 0, 0, s, d);
    bits.q[at(7, 3)] = nan;   // query row 7 of item 0 is NaN throughout
    bits.v[at(40, 5)] = inf;  // rows 0..39 cannot see key 40
    const lse = new Float32Array(100).fill(NaN);
    const out = await attention('full', 'sync', bits.q, bits.k, bits.v, { ...options, dtype, precision, outDtype: 'float32', lse, backend });
    for (let i = 0; i < 50; i++) {
      const row = Array.from(out.subarray(at(i, 0), at(i, 0) + 16));
      if (i === 7) expect(row.every(Number.isNaN), `row 7: ${row}`).toBe(true);
      else if (i < 40) expect(row.every(Number.isFinite), `row ${i}: ${row}`).toBe(true);
      const empty = Array.from(out.subarray(800 + i * 16, 800 + i * 16 + 16));
      expect(empty.every((x) => x === 0)).toBe(true);
      expect(lse[50 + i]).toBe(-Infinity);
    }
    expect(Number.isNaN(lse[7])).toBe(true);
  });
});

describe('half-precision options are validated before any backend runs', () => {
  const options = { batch: 1, heads: 1, seqLen: 2, headDim: 4 };
  const f32 = new Float32Array(8);
  const u16 = new Uint16Array(8);
  const cases: Array<[string, unknown, unknown, unknown, unknown, RegExp, ErrorConstructor]> = [
    ['a Uint16Array without dtype', u16, u16, u16, options, /options\.dtype.*missing.*Uint16Array.*'float16' or 'bfloat16'/, TypeError],
    ['a Float32Array with dtype bfloat16', f32, f32, f32, { ...options, dtype: 'bfloat16' }, /^q .*Float32Array.*Uint16Array of bfloat16 bits/, TypeError],
    ['q and k of different kinds', u16, f32, u16, { ...options, dtype: 'float16' }, /^k .*Float32Array/, TypeError],
    ['an unknown dtype', f32, f32, f32, { ...options, dtype: 'float64' }, /options\.dtype.*"float64".*'float32', 'float16' or 'bfloat16'/, RangeError],
    ['a dtype that is not a string', f32, f32, f32, { ...options, dtype: 2 }, /options\.dtype/, TypeError],
    ['an unknown outDtype', f32, f32, f32, { ...options, outDtype: 'half' }, /options\.outDtype/, RangeError],
    ['an unknown precision', f32, f32, f32, { ...options, precision: 'tf32' }, /options\.precision.*"tf32".*'float32' or 'bfloat16'/, RangeError],
    ['a Float32Array out for outDtype bfloat16', f32, f32, f32, { ...options, outDtype: 'bfloat16', out: new Float32Array(8) }, /options\.out .*Float32Array.*bfloat16/, TypeError],
    ['a Uint16Array out for float32', f32, f32, f32, { ...options, out: new Uint16Array(8) }, /options\.out .*Uint16Array.*Float32Array/, TypeError],
    ['a half out of the wrong length', u16, u16, u16, { ...options, dtype: 'bfloat16', out: new Uint16Array(7) }, /options\.out has length 7/, RangeError],
  ];
  it.each(cases)('%s', async (_title, q, k, v, o, message, kind) => {
    for (const mode of ['sync', 'async'] as const) {
      const out = (o as { out?: Uint16Array | Float32Array }).out;
      out?.fill(3);
      await expect(attention('full', mode, q, k, v, o)).rejects.toThrow(kind);
      await expect(attention('full', mode, q, k, v, o)).rejects.toThrow(message);
      if (out !== undefined) expect(Array.from(out).every((x) => x === 3), 'out was written').toBe(true);
    }
  });

  it('a float16 result without out is a Float16Array where the runtime has one, else a Uint16Array', () => {
    const q = new Uint16Array(8).fill(0x3c00);
    const out = gla.fullAttentionSync(q, q, q, { ...options, dtype: 'float16' });
    const hasFloat16 = typeof (globalThis as { Float16Array?: unknown }).Float16Array === 'function';
    expect(Object.prototype.toString.call(out)).toBe(hasFloat16 ? '[object Float16Array]' : '[object Uint16Array]');
    expect(Array.from(out as Uint16Array, (x) => (hasFloat16 ? x : halfValue('float16', x)))).toEqual(new Array(8).fill(1));
  });
});
