#include "client/python/torch_parallel_for.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>

namespace gradnorm {
namespace python_internal {

void TorchParallelFor(int64_t n, const std::function<void(int64_t)>& fn) {
  if (n <= 0) return;
  // at::parallel_for hands each intra-op thread one fixed contiguous range; a
  // thread that is preempted (another process on its core) would then hold up
  // the call. The threads it starts instead claim items one at a time from a
  // shared counter, as gradnorm's own pool does; the kernels size their items
  // for about eight per thread.
  std::atomic<int64_t> next{0};
  const int64_t workers =
      std::min<int64_t>(n, std::max(1, at::get_num_threads()));
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    for (int64_t i = next.fetch_add(1, std::memory_order_relaxed); i < n;
         i = next.fetch_add(1, std::memory_order_relaxed)) {
      fn(i);
    }
  });
}

}  // namespace python_internal
}  // namespace gradnorm
