#include "server/core/spike_rule.h"

#include <cmath>

namespace gradnorm {
namespace server {

SpikeRule::SpikeRule(const v1::SpikeRule& config)
    : enabled_(config.enabled()),
      sigma_(config.sigma()),
      window_(config.window()),
      warmup_steps_(config.warmup_steps()) {}

std::optional<SpikeRule::Window> SpikeRule::Current() const {
  if (!enabled_ || totals_.empty() || totals_.size() < warmup_steps_) {
    return std::nullopt;
  }
  Window w;
  w.size = totals_.size();
  double sum = 0;
  for (double x : totals_) sum += x;
  w.mean = sum / w.size;
  // Two passes rather than running sums: no cancellation when norms are large
  // and nearly constant, and no drift over millions of steps.
  double squares = 0;
  for (double x : totals_) squares += (x - w.mean) * (x - w.mean);
  w.std = std::sqrt(squares / w.size);
  w.sigma = sigma_;
  w.threshold = w.mean + sigma_ * w.std;
  return w;
}

void SpikeRule::Observe(double total) {
  if (!enabled_ || !std::isfinite(total)) return;
  totals_.push_back(total);
  if (totals_.size() > window_) totals_.pop_front();
}

}  // namespace server
}  // namespace gradnorm
