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
        const int64_t q_row = b * p.q_strides.batch + h * p.q_strides.head + i * p.q_strides.seq;
        double max = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < p.kv_seq_len; ++j) {
          if (!visible[j]) continue;
          const int64_t k_row = b * p.k_strides.batch + kh * p.k_strides.head + j * p.k_strides.seq;
          double dot = 0.0;
          for (int64_t t = 0; t < p.head_dim; ++t) {
            dot += element(p.q, p.dtype, q_row + t) * element(p.k, p.dtype, k_row + t);
          }
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
          const int64_t v_row = b * p.v_strides.batch + kh * p.v_strides.head + j * p.v_strides.seq;
          for (int64_t t = 0; t < p.head_dim; ++t) o[t] += w * element(p.v, p.dtype, v_row + t);
        }
        for (int64_t t = 0; t < p.head_dim; ++t) o[t] /= sum;
        lse[row] = max + std::log(sum);
      }
    }
  }
}

}  // namespace gla
