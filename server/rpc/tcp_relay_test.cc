// The replica's HTTP relay in front of a whole CoordinatorServer's HTTP port,
// with a memory leader directory: requests and their answers pass unchanged;
// without a holder a connection is closed after the wait.
#include "server/rpc/tcp_relay.h"

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
#include "server/store/leader_directory.h"

namespace gradnorm {
namespace server {
namespace {

using ::gradnorm::server::testing::HttpBody;
using ::gradnorm::server::testing::HttpGet;
using ::gradnorm::server::testing::NewChannel;
using ::gradnorm::server::testing::TestClient;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr char kToken[] = "viewer-token-abcdefghijklmnopq";

TEST(TcpRelayTest, RelaysTheHoldersHttpPort) {
  const char* dir = std::getenv("TEST_TMPDIR");
  CoordinatorServerOptions options;
  options.listen = "127.0.0.1:0";
  options.http_listen = "127.0.0.1:0";
  options.store = StoreKind::kMemory;
  options.tokens_file =
      absl::StrCat(dir != nullptr ? dir : "/tmp", "/relay_tokens");
  std::ofstream(options.tokens_file) << kToken << " trainer\n";
  auto coordinator = CoordinatorServer::Create(options);
  ASSERT_TRUE(coordinator.ok()) << coordinator.status();
  TestClient trainer(NewChannel((*coordinator)->address()), kToken);
  v1::RunConfig config;
  config.set_participants(1);
  config.set_max_norm(4);
  config.set_inexact(true);
  ASSERT_TRUE(trainer.RegisterRun("relayed", config).ok());
  ASSERT_TRUE(trainer.Report("relayed", 0, 0, 25.0).ok());

  MemoryLeaderDirectory directory;
  directory.Set(FormatAdvertised(
      {.grpc = (*coordinator)->address(),
       .http = absl::StrCat("127.0.0.1:", (*coordinator)->http_port())}));
  auto relay =
      TcpRelay::Start({.listen = "127.0.0.1:0", .directory = &directory});
  ASSERT_TRUE(relay.ok()) << relay.status();

  const std::string bearer =
      absl::StrCat("Authorization: Bearer ", kToken, "\r\n");
  const std::string direct =
      HttpGet((*coordinator)->http_port(), "/api/v1/runs", bearer);
  const std::string relayed = HttpGet((*relay)->port(), "/api/v1/runs", bearer);
  EXPECT_THAT(relayed, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(HttpBody(relayed), HasSubstr("\"run_id\":\"relayed\""));
  EXPECT_EQ(HttpBody(relayed), HttpBody(direct));
  EXPECT_THAT(HttpGet((*relay)->port(), "/api/v1/runs"),
              StartsWith("HTTP/1.1 401 Unauthorized\r\n"));
  EXPECT_EQ((*relay)->relayed(), 2u);
}

TEST(TcpRelayTest, ClosesTheConnectionWithoutAHolder) {
  MemoryLeaderDirectory directory;
  auto relay = TcpRelay::Start({.listen = "127.0.0.1:0",
                                .directory = &directory,
                                .max_wait = absl::Milliseconds(200)});
  ASSERT_TRUE(relay.ok()) << relay.status();
  // The memory directory answers its waiters only when told to.
  std::thread expire([&] {
    absl::SleepFor(absl::Milliseconds(300));
    directory.ExpireWaiters(absl::Now() + absl::Hours(1));
  });
  EXPECT_EQ(HttpGet((*relay)->port(), "/api/v1/runs"), "");
  expire.join();
  EXPECT_EQ((*relay)->relayed(), 0u);

  // A holder without an HTTP port: closed too.
  directory.Set("127.0.0.1:1");
  EXPECT_EQ(HttpGet((*relay)->port(), "/api/v1/runs"), "");
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
