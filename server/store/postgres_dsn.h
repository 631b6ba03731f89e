// The PostgreSQL connection string from the coordinator's flags: given
// inline (--postgres_dsn) or read from a file (--postgres_dsn_file: a mounted
// Kubernetes Secret, so the password stays out of the process's arguments).
//
//   ASSIGN_OR_RETURN(std::string dsn,
//                    PostgresDsnFromFlags(inline_dsn, dsn_file));
//
// Thread-safety: a pure function (it reads the file).
#ifndef GRADNORM_SERVER_STORE_POSTGRES_DSN_H_
#define GRADNORM_SERVER_STORE_POSTGRES_DSN_H_

#include <string>

#include "absl/status/statusor.h"

namespace gradnorm {
namespace server {

// Exactly one of the two must be set. The file's contents are taken without
// trailing whitespace (a Secret's file often ends in a newline). Errors:
// INVALID_ARGUMENT for both or neither set, or an empty file;
// FAILED_PRECONDITION for a file that cannot be read (naming it).
absl::StatusOr<std::string> PostgresDsnFromFlags(const std::string& dsn,
                                                 const std::string& dsn_file);

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_STORE_POSTGRES_DSN_H_
