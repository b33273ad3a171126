// One attention call as the addon runs it, sync or async, on a CPU ISA or on the CUDA plugin.
#pragma once

#include <memory>

#include "gla/attention.h"
#include "problem_reader.h"

namespace gla_addon {

enum class Device { cpu, cuda };

struct AttentionCall {
  ReadProblem read;         // the arguments as read; async calls then point it at staged memory
  gla::ValidatedProblem validated;  // read.problem, validated once (seal_call)
  Device device = Device::cpu;
  gla::Isa isa = gla::Isa::scalar;
};

// Reads the arguments (q, k, v, out, lse, fields, kvLengths, globalOffsets, globalIndices[, isa])
// into *call (which must not move afterwards: its problem points into it). On failure throws a JS
// TypeError and returns false.
bool read_call(const CallArgs& args, Device device, AttentionCall* call);

// Validates call->read.problem into call->validated: the call's only validation, after the async
// path has replaced the caller's buffers with its own. On failure throws a JS RangeError (on the
// JS thread, so that a bad problem throws synchronously even for the async entry point) and
// returns false.
bool seal_call(AttentionCall* call, napi_env env);

// Runs the validated computation; safe off the JS thread (touches no N-API value).
gla::Outcome execute_call(const AttentionCall& call);

// "invalid_argument: <message>", the form lib/backends/native.ts parses.
std::string describe_failure(const gla::Outcome& outcome);

// The entry points, as raw N-API callbacks: one napi_get_cb_info into a stack array per call.
napi_value attention_sync(napi_env env, napi_callback_info info, Device device);
napi_value attention_async(napi_env env, napi_callback_info info, Device device);

}  // namespace gla_addon
