// The one way gradnorm's tests, demo and benchmarks start a process: from an
// argv, with its stdout and stderr sent to a file (or left as the parent's)
// and extra environment variables, waited for with a deadline.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<ChildProcess> child,
//                    ChildProcess::Start({"/path/bin", "--flag=1"},
//                    "/tmp/bin.log"));
//   ASSIGN_OR_RETURN(int exit_code, child->Wait(absl::Now() +
//   absl::Seconds(30)));
//
//   // A command's output and exit code, as a shell's $(...) gives them:
//   ASSIGN_OR_RETURN(CommandOutput out, RunCommand({"bin", "--help"}, options,
//                                                  absl::Now() +
//                                                  absl::Seconds(30)));
//
// A child still running when its object is destroyed is killed (SIGKILL), so
// an early error return never leaves processes behind.
// Thread-safety: one thread per object.
#ifndef GRADNORM_COMMON_CHILD_PROCESS_H_
#define GRADNORM_COMMON_CHILD_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace gradnorm {

struct ChildOptions {
  // Where stdout and stderr go, together (created or truncated); "" keeps the
  // parent's.
  std::string output_path;
  // "NAME=value" entries set in the child's environment over the parent's.
  std::vector<std::string> environment;
  // The child's working directory; "" keeps the parent's. Relative paths in
  // argv[0] and output_path are the parent's.
  std::string working_directory;
};

class ChildProcess {
 public:
  // Starts argv[0] (a path). INVALID_ARGUMENT for an empty argv, INTERNAL
  // when it cannot be started.
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(
      const std::vector<std::string>& argv, const ChildOptions& options);
  // Start with its output in `output_path`.
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(
      const std::vector<std::string>& argv, const std::string& output_path);

  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // The exit code (128 + signal when killed by one); DEADLINE_EXCEEDED, with
  // the process killed, when it is still running at `deadline`.
  absl::StatusOr<int> Wait(absl::Time deadline);

  // As coreutils' timeout: a child still running at `deadline` gets `signal`
  // and is then waited for (up to 30 s more, then killed). The exit code when
  // it ended before the deadline; DEADLINE_EXCEEDED (saying how it ended)
  // when it had to be stopped.
  absl::StatusOr<int> StopAt(absl::Time deadline, int signal);

  // Sends `signal` to a running child.
  void Signal(int signal);
  // Sends SIGKILL and reaps the child.
  void Kill();

  // Whether the child has exited (and was reaped) or is still running.
  bool Running();

  pid_t pid() const { return pid_; }
  const std::string& output_path() const { return output_path_; }

 private:
  ChildProcess(pid_t pid, std::string name, std::string output_path)
      : pid_(pid),
        name_(std::move(name)),
        output_path_(std::move(output_path)) {}

  // The exit code once the child has exited (reaping it); -1 while it runs.
  int Reap(bool block);

  pid_t pid_;
  std::string name_;
  std::string output_path_;
  int exit_code_ = -1;
};

struct CommandOutput {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

// Runs argv to completion with its output in options.output_path (a file it
// creates when empty) and returns the exit code and the output; as Wait when
// it is still running at `deadline`.
absl::StatusOr<CommandOutput> RunCommand(const std::vector<std::string>& argv,
                                         ChildOptions options,
                                         absl::Time deadline);

// The whole file, or "" when it cannot be read.
std::string ReadWholeFile(const std::string& path);

// The last `n` lines of a file, each indented, for error messages.
std::string LastLinesOf(const std::string& path, int n);

}  // namespace gradnorm

#endif  // GRADNORM_COMMON_CHILD_PROCESS_H_
