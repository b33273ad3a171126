#include "attention_call.h"

#include <string>

#include "async_executor.h"
#include "gla/cuda_backend.h"

namespace gla_addon {
namespace {

const char* status_name(gla::Status status) {
  switch (status) {
    case gla::Status::ok: return "ok";
    case gla::Status::invalid_argument: return "invalid_argument";
    case gla::Status::out_of_memory: return "out_of_memory";
    case gla::Status::unavailable: return "unavailable";
    case gla::Status::internal_error: return "internal_error";
  }
  return "internal_error";
}

}  // namespace

std::string describe_failure(const gla::Outcome& outcome) {
  return std::string(status_name(outcome.status)) + ": " + outcome.message;
}

namespace {

// The ISA name into a stack buffer: the names are short, and a std::string per call is a heap
// allocation on the tiny-call path only when a name is long (then it is invalid anyway).
bool read_isa(const Napi::Value& value, gla::Isa* isa, std::string& error) {
  if (!value.IsString()) {
    error = "expected an ISA name as the 10th argument";
    return false;
  }
  char name[16];
  size_t length = 0;
  if (napi_get_value_string_utf8(value.Env(), value, name, sizeof name, &length) != napi_ok ||
      length + 1 >= sizeof name || !gla::isa_from_name(name, isa)) {
    error = "unknown ISA '" + value.As<Napi::String>().Utf8Value() + "'";
    return false;
  }
  return true;
}

}  // namespace

bool read_call(const CallArgs& args, Device device, AttentionCall* call) {
  Napi::Env env(args.env);
  call->device = device;
  read_problem(args, call->read);
  if (call->read.error.empty() && device == Device::cpu) {
    if (args.argc <= kArgIsa) {
      call->read.error = "expected an ISA name as the 10th argument";
    } else {
      read_isa(Napi::Value(args.env, args.argv[kArgIsa]), &call->isa, call->read.error);
    }
  }
  if (!call->read.error.empty()) {
    Napi::TypeError::New(env, "invalid_argument: " + call->read.error).ThrowAsJavaScriptException();
    return false;
  }
  return true;
}

bool seal_call(AttentionCall* call, napi_env env) {
  const gla::Outcome checked = gla::validate_problem(call->read.problem, &call->validated);
  if (checked.status != gla::Status::ok) {
    Napi::RangeError::New(Napi::Env(env), describe_failure(checked)).ThrowAsJavaScriptException();
    return false;
  }
  return true;
}

gla::Outcome execute_call(const AttentionCall& call) {
  if (call.device == Device::cuda) return gla::run_attention_cuda(call.validated);
  return gla::run_attention(call.validated, call.isa);
}

namespace {

// All arguments in one napi_get_cb_info; false (with a pending exception) only if N-API fails.
bool get_args(napi_env env, napi_callback_info info, CallArgs* args) {
  args->env = env;
  args->argc = kMaxArgs;
  if (napi_get_cb_info(env, info, &args->argc, args->argv, nullptr, nullptr) != napi_ok) {
    Napi::Error::New(env, "internal_error: could not read the call's arguments").ThrowAsJavaScriptException();
    return false;
  }
  // argc is the caller's count, which may exceed the array; extra arguments are ignored.
  if (args->argc > kMaxArgs) args->argc = kMaxArgs;
  return true;
}

// A null `out` asks the addon for the output array: a new Float32Array as long as q (the output is
// shaped like q), put in args->argv[kArgOut]. Created here, it has been seen by no JavaScript, so an
// async call may write it in place. *allocated says whether it was; false (with a pending
// exception) only if N-API fails. When q is not a Float32Array nothing is created, and
// read_problem reports q.
bool provide_out(CallArgs* args, bool* allocated) {
  *allocated = false;
  napi_env env = args->env;
  napi_valuetype type = napi_undefined;
  if (args->argc <= kArgOut || napi_typeof(env, args->argv[kArgOut], &type) != napi_ok ||
      (type != napi_null && type != napi_undefined)) {
    return true;
  }
  napi_typedarray_type q_type;
  size_t length = 0;
  bool is_typed_array = false;
  if (napi_is_typedarray(env, args->argv[kArgQ], &is_typed_array) != napi_ok || !is_typed_array ||
      napi_get_typedarray_info(env, args->argv[kArgQ], &q_type, &length, nullptr, nullptr, nullptr) != napi_ok ||
      (q_type != napi_float32_array && q_type != napi_uint16_array)) {
    return true;
  }
  // The output's type is the problem's out_dtype (a Uint16Array of bits for the half types).
  napi_typedarray_type fields_type;
  size_t field_count = 0;
  void* fields = nullptr;
  if (napi_get_typedarray_info(env, args->argv[kArgFields], &fields_type, &field_count, &fields, nullptr, nullptr) !=
          napi_ok ||
      fields_type != napi_float64_array || field_count != static_cast<size_t>(kProblemFieldCount) || fields == nullptr) {
    return true;  // read_problem says what is wrong with the fields
  }
  const double out_dtype = static_cast<const double*>(fields)[kOutDtypeField];
  const bool half_out = out_dtype == 1 || out_dtype == 2;
  if (!half_out && out_dtype != 0) return true;
  const napi_typedarray_type out_type = half_out ? napi_uint16_array : napi_float32_array;
  const size_t out_bytes = half_out ? 2 : sizeof(float);
  napi_value buffer = nullptr;
  napi_value out = nullptr;
  if (napi_create_arraybuffer(env, length * out_bytes, nullptr, &buffer) != napi_ok ||
      napi_create_typedarray(env, out_type, length, buffer, 0, &out) != napi_ok) {
    // A pending RangeError from V8 (allocation failed) is the caller's answer.
    bool pending = false;
    if (napi_is_exception_pending(env, &pending) != napi_ok || !pending) {
      Napi::RangeError::New(Napi::Env(env), "out_of_memory: could not allocate the output array").ThrowAsJavaScriptException();
    }
    return false;
  }
  args->argv[kArgOut] = out;
  *allocated = true;
  return true;
}

}  // namespace

napi_value attention_sync(napi_env env, napi_callback_info info, Device device) {
  CallArgs args;
  AttentionCall call;  // on the stack: a sync call allocates nothing in the steady state
  bool out_allocated = false;
  if (!get_args(env, info, &args) || !provide_out(&args, &out_allocated) || !read_call(args, device, &call) ||
      !seal_call(&call, env)) {
    return nullptr;
  }
  gla::Outcome outcome = execute_call(call);
  if (outcome.status != gla::Status::ok) {
    Napi::Error::New(env, describe_failure(outcome)).ThrowAsJavaScriptException();
    return nullptr;
  }
  return args.argv[kArgOut];
}

napi_value attention_async(napi_env env, napi_callback_info info, Device device) {
  CallArgs args;
  bool out_allocated = false;
  if (!get_args(env, info, &args) || !provide_out(&args, &out_allocated)) return nullptr;
  auto call = std::make_unique<AttentionCall>();
  if (!read_call(args, device, call.get())) return nullptr;
  // queue_attention stages the buffers, then seals (validates) the call.
  return queue_attention(args, std::move(call), out_allocated);
}

}  // namespace gla_addon
