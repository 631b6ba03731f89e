// Registers a run of two participants on a coordinator, reports both partials
// of step 0 from two clients at once and checks that both get the same
// result with the right total: what the container image's test asks of the
// coordinator inside the image.
//
//   report_round_trip --target=127.0.0.1:50051
//
// Prints the result and exits 0, or prints what went wrong and exits 1.
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "client/coordinator_client.h"

ABSL_FLAG(std::string, target, "", "coordinator address, host:port");
ABSL_FLAG(std::string, run, "image-check", "run id to register");

namespace {

int Fail(const std::string& what) {
  std::fprintf(stderr, "report_round_trip: %s\n", what.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  gradnorm::CoordinatorClientOptions options;
  options.target = absl::GetFlag(FLAGS_target);
  const std::string run = absl::GetFlag(FLAGS_run);
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  std::unique_ptr<gradnorm::CoordinatorClient> clients[2];
  for (auto& client : clients) {
    absl::StatusOr<std::unique_ptr<gradnorm::CoordinatorClient>> created =
        gradnorm::CoordinatorClient::Create(options);
    if (!created.ok()) return Fail(created.status().ToString());
    client = *std::move(created);
  }
  gradnorm::v1::RunConfig config;
  config.set_participants(2);
  config.set_max_norm(1.0);
  config.set_inexact(true);  // doubles are reported
  absl::StatusOr<gradnorm::v1::RegisterRunResponse> registered =
      clients[0]->RegisterRun(run, config, deadline);
  if (!registered.ok()) return Fail(registered.status().ToString());

  const double partials[2] = {9.0, 16.0};
  absl::StatusOr<gradnorm::v1::RoundResult> results[2];
  std::thread jobs[2];
  for (int p = 0; p < 2; ++p) {
    jobs[p] = std::thread([&, p] {
      gradnorm::v1::ReportRequest report;
      report.set_run_id(run);
      report.set_step(0);
      report.set_participant(p);
      report.set_partial(partials[p]);
      results[p] = clients[p]->Report(report, deadline);
    });
  }
  for (std::thread& job : jobs) job.join();
  for (const auto& result : results) {
    if (!result.ok()) return Fail(result.status().ToString());
  }
  if (results[0]->SerializeAsString() != results[1]->SerializeAsString()) {
    return Fail("the two participants got different results");
  }
  if (results[0]->total_norm() != std::sqrt(9.0 + 16.0)) {
    return Fail("total_norm " + std::to_string(results[0]->total_norm()) +
                ", expected 5");
  }
  std::printf("report_round_trip: run %s step 0: total_norm %g, action %s\n",
              run.c_str(), results[0]->total_norm(),
              gradnorm::v1::Action_Name(results[0]->action()).c_str());
  return 0;
}
