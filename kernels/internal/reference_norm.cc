#include "kernels/internal/reference_norm.h"

#include <cmath>
#include <cstring>

#include "kernels/internal/half.h"

namespace gradnorm {
namespace kernels_internal {

long double ReferenceElement(const GradTensor& tensor, int64_t i) {
  switch (tensor.dtype) {
    case DType::kFloat32:
      return static_cast<const float*>(tensor.data)[i];
    case DType::kFloat64:
      return static_cast<const double*>(tensor.data)[i];
    case DType::kBFloat16:
      return half_internal::BFloat16BitsToFloat(
          static_cast<const uint16_t*>(tensor.data)[i]);
    case DType::kFloat16:
      return half_internal::HalfBitsToFloat(
          static_cast<const uint16_t*>(tensor.data)[i]);
  }
  return NAN;
}

ReferenceNorm ReferencePartialNorm(absl::Span<const GradTensor> tensors,
                                   double p) {
  ReferenceNorm result;
  bool any_nan = false;
  const long double lp = p;
  for (const GradTensor& t : tensors) {
    for (int64_t i = 0; i < t.numel; ++i) {
      const long double x = std::fabs(ReferenceElement(t, i));
      if (std::isnan(x)) any_nan = true;
      if (!std::isfinite(x)) result.nonfinite = true;
      if (std::isinf(p)) {
        if (x > result.value) result.value = x;
      } else if (p == 1.0) {
        result.value += x;
      } else if (p == 2.0) {
        result.value += x * x;
      } else {
        result.value += std::pow(x, lp);
      }
    }
  }
  if (any_nan) result.value = NAN;
  return result;
}

}  // namespace kernels_internal
}  // namespace gradnorm
