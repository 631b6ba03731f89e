// CoordinatorClient against a real coordinator (in process, real gRPC on
// loopback) serving TLS or mutual TLS with bearer tokens: the channel kinds
// and credentials a trainer configures, end to end.
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/coordinator_client.h"
#include "gtest/gtest.h"
#include "server/rpc/coordinator_server.h"
#include "server/rpc/test_certificates.h"

namespace gradnorm {
namespace {

constexpr char kTrainerToken[] = "trainer-token-0123456789";
constexpr char kViewerToken[] = "viewer-token-0123456789";

std::string Dir() {
  const char* dir = std::getenv("TEST_TMPDIR");
  return dir != nullptr ? dir : "/tmp";
}

std::string Pem(const std::string& name) {
  return server::ReadPem(absl::StrCat(Dir(), "/", name)).value_or("");
}

v1::RunConfig OneJob() {
  v1::RunConfig config;
  config.set_norm_type(2);
  config.set_max_norm(1);
  config.set_participants(1);
  config.set_inexact(true);  // doubles are reported
  return config;
}

class CoordinatorClientSecurityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    certificates_ = server::MakeTestCertificates(Dir());
    std::ofstream(Dir() + "/tokens.txt") << "# role per token\n"
                                         << kTrainerToken << " trainer\n"
                                         << kViewerToken << " viewer\n";
  }

  void Start(bool mutual) {
    ASSERT_TRUE(certificates_.ok()) << certificates_;
    server::CoordinatorServerOptions options;
    options.listen = "127.0.0.1:0";
    options.store = server::StoreKind::kMemory;
    options.tls.cert = Dir() + "/server.crt";
    options.tls.key = Dir() + "/server.key";
    if (mutual) options.tls.client_ca = Dir() + "/ca.crt";
    options.tokens_file = Dir() + "/tokens.txt";
    auto server = server::CoordinatorServer::Create(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  CoordinatorClientOptions Options(CoordinatorClientOptions::Security security,
                                   const std::string& token) {
    CoordinatorClientOptions options;
    options.target = server_->address();
    options.security = security;
    options.root_certs_pem = Pem("ca.crt");
    options.bearer_token = token;
    options.initial_backoff = absl::Milliseconds(20);
    return options;
  }

  // Registers a one-job run and reports the seed vector's partial (30).
  absl::StatusOr<v1::RoundResult> RegisterAndReport(
      const CoordinatorClientOptions& options, const std::string& run_id) {
    auto client = CoordinatorClient::Create(options);
    if (!client.ok()) return client.status();
    const absl::Time deadline = absl::Now() + absl::Seconds(2);
    auto registered = (*client)->RegisterRun(run_id, OneJob(), deadline);
    if (!registered.ok()) return registered.status();
    v1::ReportRequest request;
    request.set_run_id(run_id);
    request.set_step(1);
    request.set_participant(0);
    request.set_partial(30.0);
    return (*client)->Report(request, deadline);
  }

  static absl::Status certificates_;
  std::unique_ptr<server::CoordinatorServer> server_;
};

absl::Status CoordinatorClientSecurityTest::certificates_;

TEST_F(CoordinatorClientSecurityTest, TlsWithTrainerTokenReports) {
  Start(/*mutual=*/false);
  auto result = RegisterAndReport(
      Options(CoordinatorClientOptions::Security::kTls, kTrainerToken), "tls");
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->total_norm(), 5.477225575051661);
  EXPECT_EQ(result->action(), v1::ACTION_CLIP);
}

TEST_F(CoordinatorClientSecurityTest, TokensAreCheckedOverTls) {
  Start(/*mutual=*/false);
  auto none = RegisterAndReport(
      Options(CoordinatorClientOptions::Security::kTls, ""), "no-token");
  EXPECT_EQ(none.status().code(), absl::StatusCode::kUnauthenticated)
      << none.status();
  auto wrong = RegisterAndReport(
      Options(CoordinatorClientOptions::Security::kTls, "not-a-known-token-42"),
      "wrong-token");
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kUnauthenticated)
      << wrong.status();
  auto viewer = RegisterAndReport(
      Options(CoordinatorClientOptions::Security::kTls, kViewerToken),
      "viewer");
  EXPECT_EQ(viewer.status().code(), absl::StatusCode::kPermissionDenied)
      << viewer.status();
}

TEST_F(CoordinatorClientSecurityTest, PlaintextClientCannotReachATlsServer) {
  Start(/*mutual=*/false);
  // The handshake never completes: UNAVAILABLE, retried until the deadline.
  auto result = RegisterAndReport(
      Options(CoordinatorClientOptions::Security::kInsecure, kTrainerToken),
      "plain");
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDeadlineExceeded)
      << result.status();
}

TEST_F(CoordinatorClientSecurityTest, MutualTlsNeedsACertificateFromTheCa) {
  Start(/*mutual=*/true);
  CoordinatorClientOptions good =
      Options(CoordinatorClientOptions::Security::kMutualTls, kTrainerToken);
  good.client_cert_pem = Pem("client.crt");
  good.client_key_pem = Pem("client.key");
  auto result = RegisterAndReport(good, "mtls");
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->total_norm(), 5.477225575051661);

  CoordinatorClientOptions foreign = good;
  foreign.client_cert_pem = Pem("foreign-client.crt");
  foreign.client_key_pem = Pem("foreign-client.key");
  auto refused = RegisterAndReport(foreign, "mtls-foreign");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kDeadlineExceeded)
      << refused.status();

  CoordinatorClientOptions server_only =
      Options(CoordinatorClientOptions::Security::kTls, kTrainerToken);
  auto no_cert = RegisterAndReport(server_only, "mtls-none");
  EXPECT_EQ(no_cert.status().code(), absl::StatusCode::kDeadlineExceeded)
      << no_cert.status();
}

}  // namespace
}  // namespace gradnorm
