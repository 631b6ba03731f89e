// What the multi-process client tests share besides starting processes
// (common/child_process.h): a free local port, and the "key value" files the
// ranks write their outcomes to.
//
//   absl::StatusOr<int> port = PickFreePort();
//   auto outcome = ReadKeyValues(dir + "/out.0");
#ifndef GRADNORM_TESTS_CLIENT_PROCESSES_RANK_SUPPORT_H_
#define GRADNORM_TESTS_CLIENT_PROCESSES_RANK_SUPPORT_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace gradnorm {
namespace testing {

// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0).
absl::StatusOr<int> PickFreePort();

// The file's contents as "key value" lines.
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ReadKeyValues(
    const std::string& path);

}  // namespace testing
}  // namespace gradnorm

#endif  // GRADNORM_TESTS_CLIENT_PROCESSES_RANK_SUPPORT_H_
