// One rank of a multi-process client test: joins its Gloo groups (dp_cp, tp,
// job) through a rendezvous directory, runs a scenario over its shard of the
// known test gradient (test_gradient.h) and writes "key value" lines to --out.
// Exits 0 when the scenario's calls succeeded, 1 when one failed (the error is
// in --out), 2 for bad flags.
#include <signal.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "client/coordinator_client.h"
#include "client/gloo_communicator.h"
#include "client/grad_norm_clipper.h"
#include "client/grad_utils.h"
#include "tests/client_processes/test_gradient.h"

ABSL_FLAG(std::string, store, "", "Rendezvous directory");
ABSL_FLAG(int, rank, 0, "Rank in the job: dp_rank * tp + tp_rank");
ABSL_FLAG(int, dp, 1, "DP size of the job");
ABSL_FLAG(int, tp, 1, "TP size of the job");
ABSL_FLAG(int, job, 0, "This job's index (participant)");
ABSL_FLAG(int, jobs, 1, "Jobs in the run");
ABSL_FLAG(std::string, scenario, "norms", "norms | tp_example | step");
ABSL_FLAG(int, timeout_ms, 20000, "Gloo timeout");
ABSL_FLAG(std::string, out, "", "Result file");
ABSL_FLAG(int, nan_rank, -1, "Job rank whose first weight value is NaN");
ABSL_FLAG(int, empty_rank, -1, "Job rank that holds no gradients");
ABSL_FLAG(int, die_rank, -1, "Job rank that kills itself after the rendezvous");
ABSL_FLAG(int, stop_rank, -1,
          "Job rank that stops itself (hangs) after the rendezvous");
ABSL_FLAG(std::string, coordinator, "", "host:port of a coordinator");
ABSL_FLAG(std::string, run_id, "run", "Run id at the coordinator");
ABSL_FLAG(double, max_norm, 1.0, "Clip threshold");
ABSL_FLAG(double, norm_type, 2.0, "p");

namespace gradnorm {
namespace {

class Output {
 public:
  explicit Output(const std::string& path)
      : file_(std::fopen(path.c_str(), "w")) {}
  ~Output() {
    if (file_ != nullptr) std::fclose(file_);
  }
  void Put(const std::string& key, const std::string& value) {
    std::fprintf(file_, "%s %s\n", key.c_str(), value.c_str());
    std::fflush(file_);
  }
  void PutDouble(const std::string& key, double value) {
    Put(key, absl::StrFormat("%.17g", value));
  }
  int Fail(const absl::Status& status) {
    Put("error_code", absl::StatusCodeToString(status.code()));
    Put("error", std::string(status.message()));
    return 1;
  }
  bool ok() const { return file_ != nullptr; }

 private:
  std::FILE* file_;
};

absl::StatusOr<std::unique_ptr<GlooCommunicator>> Group(const std::string& name,
                                                        int rank, int size) {
  GlooCommunicatorOptions options;
  options.store_path = absl::GetFlag(FLAGS_store);
  options.group_name = absl::StrCat("job", absl::GetFlag(FLAGS_job), ".", name);
  options.rank = rank;
  options.size = size;
  options.timeout = absl::Milliseconds(absl::GetFlag(FLAGS_timeout_ms));
  return GlooCommunicator::Create(options);
}

int Run(Output& out) {
  const int rank = absl::GetFlag(FLAGS_rank);
  const int dp = absl::GetFlag(FLAGS_dp);
  const int tp = absl::GetFlag(FLAGS_tp);
  const int job = absl::GetFlag(FLAGS_job);
  const int jobs = absl::GetFlag(FLAGS_jobs);
  const int dp_rank = rank / tp;
  const int tp_rank = rank % tp;
  const std::string scenario = absl::GetFlag(FLAGS_scenario);

  // A peer that dies while the groups are still connecting (the ranks finish
  // their rendezvous at different moments) fails the setup: time it too.
  const absl::Time setup_start = absl::Now();
  auto setup_failed = [&](const absl::Status& status) {
    out.PutDouble("elapsed_s",
                  absl::ToDoubleSeconds(absl::Now() - setup_start));
    return out.Fail(status);
  };
  auto dp_comm = Group(absl::StrCat("dp_cp.tp", tp_rank), dp_rank, dp);
  if (!dp_comm.ok()) return setup_failed(dp_comm.status());
  auto tp_comm = Group(absl::StrCat("tp.dp", dp_rank), tp_rank, tp);
  if (!tp_comm.ok()) return setup_failed(tp_comm.status());
  auto job_comm = Group("all", rank, dp * tp);
  if (!job_comm.ok()) return setup_failed(job_comm.status());
  out.Put("connected", "1");
  if (rank == absl::GetFlag(FLAGS_die_rank)) raise(SIGKILL);
  if (rank == absl::GetFlag(FLAGS_stop_rank)) raise(SIGSTOP);

  // This rank's gradient views.
  std::vector<float> weight, bias;
  if (scenario == "tp_example") {
    // docs/numerics.md: W sharded over TP as [1,2] | [2,4], b = [0,1]
    // replicated.
    weight = tp_rank == 0 ? std::vector<float>{1, 2} : std::vector<float>{2, 4};
    bias = {0, 1};
  } else if (rank != absl::GetFlag(FLAGS_empty_rank)) {
    weight = testing::WeightShard(job * dp * tp + rank, jobs * dp * tp);
    if (jobs == 1) bias = testing::BiasShard(dp_rank, dp);
  }
  if (rank == absl::GetFlag(FLAGS_nan_rank) && !weight.empty()) {
    weight[0] = std::numeric_limits<float>::quiet_NaN();
  }
  std::vector<GradTensor> grads;
  if (!weight.empty())
    grads.push_back(GradTensor::Cpu(weight.data(), weight.size()));
  if (!bias.empty()) {
    GradTensor b = GradTensor::Cpu(bias.data(), bias.size());
    b.tp_replicated = true;
    grads.push_back(b);
  }

  if (scenario == "norms" || scenario == "tp_example") {
    const std::vector<std::pair<std::string, double>> norms = {
        {"1", 1.0},
        {"2", 2.0},
        {"3", 3.0},
        {"inf", std::numeric_limits<double>::infinity()}};
    for (const auto& [name, p] : norms) {
      absl::StatusOr<GradNormResult> norm =
          GetGradNorm(grads, **dp_comm, **tp_comm, p);
      if (!norm.ok()) return out.Fail(norm.status());
      out.PutDouble(absl::StrCat("norm_", name), norm->total_norm);
    }
    return 0;
  }
  if (scenario != "step") {
    out.Put("error", absl::StrCat("unknown scenario ", scenario));
    return 2;
  }

  GradNormClipperOptions options;
  options.norm_type = absl::GetFlag(FLAGS_norm_type);
  options.max_norm = absl::GetFlag(FLAGS_max_norm);
  std::optional<CoordinatorBinding> binding;
  std::shared_ptr<CoordinatorClient> client;
  if (!absl::GetFlag(FLAGS_coordinator).empty()) {
    binding.emplace();
    if (rank == 0) {
      CoordinatorClientOptions client_options;
      client_options.target = absl::GetFlag(FLAGS_coordinator);
      client_options.initial_backoff = absl::Milliseconds(50);
      client_options.max_backoff = absl::Milliseconds(500);
      auto created = CoordinatorClient::Create(client_options);
      if (!created.ok()) return out.Fail(created.status());
      client = std::move(created).value();
    }
    binding->client = client;
    binding->run_id = absl::GetFlag(FLAGS_run_id);
    binding->participant = job;
    binding->report_timeout = absl::Seconds(40);
    gradnorm::v1::RunConfig config;
    config.set_norm_type(options.norm_type);
    config.set_max_norm(options.max_norm);
    config.set_participants(jobs);
    config.set_round_timeout_ms(40000);
    binding->config = config;
  }
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<GradNormClipper>> clipper =
      GradNormClipper::Create(dp_comm->get(), tp_comm->get(), job_comm->get(),
                              options, binding);
  if (!clipper.ok()) return out.Fail(clipper.status());
  absl::StatusOr<StepResult> result = (*clipper)->Step(0, grads);
  out.PutDouble("elapsed_s", absl::ToDoubleSeconds(absl::Now() - start));
  if (client != nullptr) out.Put("retries", absl::StrCat(client->retries()));
  if (!result.ok()) return out.Fail(result.status());
  out.PutDouble("total", result->total_norm);
  out.PutDouble("coef", result->clip_coef);
  out.Put("action", gradnorm::v1::Action_Name(result->action));
  out.Put("nonfinite", result->nonfinite ? "1" : "0");
  for (size_t i = 0; i < weight.size(); ++i) {
    out.Put(absl::StrCat("w", i), absl::StrFormat("%.9g", weight[i]));
  }
  for (size_t i = 0; i < bias.size(); ++i) {
    out.Put(absl::StrCat("b", i), absl::StrFormat("%.9g", bias[i]));
  }
  return 0;
}

}  // namespace
}  // namespace gradnorm

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  gradnorm::Output out(absl::GetFlag(FLAGS_out));
  if (absl::GetFlag(FLAGS_out).empty() || !out.ok() ||
      absl::GetFlag(FLAGS_store).empty()) {
    std::fprintf(stderr,
                 "rank_main: --out (writable) and --store are required\n");
    return 2;
  }
  return gradnorm::Run(out);
}
