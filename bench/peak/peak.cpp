// Measures this machine's FP32 FMA peak and memory bandwidth, so the bench can say how far each
// kernel is from what the hardware allows; beside it, the throughput of the AVX512_BF16 dot
// product VDPBF16PS (_mm512_dpbf16_ps) and the latency (ns per dependent instruction) of both.
// One compile serves every x86 CPU: the ISA variants use function-level target attributes and are
// chosen at run time with __builtin_cpu_supports (which in GCC and Clang also checks that the OS
// saves the wide registers, via XGETBV); AVX512_BF16 is checked with CPUID and XGETBV directly.
//
// FLOP: one 512-bit FMA = 16 multiply-adds = 32 FLOP; one 512-bit VDPBF16PS = 32 bf16
// multiply-adds into 16 fp32 lanes = 64 FLOP.
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
#include <cpuid.h>
#include <immintrin.h>
#define PEAK_X86 1
// The compiler must know the avx512bf16 target (GCC 10, Clang 9); older ones build without the
// bf16 kernel and the JSON says why.
#if (defined(__clang__) && __clang_major__ >= 9) || (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 10)
#define PEAK_BF16 1
#endif
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

// Sum of the 16 lanes, through memory as above (_mm512_reduce_add_ps trips a GCC 12 warning).
__attribute__((target("avx512f"))) static double hsum512(__m512 v) {
  float t[16];
  _mm512_storeu_ps(t, v);
  double r = 0;
  for (float x : t) r += x;
  return r;
}

// Latency: one dependent chain, LAT_UNROLL instructions per loop trip, each waiting for the last.
constexpr int LAT_UNROLL = 16;

__attribute__((target("avx512f"))) static double fma_avx512_latency(int64_t iters) {
  __m512 acc = _mm512_set1_ps(0.001f);
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < LAT_UNROLL; ++i) acc = _mm512_fmadd_ps(acc, a, b);
  }
  return hsum512(acc);
}

__attribute__((target("avx2,fma"))) static double fma_avx2_latency(int64_t iters) {
  __m256 acc = _mm256_set1_ps(0.001f);
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < LAT_UNROLL; ++i) acc = _mm256_fmadd_ps(acc, a, b);
  }
  float t[8];
  _mm256_storeu_ps(t, acc);
  double r = 0;
  for (float x : t) r += x;
  return r;
}

// AVX512_BF16: CPUID.(EAX=7,ECX=1):EAX bit 5, with AVX512F (CPUID.(7,0):EBX bit 16) and the OS
// saving XMM/YMM/opmask/ZMM state (CPUID.1:ECX.OSXSAVE, then XCR0 bits 1, 2, 5, 6, 7).
// Returns null when usable, else the reason it is not.
static const char* bf16_unusable() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return "CPUID leaf 1 unavailable";
  if (!(c & (1u << 27))) return "OS does not enable XSAVE (CPUID.1:ECX.OSXSAVE = 0)";
  unsigned xlo, xhi;
  __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
  (void)xhi;
  if ((xlo & 0xE6u) != 0xE6u) return "OS does not save the ZMM/opmask registers (XCR0)";
  if (__get_cpuid_max(0, nullptr) < 7) return "no CPUID leaf 7";
  unsigned max_sub;
  __cpuid_count(7, 0, max_sub, b, c, d);
  if (!(b & (1u << 16))) return "CPU lacks AVX512F";
  if (max_sub < 1) return "CPU lacks AVX512_BF16 (no CPUID leaf 7 subleaf 1)";
  __cpuid_count(7, 1, a, b, c, d);
  if (!(a & (1u << 5))) return "CPU lacks AVX512_BF16 (CPUID.(EAX=7,ECX=1):EAX bit 5 = 0)";
#ifndef PEAK_BF16
  return "compiler too old for the avx512bf16 target (needs GCC 10 or Clang 9)";
#else
  return nullptr;
#endif
}

#ifdef PEAK_BF16
// Multiplicand pairs (x, -x): each VDPBF16PS adds x*y - x*y to its lane, so the accumulators stay
// near their start however long the run, and never reach denormals or infinities.
__attribute__((target("avx512bf16,avx512f"))) static __m512bh bf16_pairs(float x) {
  // Even fp32 lanes x, odd ones -x; cvtne2ps packs 16 consecutive lanes into each half, so every
  // bf16 pair (one fp32 lane of the result) is (x, -x).
  const __m512 v = _mm512_mask_blend_ps(0xAAAA, _mm512_set1_ps(x), _mm512_set1_ps(-x));
  return _mm512_cvtne2ps_pbh(v, v);
}

// VDPBF16PS latency (about 6 cycles) x throughput (1-2 per cycle) needs >= 12 chains; 24, as for
// FMA, leaves room for the two multiplicands in the 32 zmm registers.
__attribute__((target("avx512bf16,avx512f"))) static double bf16_dot_avx512(int64_t iters) {
  constexpr int N = 24;
  __m512 acc[N];
  for (int i = 0; i < N; ++i) acc[i] = _mm512_set1_ps(0.001f * (i + 1));
  const __m512bh a = bf16_pairs(0.75f), b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(1e-3f));
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 24
    for (int i = 0; i < N; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  }
  __m512 s = acc[0];
  for (int i = 1; i < N; ++i) s = _mm512_add_ps(s, acc[i]);
  return hsum512(s);
}

__attribute__((target("avx512bf16,avx512f"))) static double bf16_dot_avx512_latency(int64_t iters) {
  __m512 acc = _mm512_set1_ps(0.001f);
  const __m512bh a = bf16_pairs(0.75f), b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(1e-3f));
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < LAT_UNROLL; ++i) acc = _mm512_dpbf16_ps(acc, a, b);
  }
  return hsum512(acc);
}
#endif
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

struct Throughput {
  double one, all;  // GFLOP/s on 1 thread and on `threads` threads
  int attempts;     // runs of the all-threads measurement
};

static Throughput measure_throughput(const FmaKernel& k, int threads, int ms) {
  Throughput t{run_fma(k, 1, ms), 0, 0};
  t.all = t.one;
  // The chains share nothing between cores, so n threads should reach ~n x one thread; a
  // shortfall means another tenant held a vCPU for the whole measurement: measure again.
  while (threads > 1 && t.attempts < 4 && (t.attempts == 0 || t.all < 0.85 * t.one * threads)) {
    t.all = std::max(t.attempts ? t.all : 0.0, run_fma(k, threads, ms));
    ++t.attempts;
  }
  return t;
}

// ns per instruction of a one-chain kernel (flops_per_iter = instructions per trip), one thread.
static double latency_ns(const FmaKernel& k, int ms) { return 1.0 / run_fma(k, 1, std::max(1, ms / 2)); }

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
  std::vector<FmaKernel> kernels, latency;
#ifdef PEAK_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) {
    kernels.push_back({"avx512", 24 * 16 * 2, fma_avx512});
    latency.push_back({"avx512", LAT_UNROLL, fma_avx512_latency});
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    kernels.push_back({"avx2", 12 * 8 * 2, fma_avx2});
    latency.push_back({"avx2", LAT_UNROLL, fma_avx2_latency});
  }
#endif
  std::string fma_json;
  for (size_t i = 0; i < kernels.size(); ++i) {
    Throughput t = measure_throughput(kernels[i], threads, ms);
    double lat = latency_ns(latency[i], ms);
    char buf[256];
    std::snprintf(buf, sizeof buf,
                  "%s\"%s\": {\"gflops_1t\": %.1f, \"gflops_all\": %.1f, \"attempts_all\": %d, \"latency_ns\": %.3f}",
                  i ? ", " : "", kernels[i].name, t.one, t.all, t.attempts, lat);
    fma_json += buf;
  }
  // The bf16 dot product: 512-bit VDPBF16PS, 64 FLOP each, beside the fp32 FMA above.
  std::string bf16_json;
  {
    const char* why = "not an x86 CPU";
#ifdef PEAK_X86
    why = bf16_unusable();
#endif
    if (why) {
      bf16_json = std::string("{\"available\": false, \"reason\": \"") + why + "\"}";
    } else {
#ifdef PEAK_BF16
      Throughput t = measure_throughput({"avx512_bf16", 24 * 64, bf16_dot_avx512}, threads, ms);
      double lat = latency_ns({"avx512_bf16", LAT_UNROLL, bf16_dot_avx512_latency}, ms);
      char buf[256];
      std::snprintf(buf, sizeof buf,
                    "{\"available\": true, \"isa\": \"avx512_bf16\", \"instruction\": \"vdpbf16ps zmm\", "
                    "\"flop_per_instruction\": 64, \"gflops_1t\": %.1f, \"gflops_all\": %.1f, \"attempts_all\": %d, "
                    "\"latency_ns\": %.3f}",
                    t.one, t.all, t.attempts, lat);
      bf16_json = buf;
#endif
    }
  }
  Bandwidth bw = run_bandwidth(mib, threads);
  std::printf(
      "{\"threads\": %d, \"fma\": {%s}, \"bf16_dot\": %s, \"bandwidth\": {\"array_mib\": %zu, \"copy_gbs\": %.2f, "
      "\"triad_gbs\": %.2f, \"read_gbs\": %.2f}, \"sink\": %g}\n",
      threads, fma_json.c_str(), bf16_json.c_str(), mib, bw.copy, bw.triad, bw.read, g_sink.load() > 0 ? 1.0 : 0.0);
  return 0;
}
