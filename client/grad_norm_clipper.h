// GradNormClipper: the one object a training loop needs to compute the true
// global gradient norm and clip with it (semantics: grad_utils.h; protocol:
// coordinator.proto).
//
// Each Step computes this rank's partial norm, reduces it over the dp_cp group
// and then the tp group (so every rank of the job holds the job's partial),
// and then either decides locally (no coordinator: a complete single-job
// clipper) or lets the job's leader (rank 0 of the job communicator) report
// the job's partial to the coordinator, which combines all jobs of the run.
// The leader broadcasts the coordinator's answer, or its error, to every rank
// of the job, so no rank waits for an answer that never comes; while it waits
// for the other jobs it tells the job's ranks so every progress_interval, so
// their broadcast waits about that long at most, however late the other jobs
// are. Unless the action is SKIP, gradients are clipped in place by the
// returned coefficient.
//
//   // Once, after the process groups exist:
//   GradNormClipperOptions options;
//   options.norm_type = 2.0;
//   options.max_norm = 1.0;
//   CoordinatorBinding coordinator;              // optional: multi-job runs
//   coordinator.client = std::move(client);      // needed on the job leader
//   coordinator.run_id = "llama-70b-run7";
//   coordinator.participant = job_index;         // in [0, jobs)
//   coordinator.config = run_config;             // optional, leader's:
//   register ASSIGN_OR_RETURN(std::unique_ptr<GradNormClipper> clipper,
//                    GradNormClipper::Create(dp_cp.get(), tp.get(), job.get(),
//                                            options, coordinator));
//   // Every step, on every rank, after backward():
//   ASSIGN_OR_RETURN(StepResult r, clipper->Step(step, grad_views));
//   if (r.action != gradnorm::v1::ACTION_SKIP) optimizer.step();
//
// Errors from Step are the same on every rank of the job: INVALID_ARGUMENT or
// ABORTED for bad gradient views (see GetGradNorm), the communicators' errors
// (DEADLINE_EXCEEDED, UNAVAILABLE), the coordinator's errors (see
// coordinator.proto), FAILED_PRECONDITION for a non-finite norm with
// error_if_nonfinite. After a communicator error the communicators, and so the
// clipper, are unusable.
//
// Thread-safety: not thread-safe; one Step at a time, on every rank in the
// same order of steps.
#ifndef GRADNORM_CLIENT_GRAD_NORM_CLIPPER_H_
#define GRADNORM_CLIENT_GRAD_NORM_CLIPPER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "client/communicator.h"
#include "client/coordinator_client.h"
#include "client/grad_utils.h"
#include "gradnorm/v1/coordinator.pb.h"
#include "kernels/grad_tensor.h"
#include "kernels/partial_norm.h"

namespace gradnorm {

struct GradNormClipperOptions {
  // p of the p-norm (> 0, or +Inf). With a coordinator it must equal the
  // run's norm_type (Create checks it).
  double norm_type = 2.0;
  // Clip threshold when there is no coordinator (with one, the coordinator
  // decides).
  double max_norm = 1.0;
  // A non-finite norm fails the step with FAILED_PRECONDITION instead of SKIP.
  bool error_if_nonfinite = false;
  PartialNormOptions partial;
  ScaleOptions scale;
};

// Where and as whom a job reports. Every rank of the job passes one; only the
// leader's client and config are used.
struct CoordinatorBinding {
  // Needed on the job leader; may be null on the other ranks.
  std::shared_ptr<CoordinatorClient> client;
  std::string run_id;
  // This job's participant index in [0, config.participants).
  uint32_t participant = 0;
  // Read on the leader only (the other ranks may leave it unset). When set,
  // the leader registers the run at Create (a no-op when it exists with the
  // same config); when not, the run must already be registered. Either way
  // the run's norm_type must be the clipper's. A run of p = 1 or 2 that is not
  // inexact (RunConfig.inexact) takes exact partials only: the clipper then
  // computes them (PartialNormOptions::exact) whatever its options say.
  std::optional<gradnorm::v1::RunConfig> config;
  // Read on the leader only: an error its caller met building `config` (a
  // config text that did not parse, say). Create then fails with it on every
  // rank of the job, through the leader's outcome, instead of the leader
  // returning alone while the others wait for it.
  absl::Status config_error;
  // Deadline of each Report (and of the registration), from its start (> 0).
  absl::Duration report_timeout = absl::Minutes(2);
  // While the leader waits for the coordinator (the other jobs' reports), it
  // tells the job's other ranks that it is still waiting at least this often,
  // so no broadcast of the job communicator waits much longer than this
  // (> 0).
  // Keep it well below the job communicator's timeout (Gloo's default is
  // 30 s, NCCL's 60 s). Each time, the leader repeats its (idempotent) call.
  absl::Duration progress_interval = absl::Seconds(10);
};

struct StepResult {
  // The run's total gradient norm (this job's alone without a coordinator).
  double total_norm = 0.0;
  // The factor applied to the gradients: < 1 when the action is CLIP, else 1.
  double clip_coef = 1.0;
  gradnorm::v1::Action action = gradnorm::v1::ACTION_NONE;
  gradnorm::v1::Reason reason = gradnorm::v1::REASON_WITHIN_MAX_NORM;
  std::string reason_detail;
  // The threshold in force (adaptive coordinator policies change it).
  double effective_max_norm = 0.0;
  // True when total_norm is NaN or Inf.
  bool nonfinite = false;
  // This job's partial (sum |g|^p, or max |g|), as reported.
  double job_partial = 0.0;
  // True when total_norm was summed from exact partials and rounded once (the
  // same bits for any sharding, job split and thread count).
  bool exact = false;
  // With a coordinator: the participant (job) that reported last, and the
  // seconds between the first and the last report of the round. 0 without one.
  uint32_t slowest_participant = 0;
  double arrival_spread_seconds = 0.0;
};

class GradNormClipper {
 public:
  // `dp_cp`, `tp` and `job` (every rank of this job; the leader is its rank 0)
  // must outlive the clipper. All ranks of the job call Create together, each
  // with a binding or each without. With one, the leader registers the run
  // (config set) or looks it up (not set) and checks its norm_type, and every
  // rank joins the broadcast of the leader's outcome: the leader's errors are
  // every rank's.
  // Errors: INVALID_ARGUMENT for null communicators, a bad norm_type or
  // max_norm, a binding without run id or with report_timeout or
  // progress_interval <= 0 (checked on each rank), no client on the leader,
  // or a config whose norm_type differs from the clipper's; NOT_FOUND for a
  // run that is not registered when the leader has no config;
  // FAILED_PRECONDITION when the run's norm_type differs from the clipper's;
  // the coordinator's error when registration fails (see coordinator.proto);
  // the job communicator's error.
  static absl::StatusOr<std::unique_ptr<GradNormClipper>> Create(
      Communicator* dp_cp, Communicator* tp, Communicator* job,
      const GradNormClipperOptions& options,
      std::optional<CoordinatorBinding> coordinator = std::nullopt);

  GradNormClipper(const GradNormClipper&) = delete;
  GradNormClipper& operator=(const GradNormClipper&) = delete;

  // Computes the norm of this step's gradients, gets the decision and clips
  // `grads` in place unless it is SKIP. Every rank of the job calls it with
  // the same step.
  absl::StatusOr<StepResult> Step(uint64_t step,
                                  absl::Span<const GradTensor> grads);
  // The same, with the kernels on `cuda_stream` (a cudaStream_t; null: the
  // legacy default stream) for this step instead of options.partial's and
  // options.scale's: for a caller whose current stream changes between steps,
  // as torch's does under `with torch.cuda.stream(s)`.
  absl::StatusOr<StepResult> Step(uint64_t step,
                                  absl::Span<const GradTensor> grads,
                                  void* cuda_stream);
  // The same, for a caller that found an error in its own input before the
  // step (see GradNormOptions::input_error): this rank fails with
  // `input_error` and the job's other ranks with ABORTED, after every rank
  // joined the reductions, so none waits for it. OK: as above.
  absl::StatusOr<StepResult> Step(uint64_t step,
                                  absl::Span<const GradTensor> grads,
                                  void* cuda_stream,
                                  const absl::Status& input_error);

 private:
  GradNormClipper(Communicator* dp_cp, Communicator* tp, Communicator* job,
                  const GradNormClipperOptions& options,
                  std::optional<CoordinatorBinding> coordinator);

  absl::StatusOr<StepResult> StepWith(uint64_t step,
                                      absl::Span<const GradTensor> grads,
                                      const PartialNormOptions& partial,
                                      const ScaleOptions& scale,
                                      const absl::Status& input_error);
  // The decision without a coordinator.
  absl::StatusOr<StepResult> DecideLocally(double total_norm) const;
  // The leader's Report, shared with the job's ranks.
  absl::StatusOr<gradnorm::v1::RoundResult> ReportAndShare(
      uint64_t step, const GradNormResult& norm);

  Communicator* const dp_cp_;
  Communicator* const tp_;
  Communicator* const job_;
  const GradNormClipperOptions options_;
  const std::optional<CoordinatorBinding> coordinator_;
};

}  // namespace gradnorm

#endif  // GRADNORM_CLIENT_GRAD_NORM_CLIPPER_H_
