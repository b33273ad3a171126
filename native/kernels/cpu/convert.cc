// Element-type conversion for the driver: half-precision rows widened to float32 before the float32
// kernels read them, and float32 results narrowed to the output dtype (nearest even, once).
// Compiled once per ISA (cmake/cpu_kernels.cmake) over the half-precision words of simd.h.
#include <cstdint>

#include "kernels/cpu/kernel_api.h"
#include "kernels/cpu/simd.h"

namespace gla {
namespace cpu {
namespace GLA_KERNEL_NS {

using simd::kWidth;
using simd::V;

namespace {

template <DType D>
inline V load_half(const uint16_t* p) {
  if constexpr (D == DType::float16) return simd::widen_f16(simd::load_u16(p));
  return simd::widen_bf16(simd::load_u16(p));
}
template <DType D>
inline V load_half_partial(const uint16_t* p, int n) {
  if constexpr (D == DType::float16) return simd::widen_f16(simd::load_u16_partial(p, n));
  return simd::widen_bf16(simd::load_u16_partial(p, n));
}

template <DType D>
void widen_rows_of(const uint16_t* src, int64_t row_stride, const int64_t* rows, int n_rows, int dim, float scale,
                   float* dst, int64_t dst_stride) {
  const V factor = simd::broadcast(scale);
  const int full_end = dim / kWidth * kWidth;
  for (int r = 0; r < n_rows; ++r) {
    const uint16_t* from = src + rows[r] * row_stride;
    float* to = dst + r * dst_stride;
    for (int t = 0; t < full_end; t += kWidth) simd::store(to + t, simd::mul(load_half<D>(from + t), factor));
    if (full_end < dim) {
      const int tail = dim - full_end;
      simd::store_partial(to + full_end, simd::mul(load_half_partial<D>(from + full_end, tail), factor), tail);
    }
  }
}

template <DType D>
void narrow_row_to(const float* src, int n, uint16_t* dst) {
  int t = 0;
  for (; t + kWidth <= n; t += kWidth) {
    const V x = simd::load(src + t);
    simd::store_u16(dst + t, D == DType::float16 ? simd::narrow_f16(x) : simd::narrow_bf16(x));
  }
  if (t < n) {
    const int tail = n - t;
    const V x = simd::load_partial(src + t, tail);
    simd::store_u16_partial(dst + t, D == DType::float16 ? simd::narrow_f16(x) : simd::narrow_bf16(x), tail);
  }
}

}  // namespace

void widen_rows(DType dtype, const void* src, int64_t row_stride, const int64_t* rows, int n_rows, int dim, float scale,
                float* dst, int64_t dst_stride) {
  const uint16_t* half = static_cast<const uint16_t*>(src);
  if (dtype == DType::float16) {
    widen_rows_of<DType::float16>(half, row_stride, rows, n_rows, dim, scale, dst, dst_stride);
  } else {
    widen_rows_of<DType::bfloat16>(half, row_stride, rows, n_rows, dim, scale, dst, dst_stride);
  }
}

void narrow_row(const float* src, int n, DType dtype, void* dst) {
  uint16_t* half = static_cast<uint16_t*>(dst);
  if (dtype == DType::float16) {
    narrow_row_to<DType::float16>(src, n, half);
  } else {
    narrow_row_to<DType::bfloat16>(src, n, half);
  }
}

}  // namespace GLA_KERNEL_NS
}  // namespace cpu
}  // namespace gla
