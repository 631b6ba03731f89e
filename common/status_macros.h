// Status propagation macros for functions returning absl::Status or
// absl::StatusOr<T> (Abseil 20220623 has none of its own).
//
//   absl::StatusOr<int> Parse(absl::string_view text);
//   absl::Status Use(absl::string_view text) {
//     ASSIGN_OR_RETURN(int value, Parse(text));
//     RETURN_IF_ERROR(Check(value));
//     return absl::OkStatus();
//   }
#ifndef GRADNORM_COMMON_STATUS_MACROS_H_
#define GRADNORM_COMMON_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Returns the status of `expr` from the enclosing function if it is not OK.
#define RETURN_IF_ERROR(expr)                              \
  do {                                                     \
    ::absl::Status gradnorm_status_macro_status_ = (expr); \
    if (!gradnorm_status_macro_status_.ok()) {             \
      return gradnorm_status_macro_status_;                \
    }                                                      \
  } while (false)

#define GRADNORM_STATUS_MACROS_CONCAT_INNER_(x, y) x##y
#define GRADNORM_STATUS_MACROS_CONCAT_(x, y) \
  GRADNORM_STATUS_MACROS_CONCAT_INNER_(x, y)

#define GRADNORM_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                    \
  if (!statusor.ok()) {                                       \
    return std::move(statusor).status();                      \
  }                                                           \
  lhs = *std::move(statusor)

// Evaluates `rexpr` (an absl::StatusOr<T>); on error returns its status from
// the enclosing function, otherwise assigns or declares `lhs` with the value.
#define ASSIGN_OR_RETURN(lhs, rexpr)                                     \
  GRADNORM_ASSIGN_OR_RETURN_IMPL_(                                       \
      GRADNORM_STATUS_MACROS_CONCAT_(gradnorm_statusor_, __LINE__), lhs, \
      rexpr)

#endif  // GRADNORM_COMMON_STATUS_MACROS_H_
