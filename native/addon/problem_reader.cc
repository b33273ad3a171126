#include "problem_reader.h"

#include <cmath>

namespace gla_addon {
namespace {

// Every property name read_problem looks up, created once per env as V8 strings. Object::Get(const
// char*) would build and internalise a fresh string for each of the ~30 lookups of every call, a
// quarter of a tiny call's time.
#define GLA_PROBLEM_KEYS(X)                                                                        \
  X(batch) X(heads) X(kvHeads) X(seqLen) X(kvSeqLen) X(headDim) X(qStrides) X(kStrides) X(vStrides) \
  X(outStrides) X(head) X(seq) X(scale) X(causal) X(windowLeft) X(windowRight) X(kvLengths)          \
  X(globalOffsets) X(globalIndices) X(threads)

enum class Key : int {
#define GLA_KEY_ENUM(name) name,
  GLA_PROBLEM_KEYS(GLA_KEY_ENUM)
#undef GLA_KEY_ENUM
  count
};

const char* const kKeyNames[] = {
#define GLA_KEY_NAME(name) #name,
    GLA_PROBLEM_KEYS(GLA_KEY_NAME)
#undef GLA_KEY_NAME
};

// N-API (version 8) can only reference objects, so the strings live in an array held by one
// reference; read_problem fetches them by index (a fast element load, no string hashing).
struct PropertyKeys {
  Napi::ObjectReference array;
};

// A property key as a napi_value, with its name for error messages.
struct KeyRef {
  Napi::Value value;
  const char* name;
};

// The keys of one call, fetched once at its start.
class KeyTable {
 public:
  explicit KeyTable(const Napi::Env& env) {
    PropertyKeys* keys = env.GetInstanceData<PropertyKeys>();
    Napi::Object array = keys != nullptr ? keys->array.Value() : Napi::Object();
    for (int i = 0; i < static_cast<int>(Key::count); ++i) {
      values_[i] = keys != nullptr ? array.Get(static_cast<uint32_t>(i)) : Napi::String::New(env, kKeyNames[i]);
    }
  }
  KeyRef operator[](Key k) const { return KeyRef{values_[static_cast<int>(k)], kKeyNames[static_cast<int>(k)]}; }

 private:
  Napi::Value values_[static_cast<int>(Key::count)];
};

Napi::Value get(const Napi::Object& object, const KeyRef& k) { return object.Get(k.value); }

bool read_integer(const Napi::Object& object, const KeyRef& key, int64_t& value, std::string& error) {
  Napi::Value field = get(object, key);
  if (!field.IsNumber()) {
    error = std::string("problem.") + key.name + " must be a number";
    return false;
  }
  const double number = field.As<Napi::Number>().DoubleValue();
  // 2^53 bounds every exactly representable integer; beyond it the value was not validated.
  if (!std::isfinite(number) || std::trunc(number) != number || std::fabs(number) > 9007199254740991.0) {
    error = std::string("problem.") + key.name + " must be a safe integer";
    return false;
  }
  value = static_cast<int64_t>(number);
  return true;
}

bool read_strides(const Napi::Object& object, const KeyRef& key, const KeyTable& keys, gla::Strides& strides,
                  std::string& error) {
  Napi::Value field = get(object, key);
  if (!field.IsObject()) {
    error = std::string("problem.") + key.name + " must be an object";
    return false;
  }
  Napi::Object s = field.As<Napi::Object>();
  return read_integer(s, keys[Key::batch], strides.batch, error) && read_integer(s, keys[Key::head], strides.head, error) &&
         read_integer(s, keys[Key::seq], strides.seq, error);
}

// Returns false on a type error; an absent (null/undefined) array leaves `values` empty and `present` false.
bool read_int32_array(const Napi::Object& object, const KeyRef& key, std::vector<int32_t>& values, bool& present,
                      std::string& error) {
  Napi::Value field = get(object, key);
  present = false;
  if (field.IsNull() || field.IsUndefined()) return true;
  if (!field.IsTypedArray() || field.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    error = std::string("problem.") + key.name + " must be an Int32Array or null";
    return false;
  }
  Napi::Int32Array array = field.As<Napi::Int32Array>();
  values.assign(array.Data(), array.Data() + array.ElementLength());
  present = true;
  return true;
}

bool read_float_buffer(const Napi::Value& value, const char* name, bool optional, float*& data, int64_t& elements,
                       std::string& error) {
  data = nullptr;
  elements = 0;
  if (optional && (value.IsNull() || value.IsUndefined())) return true;
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    error = std::string(name) + " must be a Float32Array";
    return false;
  }
  Napi::Float32Array array = value.As<Napi::Float32Array>();
  // N-API's data pointer already includes the view's byteOffset.
  data = array.Data();
  elements = static_cast<int64_t>(array.ElementLength());
  return true;
}

}  // namespace

void init_property_keys(Napi::Env env) {
  Napi::Array array = Napi::Array::New(env, static_cast<size_t>(Key::count));
  for (int i = 0; i < static_cast<int>(Key::count); ++i) array.Set(static_cast<uint32_t>(i), kKeyNames[i]);
  auto* keys = new PropertyKeys();
  keys->array = Napi::Persistent(static_cast<Napi::Object>(array));
  // Deleted by N-API when the env is torn down (main thread or worker).
  env.SetInstanceData(keys);
}

void read_problem(const Napi::CallbackInfo& info, ReadProblem& read) {
  std::string& error = read.error;
  gla::AttentionProblem& p = read.problem;
  if (info.Length() < 6 || !info[5].IsObject()) {
    error = "expected (q, k, v, out, lse, problem)";
    return;
  }
  float* q = nullptr;
  float* k = nullptr;
  float* v = nullptr;
  if (!read_float_buffer(info[0], "q", false, q, p.q_elements, error) ||
      !read_float_buffer(info[1], "k", false, k, p.k_elements, error) ||
      !read_float_buffer(info[2], "v", false, v, p.v_elements, error) ||
      !read_float_buffer(info[3], "out", false, p.out, p.out_elements, error) ||
      !read_float_buffer(info[4], "lse", true, p.lse, p.lse_elements, error)) {
    return;
  }
  p.q = q;
  p.k = k;
  p.v = v;

  Napi::Object o = info[5].As<Napi::Object>();
  const KeyTable keys(info.Env());
  int64_t threads = 0;
  int64_t window_left = 0;
  int64_t window_right = 0;
  if (!read_integer(o, keys[Key::batch], p.batch, error) || !read_integer(o, keys[Key::heads], p.heads, error) ||
      !read_integer(o, keys[Key::kvHeads], p.kv_heads, error) || !read_integer(o, keys[Key::seqLen], p.seq_len, error) ||
      !read_integer(o, keys[Key::kvSeqLen], p.kv_seq_len, error) || !read_integer(o, keys[Key::headDim], p.head_dim, error) ||
      !read_strides(o, keys[Key::qStrides], keys, p.q_strides, error) || !read_strides(o, keys[Key::kStrides], keys, p.k_strides, error) ||
      !read_strides(o, keys[Key::vStrides], keys, p.v_strides, error) || !read_strides(o, keys[Key::outStrides], keys, p.out_strides, error) ||
      !read_integer(o, keys[Key::windowLeft], window_left, error) || !read_integer(o, keys[Key::windowRight], window_right, error) ||
      !read_integer(o, keys[Key::threads], threads, error)) {
    return;
  }
  p.window_left = window_left;
  p.window_right = window_right;
  if (threads < 1 || threads > 4096) {
    error = "problem.threads must be in [1, 4096]";
    return;
  }
  p.threads = static_cast<int32_t>(threads);

  Napi::Value scale = get(o, keys[Key::scale]);
  Napi::Value causal = get(o, keys[Key::causal]);
  if (!scale.IsNumber() || !causal.IsBoolean()) {
    error = "problem.scale must be a number and problem.causal a boolean";
    return;
  }
  p.scale = scale.As<Napi::Number>().FloatValue();
  p.causal = causal.As<Napi::Boolean>().Value();

  bool has_lengths = false;
  bool has_offsets = false;
  bool has_indices = false;
  if (!read_int32_array(o, keys[Key::kvLengths], read.kv_lengths, has_lengths, error) ||
      !read_int32_array(o, keys[Key::globalOffsets], read.global_offsets, has_offsets, error) ||
      !read_int32_array(o, keys[Key::globalIndices], read.global_indices, has_indices, error)) {
    return;
  }
  if (has_offsets != has_indices) {
    error = "problem.globalOffsets and problem.globalIndices must both be set or both be null";
    return;
  }
  // Lengths are checked against batch by gla::validate_problem; here only what it cannot see.
  if (has_lengths && static_cast<int64_t>(read.kv_lengths.size()) != p.batch) {
    error = "problem.kvLengths must have batch entries";
    return;
  }
  if (has_offsets && static_cast<int64_t>(read.global_offsets.size()) != p.batch + 1) {
    error = "problem.globalOffsets must have batch + 1 entries";
    return;
  }
  if (has_offsets && (read.global_offsets.front() != 0 ||
                      read.global_offsets.back() != static_cast<int64_t>(read.global_indices.size()))) {
    error = "problem.globalOffsets must start at 0 and end at globalIndices.length";
    return;
  }
  p.kv_lengths = has_lengths ? read.kv_lengths.data() : nullptr;
  // An empty Int32Array has no data pointer worth trusting; an empty global list is no global list.
  p.global_offsets = has_offsets ? read.global_offsets.data() : nullptr;
  p.global_indices = has_indices ? read.global_indices.data() : nullptr;
  if (has_offsets && read.global_indices.empty()) {
    p.global_offsets = nullptr;
    p.global_indices = nullptr;
  }
}

}  // namespace gla_addon
