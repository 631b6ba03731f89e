#include "tests/demo/synthetic_model.h"

#include <cmath>
#include <set>

#include "gtest/gtest.h"

namespace gradnorm {
namespace demo {
namespace {

long double ShardSumOfSquares(const Shard& shard) {
  long double acc = 0;
  for (size_t i = 0; i < shard.indices.size(); ++i) {
    const long double v = shard.dtype == DType::kBFloat16
                              ? Bf16ToFloat(shard.half_values[i])
                              : shard.values[i];
    acc += v * v;
  }
  return acc;
}

TEST(SyntheticModelTest, ShardsCoverEveryElementExactlyOnce) {
  const SyntheticModel model =
      SyntheticModel::Gpt(/*layers=*/3, /*hidden=*/16, /*vocab=*/40, /*jobs=*/2,
                          /*seed=*/11, Plan{});
  for (int dp : {1, 2, 3}) {
    for (int tp : {1, 2}) {
      SCOPED_TRACE(testing::Message() << "dp=" << dp << " tp=" << tp);
      long double total = 0;
      std::set<std::pair<int, int64_t>> seen;
      for (int job = 0; job < 2; ++job) {
        for (int d = 0; d < dp; ++d) {
          for (int t = 0; t < tp; ++t) {
            for (Shard& shard : model.ShardsOf({job, 2, d, dp, t, tp})) {
              model.Fill(5, &shard);
              if (shard.tp_replicated && t != 0) continue;
              total += ShardSumOfSquares(shard);
              for (int64_t index : shard.indices) {
                EXPECT_TRUE(seen.insert({shard.param, index}).second)
                    << "element counted twice";
              }
            }
          }
        }
      }
      EXPECT_EQ(static_cast<int64_t>(seen.size()), model.total_elements());
      const long double full = model.FullPartial(5, 2.0);
      EXPECT_NEAR(static_cast<double>(total), static_cast<double>(full),
                  1e-15 * static_cast<double>(full));
    }
  }
}

TEST(SyntheticModelTest, PlantedSpikeAndNan) {
  Plan plan;
  plan.spike_step = 4;
  plan.spike_factor = 40.0;
  plan.nan_step = 6;
  const SyntheticModel model = SyntheticModel::Gpt(2, 16, 40, 1, 3, plan);
  const double normal =
      std::sqrt(static_cast<double>(model.FullPartial(3, 2.0)));
  const double spike =
      std::sqrt(static_cast<double>(model.FullPartial(4, 2.0)));
  EXPECT_GT(spike, 20 * normal);
  EXPECT_TRUE(std::isnan(static_cast<double>(model.FullPartial(6, 2.0))));
  EXPECT_TRUE(std::isnan(static_cast<double>(model.FullPartial(6, INFINITY))));
  EXPECT_FALSE(std::isnan(static_cast<double>(model.FullPartial(7, 2.0))));
}

TEST(SyntheticModelTest, Bf16RoundsToNearestEven) {
  EXPECT_EQ(FloatToBf16(1.0f), 0x3f80);
  // 1 + 2^-8 is halfway between bf16 1.0 and 1.0078125: ties go to even (1.0).
  EXPECT_EQ(FloatToBf16(1.00390625f), 0x3f80);
  // 1 + 3 * 2^-8 is halfway between 1.0078125 (odd) and 1.015625 (even).
  EXPECT_EQ(FloatToBf16(1.01171875f), 0x3f82);
  EXPECT_EQ(Bf16ToFloat(0x4040), 3.0f);
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(NAN))));
}

}  // namespace
}  // namespace demo
}  // namespace gradnorm
