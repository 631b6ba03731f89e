#include "server/store/postgres_dsn.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace gradnorm {
namespace server {

absl::StatusOr<std::string> PostgresDsnFromFlags(const std::string& dsn,
                                                 const std::string& dsn_file) {
  if (!dsn.empty() && !dsn_file.empty()) {
    return absl::InvalidArgumentError(
        "--postgres_dsn and --postgres_dsn_file are both set; expected one");
  }
  if (dsn_file.empty()) {
    if (dsn.empty()) {
      return absl::InvalidArgumentError(
          "--store=postgres needs --postgres_dsn or --postgres_dsn_file (a "
          "libpq connection string, e.g. \"host=db port=5432 dbname=gradnorm "
          "user=gradnorm\")");
    }
    return dsn;
  }
  std::ifstream in(dsn_file);
  if (!in) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot read --postgres_dsn_file ", dsn_file, ": ",
                     std::strerror(errno)));
  }
  std::stringstream contents;
  contents << in.rdbuf();
  std::string text(absl::StripAsciiWhitespace(contents.str()));
  if (text.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--postgres_dsn_file ", dsn_file,
                     " is empty; expected a libpq connection string"));
  }
  return text;
}

}  // namespace server
}  // namespace gradnorm
