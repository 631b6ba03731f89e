// The partial norm of a set of gradient tensors: what ComputePartialNorm
// returns, and what its CPU and CUDA implementations compute.
#ifndef GRADNORM_KERNELS_PARTIAL_NORM_RESULT_H_
#define GRADNORM_KERNELS_PARTIAL_NORM_RESULT_H_

#include <optional>
#include <vector>

#include "common/exact_sum.h"

namespace gradnorm {

struct PartialNorm {
  // sum |g|^p (p finite) or max |g| (p = inf); 0 for no elements. NaN when any
  // element is NaN (NaN wins over Inf), +Inf when any element is +-Inf.
  double value = 0.0;
  // True when any element was NaN or +-Inf.
  bool nonfinite = false;
  // Per-tensor partials in input order, when PartialNormOptions::per_tensor
  // (each rounded once when exact).
  std::vector<double> per_tensor;
  // With PartialNormOptions::exact (p = 1 or 2): the partial with no rounding
  // at all; `value` is it rounded to nearest fp64.
  std::optional<ExactSum> exact;
};

}  // namespace gradnorm

#endif  // GRADNORM_KERNELS_PARTIAL_NORM_RESULT_H_
