// Per-thread scratch of the driver: one 64-byte aligned allocation per pool slot, carved into the
// arrays a kernel call needs. Sized from the plan, so it is O(block_q * (block_k + head_dim)) per
// thread and never depends on sequence lengths.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace gla {
namespace core {

struct ScratchShape {
  int block_q;
  int rows_pad;  // block_q rounded up to the vector width
  int block_k;
  int dim_pad;
  int score_floats;  // scores of one block in either layout (see kernel_api.h)
};

class Scratch {
 public:
  // Throws std::bad_alloc.
  explicit Scratch(const ScratchShape& shape);

  float* qt;       // [dim_pad][rows_pad]: Q^T of the group
  float* q_rows;   // [block_q][dim_pad]: the same rows row-major, for the few-rows path
  float* s;        // [score_floats]
  float* acc;      // [block_q][dim_pad]
  float* row_max;  // [rows_pad]
  float* row_sum;  // [rows_pad]
  float* alpha;    // [rows_pad]
  int64_t* keys;         // [block_k]
  int64_t* rows;         // [block_q]: query row index of each group row
  int64_t* win_begin;    // [block_q]
  int64_t* win_end;      // [block_q]
  int64_t* allowed_end;  // [block_q]

 private:
  std::unique_ptr<unsigned char[]> storage_;
};

// One Scratch per slot of a parallel_for call.
std::vector<Scratch> make_scratch(const ScratchShape& shape, int slots);

}  // namespace core
}  // namespace gla
