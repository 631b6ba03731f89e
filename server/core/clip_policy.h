// How a run's effective max_norm is chosen for each round: static, AutoClip
// (a percentile of the run's own norm history) or ZClip (z-score over an EMA
// of the norm's mean and variance). Policy state is a pure function of the
// finite totals observed, in finalization order, so replaying a run's stored
// history rebuilds it exactly after a restart.
//
//   std::unique_ptr<ClipPolicy> policy = MakeClipPolicy(normalized_config);
//   double max_norm = policy->EffectiveMaxNorm();  // for the round at hand
//   policy->Observe(total);                        // once it is finalized
//
// Semantics (state before the round decides the round):
// - static: RunConfig.max_norm always.
// - AutoClip: RunConfig.max_norm until warmup_steps finite totals have been
//   observed; then the nearest-rank percentile (the ceil(percentile/100 * n)-th
//   smallest) of the last history_length finite totals.
// - ZClip: RunConfig.max_norm until warmup_steps finite totals have been
//   observed; these initialize mean and (population) variance. Then the
//   threshold is mean + z_threshold * std; each new finite total g is clipped
//   to c = min(g, threshold) and updates
//     mean = alpha * mean + (1 - alpha) * c
//     var  = alpha * var  + (1 - alpha) * (c - mean)^2   (with the new mean).
//
// Thread-safety: none; the owner (one run) serializes calls.
#ifndef GRADNORM_SERVER_CORE_CLIP_POLICY_H_
#define GRADNORM_SERVER_CORE_CLIP_POLICY_H_

#include <memory>

#include "absl/strings/string_view.h"
#include "gradnorm/v1/coordinator.pb.h"

namespace gradnorm {
namespace server {

class ClipPolicy {
 public:
  virtual ~ClipPolicy() = default;

  // The max_norm in force for the next round to be finalized; >= 0, finite.
  virtual double EffectiveMaxNorm() const = 0;

  // Feeds a finalized round's total, in finalization order. Non-finite totals
  // are ignored (they never enter any policy's history).
  virtual void Observe(double total) = 0;

  // "static", "autoclip" or "zclip", for reason details.
  virtual absl::string_view name() const = 0;
};

// The policy of a config that passed NormalizeRunConfig (run_config.h).
std::unique_ptr<ClipPolicy> MakeClipPolicy(const v1::RunConfig& config);

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_CORE_CLIP_POLICY_H_
