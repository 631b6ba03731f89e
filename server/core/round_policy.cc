#include "server/core/round_policy.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/norm_math.h"
#include "server/core/number_format.h"

namespace gradnorm {
namespace server {

double CombinePartials(double norm_type, const std::vector<double>& partials) {
  const bool inf_norm = IsInfNorm(norm_type);
  double combined = 0;
  for (double partial : partials) {
    combined = inf_norm ? NanMax(combined, partial) : combined + partial;
  }
  return NormFromPartial(norm_type, combined);
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
  const double coef = ClipCoefficient(d.effective_max_norm, total);
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
