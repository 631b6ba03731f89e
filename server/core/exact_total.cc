#include "server/core/exact_total.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/exact_sum.h"
#include "server/core/number_format.h"

namespace gradnorm {
namespace server {

absl::Status CheckExactPartial(const v1::RunConfig& config,
                               const v1::ReportRequest& request) {
  const double p = config.norm_type();
  if (request.exact_partial().empty()) {
    if ((p != 1.0 && p != 2.0) || config.inexact()) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat(
        "participant ", request.participant(), " reported step ",
        request.step(), " of run ", request.run_id(),
        " with only a double partial; the run sums exact partials (norm_type ",
        FormatNumber(p),
        "), so every report must carry exact_partial: use a gradnorm client "
        "that sends them, or register the run with inexact: true"));
  }
  if (p != 1.0 && p != 2.0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "participant ", request.participant(),
        " sent an exact partial for "
        "step ",
        request.step(), " of run ", request.run_id(), ", whose norm_type is ",
        FormatNumber(p), "; exact partials are for p = 1 and 2 only"));
  }
  absl::StatusOr<ExactSum> exact = ExactSum::Decode(request.exact_partial());
  if (!exact.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "participant ", request.participant(), " for step ", request.step(),
        " of run ", request.run_id(), ": ", exact.status().message()));
  }
  const double rounded = exact->RoundToDouble();
  const double partial = request.partial();
  // Bitwise: -0 is not a partial, and NaN must meet NaN.
  if (std::memcmp(&rounded, &partial, sizeof(double)) != 0 &&
      !(std::isnan(rounded) && std::isnan(partial))) {
    return absl::InvalidArgumentError(
        absl::StrCat("participant ", request.participant(), " for step ",
                     request.step(), " of run ", request.run_id(),
                     " sent partial ", FormatNumber(request.partial()),
                     " with an exact partial that rounds "
                     "to ",
                     FormatNumber(rounded),
                     "; expected partial to be the exact "
                     "partial rounded to nearest"));
  }
  return absl::OkStatus();
}

std::optional<double> CombineExactPartials(
    double norm_type, const std::vector<std::string>& exact_partials) {
  if (norm_type != 1.0 && norm_type != 2.0) return std::nullopt;
  ExactSum total;
  for (const std::string& bytes : exact_partials) {
    if (bytes.empty()) return std::nullopt;
    absl::StatusOr<ExactSum> partial = ExactSum::Decode(bytes);
    if (!partial.ok()) return std::nullopt;  // CheckExactPartial refused it.
    total.Merge(*partial);
  }
  const double s = total.RoundToDouble();
  return norm_type == 2.0 ? std::sqrt(s) : s;
}

}  // namespace server
}  // namespace gradnorm
