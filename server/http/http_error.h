// Errors on the coordinator's HTTP port: an absl::Status as an HTTP status
// and a JSON body, {"code":"NOT_FOUND","message":"..."}.
//
//   return ErrorResponse(absl::NotFoundError("run r is not registered"));
#ifndef GRADNORM_SERVER_HTTP_HTTP_ERROR_H_
#define GRADNORM_SERVER_HTTP_HTTP_ERROR_H_

#include "absl/status/status.h"
#include "server/http/http_message.h"

namespace gradnorm {
namespace server {

// The HTTP status of an absl::StatusCode (OK 200, INVALID_ARGUMENT 400,
// UNAUTHENTICATED 401, PERMISSION_DENIED 403, NOT_FOUND 404, ...).
int HttpStatusOf(absl::StatusCode code);

// {"code":"NOT_FOUND","message":"..."} with HttpStatusOf(status.code()).
HttpResponse ErrorResponse(const absl::Status& status);

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_HTTP_HTTP_ERROR_H_
