// TLS and mutual TLS over real gRPC. Certificates are made for each run with
// the openssl CLI in TEST_TMPDIR: a CA, a server certificate for 127.0.0.1 /
// localhost, a client certificate from the same CA, and a foreign client
// certificate from another CA.
#include "server/rpc/tls.h"

#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/rpc/coordinator_server.h"
#include "server/rpc/coordinator_test_util.h"
#include "server/rpc/test_certificates.h"

namespace gradnorm {
namespace server {
namespace {

using ::gradnorm::server::testing::NewChannel;
using ::gradnorm::server::testing::TestClient;
using ::testing::HasSubstr;

std::string Dir() {
  const char* dir = std::getenv("TEST_TMPDIR");
  return dir != nullptr ? dir : "/tmp";
}

std::string Path(const std::string& name) {
  return absl::StrCat(Dir(), "/", name);
}

std::string Read(const std::string& name) {
  return ReadPem(Path(name)).value_or("");
}

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ok_ = MakeTestCertificates(Dir()).ok(); }

  void SetUp() override {
    ASSERT_TRUE(ok_) << "openssl failed to make test certificates";
  }

  std::unique_ptr<CoordinatorServer> Start(
      bool mutual, const std::string& health_listen = "") {
    CoordinatorServerOptions options;
    options.listen = "127.0.0.1:0";
    options.health_listen = health_listen;
    options.store = StoreKind::kMemory;
    options.tls.cert = Path("server.crt");
    options.tls.key = Path("server.key");
    if (mutual) options.tls.client_ca = Path("ca.crt");
    auto server = CoordinatorServer::Create(options);
    EXPECT_TRUE(server.ok()) << server.status();
    return server.ok() ? *std::move(server) : nullptr;
  }

  static std::unique_ptr<TestClient> Client(const std::string& address,
                                            const std::string& client_cert) {
    grpc::SslCredentialsOptions options;
    options.pem_root_certs = Read("ca.crt");
    if (!client_cert.empty()) {
      options.pem_cert_chain = Read(client_cert + ".crt");
      options.pem_private_key = Read(client_cert + ".key");
    }
    return std::make_unique<TestClient>(
        NewChannel(address, grpc::SslCredentials(options)));
  }

  static v1::RunConfig Config() {
    v1::RunConfig config;
    config.set_norm_type(2);
    config.set_max_norm(1);
    config.set_participants(1);
    config.set_inexact(true);  // doubles are reported
    return config;
  }

  static bool ok_;
};

bool TlsTest::ok_ = false;

TEST_F(TlsTest, TlsServesVerifiedClientsAndRefusesPlaintext) {
  auto server = Start(/*mutual=*/false);
  ASSERT_NE(server, nullptr);
  auto client = Client(server->address(), "");
  ASSERT_TRUE(client->RegisterRun("r", Config()).ok());
  v1::RoundResult result;
  ASSERT_TRUE(client->Report("r", 0, 0, 9.0, &result).ok());
  EXPECT_EQ(result.total_norm(), 3.0);

  TestClient plaintext(NewChannel(server->address()));
  grpc::Status status =
      plaintext.Report("r", 0, 0, 9.0, nullptr, absl::Seconds(3));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TlsTest, MutualTlsRequiresAClientCertificateFromTheCa) {
  auto server = Start(/*mutual=*/true);
  ASSERT_NE(server, nullptr);
  auto trusted = Client(server->address(), "client");
  ASSERT_TRUE(trusted->RegisterRun("r", Config()).ok());
  ASSERT_TRUE(trusted->Report("r", 0, 0, 4.0).ok());

  auto anonymous = Client(server->address(), "");
  EXPECT_EQ(
      anonymous->Report("r", 0, 0, 4.0, nullptr, absl::Seconds(3)).error_code(),
      grpc::StatusCode::UNAVAILABLE);
  auto foreign = Client(server->address(), "foreign-client");
  EXPECT_EQ(
      foreign->Report("r", 0, 0, 4.0, nullptr, absl::Seconds(3)).error_code(),
      grpc::StatusCode::UNAVAILABLE);
  // The refused handshakes left the server healthy.
  EXPECT_EQ(trusted->Health(), "SERVING");
}

// Behind mutual TLS, a probe that speaks plaintext (the kubelet's gRPC probe)
// checks health on the health-only port; the Coordinator is not served there,
// so the port opens no way around TLS and tokens; it turns NOT_SERVING with
// the server's shutdown.
TEST_F(TlsTest, PlaintextHealthPortServesHealthOnly) {
  auto server = Start(/*mutual=*/true, "127.0.0.1:0");
  ASSERT_NE(server, nullptr);
  ASSERT_GT(server->health_port(), 0);
  TestClient probe(
      NewChannel(absl::StrCat("127.0.0.1:", server->health_port())));
  EXPECT_EQ(probe.Health(), "SERVING");
  EXPECT_EQ(probe.Health("gradnorm.v1.Coordinator"), "SERVING");
  grpc::Status status = probe.RegisterRun("r", Config());
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED)
      << status.error_message();
  // The main port still refuses plaintext.
  TestClient plaintext(NewChannel(server->address()));
  EXPECT_EQ(plaintext.Health(),
            absl::StrCat("ERROR ", grpc::StatusCode::UNAVAILABLE));
  ASSERT_TRUE(server->Shutdown().ok());
  EXPECT_NE(probe.Health(), "SERVING");
}

TEST(CoordinatorServerTest, BadHealthListenAddressIsInvalid) {
  CoordinatorServerOptions options;
  options.listen = "127.0.0.1:0";
  options.store = StoreKind::kMemory;
  options.health_listen = "no-port";
  auto server = CoordinatorServer::Create(options);
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument)
      << server.status();
  EXPECT_THAT(std::string(server.status().message()),
              ::testing::HasSubstr("no-port"));
}

TEST(MakeServerCredentialsTest, RejectsIncompleteOrUnreadableFiles) {
  EXPECT_NE(MakeServerCredentials(TlsFiles{}).value(), nullptr);
  TlsFiles only_cert;
  only_cert.cert = "server.crt";
  EXPECT_EQ(MakeServerCredentials(only_cert).status().code(),
            absl::StatusCode::kInvalidArgument);
  TlsFiles missing;
  missing.cert = "/nonexistent/server.crt";
  missing.key = "/nonexistent/server.key";
  EXPECT_EQ(MakeServerCredentials(missing).status(),
            absl::NotFoundError(
                "cannot read TLS certificate file '/nonexistent/server.crt'"));
  const std::string not_pem = Path("not_pem.txt");
  std::ofstream(not_pem) << "hello\n";
  TlsFiles garbage;
  garbage.cert = not_pem;
  garbage.key = not_pem;
  absl::Status status = MakeServerCredentials(garbage).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("holds no PEM block"));
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
