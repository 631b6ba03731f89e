#include "server/rpc/test_certificates.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/child_process.h"

namespace gradnorm {
namespace server {
namespace {

// Runs `command` (words separated by spaces) in `dir`.
absl::Status Run(const std::string& dir, const std::string& command) {
  ChildOptions options;
  options.working_directory = dir;
  options.output_path = absl::StrCat(dir, "/openssl.log");
  std::vector<std::string> argv =
      absl::StrSplit(command, ' ', absl::SkipEmpty());
  argv[0] = "/usr/bin/" + argv[0];
  absl::StatusOr<CommandOutput> out =
      RunCommand(argv, options, absl::Now() + absl::Minutes(1));
  if (!out.ok() || out->exit_code != 0) {
    return absl::InternalError(
        absl::StrCat("openssl step failed: ", command, ": ",
                     out.ok() ? out->output : out.status().ToString()));
  }
  return absl::OkStatus();
}

constexpr char kNewEcKey[] =
    "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";

absl::Status MakeCa(const std::string& dir, const std::string& ca) {
  return Run(dir,
             absl::StrCat("openssl req -x509 ", kNewEcKey, " -keyout ", ca,
                          ".key -out ", ca, ".crt -days 2 -subj /CN=", ca));
}

// A certificate `name` signed by `ca`, with subjectAltName `san`.
absl::Status MakeCert(const std::string& dir, const std::string& ca,
                      const std::string& name, const std::string& san) {
  absl::Status status =
      Run(dir, absl::StrCat("openssl req ", kNewEcKey, " -keyout ", name,
                            ".key -out ", name, ".csr -subj /CN=", name));
  if (status.ok()) {
    std::ofstream ext(absl::StrCat(dir, "/", name, ".ext"));
    ext << "subjectAltName=" << san;
    if (!ext.flush()) {
      status = absl::InternalError(
          absl::StrCat("cannot write ", dir, "/", name, ".ext"));
    }
  }
  if (status.ok()) {
    status = Run(dir, absl::StrCat("openssl x509 -req -in ", name, ".csr -CA ",
                                   ca, ".crt -CAkey ", ca,
                                   ".key -CAcreateserial -days 2 -out ", name,
                                   ".crt -extfile ", name, ".ext"));
  }
  return status;
}

}  // namespace

absl::Status MakeTestCertificates(const std::string& dir) {
  for (absl::Status status :
       {MakeCa(dir, "ca"), MakeCa(dir, "foreign-ca"),
        MakeCert(dir, "ca", "server", "DNS:localhost,IP:127.0.0.1"),
        MakeCert(dir, "ca", "client", "DNS:trainer"),
        MakeCert(dir, "foreign-ca", "foreign-client", "DNS:trainer")}) {
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadPem(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

}  // namespace server
}  // namespace gradnorm
