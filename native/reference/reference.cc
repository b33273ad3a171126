#include "reference/reference.h"

#include <cmath>
#include <limits>

namespace gla {
namespace {

bool is_global(const AttentionProblem& p, int64_t b, int64_t position) {
  if (p.global_offsets == nullptr) return false;
  for (int32_t n = p.global_offsets[b]; n < p.global_offsets[b + 1]; ++n) {
    if (p.global_indices[n] == position) return true;
  }
  return false;
}

}  // namespace

bool reference_visible(const AttentionProblem& p, int64_t b, int64_t i, int64_t j) {
  const int64_t position = i + p.kv_seq_len - p.seq_len;
  const int64_t kv_length = p.kv_lengths != nullptr ? p.kv_lengths[b] : p.kv_seq_len;
  if (j >= kv_length) return false;
  if (p.causal && j > position) return false;
  // Written as differences so that a huge window cannot overflow.
  const bool in_window = (p.window_left < 0 || position - j <= p.window_left) &&
                         (p.window_right < 0 || j - position <= p.window_right);
  return in_window || is_global(p, b, j) || is_global(p, b, position);
}

void reference_attention(const AttentionProblem& p, std::vector<double>& out, std::vector<double>& lse) {
  const int64_t rows = p.batch * p.heads * p.seq_len;
  out.assign(static_cast<size_t>(rows * p.head_dim), 0.0);
  lse.assign(static_cast<size_t>(rows), -std::numeric_limits<double>::infinity());
  std::vector<double> scores(static_cast<size_t>(p.kv_seq_len));
  std::vector<char> visible(static_cast<size_t>(p.kv_seq_len));
  const int64_t group = p.heads / p.kv_heads;

  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t i = 0; i < p.seq_len; ++i) {
      for (int64_t j = 0; j < p.kv_seq_len; ++j) visible[j] = reference_visible(p, b, i, j);
      for (int64_t h = 0; h < p.heads; ++h) {
        const int64_t kh = h / group;
        const float* q = p.q + b * p.q_strides.batch + h * p.q_strides.head + i * p.q_strides.seq;
        double max = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < p.kv_seq_len; ++j) {
          if (!visible[j]) continue;
          const float* k = p.k + b * p.k_strides.batch + kh * p.k_strides.head + j * p.k_strides.seq;
          double dot = 0.0;
          for (int64_t t = 0; t < p.head_dim; ++t) dot += static_cast<double>(q[t]) * k[t];
          scores[j] = static_cast<double>(p.scale) * dot;
          if (scores[j] > max) max = scores[j];
        }
        const int64_t row = (b * p.heads + h) * p.seq_len + i;
        if (max == -std::numeric_limits<double>::infinity()) continue;  // no visible key
        double sum = 0.0;
        double* o = out.data() + row * p.head_dim;
        for (int64_t j = 0; j < p.kv_seq_len; ++j) {
          if (!visible[j]) continue;
          const double w = std::exp(scores[j] - max);
          sum += w;
          const float* v = p.v + b * p.v_strides.batch + kh * p.v_strides.head + j * p.v_strides.seq;
          for (int64_t t = 0; t < p.head_dim; ++t) o[t] += w * v[t];
        }
        for (int64_t t = 0; t < p.head_dim; ++t) o[t] /= sum;
        lse[row] = max + std::log(sum);
      }
    }
  }
}

}  // namespace gla
