// A child process for the demo and the cross-job benchmark: started from an
// argv, its stdout and stderr sent to a log file, waited for with a deadline.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<ChildProcess> child,
//                    ChildProcess::Start({"/path/bin", "--flag=1"}, "/tmp/bin.log"));
//   ASSIGN_OR_RETURN(int exit_code, child->Wait(absl::Now() + absl::Seconds(30)));
//
// A child still running when its object is destroyed is killed (SIGKILL), so
// an early error return never leaves processes behind.
// Thread-safety: one thread per object.
#ifndef GRADNORM_TESTS_CHILD_PROCESS_H_
#define GRADNORM_TESTS_CHILD_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace gradnorm {

class ChildProcess {
 public:
  // Starts argv[0] (a path). INTERNAL when it cannot be started.
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(
      const std::vector<std::string>& argv, const std::string& log_path);

  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // The exit code (128 + signal when killed by one); DEADLINE_EXCEEDED, with
  // the process killed, when it is still running at `deadline`.
  absl::StatusOr<int> Wait(absl::Time deadline);

  // Sends `signal` to a running child.
  void Signal(int signal);

  const std::string& log_path() const { return log_path_; }

 private:
  ChildProcess(pid_t pid, std::string name, std::string log_path)
      : pid_(pid), name_(std::move(name)), log_path_(std::move(log_path)) {}

  pid_t pid_;
  std::string name_;
  std::string log_path_;
};

// The whole file, or "" when it cannot be read.
std::string ReadWholeFile(const std::string& path);

// The last `n` lines of a file, each indented, for error messages.
std::string LastLinesOf(const std::string& path, int n);

}  // namespace gradnorm

#endif  // GRADNORM_TESTS_CHILD_PROCESS_H_
