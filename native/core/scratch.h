// Per-thread scratch of the driver: one 64-byte aligned allocation per thread, carved into the
// arrays a kernel call needs. Sized from the plan, so it is O(block_q * (block_k + head_dim)) per
// thread and never depends on sequence lengths. It is kept between calls (thread_local in the
// driver) and only reallocated when a call needs more, so steady calls allocate nothing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace gla {
namespace core {

struct ScratchShape {
  int block_q;
  int rows_pad;  // block_q rounded up to the vector width
  int block_k;
  int dim_pad;
  int score_floats;  // scores of one block in either layout (see kernel_api.h)
  bool widened;      // half-precision inputs: room for a block of K and V rows widened to float32
  bool bf16;         // bfloat16 products: room for their operands (kernel_api.h, BlockArgs)
};

class Scratch {
 public:
  // Makes the arrays fit `shape`, growing the allocation when needed. Throws std::bad_alloc
  // (leaving the scratch empty but valid).
  void reserve(const ScratchShape& shape);

  float* qt = nullptr;       // [dim_pad][rows_pad]: Q^T of the group
  float* q_rows = nullptr;   // [block_q][dim_pad]: the same rows row-major, for the few-rows path
  float* s = nullptr;        // [score_floats]
  float* acc = nullptr;      // [block_q][dim_pad]
  float* row_max = nullptr;  // [rows_pad]
  float* row_sum = nullptr;  // [rows_pad]
  float* alpha = nullptr;    // [rows_pad]
  float* block_sum = nullptr;  // [rows_pad]
  int64_t* keys = nullptr;         // [block_k]
  int64_t* rows = nullptr;         // [block_q]: query row index of each group row
  int64_t* win_begin = nullptr;    // [block_q]
  int64_t* win_end = nullptr;      // [block_q]
  int64_t* allowed_end = nullptr;  // [block_q]
  // Only with shape.widened (else null): one block's K and V rows widened to float32, the row
  // index of each key in them (0, 1, 2, ...), and one row of Q or out on its way between dtypes.
  float* k_block = nullptr;        // [block_k][dim_pad]
  float* v_block = nullptr;        // [block_k][dim_pad]
  int64_t* block_rows = nullptr;   // [block_k]
  float* row_buffer = nullptr;     // [dim_pad]
  // Only with shape.bf16 (else null): the bfloat16 pairs of the unit's Q^T and of one block.
  uint32_t* qt_pairs = nullptr;    // [dim_pad / 2][rows_pad]
  uint32_t* k_pairs = nullptr;     // [block_k][dim_pad / 2]
  uint32_t* v_pairs = nullptr;     // [(block_k + 1) / 2][dim_pad]
  uint32_t* p_pairs = nullptr;     // [(block_k + 1) / 2][rows_pad]
  // ALiBi (kernel_api.h, BlockArgs): each row's slope and position, and the kernel's own scratch.
  float* row_slope = nullptr;      // [rows_pad]
  int64_t* row_position = nullptr; // [block_q]
  float* alibi_rows = nullptr;     // [rows_pad]
  float* alibi_keys = nullptr;     // [block_k + 16]
  // Partial blocks of row groups: the kernel's per-row bounds of the visible key indices.
  float* mask_bounds = nullptr;    // [3][rows_pad]
  // Paged K and V: the pool row of each key of a block (problem.h, block_table).
  int64_t* pool_rows = nullptr;    // [block_k]
  int64_t* ahead_rows = nullptr;   // [block_k]: the next block's K rows, for decode's prefetch

 private:
  std::unique_ptr<unsigned char[]> storage_;
  size_t capacity_ = 0;
  ScratchShape carved_{0, 0, 0, 0, 0, false, false};
};

}  // namespace core
}  // namespace gla
