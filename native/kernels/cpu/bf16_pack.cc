// The operands of the bfloat16 products (bf16_products.h says the layouts): a unit's Q^T and a
// block's K and V rounded to bfloat16 pairs, from float32, float16 or bfloat16 inputs. O(rows x
// head_dim) per unit and O(keys x head_dim) per block, against O(rows x keys x head_dim) products.
// Compiled once per ISA; only the AVX-512 build has bfloat16 instructions, the others define
// nothing here (their kernel tables hold null).
#include <cstdint>

#include "kernels/cpu/kernel_api.h"
#include "kernels/cpu/simd.h"

#if defined(GLA_KERNEL_BF16_DOT)

namespace gla {
namespace cpu {
namespace GLA_KERNEL_NS {

using simd::kWidth;
using simd::V;

namespace {

// Elements [t, t + n) of a row of `dtype` as float32 lanes (n <= kWidth; n <= 0 gives zeros).
GLA_BF16 inline V load_row(DType dtype, const void* row, int t, int n) {
  if (n <= 0) return simd::zero();
  if (dtype == DType::float32) {
    const float* f = static_cast<const float*>(row) + t;
    return n >= kWidth ? simd::load(f) : simd::load_partial(f, n);
  }
  const uint16_t* h = static_cast<const uint16_t*>(row) + t;
  const __m256i bits = n >= kWidth ? simd::load_u16(h) : simd::load_u16_partial(h, n);
  return dtype == DType::float16 ? simd::widen_f16(bits) : simd::widen_bf16(bits);
}

GLA_BF16 inline const void* row_at(DType dtype, const void* base, int64_t row, int64_t stride) {
  return static_cast<const unsigned char*>(base) + row * stride * (dtype == DType::float32 ? 4 : 2);
}

}  // namespace

GLA_BF16 void pack_q_pairs(const float* qt, int rows_pad, int head_dim, uint32_t* qt_pairs) {
  const int dim_pairs = (head_dim + 1) / 2;
  for (int t2 = 0; t2 < dim_pairs; ++t2) {
    const float* lo = qt + static_cast<int64_t>(2 * t2) * rows_pad;
    const bool has_hi = 2 * t2 + 1 < head_dim;
    for (int r0 = 0; r0 < rows_pad; r0 += kWidth) {
      const V hi = has_hi ? simd::load(lo + rows_pad + r0) : simd::zero();
      _mm512_storeu_si512(qt_pairs + static_cast<int64_t>(t2) * rows_pad + r0, simd::bf16_pairs(simd::load(lo + r0), hi));
    }
  }
}

GLA_BF16 bool pack_kv_pairs(DType dtype, const void* k, int64_t k_row_stride, const void* v, int64_t v_row_stride,
                            const int64_t* rows, int n_keys, int head_dim, int dim_pad, uint32_t* k_pairs,
                            uint32_t* v_pairs) {
  const int dim_pairs = (head_dim + 1) / 2;
  for (int c = 0; c < n_keys; ++c) {
    const void* row = row_at(dtype, k, rows[c], k_row_stride);
    uint32_t* to = k_pairs + static_cast<int64_t>(c) * dim_pairs;
    for (int t = 0; t < head_dim; t += 2 * kWidth) {
      const __m512i run = simd::bf16_run(load_row(dtype, row, t, head_dim - t), load_row(dtype, row, t + kWidth, head_dim - t - kWidth));
      const int words = dim_pairs - t / 2;
      if (words >= kWidth) {
        _mm512_storeu_si512(to + t / 2, run);
      } else {
        _mm512_mask_storeu_epi32(to + t / 2, simd::tail_mask(words), run);
      }
    }
  }
  // x * 0 is NaN exactly when x is NaN or infinite (values_finite in attention_block.cc).
  const V z = simd::zero();
  V bad_lo = z, bad_hi = z;
  for (int c2 = 0; 2 * c2 < n_keys; ++c2) {
    const void* lo = row_at(dtype, v, rows[2 * c2], v_row_stride);
    const bool has_hi = 2 * c2 + 1 < n_keys;
    const void* hi = has_hi ? row_at(dtype, v, rows[2 * c2 + 1], v_row_stride) : nullptr;
    uint32_t* to = v_pairs + static_cast<int64_t>(c2) * dim_pad;
    for (int d0 = 0; d0 < dim_pad; d0 += kWidth) {
      const V l = load_row(dtype, lo, d0, head_dim - d0);
      const V h = has_hi ? load_row(dtype, hi, d0, head_dim - d0) : z;
      bad_lo = simd::fmadd(l, z, bad_lo);
      bad_hi = simd::fmadd(h, z, bad_hi);
      _mm512_storeu_si512(to + d0, simd::bf16_pairs(l, h));
    }
  }
  const float total = simd::reduce_add(simd::add(bad_lo, bad_hi));
  return total == total;
}

}  // namespace GLA_KERNEL_NS
}  // namespace cpu
}  // namespace gla

#endif  // GLA_KERNEL_BF16_DOT
