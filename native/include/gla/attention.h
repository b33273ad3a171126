// The CPU core's public API: the only header the addon (or any other host) needs besides problem.h.
// Nothing here throws; every failure comes back as an Outcome.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "gla/problem.h"

namespace gla {

// Instruction sets the CPU kernels are compiled for. The numeric values are stable (logged, and
// usable as indices), the names are what JavaScript sees.
enum class Isa : int32_t { scalar = 0, avx2 = 1, avx512 = 2, neon = 3 };

// "scalar" | "avx2" | "avx512" | "neon"; "unknown" for a value outside the enum.
const char* isa_name(Isa isa);

// Parses one of the names above (exact, lower case). Returns false and leaves *out alone otherwise.
bool isa_from_name(const char* name, Isa* out);

// The ISAs that were compiled in AND that this CPU and OS can run (CPUID + XCR0 on x86; NEON is
// the arm64 baseline), best first.
// Always ends with Isa::scalar. Detected once per process.
std::vector<Isa> supported_isas();

// Whether `isa`'s kernels have bfloat16 dot products on this CPU (AVX512_BF16): precision bfloat16
// then uses them; otherwise it computes in float32. False for an ISA that is not supported.
bool isa_has_bf16_products(Isa isa);

// The threads this process may run on (CPU affinity where the OS reports it), at least 1.
// The internal pool has hardware_threads() - 1 workers; the calling thread is the last one.
int hardware_threads();

// Checks every invariant run_attention relies on: sizes (each in [0, INT32_MAX], heads, kv_heads
// and head_dim >= 1, heads % kv_heads == 0), non-null buffers for non-empty tensors, non-negative
// strides whose largest reached index is below *_elements (overflow-checked), out rows that do not
// overlap each other or any input, lse present iff lse_elements > 0 and large enough, a finite
// scale, windows >= -1, kv_lengths in [0, kv_seq_len], globals as CSR with sorted unique indices in
// [0, kv_seq_len), threads >= 1.
Outcome validate_problem(const AttentionProblem& problem);

// The same, and on success a copy of the problem sealed as validated (problem.h); *validated is
// left empty on failure. The problem's pointers are copied, not what they point to.
Outcome validate_problem(const AttentionProblem& problem, ValidatedProblem* validated);

// Copies `bytes` from src to dst (which must not overlap) on the calling thread plus up to
// threads - 1 pool workers that are idle; returns when every byte is copied.
void parallel_copy(void* dst, const void* src, size_t bytes, int threads);

// Validates, then computes out (and lse when given) on the calling thread plus up to
// problem.threads - 1 pool workers. Returns Status::unavailable when `isa` is not in
// supported_isas(). Writes nothing unless the problem is valid; never writes an input. Safe to call
// from several threads at once.
Outcome run_attention(const AttentionProblem& problem, Isa isa);

// run_attention of a problem validated already: no second validation (an empty one is refused).
Outcome run_attention(const ValidatedProblem& problem, Isa isa);

}  // namespace gla
