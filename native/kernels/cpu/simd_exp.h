// exp() for every ISA, written once in terms of the vocabulary of simd.h.
//
// Cephes-style: x = n ln2 + r with |r| <= ln2/2 (ln2 split in two so the reduction is exact enough),
// a degree-5 polynomial for e^r, then scaling by 2^n. About 1.5 ulp in [-87.3, 88]. Below ln(FLT_MIN)
// the result is flushed to exactly 0, so -inf (a masked score) gives 0 and never NaN; softmax only
// ever asks for exp(x <= 0), where flushing values under 1e-38 cannot change a sum that holds 1.
// exp(NaN) is NaN; +inf is clamped (softmax never asks for it: s - max <= 0 or NaN).
#pragma once

namespace gla {
namespace cpu {
namespace GLA_KERNEL_NS {
namespace simd {

inline V exp(V x) {
  const V lowest = broadcast(-87.33654475f);  // ln(FLT_MIN): 2^n stays a normal number
  const V highest = broadcast(88.0f);         // keeps n <= 127
  // Operand order matters: max/min return their second operand when either is NaN (maxps/minps,
  // and a > b ? a : b in scalar), so x goes second and a NaN argument stays NaN through the clamp,
  // the polynomial and the scaling: exp(NaN) = NaN, which is how a NaN score (or the NaN of
  // +inf - +inf) reaches the row's sum and output instead of being flushed like a masked score.
  const V xc = min(highest, max(lowest, x));
  const V n = round_nearest(mul(xc, broadcast(1.44269504088896341f)));
  V r = fmadd(n, broadcast(-0.693359375f), xc);
  r = fmadd(n, broadcast(2.12194440e-4f), r);
  // 1 + r + r^2 (c2 + c3 r + c4 r^2 + c5 r^3), Horner: 5 FMAs. The coefficients minimise the
  // relative error on |r| <= ln2/2 (1.05e-7 in exact arithmetic, <= 1.8e-7 in float; a degree-7
  // polynomial bought nothing visible in a softmax for three more operations per vector).
  V p = broadcast(8.31251219e-3f);
  p = fmadd(p, r, broadcast(4.18901034e-2f));
  p = fmadd(p, r, broadcast(1.66671138e-1f));
  p = fmadd(p, r, broadcast(4.99992311e-1f));
  p = fmadd(p, r, broadcast(1.0f));
  p = fmadd(p, r, broadcast(1.0f));
  return select_less(x, lowest, zero(), scale_pow2(p, n));
}

}  // namespace simd
}  // namespace GLA_KERNEL_NS
}  // namespace cpu
}  // namespace gla
