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

bool prepare_call(const CallArgs& args, Device device, AttentionCall* call) {
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
  // Checked here too, on the JS thread, so that a bad problem throws synchronously even for the
  // async entry point instead of surfacing later as a rejected Promise from another thread.
  gla::Outcome checked = gla::validate_problem(call->read.problem);
  if (checked.status != gla::Status::ok) {
    Napi::RangeError::New(env, describe_failure(checked)).ThrowAsJavaScriptException();
    return false;
  }
  return true;
}

gla::Outcome execute_call(const AttentionCall& call) {
  if (call.device == Device::cuda) return gla::run_attention_cuda(call.read.problem);
  return gla::run_attention(call.read.problem, call.isa);
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

}  // namespace

napi_value attention_sync(napi_env env, napi_callback_info info, Device device) {
  CallArgs args;
  AttentionCall call;  // on the stack: a sync call allocates nothing in the steady state
  if (!get_args(env, info, &args) || !prepare_call(args, device, &call)) return nullptr;
  gla::Outcome outcome = execute_call(call);
  if (outcome.status != gla::Status::ok) {
    Napi::Error::New(env, describe_failure(outcome)).ThrowAsJavaScriptException();
  }
  return nullptr;  // undefined
}

napi_value attention_async(napi_env env, napi_callback_info info, Device device) {
  CallArgs args;
  if (!get_args(env, info, &args)) return nullptr;
  auto call = std::make_unique<AttentionCall>();
  if (!prepare_call(args, device, call.get())) return nullptr;
  return queue_attention(args, std::move(call));
}

}  // namespace gla_addon
