#include "client/c_api/internal/openmp_parallel_for.h"

#include <dlfcn.h>

#include <atomic>
#include <cstdint>
#include <functional>

#include "absl/strings/str_cat.h"

namespace gradnorm {
namespace c_api_internal {
namespace {

// libgomp's ABI (GCC >= 4.9): runs fn(data) on every thread of a new team.
using GompParallel = void (*)(void (*fn)(void*), void* data,
                              unsigned num_threads, unsigned flags);
using OmpInt = int (*)();

struct Region {
  int64_t n;
  const std::function<void(int64_t)>* fn;
  std::atomic<int64_t> next{0};
};

// The team's threads claim items one at a time from a shared counter (the
// kernels size them for about eight per thread), as gradnorm's own pool
// does: a thread preempted by another process holds up only its item, not
// a fixed share of the call.
void RunItems(void* data) {
  Region& region = *static_cast<Region*>(data);
  for (int64_t i = region.next.fetch_add(1, std::memory_order_relaxed);
       i < region.n; i = region.next.fetch_add(1, std::memory_order_relaxed)) {
    (*region.fn)(i);
  }
}

}  // namespace

absl::StatusOr<ParallelFor> OpenMpParallelFor(const std::string& library) {
  // Already loaded by the host: dlopen returns that copy, whose threads are
  // the host's.
  void* handle = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* error = dlerror();
    return absl::NotFoundError(
        absl::StrCat("cannot load the OpenMP runtime '", library,
                     "': ", error != nullptr ? error : "dlopen failed"));
  }
  const auto parallel =
      reinterpret_cast<GompParallel>(dlsym(handle, "GOMP_parallel"));
  // Not called, but every OpenMP runtime has them: their absence means the
  // library is something else that happens to define GOMP_parallel.
  const auto thread_num =
      reinterpret_cast<OmpInt>(dlsym(handle, "omp_get_thread_num"));
  const auto num_threads =
      reinterpret_cast<OmpInt>(dlsym(handle, "omp_get_num_threads"));
  if (parallel == nullptr || thread_num == nullptr || num_threads == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", library,
        "' is not an OpenMP runtime with libgomp's entry points; expected "
        "GOMP_parallel, omp_get_thread_num and omp_get_num_threads"));
  }
  return ParallelFor(
      [parallel](int64_t n, const std::function<void(int64_t)>& fn) {
        if (n <= 0) return;
        if (n == 1) {
          fn(0);
          return;
        }
        Region region;
        region.n = n;
        region.fn = &fn;
        // 0 threads: the runtime's default team size on this thread.
        parallel(&RunItems, &region, 0, 0);
      });
}

}  // namespace c_api_internal
}  // namespace gradnorm
