#include "server/store/telemetry_store_test_suite.h"

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"

namespace gradnorm {
namespace server {

using ::google::protobuf::util::MessageDifferencer;
using ::testing::HasSubstr;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

RoundRecord MakeRoundRecord(const std::string& run_id, uint64_t step,
                            uint64_t sequence, double total, int participants) {
  RoundRecord r;
  r.sequence = sequence;
  v1::RoundResult& res = r.result;
  res.set_run_id(run_id);
  res.set_step(step);
  res.set_total_norm(total);
  res.set_clip_coef(std::isfinite(total) && total > 1 ? 1 / (total + 1e-6) : 1);
  res.set_action(!std::isfinite(total) ? v1::ACTION_SKIP
                 : total > 1           ? v1::ACTION_CLIP
                                       : v1::ACTION_NONE);
  res.set_reason(!std::isfinite(total) ? v1::REASON_NONFINITE
                 : total > 1           ? v1::REASON_ABOVE_MAX_NORM
                                       : v1::REASON_WITHIN_MAX_NORM);
  res.set_reason_detail(absl::StrCat("detail of step ", step));
  res.set_effective_max_norm(1);
  res.set_arrival_spread_seconds(0.25 * participants);
  res.set_slowest_participant(participants - 1);
  res.set_finalized_unix_micros(1700000000000000 + step);
  res.set_exact(step % 2 == 0);
  for (int i = 0; i < participants; ++i) {
    ParticipantRecord p;
    p.partial = i == 1 && !std::isfinite(total) ? total : 0.5 * i + step;
    p.arrival_offset_seconds = 0.25 * i;
    p.num_elements = 1000 + i;
    r.participants.push_back(p);
  }
  return r;
}

absl::Status AppendAndWait(TelemetryStore* store, RoundRecord record) {
  absl::Mutex mu;
  bool done = false;
  absl::Status result;
  store->AppendRound(std::move(record), [&](absl::Status status) {
    absl::MutexLock lock(&mu);
    result = status;
    done = true;
  });
  absl::MutexLock lock(&mu);
  mu.Await(absl::Condition(&done));
  return result;
}

namespace {

std::string FreshDir(const std::string& test_name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  std::string dir = absl::StrCat(tmp ? tmp : "/tmp", "/", test_name);
  std::error_code error;
  std::filesystem::remove_all(dir, error);
  EXPECT_TRUE(std::filesystem::create_directories(dir, error))
      << dir << ": " << error.message();
  return dir;
}

std::unique_ptr<TelemetryStore> Open(const TelemetryStoreFactory& factory) {
  const testing::TestInfo* info =
      testing::UnitTest::GetInstance()->current_test_info();
  std::string name = absl::StrCat(factory.name, "_", info->name());
  for (char& c : name) {
    if (c == '/') c = '_';
  }
  return factory.open(FreshDir(name));
}

RunRecord MakeRun(const std::string& id, uint32_t participants) {
  RunRecord run;
  run.run_id = id;
  run.config.set_norm_type(2);
  run.config.set_max_norm(1);
  run.config.set_participants(participants);
  run.config.mutable_clip_policy()->mutable_zclip()->set_alpha(0.9);
  run.config.set_round_timeout_ms(1234);
  run.created_unix_micros = 1700000000123456;
  return run;
}

void ExpectSameDouble(double a, double b) {
  if (std::isnan(a)) {
    EXPECT_TRUE(std::isnan(b)) << b;
  } else {
    EXPECT_EQ(a, b);
  }
}

void ExpectSameRound(const RoundRecord& a, const RoundRecord& b) {
  EXPECT_EQ(a.sequence, b.sequence);
  v1::RoundResult ra = a.result, rb = b.result;
  ExpectSameDouble(ra.total_norm(), rb.total_norm());
  ra.clear_total_norm();
  rb.clear_total_norm();
  EXPECT_TRUE(MessageDifferencer::Equals(ra, rb))
      << ra.ShortDebugString() << "\nvs\n"
      << rb.ShortDebugString();
  ASSERT_EQ(a.participants.size(), b.participants.size());
  for (size_t i = 0; i < a.participants.size(); ++i) {
    ExpectSameDouble(a.participants[i].partial, b.participants[i].partial);
    EXPECT_EQ(a.participants[i].arrival_offset_seconds,
              b.participants[i].arrival_offset_seconds);
    EXPECT_EQ(a.participants[i].num_elements, b.participants[i].num_elements);
  }
}

TEST_P(TelemetryStoreTest, EmptyStoreLoadsNothing) {
  std::unique_ptr<TelemetryStore> store = Open(GetParam());
  absl::StatusOr<StoreContents> contents = store->Load();
  ASSERT_TRUE(contents.ok()) << contents.status();
  EXPECT_TRUE(contents->runs.empty());
  EXPECT_TRUE(contents->rounds.empty());
  EXPECT_TRUE(store->Flush().ok());
}

TEST_P(TelemetryStoreTest, RunsRoundTripInIdOrder) {
  std::unique_ptr<TelemetryStore> store = Open(GetParam());
  ASSERT_TRUE(store->PutRun(MakeRun("zeta", 3)).ok());
  ASSERT_TRUE(store->PutRun(MakeRun("alpha", 2)).ok());
  absl::Status again = store->PutRun(MakeRun("alpha", 2));
  EXPECT_EQ(again.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(again.message(), HasSubstr("alpha"));

  absl::StatusOr<StoreContents> contents = store->Load();
  ASSERT_TRUE(contents.ok()) << contents.status();
  ASSERT_EQ(contents->runs.size(), 2u);
  EXPECT_EQ(contents->runs[0].run_id, "alpha");
  EXPECT_EQ(contents->runs[1].run_id, "zeta");
  EXPECT_TRUE(MessageDifferencer::Equals(contents->runs[1].config,
                                         MakeRun("zeta", 3).config));
  EXPECT_EQ(contents->runs[0].created_unix_micros, 1700000000123456);
}

TEST_P(TelemetryStoreTest, RoundsRoundTripInFinalizationOrder) {
  std::unique_ptr<TelemetryStore> store = Open(GetParam());
  ASSERT_TRUE(store->PutRun(MakeRun("b", 3)).ok());
  ASSERT_TRUE(store->PutRun(MakeRun("a", 3)).ok());
  // Finalized out of step order: sequence, not step, orders the replay.
  std::vector<RoundRecord> records = {
      MakeRoundRecord("b", 7, 1, 2.5, 3),
      MakeRoundRecord("b", 3, 2, kNaN, 3),
      MakeRoundRecord("a", 9, 1, 0.5, 3),
      MakeRoundRecord("b", 5, 3, kInf, 3),
      MakeRoundRecord("b", 18446744073709551615ull, 4, 1.5, 3),
  };
  for (const RoundRecord& r : records) {
    ASSERT_TRUE(AppendAndWait(store.get(), r).ok());
  }
  ASSERT_TRUE(store->Flush().ok());
  absl::StatusOr<StoreContents> contents = store->Load();
  ASSERT_TRUE(contents.ok()) << contents.status();
  ASSERT_EQ(contents->rounds.size(), 5u);
  ExpectSameRound(contents->rounds[0], records[2]);
  ExpectSameRound(contents->rounds[1], records[0]);
  ExpectSameRound(contents->rounds[2], records[1]);
  ExpectSameRound(contents->rounds[3], records[3]);
  ExpectSameRound(contents->rounds[4], records[4]);
}

TEST_P(TelemetryStoreTest, IndexAndRangeReadsSeeWhatLoadSees) {
  std::unique_ptr<TelemetryStore> store = Open(GetParam());
  ASSERT_TRUE(store->PutRun(MakeRun("b", 3)).ok());
  ASSERT_TRUE(store->PutRun(MakeRun("a", 3)).ok());
  constexpr uint64_t kTop = 18446744073709551615ull;
  std::vector<RoundRecord> records = {
      MakeRoundRecord("b", 7, 1, 2.5, 3),
      MakeRoundRecord("b", kTop, 2, kNaN, 3),
      MakeRoundRecord("a", 9, 1, 0.5, 3),
      MakeRoundRecord("b", 3, 3, kInf, 3),
      MakeRoundRecord("b", uint64_t{1} << 63, 4, 1.5, 3),
  };
  for (const RoundRecord& r : records) {
    ASSERT_TRUE(AppendAndWait(store.get(), r).ok());
  }
  ASSERT_TRUE(store->PutAbandonedStep({"b", 5, "participant 1 missing"}).ok());
  absl::StatusOr<StoreIndex> index = store->LoadIndex();
  ASSERT_TRUE(index.ok()) << index.status();
  ASSERT_EQ(index->runs.size(), 2u);
  ASSERT_EQ(index->abandoned.size(), 1u);
  ASSERT_EQ(index->rounds.size(), 2u);
  const std::vector<IndexedRound>& b = index->rounds.at("b");
  ASSERT_EQ(b.size(), 4u);  // In sequence order.
  EXPECT_EQ(b[0].step, 7u);
  EXPECT_EQ(b[0].total_norm, 2.5);
  EXPECT_EQ(b[1].step, kTop);
  EXPECT_TRUE(std::isnan(b[1].total_norm));
  EXPECT_EQ(b[2].step, 3u);
  EXPECT_EQ(b[3].sequence, 4u);
  EXPECT_EQ(b[3].action, records[4].result.action());
  // What the history index summarizes, as stored.
  const size_t of_b[] = {0, 1, 3, 4};  // b's records, in sequence order.
  for (size_t i = 0; i < b.size(); ++i) {
    const v1::RoundResult& r = records[of_b[i]].result;
    EXPECT_EQ(b[i].reason, r.reason());
    EXPECT_EQ(b[i].effective_max_norm, r.effective_max_norm());
    EXPECT_EQ(b[i].arrival_spread_seconds, r.arrival_spread_seconds());
    EXPECT_EQ(b[i].finalized_unix_micros, r.finalized_unix_micros());
  }

  // Ranges in unsigned step order, across 2^63.
  auto steps = [&](uint64_t from, uint64_t to, size_t limit) {
    std::vector<uint64_t> out;
    absl::StatusOr<std::vector<RoundRecord>> rounds =
        store->ReadRounds("b", from, to, limit, true);
    EXPECT_TRUE(rounds.ok()) << rounds.status();
    if (rounds.ok()) {
      for (const RoundRecord& r : *rounds) out.push_back(r.result.step());
    }
    return out;
  };
  EXPECT_EQ(steps(0, kTop, 0),
            (std::vector<uint64_t>{3, 7, uint64_t{1} << 63, kTop}));
  EXPECT_EQ(steps(4, kTop, 2), (std::vector<uint64_t>{7, uint64_t{1} << 63}));
  EXPECT_EQ(steps(8, kTop - 1, 0), (std::vector<uint64_t>{uint64_t{1} << 63}));
  EXPECT_EQ(steps(7, 7, 1), (std::vector<uint64_t>{7}));
  EXPECT_TRUE(steps(8, 9, 0).empty());
  EXPECT_TRUE(steps(9, 8, 0).empty());
  absl::StatusOr<std::vector<RoundRecord>> one =
      store->ReadRounds("b", 7, 7, 1, true);
  ASSERT_TRUE(one.ok());
  ASSERT_EQ(one->size(), 1u);
  ExpectSameRound((*one)[0], records[0]);
  EXPECT_TRUE(store->ReadRounds("nobody", 0, kTop, 0, true)->empty());
  // Without participants: the same rounds, with none of their participants.
  absl::StatusOr<std::vector<RoundRecord>> bare =
      store->ReadRounds("b", 0, kTop, 0, false);
  ASSERT_TRUE(bare.ok()) << bare.status();
  ASSERT_EQ(bare->size(), 4u);
  for (const RoundRecord& r : *bare) EXPECT_TRUE(r.participants.empty());
  RoundRecord without = records[0];
  without.participants.clear();
  ExpectSameRound((*bare)[1], without);
}

TEST_P(TelemetryStoreTest, AbandonedStepsRoundTripInOrderOnce) {
  std::unique_ptr<TelemetryStore> store = Open(GetParam());
  ASSERT_TRUE(store->PutRun(MakeRun("b", 3)).ok());
  ASSERT_TRUE(store->PutRun(MakeRun("a", 3)).ok());
  ASSERT_TRUE(
      store->PutAbandonedStep({"b", 9, "participants 1, 2 missing"}).ok());
  ASSERT_TRUE(store->PutAbandonedStep({"a", 4, "participant 0 missing"}).ok());
  ASSERT_TRUE(store->PutAbandonedStep({"b", 2, "participant 2 missing"}).ok());
  // The same step again is a no-op (its first reason stays).
  ASSERT_TRUE(store->PutAbandonedStep({"b", 9, "other"}).ok());
  ASSERT_TRUE(store->Flush().ok());
  absl::StatusOr<StoreContents> contents = store->Load();
  ASSERT_TRUE(contents.ok()) << contents.status();
  ASSERT_EQ(contents->abandoned.size(), 3u);
  EXPECT_EQ(contents->abandoned[0].run_id, "a");
  EXPECT_EQ(contents->abandoned[0].step, 4u);
  EXPECT_EQ(contents->abandoned[1].step, 2u);
  EXPECT_EQ(contents->abandoned[2].run_id, "b");
  EXPECT_EQ(contents->abandoned[2].step, 9u);
  EXPECT_EQ(contents->abandoned[2].why, "participants 1, 2 missing");
  EXPECT_TRUE(contents->rounds.empty());
}

TEST_P(TelemetryStoreTest, FinishedRunsRoundTrip) {
  std::unique_ptr<TelemetryStore> store = Open(GetParam());
  ASSERT_TRUE(store->PutRun(MakeRun("done", 2)).ok());
  ASSERT_TRUE(store->PutRun(MakeRun("going", 2)).ok());
  ASSERT_TRUE(store->FinishRun("done", 1700000000999999).ok());
  absl::Status missing = store->FinishRun("never", 1);
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound) << missing;
  EXPECT_THAT(missing.message(), HasSubstr("never"));
  absl::StatusOr<StoreContents> contents = store->Load();
  ASSERT_TRUE(contents.ok()) << contents.status();
  ASSERT_EQ(contents->runs.size(), 2u);
  EXPECT_EQ(contents->runs[0].run_id, "done");
  EXPECT_EQ(contents->runs[0].finished_unix_micros, 1700000000999999);
  EXPECT_EQ(contents->runs[1].finished_unix_micros, 0);
}

TEST_P(TelemetryStoreTest, DeleteRunTakesItsRoundsAndAbandonedStepsOnly) {
  std::unique_ptr<TelemetryStore> store = Open(GetParam());
  ASSERT_TRUE(store->PutRun(MakeRun("gone", 2)).ok());
  ASSERT_TRUE(store->PutRun(MakeRun("kept", 2)).ok());
  ASSERT_TRUE(
      AppendAndWait(store.get(), MakeRoundRecord("gone", 1, 1, 2, 2)).ok());
  ASSERT_TRUE(
      AppendAndWait(store.get(), MakeRoundRecord("kept", 1, 1, 3, 2)).ok());
  ASSERT_TRUE(
      store->PutAbandonedStep({"gone", 2, "participant 1 missing"}).ok());
  ASSERT_TRUE(
      store->PutAbandonedStep({"kept", 2, "participant 0 missing"}).ok());
  ASSERT_TRUE(store->DeleteRun("gone").ok());
  EXPECT_EQ(store->DeleteRun("gone").code(), absl::StatusCode::kNotFound);
  absl::StatusOr<StoreContents> contents = store->Load();
  ASSERT_TRUE(contents.ok()) << contents.status();
  ASSERT_EQ(contents->runs.size(), 1u);
  EXPECT_EQ(contents->runs[0].run_id, "kept");
  ASSERT_EQ(contents->rounds.size(), 1u);
  EXPECT_EQ(contents->rounds[0].result.run_id(), "kept");
  ASSERT_EQ(contents->abandoned.size(), 1u);
  EXPECT_EQ(contents->abandoned[0].run_id, "kept");
  // The id is free again, with no trace of the old run.
  ASSERT_TRUE(store->PutRun(MakeRun("gone", 2)).ok());
  ASSERT_TRUE(
      AppendAndWait(store.get(), MakeRoundRecord("gone", 1, 1, 5, 2)).ok());
  EXPECT_TRUE(store->Flush().ok());
}

TEST_P(TelemetryStoreTest, DuplicateRoundIsRefused) {
  std::unique_ptr<TelemetryStore> store = Open(GetParam());
  ASSERT_TRUE(store->PutRun(MakeRun("r", 2)).ok());
  ASSERT_TRUE(
      AppendAndWait(store.get(), MakeRoundRecord("r", 1, 1, 2, 2)).ok());
  absl::Status dup =
      AppendAndWait(store.get(), MakeRoundRecord("r", 1, 2, 3, 2));
  EXPECT_EQ(dup.code(), absl::StatusCode::kAlreadyExists) << dup;
  EXPECT_EQ(store->Flush().code(), absl::StatusCode::kAlreadyExists);
  absl::StatusOr<StoreContents> contents = store->Load();
  ASSERT_TRUE(contents.ok()) << contents.status();
  ASSERT_EQ(contents->rounds.size(), 1u);
  EXPECT_EQ(contents->rounds[0].result.total_norm(), 2);
}

TEST_P(TelemetryStoreTest, ConcurrentAppendsAllCommitBeforeFlushReturns) {
  std::unique_ptr<TelemetryStore> store = Open(GetParam());
  ASSERT_TRUE(store->PutRun(MakeRun("r", 2)).ok());
  constexpr int kThreads = 4;
  constexpr int kPerThread = 50;
  std::atomic<int> ok{0};
  std::atomic<int> calls{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        uint64_t step = t * kPerThread + i;
        store->AppendRound(MakeRoundRecord("r", step, step + 1, 1.0 + i, 2),
                           [&](absl::Status s) {
                             calls++;
                             if (s.ok()) ok++;
                           });
      }
    });
  }
  for (std::thread& t : threads) t.join();
  ASSERT_TRUE(store->Flush().ok());
  EXPECT_EQ(calls.load(), kThreads * kPerThread);
  EXPECT_EQ(ok.load(), kThreads * kPerThread);
  absl::StatusOr<StoreContents> contents = store->Load();
  ASSERT_TRUE(contents.ok()) << contents.status();
  ASSERT_EQ(contents->rounds.size(), size_t{kThreads * kPerThread});
  for (size_t i = 0; i < contents->rounds.size(); ++i) {
    EXPECT_EQ(contents->rounds[i].sequence, i + 1);
  }
}

TEST_P(TelemetryStoreTest, CallbacksRunInAppendOrder) {
  std::unique_ptr<TelemetryStore> store = Open(GetParam());
  ASSERT_TRUE(store->PutRun(MakeRun("r", 1)).ok());
  absl::Mutex mu;
  std::vector<uint64_t> order;
  for (uint64_t step = 0; step < 20; ++step) {
    store->AppendRound(MakeRoundRecord("r", step, step + 1, 1, 1),
                       [&, step](absl::Status) {
                         absl::MutexLock lock(&mu);
                         order.push_back(step);
                       });
  }
  ASSERT_TRUE(store->Flush().ok());
  absl::MutexLock lock(&mu);
  ASSERT_EQ(order.size(), 20u);
  for (uint64_t i = 0; i < 20; ++i) EXPECT_EQ(order[i], i);
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
