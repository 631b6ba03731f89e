#include "tests/local_coordinator.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace gradnorm {

std::string BazelBinOfThisBinary() {
  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  std::string path(self, n > 0 ? n : 0);
  // Drop the binary's name, then its package directory (tests/).
  path = path.substr(0, path.rfind('/'));
  return path.substr(0, path.rfind('/'));
}

absl::StatusOr<std::string> MakeScratchDir(absl::string_view prefix) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  if (tmp == nullptr) tmp = std::getenv("TMPDIR");
  std::string pattern =
      absl::StrCat(tmp ? tmp : "/tmp", "/", prefix, "-XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) {
    return absl::InternalError(
        absl::StrCat("mkdtemp ", pattern, ": ", std::strerror(errno)));
  }
  return pattern;
}

int FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

absl::StatusOr<LocalCoordinator> StartLocalCoordinator(
    const std::string& binary, const std::string& dir,
    const std::vector<std::string>& extra_flags) {
  const std::string port_file = dir + "/coordinator.port";
  const std::string log = dir + "/coordinator.log";
  const std::string http_port_file = dir + "/coordinator.http.port";
  std::remove(port_file.c_str());
  std::remove(http_port_file.c_str());
  std::vector<std::string> argv = {
      binary, "--listen=127.0.0.1:0", "--db=" + dir + "/gradnorm.db",
      "--port_file=" + port_file, "--http_port_file=" + http_port_file};
  argv.insert(argv.end(), extra_flags.begin(), extra_flags.end());
  absl::StatusOr<std::unique_ptr<ChildProcess>> process =
      ChildProcess::Start(argv, log);
  if (!process.ok()) return process.status();
  // The coordinator writes the port file atomically once it serves.
  for (const absl::Time until = absl::Now() + absl::Seconds(20);
       absl::Now() < until; absl::SleepFor(absl::Milliseconds(20))) {
    const std::string port(
        absl::StripAsciiWhitespace(ReadWholeFile(port_file)));
    if (!port.empty()) {
      // Written before the main port's: 0 without --http_listen.
      int http_port = 0;
      (void)absl::SimpleAtoi(
          absl::StripAsciiWhitespace(ReadWholeFile(http_port_file)),
          &http_port);
      return LocalCoordinator{*std::move(process), "127.0.0.1:" + port,
                              http_port};
    }
    // One that exited (a bad flag, a store it cannot open) says so now.
    if (!(*process)->Running()) break;
  }
  return absl::UnavailableError(
      absl::StrCat("coordinator did not start:\n", LastLinesOf(log, 10)));
}

}  // namespace gradnorm
