#include "server/http/tcp_listen.h"

#include <unistd.h>

#include "gtest/gtest.h"

namespace gradnorm {
namespace server {
namespace {

TEST(SplitHostPortTest, SplitsNamesAndAddressesAndUnbracketsIpv6) {
  absl::StatusOr<HostPort> v4 = SplitHostPort("127.0.0.1:9464");
  ASSERT_TRUE(v4.ok()) << v4.status();
  EXPECT_EQ(v4->host, "127.0.0.1");
  EXPECT_EQ(v4->port, "9464");
  absl::StatusOr<HostPort> v6 = SplitHostPort("[::1]:0");
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, "0");
  EXPECT_EQ(SplitHostPort("db.example:5432")->host, "db.example");
}

TEST(SplitHostPortTest, RefusesWhatIsNotHostPort) {
  for (const char* bad :
       {"nocolon", ":80", "host:", "host:http", "h:65536", "h:-1"}) {
    absl::StatusOr<HostPort> split = SplitHostPort(bad);
    EXPECT_EQ(split.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(ListenTcpTest, PicksAFreePortForPortZero) {
  absl::StatusOr<ListeningSocket> socket = ListenTcp("127.0.0.1:0");
  ASSERT_TRUE(socket.ok()) << socket.status();
  EXPECT_GT(socket->port, 0);
  // The port is taken now: a second socket on it is refused.
  absl::StatusOr<ListeningSocket> again =
      ListenTcp("127.0.0.1:" + std::to_string(socket->port));
  EXPECT_EQ(again.status().code(), absl::StatusCode::kUnavailable);
  close(socket->fd);
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
