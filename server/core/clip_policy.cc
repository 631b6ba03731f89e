#include "server/core/clip_policy.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <deque>
#include <vector>

namespace gradnorm {
namespace server {
namespace {

class StaticClipPolicy final : public ClipPolicy {
 public:
  explicit StaticClipPolicy(double max_norm) : max_norm_(max_norm) {}
  double EffectiveMaxNorm() const override { return max_norm_; }
  void Observe(double) override {}
  absl::string_view name() const override { return "static"; }

 private:
  const double max_norm_;
};

class AutoClipPolicy final : public ClipPolicy {
 public:
  AutoClipPolicy(double max_norm, const v1::AutoClip& config)
      : max_norm_(max_norm),
        percentile_(config.percentile()),
        history_length_(config.history_length()),
        warmup_steps_(config.warmup_steps()) {}

  double EffectiveMaxNorm() const override {
    if (observed_ < warmup_steps_ || history_.empty()) return max_norm_;
    std::vector<double> sorted(history_.begin(), history_.end());
    const size_t n = sorted.size();
    // Nearest rank; multiplying before dividing keeps whole ranks exact
    // (10% of 10 is rank 1, not 1.0000000000000002 -> 2).
    size_t rank = static_cast<size_t>(std::ceil(percentile_ * n / 100.0));
    rank = std::clamp<size_t>(rank, 1, n);
    std::nth_element(sorted.begin(), sorted.begin() + (rank - 1), sorted.end());
    return sorted[rank - 1];
  }

  void Observe(double total) override {
    if (!std::isfinite(total)) return;
    ++observed_;
    history_.push_back(total);
    if (history_.size() > history_length_) history_.pop_front();
  }

  absl::string_view name() const override { return "autoclip"; }

 private:
  const double max_norm_;
  const double percentile_;
  const size_t history_length_;
  const uint64_t warmup_steps_;
  uint64_t observed_ = 0;
  std::deque<double> history_;
};

class ZClipPolicy final : public ClipPolicy {
 public:
  ZClipPolicy(double max_norm, const v1::ZClip& config)
      : max_norm_(max_norm),
        alpha_(config.alpha()),
        z_threshold_(config.z_threshold()),
        warmup_steps_(config.warmup_steps()) {}

  double EffectiveMaxNorm() const override {
    if (!initialized_) return max_norm_;
    return Threshold();
  }

  void Observe(double total) override {
    if (!std::isfinite(total)) return;
    if (!initialized_) {
      warmup_.push_back(total);
      if (warmup_.size() < warmup_steps_) return;
      double sum = 0;
      for (double x : warmup_) sum += x;
      mean_ = sum / warmup_.size();
      double squares = 0;
      for (double x : warmup_) squares += (x - mean_) * (x - mean_);
      var_ = squares / warmup_.size();
      initialized_ = true;
      warmup_.clear();
      warmup_.shrink_to_fit();
      return;
    }
    // The clipped value, not the raw spike, enters the EMA: one outlier must
    // not inflate the threshold that is meant to catch the next one.
    const double clipped = std::min(total, Threshold());
    mean_ = alpha_ * mean_ + (1 - alpha_) * clipped;
    var_ = alpha_ * var_ + (1 - alpha_) * (clipped - mean_) * (clipped - mean_);
  }

  absl::string_view name() const override { return "zclip"; }

 private:
  double Threshold() const { return mean_ + z_threshold_ * std::sqrt(var_); }

  const double max_norm_;
  const double alpha_;
  const double z_threshold_;
  const size_t warmup_steps_;
  bool initialized_ = false;
  std::vector<double> warmup_;
  double mean_ = 0;
  double var_ = 0;
};

}  // namespace

std::unique_ptr<ClipPolicy> MakeClipPolicy(const v1::RunConfig& config) {
  switch (config.clip_policy().policy_case()) {
    case v1::ClipPolicy::kAutoClip:
      return std::make_unique<AutoClipPolicy>(config.max_norm(),
                                              config.clip_policy().auto_clip());
    case v1::ClipPolicy::kZclip:
      return std::make_unique<ZClipPolicy>(config.max_norm(),
                                           config.clip_policy().zclip());
    case v1::ClipPolicy::kStaticClip:
    case v1::ClipPolicy::POLICY_NOT_SET:
      break;
  }
  return std::make_unique<StaticClipPolicy>(config.max_norm());
}

}  // namespace server
}  // namespace gradnorm
