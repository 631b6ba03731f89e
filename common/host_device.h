// GRADNORM_HOST_DEVICE marks a function that CUDA device code calls too:
// __host__ __device__ under nvcc, nothing for the host compiler.
//
//   GRADNORM_HOST_DEVICE constexpr double Twice(double x) { return 2 * x; }
#ifndef GRADNORM_COMMON_HOST_DEVICE_H_
#define GRADNORM_COMMON_HOST_DEVICE_H_

#if defined(__CUDACC__)
#define GRADNORM_HOST_DEVICE __host__ __device__
#else
#define GRADNORM_HOST_DEVICE
#endif

#endif  // GRADNORM_COMMON_HOST_DEVICE_H_
