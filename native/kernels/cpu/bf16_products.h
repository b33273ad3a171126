// The bfloat16 products of the CPU kernel (AVX512_BF16: VDPBF16PS, VCVTNE2PS2BF16): the same score
// and P V tiles as attention_block.cc, with each float32 FMA over one element replaced by one dot
// product over a pair of elements, so a 512-bit instruction does 32 multiply-adds instead of 16.
// Everything else (mask, online softmax, fused softmax, the epilogues) is attention_block.cc's,
// in float32. Included by attention_block.cc inside its namespace; compiled only in the AVX-512
// build, and every function carries the bf16 target attribute, so the object still runs (without
// calling these) on AVX-512 CPUs that lack AVX512_BF16: the driver asks the kernel table.
//
// Layouts (all in 32-bit words, each word one pair of bfloat16: element 2i low, 2i+1 high):
//   qt_pairs [dim_pairs][rows_pad]  Q^T times scale, pairs along head_dim  (pack_q_pairs)
//   k_pairs  [n_keys][dim_pairs]    K rows, pairs along head_dim            (pack_kv_pairs)
//   v_pairs  [key_pairs][dim_pad]   V, pairs along keys: (v[2c][d], v[2c+1][d])
//   p_pairs  [key_pairs][rows_pad]  the softmax weights, pairs along keys   (weights_to_pairs)
// An odd head_dim or key count pads with zeros, which add nothing to the dot products.
#pragma once

#if defined(GLA_KERNEL_BF16_DOT)

using simd::as_bf16;

template <int RK, int NV, Epilogue E>
GLA_BF16 inline void score_tile_bf16(const BlockArgs& a, int c0, int v0) {
  V acc[RK][NV];
  GLA_UNROLL
  for (int i = 0; i < RK; ++i)
    GLA_UNROLL
    for (int v = 0; v < NV; ++v) acc[i][v] = simd::zero();
  const uint32_t* key[RK];
  GLA_UNROLL
  for (int i = 0; i < RK; ++i) key[i] = a.k_pairs + static_cast<int64_t>(c0 + i) * a.dim_pairs;
  const uint32_t* qt = a.qt_pairs + v0 * kWidth;
  for (int t = 0; t < a.dim_pairs; ++t) {
    __m512bh q[NV];
    GLA_UNROLL
    for (int v = 0; v < NV; ++v) q[v] = as_bf16(_mm512_loadu_si512(qt + t * a.rows_pad + v * kWidth));
    GLA_UNROLL
    for (int i = 0; i < RK; ++i) {
      const __m512bh kb = as_bf16(_mm512_set1_epi32(static_cast<int>(key[i][t])));
      GLA_UNROLL
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], kb, q[v]);
    }
  }
  finish_score_tile<RK, NV, E>(a, c0, v0, acc);
}

template <int RK, Epilogue E>
GLA_BF16 inline void score_keys_bf16(const BlockArgs& a, int c0) {
  const int vectors = a.rows_pad / kWidth;
  int v0 = 0;
  for (; v0 + simd::kScoreVecs <= vectors; v0 += simd::kScoreVecs) score_tile_bf16<RK, simd::kScoreVecs, E>(a, c0, v0);
  for (; v0 < vectors; ++v0) score_tile_bf16<RK, 1, E>(a, c0, v0);
}

// compute_scores' loop over the block with the bfloat16 tiles. Its own function, not a template
// parameter of compute_scores: the tiles inline only into a function that carries the bf16
// target attribute, and compute_scores must not (it runs on AVX-512 CPUs without AVX512_BF16).
template <Epilogue E>
GLA_BF16 void compute_scores_bf16(const BlockArgs& a) {
  for (int r0 = 0; r0 < a.rows_pad; r0 += kWidth) simd::store(a.alpha + r0, simd::broadcast(kNegInf));
  if constexpr (E == Epilogue::fused) {
    for (int r0 = 0; r0 < a.rows_pad; r0 += kWidth) simd::store(a.block_sum + r0, simd::zero());
  }
  int c0 = 0;
  for (; c0 + simd::kScoreKeys <= a.n_keys; c0 += simd::kScoreKeys) score_keys_bf16<simd::kScoreKeys, E>(a, c0);
  for (; c0 < a.n_keys; ++c0) score_keys_bf16<1, E>(a, c0);
}

// p_pairs for key pairs [first, end) from s (the weights, transposed: s[key][row]).
GLA_BF16 inline void weights_to_pairs(const BlockArgs& a, int first, int end) {
  for (int c2 = first; c2 < end; ++c2) {
    const float* lo = a.s + 2 * c2 * a.rows_pad;
    const bool has_hi = 2 * c2 + 1 < a.n_keys;
    uint32_t* to = a.p_pairs + c2 * a.rows_pad;
    for (int r0 = 0; r0 < a.rows_pad; r0 += kWidth) {
      const V hi = has_hi ? simd::load(lo + a.rows_pad + r0) : simd::zero();
      _mm512_storeu_si512(to + r0, simd::bf16_pairs(simd::load(lo + r0), hi));
    }
  }
}

// RB rows x NV vectors of acc over key pairs [keys.begin, keys.end).
template <int RB, int NV>
GLA_BF16 inline void accumulate_tile_bf16(const BlockArgs& a, int r0, int d0, KeyInterval pairs) {
  V acc[RB][NV];
  GLA_UNROLL
  for (int r = 0; r < RB; ++r) {
    const V alpha = simd::broadcast(a.alpha[r0 + r]);
    const float* row = a.acc + (r0 + r) * a.dim_pad + d0;
    GLA_UNROLL
    for (int v = 0; v < NV; ++v) acc[r][v] = simd::mul(simd::load(row + v * kWidth), alpha);
  }
  for (int c2 = pairs.begin; c2 < pairs.end; ++c2) {
    const uint32_t* value = a.v_pairs + static_cast<int64_t>(c2) * a.dim_pad + d0;
    __m512bh values[NV];
    GLA_UNROLL
    for (int v = 0; v < NV; ++v) values[v] = as_bf16(_mm512_loadu_si512(value + v * kWidth));
    const uint32_t* p = a.p_pairs + c2 * a.rows_pad + r0;
    GLA_UNROLL
    for (int r = 0; r < RB; ++r) {
      const __m512bh pb = as_bf16(_mm512_set1_epi32(static_cast<int>(p[r])));
      GLA_UNROLL
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], pb, values[v]);
    }
  }
  GLA_UNROLL
  for (int r = 0; r < RB; ++r) {
    float* row = a.acc + (r0 + r) * a.dim_pad + d0;
    GLA_UNROLL
    for (int v = 0; v < NV; ++v) simd::store(row + v * kWidth, acc[r][v]);
  }
}

// v_pairs and acc rows are zero padded to dim_pad, so every vector is whole (no tail).
template <int RB>
GLA_BF16 inline void accumulate_rows_bf16(const BlockArgs& a, int r0, KeyInterval pairs) {
  constexpr int kDims = simd::kAccVecs * kWidth;
  int d0 = 0;
  for (; d0 + kDims <= a.dim_pad; d0 += kDims) accumulate_tile_bf16<RB, simd::kAccVecs>(a, r0, d0, pairs);
  for (; d0 < a.dim_pad; d0 += kWidth) accumulate_tile_bf16<RB, 1>(a, r0, d0, pairs);
}

template <int RB>
GLA_BF16 inline void accumulate_tail_bf16(const BlockArgs& a, int r0, int rest, KeyInterval pairs) {
  if constexpr (RB > 1) {
    if (rest < RB) {
      accumulate_tail_bf16<RB - 1>(a, r0, rest, pairs);
      return;
    }
  }
  accumulate_rows_bf16<RB>(a, r0, pairs);
}

// acc = acc * alpha + P V with bfloat16 P and V. The driver only takes this path for blocks whose V
// is finite, so the zero weights of masked keys (and of the padding pair) multiply finite values.
// Trim: a partial block's row tiles take only the key pairs covering the keys they may weigh.
GLA_BF16 void accumulate_bf16(const BlockArgs& a, bool trim) {
  const int key_pairs = (a.n_keys + 1) / 2;
  weights_to_pairs(a, 0, key_pairs);
  const KeyInterval globals = trim ? global_key_span(a) : KeyInterval{0, 0};
  auto pairs_of_rows = [&](int r0, int rows) {
    const KeyInterval keys = trim ? weighed_keys(a, r0, rows, globals) : KeyInterval{0, a.n_keys};
    return keys.begin < keys.end ? KeyInterval{keys.begin / 2, (keys.end + 1) / 2} : KeyInterval{0, 0};
  };
  int r0 = 0;
  for (; r0 + simd::kAccRows <= a.rows; r0 += simd::kAccRows) {
    accumulate_rows_bf16<simd::kAccRows>(a, r0, pairs_of_rows(r0, simd::kAccRows));
  }
  if (r0 < a.rows) accumulate_tail_bf16<simd::kAccRows - 1>(a, r0, a.rows - r0, pairs_of_rows(r0, a.rows - r0));
}

#endif  // GLA_KERNEL_BF16_DOT
