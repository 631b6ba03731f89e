#include "server/http/http_server.h"

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/http/http_test_client.h"

namespace gradnorm {
namespace server {
namespace {

using ::testing::Eq;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

using testing::HttpGet;

TEST(HttpServerTest, HandsTheDecodedRequestToTheHandlerAndWritesItsAnswer) {
  HttpRequest seen;
  auto server = HttpServer::Start({}, [&](const HttpRequest& request) {
    seen = request;
    HttpResponse response;
    response.status = 404;
    response.body = "{\"a\":1}";
    return response;
  });
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->port(), 0);
  const std::string answer = HttpGet(
      (*server)->port(), "/api/v1/runs/r%20x/history?buckets=10&from=2&x=a%2Bb",
      "Authorization: Bearer token-0123\r\n");
  EXPECT_THAT(answer, StartsWith("HTTP/1.1 404 Not Found\r\n"));
  EXPECT_THAT(answer, HasSubstr("Content-Type: application/json\r\n"));
  EXPECT_THAT(answer, HasSubstr("Content-Length: 7\r\n"));
  EXPECT_THAT(answer, HasSubstr("\r\n\r\n{\"a\":1}"));
  EXPECT_EQ(seen.method, "GET");
  EXPECT_EQ(seen.path, "/api/v1/runs/r x/history");
  EXPECT_EQ(seen.query.at("buckets"), "10");
  EXPECT_EQ(seen.query.at("from"), "2");
  EXPECT_EQ(seen.query.at("x"), "a+b");
  EXPECT_EQ(seen.authorization, "Bearer token-0123");
}

TEST(HttpServerTest, ServesConcurrentRequests) {
  std::atomic<int> served{0};
  auto server = HttpServer::Start({}, [&](const HttpRequest&) {
    ++served;
    return HttpResponse{200, "text/plain", "ok"};
  });
  ASSERT_TRUE(server.ok()) << server.status();
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  for (int i = 0; i < 16; ++i) {
    clients.emplace_back([&] {
      if (HttpGet((*server)->port(), "/").find("\r\n\r\nok") !=
          std::string::npos) {
        ++ok;
      }
    });
  }
  for (std::thread& t : clients) t.join();
  EXPECT_EQ(ok.load(), 16);
  EXPECT_EQ(served.load(), 16);
}

TEST(HttpServerTest, BadOrTakenAddressesAreErrors) {
  auto handler = [](const HttpRequest&) { return HttpResponse(); };
  HttpServerOptions bad;
  bad.listen = "no-port";
  EXPECT_EQ(HttpServer::Start(bad, handler).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto first = HttpServer::Start({}, handler);
  ASSERT_TRUE(first.ok());
  HttpServerOptions taken;
  taken.listen = absl::StrCat("127.0.0.1:", (*first)->port());
  absl::StatusOr<std::unique_ptr<HttpServer>> second =
      HttpServer::Start(taken, handler);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(),
              HasSubstr(absl::StrCat("cannot serve HTTP on ", taken.listen)));
}

TEST(HttpServerTest, StopClosesThePort) {
  auto server = HttpServer::Start({}, [](const HttpRequest&) {
    return HttpResponse{200, "text/plain", "x"};
  });
  ASSERT_TRUE(server.ok());
  const int port = (*server)->port();
  (*server)->Stop();
  (*server)->Stop();  // Idempotent.
  EXPECT_EQ(HttpGet(port, "/"), "connect failed");
}

// A stream that writes one event, then waits until the server stops.
HttpResponse WaitingStream(absl::Notification* streaming) {
  HttpResponse response;
  response.content_type = "text/event-stream";
  response.signal = std::make_shared<StreamSignal>();
  response.stream = [streaming](ResponseWriter& out, StreamSignal& signal) {
    out.Write("data: first\n\n");
    if (!streaming->HasBeenNotified()) streaming->Notify();
    while (signal.WaitFor(absl::Seconds(30)) != StreamSignal::kCancelled) {
    }
    out.Write("event: end\n\n");
  };
  return response;
}

TEST(HttpServerTest, StreamsUntilStopCancelsTheStream) {
  absl::Notification streaming;
  auto server = HttpServer::Start(
      {}, [&](const HttpRequest&) { return WaitingStream(&streaming); });
  ASSERT_TRUE(server.ok()) << server.status();
  std::string answer;
  std::thread client([&] { answer = HttpGet((*server)->port(), "/events"); });
  ASSERT_TRUE(streaming.WaitForNotificationWithTimeout(absl::Seconds(10)));
  (*server)->Stop();  // Returns only once the stream ended.
  client.join();
  EXPECT_THAT(answer, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(answer, HasSubstr("Content-Type: text/event-stream\r\n"));
  EXPECT_THAT(answer, Not(HasSubstr("Content-Length")));
  EXPECT_THAT(testing::HttpBody(answer), Eq("data: first\n\nevent: end\n\n"));
}

TEST(HttpServerTest, RefusesStreamsBeyondTheLimit) {
  absl::Notification streaming;
  HttpServerOptions options;
  options.threads = 3;
  options.max_streams = 1;
  auto server = HttpServer::Start(
      options, [&](const HttpRequest&) { return WaitingStream(&streaming); });
  ASSERT_TRUE(server.ok()) << server.status();
  std::string first;
  std::thread client([&] { first = HttpGet((*server)->port(), "/events"); });
  ASSERT_TRUE(streaming.WaitForNotificationWithTimeout(absl::Seconds(10)));
  const std::string second = HttpGet((*server)->port(), "/events");
  EXPECT_THAT(second, StartsWith("HTTP/1.1 503 Service Unavailable\r\n"));
  EXPECT_THAT(second, HasSubstr("Retry-After: 5\r\n"));
  EXPECT_THAT(second, HasSubstr("serves 1 event streams at most"));
  (*server)->Stop();
  client.join();
  EXPECT_THAT(first, HasSubstr("data: first"));
}

TEST(HttpServerTest, MaxStreamsMustLeaveAWorkerFree) {
  HttpServerOptions options;
  options.threads = 4;
  options.max_streams = 4;
  EXPECT_EQ(HttpServer::Start(options,
                              [](const HttpRequest&) { return HttpResponse(); })
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(HttpServerTest, PassesLastEventId) {
  HttpRequest seen;
  auto server = HttpServer::Start({}, [&](const HttpRequest& request) {
    seen = request;
    return HttpResponse{200, "text/plain", "ok"};
  });
  ASSERT_TRUE(server.ok());
  HttpGet((*server)->port(), "/", "Last-Event-ID: 41\r\n");
  EXPECT_EQ(seen.last_event_id, "41");
}

TEST(HttpServerTest, AnswersMalformedAndOversizedRequestsWithErrors) {
  auto server = HttpServer::Start({}, [](const HttpRequest&) {
    return HttpResponse{200, "text/plain", "ok"};
  });
  ASSERT_TRUE(server.ok());
  const std::string malformed =
      testing::HttpExchange((*server)->port(), "GET nowhere\r\n\r\n");
  EXPECT_THAT(malformed, StartsWith("HTTP/1.1 400 Bad Request\r\n"));
  EXPECT_THAT(malformed, HasSubstr("\"code\":\"INVALID_ARGUMENT\""));
  const std::string oversized = testing::HttpExchange(
      (*server)->port(), absl::StrCat("GET / HTTP/1.1\r\nX: ",
                                      std::string(20000, 'a'), "\r\n\r\n"));
  EXPECT_THAT(oversized,
              StartsWith("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
}

TEST(HttpServerTest, StopDoesNotWaitForAClientThatSendsNothing) {
  HttpServerOptions options;
  options.io_timeout = absl::Hours(1);
  auto server = HttpServer::Start(
      options, [](const HttpRequest&) { return HttpResponse(); });
  ASSERT_TRUE(server.ok());
  std::thread silent([&] {
    // Connects, sends an unfinished head, waits for the answer.
    testing::HttpExchange((*server)->port(), "GET / HTTP/1.1\r\n");
  });
  absl::SleepFor(absl::Milliseconds(100));
  const absl::Time start = absl::Now();
  (*server)->Stop();
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  silent.join();
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
