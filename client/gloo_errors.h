// Gloo reports failures by throwing; gradnorm reports them as absl::Status.
// This header is the one place that catches Gloo's exceptions.
//
//   absl::Status status = CallGloo("all-reduce in group dp_cp", [&] {
//     gloo::allreduce(options);
//   });
//
// Codes: a Gloo timeout ("Timed out ...", "Wait timeout ...") is
// DEADLINE_EXCEEDED, another I/O error (a peer closed its connection: it died)
// is UNAVAILABLE, an invalid operation is INVALID_ARGUMENT, anything else
// INTERNAL. The message names the failing call and carries Gloo's own text.
//
// Thread-safety: pure function.
#ifndef GRADNORM_CLIENT_GLOO_ERRORS_H_
#define GRADNORM_CLIENT_GLOO_ERRORS_H_

#include <exception>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "gloo/common/error.h"

namespace gradnorm {

template <typename Fn>
absl::Status CallGloo(absl::string_view call, Fn&& fn) {
  try {
    fn();
    return absl::OkStatus();
  } catch (const ::gloo::IoException& e) {
    const std::string message = absl::StrCat(call, " failed: ", e.what());
    if (absl::StrContains(e.what(), "Timed out") ||
        absl::StrContains(e.what(), "timeout")) {
      return absl::DeadlineExceededError(message);
    }
    return absl::UnavailableError(message);
  } catch (const ::gloo::InvalidOperationException& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(call, " failed: ", e.what()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(call, " failed: ", e.what()));
  } catch (...) {
    return absl::InternalError(
        absl::StrCat(call, " failed with an unknown exception"));
  }
}

}  // namespace gradnorm

#endif  // GRADNORM_CLIENT_GLOO_ERRORS_H_
