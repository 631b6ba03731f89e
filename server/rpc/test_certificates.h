// Test certificates, made fresh with the openssl CLI for tests of TLS and
// mutual TLS: a CA "ca", a server certificate "server" for localhost and
// 127.0.0.1, a client certificate "client" from the same CA, and a client
// certificate "foreign-client" from another CA "foreign-ca". Each NAME has
// NAME.crt and NAME.key (PEM) in the directory.
//
//   ASSERT_TRUE(MakeTestCertificates(dir).ok());
//   options.tls.cert = dir + "/server.crt";
//
// Thread-safety: call once per directory.
#ifndef GRADNORM_SERVER_RPC_TEST_CERTIFICATES_H_
#define GRADNORM_SERVER_RPC_TEST_CERTIFICATES_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace gradnorm {
namespace server {

// INTERNAL naming the failing openssl step.
absl::Status MakeTestCertificates(const std::string& dir);

// The file's contents; NOT_FOUND when it cannot be read.
absl::StatusOr<std::string> ReadPem(const std::string& path);

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_RPC_TEST_CERTIFICATES_H_
