// The portable vocabulary: one float per "vector". No intrinsics, so it builds on any architecture;
// the compiler is free to vectorise the loops for the baseline ISA (SSE2, NEON).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace gla {
namespace cpu {
namespace scalar {
namespace simd {

using V = float;
constexpr int kWidth = 1;
constexpr int kScoreKeys = 4;
constexpr int kScoreVecs = 4;
constexpr int kAccRows = 4;
constexpr int kAccVecs = 4;
constexpr int kBlockRows = 64;
constexpr int kBlockKeys = 64;
constexpr int kFewRows = 0;  // one lane: both layouts cost the same, keep the one path

inline V zero() { return 0.0f; }
inline V broadcast(float x) { return x; }
inline V load(const float* p) { return *p; }
inline void store(float* p, V x) { *p = x; }
inline V load_partial(const float* p, int n) { return n > 0 ? *p : 0.0f; }
inline void store_partial(float* p, V x, int n) {
  if (n > 0) *p = x;
}
inline V add(V a, V b) { return a + b; }
inline V sub(V a, V b) { return a - b; }
inline V mul(V a, V b) { return a * b; }
inline V div(V a, V b) { return a / b; }
inline V fmadd(V a, V b, V c) { return a * b + c; }
// c - a * b, and |x| (the sign bit cleared).
inline V fnmadd(V a, V b, V c) { return c - a * b; }
inline V abs(V x) { return std::fabs(x); }
inline V max(V a, V b) { return a > b ? a : b; }
inline V min(V a, V b) { return a < b ? a : b; }
inline float reduce_add(V x) { return x; }
inline void reduce_add_4(const V (&x)[4], float* out) {
  for (int i = 0; i < 4; ++i) out[i] = x[i];
}
inline float reduce_max(V x) { return x; }
inline float first(V x) { return x; }
inline void prefetch_l2(const float*) {}  // the portable build gives no cache hints

// Adding and subtracting 1.5 * 2^23 rounds to nearest-even without a libm call; valid for
// |x| < 2^22, which exp's clamped argument respects. (IEEE arithmetic forbids folding it away.)
inline V round_nearest(V x) {
  const float magic = 12582912.0f;
  return (x + magic) - magic;
}
// y * 2^n for integer-valued n in [-126, 127], built from the exponent bits.
inline V scale_pow2(V y, V n) {
  // n is NaN only when y is (exp of NaN): keep the conversion defined, y carries the NaN.
  const int32_t bits = ((n == n ? static_cast<int32_t>(n) : 0) + 127) << 23;
  float pow2;
  std::memcpy(&pow2, &bits, sizeof pow2);
  return y * pow2;
}
inline V select_less(V a, V b, V if_less, V otherwise) { return a < b ? if_less : otherwise; }

// Half precision, one lane, by bit arithmetic (the same results as F16C and the bfloat16 rounding
// of the SIMD vocabularies: nearest even, NaNs kept quiet).
using H = uint16_t;
inline H load_u16(const uint16_t* p) { return *p; }
inline H load_u16_partial(const uint16_t* p, int n) { return n > 0 ? *p : 0; }
inline void store_u16(uint16_t* p, H h) { *p = h; }
inline void store_u16_partial(uint16_t* p, H h, int n) {
  if (n > 0) *p = h;
}
inline float float_from_bits(uint32_t bits) {
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}
inline uint32_t bits_of(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return bits;
}
inline V widen_bf16(H h) { return float_from_bits(static_cast<uint32_t>(h) << 16); }
inline V widen_f16(H h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0x1f) return float_from_bits(sign | 0x7f800000u | (mantissa << 13));  // Inf, NaN
  if (exponent != 0) return float_from_bits(sign | ((exponent + 112) << 23) | (mantissa << 13));
  // Zero and subnormals: mantissa * 2^-24, exact in float32.
  const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
  return sign != 0 ? -magnitude : magnitude;
}
inline H narrow_bf16(V x) {
  const uint32_t bits = bits_of(x);
  if (x != x) return static_cast<H>((bits >> 16) | 0x40u);
  return static_cast<H>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}
inline H narrow_f16(V x) {
  const uint32_t bits = bits_of(x);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return static_cast<H>(sign | 0x7e00u | ((magnitude >> 13) & 0x3ffu));  // NaN, quiet
  if (magnitude >= 0x477ff000u) return static_cast<H>(sign | 0x7c00u);  // rounds to >= 2^16: Inf
  if (magnitude >= 0x38800000u) {  // normal in float16 (>= 2^-14)
    const uint32_t rounded = magnitude + 0xfffu + ((magnitude >> 13) & 1u);
    return static_cast<H>(sign | ((rounded - 0x38000000u) >> 13));
  }
  // Subnormal or zero in float16: magnitude * 2^24 rounded to an integer (nearest even). The
  // product is exact, and for values below 2^-14 it is below 2^10, where the magic-number rounding
  // of round_nearest is valid.
  const float scaled = float_from_bits(magnitude) * 16777216.0f;
  return static_cast<H>(sign | static_cast<uint32_t>(round_nearest(scaled)));
}

}  // namespace simd
}  // namespace scalar
}  // namespace cpu
}  // namespace gla
