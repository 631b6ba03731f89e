#include "server/rpc/auth.h"

#include "gtest/gtest.h"

namespace gradnorm {
namespace server {
namespace {

constexpr char kTokens[] =
    "# gradnorm tokens\n"
    "\n"
    "trainer-token-0123456789 trainer\n"
    "  viewer-token-0123456789\tviewer   \n";

TEST(TokenAuthenticatorTest, ParsesRolesCommentsAndBlankLines) {
  auto auth = TokenAuthenticator::Parse(kTokens, "tokens.txt");
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_EQ((*auth)->size(), 2u);
  EXPECT_EQ(*(*auth)->Authenticate("Bearer trainer-token-0123456789"),
            Role::kTrainer);
  EXPECT_EQ(*(*auth)->Authenticate("Bearer viewer-token-0123456789"),
            Role::kViewer);
  EXPECT_EQ(*(*auth)->Authenticate("bearer viewer-token-0123456789"),
            Role::kViewer);
}

TEST(TokenAuthenticatorTest,
     MissingMalformedAndUnknownTokensAreUnauthenticated) {
  auto auth = TokenAuthenticator::Parse(kTokens, "tokens.txt");
  ASSERT_TRUE(auth.ok());
  EXPECT_EQ((*auth)->Authenticate("").status(),
            absl::UnauthenticatedError(
                "missing 'authorization' metadata, expected 'Bearer <token>'"));
  EXPECT_EQ((*auth)->Authenticate("Basic dXNlcjpwYXNz").status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ((*auth)->Authenticate("Bearer trainer-token-012345678").status(),
            absl::UnauthenticatedError("unknown bearer token"));
  EXPECT_EQ((*auth)->Authenticate("Bearer trainer-token-01234567890").status(),
            absl::UnauthenticatedError("unknown bearer token"));
}

TEST(TokenAuthenticatorTest, ViewerMayQueryButNotReport) {
  auto auth = TokenAuthenticator::Parse(kTokens, "tokens.txt");
  ASSERT_TRUE(auth.ok());
  EXPECT_TRUE(
      (*auth)
          ->Authorize("Bearer viewer-token-0123456789", Permission::kQuery)
          .ok());
  absl::Status denied =
      (*auth)->Authorize("Bearer viewer-token-0123456789", Permission::kReport);
  EXPECT_EQ(denied.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(
      denied.message(),
      "role 'viewer' may only query; registering, reporting and finishing "
      "runs need role 'trainer'");
  EXPECT_TRUE(
      (*auth)
          ->Authorize("Bearer trainer-token-0123456789", Permission::kReport)
          .ok());
  EXPECT_EQ((*auth)->Authorize("", Permission::kQuery).code(),
            absl::StatusCode::kUnauthenticated);
}

TEST(TokenAuthenticatorTest, OnlyAdminMayDelete) {
  auto auth = TokenAuthenticator::Parse(
      "trainer-token-0123456789 trainer\nviewer-token-0123456789 viewer\n"
      "admin-token-012345678901 admin\n",
      "tokens.txt");
  ASSERT_TRUE(auth.ok()) << auth.status();
  for (Permission p :
       {Permission::kQuery, Permission::kReport, Permission::kAdmin}) {
    EXPECT_TRUE((*auth)->Authorize("Bearer admin-token-012345678901", p).ok());
  }
  absl::Status denied =
      (*auth)->Authorize("Bearer trainer-token-0123456789", Permission::kAdmin);
  EXPECT_EQ(denied,
            absl::PermissionDeniedError(
                "role 'trainer' may not delete runs; that needs role 'admin'"));
  EXPECT_EQ(
      (*auth)
          ->Authorize("Bearer viewer-token-0123456789", Permission::kAdmin)
          .code(),
      absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(RoleName(Role::kAdmin), "admin");
}

TEST(TokenAuthenticatorTest, BadLinesNameTheLine) {
  EXPECT_EQ(
      TokenAuthenticator::Parse("# c\ntrainer-token-0123456789 root\n", "t")
          .status(),
      absl::InvalidArgumentError(
          "t:2: unknown role 'root', expected trainer, viewer or admin"));
  EXPECT_EQ(
      TokenAuthenticator::Parse("trainer-token-0123456789\n", "t").status(),
      absl::InvalidArgumentError(
          "t:1: expected '<token> <role>' (2 fields), got 1 fields"));
  EXPECT_EQ(TokenAuthenticator::Parse("short trainer\n", "t").status(),
            absl::InvalidArgumentError(
                "t:1: token has 5 characters, expected 16 to 512"));
  EXPECT_EQ(TokenAuthenticator::Parse("bad\"token-0123456789 trainer\n", "t")
                .status(),
            absl::InvalidArgumentError(
                "t:1: token contains a character outside [A-Za-z0-9._~+/=-]"));
  EXPECT_EQ(
      TokenAuthenticator::Parse(
          "same-token-0123456789 trainer\nsame-token-0123456789 viewer\n", "t")
          .status(),
      absl::InvalidArgumentError(
          "t:2: duplicate token (each token may appear once)"));
  EXPECT_EQ(
      TokenAuthenticator::Parse("# only comments\n\n", "t").status(),
      absl::InvalidArgumentError(
          "t: no tokens defined, expected at least one '<token> <role>' line"));
}

TEST(TokenAuthenticatorTest, MissingFileIsNotFound) {
  EXPECT_EQ(
      TokenAuthenticator::FromFile("/nonexistent/tokens.txt").status(),
      absl::NotFoundError("cannot read tokens file '/nonexistent/tokens.txt'"));
}

TEST(ConstantTimeEqualsTest, ComparesContentAndLength) {
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abcd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", ""));
  // A prefix zero byte must not make a shorter string equal.
  EXPECT_FALSE(ConstantTimeEquals(absl::string_view("ab\0", 3), "ab"));
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
