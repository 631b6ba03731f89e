#include "server/core/internal/run_watch.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace gradnorm {
namespace server {
namespace aggregator_internal {

RunWatchImpl::RunWatchImpl(AggregatorState* state, TelemetryStore* store,
                           Run& run, uint64_t from_step,
                           std::function<void()> on_ready)
    : state_(state),
      store_(store),
      run_id_(run.info.run_id),
      incarnation_(run.incarnation),
      from_step_(from_step),
      on_ready_(std::move(on_ready)),
      next_step_(from_step),
      snapshot_(run.live_log.size()),
      live_pos_(run.live_log.size()) {
  run.watches.insert(this);
}

RunWatchImpl::~RunWatchImpl() {
  absl::MutexLock lock(&state_->mu);
  if (Run* run = state_->runs.Get(run_id_); run != nullptr) {
    run->watches.erase(this);
  }
}

absl::Status RunWatchImpl::FillReplay() {
  if (!replay_buffer_.empty() || replay_read_all_) return absl::OkStatus();
  absl::StatusOr<std::vector<RoundRecord>> chunk =
      store_->ReadRounds(run_id_, next_step_, UINT64_MAX, kReplayChunk,
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
  return absl::OkStatus();
}

absl::StatusOr<std::optional<v1::RoundResult>> RunWatchImpl::Next() {
  while (true) {
    // The replay: the stored rounds, read a chunk at a time outside the lock.
    if (replaying_) {
      if (absl::Status status = FillReplay(); !status.ok()) return status;
    }
    absl::MutexLock lock(&state_->mu);
    if (state_->shutting_down) return absl::UnavailableError(kShuttingDown);
    const Run* run = state_->runs.Get(run_id_);
    if (run == nullptr || run->incarnation != incarnation_ || run->deleting) {
      return absl::NotFoundError(
          absl::StrCat("run ", run_id_, " was deleted while it was watched"));
    }
    if (replaying_) {
      if (replay_buffer_.empty()) {
        if (replay_read_all_) replaying_ = false;
        continue;
      }
      v1::RoundResult round = std::move(replay_buffer_.front());
      replay_buffer_.pop_front();
      // A round committed after the watch began (or whose commit is being
      // reported right now) comes through the live log instead.
      if (run->open.count(round.step()) > 0) continue;
      if (auto it = run->finished.find(round.step());
          it != run->finished.end() && it->second.live_index > snapshot_) {
        continue;
      }
      return std::optional<v1::RoundResult>(std::move(round));
    }
    while (live_pos_ < run->live_log.size()) {
      const uint64_t step = run->live_log[live_pos_++];
      if (step < from_step_) continue;
      return std::optional<v1::RoundResult>(
          run->finished.at(step).record.result);
    }
    // A finished run's open rounds are all being committed: once none is left,
    // nothing more can come.
    if (run->is_finished() && run->open.empty()) {
      return absl::OutOfRangeError(absl::StrCat(
          "run ", run_id_, " is finished and every round was delivered"));
    }
    armed_ = true;
    return std::optional<v1::RoundResult>();
  }
}

void WakeWatches(Run& run, std::optional<uint64_t> step,
                 std::vector<std::function<void()>>* ready) {
  for (RunWatchImpl* watch : run.watches) {
    if (watch->armed_ && (!step.has_value() || *step >= watch->from_step_)) {
      watch->armed_ = false;
      ready->push_back(watch->on_ready_);
    }
  }
}

}  // namespace aggregator_internal
}  // namespace server
}  // namespace gradnorm
