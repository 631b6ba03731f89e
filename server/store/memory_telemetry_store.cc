#include "server/store/memory_telemetry_store.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace gradnorm {
namespace server {

MemoryTelemetryStore::MemoryTelemetryStore(CommitMode mode) : mode_(mode) {}

MemoryTelemetryStore::~MemoryTelemetryStore() { Drain(nullptr); }

absl::Status MemoryTelemetryStore::PutRun(const RunRecord& run) {
  absl::MutexLock lock(&mu_);
  auto [it, inserted] = runs_.emplace(run.run_id, run);
  if (!inserted) {
    return absl::AlreadyExistsError(
        absl::StrCat("run ", run.run_id, " is already stored"));
  }
  return absl::OkStatus();
}

absl::Status MemoryTelemetryStore::PutAbandonedStep(const AbandonedStep& step) {
  absl::MutexLock lock(&mu_);
  abandoned_.emplace(std::make_pair(step.run_id, step.step), step.why);
  return absl::OkStatus();
}

absl::Status MemoryTelemetryStore::FinishRun(const std::string& run_id,
                                             int64_t finished_unix_micros) {
  absl::MutexLock lock(&mu_);
  auto it = runs_.find(run_id);
  if (it == runs_.end()) {
    return absl::NotFoundError(absl::StrCat("run ", run_id, " is not stored"));
  }
  it->second.finished_unix_micros = finished_unix_micros;
  return absl::OkStatus();
}

absl::Status MemoryTelemetryStore::DeleteRun(const std::string& run_id) {
  absl::MutexLock lock(&mu_);
  if (runs_.erase(run_id) == 0) {
    return absl::NotFoundError(absl::StrCat("run ", run_id, " is not stored"));
  }
  auto in_run = [&](const auto& entry) { return entry.first.first == run_id; };
  for (auto it = rounds_.begin(); it != rounds_.end();) {
    it = in_run(*it) ? rounds_.erase(it) : std::next(it);
  }
  for (auto it = abandoned_.begin(); it != abandoned_.end();) {
    it = in_run(*it) ? abandoned_.erase(it) : std::next(it);
  }
  return absl::OkStatus();
}

absl::StatusOr<StoreIndex> MemoryTelemetryStore::LoadIndex() {
  absl::StatusOr<StoreContents> contents = Load();
  if (!contents.ok()) return contents.status();
  StoreIndex index;
  index.runs = std::move(contents->runs);
  index.abandoned = std::move(contents->abandoned);
  for (const RoundRecord& record : contents->rounds) {  // In sequence order.
    const v1::RoundResult& r = record.result;
    index.rounds[r.run_id()].push_back(IndexOf(r, record.sequence));
  }
  return index;
}

absl::StatusOr<std::vector<RoundRecord>> MemoryTelemetryStore::ReadRounds(
    const std::string& run_id, uint64_t from_step, uint64_t to_step,
    size_t limit, bool with_participants) {
  absl::MutexLock lock(&mu_);
  std::vector<RoundRecord> rounds;
  if (from_step > to_step) return rounds;
  for (auto it = rounds_.lower_bound({run_id, from_step});
       it != rounds_.end() && it->first.first == run_id &&
       it->first.second <= to_step && (limit == 0 || rounds.size() < limit);
       ++it) {
    rounds.push_back(it->second);
    if (!with_participants) rounds.back().participants.clear();
  }
  return rounds;
}

absl::Status MemoryTelemetryStore::Commit(RoundRecord record) {
  auto key = std::make_pair(record.result.run_id(), record.result.step());
  if (rounds_.count(key) > 0) {
    return absl::AlreadyExistsError(absl::StrCat("round for step ", key.second,
                                                 " of run ", key.first,
                                                 " is already stored"));
  }
  rounds_.emplace(std::move(key), std::move(record));
  return absl::OkStatus();
}

void MemoryTelemetryStore::AppendRound(RoundRecord record,
                                       CommitCallback done) {
  if (mode_ == CommitMode::kManual) {
    absl::MutexLock lock(&mu_);
    pending_.push_back(Pending{std::move(record), std::move(done)});
    return;
  }
  absl::MutexLock callbacks(&callback_mu_);
  absl::Status status;
  {
    absl::MutexLock lock(&mu_);
    status = Commit(std::move(record));
    if (first_error_.ok()) first_error_ = status;
  }
  done(status);
}

size_t MemoryTelemetryStore::Drain(const absl::Status* failure) {
  absl::MutexLock callbacks(&callback_mu_);
  std::deque<Pending> batch;
  std::vector<absl::Status> statuses;
  {
    absl::MutexLock lock(&mu_);
    batch.swap(pending_);
    for (Pending& p : batch) {
      statuses.push_back(failure ? *failure : Commit(std::move(p.record)));
      if (first_error_.ok()) first_error_ = statuses.back();
    }
  }
  for (size_t i = 0; i < batch.size(); ++i) batch[i].done(statuses[i]);
  return batch.size();
}

size_t MemoryTelemetryStore::CommitPending() { return Drain(nullptr); }

size_t MemoryTelemetryStore::FailPending(const absl::Status& status) {
  return Drain(&status);
}

size_t MemoryTelemetryStore::pending() const {
  absl::MutexLock lock(&mu_);
  return pending_.size();
}

absl::StatusOr<StoreContents> MemoryTelemetryStore::Load() {
  absl::MutexLock lock(&mu_);
  StoreContents contents;
  for (const auto& [id, run] : runs_) contents.runs.push_back(run);
  for (const auto& [key, round] : rounds_) contents.rounds.push_back(round);
  for (const auto& [key, why] : abandoned_) {
    contents.abandoned.push_back(AbandonedStep{key.first, key.second, why});
  }
  std::stable_sort(contents.rounds.begin(), contents.rounds.end(),
                   [](const RoundRecord& a, const RoundRecord& b) {
                     if (a.result.run_id() != b.result.run_id()) {
                       return a.result.run_id() < b.result.run_id();
                     }
                     return a.sequence < b.sequence;
                   });
  return contents;
}

absl::Status MemoryTelemetryStore::Flush() {
  Drain(nullptr);
  absl::MutexLock lock(&mu_);
  return first_error_;
}

}  // namespace server
}  // namespace gradnorm
