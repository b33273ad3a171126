#include "core/plan.h"

#include <algorithm>

#include "core/checked_math.h"

namespace gla {
namespace core {
namespace {

// The kernels' preferred tile, with fewer rows for wide heads so that Q^T and the accumulator of a
// group (each rows x head_dim floats) stay within 64 KiB (L2-resident; 128 rows at head_dim 128
// measured faster than 64 on Zen 4, bench/NOTES.md section 5).
int default_block_q(const cpu::CpuKernels& kernels, int dim_pad) {
  int rows = kernels.block_rows;
  while (rows > kernels.vector_width && static_cast<int64_t>(rows) * dim_pad > 128 * 128) rows /= 2;
  return std::max(rows, 1);
}

// First index in [begin, end) of the sorted global list whose value is >= value.
int64_t lower_bound_index(const int32_t* indices, int64_t begin, int64_t end, int64_t value) {
  return std::lower_bound(indices + begin, indices + end, value,
                          [](int32_t a, int64_t v) { return static_cast<int64_t>(a) < v; }) -
         indices;
}

void finish_group(const AttentionProblem& p, const Plan& plan, RowGroup& g) {
  const RowMask mask = row_mask(p, plan, g.batch, g.global_rows);
  g.range = window_key_range(mask, g.p_first, g.p_last);
  if (plan.even_ranges && g.range.begin < g.range.end && g.range.begin % 2 != 0) --g.range.begin;
  g.n_range_blocks = ceil_div(g.range.end - g.range.begin, plan.block_k);
  g.gathered_begin[0] = g.gathered_end[0] = g.gathered_begin[1] = g.gathered_end[1] = 0;
  int64_t gathered = 0;
  // Global rows see through an unbounded window: their range already holds every key they may see.
  if (plan.has_globals && !g.global_rows) {
    const int64_t begin = p.global_offsets[g.batch], end = p.global_offsets[g.batch + 1];
    // key_allowed for the most permissive row of the group (the last one).
    int64_t limit = mask.kv_length;
    if (p.causal) limit = std::min(limit, g.p_last + 1);
    limit = std::max<int64_t>(limit, 0);
    const int64_t limit_index = lower_bound_index(p.global_indices, begin, end, limit);
    g.gathered_begin[0] = begin;
    g.gathered_end[0] = lower_bound_index(p.global_indices, begin, limit_index, g.range.begin);
    g.gathered_begin[1] = lower_bound_index(p.global_indices, g.gathered_end[0], limit_index, g.range.end);
    g.gathered_end[1] = std::max(limit_index, g.gathered_begin[1]);
    gathered = (g.gathered_end[0] - g.gathered_begin[0]) + (g.gathered_end[1] - g.gathered_begin[1]);
  }
  g.n_blocks = g.n_range_blocks + ceil_div(gathered, plan.block_k);
}

}  // namespace

int64_t position_offset(const AttentionProblem& p, int64_t b) { return kv_length_of(p, b) - q_length_of(p, b); }

RowMask row_mask(const AttentionProblem& p, const Plan& plan, int64_t b, bool global_rows) {
  RowMask m;
  m.kv_length = kv_length_of(p, b);
  m.position_offset = position_offset(p, b);
  m.window_left = global_rows ? -1 : plan.window_left;
  m.window_right = global_rows ? -1 : plan.window_right;
  m.causal = p.causal;
  return m;
}

int64_t group_row(const AttentionProblem& p, const Plan& plan, const RowGroup& g, int r) {
  if (!g.global_rows) return g.first + r;
  return static_cast<int64_t>(p.global_indices[g.first + r]) - position_offset(p, g.batch);
}

int64_t gathered_key(const AttentionProblem& p, const RowGroup& g, int64_t n) {
  const int64_t first_span = g.gathered_end[0] - g.gathered_begin[0];
  const int64_t index = n < first_span ? g.gathered_begin[0] + n : g.gathered_begin[1] + (n - first_span);
  return p.global_indices[index];
}

Plan make_plan(const AttentionProblem& p, const cpu::CpuKernels& kernels, int pool_threads, const DriverConfig& config) {
  Plan plan;
  make_plan(p, kernels, pool_threads, config, &plan);
  return plan;
}

void make_plan(const AttentionProblem& p, const cpu::CpuKernels& kernels, int pool_threads, const DriverConfig& config,
               Plan* out) {
  Plan& plan = *out;
  plan.groups.clear();
  plan.max_rows = 0;
  plan.chunks = 1;
  const int width = kernels.vector_width;
  plan.dim_pad = static_cast<int>(round_up(p.head_dim, width));
  plan.block_k = config.block_k > 0 ? config.block_k : kernels.block_keys;
  if (config.block_k <= 0 && p.seq_len <= kernels.few_rows) {
    // Decode: K and V stream from memory once, a block of K then a block of V. Longer blocks
    // halve the switches between the two streams and the per-block softmax (bench/NOTES.md, 8).
    plan.block_k *= 2;
  }
  plan.vector_width = width;
  // A bound that reaches past every key is the same as no bound; normalising it keeps every
  // position +- window expression far from int64 overflow (validate_problem caps the lengths).
  const int64_t covering = p.seq_len + p.kv_seq_len;
  plan.window_left = p.window_left >= covering ? -1 : p.window_left;
  plan.window_right = p.window_right >= covering ? -1 : p.window_right;
  plan.block_q = config.block_q > 0 ? config.block_q : default_block_q(kernels, plan.dim_pad);
  const int64_t right = p.causal ? 0 : plan.window_right;  // causal: nothing right of the row
  if (config.block_q <= 0 && plan.window_left >= 0 && right >= 0) {
    // A group of n rows computes about window + n keys per row where window + 1 are visible, so
    // with a narrow window tall groups waste more than they save: keep them at most 1/16 of it
    // (64 rows at window [256, 256]; bench/NOTES.md section 5).
    const int64_t window = plan.window_left + right + 1;
    while (plan.block_q > 64 && plan.block_q * 16 > window) plan.block_q /= 2;
  }
  plan.has_globals = p.global_offsets != nullptr && p.global_offsets[p.batch] > 0;
  // An even block_k also keeps the extra key inside a block with a visible one: a block of the
  // extra key alone would be invisible by the window and skipped, with a global key in it.
  plan.even_ranges = p.precision == Precision::bfloat16 && kernels.attend_block_bf16 != nullptr &&
                     plan.window_left >= 0 && plan.block_k % 2 == 0;

  for (int64_t b = 0; b < p.batch; ++b) {
    // Padding rows (at and past q_length) get no group: the driver writes them as zeros.
    const int64_t q_length = q_length_of(p, b);
    const int64_t offset = position_offset(p, b);
    for (int64_t i0 = 0; i0 < q_length; i0 += plan.block_q) {
      RowGroup g{};
      g.batch = b;
      g.global_rows = false;
      g.n_rows = static_cast<int>(std::min<int64_t>(plan.block_q, q_length - i0));
      g.first = i0;
      g.p_first = i0 + offset;
      g.p_last = g.p_first + g.n_rows - 1;
      finish_group(p, plan, g);
      plan.groups.push_back(g);
    }
    if (!plan.has_globals) continue;
    // Global query rows: globals at positions of real query rows, [offset, offset + q_length).
    const int64_t begin = p.global_offsets[b], end = p.global_offsets[b + 1];
    const int64_t row_begin = lower_bound_index(p.global_indices, begin, end, offset);
    const int64_t row_end = lower_bound_index(p.global_indices, row_begin, end, offset + q_length);
    for (int64_t first = row_begin; first < row_end; first += plan.block_q) {
      RowGroup g{};
      g.batch = b;
      g.global_rows = true;
      g.n_rows = static_cast<int>(std::min<int64_t>(plan.block_q, row_end - first));
      g.first = first;
      g.p_first = p.global_indices[first];
      g.p_last = p.global_indices[first + g.n_rows - 1];
      finish_group(p, plan, g);
      plan.groups.push_back(g);
    }
  }

  int64_t work = 0;  // multiply-adds of QK^T and PV over all heads; saturates, only compared
  int64_t max_blocks = 0;
  for (const RowGroup& g : plan.groups) {
    plan.max_rows = std::max(plan.max_rows, g.n_rows);
    max_blocks = std::max(max_blocks, g.n_blocks);
    int64_t group_work = 0;
    if (!checked_mul(g.n_rows * g.n_blocks, static_cast<int64_t>(plan.block_k) * p.head_dim * 2, &group_work) ||
        !checked_mul(group_work, p.heads, &group_work) || !checked_add(work, group_work, &work)) {
      work = INT64_MAX;
    }
  }

  const int64_t min_work = config.min_work_per_thread >= 0 ? config.min_work_per_thread : (int64_t{1} << 17);
  int64_t threads = std::min<int64_t>(p.threads, pool_threads);
  if (min_work > 0) threads = std::min<int64_t>(threads, std::max<int64_t>(1, work / min_work));
  threads = std::max<int64_t>(threads, 1);

  // The largest divisor of the GQA group whose stacked rows still fit one row group.
  const int64_t group_size = p.heads / p.kv_heads;
  plan.heads_per_unit = 1;
  for (int64_t d = group_size; d > 1 && plan.max_rows > 0; --d) {
    if (group_size % d == 0 && d * plan.max_rows <= plan.block_q) {
      plan.heads_per_unit = static_cast<int>(d);
      break;
    }
  }
  plan.unit_rows = plan.max_rows * plan.heads_per_unit;

  // (group, head slot) items; a head slot is heads_per_unit query heads of one kv head.
  const int64_t pairs = static_cast<int64_t>(plan.groups.size()) * (p.heads / plan.heads_per_unit);
  if (config.split_k > 0) {
    plan.chunks = config.split_k;
  } else if (threads > 1 && pairs > 0 && pairs < 4 * threads && max_blocks > 1) {
    // Too few items to keep every thread busy to the end (decode, short batches: 3 items on 2
    // threads leave one idle a third of the time): split keys instead. The merge costs one
    // partial row per chunk, nothing next to a chunk of keys.
    plan.chunks = std::min(ceil_div(4 * threads, pairs), max_blocks);
  }
  plan.threads = static_cast<int>(std::max<int64_t>(1, std::min(threads, pairs * plan.chunks)));
}

}  // namespace core
}  // namespace gla
