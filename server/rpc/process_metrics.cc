#include "server/rpc/process_metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace gradnorm {
namespace server {
namespace {

absl::StatusOr<std::string> ReadAll(const char* path) {
  std::ifstream in(path);
  if (!in) return absl::InternalError(absl::StrCat("cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Seconds since the epoch at which the machine booted (/proc/stat btime).
absl::StatusOr<double> BootTime() {
  absl::StatusOr<std::string> stat = ReadAll("/proc/stat");
  if (!stat.ok()) return stat.status();
  for (absl::string_view line : absl::StrSplit(*stat, '\n')) {
    double btime;
    if (absl::ConsumePrefix(&line, "btime ") &&
        absl::SimpleAtod(line, &btime)) {
      return btime;
    }
  }
  return absl::InternalError("no btime line in /proc/stat");
}

prometheus::MetricFamily Family(const char* name, const char* help,
                                prometheus::MetricType type, double value) {
  prometheus::MetricFamily family;
  family.name = name;
  family.help = help;
  family.type = type;
  prometheus::ClientMetric metric;
  if (type == prometheus::MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  family.metric.push_back(metric);
  return family;
}

}  // namespace

absl::StatusOr<ProcessStats> ReadProcessStats() {
  absl::StatusOr<std::string> stat = ReadAll("/proc/self/stat");
  if (!stat.ok()) return stat.status();
  // The command name (field 2) is in parentheses and may hold spaces: the
  // fields after it start behind the last ')'.
  const size_t close = stat->rfind(')');
  if (close == std::string::npos) {
    return absl::InternalError("/proc/self/stat has no ')' after the command");
  }
  std::vector<std::string> fields =
      absl::StrSplit(stat->substr(close + 2), ' ', absl::SkipEmpty());
  // Field 3 (state) is fields[0]: utime is field 14, stime 15, starttime 22,
  // vsize 23, rss 24 (pages).
  auto field = [&](int number, double* out) {
    return static_cast<size_t>(number - 3) < fields.size() &&
           absl::SimpleAtod(fields[number - 3], out);
  };
  double utime, stime, starttime, vsize, rss;
  if (!field(14, &utime) || !field(15, &stime) || !field(22, &starttime) ||
      !field(23, &vsize) || !field(24, &rss)) {
    return absl::InternalError("/proc/self/stat has fewer than 24 fields");
  }
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  absl::StatusOr<double> boot = BootTime();
  if (!boot.ok()) return boot.status();
  ProcessStats stats;
  stats.cpu_seconds = (utime + stime) / ticks;
  stats.resident_bytes = rss * page;
  stats.virtual_bytes = vsize;
  stats.start_time_seconds = *boot + starttime / ticks;
  DIR* fds = opendir("/proc/self/fd");
  if (fds == nullptr) return absl::InternalError("cannot read /proc/self/fd");
  int entries = 0;
  while (const dirent* entry = readdir(fds)) {
    if (entry->d_name[0] != '.') ++entries;
  }
  closedir(fds);
  // Less the descriptor that listed them.
  stats.open_fds = entries - 1;
  rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    stats.max_fds = static_cast<double>(limit.rlim_cur);
  }
  return stats;
}

std::vector<prometheus::MetricFamily> ProcessCollector::Collect() const {
  using prometheus::MetricType;
  std::vector<prometheus::MetricFamily> out;
  prometheus::MetricFamily build =
      Family("gradnorm_build_info", "The coordinator's version (always 1)",
             MetricType::Gauge, 1);
  build.metric[0].label.push_back({"version", GRADNORM_VERSION});
  out.push_back(build);
  absl::StatusOr<ProcessStats> stats = ReadProcessStats();
  if (!stats.ok()) return out;
  out.push_back(Family("process_cpu_seconds_total",
                       "Total user and system CPU time spent in seconds",
                       MetricType::Counter, stats->cpu_seconds));
  out.push_back(Family("process_resident_memory_bytes",
                       "Resident memory size in bytes", MetricType::Gauge,
                       stats->resident_bytes));
  out.push_back(Family("process_virtual_memory_bytes",
                       "Virtual memory size in bytes", MetricType::Gauge,
                       stats->virtual_bytes));
  out.push_back(Family("process_open_fds", "Number of open file descriptors",
                       MetricType::Gauge, stats->open_fds));
  out.push_back(Family("process_max_fds",
                       "Maximum number of open file descriptors",
                       MetricType::Gauge, stats->max_fds));
  out.push_back(Family("process_start_time_seconds",
                       "Start time of the process since the Unix epoch in "
                       "seconds",
                       MetricType::Gauge, stats->start_time_seconds));
  return out;
}

}  // namespace server
}  // namespace gradnorm
