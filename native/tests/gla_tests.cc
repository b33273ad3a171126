// gla_tests <suite>: the CPU core checked against the double-precision reference, on every ISA
// this machine supports. Suites: isas exp validate grid concurrency copy random half serving (no
// argument: all).
// Registered with ctest one suite per entry; under GLA_SANITIZE the same suites run instrumented
// (the random suite then doubles as a fuzz driver).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iterator>
#include <limits>
#include <map>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/driver.h"
#include "core/plan.h"
#include "dispatch/kernel_table.h"
#include "gla/attention.h"
#include "reference/reference.h"
#include "tests/test_problem.h"

using gla::DType;
using gla::Isa;
using gla::Precision;
using gla::Status;
using gla::core::DriverConfig;
using gla_test::Layout;
using gla_test::Spec;
using gla_test::TestProblem;
using gla_test::Values;

namespace {

int g_checks = 0;
int g_failures = 0;
double g_worst_out = 0.0;  // largest errors seen by passing comparisons, to show the margin
double g_worst_lse = 0.0;

// Worst passing errors per element types (half-precision and bfloat16-product runs only), printed
// after each suite: "f16->f16 prec:bf16 [VDPBF16PS]".
struct Worst {
  double out = 0.0;   // relative L2
  double lse = 0.0;
  double bound_use = 0.0;   // half outs: Check::out_bound_use (<= 1 required with precision float32)
  double misrounded = 0.0;  // half outs: Check::out_misrounded
  int runs = 0;
};
std::map<std::string, Worst> g_by_types;
double g_worst_bf16_products = 0.0;  // worst out error of runs with the bfloat16 products and a float32 out

void expect(bool ok, const std::string& what) {
  ++g_checks;
  if (!ok) {
    ++g_failures;
    if (g_failures <= 50) std::printf("FAIL: %s\n", what.c_str());
  }
}

std::string isa_list(const std::vector<Isa>& isas) {
  std::string s;
  for (Isa isa : isas) s += std::string(s.empty() ? "" : " ") + gla::isa_name(isa);
  return s;
}

std::string config_text(const DriverConfig& c) {
  return "bq=" + std::to_string(c.block_q) + " bk=" + std::to_string(c.block_k) + " split=" + std::to_string(c.split_k);
}

// Precision bfloat16 takes the bfloat16 products only on an ISA that has them (AVX512_BF16); the
// others compute it in float32 and are held to the float32 bounds.
bool uses_bf16_products(const gla::AttentionProblem& p, Isa isa) {
  return p.precision == Precision::bfloat16 && gla::dispatch::has_bf16_products(isa);
}

std::string types_key(const gla::AttentionProblem& p, Isa isa) {
  std::string key = std::string(gla_test::dtype_name(p.dtype)) + "->" + gla_test::dtype_name(p.out_dtype) +
                    (p.precision == Precision::bfloat16 ? " prec:bf16" : " prec:f32");
  if (p.precision == Precision::bfloat16) key += uses_bf16_products(p, isa) ? " [VDPBF16PS]" : " [float32 kernels]";
  return key;
}

// Runs one problem on one ISA / thread count / config and compares with the reference.
bool run_and_compare(TestProblem& tp, const gla_test::Reference& ref, Isa isa, int threads, const DriverConfig& config,
                     const std::string& label) {
  tp.poison_outputs();
  tp.p.threads = threads;
  const gla::Outcome o = gla::core::run_attention_configured(tp.p, isa, config);
  const std::string where = label + " isa=" + gla::isa_name(isa) + " threads=" + std::to_string(threads) + " " +
                            config_text(config);
  if (o.status != Status::ok) {
    expect(false, where + ": status " + std::to_string(static_cast<int>(o.status)) + " " + o.message);
    return false;
  }
  const bool bf16_products = uses_bf16_products(tp.p, isa);
  const Precision asked = tp.p.precision;
  if (!bf16_products) tp.p.precision = Precision::float32;  // the bounds compare applies
  const gla_test::Check c = gla_test::compare(tp, ref);
  tp.p.precision = asked;
  expect(c.ok, where + ": " + c.what);
  if (c.ok) {
    g_worst_out = std::max(g_worst_out, c.out_rel_err);
    g_worst_lse = std::max(g_worst_lse, c.lse_err);
    if (tp.p.dtype != DType::float32 || tp.p.out_dtype != DType::float32 || tp.p.precision != Precision::float32) {
      Worst& w = g_by_types[types_key(tp.p, isa)];
      w.out = std::max(w.out, c.out_rel_err);
      w.lse = std::max(w.lse, c.lse_err);
      w.bound_use = std::max(w.bound_use, c.out_bound_use);
      w.misrounded = std::max(w.misrounded, c.out_misrounded);
      ++w.runs;
    }
    if (bf16_products && tp.p.out_dtype == DType::float32) {
      g_worst_bf16_products = std::max(g_worst_bf16_products, c.out_rel_err);
    }
  }
  return c.ok;
}

// The ISAs the suites run: every supported one, or those GLA_TEST_ISAS names ("neon scalar"), so
// that a slow run (arm64 under qemu) can skip what another run covers.
std::vector<Isa> test_isas() {
  static const std::vector<Isa> isas = [] {
    std::vector<Isa> out;
    const char* only = std::getenv("GLA_TEST_ISAS");
    for (Isa isa : gla::supported_isas()) {
      if (only == nullptr || only[0] == '\0' || std::strstr(only, gla::isa_name(isa)) != nullptr) out.push_back(isa);
    }
    return out;
  }();
  return isas;
}

// ---------------------------------------------------------------------------------------------

void suite_isas() {
  const std::vector<Isa> isas = gla::supported_isas();
  std::printf("supported ISAs (best first): %s; compiled: %s; hardware threads: %d\n", isa_list(isas).c_str(),
              GLA_BUILT_ISAS, gla::hardware_threads());
  expect(!isas.empty() && isas.back() == Isa::scalar, "supported_isas ends with scalar");
  for (size_t i = 1; i < isas.size(); ++i) expect(isas[i - 1] > isas[i], "supported_isas is best first");
  for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512, Isa::neon}) {
    Isa parsed = Isa::scalar;
    expect(gla::isa_from_name(gla::isa_name(isa), &parsed) && parsed == isa, "isa name round trip");
  }
  Isa untouched = Isa::avx2;
  expect(!gla::isa_from_name("AVX2", &untouched) && untouched == Isa::avx2, "isa_from_name is exact");
  expect(!gla::isa_from_name(nullptr, &untouched), "isa_from_name(nullptr)");

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  // What the compiler's own CPUID check says the CPU can do must show up in supported_isas.
  const std::string built = GLA_BUILT_ISAS;
  auto has = [&](Isa isa) {
    for (Isa s : isas)
      if (s == isa) return true;
    return false;
  };
  __builtin_cpu_init();
  if (built.find("avx512") != std::string::npos && __builtin_cpu_supports("avx512f") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")) {
    expect(has(Isa::avx512), "this CPU has AVX-512 F/DQ/BW/VL, so avx512 must be supported");
  }
  if (built.find("avx2") != std::string::npos && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    expect(has(Isa::avx2), "this CPU has AVX2+FMA, so avx2 must be supported");
  }
#endif
#if defined(__aarch64__)
  // NEON is the arm64 baseline: built means supported, and first.
  if (std::string(GLA_BUILT_ISAS).find("neon") != std::string::npos) {
    expect(isas.front() == Isa::neon, "an arm64 build with the neon kernels runs them first");
  }
#endif

  // An ISA that is not available is reported, not run.
  TestProblem tp;
  Spec s;
  s.seq_len = s.kv_seq_len = 4;
  gla_test::build(s, tp);
  const gla::Outcome bogus = gla::run_attention(tp.p, static_cast<Isa>(7));
  expect(bogus.status == Status::unavailable && std::strlen(bogus.message) > 0, "unknown ISA -> unavailable");
}

// ---------------------------------------------------------------------------------------------

void suite_exp() {
  const int n = 1 << 20;
  std::vector<float> in(n), out(n);
  for (int i = 0; i < n; ++i) in[i] = -87.3f + 87.3f * static_cast<float>(i) / (n - 1);  // softmax's domain
  for (Isa isa : test_isas()) {
    gla::core::kernel_exp(isa, in.data(), out.data(), n);
    double worst = 0.0;
    float worst_x = 0.0f;
    for (int i = 0; i < n; ++i) {
      const double e = std::exp(static_cast<double>(in[i]));
      const double rel = std::fabs(out[i] - e) / e;
      if (rel > worst) {
        worst = rel;
        worst_x = in[i];
      }
    }
    std::printf("exp %-6s max relative error %.3g (at x = %.6g)\n", gla::isa_name(isa), worst, worst_x);
    expect(worst < 2.0e-7, std::string("exp accuracy on ") + gla::isa_name(isa));

    const float inf = std::numeric_limits<float>::infinity();
    const float specials[] = {-inf, -1e30f, -1000.0f, -104.0f, -88.0f, -87.4f, 0.0f, -0.0f, 1.0f, 80.0f, 3.0f};
    float got[11];
    gla::core::kernel_exp(isa, specials, got, 11);  // also exercises the partial-vector tail
    expect(got[0] == 0.0f && got[1] == 0.0f && got[2] == 0.0f && got[3] == 0.0f && got[4] == 0.0f && got[5] == 0.0f,
           std::string("exp flushes very negative and -inf to exactly 0 on ") + gla::isa_name(isa));
    expect(got[6] == 1.0f && got[7] == 1.0f, std::string("exp(0) == 1 exactly on ") + gla::isa_name(isa));
    expect(std::fabs(got[8] - std::exp(1.0)) / std::exp(1.0) < 2e-7 && std::fabs(got[9] / std::exp(80.0) - 1) < 2e-7 &&
               std::fabs(got[10] - std::exp(3.0)) / std::exp(3.0) < 2e-7,
           std::string("exp of positive arguments on ") + gla::isa_name(isa));
  }
}

// ---------------------------------------------------------------------------------------------

void suite_validate() {
  Spec base;
  base.name = "validate";
  base.batch = 2;
  base.heads = 4;
  base.kv_heads = 2;
  base.seq_len = 5;
  base.kv_seq_len = 7;
  base.head_dim = 8;
  base.globals = {{1, 3}, {0}};
  base.kv_lengths = {7, 4};
  base.window_left = 2;
  base.window_right = 1;

  {
    TestProblem tp;
    gla_test::build(base, tp);
    expect(gla::validate_problem(tp.p).status == Status::ok, "the base problem is valid");
  }

  struct Case {
    const char* name;
    std::function<void(TestProblem&)> mutate;
  };
  const int64_t big = int64_t{1} << 62;
  const Case cases[] = {
      {"q null", [](TestProblem& t) { t.p.q = nullptr; }},
      {"k null", [](TestProblem& t) { t.p.k = nullptr; }},
      {"v null", [](TestProblem& t) { t.p.v = nullptr; }},
      {"out null", [](TestProblem& t) { t.p.out = nullptr; }},
      {"q one element short", [](TestProblem& t) { t.p.q_elements -= 1; }},
      {"k one element short", [](TestProblem& t) { t.p.k_elements -= 1; }},
      {"v one element short", [](TestProblem& t) { t.p.v_elements -= 1; }},
      {"out one element short", [](TestProblem& t) { t.p.out_elements -= 1; }},
      {"k seq stride out of bounds", [](TestProblem& t) { t.p.k_strides.seq += 1; }},
      {"v head stride out of bounds", [](TestProblem& t) { t.p.v_strides.head *= 2; }},
      {"negative q stride", [](TestProblem& t) { t.p.q_strides.seq = -t.p.q_strides.seq; }},
      {"stride overflow", [big](TestProblem& t) { t.p.q_strides.batch = big; }},
      {"stride overflow in sum", [big](TestProblem& t) { t.p.q_strides.batch = big; t.p.q_strides.head = big; }},
      {"heads not a multiple of kv_heads", [](TestProblem& t) { t.p.kv_heads = 3; }},
      {"kv_heads 0", [](TestProblem& t) { t.p.kv_heads = 0; }},
      {"heads 0", [](TestProblem& t) { t.p.heads = 0; }},
      {"head_dim 0", [](TestProblem& t) { t.p.head_dim = 0; }},
      {"negative seq_len", [](TestProblem& t) { t.p.seq_len = -1; }},
      {"negative batch", [](TestProblem& t) { t.p.batch = -1; }},
      {"kv_seq_len beyond int32", [](TestProblem& t) { t.p.kv_seq_len = int64_t{1} << 31; }},
      {"threads 0", [](TestProblem& t) { t.p.threads = 0; }},
      {"scale NaN", [](TestProblem& t) { t.p.scale = std::numeric_limits<float>::quiet_NaN(); }},
      {"scale inf", [](TestProblem& t) { t.p.scale = std::numeric_limits<float>::infinity(); }},
      {"window_left -2", [](TestProblem& t) { t.p.window_left = -2; }},
      {"window_right -5", [](TestProblem& t) { t.p.window_right = -5; }},
      {"kv_length above kv_seq_len", [](TestProblem& t) { t.kv_lengths[1] = 8; }},
      {"negative kv_length", [](TestProblem& t) { t.kv_lengths[0] = -1; }},
      {"globals unsorted", [](TestProblem& t) { std::swap(t.indices[0], t.indices[1]); }},
      {"globals duplicate", [](TestProblem& t) { t.indices[1] = t.indices[0]; }},
      {"global out of range", [](TestProblem& t) { t.indices[2] = 7; }},
      {"negative global", [](TestProblem& t) { t.indices[0] = -1; }},
      {"global_offsets[0] != 0", [](TestProblem& t) { t.offsets[0] = 1; }},
      {"global_offsets decreasing", [](TestProblem& t) { t.offsets[1] = 3; t.offsets[2] = 2; }},
      {"only global_offsets", [](TestProblem& t) { t.p.global_indices = nullptr; }},
      {"only global_indices", [](TestProblem& t) { t.p.global_offsets = nullptr; }},
      {"lse too small", [](TestProblem& t) { t.p.lse_elements -= 1; }},
      {"lse null with elements", [](TestProblem& t) { t.p.lse = nullptr; }},
      {"out aliases q", [](TestProblem& t) { t.p.out = t.q.data(); t.p.out_elements = t.p.q_elements; }},
      {"out overlaps v", [](TestProblem& t) { t.p.out = t.v.data() + 5; t.p.out_elements = t.p.v_elements - 5; }},
      {"lse overlaps out", [](TestProblem& t) { t.p.lse = t.out.data(); }},
      {"lse overlaps k", [](TestProblem& t) { t.p.lse = t.k.data(); }},
      {"out rows overlap (seq stride 0)", [](TestProblem& t) { t.p.out_strides.seq = 0; }},
      {"out rows overlap (head stride < row)",
       [](TestProblem& t) { t.p.out_strides.head = 4; t.p.out_strides.batch = 4 * 4 + 5 * 8; }},
  };
  for (const Case& c : cases) {
    TestProblem tp;
    gla_test::build(base, tp);
    c.mutate(tp);
    const gla::Outcome v = gla::validate_problem(tp.p);
    expect(v.status == Status::invalid_argument && std::strlen(v.message) > 0,
           std::string("validate rejects: ") + c.name + " (got status " + std::to_string(static_cast<int>(v.status)) +
               ")");
    if (v.status != Status::invalid_argument) continue;
    // run_attention must reject it too, and write nothing.
    tp.poison_outputs();
    const std::vector<float> out_before = tp.out;
    const gla::Outcome r = gla::run_attention(tp.p, Isa::scalar);
    expect(r.status == Status::invalid_argument, std::string("run_attention rejects: ") + c.name);
    bool untouched = true;
    for (size_t i = 0; i < tp.out.size(); ++i) untouched = untouched && std::isnan(tp.out[i]);
    expect(untouched, std::string("nothing written for: ") + c.name);
  }

  // Valid edge cases: empty tensors and all-covering windows run and give the reference's answer.
  const std::pair<const char*, std::function<void(Spec&)>> valid[] = {
      {"batch 0", [](Spec& s) { s.batch = 0; s.globals.clear(); s.kv_lengths.clear(); }},
      {"seq_len 0", [](Spec& s) { s.seq_len = 0; }},
      {"kv_seq_len 0", [](Spec& s) { s.kv_seq_len = 0; s.globals.clear(); s.kv_lengths = {0, 0}; }},
      {"huge windows", [](Spec& s) { s.window_left = INT64_MAX; s.window_right = INT64_MAX; }},
      {"huge windows, causal", [](Spec& s) { s.window_left = INT64_MAX; s.window_right = INT64_MAX - 1; s.causal = true; }},
      {"empty global lists", [](Spec& s) { s.globals = {{}, {}}; }},
      {"no lse", [](Spec& s) { s.with_lse = false; }},
  };
  for (const auto& c : valid) {
    Spec s = base;
    c.second(s);
    TestProblem tp;
    gla_test::build(s, tp);
    const gla::Outcome v = gla::validate_problem(tp.p);
    expect(v.status == Status::ok, std::string("validate accepts: ") + c.first + " (" + v.message + ")");
    const gla_test::Reference ref = gla_test::compute_reference(tp);
    for (Isa isa : test_isas()) run_and_compare(tp, ref, isa, 2, DriverConfig{}, c.first);
  }
}

// ---------------------------------------------------------------------------------------------

std::vector<Spec> grid_specs() {
  std::vector<Spec> specs;
  auto add = [&](Spec s) { specs.push_back(std::move(s)); };
  auto base = [](const char* name, int64_t s, int64_t kv, int64_t d) {
    Spec x;
    x.name = name;
    x.seq_len = s;
    x.kv_seq_len = kv;
    x.head_dim = d;
    x.heads = 2;
    x.kv_heads = 2;
    x.seed = static_cast<uint64_t>(s * 1000003 + kv * 101 + d);
    return x;
  };

  for (int64_t s : {1, 3, 37, 257}) {
    add(base("full", s, s, 64));
    Spec c = base("causal", s, s, 64);
    c.causal = true;
    add(c);
  }
  for (int64_t d : {1, 3, 16, 37, 64, 100, 128, 256}) {
    add(base("head_dim", 37, 37, d));
    Spec c = base("head_dim causal window", 70, 70, d);
    c.causal = true;
    c.window_left = 9;
    c.window_right = 0;
    add(c);
  }
  for (bool causal : {false, true}) {
    for (auto sk : {std::pair<int64_t, int64_t>{37, 100}, {100, 37}, {1, 257}, {257, 1}}) {
      Spec c = base("seq != kv", sk.first, sk.second, 16);
      c.causal = causal;
      add(c);
    }
  }
  {
    Spec c = base("batch GQA bshd", 45, 45, 32);
    c.batch = 3;
    c.heads = 4;
    c.kv_heads = 2;
    c.q_layout = c.kv_layout = c.out_layout = Layout::bshd;
    c.causal = true;
    add(c);
    Spec m = base("MQA padded", 40, 53, 24);
    m.batch = 2;
    m.heads = 6;
    m.kv_heads = 1;
    m.q_layout = Layout::bhsd_padded;
    m.kv_layout = Layout::bshd_padded;
    m.out_layout = Layout::bshd_padded;
    add(m);
    Spec x = base("mixed layouts", 33, 33, 20);
    x.heads = 3;
    x.kv_heads = 3;
    x.q_layout = Layout::bshd;
    x.out_layout = Layout::bhsd_padded;
    x.causal = true;
    add(x);
  }
  {
    struct W {
      const char* name;
      bool causal;
      int64_t l, r;
      int64_t s, kv;
    };
    const W ws[] = {
        {"sliding causal", true, 16, 0, 257, 257},        {"asymmetric", false, 5, 9, 100, 120},
        {"right only", false, -1, 3, 60, 60},             {"left only", false, 7, -1, 60, 60},
        {"all-covering", false, 1000, 1000, 80, 80},      {"all-covering causal", true, 1000, 1000, 80, 90},
        {"huge", false, INT64_MAX, INT64_MAX, 50, 50},    {"diagonal", false, 0, 0, 40, 40},
        {"diagonal causal seq>kv", true, 0, 0, 50, 30},   {"window seq>kv", false, 3, 2, 50, 30},
        {"wide window causal", true, 130, 0, 257, 300},
    };
    for (const W& w : ws) {
      Spec c = base(w.name, w.s, w.kv, 16);
      c.causal = w.causal;
      c.window_left = w.l;
      c.window_right = w.r;
      add(c);
    }
  }
  {
    Spec sinks = base("sinks + sliding window", 257, 257, 32);
    sinks.causal = true;
    sinks.window_left = 8;
    sinks.window_right = 0;
    sinks.globals = {{0, 1, 2, 3}};
    add(sinks);
    Spec scattered = base("scattered globals", 100, 100, 16);
    scattered.window_left = scattered.window_right = 4;
    scattered.globals = {{5, 40, 41, 99}};
    add(scattered);
    Spec per_batch = base("per-batch globals", 60, 60, 16);
    per_batch.batch = 3;
    per_batch.window_left = 3;
    per_batch.window_right = 3;
    per_batch.causal = true;
    per_batch.globals = {{0, 1}, {}, {10, 20, 59}};
    add(per_batch);
    Spec query_rows = base("global query rows seq<kv", 50, 80, 16);
    query_rows.window_left = 2;
    query_rows.window_right = 2;
    query_rows.causal = true;
    query_rows.globals = {{3, 35, 40, 79}};  // 35, 40 and 79 are query positions too (offset 30)
    add(query_rows);
    Spec query_rows2 = base("global query rows seq>kv", 80, 50, 16);
    query_rows2.window_left = 4;
    query_rows2.window_right = 1;
    query_rows2.globals = {{0, 17, 49}};
    add(query_rows2);
    Spec many = base("many global rows", 200, 200, 8);
    many.window_left = many.window_right = 1;
    many.globals = {{}};
    for (int32_t g = 0; g < 200; g += 3) many.globals[0].push_back(g);
    add(many);
  }
  {
    Spec k = base("kv_lengths", 64, 64, 16);
    k.batch = 4;
    k.kv_lengths = {0, 1, 20, 64};
    add(k);
    Spec kc = k;
    kc.name = "kv_lengths causal window globals";
    kc.causal = true;
    kc.window_left = 6;
    kc.window_right = 2;
    kc.globals = {{0, 30}, {0}, {5, 19, 40}, {63}};
    add(kc);
    Spec kd = base("kv_lengths seq != kv", 20, 70, 16);
    kd.batch = 3;
    kd.kv_lengths = {70, 1, 35};
    kd.causal = true;
    add(kd);
  }
  {
    // bshd K/V packed per batch item (batch >= 2 x threads), per head, and up front (batch 1,
    // one kv head), each with kv lengths, so that the padding rows, never packed, must never be read.
    Spec packed = base("bshd packed per batch", 70, 90, 24);
    packed.batch = 7;
    packed.heads = 4;
    packed.kv_heads = 2;
    packed.q_layout = packed.kv_layout = packed.out_layout = Layout::bshd;
    packed.kv_lengths = {90, 0, 33, 89, 1, 64, 70};
    packed.causal = true;
    add(packed);
    // batch 2: per batch at 1 thread, per head at 2 (4 heads), up front at 3 (the grid's variants).
    Spec per_head = packed;
    per_head.name = "bshd packed per head";
    per_head.batch = 2;
    per_head.kv_seq_len = 300;
    per_head.kv_lengths = {150, 300};
    add(per_head);
    Spec up_front = packed;
    up_front.name = "bshd packed up front";
    up_front.batch = 1;
    up_front.heads = 3;
    up_front.kv_heads = 1;
    up_front.kv_lengths = {77};
    add(up_front);
  }
  {
    Spec no_lse = base("no lse", 37, 37, 16);
    no_lse.with_lse = false;
    no_lse.causal = true;
    add(no_lse);
  }
  {
    Spec big = base("large logits", 100, 100, 64);
    big.values = Values::integers;
    big.scale = 1.0f;
    add(big);
    Spec big2 = base("large logits causal window globals", 120, 120, 37);
    big2.values = Values::integers;
    big2.scale = 0.5f;
    big2.causal = true;
    big2.window_left = 10;
    big2.window_right = 0;
    big2.globals = {{0, 64}};
    add(big2);
  }
  {
    // Fully visible blocks after the first try the fused softmax against the running max: steep
    // rises make them fall back (and stop trying), gentle ones commit weights above 1.
    Spec steep = base("rising scores: fused softmax falls back", 300, 600, 32);
    steep.scale = 1.0f;
    steep.key_rise = 0.05f;
    add(steep);
    Spec gentle = base("gently rising scores: fused softmax commits", 300, 600, 32);
    gentle.scale = 1.0f;
    gentle.key_rise = 0.004f;
    add(gentle);
  }
  {
    Spec d = base("decode", 1, 4096, 64);
    d.heads = d.kv_heads = 1;
    add(d);
    Spec dw = base("decode sliding window + sinks", 1, 4096, 64);
    dw.heads = dw.kv_heads = 1;
    dw.causal = true;
    dw.window_left = 511;
    dw.window_right = 0;
    dw.globals = {{0, 1, 2, 3}};
    add(dw);
    Spec dg = base("decode GQA kv_lengths", 1, 2048, 128);
    dg.batch = 2;
    dg.heads = 8;
    dg.kv_heads = 2;
    dg.causal = true;
    dg.kv_lengths = {2048, 1000};
    add(dg);
    Spec d4 = base("speculative decode", 4, 1500, 64);
    d4.heads = d4.kv_heads = 1;
    d4.causal = true;
    add(d4);
  }
  return specs;
}

void suite_grid() {
  const std::vector<Spec> specs = grid_specs();
  const std::vector<Isa> isas = test_isas();
  // Defaults at 1 and 2 threads, plus small tiles (many partial / gathered blocks) and a forced
  // split-K, so that every path runs on shapes a test can afford.
  const std::pair<int, DriverConfig> variants[] = {
      {1, DriverConfig{}},
      {2, DriverConfig{}},
      {2, DriverConfig{16, 40, 0, 0}},
      {3, DriverConfig{7, 24, 3, 0}},
      {16, DriverConfig{0, 0, 0, 0}},  // more threads than the pool has: capped, still correct
  };
  for (const Spec& s : specs) {
    TestProblem tp;
    gla_test::build(s, tp);
    const gla_test::Reference ref = gla_test::compute_reference(tp);
    for (Isa isa : isas) {
      for (const auto& v : variants) run_and_compare(tp, ref, isa, v.first, v.second, gla_test::describe(s));
    }
  }

  // The decode case must take the split-K path when it has 2 threads.
  {
    TestProblem tp;
    Spec d;
    d.seq_len = 1;
    d.kv_seq_len = 4096;
    d.head_dim = 64;
    d.threads = 2;
    gla_test::build(d, tp);
    gla::cpu::CpuKernels kernels{};
    kernels.vector_width = 16;
    kernels.block_rows = 64;
    kernels.block_keys = 128;
    const gla::core::Plan plan = gla::core::make_plan(tp.p, kernels, 2, DriverConfig{});
    expect(plan.chunks >= 2 && plan.threads == 2, "decode with 2 threads splits the keys (chunks = " +
                                                       std::to_string(plan.chunks) + ")");
  }
  std::printf("grid: %zu problems x %zu ISAs x %zu variants\n", specs.size(), isas.size(), std::size(variants));
}

// ---------------------------------------------------------------------------------------------

void suite_concurrency() {
  // Several host threads call run_attention at once (as the addon does from libuv and the JS
  // thread), each asking for 1 to 3 threads of the shared pool.
  std::vector<Spec> specs;
  for (int i = 0; i < 6; ++i) {
    Spec s;
    s.name = "concurrent";
    s.batch = 2;
    s.heads = 4;
    s.kv_heads = 2;
    s.seq_len = 60 + 17 * i;
    s.kv_seq_len = 80 + 9 * i;
    s.head_dim = 32;
    s.causal = i % 2 == 0;
    s.window_left = i == 3 ? 5 : -1;
    s.globals = i >= 2 ? std::vector<std::vector<int32_t>>{{0, 7}} : std::vector<std::vector<int32_t>>{};
    s.seed = 77 + i;
    specs.push_back(s);
  }
  std::vector<gla_test::Reference> refs(specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    TestProblem tp;
    gla_test::build(specs[i], tp);
    refs[i] = gla_test::compute_reference(tp);
  }
  const std::vector<Isa> isas = test_isas();
  std::vector<int> failures(specs.size(), 0);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < specs.size(); ++t) {
    threads.emplace_back([&, t] {
      TestProblem tp;
      gla_test::build(specs[t], tp);
      for (int round = 0; round < 12; ++round) {
        tp.poison_outputs();
        tp.p.threads = 1 + static_cast<int>((t + static_cast<size_t>(round)) % 3);
        const Isa isa = isas[(t + static_cast<size_t>(round)) % isas.size()];
        const gla::Outcome o = gla::run_attention(tp.p, isa);
        if (o.status != Status::ok || !gla_test::compare(tp, refs[t]).ok) ++failures[t];
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (size_t t = 0; t < specs.size(); ++t) expect(failures[t] == 0, "concurrent caller " + std::to_string(t));
}

// ---------------------------------------------------------------------------------------------

void suite_copy() {
  // gla::parallel_copy, which stages async calls' buffers: every size class (single memcpy, chunks
  // over the pool, streaming stores) at every alignment of source and destination, byte-exact, and
  // not a byte written outside the destination.
  const size_t sizes[] = {0, 1, 15, 64, 1000, (size_t{1} << 20) + 3, (size_t{3} << 20) + 17, (size_t{9} << 20) + 5};
  for (size_t bytes : sizes) {
    for (size_t src_shift : {0, 4, 7}) {
      for (size_t dst_shift : {0, 4, 12}) {
        for (int threads : {1, 2, 3}) {
          std::vector<unsigned char> src(bytes + 16), dst(bytes + 32, 0xAB);
          for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<unsigned char>((i * 131 + 7) >> 3);
          gla::parallel_copy(dst.data() + 8 + dst_shift, src.data() + src_shift, bytes, threads);
          bool ok = std::memcmp(dst.data() + 8 + dst_shift, src.data() + src_shift, bytes) == 0;
          for (size_t i = 0; i < dst.size(); ++i) {
            if ((i < 8 + dst_shift || i >= 8 + dst_shift + bytes) && dst[i] != 0xAB) ok = false;
          }
          expect(ok, "parallel_copy " + std::to_string(bytes) + " bytes, src +" + std::to_string(src_shift) + ", dst +" +
                         std::to_string(dst_shift) + ", " + std::to_string(threads) + " threads");
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------

void suite_random(int count) {
  std::mt19937_64 rng(20240611);
  // Element types and precision from a stream of their own, so that the shapes drawn from rng stay
  // those of the float32-only suite; about half the problems stay float32 throughout.
  std::mt19937_64 type_rng(20261201);
  // The serving options likewise (so that the shapes and types stay those drawn before them).
  std::mt19937_64 serving_rng(20260313);
  const DType dtypes[] = {DType::float32, DType::float16, DType::bfloat16};
  auto pick = [&](int lo, int hi) { return static_cast<int64_t>(std::uniform_int_distribution<int>(lo, hi)(rng)); };
  auto chance = [&](double p) { return std::uniform_real_distribution<double>(0.0, 1.0)(rng) < p; };
  const std::vector<Isa> isas = test_isas();
  const Layout layouts[] = {Layout::bhsd, Layout::bshd, Layout::bhsd_padded, Layout::bshd_padded};

  for (int n = 0; n < count; ++n) {
    Spec s;
    s.name = "random #" + std::to_string(n);
    s.seed = rng();
    s.batch = pick(1, 3);
    s.kv_heads = pick(1, 3);
    s.heads = s.kv_heads * pick(1, 3);
    // Mostly tiny (many tiles of odd sizes with the small configs below), sometimes medium with the
    // default tiles.
    const bool medium = chance(0.08);
    s.seq_len = chance(0.03) ? 0 : medium ? pick(1, 300) : pick(1, 40);
    s.kv_seq_len = chance(0.03) ? 0 : medium ? pick(1, 300) : pick(1, 40);
    s.head_dim = chance(0.1) ? pick(60, 130) : pick(1, 40);
    s.q_layout = layouts[pick(0, 3)];
    s.kv_layout = layouts[pick(0, 3)];
    s.out_layout = layouts[pick(0, 3)];
    s.causal = chance(0.5);
    auto window_bound = [&]() -> int64_t {
      if (chance(0.35)) return -1;
      if (chance(0.1)) return chance(0.5) ? INT64_MAX : 1000;
      return pick(0, 10);
    };
    s.window_left = window_bound();
    s.window_right = window_bound();
    if (s.kv_seq_len > 0 && chance(0.6)) {
      for (int64_t b = 0; b < s.batch; ++b) {
        std::vector<int32_t> g;
        const bool sinks = chance(0.3);
        for (int32_t j = 0; j < s.kv_seq_len; ++j) {
          if ((sinks && j < 4) || chance(0.12)) g.push_back(j);
        }
        s.globals.push_back(g);
      }
    }
    if (chance(0.4)) {
      for (int64_t b = 0; b < s.batch; ++b) {
        const int64_t r = pick(0, 5);
        s.kv_lengths.push_back(static_cast<int32_t>(r == 0 ? 0 : r == 1 ? std::min<int64_t>(1, s.kv_seq_len)
                                                          : r == 2 ? s.kv_seq_len
                                                                   : pick(0, static_cast<int>(s.kv_seq_len))));
      }
    }
    s.with_lse = chance(0.7);
    if (chance(0.1)) {
      s.values = Values::integers;
      s.scale = chance(0.5) ? 1.0f : 0.25f;
    }
    const int block_qs[] = {0, 1, 2, 3, 5, 8, 16};
    const int block_ks[] = {0, 1, 2, 3, 7, 16, 33};
    const int splits[] = {0, 0, 0, 1, 2, 3, 5};
    DriverConfig config;
    if (!medium) {
      config.block_q = block_qs[pick(0, 6)];
      config.block_k = block_ks[pick(0, 6)];
      config.split_k = splits[pick(0, 6)];
    }
    config.min_work_per_thread = chance(0.7) ? 0 : -1;
    const int threads = chance(0.1) ? 16 : static_cast<int>(pick(1, 4));
    if (std::uniform_int_distribution<int>(0, 1)(type_rng) == 1) {
      std::uniform_int_distribution<int> three(0, 2), two(0, 1);
      s.dtype = dtypes[three(type_rng)];
      s.out_dtype = dtypes[three(type_rng)];
      s.precision = two(type_rng) == 1 ? Precision::bfloat16 : Precision::float32;
    }

    // The serving options (problem.h) from a stream of their own too; about half the problems get
    // at least one of them.
    if (std::uniform_int_distribution<int>(0, 1)(serving_rng) == 1) {
      auto serving_chance = [&](double p) { return std::uniform_real_distribution<double>(0.0, 1.0)(serving_rng) < p; };
      auto serving_pick = [&](int64_t lo, int64_t hi) {
        return std::uniform_int_distribution<int64_t>(lo, hi)(serving_rng);
      };
      if (serving_chance(0.5)) {
        for (int64_t b = 0; b < s.batch; ++b) {
          const int64_t r = serving_pick(0, 4);
          s.q_lengths.push_back(static_cast<int32_t>(r == 0 ? 0 : r == 1 ? s.seq_len : serving_pick(0, s.seq_len)));
        }
      }
      if (serving_chance(0.4)) {
        const float caps[] = {0.5f, 2.0f, 5.0f, 20.0f, 50.0f};
        s.softcap = caps[serving_pick(0, 4)];
      }
      if (serving_chance(0.4)) {
        for (int64_t h = 0; h < s.heads; ++h) {
          s.alibi_slopes.push_back(serving_chance(0.15) ? -std::uniform_real_distribution<float>(0.0f, 0.1f)(serving_rng)
                                                        : std::uniform_real_distribution<float>(0.0f, 1.0f)(serving_rng));
        }
      }
      if (serving_chance(0.4)) {
        for (int64_t h = 0; h < s.heads; ++h) {
          s.sink_logits.push_back(std::uniform_real_distribution<float>(-8.0f, 8.0f)(serving_rng));
        }
      }
    }

    TestProblem tp;
    gla_test::build(s, tp);
    const gla::Outcome v = gla::validate_problem(tp.p);
    expect(v.status == Status::ok, gla_test::describe(s) + " is valid: " + v.message);
    if (v.status != Status::ok) continue;
    const gla_test::Reference ref = gla_test::compute_reference(tp);
    for (Isa isa : isas) run_and_compare(tp, ref, isa, threads, config, gla_test::describe(s));
  }
}

// ---------------------------------------------------------------------------------------------

// Element types of the half suite: half inputs with float32 or half outputs at either precision,
// float32 inputs with the bfloat16 products, and float32 inputs rounded into half outputs.
struct Types {
  DType dtype, out_dtype;
  Precision precision;
};

std::vector<Types> half_types() {
  std::vector<Types> types;
  for (DType in : {DType::float16, DType::bfloat16}) {
    for (DType out : {DType::float32, in}) {
      for (Precision prec : {Precision::float32, Precision::bfloat16}) types.push_back({in, out, prec});
    }
  }
  types.push_back({DType::float32, DType::float32, Precision::bfloat16});
  types.push_back({DType::float32, DType::bfloat16, Precision::bfloat16});
  types.push_back({DType::float32, DType::float16, Precision::float32});
  types.push_back({DType::float32, DType::bfloat16, Precision::float32});
  return types;
}

Spec with_types(Spec s, const Types& t) {
  s.dtype = t.dtype;
  s.out_dtype = t.out_dtype;
  s.precision = t.precision;
  return s;
}

std::vector<Spec> half_specs() {
  std::vector<Spec> specs;
  auto base = [](const char* name, int64_t s, int64_t kv, int64_t d) {
    Spec x;
    x.name = name;
    x.seq_len = s;
    x.kv_seq_len = kv;
    x.head_dim = d;
    x.heads = 2;
    x.kv_heads = 2;
    x.seed = static_cast<uint64_t>(s * 7919 + kv * 31 + d) ^ 0x4a1fu;
    return x;
  };
  specs.push_back(base("half full", 37, 37, 64));
  {
    Spec c = base("half causal", 100, 100, 17);
    c.causal = true;
    specs.push_back(c);
    Spec c2 = base("half causal d128", 257, 257, 128);
    c2.causal = true;
    specs.push_back(c2);
  }
  {
    Spec d1 = base("half head_dim 1, seq < kv", 37, 53, 1);
    d1.causal = true;
    specs.push_back(d1);
    Spec d33 = base("half head_dim 33 bshd, seq > kv", 57, 40, 33);
    d33.q_layout = d33.kv_layout = d33.out_layout = Layout::bshd;
    d33.causal = true;
    specs.push_back(d33);
  }
  {
    Spec m = base("half MQA padded d100", 37, 100, 100);
    m.batch = 2;
    m.heads = 2;
    m.kv_heads = 1;
    m.q_layout = Layout::bhsd_padded;
    m.kv_layout = Layout::bshd_padded;
    m.out_layout = Layout::bshd_padded;
    specs.push_back(m);
    Spec p = base("half padded out, seq > kv", 100, 37, 64);
    p.batch = 2;
    p.heads = p.kv_heads = 3;
    p.q_layout = Layout::bshd_padded;
    p.kv_layout = Layout::bhsd_padded;
    p.out_layout = Layout::bhsd_padded;
    p.causal = true;
    specs.push_back(p);
  }
  {
    Spec g = base("half GQA window d128", 100, 100, 128);
    g.heads = 4;
    g.kv_heads = 2;
    g.causal = true;
    g.window_left = 20;
    g.window_right = 0;
    specs.push_back(g);
    Spec a = base("half asymmetric window", 100, 120, 33);
    a.window_left = 5;
    a.window_right = 9;
    specs.push_back(a);
  }
  {
    Spec d = base("half decode", 1, 257, 64);
    d.heads = d.kv_heads = 1;
    specs.push_back(d);
    // 8 query heads on one kv head: decode units stack 8 rows, past few_rows (bfloat16 products).
    Spec dm = base("half decode MQA kv_lengths", 1, 257, 128);
    dm.batch = 3;
    dm.heads = 8;
    dm.kv_heads = 1;
    dm.causal = true;
    dm.kv_lengths = {257, 0, 100};
    specs.push_back(dm);
    Spec sd = base("half speculative decode GQA window sinks", 3, 257, 64);
    sd.heads = 6;
    sd.kv_heads = 2;
    sd.causal = true;
    sd.window_left = 64;
    sd.window_right = 0;
    sd.globals = {{0, 1, 2, 3}};
    specs.push_back(sd);
  }
  {
    // Globals far outside the window: gathered blocks.
    Spec sinks = base("half sliding window, sinks + scattered globals", 257, 257, 33);
    sinks.causal = true;
    sinks.window_left = 16;
    sinks.window_right = 0;
    sinks.globals = {{0, 1, 2, 3, 100, 200}};
    specs.push_back(sinks);
    Spec rows = base("half global query rows seq < kv", 50, 80, 17);
    rows.window_left = 2;
    rows.window_right = 2;
    rows.causal = true;
    rows.globals = {{3, 35, 40, 79}};
    specs.push_back(rows);
  }
  {
    Spec k = base("half kv_lengths with 0, globals per batch", 37, 64, 17);
    k.batch = 4;
    k.heads = 2;
    k.kv_heads = 1;
    k.kv_lengths = {0, 1, 20, 64};
    k.causal = true;
    k.window_left = 6;
    k.window_right = 2;
    k.globals = {{0, 30}, {0}, {5, 19, 40}, {63}};
    specs.push_back(k);
    Spec e = base("half kv_seq_len 0", 5, 0, 17);
    specs.push_back(e);
  }
  {
    Spec n = base("half no lse", 37, 37, 64);
    n.with_lse = false;
    n.causal = true;
    specs.push_back(n);
    // Integers 1..8 and scale 0.5 are exact in both half types and in bfloat16 products.
    Spec big = base("half large logits", 100, 100, 64);
    big.values = Values::integers;
    big.scale = 0.5f;
    specs.push_back(big);
    Spec rise = base("half rising scores", 100, 300, 32);
    rise.scale = 1.0f;
    rise.key_rise = 0.005f;
    specs.push_back(rise);
  }
  return specs;
}

// Defaults at 1 and 2 threads, split-K forced with tiles not multiples of 16 (7 rows: past
// few_rows, so the bfloat16 products run on them), and odd key blocks without split-K.
const std::pair<int, DriverConfig> kHalfVariants[] = {
    {1, DriverConfig{}},
    {2, DriverConfig{}},
    {2, DriverConfig{7, 24, 3, 0}},
    {1, DriverConfig{13, 9, 2, 0}},
    {2, DriverConfig{5, 33, 0, 0}},
};

void run_all(TestProblem& tp, const gla_test::Reference& ref, const std::string& label,
             const std::function<void(const std::string&)>& after = nullptr) {
  for (Isa isa : test_isas()) {
    for (const auto& v : kHalfVariants) {
      run_and_compare(tp, ref, isa, v.first, v.second, label);
      if (after) after(label + " isa=" + gla::isa_name(isa) + " threads=" + std::to_string(v.first) + " " +
                       config_text(v.second));
    }
  }
}

// Sets element `offset` of q (or v) to a float value, in the problem's dtype.
void set_input(TestProblem& tp, bool is_v, int64_t offset, float value, uint16_t half_bits) {
  std::vector<float>& f = is_v ? tp.v : tp.q;
  std::vector<uint16_t>& h = is_v ? tp.v16 : tp.q16;
  f[static_cast<size_t>(offset)] = value;
  if (tp.p.dtype != DType::float32) h[static_cast<size_t>(offset)] = half_bits;
}

void half_validation() {
  // Element counts are in elements of each tensor's dtype, overlaps are found by bytes, and the enums
  // are checked; a rejected problem writes nothing.
  Spec s;
  s.name = "half validate";
  s.batch = 2;
  s.heads = 2;
  s.kv_heads = 2;
  s.seq_len = 5;
  s.kv_seq_len = 7;
  s.head_dim = 8;
  s.dtype = DType::float16;
  s.out_dtype = DType::bfloat16;
  {
    TestProblem tp;
    gla_test::build(s, tp);
    expect(gla::validate_problem(tp.p).status == Status::ok, "half: the base problem is valid");
  }
  const std::pair<const char*, std::function<void(TestProblem&)>> cases[] = {
      {"half q one element short", [](TestProblem& t) { t.p.q_elements -= 1; }},
      {"half k one element short", [](TestProblem& t) { t.p.k_elements -= 1; }},
      {"half v one element short", [](TestProblem& t) { t.p.v_elements -= 1; }},
      {"half out one element short", [](TestProblem& t) { t.p.out_elements -= 1; }},
      {"dtype 3", [](TestProblem& t) { t.p.dtype = static_cast<DType>(3); }},
      {"out_dtype -1", [](TestProblem& t) { t.p.out_dtype = static_cast<DType>(-1); }},
      {"precision 2", [](TestProblem& t) { t.p.precision = static_cast<Precision>(2); }},
      {"half out overlaps half v",
       [](TestProblem& t) {
         t.p.out = t.v16.data() + 1;
         t.p.out_elements = static_cast<int64_t>(t.v16.size()) - 1;
       }},
  };
  for (const auto& c : cases) {
    TestProblem tp;
    gla_test::build(s, tp);
    c.second(tp);
    const gla::Outcome v = gla::validate_problem(tp.p);
    expect(v.status == Status::invalid_argument && std::strlen(v.message) > 0,
           std::string("validate rejects: ") + c.first + " (got status " + std::to_string(static_cast<int>(v.status)) +
               ")");
    if (v.status != Status::invalid_argument) continue;
    tp.poison_outputs();
    const gla::Outcome r = gla::run_attention(tp.p, Isa::scalar);
    bool untouched = true;
    for (uint16_t bits : tp.out16) untouched = untouched && bits == gla_test::kHalfPoison;
    for (float x : tp.lse) untouched = untouched && std::isnan(x);
    expect(r.status == Status::invalid_argument && untouched, std::string("run_attention rejects, writes nothing: ") + c.first);
  }
  // lse (4-byte elements) directly after half q (2-byte elements) in one buffer: valid; moved onto
  // q's last two elements: overlapping.
  {
    TestProblem tp;
    gla_test::build(s, tp);
    std::vector<uint16_t> buffer(tp.q16.size() + 2 * tp.lse.size() + 2);
    std::copy(tp.q16.begin(), tp.q16.end(), buffer.begin());
    tp.p.q = buffer.data();
    tp.p.lse = reinterpret_cast<float*>(buffer.data() + tp.q16.size());  // 4-byte aligned: q16.size() is even
    expect(tp.q16.size() % 2 == 0 && gla::validate_problem(tp.p).status == Status::ok,
           "validate accepts: lse right after the last element of half q");
    tp.p.lse = reinterpret_cast<float*>(buffer.data() + tp.q16.size() - 2);
    expect(gla::validate_problem(tp.p).status == Status::invalid_argument,
           "validate rejects: lse over the last two elements of half q");
  }
}

void suite_half() {
  half_validation();
  const std::vector<Types> types = half_types();
  const std::vector<Spec> specs = half_specs();
  int problems = 0;
  for (const Spec& shape : specs) {
    for (const Types& t : types) {
      const Spec s = with_types(shape, t);
      TestProblem tp;
      gla_test::build(s, tp);
      const gla::Outcome v = gla::validate_problem(tp.p);
      expect(v.status == Status::ok, gla_test::describe(s) + " is valid: " + v.message);
      if (v.status != Status::ok) continue;
      const gla_test::Reference ref = gla_test::compute_reference(tp);
      run_all(tp, ref, gla_test::describe(s));
      ++problems;
    }
  }

  // An infinity in V at key 60 of head 0 (and -inf at key 80, element 0, of head 1), causal: rows
  // before the key never see it and must stay finite and accurate (the blocks holding it run on the
  // float32 path, where masked weights never meet it); the rows that see it get that infinity in
  // that column, the other columns finite.
  const Types inf_types[] = {
      {DType::float32, DType::float32, Precision::bfloat16}, {DType::float32, DType::bfloat16, Precision::bfloat16},
      {DType::float16, DType::float32, Precision::bfloat16}, {DType::float16, DType::float16, Precision::bfloat16},
      {DType::bfloat16, DType::float32, Precision::bfloat16}, {DType::bfloat16, DType::bfloat16, Precision::bfloat16},
      {DType::float16, DType::float16, Precision::float32},  {DType::bfloat16, DType::float32, Precision::float32},
  };
  for (const Types& t : inf_types) {
    for (Layout kv_layout : {Layout::bhsd, Layout::bshd_padded}) {
      Spec s;
      s.name = "half inf in V";
      s.seq_len = s.kv_seq_len = 100;
      s.head_dim = 33;
      s.heads = s.kv_heads = 2;
      s.causal = true;
      s.kv_layout = kv_layout;
      s.seed = 4242;
      s = with_types(s, t);
      TestProblem tp;
      gla_test::build(s, tp);
      const gla::Strides& vs = tp.p.v_strides;
      const float inf = std::numeric_limits<float>::infinity();
      set_input(tp, true, 0 * vs.head + 60 * vs.seq + 5, inf, gla_test::half_inf(t.dtype, false));
      set_input(tp, true, 1 * vs.head + 80 * vs.seq + 0, -inf, gla_test::half_inf(t.dtype, true));
      tp.snapshot_inputs();
      const gla_test::Reference ref = gla_test::compute_reference(tp);
      const int64_t d = s.head_dim;
      expect(std::isinf(ref.out[60 * d + 5]) && ref.out[60 * d + 5] > 0 && std::isfinite(ref.out[59 * d + 5]) &&
                 std::isinf(ref.out[(100 + 80) * d]) && ref.out[(100 + 80) * d] < 0 && std::isfinite(ref.out[60 * d + 4]),
             "inf in V: the reference has the infinities where expected");
      const std::string label = gla_test::describe(s);
      run_all(tp, ref, label, [&](const std::string& where) {
        // Stated on its own, beyond compare: rows that cannot see the infinity are finite.
        bool finite = true;
        for (int64_t h = 0; h < 2; ++h) {
          for (int64_t i = 0; i < (h == 0 ? 60 : 80); ++i) {
            for (int64_t e = 0; e < d; ++e) {
              finite = finite && std::isfinite(tp.out_at(h * tp.p.out_strides.head + i * tp.p.out_strides.seq + e));
            }
          }
        }
        expect(finite, where + ": rows that cannot see the infinity in V are finite");
      });
      ++problems;
    }
  }

  // A NaN in q (a tile row and a global query row) makes exactly that row NaN, lse included.
  // The reference skips NaN scores (it sees them as invisible), so the expectation is set by hand.
  for (const Types& t : half_types()) {
    {
      Spec s;
      s.name = "half NaN in q";
      s.seq_len = s.kv_seq_len = 37;
      s.head_dim = 17;
      s.heads = s.kv_heads = 2;
      s.causal = true;
      s.window_left = 8;
      s.window_right = 0;
      s.globals = {{7}};
      s.seed = 99;
      s = with_types(s, t);
      const DType in = t.dtype;
      TestProblem tp;
      gla_test::build(s, tp);
      const gla::Strides& qs = tp.p.q_strides;
      const float nan = std::numeric_limits<float>::quiet_NaN();
      const uint16_t nan_bits = in == DType::float32 ? 0 : gla_test::half_nan(in);
      set_input(tp, false, 0 * qs.head + 7 * qs.seq + 3, nan, nan_bits);   // global query row 7 of head 0
      set_input(tp, false, 1 * qs.head + 20 * qs.seq + 0, nan, nan_bits);  // tile row 20 of head 1
      tp.snapshot_inputs();
      gla_test::Reference ref = gla_test::compute_reference(tp);
      for (int64_t row : {int64_t{7}, int64_t{37 + 20}}) {
        ref.lse[static_cast<size_t>(row)] = std::numeric_limits<double>::quiet_NaN();
        for (int64_t e = 0; e < s.head_dim; ++e) {
          ref.out[static_cast<size_t>(row * s.head_dim + e)] = std::numeric_limits<double>::quiet_NaN();
        }
      }
      run_all(tp, ref, gla_test::describe(s));
      ++problems;
    }
  }

  // On a CPU with the bfloat16 products, precision bfloat16 must actually have used them: with a
  // float32 out its error is that of bfloat16 operands (about 1e-3), far above float32's (1e-6).
  bool any_bf16 = false;
  for (Isa isa : test_isas()) any_bf16 = any_bf16 || gla::dispatch::has_bf16_products(isa);
  std::printf("half: %d problems x %zu ISAs x %zu variants; bfloat16 products on this CPU: %s\n", problems,
              test_isas().size(), std::size(kHalfVariants), any_bf16 ? "yes" : "no");
  if (any_bf16) {
    expect(g_worst_bf16_products > 1e-4, "precision bfloat16 used the bfloat16 products (worst error " +
                                             std::to_string(g_worst_bf16_products) + ")");
  }
}


// ---------------------------------------------------------------------------------------------
// Serving options (problem.h): per-sequence q_lengths (and the per-sequence alignment
// p = i + kv_length(b) - q_length(b)), softcap, ALiBi slopes and attention sinks, alone and together,
// on every ISA, with split-K and small tiles, float32 and the half types; and their validation.

// Defaults at 1 and 2 threads, small tiles, forced split-K (chunked merges) with odd tiles, and a
// thread count above the problem's natural one.
const std::pair<int, DriverConfig> kServingVariants[] = {
    {1, DriverConfig{}},
    {2, DriverConfig{}},
    {2, DriverConfig{16, 40, 0, 0}},
    {3, DriverConfig{7, 24, 3, 0}},
    {2, DriverConfig{5, 9, 2, 0}},
    {1, DriverConfig{3, 7, 5, 0}},
    {4, DriverConfig{0, 0, 4, 0}},
};

// Beyond compare: padding rows are +0 bit for bit with lse -inf; with sinks, a real row that sees no
// key is exactly 0 with lse = its head's sink.
void check_serving_rows(const TestProblem& tp, const gla_test::Reference& ref, const std::string& where) {
  const gla::AttentionProblem& p = tp.p;
  bool padding_ok = true, sink_rows_ok = true;
  std::string first_bad;
  for (int64_t b = 0; b < p.batch; ++b) {
    const int64_t q_length = gla::reference_q_length(p, b);
    for (int64_t h = 0; h < p.heads; ++h) {
      for (int64_t i = 0; i < p.seq_len; ++i) {
        const int64_t row = (b * p.heads + h) * p.seq_len + i;
        const int64_t base = b * p.out_strides.batch + h * p.out_strides.head + i * p.out_strides.seq;
        const std::string at = "[b=" + std::to_string(b) + ",h=" + std::to_string(h) + ",i=" + std::to_string(i) + "]";
        if (i >= q_length) {
          bool zero = true;
          for (int64_t t = 0; t < p.head_dim; ++t) {
            const size_t e = static_cast<size_t>(base + t);
            if (p.out_dtype == DType::float32) {
              uint32_t bits;
              std::memcpy(&bits, &tp.out[e], sizeof bits);
              zero = zero && bits == 0;
            } else {
              zero = zero && tp.out16[e] == 0;
            }
          }
          const bool lse_ok = p.lse == nullptr || (std::isinf(p.lse[row]) && p.lse[row] < 0);
          if ((!zero || !lse_ok) && padding_ok) first_bad += " padding row" + at + (zero ? "" : " out not +0") + (lse_ok ? "" : " lse not -inf");
          padding_ok = padding_ok && zero && lse_ok;
        } else if (p.sink_logits != nullptr && !ref.sees_no_key.empty() && ref.sees_no_key[static_cast<size_t>(row)] &&
                   !std::isnan(ref.lse[static_cast<size_t>(row)])) {
          bool zero = true;
          for (int64_t t = 0; t < p.head_dim; ++t) zero = zero && tp.out_at(base + t) == 0.0;
          const double sink = p.sink_logits[h];
          const bool lse_ok = p.lse == nullptr || std::fabs(p.lse[row] - sink) <= 1e-6 * std::max(1.0, std::fabs(sink));
          if ((!zero || !lse_ok) && sink_rows_ok) {
            first_bad += " sink row that sees no key" + at + (zero ? "" : " out not 0") +
                         (lse_ok ? "" : " lse " + std::to_string(p.lse[row]) + " != sink " + std::to_string(sink));
          }
          sink_rows_ok = sink_rows_ok && zero && lse_ok;
        }
      }
    }
  }
  expect(padding_ok && sink_rows_ok, where + ": padding / no-key sink rows:" + first_bad);
}

// Every ISA x every variant, compare + check_serving_rows. Returns the number of runs.
int run_serving(TestProblem& tp, const gla_test::Reference& ref, const std::string& label) {
  int runs = 0;
  for (Isa isa : test_isas()) {
    for (const auto& v : kServingVariants) {
      run_and_compare(tp, ref, isa, v.first, v.second, label);
      check_serving_rows(tp, ref, label + " isa=" + gla::isa_name(isa) + " threads=" + std::to_string(v.first) + " " +
                                      config_text(v.second));
      ++runs;
    }
  }
  return runs;
}

// Slopes as ALiBi makes them for n heads (2^(-8 (h + 1) / n)).
std::vector<float> alibi_slopes(int64_t heads) {
  std::vector<float> s;
  for (int64_t h = 0; h < heads; ++h) s.push_back(std::exp2(-8.0f * static_cast<float>(h + 1) / static_cast<float>(heads)));
  return s;
}

std::vector<float> sinks_for(int64_t heads) {
  const float values[] = {0.5f, -1.0f, 2.5f, -7.0f, 4.0f, 0.0f, 12.0f, -30.0f};
  std::vector<float> s;
  for (int64_t h = 0; h < heads; ++h) s.push_back(values[h % 8]);
  return s;
}

std::vector<Spec> serving_specs() {
  std::vector<Spec> specs;
  auto base = [](const char* name, int64_t s, int64_t kv, int64_t d) {
    Spec x;
    x.name = name;
    x.seq_len = s;
    x.kv_seq_len = kv;
    x.head_dim = d;
    x.heads = 2;
    x.kv_heads = 2;
    x.seed = static_cast<uint64_t>(s * 60013 + kv * 307 + d) ^ 0x5e4fu;
    return x;
  };
  auto add = [&](Spec s) { specs.push_back(std::move(s)); };

  // --- q_lengths with kv_lengths ---
  {
    // A padded decode batch: one new token per sequence, sequences of different lengths. Item 1's
    // token sits at position 49 (not 127): with the old alignment its window would hold no key.
    Spec d = base("padded decode", 1, 128, 64);
    d.batch = 2;
    d.heads = 4;
    d.kv_heads = 2;
    d.causal = true;
    d.window_left = 31;
    d.window_right = 0;
    d.kv_lengths = {128, 50};
    d.q_lengths = {1, 1};
    add(d);
    Spec dg = d;
    dg.name = "padded decode, global tokens";
    dg.globals = {{0, 1, 2, 3}};
    add(dg);
    Spec dz = d;
    dz.name = "padded decode, an idle slot";
    dz.batch = 3;
    dz.kv_lengths = {128, 50, 7};
    dz.q_lengths = {1, 0, 1};
    dz.globals = {{0, 1, 2, 3}};
    add(dz);
    // Speculative decode: several new tokens per sequence, padded to seq_len 4; item 2 has fewer
    // keys than queries (its first row sits at position -1 and, causal, sees no key).
    Spec sd = base("padded speculative decode", 4, 128, 32);
    sd.batch = 4;
    sd.heads = 2;
    sd.kv_heads = 1;
    sd.causal = true;
    sd.kv_lengths = {128, 50, 2, 0};
    sd.q_lengths = {4, 2, 3, 1};
    add(sd);
  }
  {
    // Right-padded prefill: q_lengths = kv_lengths, causal (each item's own square).
    Spec pf = base("right-padded prefill", 64, 64, 32);
    pf.batch = 3;
    pf.causal = true;
    pf.kv_lengths = {64, 37, 5};
    pf.q_lengths = {64, 37, 5};
    add(pf);
    Spec pw = pf;
    pw.name = "right-padded prefill, window + globals, GQA bshd";
    pw.heads = 4;
    pw.kv_heads = 2;
    pw.q_layout = pw.kv_layout = pw.out_layout = Layout::bshd;
    pw.window_left = 8;
    pw.window_right = 0;
    pw.globals = {{0, 1}, {0, 20}, {4}};
    add(pw);
    // Chunked prefill: a chunk of new queries against a longer cache, per-sequence lengths.
    Spec ch = base("chunked prefill, q < kv per sequence", 40, 100, 24);
    ch.batch = 3;
    ch.causal = true;
    ch.kv_lengths = {100, 60, 17};
    ch.q_lengths = {40, 13, 17};
    ch.q_layout = Layout::bhsd_padded;
    ch.out_layout = Layout::bshd_padded;
    add(ch);
    Spec nc = ch;
    nc.name = "q_lengths non-causal window";
    nc.causal = false;
    nc.window_left = 5;
    nc.window_right = 3;
    add(nc);
  }
  {
    Spec z = base("q_lengths all 0", 20, 30, 16);
    z.batch = 2;
    z.q_lengths = {0, 0};
    add(z);
    Spec zs = z;
    zs.name = "q_lengths all 0, sinks";
    zs.sink_logits = sinks_for(zs.heads);
    add(zs);
    Spec zm = base("q_lengths 0 and full", 20, 30, 16);
    zm.batch = 3;
    zm.causal = true;
    zm.q_lengths = {0, 20, 7};
    add(zm);
  }

  // --- softcap ---
  {
    Spec big = base("softcap 30, large logits", 100, 100, 64);
    big.values = Values::integers;
    big.scale = 1.0f;
    big.softcap = 30.0f;
    add(big);
    Spec bigc = big;
    bigc.name = "softcap 50, large logits causal window globals";
    bigc.scale = 0.5f;
    bigc.softcap = 50.0f;
    bigc.causal = true;
    bigc.window_left = 10;
    bigc.window_right = 0;
    bigc.globals = {{0, 64}};
    add(bigc);
    Spec small = base("softcap 0.5", 70, 90, 32);
    small.softcap = 0.5f;
    small.scale = 2.0f;
    add(small);
    Spec dec = base("softcap decode", 1, 2048, 64);
    dec.heads = 4;
    dec.kv_heads = 1;
    dec.values = Values::integers;
    dec.scale = 0.25f;
    dec.softcap = 20.0f;
    add(dec);
  }

  // --- ALiBi ---
  {
    Spec c = base("alibi causal", 100, 100, 32);
    c.heads = c.kv_heads = 4;
    c.causal = true;
    c.alibi_slopes = alibi_slopes(4);
    add(c);
    Spec n = base("alibi non-causal seq < kv", 60, 80, 16);
    n.heads = n.kv_heads = 3;
    n.alibi_slopes = {0.5f, 0.03125f, -0.0625f};  // a negative slope too: finite is all that is asked
    add(n);
    Spec n2 = base("alibi non-causal seq > kv", 80, 50, 16);
    n2.alibi_slopes = {0.25f, 1.0f};
    add(n2);
    Spec w = base("alibi windowed", 120, 120, 24);
    w.heads = w.kv_heads = 2;
    w.window_left = 16;
    w.window_right = 4;
    w.globals = {{0, 77}};
    w.alibi_slopes = {0.125f, 0.75f};
    add(w);
    Spec g = base("alibi GQA", 64, 96, 32);
    g.batch = 2;
    g.heads = 6;
    g.kv_heads = 2;
    g.causal = true;
    g.kv_lengths = {96, 40};
    g.alibi_slopes = alibi_slopes(6);
    add(g);
    Spec b = base("alibi bshd padded", 45, 45, 20);
    b.batch = 2;
    b.heads = 4;
    b.kv_heads = 2;
    b.q_layout = Layout::bshd;
    b.kv_layout = Layout::bshd_padded;
    b.out_layout = Layout::bshd;
    b.causal = true;
    b.alibi_slopes = alibi_slopes(4);
    add(b);
    Spec d = base("alibi decode", 1, 3000, 64);
    d.heads = 2;
    d.kv_heads = 1;
    d.alibi_slopes = {0.001f, 0.01f};
    add(d);
  }

  // --- sinks ---
  {
    Spec c = base("sinks causal", 80, 80, 32);
    c.heads = c.kv_heads = 4;
    c.causal = true;
    c.sink_logits = sinks_for(4);
    add(c);
    Spec w = base("sinks sliding window", 100, 100, 16);
    w.heads = w.kv_heads = 8;
    w.causal = true;
    w.window_left = 8;
    w.window_right = 0;
    w.sink_logits = sinks_for(8);  // includes a dominating 12 and a negligible -30
    add(w);
    // Rows that see no key: causal with seq > kv (the first 20 rows sit before key 0), and items
    // with kv_length 0: out 0, lse = sink.
    Spec e = base("sinks, rows that see no key", 50, 30, 16);
    e.batch = 3;
    e.causal = true;
    e.kv_lengths = {30, 0, 10};
    e.sink_logits = sinks_for(2);
    add(e);
    Spec e2 = base("sinks, kv_seq_len 0", 7, 0, 8);
    e2.heads = e2.kv_heads = 3;
    e2.sink_logits = sinks_for(3);
    add(e2);
    Spec d = base("sinks decode split", 1, 4096, 64);
    d.heads = 4;
    d.kv_heads = 2;
    d.batch = 2;
    d.kv_lengths = {4096, 0};
    d.sink_logits = sinks_for(4);
    add(d);
    Spec big = base("sinks, large logits", 60, 60, 32);
    big.values = Values::integers;
    big.scale = 1.0f;
    big.causal = true;
    big.sink_logits = {100.0f, -100.0f};
    add(big);
  }

  // --- all together ---
  {
    Spec a = base("all: q/kv lengths, softcap, alibi, sinks, window, globals, GQA", 48, 96, 40);
    a.batch = 3;
    a.heads = 6;
    a.kv_heads = 3;
    a.causal = true;
    a.window_left = 20;
    a.window_right = 0;
    a.globals = {{0, 1, 2, 3}, {}, {5, 50}};
    a.kv_lengths = {96, 30, 3};
    a.q_lengths = {48, 12, 6};
    a.softcap = 10.0f;
    a.alibi_slopes = alibi_slopes(6);
    a.sink_logits = sinks_for(6);
    a.q_layout = Layout::bshd_padded;
    a.kv_layout = Layout::bhsd_padded;
    a.out_layout = Layout::bshd;
    add(a);
    Spec d = base("all: padded decode", 1, 700, 64);
    d.batch = 3;
    d.heads = 8;
    d.kv_heads = 2;
    d.causal = true;
    d.window_left = 255;
    d.window_right = 0;
    d.globals = {{0, 1, 2, 3}};
    d.kv_lengths = {700, 300, 0};
    d.q_lengths = {1, 1, 1};
    d.values = Values::integers;  // logits in the tens: the softcap bites
    d.scale = 0.125f;
    d.softcap = 30.0f;
    d.alibi_slopes = alibi_slopes(8);
    d.sink_logits = sinks_for(8);
    add(d);
    Spec n = base("all: non-causal, integers", 33, 57, 17);
    n.batch = 2;
    n.values = Values::integers;
    n.scale = 0.5f;
    n.window_left = 6;
    n.window_right = 6;
    n.q_lengths = {20, 33};
    n.kv_lengths = {57, 25};
    n.softcap = 15.0f;
    n.alibi_slopes = {0.3f, 0.05f};
    n.sink_logits = {3.0f, -2.0f};
    add(n);
  }
  return specs;
}

void serving_validation() {
  Spec base;
  base.name = "serving validate";
  base.batch = 2;
  base.heads = 4;
  base.kv_heads = 2;
  base.seq_len = 5;
  base.kv_seq_len = 7;
  base.head_dim = 8;
  base.kv_lengths = {7, 4};
  base.q_lengths = {5, 2};
  base.softcap = 20.0f;
  base.alibi_slopes = alibi_slopes(4);
  base.sink_logits = sinks_for(4);
  base.causal = true;
  {
    TestProblem tp;
    gla_test::build(base, tp);
    const gla::Outcome v = gla::validate_problem(tp.p);
    expect(v.status == Status::ok, std::string("serving: the base problem is valid (") + v.message + ")");
  }
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const std::pair<const char*, std::function<void(TestProblem&)>> cases[] = {
      {"q_length -1", [](TestProblem& t) { t.q_lengths[1] = -1; }},
      {"q_length above seq_len", [](TestProblem& t) { t.q_lengths[0] = 6; }},
      {"q_length INT32_MIN", [](TestProblem& t) { t.q_lengths[1] = INT32_MIN; }},
      {"softcap -1", [](TestProblem& t) { t.p.softcap = -1.0f; }},
      {"softcap -tiny", [](TestProblem& t) { t.p.softcap = -1e-30f; }},
      {"softcap NaN", [nan](TestProblem& t) { t.p.softcap = nan; }},
      {"softcap inf", [inf](TestProblem& t) { t.p.softcap = inf; }},
      {"softcap -inf", [inf](TestProblem& t) { t.p.softcap = -inf; }},
      {"alibi slope NaN", [nan](TestProblem& t) { t.alibi_slopes[3] = nan; }},
      {"alibi slope inf", [inf](TestProblem& t) { t.alibi_slopes[0] = inf; }},
      {"alibi slope -inf", [inf](TestProblem& t) { t.alibi_slopes[2] = -inf; }},
      {"sink NaN", [nan](TestProblem& t) { t.sink_logits[1] = nan; }},
      {"sink inf", [inf](TestProblem& t) { t.sink_logits[3] = inf; }},
      {"sink -inf", [inf](TestProblem& t) { t.sink_logits[0] = -inf; }},
  };
  for (const auto& c : cases) {
    TestProblem tp;
    gla_test::build(base, tp);
    c.second(tp);
    const gla::Outcome v = gla::validate_problem(tp.p);
    expect(v.status == Status::invalid_argument && std::strlen(v.message) > 0,
           std::string("validate rejects: ") + c.first + " (got status " + std::to_string(static_cast<int>(v.status)) +
               ")");
    tp.poison_outputs();
    for (Isa isa : test_isas()) {
      const gla::Outcome r = gla::core::run_attention_configured(tp.p, isa, DriverConfig{7, 24, 3, 0});
      bool untouched = true;
      for (float x : tp.out) untouched = untouched && std::isnan(x);
      for (float x : tp.lse) untouched = untouched && std::isnan(x);
      expect(r.status == Status::invalid_argument && untouched,
             std::string("run_attention rejects, writes nothing: ") + c.first + " isa=" + gla::isa_name(isa));
    }
  }
  // Valid edges: q_lengths at both ends, softcap 0 with the arrays absent, a tiny softcap, slopes and
  // sinks of 0 (the same answer as without them, but through the new path).
  const std::pair<const char*, std::function<void(Spec&)>> valid[] = {
      {"q_lengths 0 and seq_len", [](Spec& s) { s.q_lengths = {0, 5}; }},
      {"softcap 0 (off)", [](Spec& s) { s.softcap = 0.0f; }},
      {"softcap tiny", [](Spec& s) { s.softcap = 1e-3f; }},
      {"softcap large", [](Spec& s) { s.softcap = 1e4f; }},
      {"slopes and sinks 0", [](Spec& s) {
         s.alibi_slopes.assign(4, 0.0f);
         s.sink_logits.assign(4, 0.0f);
       }},
      {"only sinks", [](Spec& s) { s.q_lengths.clear(); s.softcap = 0.0f; s.alibi_slopes.clear(); }},
      {"batch 0", [](Spec& s) { s.batch = 0; s.kv_lengths.clear(); s.q_lengths.clear(); }},
  };
  for (const auto& c : valid) {
    Spec s = base;
    c.second(s);
    TestProblem tp;
    gla_test::build(s, tp);
    const gla::Outcome v = gla::validate_problem(tp.p);
    expect(v.status == Status::ok, std::string("validate accepts: ") + c.first + " (" + v.message + ")");
    if (v.status != Status::ok) continue;
    const gla_test::Reference ref = gla_test::compute_reference(tp);
    run_serving(tp, ref, std::string("serving valid: ") + c.first);
  }
}

void serving_reference_self_checks() {
  // The reference itself, on cases small enough to state by hand.
  const double inf = std::numeric_limits<double>::infinity();
  {
    // Per-sequence alignment: item 1 (kv 50, q 1) has its only row at position 49.
    Spec s;
    s.batch = 2;
    s.seq_len = 1;
    s.kv_seq_len = 128;
    s.kv_lengths = {128, 50};
    s.q_lengths = {1, 1};
    s.causal = true;
    s.window_left = 31;
    s.window_right = 0;
    TestProblem tp;
    gla_test::build(s, tp);
    expect(gla::reference_position(tp.p, 0, 0) == 127 && gla::reference_position(tp.p, 1, 0) == 49,
           "reference: per-sequence positions");
    expect(gla::reference_visible(tp.p, 1, 0, 49) && gla::reference_visible(tp.p, 1, 0, 18) &&
               !gla::reference_visible(tp.p, 1, 0, 17) && !gla::reference_visible(tp.p, 1, 0, 50),
           "reference: the window of item 1 is [18, 49]");
  }
  {
    // One head, one key, one query: every formula by hand.
    Spec s;
    s.seq_len = 2;
    s.kv_seq_len = 3;
    s.head_dim = 1;
    s.q_lengths = {1};  // row 0 at position 3 - 1 = 2; row 1 padding
    s.scale = 1.0f;
    s.softcap = 2.0f;
    s.alibi_slopes = {0.5f};
    s.sink_logits = {1.0f};
    TestProblem tp;
    gla_test::build(s, tp);
    tp.q[0] = 3.0f;
    tp.k[0] = 1.0f;
    tp.k[1] = -1.0f;
    tp.k[2] = 0.5f;
    tp.v[0] = 1.0f;
    tp.v[1] = 2.0f;
    tp.v[2] = 4.0f;
    tp.snapshot_inputs();
    const gla_test::Reference ref = gla_test::compute_reference(tp);
    double sc[3], w[3];
    const double kk[3] = {1.0, -1.0, 0.5}, vv[3] = {1.0, 2.0, 4.0};
    double m = 1.0;
    for (int j = 0; j < 3; ++j) {
      sc[j] = 2.0 * std::tanh(3.0 * kk[j] / 2.0) - 0.5 * std::fabs(2.0 - j);
      m = std::max(m, sc[j]);
    }
    double d = std::exp(1.0 - m), o = 0.0;
    for (int j = 0; j < 3; ++j) {
      w[j] = std::exp(sc[j] - m);
      d += w[j];
      o += w[j] * vv[j];
    }
    expect(std::fabs(ref.out[0] - o / d) < 1e-14 && std::fabs(ref.lse[0] - (m + std::log(d))) < 1e-14,
           "reference: softcap, alibi and sink by hand");
    expect(ref.out[1] == 0.0 && ref.lse[1] == -inf && ref.sees_no_key.size() == 2 && ref.sees_no_key[1] == 1 &&
               ref.sees_no_key[0] == 0,
           "reference: a padding row is 0 / -inf even with sinks");
  }
}

// Each option a case sets must change the reference's answer there (else a backend that ignores it
// would pass): out or lse moves by more than 1e-3 when the option alone is removed.
// (Built again without NaN in the padding query rows, which would hide what q_lengths change.)
void expect_options_matter(const Spec& spec, const std::string& label) {
  Spec clean = spec;
  clean.nan_padding_queries = false;
  TestProblem tp;
  gla_test::build(clean, tp);
  const gla_test::Reference ref = gla_test::compute_reference(tp);
  auto differs = [&](const gla::AttentionProblem& without) {
    std::vector<double> out, lse;
    gla::reference_attention(without, out, lse);
    double worst = 0.0;
    for (size_t i = 0; i < out.size(); ++i) worst = std::max(worst, std::fabs(out[i] - ref.out[i]));
    for (size_t i = 0; i < lse.size(); ++i) {
      if (std::isinf(lse[i]) != std::isinf(ref.lse[i])) return true;
      if (std::isfinite(lse[i])) worst = std::max(worst, std::fabs(lse[i] - ref.lse[i]));
    }
    return worst > 1e-3;
  };
  const gla::AttentionProblem& p = tp.p;
  bool all_padding = p.q_lengths != nullptr;  // then nothing else can matter
  if (p.q_lengths != nullptr) {
    gla::AttentionProblem w = p;
    w.q_lengths = nullptr;
    bool all_full = true;
    for (int64_t b = 0; b < p.batch; ++b) {
      all_full = all_full && p.q_lengths[b] == p.seq_len;
      all_padding = all_padding && p.q_lengths[b] == 0;
    }
    if (!all_full) expect(differs(w), label + ": q_lengths change the answer");
  }
  if (all_padding) return;
  if (p.softcap > 0.0f) {
    gla::AttentionProblem w = p;
    w.softcap = 0.0f;
    expect(differs(w), label + ": softcap changes the answer");
  }
  if (p.alibi_slopes != nullptr) {
    gla::AttentionProblem w = p;
    w.alibi_slopes = nullptr;
    expect(differs(w), label + ": alibi_slopes change the answer");
  }
  if (p.sink_logits != nullptr) {
    gla::AttentionProblem w = p;
    w.sink_logits = nullptr;
    expect(differs(w), label + ": sink_logits change the answer");
  }
}

void suite_serving() {
  serving_reference_self_checks();
  serving_validation();
  int problems = 0, runs = 0;
  const std::vector<Spec> specs = serving_specs();
  for (const Spec& s : specs) {
    TestProblem tp;
    gla_test::build(s, tp);
    const gla::Outcome v = gla::validate_problem(tp.p);
    expect(v.status == Status::ok, gla_test::describe(s) + " is valid: " + v.message);
    if (v.status != Status::ok) continue;
    const gla_test::Reference ref = gla_test::compute_reference(tp);
    expect_options_matter(s, gla_test::describe(s));
    runs += run_serving(tp, ref, gla_test::describe(s));
    ++problems;
  }

  // The same options with half inputs / outputs and the bfloat16 products (the half suite's types).
  std::vector<Spec> half;
  for (const Spec& s : specs) {
    const std::string name = s.name;
    if (name == "padded decode, global tokens" || name == "padded speculative decode" ||
        name == "right-padded prefill, window + globals, GQA bshd" || name == "softcap 30, large logits" ||
        name == "alibi GQA" || name == "sinks, rows that see no key" ||
        name.rfind("all:", 0) == 0) {
      half.push_back(s);
    }
  }
  for (const Spec& shape : half) {
    for (const Types& t : half_types()) {
      Spec s = with_types(shape, t);
      s.name = "half " + shape.name;
      if (s.values == Values::integers && s.scale == 1.0f) s.scale = 0.5f;  // exact in the bfloat16 products too
      TestProblem tp;
      gla_test::build(s, tp);
      const gla::Outcome v = gla::validate_problem(tp.p);
      expect(v.status == Status::ok, gla_test::describe(s) + " is valid: " + v.message);
      if (v.status != Status::ok) continue;
      const gla_test::Reference ref = gla_test::compute_reference(tp);
      run_all(tp, ref, gla_test::describe(s), [&](const std::string& where) { check_serving_rows(tp, ref, where); });
      runs += static_cast<int>(test_isas().size() * std::size(kHalfVariants));
      ++problems;
    }
  }

  // NaN rules with the new options: a NaN in q makes that row NaN (out and lse), sinks or not; a NaN
  // in a padding row of q changes nothing (build puts one in every padding row already).
  for (const Types& t : {Types{DType::float32, DType::float32, Precision::float32},
                         Types{DType::bfloat16, DType::bfloat16, Precision::float32},
                         Types{DType::float16, DType::float32, Precision::bfloat16}}) {
    Spec s;
    s.name = "serving NaN in q";
    s.batch = 2;
    s.seq_len = 30;
    s.kv_seq_len = 40;
    s.head_dim = 17;
    s.heads = s.kv_heads = 2;
    s.causal = true;
    s.window_left = 8;
    s.window_right = 0;
    s.globals = {{7}};
    s.q_lengths = {30, 11};
    s.kv_lengths = {40, 20};
    s.softcap = 5.0f;
    s.alibi_slopes = {0.25f, 0.5f};
    s.sink_logits = {1.0f, -1.0f};
    s.seed = 515;
    s = with_types(s, t);
    TestProblem tp;
    gla_test::build(s, tp);
    const gla::Strides& qs = tp.p.q_strides;
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const uint16_t nan_bits = t.dtype == DType::float32 ? 0 : gla_test::half_nan(t.dtype);
    set_input(tp, false, 0 * qs.batch + 1 * qs.head + 20 * qs.seq + 4, nan, nan_bits);  // b0 h1 row 20
    set_input(tp, false, 1 * qs.batch + 0 * qs.head + 3 * qs.seq + 0, nan, nan_bits);   // b1 h0 row 3
    tp.snapshot_inputs();
    gla_test::Reference ref = gla_test::compute_reference(tp);
    for (int64_t row : {int64_t{1 * 30 + 20}, int64_t{(1 * 2 + 0) * 30 + 3}}) {
      ref.lse[static_cast<size_t>(row)] = std::numeric_limits<double>::quiet_NaN();
      for (int64_t e = 0; e < s.head_dim; ++e) {
        ref.out[static_cast<size_t>(row * s.head_dim + e)] = std::numeric_limits<double>::quiet_NaN();
      }
    }
    run_all(tp, ref, gla_test::describe(s), [&](const std::string& where) { check_serving_rows(tp, ref, where); });
    ++problems;
  }
  std::printf("serving: %d problems, %d runs (ISAs: %s)\n", problems, runs, isa_list(test_isas()).c_str());
}

}  // namespace

int main(int argc, char** argv) {
  const std::string suite = argc > 1 ? argv[1] : "all";
  const int random_count = argc > 2 ? std::atoi(argv[2]) : 1000;
  const auto start = std::chrono::steady_clock::now();
  bool known = false;
  auto run = [&](const char* name, const std::function<void()>& f) {
    if (suite != "all" && suite != name) return;
    known = true;
    const int before = g_checks, failed_before = g_failures;
    const auto t0 = std::chrono::steady_clock::now();
    f();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("suite %-12s %5d checks, %d failed, %.2f s", name, g_checks - before, g_failures - failed_before, s);
    if (g_worst_out > 0.0 || g_worst_lse > 0.0) {
      std::printf(" (worst passing error: out %.2g, lse %.2g)", g_worst_out, g_worst_lse);
    }
    std::printf("\n");
    for (const auto& w : g_by_types) {
      std::printf("  %-36s %5d runs, worst out rel L2 %.2g, lse %.2g", w.first.c_str(), w.second.runs, w.second.out,
                  w.second.lse);
      if (w.first.find("->f32") == std::string::npos) {
        // The half-spacing bound applies where the products are float32.
        if (w.first.find("[VDPBF16PS]") == std::string::npos) std::printf(", half-spacing bound used %.2f", w.second.bound_use);
        std::printf(", misrounded %.2g%%", 100.0 * w.second.misrounded);
      }
      std::printf("\n");
    }
    g_by_types.clear();
    g_worst_out = g_worst_lse = 0.0;
    g_worst_bf16_products = 0.0;
  };
  run("isas", suite_isas);
  run("exp", suite_exp);
  run("validate", suite_validate);
  run("grid", suite_grid);
  run("concurrency", suite_concurrency);
  run("copy", suite_copy);
  run("random", [&] { suite_random(random_count); });
  run("half", suite_half);
  run("serving", suite_serving);
  if (!known) {
    std::printf("unknown suite '%s' (isas exp validate grid concurrency copy random half serving)\n", suite.c_str());
    return 2;
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%d checks, %d failed, %.2f s (ISAs: %s)\n", g_checks, g_failures, s,
              isa_list(test_isas()).c_str());
  return g_failures == 0 ? 0 : 1;
}
