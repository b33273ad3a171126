#include "dispatch/cpu_features.h"

#include <cstdint>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(_M_IX86)
#define GLA_X86 1
#if defined(_MSC_VER)
#include <intrin.h>
#else
#include <cpuid.h>
#endif
#endif

namespace gla {
namespace dispatch {

#if defined(GLA_X86)
namespace {

struct Regs {
  uint32_t eax, ebx, ecx, edx;
};

Regs cpuid(uint32_t leaf, uint32_t subleaf) {
  Regs r{};
#if defined(_MSC_VER)
  int v[4];
  __cpuidex(v, static_cast<int>(leaf), static_cast<int>(subleaf));
  r = {static_cast<uint32_t>(v[0]), static_cast<uint32_t>(v[1]), static_cast<uint32_t>(v[2]),
       static_cast<uint32_t>(v[3])};
#else
  __cpuid_count(leaf, subleaf, r.eax, r.ebx, r.ecx, r.edx);
#endif
  return r;
}

// XCR0: which register states the OS saves on a context switch. Only valid once CPUID says
// OSXSAVE. The inline asm avoids _xgetbv, which GCC only offers under -mxsave.
uint64_t xgetbv0() {
#if defined(_MSC_VER)
  return _xgetbv(0);
#else
  uint32_t eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
#endif
}

bool bit(uint32_t value, int n) { return ((value >> n) & 1u) != 0; }

}  // namespace

CpuFeatures detect_cpu_features() {
  CpuFeatures f;
  const uint32_t max_leaf = cpuid(0, 0).eax;
  if (max_leaf < 1) return f;
  const Regs l1 = cpuid(1, 0);
  const bool osxsave = bit(l1.ecx, 27), avx = bit(l1.ecx, 28), fma = bit(l1.ecx, 12), f16c = bit(l1.ecx, 29);
  if (!osxsave || !avx) return f;

  const uint64_t xcr0 = xgetbv0();
  const bool os_ymm = (xcr0 & 0x6) == 0x6;     // bits 1, 2: SSE and AVX state
  const bool os_zmm = (xcr0 & 0xE0) == 0xE0;   // bits 5, 6, 7: opmask, ZMM0-15 upper, ZMM16-31
  if (!os_ymm || max_leaf < 7) return f;

  const Regs l7 = cpuid(7, 0);
  const bool avx2 = bit(l7.ebx, 5);
  const bool avx512f = bit(l7.ebx, 16), avx512dq = bit(l7.ebx, 17);
  const bool avx512bw = bit(l7.ebx, 30), avx512vl = bit(l7.ebx, 31);

  // F16C (half-precision conversion) came with or before AVX2 on every x86 CPU; the kernels use it.
  f.avx2_fma = avx2 && fma && f16c;
  f.avx512 = f.avx2_fma && os_zmm && avx512f && avx512dq && avx512bw && avx512vl;
  // AVX512_BF16 (VDPBF16PS, VCVTNE2PS2BF16) is enumerated in leaf 7 subleaf 1, EAX bit 5.
  const uint32_t max_subleaf = l7.eax;
  f.avx512_bf16 = f.avx512 && max_subleaf >= 1 && bit(cpuid(7, 1).eax, 5);
  return f;
}

#else

CpuFeatures detect_cpu_features() {
  CpuFeatures f;
#if defined(__aarch64__) || defined(_M_ARM64)
  f.neon = true;  // Advanced SIMD is mandatory in AArch64: no probe needed.
#endif
  return f;
}

#endif

}  // namespace dispatch
}  // namespace gla
