#include "dispatch/kernel_table.h"

#include <cstdlib>
#include <cstring>

#include "dispatch/cpu_features.h"

namespace gla {
namespace dispatch {
namespace {

struct Entry {
  Isa isa;
  const cpu::CpuKernels* kernels;  // nullptr when not compiled in
};

// Best first. Entries whose objects were not built (non-x86, or disabled) hold nullptr.
const Entry kTable[] = {
#if defined(GLA_HAVE_AVX512)
    {Isa::avx512, &cpu::avx512::kernels},
#else
    {Isa::avx512, nullptr},
#endif
#if defined(GLA_HAVE_AVX2)
    {Isa::avx2, &cpu::avx2::kernels},
#else
    {Isa::avx2, nullptr},
#endif
#if defined(GLA_HAVE_NEON)
    {Isa::neon, &cpu::neon::kernels},
#else
    {Isa::neon, nullptr},
#endif
    {Isa::scalar, &cpu::scalar::kernels},
};

bool cpu_can_run(Isa isa, const CpuFeatures& f) {
  switch (isa) {
    case Isa::avx512: return f.avx512;
    case Isa::avx2: return f.avx2_fma;
    case Isa::neon: return f.neon;
    case Isa::scalar: return true;
  }
  return false;
}

const std::vector<Isa>& detected() {
  // Magic static: detected once, thread-safe, and never throws after the first call. Never
  // destroyed: process.exit() runs static destructors while the addon's async dispatchers may still
  // be choosing kernels for queued calls, and a destroyed vector here was a heap-use-after-free
  // under ASan (test/reliability/workers.test.ts, exit with calls in flight).
  static const std::vector<Isa>* isas = [] {
    const CpuFeatures f = detect_cpu_features();
    auto* out = new std::vector<Isa>();
    for (const Entry& e : kTable) {
      if (e.kernels != nullptr && cpu_can_run(e.isa, f)) out->push_back(e.isa);
    }
    return out;
  }();
  return *isas;
}

// The table of `isa` as this CPU may run it: the bfloat16 products cleared where the CPU lacks
// AVX512_BF16 (the AVX-512 objects carry them behind target attributes; they must not be called).
// GLA_NO_BF16_DOT set to anything but "" or "0" clears them too: the bench's float32 baseline with
// precision 'bfloat16', and a switch for anyone who suspects the bfloat16 path.
const cpu::CpuKernels* runnable(const Entry& e) {
  if (e.isa != Isa::avx512 || e.kernels == nullptr) return e.kernels;
  static const cpu::CpuKernels avx512 = [&] {
    cpu::CpuKernels k = *e.kernels;
    const char* off = std::getenv("GLA_NO_BF16_DOT");
    const bool disabled = off != nullptr && off[0] != '\0' && std::strcmp(off, "0") != 0;
    if (!detect_cpu_features().avx512_bf16 || disabled) {
      k.attend_block_bf16 = nullptr;
      k.pack_q_pairs = nullptr;
      k.pack_kv_pairs = nullptr;
    }
    return k;
  }();
  return &avx512;
}

}  // namespace

const cpu::CpuKernels* kernels_for(Isa isa) {
  for (Isa supported : detected()) {
    if (supported != isa) continue;
    for (const Entry& e : kTable) {
      if (e.isa == isa) return runnable(e);
    }
  }
  return nullptr;
}

bool has_bf16_products(Isa isa) {
  const cpu::CpuKernels* k = kernels_for(isa);
  return k != nullptr && k->attend_block_bf16 != nullptr;
}


bool isa_compiled(Isa isa) {
  for (const Entry& e : kTable) {
    if (e.isa == isa) return e.kernels != nullptr;
  }
  return false;
}

}  // namespace dispatch

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::scalar: return "scalar";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
    case Isa::neon: return "neon";
  }
  return "unknown";
}

bool isa_from_name(const char* name, Isa* out) {
  if (name == nullptr || out == nullptr) return false;
  for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512, Isa::neon}) {
    if (std::strcmp(name, isa_name(isa)) == 0) {
      *out = isa;
      return true;
    }
  }
  return false;
}

std::vector<Isa> supported_isas() { return dispatch::detected(); }

bool isa_has_bf16_products(Isa isa) { return dispatch::has_bf16_products(isa); }

}  // namespace gla
