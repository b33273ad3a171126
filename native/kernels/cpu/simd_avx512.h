// AVX-512 (F/DQ/BW/VL) vocabulary: 16 floats per vector, 32 vector registers, mask registers for
// the tails.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace gla {
namespace cpu {
namespace avx512 {
namespace simd {

using V = __m512;
constexpr int kWidth = 16;
// Scores: 4 x 4 vectors = 16 accumulators + 4 loaded + 1 broadcast. P V: 6 rows x 4 vectors = 24
// accumulators + 4 V vectors + 1 broadcast, inside 32 registers; 6 rows (not 4) load each V row
// once per 6 query rows (bench/NOTES.md section 5).
constexpr int kScoreKeys = 4;
constexpr int kScoreVecs = 4;
constexpr int kAccRows = 6;
constexpr int kAccVecs = 4;
// Default tiles for head_dim <= 128 (measured on Zen 4, bench/NOTES.md section 5: 128 rows read
// each K/V block once per 128 query rows; 4-9% over 64 rows at d 64 and d 128).
constexpr int kBlockRows = 128;
constexpr int kBlockKeys = 128;
// Row-major scores win while rows * (head_dim / 16 + a reduction) < head_dim broadcasts.
constexpr int kFewRows = 4;

inline V zero() { return _mm512_setzero_ps(); }
inline V broadcast(float x) { return _mm512_set1_ps(x); }
inline V load(const float* p) { return _mm512_loadu_ps(p); }
inline void store(float* p, V x) { _mm512_storeu_ps(p, x); }
inline __mmask16 tail_mask(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
inline V load_partial(const float* p, int n) { return _mm512_maskz_loadu_ps(tail_mask(n), p); }
inline void store_partial(float* p, V x, int n) { _mm512_mask_storeu_ps(p, tail_mask(n), x); }
inline V add(V a, V b) { return _mm512_add_ps(a, b); }
inline V sub(V a, V b) { return _mm512_sub_ps(a, b); }
inline V mul(V a, V b) { return _mm512_mul_ps(a, b); }
inline V div(V a, V b) { return _mm512_div_ps(a, b); }
inline V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
// c - a * b, and |x| (the sign bit cleared).
inline V fnmadd(V a, V b, V c) { return _mm512_fnmadd_ps(a, b, c); }
inline V abs(V x) { return _mm512_abs_ps(x); }
inline V max(V a, V b) { return _mm512_max_ps(a, b); }
inline V min(V a, V b) { return _mm512_min_ps(a, b); }
inline float reduce_add(V x) {
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(x),
                                 _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
// out[i] = reduce_add(x[i]), i < 4: the four reductions share their shuffles (13 instructions
// against some 28 for four reduce_add), which is what the decode path's dot products end in.
inline void reduce_add_4(const V (&x)[4], float* out) {
  const __m512 a = _mm512_add_ps(_mm512_unpacklo_ps(x[0], x[1]), _mm512_unpackhi_ps(x[0], x[1]));
  const __m512 b = _mm512_add_ps(_mm512_unpacklo_ps(x[2], x[3]), _mm512_unpackhi_ps(x[2], x[3]));
  // Per 128-bit lane: partial sums of x0, x1, x2, x3.
  const __m512 c = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(b))),
                                 _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(b))));
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(c),
                                 _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(c), 1)));
  _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
}
inline float reduce_max(V x) {
  const __m256 h = _mm256_max_ps(_mm512_castps512_ps256(x),
                                 _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline float first(V x) { return _mm512_cvtss_f32(x); }
// A hint to bring the line holding p into L2 (not L1: it is read a while later).
inline void prefetch_l2(const float* p) { _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T1); }

// Half precision, 16 lanes: float16 through vcvtph2ps / vcvtps2ph (AVX512F), bfloat16 as the top
// half of a float32 (a shift to widen; to narrow, round to nearest even on the bits and keep NaNs
// quiet, since adding the rounding bias to a NaN with a low payload would carry into Inf).
inline __m256i load_u16(const uint16_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline __m256i load_u16_partial(const uint16_t* p, int n) { return _mm256_maskz_loadu_epi16(tail_mask(n), p); }
inline V widen_f16(__m256i h) { return _mm512_cvtph_ps(h); }
inline V widen_bf16(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }
inline __m256i narrow_f16(V x) { return _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
inline __m256i narrow_bf16(V x) {
  const __m512i bits = _mm512_castps_si512(x);
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), odd)), 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
  rounded = _mm512_mask_mov_epi32(rounded, nan, _mm512_or_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(0x40)));
  return _mm512_cvtepi32_epi16(rounded);
}
inline void store_u16(uint16_t* p, __m256i h) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), h); }
inline void store_u16_partial(uint16_t* p, __m256i h, int n) { _mm256_mask_storeu_epi16(p, tail_mask(n), h); }

// bfloat16 dot products (AVX512_BF16), for the kernels' bfloat16 path (bf16_products.h). Only the
// functions marked GLA_BF16 use them, and the driver calls those only on CPUs that have them.
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 10)
#define GLA_KERNEL_BF16_DOT 1
#define GLA_BF16 __attribute__((target("avx512bf16,avx512f,avx512bw,avx512vl,avx512dq,fma")))
// 32 bfloat16 in a register, however the compiler spells the type (GCC < 13: short lanes).
GLA_BF16 inline __m512bh as_bf16(__m512i x) { return reinterpret_cast<__m512bh&>(x); }
// (lo[i], hi[i]) as bfloat16 pairs in 32-bit lane i (lo the low half), rounded to nearest even.
GLA_BF16 inline __m512i bf16_pairs(V lo, V hi) {
  const __m512bh both = _mm512_cvtne2ps_pbh(hi, lo);  // lo in elements 0-15, hi in 16-31
  const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22,
                                              6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  return _mm512_permutexvar_epi16(interleave, reinterpret_cast<const __m512i&>(both));
}
// lo then hi as 32 consecutive bfloat16 (a row of K in its natural order).
GLA_BF16 inline __m512i bf16_run(V lo, V hi) {
  const __m512bh both = _mm512_cvtne2ps_pbh(hi, lo);
  return reinterpret_cast<const __m512i&>(both);
}
#endif

inline V round_nearest(V x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
// vscalefps computes y * 2^n in one instruction.
inline V scale_pow2(V y, V n) { return _mm512_scalef_ps(y, n); }
inline V select_less(V a, V b, V if_less, V otherwise) {
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_LT_OQ), otherwise, if_less);
}

}  // namespace simd
}  // namespace avx512
}  // namespace cpu
}  // namespace gla
