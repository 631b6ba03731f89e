#include "client/grad_norm_clipper.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <utility>

#include "absl/functional/function_ref.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "client/grad_utils.h"
#include "common/status_macros.h"

namespace gradnorm {
namespace {

constexpr int kLeader = 0;

// A broadcast of the leader: code (int32), message length (uint32), message,
// then the payload (a serialized proto). The code is an absl::StatusCode for
// the final outcome (OK: the payload is the answer; else the leader's error),
// or kStillWaiting, which no absl::StatusCode is.
constexpr int32_t kStillWaiting = -1;

std::string EncodeOutcome(int32_t code, absl::string_view message,
                          absl::string_view payload) {
  const uint32_t length = static_cast<uint32_t>(message.size());
  std::string bytes(sizeof(code) + sizeof(length), '\0');
  std::memcpy(&bytes[0], &code, sizeof(code));
  std::memcpy(&bytes[sizeof(code)], &length, sizeof(length));
  absl::StrAppend(&bytes, message, payload);
  return bytes;
}

struct Outcome {
  bool still_waiting = false;
  // The final outcome: OK with `payload`, or the leader's error.
  absl::Status status;
  std::string payload;
};

absl::StatusOr<Outcome> DecodeOutcome(const std::string& bytes) {
  int32_t code;
  uint32_t length;
  const size_t header = sizeof(code) + sizeof(length);
  if (bytes.size() < header) {
    return absl::InternalError(
        absl::StrCat("malformed outcome from the job leader: ", bytes.size(),
                     " bytes; expected at least ", header));
  }
  std::memcpy(&code, bytes.data(), sizeof(code));
  std::memcpy(&length, bytes.data() + sizeof(code), sizeof(length));
  if (bytes.size() - header < length) {
    return absl::InternalError(
        absl::StrCat("malformed outcome from the job leader: a ", length,
                     "-byte message in ", bytes.size() - header, " bytes"));
  }
  constexpr int32_t kLastCode =
      static_cast<int32_t>(absl::StatusCode::kUnauthenticated);
  if (code != kStillWaiting && (code < 0 || code > kLastCode)) {
    return absl::InternalError(absl::StrCat(
        "malformed outcome from the job leader: code ", code,
        "; expected a status code or ", kStillWaiting, " (still waiting)"));
  }
  Outcome outcome;
  if (code == kStillWaiting) {
    outcome.still_waiting = true;
  } else if (code != 0) {
    outcome.status = absl::Status(static_cast<absl::StatusCode>(code),
                                  bytes.substr(header, length));
  } else {
    outcome.payload = bytes.substr(header + length);
  }
  return outcome;
}

// Whether a call of the leader ended because its (slice's) deadline came:
// DEADLINE_EXCEEDED, from the client (no answer by then) or from the
// coordinator (the caller's deadline passed; the report stays in its round).
// A round that timed out is ABORTED and final; a coordinator older than that
// distinction answers the repeated report with FAILED_PRECONDITION (step
// abandoned, and why), also final.
bool SliceEnded(const absl::Status& status) {
  return status.code() == absl::StatusCode::kDeadlineExceeded;
}

// The job leader's coordinator call, shared with every rank of `job`: all of
// them call this together; only the leader runs `call`, which returns the
// answer's payload, with the deadline to pass on. The leader allows
// binding.report_timeout in all but calls with deadlines at most
// binding.progress_interval ahead: when a call ends at such a deadline before
// the final one, it broadcasts kStillWaiting and makes the same call again
// (coordinator calls are idempotent: a report is kept in its round when its
// caller's deadline passes, and repeating it rejoins the round). So no rank
// waits in a broadcast longer than about progress_interval, however long the
// leader waits for the other jobs. The final outcome, the answer or an error,
// is returned on every rank.
absl::StatusOr<std::string> ShareLeaderCall(
    Communicator& job, const CoordinatorBinding& binding,
    absl::FunctionRef<absl::StatusOr<std::string>(absl::Time deadline)> call) {
  if (job.rank() != kLeader) {
    for (;;) {
      std::string bytes;
      RETURN_IF_ERROR(job.BroadcastBytes(&bytes, kLeader));
      ASSIGN_OR_RETURN(Outcome outcome, DecodeOutcome(bytes));
      if (outcome.still_waiting) continue;
      if (!outcome.status.ok()) return outcome.status;
      return std::move(outcome.payload);
    }
  }
  const absl::Time final_deadline = absl::Now() + binding.report_timeout;
  for (;;) {
    const absl::Time start = absl::Now();
    const absl::Time slice =
        std::min(final_deadline, start + binding.progress_interval);
    absl::StatusOr<std::string> result = call(slice);
    if (slice < final_deadline && SliceEnded(result.status())) {
      std::string still_waiting = EncodeOutcome(kStillWaiting, "", "");
      RETURN_IF_ERROR(job.BroadcastBytes(&still_waiting, kLeader));
      continue;
    }
    // Also an error goes to every rank: they would otherwise wait for an
    // answer until their communicator timed out.
    std::string bytes =
        result.ok()
            ? EncodeOutcome(0, "", *result)
            : EncodeOutcome(static_cast<int32_t>(result.status().code()),
                            result.status().message(), "");
    RETURN_IF_ERROR(job.BroadcastBytes(&bytes, kLeader));
    return result;
  }
}

// Argument checks of every rank.
absl::Status ValidateArguments(
    const GradNormClipperOptions& options,
    const std::optional<CoordinatorBinding>& binding) {
  RETURN_IF_ERROR(ValidateNormType(options.norm_type));
  RETURN_IF_ERROR(ValidateMaxNorm(options.max_norm));
  if (!binding.has_value()) return absl::OkStatus();
  if (binding->run_id.empty()) {
    return absl::InvalidArgumentError(
        "coordinator binding has no run_id; expected the run's id");
  }
  if (binding->progress_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "coordinator binding progress_interval is ",
        absl::FormatDuration(binding->progress_interval),
        "; expected > 0 (and well below the job communicator's timeout)"));
  }
  if (binding->report_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "coordinator binding report_timeout is ",
        absl::FormatDuration(binding->report_timeout), "; expected > 0"));
  }
  return absl::OkStatus();
}

// Whether a run's reports must carry exact partials (RunConfig.inexact).
bool RequiresExact(const gradnorm::v1::RunConfig& config) {
  return (config.norm_type() == 1.0 || config.norm_type() == 2.0) &&
         !config.inexact();
}

// The leader's part of Create: registers the run (with a config) or looks it
// up, and checks that its norm_type is the clipper's. Returns whether the run
// requires exact partials.
absl::StatusOr<bool> CheckRun(const CoordinatorBinding& binding,
                              double norm_type, absl::Time deadline) {
  RETURN_IF_ERROR(binding.config_error);
  if (binding.client == nullptr) {
    return absl::InvalidArgumentError(
        "the job leader (job rank 0) needs a CoordinatorClient");
  }
  gradnorm::v1::RunConfig run_config;
  if (binding.config.has_value()) {
    gradnorm::v1::RunConfig config = *binding.config;
    if (config.norm_type() != 0 && config.norm_type() != norm_type) {
      return absl::InvalidArgumentError(
          absl::StrCat("run config norm_type ", config.norm_type(),
                       " differs from the clipper's norm_type ", norm_type));
    }
    config.set_norm_type(norm_type);
    ASSIGN_OR_RETURN(
        gradnorm::v1::RegisterRunResponse registered,
        binding.client->RegisterRun(binding.run_id, config, deadline));
    run_config = registered.run().config();
  } else {
    absl::StatusOr<gradnorm::v1::RunInfo> run =
        binding.client->GetRun(binding.run_id, deadline);
    if (run.status().code() == absl::StatusCode::kNotFound) {
      return absl::NotFoundError(absl::StrCat(
          run.status().message(),
          " (the clipper registers the run only when the job leader's "
          "CoordinatorBinding has a config)"));
    }
    if (!run.ok()) return run.status();
    run_config = run->config();
  }
  const double run_norm_type = run_config.norm_type();
  if (run_norm_type != norm_type) {
    return absl::FailedPreconditionError(absl::StrCat(
        "run ", binding.run_id, " has norm_type ", run_norm_type,
        " but the clipper's norm_type is ", norm_type,
        "; expected the same p (the coordinator combines the jobs' partials "
        "with the run's)"));
  }
  return RequiresExact(run_config);
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
  const absl::Status valid = ValidateArguments(options, coordinator);
  if (coordinator.has_value()) {
    // Every rank joins the leader's outcome, whatever its own arguments and
    // config: a rank that returned before it would leave the others waiting
    // in a broadcast nobody joins. The leader's errors travel in it, and so
    // does whether the run requires exact partials ("1"), which every rank
    // must then compute.
    ASSIGN_OR_RETURN(
        std::string exact,
        ShareLeaderCall(
            *job, *coordinator,
            [&](absl::Time deadline) -> absl::StatusOr<std::string> {
              RETURN_IF_ERROR(valid);
              ASSIGN_OR_RETURN(
                  bool required,
                  CheckRun(*coordinator, options.norm_type, deadline));
              return std::string(required ? "1" : "0");
            }));
    RETURN_IF_ERROR(valid);
    GradNormClipperOptions effective = options;
    effective.partial.exact = options.partial.exact || exact == "1";
    return std::unique_ptr<GradNormClipper>(
        new GradNormClipper(dp_cp, tp, job, effective, std::move(coordinator)));
  }
  RETURN_IF_ERROR(valid);
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
    uint64_t step, const GradNormResult& norm) {
  gradnorm::v1::ReportRequest request;
  request.set_run_id(coordinator_->run_id);
  request.set_step(step);
  request.set_participant(coordinator_->participant);
  request.set_partial(norm.partial);
  request.set_num_elements(norm.num_elements);
  // Exact partials travel whole: the coordinator adds them with no rounding.
  if (norm.exact.has_value()) request.set_exact_partial(norm.exact->Encode());
  ASSIGN_OR_RETURN(
      std::string payload,
      ShareLeaderCall(*job_, *coordinator_,
                      [&](absl::Time deadline) -> absl::StatusOr<std::string> {
                        ASSIGN_OR_RETURN(
                            gradnorm::v1::RoundResult result,
                            coordinator_->client->Report(request, deadline));
                        return result.SerializeAsString();
                      }));
  gradnorm::v1::RoundResult result;
  if (!result.ParseFromString(payload)) {
    return absl::InternalError("malformed RoundResult from the job leader");
  }
  return result;
}

absl::StatusOr<StepResult> GradNormClipper::Step(
    uint64_t step, absl::Span<const GradTensor> grads) {
  return StepWith(step, grads, options_.partial, options_.scale,
                  absl::OkStatus());
}

absl::StatusOr<StepResult> GradNormClipper::Step(
    uint64_t step, absl::Span<const GradTensor> grads, void* cuda_stream) {
  return Step(step, grads, cuda_stream, absl::OkStatus());
}

absl::StatusOr<StepResult> GradNormClipper::Step(
    uint64_t step, absl::Span<const GradTensor> grads, void* cuda_stream,
    const absl::Status& input_error) {
  PartialNormOptions partial = options_.partial;
  ScaleOptions scale = options_.scale;
  partial.cuda_stream = cuda_stream;
  scale.cuda_stream = cuda_stream;
  return StepWith(step, grads, partial, scale, input_error);
}

absl::StatusOr<StepResult> GradNormClipper::StepWith(
    uint64_t step, absl::Span<const GradTensor> grads,
    const PartialNormOptions& partial, const ScaleOptions& scale,
    const absl::Status& input_error) {
  GradNormOptions norm_options;
  norm_options.partial = partial;
  norm_options.input_error = input_error;
  ASSIGN_OR_RETURN(
      GradNormResult norm,
      GetGradNorm(grads, *dp_cp_, *tp_, options_.norm_type, norm_options));
  StepResult result;
  if (!coordinator_.has_value()) {
    ASSIGN_OR_RETURN(result, DecideLocally(norm.total_norm));
    result.exact = norm.exact.has_value();
  } else {
    ASSIGN_OR_RETURN(gradnorm::v1::RoundResult round,
                     ReportAndShare(step, norm));
    result.total_norm = round.total_norm();
    result.clip_coef =
        round.action() == gradnorm::v1::ACTION_CLIP ? round.clip_coef() : 1.0;
    result.action = round.action();
    result.reason = round.reason();
    result.reason_detail = round.reason_detail();
    result.effective_max_norm = round.effective_max_norm();
    result.slowest_participant = round.slowest_participant();
    result.arrival_spread_seconds = round.arrival_spread_seconds();
    result.nonfinite = !std::isfinite(round.total_norm());
    result.exact = round.exact();
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
    RETURN_IF_ERROR(ScaleInPlace(grads, result.clip_coef, scale));
  }
  return result;
}

}  // namespace gradnorm
