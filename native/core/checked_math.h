// int64 arithmetic that reports overflow instead of wrapping (signed overflow is UB, and a wrapped
// size would turn validate_problem's bounds proof into an out-of-bounds read).
#pragma once

#include <cstdint>
#include <limits>

namespace gla {
namespace core {

inline bool checked_add(int64_t a, int64_t b, int64_t* out) {
#if defined(__GNUC__) || defined(__clang__)
  return !__builtin_add_overflow(a, b, out);
#else
  if ((b > 0 && a > std::numeric_limits<int64_t>::max() - b) ||
      (b < 0 && a < std::numeric_limits<int64_t>::min() - b))
    return false;
  *out = a + b;
  return true;
#endif
}

inline bool checked_mul(int64_t a, int64_t b, int64_t* out) {
#if defined(__GNUC__) || defined(__clang__)
  return !__builtin_mul_overflow(a, b, out);
#else
  if (a != 0 && b != 0) {
    const int64_t max = std::numeric_limits<int64_t>::max();
    const int64_t min = std::numeric_limits<int64_t>::min();
    if (a > 0 ? (b > 0 ? a > max / b : b < min / a) : (b > 0 ? a < min / b : a != 0 && b < max / a))
      return false;
  }
  *out = a * b;
  return true;
#endif
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

}  // namespace core
}  // namespace gla
