// GPU tests of the public API on CUDA tensors, checked against the CPU
// implementation and the long-double reference. Tagged requires-gpu; every
// test skips with a message where no CUDA device is usable.
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/grad_tensor.h"
#include "kernels/internal/reference_norm.h"
#include "kernels/internal/test_tensor.h"
#include "kernels/partial_norm.h"

namespace gradnorm {
namespace {

using kernels_internal::AllDTypes;
using kernels_internal::RandomValues;
using kernels_internal::ReferencePartialNorm;
using kernels_internal::TestTensor;

constexpr double kInf = std::numeric_limits<double>::infinity();

uint64_t Bits(double d) {
  uint64_t u;
  std::memcpy(&u, &d, sizeof(u));
  return u;
}

// A device copy of a host TestTensor (offset preserved, so odd addresses stay
// odd on the device).
class DeviceTensor {
 public:
  explicit DeviceTensor(TestTensor& host, int64_t offset_elements = 0)
      : host_(host), offset_(offset_elements) {
    bytes_ = host.numel() * host.ElementSize();
    EXPECT_EQ(cudaMalloc(&base_, bytes_ + 64), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(data(), host.data(), bytes_, cudaMemcpyHostToDevice),
              cudaSuccess);
  }
  ~DeviceTensor() { cudaFree(base_); }
  void* data() {
    return static_cast<char*>(base_) + offset_ * host_.ElementSize();
  }
  GradTensor view() {
    return GradTensor{data(), host_.numel(), host_.dtype(), Device::Cuda(0),
                      false};
  }
  // Copies the device contents back over the host tensor.
  void CopyBack() {
    EXPECT_EQ(cudaMemcpy(host_.data(), data(), bytes_, cudaMemcpyDeviceToHost),
              cudaSuccess);
  }

 private:
  TestTensor& host_;
  int64_t offset_;
  size_t bytes_ = 0;
  void* base_ = nullptr;
};

class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
      GTEST_SKIP() << "no usable CUDA device (cudaGetDeviceCount: "
                   << cudaGetErrorName(err)
                   << "); GPU tests need an NVIDIA GPU, sm_80 or newer";
    }
    if (count == 0) {
      GTEST_SKIP() << "no CUDA device (cudaGetDeviceCount returned 0); GPU "
                      "tests need an NVIDIA GPU, sm_80 or newer";
    }
  }
};

TEST_F(CudaTest, SeedVectors) {
  TestTensor a(DType::kFloat32, {3, 4}), b(DType::kFloat32, {1, 2});
  DeviceTensor da(a), db(b);
  std::vector<GradTensor> g = {da.view(), db.view()};
  absl::StatusOr<PartialNorm> r = ComputePartialNorm(g, 2.0);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->value, 30.0);
  EXPECT_EQ(std::sqrt(r->value), 5.477225575051661);
  r = ComputePartialNorm(g, 1.0);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->value, 10.0);
  r = ComputePartialNorm(g, 3.0);
  ASSERT_TRUE(r.ok());
  EXPECT_NEAR(std::pow(r->value, 1.0 / 3.0), 4.641588833612778, 1e-15);
  TestTensor c(DType::kFloat32, {-3, 7});
  DeviceTensor dc(c);
  r = ComputePartialNorm({dc.view()}, kInf);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->value, 7.0);
}

TEST_F(CudaTest, MatchesCpuAndReference) {
  for (DType dtype : AllDTypes()) {
    for (int64_t n : {0, 1, 15, 17, 4095, 65535, 65536, 65537, 1000000}) {
      for (int64_t offset : {0, 1}) {
        TestTensor host(dtype, RandomValues(n, dtype, 7 + n));
        DeviceTensor dev(host, offset);
        const GradTensor hv = host.view();
        for (double p : {0.5, 1.0, 2.0, 3.0, kInf}) {
          absl::StatusOr<PartialNorm> gpu = ComputePartialNorm({dev.view()}, p);
          absl::StatusOr<PartialNorm> cpu = ComputePartialNorm({hv}, p);
          ASSERT_TRUE(gpu.ok()) << gpu.status();
          ASSERT_TRUE(cpu.ok());
          const double ref =
              static_cast<double>(ReferencePartialNorm({&hv, 1}, p).value);
          SCOPED_TRACE(::testing::Message() << DTypeName(dtype) << " n=" << n
                                            << " offset=" << offset << " p=" << p);
          EXPECT_FALSE(gpu->nonfinite);
          if (std::isinf(p)) {
            EXPECT_EQ(gpu->value, cpu->value);
          } else {
            EXPECT_NEAR(gpu->value, cpu->value, 1e-12 * cpu->value);
            EXPECT_NEAR(gpu->value, ref, 1e-12 * ref);
          }
        }
      }
    }
  }
}

TEST_F(CudaTest, ManyTensorsSplitAcrossLaunchesAreDeterministic) {
  // 10,000 tensors: far more than one launch holds.
  std::vector<TestTensor> hosts;
  hosts.reserve(10000);
  for (int i = 0; i < 10000; ++i) {
    const DType dtype = AllDTypes()[i % 4];
    hosts.emplace_back(dtype, RandomValues(1 + (i * 37) % 3000, dtype, i));
  }
  std::vector<std::unique_ptr<DeviceTensor>> devs;
  std::vector<GradTensor> gpu_views, cpu_views;
  for (TestTensor& h : hosts) {
    devs.push_back(std::make_unique<DeviceTensor>(h, 0));
    gpu_views.push_back(devs.back()->view());
    cpu_views.push_back(h.view());
  }
  for (double p : {1.0, 2.0, kInf}) {
    PartialNormOptions opts;
    opts.per_tensor = true;
    absl::StatusOr<PartialNorm> first = ComputePartialNorm(gpu_views, p, opts);
    absl::StatusOr<PartialNorm> cpu = ComputePartialNorm(cpu_views, p, opts);
    ASSERT_TRUE(first.ok() && cpu.ok());
    EXPECT_NEAR(first->value, cpu->value, 1e-12 * cpu->value);
    for (size_t i = 0; i < cpu_views.size(); ++i) {
      ASSERT_NEAR(first->per_tensor[i], cpu->per_tensor[i],
                  1e-12 * cpu->per_tensor[i]);
    }
    for (int repeat = 0; repeat < 3; ++repeat) {
      absl::StatusOr<PartialNorm> again = ComputePartialNorm(gpu_views, p, opts);
      ASSERT_TRUE(again.ok());
      EXPECT_EQ(Bits(again->value), Bits(first->value));
    }
  }
}

TEST_F(CudaTest, NonFinitePropagatesAndNanBeatsInf) {
  for (DType dtype : AllDTypes()) {
    std::vector<double> values = RandomValues(200000, dtype, 3);
    values[5] = kInf;
    values[150000] = NAN;
    TestTensor host(dtype, values);
    DeviceTensor dev(host);
    for (double p : {1.0, 2.0, 3.0, kInf}) {
      absl::StatusOr<PartialNorm> r = ComputePartialNorm({dev.view()}, p);
      ASSERT_TRUE(r.ok());
      EXPECT_TRUE(r->nonfinite);
      EXPECT_TRUE(std::isnan(r->value)) << DTypeName(dtype) << " p=" << p;
    }
  }
}

TEST_F(CudaTest, DeviceResultVariant) {
  TestTensor host(DType::kBFloat16, RandomValues(300000, DType::kBFloat16, 4));
  DeviceTensor dev(host, 1);
  double* result = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&result), sizeof(double)),
            cudaSuccess);
  ASSERT_TRUE(ComputePartialNormOnDevice({dev.view()}, 2.0, result).ok());
  double on_host = -1;
  ASSERT_EQ(cudaMemcpy(&on_host, result, sizeof(double), cudaMemcpyDeviceToHost),
            cudaSuccess);
  absl::StatusOr<PartialNorm> r = ComputePartialNorm({dev.view()}, 2.0);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(Bits(on_host), Bits(r->value));
  // No tensors: the device result is 0.
  ASSERT_TRUE(ComputePartialNormOnDevice({}, 2.0, result).ok());
  ASSERT_EQ(cudaMemcpy(&on_host, result, sizeof(double), cudaMemcpyDeviceToHost),
            cudaSuccess);
  EXPECT_EQ(on_host, 0.0);
  cudaFree(result);
}

TEST_F(CudaTest, ScaleMatchesCpuBitForBit) {
  for (DType dtype : AllDTypes()) {
    for (int64_t offset : {0, 1}) {
      const std::vector<double> values = RandomValues(100003, dtype, 12);
      TestTensor on_gpu(dtype, values), on_cpu(dtype, values);
      DeviceTensor dev(on_gpu, offset);
      ASSERT_TRUE(ScaleInPlace({dev.view()}, 0.19999996000000798).ok());
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      dev.CopyBack();
      ASSERT_TRUE(ScaleInPlace({on_cpu.view()}, 0.19999996000000798).ok());
      EXPECT_EQ(on_gpu.Bytes(), on_cpu.Bytes()) << DTypeName(dtype);
    }
  }
}

}  // namespace
}  // namespace gradnorm
