// GPU tests of the public API on CUDA tensors, checked against the CPU
// implementation and the long-double reference. Tagged requires-gpu; every
// test skips with a message where no CUDA device is usable.
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/grad_tensor.h"
#include "kernels/internal/partial_norm_cuda_kernels.h"
#include "kernels/internal/partial_norm_on_device.h"
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

// The fp64 value at device address `p` (NaN when the copy fails, which the
// caller's comparison then reports).
double DeviceValue(const double* p) {
  double value = std::numeric_limits<double>::quiet_NaN();
  EXPECT_EQ(cudaMemcpy(&value, p, sizeof(double), cudaMemcpyDeviceToHost),
            cudaSuccess);
  return value;
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

// The same tensors twice: on the GPU (device copies at the given element
// offsets) and on the CPU, for comparing the two paths.
class TwinTensors {
 public:
  void Add(DType dtype, const std::vector<double>& values,
           int64_t offset_elements) {
    gpu_hosts_.push_back(std::make_unique<TestTensor>(dtype, values));
    cpu_hosts_.push_back(std::make_unique<TestTensor>(dtype, values));
    devs_.push_back(
        std::make_unique<DeviceTensor>(*gpu_hosts_.back(), offset_elements));
    gpu_views_.push_back(devs_.back()->view());
    cpu_views_.push_back(cpu_hosts_.back()->view());
  }
  const std::vector<GradTensor>& gpu_views() const { return gpu_views_; }
  const std::vector<GradTensor>& cpu_views() const { return cpu_views_; }
  size_t size() const { return devs_.size(); }
  DType dtype(size_t i) const { return cpu_hosts_[i]->dtype(); }
  // The GPU tensor's bytes (copied back) and the CPU tensor's.
  std::vector<unsigned char> GpuBytes(size_t i) {
    devs_[i]->CopyBack();
    return gpu_hosts_[i]->Bytes();
  }
  std::vector<unsigned char> CpuBytes(size_t i) {
    return cpu_hosts_[i]->Bytes();
  }

 private:
  std::vector<std::unique_ptr<TestTensor>> gpu_hosts_, cpu_hosts_;
  std::vector<std::unique_ptr<DeviceTensor>> devs_;
  std::vector<GradTensor> gpu_views_, cpu_views_;
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
    int major = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0) ==
            cudaSuccess &&
        major < 8) {
      GTEST_SKIP() << "cuda:0 has compute capability " << major
                   << ".x; the kernels are built for sm_80 and newer";
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
          SCOPED_TRACE(::testing::Message()
                       << DTypeName(dtype) << " n=" << n << " offset=" << offset
                       << " p=" << p);
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
      absl::StatusOr<PartialNorm> again =
          ComputePartialNorm(gpu_views, p, opts);
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
  const double on_host = DeviceValue(result);
  absl::StatusOr<PartialNorm> r = ComputePartialNorm({dev.view()}, 2.0);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(Bits(on_host), Bits(r->value));
  // No tensors: the device result is 0.
  ASSERT_TRUE(ComputePartialNormOnDevice({}, 2.0, result).ok());
  EXPECT_EQ(DeviceValue(result), 0.0);
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

// A tensor whose chunks do not all fit in the launch that starts them goes on
// in the next launch (a new tensor slot there, workspace slots continuing at
// first_chunk): the norm, its per-tensor parts, the device-result variant and
// the scale must all still match the CPU.
TEST_F(CudaTest, ChunksSpillIntoTheNextLaunch) {
  using kernels_internal::kCudaChunkElements;
  using kernels_internal::kMaxBlocksPerLaunch;
  // Five tensors of `chunks` chunks (the last one ragged) hold more chunks than
  // one launch, and the fifth straddles the first launch's end.
  const int64_t chunks = kMaxBlocksPerLaunch / 4 - 10;
  ASSERT_LT(4 * chunks, kMaxBlocksPerLaunch);
  ASSERT_GT(5 * chunks, kMaxBlocksPerLaunch);
  const int64_t numel = (chunks - 1) * kCudaChunkElements + 123;
  TwinTensors twins;
  for (int i = 0; i < 6; ++i) {
    const DType dtype = AllDTypes()[i % 4];
    // Tensor 2 is empty: it owns no chunk and its partial is 0.
    const std::vector<double> values =
        i == 2 ? std::vector<double>() : RandomValues(numel, dtype, 40 + i);
    twins.Add(dtype, values, i % 2);
  }
  const std::vector<GradTensor>& gpu_views = twins.gpu_views();
  const std::vector<GradTensor>& cpu_views = twins.cpu_views();
  double* result = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&result), sizeof(double)),
            cudaSuccess);
  PartialNormOptions opts;
  opts.per_tensor = true;
  for (double p : {1.0, 2.0, 3.0, kInf}) {
    SCOPED_TRACE(::testing::Message() << "p=" << p);
    absl::StatusOr<PartialNorm> gpu = ComputePartialNorm(gpu_views, p, opts);
    absl::StatusOr<PartialNorm> cpu = ComputePartialNorm(cpu_views, p, opts);
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    ASSERT_TRUE(cpu.ok());
    EXPECT_FALSE(gpu->nonfinite);
    EXPECT_NEAR(gpu->value, cpu->value, 1e-12 * cpu->value);
    ASSERT_EQ(gpu->per_tensor.size(), cpu_views.size());
    for (size_t i = 0; i < cpu_views.size(); ++i) {
      EXPECT_NEAR(gpu->per_tensor[i], cpu->per_tensor[i],
                  1e-12 * cpu->per_tensor[i])
          << "tensor " << i;
    }
    EXPECT_EQ(gpu->per_tensor[2], 0.0);
    ASSERT_TRUE(ComputePartialNormOnDevice(gpu_views, p, result).ok());
    const double on_host = DeviceValue(result);
    EXPECT_EQ(Bits(on_host), Bits(gpu->value));
  }
  cudaFree(result);
  ASSERT_TRUE(ScaleInPlace(gpu_views, 0.3).ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ASSERT_TRUE(ScaleInPlace(cpu_views, 0.3).ok());
  for (size_t i = 0; i < twins.size(); ++i) {
    EXPECT_EQ(twins.GpuBytes(i), twins.CpuBytes(i)) << "tensor " << i;
  }
}

// Hundreds of tensors (several launches), odd addresses, every dtype; the
// fp32 product and, for a coefficient beyond fp32, the fp64 one.
TEST_F(CudaTest, ScaleManyTensorsMatchesCpuBitForBit) {
  TwinTensors twins;
  for (int i = 0; i < 300; ++i) {
    const DType dtype = AllDTypes()[i % 4];
    twins.Add(dtype, RandomValues((i * 101) % 2000, dtype, 100 + i),
              (i / 4) % 2);
  }
  for (double coef : {0.3, 1e39}) {
    ASSERT_TRUE(ScaleInPlace(twins.gpu_views(), coef).ok());
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    ASSERT_TRUE(ScaleInPlace(twins.cpu_views(), coef).ok());
    for (size_t i = 0; i < twins.size(); ++i) {
      ASSERT_EQ(twins.GpuBytes(i), twins.CpuBytes(i))
          << "coef=" << coef << " tensor " << i << " "
          << DTypeName(twins.dtype(i));
    }
  }
}

TEST_F(CudaTest, NonDefaultStream) {
  const std::vector<double> values = RandomValues(300001, DType::kFloat32, 9);
  TestTensor on_gpu(DType::kFloat32, values), on_cpu(DType::kFloat32, values);
  DeviceTensor dev(on_gpu, 1);
  // cudaMemcpy may return before its DMA lands, and a non-blocking stream
  // does not wait for the legacy default stream.
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
            cudaSuccess);
  PartialNormOptions opts;
  opts.cuda_stream = stream;
  absl::StatusOr<PartialNorm> on_stream =
      ComputePartialNorm({dev.view()}, 2.0, opts);
  absl::StatusOr<PartialNorm> on_default =
      ComputePartialNorm({dev.view()}, 2.0);
  ASSERT_TRUE(on_stream.ok()) << on_stream.status();
  ASSERT_TRUE(on_default.ok()) << on_default.status();
  EXPECT_EQ(Bits(on_stream->value), Bits(on_default->value));

  double* result = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&result), sizeof(double)),
            cudaSuccess);
  ASSERT_TRUE(ComputePartialNormOnDevice({dev.view()}, 2.0, result, opts).ok());
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  const double on_host = DeviceValue(result);
  EXPECT_EQ(Bits(on_host), Bits(on_default->value));
  cudaFree(result);

  ScaleOptions scale_opts;
  scale_opts.cuda_stream = stream;
  ASSERT_TRUE(ScaleInPlace({dev.view()}, 0.25, scale_opts).ok());
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  dev.CopyBack();
  ASSERT_TRUE(ScaleInPlace({on_cpu.view()}, 0.25).ok());
  EXPECT_EQ(on_gpu.Bytes(), on_cpu.Bytes());
  EXPECT_EQ(cudaStreamDestroy(stream), cudaSuccess);
}

TEST_F(CudaTest, NonFiniteDetailsMatchTheCpu) {
  struct Case {
    DType dtype;
    std::vector<double> values;
    double p;
  };
  std::vector<double> nan_and_inf(5000, 1.0);
  nan_and_inf[0] = kInf;  // Inf then NaN in one thread's elements,
  nan_and_inf[1] = NAN;
  nan_and_inf[4] = NAN;  // NaN then Inf in the next thread's,
  nan_and_inf[5] = kInf;
  nan_and_inf[4999] = -kInf;  // and an Inf in the tail.
  const std::vector<Case> cases = {
      {DType::kFloat32, {1, kInf, 2}, 1.0},
      {DType::kBFloat16, {1, -kInf, 2}, 2.0},
      {DType::kFloat16, {1, kInf, 2}, 3.0},
      {DType::kFloat64, {1, -kInf, 2}, kInf},
      {DType::kFloat32, nan_and_inf, kInf},
      {DType::kFloat16, nan_and_inf, kInf},
      {DType::kFloat32, nan_and_inf, 2.0},
      // Finite fp64 inputs whose squares overflow: Inf, but not non-finite.
      {DType::kFloat64, {1e200, 1}, 2.0},
  };
  for (const Case& c : cases) {
    TestTensor host(c.dtype, c.values);
    DeviceTensor dev(host, 1);
    const GradTensor hv = host.view();
    absl::StatusOr<PartialNorm> gpu = ComputePartialNorm({dev.view()}, c.p);
    absl::StatusOr<PartialNorm> cpu = ComputePartialNorm({hv}, c.p);
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    ASSERT_TRUE(cpu.ok());
    SCOPED_TRACE(::testing::Message() << DTypeName(c.dtype) << " n="
                                      << c.values.size() << " p=" << c.p);
    EXPECT_EQ(gpu->nonfinite, cpu->nonfinite);
    EXPECT_EQ(std::isnan(gpu->value), std::isnan(cpu->value));
    if (!std::isnan(cpu->value)) {
      EXPECT_EQ(gpu->value, cpu->value);
    }
  }
  // Zero-size tensors anywhere: partial 0 each, nothing else changes.
  TestTensor a(DType::kFloat32, {3, 4}), b(DType::kBFloat16, {1, 2}),
      empty(DType::kFloat16, {});
  DeviceTensor da(a), db(b), de(empty);
  PartialNormOptions opts;
  opts.per_tensor = true;
  absl::StatusOr<PartialNorm> r = ComputePartialNorm(
      {de.view(), da.view(), de.view(), db.view(), de.view()}, 2.0, opts);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->value, 30.0);
  EXPECT_FALSE(r->nonfinite);
  EXPECT_EQ(r->per_tensor, (std::vector<double>{0, 25, 0, 5, 0}));
  r = ComputePartialNorm({de.view(), de.view()}, kInf, opts);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->value, 0.0);
  EXPECT_EQ(r->per_tensor, (std::vector<double>{0, 0}));
}

// Bad input is refused before any CUDA call, with the CPU path's status; a
// device the machine does not have is FAILED_PRECONDITION naming the call.
// The exact partial (p = 1, 2): GPU and CPU give the same ExactSum, bit for
// bit, for every dtype, for extremes (6e31, 1e-30, subnormals, 65504 in fp16,
// 3e38 in bf16), for blocks spanning few and many binades (the GPU's fp64
// groups and its bins), odd addresses, 10,000 tensors, empty ones, per tensor.
TEST_F(CudaTest, ExactPartialIsBitwiseTheCpus) {
  TwinTensors twins;
  std::mt19937_64 random(17);
  std::normal_distribution<double> normal(0.0, 0.02);
  int i = 0;
  for (DType dtype : AllDTypes()) {
    for (int64_t n : {0, 1, 255, 257, 65536, 65537, 300000}) {
      std::vector<double> values(n);
      for (double& v : values) v = normal(random);
      twins.Add(dtype, values, i++ % 2);
    }
    // Wide: 2^-60 .. 2^20 in every group (fp16: 2^-66 .. 2^14, so that
    // nothing overflows to Inf: a non-finite total would encode no digits).
    const int top = dtype == DType::kFloat16 ? 14 : 20;
    std::vector<double> wide(70000);
    for (size_t j = 0; j < wide.size(); ++j) {
      wide[j] =
          std::ldexp(normal(random), top - static_cast<int>(j * 7919 % 81));
    }
    twins.Add(dtype, wide, 0);
  }
  twins.Add(DType::kFloat32, {6e31, -1e-30, 1e-45, -3e-39, 1.0}, 1);
  twins.Add(DType::kFloat16, {65504, -6e-8, 1e-5, 3.0}, 0);
  twins.Add(DType::kBFloat16, {3e38, -1e-38, 9e-41, 2.0}, 1);
  twins.Add(DType::kFloat64, {1e300, 5e-324, -1e-310, 1e-200, 7.0}, 0);
  for (int t = 0; t < 10000; ++t) {
    std::vector<double> values(1 + t % 17);
    for (double& v : values) v = normal(random);
    twins.Add(AllDTypes()[t % AllDTypes().size()], values, t % 2);
  }
  for (double p : {1.0, 2.0}) {
    PartialNormOptions options;
    options.exact = true;
    options.per_tensor = true;
    absl::StatusOr<PartialNorm> gpu =
        ComputePartialNorm(twins.gpu_views(), p, options);
    absl::StatusOr<PartialNorm> cpu =
        ComputePartialNorm(twins.cpu_views(), p, options);
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    ASSERT_TRUE(cpu.ok()) << cpu.status();
    ASSERT_TRUE(gpu->exact.has_value());
    // A finite total: its encoding holds every digit, not only flags.
    ASSERT_TRUE(cpu->exact->finite()) << "p=" << p;
    EXPECT_EQ(gpu->exact->Encode(), cpu->exact->Encode()) << "p=" << p;
    EXPECT_EQ(Bits(gpu->value), Bits(cpu->value)) << "p=" << p;
    ASSERT_EQ(gpu->per_tensor.size(), cpu->per_tensor.size());
    for (size_t t = 0; t < gpu->per_tensor.size(); ++t) {
      ASSERT_EQ(Bits(gpu->per_tensor[t]), Bits(cpu->per_tensor[t]))
          << "tensor " << t << " p=" << p;
    }
    // Tensor by tensor, digit for digit: the dtypes' blocks, the wide and
    // extreme ones, and a sample of the small ones.
    PartialNormOptions one;
    one.exact = true;
    for (size_t t = 0; t < twins.gpu_views().size(); t += t < 40 ? 1 : 97) {
      absl::StatusOr<PartialNorm> g =
          ComputePartialNorm({twins.gpu_views()[t]}, p, one);
      absl::StatusOr<PartialNorm> c =
          ComputePartialNorm({twins.cpu_views()[t]}, p, one);
      ASSERT_TRUE(g.ok() && c.ok()) << "tensor " << t;
      ASSERT_TRUE(g->exact.has_value() && c->exact.has_value());
      EXPECT_EQ(g->exact->Encode(), c->exact->Encode())
          << "tensor " << t << " p=" << p;
    }
  }
}

TEST_F(CudaTest, ExactPartialOfNonFiniteGradients) {
  for (DType dtype : AllDTypes()) {
    for (double bad : {kInf, -kInf, std::nan("")}) {
      TwinTensors twins;
      std::vector<double> values(70000, 0.5);
      values[66000] = bad;
      twins.Add(dtype, values, 0);
      twins.Add(dtype, {1.0, 2.0}, 0);
      PartialNormOptions options;
      options.exact = true;
      absl::StatusOr<PartialNorm> gpu =
          ComputePartialNorm(twins.gpu_views(), 2.0, options);
      absl::StatusOr<PartialNorm> cpu =
          ComputePartialNorm(twins.cpu_views(), 2.0, options);
      ASSERT_TRUE(gpu.ok()) << gpu.status();
      ASSERT_TRUE(cpu.ok());
      EXPECT_TRUE(gpu->nonfinite);
      EXPECT_EQ(gpu->exact->Encode(), cpu->exact->Encode())
          << DTypeName(dtype) << " " << bad;
    }
  }
}

TEST_F(CudaTest, BadInputIsRefusedAsOnTheCpu) {
  TestTensor host(DType::kFloat32, {1, 2, 3});
  DeviceTensor dev(host);
  const GradTensor gpu = dev.view();
  const GradTensor cpu = host.view();
  auto same = [](const absl::Status& g, const absl::Status& c) {
    EXPECT_EQ(g.code(), absl::StatusCode::kInvalidArgument) << g;
    EXPECT_EQ(g, c);
  };
  same(ComputePartialNorm({gpu}, -1.0).status(),
       ComputePartialNorm({cpu}, -1.0).status());
  same(ComputePartialNorm({gpu}, std::nan("")).status(),
       ComputePartialNorm({cpu}, std::nan("")).status());
  GradTensor g_null = gpu, c_null = cpu;
  g_null.data = c_null.data = nullptr;
  same(ComputePartialNorm({gpu, g_null}, 2.0).status(),
       ComputePartialNorm({cpu, c_null}, 2.0).status());
  GradTensor g_dtype = gpu, c_dtype = cpu;
  g_dtype.dtype = c_dtype.dtype = static_cast<DType>(7);
  same(ComputePartialNorm({g_dtype}, 2.0).status(),
       ComputePartialNorm({c_dtype}, 2.0).status());
  same(ScaleInPlace({g_dtype}, 0.5), ScaleInPlace({c_dtype}, 0.5));
  same(ScaleInPlace({gpu}, -0.5), ScaleInPlace({cpu}, -0.5));
  same(ScaleInPlace({gpu}, kInf), ScaleInPlace({cpu}, kInf));
  dev.CopyBack();
  EXPECT_EQ(host.Get(0), 1.0);  // nothing was scaled

  int count = 0;
  ASSERT_EQ(cudaGetDeviceCount(&count), cudaSuccess);
  GradTensor missing = gpu;
  missing.device = Device::Cuda(count);
  absl::StatusOr<PartialNorm> r = ComputePartialNorm({missing}, 2.0);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(r.status().message()).find("cudaSetDevice"),
            std::string::npos)
      << r.status();
  EXPECT_EQ(ScaleInPlace({missing}, 0.5).code(),
            absl::StatusCode::kFailedPrecondition);
  int current = -1;
  ASSERT_EQ(cudaGetDevice(&current), cudaSuccess);
  EXPECT_EQ(current, 0);
  // The failed cudaSetDevice is reported once: the next launches on this
  // thread do not report it as theirs.
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  ASSERT_EQ(cudaSetDevice(count), cudaErrorInvalidDevice);  // left uncleared
  absl::StatusOr<PartialNorm> ok = ComputePartialNorm({gpu}, 2.0);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->value, 14.0);
  EXPECT_TRUE(ScaleInPlace({gpu}, 0.5).ok());
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  dev.CopyBack();
  EXPECT_EQ(host.Get(2), 1.5);
  (void)cudaGetLastError();
}

}  // namespace
}  // namespace gradnorm
