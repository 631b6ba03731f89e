// The C ABI's error channel: a failed gn_* call stores its absl::Status here,
// per thread, and returns the code; gn_last_error() reads the message back.
// A communicator callback leaves its message here too (gn_set_callback_error)
// for the C++ side to pick up.
//
//   gn_code gn_scale(...) {
//     return c_api_internal::Return(ScaleInPlace(...));
//   }
//
// Thread-safety: every function touches this thread's state only.
#ifndef GRADNORM_CLIENT_C_API_INTERNAL_LAST_ERROR_H_
#define GRADNORM_CLIENT_C_API_INTERNAL_LAST_ERROR_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace gradnorm {
namespace c_api_internal {

// Stores `status` as this thread's last error when it is not OK, and returns
// its code as the C ABI's int32_t.
int32_t Return(const absl::Status& status);

// This thread's last error message ("" when the last call succeeded).
const char* LastErrorMessage();

// The message a callback set for the error it is about to return; cleared
// by the read.
void SetCallbackMessage(absl::string_view message);
std::string TakeCallbackMessage();

}  // namespace c_api_internal
}  // namespace gradnorm

#endif  // GRADNORM_CLIENT_C_API_INTERNAL_LAST_ERROR_H_
