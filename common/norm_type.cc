#include "common/norm_type.h"

#include "absl/strings/str_cat.h"
#include "common/norm_math.h"

namespace gradnorm {

absl::Status ValidateNormType(double p) {
  if (!IsValidNormType(p)) {
    return absl::InvalidArgumentError(
        absl::StrCat("norm_type ", p,
                     " is invalid: expected p > 0 (a finite value or +inf)"));
  }
  return absl::OkStatus();
}

}  // namespace gradnorm
