// What this CPU *and* its OS let us run. Built without ISA flags: it must run everywhere.
#pragma once

namespace gla {
namespace dispatch {

struct CpuFeatures {
  bool avx2_fma = false;  // AVX2 + FMA + F16C + OS-saved YMM state
  bool avx512 = false;    // AVX-512 F/DQ/BW/VL + the above + OS-saved opmask/ZMM state
  bool avx512_bf16 = false;  // AVX512_BF16 + the above
  bool neon = false;         // AArch64 Advanced SIMD: the baseline of every arm64 CPU
};

// Queries CPUID and XCR0 each call; callers cache (kernel_table.cc does, once per process).
CpuFeatures detect_cpu_features();

}  // namespace dispatch
}  // namespace gla
