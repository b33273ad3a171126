// Turns the arguments of binding.d.ts (already validated by lib/options.ts) into a
// gla::AttentionProblem: the buffers, the numeric problem fields packed into one Float64Array in
// the fixed order below, and the three optional Int32Arrays. Nothing is copied but the small
// metadata arrays (kv lengths, global tokens), which the problem then points into.
//
// Why one Float64Array instead of a plain object: reading ~30 named properties through N-API was
// most of a tiny call's native time; one napi_get_typedarray_info reads them all.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "gla/problem.h"
#include "napi_include.h"

namespace gla_addon {

// The layout of the problem-fields Float64Array. Must match NATIVE_PROBLEM_FIELDS and
// NATIVE_PROBLEM_LAYOUT_VERSION in lib/backends/native.ts and NativeProblemFieldNames in
// binding.d.ts; bump the version whenever the order or meaning of any field changes.
constexpr double kProblemLayoutVersion = 1;

enum ProblemField : int {
  kFieldLayoutVersion = 0,
  kFieldBatch,
  kFieldHeads,
  kFieldKvHeads,
  kFieldSeqLen,
  kFieldKvSeqLen,
  kFieldHeadDim,
  kFieldQStrideBatch,
  kFieldQStrideHead,
  kFieldQStrideSeq,
  kFieldKStrideBatch,
  kFieldKStrideHead,
  kFieldKStrideSeq,
  kFieldVStrideBatch,
  kFieldVStrideHead,
  kFieldVStrideSeq,
  kFieldOutStrideBatch,
  kFieldOutStrideHead,
  kFieldOutStrideSeq,
  kFieldScale,
  kFieldCausal,       // 0 or 1
  kFieldWindowLeft,   // -1 = unbounded
  kFieldWindowRight,  // -1 = unbounded
  kFieldThreads,
  kProblemFieldCount  // 24
};

// Argument positions shared by every attention entry point:
// (q, k, v, out, lse|null, fields, kvLengths|null, globalOffsets|null, globalIndices|null[, isa]).
enum ArgIndex : size_t {
  kArgQ = 0,
  kArgK,
  kArgV,
  kArgOut,
  kArgLse,
  kArgFields,
  kArgKvLengths,
  kArgGlobalOffsets,
  kArgGlobalIndices,
  kArgIsa,  // CPU entry points only
  kMaxArgs
};

// The arguments of one call, fetched with a single napi_get_cb_info into a stack array
// (Napi::CallbackInfo heap-allocates beyond six arguments).
struct CallArgs {
  napi_env env = nullptr;
  size_t argc = 0;
  napi_value argv[kMaxArgs] = {};
};

struct ReadProblem {
  gla::AttentionProblem problem;
  std::vector<int32_t> kv_lengths;
  std::vector<int32_t> global_offsets;
  std::vector<int32_t> global_indices;
  std::string error;  // non-empty: the arguments were not what binding.d.ts promises
};

// Reads argv[kArgQ .. kArgGlobalIndices]. The returned problem's metadata pointers refer into the
// ReadProblem itself, so it must not be copied after this call (it is held by pointer).
void read_problem(const CallArgs& args, ReadProblem& read);

}  // namespace gla_addon
