// The coordinator's HTTP port (http_listen) in a whole CoordinatorServer:
// what gRPC reports produced, read as JSON with the same tokens.
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/http/http_test_client.h"
#include "server/rpc/coordinator_server.h"
#include "server/rpc/coordinator_test_util.h"

namespace gradnorm {
namespace server {
namespace {

using ::gradnorm::server::testing::HttpBody;
using ::gradnorm::server::testing::HttpGet;
using ::gradnorm::server::testing::NewChannel;
using ::gradnorm::server::testing::TestClient;
using ::testing::HasSubstr;
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

TEST(CoordinatorHttpTest, PlaintextHttpIsRefusedNextToTls) {
  CoordinatorServerOptions options = Options();
  options.tls.cert = TempPath("unused.crt");
  options.tls.key = TempPath("unused.key");
  absl::StatusOr<std::unique_ptr<CoordinatorServer>> server =
      CoordinatorServer::Create(options);
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(server.status().message(),
              HasSubstr("serves plaintext HTTP, but the gRPC port uses TLS"));
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
