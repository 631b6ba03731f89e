#include "server/aggregator.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <queue>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "server/history.h"
#include "server/number_format.h"
#include "server/round_policy.h"
#include "server/run_config.h"

namespace gradnorm {
namespace server {
namespace {

constexpr absl::string_view kShuttingDown =
    "the coordinator is shutting down; retry against the restarted "
    "coordinator";

bool SamePartial(double a, double b) {
  return (std::isnan(a) && std::isnan(b)) || a == b;
}

// "0-2, 5, 7-9": compact even when hundreds of participants are missing,
// and capped so that a message stays readable.
std::string FormatIds(const std::vector<uint32_t>& ids) {
  constexpr size_t kMaxItems = 16;
  std::vector<std::string> items;
  size_t i = 0;
  while (i < ids.size() && items.size() < kMaxItems) {
    size_t j = i;
    while (j + 1 < ids.size() && ids[j + 1] == ids[j] + 1) ++j;
    items.push_back(j == i ? absl::StrCat(ids[i])
                           : absl::StrCat(ids[i], "-", ids[j]));
    i = j + 1;
  }
  std::string out = absl::StrJoin(items, ", ");
  if (i < ids.size()) absl::StrAppend(&out, ", ... (", ids.size(), " in all)");
  return out;
}

std::string RoundName(absl::string_view run_id, uint64_t step) {
  return absl::StrCat("step ", step, " of run ", run_id);
}

using Call = std::pair<Aggregator::ReportCallback,
                       absl::StatusOr<v1::RoundResult>>;

class AggregatorImpl;

class WatchImpl final : public RoundWatch {
 public:
  WatchImpl(AggregatorImpl* aggregator, std::string run_id,
            uint64_t incarnation, uint64_t from_step,
            std::function<void()> on_ready)
      : aggregator_(aggregator),
        run_id_(std::move(run_id)),
        incarnation_(incarnation),
        from_step_(from_step),
        next_step_(from_step),
        on_ready_(std::move(on_ready)) {}
  ~WatchImpl() override;

  absl::StatusOr<std::optional<v1::RoundResult>> Next() override;

 private:
  friend class AggregatorImpl;
  AggregatorImpl* const aggregator_;
  const std::string run_id_;
  // Which registration of run_id_ this watch follows: a run deleted and
  // registered again is another run.
  const uint64_t incarnation_;
  const uint64_t from_step_;
  // The replay reads the store in chunks, without the aggregator's lock;
  // Next() is never called concurrently with itself, so these need none.
  static constexpr size_t kReplayChunk = 256;
  std::deque<v1::RoundResult> replay_buffer_;
  bool replay_read_all_ = false;
  // Guarded by the aggregator's mu_.
  bool replaying_ = true;
  uint64_t next_step_;
  size_t snapshot_ = 0;  // live_log entries committed before Watch().
  size_t live_pos_ = 0;
  bool armed_ = false;
  const std::function<void()> on_ready_;
};

class AggregatorImpl final : public Aggregator {
 public:
  AggregatorImpl(const AggregatorOptions& options, TelemetryStore* store,
                 Clock* clock)
      : options_(options), store_(store), clock_(clock) {}
  ~AggregatorImpl() override { Shutdown().IgnoreError(); }

  absl::Status Load();
  void StartExpiryThread();

  absl::StatusOr<v1::RegisterRunResponse> RegisterRun(
      const v1::RegisterRunRequest& request) override;
  void Report(const v1::ReportRequest& request, absl::Time deadline,
              ReportCallback done) override;
  void ExpireRounds() override;
  v1::ListRunsResponse ListRuns() const override;
  absl::StatusOr<v1::RunInfo> GetRun(absl::string_view run_id) const override;
  absl::StatusOr<v1::GetHistoryResponse> GetHistory(
      const v1::GetHistoryRequest& request) const override;
  absl::StatusOr<v1::GetSummaryResponse> GetSummary(
      const v1::GetSummaryRequest& request) const override;
  absl::StatusOr<std::unique_ptr<RoundWatch>> Watch(
      absl::string_view run_id, uint64_t from_step,
      std::function<void()> on_ready) override;
  absl::StatusOr<v1::FinishRunResponse> FinishRun(
      absl::string_view run_id) override;
  absl::StatusOr<v1::DeleteRunResponse> DeleteRun(
      absl::string_view run_id) override {
    return DeleteRun(run_id, "request");
  }
  int ApplyRetention() override;
  void StartRetentionThread();
  AggregatorStats Stats() const override;
  absl::Status Shutdown() override;

 private:
  friend class WatchImpl;

  struct Waiter {
    uint64_t id = 0;
    ReportCallback done;
  };

  struct OpenRound {
    absl::Time first_report;
    absl::Time deadline;
    std::vector<bool> reported;
    std::vector<double> partials;
    std::vector<absl::Time> arrivals;
    std::vector<uint64_t> num_elements;
    uint32_t count = 0;
    // Finalized: `record` is with the store, waiting for its commit.
    bool committing = false;
    RoundRecord record;
    std::vector<Waiter> waiters;
  };

  struct FinishedRound {
    RoundRecord record;
    // 0 for rounds loaded at start; else 1 + the index in Run::live_log.
    size_t live_index = 0;
  };

  struct Run {
    Run(RunRecord record, uint64_t incarnation)
        : info(std::move(record)), policy(info.config), incarnation(incarnation) {}
    // info.finished_unix_micros != 0 once the run is finished.
    RunRecord info;
    RoundPolicy policy;
    uint64_t next_sequence = 1;
    // Rounds finalized since start, and stored ones read back for a late
    // duplicate report; the others stay in the store.
    std::map<uint64_t, FinishedRound> finished;
    // Steps of the rounds stored before start, ascending.
    std::vector<uint64_t> stored_steps;
    // Finalized rounds in all, and the highest finalized step (valid when
    // rounds > 0).
    uint64_t rounds = 0;
    uint64_t last_step = 0;
    std::map<uint64_t, OpenRound> open;
    // Step -> why it was abandoned.
    std::map<uint64_t, std::string> abandoned;
    // Steps committed since start, in commit order.
    std::vector<uint64_t> live_log;
    std::set<WatchImpl*> watches;
    // When the run's last report arrived (InfinitePast: none since start).
    absl::Time last_report = absl::InfinitePast();
    const uint64_t incarnation;
    // Set while DeleteRun waits for the store: the run answers NOT_FOUND.
    bool deleting = false;

    bool is_finished() const { return info.finished_unix_micros != 0; }

    // Counts one more finalized round, of `step`.
    void CountRound(uint64_t step) {
      last_step = rounds == 0 ? step : std::max(last_step, step);
      ++rounds;
    }
  };

  // Below this many, expiries_ is never compacted.
  static constexpr size_t kMinExpiriesToCompact = 4096;

  // A deadline to check: a round's timeout (waiter_id 0) or one waiter's.
  struct Expiry {
    absl::Time when;
    std::string run_id;
    uint64_t step;
    uint64_t waiter_id;
    bool operator>(const Expiry& other) const { return when > other.when; }
  };

  struct Append {
    RoundRecord record;
  };

  // Queues `expiry`. An answered waiter's or a finished round's deadline stays
  // queued until it passes (a heap cannot drop it), so with long deadlines the
  // queue would grow with the report rate times the deadline; it is compacted
  // to what can still expire whenever it doubles.
  void PushExpiryLocked(Expiry expiry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether `expiry`'s round (and waiter) are still waiting.
  bool LiveExpiryLocked(const Expiry& expiry) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);

  absl::Status CheckRunLocked(absl::string_view run_id, const Run** run) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // CheckRunLocked for a change: UNAVAILABLE when shutting down.
  absl::StatusOr<Run*> MutableRunLocked(absl::string_view run_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Abandons the open round at `it` (not committing): its waiters get
  // `error`, the step is remembered with `why` and added to `abandoned`
  // for the store.
  void AbandonRoundLocked(Run& run, std::map<uint64_t, OpenRound>::iterator it,
                          const std::string& why, const absl::Status& error,
                          std::vector<Call>* calls,
                          std::vector<AbandonedStep>* abandoned)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Abandons every open round of `run` that is not being committed.
  void AbandonOpenRoundsLocked(Run& run, const std::string& why,
                               const absl::Status& error,
                               std::vector<Call>* calls,
                               std::vector<AbandonedStep>* abandoned)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The on_ready of every armed watch of `run` (disarmed): called after the
  // lock is released, they make the watches look at the run again.
  void WakeWatchesLocked(Run& run, std::vector<std::function<void()>>* ready)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // DeleteRun, logged with `cause` ("request" or "retention").
  absl::StatusOr<v1::DeleteRunResponse> DeleteRun(absl::string_view run_id,
                                                  absl::string_view cause);
  // Waits until every finalized round was handed to the store.
  void AwaitAppendsHandedOver() ABSL_LOCKS_EXCLUDED(mu_, append_mu_);
  // Handles a report, or sets *fetch (and leaves `done` alone) when its step
  // was stored before start and must be read back first (FetchRound).
  void ReportLocked(const v1::ReportRequest& request, absl::Time deadline,
                    ReportCallback& done, std::vector<Call>* calls,
                    bool* finalized, bool* fetch)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reads a round stored before start into its run's `finished`.
  absl::Status FetchRound(const std::string& run_id, uint64_t step)
      ABSL_LOCKS_EXCLUDED(mu_);
  // The run's committed rounds over [from_step, to_step] (to_step 0: the
  // last), read from the store; `*participants` is the run's.
  absl::StatusOr<std::vector<RoundRecord>> ReadRange(absl::string_view run_id,
                                                     uint64_t from_step,
                                                     uint64_t to_step,
                                                     bool with_participants,
                                                     uint32_t* participants) const
      ABSL_LOCKS_EXCLUDED(mu_);
  RoundRecord FinalizeLocked(Run& run, uint64_t step, OpenRound& round,
                             uint32_t last_participant)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnCommitted(const std::string& run_id, uint64_t step,
                   absl::Time appended, absl::Status status);
  // Queues a finalized round for the store; called in finalization order.
  void QueueAppendLocked(Append append) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Hands the queued rounds to the store in the order they were queued; one
  // thread at a time (another caller returns at once: the thread handing
  // over takes its rounds too).
  void HandAppendsToStore() ABSL_LOCKS_EXCLUDED(mu_, append_mu_);
  void SubmitAppend(Append append);
  absl::StatusOr<v1::RoundResult> OutcomeLocked(const Run& run,
                                                const RoundRecord& record) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  v1::RunInfo InfoLocked(const Run& run) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  std::vector<uint32_t> MissingLocked(const Run& run,
                                      const OpenRound& round) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);

  const AggregatorOptions options_;
  TelemetryStore* const store_;
  Clock* const clock_;

  // Serializes registrations so that a run is written to the store once.
  std::mutex register_mu_;

  mutable absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<Run>, std::less<>> runs_
      ABSL_GUARDED_BY(mu_);
  std::priority_queue<Expiry, std::vector<Expiry>, std::greater<Expiry>>
      expiries_ ABSL_GUARDED_BY(mu_);
  // expiries_ is compacted when it grows past this (see PushExpiryLocked).
  size_t compact_expiries_at_ ABSL_GUARDED_BY(mu_) = kMinExpiriesToCompact;
  // When the expiry thread checks next, and whether a deadline queued since
  // comes earlier (the thread then wakes at once to sleep until it).
  absl::Time expiry_wake_at_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  bool expiry_wake_now_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_waiter_id_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_incarnation_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t waiters_ ABSL_GUARDED_BY(mu_) = 0;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  // The first commit failure; the coordinator then refuses reports, since a
  // round it cannot store is a round it must not acknowledge.
  absl::Status store_error_ ABSL_GUARDED_BY(mu_);

  // Finalized rounds not yet handed to the store, in finalization (sequence)
  // order. Rounds are finalized under mu_ but handed over after it is
  // released (the store may commit inline and call OnCommitted, which takes
  // mu_); without this queue two threads could hand over rounds in the
  // opposite order, so a crash between their commits could leave a stored
  // history without a round that a stored decision already counted, and the
  // policy state reloaded at restart would differ from the one that decided.
  absl::Mutex append_mu_ ABSL_ACQUIRED_AFTER(mu_);
  std::deque<Append> appends_ ABSL_GUARDED_BY(append_mu_);
  bool handing_over_ ABSL_GUARDED_BY(append_mu_) = false;

  std::thread expiry_thread_;
  std::thread retention_thread_;
};

WatchImpl::~WatchImpl() {
  absl::MutexLock lock(&aggregator_->mu_);
  auto it = aggregator_->runs_.find(run_id_);
  if (it != aggregator_->runs_.end()) it->second->watches.erase(this);
}

absl::StatusOr<std::optional<v1::RoundResult>> WatchImpl::Next() {
  while (true) {
    // The replay: the stored rounds, read a chunk at a time outside the lock.
    if (replaying_ && replay_buffer_.empty() && !replay_read_all_) {
      absl::StatusOr<std::vector<RoundRecord>> chunk =
          aggregator_->store_->ReadRounds(run_id_, next_step_, UINT64_MAX,
                                          kReplayChunk,
                                          /*with_participants=*/false);
      if (!chunk.ok()) return chunk.status();
      if (chunk->size() < kReplayChunk ||
          chunk->back().result.step() == UINT64_MAX) {
        replay_read_all_ = true;
      } else {
        next_step_ = chunk->back().result.step() + 1;
      }
      for (RoundRecord& record : *chunk) {
        replay_buffer_.push_back(std::move(record.result));
      }
    }
    absl::MutexLock lock(&aggregator_->mu_);
    if (aggregator_->shutting_down_) {
      return absl::UnavailableError(kShuttingDown);
    }
    auto found = aggregator_->runs_.find(run_id_);
    if (found == aggregator_->runs_.end() ||
        found->second->incarnation != incarnation_ || found->second->deleting) {
      return absl::NotFoundError(
          absl::StrCat("run ", run_id_, " was deleted while it was watched"));
    }
    const auto& run = *found->second;
    if (replaying_) {
      if (replay_buffer_.empty()) {
        if (replay_read_all_) replaying_ = false;
        continue;
      }
      v1::RoundResult round = std::move(replay_buffer_.front());
      replay_buffer_.pop_front();
      // A round committed after Watch() (or whose commit is being reported
      // right now) comes through the live log instead.
      if (run.open.count(round.step()) > 0) continue;
      if (auto it = run.finished.find(round.step());
          it != run.finished.end() && it->second.live_index > snapshot_) {
        continue;
      }
      return std::optional<v1::RoundResult>(std::move(round));
    }
    while (live_pos_ < run.live_log.size()) {
      const uint64_t step = run.live_log[live_pos_++];
      if (step < from_step_) continue;
      return std::optional<v1::RoundResult>(
          run.finished.at(step).record.result);
    }
    // A finished run's open rounds are all being committed: once none is left,
    // nothing more can come.
    if (run.is_finished() && run.open.empty()) {
      return absl::OutOfRangeError(absl::StrCat(
          "run ", run_id_, " is finished and every round was delivered"));
    }
    armed_ = true;
    return std::optional<v1::RoundResult>();
  }
}

absl::Status AggregatorImpl::Load() {
  absl::StatusOr<StoreIndex> contents = store_->LoadIndex();
  if (!contents.ok()) return contents.status();
  absl::MutexLock lock(&mu_);
  for (RunRecord& record : contents->runs) {
    std::string id = record.run_id;
    runs_.emplace(std::move(id), std::make_unique<Run>(std::move(record),
                                                       next_incarnation_++));
  }
  // Only the index of the rounds: their records stay in the store until a
  // query or a late duplicate report reads them.
  for (const auto& [run_id, rounds] : contents->rounds) {
    auto it = runs_.find(run_id);
    if (it == runs_.end()) {
      return absl::DataLossError(absl::StrCat(
          "the store holds ", rounds.size(), " rounds of run ", run_id,
          " but no such run"));
    }
    Run& run = *it->second;
    run.stored_steps.reserve(rounds.size());
    for (const IndexedRound& round : rounds) {
      // Replaying in finalization order rebuilds the policies' state exactly.
      run.policy.Observe(round.total_norm, round.action);
      run.next_sequence = std::max(run.next_sequence, round.sequence + 1);
      run.stored_steps.push_back(round.step);
      run.CountRound(round.step);
    }
    std::sort(run.stored_steps.begin(), run.stored_steps.end());
  }
  for (AbandonedStep& step : contents->abandoned) {
    auto it = runs_.find(step.run_id);
    if (it == runs_.end()) {
      return absl::DataLossError(absl::StrCat(
          "the store holds abandoned ", RoundName(step.run_id, step.step),
          " but no such run"));
    }
    it->second->abandoned[step.step] = std::move(step.why);
  }
  return absl::OkStatus();
}

void AggregatorImpl::StartExpiryThread() {
  if (options_.expiry_interval <= absl::ZeroDuration()) return;
  expiry_thread_ = std::thread([this] {
    while (true) {
      {
        absl::MutexLock lock(&mu_);
        // Sleeps until the earliest deadline that can still expire, at most
        // expiry_interval: a deadline is then answered on time (with the
        // missing participants) rather than up to an interval late, when the
        // caller's own gRPC deadline may already have cut the call.
        while (!expiries_.empty() && !LiveExpiryLocked(expiries_.top())) {
          expiries_.pop();
        }
        const absl::Time now = clock_->Now();
        absl::Duration wait = options_.expiry_interval;
        if (!expiries_.empty()) {
          wait = std::min(wait, std::max(absl::ZeroDuration(),
                                         expiries_.top().when - now));
        }
        expiry_wake_at_ = now + wait;
        expiry_wake_now_ = false;
        auto woken = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
          return shutting_down_ || expiry_wake_now_;
        };
        mu_.AwaitWithTimeout(absl::Condition(&woken), wait);
        if (shutting_down_) return;
      }
      ExpireRounds();
    }
  });
}

absl::Status AggregatorImpl::CheckRunLocked(absl::string_view run_id,
                                            const Run** run) const {
  if (absl::Status status = ValidateRunId(run_id); !status.ok()) return status;
  auto it = runs_.find(run_id);
  if (it == runs_.end()) {
    return absl::NotFoundError(absl::StrCat(
        "run ", run_id, " is not registered; register it with RegisterRun "
        "first"));
  }
  if (it->second->deleting) {
    return absl::NotFoundError(absl::StrCat("run ", run_id, " is being deleted"));
  }
  *run = it->second.get();
  return absl::OkStatus();
}

absl::StatusOr<AggregatorImpl::Run*> AggregatorImpl::MutableRunLocked(
    absl::string_view run_id) {
  if (shutting_down_) return absl::UnavailableError(kShuttingDown);
  const Run* run = nullptr;
  if (absl::Status status = CheckRunLocked(run_id, &run); !status.ok()) {
    return status;
  }
  return const_cast<Run*>(run);
}

void AggregatorImpl::AbandonRoundLocked(
    Run& run, std::map<uint64_t, OpenRound>::iterator it,
    const std::string& why, const absl::Status& error,
    std::vector<Call>* calls, std::vector<AbandonedStep>* abandoned) {
  const uint64_t step = it->first;
  OpenRound& round = it->second;
  run.abandoned[step] = why;
  abandoned->push_back(AbandonedStep{run.info.run_id, step, why});
  for (Waiter& waiter : round.waiters) {
    calls->emplace_back(std::move(waiter.done), error);
  }
  waiters_ -= round.waiters.size();
  run.open.erase(it);
}

void AggregatorImpl::AbandonOpenRoundsLocked(
    Run& run, const std::string& why, const absl::Status& error,
    std::vector<Call>* calls, std::vector<AbandonedStep>* abandoned) {
  for (auto it = run.open.begin(); it != run.open.end();) {
    auto next = std::next(it);
    if (!it->second.committing) {
      AbandonRoundLocked(run, it, why, error, calls, abandoned);
    }
    it = next;
  }
}

void AggregatorImpl::WakeWatchesLocked(
    Run& run, std::vector<std::function<void()>>* ready) {
  for (WatchImpl* watch : run.watches) {
    if (watch->armed_) {
      watch->armed_ = false;
      ready->push_back(watch->on_ready_);
    }
  }
}

void AggregatorImpl::AwaitAppendsHandedOver() {
  absl::MutexLock lock(&append_mu_);
  auto handed_over = [this]() ABSL_SHARED_LOCKS_REQUIRED(append_mu_) {
    return appends_.empty() && !handing_over_;
  };
  append_mu_.Await(absl::Condition(&handed_over));
}

v1::RunInfo AggregatorImpl::InfoLocked(const Run& run) const {
  v1::RunInfo info;
  info.set_run_id(run.info.run_id);
  *info.mutable_config() = run.info.config;
  info.set_created_unix_micros(run.info.created_unix_micros);
  info.set_rounds(run.rounds);
  if (run.rounds > 0) info.set_last_step(run.last_step);
  info.set_open_rounds(run.open.size());
  info.set_finished(run.is_finished());
  info.set_finished_unix_micros(run.info.finished_unix_micros);
  return info;
}

absl::StatusOr<v1::RegisterRunResponse> AggregatorImpl::RegisterRun(
    const v1::RegisterRunRequest& request) {
  if (absl::Status status = ValidateRunId(request.run_id()); !status.ok()) {
    return status;
  }
  absl::StatusOr<v1::RunConfig> config =
      NormalizeRunConfig(request.config(), options_.max_participants);
  if (!config.ok()) return config.status();

  std::lock_guard<std::mutex> registering(register_mu_);
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) return absl::UnavailableError(kShuttingDown);
    auto it = runs_.find(request.run_id());
    if (it != runs_.end()) {
      std::vector<std::string> diff =
          DiffRunConfigs(it->second->info.config, *config);
      if (!diff.empty()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "run ", request.run_id(),
            " is already registered with a different config (stored -> "
            "requested): ",
            absl::StrJoin(diff, "; "),
            "; register a new run id or repeat the stored config"));
      }
      if (it->second->is_finished()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "run ", request.run_id(),
            " is finished and takes no new rounds; register a new run id"));
      }
      if (it->second->deleting) {
        return absl::UnavailableError(absl::StrCat(
            "run ", request.run_id(),
            " is being deleted; register it again once that is done"));
      }
      v1::RegisterRunResponse response;
      response.set_created(false);
      *response.mutable_run() = InfoLocked(*it->second);
      return response;
    }
    const size_t unfinished = std::count_if(
        runs_.begin(), runs_.end(),
        [](const auto& entry) { return !entry.second->is_finished(); });
    if (unfinished >= options_.max_runs) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "this coordinator already has ", unfinished,
          " unfinished runs, its limit (max_runs ", options_.max_runs,
          "); run ", request.run_id(),
          " cannot be registered until a run is finished or deleted"));
    }
  }
  RunRecord record;
  record.run_id = request.run_id();
  record.config = *std::move(config);
  record.created_unix_micros = absl::ToUnixMicros(clock_->Now());
  // Outside mu_: reports of other runs go on while the run is made durable.
  if (absl::Status status = store_->PutRun(record); !status.ok()) {
    return status;
  }
  absl::MutexLock lock(&mu_);
  auto run = std::make_unique<Run>(std::move(record), next_incarnation_++);
  v1::RegisterRunResponse response;
  response.set_created(true);
  *response.mutable_run() = InfoLocked(*run);
  runs_.emplace(request.run_id(), std::move(run));
  if (options_.log != nullptr) {
    const v1::RunConfig& c = response.run().config();
    options_.log->Log(
        LogLevel::kInfo, "run_registered",
        {{"run", request.run_id()},
         {"participants", absl::StrCat(c.participants())},
         {"norm_type", FormatNumber(c.norm_type())},
         {"max_norm", FormatNumber(c.max_norm())},
         {"clip_policy", c.clip_policy().has_auto_clip() ? "autoclip"
                         : c.clip_policy().has_zclip()   ? "zclip"
                                                         : "static"},
         {"spike_rule", c.spike_rule().enabled() ? "on" : "off"}});
  }
  return response;
}

absl::StatusOr<v1::RoundResult> AggregatorImpl::OutcomeLocked(
    const Run& run, const RoundRecord& record) const {
  const v1::RoundResult& result = record.result;
  if (!std::isfinite(result.total_norm()) &&
      run.info.config.nonfinite_policy() == v1::NON_FINITE_POLICY_ERROR) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the total norm of ", RoundName(run.info.run_id, result.step()),
        " is ", FormatNumber(result.total_norm()),
        " (a gradient was not finite) and the run's nonfinite_policy is "
        "NON_FINITE_POLICY_ERROR; the round is recorded as skipped"));
  }
  return result;
}

std::vector<uint32_t> AggregatorImpl::MissingLocked(
    const Run& run, const OpenRound& round) const {
  std::vector<uint32_t> missing;
  for (uint32_t i = 0; i < round.reported.size(); ++i) {
    if (!round.reported[i]) missing.push_back(i);
  }
  return missing;
}

void AggregatorImpl::Report(const v1::ReportRequest& request,
                            absl::Time deadline, ReportCallback done) {
  std::vector<Call> calls;
  bool finalized = false;
  // At most one read from the store: the round read back stays in memory.
  for (int attempt = 0;; ++attempt) {
    bool fetch = false;
    {
      absl::MutexLock lock(&mu_);
      ReportLocked(request, deadline, done, &calls, &finalized, &fetch);
    }
    if (!fetch) break;
    absl::Status fetched =
        attempt == 0
            ? FetchRound(request.run_id(), request.step())
            : absl::InternalError(absl::StrCat(
                  RoundName(request.run_id(), request.step()),
                  " was read from the store but is not in memory"));
    if (!fetched.ok()) {
      calls.emplace_back(std::move(done), std::move(fetched));
      break;
    }
  }
  if (finalized) HandAppendsToStore();
  for (Call& call : calls) call.first(std::move(call.second));
}

absl::Status AggregatorImpl::FetchRound(const std::string& run_id,
                                        uint64_t step) {
  absl::StatusOr<std::vector<RoundRecord>> read =
      store_->ReadRounds(run_id, step, step, 1, /*with_participants=*/true);
  if (!read.ok()) return read.status();
  absl::MutexLock lock(&mu_);
  const Run* found = nullptr;
  if (absl::Status status = CheckRunLocked(run_id, &found); !status.ok()) {
    return status;
  }
  Run& run = *const_cast<Run*>(found);
  if (read->empty()) {
    return absl::DataLossError(absl::StrCat(
        "the store's index holds ", RoundName(run_id, step),
        " but the store has no such round"));
  }
  RoundRecord& record = read->front();
  if (record.participants.size() != run.info.config.participants()) {
    return absl::DataLossError(absl::StrCat(
        "the store holds ", record.participants.size(),
        " participant records for ", RoundName(run_id, step), "; expected ",
        run.info.config.participants()));
  }
  run.finished.emplace(step, FinishedRound{std::move(record), 0});
  return absl::OkStatus();
}

void AggregatorImpl::ReportLocked(const v1::ReportRequest& request,
                                  absl::Time deadline, ReportCallback& done,
                                  std::vector<Call>* calls, bool* finalized,
                                  bool* fetch) {
  auto fail = [&](absl::Status status) {
    calls->emplace_back(std::move(done), std::move(status));
  };
  if (shutting_down_) return fail(absl::UnavailableError(kShuttingDown));
  if (!store_error_.ok()) {
    return fail(absl::UnavailableError(absl::StrCat(
        "the telemetry store failed (", store_error_.ToString(),
        "); this coordinator accepts no more reports: retry against a "
        "restarted coordinator")));
  }
  const Run* found = nullptr;
  if (absl::Status status = CheckRunLocked(request.run_id(), &found);
      !status.ok()) {
    return fail(status);
  }
  Run& run = *const_cast<Run*>(found);
  const absl::Time now = clock_->Now();
  run.last_report = now;
  const uint64_t step = request.step();
  const uint32_t n = run.info.config.participants();
  const uint32_t participant = request.participant();
  const double partial = request.partial();
  if (participant >= n) {
    return fail(absl::InvalidArgumentError(absl::StrCat(
        "participant ", participant, " is out of range for run ",
        run.info.run_id, "; expected 0 to ", n - 1, " (the run has ", n,
        " participants)")));
  }
  if (partial < 0) {
    return fail(absl::InvalidArgumentError(absl::StrCat(
        "partial ", FormatNumber(partial), " of participant ", participant,
        " for ", RoundName(run.info.run_id, step),
        " is negative; expected >= 0, or NaN / +Inf for a non-finite "
        "gradient")));
  }
  auto conflict = [&](double stored) {
    return absl::AlreadyExistsError(absl::StrCat(
        "participant ", participant, " already reported partial ",
        FormatNumber(stored), " for ", RoundName(run.info.run_id, step),
        "; this report has partial ", FormatNumber(partial),
        " (a retry must resend the same value)"));
  };

  if (auto it = run.finished.find(step); it != run.finished.end()) {
    const RoundRecord& record = it->second.record;
    const double stored = record.participants[participant].partial;
    if (!SamePartial(stored, partial)) return fail(conflict(stored));
    calls->emplace_back(std::move(done), OutcomeLocked(run, record));
    return;
  }
  if (std::binary_search(run.stored_steps.begin(), run.stored_steps.end(),
                         step)) {
    *fetch = true;  // Finalized before start: read it back, then answer.
    return;
  }
  if (auto it = run.abandoned.find(step); it != run.abandoned.end()) {
    return fail(absl::FailedPreconditionError(absl::StrCat(
        RoundName(run.info.run_id, step), " was abandoned: ", it->second,
        "; continue with another step")));
  }

  auto open_it = run.open.find(step);
  if (open_it == run.open.end()) {
    if (run.is_finished()) {
      return fail(absl::FailedPreconditionError(absl::StrCat(
          "run ", run.info.run_id, " is finished (FinishRun) and opens no new "
          "rounds; step ", step, " was never finalized")));
    }
    if (run.open.size() >= options_.max_open_rounds_per_run) {
      return fail(absl::ResourceExhaustedError(absl::StrCat(
          "run ", run.info.run_id, " already has ", run.open.size(),
          " open rounds, its limit (max_open_rounds_per_run ",
          options_.max_open_rounds_per_run, "); step ", step,
          " cannot open another until one completes or times out")));
    }
    OpenRound round;
    round.first_report = now;
    round.deadline =
        now + absl::Milliseconds(run.info.config.round_timeout_ms());
    round.reported.assign(n, false);
    round.partials.assign(n, 0.0);
    round.arrivals.assign(n, now);
    round.num_elements.assign(n, 0);
    open_it = run.open.emplace(step, std::move(round)).first;
    PushExpiryLocked(Expiry{open_it->second.deadline, run.info.run_id, step, 0});
  }
  OpenRound& round = open_it->second;
  if (round.reported[participant]) {
    if (!SamePartial(round.partials[participant], partial)) {
      return fail(conflict(round.partials[participant]));
    }
  } else {
    round.reported[participant] = true;
    round.partials[participant] = partial;
    round.arrivals[participant] = now;
    round.num_elements[participant] = request.num_elements();
    round.count++;
    if (round.count == n) {
      QueueAppendLocked(Append{FinalizeLocked(run, step, round, participant)});
      *finalized = true;
    }
  }
  if (!round.committing && deadline <= now) {
    return fail(absl::DeadlineExceededError(absl::StrCat(
        "the deadline passed waiting for ", RoundName(run.info.run_id, step),
        ": missing participants ", FormatIds(MissingLocked(run, round)), " (",
        round.count, " of ", n,
        " reported); this report is kept, so retrying it rejoins the round")));
  }
  const uint64_t id = next_waiter_id_++;
  round.waiters.push_back(Waiter{id, std::move(done)});
  ++waiters_;
  if (deadline != absl::InfiniteFuture()) {
    PushExpiryLocked(Expiry{deadline, run.info.run_id, step, id});
  }
}

RoundRecord AggregatorImpl::FinalizeLocked(Run& run, uint64_t step,
                                           OpenRound& round,
                                           uint32_t last_participant) {
  const v1::RunConfig& config = run.info.config;
  const double total = CombinePartials(config.norm_type(), round.partials);
  const RoundDecision decision = run.policy.Decide(total);
  // The policy state moves on now, not at commit: the next round to finalize
  // must see this one, whichever commits first.
  run.policy.Observe(total, decision.action);

  RoundRecord record;
  record.sequence = run.next_sequence++;
  v1::RoundResult& r = record.result;
  r.set_run_id(run.info.run_id);
  r.set_step(step);
  r.set_total_norm(total);
  r.set_clip_coef(decision.clip_coef);
  r.set_action(decision.action);
  r.set_reason(decision.reason);
  r.set_reason_detail(decision.detail);
  r.set_effective_max_norm(decision.effective_max_norm);
  double spread = 0;
  record.participants.resize(round.partials.size());
  for (size_t i = 0; i < round.partials.size(); ++i) {
    // A clock stepped back must not produce negative offsets.
    const double offset = std::max(
        0.0, absl::ToDoubleSeconds(round.arrivals[i] - round.first_report));
    record.participants[i] = ParticipantRecord{round.partials[i], offset,
                                               round.num_elements[i]};
    spread = std::max(spread, offset);
  }
  r.set_arrival_spread_seconds(spread);
  r.set_slowest_participant(last_participant);
  r.set_finalized_unix_micros(absl::ToUnixMicros(clock_->Now()));
  round.committing = true;
  round.record = record;
  return record;
}

void AggregatorImpl::QueueAppendLocked(Append append) {
  absl::MutexLock lock(&append_mu_);
  appends_.push_back(std::move(append));
}

void AggregatorImpl::HandAppendsToStore() {
  {
    absl::MutexLock lock(&append_mu_);
    if (handing_over_) return;
    handing_over_ = true;
  }
  while (true) {
    Append next;
    {
      absl::MutexLock lock(&append_mu_);
      if (appends_.empty()) {
        handing_over_ = false;
        return;
      }
      next = std::move(appends_.front());
      appends_.pop_front();
    }
    SubmitAppend(std::move(next));
  }
}

void AggregatorImpl::SubmitAppend(Append append) {
  const std::string run_id = append.record.result.run_id();
  const uint64_t step = append.record.result.step();
  const absl::Time appended = clock_->Now();
  store_->AppendRound(std::move(append.record),
                      [this, run_id, step, appended](absl::Status status) {
                        OnCommitted(run_id, step, appended, std::move(status));
                      });
}

void AggregatorImpl::OnCommitted(const std::string& run_id, uint64_t step,
                                 absl::Time appended, absl::Status status) {
  std::vector<Call> calls;
  std::vector<std::function<void()>> ready;
  std::optional<v1::RoundResult> committed;
  {
    absl::MutexLock lock(&mu_);
    Run& run = *runs_.at(run_id);
    auto it = run.open.find(step);
    OpenRound& round = it->second;
    absl::StatusOr<v1::RoundResult> outcome;
    if (status.ok()) {
      outcome = OutcomeLocked(run, round.record);
      committed = round.record.result;
      run.live_log.push_back(step);
      run.CountRound(step);
      run.finished[step] =
          FinishedRound{std::move(round.record), run.live_log.size()};
      for (WatchImpl* watch : run.watches) {
        if (watch->armed_ && step >= watch->from_step_) {
          watch->armed_ = false;
          ready.push_back(watch->on_ready_);
        }
      }
    } else {
      if (store_error_.ok()) store_error_ = status;
      outcome = absl::UnavailableError(absl::StrCat(
          "the telemetry store failed to commit ", RoundName(run_id, step),
          " (", status.ToString(),
          "); this coordinator accepts no more reports: retry against a "
          "restarted coordinator"));
    }
    for (Waiter& waiter : round.waiters) {
      calls.emplace_back(std::move(waiter.done), outcome);
    }
    waiters_ -= round.waiters.size();
    run.open.erase(it);
    // The last round of a finished run: every watch can end now.
    if (run.is_finished() && run.open.empty()) WakeWatchesLocked(run, &ready);
    // on_ready runs after the lock is released, from a copy: the watch may be
    // destroyed meanwhile.
  }
  for (Call& call : calls) call.first(std::move(call.second));
  for (const std::function<void()>& on_ready : ready) {
    if (on_ready) on_ready();
  }
  if (committed.has_value() && options_.on_round_committed) {
    options_.on_round_committed(*committed, clock_->Now() - appended);
  }
}

void AggregatorImpl::PushExpiryLocked(Expiry expiry) {
  // Wakes the expiry thread when this deadline comes before its next check.
  if (expiry.when < expiry_wake_at_) expiry_wake_now_ = true;
  expiries_.push(std::move(expiry));
  if (expiries_.size() < compact_expiries_at_) return;
  std::vector<Expiry> live;
  while (!expiries_.empty()) {
    if (LiveExpiryLocked(expiries_.top())) live.push_back(expiries_.top());
    expiries_.pop();
  }
  compact_expiries_at_ = std::max(kMinExpiriesToCompact, 2 * live.size());
  expiries_ = decltype(expiries_)(std::greater<Expiry>(), std::move(live));
}

bool AggregatorImpl::LiveExpiryLocked(const Expiry& expiry) const {
  auto run_it = runs_.find(expiry.run_id);
  if (run_it == runs_.end()) return false;
  auto round_it = run_it->second->open.find(expiry.step);
  if (round_it == run_it->second->open.end()) return false;
  if (expiry.waiter_id == 0) return true;
  const std::vector<Waiter>& waiters = round_it->second.waiters;
  return std::any_of(waiters.begin(), waiters.end(), [&](const Waiter& w) {
    return w.id == expiry.waiter_id;
  });
}

void AggregatorImpl::ExpireRounds() {
  std::vector<Call> calls;
  std::vector<AbandonedStep> abandoned;
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) return;
    const absl::Time now = clock_->Now();
    while (!expiries_.empty() && expiries_.top().when <= now) {
      Expiry expiry = expiries_.top();
      expiries_.pop();
      auto run_it = runs_.find(expiry.run_id);
      if (run_it == runs_.end()) continue;
      Run& run = *run_it->second;
      auto it = run.open.find(expiry.step);
      if (it == run.open.end()) continue;  // Finished meanwhile.
      OpenRound& round = it->second;
      const uint32_t n = run.info.config.participants();
      if (expiry.waiter_id == 0) {
        if (round.committing) continue;  // Complete: only the store is left.
        const std::string why = absl::StrCat(
            "its round timed out after ", run.info.config.round_timeout_ms(),
            " ms waiting for participants ",
            FormatIds(MissingLocked(run, round)), " (", round.count, " of ",
            n, " reported)");
        absl::Status error = absl::AbortedError(absl::StrCat(
            "the round for ", RoundName(run.info.run_id, expiry.step),
            " timed out after ", run.info.config.round_timeout_ms(),
            " ms waiting for participants ",
            FormatIds(MissingLocked(run, round)), " (", round.count, " of ",
            n, " reported); the step is abandoned"));
        AbandonRoundLocked(run, it, why, error, &calls, &abandoned);
        continue;
      }
      auto waiter_it = std::find_if(
          round.waiters.begin(), round.waiters.end(),
          [&](const Waiter& w) { return w.id == expiry.waiter_id; });
      if (waiter_it == round.waiters.end()) continue;
      std::string message =
          round.committing
              ? absl::StrCat("the deadline passed while ",
                             RoundName(run.info.run_id, expiry.step),
                             " was being committed; retry the same report "
                             "to get its result")
              : absl::StrCat(
                    "the deadline passed waiting for ",
                    RoundName(run.info.run_id, expiry.step),
                    ": missing participants ",
                    FormatIds(MissingLocked(run, round)), " (", round.count,
                    " of ", n,
                    " reported); this report is kept, so retrying it "
                    "rejoins the round");
      calls.emplace_back(std::move(waiter_it->done),
                         absl::DeadlineExceededError(message));
      round.waiters.erase(waiter_it);
      --waiters_;
    }
  }
  // Durable before anyone is told: a late report after a restart must find
  // the step abandoned, not open a new round. Outside the lock, so rounds
  // go on meanwhile. A failed write leaves the step abandoned in memory
  // until a restart; the log line says so.
  for (const AbandonedStep& step : abandoned) {
    absl::Status stored = store_->PutAbandonedStep(step);
    if (options_.log != nullptr) {
      LogFields fields = {{"run", step.run_id},
                          {"step", absl::StrCat(step.step)},
                          {"why", step.why}};
      if (!stored.ok()) fields.emplace_back("store_error", stored.ToString());
      options_.log->Log(LogLevel::kWarning, "round_timed_out", fields);
    }
  }
  for (Call& call : calls) call.first(std::move(call.second));
}

v1::ListRunsResponse AggregatorImpl::ListRuns() const {
  absl::ReaderMutexLock lock(&mu_);
  v1::ListRunsResponse response;
  for (const auto& [id, run] : runs_) *response.add_runs() = InfoLocked(*run);
  return response;
}

absl::StatusOr<v1::RunInfo> AggregatorImpl::GetRun(
    absl::string_view run_id) const {
  absl::ReaderMutexLock lock(&mu_);
  const Run* run = nullptr;
  if (absl::Status status = CheckRunLocked(run_id, &run); !status.ok()) {
    return status;
  }
  return InfoLocked(*run);
}

absl::StatusOr<std::vector<RoundRecord>> AggregatorImpl::ReadRange(
    absl::string_view run_id, uint64_t from_step, uint64_t to_step,
    bool with_participants, uint32_t* participants) const {
  StepRange range;
  {
    absl::ReaderMutexLock lock(&mu_);
    const Run* run = nullptr;
    if (absl::Status status = CheckRunLocked(run_id, &run); !status.ok()) {
      return status;
    }
    const uint64_t last = run->rounds > 0 ? run->last_step : 0;
    absl::StatusOr<StepRange> resolved =
        ResolveStepRange(from_step, to_step, last);
    if (!resolved.ok()) return resolved.status();
    range = *resolved;
    *participants = run->info.config.participants();
  }
  // The store has every committed round; reading it takes no lock of ours,
  // so rounds go on meanwhile.
  return store_->ReadRounds(std::string(run_id), range.from, range.to, 0,
                            with_participants);
}

namespace {

std::vector<const RoundRecord*> Pointers(const std::vector<RoundRecord>& rounds) {
  std::vector<const RoundRecord*> pointers;
  pointers.reserve(rounds.size());
  for (const RoundRecord& round : rounds) pointers.push_back(&round);
  return pointers;
}

}  // namespace

absl::StatusOr<v1::GetHistoryResponse> AggregatorImpl::GetHistory(
    const v1::GetHistoryRequest& request) const {
  uint32_t participants = 0;
  // A history needs no participants: their BLOBs are not read.
  absl::StatusOr<std::vector<RoundRecord>> rounds =
      ReadRange(request.run_id(), request.from_step(), request.to_step(),
                /*with_participants=*/false, &participants);
  if (!rounds.ok()) return rounds.status();
  return BuildHistory(Pointers(*rounds), request.max_points());
}

absl::StatusOr<v1::GetSummaryResponse> AggregatorImpl::GetSummary(
    const v1::GetSummaryRequest& request) const {
  uint32_t participants = 0;
  absl::StatusOr<std::vector<RoundRecord>> rounds =
      ReadRange(request.run_id(), request.from_step(), request.to_step(),
                /*with_participants=*/true, &participants);
  if (!rounds.ok()) return rounds.status();
  return BuildSummary(Pointers(*rounds), participants, request.top_slowest());
}

absl::StatusOr<std::unique_ptr<RoundWatch>> AggregatorImpl::Watch(
    absl::string_view run_id, uint64_t from_step,
    std::function<void()> on_ready) {
  absl::MutexLock lock(&mu_);
  if (shutting_down_) return absl::UnavailableError(kShuttingDown);
  const Run* found = nullptr;
  if (absl::Status status = CheckRunLocked(run_id, &found); !status.ok()) {
    return status;
  }
  Run& run = *const_cast<Run*>(found);
  auto watch = std::make_unique<WatchImpl>(
      this, std::string(run_id), run.incarnation, from_step, std::move(on_ready));
  watch->snapshot_ = run.live_log.size();
  watch->live_pos_ = run.live_log.size();
  run.watches.insert(watch.get());
  return std::unique_ptr<RoundWatch>(std::move(watch));
}

absl::StatusOr<v1::FinishRunResponse> AggregatorImpl::FinishRun(
    absl::string_view run_id) {
  // Serialized with registrations and deletions: the run's stored record
  // changes one way at a time.
  std::lock_guard<std::mutex> changing(register_mu_);
  std::vector<Call> calls;
  std::vector<AbandonedStep> abandoned;
  int64_t finished_at;
  {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<Run*> run = MutableRunLocked(run_id);
    if (!run.ok()) return run.status();
    if ((*run)->is_finished()) {
      v1::FinishRunResponse response;
      *response.mutable_run() = InfoLocked(**run);
      return response;
    }
    // No round opens from here on: Report sees the run finished.
    finished_at = absl::ToUnixMicros(clock_->Now());
    (*run)->info.finished_unix_micros = finished_at;
    AbandonOpenRoundsLocked(
        **run, "the run was finished (FinishRun) while its round waited",
        absl::AbortedError(absl::StrCat(
            "run ", run_id,
            " was finished (FinishRun) while this round waited for "
            "participants; the step is abandoned")),
        &calls, &abandoned);
  }
  // Durable before anyone is told, outside the lock (rounds of other runs go
  // on meanwhile).
  absl::Status stored = store_->FinishRun(std::string(run_id), finished_at);
  absl::Status abandoned_stored;
  for (const AbandonedStep& step : abandoned) {
    absl::Status s = store_->PutAbandonedStep(step);
    if (abandoned_stored.ok()) abandoned_stored = s;
  }
  std::vector<std::function<void()>> ready;
  v1::FinishRunResponse response;
  {
    absl::MutexLock lock(&mu_);
    Run& run = *runs_.at(std::string(run_id));
    if (!stored.ok()) {
      run.info.finished_unix_micros = 0;
    } else {
      if (run.open.empty()) WakeWatchesLocked(run, &ready);
      *response.mutable_run() = InfoLocked(run);
      response.set_abandoned_rounds(abandoned.size());
    }
  }
  for (Call& call : calls) call.first(std::move(call.second));
  for (const std::function<void()>& on_ready : ready) {
    if (on_ready) on_ready();
  }
  if (!stored.ok()) return stored;
  if (options_.log != nullptr) {
    LogFields fields = {{"run", std::string(run_id)},
                        {"rounds", absl::StrCat(response.run().rounds())},
                        {"abandoned_rounds", absl::StrCat(abandoned.size())}};
    if (!abandoned_stored.ok()) {
      fields.emplace_back("store_error", abandoned_stored.ToString());
    }
    options_.log->Log(LogLevel::kInfo, "run_finished", fields);
  }
  return response;
}

absl::StatusOr<v1::DeleteRunResponse> AggregatorImpl::DeleteRun(
    absl::string_view run_id, absl::string_view cause) {
  std::lock_guard<std::mutex> changing(register_mu_);
  std::vector<Call> calls;
  std::vector<AbandonedStep> abandoned;  // Deleted with the run.
  std::vector<std::function<void()>> ready;
  {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<Run*> run = MutableRunLocked(run_id);
    if (!run.ok()) return run.status();
    // Reports and queries answer NOT_FOUND from here on.
    (*run)->deleting = true;
    AbandonOpenRoundsLocked(
        **run, "the run was deleted",
        absl::AbortedError(absl::StrCat(
            "run ", run_id,
            " was deleted (DeleteRun) while this round waited for "
            "participants")),
        &calls, &abandoned);
    WakeWatchesLocked(**run, &ready);
  }
  for (Call& call : calls) call.first(std::move(call.second));
  for (const std::function<void()>& on_ready : ready) {
    if (on_ready) on_ready();
  }
  // Rounds of the run already finalized land before the delete, so none is
  // stored after it. The store's first error is not this call's.
  AwaitAppendsHandedOver();
  store_->Flush().IgnoreError();
  absl::Status deleted = store_->DeleteRun(std::string(run_id));
  v1::DeleteRunResponse response;
  {
    absl::MutexLock lock(&mu_);
    auto it = runs_.find(run_id);
    Run& run = *it->second;
    if (!deleted.ok()) {
      run.deleting = false;
      return deleted;
    }
    response.set_rounds(run.rounds);
    // Watches still open hold only the run's id and incarnation.
    runs_.erase(it);
  }
  if (options_.log != nullptr) {
    options_.log->Log(LogLevel::kInfo, "run_deleted",
                      {{"run", std::string(run_id)},
                       {"rounds", absl::StrCat(response.rounds())},
                       {"cause", std::string(cause)}});
  }
  return response;
}

int AggregatorImpl::ApplyRetention() {
  if (options_.retain_finished_runs == absl::InfiniteDuration()) return 0;
  std::vector<std::string> expired;
  {
    absl::ReaderMutexLock lock(&mu_);
    const int64_t cutoff = absl::ToUnixMicros(
        clock_->Now() - options_.retain_finished_runs);
    for (const auto& [id, run] : runs_) {
      if (run->is_finished() && !run->deleting &&
          run->info.finished_unix_micros <= cutoff) {
        expired.push_back(id);
      }
    }
  }
  int deleted = 0;
  // One run at a time: each holds only its own rounds up.
  for (const std::string& id : expired) {
    absl::StatusOr<v1::DeleteRunResponse> result = DeleteRun(id, "retention");
    if (result.ok()) {
      ++deleted;
    } else if (options_.log != nullptr &&
               result.status().code() != absl::StatusCode::kUnavailable) {
      options_.log->Log(LogLevel::kWarning, "retention_failed",
                        {{"run", id}, {"error", result.status().ToString()}});
    }
  }
  return deleted;
}

void AggregatorImpl::StartRetentionThread() {
  if (options_.retain_finished_runs == absl::InfiniteDuration() ||
      options_.retention_interval <= absl::ZeroDuration()) {
    return;
  }
  retention_thread_ = std::thread([this] {
    while (true) {
      {
        absl::MutexLock lock(&mu_);
        auto stopping = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
          return shutting_down_;
        };
        mu_.AwaitWithTimeout(absl::Condition(&stopping),
                             options_.retention_interval);
        if (shutting_down_) return;
      }
      ApplyRetention();
    }
  });
}

AggregatorStats AggregatorImpl::Stats() const {
  absl::ReaderMutexLock lock(&mu_);
  AggregatorStats stats;
  stats.runs = runs_.size();
  const absl::Time now = clock_->Now();
  for (const auto& [id, run] : runs_) {
    stats.open_rounds += run->open.size();
    stats.rounds_in_memory += run->finished.size();
    if (!run->is_finished() &&
        (!run->open.empty() ||
         now - run->last_report < options_.active_window)) {
      ++stats.active_runs;
    }
  }
  stats.waiters = waiters_;
  stats.deadlines = expiries_.size();
  return stats;
}

absl::Status AggregatorImpl::Shutdown() {
  std::vector<Call> calls;
  std::vector<std::function<void()>> ready;
  {
    absl::MutexLock lock(&mu_);
    if (!shutting_down_) {
      shutting_down_ = true;
      for (auto& [id, run] : runs_) {
        for (auto& [step, round] : run->open) {
          for (Waiter& waiter : round.waiters) {
            calls.emplace_back(std::move(waiter.done),
                               absl::UnavailableError(kShuttingDown));
          }
          round.waiters.clear();
        }
        for (WatchImpl* watch : run->watches) ready.push_back(watch->on_ready_);
      }
      waiters_ = 0;
    }
  }
  if (expiry_thread_.joinable()) expiry_thread_.join();
  if (retention_thread_.joinable()) retention_thread_.join();
  for (Call& call : calls) call.first(std::move(call.second));
  for (const std::function<void()>& on_ready : ready) {
    if (on_ready) on_ready();
  }
  // Commits in flight still land (their rounds become finished, answered to
  // no one); retries after the restart read them back. Rounds still queued
  // here reach the store first.
  AwaitAppendsHandedOver();
  return store_->Flush();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Aggregator>> Aggregator::Create(
    const AggregatorOptions& options, TelemetryStore* store, Clock* clock) {
  if (store == nullptr || clock == nullptr) {
    return absl::InvalidArgumentError(
        "Aggregator::Create needs a store and a clock; got null");
  }
  if (options.max_runs == 0 || options.max_open_rounds_per_run == 0 ||
      options.max_participants == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "aggregator limits must be >= 1; got max_runs ", options.max_runs,
        ", max_open_rounds_per_run ", options.max_open_rounds_per_run,
        ", max_participants ", options.max_participants));
  }
  if (options.retain_finished_runs <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "retain_finished_runs must be > 0 (inf keeps every run); got ",
        absl::FormatDuration(options.retain_finished_runs)));
  }
  auto aggregator = std::make_unique<AggregatorImpl>(options, store, clock);
  if (absl::Status status = aggregator->Load(); !status.ok()) return status;
  aggregator->StartExpiryThread();
  aggregator->StartRetentionThread();
  return std::unique_ptr<Aggregator>(std::move(aggregator));
}

}  // namespace server
}  // namespace gradnorm
