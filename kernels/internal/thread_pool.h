// A persistent pool of worker threads for the CPU kernels. Threads are started
// once (lazily, as more parallelism is asked for) and reused, so a call over a
// few small tensors costs a wake-up, not a thread creation.
//
//   ThreadPool& pool = ThreadPool::Default();
//   pool.ParallelFor(num_tasks, /*parallelism=*/4, [&](int64_t task) { ... });
//
// Which thread runs which task is unspecified; callers that need reproducible
// results write each task's result to its own slot and combine the slots in a
// fixed order afterwards.
//
// Thread-safety: ParallelFor may be called from any number of threads at once;
// concurrent calls share the workers.
#ifndef GRADNORM_KERNELS_INTERNAL_THREAD_POOL_H_
#define GRADNORM_KERNELS_INTERNAL_THREAD_POOL_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"

namespace gradnorm {
namespace kernels_internal {

class ThreadPool {
 public:
  // Upper bound on threads one call may use (caller included).
  static constexpr int kMaxParallelism = 256;

  // The process-wide pool. Never destroyed (workers may outlive static
  // destructors of other translation units).
  static ThreadPool& Default();

  ThreadPool() = default;
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Runs fn(task) for every task in [0, num_tasks) on up to `parallelism`
  // threads (the caller is one of them; values are clamped to
  // [1, kMaxParallelism]) and returns when all have finished.
  void ParallelFor(int64_t num_tasks, int parallelism,
                   absl::FunctionRef<void(int64_t)> fn);

  // Hardware threads of this machine (at least 1).
  static int HardwareThreads();

 private:
  struct Job {
    explicit Job(int64_t n, absl::FunctionRef<void(int64_t)> f)
        : num_tasks(n), fn(f) {}
    const int64_t num_tasks;
    const absl::FunctionRef<void(int64_t)> fn;
    std::atomic<int64_t> next{0};
    int helpers_running = 0;  // guarded by ThreadPool::mu_
  };

  static void RunTasks(Job& job);
  void WorkerLoop();
  void EnsureWorkers(int count) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // std::mutex rather than absl::Mutex: the system Abseil is not built with
  // ThreadSanitizer, which then cannot see absl::Mutex's ordering
  // (bazel test --config=tsan).
  std::mutex mu_;
  std::condition_variable work_ready_;   // tickets_ non-empty or stopping_
  std::condition_variable helper_done_;  // some Job::helpers_running dropped
  // One entry per helper a job asked for; a worker that pops it joins the job.
  std::deque<Job*> tickets_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> workers_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace kernels_internal
}  // namespace gradnorm

#endif  // GRADNORM_KERNELS_INTERNAL_THREAD_POOL_H_
