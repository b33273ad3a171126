// lib/half.ts against values worked out here independently: float16 from its defining formula in float64,
// bfloat16 through DataView, and rounding as "the nearest representable value, ties to the even pattern",
// found by search over the sorted representable values, not by any bit trick.
import { describe, expect, it } from 'vitest';
import {
  decodeBfloat16,
  decodeFloat16,
  decodeHalf,
  encodeBfloat16,
  encodeFloat16,
  encodeHalf,
  float16ArrayConstructor,
  isFloat16Array,
} from '../lib/half';
import { rng } from './helpers/random';

const ALL = new Uint16Array(65536).map((_, i) => i);

/** (-1)^s · 2^(e-15) · (1 + m/1024), subnormals (-1)^s · 2^-14 · m/1024, Inf and NaN at e = 31. */
function float16Reference(h: number): number {
  const s = h >> 15 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 31) return m === 0 ? s * Infinity : NaN;
  if (e === 0) return s * Math.pow(2, -14) * (m / 1024);
  return s * Math.pow(2, e - 15) * (1 + m / 1024);
}

const view = new DataView(new ArrayBuffer(4));
function bfloat16Reference(h: number): number {
  view.setUint32(0, h << 16);
  return view.getFloat32(0);
}

/** float32 value of a bit pattern, for building inputs (NaN payloads are built in a Uint32Array instead). */
function float32Of(bits: number): number {
  view.setUint32(0, bits >>> 0);
  return view.getFloat32(0);
}

/**
 * Round a float64 value to the nearest of `positives` (index = pattern, sorted ascending, last entry the value
 * where rounding turns to Inf: the next power of two, whose pattern is the Inf pattern), ties to the even pattern.
 */
function roundReference(positives: Float64Array, v: number): number {
  const sign = v < 0 || Object.is(v, -0) ? 0x8000 : 0;
  const a = Math.abs(v);
  const last = positives.length - 1;
  if (a >= positives[last]) return sign | last;
  let lo = 0;
  let hi = last; // invariant: positives[lo] <= a < positives[hi]
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (positives[mid] <= a) lo = mid;
    else hi = mid;
  }
  if (positives[lo] === a) return sign | lo;
  // 2a against lo + hi: both sides exact in float64, so a tie is never missed or invented.
  const twice = 2 * a;
  const sum = positives[lo] + positives[hi];
  if (twice < sum) return sign | lo;
  if (twice > sum) return sign | hi;
  return sign | (lo % 2 === 0 ? lo : hi);
}

// float16: 0x0000..0x7bff finite, 0x7c00 stands for 65536 (65504 + a full ulp of 32), the overflow boundary.
const F16_POSITIVES = new Float64Array(0x7c01).map((_, i) => (i === 0x7c00 ? 65536 : float16Reference(i)));
// bfloat16: 0x0000..0x7f7f finite, 0x7f80 stands for 2^128.
const BF16_POSITIVES = new Float64Array(0x7f81).map((_, i) => (i === 0x7f80 ? 2 ** 128 : bfloat16Reference(i)));

/** Patterns where actual and expected differ, as hex, so a failure shows the first few cases. */
function mismatches(count: number, actual: (i: number) => unknown, expected: (i: number) => unknown): string[] {
  const bad: string[] = [];
  for (let i = 0; i < count && bad.length < 10; i++) {
    if (!Object.is(actual(i), expected(i))) bad.push(`#${i}: got ${String(actual(i))}, expected ${String(expected(i))}`);
  }
  return bad;
}

function f32(values: number[]): Float32Array {
  return Float32Array.from(values);
}

function fromBits(bits: number[]): Float32Array {
  return new Float32Array(Uint32Array.from(bits).buffer);
}

describe('decodeFloat16', () => {
  it('gives the exact value of all 65536 patterns, ±0 and NaN included', () => {
    const out = decodeFloat16(ALL);
    expect(mismatches(65536, (i) => out[i], (i) => float16Reference(i))).toEqual([]);
  });

  it('keeps the sign of zero and decodes the edges', () => {
    const out = decodeFloat16(Uint16Array.from([0x0000, 0x8000, 0x0001, 0x03ff, 0x0400, 0x7bff, 0x7c00, 0xfc00]));
    expect(Object.is(out[0], 0)).toBe(true);
    expect(Object.is(out[1], -0)).toBe(true);
    expect([...out.slice(2)]).toEqual([2 ** -24, 1023 * 2 ** -24, 2 ** -14, 65504, Infinity, -Infinity]);
  });

  it('decodes every NaN pattern to NaN', () => {
    const nan = ALL.filter((h) => (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0);
    expect(nan.length).toBe(2046);
    expect(decodeFloat16(nan).every(Number.isNaN)).toBe(true);
  });
});

describe('decodeBfloat16', () => {
  it('gives the exact value of all 65536 patterns, ±0 and NaN included', () => {
    const out = decodeBfloat16(ALL);
    expect(mismatches(65536, (i) => out[i], (i) => bfloat16Reference(i))).toEqual([]);
    expect(Object.is(out[0x8000], -0)).toBe(true);
    const nan = ALL.filter((h) => (h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0);
    expect(nan.length).toBe(254);
    expect(decodeBfloat16(nan).every(Number.isNaN)).toBe(true);
  });
});

describe('encodeFloat16', () => {
  it('round-trips all 65536 patterns; NaN patterns come back as the quiet NaN with their sign', () => {
    const back = encodeFloat16(decodeFloat16(ALL));
    const expected = (h: number) => (Number.isNaN(float16Reference(h)) ? (h & 0x8000) | 0x7e00 : h);
    expect(mismatches(65536, (i) => back[i], expected)).toEqual([]);
  });

  it('rounds every midpoint between neighbours to the even one, and just off it to the nearer one', () => {
    const inputs: number[] = [];
    const expected: number[] = [];
    for (let h = 0; h < 0x7c00; h++) {
      const mid = (F16_POSITIVES[h] + F16_POSITIVES[h + 1]) / 2;
      expect(Math.fround(mid)).toBe(mid);
      view.setFloat32(0, mid);
      const bits = view.getUint32(0);
      const even = h % 2 === 0 ? h : h + 1;
      for (const sign of [0, 0x8000]) {
        const s = sign ? 0x80000000 : 0;
        inputs.push(float32Of(s | bits), float32Of(s | (bits - 1)), float32Of(s | (bits + 1)));
        expected.push(sign | even, sign | h, sign | (h + 1));
      }
    }
    const out = encodeFloat16(f32(inputs));
    expect(mismatches(inputs.length, (i) => out[i], (i) => expected[i])).toEqual([]);
  });

  it('rounds hand-picked ties to even', () => {
    const cases: [number, number][] = [
      [1 + 2 ** -11, 0x3c00], // between 1 and 1 + 2^-10: 1 is even
      [1 + 3 * 2 ** -11, 0x3c02], // between 1 + 2^-10 and 1 + 2^-9: 1 + 2^-9 is even
      [2 ** -25, 0x0000], // half the smallest subnormal: ties to 0
      [-(2 ** -25), 0x8000],
      [3 * 2 ** -25, 0x0002], // between subnormals 1 and 2
      [1023.5 * 2 ** -24, 0x0400], // between the largest subnormal and the smallest normal
      [2049, 0x6800], // between 2048 (0x6800) and 2050
      [2051, 0x6802], // between 2050 and 2052
    ];
    const out = encodeFloat16(f32(cases.map(([v]) => v)));
    expect([...out]).toEqual(cases.map(([, h]) => h));
    for (const [v, h] of cases) expect(roundReference(F16_POSITIVES, v)).toBe(h);
  });

  it('overflows to Inf at 65520 and not below; keeps ±0 and the smallest subnormal', () => {
    const below = Math.fround(65519.99);
    expect(below).toBeLessThan(65520);
    const out = encodeFloat16(f32([below, 65520, -65520, 65504, 1e10, -Infinity, 0, -0, 2 ** -24, 2 ** -26]));
    expect([...out]).toEqual([0x7bff, 0x7c00, 0xfc00, 0x7bff, 0x7c00, 0xfc00, 0x0000, 0x8000, 0x0001, 0x0000]);
  });

  it('encodes NaN (any payload, quiet or signalling) as the quiet NaN with its sign', () => {
    const nan = fromBits([0x7fc00000, 0xffc00000, 0x7f800001, 0xff800001, 0x7fffffff, 0xffffffff, 0x7f802000]);
    expect([...encodeFloat16(nan)]).toEqual([0x7e00, 0xfe00, 0x7e00, 0xfe00, 0x7e00, 0xfe00, 0x7e00]);
  });

  it('matches the reference rounding on 100k seeded random float32 values', () => {
    const random = rng(0x5eed16);
    const n = 100_000;
    const bits = new Uint32Array(n);
    for (let i = 0; i < n; i++) {
      const sign = random() < 0.5 ? 0x80000000 : 0;
      const mantissa = Math.floor(random() * 0x800000);
      // Mostly biased exponents 97..144 (2^-30 .. 2^17: below the subnormals to past overflow), some anywhere.
      const exponent = i % 8 === 0 ? Math.floor(random() * 255) : 97 + Math.floor(random() * 48);
      bits[i] = sign | (exponent << 23) | mantissa;
    }
    const values = new Float32Array(bits.buffer);
    const out = encodeFloat16(values);
    expect(mismatches(n, (i) => out[i], (i) => roundReference(F16_POSITIVES, values[i]))).toEqual([]);
  });
});

describe('encodeBfloat16', () => {
  it('round-trips all 65536 patterns; NaN patterns come back as the quiet NaN with their sign', () => {
    const back = encodeBfloat16(decodeBfloat16(ALL));
    const expected = (h: number) => (Number.isNaN(bfloat16Reference(h)) ? (h & 0x8000) | 0x7fc0 : h);
    expect(mismatches(65536, (i) => back[i], expected)).toEqual([]);
  });

  it('rounds every midpoint between neighbours to the even one, and just off it to the nearer one', () => {
    const bits: number[] = [];
    const expected: number[] = [];
    for (let h = 0; h < 0x7f80; h++) {
      const mid = ((h << 16) | 0x8000) >>> 0; // the float32 halfway between h and h + 1
      for (const sign of [0, 0x8000]) {
        const s = sign ? 0x80000000 : 0;
        bits.push(s | mid, s | (mid - 1), s | (mid + 1));
        expected.push(sign | (h % 2 === 0 ? h : h + 1), sign | h, sign | (h + 1));
      }
    }
    const values = fromBits(bits);
    const out = encodeBfloat16(values);
    expect(mismatches(bits.length, (i) => out[i], (i) => expected[i])).toEqual([]);
    expect(mismatches(bits.length, (i) => out[i], (i) => roundReference(BF16_POSITIVES, values[i]))).toEqual([]);
  });

  it('rounds hand-picked ties to even, overflows to Inf, keeps ±0', () => {
    const values = f32([1 + 2 ** -8, 1 + 3 * 2 ** -8, float32Of(0x7f7fffff), float32Of(0x7f7f7fff), 0, -0]);
    expect([...encodeBfloat16(values)]).toEqual([0x3f80, 0x3f82, 0x7f80, 0x7f7f, 0x0000, 0x8000]);
    expect([...encodeBfloat16(f32([Infinity, -Infinity, float32Of(0xff7f8000)]))]).toEqual([0x7f80, 0xff80, 0xff80]);
  });

  it('encodes NaN (any payload, quiet or signalling) as the quiet NaN with its sign', () => {
    const nan = fromBits([0x7fc00000, 0xffc00000, 0x7f800001, 0xff800001, 0x7fffffff, 0xffffffff, 0x7f80ffff]);
    expect([...encodeBfloat16(nan)]).toEqual([0x7fc0, 0xffc0, 0x7fc0, 0xffc0, 0x7fc0, 0xffc0, 0x7fc0]);
  });

  it('matches the reference rounding on 100k seeded random float32 values', () => {
    const random = rng(0xbf16);
    const n = 100_000;
    const bits = new Uint32Array(n);
    for (let i = 0; i < n; i++) {
      let b: number;
      do b = Math.floor(random() * 2 ** 32);
      while ((b & 0x7fffffff) > 0x7f800000); // NaN is checked above, not against the reference
      bits[i] = b;
    }
    const values = new Float32Array(bits.buffer);
    const out = encodeBfloat16(values);
    expect(mismatches(n, (i) => out[i], (i) => roundReference(BF16_POSITIVES, values[i]))).toEqual([]);
  });
});

describe('out arguments', () => {
  it('writes into out, also a view at an offset, and returns it', () => {
    const buffer = new ArrayBuffer(64);
    const out32 = new Float32Array(buffer, 8, 3);
    expect(decodeFloat16(Uint16Array.from([0x3c00, 0xc000, 0x8000]), out32)).toBe(out32);
    expect([...out32]).toEqual([1, -2, -0]);
    expect(new Float32Array(buffer, 0, 2).every((x) => x === 0)).toBe(true);
    expect(decodeBfloat16(Uint16Array.from([0x3f80, 0xc000, 0x7f80]), out32)).toBe(out32);
    expect([...out32]).toEqual([1, -2, Infinity]);

    const out16 = new Uint16Array(buffer, 2, 3);
    const values = new Float32Array(buffer, 8, 3); // the same memory as out32: read as input here
    expect(encodeFloat16(values, out16)).toBe(out16);
    expect([...out16]).toEqual([0x3c00, 0xc000, 0x7c00]);
    expect(encodeBfloat16(f32([1, -2, 0.5]), out16)).toBe(out16);
    expect([...out16]).toEqual([0x3f80, 0xc000, 0x3f00]);
  });

  it('throws RangeError when out has a different length', () => {
    const bits = new Uint16Array(4);
    const values = new Float32Array(4);
    for (const call of [
      () => decodeFloat16(bits, new Float32Array(3)),
      () => decodeBfloat16(bits, new Float32Array(5)),
      () => encodeFloat16(values, new Uint16Array(3)),
      () => encodeBfloat16(values, new Uint16Array(5)),
      () => decodeHalf('float16', bits, new Float32Array(0)),
      () => encodeHalf('bfloat16', values, new Uint16Array(8)),
    ]) {
      expect(call).toThrow(RangeError);
      expect(call).toThrow(/^out has length \d+, expected 4/);
    }
  });

  it('handles empty inputs', () => {
    expect(decodeFloat16(new Uint16Array(0)).length).toBe(0);
    expect(encodeBfloat16(new Float32Array(0)).length).toBe(0);
  });
});

describe('decodeHalf / encodeHalf', () => {
  it('dispatch on dtype', () => {
    const bits = Uint16Array.from([0x3c00, 0x3f80, 0x7bff, 0x0001]);
    expect(decodeHalf('float16', bits)).toEqual(decodeFloat16(bits));
    expect(decodeHalf('bfloat16', bits)).toEqual(decodeBfloat16(bits));
    const values = f32([1, 1.5, 65504, 2 ** -24]);
    expect(encodeHalf('float16', values)).toEqual(encodeFloat16(values));
    expect(encodeHalf('bfloat16', values)).toEqual(encodeBfloat16(values));
  });

  it('reject other dtypes with RangeError', () => {
    expect(() => decodeHalf('float32' as never, new Uint16Array(1))).toThrow(/^dtype is "float32", expected/);
    expect(() => encodeHalf('int8' as never, new Float32Array(1))).toThrow(RangeError);
  });
});

describe('Float16Array detection', () => {
  const native = float16ArrayConstructor();

  it('reports exactly what the runtime has', () => {
    expect(native).toBe((globalThis as { Float16Array?: unknown }).Float16Array);
  });

  it('isFloat16Array is false for everything else, fakes included', () => {
    const fake = { [Symbol.toStringTag]: 'Float16Array', length: 0 };
    const tagged = Object.defineProperty(new Uint16Array(2), Symbol.toStringTag, { value: 'Float16Array' });
    for (const value of [new Float32Array(2), new Uint16Array(2), tagged, fake, [], null, undefined, 1]) {
      expect(isFloat16Array(value)).toBe(false);
    }
  });

  it.runIf(native !== undefined)('recognises a native Float16Array and agrees with its conversions', () => {
    const Native = native!;
    expect(isFloat16Array(new Native(4))).toBe(true);
    const asNative = new Native(ALL.buffer);
    const ours = decodeFloat16(ALL);
    expect(mismatches(65536, (i) => ours[i], (i) => asNative[i])).toEqual([]);
    const values = new Float32Array(new Uint32Array(100_000).map((_, i) => Math.imul(i, 0x9e3779b1)).buffer);
    const rounded = new Uint16Array(new Native(values).buffer);
    const mine = encodeFloat16(values);
    const isNaN16 = (h: number) => (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
    expect(mismatches(values.length, (i) => (isNaN16(mine[i]) ? 'NaN' : mine[i]), (i) =>
      isNaN16(rounded[i]) ? 'NaN' : rounded[i])).toEqual([]);
  });
});
