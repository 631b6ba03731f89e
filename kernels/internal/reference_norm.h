// A deliberately simple scalar reference for the kernels' tests: every element
// widened exactly and accumulated one at a time in long double (x87 extended
// precision on x86-64), |x|^p by powl. Slow; test-only.
//
//   ReferenceNorm ref = ReferencePartialNorm(tensors, 2.0);
//   EXPECT_NEAR(partial.value, static_cast<double>(ref.value), 1e-12 *
//   ref.value);
//
// Thread-safety: pure functions over caller-owned memory.
#ifndef GRADNORM_KERNELS_INTERNAL_REFERENCE_NORM_H_
#define GRADNORM_KERNELS_INTERNAL_REFERENCE_NORM_H_

#include <cstdint>

#include "absl/types/span.h"
#include "kernels/grad_tensor.h"

namespace gradnorm {
namespace kernels_internal {

// Element i of a host tensor, widened exactly.
long double ReferenceElement(const GradTensor& tensor, int64_t i);

struct ReferenceNorm {
  // sum |x|^p, or max |x| for p = +inf with NaN winning over Inf.
  long double value = 0;
  // Any element NaN or +-Inf.
  bool nonfinite = false;
};

// Host tensors only; p > 0 or +inf.
ReferenceNorm ReferencePartialNorm(absl::Span<const GradTensor> tensors,
                                   double p);

}  // namespace kernels_internal
}  // namespace gradnorm

#endif  // GRADNORM_KERNELS_INTERNAL_REFERENCE_NORM_H_
