#include "kernels/internal/thread_pool.h"

#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace gradnorm {
namespace kernels_internal {
namespace {

TEST(ThreadPoolTest, RunsEveryTaskExactlyOnce) {
  ThreadPool pool;
  for (int parallelism : {1, 2, 7, 64}) {
    for (int64_t n : {0, 1, 5, 1000}) {
      std::vector<std::atomic<int>> runs(n);
      pool.ParallelFor(n, parallelism, [&](int64_t i) { runs[i]++; });
      for (int64_t i = 0; i < n; ++i) {
        EXPECT_EQ(runs[i].load(), 1) << "task " << i << " of " << n
                                     << " with parallelism " << parallelism;
      }
    }
  }
}

TEST(ThreadPoolTest, UsesSeveralThreads) {
  ThreadPool pool;
  std::atomic<int> inside{0};
  std::atomic<int> most{0};
  pool.ParallelFor(4, 4, [&](int64_t) {
    const int now = ++inside;
    int seen = most.load();
    while (now > seen && !most.compare_exchange_weak(seen, now)) {
    }
    // Keep the task alive until a second thread has joined (bounded wait).
    for (int spin = 0; spin < 2000 && most.load() < 2; ++spin) {
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    --inside;
  });
  EXPECT_GE(most.load(), 2);
}

TEST(ThreadPoolTest, ConcurrentCallersShareThePool) {
  ThreadPool pool;
  std::atomic<int64_t> total{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 4; ++c) {
    callers.emplace_back([&] {
      for (int round = 0; round < 50; ++round) {
        pool.ParallelFor(100, 3, [&](int64_t i) { total += i; });
      }
    });
  }
  for (std::thread& t : callers) t.join();
  EXPECT_EQ(total.load(), 4 * 50 * (99 * 100 / 2));
}

}  // namespace
}  // namespace kernels_internal
}  // namespace gradnorm
