#include "server/core/exact_total.h"

#include <cmath>
#include <string>
#include <vector>

#include "common/exact_sum.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gradnorm {
namespace server {
namespace {

using ::testing::HasSubstr;

std::string Exact(std::initializer_list<double> squares_of) {
  ExactSum s;
  for (double g : squares_of) s.AddSquare(g);
  return s.Encode();
}

v1::ReportRequest Report(const std::string& exact) {
  v1::ReportRequest r;
  r.set_run_id("r");
  r.set_step(3);
  r.set_participant(1);
  r.set_exact_partial(exact);
  absl::StatusOr<ExactSum> sum = ExactSum::Decode(exact);
  if (sum.ok()) r.set_partial(sum->RoundToDouble());
  return r;
}

TEST(ExactTotalTest, TheTotalDoesNotDependOnTheJobSplit) {
  // 2^53 and two ones: in fp64 the ones are lost (ties to even), exactly they
  // are not. The same gradients as 2 jobs or as 3 give the same total.
  const double big = std::ldexp(1.0, 26);  // big^2 = 2^52
  const std::vector<std::string> two_jobs = {Exact({big, big}),
                                             Exact({1.0, 1.0})};
  const std::vector<std::string> three_jobs = {Exact({big}), Exact({1.0, big}),
                                               Exact({1.0})};
  const std::optional<double> a = CombineExactPartials(2.0, two_jobs);
  const std::optional<double> b = CombineExactPartials(2.0, three_jobs);
  ASSERT_TRUE(a.has_value() && b.has_value());
  EXPECT_EQ(*a, *b);
  EXPECT_EQ(*a, std::sqrt(std::ldexp(1.0, 53) + 2.0));
  // p = 1 rounds the sum itself.
  EXPECT_EQ(*CombineExactPartials(1.0, {Exact({}), Exact({})}), 0.0);
}

TEST(ExactTotalTest, ADoubleOnlyParticipantOrAnotherPMeansNoExactTotal) {
  EXPECT_FALSE(CombineExactPartials(2.0, {Exact({1.0}), ""}).has_value());
  EXPECT_FALSE(CombineExactPartials(3.0, {Exact({1.0})}).has_value());
  ExactSum nan;
  nan.AddNaN();
  ExactSum inf;
  inf.AddInf();
  EXPECT_TRUE(
      std::isnan(*CombineExactPartials(2.0, {inf.Encode(), nan.Encode()})));
  EXPECT_TRUE(
      std::isinf(*CombineExactPartials(2.0, {inf.Encode(), Exact({1})})));
}

TEST(ExactTotalTest, ChecksEachReport) {
  v1::RunConfig config;
  config.set_norm_type(2);
  EXPECT_TRUE(CheckExactPartial(config, Report(Exact({3.0}))).ok());
  // A double alone: refused unless the run is inexact, or its p has no exact
  // partials.
  v1::ReportRequest double_only = Report("");
  double_only.set_partial(9.0);
  absl::Status refused = CheckExactPartial(config, double_only);
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.message(),
              HasSubstr("participant 1 reported step 3 of run r with only a "
                        "double partial"));
  EXPECT_THAT(refused.message(), HasSubstr("inexact: true"));
  config.set_norm_type(1);
  EXPECT_EQ(CheckExactPartial(config, double_only).code(),
            absl::StatusCode::kFailedPrecondition);
  config.set_inexact(true);
  EXPECT_TRUE(CheckExactPartial(config, double_only).ok());
  EXPECT_TRUE(CheckExactPartial(config, Report(Exact({3.0}))).ok());
  config.set_inexact(false);
  config.set_norm_type(3);
  EXPECT_TRUE(CheckExactPartial(config, double_only).ok());
  config.set_norm_type(INFINITY);
  EXPECT_TRUE(CheckExactPartial(config, double_only).ok());
  config.set_norm_type(2);
  v1::ReportRequest wrong = Report(Exact({3.0}));
  wrong.set_partial(9.000000000000002);
  absl::Status mismatch = CheckExactPartial(config, wrong);
  EXPECT_EQ(mismatch.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(mismatch.message(),
              HasSubstr("expected partial to be the exact partial rounded"));
  absl::Status garbage = CheckExactPartial(config, Report("\x01\x00\x05"));
  EXPECT_EQ(garbage.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(garbage.message(),
              HasSubstr("participant 1 for step 3 of run r"));
  config.set_norm_type(INFINITY);
  absl::Status inf_norm = CheckExactPartial(config, Report(Exact({3.0})));
  EXPECT_EQ(inf_norm.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(inf_norm.message(), HasSubstr("for p = 1 and 2 only"));
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
