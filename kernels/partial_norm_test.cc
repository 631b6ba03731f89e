#include "kernels/partial_norm.h"

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <thread>
#include <vector>

#include "kernels/internal/partial_norm_on_device.h"

#if defined(GRADNORM_WITH_CUDA)
#include <cuda_runtime_api.h>
#endif

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/grad_tensor.h"
#include "kernels/internal/half.h"
#include "kernels/internal/reference_norm.h"
#include "kernels/internal/test_tensor.h"

namespace gradnorm {
namespace {

using kernels_internal::AllDTypes;
using kernels_internal::RandomValues;
using kernels_internal::ReferencePartialNorm;
using kernels_internal::TestTensor;
using ::testing::HasSubstr;

constexpr double kInf = std::numeric_limits<double>::infinity();

uint64_t Bits(double d) {
  uint64_t u;
  std::memcpy(&u, &d, sizeof(u));
  return u;
}

// ---- The reference values of docs/numerics.md.

TEST(PartialNormSeedTest, TwoNorm) {
  std::vector<float> a = {3, 4}, b = {1, 2};
  std::vector<GradTensor> g = {GradTensor::Cpu(a.data(), 2),
                               GradTensor::Cpu(b.data(), 2)};
  absl::StatusOr<PartialNorm> r = ComputePartialNorm(g, 2.0);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->value, 30.0);
  EXPECT_FALSE(r->nonfinite);
  EXPECT_EQ(std::sqrt(r->value), 5.477225575051661);
}

TEST(PartialNormSeedTest, OneNorm) {
  std::vector<float> a = {3, 4}, b = {1, 2};
  std::vector<GradTensor> g = {GradTensor::Cpu(a.data(), 2),
                               GradTensor::Cpu(b.data(), 2)};
  absl::StatusOr<PartialNorm> r = ComputePartialNorm(g, 1.0);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->value, 10.0);
}

TEST(PartialNormSeedTest, ThreeNorm) {
  std::vector<float> a = {3, 4}, b = {1, 2};
  std::vector<GradTensor> g = {GradTensor::Cpu(a.data(), 2),
                               GradTensor::Cpu(b.data(), 2)};
  absl::StatusOr<PartialNorm> r = ComputePartialNorm(g, 3.0);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->value, 100.0);
  EXPECT_NEAR(std::pow(r->value, 1.0 / 3.0), 4.641588833612778, 1e-15);
}

TEST(PartialNormSeedTest, InfNorm) {
  std::vector<float> a = {-3, 7};
  absl::StatusOr<PartialNorm> r =
      ComputePartialNorm({GradTensor::Cpu(a.data(), 2)}, kInf);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->value, 7.0);
}

TEST(PartialNormSeedTest, ClipMaxOneTotalFive) {
  std::vector<float> a = {3, 4};
  const double coef = 1.0 / (5.0 + 1e-6);
  ASSERT_TRUE(ScaleInPlace({GradTensor::Cpu(a.data(), 2)}, coef).ok());
  // x0.19999996: the product formed in fp32 with the coefficient as a float.
  EXPECT_EQ(a[0], 3.0f * static_cast<float>(coef));
  EXPECT_EQ(a[1], 4.0f * static_cast<float>(coef));
  EXPECT_NEAR(a[0], 0.6f * 0.99999980f, 1e-7);
  EXPECT_NEAR(a[1], 0.8f * 0.99999980f, 1e-7);
}

TEST(PartialNormSeedTest, ClipMaxTwoTotalFour) {
  std::vector<float> a = {1, 2, 3};
  const double coef = 2.0 / 4.000001;
  ASSERT_TRUE(ScaleInPlace({GradTensor::Cpu(a.data(), 3)}, coef).ok());
  EXPECT_EQ(a[2], 3.0f * static_cast<float>(coef));
}

TEST(PartialNormSeedTest, HugeFp32GradientIsFiniteAndClips) {
  std::vector<float> a = {6e31f, 4.0f};
  GradTensor g = GradTensor::Cpu(a.data(), 2);
  absl::StatusOr<PartialNorm> r = ComputePartialNorm({g}, 2.0);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->nonfinite);
  const double norm = std::sqrt(r->value);
  EXPECT_TRUE(std::isfinite(norm));
  EXPECT_NEAR(norm, 6e31, 6e31 * 1e-7);
  const double coef = 0.3 / (norm + 1e-6);
  ASSERT_TRUE(ScaleInPlace({g}, coef).ok());
  absl::StatusOr<PartialNorm> after = ComputePartialNorm({g}, 2.0);
  ASSERT_TRUE(after.ok());
  EXPECT_LE(std::sqrt(after->value), 0.3 + 1e-6);
  EXPECT_GT(std::sqrt(after->value), 0.299);
}

// ---- Empty input.

TEST(PartialNormTest, EmptyInputIsZero) {
  for (double p : {0.5, 1.0, 2.0, 3.0, kInf}) {
    absl::StatusOr<PartialNorm> r = ComputePartialNorm({}, p);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->value, 0.0);
    EXPECT_FALSE(r->nonfinite);
    PartialNormOptions opts;
    opts.per_tensor = true;
    GradTensor empty{nullptr, 0, DType::kBFloat16, Device::Cpu(), false};
    r = ComputePartialNorm({empty, empty}, p, opts);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->value, 0.0);
    EXPECT_THAT(r->per_tensor, ::testing::ElementsAre(0.0, 0.0));
  }
  EXPECT_TRUE(ScaleInPlace({}, 0.5).ok());
}

// ---- Extremes: finite, correct norms.

TEST(PartialNormTest, Extremes) {
  struct Case {
    DType dtype;
    std::vector<double> values;
  };
  const std::vector<Case> cases = {
      {DType::kFloat32, {6e31, -1e-30, 6e31, 3.0}},
      {DType::kFloat32, {3.4e38, -3.4e38, 1.4e-45}},
      {DType::kFloat16, {65504, -65504, 6e-8, 1.0}},
      {DType::kBFloat16, {3e38, -3e38, 1e-38, 2.0}},
      {DType::kFloat64, {1e100, -1e-300, 2.0}},
  };
  for (const Case& c : cases) {
    TestTensor t(c.dtype, c.values);
    for (double p : {0.5, 1.0, 2.0, 3.0, kInf}) {
      absl::StatusOr<PartialNorm> r = ComputePartialNorm({t.view()}, p);
      ASSERT_TRUE(r.ok());
      const GradTensor v = t.view();
      const long double ref = ReferencePartialNorm({&v, 1}, p).value;
      EXPECT_FALSE(r->nonfinite) << DTypeName(c.dtype) << " p=" << p;
      EXPECT_TRUE(std::isfinite(r->value)) << DTypeName(c.dtype) << " p=" << p;
      EXPECT_NEAR(r->value, static_cast<double>(ref),
                  1e-14 * static_cast<double>(ref))
          << DTypeName(c.dtype) << " p=" << p;
    }
  }
}

// ---- NaN and Inf anywhere, in every dtype, through every p.

TEST(PartialNormTest, NonFiniteAnywherePropagates) {
  for (DType dtype : AllDTypes()) {
    for (int64_t n : {1, 17, 1000}) {
      for (int64_t pos : {int64_t{0}, n / 2, n - 1}) {
        for (int kind = 0; kind < 3; ++kind) {  // NaN, +Inf, -Inf
          std::vector<double> values = RandomValues(n, dtype, 3);
          values[pos] = kind == 0 ? NAN : (kind == 1 ? kInf : -kInf);
          TestTensor t(dtype, values);
          for (double p : {0.5, 1.0, 2.0, 3.0, kInf}) {
            for (int64_t chunk : {int64_t{0}, int64_t{7}}) {
              PartialNormOptions opts;
              opts.chunk_elements = chunk;
              absl::StatusOr<PartialNorm> r =
                  ComputePartialNorm({t.view()}, p, opts);
              ASSERT_TRUE(r.ok());
              SCOPED_TRACE(testing::Message()
                           << DTypeName(dtype) << " n=" << n << " pos=" << pos
                           << " kind=" << kind << " p=" << p);
              EXPECT_TRUE(r->nonfinite);
              if (kind == 0) {
                EXPECT_TRUE(std::isnan(r->value));
              } else {
                EXPECT_EQ(r->value, kInf);
              }
            }
          }
        }
      }
    }
  }
}

TEST(PartialNormTest, NanBeatsInfAcrossTensorsAndChunks) {
  for (DType dtype : AllDTypes()) {
    TestTensor inf_first(dtype, {kInf, 1.0, 2.0});
    TestTensor nan_later(dtype, {1.0, 2.0, NAN, 3.0});
    for (double p : {1.0, 2.0, 3.0, kInf}) {
      for (int64_t chunk : {int64_t{0}, int64_t{1}, int64_t{2}}) {
        PartialNormOptions opts;
        opts.chunk_elements = chunk;
        opts.per_tensor = true;
        absl::StatusOr<PartialNorm> r =
            ComputePartialNorm({inf_first.view(), nan_later.view()}, p, opts);
        ASSERT_TRUE(r.ok());
        EXPECT_TRUE(std::isnan(r->value)) << DTypeName(dtype) << " p=" << p;
        EXPECT_EQ(r->per_tensor[0], kInf);
        EXPECT_TRUE(std::isnan(r->per_tensor[1]));
        // And in the other order.
        r = ComputePartialNorm({nan_later.view(), inf_first.view()}, p, opts);
        ASSERT_TRUE(r.ok());
        EXPECT_TRUE(std::isnan(r->value)) << DTypeName(dtype) << " p=" << p;
      }
    }
  }
}

TEST(PartialNormTest, Fp64OverflowIsNotReportedAsNonFiniteInput) {
  TestTensor t(DType::kFloat64, {1e200, 1e200});
  absl::StatusOr<PartialNorm> r = ComputePartialNorm({t.view()}, 2.0);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->value, kInf);
  EXPECT_FALSE(r->nonfinite);
}

// ---- Random inputs against the long-double reference, through the public API.

TEST(PartialNormTest, ManyMixedTensorsMatchReferencePerTensor) {
  std::vector<TestTensor> storage;
  storage.reserve(10000);
  std::mt19937 rng(11);
  for (int i = 0; i < 10000; ++i) {
    const DType dtype = AllDTypes()[rng() % 4];
    const int64_t n = rng() % 300;
    storage.emplace_back(dtype, RandomValues(n, dtype, i), i % 2);
  }
  std::vector<GradTensor> views;
  for (TestTensor& t : storage) views.push_back(t.view());
  for (double p : {1.0, 2.0, 3.0, kInf}) {
    PartialNormOptions opts;
    opts.per_tensor = true;
    absl::StatusOr<PartialNorm> r = ComputePartialNorm(views, p, opts);
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r->per_tensor.size(), views.size());
    for (size_t i = 0; i < views.size(); ++i) {
      const double ref =
          static_cast<double>(ReferencePartialNorm({&views[i], 1}, p).value);
      if (std::isinf(p)) {
        ASSERT_EQ(r->per_tensor[i], ref) << i;
      } else {
        ASSERT_NEAR(r->per_tensor[i], ref, 1e-13 * ref) << i << " p=" << p;
      }
    }
    const double ref =
        static_cast<double>(ReferencePartialNorm(views, p).value);
    EXPECT_NEAR(r->value, ref, 1e-13 * ref) << "p=" << p;
  }
}

// ---- Determinism.

TEST(PartialNormTest, BitwiseIdenticalForAnyThreadCount) {
  std::vector<TestTensor> storage;
  for (DType dtype : AllDTypes()) {
    storage.emplace_back(dtype, RandomValues(300001, dtype, 5), 1);
    storage.emplace_back(dtype, RandomValues(4097, dtype, 6));
  }
  std::vector<GradTensor> views;
  for (TestTensor& t : storage) views.push_back(t.view());
  for (double p : {0.5, 1.0, 2.0, 3.0, kInf}) {
    for (int64_t chunk :
         {int64_t{0}, int64_t{1000}, int64_t{4096}, int64_t{100003}}) {
      PartialNormOptions opts;
      opts.chunk_elements = chunk;
      opts.per_tensor = true;
      opts.num_threads = 1;
      absl::StatusOr<PartialNorm> one = ComputePartialNorm(views, p, opts);
      ASSERT_TRUE(one.ok());
      for (int threads : {2, 7, 0}) {
        opts.num_threads = threads;
        for (int repeat = 0; repeat < 2; ++repeat) {
          absl::StatusOr<PartialNorm> r = ComputePartialNorm(views, p, opts);
          ASSERT_TRUE(r.ok());
          EXPECT_EQ(Bits(r->value), Bits(one->value))
              << "p=" << p << " chunk=" << chunk << " threads=" << threads;
          for (size_t i = 0; i < views.size(); ++i) {
            EXPECT_EQ(Bits(r->per_tensor[i]), Bits(one->per_tensor[i]));
          }
        }
      }
      // Another chunk size may round differently, but only in the last bits.
      const double ref =
          static_cast<double>(ReferencePartialNorm(views, p).value);
      EXPECT_NEAR(one->value, ref, 1e-13 * ref);
    }
  }
}

// Thousands of small tensors (the kernels prefetch them ahead across chunk,
// tensor and task boundaries), some empty, some larger than a prefetched
// block, the last ones empty.
TEST(PartialNormTest, ManySmallTensorsBitwiseIdenticalForAnyThreadCount) {
  std::vector<TestTensor> storage;
  storage.reserve(3003);
  std::mt19937 rng(17);
  for (int i = 0; i < 3000; ++i) {
    const DType dtype = AllDTypes()[rng() % 4];
    const int64_t n = i % 7 == 0 ? 0 : rng() % 2600;
    storage.emplace_back(dtype, RandomValues(n, dtype, 100 + i), i % 3);
  }
  for (int i = 0; i < 3; ++i) {
    storage.emplace_back(DType::kFloat32, std::vector<double>{});
  }
  std::vector<GradTensor> views;
  for (TestTensor& t : storage) views.push_back(t.view());
  for (double p : {2.0, kInf}) {
    for (int64_t chunk : {int64_t{0}, int64_t{1000}}) {
      PartialNormOptions opts;
      opts.chunk_elements = chunk;
      opts.per_tensor = true;
      opts.num_threads = 1;
      absl::StatusOr<PartialNorm> one = ComputePartialNorm(views, p, opts);
      ASSERT_TRUE(one.ok());
      for (size_t i = 0; i < views.size(); ++i) {
        const double ref =
            static_cast<double>(ReferencePartialNorm({&views[i], 1}, p).value);
        ASSERT_NEAR(one->per_tensor[i], ref, 1e-13 * ref) << i << " p=" << p;
      }
      for (int threads : {2, 7}) {
        opts.num_threads = threads;
        absl::StatusOr<PartialNorm> r = ComputePartialNorm(views, p, opts);
        ASSERT_TRUE(r.ok());
        EXPECT_EQ(Bits(r->value), Bits(one->value))
            << "p=" << p << " chunk=" << chunk << " threads=" << threads;
        for (size_t i = 0; i < views.size(); ++i) {
          ASSERT_EQ(Bits(r->per_tensor[i]), Bits(one->per_tensor[i])) << i;
        }
      }
    }
  }
}

// A caller's executor: three std::threads taking the indices from the last one
// down, interleaved. Counts its calls and the items it ran.
struct ReverseOnThreeThreads {
  std::atomic<int> calls{0};
  std::atomic<int64_t> items{0};

  ParallelFor Get() {
    return [this](int64_t n, const std::function<void(int64_t)>& fn) {
      calls.fetch_add(1);
      std::vector<std::thread> threads;
      for (int k = 0; k < 3; ++k) {
        threads.emplace_back([&, k] {
          for (int64_t i = n - 1 - k; i >= 0; i -= 3) {
            fn(i);
            items.fetch_add(1);
          }
        });
      }
      for (std::thread& t : threads) t.join();
    };
  }
};

TEST(PartialNormTest, CallersExecutorGivesBitwiseTheSameResult) {
  std::vector<TestTensor> storage;
  for (DType dtype : AllDTypes()) {
    storage.emplace_back(dtype, RandomValues(300001, dtype, 5), 1);
    storage.emplace_back(dtype, RandomValues(4097, dtype, 6));
    storage.emplace_back(dtype, RandomValues(0, dtype, 7));
  }
  std::vector<GradTensor> views;
  for (TestTensor& t : storage) views.push_back(t.view());
  for (double p : {0.5, 1.0, 2.0, 3.0, kInf}) {
    for (int64_t chunk : {int64_t{0}, int64_t{1000}, int64_t{100003}}) {
      PartialNormOptions opts;
      opts.chunk_elements = chunk;
      opts.per_tensor = true;
      opts.num_threads = 2;
      absl::StatusOr<PartialNorm> pool = ComputePartialNorm(views, p, opts);
      ASSERT_TRUE(pool.ok());
      ReverseOnThreeThreads executor;
      opts.parallel_for = executor.Get();
      absl::StatusOr<PartialNorm> r = ComputePartialNorm(views, p, opts);
      ASSERT_TRUE(r.ok());
      EXPECT_EQ(executor.calls.load(), 1) << "p=" << p << " chunk=" << chunk;
      EXPECT_GT(executor.items.load(), 1);
      EXPECT_EQ(Bits(r->value), Bits(pool->value))
          << "p=" << p << " chunk=" << chunk;
      EXPECT_EQ(r->nonfinite, pool->nonfinite);
      ASSERT_EQ(r->per_tensor.size(), views.size());
      for (size_t i = 0; i < views.size(); ++i) {
        EXPECT_EQ(Bits(r->per_tensor[i]), Bits(pool->per_tensor[i])) << i;
      }
    }
  }
}

TEST(PartialNormTest, CallersExecutorIsNotCalledForSmallInputs) {
  TestTensor t(DType::kFloat32, RandomValues(1000, DType::kFloat32, 3));
  ReverseOnThreeThreads executor;
  PartialNormOptions opts;
  opts.num_threads = 2;
  opts.parallel_for = executor.Get();
  absl::StatusOr<PartialNorm> r = ComputePartialNorm({t.view()}, 2.0, opts);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(Bits(r->value), Bits(ComputePartialNorm({t.view()}, 2.0)->value));
  EXPECT_EQ(executor.calls.load(), 0);  // one thread's work runs inline
}

TEST(PartialNormTest, Fp32AccumulationIsCloseAndOverflows) {
  TestTensor t(DType::kFloat32, RandomValues(100000, DType::kFloat16, 9));
  PartialNormOptions opts;
  opts.fp32_accumulation = true;
  absl::StatusOr<PartialNorm> f32 = ComputePartialNorm({t.view()}, 2.0, opts);
  absl::StatusOr<PartialNorm> f64 = ComputePartialNorm({t.view()}, 2.0);
  ASSERT_TRUE(f32.ok() && f64.ok());
  EXPECT_NEAR(f32->value, f64->value, 1e-4 * f64->value);
  TestTensor huge(DType::kFloat32, {6e31, 4});
  f32 = ComputePartialNorm({huge.view()}, 2.0, opts);
  ASSERT_TRUE(f32.ok());
  EXPECT_EQ(f32->value, kInf);  // what fp64 accumulation exists to prevent
  EXPECT_FALSE(f32->nonfinite);
}

// ---- ScaleInPlace.

TEST(ScaleInPlaceTest, ScalesEveryDtypeInItsOwnStorage) {
  for (DType dtype : AllDTypes()) {
    for (int64_t offset : {0, 1}) {
      const std::vector<double> values = RandomValues(100003, dtype, 21);
      TestTensor t(dtype, values, offset);
      TestTensor expect(dtype, values, offset);
      const double coef = 0.37;
      ASSERT_TRUE(ScaleInPlace({t.view()}, coef).ok());
      for (int64_t i = 0; i < t.numel(); ++i) {
        const double x = expect.Get(i);
        double want;
        if (dtype == DType::kFloat64) {
          want = x * coef;
        } else {
          const float prod = static_cast<float>(x) * static_cast<float>(coef);
          expect.Set(i, prod);  // rounds to the dtype, to nearest even
          want = expect.Get(i);
        }
        ASSERT_EQ(t.Get(i), want) << DTypeName(dtype) << " i=" << i;
      }
    }
  }
}

TEST(ScaleInPlaceTest, Bf16GradientsReallyAreScaled) {
  TestTensor t(DType::kBFloat16, {1.0, -2.0, 3.0});
  ASSERT_TRUE(ScaleInPlace({t.view()}, 0.5).ok());
  EXPECT_EQ(t.Get(0), 0.5);
  EXPECT_EQ(t.Get(1), -1.0);
  EXPECT_EQ(t.Get(2), 1.5);
}

TEST(ScaleInPlaceTest, ThreadCountDoesNotMatter) {
  for (int threads : {1, 2, 7}) {
    TestTensor t(DType::kFloat32, RandomValues(200000, DType::kFloat32, 4));
    TestTensor u(DType::kFloat32, RandomValues(200000, DType::kFloat32, 4));
    ScaleOptions opts;
    opts.num_threads = threads;
    ASSERT_TRUE(ScaleInPlace({t.view()}, 0.25, opts).ok());
    for (int64_t i = 0; i < t.numel(); ++i) {
      ASSERT_EQ(t.Get(i), u.Get(i) * 0.25);
    }
  }
}

TEST(ScaleInPlaceTest, ManySmallTensorsAreEachScaled) {
  std::vector<TestTensor> storage, expect;
  storage.reserve(3000);
  expect.reserve(3000);
  std::mt19937 rng(19);
  for (int i = 0; i < 3000; ++i) {
    const DType dtype = AllDTypes()[rng() % 4];
    const int64_t n = i % 7 == 0 ? 0 : rng() % 2600;
    const std::vector<double> values = RandomValues(n, dtype, 200 + i);
    storage.emplace_back(dtype, values, i % 3);
    expect.emplace_back(dtype, values, i % 3);
  }
  std::vector<GradTensor> views;
  for (TestTensor& t : storage) views.push_back(t.view());
  ScaleOptions opts;
  opts.num_threads = 2;
  const double coef = 0.37;
  ASSERT_TRUE(ScaleInPlace(views, coef, opts).ok());
  for (size_t k = 0; k < storage.size(); ++k) {
    const DType dtype = storage[k].view().dtype;
    for (int64_t i = 0; i < storage[k].numel(); ++i) {
      const double x = expect[k].Get(i);
      if (dtype == DType::kFloat64) {
        ASSERT_EQ(storage[k].Get(i), x * coef) << k << " " << i;
      } else {
        expect[k].Set(i, static_cast<float>(x) * static_cast<float>(coef));
        ASSERT_EQ(storage[k].Get(i), expect[k].Get(i)) << k << " " << i;
      }
    }
  }
}

TEST(ScaleInPlaceTest, CallersExecutorGivesBitwiseTheSameResult) {
  for (DType dtype : AllDTypes()) {
    const std::vector<double> a = RandomValues(300001, dtype, 31);
    const std::vector<double> b = RandomValues(70001, dtype, 32);
    TestTensor pool_a(dtype, a, 1), pool_b(dtype, b);
    TestTensor ours_a(dtype, a, 1), ours_b(dtype, b);
    ScaleOptions opts;
    opts.num_threads = 2;
    ASSERT_TRUE(ScaleInPlace({pool_a.view(), pool_b.view()}, 0.37, opts).ok());
    ReverseOnThreeThreads executor;
    opts.parallel_for = executor.Get();
    ASSERT_TRUE(ScaleInPlace({ours_a.view(), ours_b.view()}, 0.37, opts).ok());
    EXPECT_EQ(executor.calls.load(), 1) << DTypeName(dtype);
    EXPECT_GT(executor.items.load(), 1);
    EXPECT_EQ(ours_a.Bytes(), pool_a.Bytes()) << DTypeName(dtype);
    EXPECT_EQ(ours_b.Bytes(), pool_b.Bytes()) << DTypeName(dtype);
    EXPECT_NE(ours_a.Bytes(), TestTensor(dtype, a, 1).Bytes());  // scaled
  }
}

// ---- Bad input: a precise error, nothing written.

TEST(BadInputTest, BadPIsInvalidArgument) {
  std::vector<float> a = {1, 2};
  for (double p : {0.0, -1.0, -kInf, std::nan("")}) {
    absl::StatusOr<PartialNorm> r =
        ComputePartialNorm({GradTensor::Cpu(a.data(), 2)}, p);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr("expected p > 0"));
  }
  absl::StatusOr<PartialNorm> r = ComputePartialNorm({}, -2.0);
  EXPECT_EQ(r.status().message(),
            "norm_type -2 is invalid: expected p > 0 (a finite value or +inf)");
}

TEST(BadInputTest, BadTensorsAreInvalidArgumentAndNothingIsWritten) {
  TestTensor good(DType::kFloat32, {1, 2, 3});
  const std::vector<unsigned char> before = good.Bytes();
  GradTensor null_data{nullptr, 5, DType::kFloat32, Device::Cpu(), false};
  GradTensor negative{good.data(), -3, DType::kFloat32, Device::Cpu(), false};
  GradTensor unknown{good.data(), 3, static_cast<DType>(4), Device::Cpu(),
                     false};
  GradTensor gpu{good.data(), 3, DType::kFloat32, Device::Cuda(0), false};
  struct Case {
    GradTensor bad;
    const char* message;
  };
  const std::vector<Case> cases = {
      {null_data,
       "tensors[1]: data is null with numel 5; expected a non-null pointer "
       "when numel > 0"},
      {negative, "tensors[1]: numel is -3; expected >= 0"},
      {unknown,
       "tensors[1]: unknown dtype 4; expected fp32 (0), bf16 (1), fp16 (2) or "
       "fp64 (3)"},
      {gpu,
       "tensors[1] is on cuda:0 but tensors[0] is on cpu; expected all "
       "tensors on one device"},
  };
  for (const Case& c : cases) {
    std::vector<GradTensor> g = {good.view(), c.bad};
    absl::StatusOr<PartialNorm> r = ComputePartialNorm(g, 2.0);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(r.status().message(), c.message);
    absl::Status s = ScaleInPlace(g, 0.5);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(s.message(), c.message);
    EXPECT_EQ(good.Bytes(), before);
  }
}

TEST(BadInputTest, BadCoefIsInvalidArgumentAndNothingIsWritten) {
  TestTensor good(DType::kBFloat16, {1, 2, 3});
  const std::vector<unsigned char> before = good.Bytes();
  for (double coef : {-0.5, -kInf, kInf, std::nan("")}) {
    absl::Status s = ScaleInPlace({good.view()}, coef);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(s.message(), HasSubstr("expected a finite value >= 0"));
    EXPECT_EQ(good.Bytes(), before);
  }
  EXPECT_EQ(ScaleInPlace({good.view()}, -0.5).message(),
            "scale coefficient is -0.5; expected a finite value >= 0");
}

TEST(BadInputTest, BadOptionsAreInvalidArgument) {
  PartialNormOptions opts;
  opts.num_threads = -1;
  EXPECT_EQ(ComputePartialNorm({}, 2.0, opts).status().message(),
            "num_threads is -1; expected >= 0 (0 = one per hardware thread)");
  opts = {};
  opts.chunk_elements = -5;
  EXPECT_EQ(ComputePartialNorm({}, 2.0, opts).status().message(),
            "chunk_elements is -5; expected >= 0 (0 = the default)");
}

TEST(BadInputTest, DeviceResultNeedsCudaTensors) {
  TestTensor good(DType::kFloat32, {1, 2, 3});
  double out = -1;
  absl::Status s = ComputePartialNormOnDevice({good.view()}, 2.0, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("expected CUDA tensors"));
  s = ComputePartialNormOnDevice({good.view()}, 2.0, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("device_result is null"));
  EXPECT_EQ(out, -1);
}

#if defined(GRADNORM_WITH_CUDA)
TEST(BadInputTest, CudaTensorsWithoutADeviceAreFailedPrecondition) {
  int count = 0;
  if (cudaGetDeviceCount(&count) == cudaSuccess && count > 0) {
    GTEST_SKIP()
        << "a CUDA device is present: partial_norm_cuda_test covers it";
  }
  std::vector<float> a(3);
  GradTensor gpu{a.data(), 3, DType::kFloat32, Device::Cuda(0), false};
  absl::StatusOr<PartialNorm> r = ComputePartialNorm({gpu}, 2.0);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(),
              HasSubstr("cudaGetDevice(&previous) failed: cudaError"));
  EXPECT_EQ(ScaleInPlace({gpu}, 0.5).code(),
            absl::StatusCode::kFailedPrecondition);
}
#else
TEST(BadInputTest, CudaTensorsWithoutCudaAreFailedPrecondition) {
  std::vector<float> a(3);
  GradTensor gpu{a.data(), 3, DType::kFloat32, Device::Cuda(1), false};
  absl::StatusOr<PartialNorm> r = ComputePartialNorm({gpu}, 2.0);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(r.status().message(),
            "tensors are on cuda:1 but gradnorm was built without CUDA; "
            "rebuild with a CUDA toolkit or pass CPU tensors");
  EXPECT_EQ(ScaleInPlace({gpu}, 0.5).code(),
            absl::StatusCode::kFailedPrecondition);
  double out;
  EXPECT_EQ(ComputePartialNormOnDevice({gpu}, 2.0, &out).code(),
            absl::StatusCode::kFailedPrecondition);
}
#endif

}  // namespace
}  // namespace gradnorm
