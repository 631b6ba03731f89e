// A round's total from exact partials (ReportRequest.exact_partial): the
// participants' ExactSums added with no rounding, then rounded once, so the
// total does not depend on how the run was split into jobs and shards.
//
//   RETURN_IF_ERROR(CheckExactPartial(config, request));  // each report
//   std::optional<double> total = CombineExactPartials(p, exact_partials);
//   if (!total) total = CombinePartials(p, partials);       // an inexact
//                                                            // run
//
// Thread-safety: pure functions.
#ifndef GRADNORM_SERVER_CORE_EXACT_TOTAL_H_
#define GRADNORM_SERVER_CORE_EXACT_TOTAL_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gradnorm/v1/coordinator.pb.h"

namespace gradnorm {
namespace server {

// OK for a report with a valid exact partial, and for one without when the
// run's p is not 1 or 2 or the run is inexact. FAILED_PRECONDITION for one
// without in a run of p = 1 or 2 that is not inexact. INVALID_ARGUMENT when it
// has one but the run's p is not 1 or 2, the bytes are not an ExactSum's, or
// `partial` is not the exact partial rounded to nearest fp64.
absl::Status CheckExactPartial(const v1::RunConfig& config,
                               const v1::ReportRequest& request);

// fl(sqrt(fl(S))) for p = 2, fl(S) for p = 1, S the exact sum of the
// participants' exact partials (checked by CheckExactPartial): NaN when any
// was NaN, else +Inf when any was. nullopt when one of them is empty (that
// participant sent only a double) or p is not 1 or 2.
std::optional<double> CombineExactPartials(
    double norm_type, const std::vector<std::string>& exact_partials);

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_CORE_EXACT_TOTAL_H_
