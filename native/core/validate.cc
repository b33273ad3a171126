// validate_problem: the C++ side's own proof that every access run_attention makes is in bounds.
#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>

#include "core/checked_math.h"
#include "gla/attention.h"

namespace gla {
namespace {

constexpr int64_t kMaxDim = INT32_MAX;  // kv_lengths and global indices are int32

Outcome fail(const char* format, ...) {
  Outcome o;
  o.status = Status::invalid_argument;
  va_list args;
  va_start(args, format);
  std::vsnprintf(o.message, sizeof o.message, format, args);
  va_end(args);
  return o;
}

// The elements a strided [d0, d1, d2, head_dim] tensor reaches: [0, last] from its pointer.
struct Reach {
  bool empty;    // some extent is 0: nothing is read or written
  int64_t last;  // largest element index
};

bool tensor_reach(const char* name, const void* ptr, int64_t elements, const int64_t extents[4],
                  const int64_t strides[4], Reach* reach, Outcome* error) {
  reach->empty = false;
  reach->last = 0;
  for (int d = 0; d < 4; ++d) {
    if (extents[d] == 0) {
      reach->empty = true;
      return true;
    }
  }
  if (ptr == nullptr) {
    *error = fail("%s is null but has %lld x %lld x %lld x %lld elements", name, (long long)extents[0],
                  (long long)extents[1], (long long)extents[2], (long long)extents[3]);
    return false;
  }
  for (int d = 0; d < 3; ++d) {
    if (strides[d] < 0) {
      *error = fail("%s stride %d is negative (%lld)", name, d, (long long)strides[d]);
      return false;
    }
  }
  int64_t last = 0;
  for (int d = 0; d < 4; ++d) {
    int64_t term = 0;
    if (!core::checked_mul(extents[d] - 1, strides[d], &term) || !core::checked_add(last, term, &last)) {
      *error = fail("%s strides overflow int64", name);
      return false;
    }
  }
  if (last >= elements) {
    *error = fail("%s reaches element %lld but its buffer holds %lld", name, (long long)last, (long long)elements);
    return false;
  }
  reach->last = last;
  return true;
}

// Distinct (batch, head, row) must own disjoint rows of out, or threads would race and rows would
// overwrite each other. Sufficient test: sorted by stride, each dimension steps past everything the
// smaller ones span (true of bhsd, bshd and padded variants).
bool rows_disjoint(const int64_t extents[4], const int64_t strides[4]) {
  struct Dim {
    int64_t stride, extent;
  };
  Dim dims[3];
  int n = 0;
  for (int d = 0; d < 3; ++d) {
    if (extents[d] > 1) dims[n++] = {strides[d], extents[d]};
  }
  std::sort(dims, dims + n, [](const Dim& a, const Dim& b) { return a.stride < b.stride; });
  int64_t span = extents[3];  // one row
  for (int d = 0; d < n; ++d) {
    if (dims[d].stride < span) return false;
    span += (dims[d].extent - 1) * dims[d].stride;  // bounded by the reach check already done
  }
  return true;
}

// Byte ranges [a, a + (a_last + 1) * a_bytes) and the same for b.
bool overlaps(const void* a, int64_t a_last, int a_bytes, const void* b, int64_t b_last, int b_bytes) {
  const uintptr_t a0 = reinterpret_cast<uintptr_t>(a), b0 = reinterpret_cast<uintptr_t>(b);
  const uintptr_t a1 = a0 + static_cast<uintptr_t>(a_last + 1) * static_cast<uintptr_t>(a_bytes) - 1;
  const uintptr_t b1 = b0 + static_cast<uintptr_t>(b_last + 1) * static_cast<uintptr_t>(b_bytes) - 1;
  return a0 <= b1 && b0 <= a1;
}

}  // namespace

int dtype_bytes(DType dtype) {
  switch (dtype) {
    case DType::float32: return 4;
    case DType::float16:
    case DType::bfloat16: return 2;
  }
  return 0;
}

Outcome validate_problem(const AttentionProblem& p) {
  const struct {
    const char* name;
    int64_t value;
    int64_t min;
  } dims[] = {{"batch", p.batch, 0},       {"heads", p.heads, 1},           {"kv_heads", p.kv_heads, 1},
              {"seq_len", p.seq_len, 0},   {"kv_seq_len", p.kv_seq_len, 0}, {"head_dim", p.head_dim, 1}};
  for (const auto& d : dims) {
    if (d.value < d.min || d.value > kMaxDim) {
      return fail("%s must be in [%lld, %lld], got %lld", d.name, (long long)d.min, (long long)kMaxDim,
                  (long long)d.value);
    }
  }
  if (p.heads % p.kv_heads != 0) {
    return fail("heads (%lld) must be a multiple of kv_heads (%lld)", (long long)p.heads, (long long)p.kv_heads);
  }
  if (p.threads < 1) return fail("threads must be >= 1, got %d", p.threads);
  const int in_bytes = dtype_bytes(p.dtype), out_bytes = dtype_bytes(p.out_dtype);
  if (in_bytes == 0) return fail("dtype must be 0 (float32), 1 (float16) or 2 (bfloat16), got %d", static_cast<int>(p.dtype));
  if (out_bytes == 0) {
    return fail("out_dtype must be 0 (float32), 1 (float16) or 2 (bfloat16), got %d", static_cast<int>(p.out_dtype));
  }
  if (p.precision != Precision::float32 && p.precision != Precision::bfloat16) {
    return fail("precision must be 0 (float32) or 1 (bfloat16), got %d", static_cast<int>(p.precision));
  }
  if (!std::isfinite(p.scale)) return fail("scale must be finite");
  if (p.window_left < -1) return fail("window_left must be >= -1 (-1 = unbounded), got %lld", (long long)p.window_left);
  if (p.window_right < -1) return fail("window_right must be >= -1 (-1 = unbounded), got %lld", (long long)p.window_right);

  const bool paged = p.block_table != nullptr;
  if (paged) {
    if (p.page_size < 1 || p.page_size > kMaxDim || p.max_blocks < 1 || p.max_blocks > kMaxDim || p.page_count < 0 ||
        p.page_count > kMaxDim) {
      return fail("paged k/v needs page_size and max_blocks in [1, %lld] and page_count in [0, %lld] (got %lld, %lld, %lld)",
                  (long long)kMaxDim, (long long)kMaxDim, (long long)p.page_size, (long long)p.max_blocks,
                  (long long)p.page_count);
    }
    if (p.kv_seq_len > p.max_blocks * p.page_size) {
      return fail("kv_seq_len %lld exceeds max_blocks * page_size = %lld", (long long)p.kv_seq_len,
                  (long long)(p.max_blocks * p.page_size));
    }
    if (p.k_strides.batch != 0 || p.v_strides.batch != 0) return fail("paged k/v must have batch strides 0");
  }

  const bool packed = p.q_starts != nullptr || p.kv_starts != nullptr;
  int64_t total_q = 0, total_k = 0;
  if (packed) {
    if (p.q_starts == nullptr || p.kv_starts == nullptr || p.q_lengths == nullptr || p.kv_lengths == nullptr) {
      return fail("packed sequences need q_starts, kv_starts, q_lengths and kv_lengths all set");
    }
    if (paged) return fail("packed sequences and paged k/v cannot be combined");
    const struct {
      const char* name;
      const int32_t* starts;
      const int32_t* lengths;
      int64_t max_length;
    } lists[] = {{"q", p.q_starts, p.q_lengths, p.seq_len}, {"kv", p.kv_starts, p.kv_lengths, p.kv_seq_len}};
    for (const auto& list : lists) {
      if (list.starts[0] != 0) return fail("%s_starts[0] must be 0, got %d", list.name, list.starts[0]);
      for (int64_t b = 0; b < p.batch; ++b) {
        const int64_t length = static_cast<int64_t>(list.starts[b + 1]) - list.starts[b];
        if (length != list.lengths[b] || length < 0 || length > list.max_length) {
          return fail("%s_starts[%lld..%lld] = %d..%d must span %s_lengths[%lld] = %d rows (at most %lld)", list.name,
                      (long long)b, (long long)(b + 1), list.starts[b], list.starts[b + 1], list.name, (long long)b,
                      list.lengths[b], (long long)list.max_length);
        }
      }
    }
    total_q = p.q_starts[p.batch];
    total_k = p.kv_starts[p.batch];
    if (p.q_strides.batch != 0 || p.k_strides.batch != 0 || p.v_strides.batch != 0 || p.out_strides.batch != 0) {
      return fail("packed sequences must have batch strides 0");
    }
  }

  Outcome error;
  // Packed: the strided extents are the packed rows, every sequence reading within them.
  const int64_t q_extents[4] = {packed ? 1 : p.batch, p.heads, packed ? total_q : p.seq_len, p.head_dim};
  // Paged: the strided extent is the pool's rows, every batch item reading within it.
  const int64_t kv_extents[4] = {paged || packed ? 1 : p.batch, p.kv_heads,
                                 paged ? p.page_count * p.page_size : packed ? total_k : p.kv_seq_len, p.head_dim};
  const int64_t q_strides[4] = {p.q_strides.batch, p.q_strides.head, p.q_strides.seq, 1};
  const int64_t k_strides[4] = {p.k_strides.batch, p.k_strides.head, p.k_strides.seq, 1};
  const int64_t v_strides[4] = {p.v_strides.batch, p.v_strides.head, p.v_strides.seq, 1};
  const int64_t out_strides[4] = {p.out_strides.batch, p.out_strides.head, p.out_strides.seq, 1};
  Reach q, k, v, out;
  if (!tensor_reach("q", p.q, p.q_elements, q_extents, q_strides, &q, &error) ||
      !tensor_reach("k", p.k, p.k_elements, kv_extents, k_strides, &k, &error) ||
      !tensor_reach("v", p.v, p.v_elements, kv_extents, v_strides, &v, &error) ||
      !tensor_reach("out", p.out, p.out_elements, q_extents, out_strides, &out, &error)) {
    return error;
  }
  if (!out.empty && !rows_disjoint(q_extents, out_strides)) {
    return fail("out strides (%lld, %lld, %lld) make different rows overlap", (long long)p.out_strides.batch,
                (long long)p.out_strides.head, (long long)p.out_strides.seq);
  }

  const int64_t rows = packed ? p.heads * total_q : p.batch * p.heads * p.seq_len;  // each factor <= INT32_MAX: no overflow
  int64_t lse_last = -1;
  if (p.lse == nullptr) {
    if (p.lse_elements != 0) return fail("lse is null but lse_elements is %lld", (long long)p.lse_elements);
  } else {
    if (p.lse_elements < rows) {
      return fail("lse holds %lld elements but batch * heads * seq_len is %lld", (long long)p.lse_elements,
                  (long long)rows);
    }
    lse_last = rows - 1;
  }

  // Outputs must not alias inputs or each other: rows are read while other threads write.
  const struct {
    const char* name;
    const void* ptr;
    const Reach& reach;
  } inputs[] = {{"q", p.q, q}, {"k", p.k, k}, {"v", p.v, v}};
  if (!out.empty) {
    for (const auto& in : inputs) {
      if (!in.reach.empty && overlaps(p.out, out.last, out_bytes, in.ptr, in.reach.last, in_bytes)) {
        return fail("out overlaps %s", in.name);
      }
    }
  }
  if (lse_last >= 0) {
    for (const auto& in : inputs) {
      if (!in.reach.empty && overlaps(p.lse, lse_last, 4, in.ptr, in.reach.last, in_bytes)) {
        return fail("lse overlaps %s", in.name);
      }
    }
    if (!out.empty && overlaps(p.lse, lse_last, 4, p.out, out.last, out_bytes)) return fail("lse overlaps out");
  }

  if (p.kv_lengths != nullptr) {
    for (int64_t b = 0; b < p.batch; ++b) {
      if (p.kv_lengths[b] < 0 || p.kv_lengths[b] > p.kv_seq_len) {
        return fail("kv_lengths[%lld] = %d is outside [0, kv_seq_len = %lld]", (long long)b, p.kv_lengths[b],
                    (long long)p.kv_seq_len);
      }
    }
  }

  if (paged) {
    for (int64_t b = 0; b < p.batch; ++b) {
      const int64_t kv_length = p.kv_lengths != nullptr ? p.kv_lengths[b] : p.kv_seq_len;
      const int64_t used = (kv_length + p.page_size - 1) / p.page_size;
      for (int64_t n = 0; n < used; ++n) {
        const int32_t page = p.block_table[b * p.max_blocks + n];
        if (page < 0 || page >= p.page_count) {
          return fail("block_table[%lld] = %d (batch %lld, block %lld) is outside [0, page_count = %lld)",
                      (long long)(b * p.max_blocks + n), page, (long long)b, (long long)n, (long long)p.page_count);
        }
      }
    }
  }
  if (p.q_lengths != nullptr) {
    for (int64_t b = 0; b < p.batch; ++b) {
      if (p.q_lengths[b] < 0 || p.q_lengths[b] > p.seq_len) {
        return fail("q_lengths[%lld] = %d is outside [0, seq_len = %lld]", (long long)b, p.q_lengths[b],
                    (long long)p.seq_len);
      }
    }
  }
  if (!(p.softcap >= 0.0f && std::isfinite(p.softcap))) return fail("softcap must be 0 (off) or finite and > 0, got %g", (double)p.softcap);
  const struct {
    const char* name;
    const float* values;
  } head_values[] = {{"alibi_slopes", p.alibi_slopes}, {"sink_logits", p.sink_logits}};
  for (const auto& list : head_values) {
    if (list.values == nullptr) continue;
    for (int64_t h = 0; h < p.heads; ++h) {
      if (!std::isfinite(list.values[h])) return fail("%s[%lld] must be finite, got %g", list.name, (long long)h, (double)list.values[h]);
    }
  }

  if ((p.global_offsets == nullptr) != (p.global_indices == nullptr)) {
    return fail("global_offsets and global_indices must be both null or both set");
  }
  if (p.global_offsets != nullptr) {
    if (p.global_offsets[0] != 0) return fail("global_offsets[0] must be 0, got %d", p.global_offsets[0]);
    for (int64_t b = 0; b < p.batch; ++b) {
      const int32_t begin = p.global_offsets[b], end = p.global_offsets[b + 1];
      if (end < begin) {
        return fail("global_offsets must not decrease (global_offsets[%lld] = %d > global_offsets[%lld] = %d)",
                    (long long)b, begin, (long long)(b + 1), end);
      }
      for (int32_t n = begin; n < end; ++n) {
        const int32_t j = p.global_indices[n];
        if (j < 0 || j >= p.kv_seq_len) {
          return fail("global token %d of batch %lld is outside [0, kv_seq_len = %lld)", j, (long long)b,
                      (long long)p.kv_seq_len);
        }
        if (n > begin && j <= p.global_indices[n - 1]) {
          return fail("global tokens of batch %lld must be sorted and unique (%d after %d)", (long long)b, j,
                      p.global_indices[n - 1]);
        }
      }
    }
  }
  return Outcome{};
}

Outcome validate_problem(const AttentionProblem& problem, ValidatedProblem* validated) {
  validated->valid_ = false;
  Outcome outcome = validate_problem(problem);
  if (outcome.status == Status::ok) {
    validated->problem_ = problem;
    validated->valid_ = true;
  }
  return outcome;
}

}  // namespace gla
