// Test-only: a host gradient tensor that owns its storage, filled from doubles
// (rounded to the dtype, to nearest even), optionally starting one element past
// an aligned allocation so kernels see an odd address.
//
//   TestTensor t(DType::kBFloat16, {1.0, -2.5, 3e38});
//   ComputePartialNorm({t.view()}, 2.0);
#ifndef GRADNORM_KERNELS_INTERNAL_TEST_TENSOR_H_
#define GRADNORM_KERNELS_INTERNAL_TEST_TENSOR_H_

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/grad_tensor.h"
#include "kernels/internal/half.h"

namespace gradnorm {
namespace kernels_internal {

class TestTensor {
 public:
  TestTensor(DType dtype, const std::vector<double>& values, int64_t offset = 0)
      : dtype_(dtype),
        numel_(static_cast<int64_t>(values.size())),
        offset_(offset),
        storage_((values.size() + offset) * 8 + 64) {
    for (int64_t i = 0; i < numel_; ++i) Set(i, values[i]);
  }

  GradTensor view() {
    return GradTensor{data(), numel_, dtype_, Device::Cpu(), false};
  }
  void* data() { return storage_.data() + offset_ * ElementSize(); }
  int64_t numel() const { return numel_; }
  DType dtype() const { return dtype_; }

  void Set(int64_t i, double v) {
    switch (dtype_) {
      case DType::kFloat32:
        static_cast<float*>(data())[i] = static_cast<float>(v);
        break;
      case DType::kFloat64:
        static_cast<double*>(data())[i] = v;
        break;
      case DType::kBFloat16:
        static_cast<uint16_t*>(data())[i] =
            half_internal::FloatToBFloat16Bits(static_cast<float>(v));
        break;
      case DType::kFloat16:
        static_cast<uint16_t*>(data())[i] =
            half_internal::FloatToHalfBits(static_cast<float>(v));
        break;
    }
  }

  double Get(int64_t i) {
    switch (dtype_) {
      case DType::kFloat32:
        return static_cast<float*>(data())[i];
      case DType::kFloat64:
        return static_cast<double*>(data())[i];
      case DType::kBFloat16:
        return half_internal::BFloat16BitsToFloat(
            static_cast<uint16_t*>(data())[i]);
      case DType::kFloat16:
        return half_internal::HalfBitsToFloat(
            static_cast<uint16_t*>(data())[i]);
    }
    return 0;
  }

  // The raw bytes of the elements (for "nothing was written" checks).
  std::vector<unsigned char> Bytes() {
    const unsigned char* p = static_cast<const unsigned char*>(data());
    return std::vector<unsigned char>(p, p + numel_ * ElementSize());
  }

  size_t ElementSize() const { return ::gradnorm::ElementSize(dtype_); }

 private:
  DType dtype_;
  int64_t numel_;
  int64_t offset_;
  // Over-allocated; operator new aligns the start to 16 bytes.
  std::vector<unsigned char> storage_;
};

// Random gradient-like values: uniform mantissa, random sign, exponent spread
// over [-spread, spread] decades around 1, within the dtype's range.
inline std::vector<double> RandomValues(int64_t n, DType dtype, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> mant(0.5, 1.0);
  const int spread = dtype == DType::kFloat16 ? 3 : 12;
  std::uniform_int_distribution<int> exp10(-spread, spread);
  std::vector<double> v(n);
  for (int64_t i = 0; i < n; ++i) {
    const double s = (rng() & 1) ? -1.0 : 1.0;
    v[i] = s * mant(rng) * std::pow(10.0, exp10(rng));
  }
  return v;
}

inline const std::vector<DType>& AllDTypes() {
  static const std::vector<DType> kAll = {DType::kFloat32, DType::kBFloat16,
                                          DType::kFloat16, DType::kFloat64};
  return kAll;
}

}  // namespace kernels_internal
}  // namespace gradnorm

#endif  // GRADNORM_KERNELS_INTERNAL_TEST_TENSOR_H_
