#include "tests/test_problem.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>

#include "reference/reference.h"

namespace gla_test {
namespace {

const float kNaN = std::numeric_limits<float>::quiet_NaN();

struct Shape {
  gla::Strides strides;
  int64_t elements;
};

// Padded layouts leave gaps after each row, head block and batch block; the gaps of inputs hold NaN
// so that any read outside the tensor poisons the result.
Shape make_shape(Layout layout, int64_t b, int64_t h, int64_t s, int64_t d) {
  const bool padded = layout == Layout::bhsd_padded || layout == Layout::bshd_padded;
  const int64_t pad_row = padded ? 3 : 0, pad_mid = padded ? 5 : 0, pad_outer = padded ? 7 : 0;
  gla::Strides st{};
  if (layout == Layout::bhsd || layout == Layout::bhsd_padded) {
    st.seq = d + pad_row;
    st.head = s * st.seq + pad_mid;
    st.batch = h * st.head + pad_outer;
  } else {
    st.head = d + pad_row;
    st.seq = h * st.head + pad_mid;
    st.batch = s * st.seq + pad_outer;
  }
  int64_t elements = 0;
  if (b > 0 && h > 0 && s > 0 && d > 0) elements = (b - 1) * st.batch + (h - 1) * st.head + (s - 1) * st.seq + d + pad_outer;
  return {st, elements};
}

template <typename F>
void for_each_element(const gla::Strides& st, int64_t b, int64_t h, int64_t s, int64_t d, F f) {
  for (int64_t ib = 0; ib < b; ++ib)
    for (int64_t ih = 0; ih < h; ++ih)
      for (int64_t is = 0; is < s; ++is)
        for (int64_t t = 0; t < d; ++t) f(ib * st.batch + ih * st.head + is * st.seq + t);
}

float random_value(std::mt19937_64& rng, Values values, bool positive) {
  if (values == Values::integers) {
    std::uniform_int_distribution<int> dist(1, 8);
    const int x = dist(rng);
    return static_cast<float>(positive || (rng() & 1) ? x : -x);
  }
  std::uniform_real_distribution<float> dist(0.05f, 1.0f);  // non-zero, both signs
  const float x = dist(rng);
  return (rng() & 1) ? x : -x;
}

// The two half formats: explicit mantissa bits, exponent bias, exponent field width.
struct HalfFormat {
  int mantissa_bits;
  int bias;
  int exponent_bits;
  int min_exponent() const { return 1 - bias; }             // of the normal numbers
  int max_exponent() const { return (1 << exponent_bits) - 2 - bias; }
  uint16_t exponent_mask() const { return static_cast<uint16_t>(((1u << exponent_bits) - 1) << mantissa_bits); }
};

HalfFormat format_of(gla::DType dtype) {
  return dtype == gla::DType::bfloat16 ? HalfFormat{7, 127, 8} : HalfFormat{10, 15, 5};
}

template <typename T>
const T* data_or_null(const std::vector<T>& v) {
  return v.empty() ? nullptr : v.data();
}

}  // namespace

const char* dtype_name(gla::DType dtype) {
  switch (dtype) {
    case gla::DType::float32: return "f32";
    case gla::DType::float16: return "f16";
    case gla::DType::bfloat16: return "bf16";
  }
  return "?";
}

uint16_t half_nan(gla::DType dtype) {
  const HalfFormat f = format_of(dtype);
  return static_cast<uint16_t>(f.exponent_mask() | (1u << (f.mantissa_bits - 1)));
}

uint16_t half_inf(gla::DType dtype, bool negative) {
  return static_cast<uint16_t>((negative ? 0x8000u : 0u) | format_of(dtype).exponent_mask());
}

// By value, in double (every float and every half is a double, and x / quantum is exact): the
// multiple of the spacing nearest to |x|, ties to even (nearbyint in the default rounding mode).
uint16_t to_half(float x, gla::DType dtype) {
  const HalfFormat f = format_of(dtype);
  const uint16_t sign = std::signbit(x) ? 0x8000u : 0u;
  if (std::isnan(x)) return static_cast<uint16_t>(sign | half_nan(dtype));
  const double a = std::fabs(static_cast<double>(x));
  if (std::isinf(a)) return static_cast<uint16_t>(sign | f.exponent_mask());
  if (a == 0.0) return sign;
  int e = std::max(std::ilogb(a), f.min_exponent());
  const double quantum = std::ldexp(1.0, e - f.mantissa_bits);
  double n = std::nearbyint(a / quantum);
  const double implicit = std::ldexp(1.0, f.mantissa_bits);
  if (n >= 2.0 * implicit) {  // rounded up into the next binade
    n /= 2.0;
    e += 1;
  }
  if (e > f.max_exponent()) return static_cast<uint16_t>(sign | f.exponent_mask());
  if (n < implicit) return static_cast<uint16_t>(sign | static_cast<uint16_t>(n));  // subnormal (or 0)
  const uint32_t field = static_cast<uint32_t>(e + f.bias);
  return static_cast<uint16_t>(sign | (field << f.mantissa_bits) | static_cast<uint32_t>(n - implicit));
}

double from_half(uint16_t bits, gla::DType dtype) {
  const HalfFormat f = format_of(dtype);
  const double sign = (bits >> 15) != 0 ? -1.0 : 1.0;
  const int field = (bits & 0x7fff) >> f.mantissa_bits;
  const int mantissa = bits & ((1 << f.mantissa_bits) - 1);
  if (field == (1 << f.exponent_bits) - 1) {
    return mantissa != 0 ? std::numeric_limits<double>::quiet_NaN() : sign * std::numeric_limits<double>::infinity();
  }
  if (field == 0) return sign * std::ldexp(static_cast<double>(mantissa), f.min_exponent() - f.mantissa_bits);
  return sign * std::ldexp(static_cast<double>(mantissa + (1 << f.mantissa_bits)), field - f.bias - f.mantissa_bits);
}

double half_min_normal(gla::DType dtype) { return std::ldexp(1.0, format_of(dtype).min_exponent()); }

double half_ulp(double x, gla::DType dtype) {
  const HalfFormat f = format_of(dtype);
  const double a = std::fabs(x);
  int e = a == 0.0 || !std::isfinite(a) ? f.min_exponent() : std::max(std::ilogb(a), f.min_exponent());
  e = std::min(e, f.max_exponent());
  return std::ldexp(1.0, e - f.mantissa_bits);
}

void TestProblem::rebind() {
  const bool half_in = p.dtype != gla::DType::float32;
  const bool half_out = p.out_dtype != gla::DType::float32;
  p.q = half_in ? static_cast<const void*>(data_or_null(q16)) : data_or_null(q);
  p.k = half_in ? static_cast<const void*>(data_or_null(k16)) : data_or_null(k);
  p.v = half_in ? static_cast<const void*>(data_or_null(v16)) : data_or_null(v);
  p.out = half_out ? static_cast<void*>(out16.empty() ? nullptr : out16.data())
                   : static_cast<void*>(out.empty() ? nullptr : out.data());
  p.q_elements = static_cast<int64_t>(half_in ? q16.size() : q.size());
  p.k_elements = static_cast<int64_t>(half_in ? k16.size() : k.size());
  p.v_elements = static_cast<int64_t>(half_in ? v16.size() : v.size());
  p.out_elements = static_cast<int64_t>(half_out ? out16.size() : out.size());
  p.lse = lse.empty() ? nullptr : lse.data();
  p.lse_elements = static_cast<int64_t>(lse.size());
  p.kv_lengths = kv_lengths.empty() ? nullptr : kv_lengths.data();
  p.q_lengths = data_or_null(q_lengths);
  p.alibi_slopes = data_or_null(alibi_slopes);
  p.sink_logits = data_or_null(sink_logits);
  p.global_offsets = offsets.empty() ? nullptr : offsets.data();
  p.global_indices = offsets.empty() ? nullptr : indices.data();
}

void TestProblem::poison_outputs() {
  std::fill(out.begin(), out.end(), kNaN);
  std::fill(out16.begin(), out16.end(), kHalfPoison);
  std::fill(lse.begin(), lse.end(), kNaN);
}

void TestProblem::snapshot_inputs() {
  q0 = q;
  k0 = k;
  v0 = v;
  q160 = q16;
  k160 = k16;
  v160 = v16;
  kv_lengths0 = kv_lengths;
  offsets0 = offsets;
  indices0 = indices;
  q_lengths0 = q_lengths;
  alibi_slopes0 = alibi_slopes;
  sink_logits0 = sink_logits;
}

double TestProblem::out_at(int64_t offset) const {
  if (p.out_dtype == gla::DType::float32) return out[static_cast<size_t>(offset)];
  return from_half(out16[static_cast<size_t>(offset)], p.out_dtype);
}

void build(const Spec& s, TestProblem& tp) {
  std::mt19937_64 rng(s.seed);
  gla::AttentionProblem& p = tp.p;
  p = gla::AttentionProblem{};
  p.batch = s.batch;
  p.heads = s.heads;
  p.kv_heads = s.kv_heads;
  p.seq_len = s.seq_len;
  p.kv_seq_len = s.kv_seq_len;
  p.head_dim = s.head_dim;
  p.scale = s.scale != 0.0f ? s.scale : 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  p.causal = s.causal;
  p.window_left = s.window_left;
  p.window_right = s.window_right;
  p.threads = s.threads;
  p.softcap = s.softcap;
  p.dtype = s.dtype;
  p.out_dtype = s.out_dtype;
  p.precision = s.precision;

  const Shape qs = make_shape(s.q_layout, s.batch, s.heads, s.seq_len, s.head_dim);
  const Shape ks = make_shape(s.kv_layout, s.batch, s.kv_heads, s.kv_seq_len, s.head_dim);
  const Shape vs = make_shape(s.kv_layout, s.batch, s.kv_heads, s.kv_seq_len, s.head_dim);
  const Shape os = make_shape(s.out_layout, s.batch, s.heads, s.seq_len, s.head_dim);
  p.q_strides = qs.strides;
  p.k_strides = ks.strides;
  p.v_strides = vs.strides;
  p.out_strides = os.strides;

  tp.q.assign(static_cast<size_t>(qs.elements), kNaN);
  tp.k.assign(static_cast<size_t>(ks.elements), kNaN);
  tp.v.assign(static_cast<size_t>(vs.elements), kNaN);
  tp.out.assign(static_cast<size_t>(os.elements), kNaN);
  for_each_element(qs.strides, s.batch, s.heads, s.seq_len, s.head_dim,
                   [&](int64_t i) { tp.q[i] = random_value(rng, s.values, true); });
  if (!s.q_lengths.empty() && s.nan_padding_queries) {
    for (int64_t b = 0; b < s.batch; ++b) {
      const int64_t q_length = s.q_lengths[static_cast<size_t>(b)];
      for (int64_t h = 0; h < s.heads; ++h) {
        for (int64_t i = q_length; i < s.seq_len; ++i) {
          for (int64_t t = 0; t < s.head_dim; ++t) {
            tp.q[static_cast<size_t>(b * qs.strides.batch + h * qs.strides.head + i * qs.strides.seq + t)] = kNaN;
          }
        }
      }
    }
  }
  for_each_element(ks.strides, s.batch, s.kv_heads, s.kv_seq_len, s.head_dim,
                   [&](int64_t i) { tp.k[i] = random_value(rng, s.values, false); });
  if (s.key_rise != 0.0f) {
    for (int64_t j = 0; j < s.kv_seq_len; ++j) {
      for_each_element(ks.strides, s.batch, s.kv_heads, 1, s.head_dim,
                       [&](int64_t i) { tp.k[i + j * ks.strides.seq] += s.key_rise * static_cast<float>(j); });
    }
  }
  // Values stay uniform even for integer logits: only the scores need to be exact.
  for_each_element(vs.strides, s.batch, s.kv_heads, s.kv_seq_len, s.head_dim,
                   [&](int64_t i) { tp.v[i] = random_value(rng, Values::uniform, false); });
  // Half inputs: every element (the padding's NaN too) converted, and the float copies set to the
  // exact values the problem then holds.
  auto narrow = [&](std::vector<float>& f, std::vector<uint16_t>& h) {
    h.clear();
    if (s.dtype == gla::DType::float32) return;
    h.resize(f.size());
    for (size_t i = 0; i < f.size(); ++i) {
      h[i] = to_half(f[i], s.dtype);
      f[i] = static_cast<float>(from_half(h[i], s.dtype));
    }
  };
  narrow(tp.q, tp.q16);
  narrow(tp.k, tp.k16);
  narrow(tp.v, tp.v16);
  tp.out_logical.assign(tp.out.size(), 0);
  for_each_element(os.strides, s.batch, s.heads, s.seq_len, s.head_dim, [&](int64_t i) { tp.out_logical[i] = 1; });
  tp.out16.clear();
  if (s.out_dtype != gla::DType::float32) {
    tp.out16.assign(tp.out.size(), kHalfPoison);
    tp.out.clear();
  }
  tp.lse.assign(s.with_lse ? static_cast<size_t>(s.batch * s.heads * s.seq_len) : 0, kNaN);

  tp.kv_lengths = s.kv_lengths;
  tp.q_lengths = s.q_lengths;
  tp.alibi_slopes = s.alibi_slopes;
  tp.sink_logits = s.sink_logits;
  tp.offsets.clear();
  tp.indices.clear();
  if (!s.globals.empty()) {
    tp.offsets.push_back(0);
    for (int64_t b = 0; b < s.batch; ++b) {
      const std::vector<int32_t>& g = s.globals[static_cast<size_t>(b) % s.globals.size()];
      tp.indices.insert(tp.indices.end(), g.begin(), g.end());
      tp.offsets.push_back(static_cast<int32_t>(tp.indices.size()));
    }
    if (tp.indices.empty()) tp.indices.push_back(0);  // keep a valid pointer for an empty CSR
  }
  tp.rebind();
  tp.snapshot_inputs();
}

Reference compute_reference(const TestProblem& tp) {
  Reference r;
  gla::reference_attention(tp.p, r.out, r.lse, &r.sees_no_key);
  return r;
}

namespace {

template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

}  // namespace

double default_tolerance(const gla::AttentionProblem& p) {
  if (p.precision == gla::Precision::bfloat16) return 1e-2;
  if (p.dtype != gla::DType::float32 || p.out_dtype != gla::DType::float32) return 2e-5;
  return 1e-5;
}

Check compare(const TestProblem& tp, const Reference& ref, double tolerance) {
  Check c;
  std::ostringstream why;
  auto fail = [&](const std::string& s) {
    if (c.ok) why << s;
    c.ok = false;
  };
  const gla::AttentionProblem& p = tp.p;
  const double tol = tolerance > 0.0 ? tolerance : default_tolerance(p);
  const bool half_out = p.out_dtype != gla::DType::float32;
  const bool ulp_bound = half_out && p.precision == gla::Precision::float32;
  if (!same_bits(tp.q, tp.q0) || !same_bits(tp.k, tp.k0) || !same_bits(tp.v, tp.v0) || !same_bits(tp.q16, tp.q160) ||
      !same_bits(tp.k16, tp.k160) || !same_bits(tp.v16, tp.v160) || !same_bits(tp.kv_lengths, tp.kv_lengths0) ||
      !same_bits(tp.offsets, tp.offsets0) || !same_bits(tp.indices, tp.indices0) ||
      !same_bits(tp.q_lengths, tp.q_lengths0) || !same_bits(tp.alibi_slopes, tp.alibi_slopes0) ||
      !same_bits(tp.sink_logits, tp.sink_logits0)) {
    fail("an input was written");
  }
  const size_t out_size = half_out ? tp.out16.size() : tp.out.size();
  for (size_t i = 0; i < out_size; ++i) {
    const bool untouched = half_out ? tp.out16[i] == kHalfPoison : std::isnan(tp.out[i]);
    if (!tp.out_logical[i] && !untouched) {
      fail("out padding element " + std::to_string(i) + " was written");
      break;
    }
  }
  auto at = [](int64_t b, int64_t h, int64_t i) {
    return "[b=" + std::to_string(b) + ",h=" + std::to_string(h) + ",i=" + std::to_string(i) + "]";
  };
  double ref_max = 0.0;
  for (double r : ref.out) {
    if (std::isfinite(r)) ref_max = std::max(ref_max, std::fabs(r));
  }
  double err2 = 0.0, ref2 = 0.0, excess2 = 0.0;
  int64_t compared = 0, misrounded = 0;
  std::string worst_at;  // where out_bound_use is largest
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t h = 0; h < p.heads; ++h) {
      for (int64_t i = 0; i < p.seq_len; ++i) {
        const int64_t row = (b * p.heads + h) * p.seq_len + i;
        const int64_t base = b * p.out_strides.batch + h * p.out_strides.head + i * p.out_strides.seq;
        const double* r = ref.out.data() + row * p.head_dim;
        const bool empty_lse = std::isinf(ref.lse[row]) && ref.lse[row] < 0;
        const bool empty_row = empty_lse || (!ref.sees_no_key.empty() && ref.sees_no_key[row] != 0);
        for (int64_t t = 0; t < p.head_dim; ++t) {
          const double o = tp.out_at(base + t);
          if (!std::isfinite(r[t])) {
            const bool match = std::isnan(r[t]) ? std::isnan(o) : o == r[t];
            if (!match) {
              fail("out" + at(b, h, i) + "[" + std::to_string(t) + "] is " + std::to_string(o) + ", the reference " +
                   std::to_string(r[t]));
            }
            continue;
          }
          if (!std::isfinite(o)) {
            fail("out" + at(b, h, i) + " is not finite");
          } else if (empty_row && o != 0.0) {
            fail("row" + at(b, h, i) + " sees no key but out is not 0");
          }
          const double d = o - r[t];
          // What the out dtype cannot hold is no error of the computation: a reference below the
          // smallest normal of a half out (a row whose keys weigh next to nothing beside its sink)
          // may round to the subnormal spacing, and one below 1e-30 (weights past exp's -87 flush,
          // times at most 4096 keys) may come out 0. Only the relative L2 uses this slack.
          const double slack = half_out && std::fabs(r[t]) < half_min_normal(p.out_dtype) ? 0.5 * half_ulp(r[t], p.out_dtype)
                               : std::fabs(r[t]) < 1e-30                                  ? 1e-30
                                                                                          : 0.0;
          const double d_slack = std::max(0.0, std::fabs(d) - slack);
          err2 += d_slack * d_slack;
          ref2 += r[t] * r[t];
          if (half_out && std::isfinite(o)) {
            const double spacing = half_ulp(r[t], p.out_dtype);
            const double excess = std::max(0.0, std::fabs(d) - 0.5 * spacing);
            excess2 += excess * excess;
            const double use = std::fabs(d) / (0.5 * spacing + tol * ref_max);
            if (use > c.out_bound_use) {
              c.out_bound_use = use;
              worst_at = at(b, h, i) + "[" + std::to_string(t) + "]: " + std::to_string(o) + " vs " + std::to_string(r[t]);
            }
            ++compared;
            if (o != from_half(to_half(static_cast<float>(r[t]), p.out_dtype), p.out_dtype)) ++misrounded;
          }
        }
        if (p.lse != nullptr) {
          const double l = p.lse[row];
          if (std::isnan(ref.lse[row])) {
            if (!std::isnan(l)) fail("lse of row " + std::to_string(row) + " is not NaN");
          } else if (empty_lse) {
            if (!(std::isinf(l) && l < 0)) fail("row " + std::to_string(row) + " sees no key but lse is not -inf");
          } else if (!std::isfinite(l)) {
            fail("lse of row " + std::to_string(row) + " is not finite");
          } else {
            const double e = std::fabs(l - ref.lse[row]) / std::max(1.0, std::fabs(ref.lse[row]));
            c.lse_err = std::max(c.lse_err, e);
          }
        }
      }
    }
  }
  c.out_rel_err = ref2 > 0.0 ? std::sqrt(err2 / ref2) : std::sqrt(err2);
  if (ref2 == 0.0 && err2 != 0.0) fail("reference is all zero but out is not");
  if (compared > 0) c.out_misrounded = static_cast<double>(misrounded) / static_cast<double>(compared);
  if (ulp_bound) {
    // Rounded once from a float32 result within tol of the reference: half a spacing plus that.
    if (c.out_bound_use > 1.0) {
      fail("out" + worst_at + " is off by more than half a spacing of " + dtype_name(p.out_dtype) + " + " +
           std::to_string(tol) + " x max|ref| (" + std::to_string(c.out_bound_use) + " x that)");
    }
    const double excess_rel = ref2 > 0.0 ? std::sqrt(excess2 / ref2) : std::sqrt(excess2);
    if (excess_rel > tol) fail("out relative L2 error beyond half a spacing " + std::to_string(excess_rel));
  } else if (c.out_rel_err > tol) {
    fail("out relative L2 error " + std::to_string(c.out_rel_err));
  }
  if (c.lse_err > tol) fail("lse error " + std::to_string(c.lse_err));
  c.what = why.str();
  return c;
}

std::string describe(const Spec& s) {
  static const char* layouts[] = {"bhsd", "bshd", "bhsd+pad", "bshd+pad"};
  std::ostringstream o;
  o << s.name << " [b" << s.batch << " h" << s.heads << "/" << s.kv_heads << " s" << s.seq_len << " kv"
    << s.kv_seq_len << " d" << s.head_dim << " q:" << layouts[static_cast<int>(s.q_layout)]
    << " kv:" << layouts[static_cast<int>(s.kv_layout)] << " out:" << layouts[static_cast<int>(s.out_layout)]
    << (s.causal ? " causal" : "") << " win(" << s.window_left << "," << s.window_right << ")";
  if (!s.globals.empty()) {
    o << " globals{";
    for (size_t b = 0; b < s.globals.size(); ++b) {
      o << (b ? "|" : "");
      for (size_t n = 0; n < s.globals[b].size() && n < 6; ++n) o << (n ? "," : "") << s.globals[b][n];
      if (s.globals[b].size() > 6) o << ",..";
    }
    o << "}";
  }
  if (!s.kv_lengths.empty()) {
    o << " kvlen{";
    for (size_t b = 0; b < s.kv_lengths.size(); ++b) o << (b ? "," : "") << s.kv_lengths[b];
    o << "}";
  }
  if (!s.q_lengths.empty()) {
    o << " qlen{";
    for (size_t b = 0; b < s.q_lengths.size(); ++b) o << (b ? "," : "") << s.q_lengths[b];
    o << "}";
  }
  if (s.softcap > 0.0f) o << " softcap " << s.softcap;
  auto per_head = [&](const char* name, const std::vector<float>& values) {
    if (values.empty()) return;
    o << " " << name << "{";
    for (size_t h = 0; h < values.size() && h < 6; ++h) o << (h ? "," : "") << values[h];
    if (values.size() > 6) o << ",..";
    o << "}";
  };
  per_head("alibi", s.alibi_slopes);
  per_head("sinks", s.sink_logits);
  if (s.key_rise != 0.0f) o << " key_rise " << s.key_rise;
  if (s.dtype != gla::DType::float32 || s.out_dtype != gla::DType::float32 || s.precision != gla::Precision::float32) {
    o << " " << dtype_name(s.dtype) << "->" << dtype_name(s.out_dtype)
      << (s.precision == gla::Precision::bfloat16 ? " prec:bf16" : " prec:f32");
  }
  o << (s.with_lse ? " lse" : "") << (s.values == Values::integers ? " int-logits" : "") << " t" << s.threads
    << " seed" << s.seed << "]";
  return o.str();
}

}  // namespace gla_test
