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

#include "absl/status/status.h"
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

// `jobs` jobs train (job j through options(j)) while a random coordinator
// is SIGKILLed and started again every 0.2-0.6 s, until at least `kills`
// kills, `serving_kills` of them of the one serving (kReplicas: holding the
// database), have happened (200 at most); the jobs then stop 3 steps later.
struct KillsOutcome {
  std::vector<JobLog> logs;
  absl::Status status;  // a failed kill or restart
  int kills = 0;
  int serving_kills = 0;
  int64_t steps = 0;       // steps every job should have finished
  absl::Duration longest;  // the longest wait of any job for an answer
};
KillsOutcome TrainWhileKilling(
    demo::CoordinatorReplicas& replicas,
    const std::function<CoordinatorClientOptions(int job)>& options,
    const std::string& run_id, int jobs, int kills, int serving_kills,
    uint32_t seed);

// `jobs` jobs train `steps` steps (one every 5 ms) while the database stops,
// once a quarter of them are done, for 1.5 s; the health ports are probed
// while it is gone, until `expect_not_serving` answer NOT_SERVING (1 s at
// most).
struct RestartOutcome {
  std::vector<JobLog> logs;
  absl::Status status;  // stopping or restarting the database
  int64_t stopped_at = 0;
  int not_serving_while_down = 0;
  int alive_while_down = 0;
};
RestartOutcome TrainAcrossDatabaseRestart(
    SharedDatabase& shared,
    const std::function<CoordinatorClientOptions(int job)>& options,
    const std::string& run_id, int jobs, int steps, int expect_not_serving);

}  // namespace gradnorm

#endif  // GRADNORM_TESTS_POSTGRES_JOBS_H_
