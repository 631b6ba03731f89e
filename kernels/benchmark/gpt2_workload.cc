#include "kernels/benchmark/gpt2_workload.h"

namespace gradnorm {
namespace kernels_internal {

std::vector<int64_t> Gpt2SmallSizes() {
  constexpr int64_t d = 768;
  std::vector<int64_t> sizes = {50257 * d, 1024 * d};  // wte, wpe
  for (int layer = 0; layer < 12; ++layer) {
    const std::vector<int64_t> block = {
        d,         d,      // ln_1 weight, bias
        d * 3 * d, 3 * d,  // attn.c_attn weight, bias
        d * d,     d,      // attn.c_proj weight, bias
        d,         d,      // ln_2 weight, bias
        d * 4 * d, 4 * d,  // mlp.c_fc weight, bias
        4 * d * d, d,      // mlp.c_proj weight, bias
    };
    sizes.insert(sizes.end(), block.begin(), block.end());
  }
  sizes.push_back(d);  // ln_f weight
  sizes.push_back(d);  // ln_f bias
  return sizes;
}

}  // namespace kernels_internal
}  // namespace gradnorm
