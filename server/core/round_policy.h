// A round's numbers: the total norm combined from the participants' partials,
// and the decision (action, reason, clip coefficient, effective max_norm) made
// by the run's clip policy, spike rule and non-finite policy.
//
//   RoundPolicy policy(normalized_config);
//   double total = CombinePartials(config.norm_type(), partials);
//   RoundDecision decision = policy.Decide(total);
//   policy.Observe(total, decision.action);  // once the round is finalized
//
// Decision order: a non-finite total is SKIP / NONFINITE; a spike
// (spike_rule.h; only once the window has spread, std > 0: a window of equal
// totals cannot tell a spike from noise) is SKIP / SPIKE; otherwise coef =
// effective_max_norm / (total + 1e-6) and the action is CLIP / ABOVE_MAX_NORM
// iff coef < 1, else NONE / WITHIN_MAX_NORM. clip_coef is 1 whenever the action
// is not CLIP.
//
// Thread-safety: none; the owner (one run) serializes calls.
#ifndef GRADNORM_SERVER_CORE_ROUND_POLICY_H_
#define GRADNORM_SERVER_CORE_ROUND_POLICY_H_

#include <memory>
#include <string>
#include <vector>

#include "gradnorm/v1/coordinator.pb.h"
#include "server/core/clip_policy.h"
#include "server/core/spike_rule.h"

namespace gradnorm {
namespace server {

// The run's total from its participants' partials, combined in participant
// order so the result is bitwise stable: for 0 < p < inf the sum of the
// partials raised to 1/p (sqrt for p = 2, the sum itself for p = 1); for
// p = +inf the max. Any NaN partial makes the total NaN; otherwise any +Inf
// makes it +Inf. No partials: 0.
double CombinePartials(double norm_type, const std::vector<double>& partials);

struct RoundDecision {
  v1::Action action = v1::ACTION_NONE;
  v1::Reason reason = v1::REASON_WITHIN_MAX_NORM;
  double clip_coef = 1.0;
  double effective_max_norm = 0.0;
  // E.g. "norm 12.3 > max_norm 1 (zclip)".
  std::string detail;
};

class RoundPolicy {
 public:
  // `config` passed NormalizeRunConfig (run_config.h).
  explicit RoundPolicy(const v1::RunConfig& config);

  // The decision for a round with this total, from the state left by the
  // rounds observed so far. Does not change the state.
  RoundDecision Decide(double total) const;

  // Feeds a finalized round (live, or replayed from the store in finalization
  // order). A finite total of a round that was not skipped enters the clip
  // policy and the spike window. A skipped spike was never applied, so the
  // clip policy does not see it, and the window takes the threshold it
  // exceeded instead of its total: a lone spike moves the window no more than
  // an accepted step could, while a lasting rise of the norm's level raises
  // the threshold step by step until the new level is accepted (left out
  // altogether, such a rise would be skipped forever).
  void Observe(double total, v1::Action action);

 private:
  std::unique_ptr<ClipPolicy> clip_;
  SpikeRule spike_;
};

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_CORE_ROUND_POLICY_H_
