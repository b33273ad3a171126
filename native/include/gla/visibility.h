// The visibility rule of problem.h, and the tile classification built on it.
// Shared by the CPU driver and the CUDA kernels so that both skip exactly the same work.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define GLA_HOST_DEVICE __host__ __device__
#else
#define GLA_HOST_DEVICE
#endif

namespace gla {

// The part of the rule that depends only on positions: everything except global tokens.
// Global *query* rows are computed by the driver as rows with an unbounded window; global *keys*
// are checked per element (is_global_key) inside partly visible tiles and gathered otherwise.
struct RowMask {
  int64_t kv_length;     // keys j >= kv_length are invisible (kv_lengths[b], or kv_seq_len)
  int64_t position_offset;  // kv_length(b) - q_length(b): query i sits at position i + position_offset
  int64_t window_left;   // -1 = unbounded
  int64_t window_right;  // -1 = unbounded
  bool causal;
};

enum class TileVisibility : int32_t { none = 0, partial = 1, full = 2 };

struct KeyRange {
  int64_t begin;  // inclusive
  int64_t end;    // exclusive; begin == end means empty
};

GLA_HOST_DEVICE inline int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }
GLA_HOST_DEVICE inline int64_t max_i64(int64_t a, int64_t b) { return a > b ? a : b; }

// Is key j visible to the query at position p, global tokens aside?
GLA_HOST_DEVICE inline bool in_window(const RowMask& m, int64_t p, int64_t j) {
  if (m.window_left >= 0 && j < p - m.window_left) return false;
  if (m.window_right >= 0 && j > p + m.window_right) return false;
  return true;
}

GLA_HOST_DEVICE inline bool key_allowed(const RowMask& m, int64_t p, int64_t j) {
  return j >= 0 && j < m.kv_length && (!m.causal || j <= p);
}

// The full rule for one (query, key) pair, given whether key j is a global token.
GLA_HOST_DEVICE inline bool key_visible(const RowMask& m, int64_t p, int64_t j, bool j_is_global) {
  return key_allowed(m, p, j) && (j_is_global || in_window(m, p, j));
}

// The keys that any query at positions [p_first, p_last] can see through its window. A driver cuts
// its key tiles from exactly this range (clipped, not widened to a tile grid) and gathers the global
// keys outside it separately, so no key is ever counted twice. Within this range no key tile is invisible by the
// window alone, so a driver iterating it visits only tiles that hold at least one visible pair
// or that are cut by causality / kv_length only at their edges.
GLA_HOST_DEVICE inline KeyRange window_key_range(const RowMask& m, int64_t p_first, int64_t p_last) {
  int64_t begin = m.window_left < 0 ? 0 : max_i64(0, p_first - m.window_left);
  int64_t end = m.window_right < 0 ? m.kv_length : min_i64(m.kv_length, p_last + m.window_right + 1);
  if (m.causal) end = min_i64(end, p_last + 1);
  if (end < begin) end = begin;
  return KeyRange{begin, end};
}

// Classify the pairs of rows [p_first, p_last] x keys [j_begin, j_end) by the rule without globals:
// full = every pair visible (no per-element mask needed), none = no pair visible, else partial.
GLA_HOST_DEVICE inline TileVisibility classify_tile(const RowMask& m, int64_t p_first, int64_t p_last,
                                                    int64_t j_begin, int64_t j_end) {
  const int64_t j_last = j_end - 1;
  if (j_end <= j_begin || j_begin >= m.kv_length) return TileVisibility::none;
  if (m.causal && j_begin > p_last) return TileVisibility::none;
  if (m.window_left >= 0 && j_last < p_first - m.window_left) return TileVisibility::none;
  if (m.window_right >= 0 && j_begin > p_last + m.window_right) return TileVisibility::none;
  const bool full = j_last < m.kv_length && (!m.causal || j_last <= p_first) &&
                    (m.window_left < 0 || j_begin >= p_last - m.window_left) &&
                    (m.window_right < 0 || j_last <= p_first + m.window_right);
  return full ? TileVisibility::full : TileVisibility::partial;
}

}  // namespace gla
