// gradnormctl parity: two runs' totals compared step by step, bitwise, to
// validate a new parallel layout (with exact partials the total of a step is
// the same bits for any sharding and job split, so a difference means the
// gradients or their sharding differ).
//
//   ParityReport report = CompareTotals(rounds_a, rounds_b);  // step order
//   std::cout << ParityText(report, "run-a", "run-b");
//   return report.equal() ? 0 : 1;
//
// Thread-safety: pure functions.
#ifndef GRADNORM_TOOLS_GRADNORMCTL_PARITY_H_
#define GRADNORM_TOOLS_GRADNORMCTL_PARITY_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "gradnorm/v1/coordinator.pb.h"

namespace gradnorm {
namespace gradnormctl {

struct ParityDifference {
  uint64_t step = 0;
  double a = 0.0;
  double b = 0.0;
  // b - a, |b - a| / |a|, and how many doubles lie between them (0 when
  // either is non-finite or their signs differ).
  double difference = 0.0;
  double relative = 0.0;
  uint64_t ulps = 0;
};

struct ParityReport {
  // Steps finalized in both runs, and compared.
  uint64_t compared = 0;
  // Steps finalized in only one of them (not compared).
  uint64_t only_a = 0;
  uint64_t only_b = 0;
  // The first common step whose totals differ in any bit (NaN equals NaN).
  std::optional<ParityDifference> first_difference;
  // Common steps whose totals differ.
  uint64_t differing = 0;

  bool equal() const { return !first_difference.has_value(); }
};

// `a` and `b` in step order (as a watch replays them).
ParityReport CompareTotals(const std::vector<v1::RoundResult>& a,
                           const std::vector<v1::RoundResult>& b);

// "runs A and B: 200 common steps, bitwise equal" or "... first differs at
// step 17: 1.2345678901234567 vs 1.2345678901234569 (+2.2e-16, 1 ulp); 3
// steps differ", plus the steps only one run has.
std::string ParityText(const ParityReport& report, const std::string& a,
                       const std::string& b);
// The same as one JSON object.
std::string ParityJson(const ParityReport& report, const std::string& a,
                       const std::string& b);

}  // namespace gradnormctl
}  // namespace gradnorm

#endif  // GRADNORM_TOOLS_GRADNORMCTL_PARITY_H_
