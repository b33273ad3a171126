#include "tests/test_problem.h"

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

}  // namespace

void TestProblem::rebind() {
  p.q = q.empty() ? nullptr : q.data();
  p.k = k.empty() ? nullptr : k.data();
  p.v = v.empty() ? nullptr : v.data();
  p.out = out.empty() ? nullptr : out.data();
  p.q_elements = static_cast<int64_t>(q.size());
  p.k_elements = static_cast<int64_t>(k.size());
  p.v_elements = static_cast<int64_t>(v.size());
  p.out_elements = static_cast<int64_t>(out.size());
  p.lse = lse.empty() ? nullptr : lse.data();
  p.lse_elements = static_cast<int64_t>(lse.size());
  p.kv_lengths = kv_lengths.empty() ? nullptr : kv_lengths.data();
  p.global_offsets = offsets.empty() ? nullptr : offsets.data();
  p.global_indices = offsets.empty() ? nullptr : indices.data();
}

void TestProblem::poison_outputs() {
  std::fill(out.begin(), out.end(), kNaN);
  std::fill(lse.begin(), lse.end(), kNaN);
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
  tp.out_logical.assign(tp.out.size(), 0);
  for_each_element(os.strides, s.batch, s.heads, s.seq_len, s.head_dim, [&](int64_t i) { tp.out_logical[i] = 1; });
  tp.lse.assign(s.with_lse ? static_cast<size_t>(s.batch * s.heads * s.seq_len) : 0, kNaN);

  tp.kv_lengths = s.kv_lengths;
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
  tp.q0 = tp.q;
  tp.k0 = tp.k;
  tp.v0 = tp.v;
  tp.kv_lengths0 = tp.kv_lengths;
  tp.offsets0 = tp.offsets;
  tp.indices0 = tp.indices;
}

Reference compute_reference(const TestProblem& tp) {
  Reference r;
  gla::reference_attention(tp.p, r.out, r.lse);
  return r;
}

namespace {

template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

}  // namespace

Check compare(const TestProblem& tp, const Reference& ref, double tolerance) {
  Check c;
  std::ostringstream why;
  auto fail = [&](const std::string& s) {
    if (c.ok) why << s;
    c.ok = false;
  };
  if (!same_bits(tp.q, tp.q0) || !same_bits(tp.k, tp.k0) || !same_bits(tp.v, tp.v0) ||
      !same_bits(tp.kv_lengths, tp.kv_lengths0) || !same_bits(tp.offsets, tp.offsets0) ||
      !same_bits(tp.indices, tp.indices0)) {
    fail("an input was written");
  }
  for (size_t i = 0; i < tp.out.size(); ++i) {
    if (!tp.out_logical[i] && !std::isnan(tp.out[i])) {
      fail("out padding element " + std::to_string(i) + " was written");
      break;
    }
  }
  const gla::AttentionProblem& p = tp.p;
  double err2 = 0.0, ref2 = 0.0;
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t h = 0; h < p.heads; ++h) {
      for (int64_t i = 0; i < p.seq_len; ++i) {
        const int64_t row = (b * p.heads + h) * p.seq_len + i;
        const float* o = static_cast<const float*>(p.out) + b * p.out_strides.batch + h * p.out_strides.head + i * p.out_strides.seq;
        const double* r = ref.out.data() + row * p.head_dim;
        const bool empty_row = std::isinf(ref.lse[row]);
        for (int64_t t = 0; t < p.head_dim; ++t) {
          if (!std::isfinite(o[t])) {
            fail("out[b=" + std::to_string(b) + ",h=" + std::to_string(h) + ",i=" + std::to_string(i) +
                 "] is not finite");
          } else if (empty_row && o[t] != 0.0f) {
            fail("row b=" + std::to_string(b) + ",h=" + std::to_string(h) + ",i=" + std::to_string(i) +
                 " sees no key but out is not 0");
          }
          const double d = o[t] - r[t];
          err2 += d * d;
          ref2 += r[t] * r[t];
        }
        if (p.lse != nullptr) {
          const double l = p.lse[row];
          if (empty_row) {
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
  if (c.out_rel_err > tolerance) fail("out relative L2 error " + std::to_string(c.out_rel_err));
  if (c.lse_err > tolerance) fail("lse error " + std::to_string(c.lse_err));
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
  if (s.key_rise != 0.0f) o << " key_rise " << s.key_rise;
  o << (s.with_lse ? " lse" : "") << (s.values == Values::integers ? " int-logits" : "") << " t" << s.threads
    << " seed" << s.seed << "]";
  return o.str();
}

}  // namespace gla_test
