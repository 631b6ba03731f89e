// The coordinator's HTTP port (http_listen) in a whole CoordinatorServer:
// what gRPC reports produced, read as JSON with the same tokens.
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/child_process.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/http/http_server.h"
#include "server/http/http_test_client.h"
#include "server/rpc/coordinator_server.h"
#include "server/rpc/coordinator_test_util.h"
#include "server/rpc/test_certificates.h"

namespace gradnorm {
namespace server {
namespace {

using ::gradnorm::server::testing::HttpBody;
using ::gradnorm::server::testing::HttpGet;
using ::gradnorm::server::testing::NewChannel;
using ::gradnorm::server::testing::TestClient;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

constexpr char kTrainerToken[] = "trainer-token-abcdefghijklmnop";
constexpr char kViewerToken[] = "viewer-token-abcdefghijklmnopq";

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return absl::StrCat(dir != nullptr ? dir : "/tmp", "/", name);
}

CoordinatorServerOptions Options() {
  CoordinatorServerOptions options;
  options.listen = "127.0.0.1:0";
  options.http_listen = "127.0.0.1:0";
  options.store = StoreKind::kMemory;
  options.tokens_file = TempPath("http_tokens");
  std::ofstream tokens(options.tokens_file);
  tokens << kTrainerToken << " trainer\n" << kViewerToken << " viewer\n";
  return options;
}

// A fresh directory of test certificates under TEST_TMPDIR.
std::string CertificatesDir(const std::string& name) {
  const std::string dir = TempPath(name);
  mkdir(dir.c_str(), 0700);
  const absl::Status made = MakeTestCertificates(dir);
  EXPECT_TRUE(made.ok()) << made;
  return dir;
}

std::string Bearer(const std::string& token) {
  return absl::StrCat("Authorization: Bearer ", token, "\r\n");
}

TEST(CoordinatorHttpTest, ServesWhatReportsProducedWithTheSameTokens) {
  auto server = CoordinatorServer::Create(Options());
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->http_port();
  ASSERT_GT(port, 0);
  TestClient client(NewChannel((*server)->address()), kTrainerToken);
  v1::RunConfig config;
  config.set_participants(1);
  config.set_max_norm(4);
  config.set_inexact(true);  // doubles are reported
  ASSERT_TRUE(client.RegisterRun("web-run", config).ok());
  for (int step = 0; step < 3; ++step) {
    const double partial[] = {9.0, 25.0, 1.0};
    ASSERT_TRUE(client.Report("web-run", step, 0, partial[step]).ok());
  }

  const std::string runs = HttpGet(port, "/api/v1/runs", Bearer(kViewerToken));
  EXPECT_THAT(runs, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(HttpBody(runs), HasSubstr("\"run_id\":\"web-run\""));
  EXPECT_THAT(HttpBody(runs), HasSubstr("\"rounds\":3,\"last_step\":2,"));

  const std::string history = HttpGet(
      port, "/api/v1/runs/web-run/history?buckets=1", Bearer(kViewerToken));
  EXPECT_THAT(HttpBody(history),
              HasSubstr("{\"buckets\":[{\"first_step\":0,\"last_step\":2,"
                        "\"rounds\":3,\"min_norm\":1,\"max_norm\":5,"
                        "\"mean_norm\":3,\"last_norm\":1,\"clipped\":1,"));

  const std::string metrics = HttpGet(port, "/metrics", Bearer(kViewerToken));
  EXPECT_THAT(metrics, HasSubstr("Content-Type: text/plain; version=0.0.4"));
  EXPECT_THAT(HttpBody(metrics), HasSubstr("gradnorm_build_info"));

  const std::string anonymous = HttpGet(port, "/api/v1/runs");
  EXPECT_THAT(anonymous, StartsWith("HTTP/1.1 401 Unauthorized\r\n"));
  EXPECT_THAT(HttpBody(anonymous), HasSubstr("\"code\":\"UNAUTHENTICATED\""));

  ASSERT_TRUE((*server)->Shutdown().ok());
  EXPECT_EQ(HttpGet(port, "/api/v1/runs", Bearer(kViewerToken)),
            "connect failed");
}

// curl's answer to an HTTPS GET of /api/v1/runs with the viewer token;
// the exit code is curl's (0: answered; 35, 56: the TLS handshake failed).
CommandOutput CurlRuns(int port, const std::vector<std::string>& extra) {
  std::vector<std::string> argv = {
      "/usr/bin/curl",
      "-sS",
      "--max-time",
      "10",
      "-H",
      absl::StrCat("Authorization: Bearer ", kViewerToken)};
  argv.insert(argv.end(), extra.begin(), extra.end());
  argv.push_back(absl::StrCat("https://127.0.0.1:", port, "/api/v1/runs"));
  absl::StatusOr<CommandOutput> out =
      RunCommand(argv, {}, absl::Now() + absl::Seconds(30));
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? *out : CommandOutput{};
}

TEST(CoordinatorHttpTest, ServesHttpsWithTheGrpcPortsTls) {
  const std::string dir = CertificatesDir("http_tls");
  CoordinatorServerOptions options = Options();
  options.tls.cert = dir + "/server.crt";
  options.tls.key = dir + "/server.key";
  auto server = CoordinatorServer::Create(options);
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->http_port();
  CommandOutput verified = CurlRuns(port, {"--cacert", dir + "/ca.crt"});
  EXPECT_EQ(verified.exit_code, 0) << verified.output;
  EXPECT_EQ(verified.output, "{\"runs\":[]}");
  // A client that does not trust the CA refuses the server.
  EXPECT_NE(CurlRuns(port, {"--cacert", dir + "/foreign-ca.crt"}).exit_code, 0);
  // Plaintext on the HTTPS port gets no answer.
  EXPECT_THAT(HttpGet(port, "/api/v1/runs", Bearer(kViewerToken)),
              Not(HasSubstr("runs")));
}

TEST(CoordinatorHttpTest, MutualTlsAsksForAClientCertificateOfTheCa) {
  const std::string dir = CertificatesDir("http_mtls");
  CoordinatorServerOptions options = Options();
  options.tls.cert = dir + "/server.crt";
  options.tls.key = dir + "/server.key";
  options.tls.client_ca = dir + "/ca.crt";
  auto server = CoordinatorServer::Create(options);
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->http_port();
  const std::vector<std::string> trust = {"--cacert", dir + "/ca.crt"};
  EXPECT_NE(CurlRuns(port, trust).exit_code, 0);
  std::vector<std::string> foreign = trust;
  foreign.insert(foreign.end(), {"--cert", dir + "/foreign-client.crt", "--key",
                                 dir + "/foreign-client.key"});
  EXPECT_NE(CurlRuns(port, foreign).exit_code, 0);
  std::vector<std::string> client = trust;
  client.insert(client.end(),
                {"--cert", dir + "/client.crt", "--key", dir + "/client.key"});
  CommandOutput answered = CurlRuns(port, client);
  EXPECT_EQ(answered.exit_code, 0) << answered.output;
  EXPECT_EQ(answered.output, "{\"runs\":[]}");
}

TEST(CoordinatorHttpTest, AnUnusableCertificateStopsTheStartNamingIt) {
  const std::string dir = CertificatesDir("http_bad_tls");
  HttpServerOptions http;
  http.tls_cert = dir + "/server.crt";
  http.tls_key = dir + "/client.key";  // Not the certificate's key.
  absl::StatusOr<std::unique_ptr<HttpServer>> server = HttpServer::Start(
      http, [](const HttpRequest&) { return HttpResponse(); });
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(server.status().message(),
              HasSubstr(absl::StrCat("cannot use the PEM private key of the "
                                     "certificate '",
                                     dir, "/client.key'")));
  http.tls_key = "";
  EXPECT_EQ(
      HttpServer::Start(http, [](const HttpRequest&) { return HttpResponse(); })
          .status()
          .code(),
      absl::StatusCode::kInvalidArgument);
}

TEST(CoordinatorHttpTest, ABadHttpAddressStopsTheStart) {
  CoordinatorServerOptions options = Options();
  options.http_listen = "nowhere";
  EXPECT_EQ(CoordinatorServer::Create(options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
