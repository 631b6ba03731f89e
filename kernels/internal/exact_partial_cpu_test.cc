#include "kernels/internal/exact_partial_cpu.h"

#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/internal/test_tensor.h"
#include "kernels/partial_norm.h"

namespace gradnorm {
namespace kernels_internal {
namespace {

using ::testing::HasSubstr;

// A model's gradients in every dtype, with the extremes each dtype holds:
// 6e31 and 1e-30 in fp32, subnormals, 65504 in fp16, 3e38 in bf16, empty
// tensors, and many small tensors.
std::vector<std::unique_ptr<TestTensor>> Model(uint64_t seed, int small) {
  std::mt19937_64 random(seed);
  std::normal_distribution<double> normal(0.0, 0.02);
  std::vector<std::unique_ptr<TestTensor>> model;
  auto add = [&](DType dtype, std::vector<double> values) {
    model.push_back(
        std::make_unique<TestTensor>(dtype, values, model.size() % 3));
  };
  const DType dtypes[] = {DType::kFloat32, DType::kBFloat16, DType::kFloat16,
                          DType::kFloat64};
  for (DType dtype : dtypes) {
    std::vector<double> values(300'000);
    for (double& v : values) v = normal(random);
    add(dtype, values);
    add(dtype, {});
  }
  add(DType::kFloat32, {6e31, -1e-30, 1e-45, -3e-39, 1.0});
  add(DType::kFloat16, {65504, -6e-8, 1e-5, 3.0});
  add(DType::kBFloat16, {3e38, -1e-38, 9e-41, 2.0});
  add(DType::kFloat64, {1e300, 5e-324, -1e-310, 1e-200, 7.0});
  for (int i = 0; i < small; ++i) {
    std::vector<double> values(1 + i % 17);
    for (double& v : values) v = normal(random);
    add(dtypes[i % 4], values);
  }
  return model;
}

std::vector<GradTensor> Views(std::vector<std::unique_ptr<TestTensor>>& m) {
  std::vector<GradTensor> views;
  for (auto& t : m) views.push_back(t->view());
  return views;
}

// The oracle: every element widened to fp64 (exact for every dtype) and added
// one by one by ExactSum's fp64 path, not the kernels' exponent bins.
ExactSum ElementByElement(const std::vector<GradTensor>& tensors, double p) {
  ExactSum sum;
  for (const GradTensor& g : tensors) {
    for (int64_t i = 0; i < g.numel; ++i) {
      double v = 0;
      switch (g.dtype) {
        case DType::kFloat32:
          v = static_cast<const float*>(g.data)[i];
          break;
        case DType::kFloat64:
          v = static_cast<const double*>(g.data)[i];
          break;
        case DType::kBFloat16:
          v = half_internal::BFloat16BitsToFloat(
              static_cast<const uint16_t*>(g.data)[i]);
          break;
        case DType::kFloat16:
          v = half_internal::HalfBitsToFloat(
              static_cast<const uint16_t*>(g.data)[i]);
          break;
      }
      p == 2 ? sum.AddSquare(v) : sum.AddAbs(v);
    }
  }
  return sum;
}

TEST(ExactPartialCpuTest, EqualsTheElementByElementSumForEveryThreadCount) {
  auto model = Model(1, 10'000);
  std::vector<GradTensor> tensors = Views(model);
  for (double p : {1.0, 2.0}) {
    const std::string oracle = ElementByElement(tensors, p).Encode();
    for (int threads : {1, 2, 7}) {
      CpuNormOptions options;
      options.num_threads = threads;
      ExactPartial partial = ComputeExactPartialCpu(tensors, p, options);
      EXPECT_EQ(partial.total.Encode(), oracle)
          << "p " << p << ", " << threads << " threads";
    }
  }
}

TEST(ExactPartialCpuTest, AnyShardingGivesTheSameBits) {
  auto model = Model(2, 500);
  std::vector<GradTensor> tensors = Views(model);
  CpuNormOptions options;
  const std::string whole =
      ComputeExactPartialCpu(tensors, 2.0, options).total.Encode();
  // Every tensor cut at an odd point into two shards, the shards spread over
  // 2, 3 and 4 "ranks" (as TP and DP split a model), the ranks merged.
  for (int ranks : {2, 3, 4}) {
    std::vector<std::vector<GradTensor>> shards(ranks);
    for (size_t t = 0; t < tensors.size(); ++t) {
      GradTensor a = tensors[t], b = tensors[t];
      a.numel = tensors[t].numel / 3;
      b.numel = tensors[t].numel - a.numel;
      b.data = static_cast<char*>(b.data) + a.numel * ElementSize(a.dtype);
      shards[t % ranks].push_back(a);
      shards[(t + 1) % ranks].push_back(b);
    }
    ExactSum merged;
    for (int r = ranks - 1; r >= 0; --r) {
      merged.Merge(ComputeExactPartialCpu(shards[r], 2.0, options).total);
    }
    EXPECT_EQ(merged.Encode(), whole) << ranks << " ranks";
  }
}

TEST(ExactPartialCpuTest, ThroughComputePartialNorm) {
  auto model = Model(3, 100);
  std::vector<GradTensor> tensors = Views(model);
  PartialNormOptions options;
  options.exact = true;
  options.per_tensor = true;
  absl::StatusOr<PartialNorm> partial =
      ComputePartialNorm(tensors, 2.0, options);
  ASSERT_TRUE(partial.ok()) << partial.status();
  ASSERT_TRUE(partial->exact.has_value());
  EXPECT_EQ(partial->value, partial->exact->RoundToDouble());
  EXPECT_FALSE(partial->nonfinite);
  ASSERT_EQ(partial->per_tensor.size(), tensors.size());
  EXPECT_EQ(partial->per_tensor[1], 0.0);  // An empty tensor.
  // 1e300^2 is beyond fp64: exact, but it rounds to +Inf, as the fp64 path's.
  options.exact = false;
  absl::StatusOr<PartialNorm> rounded =
      ComputePartialNorm(tensors, 2.0, options);
  ASSERT_TRUE(rounded.ok());
  EXPECT_EQ(partial->value, INFINITY);
  EXPECT_EQ(rounded->value, INFINITY);
  // Close to the fp64 path where it stays finite, which rounds along the way.
  absl::StatusOr<PartialNorm> sum_abs =
      ComputePartialNorm(tensors, 1.0, options);
  options.exact = true;
  absl::StatusOr<PartialNorm> exact_abs =
      ComputePartialNorm(tensors, 1.0, options);
  ASSERT_TRUE(sum_abs.ok() && exact_abs.ok());
  EXPECT_NEAR(exact_abs->value, sum_abs->value, 1e-13 * sum_abs->value);
  // The inf-norm is exact anyway; other p cannot be.
  options.exact = true;
  absl::StatusOr<PartialNorm> max =
      ComputePartialNorm(tensors, INFINITY, options);
  ASSERT_TRUE(max.ok());
  EXPECT_FALSE(max->exact.has_value());
  absl::StatusOr<PartialNorm> p3 = ComputePartialNorm(tensors, 3.0, options);
  EXPECT_EQ(p3.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(p3.status().message(),
              HasSubstr("exact partials are for p = 1, 2 and inf"));
}

TEST(ExactPartialCpuTest, ChunkSizesAndThreadsDoNotMatter) {
  auto model = Model(4, 50);
  std::vector<GradTensor> tensors = Views(model);
  PartialNormOptions options;
  options.exact = true;
  absl::StatusOr<PartialNorm> base = ComputePartialNorm(tensors, 2.0, options);
  ASSERT_TRUE(base.ok());
  for (int64_t chunk : {1000, 4096, 1 << 20}) {
    for (int threads : {1, 2, 7}) {
      options.chunk_elements = chunk;
      options.num_threads = threads;
      absl::StatusOr<PartialNorm> other =
          ComputePartialNorm(tensors, 2.0, options);
      ASSERT_TRUE(other.ok());
      EXPECT_EQ(other->exact->Encode(), base->exact->Encode())
          << chunk << " elements a chunk, " << threads << " threads";
    }
  }
}

TEST(ExactPartialCpuTest, NaNWinsOverInf) {
  TestTensor inf(DType::kBFloat16, {1.0, INFINITY, 2.0});
  TestTensor nan(DType::kFloat16, {NAN, 1.0});
  CpuNormOptions options;
  ExactPartial only_inf = ComputeExactPartialCpu({inf.view()}, 2.0, options);
  EXPECT_TRUE(only_inf.total.is_inf());
  ExactPartial both =
      ComputeExactPartialCpu({inf.view(), nan.view()}, 1.0, options);
  EXPECT_TRUE(both.total.is_nan());
}

}  // namespace
}  // namespace kernels_internal
}  // namespace gradnorm
