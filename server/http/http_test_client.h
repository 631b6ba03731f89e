// A minimal HTTP/1.1 client for tests: one GET over a fresh loopback
// connection, the whole answer (status line, headers, body) as the server
// wrote it.
//
//   std::string answer = HttpGet(port, "/api/v1/runs",
//                                "Authorization: Bearer t\r\n");
#ifndef GRADNORM_SERVER_HTTP_HTTP_TEST_CLIENT_H_
#define GRADNORM_SERVER_HTTP_HTTP_TEST_CLIENT_H_

#include <string>

namespace gradnorm {
namespace server {
namespace testing {

// "connect failed" when nothing listens on 127.0.0.1:port.
std::string HttpExchange(int port, const std::string& request);

// GET `target` with extra `headers` (each ending in \r\n).
std::string HttpGet(int port, const std::string& target,
                    const std::string& headers = "");

// The body of an answer (after the blank line); "" when there is none.
std::string HttpBody(const std::string& answer);

}  // namespace testing
}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_HTTP_HTTP_TEST_CLIENT_H_
