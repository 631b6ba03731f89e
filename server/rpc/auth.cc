#include "server/rpc/auth.h"

#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace gradnorm {
namespace server {
namespace {

constexpr size_t kMinTokenLength = 16;
constexpr size_t kMaxTokenLength = 512;

bool IsTokenChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' ||
         c == '_' || c == '~' || c == '+' || c == '/' || c == '=' || c == '-';
}

}  // namespace

absl::string_view RoleName(Role role) {
  switch (role) {
    case Role::kTrainer:
      return "trainer";
    case Role::kViewer:
      return "viewer";
    case Role::kAdmin:
      return "admin";
  }
  return "unknown";
}

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  // Walk the longer of the two in full so a mismatch in length or content
  // costs the same as a match; volatile keeps the loop from short-circuiting.
  const size_t n = a.size() > b.size() ? a.size() : b.size();
  volatile unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? a[i] : 0;
    const unsigned char y = i < b.size() ? b[i] : 0;
    diff = diff | (x ^ y);
  }
  return diff == 0;
}

absl::StatusOr<std::unique_ptr<TokenAuthenticator>> TokenAuthenticator::Parse(
    absl::string_view text, absl::string_view source) {
  std::vector<Entry> entries;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    const std::string where = absl::StrCat(source, ":", line_number, ": ");
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (fields.size() != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "expected '<token> <role>' (2 fields), got ",
                       fields.size(), " fields"));
    }
    const absl::string_view token = fields[0];
    if (token.size() < kMinTokenLength || token.size() > kMaxTokenLength) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "token has ", token.size(), " characters, expected ",
          kMinTokenLength, " to ", kMaxTokenLength));
    }
    for (char c : token) {
      if (!IsTokenChar(c)) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, "token contains a character outside [A-Za-z0-9._~+/=-]"));
      }
    }
    Role role;
    if (fields[1] == "trainer") {
      role = Role::kTrainer;
    } else if (fields[1] == "viewer") {
      role = Role::kViewer;
    } else if (fields[1] == "admin") {
      role = Role::kAdmin;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "unknown role '", fields[1],
                       "', expected trainer, viewer or admin"));
    }
    for (const Entry& entry : entries) {
      if (entry.token == token) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, "duplicate token (each token may appear once)"));
      }
    }
    entries.push_back(Entry{std::string(token), role});
  }
  if (entries.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        source,
        ": no tokens defined, expected at least one '<token> <role>' line"));
  }
  return std::unique_ptr<TokenAuthenticator>(
      new TokenAuthenticator(std::move(entries)));
}

absl::StatusOr<std::unique_ptr<TokenAuthenticator>>
TokenAuthenticator::FromFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("cannot read tokens file '", path, "'"));
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  return Parse(buffer.str(), path);
}

absl::StatusOr<Role> TokenAuthenticator::Authenticate(
    absl::string_view header) const {
  if (header.empty()) {
    return absl::UnauthenticatedError(
        "missing 'authorization' metadata, expected 'Bearer <token>'");
  }
  constexpr absl::string_view kBearer = "Bearer ";
  if (!absl::StartsWithIgnoreCase(header, kBearer)) {
    return absl::UnauthenticatedError(
        "'authorization' metadata is not a bearer token, expected 'Bearer "
        "<token>'");
  }
  const absl::string_view token =
      absl::StripAsciiWhitespace(header.substr(kBearer.size()));
  // Compare against every entry, without stopping at a match, so the time
  // spent does not reveal which (or whether a) token matched.
  const Entry* match = nullptr;
  for (const Entry& entry : entries_) {
    if (ConstantTimeEquals(entry.token, token)) match = &entry;
  }
  if (match == nullptr) {
    return absl::UnauthenticatedError("unknown bearer token");
  }
  return match->role;
}

absl::Status TokenAuthenticator::Authorize(absl::string_view header,
                                           Permission permission) const {
  absl::StatusOr<Role> role = Authenticate(header);
  if (!role.ok()) return role.status();
  if (*role == Role::kAdmin) return absl::OkStatus();
  if (permission == Permission::kAdmin) {
    return absl::PermissionDeniedError(
        absl::StrCat("role '", RoleName(*role),
                     "' may not delete runs; that needs role 'admin'"));
  }
  if (permission == Permission::kReport && *role != Role::kTrainer) {
    return absl::PermissionDeniedError(absl::StrCat(
        "role '", RoleName(*role),
        "' may only query; registering, reporting and finishing runs need role "
        "'trainer'"));
  }
  return absl::OkStatus();
}

}  // namespace server
}  // namespace gradnorm
