// Host side of one attention call, shared by the CUDA plugin and the CPU emulation in the tests:
// which passes run with which kernel configuration (make_schedule), the row pass's task list
// (fill_tasks), and the launches themselves (launch_schedule, generic over who runs them).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "gla/problem.h"
#include "kernels.cuh"

namespace gla {
namespace cuda {

// Up to this many query rows, every row goes to the row pass: a query tile of 64 rows would be
// mostly padding, and splitting the keys is what fills the GPU then.
constexpr int64_t kDecodeRows = 8;
constexpr int kMaxSplits = 64;
constexpr int64_t kMinKeysPerSplit = 256;

struct ScheduleLimits {
  int sm_count = 1;
  size_t smem_per_block = 48 * 1024;  // the device's opt-in maximum of dynamic shared memory
  int force_splits = 0;               // tests: exact number of key splits for the row pass
  bool force_rows = false;            // tests: every row through the row pass
};

struct LaunchSchedule {
  int tile_dim = 0;  // padded head_dim of the tile pass; 0: no tile pass
  int64_t tile_blocks = 0;
  size_t tile_smem = 0;
  bool all_rows = false;  // the row pass covers every row (else only the global query rows)
  int64_t tasks = 0;      // rows of the row pass
  int row_dv = 0;
  int dv_chunks = 0;
  int splits = 1;
  size_t row_smem = 0;
  size_t merge_smem = 0;
  int64_t partial_floats = 0;  // scratch of the split row pass; 0 when splits == 1
  bool pad_rows = false;       // some rows are padding (q_lengths): pad_rows_kernel writes them
};

inline size_t tile_smem_bytes(int dim) {
  switch (dim) {
    case 32: return TileConfig<32, 4, 8>::kSmemBytes;
    case 64: return TileConfig<64, 4, 8>::kSmemBytes;
    case 128: return TileConfig<128, 4, 4>::kSmemBytes;
    case 256: return TileConfig<256, 2, 4>::kSmemBytes;
    default: return 0;
  }
}

inline int padded_dim(int64_t head_dim) {
  if (head_dim <= 32) return 32;
  if (head_dim <= 64) return 64;
  if (head_dim <= 128) return 128;
  if (head_dim <= 256) return 256;
  return 0;
}

inline int64_t tile_rows(int dim) { return dim == 256 ? TileConfig<256, 2, 4>::BM : 64; }

inline int64_t host_q_length(const AttentionProblem& p, int64_t b) {
  return p.q_lengths != nullptr ? static_cast<int64_t>(p.q_lengths[b]) : p.seq_len;
}

// Query row i of batch item b sits at position i + position_offset(p, b) (schedule.h, row_mask).
inline int64_t host_position_offset(const AttentionProblem& p, int64_t b) {
  const int64_t kv_length = p.kv_lengths != nullptr ? static_cast<int64_t>(p.kv_lengths[b]) : p.kv_seq_len;
  return kv_length - host_q_length(p, b);
}

// Real query rows (b, i), i < q_length(b), whose position is a global token of b.
inline int64_t global_row_count(const AttentionProblem& p) {
  if (p.global_offsets == nullptr) return 0;
  int64_t n = 0;
  for (int64_t b = 0; b < p.batch; ++b) {
    const int64_t off = host_position_offset(p, b);
    const int64_t q_len = host_q_length(p, b);
    for (int64_t g = p.global_offsets[b]; g < p.global_offsets[b + 1]; ++g) {
      const int64_t i = static_cast<int64_t>(p.global_indices[g]) - off;
      if (i >= 0 && i < q_len) ++n;
    }
  }
  return n;
}

// Real query rows of the whole batch: sum of q_length(b).
inline int64_t real_row_count(const AttentionProblem& p) {
  if (p.q_lengths == nullptr) return p.batch * p.seq_len;
  int64_t n = 0;
  for (int64_t b = 0; b < p.batch; ++b) n += host_q_length(p, b);
  return n;
}

inline int64_t max_q_length(const AttentionProblem& p) {
  if (p.q_lengths == nullptr) return p.seq_len;
  int64_t n = 0;
  for (int64_t b = 0; b < p.batch; ++b) n = max_i64(n, host_q_length(p, b));
  return n;
}

// Returns nullptr, or why the problem cannot run on this device.
inline const char* make_schedule(const AttentionProblem& p, const ScheduleLimits& lim, LaunchSchedule* schedule) {
  *schedule = LaunchSchedule{};
  const int64_t real_rows = real_row_count(p);
  if (real_rows < p.batch * p.seq_len) {
    schedule->pad_rows = true;
    if (p.batch * p.heads > INT32_MAX) return "too many (batch, head) pairs for one CUDA grid";
  }
  const int tile_dim = padded_dim(p.head_dim);
  // By the longest real sequence: a decode batch padded to a longer seq_len still goes to the rows.
  const bool tiles = !lim.force_rows && max_q_length(p) > kDecodeRows && tile_dim != 0 &&
                     tile_smem_bytes(tile_dim) <= lim.smem_per_block;
  if (tiles) {
    schedule->tile_dim = tile_dim;
    schedule->tile_blocks = p.batch * p.heads * ceil_div(p.seq_len, tile_rows(tile_dim));
    schedule->tile_smem = tile_smem_bytes(tile_dim);
    if (schedule->tile_blocks > INT32_MAX) return "too many query tiles for one CUDA grid";
    schedule->tasks = global_row_count(p);
  } else {
    schedule->all_rows = true;
    schedule->tasks = real_rows;
  }
  if (schedule->tasks == 0) return nullptr;

  schedule->row_dv = tile_dim != 0 ? tile_dim : 256;
  schedule->dv_chunks = static_cast<int>(ceil_div(p.head_dim, schedule->row_dv));
  schedule->row_smem = row_smem_bytes(p.head_dim, schedule->row_dv);
  if (schedule->row_smem > lim.smem_per_block) return "head_dim is too large for the CUDA backend's shared memory";
  if (schedule->tasks * p.heads > INT32_MAX) return "too many query rows for one CUDA grid";

  if (lim.force_splits > 0) {
    schedule->splits = lim.force_splits;
  } else {
    int64_t key_bound = p.kv_seq_len;
    if (p.global_offsets == nullptr && p.window_left >= 0 && p.window_right >= 0) {
      key_bound = min_i64(key_bound, p.window_left + p.window_right + 1);
    }
    const int64_t blocks = schedule->tasks * p.heads * schedule->dv_chunks;
    // About 8 blocks per SM: each walks its keys with dependent loads, so it takes many to hide latency.
    const int64_t want = ceil_div(8 * static_cast<int64_t>(lim.sm_count), blocks);
    const int64_t cap = max_i64(1, key_bound / kMinKeysPerSplit);
    schedule->splits = static_cast<int>(max_i64(1, min_i64(min_i64(want, cap), kMaxSplits)));
  }
  if (static_cast<int64_t>(schedule->splits) * schedule->dv_chunks > 65535) return "too many key splits for one CUDA grid";
  if (schedule->splits > 1) {
    schedule->partial_floats =
        schedule->tasks * p.heads * schedule->splits * (2 + static_cast<int64_t>(schedule->dv_chunks) * schedule->row_dv);
    schedule->merge_smem = sizeof(float) * static_cast<size_t>(schedule->splits);
  }
  return nullptr;
}

// Writes schedule.tasks entries: every real row (all_rows), else the real global query rows.
// Padding rows (i >= q_length(b)) are never tasks.
inline void fill_tasks(const AttentionProblem& p, const LaunchSchedule& schedule, RowTask* out) {
  int64_t n = 0;
  for (int64_t b = 0; b < p.batch; ++b) {
    const int64_t off = host_position_offset(p, b);
    const int64_t q_len = host_q_length(p, b);
    const int64_t g_begin = p.global_offsets != nullptr ? p.global_offsets[b] : 0;
    const int64_t g_end = p.global_offsets != nullptr ? p.global_offsets[b + 1] : 0;
    if (schedule.all_rows) {
      int64_t g = g_begin;  // globals are sorted: walk them alongside the rows
      for (int64_t i = 0; i < q_len; ++i) {
        while (g < g_end && p.global_indices[g] < i + off) ++g;
        const bool global_row = g < g_end && p.global_indices[g] == i + off;
        out[n++] = RowTask{static_cast<int32_t>(b), static_cast<int32_t>(i), global_row ? 1 : 0, 0};
      }
    } else {
      for (int64_t g = g_begin; g < g_end; ++g) {
        const int64_t i = static_cast<int64_t>(p.global_indices[g]) - off;
        if (i >= 0 && i < q_len) out[n++] = RowTask{static_cast<int32_t>(b), static_cast<int32_t>(i), 1, 0};
      }
    }
  }
}

// The problem with every buffer replaced by its device twin (same element offsets).
struct DeviceBuffers {
  const float* q;
  const float* k;
  const float* v;
  float* out;
  float* lse;
  const int32_t* kv_lengths;
  const int32_t* global_offsets;
  const int32_t* global_indices;
  const uint8_t* global_flags;
  const int32_t* q_lengths;     // nullptr exactly when the problem's is; likewise below
  const float* alibi_slopes;
  const float* sink_logits;
};

inline DeviceProblem make_device_problem(const AttentionProblem& p, const DeviceBuffers& d) {
  DeviceProblem P;
  P.q = d.q;
  P.k = d.k;
  P.v = d.v;
  P.out = d.out;
  P.lse = d.lse;
  P.kv_lengths = d.kv_lengths;
  P.q_lengths = d.q_lengths;
  P.global_offsets = d.global_offsets;
  P.global_indices = d.global_indices;
  P.global_flags = d.global_flags;
  P.batch = p.batch;
  P.heads = p.heads;
  P.kv_heads = p.kv_heads;
  P.group = p.heads / p.kv_heads;
  P.seq_len = p.seq_len;
  P.kv_seq_len = p.kv_seq_len;
  P.head_dim = p.head_dim;
  P.q_s = p.q_strides;
  P.k_s = p.k_strides;
  P.v_s = p.v_strides;
  P.o_s = p.out_strides;
  P.q_sign = p.scale < 0.0f ? -1.0f : 1.0f;
  P.causal = p.causal;
  P.window_left = p.window_left;
  P.window_right = p.window_right;
  P.softcap = p.softcap > 0.0f ? p.softcap : 0.0f;
  P.alibi_slopes = d.alibi_slopes;
  P.sink_logits = d.sink_logits;
  P.score_mod = P.softcap > 0.0f || P.alibi_slopes != nullptr;
  P.score_scale = std::fabs(p.scale);
  // Raw dot products scaled inside exp2, or (score_mod) natural-unit scores, which exp2 takes in log2(e).
  P.scale_log2 = P.score_mod ? kLog2e : static_cast<float>(std::fabs(static_cast<double>(p.scale)) * 1.4426950408889634);
  return P;
}

template <bool ScoreMod, class Launcher>
void launch_tiles(Launcher& L, const LaunchSchedule& schedule, const DeviceProblem& P) {
  switch (schedule.tile_dim) {
    case 32: L.launch(&tile_attention_kernel<32, 4, 8, ScoreMod>, schedule.tile_blocks, 1, schedule.tile_smem, P); break;
    case 64: L.launch(&tile_attention_kernel<64, 4, 8, ScoreMod>, schedule.tile_blocks, 1, schedule.tile_smem, P); break;
    case 128: L.launch(&tile_attention_kernel<128, 4, 4, ScoreMod>, schedule.tile_blocks, 1, schedule.tile_smem, P); break;
    case 256: L.launch(&tile_attention_kernel<256, 2, 4, ScoreMod>, schedule.tile_blocks, 1, schedule.tile_smem, P); break;
    default: break;
  }
}

template <bool ScoreMod, class Launcher>
void launch_rows(Launcher& L, const LaunchSchedule& schedule, const DeviceProblem& P, const RowTask* tasks, float* part) {
  const int64_t gx = schedule.tasks * P.heads;
  const int64_t gy = static_cast<int64_t>(schedule.splits) * schedule.dv_chunks;
  const int32_t splits = schedule.splits;
  const int32_t chunks = schedule.dv_chunks;
  switch (schedule.row_dv) {
    case 32: L.launch(&row_attention_kernel<32, ScoreMod>, gx, gy, schedule.row_smem, P, tasks, splits, chunks, part); break;
    case 64: L.launch(&row_attention_kernel<64, ScoreMod>, gx, gy, schedule.row_smem, P, tasks, splits, chunks, part); break;
    case 128: L.launch(&row_attention_kernel<128, ScoreMod>, gx, gy, schedule.row_smem, P, tasks, splits, chunks, part); break;
    default: L.launch(&row_attention_kernel<256, ScoreMod>, gx, gy, schedule.row_smem, P, tasks, splits, chunks, part); break;
  }
}

// Launcher: launch(kernel, grid_x, grid_y, smem_bytes, args...) runs 128-thread blocks in order.
template <class Launcher>
void launch_schedule(Launcher& L, const LaunchSchedule& schedule, const DeviceProblem& P, const RowTask* tasks, float* partial) {
  if (P.score_mod) {
    launch_tiles<true>(L, schedule, P);
  } else {
    launch_tiles<false>(L, schedule, P);
  }
  if (schedule.pad_rows) L.launch(&pad_rows_kernel, P.batch * P.heads, 1, 0, P);
  if (schedule.tasks == 0) return;
  const int64_t gx = schedule.tasks * P.heads;
  float* part = schedule.splits > 1 ? partial : nullptr;
  if (P.score_mod) {
    launch_rows<true>(L, schedule, P, tasks, part);
  } else {
    launch_rows<false>(L, schedule, P, tasks, part);
  }
  if (schedule.splits > 1) {
    const int32_t padded = schedule.dv_chunks * schedule.row_dv;
    L.launch(&merge_rows_kernel, gx, 1, schedule.merge_smem, P, tasks, static_cast<int32_t>(schedule.splits), padded,
             static_cast<const float*>(partial));
  }
}

}  // namespace cuda
}  // namespace gla
