#include "core/scratch.h"

#include <cstdint>

namespace gla {
namespace core {
namespace {

constexpr size_t kAlign = 64;  // a cache line, and the widest vector

size_t aligned_bytes(size_t count, size_t element) { return (count * element + kAlign - 1) / kAlign * kAlign; }

}  // namespace

void Scratch::reserve(const ScratchShape& shape) {
  if (shape.block_q == carved_.block_q && shape.rows_pad == carved_.rows_pad && shape.block_k == carved_.block_k &&
      shape.dim_pad == carved_.dim_pad && shape.score_floats == carved_.score_floats && shape.widened == carved_.widened &&
      shape.bf16 == carved_.bf16) {
    return;
  }
  const size_t bq = static_cast<size_t>(shape.block_q);
  const size_t rp = static_cast<size_t>(shape.rows_pad);
  const size_t bk = static_cast<size_t>(shape.block_k);
  const size_t dp = static_cast<size_t>(shape.dim_pad);
  const size_t wk = shape.widened ? bk : 0;
  const size_t key_pairs = shape.bf16 ? (bk + 1) / 2 : 0;
  // The bfloat16 pairs are 32-bit words: counted as floats.
  const size_t float_counts[] = {dp * rp, bq * dp, static_cast<size_t>(shape.score_floats), bq * dp, rp, rp, rp, rp,
                                 wk * dp, wk * dp, shape.widened ? dp : 0,
                                 shape.bf16 ? dp / 2 * rp : 0, shape.bf16 ? bk * (dp / 2) : 0, key_pairs * dp,
                                 key_pairs * rp, rp, rp, bk + 16, 3 * rp};
  const size_t int_counts[] = {bk, bq, bq, bq, bq, wk, bq, bk, bk};
  size_t total = kAlign;  // room to align the start
  for (size_t n : float_counts) total += aligned_bytes(n, sizeof(float));
  for (size_t n : int_counts) total += aligned_bytes(n, sizeof(int64_t));
  if (total > capacity_) {
    storage_.reset();
    capacity_ = 0;
    carved_ = ScratchShape{0, 0, 0, 0, 0, false, false};
    storage_.reset(new unsigned char[total]);
    capacity_ = total;
  }

  unsigned char* p = storage_.get();
  p += (kAlign - reinterpret_cast<uintptr_t>(p) % kAlign) % kAlign;
  auto take_floats = [&p](size_t n) {
    float* out = reinterpret_cast<float*>(p);
    p += aligned_bytes(n, sizeof(float));
    return out;
  };
  auto take_ints = [&p](size_t n) {
    int64_t* out = reinterpret_cast<int64_t*>(p);
    p += aligned_bytes(n, sizeof(int64_t));
    return out;
  };
  qt = take_floats(float_counts[0]);
  q_rows = take_floats(float_counts[1]);
  s = take_floats(float_counts[2]);
  acc = take_floats(float_counts[3]);
  row_max = take_floats(rp);
  row_sum = take_floats(rp);
  alpha = take_floats(rp);
  block_sum = take_floats(rp);
  keys = take_ints(bk);
  rows = take_ints(bq);
  win_begin = take_ints(bq);
  win_end = take_ints(bq);
  allowed_end = take_ints(bq);
  k_block = shape.widened ? take_floats(float_counts[8]) : nullptr;
  v_block = shape.widened ? take_floats(float_counts[9]) : nullptr;
  row_buffer = shape.widened ? take_floats(float_counts[10]) : nullptr;
  auto take_words = [&](size_t n) { return shape.bf16 ? reinterpret_cast<uint32_t*>(take_floats(n)) : nullptr; };
  qt_pairs = take_words(float_counts[11]);
  k_pairs = take_words(float_counts[12]);
  v_pairs = take_words(float_counts[13]);
  p_pairs = take_words(float_counts[14]);
  row_slope = take_floats(rp);
  alibi_rows = take_floats(rp);
  alibi_keys = take_floats(float_counts[17]);
  mask_bounds = take_floats(float_counts[18]);
  block_rows = shape.widened ? take_ints(wk) : nullptr;
  row_position = take_ints(bq);
  pool_rows = take_ints(bk);
  ahead_rows = take_ints(bk);
  if (shape.widened) {
    for (size_t c = 0; c < wk; ++c) block_rows[c] = static_cast<int64_t>(c);
  }
  carved_ = shape;
}

}  // namespace core
}  // namespace gla
