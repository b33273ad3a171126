// gla_bench_core: a quick throughput check of the CPU core per ISA and thread count.
//   gla_bench_core [--batch B] [--heads H] [--seq S] [--kv KV] [--dim D] [--causal] [--window L R]
//                  [--layout bhsd|bshd] [--q-layout L] [--kv-layout L] [--out-layout L]
//                  [--reps N] [--threads T,T,...] [--bq N] [--bk N] [--isa NAME] [--peak]
// --peak first prints one thread's AVX-512 FMA peak in CPU time, the yardstick for the lines below.
// GFLOP/s counts 4 * b * h * s * kv * d (QK^T and PV, multiply + add) for full attention, and the
// visible pairs only when masked, so numbers are comparable across masks.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include <ctime>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif

#include "core/driver.h"
#include "gla/attention.h"
#include "reference/reference.h"
#include "tests/test_problem.h"

namespace {

// CPU time of the whole process: on a shared or oversubscribed machine (this project's CI VMs),
// wall time includes time the host gave to others; CPU time / threads is the steadier number.
double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

#if defined(__GNUC__) && defined(__x86_64__)
// The FMA peak of one thread in CPU time, measured the same way as the kernels, so that the
// fraction of peak holds on a loaded machine where wall-clock peaks swing by 2x.
__attribute__((target("avx512f"))) double fma_peak_cpu_gflops() {
  constexpr int kChains = 24;
  const int64_t iters = 20000000;
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(0.001f * static_cast<float>(i));
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    const double c0 = process_cpu_seconds();
    for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 24
      for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
    }
    const double t = process_cpu_seconds() - c0;
    best = std::max(best, 32.0 * kChains * static_cast<double>(iters) / t * 1e-9);
  }
  float sink[16];
  __m512 s = acc[0];
  for (int i = 1; i < kChains; ++i) s = _mm512_add_ps(s, acc[i]);
  _mm512_storeu_ps(sink, s);
  if (sink[0] == 12345.0f) std::printf(" ");
  return best;
}
#endif

}  // namespace

int main(int argc, char** argv) {
  gla_test::Spec s;
  s.name = "bench";
  s.batch = 1;
  s.heads = 8;
  s.kv_heads = 8;
  s.seq_len = 2048;
  s.kv_seq_len = -1;
  s.head_dim = 64;
  s.with_lse = false;
  int reps = 3;
  std::vector<int> thread_counts = {1, 2};
  gla::core::DriverConfig config;
  std::vector<gla::Isa> isas = gla::supported_isas();
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> long long { return i + 1 < argc ? std::atoll(argv[++i]) : 0; };
    if (a == "--batch") s.batch = next();
    else if (a == "--heads") s.heads = s.kv_heads = next();
    else if (a == "--kv-heads") s.kv_heads = next();
    else if (a == "--seq") s.seq_len = next();
    else if (a == "--kv") s.kv_seq_len = next();
    else if (a == "--dim") s.head_dim = next();
    else if (a == "--causal") s.causal = true;
    else if ((a == "--layout" || a == "--q-layout" || a == "--kv-layout" || a == "--out-layout") && i + 1 < argc) {
      // bshd: [batch, seq, heads, dim], as a projection writes it; --layout sets all three tensors.
      const std::string name = argv[++i];
      if (name != "bhsd" && name != "bshd") {
        std::fprintf(stderr, "unknown layout %s (bhsd or bshd)\n", name.c_str());
        return 2;
      }
      const gla_test::Layout layout = name == "bshd" ? gla_test::Layout::bshd : gla_test::Layout::bhsd;
      if (a == "--layout" || a == "--q-layout") s.q_layout = layout;
      if (a == "--layout" || a == "--kv-layout") s.kv_layout = layout;
      if (a == "--layout" || a == "--out-layout") s.out_layout = layout;
    }
#if defined(__GNUC__) && defined(__x86_64__)
    else if (a == "--peak") {
      __builtin_cpu_init();
      if (__builtin_cpu_supports("avx512f")) std::printf("avx512 FMA peak, one thread: %.1f GFLOP/s of CPU time\n", fma_peak_cpu_gflops());
    }
#endif
    else if (a == "--window") { s.window_left = next(); s.window_right = next(); }
    else if (a == "--reps") reps = static_cast<int>(next());
    else if (a == "--bq") config.block_q = static_cast<int>(next());
    else if (a == "--bk") config.block_k = static_cast<int>(next());
    else if (a == "--isa" && i + 1 < argc) {
      gla::Isa isa;
      if (!gla::isa_from_name(argv[++i], &isa)) {
        std::fprintf(stderr, "unknown ISA %s\n", argv[i]);
        return 2;
      }
      isas = {isa};
    } else if (a == "--threads" && i + 1 < argc) {
      thread_counts.clear();
      std::stringstream list(argv[++i]);
      std::string item;
      while (std::getline(list, item, ',')) thread_counts.push_back(std::atoi(item.c_str()));
    } else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  if (s.kv_seq_len < 0) s.kv_seq_len = s.seq_len;

  gla_test::TestProblem tp;
  gla_test::build(s, tp);
  // Visible pairs, counted with the reference rule on batch 0 (cheap next to the runs).
  double pairs = 0;
  for (int64_t i = 0; i < s.seq_len; ++i)
    for (int64_t j = 0; j < s.kv_seq_len; ++j) pairs += gla::reference_visible(tp.p, 0, i, j) ? 1 : 0;
  const double flops = 4.0 * static_cast<double>(s.batch * s.heads) * pairs * static_cast<double>(s.head_dim);

  std::printf("b=%lld h=%lld s=%lld kv=%lld d=%lld causal=%d window=(%lld,%lld)  %.3g GFLOP per call\n",
              (long long)s.batch, (long long)s.heads, (long long)s.seq_len, (long long)s.kv_seq_len,
              (long long)s.head_dim, s.causal ? 1 : 0, (long long)s.window_left, (long long)s.window_right, flops * 1e-9);
  for (gla::Isa isa : isas) {
    for (int threads : thread_counts) {
      tp.p.threads = threads;
      double best = 1e30, best_cpu = 1e30;
      for (int r = 0; r < reps + 1; ++r) {  // first run warms the pool and caches
        const double c0 = process_cpu_seconds();
        const auto t0 = std::chrono::steady_clock::now();
        const gla::Outcome o = gla::core::run_attention_configured(tp.p, isa, config);
        const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const double cpu = process_cpu_seconds() - c0;
        if (o.status != gla::Status::ok) {
          std::printf("%s failed: %s\n", gla::isa_name(isa), o.message);
          return 1;
        }
        if (r > 0) {
          best = std::min(best, t);
          best_cpu = std::min(best_cpu, cpu);
        }
      }
      std::printf("%-7s threads=%d  %9.3f ms  %7.1f GFLOP/s   (cpu %9.3f ms: %7.1f GFLOP/s per busy thread)\n",
                  gla::isa_name(isa), threads, best * 1e3, flops / best * 1e-9, best_cpu * 1e3,
                  flops / best_cpu * 1e-9);
    }
  }
  return 0;
}
