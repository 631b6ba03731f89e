#include "server/http/http_request_parser.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gradnorm {
namespace server {
namespace {

using ::testing::HasSubstr;

TEST(ParseRequestHeadTest, DecodesPathQueryAndTheHeadersItKeeps) {
  absl::StatusOr<HttpRequest> request = ParseRequestHead(
      "GET /api/v1/runs/r%20x/history?buckets=10&from=2&x=a%2Bb+c&flag HTTP/1.1"
      "\r\nHost: h\r\nauthorization:   Bearer token-0123  \r\n"
      "LAST-EVENT-ID: 41\r\n\r\n");
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->method, "GET");
  EXPECT_EQ(request->path, "/api/v1/runs/r x/history");
  EXPECT_EQ(request->query.at("buckets"), "10");
  EXPECT_EQ(request->query.at("from"), "2");
  EXPECT_EQ(request->query.at("x"), "a+b c");
  EXPECT_EQ(request->query.at("flag"), "");
  EXPECT_EQ(request->authorization, "Bearer token-0123");
  EXPECT_EQ(request->last_event_id, "41");
}

TEST(ParseRequestHeadTest, RefusesWhatIsNotARequest) {
  for (const char* head :
       {"", "GET\r\n\r\n", "GET /x\r\n\r\n", "GET x HTTP/1.1\r\n\r\n",
        "GET /x HTTP/1.1 extra\r\n\r\n", "GET /x HTTP/1.1\r\nno colon\r\n\r\n",
        "GET /x HTTP/1.1\r\n: empty name\r\n\r\n",
        "GET /a\x01 HTTP/1.1\r\n\r\n"}) {
    absl::StatusOr<HttpRequest> request = ParseRequestHead(head);
    EXPECT_EQ(request.status().code(), absl::StatusCode::kInvalidArgument)
        << head;
  }
  EXPECT_THAT(ParseRequestHead("GET x HTTP/1.1\r\n\r\n").status().message(),
              HasSubstr("expected 'METHOD /path HTTP/1.1'"));
  EXPECT_EQ(ParseRequestHead("GET /x HTTP/2\r\n\r\n").status().code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_EQ(
      ParseRequestHead(std::string(kMaxRequestHead + 1, 'a')).status().code(),
      absl::StatusCode::kInvalidArgument);
}

TEST(UrlDecodeTest, KeepsMalformedEscapes) {
  EXPECT_EQ(UrlDecode("a%2fb%zz%4", false), "a/b%zz%4");
  EXPECT_EQ(UrlDecode("a+b", false), "a+b");
  EXPECT_EQ(UrlDecode("a+b", true), "a b");
  EXPECT_EQ(UrlDecode("%", true), "%");
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
