// HealthService on a server of its own, over real gRPC: Check follows
// SetServing for "" and gradnorm.v1.Coordinator, answers SERVING for
// gradnorm.v1.Process either way, and names any other service as unknown.
#include "server/rpc/health_service.h"

#include <memory>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/rpc/coordinator_test_util.h"

namespace gradnorm {
namespace server {
namespace {

using ::gradnorm::server::testing::NewChannel;
using ::gradnorm::server::testing::TestClient;

TEST(HealthServiceTest, CheckFollowsSetServing) {
  HealthService health;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&health);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  TestClient probe(NewChannel(absl::StrCat("127.0.0.1:", port)));

  EXPECT_EQ(probe.Health(), "NOT_SERVING");
  EXPECT_EQ(probe.Health("gradnorm.v1.Process"), "SERVING");
  health.SetServing(true);
  EXPECT_EQ(probe.Health(), "SERVING");
  EXPECT_EQ(probe.Health("gradnorm.v1.Coordinator"), "SERVING");
  EXPECT_EQ(probe.Health("grpc.other.v1.Thing"),
            absl::StrCat("ERROR ", grpc::StatusCode::NOT_FOUND));
  health.SetServing(false);
  EXPECT_EQ(probe.Health("gradnorm.v1.Coordinator"), "NOT_SERVING");
  server->Shutdown();
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
