#include "tools/gradnormctl/plot.h"

#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gradnorm {
namespace gradnormctl {
namespace {

using ::testing::HasSubstr;

// One bucket per step: totals 1 2 3 (clipped) 10 (a spike, skipped) NaN
// (skipped) 2.
v1::GetHistoryResponse History() {
  const double totals[] = {
      1, 2, 3, 10, std::numeric_limits<double>::quiet_NaN(), 2};
  v1::GetHistoryResponse history;
  for (int step = 0; step < 6; ++step) {
    v1::HistoryBucket* b = history.add_buckets();
    b->set_first_step(step);
    b->set_last_step(step);
    b->set_rounds(1);
    const double t = totals[step];
    const double nan = std::numeric_limits<double>::quiet_NaN();
    b->set_min_norm(t == t ? t : nan);
    b->set_max_norm(t == t ? t : nan);
    b->set_mean_norm(t == t ? t : nan);
    b->set_last_norm(t);
    b->set_clipped(step == 2 ? 1 : 0);
    b->set_skipped(step == 3 || step == 4 ? 1 : 0);
  }
  return history;
}

// The chart's lines; cell (row, column) as one string (UTF-8 characters).
std::vector<std::string> Lines(const std::string& plot) {
  return absl::StrSplit(plot, '\n', absl::SkipEmpty());
}

TEST(PlotTest, DrawsEachBucketMarksSkipsAndClipsAndTheThreshold) {
  PlotOptions options;
  options.width = 20;
  options.height = 10;
  options.max_norm = 5;
  const std::string plot = RenderPlot(History(), options);
  const std::vector<std::string> lines = Lines(plot);
  ASSERT_EQ(lines.size(), 13u) << plot;  // 10 rows, markers, steps, legend
  // The top row is the spike's (10): only column 3 has a mean block there.
  EXPECT_THAT(lines[0], ::testing::StartsWith("       10 "));
  EXPECT_EQ(lines[0].substr(10), "   \u2588  ");
  // The bottom row (0..1) holds step 0's mean.
  EXPECT_EQ(lines[9].substr(10, 3), "\u2588");
  // max_norm 5 is a dashed line across the empty cells of its row.
  EXPECT_THAT(plot, HasSubstr("\u254c\u254c\u254c"));
  // Markers: C under the clipped step, S under the spike and the NaN step.
  EXPECT_EQ(lines[10], std::string(10, ' ') + "  CSS ");
  EXPECT_THAT(lines[11], HasSubstr("step 0"));
  EXPECT_THAT(lines[11], ::testing::EndsWith("5"));
  EXPECT_THAT(lines[12], HasSubstr("S skipped  C clipped"));
}

TEST(PlotTest, ColumnsLeaveRoomForTheAxis) {
  EXPECT_EQ(PlotColumns(80), 70);
  EXPECT_EQ(PlotColumns(5), 10);
}

TEST(PlotTest, NothingToPlotSaysSo) {
  PlotOptions options;
  EXPECT_EQ(RenderPlot(v1::GetHistoryResponse(), options),
            "no finalized rounds in this range\n");
  v1::GetHistoryResponse only_nan;
  only_nan.add_buckets()->set_min_norm(
      std::numeric_limits<double>::quiet_NaN());
  only_nan.mutable_buckets(0)->set_max_norm(
      std::numeric_limits<double>::quiet_NaN());
  EXPECT_EQ(RenderPlot(only_nan, options),
            "no finite total norm in this range\n");
}

}  // namespace
}  // namespace gradnormctl
}  // namespace gradnorm
