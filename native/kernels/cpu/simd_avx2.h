// AVX2 + FMA vocabulary: 8 floats per vector, 16 vector registers.
#pragma once

#include <immintrin.h>

#include <cstdint>

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
inline V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
inline V max(V a, V b) { return _mm256_max_ps(a, b); }
inline V min(V a, V b) { return _mm256_min_ps(a, b); }
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
