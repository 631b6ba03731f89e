// The gradient set the kernel benchmarks measure: the 148 parameter tensors of
// GPT-2 small (124,439,808 elements), filled with gradient-like values.
//
//   for (int64_t n : Gpt2SmallSizes()) { ... allocate n elements ... }
//   GradientLikeValues values;
//   for (int64_t i = 0; i < n; ++i) data[i] = values.Next();
//
// Thread-safety: GradientLikeValues is not thread-safe; Gpt2SmallSizes is.
#ifndef GRADNORM_KERNELS_BENCHMARK_GPT2_WORKLOAD_H_
#define GRADNORM_KERNELS_BENCHMARK_GPT2_WORKLOAD_H_

#include <cstdint>
#include <vector>

namespace gradnorm {
namespace kernels_internal {

inline constexpr int64_t kGpt2SmallElements = 124439808;

// Element counts in model order: wte, wpe, then per block ln_1, attn.c_attn,
// attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj (weights and biases), then ln_f.
std::vector<int64_t> Gpt2SmallSizes();

// Values in about [-0.01, 0.01] from a fixed-seed LCG: cheap enough for 124M
// draws, and the same sequence in every run.
class GradientLikeValues {
 public:
  float Next() {
    state_ = state_ * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<float>(static_cast<int64_t>(state_ >> 11) % 2000001 -
                              1000000) *
           1e-8f;
  }

 private:
  uint64_t state_ = 0x9e3779b97f4a7c15ull;
};

}  // namespace kernels_internal
}  // namespace gradnorm

#endif  // GRADNORM_KERNELS_BENCHMARK_GPT2_WORKLOAD_H_
