// The C ABI over the C++ client library: each function converts its
// arguments, calls the one C++ implementation, and converts the status.
#include "client/c_api/gradnorm.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/c_api/internal/callback_communicator.h"
#include "client/c_api/internal/last_error.h"
#include "client/c_api/internal/openmp_parallel_for.h"
#include "client/c_api/internal/tensors.h"
#include "client/coordinator_client.h"
#include "client/grad_norm_clipper.h"
#include "client/grad_utils.h"
#include "client/single_process_communicator.h"
#include "common/status_macros.h"
#include "google/protobuf/message.h"
#include "google/protobuf/util/json_util.h"
#include "gradnorm/v1/coordinator.pb.h"
#include "kernels/partial_norm.h"

struct gn_communicator {
  std::unique_ptr<gradnorm::c_api_internal::CallbackCommunicator> impl;
};

struct gn_coordinator_client {
  std::shared_ptr<gradnorm::CoordinatorClient> impl;
};

struct gn_clipper {
  // Stand-ins for the NULL communicators the caller passed.
  gradnorm::SingleProcessCommunicator own_dp_cp, own_tp, own_job;
  std::unique_ptr<gradnorm::GradNormClipper> impl;
  std::string reason_detail;
};

namespace gradnorm {
namespace c_api_internal {
namespace {

// The library's version (client/c_api/version.bzl); the Python package's
// __version__ is read from here.
constexpr char kVersion[] = GRADNORM_VERSION;

using ::gradnorm::c_api_internal::Return;

absl::Status NotNull(const void* p, const char* what) {
  if (p != nullptr) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(what, " is null; expected a valid pointer"));
}

// gn_use_openmp's executor; empty: gradnorm's own pool.
absl::Mutex executor_mu;
ParallelFor& Executor() ABSL_EXCLUSIVE_LOCKS_REQUIRED(executor_mu) {
  static auto* executor = new ParallelFor();
  return *executor;
}

ParallelFor CurrentExecutor() {
  absl::MutexLock lock(&executor_mu);
  return Executor();
}

// PartialNormOptions or ScaleOptions from a call's gn_exec_options.
template <typename Options>
Options Exec(const gn_exec_options* options) {
  Options out;
  out.parallel_for = CurrentExecutor();
  if (options != nullptr) {
    out.num_threads = options->num_threads;
    out.cuda_stream = options->cuda_stream;
    if constexpr (std::is_same_v<Options, PartialNormOptions>) {
      out.exact = options->exact != 0;
    }
  }
  return out;
}

Communicator& Or(gn_communicator* c, SingleProcessCommunicator& fallback) {
  return c == nullptr ? static_cast<Communicator&>(fallback) : *c->impl;
}

std::string Str(const char* s) { return s == nullptr ? std::string() : s; }

// The protobuf JSON parser's status as an absl::Status (its own status type
// differs between protobuf versions).
template <typename S>
absl::Status FromProtobuf(const S& status, const char* what) {
  if (status.ok()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      what, " does not parse: ", std::string(status.message()),
      "; expected the proto3 JSON mapping of gradnorm.v1 messages"));
}

absl::Status ParseJson(const char* json, google::protobuf::Message* message,
                       const char* what) {
  return FromProtobuf(google::protobuf::util::JsonStringToMessage(
                          json == nullptr ? "{}" : json, message),
                      what);
}

absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string out;
  auto status =
      google::protobuf::util::MessageToJsonString(message, &out, options);
  if (!status.ok()) {
    return absl::InternalError(absl::StrCat(
        "cannot print the response as JSON: ", std::string(status.message())));
  }
  return out;
}

char* CopyString(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out != nullptr) std::memcpy(out, s.c_str(), s.size() + 1);
  return out;
}

// One query: parse the request, call, print the response.
template <typename Request, typename Response>
absl::StatusOr<std::string> Call(
    const char* method, const char* request_json,
    const std::function<absl::StatusOr<Response>(const Request&)>& call) {
  Request request;
  RETURN_IF_ERROR(ParseJson(request_json, &request,
                            absl::StrCat(method, "'s request").c_str()));
  ASSIGN_OR_RETURN(Response response, call(request));
  return ToJson(response);
}

absl::StatusOr<std::string> CallCoordinator(CoordinatorClient& client,
                                            const std::string& method,
                                            const char* request_json,
                                            absl::Time deadline) {
  namespace v1 = ::gradnorm::v1;
  if (method == "RegisterRun") {
    return Call<v1::RegisterRunRequest, v1::RegisterRunResponse>(
        "RegisterRun", request_json, [&](const v1::RegisterRunRequest& r) {
          return client.RegisterRun(r.run_id(), r.config(), deadline);
        });
  }
  if (method == "GetRun") {
    return Call<v1::GetRunRequest, v1::GetRunResponse>(
        "GetRun", request_json,
        [&](const v1::GetRunRequest& r) -> absl::StatusOr<v1::GetRunResponse> {
          ASSIGN_OR_RETURN(v1::RunInfo run,
                           client.GetRun(r.run_id(), deadline));
          v1::GetRunResponse response;
          *response.mutable_run() = std::move(run);
          return response;
        });
  }
  if (method == "ListRuns") {
    return Call<v1::ListRunsRequest, v1::ListRunsResponse>(
        "ListRuns", request_json, [&](const v1::ListRunsRequest& r) {
          return client.ListRuns(r, deadline);
        });
  }
  if (method == "GetHistory") {
    return Call<v1::GetHistoryRequest, v1::GetHistoryResponse>(
        "GetHistory", request_json, [&](const v1::GetHistoryRequest& r) {
          return client.GetHistory(r, deadline);
        });
  }
  if (method == "GetSummary") {
    return Call<v1::GetSummaryRequest, v1::GetSummaryResponse>(
        "GetSummary", request_json, [&](const v1::GetSummaryRequest& r) {
          return client.GetSummary(r, deadline);
        });
  }
  if (method == "FinishRun") {
    return Call<v1::FinishRunRequest, v1::FinishRunResponse>(
        "FinishRun", request_json, [&](const v1::FinishRunRequest& r) {
          return client.FinishRun(r, deadline);
        });
  }
  if (method == "DeleteRun") {
    return Call<v1::DeleteRunRequest, v1::DeleteRunResponse>(
        "DeleteRun", request_json, [&](const v1::DeleteRunRequest& r) {
          return client.DeleteRun(r, deadline);
        });
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown method \"", method,
      "\"; expected RegisterRun, GetRun, ListRuns, GetHistory, GetSummary, "
      "FinishRun or DeleteRun"));
}

absl::StatusOr<CoordinatorClientOptions> ClientOptions(
    const gn_client_options& in) {
  CoordinatorClientOptions out;
  out.target = Str(in.target);
  switch (in.security) {
    case GN_INSECURE:
      out.security = CoordinatorClientOptions::Security::kInsecure;
      break;
    case GN_TLS:
      out.security = CoordinatorClientOptions::Security::kTls;
      break;
    case GN_MUTUAL_TLS:
      out.security = CoordinatorClientOptions::Security::kMutualTls;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("security ", in.security,
                       " is unknown; expected GN_INSECURE (0), GN_TLS (1) or "
                       "GN_MUTUAL_TLS (2)"));
  }
  out.root_certs_pem = Str(in.root_certs_pem);
  out.client_cert_pem = Str(in.client_cert_pem);
  out.client_key_pem = Str(in.client_key_pem);
  out.tls_server_name = Str(in.tls_server_name);
  out.bearer_token = Str(in.bearer_token);
  return out;
}

// Only the job's leader reads the config; one that does not parse travels
// to every rank through the clipper's collective Create (config_error), so
// no rank returns alone before it.
CoordinatorBinding Binding(const gn_coordinator_binding& in, bool leader) {
  CoordinatorBinding out;
  if (in.client != nullptr) out.client = in.client->impl;
  out.run_id = Str(in.run_id);
  out.participant = in.participant;
  const std::string config = Str(in.run_config_json);
  if (leader && !config.empty()) {
    gradnorm::v1::RunConfig parsed;
    out.config_error = ParseJson(config.c_str(), &parsed, "run_config_json");
    out.config = std::move(parsed);
  }
  // 0 takes the default; a negative value reaches Create's own check.
  if (in.report_timeout_s != 0) {
    out.report_timeout = absl::Seconds(in.report_timeout_s);
  }
  if (in.progress_interval_s != 0) {
    out.progress_interval = absl::Seconds(in.progress_interval_s);
  }
  return out;
}

absl::Status CreateClipper(gn_communicator* dp_cp, gn_communicator* tp,
                           gn_communicator* job,
                           const gn_clipper_options* options,
                           const gn_coordinator_binding* coordinator,
                           gn_clipper** out) {
  RETURN_IF_ERROR(NotNull(options, "options"));
  RETURN_IF_ERROR(NotNull(out, "out"));
  *out = nullptr;
  auto clipper = std::make_unique<gn_clipper>();
  Communicator& job_comm = Or(job, clipper->own_job);
  std::optional<CoordinatorBinding> binding;
  if (coordinator != nullptr) {
    binding = Binding(*coordinator, job_comm.rank() == 0);
  }
  GradNormClipperOptions clipper_options;
  clipper_options.norm_type = options->norm_type;
  clipper_options.max_norm = options->max_norm;
  clipper_options.error_if_nonfinite = options->error_if_nonfinite != 0;
  clipper_options.partial.num_threads = options->num_threads;
  clipper_options.partial.exact = options->exact != 0;
  clipper_options.scale.num_threads = options->num_threads;
  clipper_options.partial.parallel_for = CurrentExecutor();
  clipper_options.scale.parallel_for = clipper_options.partial.parallel_for;
  ASSIGN_OR_RETURN(clipper->impl,
                   GradNormClipper::Create(
                       &Or(dp_cp, clipper->own_dp_cp), &Or(tp, clipper->own_tp),
                       &job_comm, clipper_options, std::move(binding)));
  *out = clipper.release();
  return absl::OkStatus();
}

absl::Status ClipperStep(gn_clipper* clipper, uint64_t step,
                         const gn_tensors* tensors, void* cuda_stream,
                         gn_step_result* out) {
  RETURN_IF_ERROR(NotNull(clipper, "clipper"));
  RETURN_IF_ERROR(NotNull(out, "out"));
  ASSIGN_OR_RETURN(TensorViews views, ReadTensors(tensors));
  ASSIGN_OR_RETURN(
      StepResult result,
      clipper->impl->Step(step, views.grads, cuda_stream, views.input_error));
  clipper->reason_detail = std::move(result.reason_detail);
  out->total_norm = result.total_norm;
  out->clip_coef = result.clip_coef;
  out->action = static_cast<int32_t>(result.action);
  out->reason = static_cast<int32_t>(result.reason);
  out->effective_max_norm = result.effective_max_norm;
  out->nonfinite = result.nonfinite ? 1 : 0;
  out->job_partial = result.job_partial;
  out->slowest_participant = result.slowest_participant;
  out->arrival_spread_seconds = result.arrival_spread_seconds;
  out->exact = result.exact ? 1 : 0;
  out->reason_detail = clipper->reason_detail.c_str();
  return absl::OkStatus();
}

}  // namespace
}  // namespace c_api_internal
}  // namespace gradnorm

using ::gradnorm::c_api_internal::NotNull;
using ::gradnorm::c_api_internal::ReadTensors;
using ::gradnorm::c_api_internal::Return;
using ::gradnorm::c_api_internal::TensorViews;

extern "C" {

const char* gn_version(void) { return gradnorm::c_api_internal::kVersion; }

int32_t gn_abi_version(void) { return GN_ABI_VERSION; }

const char* gn_last_error(void) {
  return gradnorm::c_api_internal::LastErrorMessage();
}

const char* gn_code_name(gn_code code) {
  if (code < GN_OK || code > GN_UNAUTHENTICATED) return "UNKNOWN";
  // absl's names are static strings ("INVALID_ARGUMENT").
  static const auto* names = [] {
    auto* m = new std::map<gn_code, std::string>();
    for (gn_code c = GN_OK; c <= GN_UNAUTHENTICATED; ++c) {
      (*m)[c] = absl::StatusCodeToString(static_cast<absl::StatusCode>(c));
    }
    return m;
  }();
  return names->at(code).c_str();
}

void gn_free(void* p) { std::free(p); }

gn_code gn_partial_norm(const gn_tensors* tensors, double p,
                        const gn_exec_options* options, double* value,
                        int32_t* nonfinite) {
  if (value == nullptr || nonfinite == nullptr) {
    return Return(NotNull(nullptr, "value or nonfinite"));
  }
  absl::StatusOr<TensorViews> views = ReadTensors(tensors);
  if (!views.ok()) return Return(views.status());
  if (!views->input_error.ok()) return Return(views->input_error);
  absl::StatusOr<gradnorm::PartialNorm> partial = gradnorm::ComputePartialNorm(
      views->grads, p,
      gradnorm::c_api_internal::Exec<gradnorm::PartialNormOptions>(options));
  if (!partial.ok()) return Return(partial.status());
  *value = partial->value;
  *nonfinite = partial->nonfinite ? 1 : 0;
  return Return(absl::OkStatus());
}

gn_code gn_scale(const gn_tensors* tensors, double coef,
                 const gn_exec_options* options) {
  absl::StatusOr<TensorViews> views = ReadTensors(tensors);
  if (!views.ok()) return Return(views.status());
  if (!views->input_error.ok()) return Return(views->input_error);
  return Return(gradnorm::ScaleInPlace(
      views->grads, coef,
      gradnorm::c_api_internal::Exec<gradnorm::ScaleOptions>(options)));
}

gn_code gn_use_openmp(const char* library) {
  gradnorm::ParallelFor executor;
  if (library != nullptr && library[0] != '\0') {
    auto loaded = gradnorm::c_api_internal::OpenMpParallelFor(library);
    if (!loaded.ok()) return Return(loaded.status());
    executor = std::move(*loaded);
  }
  absl::MutexLock lock(&gradnorm::c_api_internal::executor_mu);
  gradnorm::c_api_internal::Executor() = std::move(executor);
  return Return(absl::OkStatus());
}

gn_code gn_communicator_create(const gn_communicator_callbacks* callbacks,
                               gn_communicator** out) {
  if (callbacks == nullptr || out == nullptr) {
    return Return(NotNull(nullptr, "callbacks or out"));
  }
  *out = nullptr;
  auto created =
      gradnorm::c_api_internal::CallbackCommunicator::Create(*callbacks);
  if (!created.ok()) return Return(created.status());
  *out = new gn_communicator{std::move(*created)};
  return Return(absl::OkStatus());
}

void gn_communicator_destroy(gn_communicator* communicator) {
  delete communicator;
}

void gn_set_callback_error(const char* message) {
  gradnorm::c_api_internal::SetCallbackMessage(message == nullptr ? ""
                                                                  : message);
}

gn_code gn_get_grad_norm(const gn_tensors* tensors, gn_communicator* dp_cp,
                         gn_communicator* tp, double norm_type,
                         int32_t error_if_nonfinite,
                         const gn_exec_options* options,
                         gn_grad_norm_result* out) {
  if (out == nullptr) return Return(NotNull(nullptr, "out"));
  absl::StatusOr<TensorViews> views = ReadTensors(tensors);
  if (!views.ok()) return Return(views.status());
  gradnorm::GradNormOptions norm_options;
  norm_options.error_if_nonfinite = error_if_nonfinite != 0;
  norm_options.partial =
      gradnorm::c_api_internal::Exec<gradnorm::PartialNormOptions>(options);
  norm_options.input_error = views->input_error;
  gradnorm::SingleProcessCommunicator own_dp_cp, own_tp;
  absl::StatusOr<gradnorm::GradNormResult> result = gradnorm::GetGradNorm(
      views->grads, gradnorm::c_api_internal::Or(dp_cp, own_dp_cp),
      gradnorm::c_api_internal::Or(tp, own_tp), norm_type, norm_options);
  if (!result.ok()) return Return(result.status());
  out->total_norm = result->total_norm;
  out->partial = result->partial;
  out->nonfinite = result->nonfinite ? 1 : 0;
  out->num_elements = result->num_elements;
  return Return(absl::OkStatus());
}

gn_code gn_clip_grad_by_total_norm(const gn_tensors* tensors, double max_norm,
                                   double total_norm,
                                   int32_t error_if_nonfinite,
                                   const gn_exec_options* options,
                                   gn_clip_result* out) {
  if (out == nullptr) return Return(NotNull(nullptr, "out"));
  absl::StatusOr<TensorViews> views = ReadTensors(tensors);
  if (!views.ok()) return Return(views.status());
  if (!views->input_error.ok()) return Return(views->input_error);
  gradnorm::ClipOptions clip_options;
  clip_options.error_if_nonfinite = error_if_nonfinite != 0;
  clip_options.scale =
      gradnorm::c_api_internal::Exec<gradnorm::ScaleOptions>(options);
  absl::StatusOr<gradnorm::ClipResult> result = gradnorm::ClipGradByTotalNorm(
      views->grads, max_norm, total_norm, clip_options);
  if (!result.ok()) return Return(result.status());
  out->clip_coef = result->clip_coef;
  out->clipped = result->clipped ? 1 : 0;
  out->nonfinite = result->nonfinite ? 1 : 0;
  return Return(absl::OkStatus());
}

gn_code gn_coordinator_client_create(const gn_client_options* options,
                                     gn_coordinator_client** out) {
  if (options == nullptr || out == nullptr) {
    return Return(NotNull(nullptr, "options or out"));
  }
  *out = nullptr;
  auto client_options = gradnorm::c_api_internal::ClientOptions(*options);
  if (!client_options.ok()) return Return(client_options.status());
  auto client = gradnorm::CoordinatorClient::Create(*client_options);
  if (!client.ok()) return Return(client.status());
  *out = new gn_coordinator_client{std::move(*client)};
  return Return(absl::OkStatus());
}

void gn_coordinator_client_destroy(gn_coordinator_client* client) {
  delete client;
}

gn_code gn_coordinator_client_call(gn_coordinator_client* client,
                                   const char* method, const char* request_json,
                                   double timeout_s, char** response_json) {
  if (client == nullptr || method == nullptr || response_json == nullptr) {
    return Return(NotNull(nullptr, "client, method or response_json"));
  }
  *response_json = nullptr;
  if (!(timeout_s > 0) || std::isinf(timeout_s)) {
    return Return(absl::InvalidArgumentError(absl::StrCat(
        "timeout_s ", timeout_s, " is invalid; expected finite seconds > 0")));
  }
  absl::StatusOr<std::string> response =
      gradnorm::c_api_internal::CallCoordinator(
          *client->impl, method, request_json,
          absl::Now() + absl::Seconds(timeout_s));
  if (!response.ok()) return Return(response.status());
  *response_json = gradnorm::c_api_internal::CopyString(*response);
  if (*response_json == nullptr) {
    return Return(
        absl::ResourceExhaustedError("cannot allocate the response string"));
  }
  return Return(absl::OkStatus());
}

gn_code gn_clipper_create(gn_communicator* dp_cp, gn_communicator* tp,
                          gn_communicator* job,
                          const gn_clipper_options* options,
                          const gn_coordinator_binding* coordinator,
                          gn_clipper** out) {
  return Return(gradnorm::c_api_internal::CreateClipper(dp_cp, tp, job, options,
                                                        coordinator, out));
}

void gn_clipper_destroy(gn_clipper* clipper) { delete clipper; }

gn_code gn_clipper_step(gn_clipper* clipper, uint64_t step,
                        const gn_tensors* tensors, void* cuda_stream,
                        gn_step_result* out) {
  return Return(gradnorm::c_api_internal::ClipperStep(clipper, step, tensors,
                                                      cuda_stream, out));
}

}  // extern "C"
