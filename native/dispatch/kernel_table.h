// The table of compiled CPU kernels, filtered by what this machine can run.
#pragma once

#include "gla/attention.h"
#include "kernels/cpu/kernel_api.h"

namespace gla {
namespace dispatch {

// The kernels for `isa` when they were compiled in and this CPU/OS supports them, else nullptr.
const cpu::CpuKernels* kernels_for(Isa isa);

// Whether `isa`'s kernels have bfloat16 products on this CPU (precision bfloat16 then uses them).
bool has_bf16_products(Isa isa);

// Whether `isa` was compiled into this build at all (to say why an ISA is unavailable).
bool isa_compiled(Isa isa);

}  // namespace dispatch
}  // namespace gla
