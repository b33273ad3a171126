// The attention kernels, written once against simt.h so that nvcc builds them for the GPU and a plain
// C++ compiler builds them for the CPU emulation used by the tests.
//
// tile_attention_kernel: FlashAttention-2 style. One block of 128 threads per (batch, head, tile of
//   BM queries); key/value tiles of BN keys staged in shared memory; online softmax in fp32 over raw
//   scores, scaled inside exp2 (see DeviceProblem::q_sign). Thread (ty, tx) = (tid / 8, tid % 8)
//   owns TM query rows and, for the scores, TN key columns / for the output, D / 8 dims, so the 8
//   threads of one row group are 8 adjacent lanes and row reductions are 3 xor-shuffles.
//   A tile whose V holds an infinity or a NaN (found while staging it, one __syncthreads_or) takes
//   only each row's visible keys in P V, so that a masked weight 0 never meets them (0 * inf is NaN).
// row_attention_kernel: one query row per block (decode, global query rows, head_dim > 256), the
//   row's keys optionally split across blocks; each warp walks keys 8 at a time.
// merge_rows_kernel: combines the split partial (max, sum, acc) of the row pass.
// pad_rows_kernel: the padding rows of q_lengths (i >= q_length(b)): zeros and lse -inf. The other
//   kernels never compute them (the tile pass's tiles cover only real rows, the row pass's tasks are
//   real rows).
// Serving options (notes/serving-spec.md): every position is per sequence (row_mask); softcap and
// ALiBi turn the raw products into natural-unit scores in the ScoreMod instantiations only
// (apply per tile / per key group, ScoreModifier), so a call without them runs the plain
// instantiations; sinks join each row's statistics once, when it is written (finish_row).
// Non-finite inputs follow IEEE arithmetic as the reference does: a NaN or +inf score leaves the
// row's sum NaN (fmaxf skips a NaN max, exp2 does not), and a NaN sum gives out and lse NaN
// (inv_sum, lse_from_stats); V is multiplied only into rows that see its key (the row pass never
// loads an invisible key; the tile pass, see above).
#pragma once

#include <cmath>
#include <cstdint>

#include "simt.h"
#include "schedule.h"

namespace gla {
namespace cuda {

constexpr int kThreads = 128;

template <int D, int TM, int TN>
struct TileConfig {
  static_assert(D % 32 == 0, "head dims are padded to a multiple of 32");
  static_assert(TM == 2 || TM == 4, "rows per thread are loaded as one float2/float4");
  static_assert(TN == 4 || TN == 8, "key columns per thread are loaded as float4s");
  static constexpr int BM = 16 * TM;
  static constexpr int BN = 8 * TN;
  // Large tiles share one buffer for K then V, so that every config fits the 99 KB a block may use on
  // sm_86/sm_89 (at the price of loading V only after the scores are done).
  static constexpr bool kAlias = D >= 256;
  // Row strides padded by 4 floats: keeps float4 alignment, and makes the transposing stores of K
  // (8 dims x 4 keys per warp) hit 32 distinct banks.
  static constexpr int QS = BM + 4;  // Qt[d][row]
  static constexpr int KS = BN + 4;  // Kt[d][key]
  static constexpr int PS = BM + 4;  // Pt[key][row]
  static constexpr int kQFloats = D * QS;
  static constexpr int kKFloats = D * KS;
  static constexpr int kVFloats = BN * D;  // V[key][d]
  static constexpr int kPFloats = BN * PS;
  static constexpr int kKVFloats = kAlias ? (kKFloats > kVFloats ? kKFloats : kVFloats) : kKFloats + kVFloats;
  static constexpr size_t kSmemBytes = sizeof(float) * static_cast<size_t>(kQFloats + kKVFloats + kPFloats);
};

template <int N>
GLA_DEVICE void load_rows(const float* p, float (&o)[N]) {
  if constexpr (N == 4) {
    const simt::f4 v = simt::load4(p);
    o[0] = v.x;
    o[1] = v.y;
    o[2] = v.z;
    o[3] = v.w;
  } else {
    const simt::f2 v = simt::load2(p);
    o[0] = v.x;
    o[1] = v.y;
  }
}

template <int N>
GLA_DEVICE void store_rows(float* p, const float (&o)[N]) {
  if constexpr (N == 4) {
    simt::store4(p, simt::f4{o[0], o[1], o[2], o[3]});
  } else {
    simt::store2(p, simt::f2{o[0], o[1]});
  }
}

// Column of the j-th key (or dim) a thread owns: groups of 4 adjacent columns, the 8 threads of a row
// group side by side, so a warp's float4 reads of one smem row cover 128 contiguous bytes.
GLA_DEVICE int owned_column(int tx, int j) { return (j >> 2) * 32 + tx * 4 + (j & 3); }

// V of one key tile into smem, row-major [key][dim]; keys past the tile and dims past head_dim are zero.
// Returns whether any element this thread staged is an infinity or a NaN (sync_threads_or makes it
// the block's answer).
template <int D, int BN>
GLA_DEVICE bool stage_values(const DeviceProblem& P, const TileSchedule& sched, const TileDesc& tile,
                             const float* GLA_RESTRICT vb, int64_t hd, int tid, float* Vs) {
  bool bad = false;
  for (int e = tid; e < BN * D; e += kThreads) {
    const int c = e / D;
    const int d = e % D;
    const int64_t j = tile_key(P, sched, tile, c);
    float x = 0.0f;
    if (j >= 0 && d < hd) x = vb[j * P.v_s.seq + d];
    bad = bad || !finite_value(x);
    Vs[c * D + d] = x;
  }
  return bad;
}

// acc += P V over the BN keys of a tile, for this thread's TM rows (at positions p_rows..) and
// D / 8 dims. OnlyVisible: only the pairs whose row sees the key are multiplied. Tiles whose V holds
// an infinity or a NaN need that: a masked pair's weight is exactly 0, and 0 * inf and 0 * NaN are
// NaN, which would reach rows that do not see the key. A visible pair is multiplied even at weight 0
// (a -inf score), as IEEE arithmetic does (and the CPU kernels). Every other tile takes the plain FMAs.
template <int D, int TM, int BN, int PS, bool OnlyVisible>
GLA_DEVICE void accumulate_values(const DeviceProblem& P, const TileSchedule& sched, const TileDesc& tile,
                                  const RowMask& m, int64_t b, int64_t p_rows, const float* Pt, const float* Vs,
                                  int tx, int ty, float (&acc)[TM][D / 8]) {
#if defined(__CUDACC__)
#pragma unroll 4
#endif
  for (int c = 0; c < BN; ++c) {
    float pr[TM];
    load_rows<TM>(Pt + c * PS + ty * TM, pr);
    bool visible[TM];
    if constexpr (OnlyVisible) {
      const int64_t key = tile_key(P, sched, tile, c);
      const bool key_global = key >= 0 && tile.kind == TileKind::window && is_global_token(P, b, key);
      GLA_UNROLL
      for (int i = 0; i < TM; ++i) visible[i] = tile_pair_visible(m, tile, p_rows + i, key, key_global);
    }
    GLA_UNROLL
    for (int g = 0; g < D / 32; ++g) {
      const simt::f4 v4 = simt::load4(Vs + c * D + g * 32 + tx * 4);
      GLA_UNROLL
      for (int i = 0; i < TM; ++i) {
        if (OnlyVisible && !visible[i]) continue;
        acc[i][g * 4 + 0] += pr[i] * v4.x;
        acc[i][g * 4 + 1] += pr[i] * v4.y;
        acc[i][g * 4 + 2] += pr[i] * v4.z;
        acc[i][g * 4 + 3] += pr[i] * v4.w;
      }
    }
  }
}

// ScoreMod: P.score_mod (softcap or ALiBi). A template parameter rather than a branch, so that the
// plain instantiation is today's kernel, registers and all.
template <int D, int TM, int TN, bool ScoreMod>
GLA_GLOBAL void GLA_LAUNCH_BOUNDS(kThreads) tile_attention_kernel(DeviceProblem P) {
  using C = TileConfig<D, TM, TN>;
  constexpr int BM = C::BM;
  constexpr int BN = C::BN;
  constexpr int QS = C::QS;
  constexpr int KS = C::KS;
  constexpr int PS = C::PS;
  constexpr int DO = D / 8;  // output dims per thread

  float* smem = simt::shared_floats();
  float* Qt = smem;
  float* Kt = smem + C::kQFloats;
  float* Vs = C::kAlias ? Kt : Kt + C::kKFloats;
  float* Pt = Kt + C::kKVFloats;

  const int tid = simt::thread_x();
  const int tx = tid & 7;
  const int ty = tid >> 3;

  // Flattened grid, query tiles fastest: blocks of one (batch, head) run together and share K/V in L2.
  const int64_t q_tiles = ceil_div(P.seq_len, BM);
  const int64_t bx = simt::block_x();
  const int64_t i0 = (bx % q_tiles) * BM;
  const int64_t h = (bx / q_tiles) % P.heads;
  const int64_t b = bx / (q_tiles * P.heads);
  const int64_t hk = h / P.group;
  // Real rows of this tile: those past q_length(b) are padding, written by pad_rows_kernel. A tile
  // of padding alone does nothing (the whole block returns, before any barrier).
  const int64_t q_len = q_length(P, b);
  if (i0 >= q_len) return;
  const int64_t rows = min_i64(BM, q_len - i0);
  const int64_t hd = P.head_dim;
  const float sc = P.scale_log2;

  const RowMask m = row_mask(P, b);
  const int64_t p_first = i0 + m.position_offset;
  const int64_t p_last = p_first + rows - 1;
  const TileSchedule sched = tile_schedule(P, b, m, p_first, p_last, BN);

  const float* GLA_RESTRICT qb = P.q + b * P.q_s.batch + h * P.q_s.head;
  const float* GLA_RESTRICT kb = P.k + b * P.k_s.batch + hk * P.k_s.head;
  const float* GLA_RESTRICT vb = P.v + b * P.v_s.batch + hk * P.v_s.head;

  // Q, transposed (negated for a negative scale); rows past the end and dims past head_dim are zero.
  // The first tile's barrier publishes it.
  for (int e = tid; e < BM * D; e += kThreads) {
    const int r = e / D;
    const int d = e % D;
    float x = 0.0f;
    if (r < rows && d < hd) x = qb[(i0 + r) * P.q_s.seq + d] * P.q_sign;
    Qt[d * QS + r] = x;
  }

  float acc[TM][DO];
  float row_max[TM];
  float row_sum[TM];  // this thread's share; the 8 shares of a row are added at the end
  GLA_UNROLL
  for (int i = 0; i < TM; ++i) {
    row_max[i] = -INFINITY;
    row_sum[i] = 0.0f;
    GLA_UNROLL
    for (int k = 0; k < DO; ++k) acc[i][k] = 0.0f;
  }

  const int64_t n_tiles = sched.count();
  for (int64_t t = 0; t < n_tiles; ++t) {
    const TileDesc tile = tile_at(sched, m, p_first, p_last, BN, t);
    if (tile.vis == TileVisibility::none) continue;  // uniform across the block: never loaded

    // K, transposed: 8 consecutive dims x 4 keys per warp, so global reads come in 32-byte runs
    // and the smem stores spread over all banks.
    for (int e = tid; e < BN * D; e += kThreads) {
      const int rest = e >> 5;
      const int d = (rest % (D / 8)) * 8 + (e & 7);
      const int c = (rest / (D / 8)) * 4 + ((e >> 3) & 3);
      const int64_t j = tile_key(P, sched, tile, c);
      float x = 0.0f;
      if (j >= 0 && d < hd) x = kb[j * P.k_s.seq + d];
      Kt[d * KS + c] = x;
    }
    // v_bad (uniform across the block): V of this tile holds an infinity or a NaN.
    bool v_bad = false;
    if (C::kAlias) {
      simt::sync_threads();
    } else {
      v_bad = simt::sync_threads_or(stage_values<D, BN>(P, sched, tile, vb, hd, tid, Vs));
    }

    float s[TM][TN];
    GLA_UNROLL
    for (int i = 0; i < TM; ++i) {
      GLA_UNROLL
      for (int j = 0; j < TN; ++j) s[i][j] = 0.0f;
    }
#if defined(__CUDACC__)
#pragma unroll 8
#endif
    for (int d = 0; d < D; ++d) {
      float a[TM];
      load_rows<TM>(Qt + d * QS + ty * TM, a);
      float kv[TN];
      GLA_UNROLL
      for (int g = 0; g < TN / 4; ++g) {
        const simt::f4 k4 = simt::load4(Kt + d * KS + g * 32 + tx * 4);
        kv[g * 4 + 0] = k4.x;
        kv[g * 4 + 1] = k4.y;
        kv[g * 4 + 2] = k4.z;
        kv[g * 4 + 3] = k4.w;
      }
      GLA_UNROLL
      for (int i = 0; i < TM; ++i) {
        GLA_UNROLL
        for (int j = 0; j < TN; ++j) s[i][j] += a[i] * kv[j];
      }
    }

    // Softcap / ALiBi: the raw products become natural-unit scores. Padding columns get some finite
    // or NaN value here and are masked just below.
    if constexpr (ScoreMod) {
      const ScoreModifier mod = score_modifier(P, h);
      GLA_UNROLL
      for (int j = 0; j < TN; ++j) {
        // p - key of this thread's first row; exact in float below 2^24 positions.
        const float gap = static_cast<float>(p_first + ty * TM - tile_key(P, sched, tile, owned_column(tx, j)));
        GLA_UNROLL
        for (int i = 0; i < TM; ++i) s[i][j] = mod.apply(s[i][j], gap + static_cast<float>(i));
      }
    }

    // Full tiles of BN keys skip this; a full but short tile still has padding columns to drop.
    if (!(tile.vis == TileVisibility::full && tile.len == BN)) {
      GLA_UNROLL
      for (int j = 0; j < TN; ++j) {
        const int64_t key = tile_key(P, sched, tile, owned_column(tx, j));
        const bool key_global = key >= 0 && tile.kind == TileKind::window && is_global_token(P, b, key);
        GLA_UNROLL
        for (int i = 0; i < TM; ++i) {
          if (!tile_pair_visible(m, tile, p_first + ty * TM + i, key, key_global)) s[i][j] = -INFINITY;
        }
      }
    }

    GLA_UNROLL
    for (int i = 0; i < TM; ++i) {
      float mx = s[i][0];
      GLA_UNROLL
      for (int j = 1; j < TN; ++j) mx = fmaxf(mx, s[i][j]);
      mx = fmaxf(mx, simt::shfl_xor(mx, 1));
      mx = fmaxf(mx, simt::shfl_xor(mx, 2));
      mx = fmaxf(mx, simt::shfl_xor(mx, 4));
      const float m_new = fmaxf(row_max[i], mx);
      const float ref = softmax_ref(m_new);
      const float alpha = exp2_scaled(row_max[i], ref, sc);
      row_max[i] = m_new;
      float sum = 0.0f;
      GLA_UNROLL
      for (int j = 0; j < TN; ++j) {
        const float pij = exp2_scaled(s[i][j], ref, sc);
        s[i][j] = pij;
        sum += pij;
      }
      row_sum[i] = row_sum[i] * alpha + sum;
      GLA_UNROLL
      for (int k = 0; k < DO; ++k) acc[i][k] *= alpha;
    }

    GLA_UNROLL
    for (int j = 0; j < TN; ++j) {
      float col[TM];
      GLA_UNROLL
      for (int i = 0; i < TM; ++i) col[i] = s[i][j];
      store_rows<TM>(Pt + owned_column(tx, j) * PS + ty * TM, col);
    }
    simt::sync_threads();  // Pt complete; with kAlias, every read of Kt is done

    if (C::kAlias) {
      v_bad = simt::sync_threads_or(stage_values<D, BN>(P, sched, tile, vb, hd, tid, Vs));
    }

    const int64_t p_rows = p_first + ty * TM;
    if (v_bad) {
      accumulate_values<D, TM, BN, PS, true>(P, sched, tile, m, b, p_rows, Pt, Vs, tx, ty, acc);  // rare
    } else {
      accumulate_values<D, TM, BN, PS, false>(P, sched, tile, m, b, p_rows, Pt, Vs, tx, ty, acc);
    }
    simt::sync_threads();  // before the next tile overwrites Kt, Vs and Pt
  }

  GLA_UNROLL
  for (int i = 0; i < TM; ++i) {
    float l = row_sum[i];
    l += simt::shfl_xor(l, 1);
    l += simt::shfl_xor(l, 2);
    l += simt::shfl_xor(l, 4);
    row_sum[i] = l;
  }

  GLA_UNROLL
  for (int i = 0; i < TM; ++i) {
    const int64_t r = ty * TM + i;
    if (r >= rows) continue;
    const int64_t qi = i0 + r;
    if (is_global_token(P, b, qi + m.position_offset)) continue;  // the row pass owns global rows
    const RowResult res = finish_row(P, h, row_max[i], row_sum[i], sc);
    float* GLA_RESTRICT ob = P.out + b * P.o_s.batch + h * P.o_s.head + qi * P.o_s.seq;
    GLA_UNROLL
    for (int k = 0; k < DO; ++k) {
      const int d = owned_column(tx, k);
      if (d < hd) ob[d] = acc[i][k] * res.factor;
    }
    if (tx == 0 && P.lse != nullptr) P.lse[(b * P.heads + h) * P.seq_len + qi] = res.lse;
  }
}

constexpr int kRowWarps = kThreads / 32;
constexpr int kRowKeysPerWarp = 8;  // independent dot products (and loads) in flight per warp

// Shared memory of row_attention_kernel: q (head_dim rounded up to 32) and one (max, sum, acc[DV])
// per warp for the block-level merge.
inline size_t row_smem_bytes(int64_t head_dim, int dv) {
  return sizeof(float) * static_cast<size_t>(ceil_div(head_dim, 32) * 32 + kRowWarps * (dv + 2));
}

// Block (x, y): x = task * heads + head, y = split * dv_chunks + chunk. The block computes the
// scores over all head_dim dims and the output dims [chunk * DV, chunk * DV + DV) from keys
// split_range(count, splits, split) of the row's schedule. partial == nullptr (one split): the
// block writes out (and lse) itself; else it writes (max, sum, acc) for merge_rows_kernel.
// ScoreMod: P.score_mod, as for tile_attention_kernel.
template <int DV, bool ScoreMod>
GLA_GLOBAL void GLA_LAUNCH_BOUNDS(kThreads)
    row_attention_kernel(DeviceProblem P, const RowTask* tasks, int32_t splits, int32_t dv_chunks, float* partial) {
  static_assert(DV % 32 == 0, "DV is a multiple of the warp size");
  constexpr int DL = DV / 32;  // output dims per lane
  constexpr int KW = kRowKeysPerWarp;

  const int tid = simt::thread_x();
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int64_t task_index = simt::block_x() / P.heads;
  const int64_t h = simt::block_x() % P.heads;
  const int64_t split = simt::block_y() / dv_chunks;
  const int64_t dv0 = (simt::block_y() % dv_chunks) * DV;
  const RowTask task = tasks[task_index];
  const int64_t b = task.batch;
  const int64_t qi = task.query;
  const int64_t hk = h / P.group;
  const int64_t hd = P.head_dim;
  const int64_t hd32 = ceil_div(hd, 32) * 32;
  const float sc = P.scale_log2;
  [[maybe_unused]] const ScoreModifier mod = score_modifier(P, h);

  const RowSchedule rs = row_schedule(P, b, qi, task.global_row != 0);
  const KeyRange range = split_range(rs.count, splits, split);

  float* qs = simt::shared_floats();
  float* red = qs + hd32;

  const float* GLA_RESTRICT qrow = P.q + b * P.q_s.batch + h * P.q_s.head + qi * P.q_s.seq;
  const float* GLA_RESTRICT kb = P.k + b * P.k_s.batch + hk * P.k_s.head;
  const float* GLA_RESTRICT vb = P.v + b * P.v_s.batch + hk * P.v_s.head;
  for (int64_t d = tid; d < hd32; d += kThreads) qs[d] = d < hd ? qrow[d] * P.q_sign : 0.0f;
  simt::sync_threads();

  float acc[DL];
  GLA_UNROLL
  for (int g = 0; g < DL; ++g) acc[g] = 0.0f;
  float wmax = -INFINITY;
  float wsum = 0.0f;

  // Warp-uniform loop: every lane of a warp takes the same keys, so the shuffles are convergent.
  for (int64_t t0 = range.begin + warp * KW; t0 < range.end; t0 += kRowWarps * KW) {
    int64_t key[KW];
    GLA_UNROLL
    for (int u = 0; u < KW; ++u) {
      key[u] = -1;  // -1: past the range or not visible, never loaded
      const int64_t t = t0 + u;
      if (t < range.end) {
        const int64_t j = row_key(P, rs, t);
        if (row_pair_visible(P, rs, b, t, j)) key[u] = j;
      }
    }
    float s[KW];
    GLA_UNROLL
    for (int u = 0; u < KW; ++u) s[u] = 0.0f;
    for (int64_t d0 = 0; d0 < hd32; d0 += 32) {
      const int64_t d = d0 + lane;
      if (d < hd) {
        const float qd = qs[d];
        GLA_UNROLL
        for (int u = 0; u < KW; ++u) {
          if (key[u] >= 0) s[u] += qd * kb[key[u] * P.k_s.seq + d];
        }
      }
    }
    GLA_UNROLL
    for (int off = 16; off > 0; off >>= 1) {
      GLA_UNROLL
      for (int u = 0; u < KW; ++u) s[u] += simt::shfl_xor(s[u], off);
    }
    if constexpr (ScoreMod) {  // softcap / ALiBi
      GLA_UNROLL
      for (int u = 0; u < KW; ++u) {
        if (key[u] >= 0) s[u] = mod.apply(s[u], static_cast<float>(rs.position - key[u]));
      }
    }
    float mx = -INFINITY;
    GLA_UNROLL
    for (int u = 0; u < KW; ++u) {
      if (key[u] < 0) s[u] = -INFINITY;
      mx = fmaxf(mx, s[u]);
    }
    const float m_new = fmaxf(wmax, mx);
    const float ref = softmax_ref(m_new);
    const float alpha = exp2_scaled(wmax, ref, sc);
    wmax = m_new;
    float pw[KW];
    float sum = 0.0f;
    GLA_UNROLL
    for (int u = 0; u < KW; ++u) {
      pw[u] = exp2_scaled(s[u], ref, sc);
      sum += pw[u];
    }
    wsum = wsum * alpha + sum;
    GLA_UNROLL
    for (int g = 0; g < DL; ++g) {
      const int64_t d = dv0 + g * 32 + lane;
      float o = 0.0f;
      if (d < hd) {
        GLA_UNROLL
        for (int u = 0; u < KW; ++u) {
          if (key[u] >= 0) o += pw[u] * vb[key[u] * P.v_s.seq + d];
        }
      }
      acc[g] = acc[g] * alpha + o;
    }
  }

  // Merge the four warps' states.
  float* mine = red + warp * (DV + 2);
  if (lane == 0) {
    mine[0] = wmax;
    mine[1] = wsum;
  }
  GLA_UNROLL
  for (int g = 0; g < DL; ++g) mine[2 + g * 32 + lane] = acc[g];
  simt::sync_threads();

  float bmax = -INFINITY;
  GLA_UNROLL
  for (int w = 0; w < kRowWarps; ++w) bmax = fmaxf(bmax, red[w * (DV + 2)]);
  const float ref = softmax_ref(bmax);
  float weight[kRowWarps];
  float bsum = 0.0f;
  GLA_UNROLL
  for (int w = 0; w < kRowWarps; ++w) {
    weight[w] = exp2_scaled(red[w * (DV + 2)], ref, sc);
    bsum += red[w * (DV + 2) + 1] * weight[w];
  }

  if (partial == nullptr) {
    const RowResult res = finish_row(P, h, bmax, bsum, sc);
    float* GLA_RESTRICT orow = P.out + b * P.o_s.batch + h * P.o_s.head + qi * P.o_s.seq;
    for (int d = tid; d < DV; d += kThreads) {
      if (dv0 + d >= hd) break;
      float o = 0.0f;
      GLA_UNROLL
      for (int w = 0; w < kRowWarps; ++w) o += red[w * (DV + 2) + 2 + d] * weight[w];
      orow[dv0 + d] = o * res.factor;
    }
    if (tid == 0 && dv0 == 0 && P.lse != nullptr) P.lse[(b * P.heads + h) * P.seq_len + qi] = res.lse;
  } else {
    const int64_t stride = 2 + static_cast<int64_t>(dv_chunks) * DV;
    float* GLA_RESTRICT part = partial + ((task_index * P.heads + h) * splits + split) * stride;
    for (int d = tid; d < DV; d += kThreads) {
      float o = 0.0f;
      GLA_UNROLL
      for (int w = 0; w < kRowWarps; ++w) o += red[w * (DV + 2) + 2 + d] * weight[w];
      part[2 + dv0 + d] = o;
    }
    if (tid == 0 && dv0 == 0) {
      part[0] = bmax;
      part[1] = bsum;
    }
  }
}

// Block x = task * heads + head. Shared memory: one weight per split.
GLA_GLOBAL void GLA_LAUNCH_BOUNDS(kThreads)
    merge_rows_kernel(DeviceProblem P, const RowTask* tasks, int32_t splits, int32_t padded_dims, const float* partial) {
  const int tid = simt::thread_x();
  const int64_t task_index = simt::block_x() / P.heads;
  const int64_t h = simt::block_x() % P.heads;
  const RowTask task = tasks[task_index];
  const int64_t b = task.batch;
  const int64_t qi = task.query;
  const int64_t stride = 2 + static_cast<int64_t>(padded_dims);
  const float* GLA_RESTRICT base = partial + (task_index * P.heads + h) * splits * stride;
  float* weight = simt::shared_floats();

  float gmax = -INFINITY;
  for (int s = 0; s < splits; ++s) gmax = fmaxf(gmax, base[s * stride]);
  const float ref = softmax_ref(gmax);
  for (int s = tid; s < splits; s += kThreads) weight[s] = exp2_scaled(base[s * stride], ref, P.scale_log2);
  simt::sync_threads();
  float gsum = 0.0f;
  for (int s = 0; s < splits; ++s) gsum += base[s * stride + 1] * weight[s];
  const RowResult res = finish_row(P, h, gmax, gsum, P.scale_log2);

  float* GLA_RESTRICT orow = P.out + b * P.o_s.batch + h * P.o_s.head + qi * P.o_s.seq;
  for (int64_t d = tid; d < P.head_dim; d += kThreads) {
    float o = 0.0f;
    for (int s = 0; s < splits; ++s) o += base[s * stride + 2 + d] * weight[s];
    orow[d] = o * res.factor;
  }
  if (tid == 0 && P.lse != nullptr) P.lse[(b * P.heads + h) * P.seq_len + qi] = res.lse;
}

// Padding rows (q_lengths): block x = b * heads + h writes rows [q_length(b), seq_len) of (b, h):
// out 0 over head_dim, lse -inf, whatever the sinks. No other kernel touches them.
GLA_GLOBAL void GLA_LAUNCH_BOUNDS(kThreads) pad_rows_kernel(DeviceProblem P) {
  const int tid = simt::thread_x();
  const int64_t b = simt::block_x() / P.heads;
  const int64_t h = simt::block_x() % P.heads;
  const int64_t first = q_length(P, b);
  const int64_t n = (P.seq_len - first) * P.head_dim;
  float* GLA_RESTRICT ob = P.out + b * P.o_s.batch + h * P.o_s.head;
  for (int64_t e = tid; e < n; e += kThreads) {
    const int64_t i = first + e / P.head_dim;
    ob[i * P.o_s.seq + e % P.head_dim] = 0.0f;
  }
  if (P.lse != nullptr) {
    for (int64_t i = first + tid; i < P.seq_len; i += kThreads) P.lse[(b * P.heads + h) * P.seq_len + i] = -INFINITY;
  }
}

}  // namespace cuda
}  // namespace gla
