#include "problem_reader.h"

#include <cmath>
#include <cstdio>
#include <type_traits>

namespace gla_addon {

#define GLA_FIELD_NAME(member, name, kind) name,
const char* const kProblemFieldNames[kProblemFieldCount] = {"layoutVersion", GLA_PROBLEM_FIELDS(GLA_FIELD_NAME)};
#undef GLA_FIELD_NAME

namespace {

const char* const kArgNames[kMaxArgs] = {
    "q", "k", "v", "out", "lse", "problem fields", "problem.kvLengths", "problem.globalOffsets",
    "problem.globalIndices", "problem.qLengths", "problem.alibiSlopes", "problem.sinkLogits", "problem.blockTable", "problem.qStarts", "problem.kvStarts", "isa",
};

const char* typed_array_name(napi_typedarray_type type) {
  switch (type) {
    case napi_float32_array: return "a Float32Array";
    case napi_float64_array: return "a Float64Array";
    case napi_uint16_array: return "a Uint16Array";
    case napi_int32_array: return "an Int32Array";
    default: return "a typed array";
  }
}

// One napi_get_typedarray_info per present array: its type, length and data (which N-API has already
// advanced by the view's byteOffset). An optional argument that is null or undefined (or absent)
// gives data nullptr, length 0. Anything else, or a typed array of another type, is an error.
bool read_typed_array(const CallArgs& args, size_t index, napi_typedarray_type want, bool optional, void*& data,
                      size_t& length, bool& present, std::string& error) {
  data = nullptr;
  length = 0;
  present = false;
  const napi_value value = index < args.argc ? args.argv[index] : nullptr;
  if (optional) {
    // The common case for an optional argument is null, which one napi_typeof settles.
    napi_valuetype type = napi_undefined;
    if (value == nullptr || (napi_typeof(args.env, value, &type) == napi_ok && (type == napi_null || type == napi_undefined))) {
      return true;
    }
  }
  napi_typedarray_type type;
  if (value == nullptr ||
      napi_get_typedarray_info(args.env, value, &type, &length, &data, nullptr, nullptr) != napi_ok || type != want) {
    error = std::string(kArgNames[index]) + " must be " + typed_array_name(want) + (optional ? " or null" : "");
    data = nullptr;
    length = 0;
    return false;
  }
  present = true;
  return true;
}

// A tensor of `dtype`: a Float32Array for float32, a Uint16Array of bit patterns for the half types
// (lib passes a Float16Array as a Uint16Array view of the same memory).
template <typename Pointer>
bool read_tensor(const CallArgs& args, size_t index, gla::DType dtype, bool optional, Pointer& data,
                 int64_t& elements, std::string& error) {
  void* raw = nullptr;
  size_t length = 0;
  bool present = false;
  const napi_typedarray_type want = dtype == gla::DType::float32 ? napi_float32_array : napi_uint16_array;
  if (!read_typed_array(args, index, want, optional, raw, length, present, error)) return false;
  data = static_cast<Pointer>(raw);
  elements = static_cast<int64_t>(length);
  return true;
}

// An optional array of T (Int32Array or Float32Array), copied (the problem outlives the call for the async entry points, and JS
// may change the array meanwhile). Absent leaves `values` empty and `present` false.
template <typename T>
bool read_metadata_array(const CallArgs& args, size_t index, std::vector<T>& values, bool& present,
                         std::string& error) {
  void* raw = nullptr;
  size_t length = 0;
  static_assert(std::is_same<T, int32_t>::value || std::is_same<T, float>::value, "Int32Array or Float32Array");
  const napi_typedarray_type want = std::is_same<T, float>::value ? napi_float32_array : napi_int32_array;
  if (!read_typed_array(args, index, want, true, raw, length, present, error)) return false;
  if (!present) return true;
  // A zero-length typed array may have a null data pointer: nothing to copy then.
  const T* begin = static_cast<const T*>(raw);
  if (length > 0) {
    values.assign(begin, begin + length);
  } else {
    values.clear();
  }
  present = true;
  return true;
}

// The readers of GLA_PROBLEM_FIELDS' kinds: false (with the reason in `error`) when the double is
// not what the kind promises.
bool field_error(const char* name, const char* expected, std::string& error) {
  error = std::string("problem.") + name + " must be " + expected;
  return false;
}

bool read_integer(double number, const char* name, int64_t* value, std::string& error) {
  if (!std::isfinite(number) || std::trunc(number) != number || std::fabs(number) > 9007199254740991.0) {
    return field_error(name, "a safe integer", error);
  }
  *value = static_cast<int64_t>(number);
  return true;
}

bool read_real(double number, const char* /*name*/, float* value, std::string& /*error*/) {
  *value = static_cast<float>(number);
  return true;
}

bool read_flag(double number, const char* name, bool* value, std::string& error) {
  if (number != 0 && number != 1) return field_error(name, "0 or 1", error);
  *value = number == 1;
  return true;
}

bool read_count(double number, const char* name, int32_t* value, std::string& error) {
  if (!(number >= 1 && number <= 4096) || std::trunc(number) != number) return field_error(name, "in [1, 4096]", error);
  *value = static_cast<int32_t>(number);
  return true;
}

bool read_dtype(double number, const char* name, gla::DType* value, std::string& error) {
  if (number != 0 && number != 1 && number != 2) return field_error(name, "0 (float32), 1 (float16) or 2 (bfloat16)", error);
  *value = static_cast<gla::DType>(static_cast<int32_t>(number));
  return true;
}

bool read_precision(double number, const char* name, gla::Precision* value, std::string& error) {
  if (number != 0 && number != 1) return field_error(name, "0 (float32) or 1 (bfloat16)", error);
  *value = static_cast<gla::Precision>(static_cast<int32_t>(number));
  return true;
}

}  // namespace

void read_problem(const CallArgs& args, ReadProblem& read) {
  std::string& error = read.error;
  gla::AttentionProblem& p = read.problem;
  if (args.argc < kArgKvStarts + 1) {
    error = "expected (q, k, v, out, lse, fields, kvLengths, globalOffsets, globalIndices, qLengths, alibiSlopes, sinkLogits, blockTable, qStarts, kvStarts)";
    return;
  }

  void* raw = nullptr;
  size_t count = 0;
  bool present = false;
  if (!read_typed_array(args, kArgFields, napi_float64_array, false, raw, count, present, error)) return;
  if (count < 1 || raw == nullptr) {
    error = "problem fields must hold " + std::to_string(kProblemFieldCount) + " entries, got " + std::to_string(count);
    return;
  }
  const double* fields = static_cast<const double*>(raw);
  // The version first, so that a lib and an addon from different builds say so instead of
  // misreading each other's fields.
  if (fields[0] != kProblemLayoutVersion) {
    char version[32];
    std::snprintf(version, sizeof version, "%g", fields[0]);
    error = std::string("problem fields are in layout version ") + version + ", this addon reads version " + std::to_string(static_cast<int>(kProblemLayoutVersion)) +
            " (lib and native addon are from different builds; rebuild with node scripts/install.js)";
    return;
  }
  if (count != static_cast<size_t>(kProblemFieldCount)) {
    error = "problem fields must hold " + std::to_string(kProblemFieldCount) + " entries (layout version " +
            std::to_string(static_cast<int>(kProblemLayoutVersion)) + "), got " + std::to_string(count);
    return;
  }

  int index = 1;
#define GLA_READ_FIELD(member, name, kind) \
  if (!read_##kind(fields[index++], name, &p.member, error)) return;
  GLA_PROBLEM_FIELDS(GLA_READ_FIELD)
#undef GLA_READ_FIELD

  // The buffers after the fields: their array types follow dtype and out_dtype.
  if (!read_tensor(args, kArgQ, p.dtype, false, p.q, p.q_elements, error) ||
      !read_tensor(args, kArgK, p.dtype, false, p.k, p.k_elements, error) ||
      !read_tensor(args, kArgV, p.dtype, false, p.v, p.v_elements, error) ||
      !read_tensor(args, kArgOut, p.out_dtype, false, p.out, p.out_elements, error) ||
      !read_tensor(args, kArgLse, gla::DType::float32, true, p.lse, p.lse_elements, error)) {
    return;
  }

  bool has_lengths = false;
  bool has_offsets = false;
  bool has_indices = false;
  bool has_q_lengths = false;
  bool has_slopes = false;
  bool has_sinks = false;
  bool has_table = false;
  bool has_q_starts = false;
  bool has_kv_starts = false;
  if (!read_metadata_array(args, kArgKvLengths, read.kv_lengths, has_lengths, error) ||
      !read_metadata_array(args, kArgGlobalOffsets, read.global_offsets, has_offsets, error) ||
      !read_metadata_array(args, kArgGlobalIndices, read.global_indices, has_indices, error) ||
      !read_metadata_array(args, kArgQLengths, read.q_lengths, has_q_lengths, error) ||
      !read_metadata_array(args, kArgAlibiSlopes, read.alibi_slopes, has_slopes, error) ||
      !read_metadata_array(args, kArgSinkLogits, read.sink_logits, has_sinks, error) ||
      !read_metadata_array(args, kArgBlockTable, read.block_table, has_table, error) ||
      !read_metadata_array(args, kArgQStarts, read.q_starts, has_q_starts, error) ||
      !read_metadata_array(args, kArgKvStarts, read.kv_starts, has_kv_starts, error)) {
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
  if (has_q_lengths && static_cast<int64_t>(read.q_lengths.size()) != p.batch) {
    error = "problem.qLengths must have batch entries";
    return;
  }
  if (has_slopes && static_cast<int64_t>(read.alibi_slopes.size()) != p.heads) {
    error = "problem.alibiSlopes must have heads entries";
    return;
  }
  if (has_sinks && static_cast<int64_t>(read.sink_logits.size()) != p.heads) {
    error = "problem.sinkLogits must have heads entries";
    return;
  }
  if (has_table && static_cast<int64_t>(read.block_table.size()) != p.batch * p.max_blocks) {
    error = "problem.blockTable must have batch * maxBlocks entries";
    return;
  }
  if ((has_q_starts && static_cast<int64_t>(read.q_starts.size()) != p.batch + 1) ||
      (has_kv_starts && static_cast<int64_t>(read.kv_starts.size()) != p.batch + 1)) {
    error = "problem.qStarts and problem.kvStarts must have batch + 1 entries";
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
  p.q_lengths = has_q_lengths ? read.q_lengths.data() : nullptr;
  p.alibi_slopes = has_slopes ? read.alibi_slopes.data() : nullptr;
  p.sink_logits = has_sinks ? read.sink_logits.data() : nullptr;
  p.block_table = has_table ? read.block_table.data() : nullptr;
  p.q_starts = has_q_starts ? read.q_starts.data() : nullptr;
  p.kv_starts = has_kv_starts ? read.kv_starts.data() : nullptr;
  // An empty Int32Array has no data pointer worth trusting; an empty global list is no global list.
  p.global_offsets = has_offsets ? read.global_offsets.data() : nullptr;
  p.global_indices = has_indices ? read.global_indices.data() : nullptr;
  if (has_offsets && read.global_indices.empty()) {
    p.global_offsets = nullptr;
    p.global_indices = nullptr;
  }
}

}  // namespace gla_addon
