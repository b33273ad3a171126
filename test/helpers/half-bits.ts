// The exact values of float16 and bfloat16 bit patterns, and test inputs stored in them, written
// independently of lib/half.ts (by formula and through DataView), so that the tests check it too.

export type HalfDType = 'float16' | 'bfloat16';

const view = new DataView(new ArrayBuffer(4));

/** The value a 16-bit pattern represents. */
export function halfValue(dtype: HalfDType, bits: number): number {
  if (dtype === 'bfloat16') {
    view.setUint32(0, bits << 16);
    return view.getFloat32(0);
  }
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0x1f) return mantissa === 0 ? sign * Infinity : NaN;
  if (exponent === 0) return sign * Math.pow(2, -14) * (mantissa / 1024);
  return sign * Math.pow(2, exponent - 15) * (1 + mantissa / 1024);
}

export function halfValues(dtype: HalfDType, bits: Uint16Array): Float32Array {
  return Float32Array.from(bits, (b) => halfValue(dtype, b));
}

/** Some pattern near x (inputs only need to be representable, not correctly rounded). */
export function toHalfBits(dtype: HalfDType, values: Float32Array): Uint16Array {
  const bits = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const x = values[i];
    if (dtype === 'bfloat16') {
      view.setFloat32(0, x);
      bits[i] = view.getUint32(0) >>> 16;  // truncation
      continue;
    }
    // float16 for |x| in [2^-14, 65504]: exponent and a truncated 10-bit mantissa.
    const sign = x < 0 ? 0x8000 : 0;
    const a = Math.abs(x);
    const exponent = Math.floor(Math.log2(a));
    const mantissa = Math.floor((a / Math.pow(2, exponent) - 1) * 1024);
    bits[i] = sign | ((exponent + 15) << 10) | mantissa;
  }
  return bits;
}

/** Half a unit in the last place of the half type at |x| (for normal values). */
export function halfUlp(dtype: HalfDType, x: number): number {
  const mantissaBits = dtype === 'bfloat16' ? 7 : 10;
  const minExponent = dtype === 'bfloat16' ? -126 : -14;
  const exponent = Math.max(minExponent, Math.floor(Math.log2(Math.abs(x) || Number.MIN_VALUE)));
  return Math.pow(2, exponent - mantissaBits);
}
