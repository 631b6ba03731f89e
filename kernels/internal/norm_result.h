// The result type shared by the CPU and CUDA implementations; the public
// ComputePartialNorm copies it into a gradnorm::PartialNorm.
#ifndef GRADNORM_KERNELS_INTERNAL_NORM_RESULT_H_
#define GRADNORM_KERNELS_INTERNAL_NORM_RESULT_H_

#include <cstdint>
#include <vector>

namespace gradnorm {
namespace kernels_internal {

struct NormResult {
  // sum |g|^p, or max |g| for p = inf; NaN wins over Inf.
  double value = 0.0;
  // Any input element NaN or +-Inf.
  bool nonfinite = false;
  // Per-tensor partials in input order, when asked for.
  std::vector<double> per_tensor;
};

}  // namespace kernels_internal
}  // namespace gradnorm

#endif  // GRADNORM_KERNELS_INTERNAL_NORM_RESULT_H_
