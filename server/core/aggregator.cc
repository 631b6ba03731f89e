// The Aggregator's reports and round state machine: a round opens with its
// first report, is finalized by the one that completes it, is handed to the
// store and answered once committed; or it is abandoned when it times out.
// Registration and deletion are in run_lifecycle.cc, queries in
// run_queries.cc (see internal/aggregator_impl.h).
#include "server/core/aggregator.h"

#include <algorithm>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/core/exact_total.h"
#include "server/core/internal/aggregator_impl.h"
#include "server/core/internal/run_watch.h"
#include "server/core/number_format.h"
#include "server/core/round_policy.h"

namespace gradnorm {
namespace server {
namespace aggregator_internal {

AggregatorImpl::AggregatorImpl(const AggregatorOptions& options,
                               TelemetryStore* store, Clock* clock)
    : options_(options),
      store_(store),
      clock_(clock),
      commits_(store, clock,
               [this](const std::string& run_id, uint64_t step,
                      absl::Time appended, absl::Status status) {
                 OnCommitted(run_id, step, appended, std::move(status));
               }) {}

absl::Status AggregatorImpl::Load() {
  absl::StatusOr<StoreIndex> index = store_->LoadIndex();
  if (!index.ok()) return index.status();
  absl::MutexLock lock(&state_.mu);
  // Only the index of the rounds: their records stay in the store until a
  // query or a late duplicate report reads them.
  return state_.runs.Load(*std::move(index));
}

void AggregatorImpl::StartExpiryThread() {
  if (options_.expiry_interval <= absl::ZeroDuration()) return;
  expiry_thread_ = std::thread([this] {
    while (true) {
      {
        absl::MutexLock lock(&state_.mu);
        // Sleeps until the earliest deadline that can still expire, at most
        // expiry_interval: a deadline is then answered on time (with the
        // missing participants) rather than up to an interval late, when the
        // caller's own gRPC deadline may already have cut the call.
        const absl::Duration wait = expiries_.PlanWait(
            clock_->Now(), options_.expiry_interval,
            [this](const Expiry& e)
                ABSL_NO_THREAD_SAFETY_ANALYSIS { return LiveExpiryLocked(e); });
        auto woken = [this]() ABSL_SHARED_LOCKS_REQUIRED(state_.mu) {
          return state_.shutting_down || expiries_.wake_now();
        };
        state_.mu.AwaitWithTimeout(absl::Condition(&woken), wait);
        if (state_.shutting_down) return;
      }
      ExpireRounds();
    }
  });
}

absl::StatusOr<Run*> AggregatorImpl::MutableRunLocked(
    absl::string_view run_id) {
  if (state_.shutting_down) return absl::UnavailableError(kShuttingDown);
  return state_.runs.Find(run_id);
}

bool AggregatorImpl::LiveExpiryLocked(const Expiry& expiry) const {
  const Run* run = state_.runs.Get(expiry.run_id);
  if (run == nullptr) return false;
  auto round_it = run->open.find(expiry.step);
  if (round_it == run->open.end()) return false;
  if (expiry.waiter_id == 0) return true;
  const std::vector<Waiter>& waiters = round_it->second.waiters;
  return std::any_of(waiters.begin(), waiters.end(),
                     [&](const Waiter& w) { return w.id == expiry.waiter_id; });
}

void AggregatorImpl::PushExpiryLocked(Expiry expiry) {
  expiries_.Push(std::move(expiry),
                 [this](const Expiry& e) ABSL_NO_THREAD_SAFETY_ANALYSIS {
                   return LiveExpiryLocked(e);
                 });
}

void AggregatorImpl::Report(const v1::ReportRequest& request,
                            absl::Time deadline, ReportCallback done) {
  std::vector<Call> calls;
  bool finalized = false;
  // At most one read from the store: the round read back stays in memory.
  for (int attempt = 0;; ++attempt) {
    bool fetch = false;
    {
      absl::MutexLock lock(&state_.mu);
      ReportLocked(request, deadline, done, &calls, &finalized, &fetch);
    }
    if (!fetch) break;
    absl::Status fetched =
        attempt == 0 ? FetchRound(request.run_id(), request.step())
                     : absl::InternalError(absl::StrCat(
                           RoundName(request.run_id(), request.step()),
                           " was read from the store but is not in memory"));
    if (!fetched.ok()) {
      calls.emplace_back(std::move(done), std::move(fetched));
      break;
    }
  }
  if (finalized) commits_.HandOver();
  RunCallbacks(calls);
}

absl::Status AggregatorImpl::FetchRound(const std::string& run_id,
                                        uint64_t step) {
  absl::StatusOr<std::vector<RoundRecord>> read =
      store_->ReadRounds(run_id, step, step, 1, /*with_participants=*/true);
  if (!read.ok()) return read.status();
  absl::MutexLock lock(&state_.mu);
  absl::StatusOr<Run*> run = state_.runs.Find(run_id);
  if (!run.ok()) return run.status();
  if (read->empty()) {
    return absl::DataLossError(
        absl::StrCat("the store's index holds ", RoundName(run_id, step),
                     " but the store has no such round"));
  }
  RoundRecord& record = read->front();
  if (record.participants.size() != (*run)->info.config.participants()) {
    return absl::DataLossError(
        absl::StrCat("the store holds ", record.participants.size(),
                     " participant records for ", RoundName(run_id, step),
                     "; expected ", (*run)->info.config.participants()));
  }
  (*run)->finished.emplace(step, FinishedRound{std::move(record), 0});
  return absl::OkStatus();
}

void AggregatorImpl::ReportLocked(const v1::ReportRequest& request,
                                  absl::Time deadline, ReportCallback& done,
                                  std::vector<Call>* calls, bool* finalized,
                                  bool* fetch) {
  auto fail = [&](absl::Status status) {
    calls->emplace_back(std::move(done), std::move(status));
  };
  if (state_.shutting_down) return fail(absl::UnavailableError(kShuttingDown));
  if (!store_error_.ok()) {
    return fail(absl::UnavailableError(absl::StrCat(
        "the telemetry store failed (", store_error_.ToString(),
        "); this coordinator accepts no more reports: retry against a "
        "restarted coordinator")));
  }
  absl::StatusOr<Run*> found = state_.runs.Find(request.run_id());
  if (!found.ok()) return fail(found.status());
  Run& run = **found;
  const absl::Time now = clock_->Now();
  run.last_report = now;
  const uint64_t step = request.step();
  const uint32_t n = run.info.config.participants();
  const uint32_t participant = request.participant();
  const double partial = request.partial();
  if (participant >= n) {
    return fail(absl::InvalidArgumentError(
        absl::StrCat("participant ", participant, " is out of range for run ",
                     run.info.run_id, "; expected 0 to ", n - 1,
                     " (the run has ", n, " participants)")));
  }
  if (partial < 0) {
    return fail(absl::InvalidArgumentError(absl::StrCat(
        "partial ", FormatNumber(partial), " of participant ", participant,
        " for ", RoundName(run.info.run_id, step),
        " is negative; expected >= 0, or NaN / +Inf for a non-finite "
        "gradient")));
  }
  if (absl::Status exact = CheckExactPartial(run.info.config, request);
      !exact.ok()) {
    return fail(exact);
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
    calls->emplace_back(std::move(done), run.Outcome(record));
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
      return fail(absl::FailedPreconditionError(
          absl::StrCat("run ", run.info.run_id,
                       " is finished (FinishRun) and opens no new "
                       "rounds; step ",
                       step, " was never finalized")));
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
    round.exact_partials.assign(n, std::string());
    round.arrivals.assign(n, now);
    round.num_elements.assign(n, 0);
    open_it = run.open.emplace(step, std::move(round)).first;
    PushExpiryLocked(
        Expiry{open_it->second.deadline, run.info.run_id, step, 0});
  }
  OpenRound& round = open_it->second;
  if (round.reported[participant]) {
    if (!SamePartial(round.partials[participant], partial)) {
      return fail(conflict(round.partials[participant]));
    }
    if (round.exact_partials[participant] != request.exact_partial()) {
      return fail(absl::AlreadyExistsError(absl::StrCat(
          "participant ", participant, " already reported partial ",
          FormatNumber(partial), " for ", RoundName(run.info.run_id, step),
          " with another exact partial (a retry must resend the same "
          "bytes)")));
    }
  } else {
    round.reported[participant] = true;
    round.partials[participant] = partial;
    round.exact_partials[participant] = request.exact_partial();
    round.arrivals[participant] = now;
    round.num_elements[participant] = request.num_elements();
    round.count++;
    if (round.count == n) {
      commits_.Queue(FinalizeLocked(run, step, round, participant));
      *finalized = true;
    }
  }
  if (!round.committing && deadline <= now) {
    return fail(absl::DeadlineExceededError(absl::StrCat(
        "the deadline passed waiting for ", RoundName(run.info.run_id, step),
        ": missing ", round.MissingSummary(),
        "; this report is kept, so retrying it rejoins the round")));
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
  const std::optional<double> exact_total =
      CombineExactPartials(config.norm_type(), round.exact_partials);
  const double total =
      exact_total.has_value()
          ? *exact_total
          : CombinePartials(config.norm_type(), round.partials);
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
  r.set_exact(exact_total.has_value());
  double spread = 0;
  record.participants.resize(round.partials.size());
  for (size_t i = 0; i < round.partials.size(); ++i) {
    // A clock stepped back must not produce negative offsets.
    const double offset = std::max(
        0.0, absl::ToDoubleSeconds(round.arrivals[i] - round.first_report));
    record.participants[i] =
        ParticipantRecord{round.partials[i], offset, round.num_elements[i]};
    spread = std::max(spread, offset);
  }
  r.set_arrival_spread_seconds(spread);
  r.set_slowest_participant(last_participant);
  r.set_finalized_unix_micros(absl::ToUnixMicros(clock_->Now()));
  round.committing = true;
  round.record = record;
  return record;
}

void AggregatorImpl::OnCommitted(const std::string& run_id, uint64_t step,
                                 absl::Time appended, absl::Status status) {
  std::vector<Call> calls;
  std::vector<std::function<void()>> ready;
  std::optional<v1::RoundResult> committed;
  bool first_failure = false;
  {
    absl::MutexLock lock(&state_.mu);
    Run& run = *state_.runs.Get(run_id);
    auto it = run.open.find(step);
    OpenRound& round = it->second;
    absl::StatusOr<v1::RoundResult> outcome;
    if (status.ok()) {
      outcome = run.Outcome(round.record);
      committed = round.record.result;
      run.live_log.push_back(step);
      run.CountRound(step);
      run.history.Add(IndexOf(round.record.result, round.record.sequence));
      run.finished[step] =
          FinishedRound{std::move(round.record), run.live_log.size()};
      WakeWatches(run, step, &ready);
    } else {
      if (store_error_.ok()) {
        store_error_ = status;
        first_failure = true;
      }
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
    if (run.is_finished() && run.open.empty()) {
      WakeWatches(run, std::nullopt, &ready);
    }
  }
  RunCallbacks(calls, ready);
  if (committed.has_value() && options_.on_round_committed) {
    options_.on_round_committed(*committed, clock_->Now() - appended);
  }
  if (first_failure && options_.on_store_failed) {
    options_.on_store_failed(status);
  }
}

void AggregatorImpl::AbandonRoundLocked(
    Run& run, std::map<uint64_t, OpenRound>::iterator it,
    const std::string& why, const absl::Status& error, std::vector<Call>* calls,
    std::vector<AbandonedStep>* abandoned) {
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

void AggregatorImpl::ExpireRounds() {
  std::vector<Call> calls;
  std::vector<AbandonedStep> abandoned;
  {
    absl::MutexLock lock(&state_.mu);
    if (state_.shutting_down) return;
    const absl::Time now = clock_->Now();
    while (std::optional<Expiry> expiry = expiries_.PopDue(now)) {
      Run* run = state_.runs.Get(expiry->run_id);
      if (run == nullptr) continue;
      auto it = run->open.find(expiry->step);
      if (it == run->open.end()) continue;  // Finished meanwhile.
      OpenRound& round = it->second;
      const std::string name = RoundName(run->info.run_id, expiry->step);
      if (expiry->waiter_id == 0) {
        if (round.committing) continue;  // Complete: only the store is left.
        const std::string waited = absl::StrCat(
            " timed out after ", run->info.config.round_timeout_ms(),
            " ms waiting for ", round.MissingSummary());
        AbandonRoundLocked(
            *run, it, absl::StrCat("its round", waited),
            absl::AbortedError(absl::StrCat("the round for ", name, waited,
                                            "; the step is abandoned")),
            &calls, &abandoned);
        continue;
      }
      auto waiter_it = std::find_if(
          round.waiters.begin(), round.waiters.end(),
          [&](const Waiter& w) { return w.id == expiry->waiter_id; });
      if (waiter_it == round.waiters.end()) continue;
      std::string message =
          round.committing
              ? absl::StrCat("the deadline passed while ", name,
                             " was being committed; retry the same report "
                             "to get its result")
              : absl::StrCat("the deadline passed waiting for ", name,
                             ": missing ", round.MissingSummary(),
                             "; this report is kept, so retrying it "
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
  RunCallbacks(calls);
}

AggregatorStats AggregatorImpl::Stats() const {
  absl::ReaderMutexLock lock(&state_.mu);
  AggregatorStats stats;
  stats.runs = state_.runs.runs().size();
  const absl::Time now = clock_->Now();
  for (const auto& [id, run] : state_.runs.runs()) {
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
    absl::MutexLock lock(&state_.mu);
    if (!state_.shutting_down) {
      state_.shutting_down = true;
      for (const auto& [id, run] : state_.runs.runs()) {
        for (auto& [step, round] : run->open) {
          for (Waiter& waiter : round.waiters) {
            calls.emplace_back(std::move(waiter.done),
                               absl::UnavailableError(kShuttingDown));
          }
          round.waiters.clear();
        }
        for (RunWatchImpl* watch : run->watches) {
          ready.push_back(watch->on_ready());
        }
      }
      waiters_ = 0;
    }
  }
  if (expiry_thread_.joinable()) expiry_thread_.join();
  if (retention_thread_.joinable()) retention_thread_.join();
  RunCallbacks(calls, ready);
  // Commits in flight still land (their rounds become finished, answered to
  // no one); retries after the restart read them back. Rounds still queued
  // here reach the store first.
  commits_.AwaitHandedOver();
  return store_->Flush();
}

}  // namespace aggregator_internal

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
  auto aggregator = std::make_unique<aggregator_internal::AggregatorImpl>(
      options, store, clock);
  if (absl::Status status = aggregator->Load(); !status.ok()) return status;
  aggregator->StartExpiryThread();
  aggregator->StartRetentionThread();
  return std::unique_ptr<Aggregator>(std::move(aggregator));
}

}  // namespace server
}  // namespace gradnorm
