// The known gradient the multi-process client tests shard over their ranks,
// and its fp64 norm computed in one piece.
//
// The run's gradient is a weight W of kWeightSize fp32 values, split into
// equal contiguous shards over every rank of every job, and (in single-job
// runs) a bias b of kBiasSize values, split over the DP ranks and replicated
// across the TP ranks (so it must be counted once per DP shard).
#ifndef GRADNORM_TESTS_CLIENT_PROCESSES_TEST_GRADIENT_H_
#define GRADNORM_TESTS_CLIENT_PROCESSES_TEST_GRADIENT_H_

#include <algorithm>
#include <cmath>
#include <vector>

namespace gradnorm {
namespace testing {

inline constexpr int kWeightSize = 96;
inline constexpr int kBiasSize = 4;

inline float WeightValue(int i) {
  return 0.03125f * static_cast<float>((i * 37) % 23 - 11) + 0.001f * i;
}
inline float BiasValue(int i) { return 0.5f * static_cast<float>(i + 1); }

// The shard of W held by global rank `shard` of `shards`.
inline std::vector<float> WeightShard(int shard, int shards) {
  const int n = kWeightSize / shards;
  std::vector<float> out;
  for (int i = shard * n; i < (shard + 1) * n; ++i)
    out.push_back(WeightValue(i));
  return out;
}

// The shard of b held by DP rank `dp_rank` of `dp_size`.
inline std::vector<float> BiasShard(int dp_rank, int dp_size) {
  const int n = kBiasSize / dp_size;
  std::vector<float> out;
  for (int i = dp_rank * n; i < (dp_rank + 1) * n; ++i)
    out.push_back(BiasValue(i));
  return out;
}

// The p-norm (p = INFINITY for the max) of W, minus the shard `skip_shard` of
// `shards` (-1: none), plus b when `with_bias`, in fp64.
inline double FullNorm(double p, bool with_bias, int shards = 1,
                       int skip_shard = -1) {
  std::vector<double> values;
  for (int s = 0; s < shards; ++s) {
    if (s == skip_shard) continue;
    for (float v : WeightShard(s, shards)) values.push_back(v);
  }
  if (with_bias) {
    for (int i = 0; i < kBiasSize; ++i) values.push_back(BiasValue(i));
  }
  double acc = 0;
  for (double v : values) {
    acc = std::isinf(p) ? std::max(acc, std::fabs(v))
                        : acc + std::pow(std::fabs(v), p);
  }
  return std::isinf(p) ? acc : std::pow(acc, 1.0 / p);
}

}  // namespace testing
}  // namespace gradnorm

#endif  // GRADNORM_TESTS_CLIENT_PROCESSES_TEST_GRADIENT_H_
