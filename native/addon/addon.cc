// The module's exports (binding.d.ts). Holds no per-process state of its own, so it loads in any
// number of worker_threads at once.
#include "attention_call.h"
#include "problem_reader.h"
#include "gla/cuda_backend.h"

namespace gla_addon {
namespace {

Napi::Value isas(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::vector<gla::Isa> supported = gla::supported_isas();
  Napi::Array names = Napi::Array::New(env, supported.size());
  for (size_t i = 0; i < supported.size(); ++i) names.Set(static_cast<uint32_t>(i), gla::isa_name(supported[i]));
  return names;
}

// The ISAs whose kernels have bfloat16 products on this CPU (precision 'bfloat16' uses them).
Napi::Value bfloat16_isas(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array names = Napi::Array::New(env);
  uint32_t n = 0;
  for (gla::Isa isa : gla::supported_isas()) {
    if (gla::isa_has_bf16_products(isa)) names.Set(n++, gla::isa_name(isa));
  }
  return names;
}

// The problem-fields layout this addon reads: lib/backends/native.ts checks it at load.
Napi::Value problem_fields(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array names = Napi::Array::New(env, kProblemFieldCount);
  for (int i = 0; i < kProblemFieldCount; ++i) names.Set(static_cast<uint32_t>(i), kProblemFieldNames[i]);
  Napi::Object layout = Napi::Object::New(env);
  layout.Set("version", Napi::Number::New(env, kProblemLayoutVersion));
  layout.Set("names", names);
  return layout;
}

Napi::Value hardware_threads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), gla::hardware_threads());
}

Napi::Value cuda_unavailable_reason(const Napi::CallbackInfo& info) {
  const char* reason = gla::cuda_unavailable_reason();
  if (reason == nullptr) return info.Env().Null();
  return Napi::String::New(info.Env(), reason);
}

// Raw N-API callbacks: Napi::CallbackInfo would call napi_get_cb_info twice and heap-allocate for
// the ten arguments of a call.
napi_value cpu_sync(napi_env env, napi_callback_info info) { return attention_sync(env, info, Device::cpu); }
napi_value cpu_async(napi_env env, napi_callback_info info) { return attention_async(env, info, Device::cpu); }
napi_value cuda_sync(napi_env env, napi_callback_info info) { return attention_sync(env, info, Device::cuda); }
napi_value cuda_async(napi_env env, napi_callback_info info) { return attention_async(env, info, Device::cuda); }

Napi::Function raw_function(Napi::Env env, napi_callback callback, const char* name) {
  napi_value function = nullptr;
  NAPI_THROW_IF_FAILED(env, napi_create_function(env, name, NAPI_AUTO_LENGTH, callback, nullptr, &function),
                       Napi::Function());
  return Napi::Function(env, function);
}

}  // namespace
}  // namespace gla_addon

// At namespace scope: NODE_API_MODULE pastes the name into an identifier.
static Napi::Object init_addon(Napi::Env env, Napi::Object exports) {
  using namespace gla_addon;
  exports.Set("isas", Napi::Function::New(env, isas, "isas"));
  exports.Set("bfloat16Isas", Napi::Function::New(env, bfloat16_isas, "bfloat16Isas"));
  exports.Set("problemFields", Napi::Function::New(env, problem_fields, "problemFields"));
  exports.Set("hardwareThreads", Napi::Function::New(env, hardware_threads, "hardwareThreads"));
  exports.Set("attentionSync", raw_function(env, cpu_sync, "attentionSync"));
  exports.Set("attentionAsync", raw_function(env, cpu_async, "attentionAsync"));
  exports.Set("cudaUnavailableReason", Napi::Function::New(env, cuda_unavailable_reason, "cudaUnavailableReason"));
  exports.Set("cudaAttentionSync", raw_function(env, cuda_sync, "cudaAttentionSync"));
  exports.Set("cudaAttentionAsync", raw_function(env, cuda_async, "cudaAttentionAsync"));
  return exports;
}

NODE_API_MODULE(global_local_attention, init_addon)
