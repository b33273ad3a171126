// Which keys a CUDA block visits, shared by the kernels (device) and the CPU tests (host).
//
// A query tile [p_first, p_last] visits, in this order:
//   1. window tiles: window_key_range(p_first, p_last) cut into tiles of BN keys from its first key
//      (not aligned to a grid), each classified by classify_tile; `none` tiles are skipped unloaded,
//      `full` tiles of BN keys run without a per-element mask;
//   2. gathered tiles: the global keys of the batch item outside that range that some row of the
//      tile may see (j < kv_length, and j <= p_last when causal), BN at a time.
// The two sets are disjoint, so no key is counted twice. A global *query* row is not computed by the
// tile pass at all: the row pass computes it alone, with an unbounded window (RowSchedule).
#pragma once

#include <cmath>
#include <cstdint>

#include "gla/problem.h"
#include "gla/visibility.h"

namespace gla {
namespace cuda {

// The problem as the kernels see it: device pointers (each at the same element offsets as the
// caller's buffer), plus values derived once on the host.
struct DeviceProblem {
  const float* q;
  const float* k;
  const float* v;
  float* out;
  float* lse;                      // nullptr: no lse
  const int32_t* kv_lengths;       // nullptr: every key present
  const int32_t* q_lengths;        // nullptr: every query row real; else rows i >= q_lengths[b] are padding
  const int32_t* global_offsets;   // nullptr: no global tokens
  const int32_t* global_indices;
  const uint8_t* global_flags;     // [batch][kv_seq_len], 1 for a global token; nullptr: search the CSR
  int64_t batch;
  int64_t heads;
  int64_t kv_heads;
  int64_t group;                   // heads / kv_heads
  int64_t seq_len;
  int64_t kv_seq_len;
  int64_t head_dim;
  Strides q_s;
  Strides k_s;
  Strides v_s;
  Strides o_s;
  // Scores stay raw dot products (q_sign * q) . k, exact for small-integer inputs; the scale enters
  // only as exp2((s - max) * scale_log2), so its rounding error scales with the gap to the row max,
  // not with the size of the logits. q_sign makes a negative scale positive (negating is exact).
  float q_sign;
  float scale_log2;                // |scale| * log2(e)
  bool causal;
  int64_t window_left;
  int64_t window_right;
  // Score modifiers (problem.h). score_mod: softcap > 0 or ALiBi. Then, and only then, launch.h runs
  // the kernels' ScoreMod instantiations, which turn each tile's raw dot products into natural-unit
  // scores (ScoreModifier: |scale| * dot, the softcap, the ALiBi bias), and scale_log2 is log2(e), so
  // the online softmax runs unchanged on them. Without modifiers the plain instantiations run the
  // raw path above exactly as before.
  bool score_mod;
  float score_scale;               // |scale|, used with score_mod
  float softcap;                   // 0: off
  const float* alibi_slopes;       // [heads] or nullptr
  // [heads] or nullptr: folded into each row's statistics once, at the end (finish_row).
  const float* sink_logits;
};

// One query row for the row pass (decode rows, global query rows, very large head_dim).
struct RowTask {
  int32_t batch;
  int32_t query;
  int32_t global_row;  // 1: the query is a global token, so its window is unbounded
  int32_t unused;
};

GLA_HOST_DEVICE inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

GLA_HOST_DEVICE inline int64_t kv_length(const DeviceProblem& P, int64_t b) {
  return P.kv_lengths != nullptr ? static_cast<int64_t>(P.kv_lengths[b]) : P.kv_seq_len;
}

// Rows i >= q_length(b) are padding: the tile and row passes skip them, pad_rows_kernel writes them.
GLA_HOST_DEVICE inline int64_t q_length(const DeviceProblem& P, int64_t b) {
  return P.q_lengths != nullptr ? static_cast<int64_t>(P.q_lengths[b]) : P.seq_len;
}

// Query row i of batch item b sits at position i + kv_length(b) - q_length(b) (per sequence).
GLA_HOST_DEVICE inline RowMask row_mask(const DeviceProblem& P, int64_t b) {
  RowMask m;
  m.kv_length = kv_length(P, b);
  m.position_offset = m.kv_length - q_length(P, b);
  m.window_left = P.window_left;
  m.window_right = P.window_right;
  m.causal = P.causal;
  return m;
}

// First index in a[lo, hi) whose value is >= value (a sorted ascending).
GLA_HOST_DEVICE inline int64_t lower_bound_index(const int32_t* a, int64_t lo, int64_t hi, int64_t value) {
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (static_cast<int64_t>(a[mid]) < value) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

GLA_HOST_DEVICE inline bool is_global_token(const DeviceProblem& P, int64_t b, int64_t j) {
  if (j < 0 || j >= P.kv_seq_len) return false;
  if (P.global_flags != nullptr) return P.global_flags[b * P.kv_seq_len + j] != 0;
  if (P.global_offsets == nullptr) return false;
  const int64_t lo = P.global_offsets[b];
  const int64_t hi = P.global_offsets[b + 1];
  const int64_t at = lower_bound_index(P.global_indices, lo, hi, j);
  return at < hi && static_cast<int64_t>(P.global_indices[at]) == j;
}

// Global keys outside a window range, as two runs of the batch item's sorted global_indices:
// [a_begin, a_begin + a_count) below the range, [b_begin, b_begin + b_count) above it.
struct GatherList {
  int64_t a_begin;
  int64_t a_count;
  int64_t b_begin;
  int64_t b_count;
  GLA_HOST_DEVICE int64_t total() const { return a_count + b_count; }
};

// `limit`: keys at or past it are invisible to every row up to p_last (kv_length, causality), so
// gathering them would only load keys that the mask then discards.
GLA_HOST_DEVICE inline GatherList gather_list(const DeviceProblem& P, int64_t b, const RowMask& m, KeyRange win,
                                              int64_t p_last) {
  GatherList g{0, 0, 0, 0};
  if (P.global_offsets == nullptr) return g;
  const int64_t lo = P.global_offsets[b];
  const int64_t hi = P.global_offsets[b + 1];
  int64_t limit = m.kv_length;
  if (m.causal) limit = min_i64(limit, p_last + 1);
  if (limit <= 0) return g;
  const int64_t a_end = lower_bound_index(P.global_indices, lo, hi, min_i64(win.begin, limit));
  g.a_begin = lo;
  g.a_count = a_end - lo;
  const int64_t b_first = lower_bound_index(P.global_indices, lo, hi, max_i64(win.end, win.begin));
  const int64_t b_last = lower_bound_index(P.global_indices, lo, hi, limit);
  g.b_begin = b_first;
  g.b_count = max_i64(0, b_last - b_first);
  return g;
}

GLA_HOST_DEVICE inline int64_t gather_key(const DeviceProblem& P, const GatherList& g, int64_t t) {
  const int64_t at = t < g.a_count ? g.a_begin + t : g.b_begin + (t - g.a_count);
  return static_cast<int64_t>(P.global_indices[at]);
}

enum class TileKind : int32_t { window = 0, gathered = 1 };

struct TileDesc {
  TileKind kind;
  int64_t first;  // window: first key; gathered: first position in the gather list
  int64_t len;    // keys in this tile, 1..BN
  TileVisibility vis;
};

struct TileSchedule {
  KeyRange win;
  GatherList gathers;
  int64_t window_tiles;
  int64_t gathered_tiles;
  GLA_HOST_DEVICE int64_t count() const { return window_tiles + gathered_tiles; }
};

GLA_HOST_DEVICE inline TileSchedule tile_schedule(const DeviceProblem& P, int64_t b, const RowMask& m, int64_t p_first,
                                                  int64_t p_last, int64_t bn) {
  TileSchedule s;
  s.win = window_key_range(m, p_first, p_last);
  s.gathers = gather_list(P, b, m, s.win, p_last);
  s.window_tiles = ceil_div(s.win.end - s.win.begin, bn);
  s.gathered_tiles = ceil_div(s.gathers.total(), bn);
  return s;
}

// Tile t of the schedule. A window tile may come back `none`; the caller skips it without loading.
GLA_HOST_DEVICE inline TileDesc tile_at(const TileSchedule& s, const RowMask& m, int64_t p_first, int64_t p_last,
                                        int64_t bn, int64_t t) {
  TileDesc d;
  if (t < s.window_tiles) {
    d.kind = TileKind::window;
    d.first = s.win.begin + t * bn;
    d.len = min_i64(bn, s.win.end - d.first);
    d.vis = classify_tile(m, p_first, p_last, d.first, d.first + d.len);
  } else {
    d.kind = TileKind::gathered;
    d.first = (t - s.window_tiles) * bn;
    d.len = min_i64(bn, s.gathers.total() - d.first);
    d.vis = TileVisibility::partial;
  }
  return d;
}

// The key at column c of a tile, or -1 past its end.
GLA_HOST_DEVICE inline int64_t tile_key(const DeviceProblem& P, const TileSchedule& s, const TileDesc& d, int64_t c) {
  if (c >= d.len) return -1;
  return d.kind == TileKind::window ? d.first + c : gather_key(P, s.gathers, d.first + c);
}

// Whether the kernel counts the pair (row at position p, key j) of a tile. j < 0: padding column.
// Window keys are checked against the whole rule (a global key inside the range but outside some
// row's window is visible to it); gathered keys are global by construction, so only causality and
// kv_length apply.
GLA_HOST_DEVICE inline bool tile_pair_visible(const RowMask& m, const TileDesc& d, int64_t p, int64_t j, bool j_global) {
  if (j < 0) return false;
  if (d.kind == TileKind::window) return key_visible(m, p, j, j_global);
  return key_allowed(m, p, j);
}

// The keys of one query row: its window range, then (unless the row is global, whose window is
// unbounded) the global keys outside it. Indexed 0..count-1 so that the row pass can split them.
struct RowSchedule {
  RowMask mask;
  int64_t position;
  KeyRange win;
  GatherList gathers;
  int64_t count;
};

GLA_HOST_DEVICE inline RowSchedule row_schedule(const DeviceProblem& P, int64_t b, int64_t i, bool global_row) {
  RowSchedule r;
  r.mask = row_mask(P, b);
  if (global_row) {
    r.mask.window_left = -1;
    r.mask.window_right = -1;
  }
  r.position = i + r.mask.position_offset;
  r.win = window_key_range(r.mask, r.position, r.position);
  if (global_row) {
    r.gathers = GatherList{0, 0, 0, 0};
  } else {
    r.gathers = gather_list(P, b, r.mask, r.win, r.position);
  }
  r.count = (r.win.end - r.win.begin) + r.gathers.total();
  return r;
}

// Key number t of the row's schedule, and whether the row sees it.
GLA_HOST_DEVICE inline int64_t row_key(const DeviceProblem& P, const RowSchedule& r, int64_t t) {
  const int64_t nw = r.win.end - r.win.begin;
  return t < nw ? r.win.begin + t : gather_key(P, r.gathers, t - nw);
}

GLA_HOST_DEVICE inline bool row_pair_visible(const DeviceProblem& P, const RowSchedule& r, int64_t b, int64_t t,
                                             int64_t j) {
  const int64_t nw = r.win.end - r.win.begin;
  if (t < nw) return key_visible(r.mask, r.position, j, is_global_token(P, b, j));
  return key_allowed(r.mask, r.position, j);
}

// Part s of n items cut into `splits` near-equal contiguous parts (some may be empty).
GLA_HOST_DEVICE inline KeyRange split_range(int64_t n, int64_t splits, int64_t s) {
  const int64_t chunk = ceil_div(n, splits);
  const int64_t begin = min_i64(n, s * chunk);
  return KeyRange{begin, min_i64(n, begin + chunk)};
}

// The reference point for exp2 in the online softmax: the running max, or 0 while every score seen
// is -inf (a fully masked row so far), which keeps exp2(-inf - ref) = 0 instead of NaN.
GLA_HOST_DEVICE inline float softmax_ref(float running_max) { return running_max == -INFINITY ? 0.0f : running_max; }

// exp2((s - ref) * c), and 0 for a masked score (s = -inf) even when c is 0.
GLA_HOST_DEVICE inline float exp2_scaled(float s, float ref, float c) {
  return s == -INFINITY ? 0.0f : exp2f((s - ref) * c);
}

// A row's softmax sum is 0 (it saw no key, or only -inf scores), positive, or NaN: a NaN or +inf
// score (exp2(inf - inf)) or a NaN in q or k, which the running max (fmaxf) skips but exp2 does not.
// A NaN sum must reach out and lse as NaN, as IEEE arithmetic gives in the reference.
GLA_HOST_DEVICE inline bool row_saw_keys(float sum) { return sum > 0.0f || sum != sum; }

// The factor out = acc * inv_sum: 1 / sum (NaN for a NaN sum), 0 for a row that saw no key.
GLA_HOST_DEVICE inline float inv_sum(float sum) { return row_saw_keys(sum) ? 1.0f / sum : 0.0f; }

// Natural-log LSE from the raw running max and the sum of exp2((s - max) * c); -inf for a row that
// saw no key, NaN for a NaN sum.
GLA_HOST_DEVICE inline float lse_from_stats(float raw_max, float sum, float c) {
  return row_saw_keys(sum) ? (raw_max * c + log2f(sum)) * 0.6931471805599453f : -INFINITY;
}

// Whether x is finite: x - x is 0 for every finite x and NaN for an infinity or a NaN.
GLA_HOST_DEVICE inline bool finite_value(float x) { return x - x == 0.0f; }

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// The natural-unit score of a visible pair from its raw dot product (q_sign * q) . k, with the
// modifiers of problem.h in FlashAttention 2's order: scale, softcap, ALiBi; for query head h, only
// when P.score_mod. `gap` is p - j (ALiBi takes |p - j|). A NaN stays NaN; the softcap turns an
// infinite product into +-softcap, as tanh does in the reference.
struct ScoreModifier {
  float scale;    // |scale|
  float cap;      // softcap, 0: off
  float inv_cap;  // 1 / softcap
  float slope;    // alibi_slopes[h], 0 without ALiBi
  GLA_HOST_DEVICE float apply(float dot, float gap) const {
    float s = dot * scale;
    if (cap > 0.0f) s = cap * tanhf(s * inv_cap);
    return s - slope * fabsf(gap);
  }
};

GLA_HOST_DEVICE inline ScoreModifier score_modifier(const DeviceProblem& P, int64_t h) {
  ScoreModifier m;
  m.scale = P.score_scale;
  m.cap = P.softcap;
  m.inv_cap = P.softcap > 0.0f ? 1.0f / P.softcap : 0.0f;
  m.slope = P.alibi_slopes != nullptr ? P.alibi_slopes[h] : 0.0f;
  return m;
}

// How a row's (raw max, sum of exp2((s - max) * c), acc) becomes its output: out = acc * factor.
struct RowResult {
  float factor;
  float lse;
};

// Without sinks: 1 / sum and the lse of the statistics (inv_sum, lse_from_stats). With sinks, the
// sink joins the softmax denominator once, here (serving-spec): M = max(max, sink);
// sum' = sum * 2^(max - M) + 2^(sink - M) (in log2 units); factor = 2^(max - M) / sum';
// lse = M + log(sum'). A row that saw no key (max -inf, sum 0) gets factor 0 and lse = sink; a NaN
// sum (a NaN or +inf score reached the row) stays NaN in both.
GLA_HOST_DEVICE inline RowResult finish_row(const DeviceProblem& P, int64_t h, float raw_max, float sum, float c) {
  if (P.sink_logits == nullptr) return RowResult{inv_sum(sum), lse_from_stats(raw_max, sum, c)};
  const float sink = P.sink_logits[h];
  if (sum != sum) return RowResult{sum, sum};
  if (raw_max == -INFINITY) return RowResult{0.0f, sink};
  // In natural units: a sink near FLT_MAX times log2(e) would overflow to inf (inf - inf = NaN).
  const float a = raw_max * c * kLn2;  // the row max, in the sink's units
  const float m = fmaxf(a, sink);
  const float e = expf(a - m);
  const float total = sum * e + expf(sink - m);
  return RowResult{e / total, m + logf(total)};
}

}  // namespace cuda
}  // namespace gla
