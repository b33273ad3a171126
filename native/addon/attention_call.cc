#include "attention_call.h"

#include <string>

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

// Keeps every JS buffer of an async call alive (and un-collectable) until the work has settled:
// the caller may drop its own references the moment the Promise is created.
class AttentionWorker : public Napi::AsyncWorker {
 public:
  AttentionWorker(Napi::Env env, std::unique_ptr<AttentionCall> call, const Napi::CallbackInfo& info)
      : Napi::AsyncWorker(env, "global-local-attention"),
        call_(std::move(call)),
        deferred_(Napi::Promise::Deferred::New(env)) {
    for (size_t i = 0; i < 5; ++i) {
      if (info[i].IsObject()) held_[i] = Napi::Persistent(info[i].As<Napi::Object>());
    }
  }

  Napi::Promise promise() const { return deferred_.Promise(); }

 protected:
  void Execute() override {
    outcome_ = execute_call(*call_);
    if (outcome_.status != gla::Status::ok) SetError(describe_failure(outcome_));
  }
  void OnOK() override { deferred_.Resolve(Env().Undefined()); }
  void OnError(const Napi::Error& error) override { deferred_.Reject(error.Value()); }

 private:
  std::unique_ptr<AttentionCall> call_;
  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference held_[5];
  gla::Outcome outcome_;
};

}  // namespace

std::string describe_failure(const gla::Outcome& outcome) {
  return std::string(status_name(outcome.status)) + ": " + outcome.message;
}

namespace {

// The ISA name into a stack buffer: the names are short, and a std::string per call is a heap
// allocation on the tiny-call path only when a name is long (then it is invalid anyway).
bool read_isa(const Napi::Value& value, gla::Isa* isa, std::string& error) {
  if (!value.IsString()) {
    error = "expected an ISA name as the 7th argument";
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

bool prepare_call(const Napi::CallbackInfo& info, Device device, AttentionCall* call) {
  Napi::Env env = info.Env();
  call->device = device;
  read_problem(info, call->read);
  if (call->read.error.empty() && device == Device::cpu) {
    if (info.Length() < 7) {
      call->read.error = "expected an ISA name as the 7th argument";
    } else {
      read_isa(info[6], &call->isa, call->read.error);
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

Napi::Value attention_sync(const Napi::CallbackInfo& info, Device device) {
  Napi::Env env = info.Env();
  AttentionCall call;  // on the stack: a sync call allocates nothing in the steady state
  if (!prepare_call(info, device, &call)) return env.Undefined();
  gla::Outcome outcome = execute_call(call);
  if (outcome.status != gla::Status::ok) {
    Napi::Error::New(env, describe_failure(outcome)).ThrowAsJavaScriptException();
  }
  return env.Undefined();
}

Napi::Value attention_async(const Napi::CallbackInfo& info, Device device) {
  Napi::Env env = info.Env();
  auto call = std::make_unique<AttentionCall>();
  if (!prepare_call(info, device, call.get())) return env.Undefined();
  // Owned by libuv's work queue from Queue() on; it deletes itself after OnOK/OnError.
  auto* worker = new AttentionWorker(env, std::move(call), info);
  Napi::Promise promise = worker->promise();
  worker->Queue();
  return promise;
}

}  // namespace gla_addon
