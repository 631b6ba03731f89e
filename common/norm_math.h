// The arithmetic every layer of gradnorm shares (docs/numerics.md), written
// once: kernels, client and server (and, through them, the C ABI and Python)
// call these.
//
//   double partial = NanMax(a, b);                  // inf-norm reductions
//   double total = NormFromPartial(p, sum);         // sum of |g|^p -> norm
//   double coef = ClipCoefficient(max_norm, total); // clip when < 1
//
// Header-only and free of other dependencies, so that CUDA device code uses
// the same NanMax.
#ifndef GRADNORM_COMMON_NORM_MATH_H_
#define GRADNORM_COMMON_NORM_MATH_H_

#include <cmath>

#include "common/host_device.h"

namespace gradnorm {

// coef = max_norm / (total_norm + kClipEpsilon), the rule of the API gradnorm
// ports.
inline constexpr double kClipEpsilon = 1e-6;

// The maximum of a and b where NaN wins over everything and +Inf over every
// finite value. std::max, std::fmax and plain comparisons drop NaN, which
// would let a NaN gradient through an inf-norm reduction as a finite norm.
GRADNORM_HOST_DEVICE constexpr double NanMax(double a, double b) {
  return a != a ? a : (b != b || b > a) ? b : a;
}

// Whether p is a norm type gradnorm computes: p > 0, finite or +inf (NaN is
// not).
constexpr bool IsValidNormType(double p) { return p > 0.0; }

// Whether p is the inf-norm (the partial is a max, not a sum).
inline bool IsInfNorm(double p) { return std::isinf(p) && p > 0.0; }

// The norm from the combined partial: the max |g| for the inf-norm, else the
// sum of |g|^p raised to 1/p (exactly the sum for p = 1, sqrt for p = 2).
inline double NormFromPartial(double p, double partial) {
  if (IsInfNorm(p) || p == 1.0) return partial;
  if (p == 2.0) return std::sqrt(partial);
  return std::pow(partial, 1.0 / p);
}

// The factor gradients are scaled by: they are clipped when it is < 1.
constexpr double ClipCoefficient(double max_norm, double total_norm) {
  return max_norm / (total_norm + kClipEpsilon);
}

}  // namespace gradnorm

#endif  // GRADNORM_COMMON_NORM_MATH_H_
