#include "server/http/round_events.h"

#include <memory>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/aggregator.h"
#include "server/core/clock.h"
#include "server/store/memory_telemetry_store.h"

namespace gradnorm {
namespace server {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Keeps what the stream wrote; fails writes once `closed`.
class RecordingWriter : public ResponseWriter {
 public:
  bool Write(absl::string_view bytes) override {
    absl::MutexLock lock(&mu_);
    if (closed_) return false;
    text_.append(bytes.data(), bytes.size());
    return true;
  }
  void Close() {
    absl::MutexLock lock(&mu_);
    closed_ = true;
  }
  // Waits until the text holds `needle`; the text so far.
  std::string AwaitText(const std::string& needle) {
    absl::MutexLock lock(&mu_);
    auto holds = [&] { return text_.find(needle) != std::string::npos; };
    mu_.AwaitWithTimeout(absl::Condition(&holds), absl::Seconds(10));
    return text_;
  }

 private:
  absl::Mutex mu_;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::string text_ ABSL_GUARDED_BY(mu_);
};

class RoundEventsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    AggregatorOptions options;
    options.expiry_interval = absl::ZeroDuration();
    auto created = Aggregator::Create(options, &store_, &clock_);
    ASSERT_TRUE(created.ok()) << created.status();
    aggregator_ = *std::move(created);
    v1::RegisterRunRequest run;
    run.set_run_id("r");
    run.mutable_config()->set_participants(1);
    run.mutable_config()->set_max_norm(4);
    run.mutable_config()->set_inexact(true);  // doubles are reported
    ASSERT_TRUE(aggregator_->RegisterRun(run).ok());
    Report(0, 9);
    Report(1, 25);
  }

  void Report(uint64_t step, double partial) {
    v1::ReportRequest report;
    report.set_run_id("r");
    report.set_step(step);
    report.set_partial(partial);
    aggregator_->Report(report, absl::InfiniteFuture(),
                        [](absl::StatusOr<v1::RoundResult> result) {
                          EXPECT_TRUE(result.ok()) << result.status();
                        });
  }

  FakeClock clock_{absl::FromUnixSeconds(1'700'000'000)};
  MemoryTelemetryStore store_;
  std::unique_ptr<Aggregator> aggregator_;
};

TEST_F(RoundEventsTest, SendsPastRoundsThenNewOnesThenTheEnd) {
  HttpResponse response =
      RoundEvents(aggregator_.get(), "r", 1, absl::Milliseconds(50));
  ASSERT_TRUE(response.stream);
  EXPECT_EQ(response.content_type, "text/event-stream");
  RecordingWriter out;
  std::thread stream([&] { response.stream(out, *response.signal); });
  std::string text = out.AwaitText("id: 1\n");
  EXPECT_THAT(text, HasSubstr("retry: 2000\n\n"));
  EXPECT_THAT(
      text,
      HasSubstr("id: 1\nevent: round\ndata: {\"run_id\":\"r\",\"step\":1,"));
  EXPECT_THAT(text, HasSubstr("\"total_norm\":5,"));
  EXPECT_THAT(text, Not(HasSubstr("id: 0\n")));  // before `from`
  // Idle: keepalive comments.
  text = out.AwaitText(": keepalive\n\n");
  EXPECT_THAT(text, HasSubstr(": keepalive\n\n"));
  Report(2, 10000);
  text = out.AwaitText("id: 2\n");
  EXPECT_THAT(text, HasSubstr("\"total_norm\":100,"));
  ASSERT_TRUE(aggregator_->FinishRun("r").ok());
  stream.join();
  EXPECT_THAT(out.AwaitText("event: end"),
              HasSubstr("event: end\ndata: {\"code\":\"OUT_OF_RANGE\""));
}

TEST_F(RoundEventsTest, CancelEndsTheStreamWithUnavailable) {
  HttpResponse response =
      RoundEvents(aggregator_.get(), "r", 0, absl::Hours(1));
  RecordingWriter out;
  std::thread stream([&] { response.stream(out, *response.signal); });
  out.AwaitText("id: 1\n");
  response.signal->Cancel();
  stream.join();
  EXPECT_THAT(out.AwaitText("event: end"),
              HasSubstr("{\"code\":\"UNAVAILABLE\",\"message\":\"the "
                        "coordinator's HTTP port is stopping"));
}

TEST_F(RoundEventsTest, AClientThatLeftEndsTheStreamAtTheNextWrite) {
  HttpResponse response =
      RoundEvents(aggregator_.get(), "r", 0, absl::Milliseconds(20));
  RecordingWriter out;
  std::thread stream([&] { response.stream(out, *response.signal); });
  out.AwaitText("id: 1\n");
  out.Close();
  stream.join();  // Ends at the next keepalive.
}

TEST_F(RoundEventsTest, AnUnknownRunIsNotFound) {
  HttpResponse response =
      RoundEvents(aggregator_.get(), "nope", 0, absl::Seconds(1));
  EXPECT_FALSE(response.stream);
  EXPECT_EQ(response.status, 404);
  EXPECT_THAT(response.body, HasSubstr("\"code\":\"NOT_FOUND\""));
}

TEST(RoundEventTest, EndEventCarriesTheStatus) {
  EXPECT_EQ(EndEvent(absl::NotFoundError("run r was deleted")),
            "event: end\ndata: {\"code\":\"NOT_FOUND\",\"message\":\"run r "
            "was deleted\"}\n\n");
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
