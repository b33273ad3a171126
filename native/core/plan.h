// How a validated problem is cut into work: row groups (query tiles, plus the batch's global query
// rows), the key blocks each group visits, and how many threads and key chunks to use.
#pragma once

#include <cstdint>
#include <vector>

#include "gla/problem.h"
#include "gla/visibility.h"
#include "kernels/cpu/kernel_api.h"

namespace gla {
namespace core {

// Knobs for tests and tuning; 0 (or -1 for min_work_per_thread) picks the default.
struct DriverConfig {
  int block_q = 0;      // query rows per group
  int block_k = 0;      // keys per block
  int split_k = 0;      // key chunks per (group, head); > 1 forces the split-K path
  int64_t min_work_per_thread = -1;  // multiply-adds below which another thread is not worth waking
};

// A set of query rows of one batch item that run together, with the keys they visit: first the
// blocks cut from `range`, then the gathered global keys outside it, in blocks of block_k.
struct RowGroup {
  int64_t batch;
  bool global_rows;  // the batch's global query rows (window unbounded), not a tile
  int n_rows;
  int64_t first;     // tile: first query row; global rows: index into global_indices
  int64_t p_first;   // positions of the first and last row (rows are ascending)
  int64_t p_last;
  KeyRange range;
  // Global keys outside `range` that some row may still see: two index spans into global_indices
  // (those before range.begin and those from range.end), already limited by kv length and causality.
  int64_t gathered_begin[2];
  int64_t gathered_end[2];
  int64_t n_range_blocks;
  int64_t n_blocks;  // range blocks + gathered blocks
};

struct Plan {
  int block_q = 0;
  int block_k = 0;
  int dim_pad = 0;   // head_dim rounded up to the kernel's vector width
  int vector_width = 1;
  int64_t window_left = -1;     // normalised: a bound reaching past every key is -1
  int64_t window_right = -1;
  bool has_globals = false;
  // bfloat16 products under a window: each tile's key range starts on an even key (one masked key
  // more at most), so that its blocks read the head's V pairs, which pair keys 2i and 2i + 1.
  bool even_ranges = false;
  std::vector<RowGroup> groups;
  int max_rows = 0;
  // Query heads of one GQA group run as one unit, their rows stacked (head-major), when the row
  // groups are short: K and V are then read once per kv head instead of once per query head,
  // which is what bounds decode. unit_rows = max_rows * heads_per_unit <= block_q.
  int heads_per_unit = 1;
  int unit_rows = 0;
  int64_t chunks = 1;  // key chunks per (group, head); > 1 means partial results and a merge
  int threads = 1;     // threads for this call, caller included
};

// Fills *plan (reusing the capacity of plan->groups). Throws std::bad_alloc.
void make_plan(const AttentionProblem& problem, const cpu::CpuKernels& kernels, int pool_threads,
               const DriverConfig& config, Plan* plan);

// The same, returned by value (tests).
Plan make_plan(const AttentionProblem& problem, const cpu::CpuKernels& kernels, int pool_threads,
               const DriverConfig& config);

// Query i of batch item b sits at position i + position_offset(problem, b): each sequence is aligned
// to the end of its own keys, kv_length(b) - q_length(b) (problem.h).
int64_t position_offset(const AttentionProblem& problem, int64_t b);

// The position rule of a row group of batch b (global rows see through an unbounded window).
RowMask row_mask(const AttentionProblem& problem, const Plan& plan, int64_t b, bool global_rows);

// Query row index of row r of a group.
int64_t group_row(const AttentionProblem& problem, const Plan& plan, const RowGroup& group, int r);

// Absolute key index of the n-th gathered global key of a group.
int64_t gathered_key(const AttentionProblem& problem, const RowGroup& group, int64_t n);

}  // namespace core
}  // namespace gla
