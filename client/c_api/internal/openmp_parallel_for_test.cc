#include "client/c_api/internal/openmp_parallel_for.h"

#include <atomic>
#include <cstdint>
#include <set>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gradnorm {
namespace c_api_internal {
namespace {

using ::testing::HasSubstr;

// The system's GNU OpenMP runtime (Debian's libgomp1, which gcc brings).
constexpr char kGomp[] = "libgomp.so.1";

TEST(OpenMpParallelForTest, RunsEveryItemOnceOnTheRuntimesThreads) {
  absl::StatusOr<ParallelFor> run = OpenMpParallelFor(kGomp);
  ASSERT_TRUE(run.ok()) << run.status();
  std::vector<std::atomic<int>> counts(1000);
  absl::Mutex mu;
  std::set<std::thread::id> threads;
  (*run)(1000, [&](int64_t i) {
    counts[i]++;
    absl::MutexLock lock(&mu);
    threads.insert(std::this_thread::get_id());
  });
  for (int64_t i = 0; i < 1000; ++i) EXPECT_EQ(counts[i].load(), 1) << i;
  EXPECT_GE(threads.size(), 1u);
  (*run)(0, [&](int64_t) { FAIL() << "no items, no calls"; });
}

TEST(OpenMpParallelForTest, MissingOrWrongLibraryIsAnError) {
  absl::StatusOr<ParallelFor> missing = OpenMpParallelFor("libnope.so.9");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("libnope.so.9"));
  absl::StatusOr<ParallelFor> not_openmp = OpenMpParallelFor("libz.so.1");
  EXPECT_EQ(not_openmp.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(not_openmp.status().message(), HasSubstr("GOMP_parallel"));
}

}  // namespace
}  // namespace c_api_internal
}  // namespace gradnorm
