// AVX2 + FMA vocabulary: 8 floats per vector, 16 vector registers.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace gla {
namespace cpu {
namespace avx2 {
namespace simd {

using V = __m256;
constexpr int kWidth = 8;
// Scores: 4 x 2 vectors = 8 accumulators + 2 loaded + 1 broadcast (6 keys measured no faster).
// P V: 6 rows x 2 vectors = 12 accumulators + 2 V vectors + 1 broadcast = 15 of the 16 registers;
// each V row is loaded once per 6 query rows (+9% at head_dim 128 over 4 rows on Zen 4, d64 even;
// bench/NOTES.md section 8).
constexpr int kScoreKeys = 4;
constexpr int kScoreVecs = 2;
constexpr int kAccRows = 6;
constexpr int kAccVecs = 2;
// Default tiles for head_dim <= 128 (measured on Zen 4: a 64 x 64 score block, 16 KiB, stays in L1).
constexpr int kBlockRows = 64;
constexpr int kBlockKeys = 64;
// Row-major scores win while rows * (head_dim / 8 + a reduction) < head_dim broadcasts.
constexpr int kFewRows = 4;

inline V zero() { return _mm256_setzero_ps(); }
inline V broadcast(float x) { return _mm256_set1_ps(x); }
inline V load(const float* p) { return _mm256_loadu_ps(p); }
inline void store(float* p, V x) { _mm256_storeu_ps(p, x); }
// Lanes [0, n) on, the rest off: compare the lane indices against n.
inline __m256i tail_mask(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline V load_partial(const float* p, int n) { return _mm256_maskload_ps(p, tail_mask(n)); }
inline void store_partial(float* p, V x, int n) { _mm256_maskstore_ps(p, tail_mask(n), x); }
inline V add(V a, V b) { return _mm256_add_ps(a, b); }
inline V sub(V a, V b) { return _mm256_sub_ps(a, b); }
inline V mul(V a, V b) { return _mm256_mul_ps(a, b); }
inline V div(V a, V b) { return _mm256_div_ps(a, b); }
inline V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
// c - a * b, and |x| (the sign bit cleared).
inline V fnmadd(V a, V b, V c) { return _mm256_fnmadd_ps(a, b, c); }
inline V abs(V x) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x); }
inline V max(V a, V b) { return _mm256_max_ps(a, b); }
inline V min(V a, V b) { return _mm256_min_ps(a, b); }
// out[i] = reduce_add(x[i]), i < 4, sharing the shuffles (see simd_avx512.h).
inline void reduce_add_4(const V (&x)[4], float* out) {
  const __m256 a = _mm256_add_ps(_mm256_unpacklo_ps(x[0], x[1]), _mm256_unpackhi_ps(x[0], x[1]));
  const __m256 b = _mm256_add_ps(_mm256_unpacklo_ps(x[2], x[3]), _mm256_unpackhi_ps(x[2], x[3]));
  const __m256 c = _mm256_add_ps(_mm256_castpd_ps(_mm256_unpacklo_pd(_mm256_castps_pd(a), _mm256_castps_pd(b))),
                                 _mm256_castpd_ps(_mm256_unpackhi_pd(_mm256_castps_pd(a), _mm256_castps_pd(b))));
  _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(c), _mm256_extractf128_ps(c, 1)));
}
inline float reduce_add(V x) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline float reduce_max(V x) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline float first(V x) { return _mm256_cvtss_f32(x); }
// A hint to bring the line holding p into L2 (not L1: it is read a while later).
inline void prefetch_l2(const float* p) { _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T1); }

// Half precision, 8 lanes: float16 through F16C (vcvtph2ps / vcvtps2ph; the dispatcher requires it
// with AVX2), bfloat16 as the top half of a float32 (see simd_avx512.h for the narrowing). Tails go
// through a zeroed stack copy: AVX2 has no masked 16-bit loads.
using H = __m128i;
inline H load_u16(const uint16_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }
inline H load_u16_partial(const uint16_t* p, int n) {
  uint16_t lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::memcpy(lanes, p, static_cast<size_t>(n) * sizeof(uint16_t));
  return load_u16(lanes);
}
inline V widen_f16(H h) { return _mm256_cvtph_ps(h); }
inline V widen_bf16(H h) { return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)); }
inline H narrow_f16(V x) { return _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
inline H narrow_bf16(V x) {
  const __m256i bits = _mm256_castps_si256(x);
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(bits, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), odd)), 16);
  const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(0x40));
  rounded = _mm256_blendv_epi8(rounded, quiet, _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q)));
  // Every lane is below 2^16, so the signed-to-unsigned saturating pack is exact.
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(rounded, rounded), 0x08);
  return _mm256_castsi256_si128(packed);
}
inline void store_u16(uint16_t* p, H h) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), h); }
inline void store_u16_partial(uint16_t* p, H h, int n) {
  uint16_t lanes[8];
  store_u16(lanes, h);
  std::memcpy(p, lanes, static_cast<size_t>(n) * sizeof(uint16_t));
}

inline V round_nearest(V x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
// y * 2^n for integer-valued n in [-126, 127], built from the exponent bits. A NaN n (from a NaN y)
// converts to 0x80000000, which gives the factor 1.0f: y's NaN comes through.
inline V scale_pow2(V y, V n) {
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(bits));
}
inline V select_less(V a, V b, V if_less, V otherwise) {
  return _mm256_blendv_ps(otherwise, if_less, _mm256_cmp_ps(a, b, _CMP_LT_OQ));
}

}  // namespace simd
}  // namespace avx2
}  // namespace cpu
}  // namespace gla
