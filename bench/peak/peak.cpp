// Measures this machine's FP32 FMA peak and memory bandwidth, so the bench can say how far each
// kernel is from what the hardware allows. One compile serves every x86 CPU: the ISA variants use
// function-level target attributes and are chosen at run time with __builtin_cpu_supports (which
// in GCC and Clang also checks that the OS saves the wide registers, via XGETBV).
//
//   c++ -O3 -std=c++17 -pthread peak.cpp -o peak && ./peak [--threads N] [--ms N] [--mib N]
//
// Prints one JSON object on stdout.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define PEAK_X86 1
#endif

#ifdef __linux__
#include <pthread.h>
#include <sched.h>
#endif

using Clock = std::chrono::steady_clock;

static double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Pins the calling thread to the t-th CPU it may run on. Without it, threads started together
// sometimes share one CPU for a whole short run and the "all threads" peak reads as one core's.
static void pin_to(int t) {
#ifdef __linux__
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) return;
  int n = CPU_COUNT(&allowed);
  if (n == 0) return;
  int want = t % n;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &allowed)) continue;
    if (want-- == 0) {
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(cpu, &one);
      pthread_setaffinity_np(pthread_self(), sizeof one, &one);
      return;
    }
  }
#else
  (void)t;
#endif
}

// Defeats dead-code elimination of results without adding work inside the timed loops.
static std::atomic<double> g_sink{0};

#ifdef PEAK_X86
// FMA latency (4-5 cycles) x throughput (2 per cycle) needs >= 10 independent chains; 24 of the
// 32 zmm registers leaves room for the two multiplicands without spilling.
__attribute__((target("avx512f"))) static double fma_avx512(int64_t iters) {
  constexpr int N = 24;
  __m512 acc[N];
  for (int i = 0; i < N; ++i) acc[i] = _mm512_set1_ps(0.001f * i);
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 24
    for (int i = 0; i < N; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  }
  __m512 s = acc[0];
  for (int i = 1; i < N; ++i) s = _mm512_add_ps(s, acc[i]);
  float t[16];
  _mm512_storeu_ps(t, s);
  double r = 0;
  for (float x : t) r += x;
  return r;
}

// 16 ymm registers: 12 accumulators + 2 multiplicands, again enough chains to cover latency.
__attribute__((target("avx2,fma"))) static double fma_avx2(int64_t iters) {
  constexpr int N = 12;
  __m256 acc[N];
  for (int i = 0; i < N; ++i) acc[i] = _mm256_set1_ps(0.001f * i);
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < N; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  }
  __m256 s = acc[0];
  for (int i = 1; i < N; ++i) s = _mm256_add_ps(s, acc[i]);
  float t[8];
  _mm256_storeu_ps(t, s);
  double r = 0;
  for (float x : t) r += x;
  return r;
}
#endif

struct FmaKernel {
  const char* name;
  double flops_per_iter;
  double (*fn)(int64_t);
};

// Runs fn on `threads` threads at once, best of 9 runs of about ms/3 milliseconds, in GFLOP/s.
// Each thread does the same fixed iteration count, so the slowest thread sets the time. Many
// short runs rather than a few long ones: on a shared machine another process or the hypervisor
// sometimes holds a CPU for hundreds of milliseconds, and the best run is one it left alone.
static double run_fma(const FmaKernel& k, int threads, int ms) {
  // Calibrate the iteration count on one thread so that one run lasts about ms / 3.
  int64_t iters = 1 << 16;
  for (;;) {
    auto t0 = Clock::now();
    g_sink = g_sink + k.fn(iters);
    double s = seconds_since(t0);
    if (s > 0.02) {
      iters = static_cast<int64_t>(iters * (ms / 3000.0) / s) + 1;
      break;
    }
    iters *= 4;
  }
  double best = 0;
  for (int rep = 0; rep < 9; ++rep) {
    std::vector<std::thread> pool;
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    std::vector<double> out(threads);
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        pin_to(t);
        ready++;
        while (!go.load()) {
        }
        out[t] = k.fn(iters);
      });
    }
    while (ready.load() < threads) {
    }
    auto t0 = Clock::now();
    go = true;
    for (auto& th : pool) th.join();
    double s = seconds_since(t0);
    for (double x : out) g_sink = g_sink + x;
    best = std::max(best, k.flops_per_iter * iters * threads / s / 1e9);
  }
  return best;
}

// Splits [0, n) across threads and runs body(begin, end) on each; returns the wall time.
static double parallel_for(size_t n, int threads, const std::function<void(size_t, size_t)>& body) {
  std::vector<std::thread> pool;
  auto t0 = Clock::now();
  for (int t = 0; t < threads; ++t) {
    size_t b = n * t / threads, e = n * (t + 1) / threads;
    pool.emplace_back([=, &body] {
      pin_to(t);
      body(b, e);
    });
  }
  for (auto& th : pool) th.join();
  return seconds_since(t0);
}

struct Bandwidth {
  double copy, triad, read;
};

// STREAM conventions: copy counts 2 arrays, triad 3, read 1; write-allocate traffic is not counted.
// Arrays are first touched by the thread that later streams them, so pages land on its node.
static Bandwidth run_bandwidth(size_t mib_per_array, int threads) {
  const size_t n = mib_per_array * 1024 * 1024 / sizeof(float);
  float* a = static_cast<float*>(std::aligned_alloc(64, n * sizeof(float)));
  float* b = static_cast<float*>(std::aligned_alloc(64, n * sizeof(float)));
  float* c = static_cast<float*>(std::aligned_alloc(64, n * sizeof(float)));
  if (!a || !b || !c) {
    std::fprintf(stderr, "peak: cannot allocate %zu MiB arrays\n", mib_per_array);
    std::exit(1);
  }
  parallel_for(n, threads, [&](size_t s, size_t e) {
    for (size_t i = s; i < e; ++i) {
      a[i] = 1.0f;
      b[i] = 2.0f + (i & 7);
      c[i] = 0.5f;
    }
  });
  const double bytes = static_cast<double>(n) * sizeof(float);
  Bandwidth best{0, 0, 0};
  std::vector<double> partial(threads);
  for (int rep = 0; rep < 5; ++rep) {
    double t = parallel_for(n, threads, [&](size_t s, size_t e) {
      for (size_t i = s; i < e; ++i) c[i] = a[i];
    });
    best.copy = std::max(best.copy, 2 * bytes / t / 1e9);
    t = parallel_for(n, threads, [&](size_t s, size_t e) {
      const float q = 3.0f;
      for (size_t i = s; i < e; ++i) a[i] = b[i] + q * c[i];
    });
    best.triad = std::max(best.triad, 3 * bytes / t / 1e9);
    t = parallel_for(n, threads, [&](size_t s, size_t e) {
      // Several partial sums so the loop is bound by loads, not by one add chain.
      float acc[16] = {0};
      size_t i = s;
      for (; i + 16 <= e; i += 16)
        for (int j = 0; j < 16; ++j) acc[j] += b[i + j];
      for (; i < e; ++i) acc[0] += b[i];
      float sum = 0;
      for (float x : acc) sum += x;
      partial[(s * threads) / n] = sum;
    });
    best.read = std::max(best.read, bytes / t / 1e9);
  }
  for (double x : partial) g_sink = g_sink + x;
  g_sink = g_sink + a[n / 2] + c[n / 3];
  std::free(a);
  std::free(b);
  std::free(c);
  return best;
}

int main(int argc, char** argv) {
  int ms = 300;
  size_t mib = 256;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--ms") && i + 1 < argc) ms = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--mib") && i + 1 < argc) mib = std::strtoul(argv[++i], nullptr, 10);
    else if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) threads = std::atoi(argv[++i]);
  }
  std::vector<FmaKernel> kernels;
#ifdef PEAK_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) kernels.push_back({"avx512", 24 * 16 * 2, fma_avx512});
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) kernels.push_back({"avx2", 12 * 8 * 2, fma_avx2});
#endif
  std::string fma_json;
  for (size_t i = 0; i < kernels.size(); ++i) {
    double one = run_fma(kernels[i], 1, ms);
    double all = one;
    int attempts = 0;
    // FMA chains share nothing between cores, so n threads should reach ~n x one thread; a
    // shortfall means another tenant held a vCPU for the whole measurement: measure again.
    while (threads > 1 && attempts < 4 && (attempts == 0 || all < 0.85 * one * threads)) {
      all = std::max(attempts ? all : 0.0, run_fma(kernels[i], threads, ms));
      ++attempts;
    }
    char buf[256];
    std::snprintf(buf, sizeof buf,
                  "%s\"%s\": {\"gflops_1t\": %.1f, \"gflops_all\": %.1f, \"attempts_all\": %d}", i ? ", " : "",
                  kernels[i].name, one, all, attempts);
    fma_json += buf;
  }
  Bandwidth bw = run_bandwidth(mib, threads);
  std::printf(
      "{\"threads\": %d, \"fma\": {%s}, \"bandwidth\": {\"array_mib\": %zu, \"copy_gbs\": %.2f, "
      "\"triad_gbs\": %.2f, \"read_gbs\": %.2f}, \"sink\": %g}\n",
      threads, fma_json.c_str(), mib, bw.copy, bw.triad, bw.read, g_sink.load() > 0 ? 1.0 : 0.0);
  return 0;
}
