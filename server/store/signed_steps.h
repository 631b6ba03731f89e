// Steps are uint64 in the protocol and int64 with the same bits in SQL
// databases (SQLite's INTEGER, PostgreSQL's BIGINT), so a step range in
// unsigned order is one or two ranges in signed order: the steps below 2^63
// first, then those from 2^63 (negative in the database).
//
//   for (const auto& [from, to] : SignedStepRanges(from_step, to_step)) {
//     ... WHERE step BETWEEN from AND to ORDER BY step ...
//   }
//
// Thread-safety: a pure function.
#ifndef GRADNORM_SERVER_STORE_SIGNED_STEPS_H_
#define GRADNORM_SERVER_STORE_SIGNED_STEPS_H_

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

namespace gradnorm {
namespace server {

// [from_step, to_step] (unsigned, from_step <= to_step) as ranges of the
// int64s with the same bits, in unsigned step order.
inline std::vector<std::pair<int64_t, int64_t>> SignedStepRanges(
    uint64_t from_step, uint64_t to_step) {
  constexpr uint64_t kHalf = uint64_t{1} << 63;
  std::vector<std::pair<int64_t, int64_t>> ranges;
  if (from_step < kHalf) {
    ranges.emplace_back(static_cast<int64_t>(from_step),
                        static_cast<int64_t>(std::min(to_step, kHalf - 1)));
  }
  if (to_step >= kHalf) {
    ranges.emplace_back(static_cast<int64_t>(std::max(from_step, kHalf)),
                        static_cast<int64_t>(to_step));
  }
  return ranges;
}

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_STORE_SIGNED_STEPS_H_
