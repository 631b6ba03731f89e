// One rank of the demo: a trainer process that holds its shards of the
// synthetic model's gradients and runs every step through GradNormClipper
// (Gloo reductions inside its job, the coordinator across jobs).
//
// It checks what a trainer relies on: a SKIP or NONE step leaves every
// gradient bit unchanged, and a CLIP step scales every gradient by exactly the
// returned coefficient (to the precision of the gradient's dtype). For each
// step it prints one tab-separated line on stdout (or --output):
//   STEP <step> <total_norm> <clip_coef> <action> <reason> <job_partial>
//   <slowest> <spread_s>
//        <effective_max_norm>
// and exits non-zero, with the reason on stderr, at the first failure.
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "client/communicator.h"
#include "client/coordinator_client.h"
#include "client/gloo_communicator.h"
#include "client/grad_norm_clipper.h"
#include "client/single_process_communicator.h"
#include "common/child_process.h"
#include "common/status_macros.h"
#include "tests/demo/synthetic_model.h"

ABSL_FLAG(int, job, 0, "This rank's job (participant) index.");
ABSL_FLAG(int, jobs, 2, "Number of jobs in the run.");
ABSL_FLAG(int, dp_rank, 0, "Data-parallel rank within the job.");
ABSL_FLAG(int, dp, 2, "Data-parallel size of each job.");
ABSL_FLAG(int, tp_rank, 0, "Tensor-parallel rank within the job.");
ABSL_FLAG(int, tp, 1, "Tensor-parallel size of each job.");
ABSL_FLAG(int, steps, 60, "Number of training steps.");
ABSL_FLAG(int, layers, 4, "Transformer blocks of the synthetic model.");
ABSL_FLAG(int, hidden, 256, "Hidden size of the synthetic model.");
ABSL_FLAG(int, vocab, 2048, "Vocabulary size of the synthetic model.");
ABSL_FLAG(uint64_t, seed, 2026, "Gradient generator seed.");
ABSL_FLAG(int, spike_step, 40,
          "Step with a planted gradient spike (-1: none).");
ABSL_FLAG(int, nan_step, 25, "Step with a planted NaN gradient (-1: none).");
ABSL_FLAG(double, norm_type, 2.0, "p of the p-norm (inf for the max norm).");
ABSL_FLAG(std::string, coordinator, "", "Coordinator address host:port.");
ABSL_FLAG(std::string, run_id, "demo", "The run's id at the coordinator.");
ABSL_FLAG(std::string, token_file, "",
          "File whose first line is the coordinator's bearer token (trainer "
          "role); empty: none");
ABSL_FLAG(std::string, rendezvous_dir, "",
          "Directory shared by the job's ranks for Gloo rendezvous.");
ABSL_FLAG(int, timeout_s, 60,
          "Bound on every collective and coordinator round, seconds.");
ABSL_FLAG(std::string, output, "",
          "File for the STEP lines (default: stdout).");

namespace gradnorm {
namespace demo {
namespace {

absl::StatusOr<std::unique_ptr<Communicator>> MakeGroup(const std::string& name,
                                                        int rank, int size) {
  if (size == 1) return std::make_unique<SingleProcessCommunicator>();
  GlooCommunicatorOptions options;
  options.store_path = absl::GetFlag(FLAGS_rendezvous_dir);
  options.group_name = name;
  options.rank = rank;
  options.size = size;
  options.timeout = absl::Seconds(absl::GetFlag(FLAGS_timeout_s));
  ASSIGN_OR_RETURN(std::unique_ptr<GlooCommunicator> comm,
                   GlooCommunicator::Create(options));
  return std::unique_ptr<Communicator>(std::move(comm));
}

// The largest difference a CLIP may leave between the scaled value and
// original * coef: half an ulp of the storage dtype, plus the fp32 product's.
bool ClippedCorrectly(double original, double scaled, double coef,
                      DType dtype) {
  const double expected = original * coef;
  const double relative = dtype == DType::kBFloat16 ? 0x1.0p-8 : 0x1.0p-23;
  return std::fabs(scaled - expected) <= relative * std::fabs(expected) + 1e-38;
}

absl::Status CheckGradients(const std::vector<Shard>& before,
                            const std::vector<Shard>& after,
                            const StepResult& result) {
  for (size_t s = 0; s < before.size(); ++s) {
    const Shard& b = before[s];
    const Shard& a = after[s];
    const size_t n = b.indices.size();
    for (size_t i = 0; i < n; ++i) {
      const double original = b.dtype == DType::kBFloat16
                                  ? Bf16ToFloat(b.half_values[i])
                                  : b.values[i];
      const double now = a.dtype == DType::kBFloat16
                             ? Bf16ToFloat(a.half_values[i])
                             : a.values[i];
      if (result.action == v1::ACTION_CLIP) {
        if (!ClippedCorrectly(original, now, result.clip_coef, b.dtype)) {
          return absl::InternalError(absl::StrFormat(
              "param %d element %d: %.9g after clipping by %.9g, expected %.9g",
              b.param, b.indices[i], now, result.clip_coef,
              original * result.clip_coef));
        }
      } else {
        const bool same =
            b.dtype == DType::kBFloat16
                ? b.half_values[i] == a.half_values[i]
                : std::memcmp(&b.values[i], &a.values[i], sizeof(float)) == 0;
        if (!same) {
          return absl::InternalError(absl::StrFormat(
              "param %d element %d changed from %.9g to %.9g on a %s step",
              b.param, b.indices[i], original, now,
              v1::Action_Name(result.action)));
        }
      }
    }
  }
  return absl::OkStatus();
}

absl::Status Run() {
  const int job = absl::GetFlag(FLAGS_job);
  const int jobs = absl::GetFlag(FLAGS_jobs);
  const int dp_rank = absl::GetFlag(FLAGS_dp_rank);
  const int dp = absl::GetFlag(FLAGS_dp);
  const int tp_rank = absl::GetFlag(FLAGS_tp_rank);
  const int tp = absl::GetFlag(FLAGS_tp);
  if (dp < 1 || tp < 1 || dp_rank < 0 || dp_rank >= dp || tp_rank < 0 ||
      tp_rank >= tp || job < 0 || job >= jobs) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "expected 0 <= job < jobs, 0 <= dp_rank < dp, 0 <= tp_rank < tp; got "
        "job %d/%d dp %d/%d tp %d/%d",
        job, jobs, dp_rank, dp, tp_rank, tp));
  }
  if (absl::GetFlag(FLAGS_coordinator).empty()) {
    return absl::InvalidArgumentError("--coordinator host:port is required");
  }

  Plan plan;
  plan.spike_step = absl::GetFlag(FLAGS_spike_step);
  plan.nan_step = absl::GetFlag(FLAGS_nan_step);
  const SyntheticModel model = SyntheticModel::Gpt(
      absl::GetFlag(FLAGS_layers), absl::GetFlag(FLAGS_hidden),
      absl::GetFlag(FLAGS_vocab), jobs, absl::GetFlag(FLAGS_seed), plan);

  const std::string prefix = absl::StrCat("job", job);
  ASSIGN_OR_RETURN(
      std::unique_ptr<Communicator> dp_group,
      MakeGroup(absl::StrCat(prefix, ".dp.tp", tp_rank), dp_rank, dp));
  ASSIGN_OR_RETURN(
      std::unique_ptr<Communicator> tp_group,
      MakeGroup(absl::StrCat(prefix, ".tp.dp", dp_rank), tp_rank, tp));
  ASSIGN_OR_RETURN(
      std::unique_ptr<Communicator> job_group,
      MakeGroup(absl::StrCat(prefix, ".all"), dp_rank * tp + tp_rank, dp * tp));

  CoordinatorClientOptions client_options;
  client_options.target = absl::GetFlag(FLAGS_coordinator);
  if (!absl::GetFlag(FLAGS_token_file).empty()) {
    const std::string token = ReadWholeFile(absl::GetFlag(FLAGS_token_file));
    client_options.bearer_token = token.substr(0, token.find('\n'));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorClient> client,
                   CoordinatorClient::Create(client_options));
  CoordinatorBinding binding;
  binding.client = std::move(client);
  binding.run_id = absl::GetFlag(FLAGS_run_id);
  binding.participant = static_cast<uint32_t>(job);
  binding.report_timeout = absl::Seconds(absl::GetFlag(FLAGS_timeout_s));

  GradNormClipperOptions options;
  options.norm_type = absl::GetFlag(FLAGS_norm_type);
  ASSIGN_OR_RETURN(std::unique_ptr<GradNormClipper> clipper,
                   GradNormClipper::Create(dp_group.get(), tp_group.get(),
                                           job_group.get(), options, binding));

  FILE* out = stdout;
  const std::string output = absl::GetFlag(FLAGS_output);
  if (!output.empty()) {
    out = std::fopen(output.c_str(), "w");
    if (out == nullptr) {
      return absl::NotFoundError(absl::StrCat("cannot write --output '", output,
                                              "': ", std::strerror(errno)));
    }
  }
  std::vector<Shard> shards =
      model.ShardsOf({job, jobs, dp_rank, dp, tp_rank, tp});
  for (int step = 0; step < absl::GetFlag(FLAGS_steps); ++step) {
    std::vector<GradTensor> views;
    for (Shard& shard : shards) {
      model.Fill(step, &shard);
      views.push_back(shard.View());
    }
    const std::vector<Shard> before = shards;
    absl::StatusOr<StepResult> result = clipper->Step(step, views);
    if (!result.ok()) {
      return absl::Status(
          result.status().code(),
          absl::StrCat("step ", step, ": ", result.status().message()));
    }
    RETURN_IF_ERROR(CheckGradients(before, shards, *result));
    std::fprintf(out,
                 "STEP\t%d\t%.17g\t%.17g\t%s\t%s\t%.17g\t%u\t%.6f\t%.17g\n",
                 step, result->total_norm, result->clip_coef,
                 v1::Action_Name(result->action).c_str(),
                 v1::Reason_Name(result->reason).c_str(), result->job_partial,
                 result->slowest_participant, result->arrival_spread_seconds,
                 result->effective_max_norm);
    std::fflush(out);
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace demo
}  // namespace gradnorm

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  // As in the coordinator: Debian's Abseil is a debug build whose deadlock
  // detector tracks every Mutex (gRPC's included) in a global graph.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  const absl::Status status = gradnorm::demo::Run();
  if (!status.ok()) {
    std::fprintf(stderr, "demo_rank job %d dp %d tp %d: %s\n",
                 absl::GetFlag(FLAGS_job), absl::GetFlag(FLAGS_dp_rank),
                 absl::GetFlag(FLAGS_tp_rank), status.ToString().c_str());
    return 1;
  }
  return 0;
}
