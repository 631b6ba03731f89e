// Starting test helper processes and waiting for them with a deadline, for the
// multi-process client tests.
//
//   Subprocess rank = *Subprocess::Start({helper, "--rank=0"});
//   absl::StatusOr<int> exit_code = rank.Wait(absl::Now() + absl::Seconds(30));
//
// A process not finished at the deadline is killed (SIGKILL) and Wait returns
// DEADLINE_EXCEEDED, so a hung rank fails the test instead of hanging it.
// Thread-safety: one thread per object.
#ifndef GRADNORM_TESTS_CLIENT_PROCESSES_SUBPROCESS_H_
#define GRADNORM_TESTS_CLIENT_PROCESSES_SUBPROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace gradnorm {
namespace testing {

class Subprocess {
 public:
  // Starts argv[0] (a path) with `argv`. INTERNAL when the process cannot start.
  static absl::StatusOr<Subprocess> Start(const std::vector<std::string>& argv);

  Subprocess(Subprocess&& other) noexcept : pid_(other.pid_) { other.pid_ = -1; }
  Subprocess& operator=(Subprocess&&) = delete;
  // Kills a process still running.
  ~Subprocess();

  pid_t pid() const { return pid_; }

  // The exit code (128 + signal number when killed by a signal).
  absl::StatusOr<int> Wait(absl::Time deadline);

  // Sends SIGKILL and reaps the process.
  void Kill();

 private:
  explicit Subprocess(pid_t pid) : pid_(pid) {}
  pid_t pid_;
};

// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0).
absl::StatusOr<int> PickFreePort();

// The file's contents as "key value" lines.
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ReadKeyValues(
    const std::string& path);

}  // namespace testing
}  // namespace gradnorm

#endif  // GRADNORM_TESTS_CLIENT_PROCESSES_SUBPROCESS_H_
