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

// The exact value of element `offset` of a tensor of `dtype`, by arithmetic on the bits (written
// independently of the kernels' conversions, which it checks).
double element(const void* base, DType dtype, int64_t offset) {
  if (dtype == DType::float32) return static_cast<const float*>(base)[offset];
  const uint16_t bits = static_cast<const uint16_t*>(base)[offset];
  const double sign = (bits & 0x8000u) != 0 ? -1.0 : 1.0;
  if (dtype == DType::bfloat16) {
    const int exponent = (bits >> 7) & 0xff;
    const int mantissa = bits & 0x7f;
    if (exponent == 0xff) return mantissa != 0 ? std::nan("") : sign * std::numeric_limits<double>::infinity();
    if (exponent == 0) return sign * std::ldexp(mantissa, -133);
    return sign * std::ldexp(128 + mantissa, exponent - 134);
  }
  const int exponent = (bits >> 10) & 0x1f;
  const int mantissa = bits & 0x3ff;
  if (exponent == 0x1f) return mantissa != 0 ? std::nan("") : sign * std::numeric_limits<double>::infinity();
  if (exponent == 0) return sign * std::ldexp(mantissa, -24);
  return sign * std::ldexp(1024 + mantissa, exponent - 25);
}

}  // namespace

int64_t reference_kv_length(const AttentionProblem& p, int64_t b) {
  return p.kv_lengths != nullptr ? p.kv_lengths[b] : p.kv_seq_len;
}

int64_t reference_q_length(const AttentionProblem& p, int64_t b) {
  return p.q_lengths != nullptr ? p.q_lengths[b] : p.seq_len;
}

int64_t reference_position(const AttentionProblem& p, int64_t b, int64_t i) {
  return i + reference_kv_length(p, b) - reference_q_length(p, b);
}

bool reference_visible(const AttentionProblem& p, int64_t b, int64_t i, int64_t j) {
  if (i >= reference_q_length(p, b)) return false;  // a padding row
  const int64_t position = reference_position(p, b, i);
  if (j >= reference_kv_length(p, b)) return false;
  if (p.causal && j > position) return false;
  // Written as differences so that a huge window cannot overflow.
  const bool in_window = (p.window_left < 0 || position - j <= p.window_left) &&
                         (p.window_right < 0 || j - position <= p.window_right);
  return in_window || is_global(p, b, j) || is_global(p, b, position);
}

double reference_score(const AttentionProblem& p, int64_t b, int64_t h, int64_t i, int64_t j, double dot) {
  double s = static_cast<double>(p.scale) * dot;
  if (p.softcap > 0.0f) {
    const double cap = static_cast<double>(p.softcap);
    s = cap * std::tanh(s / cap);
  }
  if (p.alibi_slopes != nullptr) {
    const double distance = std::fabs(static_cast<double>(reference_position(p, b, i) - j));
    s -= static_cast<double>(p.alibi_slopes[h]) * distance;
  }
  return s;
}

void reference_attention(const AttentionProblem& p, std::vector<double>& out, std::vector<double>& lse) {
  reference_attention(p, out, lse, nullptr);
}

void reference_attention(const AttentionProblem& p, std::vector<double>& out, std::vector<double>& lse,
                         std::vector<char>* sees_no_key) {
  const double inf = std::numeric_limits<double>::infinity();
  const int64_t rows = p.batch * p.heads * p.seq_len;
  out.assign(static_cast<size_t>(rows * p.head_dim), 0.0);
  lse.assign(static_cast<size_t>(rows), -inf);
  if (sees_no_key != nullptr) sees_no_key->assign(static_cast<size_t>(rows), 1);
  std::vector<double> scores(static_cast<size_t>(p.kv_seq_len));
  std::vector<char> visible(static_cast<size_t>(p.kv_seq_len));
  const int64_t group = p.heads / p.kv_heads;

  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t i = 0; i < p.seq_len; ++i) {
      // Padding rows: out 0, lse -inf (as assigned), sinks or not.
      if (i >= reference_q_length(p, b)) continue;
      bool any_visible = false;
      for (int64_t j = 0; j < p.kv_seq_len; ++j) {
        visible[j] = reference_visible(p, b, i, j);
        any_visible = any_visible || visible[j];
      }
      for (int64_t h = 0; h < p.heads; ++h) {
        const int64_t kh = h / group;
        const int64_t row = (b * p.heads + h) * p.seq_len + i;
        if (sees_no_key != nullptr) (*sees_no_key)[row] = any_visible ? 0 : 1;
        const int64_t q_row = b * p.q_strides.batch + h * p.q_strides.head + i * p.q_strides.seq;
        // max over the visible scores (a NaN score never becomes the max, but reaches the sum below).
        double max = -inf;
        for (int64_t j = 0; j < p.kv_seq_len; ++j) {
          if (!visible[j]) continue;
          const int64_t k_row = b * p.k_strides.batch + kh * p.k_strides.head + j * p.k_strides.seq;
          double dot = 0.0;
          for (int64_t t = 0; t < p.head_dim; ++t) {
            dot += element(p.q, p.dtype, q_row + t) * element(p.k, p.dtype, k_row + t);
          }
          scores[j] = reference_score(p, b, h, i, j, dot);
          if (scores[j] > max) max = scores[j];
        }
        const bool has_sink = p.sink_logits != nullptr;
        const double sink = has_sink ? static_cast<double>(p.sink_logits[h]) : -inf;
        if (max == -inf) {
          // No visible key (or none with a score above -inf): out stays 0; lse is the sink's alone.
          if (has_sink) lse[row] = sink;
          continue;
        }
        // m = max(max_j s_j, sink); D = sum_j exp(s_j - m) [+ exp(sink - m)].
        const double m = has_sink && sink > max ? sink : max;
        double sum = 0.0;
        double* o = out.data() + row * p.head_dim;
        for (int64_t j = 0; j < p.kv_seq_len; ++j) {
          if (!visible[j]) continue;
          const double w = std::exp(scores[j] - m);
          sum += w;
          const int64_t v_row = b * p.v_strides.batch + kh * p.v_strides.head + j * p.v_strides.seq;
          for (int64_t t = 0; t < p.head_dim; ++t) o[t] += w * element(p.v, p.dtype, v_row + t);
        }
        if (has_sink) sum += std::exp(sink - m);
        for (int64_t t = 0; t < p.head_dim; ++t) o[t] /= sum;
        lse[row] = m + std::log(sum);
      }
    }
  }
}

}  // namespace gla
