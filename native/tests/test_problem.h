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
  bool with_lse = true;
  float scale = 0.0f;  // 0: 1 / sqrt(head_dim)
  Values values = Values::uniform;
  // Adds key_rise * j to every element of key row j: each row's scores then climb (or fall) steadily
  // along the keys, so that later blocks keep setting new maxima (the fused softmax's fallback).
  float key_rise = 0.0f;
  int threads = 1;
  uint64_t seed = 1;
};

struct TestProblem {
  gla::AttentionProblem p;
  std::vector<float> q, k, v, out, lse;
  std::vector<int32_t> kv_lengths, offsets, indices;
  std::vector<char> out_logical;  // 1 where an element of out is part of the tensor
  // Copies of every input, to prove none was written.
  std::vector<float> q0, k0, v0;
  std::vector<int32_t> kv_lengths0, offsets0, indices0;

  TestProblem() = default;
  TestProblem(const TestProblem&) = delete;
  TestProblem& operator=(const TestProblem&) = delete;
  void rebind();   // points p at this object's vectors (after a move, or edits)
  void poison_outputs();  // fills out and lse with NaN
};

void build(const Spec& spec, TestProblem& tp);

struct Reference {
  std::vector<double> out, lse;
};
Reference compute_reference(const TestProblem& tp);

struct Check {
  bool ok = true;
  double out_rel_err = 0.0;
  double lse_err = 0.0;  // max of |lse - ref| / max(1, |ref|)
  std::string what;
};
// Compares tp's outputs with the reference: relative L2 <= 1e-5 on out, lse within
// 1e-5 * max(1, |ref|), rows that see nothing exactly 0 / -inf, padding untouched, inputs unchanged.
Check compare(const TestProblem& tp, const Reference& ref, double tolerance = 1e-5);

std::string describe(const Spec& spec);

}  // namespace gla_test
