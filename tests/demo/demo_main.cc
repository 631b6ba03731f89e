// The gradnorm end-to-end demo: a run split into several jobs, each job a few
// DP (and optionally TP) ranks, every rank a real process.
//
//   bazel-bin/tests/demo --jobs=2 --ranks=2 --steps=60 --policy=spike
//
// It starts the coordinator on loopback with SQLite in a fresh data directory
// (or, with --store=postgres, a PostgreSQL there and --replicas coordinators
// on it, each a --replica serving clients and forwarding to the one holding
// the database, job j's ranks preferring replica j; with more than one, a
// random coordinator is killed with SIGKILL and started again every
// --kill_every_ms while the ranks train), registers the run, launches jobs x
// ranks trainer processes (demo_rank) that share the synthetic model's
// gradients and clip them through GradNormClipper, prints one line per step,
// queries the coordinator's downsampled history and summary (with gradnormctl),
// stops the coordinator with SIGTERM and checks:
//   - every rank of every job got the same result for every step;
//   - every step's total equals the fp64 norm of the full gradient, computed
//     here independently from the same generator;
//   - every step that is not skipped is CLIP exactly when
//     coef = effective_max_norm / (total + 1e-6) < 1, with that coef (to 1e-12
//     relative), and NONE otherwise; under the static policies the effective
//     max_norm is the run's; a skip is a non-finite total or a spike (policy
//     spike only);
//   - the planted spike step is skipped (policy spike) or clipped (otherwise);
//   - the planted NaN step is skipped (the ranks check no gradient changed);
//   - the stored history (GetHistory, one bucket per step) holds every step's
//     total, action and round count as the ranks saw them, and the summary's
//     round count, norm statistics, clipped fraction, skipped steps and
//     straggler counts are those of the ranks' results;
//   - the coordinator shut down cleanly (exit 0); with replicas, every one.
// Any mismatch is a non-zero exit with the reason.
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/coordinator_client.h"
#include "common/child_process.h"
#include "common/status_macros.h"
#include "gradnorm/v1/coordinator.grpc.pb.h"
#include "server/store/local_postgres.h"
#include "tests/demo/coordinator_replicas.h"
#include "tests/demo/synthetic_model.h"
#include "tests/local_coordinator.h"

ABSL_FLAG(int, jobs, 2, "Jobs (coordinator participants) in the run.");
ABSL_FLAG(int, ranks, 2, "Ranks per job (DP x TP).");
ABSL_FLAG(int, tp, 1, "Tensor-parallel size within a job (divides --ranks).");
ABSL_FLAG(int, steps, 60, "Training steps.");
ABSL_FLAG(
    std::string, policy, "spike",
    "Clip policy: static, spike (static + spike skipping), zclip, autoclip.");
ABSL_FLAG(double, max_norm, 40.0, "The run's max_norm.");
ABSL_FLAG(int, layers, 4, "Transformer blocks of the synthetic model.");
ABSL_FLAG(int, hidden, 256, "Hidden size of the synthetic model.");
ABSL_FLAG(int, vocab, 2048, "Vocabulary size of the synthetic model.");
ABSL_FLAG(int, spike_step, 40,
          "Step with a planted gradient spike (-1: none).");
ABSL_FLAG(int, nan_step, 25, "Step with a planted NaN gradient (-1: none).");
ABSL_FLAG(uint64_t, seed, 2026, "Gradient generator seed.");
ABSL_FLAG(std::string, data_dir, "",
          "Directory for the coordinator's database and the ranks' files "
          "(default: a fresh one under $TMPDIR).");
ABSL_FLAG(std::string, bin_dir, "",
          "bazel-bin (default: derived from this binary's path).");
ABSL_FLAG(int, history_points, 12, "Buckets of the downsampled history.");
ABSL_FLAG(int, timeout_s, 60, "Bound on the whole run of the ranks, seconds.");
ABSL_FLAG(std::string, http_listen, "127.0.0.1:0",
          "Where the coordinator serves its dashboard and HTTP API (port 0: "
          "any free one).");
ABSL_FLAG(std::string, store, "sqlite",
          "The coordinator's store: sqlite (a file in the data directory) or "
          "postgres (a PostgreSQL the demo starts in the data directory).");
ABSL_FLAG(int, replicas, 1,
          "With --store=postgres: coordinators on the database. With more "
          "than one, each is a --replica (every one serves; the one holding "
          "the database computes the rounds), job j's ranks prefer replica "
          "j, and a random coordinator is killed (SIGKILL) and started again "
          "every --kill_every_ms while the ranks train.");
ABSL_FLAG(int, kill_every_ms, 700,
          "With --replicas > 1: milliseconds between kills.");
ABSL_FLAG(bool, keep_running, false,
          "After the checks, keep the coordinator up (with its dashboard) "
          "until Ctrl-C, so a person can open the page.");

namespace gradnorm {
namespace demo {
namespace {

absl::StatusOr<v1::RunConfig> MakeConfig(const std::string& policy,
                                         double max_norm, int jobs) {
  v1::RunConfig config;
  config.set_norm_type(2.0);
  config.set_max_norm(max_norm);
  config.set_participants(jobs);
  config.set_nonfinite_policy(v1::NON_FINITE_POLICY_SKIP);
  config.set_round_timeout_ms(30000);
  if (policy == "static") {
    config.mutable_clip_policy()->mutable_static_clip();
  } else if (policy == "spike") {
    config.mutable_clip_policy()->mutable_static_clip();
    v1::SpikeRule* spike = config.mutable_spike_rule();
    spike->set_enabled(true);
    spike->set_sigma(6.0);
    spike->set_window(128);
    spike->set_warmup_steps(10);
  } else if (policy == "zclip") {
    v1::ZClip* zclip = config.mutable_clip_policy()->mutable_zclip();
    zclip->set_alpha(0.97);
    zclip->set_z_threshold(2.5);
    zclip->set_warmup_steps(25);
  } else if (policy == "autoclip") {
    v1::AutoClip* autoclip = config.mutable_clip_policy()->mutable_auto_clip();
    autoclip->set_percentile(90);
    autoclip->set_history_length(1000);
    autoclip->set_warmup_steps(10);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "--policy '", policy, "': expected static, spike, zclip or autoclip"));
  }
  return config;
}

// One STEP line of a rank.
struct RankStep {
  double total = 0;
  double coef = 0;
  std::string action;
  std::string reason;
  int slowest = 0;
  double spread = 0;
  double effective_max_norm = 0;
};

using RankSteps = std::map<int, RankStep>;

absl::StatusOr<RankSteps> ParseRankOutput(const std::string& path) {
  RankSteps steps;
  for (absl::string_view line : absl::StrSplit(ReadWholeFile(path), '\n')) {
    std::vector<std::string> f = absl::StrSplit(line, '\t');
    if (f.empty() || f[0] != "STEP") continue;
    if (f.size() != 10) {
      return absl::DataLossError(
          absl::StrCat(path, ": malformed line '", line, "'"));
    }
    RankStep s;
    s.total = std::strtod(f[2].c_str(), nullptr);
    s.coef = std::strtod(f[3].c_str(), nullptr);
    s.action = f[4];
    s.reason = f[5];
    s.slowest = std::atoi(f[7].c_str());
    s.spread = std::strtod(f[8].c_str(), nullptr);
    s.effective_max_norm = std::strtod(f[9].c_str(), nullptr);
    steps[std::atoi(f[1].c_str())] = s;
  }
  return steps;
}

bool SameDouble(double a, double b) {
  return (std::isnan(a) && std::isnan(b)) || a == b;
}

bool StaticPolicy(const std::string& policy) {
  return policy == "static" || policy == "spike";
}

// docs/numerics.md: coef = max_norm / (total + 1e-6); gradients are scaled
// when the total is finite and coef < 1. Recomputed here from the total and
// effective max_norm the ranks received, so a coordinator that decides or
// computes the coefficient wrongly fails the demo (the ranks only check that
// they applied whatever coefficient came back). Appends one problem per
// mismatch of `step`'s result `r`.
void CheckDecision(int step, const RankStep& r, const std::string& policy,
                   double max_norm, std::vector<std::string>* problems) {
  if (StaticPolicy(policy) && r.effective_max_norm != max_norm) {
    problems->push_back(
        absl::StrFormat("step %d: effective max_norm %.17g, expected the run's "
                        "%.17g under policy %s",
                        step, r.effective_max_norm, max_norm, policy));
  }
  if (r.action == "ACTION_SKIP") {
    const bool nonfinite =
        !std::isfinite(r.total) && r.reason == "REASON_NONFINITE";
    const bool spike = std::isfinite(r.total) && r.reason == "REASON_SPIKE" &&
                       policy == "spike";
    if (!nonfinite && !spike) {
      problems->push_back(absl::StrFormat(
          "step %d: SKIP %s with total %.17g under policy %s; expected a skip "
          "only for a "
          "non-finite total (NONFINITE) or a spike under policy spike (SPIKE)",
          step, r.reason, r.total, policy));
    }
    return;
  }
  if (!std::isfinite(r.total)) {
    problems->push_back(absl::StrFormat(
        "step %d: %s with total %.17g, expected ACTION_SKIP REASON_NONFINITE",
        step, r.action, r.total));
    return;
  }
  const double coef = r.effective_max_norm / (r.total + 1e-6);
  const bool clip = coef < 1.0;
  const std::string action = clip ? "ACTION_CLIP" : "ACTION_NONE";
  const std::string reason =
      clip ? "REASON_ABOVE_MAX_NORM" : "REASON_WITHIN_MAX_NORM";
  if (r.action != action || r.reason != reason) {
    problems->push_back(
        absl::StrFormat("step %d: %s %s, expected %s %s: total %.17g, "
                        "effective max_norm %.17g, "
                        "max_norm / (total + 1e-6) = %.17g",
                        step, r.action, r.reason, action, reason, r.total,
                        r.effective_max_norm, coef));
  } else if (clip ? !(std::fabs(r.coef - coef) <= 1e-12 * coef)
                  : r.coef != 1.0) {
    problems->push_back(
        absl::StrFormat("step %d: %s with clip coef %.17g, expected %.17g "
                        "(effective max_norm %.17g / "
                        "(total %.17g + 1e-6))",
                        step, r.action, r.coef, clip ? coef : 1.0,
                        r.effective_max_norm, r.total));
  }
}

// Every step's stored round, one bucket per step, against what the ranks saw.
void CheckStoredHistory(CoordinatorClient& client, const std::string& run_id,
                        const RankSteps& seen,
                        std::vector<std::string>* problems) {
  v1::GetHistoryRequest request;
  request.set_run_id(run_id);
  request.set_max_points(0);  // one bucket per round
  // Retried on UNAVAILABLE, as a dashboard would. With replicas: a
  // connection to a replica killed since it was opened fails its first call
  // ("Socket closed"), one just killed may still be starting, and a replica
  // whose holder was just killed answers UNAVAILABLE until it knows the next.
  absl::StatusOr<v1::GetHistoryResponse> answer =
      client.GetHistory(request, absl::Now() + absl::Seconds(10));
  if (!answer.ok()) {
    problems->push_back(std::string(answer.status().message()));
    return;
  }
  const v1::GetHistoryResponse& history = *answer;
  if (history.buckets_size() != static_cast<int>(seen.size()) ||
      history.downsampled()) {
    problems->push_back(
        absl::StrCat("stored history has ", history.buckets_size(), " buckets",
                     history.downsampled() ? " (downsampled)" : "",
                     ", expected one per step: ", seen.size()));
    return;
  }
  for (const v1::HistoryBucket& b : history.buckets()) {
    const auto it = seen.find(static_cast<int>(b.first_step()));
    if (b.first_step() != b.last_step() || it == seen.end()) {
      problems->push_back(absl::StrCat("stored history has a bucket of steps ",
                                       b.first_step(), "..", b.last_step(),
                                       ", expected one step the ranks ran"));
      continue;
    }
    const RankStep& r = it->second;
    const bool clipped = r.action == "ACTION_CLIP";
    const bool skipped = r.action == "ACTION_SKIP";
    // min/max/mean are over finite totals: NaN for the non-finite step.
    const double finite = std::isfinite(r.total) ? r.total : std::nan("");
    if (b.rounds() != 1 || !SameDouble(b.last_norm(), r.total) ||
        !SameDouble(b.min_norm(), finite) ||
        !SameDouble(b.max_norm(), finite) ||
        !SameDouble(b.mean_norm(), finite) ||
        b.clipped() != static_cast<uint32_t>(clipped) ||
        b.skipped() != static_cast<uint32_t>(skipped)) {
      problems->push_back(absl::StrFormat(
          "stored step %d: %d round(s), total %.17g (min %.17g max %.17g mean "
          "%.17g), "
          "clipped %d, skipped %d; the ranks saw total %.17g, %s",
          b.first_step(), b.rounds(), b.last_norm(), b.min_norm(), b.max_norm(),
          b.mean_norm(), b.clipped(), b.skipped(), r.total, r.action));
    }
  }
}

// The nearest-rank percentile q of `sorted` (GetSummaryResponse's definition).
double NearestRank(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return std::nan("");
  const size_t rank = static_cast<size_t>(std::ceil(q / 100.0 * sorted.size()));
  return sorted[std::min(std::max<size_t>(rank, 1), sorted.size()) - 1];
}

// The run's summary against statistics computed here from the ranks' results.
void CheckStoredSummary(CoordinatorClient& client, const std::string& run_id,
                        int jobs, const RankSteps& seen,
                        std::vector<std::string>* problems) {
  v1::GetSummaryRequest request;
  request.set_run_id(run_id);
  request.set_top_slowest(jobs);
  // Retried on UNAVAILABLE like the history.
  absl::StatusOr<v1::GetSummaryResponse> answer =
      client.GetSummary(request, absl::Now() + absl::Seconds(10));
  if (!answer.ok()) {
    problems->push_back(std::string(answer.status().message()));
    return;
  }
  const v1::GetSummaryResponse& summary = *answer;
  std::vector<double> finite;
  std::vector<uint64_t> skipped_steps;
  std::vector<uint64_t> times_slowest(jobs);
  int clipped = 0;
  double sum = 0;
  for (const auto& [step, r] : seen) {
    if (std::isfinite(r.total)) {
      finite.push_back(r.total);
      sum += r.total;
    }
    if (r.action == "ACTION_SKIP") skipped_steps.push_back(step);
    clipped += r.action == "ACTION_CLIP";
    if (r.slowest >= 0 && r.slowest < jobs) ++times_slowest[r.slowest];
  }
  std::sort(finite.begin(), finite.end());
  if (summary.rounds() != seen.size()) {
    problems->push_back(absl::StrCat("summary has ", summary.rounds(),
                                     " rounds, expected ", seen.size()));
  }
  if (summary.skipped_count() != skipped_steps.size()) {
    problems->push_back(absl::StrCat("summary has ", summary.skipped_count(),
                                     " skipped rounds, the ranks saw ",
                                     skipped_steps.size()));
  }
  const std::vector<uint64_t> listed(summary.skipped_steps().begin(),
                                     summary.skipped_steps().end());
  if (listed != skipped_steps) {
    problems->push_back(absl::StrCat(
        "summary lists skipped steps [", absl::StrJoin(listed, ","),
        "], the ranks skipped [", absl::StrJoin(skipped_steps, ","), "]"));
  }
  const double fraction = static_cast<double>(clipped) / seen.size();
  if (std::fabs(summary.clipped_fraction() - fraction) > 1e-12) {
    problems->push_back(absl::StrCat("summary clipped fraction ",
                                     summary.clipped_fraction(),
                                     ", the ranks saw ", fraction));
  }
  const double mean = finite.empty() ? std::nan("") : sum / finite.size();
  const struct {
    const char* name;
    double stored;
    double expected;
  } stats[] = {
      {"min_norm", summary.min_norm(),
       finite.empty() ? std::nan("") : finite.front()},
      {"max_norm", summary.max_norm(),
       finite.empty() ? std::nan("") : finite.back()},
      {"p50_norm", summary.p50_norm(), NearestRank(finite, 50)},
      {"p90_norm", summary.p90_norm(), NearestRank(finite, 90)},
      {"p99_norm", summary.p99_norm(), NearestRank(finite, 99)},
  };
  for (const auto& stat : stats) {
    if (!SameDouble(stat.stored, stat.expected)) {
      problems->push_back(
          absl::StrFormat("summary %s %.17g, from the ranks' totals %.17g",
                          stat.name, stat.stored, stat.expected));
    }
  }
  if (!(std::fabs(summary.mean_norm() - mean) <= 1e-12 * std::fabs(mean)) &&
      !SameDouble(summary.mean_norm(), mean)) {
    problems->push_back(
        absl::StrFormat("summary mean_norm %.17g, from the ranks' totals %.17g",
                        summary.mean_norm(), mean));
  }
  if (summary.slowest_participants_size() != jobs) {
    problems->push_back(
        absl::StrCat("summary lists ", summary.slowest_participants_size(),
                     " participants' lags, expected all ", jobs));
  }
  for (const v1::ParticipantLag& lag : summary.slowest_participants()) {
    if (lag.participant() >= static_cast<uint32_t>(jobs) ||
        lag.times_slowest() != times_slowest[lag.participant()]) {
      problems->push_back(
          absl::StrCat("summary: participant ", lag.participant(), " slowest ",
                       lag.times_slowest(), " times, the ranks saw ",
                       lag.participant() < static_cast<uint32_t>(jobs)
                           ? times_slowest[lag.participant()]
                           : 0));
    }
  }
}

struct DemoTokens {
  std::string file;  // the coordinator's --tokens_file
  std::string trainer, trainer_file;
  std::string viewer, viewer_file;
};

std::string RandomToken(absl::string_view role) {
  absl::BitGen random;
  return absl::StrFormat("demo-%s-%016x%016x", role,
                         absl::Uniform<uint64_t>(random),
                         absl::Uniform<uint64_t>(random));
}

// A fresh token per role, in the coordinator's tokens file and in one file
// per role (0600: they are credentials).
absl::StatusOr<DemoTokens> WriteDemoTokens(const std::string& dir) {
  DemoTokens tokens;
  tokens.file = dir + "/tokens";
  tokens.trainer = RandomToken("trainer");
  tokens.trainer_file = dir + "/trainer.token";
  tokens.viewer = RandomToken("viewer");
  tokens.viewer_file = dir + "/viewer.token";
  for (const auto& [path, text] :
       {std::pair<std::string, std::string>{
            tokens.file, absl::StrCat(tokens.trainer, " trainer\n",
                                      tokens.viewer, " viewer\n")},
        {tokens.trainer_file, tokens.trainer + "\n"},
        {tokens.viewer_file, tokens.viewer + "\n"}}) {
    const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const bool ok = fd >= 0 && write(fd, text.data(), text.size()) ==
                                   static_cast<ssize_t>(text.size());
    if (fd >= 0) close(fd);
    if (!ok) {
      return absl::InternalError(absl::StrCat("cannot write ", path));
    }
  }
  return tokens;
}

// Blocks until SIGINT or SIGTERM.
void WaitForInterrupt() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  int received = 0;
  sigwait(&signals, &received);
}

absl::Status RunCtl(const std::string& ctl,
                    const std::vector<std::string>& args,
                    const std::string& log) {
  std::vector<std::string> argv = {ctl};
  argv.insert(argv.end(), args.begin(), args.end());
  ASSIGN_OR_RETURN(std::unique_ptr<ChildProcess> child,
                   ChildProcess::Start(argv, log));
  ASSIGN_OR_RETURN(int code, child->Wait(absl::Now() + absl::Seconds(30)));
  std::fputs(ReadWholeFile(log).c_str(), stdout);
  if (code != 0) {
    return absl::InternalError(
        absl::StrCat("gradnormctl ", args[0], " exited ", code));
  }
  return absl::OkStatus();
}

absl::Status Run() {
  const int jobs = absl::GetFlag(FLAGS_jobs);
  const int ranks = absl::GetFlag(FLAGS_ranks);
  const int tp = absl::GetFlag(FLAGS_tp);
  const int steps = absl::GetFlag(FLAGS_steps);
  const std::string policy = absl::GetFlag(FLAGS_policy);
  if (jobs < 1 || ranks < 1 || tp < 1 || ranks % tp != 0 || steps < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("expected jobs >= 1, ranks >= 1, tp >= 1 dividing "
                        "ranks, steps >= 1; got "
                        "jobs %d ranks %d tp %d steps %d",
                        jobs, ranks, tp, steps));
  }
  const int dp = ranks / tp;
  ASSIGN_OR_RETURN(v1::RunConfig config,
                   MakeConfig(policy, absl::GetFlag(FLAGS_max_norm), jobs));

  std::string bin = absl::GetFlag(FLAGS_bin_dir);
  if (bin.empty()) bin = BazelBinOfThisBinary();
  const std::string coordinator_bin = bin + "/server/coordinator";
  const std::string rank_bin = bin + "/tests/demo_rank";
  const std::string ctl_bin = bin + "/tools/gradnormctl/gradnormctl";

  std::string dir = absl::GetFlag(FLAGS_data_dir);
  if (dir.empty()) {
    ASSIGN_OR_RETURN(dir, MakeScratchDir("gradnorm-demo"));
  }
  std::printf(
      "gradnorm demo: %d jobs x %d ranks (DP %d x TP %d), %d steps, policy %s, "
      "max_norm %g\ndata directory: %s\n",
      jobs, ranks, dp, tp, steps, policy.c_str(), config.max_norm(),
      dir.c_str());

  // The coordinator, on ports it picks, with a token per role.
  const std::string store = absl::GetFlag(FLAGS_store);
  const int replica_count = absl::GetFlag(FLAGS_replicas);
  if ((store != "sqlite" && store != "postgres") || replica_count < 1 ||
      (replica_count > 1 && store != "postgres")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--store=", store, " --replicas=", replica_count,
        ": expected --store=sqlite or postgres, and --replicas >= 1 (more "
        "than one only with --store=postgres)"));
  }
  ASSIGN_OR_RETURN(DemoTokens tokens, WriteDemoTokens(dir));
  const std::vector<std::string> coordinator_flags = {
      "--tokens_file=" + tokens.file,
      "--http_listen=" + absl::GetFlag(FLAGS_http_listen)};
  LocalCoordinator local;
  std::unique_ptr<server::LocalPostgres> postgres;
  std::unique_ptr<CoordinatorReplicas> replicas;
  std::string target;
  if (store == "postgres") {
    ASSIGN_OR_RETURN(postgres, server::LocalPostgres::Start());
    ASSIGN_OR_RETURN(const std::string dsn,
                     postgres->CreateDatabase("gradnorm"));
    ASSIGN_OR_RETURN(
        replicas,
        CoordinatorReplicas::Start(
            coordinator_bin, dir, dsn, replica_count, coordinator_flags,
            replica_count > 1 ? CoordinatorReplicas::Role::kReplicas
                              : CoordinatorReplicas::Role::kStandbys));
    target = replicas->target();
    if (replica_count == 1) {
      std::printf("coordinator: %s (PostgreSQL in %s)\n\n", target.c_str(),
                  dir.c_str());
    } else {
      std::printf(
          "coordinators: %d replicas on PostgreSQL, every one serving (the "
          "one holding the database computes the rounds); job j's ranks "
          "prefer replica j %% %d and fail over to the next: %s\n\n",
          replica_count, replica_count, target.c_str());
    }
  } else {
    ASSIGN_OR_RETURN(
        local, StartLocalCoordinator(coordinator_bin, dir, coordinator_flags));
    target = local.target;
    std::printf("coordinator: %s (SQLite %s/gradnorm.db)\n\n", target.c_str(),
                dir.c_str());
  }

  const std::string run_id = absl::StrCat("demo-", policy, "-", getpid());
  CoordinatorClientOptions client_options;
  client_options.target = target;
  client_options.bearer_token = tokens.trainer;
  ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorClient> client,
                   CoordinatorClient::Create(client_options));
  RETURN_IF_ERROR(
      client->RegisterRun(run_id, config, absl::Now() + absl::Seconds(10))
          .status());

  // The trainer ranks.
  std::vector<std::unique_ptr<ChildProcess>> children;
  std::vector<std::string> outputs;
  for (int job = 0; job < jobs; ++job) {
    const std::string rendezvous = absl::StrCat(dir, "/rendezvous-job", job);
    mkdir(rendezvous.c_str(), 0755);
    for (int d = 0; d < dp; ++d) {
      for (int t = 0; t < tp; ++t) {
        const std::string name =
            absl::StrCat(dir, "/job", job, "-dp", d, "-tp", t);
        outputs.push_back(name + ".steps");
        ASSIGN_OR_RETURN(
            std::unique_ptr<ChildProcess> child,
            ChildProcess::Start(
                {rank_bin, absl::StrCat("--job=", job),
                 absl::StrCat("--jobs=", jobs), absl::StrCat("--dp_rank=", d),
                 absl::StrCat("--dp=", dp), absl::StrCat("--tp_rank=", t),
                 absl::StrCat("--tp=", tp), absl::StrCat("--steps=", steps),
                 absl::StrCat("--layers=", absl::GetFlag(FLAGS_layers)),
                 absl::StrCat("--hidden=", absl::GetFlag(FLAGS_hidden)),
                 absl::StrCat("--vocab=", absl::GetFlag(FLAGS_vocab)),
                 absl::StrCat("--seed=", absl::GetFlag(FLAGS_seed)),
                 absl::StrCat("--spike_step=", absl::GetFlag(FLAGS_spike_step)),
                 absl::StrCat("--nan_step=", absl::GetFlag(FLAGS_nan_step)),
                 "--coordinator=" +
                     (replicas != nullptr && replicas->count() > 1
                          ? replicas->target(job)
                          : target),
                 "--run_id=" + run_id, "--token_file=" + tokens.trainer_file,
                 "--rendezvous_dir=" + rendezvous,
                 "--output=" + name + ".steps"},
                name + ".log"));
        children.push_back(std::move(child));
      }
    }
  }

  // With replicas: a random coordinator killed and started again every
  // kill_every_ms while the ranks train.
  std::atomic<bool> ranks_done{false};
  int kills = 0;
  int serving_kills = 0;
  absl::Status chaos_status;
  std::thread chaos;
  if (replicas != nullptr && replicas->count() > 1) {
    chaos = std::thread([&] {
      absl::BitGen random;
      const absl::Duration every =
          absl::Milliseconds(absl::GetFlag(FLAGS_kill_every_ms));
      while (true) {
        for (const absl::Time next = absl::Now() + every;
             absl::Now() < next && !ranks_done.load();) {
          absl::SleepFor(absl::Milliseconds(10));
        }
        if (ranks_done.load()) return;
        const int victim = absl::Uniform(random, 0, replicas->count());
        absl::StatusOr<bool> was_serving = replicas->KillAndRestart(victim);
        if (!was_serving.ok()) {
          chaos_status = was_serving.status();
          return;
        }
        ++kills;
        serving_kills += *was_serving;
        std::printf("  kill %d: coordinator %d (%s) SIGKILL, started again\n",
                    kills, victim,
                    *was_serving ? "holding the database" : "forwarding");
        std::fflush(stdout);
      }
    });
  }

  // While the ranks train, compute every step's full-gradient norm here, from
  // the generator alone: the independent reference.
  Plan plan;
  plan.spike_step = absl::GetFlag(FLAGS_spike_step);
  plan.nan_step = absl::GetFlag(FLAGS_nan_step);
  const SyntheticModel model = SyntheticModel::Gpt(
      absl::GetFlag(FLAGS_layers), absl::GetFlag(FLAGS_hidden),
      absl::GetFlag(FLAGS_vocab), jobs, absl::GetFlag(FLAGS_seed), plan);
  std::vector<double> reference(steps);
  for (int step = 0; step < steps; ++step) {
    reference[step] =
        static_cast<double>(std::sqrt(model.FullPartial(step, 2.0)));
  }

  const absl::Time deadline =
      absl::Now() + absl::Seconds(absl::GetFlag(FLAGS_timeout_s));
  absl::Status ranks_status;
  for (size_t i = 0; i < children.size(); ++i) {
    absl::StatusOr<int> code = children[i]->Wait(deadline);
    if (!code.ok() || *code != 0) {
      ranks_status.Update(absl::InternalError(
          absl::StrCat("rank ", i,
                       (code.ok() ? absl::StrCat(" exited ", *code)
                                  : code.status().ToString()),
                       ":\n", LastLinesOf(children[i]->output_path(), 5))));
    }
  }
  ranks_done = true;
  if (chaos.joinable()) chaos.join();
  RETURN_IF_ERROR(ranks_status);
  RETURN_IF_ERROR(chaos_status);
  if (replicas != nullptr && replicas->count() > 1) {
    std::printf(
        "\n%d coordinators killed while the ranks trained (%d of them "
        "holding the database); every rank finished every step\n\n",
        kills, serving_kills);
  }

  // Every rank must have seen the same result for every step.
  std::vector<RankSteps> seen;
  for (const std::string& output : outputs) {
    ASSIGN_OR_RETURN(RankSteps s, ParseRankOutput(output));
    if (static_cast<int>(s.size()) != steps) {
      return absl::DataLossError(
          absl::StrCat(output, ": ", s.size(), " steps, expected ", steps));
    }
    seen.push_back(std::move(s));
  }
  std::vector<std::string> problems;
  std::vector<std::string> decision_problems;
  std::printf("%5s  %14s  %10s  %-11s  %-22s  %s\n", "step", "total norm",
              "clip coef", "action", "reason", "slowest job (spread)");
  int skipped = 0;
  int clipped = 0;
  for (int step = 0; step < steps; ++step) {
    const RankStep& r = seen[0].at(step);
    for (size_t i = 1; i < seen.size(); ++i) {
      const RankStep& o = seen[i].at(step);
      if (!SameDouble(o.total, r.total) || o.coef != r.coef ||
          o.action != r.action || o.reason != r.reason ||
          o.effective_max_norm != r.effective_max_norm) {
        problems.push_back(absl::StrFormat(
            "step %d: rank %d saw %.17g/%s, rank 0 saw %.17g/%s", step, i,
            o.total, o.action, r.total, r.action));
      }
    }
    const double ref = reference[step];
    const bool agrees = std::isnan(ref)
                            ? std::isnan(r.total)
                            : std::fabs(r.total - ref) <= 1e-10 * ref;
    if (!agrees) {
      problems.push_back(absl::StrFormat(
          "step %d: total %.17g, but the full gradient's fp64 norm is %.17g",
          step, r.total, ref));
    }
    CheckDecision(step, r, policy, config.max_norm(), &decision_problems);
    if (step == plan.nan_step &&
        !(r.action == "ACTION_SKIP" && r.reason == "REASON_NONFINITE")) {
      problems.push_back(absl::StrFormat(
          "NaN step %d: %s %s, expected ACTION_SKIP REASON_NONFINITE", step,
          r.action, r.reason));
    }
    if (step == plan.spike_step) {
      const std::string expected =
          policy == "spike" ? "ACTION_SKIP" : "ACTION_CLIP";
      if (r.action != expected) {
        problems.push_back(
            absl::StrFormat("spike step %d: %s, expected %s under policy %s",
                            step, r.action, expected, policy));
      }
    }
    skipped += r.action == "ACTION_SKIP";
    clipped += r.action == "ACTION_CLIP";
    std::string mark;
    if (step == plan.spike_step) mark = "   <- planted spike";
    if (step == plan.nan_step) mark = "   <- planted NaN";
    std::printf("%5d  %14.6f  %10.6f  %-11s  %-22s  job %d (%.1f ms)%s\n", step,
                r.total, r.coef, r.action.substr(7).c_str(),
                r.reason.substr(7).c_str(), r.slowest, r.spread * 1e3,
                mark.c_str());
  }
  std::printf(
      "\n%d steps: %d clipped, %d skipped; every total matches the "
      "full-gradient "
      "fp64 norm: %s\n",
      steps, clipped, skipped, problems.empty() ? "yes" : "NO");
  std::printf(
      "every CLIP/NONE decision and coefficient matches effective max_norm / "
      "(total + 1e-6): %s\n\n",
      decision_problems.empty() ? "yes" : "NO");
  problems.insert(problems.end(), decision_problems.begin(),
                  decision_problems.end());

  // What the coordinator stored, as a dashboard would read it.
  CoordinatorClientOptions viewer_options;
  viewer_options.target = target;
  viewer_options.bearer_token = tokens.viewer;
  ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorClient> viewer,
                   CoordinatorClient::Create(viewer_options));
  std::vector<std::string> stored_problems;
  CheckStoredHistory(*viewer, run_id, seen[0], &stored_problems);
  CheckStoredSummary(*viewer, run_id, jobs, seen[0], &stored_problems);
  const std::string ctl_target = "--target=" + target;
  const std::string ctl_token = "--token_file=" + tokens.viewer_file;
  std::printf("$ gradnormctl history %s --points=%d\n", run_id.c_str(),
              absl::GetFlag(FLAGS_history_points));
  absl::Status ctl =
      RunCtl(ctl_bin,
             {"history", run_id,
              absl::StrCat("--points=", absl::GetFlag(FLAGS_history_points)),
              ctl_target, ctl_token},
             dir + "/history.txt");
  if (!ctl.ok()) problems.push_back(std::string(ctl.message()));
  std::printf("\n$ gradnormctl summary %s\n", run_id.c_str());
  ctl = RunCtl(ctl_bin, {"summary", run_id, ctl_target, ctl_token},
               dir + "/summary.txt");
  if (!ctl.ok()) problems.push_back(std::string(ctl.message()));
  std::printf(
      "\nstored history (%d rounds) and summary agree with the ranks: %s\n",
      steps, stored_problems.empty() ? "yes" : "NO");
  if (viewer->retries() > 0) {
    std::printf("  (asked again %llu time(s) after UNAVAILABLE)\n",
                static_cast<unsigned long long>(viewer->retries()));
  }
  problems.insert(problems.end(), stored_problems.begin(),
                  stored_problems.end());

  const int http_port =
      replicas != nullptr ? replicas->ServingHttpPort() : local.http_port;
  const std::string dashboard =
      absl::StrCat("http://127.0.0.1:", http_port, "/#run=", run_id);
  std::printf("\ndashboard: %s\n  token (viewer): %s   (also in %s)\n",
              dashboard.c_str(), tokens.viewer.c_str(),
              tokens.viewer_file.c_str());
  if (absl::GetFlag(FLAGS_keep_running)) {
    std::printf("  the coordinator keeps running on %s; Ctrl-C stops it\n",
                target.c_str());
    std::fflush(stdout);
    WaitForInterrupt();
  } else {
    std::printf(
        "  (the coordinator stops now: ./scripts/demo --keep-running keeps it "
        "up to open the page)\n");
  }

  // A clean stop: SIGTERM, exit 0.
  if (replicas != nullptr) {
    if (absl::Status stopped = replicas->StopAll(); !stopped.ok()) {
      problems.push_back(std::string(stopped.message()));
    }
  } else {
    local.process->Signal(SIGTERM);
    ASSIGN_OR_RETURN(int coordinator_code,
                     local.process->Wait(absl::Now() + absl::Seconds(20)));
    if (coordinator_code != 0) {
      problems.push_back(absl::StrCat(
          "coordinator exited ", coordinator_code, " after SIGTERM:\n",
          LastLinesOf(dir + "/coordinator.log", 5)));
    }
  }

  if (!problems.empty()) {
    std::string all;
    for (const std::string& p : problems) absl::StrAppend(&all, "  ", p, "\n");
    return absl::InternalError(
        absl::StrCat(problems.size(), " check(s) failed:\n", all));
  }
  if (replicas != nullptr) {
    std::printf(
        "\ndemo OK: %s stopped cleanly; the demo's PostgreSQL stops now and "
        "its data directory is removed\n",
        replicas->count() == 1
            ? "the coordinator"
            : absl::StrCat(replicas->count(), " coordinators").c_str());
  } else {
    std::printf(
        "\ndemo OK: coordinator stopped cleanly; telemetry kept in "
        "%s/gradnorm.db\n",
        dir.c_str());
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace demo
}  // namespace gradnorm

int main(int argc, char** argv) {
  // --keep-running and --keep_running alike.
  std::vector<std::string> args(argv, argv + argc);
  std::vector<char*> arg_pointers;
  for (std::string& arg : args) {
    if (arg.rfind("--", 0) == 0) {
      const size_t end = std::min(arg.find('='), arg.size());
      std::replace(arg.begin() + 2, arg.begin() + end, '-', '_');
    }
    arg_pointers.push_back(arg.data());
  }
  absl::ParseCommandLine(static_cast<int>(arg_pointers.size()),
                         arg_pointers.data());
  const absl::Status status = gradnorm::demo::Run();
  std::fflush(stdout);
  if (!status.ok()) {
    std::fprintf(stderr, "demo FAILED: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
