// What the demo and the cross-job benchmark share: where the sibling binaries
// are, a fresh scratch directory, and a coordinator process on a loopback port
// it picks itself.
//
//   // This binary is bin/tests/x.
//   const std::string bin = BazelBinOfThisBinary();
//   ASSIGN_OR_RETURN(std::string dir, MakeScratchDir("gradnorm-demo"));
//   ASSIGN_OR_RETURN(
//       LocalCoordinator coordinator,
//       StartLocalCoordinator(bin + "/server/coordinator", dir, {}));
//   ... coordinator.target is "127.0.0.1:PORT" ...
//
// Thread-safety: plain functions; the returned process is one thread's.
#ifndef GRADNORM_TESTS_LOCAL_COORDINATOR_H_
#define GRADNORM_TESTS_LOCAL_COORDINATOR_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/child_process.h"

namespace gradnorm {

// The bazel-bin directory of a binary under bazel-bin/tests/ (from
// /proc/self/exe, so it also holds under `bazel run` and in runfiles).
std::string BazelBinOfThisBinary();

// A new directory $TEST_TMPDIR (else $TMPDIR, else /tmp)/<prefix>-XXXXXX.
// INTERNAL when it cannot be made.
absl::StatusOr<std::string> MakeScratchDir(absl::string_view prefix);

// A loopback TCP port that was free a moment ago: for a coordinator that must
// come back on the same port, or whose port clients must know beforehand.
int FreeLoopbackPort();

struct LocalCoordinator {
  std::unique_ptr<ChildProcess> process;  // killed when destroyed
  std::string target;                     // "127.0.0.1:PORT"
  int http_port = 0;  // the HTTP port (dashboard), 0 without --http_listen
};

// Starts `binary` (//server:coordinator) on 127.0.0.1 with a port of its
// choosing and its database in `dir`/gradnorm.db, plus `extra_flags`; logs go
// to `dir`/coordinator.log. UNAVAILABLE, with the log's tail, when it exits
// first or is not serving within 20 s.
absl::StatusOr<LocalCoordinator> StartLocalCoordinator(
    const std::string& binary, const std::string& dir,
    const std::vector<std::string>& extra_flags);

}  // namespace gradnorm

#endif  // GRADNORM_TESTS_LOCAL_COORDINATOR_H_
