// Device helpers that keep NaN through NCCL's max, whose result on NaN depends
// on operand order. Before the reduction, MarkNaN writes flags[i] = 1 where
// values[i] is NaN, else 0; the flags are max-reduced with the values; then
// ApplyNaN sets values[i] = NaN where flags[i] > 0. Both are enqueued on
// `stream` and return the launch error. Internal to the NCCL communicator.
#ifndef GRADNORM_CLIENT_INTERNAL_NAN_FLAGS_H_
#define GRADNORM_CLIENT_INTERNAL_NAN_FLAGS_H_

#include <cuda_runtime_api.h>

#include <cstddef>

namespace gradnorm {
namespace client_internal {

cudaError_t LaunchMarkNaN(const double* values, double* flags, size_t count,
                          cudaStream_t stream);
cudaError_t LaunchApplyNaN(double* values, const double* flags, size_t count,
                           cudaStream_t stream);

}  // namespace client_internal
}  // namespace gradnorm

#endif  // GRADNORM_CLIENT_INTERNAL_NAN_FLAGS_H_
