// Bearer-token authentication and role-based authorization for the
// coordinator's RPCs.
//
// Tokens come from a file, one per line:
//
//   # comment lines and blank lines are ignored
//   <token> <role>          role: trainer | viewer | admin
//   s3cr3t-trainer-token trainer
//   d4shb0ard-token      viewer
//
// A token is 16 to 512 characters of [A-Za-z0-9._~+/=-] (the RFC 6750 bearer
// alphabet); each token appears once. Callers send the metadata entry
// `authorization: Bearer <token>`. A `viewer` may call the queries (ListRuns,
// GetRun, GetHistory, GetSummary, WatchRun); a `trainer` also RegisterRun,
// Report, ReportStream and FinishRun; an `admin` every RPC, DeleteRun
// included.
//
//   ASSIGN_OR_RETURN(auto auth, TokenAuthenticator::FromFile(path));
//   absl::Status s = auth->Authorize(header_value, Permission::kReport);
//
// Token comparison takes the same time whatever the presented token shares
// with a stored one (every stored token is compared in full, in constant time).
// Thread-safe: immutable after construction.
#ifndef GRADNORM_SERVER_RPC_AUTH_H_
#define GRADNORM_SERVER_RPC_AUTH_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace gradnorm {
namespace server {

enum class Role { kTrainer, kViewer, kAdmin };

// What an RPC needs: kReport for RegisterRun, Report, ReportStream and
// FinishRun, kAdmin for DeleteRun, kQuery for the rest.
enum class Permission { kReport, kQuery, kAdmin };

// "trainer", "viewer" or "admin".
absl::string_view RoleName(Role role);

// The metadata key that carries the bearer token (lower case, as gRPC
// requires).
inline constexpr absl::string_view kAuthorizationMetadataKey = "authorization";

class TokenAuthenticator {
 public:
  // Parses a tokens file's text. `source` names it in error messages.
  // INVALID_ARGUMENT naming the line (e.g. "tokens.txt:3: unknown role
  // 'root', expected trainer, viewer or admin") for a malformed line, a bad
  // token, an unknown role or a duplicate token; INVALID_ARGUMENT when no token
  // is defined at all (an empty file would lock everybody out silently).
  static absl::StatusOr<std::unique_ptr<TokenAuthenticator>> Parse(
      absl::string_view text, absl::string_view source);

  // Reads and parses `path`. NOT_FOUND when it cannot be read, else as Parse.
  static absl::StatusOr<std::unique_ptr<TokenAuthenticator>> FromFile(
      const std::string& path);

  TokenAuthenticator(const TokenAuthenticator&) = delete;
  TokenAuthenticator& operator=(const TokenAuthenticator&) = delete;

  // The role of the caller whose `authorization` metadata value is
  // `header` ("Bearer <token>"). UNAUTHENTICATED when `header` is empty, not a
  // bearer credential, or names no known token.
  absl::StatusOr<Role> Authenticate(absl::string_view header) const;

  // Authenticate, then PERMISSION_DENIED when the role lacks `permission`.
  absl::Status Authorize(absl::string_view header, Permission permission) const;

  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    std::string token;
    Role role;
  };
  explicit TokenAuthenticator(std::vector<Entry> entries)
      : entries_(std::move(entries)) {}

  std::vector<Entry> entries_;
};

// Compares `a` and `b` in time that depends only on their lengths, never on
// where they first differ.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_RPC_AUTH_H_
