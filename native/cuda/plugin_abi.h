// The C ABI between the loader (native/cuda/loader.cpp, linked into every build) and the CUDA plugin
// (libgla_cuda.so / gla_cuda.dll). Both sides are compiled from this header; the loader refuses a
// plugin whose version or AttentionProblem size differs, so a stale plugin next to a new addon gives
// a reason string instead of a crash.
//
// Version history:
//   1  gla_cuda_abi_version, gla_cuda_problem_size, gla_cuda_probe, gla_cuda_device_name,
//      gla_cuda_attention (fp32 only).
//   2  gla::AttentionProblem gained dtype, out_dtype and precision (void pointers). The plugin still
//      computes float32 only: the loader widens half-precision inputs and narrows the output around
//      it, and the plugin refuses any other dtype.
//   3  gla::AttentionProblem gained q_lengths, softcap, alibi_slopes and sink_logits (serving
//      options); the per-sequence alignment p = i + kv_length(b) - q_length(b) replaced
//      i + kv_seq_len - seq_len.
// TODO(precision): a 'tf32' / 'bf16' tensor-core mode (issue 6: opt-in, each with its own documented
// and tested tolerance) needs a precision field; add it as an argument or a struct field and bump
// the version. Today every matrix product is plain fp32 FFMA and the softmax statistics are fp32.
#pragma once

#include <cstddef>
#include <cstdint>

#include "gla/cuda_backend.h"
#include "gla/problem.h"

#define GLA_CUDA_ABI_VERSION 3

#if defined(_WIN32)
#define GLA_CUDA_EXPORT __declspec(dllexport)
#else
#define GLA_CUDA_EXPORT __attribute__((visibility("default")))
#endif

extern "C" {

// Always GLA_CUDA_ABI_VERSION of the plugin's build.
GLA_CUDA_EXPORT int32_t gla_cuda_abi_version(void);

// sizeof(gla::AttentionProblem) in the plugin's build.
GLA_CUDA_EXPORT int64_t gla_cuda_problem_size(void);

// 0 when the plugin can compute: a driver is present, a device is visible, and this plugin has code
// for it. Otherwise a gla::Status value (unavailable) and the reason in msg. Probes once per
// process (thread-safe); later calls repeat the answer.
GLA_CUDA_EXPORT int32_t gla_cuda_probe(char* msg, size_t cap);

// The device the plugin computes on, e.g. "NVIDIA H200 (sm_90, 132 SMs, 139.8 GiB)"; returns the
// probe's status and writes its reason instead when unusable.
GLA_CUDA_EXPORT int32_t gla_cuda_device_name(char* buf, size_t cap);

// One attention call on host buffers, synchronous for the caller: copy in, compute, copy out (and
// lse). Returns a gla::Status value; on failure msg holds why. timing may be null. Safe to call
// from several threads at once (each call takes its own stream, staging and device buffers from a
// pool). The problem is expected to have passed gla::validate_problem.
GLA_CUDA_EXPORT int32_t gla_cuda_attention(const gla::AttentionProblem* problem, gla::CudaTiming* timing, char* msg,
                                           size_t cap);

}  // extern "C"

typedef int32_t (*gla_cuda_abi_version_fn)(void);
typedef int64_t (*gla_cuda_problem_size_fn)(void);
typedef int32_t (*gla_cuda_probe_fn)(char*, size_t);
typedef int32_t (*gla_cuda_device_name_fn)(char*, size_t);
typedef int32_t (*gla_cuda_attention_fn)(const gla::AttentionProblem*, gla::CudaTiming*, char*, size_t);
