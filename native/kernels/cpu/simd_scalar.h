// The portable vocabulary: one float per "vector". No intrinsics, so it builds on any architecture;
// the compiler is free to vectorise the loops for the baseline ISA (SSE2, NEON).
#pragma once

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
inline V fmadd(V a, V b, V c) { return a * b + c; }
inline V max(V a, V b) { return a > b ? a : b; }
inline V min(V a, V b) { return a < b ? a : b; }
inline float reduce_add(V x) { return x; }
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

}  // namespace simd
}  // namespace scalar
}  // namespace cpu
}  // namespace gla
