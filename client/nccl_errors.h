// NCCL reports failures as result codes; gradnorm reports them as
// absl::Status. This header is the one place an ncclResult_t is translated
// (a cudaError_t is translated by kernels/cuda_status.h).
//
//   RETURN_IF_ERROR(NcclStatus(ncclAllReduce(...), "ncclAllReduce"));
//
// Codes: ncclInvalidArgument / ncclInvalidUsage are INVALID_ARGUMENT,
// ncclRemoteError (a peer failed) and ncclSystemError (network, sockets) are
// UNAVAILABLE, the rest INTERNAL. The message names the call and carries
// NCCL's error string.
//
// Thread-safety: pure functions.
#ifndef GRADNORM_CLIENT_NCCL_ERRORS_H_
#define GRADNORM_CLIENT_NCCL_ERRORS_H_

#include <nccl.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace gradnorm {

inline absl::Status NcclStatus(ncclResult_t result, absl::string_view call) {
  if (result == ncclSuccess || result == ncclInProgress)
    return absl::OkStatus();
  const std::string message =
      absl::StrCat(call, " failed: ", ncclGetErrorString(result));
  switch (result) {
    case ncclInvalidArgument:
    case ncclInvalidUsage:
      return absl::InvalidArgumentError(message);
    case ncclRemoteError:
    case ncclSystemError:
      return absl::UnavailableError(message);
    default:
      return absl::InternalError(message);
  }
}

}  // namespace gradnorm

#endif  // GRADNORM_CLIENT_NCCL_ERRORS_H_
