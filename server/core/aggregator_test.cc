#include "server/core/aggregator.h"

#include <atomic>
#include <cmath>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "common/exact_sum.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "server/core/clock.h"
#include "server/core/event_log.h"
#include "server/core/history.h"
#include "server/store/memory_telemetry_store.h"
#include "server/store/telemetry_store.h"

namespace gradnorm {
namespace server {
namespace {

using ::google::protobuf::util::MessageDifferencer;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// Collects one Report's outcome.
class Outcome {
 public:
  Aggregator::ReportCallback Callback() {
    return [this](absl::StatusOr<v1::RoundResult> result) {
      absl::MutexLock lock(&mu_);
      EXPECT_FALSE(result_.has_value()) << "callback called twice";
      result_ = std::move(result);
    };
  }
  bool done() const {
    absl::MutexLock lock(&mu_);
    return result_.has_value();
  }
  absl::StatusOr<v1::RoundResult> Wait() const {
    absl::MutexLock lock(&mu_);
    auto has = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
      return result_.has_value();
    };
    mu_.Await(absl::Condition(&has));
    return *result_;
  }
  absl::StatusOr<v1::RoundResult> Get() const {
    absl::MutexLock lock(&mu_);
    EXPECT_TRUE(result_.has_value()) << "callback not called";
    if (!result_.has_value()) return absl::InternalError("not called");
    return *result_;
  }

 private:
  mutable absl::Mutex mu_;
  std::optional<absl::StatusOr<v1::RoundResult>> result_ ABSL_GUARDED_BY(mu_);
};

v1::ReportRequest MakeReport(const std::string& run, uint64_t step,
                             uint32_t participant, double partial) {
  v1::ReportRequest r;
  r.set_run_id(run);
  r.set_step(step);
  r.set_participant(participant);
  r.set_partial(partial);
  r.set_num_elements(100 + participant);
  return r;
}

v1::RegisterRunRequest MakeRun(const std::string& id, uint32_t participants,
                               double max_norm = 1.0) {
  v1::RegisterRunRequest r;
  r.set_run_id(id);
  r.mutable_config()->set_participants(participants);
  r.mutable_config()->set_max_norm(max_norm);
  r.mutable_config()->set_round_timeout_ms(1000);
  // These tests report doubles; the exact partials have tests of their own.
  r.mutable_config()->set_inexact(true);
  return r;
}

class AggregatorTest : public testing::Test {
 protected:
  AggregatorTest() { Start(); }

  void Start(AggregatorOptions options = NoThread()) {
    aggregator_.reset();
    auto created = Aggregator::Create(options, &store_, &clock_);
    ASSERT_TRUE(created.ok()) << created.status();
    aggregator_ = *std::move(created);
  }

  static AggregatorOptions NoThread() {
    AggregatorOptions options;
    options.expiry_interval = absl::ZeroDuration();
    return options;
  }

  void Register(const v1::RegisterRunRequest& request) {
    auto response = aggregator_->RegisterRun(request);
    ASSERT_TRUE(response.ok()) << response.status();
    EXPECT_TRUE(response->created());
  }

  // The outcome lives as long as the fixture, which outlives the aggregator
  // (whose shutdown may still answer it).
  Outcome* Report(const std::string& run, uint64_t step, uint32_t participant,
                  double partial,
                  absl::Time deadline = absl::InfiniteFuture()) {
    outcomes_.push_back(std::make_unique<Outcome>());
    Outcome* outcome = outcomes_.back().get();
    aggregator_->Report(MakeReport(run, step, participant, partial), deadline,
                        outcome->Callback());
    return outcome;
  }

  // Runs one full round and returns its result.
  v1::RoundResult Round(const std::string& run, uint64_t step,
                        const std::vector<double>& partials) {
    std::vector<Outcome*> outcomes;
    for (uint32_t i = 0; i < partials.size(); ++i) {
      outcomes.push_back(Report(run, step, i, partials[i]));
    }
    absl::StatusOr<v1::RoundResult> result = outcomes.back()->Get();
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : v1::RoundResult();
  }

  FakeClock clock_;
  MemoryTelemetryStore store_;
  std::vector<std::unique_ptr<Outcome>> outcomes_;
  std::unique_ptr<Aggregator> aggregator_;
};

TEST_F(AggregatorTest, EveryParticipantGetsTheSameResult) {
  Register(MakeRun("r", 4));
  const absl::Time start = clock_.Now();
  auto p0 = Report("r", 7, 0, 25);
  clock_.Advance(absl::Milliseconds(500));
  auto p2 = Report("r", 7, 2, 0);
  clock_.Advance(absl::Seconds(1));
  auto p1 = Report("r", 7, 1, 5);
  EXPECT_FALSE(p0->done() || p1->done() || p2->done());
  clock_.Advance(absl::Milliseconds(250));
  auto p3 = Report("r", 7, 3, 0);

  absl::StatusOr<v1::RoundResult> r0 = p0->Get();
  ASSERT_TRUE(r0.ok()) << r0.status();
  EXPECT_EQ(r0->run_id(), "r");
  EXPECT_EQ(r0->step(), 7u);
  EXPECT_EQ(r0->total_norm(), 5.477225575051661);
  EXPECT_EQ(r0->action(), v1::ACTION_CLIP);
  EXPECT_EQ(r0->reason(), v1::REASON_ABOVE_MAX_NORM);
  EXPECT_EQ(r0->clip_coef(), 1 / (std::sqrt(30.0) + 1e-6));
  EXPECT_EQ(r0->effective_max_norm(), 1);
  EXPECT_EQ(r0->reason_detail(),
            "norm 5.477225575051661 > max_norm 1 (static)");
  EXPECT_EQ(r0->arrival_spread_seconds(), 1.75);
  EXPECT_EQ(r0->slowest_participant(), 3u);
  EXPECT_EQ(r0->finalized_unix_micros(),
            absl::ToUnixMicros(start + absl::Milliseconds(1750)));
  for (const auto* p : {p1, p2, p3}) {
    absl::StatusOr<v1::RoundResult> r = p->Get();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(MessageDifferencer::Equals(*r, *r0));
  }

  absl::StatusOr<StoreContents> stored = store_.Load();
  ASSERT_TRUE(stored.ok());
  ASSERT_EQ(stored->rounds.size(), 1u);
  const RoundRecord& record = stored->rounds[0];
  EXPECT_EQ(record.sequence, 1u);
  EXPECT_TRUE(MessageDifferencer::Equals(record.result, *r0));
  ASSERT_EQ(record.participants.size(), 4u);
  EXPECT_EQ(record.participants[1].partial, 5);
  EXPECT_EQ(record.participants[1].arrival_offset_seconds, 1.5);
  EXPECT_EQ(record.participants[1].num_elements, 101u);
  EXPECT_EQ(record.participants[2].arrival_offset_seconds, 0.5);
  EXPECT_EQ(record.participants[3].arrival_offset_seconds, 1.75);
}

TEST_F(AggregatorTest, SingleParticipantFinalizesAtOnce) {
  Register(MakeRun("solo", 1, 10));
  v1::RoundResult r = Round("solo", 0, {25});
  EXPECT_EQ(r.total_norm(), 5);
  EXPECT_EQ(r.action(), v1::ACTION_NONE);
  EXPECT_EQ(r.clip_coef(), 1);
  EXPECT_EQ(r.arrival_spread_seconds(), 0);
  EXPECT_EQ(r.slowest_participant(), 0u);
}

TEST_F(AggregatorTest, InfNorm) {
  v1::RegisterRunRequest run = MakeRun("inf", 2, 10);
  run.mutable_config()->set_norm_type(kInf);
  Register(run);
  EXPECT_EQ(Round("inf", 0, {3, 7}).total_norm(), 7);
  v1::RoundResult r = Round("inf", 1, {30, 7});
  EXPECT_EQ(r.total_norm(), 30);
  EXPECT_EQ(r.action(), v1::ACTION_CLIP);
  EXPECT_EQ(r.clip_coef(), 10 / (30 + 1e-6));
}

TEST_F(AggregatorTest, NonFiniteIsSkippedAndNanWins) {
  Register(MakeRun("r", 3));
  v1::RoundResult r = Round("r", 0, {1, kInf, kNaN});
  EXPECT_TRUE(std::isnan(r.total_norm()));
  EXPECT_EQ(r.action(), v1::ACTION_SKIP);
  EXPECT_EQ(r.reason(), v1::REASON_NONFINITE);
  EXPECT_EQ(r.clip_coef(), 1);
  EXPECT_EQ(Round("r", 1, {1, kInf, 2}).total_norm(), kInf);
}

TEST_F(AggregatorTest, NonFiniteUnderErrorPolicyIsRecordedAndFails) {
  v1::RegisterRunRequest run = MakeRun("r", 2);
  run.mutable_config()->set_nonfinite_policy(v1::NON_FINITE_POLICY_ERROR);
  Register(run);
  auto a = Report("r", 3, 0, kNaN);
  auto b = Report("r", 3, 1, 1);
  for (const auto* o : {a, b}) {
    absl::StatusOr<v1::RoundResult> r = o->Get();
    EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(r.status().message(),
              "the total norm of step 3 of run r is nan (a gradient was not "
              "finite) and the run's nonfinite_policy is "
              "NON_FINITE_POLICY_ERROR; the round is recorded as skipped");
  }
  EXPECT_EQ(Report("r", 3, 0, kNaN)->Get().status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_EQ(store_.Load()->rounds.size(), 1u);
  EXPECT_EQ(store_.Load()->rounds[0].result.action(), v1::ACTION_SKIP);
}

TEST_F(AggregatorTest, ResultsWaitForTheStoreCommit) {
  MemoryTelemetryStore manual(MemoryTelemetryStore::CommitMode::kManual);
  auto created = Aggregator::Create(NoThread(), &manual, &clock_);
  ASSERT_TRUE(created.ok());
  Aggregator& aggregator = **created;
  ASSERT_TRUE(aggregator.RegisterRun(MakeRun("r", 2)).ok());
  Outcome a, b, retry;
  aggregator.Report(MakeReport("r", 0, 0, 1), absl::InfiniteFuture(),
                    a.Callback());
  aggregator.Report(MakeReport("r", 0, 1, 1), absl::InfiniteFuture(),
                    b.Callback());
  // Finalized, but not durable: nobody hears about it yet, not even a retry.
  aggregator.Report(MakeReport("r", 0, 1, 1), absl::InfiniteFuture(),
                    retry.Callback());
  EXPECT_EQ(manual.pending(), 1u);
  EXPECT_FALSE(a.done() || b.done() || retry.done());
  EXPECT_EQ(aggregator.Stats().waiters, 3u);
  EXPECT_EQ(aggregator.GetRun("r")->rounds(), 0u);
  EXPECT_EQ(manual.CommitPending(), 1u);
  EXPECT_TRUE(a.Get().ok());
  EXPECT_TRUE(b.Get().ok());
  EXPECT_TRUE(retry.Get().ok());
  EXPECT_EQ(aggregator.GetRun("r")->rounds(), 1u);
  EXPECT_EQ(aggregator.Stats().waiters, 0u);
}

TEST_F(AggregatorTest, StoreFailureFailsWaitersAndLaterReports) {
  MemoryTelemetryStore manual(MemoryTelemetryStore::CommitMode::kManual);
  AggregatorOptions options = NoThread();
  std::vector<absl::Status> failures;  // on_store_failed: once, the error
  options.on_store_failed = [&](const absl::Status& s) {
    failures.push_back(s);
  };
  auto created = Aggregator::Create(options, &manual, &clock_);
  ASSERT_TRUE(created.ok());
  Aggregator& aggregator = **created;
  ASSERT_TRUE(aggregator.RegisterRun(MakeRun("r", 1)).ok());
  Outcome a, b, later;
  aggregator.Report(MakeReport("r", 0, 0, 1), absl::InfiniteFuture(),
                    a.Callback());
  aggregator.Report(MakeReport("r", 1, 0, 1), absl::InfiniteFuture(),
                    b.Callback());
  EXPECT_TRUE(failures.empty());
  manual.FailPending(absl::UnavailableError("disk I/O error"));
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_EQ(failures[0], absl::UnavailableError("disk I/O error"));
  EXPECT_EQ(b.Get().status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(a.Get().status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(a.Get().status().message(),
              HasSubstr("the telemetry store failed to commit step 0 of run "
                        "r (UNAVAILABLE: disk I/O error)"));
  aggregator.Report(MakeReport("r", 2, 0, 1), absl::InfiniteFuture(),
                    later.Callback());
  EXPECT_EQ(later.Get().status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(aggregator.GetRun("r")->rounds(), 0u);
  EXPECT_EQ(failures.size(), 1u);
}

TEST_F(AggregatorTest, DuplicatesGetTheSameResultBeforeAndAfterFinalization) {
  Register(MakeRun("r", 2));
  auto first = Report("r", 5, 0, 9);
  auto retry = Report("r", 5, 0, 9);  // A retry while waiting.
  EXPECT_FALSE(first->done() || retry->done());
  auto last = Report("r", 5, 1, 16);
  ASSERT_TRUE(last->Get().ok());
  EXPECT_EQ(last->Get()->total_norm(), 5);
  EXPECT_TRUE(MessageDifferencer::Equals(*first->Get(), *last->Get()));
  EXPECT_TRUE(MessageDifferencer::Equals(*retry->Get(), *last->Get()));
  auto after = Report("r", 5, 1, 16);  // After finalization: answered at once.
  ASSERT_TRUE(after->Get().ok());
  EXPECT_TRUE(MessageDifferencer::Equals(*after->Get(), *last->Get()));
  EXPECT_EQ(store_.Load()->rounds.size(), 1u);
}

TEST_F(AggregatorTest, ConflictingDuplicateNamesBothValues) {
  Register(MakeRun("r", 2));
  auto first = Report("r", 5, 0, 9);
  absl::Status before = Report("r", 5, 0, 9.5)->Get().status();
  EXPECT_EQ(before.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(before.message(),
            "participant 0 already reported partial 9 for step 5 of run r; "
            "this report has partial 9.5 (a retry must resend the same "
            "value)");
  Report("r", 5, 1, 16);
  ASSERT_TRUE(first->Get().ok());
  absl::Status after = Report("r", 5, 1, kNaN)->Get().status();
  EXPECT_EQ(after.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(after.message(),
            "participant 1 already reported partial 16 for step 5 of run r; "
            "this report has partial nan (a retry must resend the same "
            "value)");
}

TEST_F(AggregatorTest, ReloadAnswersDuplicatesOfFinishedRounds) {
  Register(MakeRun("r", 2));
  v1::RoundResult before = Round("r", 1, {9, 16});
  Report("r", 2, 0, 1);  // Unfinished: lost with the restart.
  Start();
  absl::StatusOr<v1::RoundResult> again = Report("r", 1, 1, 16)->Get();
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(MessageDifferencer::Equals(*again, before));
  EXPECT_EQ(Report("r", 1, 0, 10)->Get().status().code(),
            absl::StatusCode::kAlreadyExists);
  // The unfinished round completes once every participant retries.
  auto retry0 = Report("r", 2, 0, 1);
  auto retry1 = Report("r", 2, 1, 3);
  ASSERT_TRUE(retry0->Get().ok());
  EXPECT_EQ(retry0->Get()->total_norm(), 2);
  absl::StatusOr<v1::RunInfo> info = aggregator_->GetRun("r");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->rounds(), 2u);
  EXPECT_EQ(info->last_step(), 2u);
}

TEST_F(AggregatorTest, RoundTimeoutNamesTheMissingAndAbandonsTheStep) {
  Register(MakeRun("r", 5));  // round_timeout_ms 1000.
  auto a = Report("r", 9, 0, 1);
  auto b = Report("r", 9, 2, 1);
  auto c = Report("r", 9, 3, 1);
  clock_.Advance(absl::Milliseconds(999));
  aggregator_->ExpireRounds();
  EXPECT_FALSE(a->done());
  EXPECT_EQ(aggregator_->GetRun("r")->open_rounds(), 1u);
  clock_.Advance(absl::Milliseconds(1));
  aggregator_->ExpireRounds();
  for (const auto* o : {a, b, c}) {
    absl::Status s = o->Get().status();
    EXPECT_EQ(s.code(), absl::StatusCode::kAborted);
    EXPECT_EQ(s.message(),
              "the round for step 9 of run r timed out after 1000 ms waiting "
              "for participants 1, 4 (3 of 5 reported); the step is "
              "abandoned");
  }
  EXPECT_EQ(aggregator_->GetRun("r")->open_rounds(), 0u);
  absl::Status late = Report("r", 9, 1, 1)->Get().status();
  EXPECT_EQ(late.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(late.message(),
            "step 9 of run r was abandoned: its round timed out after 1000 ms "
            "waiting for participants 1, 4 (3 of 5 reported); continue with "
            "another step");
  // Other steps are unaffected.
  EXPECT_EQ(Round("r", 10, {1, 1, 1, 1, 0}).total_norm(), 2);
  // The abandonment is stored: after a restart on the same store the late
  // report is refused the same way, instead of opening a new round.
  Start();
  auto after_restart = Report("r", 9, 1, 1);
  ASSERT_TRUE(after_restart->done());
  EXPECT_EQ(after_restart->Get().status(), late);
  EXPECT_EQ(aggregator_->GetRun("r")->open_rounds(), 0u);
}

// Active runs: open rounds or a report within active_window (10 minutes);
// a run whose training ended stops counting.
TEST_F(AggregatorTest, ActiveRunsAreThoseWithOpenRoundsOrRecentReports) {
  Register(MakeRun("a", 2));
  Register(MakeRun("b", 1));
  EXPECT_EQ(aggregator_->Stats().runs, 2u);
  EXPECT_EQ(aggregator_->Stats().active_runs, 0u);
  auto waiting = Report("a", 0, 0, 1);  // an open round
  EXPECT_EQ(aggregator_->Stats().active_runs, 1u);
  ASSERT_TRUE(Report("b", 0, 0, 4)->Get().ok());
  EXPECT_EQ(aggregator_->Stats().active_runs, 2u);
  clock_.Advance(absl::Minutes(10));
  // b's report is 10 minutes old; a still has its round open (no expiry
  // check has run).
  EXPECT_EQ(aggregator_->Stats().active_runs, 1u);
  ASSERT_TRUE(Report("a", 0, 1, 1)->Get().ok());
  EXPECT_EQ(aggregator_->Stats().active_runs, 1u);
  clock_.Advance(absl::Minutes(10));
  EXPECT_EQ(aggregator_->Stats().active_runs, 0u);
  EXPECT_EQ(aggregator_->Stats().runs, 2u);
}

TEST_F(AggregatorTest, LogsRunsRegisteredAndRoundsTimedOut) {
  InMemoryEventLog log;
  AggregatorOptions options = NoThread();
  options.log = &log;
  Start(options);
  Register(MakeRun("r", 3));
  // The same again: nothing new to log.
  ASSERT_FALSE(aggregator_->RegisterRun(MakeRun("r", 3))->created());
  auto a = Report("r", 4, 0, 1);
  clock_.Advance(absl::Milliseconds(1000));
  aggregator_->ExpireRounds();
  EXPECT_EQ(a->Get().status().code(), absl::StatusCode::kAborted);
  std::vector<std::string> lines = log.lines();
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_THAT(lines[0],
              MatchesRegex(".* level=info event=run_registered run=r "
                           "participants=3 norm_type=2 max_norm=[^ ]+ "
                           "clip_policy=static spike_rule=off"));
  EXPECT_THAT(lines[1],
              HasSubstr("level=warning event=round_timed_out run=r step=4 "
                        "why=\"its round timed out after 1000 ms waiting for "
                        "participants 1-2 (1 of 3 reported)\""));
}

// Commits like the memory store, but holds the round with one sequence number
// before committing it until Release(), and records the order of commits.
class HoldingStore final : public TelemetryStore {
 public:
  explicit HoldingStore(uint64_t hold_sequence)
      : hold_sequence_(hold_sequence) {}

  absl::Status PutRun(const RunRecord& run) override {
    return inner_.PutRun(run);
  }
  absl::Status FinishRun(const std::string& run_id,
                         int64_t finished_unix_micros) override {
    return inner_.FinishRun(run_id, finished_unix_micros);
  }
  absl::Status DeleteRun(const std::string& run_id) override {
    return inner_.DeleteRun(run_id);
  }
  absl::StatusOr<StoreIndex> LoadIndex() override { return inner_.LoadIndex(); }
  absl::StatusOr<std::vector<RoundRecord>> ReadRounds(
      const std::string& run_id, uint64_t from_step, uint64_t to_step,
      size_t limit, bool with_participants) override {
    return inner_.ReadRounds(run_id, from_step, to_step, limit,
                             with_participants);
  }
  absl::Status PutAbandonedStep(const AbandonedStep& step) override {
    return inner_.PutAbandonedStep(step);
  }
  void AppendRound(RoundRecord record, CommitCallback done) override {
    if (record.sequence == hold_sequence_) {
      held_.Notify();
      release_.WaitForNotification();
    }
    {
      absl::MutexLock lock(&mu_);
      committed_.push_back(record.sequence);
    }
    inner_.AppendRound(std::move(record), std::move(done));
  }
  absl::StatusOr<StoreContents> Load() override { return inner_.Load(); }
  absl::Status Flush() override { return inner_.Flush(); }

  void AwaitHeld() { held_.WaitForNotification(); }
  void Release() { release_.Notify(); }
  std::vector<uint64_t> committed() const {
    absl::MutexLock lock(&mu_);
    return committed_;
  }

 private:
  const uint64_t hold_sequence_;
  MemoryTelemetryStore inner_;
  absl::Notification held_;
  absl::Notification release_;
  mutable absl::Mutex mu_;
  std::vector<uint64_t> committed_ ABSL_GUARDED_BY(mu_);
};

// Rounds are decided in sequence order (each decision sees the rounds before
// it); the store must commit them in that order too, or a crash between two
// commits could keep a decision whose predecessor is lost, and the policy
// rebuilt from the stored history at restart would not be the one that
// decided.
TEST_F(AggregatorTest, RoundsReachTheStoreInTheOrderTheyWereDecided) {
  HoldingStore store(/*hold_sequence=*/1);
  auto created = Aggregator::Create(NoThread(), &store, &clock_);
  ASSERT_TRUE(created.ok()) << created.status();
  std::unique_ptr<Aggregator> aggregator = *std::move(created);
  ASSERT_TRUE(aggregator->RegisterRun(MakeRun("o", 1)).ok());
  Outcome first, second;
  std::thread deciding_first([&] {
    aggregator->Report(MakeReport("o", 10, 0, 1), absl::InfiniteFuture(),
                       first.Callback());
  });
  store.AwaitHeld();  // Step 10 (sequence 1) is decided, not yet committed.
  // Step 11 is decided after it; its Report returns without waiting, but its
  // round may reach the store only after step 10's.
  aggregator->Report(MakeReport("o", 11, 0, 4), absl::InfiniteFuture(),
                     second.Callback());
  EXPECT_FALSE(second.done());
  store.Release();
  deciding_first.join();
  ASSERT_TRUE(first.Get().ok());
  ASSERT_TRUE(second.Get().ok());
  EXPECT_EQ(second.Get()->total_norm(), 2);
  EXPECT_THAT(store.committed(), testing::ElementsAre(1u, 2u));
  EXPECT_TRUE(aggregator->Shutdown().ok());
}

// A trainer loop driven by callbacks: step 0's answer reports step 1 from
// inside the callback, whose round finalizes (and is stored) at once.
TEST_F(AggregatorTest, ACallbackMayReportTheNextStep) {
  Register(MakeRun("c", 1, 100.0));
  Outcome next;
  Outcome first;
  aggregator_->Report(MakeReport("c", 0, 0, 9), absl::InfiniteFuture(),
                      [&](absl::StatusOr<v1::RoundResult> result) {
                        first.Callback()(result);
                        aggregator_->Report(MakeReport("c", 1, 0, 16),
                                            absl::InfiniteFuture(),
                                            next.Callback());
                      });
  ASSERT_TRUE(first.Get().ok());
  EXPECT_EQ(first.Get()->total_norm(), 3);
  absl::StatusOr<v1::RoundResult> second = next.Wait();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->total_norm(), 4);
  absl::StatusOr<StoreContents> stored = store_.Load();
  ASSERT_TRUE(stored.ok());
  ASSERT_EQ(stored->rounds.size(), 2u);
  EXPECT_EQ(stored->rounds[0].sequence, 1u);
  EXPECT_EQ(stored->rounds[1].sequence, 2u);
}

TEST_F(AggregatorTest, DeadlinesOfAnsweredReportsDoNotAccumulate) {
  v1::RegisterRunRequest run = MakeRun("r", 2);
  run.mutable_config()->set_round_timeout_ms(3600 * 1000);
  Register(run);
  // One report that keeps waiting through everything below.
  auto waiting = Report("r", 1000000, 0, 1, clock_.Now() + absl::Minutes(30));
  // 10,000 rounds whose reports carry hour-long deadlines and are answered at
  // once: their deadlines must not pile up until they pass.
  for (uint64_t step = 0; step < 10000; ++step) {
    Report("r", step, 0, 1, clock_.Now() + absl::Hours(1));
    Report("r", step, 1, 1, clock_.Now() + absl::Hours(1));
  }
  EXPECT_LT(aggregator_->Stats().deadlines, 4096u);
  // The waiting report's own deadline survived the compactions.
  clock_.Advance(absl::Minutes(31));
  aggregator_->ExpireRounds();
  ASSERT_TRUE(waiting->done());
  EXPECT_EQ(waiting->Get().status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(
      waiting->Get().status().message(),
      HasSubstr("the deadline passed waiting for step 1000000 of run r"));
}

TEST_F(AggregatorTest, MissingListIsCompact) {
  v1::RegisterRunRequest run = MakeRun("big", 1000);
  Register(run);
  auto a = Report("big", 0, 3, 1);
  auto b = Report("big", 0, 500, 1);
  clock_.Advance(absl::Seconds(2));
  aggregator_->ExpireRounds();
  EXPECT_THAT(a->Get().status().message(),
              HasSubstr("waiting for participants 0-2, 4-499, 501-999 (2 of "
                        "1000 reported)"));
}

TEST_F(AggregatorTest, CallerDeadlineFailsOnlyThatCallerWhoMayRejoin) {
  Register(MakeRun("r", 3));
  auto patient = Report("r", 0, 0, 4);
  auto hasty = Report("r", 0, 1, 4, clock_.Now() + absl::Milliseconds(100));
  clock_.Advance(absl::Milliseconds(100));
  aggregator_->ExpireRounds();
  absl::Status s = hasty->Get().status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(s.message(),
            "the deadline passed waiting for step 0 of run r: missing "
            "participants 2 (2 of 3 reported); this report is kept, so "
            "retrying it rejoins the round");
  EXPECT_FALSE(patient->done());
  // A deadline already past fails at once, but the report still counts.
  auto past = Report("r", 0, 1, 4, clock_.Now());
  EXPECT_EQ(past->Get().status().code(), absl::StatusCode::kDeadlineExceeded);
  auto rejoin = Report("r", 0, 1, 4);
  auto last = Report("r", 0, 2, 1);
  ASSERT_TRUE(last->Get().ok());
  EXPECT_EQ(last->Get()->total_norm(), 3);
  EXPECT_TRUE(patient->Get().ok());
  EXPECT_TRUE(rejoin->Get().ok());
}

TEST_F(AggregatorTest, BadRequests) {
  Register(MakeRun("r", 2));
  absl::Status unknown = Report("nope", 0, 0, 1)->Get().status();
  EXPECT_EQ(unknown.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(unknown.message(),
            "run nope is not registered; register it with RegisterRun first");
  absl::Status bad_id = Report("a b", 0, 0, 1)->Get().status();
  EXPECT_EQ(bad_id.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_id.message(), HasSubstr("run_id has ' ' at position 1"));
  absl::Status range = Report("r", 0, 2, 1)->Get().status();
  EXPECT_EQ(range.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(range.message(),
            "participant 2 is out of range for run r; expected 0 to 1 (the run "
            "has 2 participants)");
  absl::Status negative = Report("r", 0, 1, -0.5)->Get().status();
  EXPECT_EQ(negative.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(negative.message(),
            "partial -0.5 of participant 1 for step 0 of run r is negative; "
            "expected >= 0, or NaN / +Inf for a non-finite gradient");
  EXPECT_EQ(Report("r", 0, 1, -kInf)->Get().status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(aggregator_->GetRun("r")->open_rounds(), 0u);
}

TEST_F(AggregatorTest, OpenRoundsAndRunsAreBounded) {
  AggregatorOptions options = NoThread();
  options.max_open_rounds_per_run = 2;
  options.max_runs = 2;
  options.max_participants = 8;
  Start(options);
  Register(MakeRun("r", 2));
  Report("r", 0, 0, 1);
  Report("r", 1, 0, 1);
  absl::Status third = Report("r", 2, 0, 1)->Get().status();
  EXPECT_EQ(third.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(third.message(),
            "run r already has 2 open rounds, its limit "
            "(max_open_rounds_per_run 2); step 2 cannot open another until "
            "one completes or times out");
  // Joining an open round is always possible.
  EXPECT_TRUE(Report("r", 1, 1, 1)->Get().ok());
  EXPECT_FALSE(Report("r", 2, 0, 1)->done());

  Register(MakeRun("s", 8));
  absl::StatusOr<v1::RegisterRunResponse> too_many =
      aggregator_->RegisterRun(MakeRun("t", 1));
  EXPECT_EQ(too_many.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(too_many.status().message(),
            "this coordinator already has 2 unfinished runs, its limit "
            "(max_runs 2); run t cannot be registered until a run is finished "
            "or deleted");
  // Re-registering an existing run is still fine at the limit.
  EXPECT_TRUE(aggregator_->RegisterRun(MakeRun("s", 8)).ok());
  absl::StatusOr<v1::RegisterRunResponse> wide =
      aggregator_->RegisterRun(MakeRun("s", 9));
  EXPECT_EQ(wide.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(wide.status().message(),
            "run config field participants is 9; this coordinator allows at "
            "most 8 (--max_participants)");
}

TEST_F(AggregatorTest, RegisterIsIdempotentAndNamesConfigDifferences) {
  absl::StatusOr<v1::RegisterRunResponse> first =
      aggregator_->RegisterRun(MakeRun("r", 2));
  ASSERT_TRUE(first.ok());
  EXPECT_TRUE(first->created());
  EXPECT_EQ(first->run().config().norm_type(), 2);  // Defaults filled.
  EXPECT_TRUE(first->run().config().clip_policy().has_static_clip());
  EXPECT_EQ(first->run().created_unix_micros(),
            absl::ToUnixMicros(clock_.Now()));
  clock_.Advance(absl::Seconds(5));
  v1::RegisterRunRequest same = MakeRun("r", 2);
  same.mutable_config()->set_norm_type(2.0);  // Explicit default: same.
  absl::StatusOr<v1::RegisterRunResponse> again =
      aggregator_->RegisterRun(same);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->created());
  EXPECT_TRUE(MessageDifferencer::Equals(again->run(), first->run()));

  v1::RegisterRunRequest other = MakeRun("r", 3, 2.5);
  absl::StatusOr<v1::RegisterRunResponse> diff =
      aggregator_->RegisterRun(other);
  EXPECT_EQ(diff.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(diff.status().message(),
            "run r is already registered with a different config (stored -> "
            "requested): max_norm: 1 -> 2.5; participants: 2 -> 3; register a "
            "new run id or repeat the stored config");
  EXPECT_EQ(store_.Load()->runs.size(), 1u);
}

TEST_F(AggregatorTest, ShutdownFailsWaitersAndLaterCalls) {
  Register(MakeRun("r", 2));
  std::vector<Outcome*> waiting;
  for (uint64_t step = 0; step < 10; ++step) {
    waiting.push_back(Report("r", step, 0, 1));
  }
  EXPECT_EQ(aggregator_->Stats().waiters, 10u);
  EXPECT_TRUE(aggregator_->Shutdown().ok());
  for (const auto& o : waiting) {
    EXPECT_EQ(o->Get().status().code(), absl::StatusCode::kUnavailable);
    EXPECT_EQ(o->Get().status().message(),
              "the coordinator is shutting down; retry against the restarted "
              "coordinator");
  }
  EXPECT_EQ(Report("r", 0, 1, 1)->Get().status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(aggregator_->RegisterRun(MakeRun("s", 1)).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(aggregator_->Watch("r", 0, nullptr).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_TRUE(aggregator_->Shutdown().ok());  // Idempotent.
}

// The policies' state is derived from stored history: an aggregator that
// restarts mid-run decides exactly as one that never stopped, also when rounds
// finish out of step order.
TEST_F(AggregatorTest, AdaptivePolicyStateSurvivesRestart) {
  v1::RegisterRunRequest run = MakeRun("z", 2, 100);
  v1::ZClip* z = run.mutable_config()->mutable_clip_policy()->mutable_zclip();
  z->set_alpha(0.5);
  z->set_z_threshold(2);
  z->set_warmup_steps(2);
  run.mutable_config()->mutable_spike_rule()->set_enabled(true);
  run.mutable_config()->mutable_spike_rule()->set_sigma(3);
  run.mutable_config()->mutable_spike_rule()->set_window(3);
  run.mutable_config()->mutable_spike_rule()->set_warmup_steps(2);
  // Totals 2, 2.2, 2.25, 2.4, 50, 2, 2.5 in finalization order: warm-up,
  // within the z threshold, above it (clipped), a spike (skipped), ...
  const std::vector<uint64_t> order = {3, 0, 1, 6, 2, 4, 5};
  const std::vector<double> squares = {4, 4.84, 5.0625, 5.76, 2500, 4, 6.25};
  std::vector<std::vector<double>> partials(7);
  for (size_t i = 0; i < order.size(); ++i)
    partials[order[i]] = {squares[i], 0};

  // Control: no restart.
  std::vector<v1::RoundResult> control;
  Register(run);
  for (uint64_t step : order)
    control.push_back(Round("z", step, partials[step]));

  // Same rounds with a restart after every round.
  MemoryTelemetryStore store;
  std::vector<v1::RoundResult> restarted;
  for (uint64_t step : order) {
    auto created = Aggregator::Create(NoThread(), &store, &clock_);
    ASSERT_TRUE(created.ok());
    if (step == order[0]) ASSERT_TRUE((*created)->RegisterRun(run).ok());
    std::vector<Outcome> outcomes(2);
    for (uint32_t i = 0; i < 2; ++i) {
      (*created)->Report(MakeReport("z", step, i, partials[step][i]),
                         absl::InfiniteFuture(), outcomes[i].Callback());
    }
    ASSERT_TRUE(outcomes[1].Get().ok());
    restarted.push_back(*outcomes[1].Get());
  }
  ASSERT_EQ(control.size(), restarted.size());
  std::vector<v1::Action> actions;
  for (size_t i = 0; i < control.size(); ++i) {
    EXPECT_TRUE(MessageDifferencer::Equals(control[i], restarted[i]))
        << control[i].ShortDebugString() << "\nvs\n"
        << restarted[i].ShortDebugString();
    actions.push_back(control[i].action());
  }
  // The sequence exercised every branch: warm-up, z-clip and a spike skip.
  EXPECT_EQ(control[1].effective_max_norm(), 100);  // Warm-up.
  EXPECT_DOUBLE_EQ(control[2].effective_max_norm(), 2.3);
  EXPECT_THAT(actions, testing::ElementsAre(v1::ACTION_NONE, v1::ACTION_NONE,
                                            v1::ACTION_NONE, v1::ACTION_CLIP,
                                            v1::ACTION_SKIP, v1::ACTION_NONE,
                                            v1::ACTION_CLIP));
  EXPECT_EQ(control[4].reason(), v1::REASON_SPIKE);
}

TEST_F(AggregatorTest, QueriesReadFinishedRounds) {
  Register(MakeRun("b", 1));
  Register(MakeRun("a", 2));
  for (uint64_t step = 0; step < 10; ++step) Round("a", step, {1, 3});
  Report("a", 11, 0, 1);
  v1::ListRunsResponse runs = aggregator_->ListRuns();
  ASSERT_EQ(runs.runs_size(), 2);
  EXPECT_EQ(runs.runs(0).run_id(), "a");
  EXPECT_EQ(runs.runs(0).rounds(), 10u);
  EXPECT_EQ(runs.runs(0).last_step(), 9u);
  EXPECT_EQ(runs.runs(0).open_rounds(), 1u);
  EXPECT_EQ(runs.runs(1).run_id(), "b");
  EXPECT_EQ(runs.runs(1).rounds(), 0u);

  v1::GetHistoryRequest h;
  h.set_run_id("a");
  h.set_from_step(2);
  h.set_max_points(4);
  absl::StatusOr<v1::GetHistoryResponse> history = aggregator_->GetHistory(h);
  ASSERT_TRUE(history.ok()) << history.status();
  ASSERT_EQ(history->buckets_size(), 4);  // Steps 2..9 in buckets of 2.
  EXPECT_EQ(history->buckets(0).first_step(), 2u);
  EXPECT_EQ(history->buckets(3).last_step(), 9u);
  EXPECT_EQ(history->buckets(0).max_norm(), 2);
  EXPECT_EQ(history->buckets(0).clipped(), 2u);
  h.set_to_step(1);
  EXPECT_EQ(aggregator_->GetHistory(h).status().code(),
            absl::StatusCode::kInvalidArgument);
  h.set_run_id("zz");
  EXPECT_EQ(aggregator_->GetHistory(h).status().code(),
            absl::StatusCode::kNotFound);

  v1::GetSummaryRequest s;
  s.set_run_id("a");
  absl::StatusOr<v1::GetSummaryResponse> summary = aggregator_->GetSummary(s);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->rounds(), 10u);
  EXPECT_EQ(summary->p50_norm(), 2);
  EXPECT_EQ(summary->clipped_fraction(), 1);
  ASSERT_EQ(summary->slowest_participants_size(), 2);
  // Nobody lagged (the clock stood still): ties list the lower id first.
  EXPECT_EQ(summary->slowest_participants(0).participant(), 0u);
  EXPECT_EQ(summary->slowest_participants(1).participant(), 1u);
  EXPECT_EQ(summary->slowest_participants(1).times_slowest(), 10u);
  EXPECT_EQ(aggregator_->GetRun("nope").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(aggregator_->GetRun("no/pe").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(AggregatorTest, WatchReplaysThenFollowsLiveRounds) {
  Register(MakeRun("r", 1));
  for (uint64_t step : {5, 1, 3, 0}) Round("r", step, {1});
  std::atomic<int> ready{0};
  auto watch = aggregator_->Watch("r", 1, [&] { ready++; });
  ASSERT_TRUE(watch.ok()) << watch.status();
  std::vector<uint64_t> steps;
  while (true) {
    absl::StatusOr<std::optional<v1::RoundResult>> next = (*watch)->Next();
    ASSERT_TRUE(next.ok());
    if (!next->has_value()) break;
    steps.push_back((*next)->step());
  }
  EXPECT_EQ(steps, (std::vector<uint64_t>{1, 3, 5}));  // Replay, step order.
  EXPECT_EQ(ready.load(), 0);
  Round("r", 4, {1});
  EXPECT_EQ(ready.load(), 1);
  Round("r", 0 + 100, {1});
  EXPECT_EQ(ready.load(), 1);  // Not re-armed until Next() comes up empty.
  absl::StatusOr<std::optional<v1::RoundResult>> next = (*watch)->Next();
  ASSERT_TRUE(next.ok() && next->has_value());
  EXPECT_EQ((*next)->step(), 4u);  // Live rounds in commit order.
  next = (*watch)->Next();
  ASSERT_TRUE(next.ok() && next->has_value());
  EXPECT_EQ((*next)->step(), 100u);
  next = (*watch)->Next();
  ASSERT_TRUE(next.ok());
  EXPECT_FALSE(next->has_value());
  aggregator_->Shutdown().IgnoreError();
  EXPECT_EQ(ready.load(), 2);
  EXPECT_EQ((*watch)->Next().status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(AggregatorTest, FinishedRunOpensNoRoundsButAnswersFinalizedSteps) {
  InMemoryEventLog log;
  AggregatorOptions options = NoThread();
  options.log = &log;
  Start(options);
  Register(MakeRun("r", 2));
  const v1::RoundResult first = Round("r", 1, {3, 4});
  Outcome* waiting = Report("r", 2, 0, 1);  // participant 1 never comes
  clock_.Advance(absl::Seconds(1));

  absl::StatusOr<v1::FinishRunResponse> finished = aggregator_->FinishRun("r");
  ASSERT_TRUE(finished.ok()) << finished.status();
  EXPECT_TRUE(finished->run().finished());
  EXPECT_EQ(finished->run().finished_unix_micros(),
            absl::ToUnixMicros(clock_.Now()));
  EXPECT_EQ(finished->run().rounds(), 1u);
  EXPECT_EQ(finished->run().open_rounds(), 0u);
  EXPECT_EQ(finished->abandoned_rounds(), 1u);
  // The waiting report learns its round will never complete.
  EXPECT_EQ(waiting->Get().status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(waiting->Get().status().message(), HasSubstr("was finished"));

  // A late report of a finalized step still gets its result ...
  absl::StatusOr<v1::RoundResult> late = Report("r", 1, 1, 4)->Get();
  ASSERT_TRUE(late.ok()) << late.status();
  EXPECT_TRUE(MessageDifferencer::Equals(*late, first));
  // ... the abandoned one says so, and a new step is refused.
  EXPECT_EQ(Report("r", 2, 1, 1)->Get().status().code(),
            absl::StatusCode::kFailedPrecondition);
  absl::Status fresh = Report("r", 3, 0, 1)->Get().status();
  EXPECT_EQ(fresh.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(fresh.message(),
            "run r is finished (FinishRun) and opens no new rounds; step 3 was "
            "never finalized");
  // Registering it again is refused; finishing it again changes nothing.
  EXPECT_EQ(aggregator_->RegisterRun(MakeRun("r", 2)).status().code(),
            absl::StatusCode::kFailedPrecondition);
  clock_.Advance(absl::Seconds(1));
  absl::StatusOr<v1::FinishRunResponse> again = aggregator_->FinishRun("r");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->run().finished_unix_micros(),
            finished->run().finished_unix_micros());
  EXPECT_EQ(again->abandoned_rounds(), 0u);
  EXPECT_EQ(aggregator_->FinishRun("nope").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_THAT(log.lines(), testing::Contains(MatchesRegex(
                               ".*event=run_finished run=r rounds=1 "
                               "abandoned_rounds=1")));

  // All of it survives a restart.
  Start(options);
  absl::StatusOr<v1::RunInfo> info = aggregator_->GetRun("r");
  ASSERT_TRUE(info.ok());
  EXPECT_TRUE(info->finished());
  EXPECT_EQ(info->finished_unix_micros(),
            finished->run().finished_unix_micros());
  EXPECT_EQ(Report("r", 3, 0, 1)->Get().status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Report("r", 1, 0, 3)->Get().ok());
}

TEST_F(AggregatorTest, FinishedRunsNeitherCountTowardMaxRunsNorAsActive) {
  AggregatorOptions options = NoThread();
  options.max_runs = 1;
  Start(options);
  Register(MakeRun("first", 1));
  ASSERT_TRUE(Report("first", 0, 0, 1)->Get().ok());
  EXPECT_EQ(aggregator_->Stats().active_runs, 1u);
  EXPECT_EQ(aggregator_->RegisterRun(MakeRun("second", 1)).status().code(),
            absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(aggregator_->FinishRun("first").ok());
  EXPECT_EQ(aggregator_->Stats().active_runs, 0u);
  Register(MakeRun("second", 1));
  EXPECT_EQ(aggregator_->Stats().runs, 2u);
  EXPECT_EQ(aggregator_->RegisterRun(MakeRun("third", 1)).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST_F(AggregatorTest, WatchOfAFinishedRunEndsAfterItsLastRound) {
  MemoryTelemetryStore manual(MemoryTelemetryStore::CommitMode::kManual);
  auto created = Aggregator::Create(NoThread(), &manual, &clock_);
  ASSERT_TRUE(created.ok());
  std::unique_ptr<Aggregator> aggregator = *std::move(created);
  ASSERT_TRUE(aggregator->RegisterRun(MakeRun("r", 1)).ok());
  Outcome first, second;
  aggregator->Report(MakeReport("r", 0, 0, 1), absl::InfiniteFuture(),
                     first.Callback());
  manual.CommitPending();
  std::atomic<int> ready{0};
  auto watch = aggregator->Watch("r", 0, [&] { ready++; });
  ASSERT_TRUE(watch.ok());
  // Step 1 is finalized but not committed when the run is finished.
  aggregator->Report(MakeReport("r", 1, 0, 2), absl::InfiniteFuture(),
                     second.Callback());
  ASSERT_TRUE(aggregator->FinishRun("r").ok());
  auto next = (*watch)->Next();
  ASSERT_TRUE(next.ok() && next->has_value());
  EXPECT_EQ((*next)->step(), 0u);
  next = (*watch)->Next();
  ASSERT_TRUE(next.ok());
  EXPECT_FALSE(next->has_value());  // Step 1 may still come.
  manual.CommitPending();
  EXPECT_EQ(ready.load(), 1);
  next = (*watch)->Next();
  ASSERT_TRUE(next.ok() && next->has_value());
  EXPECT_EQ((*next)->step(), 1u);
  EXPECT_EQ((*watch)->Next().status().code(), absl::StatusCode::kOutOfRange);
  // A watch started on a finished run replays and ends.
  auto later = aggregator->Watch("r", 1, [] {});
  ASSERT_TRUE(later.ok());
  next = (*later)->Next();
  ASSERT_TRUE(next.ok() && next->has_value());
  EXPECT_EQ((*next)->step(), 1u);
  EXPECT_EQ((*later)->Next().status().code(), absl::StatusCode::kOutOfRange);
  watch->reset();
  later->reset();
}

TEST_F(AggregatorTest, DeleteRunTakesItsHistoryAndFreesItsId) {
  InMemoryEventLog log;
  AggregatorOptions options = NoThread();
  options.log = &log;
  Start(options);
  Register(MakeRun("gone", 2));
  Register(MakeRun("kept", 1));
  Round("gone", 1, {1, 1});
  Round("gone", 2, {1, 1});
  Round("kept", 1, {2});
  Outcome* waiting = Report("gone", 3, 0, 1);
  std::atomic<int> ready{0};
  auto watch = aggregator_->Watch("gone", 10, [&] { ready++; });
  ASSERT_TRUE(watch.ok());
  ASSERT_TRUE((*watch)->Next().ok());  // Nothing yet: armed.

  absl::StatusOr<v1::DeleteRunResponse> deleted =
      aggregator_->DeleteRun("gone");
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_EQ(deleted->rounds(), 2u);
  EXPECT_EQ(waiting->Get().status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(ready.load(), 1);
  EXPECT_EQ((*watch)->Next().status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(aggregator_->GetRun("gone").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(Report("gone", 1, 0, 1)->Get().status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(aggregator_->DeleteRun("gone").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(aggregator_->ListRuns().runs_size(), 1);
  EXPECT_THAT(log.lines(),
              testing::Contains(MatchesRegex(
                  ".*event=run_deleted run=gone rounds=2 cause=request")));

  // The id is free: a new run with that id starts empty, and the old watch
  // does not follow it.
  Register(MakeRun("gone", 1));
  Round("gone", 1, {5});
  EXPECT_EQ((*watch)->Next().status().code(), absl::StatusCode::kNotFound);
  watch->reset();
  // Nothing of the old run comes back after a restart.
  Start(options);
  absl::StatusOr<v1::RunInfo> info = aggregator_->GetRun("gone");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->rounds(), 1u);
  EXPECT_EQ(info->config().participants(), 1u);
  EXPECT_EQ(aggregator_->GetRun("kept")->rounds(), 1u);
}

TEST_F(AggregatorTest, RetentionDeletesRunsFinishedLongEnoughAgo) {
  InMemoryEventLog log;
  AggregatorOptions options = NoThread();
  options.log = &log;
  options.retain_finished_runs = absl::Hours(24);
  options.retention_interval = absl::ZeroDuration();
  Start(options);
  Register(MakeRun("old", 1));
  Register(MakeRun("recent", 1));
  Register(MakeRun("running", 1));
  for (const char* run : {"old", "recent", "running"}) Round(run, 0, {1});
  ASSERT_TRUE(aggregator_->FinishRun("old").ok());
  clock_.Advance(absl::Hours(20));
  ASSERT_TRUE(aggregator_->FinishRun("recent").ok());
  EXPECT_EQ(aggregator_->ApplyRetention(), 0);  // "old" is 20 h finished.
  clock_.Advance(absl::Hours(4));
  EXPECT_EQ(aggregator_->ApplyRetention(), 1);
  EXPECT_EQ(aggregator_->GetRun("old").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(aggregator_->GetRun("recent").ok());
  clock_.Advance(absl::Hours(100));
  EXPECT_EQ(aggregator_->ApplyRetention(), 1);
  // A run that is not finished is never deleted, however old.
  EXPECT_TRUE(aggregator_->GetRun("running").ok());
  EXPECT_THAT(log.lines(),
              testing::Contains(MatchesRegex(
                  ".*event=run_deleted run=old rounds=1 cause=retention")));
  Start(options);
  EXPECT_EQ(aggregator_->ListRuns().runs_size(), 1);
}

TEST_F(AggregatorTest, RetentionThreadDeletesInTheBackground) {
  AggregatorOptions options;
  options.expiry_interval = absl::ZeroDuration();
  options.retain_finished_runs = absl::Hours(1);
  options.retention_interval = absl::Milliseconds(5);
  Start(options);
  Register(MakeRun("r", 1));
  Round("r", 0, {1});
  ASSERT_TRUE(aggregator_->FinishRun("r").ok());
  clock_.Advance(absl::Hours(2));
  for (absl::Time until = absl::Now() + absl::Seconds(10);
       aggregator_->GetRun("r").ok() && absl::Now() < until;) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(aggregator_->GetRun("r").status().code(),
            absl::StatusCode::kNotFound);
}

// Exact partials: the same gradients split into 2 jobs or 3 give the same
// total bits, marked exact; a participant with only a double makes it fp64.
TEST_F(AggregatorTest, ExactPartialsGiveTheSameTotalForAnyJobSplit) {
  // The 1-norm, where the total is the sum itself (a square root would hide
  // the last bits).
  for (const char* run : {"two", "three", "mixed"}) {
    v1::RegisterRunRequest request =
        MakeRun(run, std::string(run) == "three" ? 3 : 2);
    request.mutable_config()->set_norm_type(1);
    Register(request);
  }
  const double big = std::ldexp(1.0, 53);
  auto exact_report = [&](const std::string& run, uint32_t participant,
                          std::vector<double> grads) {
    ExactSum sum;
    for (double g : grads) sum.AddAbs(g);
    v1::ReportRequest r = MakeReport(run, 0, participant, sum.RoundToDouble());
    r.set_exact_partial(sum.Encode());
    outcomes_.push_back(std::make_unique<Outcome>());
    aggregator_->Report(r, absl::InfiniteFuture(),
                        outcomes_.back()->Callback());
    return outcomes_.back().get();
  };
  // Two jobs: 2^53 + 1 (as a double, 2^53: the one is lost) and 1. Three
  // jobs: 1, 2^53, 1.
  exact_report("two", 0, {big, 1.0});
  Outcome* two = exact_report("two", 1, {-1.0});
  exact_report("three", 0, {1.0});
  exact_report("three", 1, {-big});
  Outcome* three = exact_report("three", 2, {1.0});
  absl::StatusOr<v1::RoundResult> a = two->Get(), b = three->Get();
  ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
  EXPECT_TRUE(a->exact());
  EXPECT_TRUE(b->exact());
  EXPECT_EQ(a->total_norm(), big + 2);
  EXPECT_EQ(b->total_norm(), big + 2);
  // Re-sending different exact bytes for the same partial is a conflict.
  exact_report("mixed", 0, {big, 1.0});
  Outcome* conflict = exact_report("mixed", 0, {big, 1.0, 1e-200});
  EXPECT_EQ(conflict->Get().status().code(), absl::StatusCode::kAlreadyExists);
  // A participant with only a double: fp64, and the lost one shows.
  Outcome* mixed = Report("mixed", 0, 1, 1.0);
  absl::StatusOr<v1::RoundResult> c = mixed->Get();
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->exact());
  EXPECT_EQ(c->total_norm(), big);
}

// Long ranges are bucketed from the history index's block summaries plus the
// partial blocks at the ends; that must give what bucketing every round
// gives, before and after a restart (the index then comes from the store).
TEST_F(AggregatorTest, HistoryFromTheIndexEqualsHistoryFromEveryRound) {
  Register(MakeRun("long", 1));
  constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  for (uint64_t step = 0; step < 3000; ++step) {
    if (step % 97 == 5) continue;  // Steps without a round.
    const double total = step % 501 == 7 ? kNaN : 1.0 + (step * 7919 % 113);
    Round("long", step, {total * total});
    clock_.Advance(absl::Milliseconds(1));
  }
  auto expect_same = [&](uint64_t from, uint64_t to, uint32_t max_points) {
    SCOPED_TRACE(absl::StrCat("steps ", from, "..", to, " in ", max_points));
    v1::GetHistoryRequest request;
    request.set_run_id("long");
    request.set_from_step(from);
    request.set_to_step(to);
    request.set_max_points(max_points);
    absl::StatusOr<v1::GetHistoryResponse> indexed =
        aggregator_->GetHistory(request);
    ASSERT_TRUE(indexed.ok()) << indexed.status();
    absl::StatusOr<std::vector<RoundRecord>> rounds =
        store_.ReadRounds("long", from, to == 0 ? 2999 : to, 0, false);
    ASSERT_TRUE(rounds.ok());
    std::vector<const RoundRecord*> pointers;
    for (const RoundRecord& r : *rounds) pointers.push_back(&r);
    v1::GetHistoryResponse every = BuildHistory(
        pointers, StepRange{from, to == 0 ? 2999 : to}, max_points);
    ASSERT_EQ(indexed->buckets_size(), every.buckets_size());
    EXPECT_LE(indexed->buckets_size(), max_points == 0 ? 3000 : max_points);
    EXPECT_EQ(indexed->downsampled(), every.downsampled());
    for (int i = 0; i < every.buckets_size(); ++i) {
      v1::HistoryBucket a = indexed->buckets(i), b = every.buckets(i);
      // Sums in another grouping: the mean may differ in its last bits.
      if (std::isnan(b.mean_norm())) {
        EXPECT_TRUE(std::isnan(a.mean_norm()));
      } else {
        EXPECT_NEAR(a.mean_norm(), b.mean_norm(), 1e-12 * b.mean_norm());
      }
      a.clear_mean_norm();
      b.clear_mean_norm();
      EXPECT_EQ(a.SerializeAsString(), b.SerializeAsString())
          << a.DebugString() << " vs " << b.DebugString();
    }
  };
  for (int pass = 0; pass < 2; ++pass) {
    expect_same(0, 0, 10);      // Whole blocks only.
    expect_same(37, 2900, 7);   // Partial blocks at both ends.
    expect_same(100, 2999, 1);  // One bucket.
    expect_same(10, 100, 1);    // No whole block.
    expect_same(0, 0, 1000);    // Narrow buckets: from the rounds.
    expect_same(0, 0, 0);       // A bucket per round.
    Start();                    // The index again, from the store.
  }
}

TEST_F(AggregatorTest, RestartKeepsOnlyTheIndexAndReadsRoundsBackWhenAsked) {
  Register(MakeRun("r", 2));
  std::vector<v1::RoundResult> before;
  for (uint64_t step = 0; step < 5; ++step) {
    before.push_back(Round("r", step, {1.0 + step, 2.0}));
  }
  EXPECT_EQ(aggregator_->Stats().rounds_in_memory, 5u);
  Start();
  EXPECT_EQ(aggregator_->Stats().rounds_in_memory, 0u);
  absl::StatusOr<v1::RunInfo> info = aggregator_->GetRun("r");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->rounds(), 5u);
  EXPECT_EQ(info->last_step(), 4u);
  // History and summary read the store.
  v1::GetHistoryRequest history;
  history.set_run_id("r");
  absl::StatusOr<v1::GetHistoryResponse> buckets =
      aggregator_->GetHistory(history);
  ASSERT_TRUE(buckets.ok());
  ASSERT_EQ(buckets->buckets_size(), 5);
  EXPECT_EQ(buckets->buckets(3).last_norm(), before[3].total_norm());
  v1::GetSummaryRequest summary;
  summary.set_run_id("r");
  summary.set_from_step(1);
  summary.set_to_step(3);
  EXPECT_EQ(aggregator_->GetSummary(summary)->rounds(), 3u);
  EXPECT_EQ(aggregator_->Stats().rounds_in_memory, 0u);
  // A late duplicate reads its round back, once.
  absl::StatusOr<v1::RoundResult> late = Report("r", 2, 1, 2.0)->Get();
  ASSERT_TRUE(late.ok()) << late.status();
  EXPECT_TRUE(MessageDifferencer::Equals(*late, before[2]));
  EXPECT_EQ(aggregator_->Stats().rounds_in_memory, 1u);
  EXPECT_TRUE(Report("r", 2, 0, 3.0)->Get().ok());
  EXPECT_EQ(Report("r", 3, 0, 9.0)->Get().status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(aggregator_->Stats().rounds_in_memory, 2u);
  // New rounds go on after the stored ones.
  const v1::RoundResult next = Round("r", 5, {1, 1});
  EXPECT_EQ(aggregator_->GetRun("r")->rounds(), 6u);
  EXPECT_EQ(aggregator_->GetRun("r")->last_step(), 5u);
  EXPECT_EQ(next.step(), 5u);
}

TEST_F(AggregatorTest, WatchReplaysStoredRoundsInChunksThenLiveOnesOnce) {
  Register(MakeRun("r", 1));
  constexpr uint64_t kStored = 600;  // More than two of the replay's chunks.
  for (uint64_t step = 0; step < kStored; ++step) Round("r", step, {1});
  Start();
  Round("r", kStored, {1});  // Finalized since start, before the watch.
  auto watch = aggregator_->Watch("r", 10, [] {});
  ASSERT_TRUE(watch.ok());
  std::vector<uint64_t> steps;
  for (int i = 0; i < 300; ++i) {
    auto next = (*watch)->Next();
    ASSERT_TRUE(next.ok() && next->has_value());
    steps.push_back((*next)->step());
  }
  // Rounds committed while the replay is under way come live, not twice.
  Round("r", kStored + 1, {1});
  Round("r", 5, {1});
  while (true) {
    auto next = (*watch)->Next();
    ASSERT_TRUE(next.ok());
    if (!next->has_value()) break;
    steps.push_back((*next)->step());
  }
  std::vector<uint64_t> expected;
  for (uint64_t step = 10; step <= kStored; ++step) expected.push_back(step);
  expected.push_back(kStored + 1);
  EXPECT_EQ(steps, expected);  // Step 5 is below from_step.
  watch->reset();
}

TEST_F(AggregatorTest, ConcurrentParticipantsAgree) {
  constexpr uint32_t kParticipants = 8;
  constexpr uint64_t kSteps = 40;
  Register(MakeRun("r", kParticipants));
  std::vector<std::vector<Outcome>> outcomes(kSteps);
  for (auto& o : outcomes) o = std::vector<Outcome>(kParticipants);
  std::vector<std::thread> threads;
  for (uint32_t p = 0; p < kParticipants; ++p) {
    threads.emplace_back([&, p] {
      for (uint64_t step = 0; step < kSteps; ++step) {
        aggregator_->Report(MakeReport("r", step, p, 0.125 * (p + step)),
                            absl::InfiniteFuture(),
                            outcomes[step][p].Callback());
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (uint64_t step = 0; step < kSteps; ++step) {
    double sum = 0;
    for (uint32_t p = 0; p < kParticipants; ++p) sum += 0.125 * (p + step);
    for (uint32_t p = 0; p < kParticipants; ++p) {
      absl::StatusOr<v1::RoundResult> r = outcomes[step][p].Wait();
      ASSERT_TRUE(r.ok()) << r.status();
      EXPECT_EQ(r->total_norm(), std::sqrt(sum));
      EXPECT_TRUE(MessageDifferencer::Equals(*r, *outcomes[step][0].Wait()));
    }
  }
}

TEST_F(AggregatorTest, ExpiryThreadTimesOutRoundsOnItsOwn) {
  AggregatorOptions options;
  options.expiry_interval = absl::Milliseconds(5);
  auto created = Aggregator::Create(options, &store_, Clock::Real());
  ASSERT_TRUE(created.ok());
  v1::RegisterRunRequest run = MakeRun("r", 2);
  run.mutable_config()->set_round_timeout_ms(20);
  ASSERT_TRUE((*created)->RegisterRun(run).ok());
  Outcome o;
  (*created)->Report(MakeReport("r", 0, 0, 1), absl::InfiniteFuture(),
                     o.Callback());
  EXPECT_EQ(o.Wait().status().code(), absl::StatusCode::kAborted);
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
