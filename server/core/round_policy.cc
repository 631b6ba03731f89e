#include "server/core/round_policy.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "server/core/number_format.h"

namespace gradnorm {
namespace server {

double CombinePartials(double norm_type, const std::vector<double>& partials) {
  bool any_nan = false;
  for (double partial : partials) any_nan |= std::isnan(partial);
  // Explicit, because std::max and comparisons drop NaN (the classic lost-NaN
  // bug of inf-norm reductions).
  if (any_nan) return std::numeric_limits<double>::quiet_NaN();
  if (std::isinf(norm_type)) {
    double max = 0;
    for (double partial : partials) max = partial > max ? partial : max;
    return max;
  }
  double sum = 0;
  for (double partial : partials) sum += partial;
  if (norm_type == 2.0) return std::sqrt(sum);
  if (norm_type == 1.0) return sum;
  return std::pow(sum, 1.0 / norm_type);
}

RoundPolicy::RoundPolicy(const v1::RunConfig& config)
    : clip_(MakeClipPolicy(config)), spike_(config.spike_rule()) {}

RoundDecision RoundPolicy::Decide(double total) const {
  RoundDecision d;
  d.effective_max_norm = clip_->EffectiveMaxNorm();
  if (!std::isfinite(total)) {
    d.action = v1::ACTION_SKIP;
    d.reason = v1::REASON_NONFINITE;
    d.detail = absl::StrCat("norm ", FormatNumber(total),
                            " is not finite: step skipped");
    return d;
  }
  if (std::optional<SpikeRule::Window> w = spike_.Current();
      w.has_value() && w->std > 0 && total > w->threshold) {
    d.action = v1::ACTION_SKIP;
    d.reason = v1::REASON_SPIKE;
    d.detail = absl::StrCat(
        "norm ", FormatNumber(total), " > spike threshold ",
        FormatNumber(w->threshold), " = mean ", FormatNumber(w->mean), " + ",
        FormatNumber(w->sigma), " * std ", FormatNumber(w->std),
        " of the last ", w->size, " steps: step skipped");
    return d;
  }
  const double coef = d.effective_max_norm / (total + 1e-6);
  if (coef < 1.0) {
    d.action = v1::ACTION_CLIP;
    d.reason = v1::REASON_ABOVE_MAX_NORM;
    d.clip_coef = coef;
    d.detail = absl::StrCat("norm ", FormatNumber(total), " > max_norm ",
                            FormatNumber(d.effective_max_norm), " (",
                            clip_->name(), ")");
  } else {
    d.detail = absl::StrCat("norm ", FormatNumber(total), " <= max_norm ",
                            FormatNumber(d.effective_max_norm), " (",
                            clip_->name(), ")");
  }
  return d;
}

void RoundPolicy::Observe(double total, v1::Action action) {
  if (!std::isfinite(total)) return;
  if (action == v1::ACTION_SKIP) {  // A finite total is skipped as a spike.
    if (std::optional<SpikeRule::Window> w = spike_.Current()) {
      spike_.Observe(std::min(total, w->threshold));
    }
    return;
  }
  clip_->Observe(total);
  spike_.Observe(total);
}

}  // namespace server
}  // namespace gradnorm
