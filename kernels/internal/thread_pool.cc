#include "kernels/internal/thread_pool.h"

#include <algorithm>

namespace gradnorm {
namespace kernels_internal {

ThreadPool& ThreadPool::Default() {
  static ThreadPool* const pool = new ThreadPool();
  return *pool;
}

int ThreadPool::HardwareThreads() {
  return std::max(1u, std::thread::hardware_concurrency());
}

ThreadPool::~ThreadPool() {
  std::vector<std::thread> workers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    workers.swap(workers_);
  }
  work_ready_.notify_all();
  for (std::thread& t : workers) t.join();
}

void ThreadPool::RunTasks(Job& job) {
  for (;;) {
    const int64_t task = job.next.fetch_add(1, std::memory_order_relaxed);
    if (task >= job.num_tasks) return;
    job.fn(task);
  }
}

void ThreadPool::EnsureWorkers(int count) {
  while (static_cast<int>(workers_.size()) < count) {
    workers_.emplace_back([this] { WorkerLoop(); });
  }
}

void ThreadPool::WorkerLoop() {
  for (;;) {
    Job* job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_ready_.wait(lock, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !tickets_.empty();
      });
      if (stopping_) return;
      job = tickets_.front();
      tickets_.pop_front();
      ++job->helpers_running;
    }
    RunTasks(*job);
    {
      std::lock_guard<std::mutex> lock(mu_);
      --job->helpers_running;
    }
    helper_done_.notify_all();
  }
}

void ThreadPool::ParallelFor(int64_t num_tasks, int parallelism,
                             absl::FunctionRef<void(int64_t)> fn) {
  if (num_tasks <= 0) return;
  parallelism = std::clamp(parallelism, 1, kMaxParallelism);
  const int helpers =
      static_cast<int>(std::min<int64_t>(parallelism - 1, num_tasks - 1));
  if (helpers == 0) {
    for (int64_t task = 0; task < num_tasks; ++task) fn(task);
    return;
  }
  Job job(num_tasks, fn);
  {
    std::lock_guard<std::mutex> lock(mu_);
    EnsureWorkers(helpers);
    for (int i = 0; i < helpers; ++i) tickets_.push_back(&job);
  }
  if (helpers == 1) {
    work_ready_.notify_one();
  } else {
    work_ready_.notify_all();
  }
  RunTasks(job);
  std::unique_lock<std::mutex> lock(mu_);
  // Tickets nobody picked up are withdrawn: every task has been claimed, so a
  // late helper would find nothing to do, and `job` is about to go away.
  tickets_.erase(std::remove(tickets_.begin(), tickets_.end(), &job),
                 tickets_.end());
  helper_done_.wait(lock, [&job]() { return job.helpers_running == 0; });
}

}  // namespace kernels_internal
}  // namespace gradnorm
