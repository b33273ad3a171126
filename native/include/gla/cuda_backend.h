// The CUDA backend as the rest of the native code sees it: a loader for the optional plugin
// (libgla_cuda.so / gla_cuda.dll, built only where a CUDA toolkit was found) and one entry point.
// Nothing here needs CUDA headers or libraries; every failure is a reason string, never a crash.
#pragma once

#include "gla/problem.h"

namespace gla {

// Where the time of one CUDA call went. copy_in_ms: staging the inputs into pinned memory and the
// host-to-device copies; kernel_ms: the kernels (CUDA events); copy_out_ms: the rest (device-to-host
// copies and unstaging the outputs); total_ms: the whole call, wall clock.
struct CudaTiming {
  double copy_in_ms = 0.0;
  double kernel_ms = 0.0;
  double copy_out_ms = 0.0;
  double total_ms = 0.0;
};

// nullptr when the CUDA backend is usable, else why not (plugin not built or not found, load error,
// ABI mismatch, no driver, no device, ...). The first call loads and probes the plugin (thread-safe,
// once per process); later calls return the same answer. The plugin is looked for next to the module
// that contains this code, or at the path in the environment variable GLA_CUDA_PLUGIN.
const char* cuda_unavailable_reason();

// "NVIDIA H200 (sm_90, 132 SMs, 139.8 GiB)", or nullptr when the backend is unavailable.
const char* cuda_device_name();

// Validates (validate_problem), then computes on the GPU: copies the inputs in, runs the kernels,
// copies out and lse back; returns when done. Status::unavailable (with the reason) when the backend
// is unavailable. Safe to call from several threads at once; each call uses its own stream.
Outcome run_attention_cuda(const AttentionProblem& problem, CudaTiming* timing = nullptr);

// The same for a problem validated already (no second validation; an empty one is refused).
Outcome run_attention_cuda(const ValidatedProblem& problem, CudaTiming* timing = nullptr);

}  // namespace gla
