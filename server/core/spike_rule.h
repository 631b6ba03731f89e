// The spike rule: skip a step whose total is more than sigma standard
// deviations above the mean of the run's recent window (the last `window`
// finite totals, a skipped spike's taken as the threshold it exceeded; see
// RoundPolicy::Observe), once the window holds warmup_steps totals and has
// spread (std > 0). Mean and (population) standard deviation are computed
// over the window in order, so the result is deterministic. State is a pure
// function of the observed totals, so replaying stored history rebuilds it.
//
//   SpikeRule rule(config.spike_rule());
//   std::optional<SpikeRule::Window> w = rule.Current();
//   bool spike = w.has_value() && w->std > 0 && total > w->threshold;
//   rule.Observe(spike ? w->threshold : total);
//
// Thread-safety: none; the owner (one run) serializes calls.
#ifndef GRADNORM_SERVER_CORE_SPIKE_RULE_H_
#define GRADNORM_SERVER_CORE_SPIKE_RULE_H_

#include <cstddef>
#include <deque>
#include <optional>

#include "gradnorm/v1/coordinator.pb.h"

namespace gradnorm {
namespace server {

class SpikeRule {
 public:
  // `config` passed NormalizeRunConfig (run_config.h).
  explicit SpikeRule(const v1::SpikeRule& config);

  struct Window {
    double mean = 0;
    double std = 0;
    size_t size = 0;
    double sigma = 0;
    // mean + sigma * std: a finite total above it is a spike.
    double threshold = 0;
  };

  // The window's statistics, or nullopt when the rule is disabled or still
  // warming up (no total is a spike then).
  std::optional<Window> Current() const;

  // Feeds a finalized round's total (for a skipped spike, the threshold it
  // exceeded), in finalization order. Non-finite totals are ignored.
  void Observe(double total);

 private:
  const bool enabled_;
  const double sigma_;
  const size_t window_;
  const size_t warmup_steps_;
  std::deque<double> totals_;
};

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_CORE_SPIKE_RULE_H_
