// Test problems that own their buffers, built from a compact spec, and the comparison against the
// double-precision reference. Shared by gla_tests and gla_bench_core.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gla/attention.h"

namespace gla_test {

enum class Layout { bhsd, bshd, bhsd_padded, bshd_padded };
enum class Values { uniform, integers };  // integers: exact dot products, logits in the hundreds

struct Spec {
  std::string name;
  int64_t batch = 1, heads = 1, kv_heads = 1, seq_len = 1, kv_seq_len = 1, head_dim = 16;
  Layout q_layout = Layout::bhsd;
  Layout kv_layout = Layout::bhsd;
  Layout out_layout = Layout::bhsd;
  bool causal = false;
  int64_t window_left = -1, window_right = -1;
  std::vector<std::vector<int32_t>> globals;  // one list per batch item; empty: no globals at all
  std::vector<int32_t> kv_lengths;            // empty: none
  std::vector<int32_t> q_lengths;             // empty: none (every query row real)
  float softcap = 0.0f;                       // 0: off
  std::vector<float> alibi_slopes;            // empty: none, else one per query head
  std::vector<float> sink_logits;             // empty: none, else one per query head
  // With q_lengths: the query rows past q_length(b) (padding, never to be read) hold NaN, so that a
  // padding row that leaks into a real one, or is computed and stored, shows.
  bool nan_padding_queries = true;
  bool with_lse = true;
  float scale = 0.0f;  // 0: 1 / sqrt(head_dim)
  Values values = Values::uniform;
  // Adds key_rise * j to every element of key row j: each row's scores then climb (or fall) steadily
  // along the keys, so that later blocks keep setting new maxima (the fused softmax's fallback).
  float key_rise = 0.0f;
  int threads = 1;
  uint64_t seed = 1;
  // Element type of q, k and v (the float inputs above are converted to it), of out, and the
  // precision of the products.
  gla::DType dtype = gla::DType::float32;
  gla::DType out_dtype = gla::DType::float32;
  gla::Precision precision = gla::Precision::float32;
};

// Test-local conversions, written independently of the kernels' (which they check).
// float -> float16 / bfloat16 bits, rounded to nearest even; NaN stays a (quiet) NaN.
uint16_t to_half(float x, gla::DType dtype);
// The exact value of float16 / bfloat16 bits.
double from_half(uint16_t bits, gla::DType dtype);
// The spacing of the float16 / bfloat16 numbers at |x| (the subnormal spacing below the normals).
double half_ulp(double x, gla::DType dtype);
// The smallest normal float16 / bfloat16 number.
double half_min_normal(gla::DType dtype);
// A quiet NaN / an infinity of the given sign in float16 / bfloat16.
uint16_t half_nan(gla::DType dtype);
uint16_t half_inf(gla::DType dtype, bool negative);
const char* dtype_name(gla::DType dtype);

// The untouched marker of half-precision outputs (a NaN in both float16 and bfloat16).
constexpr uint16_t kHalfPoison = 0x7fff;

struct TestProblem {
  gla::AttentionProblem p;
  // float32 tensors. For a half dtype, q/k/v hold the exact values of q16/k16/v16 (what the
  // problem reads is q16/k16/v16); for a half out_dtype, out is empty and out16 is the output.
  std::vector<float> q, k, v, out, lse;
  std::vector<uint16_t> q16, k16, v16, out16;
  std::vector<int32_t> kv_lengths, offsets, indices, q_lengths;
  std::vector<float> alibi_slopes, sink_logits;
  std::vector<char> out_logical;  // 1 where an element of out is part of the tensor
  // Copies of every input, to prove none was written.
  std::vector<float> q0, k0, v0;
  std::vector<uint16_t> q160, k160, v160;
  std::vector<int32_t> kv_lengths0, offsets0, indices0, q_lengths0;
  std::vector<float> alibi_slopes0, sink_logits0;

  TestProblem() = default;
  TestProblem(const TestProblem&) = delete;
  TestProblem& operator=(const TestProblem&) = delete;
  void rebind();   // points p at this object's vectors (after a move, or edits), by p.dtype / p.out_dtype
  void poison_outputs();  // fills out and lse with NaN (half outs with kHalfPoison)
  void snapshot_inputs();  // takes the copies of the inputs again (after a test edits an input)
  // Value of out element `offset` (any out dtype), and of input element `offset` of q/k/v.
  double out_at(int64_t offset) const;
};

void build(const Spec& spec, TestProblem& tp);

// A reference element that is not finite (an infinity in V reached by a visible key, or a NaN row
// a test sets by hand) must come out as the same infinity / a NaN; such elements are left out of
// the error norms. An lse set to NaN must come out NaN.
// sees_no_key (one per row, 1 where the row sees no key, padding rows included): compare requires
// those rows' out to be exactly 0 (with sinks their lse is the sink, compared as any lse).
struct Reference {
  std::vector<double> out, lse;
  std::vector<char> sees_no_key;  // may be empty (then only rows with lse -inf are taken as empty)
};
Reference compute_reference(const TestProblem& tp);

struct Check {
  bool ok = true;
  double out_rel_err = 0.0;  // relative L2 of out against the float64 reference (its finite elements)
  double lse_err = 0.0;  // max of |lse - ref| / max(1, |ref|)
  // Half out only: max of |out - ref| / (half a spacing of the out dtype at ref + tol * max |ref|),
  // which compare requires <= 1 with precision float32; and the fraction of elements that differ
  // from the reference rounded to nearest even.
  double out_bound_use = 0.0;
  double out_misrounded = 0.0;
  std::string what;
};
// The tolerance compare uses by default for a problem of these types: 1e-5 for float32 throughout,
// 2e-5 for half inputs or outputs with precision float32, 1e-2 with precision bfloat16.
double default_tolerance(const gla::AttentionProblem& p);

// Compares tp's outputs with the reference, with tol = tolerance (0: default_tolerance):
//   float32 out: relative L2 <= tol;
//   half out, precision float32: each element within half a spacing of the out dtype (at the
//     reference value) plus tol * max |ref| of the float64 reference, and the relative L2 of what
//     exceeds half a spacing <= tol;
//   half out, precision bfloat16: relative L2 <= tol;
//   (the relative L2 forgives, per element, half a spacing where the reference is below the out
//   dtype's smallest normal, and 1e-30 where it is below 1e-30: output underflow, reachable with
//   sinks, is no error of the computation);
// lse within tol * max(1, |ref|); rows that see nothing exactly 0 (lse -inf, or the sink with
// sinks); non-finite reference elements matched (see Reference); padding untouched; inputs
// unchanged.
Check compare(const TestProblem& tp, const Reference& ref, double tolerance = 0.0);

std::string describe(const Spec& spec);

}  // namespace gla_test
