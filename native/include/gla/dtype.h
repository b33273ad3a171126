// Element types and product precision: plain enums only, so that the per-ISA kernel objects can
// include this header without emitting code (see native/kernels/cpu/kernel_api.h).
#pragma once

#include <cstdint>

namespace gla {

// Element types of the tensors. The values are stable: they cross the JS boundary as numbers.
enum class DType : int32_t { float32 = 0, float16 = 1, bfloat16 = 2 };

// The precision of the two products' inputs (Q K^T and P V). Accumulation, the running max and the
// softmax are float32 always. bfloat16 lets a kernel with a bfloat16 dot product (AVX512_BF16) round
// q, k, the weights P and v to bfloat16 before multiplying; a kernel without one computes in float32.
enum class Precision : int32_t { float32 = 0, bfloat16 = 1 };

// Bytes per element of a dtype (4 or 2); 0 for a value outside the enum. Defined in validate.cc.
int dtype_bytes(DType dtype);

}  // namespace gla
