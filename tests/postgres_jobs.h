// Jobs training against coordinators on a real PostgreSQL, for the tests of
// standbys and replicas (coordinator_postgres_test, coordinator_replicas_test):
// a PostgreSQL with coordinators on it and a registered run
// (SharedDatabase), jobs that report every step from threads of their own
// (TrainJobs), and the checks that every job got every round, the same
// round, and that the database holds each once.
#ifndef GRADNORM_TESTS_POSTGRES_JOBS_H_
#define GRADNORM_TESTS_POSTGRES_JOBS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/coordinator_client.h"
#include "server/store/local_postgres.h"
#include "tests/demo/coordinator_replicas.h"

namespace gradnorm {

// Participant p's partial at `step`: 1 + p + step / 2.
double Partial(int participant, int step);

// A run's jobs: each a thread with its own CoordinatorClient (options(p)),
// reporting Partial(p, step) for steps 0, 1, ... (one every `pace`) while
// keep_going(step); `meanwhile` runs on the calling thread as they train.
// *reached is the highest step any job has come to.
struct JobLog {
  std::vector<std::string> results;  // each step's RoundResult, serialized
  std::string error;                 // the error that stopped the job
  absl::Duration longest;            // its longest wait for one answer
};
std::vector<JobLog> TrainJobs(
    const std::function<CoordinatorClientOptions(int job)>& options,
    const std::string& run_id, int jobs, absl::Duration pace,
    const std::function<bool(int64_t)>& keep_going,
    const std::function<void()>& meanwhile, std::atomic<int64_t>* reached);

// Registers `run_id` (participants `jobs`, reports of doubles) through
// `options`' target.
absl::Status RegisterInexactRun(const CoordinatorClientOptions& options,
                                const std::string& run_id, int jobs);

// Every job ran `steps` steps without an error and got the same results, each
// the exact total; the database holds each round once, finalized in step
// order, with the jobs' total and action. (gtest expectations.)
void ExpectEveryRoundOnceAndAgreed(const std::string& dsn,
                                   const std::string& run_id,
                                   const std::vector<JobLog>& logs,
                                   int64_t steps);

// How many of the coordinators' health ports answer `status` for `service`.
int HealthCount(demo::CoordinatorReplicas& replicas, const std::string& service,
                const std::string& status);
int NotServing(demo::CoordinatorReplicas& replicas);
int Alive(demo::CoordinatorReplicas& replicas);

// Client options with short retry backoffs.
CoordinatorClientOptions FastRetries(const std::string& target);

// A PostgreSQL, `count` coordinators on it (demo::CoordinatorReplicas in
// `role`) and a registered run of `jobs` participants.
struct SharedDatabase {
  std::unique_ptr<server::LocalPostgres> postgres;
  std::string dsn;
  std::unique_ptr<demo::CoordinatorReplicas> replicas;

  static absl::StatusOr<SharedDatabase> Start(
      const std::string& name, int count, const std::string& run_id, int jobs,
      demo::CoordinatorReplicas::Role role =
          demo::CoordinatorReplicas::Role::kStandbys);
};

}  // namespace gradnorm

#endif  // GRADNORM_TESTS_POSTGRES_JOBS_H_
