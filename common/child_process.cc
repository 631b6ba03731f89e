#include "common/child_process.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

extern char** environ;

namespace gradnorm {
namespace {

// The parent's environment with `extra` ("NAME=value") set over it.
std::vector<std::string> ChildEnvironment(
    const std::vector<std::string>& extra) {
  std::map<std::string, std::string> variables;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    const std::string text = *entry;
    variables[text.substr(0, text.find('='))] = text;
  }
  for (const std::string& text : extra) {
    variables[text.substr(0, text.find('='))] = text;
  }
  std::vector<std::string> out;
  for (auto& [name, text] : variables) out.push_back(std::move(text));
  return out;
}

std::vector<char*> Pointers(const std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (const std::string& s : strings)
    out.push_back(const_cast<char*>(s.c_str()));
  out.push_back(nullptr);
  return out;
}

std::string TempOutputPath() {
  static std::atomic<int> counter{0};
  const char* dir = std::getenv("TEST_TMPDIR");
  return absl::StrCat(dir != nullptr ? dir : "/tmp", "/gradnorm-command-",
                      getpid(), "-", counter++, ".out");
}

}  // namespace

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Start(
    const std::vector<std::string>& argv, const std::string& output_path) {
  ChildOptions options;
  options.output_path = output_path;
  return Start(argv, options);
}

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Start(
    const std::vector<std::string>& argv, const ChildOptions& options) {
  if (argv.empty())
    return absl::InvalidArgumentError("expected a non-empty argv");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (!options.output_path.empty()) {
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO,
                                     options.output_path.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  }
  if (!options.working_directory.empty()) {
    posix_spawn_file_actions_addchdir_np(&actions,
                                         options.working_directory.c_str());
  }
  std::vector<char*> args = Pointers(argv);
  const std::vector<std::string> environment =
      ChildEnvironment(options.environment);
  std::vector<char*> env = Pointers(environment);
  pid_t pid = -1;
  const int error = posix_spawn(&pid, argv[0].c_str(), &actions, nullptr,
                                args.data(), env.data());
  posix_spawn_file_actions_destroy(&actions);
  if (error != 0) {
    return absl::InternalError(
        absl::StrCat("cannot start ", argv[0], ": ", std::strerror(error)));
  }
  return std::unique_ptr<ChildProcess>(
      new ChildProcess(pid, argv[0], options.output_path));
}

ChildProcess::~ChildProcess() { Kill(); }

int ChildProcess::Reap(bool block) {
  if (pid_ <= 0) return exit_code_;
  int status = 0;
  const pid_t done = waitpid(pid_, &status, block ? 0 : WNOHANG);
  if (done != pid_) return -1;
  pid_ = -1;
  exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return exit_code_;
}

bool ChildProcess::Running() { return Reap(/*block=*/false) < 0; }

void ChildProcess::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  Reap(/*block=*/true);
}

void ChildProcess::Signal(int signal) {
  if (pid_ > 0) kill(pid_, signal);
}

absl::StatusOr<int> ChildProcess::Wait(absl::Time deadline) {
  while (true) {
    if (const int code = Reap(/*block=*/false); code >= 0) return code;
    if (absl::Now() > deadline) {
      Kill();
      return absl::DeadlineExceededError(absl::StrCat(
          name_, " did not finish in time (killed)",
          output_path_.empty() ? "" : "; its output: ", output_path_));
    }
    // Polling keeps Wait simple and deadline-bound; children here live seconds.
    absl::SleepFor(absl::Milliseconds(2));
  }
}

absl::StatusOr<int> ChildProcess::StopAt(absl::Time deadline, int signal) {
  while (absl::Now() <= deadline) {
    if (const int code = Reap(/*block=*/false); code >= 0) return code;
    absl::SleepFor(absl::Milliseconds(2));
  }
  if (const int code = Reap(/*block=*/false); code >= 0) return code;
  Signal(signal);
  absl::StatusOr<int> code = Wait(absl::Now() + absl::Seconds(30));
  return absl::DeadlineExceededError(absl::StrCat(
      name_, " was still running at its deadline: sent signal ", signal, ", ",
      code.ok() ? absl::StrCat("it exited with ", *code)
                : std::string(code.status().message())));
}

absl::StatusOr<CommandOutput> RunCommand(const std::vector<std::string>& argv,
                                         ChildOptions options,
                                         absl::Time deadline) {
  if (options.output_path.empty()) options.output_path = TempOutputPath();
  absl::StatusOr<std::unique_ptr<ChildProcess>> child =
      ChildProcess::Start(argv, options);
  if (!child.ok()) return child.status();
  absl::StatusOr<int> code = (*child)->Wait(deadline);
  if (!code.ok()) return code.status();
  CommandOutput out;
  out.exit_code = *code;
  out.output = ReadWholeFile(options.output_path);
  return out;
}

std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string LastLinesOf(const std::string& path, int n) {
  std::vector<std::string> lines = absl::StrSplit(ReadWholeFile(path), '\n');
  while (!lines.empty() && lines.back().empty()) lines.pop_back();
  std::string out;
  const size_t first =
      lines.size() > static_cast<size_t>(n) ? lines.size() - n : 0;
  for (size_t i = first; i < lines.size(); ++i)
    absl::StrAppend(&out, "    ", lines[i], "\n");
  return out;
}

}  // namespace gradnorm
