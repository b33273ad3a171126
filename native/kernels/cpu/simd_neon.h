// NEON vocabulary (AArch64 Advanced SIMD, the baseline of every arm64 CPU): 4 floats per vector,
// 32 vector registers. max and min keep the x86 and scalar semantics the kernels are written for
// (a > b ? a : b: the second operand when either is NaN), not NEON's NaN-propagating FMAX/FMIN, so
// that every backend takes the same branch on a NaN score.
#pragma once

#include <arm_neon.h>

#include <cstdint>
#include <cstring>

namespace gla {
namespace cpu {
namespace neon {
namespace simd {

using V = float32x4_t;
constexpr int kWidth = 4;
// Scores: 4 keys x 4 vectors = 16 accumulators + 4 loaded + 1 broadcast = 21 of the 32 registers.
// P V: 6 rows x 4 vectors = 24 accumulators + 4 V vectors + 1 broadcast = 29.
constexpr int kScoreKeys = 4;
constexpr int kScoreVecs = 4;
constexpr int kAccRows = 6;
constexpr int kAccVecs = 4;
// Default tiles for head_dim <= 128 (a 64 x 64 score block, 16 KiB, stays in L1).
constexpr int kBlockRows = 64;
constexpr int kBlockKeys = 64;
// Row-major scores win while rows * (head_dim / 4 + a reduction) < head_dim broadcasts.
constexpr int kFewRows = 4;

inline V zero() { return vdupq_n_f32(0.0f); }
inline V broadcast(float x) { return vdupq_n_f32(x); }
inline V load(const float* p) { return vld1q_f32(p); }
inline void store(float* p, V x) { vst1q_f32(p, x); }
// Tails through a zeroed stack copy: NEON has no masked loads and stores.
inline V load_partial(const float* p, int n) {
  float lanes[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  std::memcpy(lanes, p, static_cast<size_t>(n) * sizeof(float));
  return vld1q_f32(lanes);
}
inline void store_partial(float* p, V x, int n) {
  float lanes[4];
  vst1q_f32(lanes, x);
  std::memcpy(p, lanes, static_cast<size_t>(n) * sizeof(float));
}
inline V add(V a, V b) { return vaddq_f32(a, b); }
inline V sub(V a, V b) { return vsubq_f32(a, b); }
inline V mul(V a, V b) { return vmulq_f32(a, b); }
inline V div(V a, V b) { return vdivq_f32(a, b); }
inline V fmadd(V a, V b, V c) { return vfmaq_f32(c, a, b); }
// c - a * b, and |x| (the sign bit cleared).
inline V fnmadd(V a, V b, V c) { return vfmsq_f32(c, a, b); }
inline V abs(V x) { return vabsq_f32(x); }
inline V max(V a, V b) { return vbslq_f32(vcgtq_f32(a, b), a, b); }
inline V min(V a, V b) { return vbslq_f32(vcltq_f32(a, b), a, b); }
inline float reduce_add(V x) { return vaddvq_f32(x); }
// out[i] = reduce_add(x[i]), i < 4: two rounds of pairwise adds give all four sums in one vector.
inline void reduce_add_4(const V (&x)[4], float* out) {
  vst1q_f32(out, vpaddq_f32(vpaddq_f32(x[0], x[1]), vpaddq_f32(x[2], x[3])));
}
inline float reduce_max(V x) {
  const float32x2_t half = vget_low_f32(max(x, vcombine_f32(vget_high_f32(x), vget_high_f32(x))));
  const float a = vget_lane_f32(half, 0);
  const float b = vget_lane_f32(half, 1);
  return a > b ? a : b;
}
inline float first(V x) { return vgetq_lane_f32(x, 0); }
// A hint to bring the line holding p into L2 (not L1: it is read a while later).
inline void prefetch_l2(const float* p) { __builtin_prefetch(p, 0, 2); }

// Half precision, 4 lanes: float16 through the AArch64 conversions (exact widening; narrowing
// nearest even with NaNs kept quiet, as F16C does), bfloat16 as the top half of a float32.
using H = uint16x4_t;
inline H load_u16(const uint16_t* p) { return vld1_u16(p); }
inline H load_u16_partial(const uint16_t* p, int n) {
  uint16_t lanes[4] = {0, 0, 0, 0};
  std::memcpy(lanes, p, static_cast<size_t>(n) * sizeof(uint16_t));
  return vld1_u16(lanes);
}
inline V widen_f16(H h) { return vcvt_f32_f16(vreinterpret_f16_u16(h)); }
inline V widen_bf16(H h) { return vreinterpretq_f32_u32(vshll_n_u16(h, 16)); }
inline H narrow_f16(V x) { return vreinterpret_u16_f16(vcvt_f16_f32(x)); }
inline H narrow_bf16(V x) {
  const uint32x4_t bits = vreinterpretq_u32_f32(x);
  const uint32x4_t odd = vandq_u32(vshrq_n_u32(bits, 16), vdupq_n_u32(1));
  const uint32x4_t rounded = vshrq_n_u32(vaddq_u32(bits, vaddq_u32(vdupq_n_u32(0x7fff), odd)), 16);
  const uint32x4_t quiet = vorrq_u32(vshrq_n_u32(bits, 16), vdupq_n_u32(0x40));
  // x == x is false only for NaN lanes, which take the quieted top half instead of the rounding.
  return vmovn_u32(vbslq_u32(vceqq_f32(x, x), rounded, quiet));
}
inline void store_u16(uint16_t* p, H h) { vst1_u16(p, h); }
inline void store_u16_partial(uint16_t* p, H h, int n) {
  uint16_t lanes[4];
  vst1_u16(lanes, h);
  std::memcpy(p, lanes, static_cast<size_t>(n) * sizeof(uint16_t));
}

inline V round_nearest(V x) { return vrndnq_f32(x); }
// y * 2^n for integer-valued n in [-126, 127], built from the exponent bits. A NaN n (from a NaN y)
// converts to 0, which gives the factor 2^0: y's NaN comes through.
inline V scale_pow2(V y, V n) {
  const int32x4_t bits = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
  return vmulq_f32(y, vreinterpretq_f32_s32(bits));
}
inline V select_less(V a, V b, V if_less, V otherwise) { return vbslq_f32(vcltq_f32(a, b), if_less, otherwise); }

}  // namespace simd
}  // namespace neon
}  // namespace cpu
}  // namespace gla
