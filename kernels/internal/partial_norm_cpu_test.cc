// Runs the CPU kernels on every SIMD target this machine supports (Highway's
// test hook forces the dispatch), against the long-double reference.
#include "kernels/internal/partial_norm_cpu.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "hwy/targets.h"
#include "kernels/internal/half.h"
#include "kernels/internal/reference_norm.h"
#include "kernels/internal/test_tensor.h"

namespace gradnorm {
namespace kernels_internal {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

class PerTarget : public ::testing::TestWithParam<int64_t> {
 protected:
  void SetUp() override { hwy::SetSupportedTargetsForTest(GetParam()); }
  void TearDown() override { hwy::SetSupportedTargetsForTest(0); }
};

std::string TargetName(const ::testing::TestParamInfo<int64_t>& info) {
  return hwy::TargetName(info.param);
}

INSTANTIATE_TEST_SUITE_P(
    AllTargets, PerTarget,
    ::testing::ValuesIn(hwy::SupportedAndGeneratedTargets()), TargetName);

// The reference is slow (powl per element) and the same for every target and
// offset; compute it once per (dtype, length, p).
long double CachedReference(const GradTensor& view, double p) {
  static auto* cache =
      new std::map<std::tuple<int32_t, int64_t, double>, long double>();
  const auto key =
      std::make_tuple(static_cast<int32_t>(view.dtype), view.numel, p);
  auto it = cache->find(key);
  if (it == cache->end()) {
    it = cache->emplace(key, ReferencePartialNorm({&view, 1}, p).value).first;
  }
  return it->second;
}

TEST_P(PerTarget, RandomInputsMatchReference) {
  const std::vector<int64_t> lengths = {0,    1,     15,    16,    17,
                                        4095, 65535, 65536, 65537, 1000000};
  for (DType dtype : AllDTypes()) {
    for (int64_t n : lengths) {
      const std::vector<double> values =
          RandomValues(n, dtype, static_cast<uint32_t>(n) + 1);
      for (int64_t offset : {0, 1}) {
        TestTensor t(dtype, values, offset);
        const GradTensor view = t.view();
        for (double p : {0.5, 1.0, 2.0, 3.0, kInf}) {
          const double want = static_cast<double>(CachedReference(view, p));
          const PartialNorm r = ComputePartialNormCpu({&view, 1}, p, {});
          SCOPED_TRACE(::testing::Message()
                       << DTypeName(dtype) << " n=" << n << " offset=" << offset
                       << " p=" << p);
          EXPECT_FALSE(r.nonfinite);
          if (std::isinf(p)) {
            EXPECT_EQ(r.value, want);
          } else {
            EXPECT_NEAR(r.value, want, 1e-12 * want);
          }
        }
      }
    }
  }
}

TEST_P(PerTarget, NonFiniteInEveryPosition) {
  for (DType dtype : AllDTypes()) {
    const int64_t n = 100;
    for (int64_t pos = 0; pos < n; pos += 11) {
      std::vector<double> values = RandomValues(n, dtype, 8);
      values[pos] = NAN;
      values[n - 1 - pos] = -kInf;
      TestTensor t(dtype, values);
      const GradTensor view = t.view();
      for (double p : {1.0, 2.0, 3.0, kInf}) {
        for (bool f32 : {false, true}) {
          CpuNormOptions opts;
          opts.fp32_accumulation = f32;
          const PartialNorm r = ComputePartialNormCpu({&view, 1}, p, opts);
          EXPECT_TRUE(r.nonfinite) << DTypeName(dtype) << " pos " << pos;
          EXPECT_TRUE(std::isnan(r.value))
              << DTypeName(dtype) << " pos " << pos;
        }
      }
    }
  }
}

// 16-bit inputs m * scale with small integers m: every square and every
// partial sum is exact in fp64, so the result must equal the exact sum bit for
// bit, whichever lane or accumulator each element went to. Covers subnormal,
// normal and large magnitudes and every block/tail split.
TEST_P(PerTarget, SixteenBitSumsAreExactWhereFp64IsExact) {
  struct Case {
    DType dtype;
    double scale;
  };
  const Case cases[] = {
      {DType::kBFloat16, 1.0},
      {DType::kBFloat16, std::ldexp(1.0, -133)},  // bf16 subnormals
      {DType::kBFloat16, std::ldexp(1.0, 100)},
      {DType::kFloat16, 1.0},
      {DType::kFloat16, std::ldexp(1.0, -24)},  // fp16 subnormals
  };
  for (const Case& c : cases) {
    for (int64_t n : {1, 7, 31, 32, 33, 63, 64, 65, 1000, 70001}) {
      std::vector<double> values(n);
      double sum_m = 0.0;
      double sum_m2 = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        const double m = static_cast<double>((i * 37) % 127 + 1);
        values[i] = (i % 3 == 1 ? -m : m) * c.scale;
        sum_m += m;
        sum_m2 += m * m;
      }
      for (int64_t offset : {0, 1}) {
        TestTensor t(c.dtype, values, offset);
        const GradTensor view = t.view();
        SCOPED_TRACE(::testing::Message()
                     << DTypeName(c.dtype) << " n=" << n << " scale=" << c.scale
                     << " offset=" << offset);
        EXPECT_EQ(ComputePartialNormCpu({&view, 1}, 2.0, {}).value,
                  sum_m2 * c.scale * c.scale);
        EXPECT_EQ(ComputePartialNormCpu({&view, 1}, 1.0, {}).value,
                  sum_m * c.scale);
      }
    }
  }
}

TEST_P(PerTarget, ScaleMatchesScalarRoundingForEvery16BitValue) {
  for (DType dtype : {DType::kBFloat16, DType::kFloat16}) {
    for (double coef : {0.0, 0.19999996000000798, 0.5, 0.999, 1.0, 3.0}) {
      for (int64_t offset : {0, 1}) {
        std::vector<double> unused(0x10000);
        TestTensor t(dtype, unused, offset);
        uint16_t* bits = static_cast<uint16_t*>(t.data());
        for (uint32_t h = 0; h < 0x10000; ++h)
          bits[h] = static_cast<uint16_t>(h);
        const GradTensor view = t.view();
        ScaleInPlaceCpu({&view, 1}, coef, 1);
        const float c = static_cast<float>(coef);
        for (uint32_t h = 0; h < 0x10000; ++h) {
          const uint16_t in = static_cast<uint16_t>(h);
          uint16_t want;
          if (dtype == DType::kBFloat16) {
            want = half_internal::FloatToBFloat16Bits(
                half_internal::BFloat16BitsToFloat(in) * c);
          } else {
            want = half_internal::FloatToHalfBits(
                half_internal::HalfBitsToFloat(in) * c);
          }
          ASSERT_EQ(bits[h], want)
              << DTypeName(dtype) << " in=" << h << " coef=" << coef;
        }
      }
    }
  }
}

TEST_P(PerTarget, ScaleFp32AndFp64) {
  TestTensor f(DType::kFloat32, RandomValues(1001, DType::kFloat32, 2), 1);
  TestTensor d(DType::kFloat64, RandomValues(1001, DType::kFloat64, 2), 1);
  std::vector<double> f_before, d_before;
  for (int64_t i = 0; i < 1001; ++i) {
    f_before.push_back(f.Get(i));
    d_before.push_back(d.Get(i));
  }
  const GradTensor views[] = {f.view(), d.view()};
  ScaleInPlaceCpu(views, 0.3, 2);
  for (int64_t i = 0; i < 1001; ++i) {
    ASSERT_EQ(f.Get(i), static_cast<float>(f_before[i]) * 0.3f);
    ASSERT_EQ(d.Get(i), d_before[i] * 0.3);
  }
}

TEST(ScaleBeyondFp32Test, HugeCoefficientUsesFp64Products) {
  TestTensor f(DType::kFloat32, {0.0, 1e-39, 2.0});
  const GradTensor view = f.view();
  ScaleInPlaceCpu({&view, 1}, 1e300, 1);
  EXPECT_EQ(f.Get(0), 0.0);  // not 0 * Inf = NaN
  EXPECT_EQ(f.Get(1), kInf);
  EXPECT_EQ(f.Get(2), kInf);
}

}  // namespace
}  // namespace kernels_internal
}  // namespace gradnorm
