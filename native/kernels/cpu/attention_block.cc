// The CPU attention kernel: one query row group against one block of keys, FlashAttention style.
// Compiled once per ISA (cmake/cpu_kernels.cmake); everything here lives in gla::cpu::<isa> and
// uses only the vocabulary of simd.h, so the three builds are the same source.
//
// Row groups (the usual case) keep scores transposed, s[key][row], vectors along query rows:
//   compute_scores  s = K Q^T: a key element broadcast times a vector of Q^T (pre-scaled); K is
//                   read in place, so a block needs no packing and gathered keys cost nothing extra.
//                   The tiles mask partial blocks in registers (mask_score_tile: -inf where the
//                   visibility rule says no) and fold the block max per row; after a unit's
//                   first block they first try the fused softmax: the tiles store
//                   exp(s - running max) directly and online_softmax is skipped (try_fused_block)
//   online_softmax  per vector of rows: the block max from the score tiles, new running max,
//                   alpha = exp(old - new), s = exp(s - max), sum = sum * alpha + vertical sum
//   accumulate      acc = acc * alpha + P V: a probability broadcast times a V row read in place;
//                   partial blocks take per row tile only the keys it may weigh (weighed_keys), or
//                   when V holds an inf or NaN only each row's visible keys, so a masked weight 0
//                   never meets them (accumulate_partial); decode prefetches the next block's K
// Groups of at most kFewRows rows (decode) use s[row][key] instead: scores are dot products along
// head_dim (few_rows_scores), a pass masks them (apply_mask), and the softmax is vectorised along
// keys (few_rows_softmax); the accumulate step is shared, reading s through its two strides.
// Each helper is small and register-blocked on its own (kScore*/kAcc* of the vocabulary), ready
// for a tuning pass to re-block or fuse.
#include <algorithm>
#include <limits>

#include "kernels/cpu/kernel_api.h"
#include "kernels/cpu/simd.h"

namespace gla {
namespace cpu {
namespace GLA_KERNEL_NS {
namespace {

using simd::kWidth;
using simd::V;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kLowest = std::numeric_limits<float>::lowest();
constexpr float kHighest = std::numeric_limits<float>::max();

// What a score tile does besides computing (and, in a partial block, masking) its scores:
//   max    store them and fold the block max per row into a.alpha (kept there until the softmax
//          turns it into the rescale factor): no separate max pass
//   fused  fold the block max, but store the weights p = exp(s - running max) and add them into
//          a.block_sum: the softmax needs no pass over s at all (see try_fused_block)
enum class Epilogue { max, fused };

// One K or V row as the kernels read it, in the element type D of the block's rows: float32 (the
// caller's, packed, or widened by the driver), or on the few-rows path float16/bfloat16 read in
// place and widened as it is loaded, so that decode streams half the bytes of float32 once.
template <DType D>
struct Row {
  static constexpr int kBytes = D == DType::float32 ? 4 : 2;
  const unsigned char* p;

  V load(int t) const {
    if constexpr (D == DType::float32) {
      return simd::load(reinterpret_cast<const float*>(p) + t);
    } else {
      const auto bits = simd::load_u16(reinterpret_cast<const uint16_t*>(p) + t);
      return D == DType::float16 ? simd::widen_f16(bits) : simd::widen_bf16(bits);
    }
  }
  V load_partial(int t, int n) const {
    if constexpr (D == DType::float32) {
      return simd::load_partial(reinterpret_cast<const float*>(p) + t, n);
    } else {
      const auto bits = simd::load_u16_partial(reinterpret_cast<const uint16_t*>(p) + t, n);
      return D == DType::float16 ? simd::widen_f16(bits) : simd::widen_bf16(bits);
    }
  }
  // A cache hint for elements t.. (the vocabulary takes a float address; only the line matters).
  void prefetch(int t) const { simd::prefetch_l2(reinterpret_cast<const float*>(p + t * kBytes)); }
};

template <DType D>
inline Row<D> key_row(const BlockArgs& a, int c) {
  return {static_cast<const unsigned char*>(a.k) + a.key_rows[c] * a.k_row_stride * Row<D>::kBytes};
}
template <DType D>
inline Row<D> value_row(const BlockArgs& a, int c) {
  return {static_cast<const unsigned char*>(a.v) + a.key_rows[c] * a.v_row_stride * Row<D>::kBytes};
}

// cap * tanh(x / cap). tanh is Eigen's rational approximation (x P(x^2) / Q(x^2), degrees 13 and 6,
// the input clamped to +-7.9988 where it is 1 to float32): within 4e-7 of tanh everywhere and
// relatively exact near 0, where the form (1 - e^-2t) / (1 + e^-2t) loses all digits to the
// subtraction (softcap 1e4 missed the reference by 8e-5). The clamp keeps a NaN (max and min
// return their second operand when either is NaN), and +-inf scores become +-cap.
inline V soft_cap(V x, V cap, V inv_cap) {
  const V clamp = simd::broadcast(7.99881172180175781f);
  const V t = simd::min(clamp, simd::max(simd::sub(simd::zero(), clamp), simd::mul(x, inv_cap)));
  const V t2 = simd::mul(t, t);
  V p = simd::broadcast(-2.76076847742355e-16f);
  p = simd::fmadd(p, t2, simd::broadcast(2.00018790482477e-13f));
  p = simd::fmadd(p, t2, simd::broadcast(-8.60467152213735e-11f));
  p = simd::fmadd(p, t2, simd::broadcast(5.12229709037114e-08f));
  p = simd::fmadd(p, t2, simd::broadcast(1.48572235717979e-05f));
  p = simd::fmadd(p, t2, simd::broadcast(6.37261928875436e-04f));
  p = simd::fmadd(p, t2, simd::broadcast(4.89352455891786e-03f));
  V q = simd::broadcast(1.19825839466702e-06f);
  q = simd::fmadd(q, t2, simd::broadcast(1.18534705686654e-04f));
  q = simd::fmadd(q, t2, simd::broadcast(2.26843463243900e-03f));
  q = simd::fmadd(q, t2, simd::broadcast(4.89352518554385e-03f));
  return simd::mul(cap, simd::div(simd::mul(p, t), q));
}

inline bool transforms_scores(const BlockArgs& a) { return a.softcap > 0.0f || a.row_slope != nullptr; }

// ALiBi distances are taken from the block's first key, so they stay exact in float32 however long
// the sequence: alibi_rows[r] = p_r - keys[0] and alibi_keys[c] = keys[c] - keys[0], once per block.
void prepare_score_transform(const BlockArgs& a) {
  if (a.row_slope == nullptr) return;
  const int64_t origin = a.keys[0];
  for (int r = 0; r < a.rows_pad; ++r) a.alibi_rows[r] = r < a.rows ? static_cast<float>(a.row_position[r] - origin) : 0.0f;
  for (int c = 0; c < a.n_keys; ++c) a.alibi_keys[c] = static_cast<float>(a.keys[c] - origin);
}

// softcap, then ALiBi's -slope * |p - j| (problem.h's order), on a tile's scores in registers,
// before the epilogue takes its max or its weights; a partial block's mask comes afterwards and
// sets masked pairs to -inf whatever this made of them.
template <int RK, int NV>
inline void transform_score_tile(const BlockArgs& a, int c0, int v0, V (&acc)[RK][NV]) {
  if (a.softcap > 0.0f) {
    const V cap = simd::broadcast(a.softcap);
    const V inv_cap = simd::broadcast(1.0f / a.softcap);
    GLA_UNROLL
    for (int i = 0; i < RK; ++i)
      GLA_UNROLL
      for (int v = 0; v < NV; ++v) acc[i][v] = soft_cap(acc[i][v], cap, inv_cap);
  }
  if (a.row_slope != nullptr) {
    GLA_UNROLL
    for (int v = 0; v < NV; ++v) {
      const V position = simd::load(a.alibi_rows + (v0 + v) * kWidth);
      const V slope = simd::load(a.row_slope + (v0 + v) * kWidth);
      GLA_UNROLL
      for (int i = 0; i < RK; ++i) {
        const V distance = simd::abs(simd::sub(position, simd::broadcast(a.alibi_keys[c0 + i])));
        acc[i][v] = simd::fnmadd(slope, distance, acc[i][v]);
      }
    }
  }
}

// s(key c, row r) lives at s[c * key_stride + r * row_stride] in either layout.
struct ScoreLayout {
  int key_stride;
  int row_stride;
};

// First index in [lo, hi) of the ascending keys whose value is >= j (hi if none).
inline int first_key_at_least(const int64_t* keys, int lo, int hi, int64_t j) {
  while (lo < hi) {
    const int mid = (lo + hi) >> 1;
    if (keys[mid] < j) lo = mid + 1; else hi = mid;
  }
  return lo;
}

// Keys are ascending, so the keys inside row r's window are one index interval [in_begin, in_end).
struct KeyInterval {
  int begin;
  int end;
};

// The index of the first key >= j: arithmetic when the block's keys are consecutive (every block
// cut from a range), a binary search otherwise (gathered global keys).
inline int key_index_at_least(const BlockArgs& a, int lo, int64_t j) {
  if (a.keys[a.n_keys - 1] - a.keys[0] == a.n_keys - 1) {
    const int64_t index = j - a.keys[0];
    return index <= lo ? lo : index >= a.n_keys ? a.n_keys : static_cast<int>(index);
  }
  return first_key_at_least(a.keys, lo, a.n_keys, j);
}

inline KeyInterval window_keys(const BlockArgs& a, int r) {
  const int in_begin = key_index_at_least(a, 0, a.win_begin[r]);
  return {in_begin, key_index_at_least(a, in_begin, a.win_end[r])};
}

// Partial blocks of row groups are masked in the score tiles' registers, before the epilogue takes
// the block max (so a masked score can never set the shift) or the weights. The rule becomes
// bounds on key indices (keys are ascending) once per block, as float32 vectors along rows
// (exact: indices are below block_k): row r sees key c iff lo[r] <= c < hi[r] (its window
// interval), or, for a global key, c < allowed[r] (its kv-length/causal bound). Padding rows
// see every key, as they did unmasked: their scores are 0 and never written out.
void prepare_mask(const BlockArgs& a) {
  float* lo = a.mask_bounds;
  float* hi = lo + a.rows_pad;
  float* allowed = hi + a.rows_pad;
  for (int r = 0; r < a.rows; ++r) {
    const KeyInterval in = window_keys(a, r);
    lo[r] = static_cast<float>(in.begin);
    hi[r] = static_cast<float>(in.end);
    if (a.key_is_global != nullptr) {
      allowed[r] = static_cast<float>(key_index_at_least(a, 0, a.allowed_end[r]));
    }
  }
  for (int r = a.rows; r < a.rows_pad; ++r) {
    lo[r] = 0.0f;
    hi[r] = static_cast<float>(a.n_keys);
    allowed[r] = static_cast<float>(a.n_keys);
  }
}

template <int RK, int NV>
inline void mask_score_tile(const BlockArgs& a, int c0, int v0, V (&acc)[RK][NV]) {
  const V neg_inf = simd::broadcast(kNegInf);
  const float* lo = a.mask_bounds + v0 * kWidth;
  const float* hi = lo + a.rows_pad;
  const float* allowed = hi + a.rows_pad;
  GLA_UNROLL
  for (int i = 0; i < RK; ++i) {
    const V c = simd::broadcast(static_cast<float>(c0 + i));
    const bool global = a.key_is_global != nullptr && a.key_is_global[a.keys[c0 + i]] != 0;
    GLA_UNROLL
    for (int v = 0; v < NV; ++v) {
      if (global) {
        acc[i][v] = simd::select_less(c, simd::load(allowed + v * kWidth), acc[i][v], neg_inf);
      } else {
        acc[i][v] = simd::select_less(c, simd::load(lo + v * kWidth), neg_inf, acc[i][v]);
        acc[i][v] = simd::select_less(c, simd::load(hi + v * kWidth), acc[i][v], neg_inf);
      }
    }
  }
}

// The end of a score tile, whatever computed its products (float32 FMAs here, bfloat16 dot products
// in bf16_products.h): the epilogue E applied to RK keys x NV vectors of rows.
template <int RK, int NV, Epilogue E>
inline void finish_score_tile(const BlockArgs& a, int c0, int v0, V (&acc)[RK][NV]) {
  if (transforms_scores(a)) transform_score_tile<RK, NV>(a, c0, v0, acc);
  if (!a.full) mask_score_tile<RK, NV>(a, c0, v0, acc);
  float* m = a.alpha + v0 * kWidth;
  GLA_UNROLL
  for (int v = 0; v < NV; ++v) {
    V x = simd::load(m + v * kWidth);
    GLA_UNROLL
    for (int i = 0; i < RK; ++i) x = simd::max(x, acc[i][v]);
    simd::store(m + v * kWidth, x);
  }
  if constexpr (E == Epilogue::fused) {
    GLA_UNROLL
    for (int v = 0; v < NV; ++v) {
      const V shift = simd::load(a.row_max + v0 * kWidth + v * kWidth);
      V sum = simd::load(a.block_sum + v0 * kWidth + v * kWidth);
      GLA_UNROLL
      for (int i = 0; i < RK; ++i) {
        const V p = simd::exp(simd::sub(acc[i][v], shift));
        simd::store(a.s + (c0 + i) * a.rows_pad + (v0 + v) * kWidth, p);
        sum = simd::add(sum, p);
      }
      simd::store(a.block_sum + v0 * kWidth + v * kWidth, sum);
    }
    return;
  }
  GLA_UNROLL
  for (int i = 0; i < RK; ++i) {
    float* s = a.s + (c0 + i) * a.rows_pad + v0 * kWidth;
    GLA_UNROLL
    for (int v = 0; v < NV; ++v) simd::store(s + v * kWidth, acc[i][v]);
  }
}

// RK keys x NV vectors of rows of s, accumulated over the head dimension in registers.
template <int RK, int NV, Epilogue E>
inline void score_tile(const BlockArgs& a, int c0, int v0) {
  V acc[RK][NV];
  GLA_UNROLL
  for (int i = 0; i < RK; ++i)
    GLA_UNROLL
    for (int v = 0; v < NV; ++v) acc[i][v] = simd::zero();
  const float* key[RK];
  GLA_UNROLL
  for (int i = 0; i < RK; ++i) key[i] = static_cast<const float*>(a.k) + a.key_rows[c0 + i] * a.k_row_stride;
  const float* qt = a.qt + v0 * kWidth;
  for (int t = 0; t < a.head_dim; ++t) {
    V q[NV];
    GLA_UNROLL
    for (int v = 0; v < NV; ++v) q[v] = simd::load(qt + t * a.rows_pad + v * kWidth);
    GLA_UNROLL
    for (int i = 0; i < RK; ++i) {
      const V kb = simd::broadcast(key[i][t]);
      GLA_UNROLL
      for (int v = 0; v < NV; ++v) acc[i][v] = simd::fmadd(kb, q[v], acc[i][v]);
    }
  }
  finish_score_tile<RK, NV, E>(a, c0, v0, acc);
}

template <int RK, Epilogue E>
inline void score_keys(const BlockArgs& a, int c0) {
  const int vectors = a.rows_pad / kWidth;
  int v0 = 0;
  for (; v0 + simd::kScoreVecs <= vectors; v0 += simd::kScoreVecs) score_tile<RK, simd::kScoreVecs, E>(a, c0, v0);
  for (; v0 < vectors; ++v0) score_tile<RK, 1, E>(a, c0, v0);
}

template <Epilogue E>
void compute_scores(const BlockArgs& a) {
  for (int r0 = 0; r0 < a.rows_pad; r0 += kWidth) simd::store(a.alpha + r0, simd::broadcast(kNegInf));
  if constexpr (E == Epilogue::fused) {
    for (int r0 = 0; r0 < a.rows_pad; r0 += kWidth) simd::store(a.block_sum + r0, simd::zero());
  }
  int c0 = 0;
  for (; c0 + simd::kScoreKeys <= a.n_keys; c0 += simd::kScoreKeys) score_keys<simd::kScoreKeys, E>(a, c0);
  for (; c0 < a.n_keys; ++c0) score_keys<1, E>(a, c0);
}

// Only the keys outside the window interval are touched, with no per-element test unless the
// batch has globals.
void apply_mask(const BlockArgs& a, ScoreLayout layout) {
  for (int r = 0; r < a.rows; ++r) {
    const KeyInterval in = window_keys(a, r);
    const int in_begin = in.begin;
    const int in_end = in.end;
    float* s = a.s + r * layout.row_stride;
    const int64_t allowed_end = a.allowed_end[r];
    const uint8_t* global = a.key_is_global;
    auto mask_outside = [&](int c_begin, int c_end) {
      if (global == nullptr) {
        for (int c = c_begin; c < c_end; ++c) s[c * layout.key_stride] = kNegInf;
        return;
      }
      for (int c = c_begin; c < c_end; ++c) {
        const int64_t j = a.keys[c];
        if (global[j] == 0 || j >= allowed_end) s[c * layout.key_stride] = kNegInf;
      }
    };
    mask_outside(0, in_begin);
    mask_outside(in_end, a.n_keys);
  }
}

// The same transform for the few-rows (decode) layout s[row][key], as a pass over the block's
// scores with vectors along keys; the pad keys past n_keys stay -inf.
void transform_few_rows_scores(const BlockArgs& a, int ld) {
  const bool cap_on = a.softcap > 0.0f;
  const bool alibi = a.row_slope != nullptr;
  const V cap = simd::broadcast(a.softcap);
  const V inv_cap = simd::broadcast(cap_on ? 1.0f / a.softcap : 0.0f);
  const int64_t origin = a.keys[0];
  if (alibi) {
    for (int c = 0; c < ld; ++c) a.alibi_keys[c] = c < a.n_keys ? static_cast<float>(a.keys[c] - origin) : 0.0f;
  }
  for (int r = 0; r < a.rows; ++r) {
    float* s = a.s + r * ld;
    const V position = simd::broadcast(alibi ? static_cast<float>(a.row_position[r] - origin) : 0.0f);
    const V slope = simd::broadcast(alibi ? a.row_slope[r] : 0.0f);
    for (int c0 = 0; c0 < ld; c0 += kWidth) {
      V x = simd::load(s + c0);
      if (cap_on) x = soft_cap(x, cap, inv_cap);
      if (alibi) x = simd::fnmadd(slope, simd::abs(simd::sub(position, simd::load(a.alibi_keys + c0))), x);
      simd::store(s + c0, x);
    }
    for (int c = a.n_keys; c < ld; ++c) s[c] = kNegInf;
  }
}

// a.alpha holds the block max per row (from the score tiles, compute_scores<Epilogue::max>).
void online_softmax(const BlockArgs& a) {
  for (int r0 = 0; r0 < a.rows_pad; r0 += kWidth) {
    const V block_max = simd::load(a.alpha + r0);
    const V old_max = simd::load(a.row_max + r0);
    const V new_max = simd::max(old_max, block_max);
    // Rows that have seen nothing yet keep max -inf; subtracting 0 instead keeps exp(-inf - -inf)
    // (NaN) out: their scores, alpha and sum all come out 0.
    const V shift = simd::select_less(new_max, simd::broadcast(kLowest), simd::zero(), new_max);
    const V alpha = simd::exp(simd::sub(old_max, shift));
    V sum = simd::zero();
    for (int c = 0; c < a.n_keys; ++c) {
      float* s = a.s + c * a.rows_pad + r0;
      const V p = simd::exp(simd::sub(simd::load(s), shift));
      simd::store(s, p);
      sum = simd::add(sum, p);
    }
    simd::store(a.alpha + r0, alpha);
    simd::store(a.row_sum + r0, simd::fmadd(simd::load(a.row_sum + r0), alpha, sum));
    simd::store(a.row_max + r0, new_max);
  }
}

// RB rows x NV vectors of acc: rescaled by alpha once, then accumulated over the keys these rows
// weigh. Tail: the last vector covers only head_dim % kWidth lanes of each V row (never read past).
template <int RB, int NV, bool Tail, DType D>
inline void accumulate_tile(const BlockArgs& a, ScoreLayout layout, int r0, int d0, KeyInterval keys) {
  V acc[RB][NV];
  GLA_UNROLL
  for (int r = 0; r < RB; ++r) {
    const V alpha = simd::broadcast(a.alpha[r0 + r]);
    const float* row = a.acc + (r0 + r) * a.dim_pad + d0;
    GLA_UNROLL
    for (int v = 0; v < NV; ++v) acc[r][v] = simd::mul(simd::load(row + v * kWidth), alpha);
  }
  const int tail = a.head_dim - (d0 + (NV - 1) * kWidth);
  for (int c = keys.begin; c < keys.end; ++c) {
    const Row<D> value = value_row<D>(a, c);
    if (c < a.k_ahead_rows) {
      const Row<D> next_key{static_cast<const unsigned char*>(a.k) + a.k_ahead[c] * a.k_row_stride * Row<D>::kBytes};
      GLA_UNROLL
      for (int v = 0; v < NV; ++v) next_key.prefetch(d0 + v * kWidth);
    }
    V values[NV];
    GLA_UNROLL
    for (int v = 0; v < NV; ++v) {
      values[v] = (Tail && v == NV - 1) ? value.load_partial(d0 + v * kWidth, tail) : value.load(d0 + v * kWidth);
    }
    const float* p = a.s + c * layout.key_stride + r0 * layout.row_stride;
    GLA_UNROLL
    for (int r = 0; r < RB; ++r) {
      const V pb = simd::broadcast(p[r * layout.row_stride]);
      GLA_UNROLL
      for (int v = 0; v < NV; ++v) acc[r][v] = simd::fmadd(pb, values[v], acc[r][v]);
    }
  }
  GLA_UNROLL
  for (int r = 0; r < RB; ++r) {
    float* row = a.acc + (r0 + r) * a.dim_pad + d0;
    GLA_UNROLL
    for (int v = 0; v < NV; ++v) simd::store(row + v * kWidth, acc[r][v]);
  }
}

template <int RB, DType D>
inline void accumulate_rows(const BlockArgs& a, ScoreLayout layout, int r0, KeyInterval keys) {
  constexpr int kDims = simd::kAccVecs * kWidth;
  const int full_end = a.head_dim / kWidth * kWidth;
  int d0 = 0;
  for (; d0 + kDims <= full_end; d0 += kDims) accumulate_tile<RB, simd::kAccVecs, false, D>(a, layout, r0, d0, keys);
  for (; d0 < full_end; d0 += kWidth) accumulate_tile<RB, 1, false, D>(a, layout, r0, d0, keys);
  if (full_end < a.head_dim) accumulate_tile<RB, 1, true, D>(a, layout, r0, full_end, keys);
}

// The rows left after the full kAccRows tiles run as one narrower tile (each V row is then loaded
// once for all of them, not once per row).
template <int RB, DType D>
inline void accumulate_tail(const BlockArgs& a, ScoreLayout layout, int r0, int rest, KeyInterval keys) {
  if constexpr (RB > 1) {
    if (rest < RB) {
      accumulate_tail<RB - 1, D>(a, layout, r0, rest, keys);
      return;
    }
  }
  accumulate_rows<RB, D>(a, layout, r0, keys);
}

// Index span of the block's global keys, empty ({n_keys, 0}) when it holds none.
KeyInterval global_key_span(const BlockArgs& a) {
  KeyInterval span{a.n_keys, 0};
  if (a.key_is_global == nullptr) return span;
  for (int c = 0; c < a.n_keys; ++c) {
    if (a.key_is_global[a.keys[c]] != 0) {
      span.begin = std::min(span.begin, c);
      span.end = c + 1;
    }
  }
  return span;
}

// The keys rows [r0, r0 + rows) of a partial block may weigh: the union of their window intervals
// and of the block's global keys. Every weight outside it is exactly 0 (masked), so P V skips
// those keys: the masked triangles at a window's edges and on the causal diagonal.
KeyInterval weighed_keys(const BlockArgs& a, int r0, int rows, KeyInterval globals) {
  KeyInterval span = globals;
  for (int r = r0; r < r0 + rows; ++r) {
    const KeyInterval in = window_keys(a, r);
    if (in.begin < in.end) {
      span.begin = std::min(span.begin, in.begin);
      span.end = std::max(span.end, in.end);
    }
  }
  return span;
}

// Trim: a partial block, whose row tiles take only the keys they may weigh (weighed_keys).
template <DType D>
void accumulate(const BlockArgs& a, ScoreLayout layout, bool trim) {
  const KeyInterval globals = trim ? global_key_span(a) : KeyInterval{0, 0};
  auto keys_of = [&](int r0, int rows) {
    return trim ? weighed_keys(a, r0, rows, globals) : KeyInterval{0, a.n_keys};
  };
  int r0 = 0;
  for (; r0 + simd::kAccRows <= a.rows; r0 += simd::kAccRows) {
    accumulate_rows<simd::kAccRows, D>(a, layout, r0, keys_of(r0, simd::kAccRows));
  }
  if constexpr (simd::kAccRows > 1) {
    if (r0 < a.rows) accumulate_tail<simd::kAccRows - 1, D>(a, layout, r0, a.rows - r0, keys_of(r0, a.rows - r0));
  }
}

// Whether every V element of the block is finite. x * 0 is NaN exactly when x is NaN or infinite,
// and a NaN survives the sums; four independent chains keep the scan off the add latency. Only
// partial blocks ask, so fully visible blocks pay nothing.
template <DType D>
bool values_finite(const BlockArgs& a) {
  const int full_end = a.head_dim / kWidth * kWidth;
  const int tail = a.head_dim - full_end;
  const V z = simd::zero();
  V bad[4] = {z, z, z, z};
  auto scan = [&](V& b, int c) {
    const Row<D> value = value_row<D>(a, c);
    for (int t = 0; t < full_end; t += kWidth) b = simd::fmadd(value.load(t), z, b);
    if (tail > 0) b = simd::fmadd(value.load_partial(full_end, tail), z, b);
  };
  int c = 0;
  for (; c + 4 <= a.n_keys; c += 4) {
    GLA_UNROLL
    for (int i = 0; i < 4; ++i) scan(bad[i], c + i);
  }
  for (; c < a.n_keys; ++c) scan(bad[0], c);
  const float total = simd::reduce_add(simd::add(simd::add(bad[0], bad[1]), simd::add(bad[2], bad[3])));
  return total == total;
}

// P V for a partial block whose V holds a NaN or an infinity: each row takes only the keys it sees,
// so that a masked weight (exactly 0) is never multiplied into them (0 * inf and 0 * NaN are NaN,
// which would reach rows that never see the key). Rare, so one row at a time.
template <DType D>
void accumulate_visible(const BlockArgs& a, ScoreLayout layout) {
  const int full_end = a.head_dim / kWidth * kWidth;
  const int tail = a.head_dim - full_end;
  const uint8_t* global = a.key_is_global;
  for (int r = 0; r < a.rows; ++r) {
    const KeyInterval in = window_keys(a, r);
    float* row = a.acc + static_cast<int64_t>(r) * a.dim_pad;
    const V alpha = simd::broadcast(a.alpha[r]);
    for (int t = 0; t < a.dim_pad; t += kWidth) simd::store(row + t, simd::mul(simd::load(row + t), alpha));
    const float* p = a.s + r * layout.row_stride;
    for (int c = 0; c < a.n_keys; ++c) {
      const int64_t j = a.keys[c];
      const bool visible = (c >= in.begin && c < in.end) || (global != nullptr && global[j] != 0 && j < a.allowed_end[r]);
      if (!visible) continue;
      const V pb = simd::broadcast(p[c * layout.key_stride]);
      const Row<D> value = value_row<D>(a, c);
      for (int t = 0; t < full_end; t += kWidth) simd::store(row + t, simd::fmadd(pb, value.load(t), simd::load(row + t)));
      if (tail > 0) {
        simd::store(row + full_end, simd::fmadd(pb, value.load_partial(full_end, tail), simd::load(row + full_end)));
      }
    }
  }
}

// Partial blocks: the register-blocked P V unless V holds non-finite values (see above).
template <DType D>
void accumulate_partial(const BlockArgs& a, ScoreLayout layout) {
  if (values_finite<D>(a)) {
    accumulate<D>(a, layout, true);
  } else {
    accumulate_visible<D>(a, layout);
  }
}

#include "kernels/cpu/bf16_products.h"

// ---- few rows (decode): s[row][key], ld = keys rounded up to the vector width -----------------

// 4 keys against R rows: 4R independent dot products along head_dim, each key vector loaded once
// for all R rows (the rows' q vectors come from L1), then reduced four at a time. q_rows is zero
// padded to dim_pad, so only the key rows need a partial load at the tail.
template <int R, DType D>
inline void few_rows_score_4_keys(const BlockArgs& a, int c0, int ld) {
  Row<D> key[4];
  GLA_UNROLL
  for (int i = 0; i < 4; ++i) key[i] = key_row<D>(a, c0 + i);
  // Streaming these keys' K rows from memory, ask for their V rows too: both are then on the way
  // together, and accumulate finds V in L2 (decode: 8% less time on one thread, bench/NOTES.md 8).
  GLA_UNROLL
  for (int i = 0; i < 4; ++i) {
    const Row<D> value = value_row<D>(a, c0 + i);
    for (int t = 0; t < a.head_dim; t += 64 / Row<D>::kBytes) value.prefetch(t);
  }
  V acc[R][4];
  GLA_UNROLL
  for (int r = 0; r < R; ++r)
    GLA_UNROLL
    for (int i = 0; i < 4; ++i) acc[r][i] = simd::zero();
  const int full_end = a.head_dim / kWidth * kWidth;
  auto step = [&](int t, const V (&k)[4]) {
    GLA_UNROLL
    for (int r = 0; r < R; ++r) {
      const V qv = simd::load(a.q_rows + r * a.dim_pad + t);
      GLA_UNROLL
      for (int i = 0; i < 4; ++i) acc[r][i] = simd::fmadd(qv, k[i], acc[r][i]);
    }
  };
  for (int t = 0; t < full_end; t += kWidth) {
    V k[4];
    GLA_UNROLL
    for (int i = 0; i < 4; ++i) k[i] = key[i].load(t);
    step(t, k);
  }
  if (full_end < a.head_dim) {
    V k[4];
    GLA_UNROLL
    for (int i = 0; i < 4; ++i) k[i] = key[i].load_partial(full_end, a.head_dim - full_end);
    step(full_end, k);
  }
  GLA_UNROLL
  for (int r = 0; r < R; ++r) simd::reduce_add_4(acc[r], a.s + r * ld + c0);
}

// One key against every row (the block's last n_keys % 4 keys).
template <DType D>
inline void few_rows_score_key(const BlockArgs& a, int c, int ld) {
  const Row<D> key = key_row<D>(a, c);
  const int full_end = a.head_dim / kWidth * kWidth;
  for (int r = 0; r < a.rows; ++r) {
    const float* q = a.q_rows + r * a.dim_pad;
    V acc = simd::zero();
    for (int t = 0; t < full_end; t += kWidth) acc = simd::fmadd(simd::load(q + t), key.load(t), acc);
    if (full_end < a.head_dim) {
      acc = simd::fmadd(simd::load(q + full_end), key.load_partial(full_end, a.head_dim - full_end), acc);
    }
    a.s[r * ld + c] = simd::reduce_add(acc);
  }
}

template <int R, DType D>
inline void few_rows_score_blocks(const BlockArgs& a, int ld) {
  int c0 = 0;
  for (; c0 + 4 <= a.n_keys; c0 += 4) few_rows_score_4_keys<R, D>(a, c0, ld);
  for (; c0 < a.n_keys; ++c0) few_rows_score_key<D>(a, c0, ld);
}

template <DType D>
void few_rows_scores(const BlockArgs& a, int ld) {
  static_assert(simd::kFewRows <= 4, "few_rows_scores instantiates 1 to 4 rows");
  switch (a.rows) {
    case 1: few_rows_score_blocks<1, D>(a, ld); break;
    case 2: few_rows_score_blocks<2, D>(a, ld); break;
    case 3: few_rows_score_blocks<3, D>(a, ld); break;
    default: few_rows_score_blocks<4, D>(a, ld); break;
  }
  for (int r = 0; r < a.rows; ++r) {
    for (int c = a.n_keys; c < ld; ++c) a.s[r * ld + c] = kNegInf;  // pad keys
  }
}

inline float max_along(const float* s, int n) {
  V m = simd::broadcast(kNegInf);
  for (int c = 0; c < n; c += kWidth) m = simd::max(m, simd::load(s + c));
  return simd::reduce_max(m);
}

// s = exp(s - max) in place; returns the sum.
inline float exp_and_sum(float* s, int n, float max) {
  const V mb = simd::broadcast(max);
  V sum = simd::zero();
  for (int c = 0; c < n; c += kWidth) {
    const V e = simd::exp(simd::sub(simd::load(s + c), mb));
    simd::store(s + c, e);
    sum = simd::add(sum, e);
  }
  return simd::reduce_add(sum);
}

void few_rows_softmax(const BlockArgs& a, int ld) {
  for (int r = 0; r < a.rows; ++r) {
    float* s = a.s + r * ld;
    const float block_max = max_along(s, ld);
    const float old_max = a.row_max[r];
    const float new_max = old_max > block_max ? old_max : block_max;
    // Nothing visible to this row yet (max -inf): subtracting 0 instead keeps exp(-inf - -inf) (NaN)
    // out, so masked and -inf scores give 0 while a NaN score (which max may skip) still gives NaN.
    const float shift = new_max == kNegInf ? 0.0f : new_max;
    const float alpha = simd::first(simd::exp(simd::broadcast(old_max - shift)));  // 0 if old is -inf
    a.alpha[r] = alpha;
    a.row_sum[r] = a.row_sum[r] * alpha + exp_and_sum(s, ld, shift);
    a.row_max[r] = new_max;
  }
}

// How far above its row's running max a score may be for a fused attempt to stand: weights then
// reach e^5.55 ~ 256, which in fp32 changes only the rounding of the sums.
constexpr float kFusedHeadroom = 5.55f;

// Blocks after a unit's first (partial ones are masked in the tiles): a score far above its row's running max is rare once
// a block or two have been seen, so the block is first computed against the running max as it
// stands. The score tiles then store p = exp(s - max) and sum it, and no softmax pass reads s
// (bench/NOTES.md section 8: the pass is ~9% of a call at head_dim 64). If some row's block max
// lies more than kFusedHeadroom above its running max, or is not finite, the attempt is discarded
// (false) and the unit stops trying: inputs whose scores keep climbing pay for one wasted score
// pass, not one per block. This is FlashAttention-4's conditional rescaling, on a CPU.
template <Epilogue E, bool Bf16>
void compute_scores_with(const BlockArgs& a) {
#if defined(GLA_KERNEL_BF16_DOT)
  if constexpr (Bf16) {
    compute_scores_bf16<E>(a);
    return;
  }
#endif
  compute_scores<E>(a);
}

// ALiBi lifts a row's scores block after block as its keys come nearer its position (causal
// attention walks towards p): against the running max alone, every block of a steep head would
// overshoot the headroom, and the unit would lose the fused softmax after its second block. So the
// fused attempt shifts by the running max plus how much the bias can have risen since the key just
// before the block: -slope·d for the block's best distance d (its nearest key for a positive slope,
// its farthest for a negative one) against -slope·d for that key. The headroom check still decides,
// with one more condition (kRiseSlack): the raised shift must not end far above every score.
inline float alibi_rise(const BlockArgs& a, int r) {
  if (r >= a.rows || a.row_slope[r] == 0.0f) return 0.0f;
  const double slope = a.row_slope[r];
  const int64_t p = a.row_position[r];
  const int64_t first = a.keys[0];
  const int64_t last = a.keys[a.n_keys - 1];
  const auto distance = [p](int64_t j) { return static_cast<double>(p > j ? p - j : j - p); };
  const double nearest = p < first ? distance(first) : p > last ? distance(last) : 0.0;
  const double farthest = std::max(distance(first), distance(last));
  const double rise = slope * distance(first - 1) - slope * (slope > 0.0 ? nearest : farthest);
  return rise > 0.0 ? static_cast<float>(rise) : 0.0f;
}

// Rows whose running max a fused attempt may raise (alibi_rise): the old maxima are kept on the
// stack for the rescale, or for the way back when the attempt fails.
constexpr int kRiseRows = 256;
// How far a raised shift may end above both the old running max and the block's max and stand:
// the block's weights are then >= e^-40 (no underflow), and when the rescale of the old sums
// underflows (a rise > 87), what it drops is below e^-47 of the block's weights.
constexpr float kRiseSlack = 40.0f;

template <bool Bf16>
bool try_fused_block(const BlockArgs& a) {
  if (a.fused_softmax == nullptr || !*a.fused_softmax) return false;
  for (int r = 0; r < a.rows_pad; ++r) {
    // A unit's first block, or a row that has seen only -inf or NaN: the exact path.
    if (!(a.row_max[r] >= kLowest && a.row_max[r] <= kHighest)) return false;
  }
  float old_max[kRiseRows];
  const bool rises = a.row_slope != nullptr && a.rows_pad <= kRiseRows;
  if (rises) {
    for (int r = 0; r < a.rows_pad; ++r) {
      const float raised = a.row_max[r] + alibi_rise(a, r);
      if (!(raised <= kHighest)) return false;
      old_max[r] = a.row_max[r];
      a.row_max[r] = raised;
    }
  }
  compute_scores_with<Epilogue::fused, Bf16>(a);
  for (int r = 0; r < a.rows_pad; ++r) {
    const bool overshot = rises && !(a.row_max[r] <= std::max(old_max[r], a.alpha[r]) + kRiseSlack);
    if (!(a.alpha[r] <= a.row_max[r] + kFusedHeadroom) || overshot) {
      if (rises) std::copy(old_max, old_max + a.rows_pad, a.row_max);
      *a.fused_softmax = false;
      return false;
    }
  }
  if (rises) {
    // The weights are relative to the raised max: the sum and the accumulator so far rescale to it.
    for (int r0 = 0; r0 < a.rows_pad; r0 += kWidth) {
      const V alpha = simd::exp(simd::sub(simd::load(old_max + r0), simd::load(a.row_max + r0)));
      simd::store(a.alpha + r0, alpha);
      simd::store(a.row_sum + r0, simd::fmadd(simd::load(a.row_sum + r0), alpha, simd::load(a.block_sum + r0)));
    }
    return true;
  }
  for (int r = 0; r < a.rows_pad; ++r) {
    a.row_sum[r] += a.block_sum[r];
    a.alpha[r] = 1.0f;  // the running max stays, so the accumulator needs no rescale
  }
  return true;
}

// Row groups (scores transposed): float32 products, or bfloat16 ones (bf16_products.h) around the
// same mask and softmax.
template <bool Bf16>
void attend_rows(const BlockArgs& a) {
  const ScoreLayout layout{a.rows_pad, 1};
  if (transforms_scores(a)) prepare_score_transform(a);
  // Partial blocks are masked in the score tiles' registers (mask_score_tile), so they take the
  // block max there and may try the fused softmax as full ones do.
  if (!a.full) prepare_mask(a);
  if (!try_fused_block<Bf16>(a)) {
    compute_scores_with<Epilogue::max, Bf16>(a);
    online_softmax(a);
  }
#if defined(GLA_KERNEL_BF16_DOT)
  if constexpr (Bf16) {
    accumulate_bf16(a, !a.full);
    return;
  }
#endif
  if (a.full) {
    accumulate<DType::float32>(a, layout, false);
  } else {
    accumulate_partial<DType::float32>(a, layout);
  }
}

// Groups of at most kFewRows rows (decode), reading K and V rows of type D (kv_dtype).
template <DType D>
void attend_few_rows(const BlockArgs& a) {
  const int ld = (a.n_keys + kWidth - 1) / kWidth * kWidth;
  const ScoreLayout layout{1, ld};
  few_rows_scores<D>(a, ld);
  if (transforms_scores(a)) transform_few_rows_scores(a, ld);
  if (!a.full) apply_mask(a, layout);
  few_rows_softmax(a, ld);
  if (a.full) {
    accumulate<D>(a, layout, false);
  } else {
    accumulate_partial<D>(a, layout);
  }
}

void attend_block(const BlockArgs& a) {
  if (a.row_major && a.rows <= simd::kFewRows) {
    switch (a.kv_dtype) {
      case DType::float16: attend_few_rows<DType::float16>(a); return;
      case DType::bfloat16: attend_few_rows<DType::bfloat16>(a); return;
      case DType::float32: break;
    }
    attend_few_rows<DType::float32>(a);
    return;
  }
  attend_rows<false>(a);
}

#if defined(GLA_KERNEL_BF16_DOT)
void attend_block_bf16(const BlockArgs& a) { attend_rows<true>(a); }
constexpr void (*kAttendBlockBf16)(const BlockArgs&) = attend_block_bf16;
constexpr void (*kPackQPairs)(const float*, int, int, uint32_t*) = pack_q_pairs;
constexpr auto kPackKvPairs = pack_kv_pairs;
#else
constexpr void (*kAttendBlockBf16)(const BlockArgs&) = nullptr;
constexpr void (*kPackQPairs)(const float*, int, int, uint32_t*) = nullptr;
constexpr decltype(&pack_kv_pairs) kPackKvPairs = nullptr;
#endif

void exp_array(const float* in, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + kWidth <= n; i += kWidth) simd::store(out + i, simd::exp(simd::load(in + i)));
  if (i < n) {
    const int tail = static_cast<int>(n - i);
    simd::store_partial(out + i, simd::exp(simd::load_partial(in + i, tail)), tail);
  }
}

#define GLA_STRINGIFY_INNER(x) #x
#define GLA_STRINGIFY(x) GLA_STRINGIFY_INNER(x)

}  // namespace

const CpuKernels kernels = {GLA_STRINGIFY(GLA_KERNEL_NS), kWidth, simd::kBlockRows, simd::kBlockKeys, simd::kFewRows,
                            attend_block, exp_array, widen_rows, narrow_row, kAttendBlockBf16, kPackQPairs,
                            kPackKvPairs};

}  // namespace GLA_KERNEL_NS
}  // namespace cpu
}  // namespace gla
