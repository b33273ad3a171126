// Turns the arguments of binding.d.ts (already validated by lib/options.ts) into a
// gla::AttentionProblem: the buffers, the numeric problem fields packed into one Float64Array in
// the fixed order below, and the optional metadata arrays. Nothing is copied but the small
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

// The problem-fields Float64Array: entry 0 is kProblemLayoutVersion, then one entry per row of
// GLA_PROBLEM_FIELDS, in order. This table is the C++ half of the one field list; the JS half is
// NATIVE_PROBLEM_FIELDS in lib/backends/native.ts, which checks at load that the addon's
// problemFields() names the same fields in the same order, so a lib and an addon from different
// builds fail with a reason instead of misreading each other. Adding a field is one row here and
// one name there; bump the version when a field changes meaning.
//
// X(member of gla::AttentionProblem, JS name, how the double is read):
//   integer  a safe integer (2^53 bounds every exactly representable one); ranges are
//            gla::validate_problem's to check
//   real     any double, narrowed to float (finiteness is validate_problem's)
//   flag     0 or 1
//   count    an integer in [1, 4096]
//   dtype    0 float32, 1 float16, 2 bfloat16 (gla::DType)
//   precision  0 float32, 1 bfloat16 (gla::Precision)
#define GLA_PROBLEM_FIELDS(X)                             \
  X(dtype, "dtype", dtype)                                \
  X(out_dtype, "outDtype", dtype)                         \
  X(precision, "precision", precision)                    \
  X(batch, "batch", integer)                              \
  X(heads, "heads", integer)                              \
  X(kv_heads, "kvHeads", integer)                         \
  X(seq_len, "seqLen", integer)                           \
  X(kv_seq_len, "kvSeqLen", integer)                      \
  X(head_dim, "headDim", integer)                         \
  X(q_strides.batch, "qStrides.batch", integer)           \
  X(q_strides.head, "qStrides.head", integer)             \
  X(q_strides.seq, "qStrides.seq", integer)               \
  X(k_strides.batch, "kStrides.batch", integer)           \
  X(k_strides.head, "kStrides.head", integer)             \
  X(k_strides.seq, "kStrides.seq", integer)               \
  X(v_strides.batch, "vStrides.batch", integer)           \
  X(v_strides.head, "vStrides.head", integer)             \
  X(v_strides.seq, "vStrides.seq", integer)               \
  X(out_strides.batch, "outStrides.batch", integer)       \
  X(out_strides.head, "outStrides.head", integer)         \
  X(out_strides.seq, "outStrides.seq", integer)           \
  X(scale, "scale", real)                                 \
  X(causal, "causal", flag)                               \
  X(window_left, "windowLeft", integer)                   \
  X(window_right, "windowRight", integer)                 \
  X(softcap, "softcap", real)                             \
  X(page_size, "pageSize", integer)                       \
  X(max_blocks, "maxBlocks", integer)                     \
  X(page_count, "pageCount", integer)                     \
  X(threads, "threads", count)

constexpr double kProblemLayoutVersion = 5;

#define GLA_COUNT_FIELD(member, name, kind) +1
constexpr int kProblemFieldCount = 1 GLA_PROBLEM_FIELDS(GLA_COUNT_FIELD);  // with the version
#undef GLA_COUNT_FIELD

// Positions of the dtype fields, which the buffers' expected array types depend on.
constexpr int kDtypeField = 1;
constexpr int kOutDtypeField = 2;

// The JS names, index = position in the Float64Array ("layoutVersion" first).
extern const char* const kProblemFieldNames[kProblemFieldCount];

// Argument positions shared by every attention entry point:
// (q, k, v, out, lse|null, fields, kvLengths|null, globalOffsets|null, globalIndices|null,
//  qLengths|null, alibiSlopes|null, sinkLogits|null, blockTable|null, qStarts|null, kvStarts|null[, isa]).
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
  kArgQLengths,
  kArgAlibiSlopes,
  kArgSinkLogits,
  kArgBlockTable,
  kArgQStarts,
  kArgKvStarts,
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
  std::vector<int32_t> q_lengths;
  std::vector<float> alibi_slopes;
  std::vector<float> sink_logits;
  std::vector<int32_t> block_table;
  std::vector<int32_t> q_starts;
  std::vector<int32_t> kv_starts;
  std::string error;  // non-empty: the arguments were not what binding.d.ts promises
};

// Reads argv[kArgQ .. kArgKvStarts]. The returned problem's metadata pointers refer into the
// ReadProblem itself, so it must not be copied after this call (it is held by pointer).
void read_problem(const CallArgs& args, ReadProblem& read);

}  // namespace gla_addon
