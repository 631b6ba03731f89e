#include "client/c_api/internal/last_error.h"

#include <string>

namespace gradnorm {
namespace c_api_internal {
namespace {

// Thread-local so that concurrent callers never read each other's messages,
// as errno works.
thread_local std::string last_error;
thread_local std::string callback_message;

}  // namespace

int32_t Return(const absl::Status& status) {
  if (status.ok()) {
    last_error.clear();
    return 0;
  }
  last_error = std::string(status.message());
  return static_cast<int32_t>(status.code());
}

const char* LastErrorMessage() { return last_error.c_str(); }

void SetCallbackMessage(absl::string_view message) {
  callback_message = std::string(message);
}

std::string TakeCallbackMessage() {
  std::string message = std::move(callback_message);
  callback_message.clear();
  return message;
}

}  // namespace c_api_internal
}  // namespace gradnorm
