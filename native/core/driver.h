// The one tiled driver behind run_attention (full attention is just window (-1, -1) and no globals).
#pragma once

#include "core/plan.h"
#include "gla/attention.h"
#include "kernels/cpu/kernel_api.h"

namespace gla {
namespace core {

// Computes a problem that validate_problem accepted. Throws std::bad_alloc (all allocation happens
// before any output is written); nothing else.
void run_validated(const AttentionProblem& problem, const cpu::CpuKernels& kernels, const DriverConfig& config);

// run_attention with explicit tile sizes / split-K, for tests and tuning. Validates, never throws.
Outcome run_attention_configured(const AttentionProblem& problem, Isa isa, const DriverConfig& config);

// The exp of the given ISA's kernels over an array (for the accuracy test); false if unsupported.
bool kernel_exp(Isa isa, const float* in, float* out, int64_t n);

}  // namespace core
}  // namespace gla
