// The one check of a norm type, for every API that takes one.
//
//   RETURN_IF_ERROR(ValidateNormType(options.norm_type));
#ifndef GRADNORM_COMMON_NORM_TYPE_H_
#define GRADNORM_COMMON_NORM_TYPE_H_

#include "absl/status/status.h"

namespace gradnorm {

// INVALID_ARGUMENT, naming p, unless IsValidNormType(p) (norm_math.h).
absl::Status ValidateNormType(double p);

}  // namespace gradnorm

#endif  // GRADNORM_COMMON_NORM_TYPE_H_
