#include "client/grad_norm_clipper.h"

#include <cmath>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/grad_utils.h"
#include "common/status_macros.h"

namespace gradnorm {
namespace {

constexpr int kLeader = 0;

// The leader's outcome as bytes for BroadcastBytes: status code (int32),
// message length (uint32), message, then the payload (a serialized proto).
std::string EncodeOutcome(const absl::Status& status, const std::string& payload) {
  const int32_t code = static_cast<int32_t>(status.code());
  const uint32_t length = static_cast<uint32_t>(status.message().size());
  std::string bytes(sizeof(code) + sizeof(length), '\0');
  std::memcpy(&bytes[0], &code, sizeof(code));
  std::memcpy(&bytes[sizeof(code)], &length, sizeof(length));
  absl::StrAppend(&bytes, status.message(), payload);
  return bytes;
}

// The status the leader encoded (OK with `*payload` filled, or its error).
absl::Status DecodeOutcome(const std::string& bytes, std::string* payload) {
  int32_t code;
  uint32_t length;
  if (bytes.size() < sizeof(code) + sizeof(length)) {
    return absl::InternalError(absl::StrCat(
        "malformed outcome from the job leader: ", bytes.size(), " bytes"));
  }
  std::memcpy(&code, bytes.data(), sizeof(code));
  std::memcpy(&length, bytes.data() + sizeof(code), sizeof(length));
  const size_t header = sizeof(code) + sizeof(length);
  if (bytes.size() < header + length) {
    return absl::InternalError("malformed outcome from the job leader");
  }
  if (code != 0) {
    return absl::Status(static_cast<absl::StatusCode>(code),
                        bytes.substr(header, length));
  }
  *payload = bytes.substr(header + length);
  return absl::OkStatus();
}

absl::Status NonFiniteError(double total_norm) {
  return absl::FailedPreconditionError(absl::StrCat(
      "the total gradient norm is ", total_norm,
      " (non-finite gradients) and error_if_nonfinite is set; gradients left "
      "unchanged"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<GradNormClipper>> GradNormClipper::Create(
    Communicator* dp_cp, Communicator* tp, Communicator* job,
    const GradNormClipperOptions& options,
    std::optional<CoordinatorBinding> coordinator) {
  if (dp_cp == nullptr || tp == nullptr || job == nullptr) {
    return absl::InvalidArgumentError(
        "dp_cp, tp and job communicators must all be set (use "
        "SingleProcessCommunicator for a group of one)");
  }
  RETURN_IF_ERROR(ValidateNormType(options.norm_type));
  RETURN_IF_ERROR(ValidateMaxNorm(options.max_norm));
  if (coordinator.has_value()) {
    if (coordinator->run_id.empty()) {
      return absl::InvalidArgumentError("coordinator binding has no run_id");
    }
    if (job->rank() == kLeader && coordinator->client == nullptr) {
      return absl::InvalidArgumentError(
          "the job leader (job rank 0) needs a CoordinatorClient");
    }
    if (coordinator->config.has_value() &&
        coordinator->config->norm_type() != 0 &&
        coordinator->config->norm_type() != options.norm_type) {
      return absl::InvalidArgumentError(absl::StrCat(
          "run config norm_type ", coordinator->config->norm_type(),
          " differs from the clipper's norm_type ", options.norm_type));
    }
    if (coordinator->config.has_value()) {
      coordinator->config->set_norm_type(options.norm_type);
      std::string outcome;
      if (job->rank() == kLeader) {
        absl::StatusOr<gradnorm::v1::RegisterRunResponse> registered =
            coordinator->client->RegisterRun(
                coordinator->run_id, *coordinator->config,
                absl::Now() + coordinator->report_timeout);
        outcome = EncodeOutcome(registered.status(), "");
      }
      RETURN_IF_ERROR(job->BroadcastBytes(&outcome, kLeader));
      std::string unused;
      RETURN_IF_ERROR(DecodeOutcome(outcome, &unused));
    }
  }
  return std::unique_ptr<GradNormClipper>(
      new GradNormClipper(dp_cp, tp, job, options, std::move(coordinator)));
}

GradNormClipper::GradNormClipper(Communicator* dp_cp, Communicator* tp,
                                 Communicator* job,
                                 const GradNormClipperOptions& options,
                                 std::optional<CoordinatorBinding> coordinator)
    : dp_cp_(dp_cp),
      tp_(tp),
      job_(job),
      options_(options),
      coordinator_(std::move(coordinator)) {}

absl::StatusOr<StepResult> GradNormClipper::DecideLocally(
    double total_norm) const {
  StepResult result;
  result.total_norm = total_norm;
  result.effective_max_norm = options_.max_norm;
  if (!std::isfinite(total_norm)) {
    result.nonfinite = true;
    result.action = gradnorm::v1::ACTION_SKIP;
    result.reason = gradnorm::v1::REASON_NONFINITE;
    result.reason_detail = absl::StrCat("norm ", total_norm, " is not finite");
    return result;
  }
  const double coef = ClipCoefficient(options_.max_norm, total_norm);
  if (coef < 1.0) {
    result.action = gradnorm::v1::ACTION_CLIP;
    result.reason = gradnorm::v1::REASON_ABOVE_MAX_NORM;
    result.clip_coef = coef;
    result.reason_detail =
        absl::StrCat("norm ", total_norm, " > max_norm ", options_.max_norm);
  } else {
    result.action = gradnorm::v1::ACTION_NONE;
    result.reason = gradnorm::v1::REASON_WITHIN_MAX_NORM;
    result.reason_detail =
        absl::StrCat("norm ", total_norm, " <= max_norm ", options_.max_norm);
  }
  return result;
}

absl::StatusOr<gradnorm::v1::RoundResult> GradNormClipper::ReportAndShare(
    uint64_t step, double partial, uint64_t num_elements) {
  std::string outcome;
  if (job_->rank() == kLeader) {
    gradnorm::v1::ReportRequest request;
    request.set_run_id(coordinator_->run_id);
    request.set_step(step);
    request.set_participant(coordinator_->participant);
    request.set_partial(partial);
    request.set_num_elements(num_elements);
    absl::StatusOr<gradnorm::v1::RoundResult> result =
        coordinator_->client->Report(request,
                                     absl::Now() + coordinator_->report_timeout);
    outcome = EncodeOutcome(result.status(),
                            result.ok() ? result->SerializeAsString() : "");
  }
  // Also an error goes to every rank: they would otherwise wait for a result
  // until their communicator timed out.
  RETURN_IF_ERROR(job_->BroadcastBytes(&outcome, kLeader));
  std::string payload;
  RETURN_IF_ERROR(DecodeOutcome(outcome, &payload));
  gradnorm::v1::RoundResult result;
  if (!result.ParseFromString(payload)) {
    return absl::InternalError("malformed RoundResult from the job leader");
  }
  return result;
}

absl::StatusOr<StepResult> GradNormClipper::Step(
    uint64_t step, absl::Span<const GradTensor> grads) {
  GradNormOptions norm_options;
  norm_options.partial = options_.partial;
  ASSIGN_OR_RETURN(GradNormResult norm,
                   GetGradNorm(grads, *dp_cp_, *tp_, options_.norm_type,
                               norm_options));
  StepResult result;
  if (!coordinator_.has_value()) {
    ASSIGN_OR_RETURN(result, DecideLocally(norm.total_norm));
  } else {
    ASSIGN_OR_RETURN(gradnorm::v1::RoundResult round,
                     ReportAndShare(step, norm.partial, norm.num_elements));
    result.total_norm = round.total_norm();
    result.clip_coef = round.action() == gradnorm::v1::ACTION_CLIP
                           ? round.clip_coef()
                           : 1.0;
    result.action = round.action();
    result.reason = round.reason();
    result.reason_detail = round.reason_detail();
    result.effective_max_norm = round.effective_max_norm();
    result.slowest_participant = round.slowest_participant();
    result.arrival_spread_seconds = round.arrival_spread_seconds();
    result.nonfinite = !std::isfinite(round.total_norm());
    if (result.action == gradnorm::v1::ACTION_CLIP &&
        !(result.clip_coef >= 0.0 && result.clip_coef < 1.0)) {
      return absl::InternalError(absl::StrCat(
          "coordinator answered CLIP with clip_coef ", result.clip_coef,
          " for step ", step, ": expected 0 <= coef < 1"));
    }
  }
  result.job_partial = norm.partial;
  if (result.nonfinite && options_.error_if_nonfinite) {
    return NonFiniteError(result.total_norm);
  }
  if (result.action == gradnorm::v1::ACTION_CLIP) {
    RETURN_IF_ERROR(ScaleInPlace(grads, result.clip_coef, options_.scale));
  }
  return result;
}

}  // namespace gradnorm
