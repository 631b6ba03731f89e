#include "client/python/torch_parallel_for.h"

#include <ATen/Parallel.h>

#include <chrono>
#include <cstdint>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace gradnorm {
namespace python_internal {
namespace {

TEST(TorchParallelForTest, RunsEveryItemOnce) {
  at::set_num_threads(2);
  for (int64_t n : {0, 1, 2, 3, 17, 1000}) {
    std::vector<std::atomic<int>> runs(n);
    TorchParallelFor(n, [&](int64_t i) { runs[i].fetch_add(1); });
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(runs[i].load(), 1) << n << " " << i;
  }
}

// The OpenMP pragma inside at::parallel_for is compiled into this library;
// without -fopenmp it silently runs everything on the caller.
TEST(TorchParallelForTest, UsesTorchsIntraOpThreads) {
  at::set_num_threads(2);
  std::mutex mu;
  std::set<std::thread::id> threads;
  TorchParallelFor(16, [&](int64_t) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::lock_guard<std::mutex> lock(mu);
    threads.insert(std::this_thread::get_id());
  });
  EXPECT_EQ(threads.size(), 2u);
  EXPECT_EQ(threads.count(std::this_thread::get_id()), 1u);  // the caller too
}

TEST(TorchParallelForTest, OneThreadRunsOnTheCaller) {
  at::set_num_threads(1);
  std::set<std::thread::id> threads;
  TorchParallelFor(5, [&](int64_t) { threads.insert(std::this_thread::get_id()); });
  EXPECT_EQ(threads, std::set<std::thread::id>{std::this_thread::get_id()});
  at::set_num_threads(2);
}

}  // namespace
}  // namespace python_internal
}  // namespace gradnorm
