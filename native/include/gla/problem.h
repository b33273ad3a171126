// The one description of an attention call that crosses from TypeScript into C++.
//
// TypeScript (lib/options.ts) validates the caller's options and fills every field; nothing here has
// a default that the caller could have meant differently. C++ re-checks its own invariants
// (validate_problem) because a wrong stride here is an out-of-bounds read, not a wrong answer.
#pragma once

#include <cstdint>

#include "gla/dtype.h"

namespace gla {

// Element strides (not bytes) of a [batch, head, seq, dim] tensor; the dim stride is always 1.
// 'bhsd' and 'bshd' layouts, and GQA head sharing, are all expressed here instead of by copying.
struct Strides {
  int64_t batch;
  int64_t head;
  int64_t seq;
};

struct AttentionProblem {
  // Elements of `dtype` (q, k and v share it); out holds elements of `out_dtype`.
  const void* q = nullptr;    // [batch, heads,   seq_len,    head_dim] by q_strides
  const void* k = nullptr;    // [batch, kv_heads, kv_seq_len, head_dim] by k_strides
  const void* v = nullptr;    // [batch, kv_heads, kv_seq_len, head_dim] by v_strides
  void* out = nullptr;        // [batch, heads,   seq_len,    head_dim] by out_strides
  float* lse = nullptr;       // optional: [batch, heads, seq_len] ([heads, total_q] packed), contiguous, natural log
  DType dtype = DType::float32;
  DType out_dtype = DType::float32;
  Precision precision = Precision::float32;

  int64_t batch = 0;
  int64_t heads = 0;
  int64_t kv_heads = 0;       // heads % kv_heads == 0; query head h reads kv head h / (heads / kv_heads)
  int64_t seq_len = 0;
  int64_t kv_seq_len = 0;
  int64_t head_dim = 0;

  Strides q_strides{};
  Strides k_strides{};
  Strides v_strides{};
  Strides out_strides{};

  float scale = 1.0f;

  // Query i of batch item b sits at absolute key position p = i + kv_length(b) - q_length(b)
  // (bottom-right alignment per sequence; kv_length(b) = kv_lengths[b] or kv_seq_len, q_length(b)
  // = q_lengths[b] or seq_len). Rows i >= q_length(b) are padding: zeros, lse -inf, no work.
  // Key j is visible to query p when all of these hold:
  //   j < kv_length(b)
  //   !causal || j <= p
  //   p - window_left <= j <= p + window_right  (a bound of -1 is unbounded)
  //     || j is a global token of batch b || p is a global token of batch b
  bool causal = false;
  int64_t window_left = -1;
  int64_t window_right = -1;

  // Optional, one per batch item, each in [0, kv_seq_len]. nullptr means every key is present.
  const int32_t* kv_lengths = nullptr;
  // Optional, one per batch item, each in [0, seq_len]. nullptr means every query row is real.
  const int32_t* q_lengths = nullptr;

  // The score of a visible pair, before the softmax:
  //   s = scale * q.k;  if softcap > 0: s = softcap * tanh(s / softcap);  if alibi: s -= slope_h * |p - j|
  // and with sinks the softmax denominator of every row of query head h gains exp(sink_h - max)
  // (no value vector): lse includes it, a row that sees no key gets zeros and lse = sink_h.
  float softcap = 0.0f;                  // 0 = off, else finite and > 0
  const float* alibi_slopes = nullptr;   // optional: [heads], finite
  const float* sink_logits = nullptr;    // optional: [heads], finite

  // Optional paged K and V (vLLM's and FlashAttention's block_table): k and v are then pools of
  // page_count pages of page_size rows, each row kv_heads * head_dim elements by k_strides/v_strides
  // (batch strides unused: 0), and key j of batch item b is pool row
  //   block_table[b * max_blocks + j / page_size] * page_size + j % page_size.
  // kv_seq_len <= max_blocks * page_size; entries for keys >= kv_length(b) are never read (may be
  // -1), the others must lie in [0, page_count) (validate_problem checks every one).
  const int32_t* block_table = nullptr;  // [batch][max_blocks]
  int64_t max_blocks = 0;
  int64_t page_size = 0;
  int64_t page_count = 0;

  // Optional packed variable-length batches (FlashAttention's cu_seqlens): q and out hold every
  // sequence's rows back to back, [total_q, heads, head_dim] by their head and seq strides, k and v
  // likewise [total_k, kv_heads, head_dim] (all batch strides 0), and sequence b owns query rows
  // q_starts[b] .. q_starts[b + 1] - 1 and key rows kv_starts[b] .. kv_starts[b + 1] - 1, which the
  // rest of the problem reads as query i and key j of batch item b. q_lengths and kv_lengths must be
  // set to those counts, seq_len and kv_seq_len at least their largest; lse, when set, is
  // [heads, total_q]. There are no padding rows: nothing is written outside the sequences' rows.
  const int32_t* q_starts = nullptr;   // batch + 1 entries, from 0, non-decreasing
  const int32_t* kv_starts = nullptr;  // batch + 1 entries, from 0, non-decreasing

  // Optional global tokens in CSR form: the tokens of batch b are
  // global_indices[global_offsets[b] .. global_offsets[b + 1]), sorted ascending, unique, each in
  // [0, kv_seq_len). Both nullptr when there are none.
  const int32_t* global_offsets = nullptr;  // batch + 1 entries
  const int32_t* global_indices = nullptr;

  // Upper bound on CPU threads for this call (>= 1).
  int32_t threads = 1;

  // Element counts (of their dtypes) of the buffers behind the pointers, so that C++ can prove every strided access
  // is in bounds (validate_problem) instead of trusting the caller. lse_elements is 0 without lse.
  int64_t q_elements = 0;
  int64_t k_elements = 0;
  int64_t v_elements = 0;
  int64_t out_elements = 0;
  int64_t lse_elements = 0;
};

// The per-item rules of the comments above, in one place for the CPU driver and the CUDA loader.
// (Kernel objects compiled with ISA flags never include this header: see kernels/cpu/kernel_api.h.)
inline int64_t q_length_of(const AttentionProblem& p, int64_t b) {
  return p.q_lengths != nullptr ? p.q_lengths[b] : p.seq_len;
}
inline int64_t kv_length_of(const AttentionProblem& p, int64_t b) {
  return p.kv_lengths != nullptr ? p.kv_lengths[b] : p.kv_seq_len;
}
// The row (in its tensor's seq stride) of query i of item b in q and out: i, or q_starts[b] + i.
inline int64_t query_row(const AttentionProblem& p, int64_t b, int64_t i) {
  return p.q_starts != nullptr ? p.q_starts[b] + i : i;
}
// The row of key j of item b in its head's K and V: j, kv_starts[b] + j, or its page pool row.
inline int64_t key_row(const AttentionProblem& p, int64_t b, int64_t j) {
  if (p.kv_starts != nullptr) return p.kv_starts[b] + j;
  if (p.block_table == nullptr) return j;
  return static_cast<int64_t>(p.block_table[b * p.max_blocks + j / p.page_size]) * p.page_size + j % p.page_size;
}
// The lse entry of (item b, query head h, query i): [batch, heads, seq_len], or [heads, total_q] packed.
inline int64_t lse_index(const AttentionProblem& p, int64_t b, int64_t h, int64_t i) {
  return p.q_starts != nullptr ? h * p.q_starts[p.batch] + p.q_starts[b] + i : (b * p.heads + h) * p.seq_len + i;
}

enum class Status : int32_t {
  ok = 0,
  invalid_argument = 1,
  out_of_memory = 2,
  unavailable = 3,
  internal_error = 4,
};

// Native code reports a status and a message; the JS side owns error classes and stacks.
struct Outcome {
  Status status = Status::ok;
  char message[256] = {0};
};

class ValidatedProblem;
Outcome validate_problem(const AttentionProblem& problem, ValidatedProblem* validated);

// A problem that validate_problem accepted. Only validate_problem fills one, so an entry point that
// takes a ValidatedProblem knows every invariant holds and checks nothing again: one validation per
// call. A default-constructed one is empty, and the entry points refuse it.
class ValidatedProblem {
 public:
  ValidatedProblem() = default;
  bool valid() const { return valid_; }
  const AttentionProblem& problem() const { return problem_; }

 private:
  friend Outcome validate_problem(const AttentionProblem& problem, ValidatedProblem* validated);
  AttentionProblem problem_{};
  bool valid_ = false;
};

}  // namespace gla
