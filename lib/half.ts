// 16-bit floating point <-> float32 conversion, for callers whose tensors are stored as float16 or bfloat16.
// Every float16 and bfloat16 value is exactly a float32, so decoding is exact and encoding is the only rounding:
// once, from the float32 value, to nearest with ties to even, as IEEE 754 does. Both directions work on the raw
// bits through Uint32Array views: no DataView calls and no Math.fround, so a conversion is one pass of integer ops.

import { argumentError, rangeError } from './errors';

/** Element types a tensor may be stored as; float32 is what the kernels compute in. */
export type DType = 'float32' | 'float16' | 'bfloat16';

/** The 16-bit storage types, the ones that need converting. */
export type HalfDType = Exclude<DType, 'float32'>;

/** The float32 bits of `f` (a view, not a copy), so results are written and read as integers. */
function bitsOf(f: Float32Array): Uint32Array {
  return new Uint32Array(f.buffer, f.byteOffset, f.length);
}

function checkOut(out: { length: number }, length: number): void {
  // A shorter or longer out would silently drop or leave stale elements, so it is an error rather than a resize.
  if (out.length !== length) {
    throw argumentError(RangeError, 'out', `has length ${out.length}`, `${length} (the input's length)`);
  }
}

// float16 -> float32 bits for all 65536 patterns: 256 KiB, built on first use so that callers who never
// decode float16 never pay for it; a lookup is cheaper than the branches the subnormal case needs.
let float16Table: Uint32Array | undefined;

function buildFloat16Table(): Uint32Array {
  const table = new Uint32Array(65536);
  const scratch = new Float32Array(1);
  const scratchBits = bitsOf(scratch);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exponent = (h >>> 10) & 0x1f;
    const mantissa = h & 0x3ff;
    if (exponent === 0x1f) {
      // Inf, or NaN keeping its sign and payload (the payload's top bit is the quiet bit in both formats).
      table[h] = sign | 0x7f800000 | (mantissa << 13);
    } else if (exponent === 0) {
      // ±0 and subnormals, m·2^-24: exact in float64 and in float32; the sign goes on as a bit so -0 stays -0.
      scratch[0] = mantissa * 2 ** -24;
      table[h] = sign | scratchBits[0];
    } else {
      // Normal: rebias the exponent from 15 to 127 (112 << 23) and widen the mantissa from 10 to 23 bits.
      table[h] = sign | ((exponent + 112) << 23) | (mantissa << 13);
    }
  }
  return table;
}

/** The exact float32 value of each float16 pattern; `out`, when given, must have `bits.length` elements. */
export function decodeFloat16(bits: Uint16Array, out?: Float32Array): Float32Array {
  const n = bits.length;
  if (out === undefined) out = new Float32Array(n);
  else checkOut(out, n);
  const table = (float16Table ??= buildFloat16Table());
  const out32 = bitsOf(out);
  for (let i = 0; i < n; i++) out32[i] = table[bits[i]];
  return out;
}

/** The exact float32 value of each bfloat16 pattern: bfloat16 is the top half of a float32, so a 16-bit shift. */
export function decodeBfloat16(bits: Uint16Array, out?: Float32Array): Float32Array {
  const n = bits.length;
  if (out === undefined) out = new Float32Array(n);
  else checkOut(out, n);
  const out32 = bitsOf(out);
  for (let i = 0; i < n; i++) out32[i] = bits[i] << 16;
  return out;
}

/** float32 bits -> float16 bits, round to nearest, ties to even. */
function float16Of(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const abs = x & 0x7fffffff;
  if (abs >= 0x7f800000) return abs === 0x7f800000 ? sign | 0x7c00 : sign | 0x7e00; // Inf; NaN -> quiet NaN
  // 65520 = 65504 + half an ulp (16) is the midpoint to the next power of two; the tie goes to even, which is Inf.
  if (abs >= 0x477ff000) return sign | 0x7c00;
  if (abs >= 0x38800000) {
    // Normal (>= 2^-14): rebias and drop 13 mantissa bits; adding 0xfff plus the kept lsb rounds ties to even, and
    // a carry out of the mantissa correctly bumps the exponent.
    return sign | ((abs - 0x38000000 + 0xfff + ((abs >>> 13) & 1)) >>> 13);
  }
  // <= 2^-25 is at most half the smallest subnormal (2^-24); exactly half ties to even, which is 0.
  if (abs <= 0x33000000) return sign;
  // Subnormal: the value in units of 2^-24 is the full significand shifted right by 126 - exponent (14..24 bits).
  const shift = 126 - (abs >>> 23);
  const significand = (abs & 0x7fffff) | 0x800000;
  let h = significand >>> shift;
  const rest = significand & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (rest > half || (rest === half && (h & 1) !== 0)) h++; // may reach 0x400, the smallest normal: still right
  return sign | h;
}

/** float16 bits of each value, rounded to nearest (ties to even); overflow gives ±Inf, NaN a quiet NaN. */
export function encodeFloat16(values: Float32Array, out?: Uint16Array): Uint16Array {
  const n = values.length;
  if (out === undefined) out = new Uint16Array(n);
  else checkOut(out, n);
  const in32 = bitsOf(values);
  for (let i = 0; i < n; i++) out[i] = float16Of(in32[i]);
  return out;
}

/** bfloat16 bits of each value, rounded to nearest (ties to even); overflow gives ±Inf, NaN a quiet NaN. */
export function encodeBfloat16(values: Float32Array, out?: Uint16Array): Uint16Array {
  const n = values.length;
  if (out === undefined) out = new Uint16Array(n);
  else checkOut(out, n);
  const in32 = bitsOf(values);
  for (let i = 0; i < n; i++) {
    const x = in32[i];
    // NaN must not round: a payload in the low bits only could carry into the exponent (or vanish into Inf).
    if ((x & 0x7fffffff) > 0x7f800000) out[i] = ((x >>> 16) & 0x8000) | 0x7fc0;
    // Keep the top 16 bits, adding 0x7fff plus the kept lsb first: ties to even; a carry into the exponent rounds
    // up to the next binade or, past the largest finite value, to Inf. The sum stays below 2^32 for non-NaN x.
    else out[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
  }
  return out;
}

function checkHalfDType(dtype: unknown): never {
  throw rangeError('dtype', dtype, '"float16" or "bfloat16"');
}

/** decodeFloat16 or decodeBfloat16, by `dtype`. */
export function decodeHalf(dtype: HalfDType, bits: Uint16Array, out?: Float32Array): Float32Array {
  if (dtype === 'float16') return decodeFloat16(bits, out);
  if (dtype === 'bfloat16') return decodeBfloat16(bits, out);
  return checkHalfDType(dtype);
}

/** encodeFloat16 or encodeBfloat16, by `dtype`. */
export function encodeHalf(dtype: HalfDType, values: Float32Array, out?: Uint16Array): Uint16Array {
  if (dtype === 'float16') return encodeFloat16(values, out);
  if (dtype === 'bfloat16') return encodeBfloat16(values, out);
  return checkHalfDType(dtype);
}

/** globalThis.Float16Array where the runtime has one (Node 24+), else undefined: detected, never assumed. */
export function float16ArrayConstructor(): (new (...args: any[]) => any) | undefined {
  const candidate = (globalThis as { Float16Array?: unknown }).Float16Array;
  return typeof candidate === 'function' ? (candidate as new (...args: any[]) => any) : undefined;
}

// %TypedArray%.prototype[Symbol.toStringTag] reads the internal type name, so unlike Object.prototype.toString it
// cannot be faked by an own Symbol.toStringTag, and unlike instanceof it also recognises arrays from other realms.
const typedArrayTag = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(Uint8Array.prototype), Symbol.toStringTag)
  ?.get as ((this: unknown) => string | undefined) | undefined;

/** Whether `value` is a native Float16Array; always false on runtimes without one. */
export function isFloat16Array(value: unknown): boolean {
  if (float16ArrayConstructor() === undefined || !ArrayBuffer.isView(value)) return false;
  return typedArrayTag !== undefined && typedArrayTag.call(value) === 'Float16Array';
}
