// Times the CUDA plugin (through the loader, as the addon calls it) on the shapes of the GPU check:
// full and causal attention, local-global attention at several lengths (to show linear time), and
// decode. Reports kernel time and copy time separately, and checks sampled rows against a double
// computation of the visibility rule (core's reference_visible) so that a fast wrong answer fails.
//
//   gla_cuda_bench [--repeat N] [--scale N] [--results FILE]
// --scale N divides every sequence length by N (a quick run; also how the tests drive it through the
// emulated plugin).
// Each case prints a table row and a "RESULT key=value ..." line (also written to FILE).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "gla/attention.h"
#include "gla/cuda_backend.h"
#include "reference/reference.h"

namespace {

struct BenchCase {
  std::string name;
  int64_t batch, heads, kv_heads, seq, kv, dim;
  bool causal;
  int64_t window_left, window_right;
  int n_globals;  // spread evenly over the sequence
};

struct Buffers {
  std::vector<float> q, k, v, out, lse;
  std::vector<int32_t> offsets, indices;
  gla::AttentionProblem p;
};

void fill(std::vector<float>& x, uint64_t seed) {
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (float& f : x) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    f = static_cast<float>(static_cast<int64_t>(s >> 40) - (1 << 23)) / static_cast<float>(1 << 23);
  }
}

void build(const BenchCase& c, Buffers& b) {
  gla::AttentionProblem& p = b.p;
  p = gla::AttentionProblem{};
  p.batch = c.batch;
  p.heads = c.heads;
  p.kv_heads = c.kv_heads;
  p.seq_len = c.seq;
  p.kv_seq_len = c.kv;
  p.head_dim = c.dim;
  p.scale = 1.0f / std::sqrt(static_cast<float>(c.dim));
  p.causal = c.causal;
  p.window_left = c.window_left;
  p.window_right = c.window_right;
  p.threads = 1;
  // bhsd, contiguous
  p.q_strides = {c.heads * c.seq * c.dim, c.seq * c.dim, c.dim};
  p.out_strides = p.q_strides;
  p.k_strides = {c.kv_heads * c.kv * c.dim, c.kv * c.dim, c.dim};
  p.v_strides = p.k_strides;
  b.q.resize(static_cast<size_t>(c.batch * c.heads * c.seq * c.dim));
  b.k.resize(static_cast<size_t>(c.batch * c.kv_heads * c.kv * c.dim));
  b.v.resize(b.k.size());
  b.out.assign(b.q.size(), 0.0f);
  b.lse.assign(static_cast<size_t>(c.batch * c.heads * c.seq), 0.0f);
  fill(b.q, 1);
  fill(b.k, 2);
  fill(b.v, 3);
  b.offsets.clear();
  b.indices.clear();
  if (c.n_globals > 0) {
    b.offsets.push_back(0);
    for (int64_t bb = 0; bb < c.batch; ++bb) {
      for (int g = 0; g < c.n_globals; ++g) b.indices.push_back(static_cast<int32_t>(c.kv * g / c.n_globals));
      b.offsets.push_back(static_cast<int32_t>(b.indices.size()));
    }
  }
  p.q = b.q.data();
  p.k = b.k.data();
  p.v = b.v.data();
  p.out = b.out.data();
  p.lse = b.lse.data();
  p.q_elements = static_cast<int64_t>(b.q.size());
  p.k_elements = static_cast<int64_t>(b.k.size());
  p.v_elements = static_cast<int64_t>(b.v.size());
  p.out_elements = static_cast<int64_t>(b.out.size());
  p.lse_elements = static_cast<int64_t>(b.lse.size());
  p.global_offsets = b.offsets.empty() ? nullptr : b.offsets.data();
  p.global_indices = b.offsets.empty() ? nullptr : b.indices.data();
}

// Worst relative L2 error over a few rows, each recomputed in double from the rule itself.
double sampled_error(const Buffers& b, int rows) {
  const gla::AttentionProblem& p = b.p;
  double worst = 0.0;
  const int64_t group = p.heads / p.kv_heads;
  for (int n = 0; n < rows; ++n) {
    const int64_t bb = n % p.batch;
    const int64_t h = (n * 7) % p.heads;
    const int64_t i = rows > 1 ? (p.seq_len - 1) * n / (rows - 1) : 0;
    const float* q = static_cast<const float*>(p.q) + bb * p.q_strides.batch + h * p.q_strides.head + i * p.q_strides.seq;
    const int64_t hk = h / group;
    std::vector<double> s;
    std::vector<int64_t> keys;
    double mx = -INFINITY;
    for (int64_t j = 0; j < p.kv_seq_len; ++j) {
      if (!gla::reference_visible(p, bb, i, j)) continue;
      const float* k = static_cast<const float*>(p.k) + bb * p.k_strides.batch + hk * p.k_strides.head + j * p.k_strides.seq;
      double dot = 0.0;
      for (int64_t d = 0; d < p.head_dim; ++d) dot += static_cast<double>(q[d]) * k[d];
      dot *= p.scale;
      s.push_back(dot);
      keys.push_back(j);
      mx = std::max(mx, dot);
    }
    std::vector<double> ref(static_cast<size_t>(p.head_dim), 0.0);
    double sum = 0.0;
    for (size_t t = 0; t < s.size(); ++t) {
      const double w = std::exp(s[t] - mx);
      sum += w;
      const float* v = static_cast<const float*>(p.v) + bb * p.v_strides.batch + hk * p.v_strides.head + keys[t] * p.v_strides.seq;
      for (int64_t d = 0; d < p.head_dim; ++d) ref[static_cast<size_t>(d)] += w * v[d];
    }
    const float* o = static_cast<const float*>(p.out) + bb * p.out_strides.batch + h * p.out_strides.head + i * p.out_strides.seq;
    double e2 = 0.0, r2 = 0.0;
    for (int64_t d = 0; d < p.head_dim; ++d) {
      const double r = sum > 0.0 ? ref[static_cast<size_t>(d)] / sum : 0.0;
      const double diff = std::isfinite(o[d]) ? o[d] - r : 1e30;
      e2 += diff * diff;
      r2 += r * r;
    }
    worst = std::max(worst, r2 > 0.0 ? std::sqrt(e2 / r2) : std::sqrt(e2));
  }
  return worst;
}

// Visible (query, key) pairs, for the arithmetic rate: 4 * dim flops each (two matrix products).
double visible_pairs(const BenchCase& c) {
  double n = 0.0;
  const int64_t off = c.kv - c.seq;
  for (int64_t i = 0; i < c.seq; ++i) {
    const int64_t pos = i + off;
    int64_t hi = c.kv - 1;
    if (c.causal) hi = std::min(hi, pos);
    bool row_global = false;
    for (int g = 0; g < c.n_globals; ++g) row_global |= c.kv * g / c.n_globals == pos;
    int64_t lo = 0;
    int64_t whi = hi;
    if (!row_global) {
      if (c.window_left >= 0) lo = std::max<int64_t>(0, pos - c.window_left);
      if (c.window_right >= 0) whi = std::min(hi, pos + c.window_right);
    }
    int64_t count = std::max<int64_t>(0, whi - lo + 1);
    if (!row_global) {
      for (int g = 0; g < c.n_globals; ++g) {
        const int64_t j = c.kv * g / c.n_globals;
        if (j <= hi && (j < lo || j > whi)) ++count;
      }
    }
    n += static_cast<double>(count);
  }
  return n * static_cast<double>(c.batch * c.heads);
}

double median(std::vector<double> x) {
  std::sort(x.begin(), x.end());
  return x.empty() ? 0.0 : x[x.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int repeat = 5;
  int64_t scale = 1;
  const char* results_path = nullptr;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--repeat") == 0 && i + 1 < argc) repeat = std::max(1, std::atoi(argv[++i]));
    else if (std::strcmp(argv[i], "--scale") == 0 && i + 1 < argc) scale = std::max(1, std::atoi(argv[++i]));
    else if (std::strcmp(argv[i], "--results") == 0 && i + 1 < argc) results_path = argv[++i];
    else {
      std::fprintf(stderr, "usage: gla_cuda_bench [--repeat N] [--scale N] [--results FILE]\n");
      return 2;
    }
  }
  std::setvbuf(stdout, nullptr, _IONBF, 0);  // progress shows even if a case crashes
  const char* why = gla::cuda_unavailable_reason();
  if (why != nullptr) {
    std::printf("CUDA backend unavailable: %s\n", why);
    return 1;
  }
  std::printf("device: %s\n", gla::cuda_device_name());

  std::vector<BenchCase> cases = {
      {"full", 1, 16, 16, 4096, 4096, 64, false, -1, -1, 0},
      {"causal", 1, 16, 16, 4096, 4096, 64, true, -1, -1, 0},
      {"local-global-16k", 1, 16, 16, 16384, 16384, 64, false, 256, 256, 4},
      {"local-global-32k", 1, 16, 16, 32768, 32768, 64, false, 256, 256, 4},
      {"local-global-64k", 1, 16, 16, 65536, 65536, 64, false, 256, 256, 4},
      {"decode", 1, 32, 8, 1, 32768, 128, false, -1, -1, 0},
  };
  for (BenchCase& c : cases) {
    c.seq = std::max<int64_t>(1, c.seq / scale);
    c.kv = std::max<int64_t>(1, c.kv / scale);
  }

  FILE* results = results_path != nullptr ? std::fopen(results_path, "w") : nullptr;
  if (results_path != nullptr && results == nullptr) {
    std::fprintf(stderr, "cannot write %s\n", results_path);
    return 1;
  }
  std::printf("%-18s %10s %10s %10s %10s %10s %9s\n", "case", "kernel ms", "copyin ms", "copyout ms", "total ms",
              "TFLOP/s", "rel err");
  int failures = 0;
  for (const BenchCase& c : cases) {
    Buffers b;
    build(c, b);
    std::vector<double> kernel, copy_in, copy_out, total;
    gla::Outcome o;
    for (int r = 0; r <= repeat; ++r) {  // the first call warms up (allocations, module load)
      gla::CudaTiming t;
      o = gla::run_attention_cuda(b.p, &t);
      if (o.status != gla::Status::ok) break;
      if (r == 0) continue;
      kernel.push_back(t.kernel_ms);
      copy_in.push_back(t.copy_in_ms);
      copy_out.push_back(t.copy_out_ms);
      total.push_back(t.total_ms);
    }
    if (o.status != gla::Status::ok) {
      std::printf("%-18s FAILED: %s\n", c.name.c_str(), o.message);
      ++failures;
      continue;
    }
    const double err = sampled_error(b, 8);
    const double k_ms = median(kernel);
    const double tflops = 4.0 * static_cast<double>(c.dim) * visible_pairs(c) / (k_ms * 1e-3) / 1e12;
    std::printf("%-18s %10.3f %10.3f %10.3f %10.3f %10.2f %9.1e%s\n", c.name.c_str(), k_ms, median(copy_in),
                median(copy_out), median(total), tflops, err, err <= 1e-5 ? "" : "  WRONG");
    if (!(err <= 1e-5)) ++failures;
    char line[512];
    std::snprintf(line, sizeof line,
                  "RESULT name=%s batch=%lld heads=%lld kv_heads=%lld seq=%lld kv=%lld dim=%lld causal=%d "
                  "window_left=%lld window_right=%lld globals=%d kernel_ms=%.4f copy_in_ms=%.4f copy_out_ms=%.4f "
                  "total_ms=%.4f tflops=%.3f rel_err=%.3e\n",
                  c.name.c_str(), static_cast<long long>(c.batch), static_cast<long long>(c.heads),
                  static_cast<long long>(c.kv_heads), static_cast<long long>(c.seq), static_cast<long long>(c.kv),
                  static_cast<long long>(c.dim), c.causal ? 1 : 0, static_cast<long long>(c.window_left),
                  static_cast<long long>(c.window_right), c.n_globals, k_ms, median(copy_in), median(copy_out),
                  median(total), tflops, err);
    std::fputs(line, stdout);
    if (results != nullptr) std::fputs(line, results);
  }
  if (results != nullptr) std::fclose(results);
  return failures == 0 ? 0 : 1;
}
