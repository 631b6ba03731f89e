#include "kernels/partial_norm.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/norm_type.h"
#include "common/status_macros.h"
#include "kernels/internal/exact_partial_cpu.h"
#include "kernels/internal/partial_norm_cpu.h"
#include "kernels/internal/partial_norm_on_device.h"

#if defined(GRADNORM_WITH_CUDA)
#include "kernels/internal/partial_norm_cuda.h"
#endif

namespace gradnorm {
namespace {

absl::Status ValidateNormOptions(const PartialNormOptions& options) {
  if (options.num_threads < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_threads is ", options.num_threads,
                     "; expected >= 0 (0 = one per hardware thread)"));
  }
  if (options.chunk_elements < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk_elements is ", options.chunk_elements,
                     "; expected >= 0 (0 = the default)"));
  }
  return absl::OkStatus();
}

bool OnCuda(absl::Span<const GradTensor> tensors) {
  return !tensors.empty() && tensors[0].device.kind == Device::Kind::kCuda;
}

#if !defined(GRADNORM_WITH_CUDA)
absl::Status NoCuda(absl::Span<const GradTensor> tensors) {
  if (tensors.empty()) {
    return absl::FailedPreconditionError(
        "a device result needs CUDA but gradnorm was built without CUDA; "
        "rebuild with a CUDA toolkit or use ComputePartialNorm");
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "tensors are on cuda:", tensors[0].device.index,
      " but gradnorm was built without CUDA; rebuild with a CUDA toolkit or "
      "pass CPU tensors"));
}
#endif

}  // namespace

absl::StatusOr<PartialNorm> ComputePartialNorm(
    absl::Span<const GradTensor> tensors, double p,
    const PartialNormOptions& options) {
  RETURN_IF_ERROR(ValidateNormType(p));
  RETURN_IF_ERROR(ValidateNormOptions(options));
  RETURN_IF_ERROR(ValidateTensors(tensors));
  // The inf-norm is exact already: a max does not depend on order.
  const bool exact = options.exact && !std::isinf(p);
  if (exact && p != 1.0 && p != 2.0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "exact partials are for p = 1, 2 and inf; p = ", p,
        " accumulates in fp64 (deterministic for a fixed layout only): "
        "expected exact = false"));
  }
  if (OnCuda(tensors)) {
#if defined(GRADNORM_WITH_CUDA)
    kernels_internal::CudaNormOptions cuda_options;
    cuda_options.stream = options.cuda_stream;
    cuda_options.per_tensor = options.per_tensor;
    cuda_options.exact = exact;
    return kernels_internal::ComputePartialNormCuda(tensors, p, cuda_options);
#else
    return NoCuda(tensors);
#endif
  }
  kernels_internal::CpuNormOptions cpu_options;
  cpu_options.num_threads = options.num_threads;
  cpu_options.chunk_elements = options.chunk_elements;
  cpu_options.per_tensor = options.per_tensor;
  cpu_options.fp32_accumulation = options.fp32_accumulation;
  cpu_options.parallel_for = &options.parallel_for;
  if (exact) {
    kernels_internal::ExactPartial partial =
        kernels_internal::ComputeExactPartialCpu(tensors, p, cpu_options);
    PartialNorm result;
    result.value = partial.total.RoundToDouble();
    result.nonfinite = !partial.total.finite();
    for (const ExactSum& t : partial.per_tensor) {
      result.per_tensor.push_back(t.RoundToDouble());
    }
    result.exact = std::move(partial.total);
    return result;
  }
  return kernels_internal::ComputePartialNormCpu(tensors, p, cpu_options);
}

absl::Status ComputePartialNormOnDevice(absl::Span<const GradTensor> tensors,
                                        double p, double* device_result,
                                        const PartialNormOptions& options) {
  RETURN_IF_ERROR(ValidateNormType(p));
  RETURN_IF_ERROR(ValidateNormOptions(options));
  RETURN_IF_ERROR(ValidateTensors(tensors));
  if (device_result == nullptr) {
    return absl::InvalidArgumentError(
        "device_result is null; expected a pointer to one double in CUDA "
        "device "
        "memory");
  }
  if (!tensors.empty() && !OnCuda(tensors)) {
    return absl::InvalidArgumentError(
        "ComputePartialNormOnDevice got CPU tensors; expected CUDA tensors "
        "(use "
        "ComputePartialNorm for host memory)");
  }
  if (options.exact && !std::isinf(p)) {
    return absl::InvalidArgumentError(
        "ComputePartialNormOnDevice leaves one fp64 value on the device, not "
        "an exact sum; expected exact = false (ComputePartialNorm returns the "
        "exact partial)");
  }
#if defined(GRADNORM_WITH_CUDA)
  kernels_internal::CudaNormOptions cuda_options;
  cuda_options.stream = options.cuda_stream;
  return kernels_internal::ComputePartialNormOnDeviceCuda(
      tensors, p, device_result, cuda_options);
#else
  return NoCuda(tensors);
#endif
}

absl::Status ScaleInPlace(absl::Span<const GradTensor> tensors, double coef,
                          const ScaleOptions& options) {
  if (!std::isfinite(coef) || coef < 0.0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "scale coefficient is ", coef, "; expected a finite value >= 0"));
  }
  if (options.num_threads < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_threads is ", options.num_threads,
                     "; expected >= 0 (0 = one per hardware thread)"));
  }
  RETURN_IF_ERROR(ValidateTensors(tensors));
  if (OnCuda(tensors)) {
#if defined(GRADNORM_WITH_CUDA)
    return kernels_internal::ScaleInPlaceCuda(tensors, coef,
                                              options.cuda_stream);
#else
    return NoCuda(tensors);
#endif
  }
  kernels_internal::ScaleInPlaceCpu(tensors, coef, options.num_threads,
                                    &options.parallel_for);
  return absl::OkStatus();
}

}  // namespace gradnorm
