#include "server/rpc/process_metrics.h"

#include <fcntl.h>
#include <unistd.h>

#include <ctime>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"

namespace gradnorm {
namespace server {
namespace {

TEST(ProcessMetricsTest, StatsDescribeThisProcess) {
  // Burn a little CPU so the counter has something to count.
  volatile double x = 0;
  for (int i = 0; i < 20000000; ++i) x = x + i * 1e-9;
  absl::StatusOr<ProcessStats> before = ReadProcessStats();
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_GT(before->cpu_seconds, 0.0);
  EXPECT_GT(before->resident_bytes, 1 << 20);
  EXPECT_GE(before->virtual_bytes, before->resident_bytes);
  EXPECT_GE(before->max_fds, before->open_fds);
  const double now = absl::ToUnixSeconds(absl::Now());
  EXPECT_LE(before->start_time_seconds, now + 1);
  EXPECT_GT(before->start_time_seconds, now - 3600);

  // One more open file is one more descriptor.
  const int fd = open("/proc/self/stat", O_RDONLY);
  ASSERT_GE(fd, 0);
  absl::StatusOr<ProcessStats> after = ReadProcessStats();
  close(fd);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->open_fds, before->open_fds + 1);
}

TEST(ProcessMetricsTest, CollectorExposesTheStandardNamesAndBuildInfo) {
  ProcessCollector collector;
  const std::string text =
      prometheus::TextSerializer().Serialize(collector.Collect());
  for (const char* name :
       {"process_cpu_seconds_total ", "process_resident_memory_bytes ",
        "process_virtual_memory_bytes ", "process_open_fds ",
        "process_max_fds ", "process_start_time_seconds "}) {
    EXPECT_NE(text.find(std::string("\n") + name), std::string::npos)
        << name << " missing from\n"
        << text;
  }
  EXPECT_NE(
      text.find("gradnorm_build_info{version=\"" GRADNORM_VERSION "\"} 1"),
      std::string::npos)
      << text;
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
