// Work units are (row group, head slot, key chunk); a head slot is heads_per_unit query heads of
// one kv head, their rows stacked head-major (r = head offset * n_rows + group row), so that short
// groups (decode) read K and V once per kv head. A unit packs its query rows, walks its key blocks
// (range blocks classified none / partial / full, then gathered global keys), and either writes
// its rows (one chunk) or leaves a partial (max, sum, acc) for the merge pass (split-K).
//
// Output rows are written by exactly one unit: tile groups skip rows whose position is a global
// token, which only their batch's global-rows group writes.
//
// Element types: q, k and v share `dtype`, out has `out_dtype`. The kernels compute in float32;
// half inputs are widened as they are read (Q per unit, K and V per block or, in decode, as the
// kernel loads them), a half output is rounded once per row. precision bfloat16 on a CPU with
// bfloat16 products runs the row groups on attend_block_bf16 over packed pairs instead.
#include "core/driver.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/checked_math.h"
#include "core/scratch.h"
#include "core/thread_pool.h"

namespace gla {
namespace core {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

struct Call {
  const AttentionProblem& p;
  const cpu::CpuKernels& kernels;
  const Plan& plan;
  const uint8_t* global_map;  // [batch][kv_seq_len], 1 = global token; null without globals
  int64_t group_size;         // heads / kv_heads
  int64_t head_slots;         // heads / heads_per_unit
  bool bf16;                  // row groups take the bfloat16 products (precision bfloat16, and the CPU has them)
  // The heads' bfloat16 pairs are packed (pairs_per_head, pairs_up_front): groups of few rows (a
  // window's global query rows, which read every key) then run as row groups on them too, where
  // the decode layout would read every K and V row again in place.
  bool few_rows_on_pairs;

  // Whether a unit's rows take the decode layout (q_rows, s[row][key]) rather than qt.
  bool row_major(int rows) const { return rows <= kernels.few_rows && !few_rows_on_pairs; }

  const uint8_t* globals_of(int64_t b) const {
    return plan.has_globals ? global_map + b * p.kv_seq_len : nullptr;
  }
  bool is_global_query(int64_t b, int64_t i) const {
    const int64_t position = i + position_offset(p, b);
    return plan.has_globals && position >= 0 && position < p.kv_seq_len && globals_of(b)[position] != 0;
  }
};

struct Unit {
  const RowGroup& g;
  int64_t pair;  // group index * head_slots + head slot: indexes the split-K partials
  int64_t h0;    // first query head
  int rows;      // g.n_rows * heads_per_unit
  int rows_pad;  // rows rounded up to the vector width
};

Unit unit_of(const Call& c, int64_t group_index, int64_t slot) {
  const RowGroup& g = c.plan.groups[static_cast<size_t>(group_index)];
  const int rows = g.n_rows * c.plan.heads_per_unit;
  return Unit{g, group_index * c.head_slots + slot, slot * c.plan.heads_per_unit, rows,
              static_cast<int>(round_up(rows, c.plan.vector_width))};
}

// The element at `offset` of a tensor of `dtype`.
const void* element_at(const void* base, DType dtype, int64_t offset) {
  return static_cast<const unsigned char*>(base) + offset * dtype_bytes(dtype);
}

// Where query i of head h of batch item b starts in q, and its output row in out (elements).
int64_t q_row_offset(const AttentionProblem& p, int64_t b, int64_t h, int64_t i) {
  return b * p.q_strides.batch + h * p.q_strides.head + query_row(p, b, i) * p.q_strides.seq;
}
int64_t out_row_offset(const AttentionProblem& p, int64_t b, int64_t h, int64_t i) {
  return b * p.out_strides.batch + h * p.out_strides.head + query_row(p, b, i) * p.out_strides.seq;
}

// Asks for the cache lines of [p, p + bytes) without waiting for them (Write: for writing).
template <bool Write>
inline void prefetch_lines(const void* p, int64_t bytes) {
  const unsigned char* first = static_cast<const unsigned char*>(p);
  for (int64_t at = 0; at < bytes; at += 64) __builtin_prefetch(first + at, Write ? 1 : 0, 3);
}

// A unit's query rows and output rows, all requested before the first is read. Outside bhsd they
// are heads x head_dim elements apart (1 KiB at h8 d64 bfloat16), a new line each and a new page
// every few rows, which the hardware prefetcher does not follow: loading Q row by row waited for
// one miss after another (34 ns per row against 16 with this, in a stand-alone loop over a 16 MiB
// bshd Q; bench/NOTES.md section 13). The output rows are written when the unit ends. Adjacent
// rows (bhsd) the hardware prefetcher follows by itself.
void prefetch_unit_rows(const Call& c, const Unit& u) {
  const AttentionProblem& p = c.p;
  if (p.q_strides.seq == p.head_dim && p.out_strides.seq == p.head_dim) return;
  const RowGroup& g = u.g;
  const int64_t q_bytes = p.head_dim * dtype_bytes(p.dtype);
  const int64_t out_bytes = p.head_dim * dtype_bytes(p.out_dtype);
  for (int r = 0; r < u.rows; ++r) {
    const int64_t h = u.h0 + r / g.n_rows;
    const int64_t i = group_row(p, c.plan, g, r % g.n_rows);
    prefetch_lines<false>(element_at(p.q, p.dtype, q_row_offset(p, g.batch, h, i)), q_bytes);
    prefetch_lines<true>(element_at(p.out, p.out_dtype, out_row_offset(p, g.batch, h, i)), out_bytes);
  }
}

// Packs the unit's query rows (times scale), their per-row key bounds, and a fresh softmax state.
// Once per unit, so its cost is spread over every key block of the unit. Row groups get Q
// transposed (qt, vectors along rows); groups of at most few_rows rows (decode) get their rows
// row-major instead (q_rows, dot products along head_dim): each kernel path reads only its own.
void load_rows(const Call& c, const Unit& u, Scratch& sc) {
  const AttentionProblem& p = c.p;
  const RowGroup& g = u.g;
  const RowMask mask = row_mask(p, c.plan, g.batch, g.global_rows);
  const int rows_pad = u.rows_pad;
  const int dim_pad = c.plan.dim_pad;
  const bool few = c.row_major(u.rows);
  prefetch_unit_rows(c, u);
  // Padding lanes and padding dims stay 0: their scores are 0, finite, and never written out.
  // Only the padding is cleared (clearing whole tiles was 7% of a short call, most of a tiny one).
  if (!few && u.rows < rows_pad) {
    for (int64_t t = 0; t < p.head_dim; ++t) std::fill(sc.qt + t * rows_pad + u.rows, sc.qt + (t + 1) * rows_pad, 0.0f);
  }
  for (int r = 0; r < rows_pad; ++r) {
    sc.row_max[r] = kNegInf;
    sc.row_sum[r] = 0.0f;
  }
  for (int r = 0; r < u.rows; ++r) {
    const int64_t h = u.h0 + r / g.n_rows;
    const int64_t i = group_row(p, c.plan, g, r % g.n_rows);
    const int64_t position = i + mask.position_offset;
    sc.rows[r] = i;
    if (p.alibi_slopes != nullptr) {
      sc.row_slope[r] = p.alibi_slopes[h];
      sc.row_position[r] = position;
    }
    const int64_t q_offset = q_row_offset(p, g.batch, h, i);
    float* row = few ? sc.q_rows + static_cast<int64_t>(r) * dim_pad : sc.row_buffer;
    if (p.dtype == DType::float32) {
      const float* q = static_cast<const float*>(p.q) + q_offset;
      if (few) {
        for (int64_t t = 0; t < p.head_dim; ++t) row[t] = q[t] * p.scale;
      } else {
        for (int64_t t = 0; t < p.head_dim; ++t) sc.qt[t * rows_pad + r] = q[t] * p.scale;
      }
    } else {
      // Half precision: the row widened (times scale) into q_rows, or into the row buffer and
      // from there transposed into qt.
      const int64_t first = 0;
      c.kernels.widen_rows(p.dtype, static_cast<const uint16_t*>(p.q) + q_offset, 0, &first, 1,
                           static_cast<int>(p.head_dim), p.scale, row, dim_pad);
      if (!few) {
        for (int64_t t = 0; t < p.head_dim; ++t) sc.qt[t * rows_pad + r] = row[t];
      }
    }
    if (few) {
      for (int64_t t = p.head_dim; t < dim_pad; ++t) row[t] = 0.0f;
    }
    // The window part of the rule for this single row, and its kv-length/causal bound for globals.
    const KeyRange own = window_key_range(mask, position, position);
    sc.win_begin[r] = own.begin;
    sc.win_end[r] = own.end;
    int64_t allowed_end = mask.kv_length;
    if (p.causal) allowed_end = std::min(allowed_end, position + 1);
    sc.allowed_end[r] = std::max<int64_t>(allowed_end, 0);
  }
  // Padding lanes weigh nothing in ALiBi's bias (their scores are never written out).
  if (p.alibi_slopes != nullptr) std::fill(sc.row_slope + u.rows, sc.row_slope + rows_pad, 0.0f);
  std::fill(sc.acc, sc.acc + static_cast<int64_t>(u.rows) * dim_pad, 0.0f);
  if (c.bf16 && !few) c.kernels.pack_q_pairs(sc.qt, rows_pad, static_cast<int>(p.head_dim), sc.qt_pairs);
}

// Where the units of one (batch, kv head) read its K and V rows: in place, or a packed copy.
// Elements of the problem's dtype; half-precision rows are widened block by block (run_blocks).
struct HeadKV {
  const void* k;
  int64_t k_row_stride;
  const void* v;
  int64_t v_row_stride;
  // KvAccess::pairs_per_head: the head's K and V as bfloat16 pairs (kernel_api.h layouts, key j of
  // K at k_pairs + j * dim_pairs, key pair j/2 of V at v_pairs + j/2 * dim_pad), and per key block
  // whether its V is finite; null otherwise (blocks are then packed one at a time).
  const uint32_t* k_pairs = nullptr;
  const uint32_t* v_pairs = nullptr;
  const uint8_t* block_v_finite = nullptr;
  int64_t packed_keys = 0;  // the kv length: keys past it are neither packed nor read
  // A packed copy: row j is key j. Otherwise the caller's tensors, where a paged cache or packed
  // sequences put key j at key_row(p, b, j).
  bool rows_by_key = false;
};

HeadKV head_kv_in_place(const AttentionProblem& p, int64_t b, int64_t kh) {
  return HeadKV{element_at(p.k, p.dtype, b * p.k_strides.batch + kh * p.k_strides.head), p.k_strides.seq,
                element_at(p.v, p.dtype, b * p.v_strides.batch + kh * p.v_strides.head), p.v_strides.seq};
}

// Runs blocks [block_begin, block_end) of the group's block sequence into the scratch state.
void run_blocks(const Call& c, const Unit& u, const HeadKV& kv, int64_t block_begin, int64_t block_end, Scratch& sc) {
  if (block_begin >= block_end) return;  // also keeps k/v (null when kv_seq_len is 0) untouched
  const AttentionProblem& p = c.p;
  const Plan& plan = c.plan;
  const RowGroup& g = u.g;
  const RowMask mask = row_mask(p, plan, g.batch, g.global_rows);

  cpu::BlockArgs a{};
  a.rows = u.rows;
  a.rows_pad = u.rows_pad;
  a.head_dim = static_cast<int>(p.head_dim);
  a.dim_pad = plan.dim_pad;
  a.qt = sc.qt;
  a.q_rows = sc.q_rows;
  const bool few_rows = c.row_major(u.rows);
  a.row_major = few_rows;
  // Half-precision K and V: row groups get them widened one block at a time into the scratch
  // (below): O(keys x head_dim) per block against O(rows x keys x head_dim) of products, and the
  // kernel then reads unit-stride float32 rows whatever the caller's layout. Decode (few rows)
  // reads each row once, so its kernel reads the half rows in place and widens them as it loads:
  // half the bytes of float32 from memory, and no second pass over a scratch copy.
  const bool widen = !few_rows && p.dtype != DType::float32;
  a.k = widen ? sc.k_block : kv.k;
  a.k_row_stride = widen ? plan.dim_pad : kv.k_row_stride;
  a.v = widen ? sc.v_block : kv.v;
  a.v_row_stride = widen ? plan.dim_pad : kv.v_row_stride;
  a.kv_dtype = widen ? DType::float32 : p.dtype;
  a.keys = sc.keys;
  // Where each key's K and V rows are: its own index, the widened block's rows, or (paged) its
  // pool row, looked up once per block.
  // Rows looked up per key: a paged cache or packed sequences, read in place.
  const bool paged = !kv.rows_by_key && (p.block_table != nullptr || p.kv_starts != nullptr);
  const int64_t* source_rows = paged ? sc.pool_rows : sc.keys;
  a.key_rows = widen ? sc.block_rows : source_rows;
  // bfloat16 products: each block's K and V rounded into pairs (any dtype, any layout), on the
  // float32 path instead when its V holds an inf or NaN (whose masked weights must not meet it).
  const bool bf16 = c.bf16 && !few_rows;
  a.qt_pairs = sc.qt_pairs;
  a.k_pairs = sc.k_pairs;
  a.v_pairs = sc.v_pairs;
  a.p_pairs = sc.p_pairs;
  a.dim_pairs = static_cast<int>((p.head_dim + 1) / 2);
  a.win_begin = sc.win_begin;
  a.win_end = sc.win_end;
  a.allowed_end = sc.allowed_end;
  a.key_is_global = c.globals_of(g.batch);
  a.s = sc.s;
  a.alpha = sc.alpha;
  a.block_sum = sc.block_sum;
  bool fused_softmax = true;
  a.fused_softmax = &fused_softmax;
  a.row_max = sc.row_max;
  a.row_sum = sc.row_sum;
  a.acc = sc.acc;
  a.softcap = p.softcap;
  a.row_slope = p.alibi_slopes != nullptr ? sc.row_slope : nullptr;
  a.row_position = sc.row_position;
  a.alibi_rows = sc.alibi_rows;
  a.mask_bounds = sc.mask_bounds;
  a.alibi_keys = sc.alibi_keys;

  for (int64_t block = block_begin; block < block_end; ++block) {
    if (block < g.n_range_blocks) {
      // Blocks start at range.begin, not on a grid, so only the last one is short.
      const int64_t j0 = g.range.begin + block * plan.block_k;
      const int64_t j1 = std::min(g.range.end, j0 + plan.block_k);
      const TileVisibility vis = classify_tile(mask, g.p_first, g.p_last, j0, j1);
      // Inside window_key_range no block is invisible (see visibility.h), so a global key cannot
      // be lost here; the check only guards the contract.
      if (vis == TileVisibility::none) continue;
      a.n_keys = static_cast<int>(j1 - j0);
      for (int k = 0; k < a.n_keys; ++k) sc.keys[k] = j0 + k;
      a.full = vis == TileVisibility::full;
      // Decode is bound by streaming K and V once: the next block's K is fetched during this
      // block's P V, which otherwise leaves memory idle (bench/NOTES.md section 8).
      const bool next_in_range = block + 1 < block_end && block + 1 < g.n_range_blocks;
      a.k_ahead = nullptr;
      a.k_ahead_rows = 0;
      if (few_rows && next_in_range) {
        a.k_ahead_rows = static_cast<int>(std::min(g.range.end, j1 + plan.block_k) - j1);
        for (int k = 0; k < a.k_ahead_rows; ++k) sc.ahead_rows[k] = key_row(p, g.batch, j1 + k);
        a.k_ahead = sc.ahead_rows;
      }
    } else {
      const int64_t first = (block - g.n_range_blocks) * plan.block_k;
      const int64_t total = (g.gathered_end[0] - g.gathered_begin[0]) + (g.gathered_end[1] - g.gathered_begin[1]);
      a.n_keys = static_cast<int>(std::min<int64_t>(plan.block_k, total - first));
      for (int k = 0; k < a.n_keys; ++k) sc.keys[k] = gathered_key(p, g, first + k);
      // Gathered keys are below kv_length by construction; a global key is visible to a row iff it
      // is allowed, so only causality can cut the block.
      a.full = !p.causal || sc.keys[a.n_keys - 1] <= g.p_first;
      a.k_ahead = nullptr;
      a.k_ahead_rows = 0;
    }
    if (paged) {
      for (int k = 0; k < a.n_keys; ++k) sc.pool_rows[k] = key_row(p, g.batch, sc.keys[k]);
    }
    const int dim = static_cast<int>(p.head_dim);
    if (bf16 && kv.k_pairs != nullptr && block < g.n_range_blocks && sc.keys[0] % 2 == 0) {
      // The head's pairs, packed once (pairs_per_head). V pairs keys 2i and 2i+1, so the block
      // must start on an even key; a block of odd length then reads key j1's V row as its last
      // key's partner (with weight 0), so that row must be finite too, like every row it weighs.
      const int64_t j0 = sc.keys[0];
      const int64_t last_read = j0 + a.n_keys - (a.n_keys % 2 == 0 ? 1 : 0);
      const int64_t last_block = std::min(last_read, kv.packed_keys - 1) / plan.block_k;
      bool finite = true;
      for (int64_t kb = j0 / plan.block_k; kb <= last_block; ++kb) finite = finite && kv.block_v_finite[kb] != 0;
      if (finite) {
        a.k_pairs = kv.k_pairs + j0 * a.dim_pairs;
        a.v_pairs = kv.v_pairs + j0 / 2 * plan.dim_pad;
        c.kernels.attend_block_bf16(a);
        continue;
      }
    } else if (bf16 && c.kernels.pack_kv_pairs(p.dtype, kv.k, kv.k_row_stride, kv.v, kv.v_row_stride, source_rows, a.n_keys,
                                               dim, plan.dim_pad, sc.k_pairs, sc.v_pairs)) {
      a.k_pairs = sc.k_pairs;
      a.v_pairs = sc.v_pairs;
      c.kernels.attend_block_bf16(a);
      continue;
    }
    if (widen) {
      c.kernels.widen_rows(p.dtype, kv.k, kv.k_row_stride, source_rows, a.n_keys, dim, 1.0f, sc.k_block, plan.dim_pad);
      c.kernels.widen_rows(p.dtype, kv.v, kv.v_row_stride, source_rows, a.n_keys, dim, 1.0f, sc.v_block, plan.dim_pad);
    }
    c.kernels.attend_block(a);
  }
}

// Normalises one row's state into out (and lse). A row that saw nothing gets zeros and -inf; a
// row whose sum is NaN (it saw a NaN score, or +inf: exp(inf - inf)) gets NaN throughout.
// A learned sink (sink_logits) joins the denominator here, once per row: the running state is
// rescaled to max(max, sink), so a row that saw nothing gets zeros and lse = sink.
// A half-precision out gets the float32 row rounded once (nearest even), through row_buffer.
void write_row(const Call& c, int64_t b, int64_t h, int64_t i, float max, float sum, const float* acc,
               float* row_buffer) {
  const AttentionProblem& p = c.p;
  const int64_t offset = out_row_offset(p, b, h, i);
  const bool narrow = p.out_dtype != DType::float32;
  float* out = narrow ? row_buffer : static_cast<float*>(p.out) + offset;
  float lse = kNegInf;
  if (p.sink_logits != nullptr && sum == sum) {
    const float sink = p.sink_logits[h];
    const float shift = max > sink ? max : sink;
    const float keep = max == kNegInf ? 0.0f : std::exp(max - shift);
    const float total = sum * keep + std::exp(sink - shift);
    const float weight = keep / total;
    for (int64_t t = 0; t < p.head_dim; ++t) out[t] = weight == 0.0f ? 0.0f : acc[t] * weight;
    lse = shift + std::log(total);
  } else if (sum > 0.0f || sum != sum) {
    for (int64_t t = 0; t < p.head_dim; ++t) out[t] = acc[t] / sum;
    lse = max + std::log(sum);
  } else {
    std::fill(out, out + p.head_dim, 0.0f);
  }
  if (narrow) {
    c.kernels.narrow_row(out, static_cast<int>(p.head_dim), p.out_dtype, static_cast<uint16_t*>(p.out) + offset);
  }
  if (p.lse != nullptr) p.lse[lse_index(p, b, h, i)] = lse;
}

// Rows at and past q_length(b) are padding: zeros and lse -inf, and no group computes them.
void write_padding_rows(const AttentionProblem& p) {
  // Packed sequences have no padding rows: the next sequence's rows follow.
  if (p.q_lengths == nullptr || p.q_starts != nullptr) return;
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t h = 0; h < p.heads; ++h) {
      for (int64_t i = q_length_of(p, b); i < p.seq_len; ++i) {
        const int64_t offset = b * p.out_strides.batch + h * p.out_strides.head + i * p.out_strides.seq;
        if (p.out_dtype == DType::float32) {
          float* out = static_cast<float*>(p.out) + offset;
          std::fill(out, out + p.head_dim, 0.0f);
        } else {
          uint16_t* out = static_cast<uint16_t*>(p.out) + offset;
          std::fill(out, out + p.head_dim, uint16_t{0});  // +0 in both half formats
        }
        if (p.lse != nullptr) p.lse[(b * p.heads + h) * p.seq_len + i] = kNegInf;
      }
    }
  }
}

void write_rows(const Call& c, const Unit& u, const float* max, const float* sum, const float* acc,
                const int64_t* rows, float* row_buffer) {
  const RowGroup& g = u.g;
  for (int r = 0; r < u.rows; ++r) {
    if (!g.global_rows && c.is_global_query(g.batch, rows[r])) continue;
    write_row(c, g.batch, u.h0 + r / g.n_rows, rows[r], max[r], sum[r], acc + static_cast<int64_t>(r) * c.plan.dim_pad,
              row_buffer);
  }
}

// Split-K partials: per (unit, chunk) max[unit_rows], sum[unit_rows], acc[unit_rows][dim_pad].
struct Partials {
  int64_t stride;  // floats per (unit, chunk)
  float* data;
  float* at(const Plan& plan, int64_t pair, int64_t chunk) const { return data + (pair * plan.chunks + chunk) * stride; }
};

void merge_pair(const Call& c, const Partials& partials, const Unit& u, Scratch& sc) {
  const Plan& plan = c.plan;
  const RowGroup& g = u.g;
  const int64_t pair = u.pair;
  const int dp = plan.dim_pad;
  const int64_t mr = plan.unit_rows;
  for (int r = 0; r < u.rows; ++r) sc.rows[r] = group_row(c.p, plan, g, r % g.n_rows);
  for (int r = 0; r < u.rows; ++r) {
    // A NaN chunk max makes the merged max NaN (std::max would skip it).
    float max = kNegInf;
    for (int64_t k = 0; k < plan.chunks; ++k) {
      const float m = partials.at(plan, pair, k)[r];
      if (!(m <= max)) max = m;
    }
    // As in the kernels: with max -inf every chunk saw only masked or -inf scores, and subtracting 0
    // keeps exp(-inf - -inf) (NaN) out. A chunk with max -inf then weighs 0, which still carries a
    // NaN in its sum or acc (a NaN score that its max skipped) into the row.
    const float shift = max == kNegInf ? 0.0f : max;
    float sum = 0.0f;
    float* acc = sc.acc + static_cast<int64_t>(r) * dp;
    std::fill(acc, acc + dp, 0.0f);
    for (int64_t k = 0; k < plan.chunks; ++k) {
      const float* part = partials.at(plan, pair, k);
      const float w = std::exp(part[r] - shift);
      sum += part[mr + r] * w;
      const float* part_acc = part + 2 * mr + static_cast<int64_t>(r) * dp;
      for (int t = 0; t < dp; ++t) acc[t] += part_acc[t] * w;
    }
    sc.row_max[r] = max;
    sc.row_sum[r] = sum;
  }
  write_rows(c, u, sc.row_max, sc.row_sum, sc.acc, sc.rows, sc.row_buffer);
}

// The buffers of one call, kept by the calling thread between calls so that a steady stream of
// calls allocates nothing. They only grow, to the largest call this thread has made (scratch is
// O(threads * block_q * (block_k + head_dim)), never a function of sequence length). All of it is
// sized on the caller before any work starts: an allocation failure then leaves out untouched.
struct CallerBuffers {
  Plan plan;
  std::vector<uint8_t> global_map;
  std::vector<float> partials;
  std::vector<float> packed_kv;  // KvAccess::packed_up_front: [batch][kv_heads][K, V][kv_seq_len][head_dim]
  std::vector<std::vector<float>> head_kv;  // KvAccess::packed_per_head: one head's K and V per slot
  std::vector<std::vector<uint32_t>> head_pairs;  // KvAccess::pairs_per_head: pairs and flags per slot
  std::vector<uint32_t> all_pairs;  // KvAccess::pairs_up_front: [batch][kv_heads] pairs and flags
  std::vector<int64_t> batch_groups;        // first group of each batch item, and the end
  std::vector<Scratch> scratch;  // one per parallel_for slot
};

CallerBuffers& caller_buffers() {
  thread_local CallerBuffers buffers;
  return buffers;
}

// How the units read K and V. In a layout where one head's rows are not adjacent (bshd: rows are
// heads·head_dim floats apart, 3 KiB at h12 d64, 16 KiB at h32 d128) the rows of a key block map to
// a few L1 sets and many pages, and the kernel re-reads each K row once per vector group of query
// rows and each V row once per row tile: those re-reads then miss L1. A contiguous copy of the head
// costs one read and one write of each row, far less than the re-reads save when every row group
// reads every key (full and causal attention). Decode (a few rows, one pass over the cache) and
// bounded windows (few groups per key) read in place. bench/NOTES.md section 10.
enum class KvAccess {
  in_place,
  // One task per batch item packs all of its kv heads, reading the caller's rows in memory order
  // (every head of a row at once: sequential, where one head at a time is a 256-byte read every few
  // KiB), then runs all of the item's units: many short items (encoder batches), whose heads'
  // copies together stay small.
  packed_per_batch,
  // One task per (batch, kv head) packs that head into its thread's buffer, where it stays in L2,
  // then runs all of the head's units: when there are enough heads to keep every thread busy.
  packed_per_head,
  // Too few heads for that (batch 1 with MQA, many threads), or split-K: one parallel pass packs
  // every head into a call-wide buffer first, then the units run as usual.
  packed_up_front,
  // bfloat16 products: as packed_per_head, but into bfloat16 pairs, each grid block of keys once
  // per head instead of once per unit and block; windowed tiles read them too (their ranges start
  // on even keys, Plan::even_ranges). A strided layout (bshd) is then read once, in order;
  // per-unit packing read it once per query tile, 10-30% of a call at head_dim 128, and once per
  // covering window under windows (bench/NOTES.md sections 11 and 13).
  pairs_per_head,
  // bfloat16 products under a window on a layout whose head rows are not adjacent (bshd): one
  // parallel pass packs every head's pairs first, each key block's rows for all heads in turn,
  // then the units run tile by tile. A head at a time visits every page of K, V, Q and out once
  // per head (in bshd a head's row is a new page every few rows); a window's tiles compute too
  // little for those misses to hide (15-20% of local-global s16384, bench/NOTES.md section 13).
  pairs_up_front,
};

KvAccess choose_kv_access(const AttentionProblem& p, const Plan& plan, const cpu::CpuKernels& kernels, bool bf16) {
  // A paged cache is read where its pages are (each block's rows looked up in the block table).
  // Packed sequences are rows like any other (key_row finds a sequence's), so they pack as bshd does.
  if (p.block_table != nullptr) return KvAccess::in_place;
  // bfloat16 products: each block is packed into pairs, per head where the blocks lie on a grid.
  if (bf16) {
    // An even block_k keeps each grid block's V pairs its own. Windowed groups read the same
    // pairs wherever their blocks start on an even key (run_blocks): packing per unit and block
    // instead packed each key once per group whose window covers it (12% of local-global s16384).
    const bool grid = plan.chunks == 1 && plan.block_k % 2 == 0 && plan.max_rows > kernels.few_rows;
    if (!grid) return KvAccess::in_place;
    const bool adjacent_rows = p.k_strides.seq == p.head_dim && p.v_strides.seq == p.head_dim;
    if (plan.window_left >= 0 && !adjacent_rows) return KvAccess::pairs_up_front;
    const bool heads_for_every_thread = p.batch * p.kv_heads >= 2 * static_cast<int64_t>(plan.threads);
    return heads_for_every_thread ? KvAccess::pairs_per_head : KvAccess::in_place;
  }
  // Half-precision rows are widened into unit-stride float32 blocks anyway (run_blocks).
  if (p.dtype != DType::float32) return KvAccess::in_place;
  if (p.k_strides.seq == p.head_dim && p.v_strides.seq == p.head_dim) return KvAccess::in_place;
  if (plan.max_rows <= kernels.few_rows) return KvAccess::in_place;
  // A bounded window: each key is read by the few groups whose window covers it, and the copy cost
  // more than it saved (local-global s16384 w[256, 256] bshd, best of 5 x 4 alternations: 115.7 ms
  // packed, 109.7 in place, 100.9 bhsd).
  if (plan.window_left >= 0) return KvAccess::in_place;
  constexpr int64_t kMaxBatchPackFloats = int64_t{1} << 20;  // 4 MiB of K and V per thread
  if (plan.chunks == 1 && p.batch >= 2 * static_cast<int64_t>(plan.threads) &&
      2 * p.kv_heads * p.kv_seq_len * p.head_dim <= kMaxBatchPackFloats) {
    return KvAccess::packed_per_batch;
  }
  if (plan.chunks == 1 && p.batch * p.kv_heads >= 2 * static_cast<int64_t>(plan.threads)) return KvAccess::packed_per_head;
  return KvAccess::packed_up_front;
}

// One head's K and V packed into dst: K rows, then V rows, head_dim apart.
// Packing is for float32 problems only (choose_kv_access).
HeadKV packed_head(const AttentionProblem& p, float* dst) {
  HeadKV kv{dst, p.head_dim, dst + p.kv_seq_len * p.head_dim, p.head_dim};
  kv.rows_by_key = true;
  return kv;
}

// Rows [first, end) of one head's K and V (those below the kv length) into dst (packed_head).
void pack_head_rows(const AttentionProblem& p, int64_t b, int64_t kh, int64_t first, int64_t end, float* dst) {
  const HeadKV src = head_kv_in_place(p, b, kh);
  const float* src_k = static_cast<const float*>(src.k);
  const float* src_v = static_cast<const float*>(src.v);
  const int64_t rows = std::min(end, kv_length_of(p, b));
  float* k = dst;
  float* v = dst + p.kv_seq_len * p.head_dim;
  for (int64_t j = first; j < rows; ++j) {
    const float* row = src_k + key_row(p, b, j) * src.k_row_stride;
    std::copy(row, row + p.head_dim, k + j * p.head_dim);
  }
  for (int64_t j = first; j < rows; ++j) {
    const float* row = src_v + key_row(p, b, j) * src.v_row_stride;
    std::copy(row, row + p.head_dim, v + j * p.head_dim);
  }
}

// One past the last key a group may read: its range, and the gathered global keys after it.
int64_t keys_end(const AttentionProblem& p, const RowGroup& g) {
  int64_t end = g.range.end;
  if (g.gathered_end[1] > g.gathered_begin[1]) end = std::max<int64_t>(end, p.global_indices[g.gathered_end[1] - 1] + 1);
  return end;
}

// Rows [first, end) of batch item b's K or V (tensor 0 or 1), every kv head of a row at once, into
// dst laid out [kv_head][K, V][kv_seq_len][head_dim]; rows at or past the kv length are skipped.
void pack_rows(const AttentionProblem& p, int64_t b, int tensor, int64_t first, int64_t end, float* dst) {
  const int64_t head_floats = 2 * p.kv_seq_len * p.head_dim;
  const int64_t rows = kv_length_of(p, b);
  const float* src = tensor == 0 ? static_cast<const float*>(p.k) + b * p.k_strides.batch
                                 : static_cast<const float*>(p.v) + b * p.v_strides.batch;
  const Strides& st = tensor == 0 ? p.k_strides : p.v_strides;
  float* to = dst + tensor * p.kv_seq_len * p.head_dim;
  for (int64_t j = first; j < std::min(end, rows); ++j) {
    for (int64_t kh = 0; kh < p.kv_heads; ++kh) {
      const float* row = src + key_row(p, b, j) * st.seq + kh * st.head;
      std::copy(row, row + p.head_dim, to + kh * head_floats + j * p.head_dim);
    }
  }
}

// Every head packed into packed[batch][kv_head] (K then V per head), in parallel; returns the
// problem that reads them there. Each task takes a slice of one batch item's rows of K or V and
// walks them in memory order, every head of a row at once: the caller's tensor is read
// sequentially, which is what DRAM and the prefetchers want, and written as kv_heads streams.
AttentionProblem pack_all_kv(const AttentionProblem& p, int threads, std::vector<float>& packed) {
  const int64_t head_floats = 2 * p.kv_seq_len * p.head_dim;
  packed.resize(static_cast<size_t>(p.batch * p.kv_heads * head_floats));
  float* const base = packed.data();
  constexpr int64_t kRowsPerTask = 64;
  const int64_t slices = ceil_div(p.kv_seq_len, kRowsPerTask);
  auto pack = [&](int64_t item, int /*slot*/) {
    const int64_t slice = item % slices;
    const int tensor = static_cast<int>((item / slices) % 2);
    const int64_t b = item / slices / 2;
    pack_rows(p, b, tensor, slice * kRowsPerTask, (slice + 1) * kRowsPerTask, base + b * p.kv_heads * head_floats);
  };
  parallel_for(p.batch * 2 * slices, threads, TaskRef(pack));
  AttentionProblem packed_problem = p;
  const Strides strides{p.kv_heads * head_floats, head_floats, p.head_dim};
  packed_problem.k = base;
  packed_problem.v = base + p.kv_seq_len * p.head_dim;
  packed_problem.kv_starts = nullptr;  // the copy holds key j of every item at row j
  packed_problem.k_strides = strides;
  packed_problem.v_strides = strides;
  packed_problem.k_elements = p.batch * p.kv_heads * head_floats;
  packed_problem.v_elements = packed_problem.k_elements - p.kv_seq_len * p.head_dim;
  return packed_problem;
}

// Where one head's bfloat16 pairs live in a buffer of head_words words: K pairs [kv_seq_len]
// [dim_pairs], V pairs [(kv_seq_len + 1) / 2][dim_pad], then one V-finite byte per grid block.
struct PairsLayout {
  int64_t dim_pairs;
  int64_t k_words;
  int64_t v_words;
  int64_t n_blocks;
  int64_t head_words;
};

PairsLayout pairs_layout(const AttentionProblem& p, const Plan& plan) {
  PairsLayout l;
  l.dim_pairs = (p.head_dim + 1) / 2;
  l.k_words = p.kv_seq_len * l.dim_pairs;
  l.v_words = (p.kv_seq_len + 1) / 2 * plan.dim_pad;
  l.n_blocks = ceil_div(p.kv_seq_len, plan.block_k);
  l.head_words = l.k_words + l.v_words + ceil_div(l.n_blocks, 4);
  return l;
}

// The HeadKV of (b, kh) whose pairs are at `words` (the caller's K and V stay its source rows).
HeadKV pairs_view(const AttentionProblem& p, int64_t b, int64_t kh, const PairsLayout& l, uint32_t* words) {
  HeadKV kv = head_kv_in_place(p, b, kh);
  kv.k_pairs = words;
  kv.v_pairs = words + l.k_words;
  kv.block_v_finite = reinterpret_cast<uint8_t*>(words + l.k_words + l.v_words);
  kv.packed_keys = kv_length_of(p, b);
  return kv;
}

// batch_groups[b] = the index of batch item b's first group (groups are ordered by batch), and
// batch_groups[batch] = the group count: the per-head flows walk one item's groups. An item with no
// groups (q_lengths 0) gets an empty range, batch_groups[b] == batch_groups[b + 1].
const std::vector<int64_t>& first_group_of_each_batch(const Plan& plan, int64_t batch, std::vector<int64_t>& batch_groups) {
  batch_groups.assign(static_cast<size_t>(batch + 1), 0);
  for (const RowGroup& g : plan.groups) ++batch_groups[static_cast<size_t>(g.batch + 1)];
  for (int64_t b = 0; b < batch; ++b) batch_groups[static_cast<size_t>(b + 1)] += batch_groups[static_cast<size_t>(b)];
  return batch_groups;
}

// Runs every unit of the plan in buffers.plan.
void run_plan(const AttentionProblem& original, const cpu::CpuKernels& kernels, CallerBuffers& buffers) {
  const Plan& plan = buffers.plan;
  if (plan.groups.empty()) return;
  const bool bf16 = original.precision == Precision::bfloat16 && kernels.attend_block_bf16 != nullptr;
  const KvAccess kv_access = choose_kv_access(original, plan, kernels, bf16);
  const AttentionProblem p =
      kv_access == KvAccess::packed_up_front ? pack_all_kv(original, plan.threads, buffers.packed_kv) : original;

  if (plan.has_globals) {
    buffers.global_map.assign(static_cast<size_t>(p.batch * p.kv_seq_len), 0);
    for (int64_t b = 0; b < p.batch; ++b) {
      for (int32_t n = p.global_offsets[b]; n < p.global_offsets[b + 1]; ++n) {
        buffers.global_map[static_cast<size_t>(b * p.kv_seq_len + p.global_indices[n])] = 1;
      }
    }
  }

  ScratchShape shape;
  shape.block_q = std::max(plan.block_q, plan.unit_rows);
  shape.rows_pad = static_cast<int>(round_up(shape.block_q, plan.vector_width));
  shape.block_k = plan.block_k;
  shape.dim_pad = plan.dim_pad;
  shape.widened = p.dtype != DType::float32 || p.out_dtype != DType::float32;
  shape.bf16 = bf16;
  shape.score_floats = static_cast<int>(std::max<int64_t>(
      static_cast<int64_t>(plan.block_k) * shape.rows_pad,
      std::min(shape.block_q, kernels.few_rows) * round_up(plan.block_k, plan.vector_width)));
  if (buffers.scratch.size() < static_cast<size_t>(plan.threads)) buffers.scratch.resize(static_cast<size_t>(plan.threads));
  for (int t = 0; t < plan.threads; ++t) buffers.scratch[static_cast<size_t>(t)].reserve(shape);
  Scratch* scratch = buffers.scratch.data();
  const Call call{p, kernels, plan, plan.has_globals ? buffers.global_map.data() : nullptr, p.heads / p.kv_heads,
                  p.heads / plan.heads_per_unit, bf16,
                  kv_access == KvAccess::pairs_per_head || kv_access == KvAccess::pairs_up_front};
  const int64_t n_groups = static_cast<int64_t>(plan.groups.size());
  const int64_t pairs = n_groups * call.head_slots;

  Partials partials{0, nullptr};
  if (plan.chunks > 1) {
    partials.stride = plan.unit_rows * (2 + static_cast<int64_t>(plan.dim_pad));
    buffers.partials.resize(static_cast<size_t>(pairs * plan.chunks * partials.stride));
    partials.data = buffers.partials.data();
  }

  auto run_unit = [&](const Unit& u, int64_t chunk, const HeadKV& kv, Scratch& sc) {
    load_rows(call, u, sc);
    const int64_t begin = u.g.n_blocks * chunk / plan.chunks;
    const int64_t end = u.g.n_blocks * (chunk + 1) / plan.chunks;
    run_blocks(call, u, kv, begin, end, sc);
    if (plan.chunks == 1) {
      write_rows(call, u, sc.row_max, sc.row_sum, sc.acc, sc.rows, sc.row_buffer);
      return;
    }
    float* part = partials.at(plan, u.pair, chunk);
    const int64_t mr = plan.unit_rows;
    std::copy(sc.row_max, sc.row_max + u.rows, part);
    std::copy(sc.row_sum, sc.row_sum + u.rows, part + mr);
    std::copy(sc.acc, sc.acc + static_cast<int64_t>(u.rows) * plan.dim_pad, part + 2 * mr);
  };

  // One (batch, kv head) of the per-head flows: its groups in ascending order, pack_until(need)
  // bringing the head's packed copy up to the keys a group reads just before the group's units
  // run: under causality a unit then finds its newest keys in cache, fresh from the copy, and the
  // head is never a separate pass over memory. Global rows, which read everything, come last.
  const int64_t slots_per_kv_head = call.group_size / plan.heads_per_unit;
  auto walk_head = [&](const std::vector<int64_t>& batch_groups, int64_t b, int64_t kh, const HeadKV& kv, Scratch& sc,
                       auto&& pack_until) {
    const int64_t first_slot = kh * slots_per_kv_head, end_slot = first_slot + slots_per_kv_head;
    for (int64_t gi = batch_groups[static_cast<size_t>(b)]; gi < batch_groups[static_cast<size_t>(b + 1)]; ++gi) {
      pack_until(keys_end(p, plan.groups[static_cast<size_t>(gi)]));
      for (int64_t hs = first_slot; hs < end_slot; ++hs) run_unit(unit_of(call, gi, hs), 0, kv, sc);
    }
  };

  if (kv_access == KvAccess::pairs_per_head || kv_access == KvAccess::pairs_up_front) {
    const PairsLayout layout = pairs_layout(p, plan);
    // Grid block kb of one head's pairs, and its V-finite flag; keys is block_k rows of scratch.
    auto pack_block = [&](const HeadKV& kv, int64_t b, int64_t kb, int64_t* keys) {
      const int64_t j0 = kb * plan.block_k;
      const int n = static_cast<int>(std::min<int64_t>(plan.block_k, kv.packed_keys - j0));
      for (int i = 0; i < n; ++i) keys[i] = key_row(p, b, j0 + i);
      const_cast<uint8_t*>(kv.block_v_finite)[kb] = kernels.pack_kv_pairs(
          p.dtype, kv.k, kv.k_row_stride, kv.v, kv.v_row_stride, keys, n, static_cast<int>(p.head_dim), plan.dim_pad,
          const_cast<uint32_t*>(kv.k_pairs) + j0 * layout.dim_pairs, const_cast<uint32_t*>(kv.v_pairs) + j0 / 2 * plan.dim_pad);
    };
    if (kv_access == KvAccess::pairs_up_front) {
      buffers.all_pairs.resize(static_cast<size_t>(p.batch * p.kv_heads * layout.head_words));
      uint32_t* const all = buffers.all_pairs.data();
      auto head_pairs = [&](int64_t b, int64_t kh) {
        return pairs_view(p, b, kh, layout, all + (b * p.kv_heads + kh) * layout.head_words);
      };
      // One key block of one batch item per task, every kv head of it in turn: the heads' rows of
      // a block share their pages, so each page of K and V is visited once.
      auto pack_task = [&](int64_t item, int slot) {
        const int64_t b = item / layout.n_blocks;
        const int64_t kb = item % layout.n_blocks;
        if (kb * plan.block_k >= kv_length_of(p, b)) return;
        for (int64_t kh = 0; kh < p.kv_heads; ++kh) pack_block(head_pairs(b, kh), b, kb, scratch[slot].keys);
      };
      parallel_for(p.batch * layout.n_blocks, plan.threads, TaskRef(pack_task));
      // Tile by tile, every head slot of a tile in turn (its query and output rows share pages).
      auto unit_task = [&](int64_t item, int slot) {
        const Unit u = unit_of(call, item / call.head_slots, item % call.head_slots);
        run_unit(u, 0, head_pairs(u.g.batch, u.h0 / call.group_size), scratch[slot]);
      };
      parallel_for(pairs, plan.threads, TaskRef(unit_task));
      return;
    }
    const std::vector<int64_t>& batch_groups = first_group_of_each_batch(plan, p.batch, buffers.batch_groups);
    if (buffers.head_pairs.size() < static_cast<size_t>(plan.threads)) buffers.head_pairs.resize(static_cast<size_t>(plan.threads));
    for (int t = 0; t < plan.threads; ++t) buffers.head_pairs[static_cast<size_t>(t)].resize(static_cast<size_t>(layout.head_words));
    auto head_task = [&](int64_t item, int slot) {
      const int64_t b = item / p.kv_heads;
      const int64_t kh = item % p.kv_heads;
      HeadKV kv = pairs_view(p, b, kh, layout, buffers.head_pairs[static_cast<size_t>(slot)].data());
      Scratch& sc = scratch[slot];
      // Whole blocks on the grid from key 0, each with its V-finite flag.
      int64_t packed_blocks = 0;
      walk_head(batch_groups, b, kh, kv, sc, [&](int64_t keys_needed) {
        const int64_t need = std::min(keys_needed, kv.packed_keys);
        for (; packed_blocks * plan.block_k < need; ++packed_blocks) pack_block(kv, b, packed_blocks, sc.keys);
      });
    };
    parallel_for(p.batch * p.kv_heads, plan.threads, TaskRef(head_task));
    return;
  }

  if (kv_access == KvAccess::packed_per_head || kv_access == KvAccess::packed_per_batch) {
    const std::vector<int64_t>& batch_groups = first_group_of_each_batch(plan, p.batch, buffers.batch_groups);
    const bool per_batch = kv_access == KvAccess::packed_per_batch;
    const int64_t head_floats = 2 * p.kv_seq_len * p.head_dim;
    if (buffers.head_kv.size() < static_cast<size_t>(plan.threads)) buffers.head_kv.resize(static_cast<size_t>(plan.threads));
    for (int t = 0; t < plan.threads; ++t) {
      buffers.head_kv[static_cast<size_t>(t)].resize(static_cast<size_t>(per_batch ? p.kv_heads * head_floats : head_floats));
    }
    if (per_batch) {
      auto batch_task = [&](int64_t b, int slot) {
        float* packed = buffers.head_kv[static_cast<size_t>(slot)].data();
        pack_rows(p, b, 0, 0, p.kv_seq_len, packed);
        pack_rows(p, b, 1, 0, p.kv_seq_len, packed);
        for (int64_t gi = batch_groups[static_cast<size_t>(b + 1)] - 1; gi >= batch_groups[static_cast<size_t>(b)]; --gi) {
          for (int64_t hs = 0; hs < call.head_slots; ++hs) {
            const HeadKV kv = packed_head(p, packed + (hs / slots_per_kv_head) * head_floats);
            run_unit(unit_of(call, gi, hs), 0, kv, scratch[slot]);
          }
        }
      };
      parallel_for(p.batch, plan.threads, TaskRef(batch_task));
      return;
    }
    auto head_task = [&](int64_t item, int slot) {
      const int64_t b = item / p.kv_heads;
      const int64_t kh = item % p.kv_heads;
      float* packed = buffers.head_kv[static_cast<size_t>(slot)].data();
      const HeadKV kv = packed_head(p, packed);
      int64_t packed_end = 0;
      walk_head(batch_groups, b, kh, kv, scratch[slot], [&](int64_t need) {
        if (need > packed_end) {
          pack_head_rows(p, b, kh, packed_end, need, packed);
          packed_end = need;
        }
      });
    };
    parallel_for(p.batch * p.kv_heads, plan.threads, TaskRef(head_task));
    return;
  }

  // Later groups of a batch are the causal-heavy tiles and the global rows: start those first so
  // the long units do not end up last on one thread.
  auto unit = [&](int64_t item, int slot) {
    const int64_t chunk = item % plan.chunks;
    const int64_t pair_in_order = item / plan.chunks;
    const Unit u = unit_of(call, n_groups - 1 - pair_in_order / call.head_slots, pair_in_order % call.head_slots);
    run_unit(u, chunk, head_kv_in_place(p, u.g.batch, u.h0 / call.group_size), scratch[slot]);
  };
  parallel_for(pairs * plan.chunks, plan.threads, TaskRef(unit));

  if (plan.chunks > 1) {
    auto merge = [&](int64_t pair, int slot) {
      merge_pair(call, partials, unit_of(call, pair / call.head_slots, pair % call.head_slots), scratch[slot]);
    };
    parallel_for(pairs, plan.threads, TaskRef(merge));
  }
}

}  // namespace

void run_validated(const AttentionProblem& problem, const cpu::CpuKernels& kernels, const DriverConfig& config) {
  CallerBuffers& buffers = caller_buffers();
  make_plan(problem, kernels, pool_concurrency(), config, &buffers.plan);
  run_plan(problem, kernels, buffers);
  // Last, after every allocation of the call: a bad_alloc in run_plan leaves out untouched.
  write_padding_rows(problem);
}

}  // namespace core
}  // namespace gla
