#include "problem_reader.h"

#include <cmath>

namespace gla_addon {
namespace {

bool read_integer(const Napi::Object& object, const char* key, int64_t& value, std::string& error) {
  Napi::Value field = object.Get(key);
  if (!field.IsNumber()) {
    error = std::string("problem.") + key + " must be a number";
    return false;
  }
  const double number = field.As<Napi::Number>().DoubleValue();
  // 2^53 bounds every exactly representable integer; beyond it the value was not validated.
  if (!std::isfinite(number) || std::trunc(number) != number || std::fabs(number) > 9007199254740991.0) {
    error = std::string("problem.") + key + " must be a safe integer";
    return false;
  }
  value = static_cast<int64_t>(number);
  return true;
}

bool read_strides(const Napi::Object& object, const char* key, gla::Strides& strides, std::string& error) {
  Napi::Value field = object.Get(key);
  if (!field.IsObject()) {
    error = std::string("problem.") + key + " must be an object";
    return false;
  }
  Napi::Object s = field.As<Napi::Object>();
  return read_integer(s, "batch", strides.batch, error) && read_integer(s, "head", strides.head, error) &&
         read_integer(s, "seq", strides.seq, error);
}

// Returns false on a type error; an absent (null/undefined) array leaves `values` empty and `present` false.
bool read_int32_array(const Napi::Object& object, const char* key, std::vector<int32_t>& values, bool& present,
                      std::string& error) {
  Napi::Value field = object.Get(key);
  present = false;
  if (field.IsNull() || field.IsUndefined()) return true;
  if (!field.IsTypedArray() || field.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    error = std::string("problem.") + key + " must be an Int32Array or null";
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
  int64_t threads = 0;
  int64_t window_left = 0;
  int64_t window_right = 0;
  if (!read_integer(o, "batch", p.batch, error) || !read_integer(o, "heads", p.heads, error) ||
      !read_integer(o, "kvHeads", p.kv_heads, error) || !read_integer(o, "seqLen", p.seq_len, error) ||
      !read_integer(o, "kvSeqLen", p.kv_seq_len, error) || !read_integer(o, "headDim", p.head_dim, error) ||
      !read_strides(o, "qStrides", p.q_strides, error) || !read_strides(o, "kStrides", p.k_strides, error) ||
      !read_strides(o, "vStrides", p.v_strides, error) || !read_strides(o, "outStrides", p.out_strides, error) ||
      !read_integer(o, "windowLeft", window_left, error) || !read_integer(o, "windowRight", window_right, error) ||
      !read_integer(o, "threads", threads, error)) {
    return;
  }
  p.window_left = window_left;
  p.window_right = window_right;
  if (threads < 1 || threads > 4096) {
    error = "problem.threads must be in [1, 4096]";
    return;
  }
  p.threads = static_cast<int32_t>(threads);

  Napi::Value scale = o.Get("scale");
  Napi::Value causal = o.Get("causal");
  if (!scale.IsNumber() || !causal.IsBoolean()) {
    error = "problem.scale must be a number and problem.causal a boolean";
    return;
  }
  p.scale = scale.As<Napi::Number>().FloatValue();
  p.causal = causal.As<Napi::Boolean>().Value();

  bool has_lengths = false;
  bool has_offsets = false;
  bool has_indices = false;
  if (!read_int32_array(o, "kvLengths", read.kv_lengths, has_lengths, error) ||
      !read_int32_array(o, "globalOffsets", read.global_offsets, has_offsets, error) ||
      !read_int32_array(o, "globalIndices", read.global_indices, has_indices, error)) {
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
