// Summaries of a run's finalized rounds, per block of kHistoryBlockSteps
// consecutive steps, kept in memory so that a history over a long range
// reads a few thousand block summaries instead of every round (history.h).
//
//   HistoryIndex index;
//   index.Add(IndexOf(result, sequence));        // each committed round
//   std::vector<RoundSummary> blocks = index.FullBlocks(from_block, end_block);
//
// A block summary takes about 130 bytes: a million rounds, 2 MB.
// Thread-safety: none; the Aggregator guards each run's index with its lock.
#ifndef GRADNORM_SERVER_CORE_HISTORY_INDEX_H_
#define GRADNORM_SERVER_CORE_HISTORY_INDEX_H_

#include <cstdint>
#include <vector>

#include "absl/container/btree_map.h"
#include "gradnorm/v1/coordinator.pb.h"
#include "server/store/telemetry_store.h"

namespace gradnorm {
namespace server {

// Steps per block: block b holds steps [b * 64, b * 64 + 63].
inline constexpr uint64_t kHistoryBlockSteps = 64;

// What a history bucket keeps of a set of rounds (one round, a block, a
// bucket): counts, finite min/max/sum, its first and last rounds.
struct RoundSummary {
  uint32_t rounds = 0;
  uint32_t finite = 0;  // rounds with a finite total
  double sum = 0.0;     // of the finite totals
  double min = 0.0;     // of the finite totals (valid when finite > 0)
  double max = 0.0;
  uint64_t first_step = 0;
  uint64_t last_step = 0;
  double last_norm = 0.0;           // the last round's total
  double effective_max_norm = 0.0;  // the last round's threshold
  int64_t first_finalized_unix_micros = 0;
  int64_t last_finalized_unix_micros = 0;
  uint32_t clipped = 0;
  uint32_t skipped = 0;
  uint32_t skipped_nonfinite = 0;
  uint32_t skipped_spike = 0;
  double max_arrival_spread_seconds = 0.0;

  // Adds one round (its step not yet summarized here).
  void Add(const IndexedRound& round);
  // Adds the rounds of `other` (steps disjoint from these), in any order.
  void Merge(const RoundSummary& other);
  // As a bucket of GetHistory: min/max/mean NaN when no total is finite.
  void ToBucket(v1::HistoryBucket* bucket) const;
};

class HistoryIndex {
 public:
  // Adds a committed round to its block.
  void Add(const IndexedRound& round);

  // The summaries of blocks [first_block, end_block) that hold rounds, in
  // block order.
  std::vector<RoundSummary> Blocks(uint64_t first_block,
                                   uint64_t end_block) const;

  size_t block_count() const { return blocks_.size(); }

 private:
  absl::btree_map<uint64_t, RoundSummary> blocks_;
};

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_CORE_HISTORY_INDEX_H_
