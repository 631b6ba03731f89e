// The standard process_* metrics of a Prometheus client (CPU time, memory,
// open files, start time), read from /proc/self on every scrape, and
// gradnorm_build_info{version} (always 1).
//
//   exposer.RegisterCollectable(std::make_shared<ProcessCollector>());
//
// Thread-safety: Collect may run on any thread; it only reads /proc.
#ifndef GRADNORM_SERVER_RPC_PROCESS_METRICS_H_
#define GRADNORM_SERVER_RPC_PROCESS_METRICS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace gradnorm {
namespace server {

struct ProcessStats {
  double cpu_seconds = 0;         // user + system CPU time
  double resident_bytes = 0;      // resident set size
  double virtual_bytes = 0;       // virtual memory size
  double open_fds = 0;            // entries of /proc/self/fd
  double max_fds = 0;             // the soft RLIMIT_NOFILE
  double start_time_seconds = 0;  // since the Unix epoch
};

// This process's statistics. INTERNAL when /proc/self cannot be read or
// parsed (the message names the file).
absl::StatusOr<ProcessStats> ReadProcessStats();

class ProcessCollector : public prometheus::Collectable {
 public:
  // process_cpu_seconds_total, process_resident_memory_bytes,
  // process_virtual_memory_bytes, process_open_fds, process_max_fds,
  // process_start_time_seconds (none when /proc cannot be read) and
  // gradnorm_build_info{version}.
  std::vector<prometheus::MetricFamily> Collect() const override;
};

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_RPC_PROCESS_METRICS_H_
