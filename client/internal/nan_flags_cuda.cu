#include "client/internal/nan_flags.h"

namespace gradnorm {
namespace client_internal {
namespace {

constexpr int kThreads = 128;

__global__ void MarkNaNKernel(const double* values, double* flags,
                              size_t count) {
  const size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  if (i < count) flags[i] = isnan(values[i]) ? 1.0 : 0.0;
}

__global__ void ApplyNaNKernel(double* values, const double* flags,
                               size_t count) {
  const size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  if (i < count && flags[i] > 0.0)
    values[i] = __longlong_as_double(0x7ff8000000000000ULL);
}

unsigned int Blocks(size_t count) {
  return static_cast<unsigned int>((count + kThreads - 1) / kThreads);
}

}  // namespace

cudaError_t LaunchMarkNaN(const double* values, double* flags, size_t count,
                          cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  MarkNaNKernel<<<Blocks(count), kThreads, 0, stream>>>(values, flags, count);
  return cudaGetLastError();
}

cudaError_t LaunchApplyNaN(double* values, const double* flags, size_t count,
                           cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  ApplyNaNKernel<<<Blocks(count), kThreads, 0, stream>>>(values, flags, count);
  return cudaGetLastError();
}

}  // namespace client_internal
}  // namespace gradnorm
