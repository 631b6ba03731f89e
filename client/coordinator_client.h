// The trainer's side of the coordinator protocol (coordinator.proto): a gRPC
// client that registers a run (or looks it up) and reports a job's partial
// for a step, waiting for the round's result.
//
//   CoordinatorClientOptions options;
//   options.target = "coordinator.gradnorm:7443";
//   options.security = CoordinatorClientOptions::Security::kTls;
//   options.root_certs_pem = ReadFile("/etc/gradnorm/ca.pem");
//   options.bearer_token = std::getenv("GRADNORM_TOKEN");
//   ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorClient> client,
//                    CoordinatorClient::Create(options));
//   gradnorm::v1::ReportRequest report;
//   report.set_run_id("llama-70b-run7");
//   report.set_step(step);
//   report.set_participant(job_index);
//   report.set_partial(job_partial);
//   ASSIGN_OR_RETURN(gradnorm::v1::RoundResult result,
//                    client->Report(report, absl::Now() + absl::Minutes(2)));
//
// Reports and registrations are idempotent, so a call that fails with
// UNAVAILABLE (coordinator restarting, connection lost) is retried with
// jittered exponential backoff until its deadline; every other error is
// returned at once, with the server's code and message prefixed by the call
// ("Report: ..."). Between retries the client keeps gRPC connecting, and a
// retry goes out as soon as a connection is up (a coordinator restarted, or
// another address of the target serving). When the deadline passes while
// retrying, the result is DEADLINE_EXCEEDED naming the attempts and the last
// error. The client itself never gives up before the deadline; the
// coordinator answers a report whose deadline is near up to a fifth of the
// time allowed (at most 200 ms) early, so that its DEADLINE_EXCEEDED can name
// the missing participants.
//
// Reports travel on one long-lived ReportStream per client (one message per
// step instead of one call), with the same results, errors and retries; a
// stream that breaks is reopened on the next attempt. A per-report deadline is
// enforced by a watchdog thread that cancels the stream when it passes. A
// Report made while another thread's Report holds the stream, or against a
// coordinator without ReportStream (UNIMPLEMENTED), is a plain Report call.
//
// Keepalive: the channel pings an idle connection every keepalive_time (30 s)
// and drops it when no answer comes within keepalive_timeout (10 s), also
// between calls (a Report may wait minutes for the other jobs). The coordinator
// permits pings this often, without calls (see server/).
//
// Thread-safety: thread-safe; concurrent calls share one channel.
#ifndef GRADNORM_CLIENT_COORDINATOR_CLIENT_H_
#define GRADNORM_CLIENT_COORDINATOR_CLIENT_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client/call_watchdog.h"
#include "gradnorm/v1/coordinator.grpc.pb.h"
#include "gradnorm/v1/coordinator.pb.h"
#include "grpcpp/impl/codegen/channel_interface.h"
#include "grpcpp/support/channel_arguments.h"

namespace gradnorm {

struct CoordinatorClientOptions {
  // "host:port" of the coordinator.
  std::string target;

  enum class Security { kInsecure, kTls, kMutualTls };
  Security security = Security::kInsecure;
  // TLS: PEM of the CAs that sign the coordinator's certificate (empty: the
  // system's roots).
  std::string root_certs_pem;
  // Mutual TLS: this client's certificate chain and private key, PEM.
  std::string client_cert_pem;
  std::string client_key_pem;
  // TLS: the name the coordinator's certificate must carry, when it differs
  // from the target's host (e.g. connecting by IP address).
  std::string tls_server_name;

  // Sent as "authorization: Bearer <token>" on every call when not empty.
  std::string bearer_token;

  absl::Duration keepalive_time = absl::Seconds(30);
  absl::Duration keepalive_timeout = absl::Seconds(10);

  // Retry backoff on UNAVAILABLE: the first wait is initial_backoff, each next
  // one multiplier times longer up to max_backoff, each scaled by a random
  // factor in [1 - jitter, 1 + jitter].
  absl::Duration initial_backoff = absl::Milliseconds(100);
  absl::Duration max_backoff = absl::Seconds(5);
  double backoff_multiplier = 2.0;
  double jitter = 0.2;

  // Report over a ReportStream (see above); false: one Report call each.
  bool report_stream = true;
};

class CoordinatorClient {
 public:
  // Opens a channel to options.target (connecting lazily). INVALID_ARGUMENT
  // for an empty target, mutual TLS without a certificate and key, or bad
  // backoff settings.
  static absl::StatusOr<std::unique_ptr<CoordinatorClient>> Create(
      const CoordinatorClientOptions& options);

  // Uses `stub` instead of a channel (tests pass the generated
  // MockCoordinatorStub). Same validation as Create, except the target.
  static absl::StatusOr<std::unique_ptr<CoordinatorClient>> CreateWithStub(
      std::unique_ptr<gradnorm::v1::Coordinator::StubInterface> stub,
      const CoordinatorClientOptions& options);

  // Cancels an open ReportStream.
  ~CoordinatorClient();

  CoordinatorClient(const CoordinatorClient&) = delete;
  CoordinatorClient& operator=(const CoordinatorClient&) = delete;

  // Registers `run_id` with `config` (a no-op when it exists with the same
  // config). Errors are the coordinator's (FAILED_PRECONDITION for a different
  // config, INVALID_ARGUMENT, ...) or DEADLINE_EXCEEDED.
  absl::StatusOr<gradnorm::v1::RegisterRunResponse> RegisterRun(
      const std::string& run_id, const gradnorm::v1::RunConfig& config,
      absl::Time deadline);

  // The run as the coordinator stores it (defaults filled in), retried on
  // UNAVAILABLE like RegisterRun. Errors: NOT_FOUND for a run that is not
  // registered, the coordinator's others (INVALID_ARGUMENT for a bad run id,
  // auth errors), or DEADLINE_EXCEEDED.
  absl::StatusOr<gradnorm::v1::RunInfo> GetRun(const std::string& run_id,
                                               absl::Time deadline);

  // The dashboard queries (see coordinator.proto), retried on UNAVAILABLE
  // like GetRun. Errors are the coordinator's (NOT_FOUND for an unknown run,
  // INVALID_ARGUMENT for a bad range, auth errors) or DEADLINE_EXCEEDED.
  absl::StatusOr<gradnorm::v1::ListRunsResponse> ListRuns(
      const gradnorm::v1::ListRunsRequest& request, absl::Time deadline);
  absl::StatusOr<gradnorm::v1::GetHistoryResponse> GetHistory(
      const gradnorm::v1::GetHistoryRequest& request, absl::Time deadline);
  absl::StatusOr<gradnorm::v1::GetSummaryResponse> GetSummary(
      const gradnorm::v1::GetSummaryRequest& request, absl::Time deadline);

  // The run's lifecycle (see coordinator.proto), retried on UNAVAILABLE like
  // GetRun: finishing is idempotent; a delete whose answer was lost is
  // answered NOT_FOUND on its retry.
  absl::StatusOr<gradnorm::v1::FinishRunResponse> FinishRun(
      const gradnorm::v1::FinishRunRequest& request, absl::Time deadline);
  absl::StatusOr<gradnorm::v1::DeleteRunResponse> DeleteRun(
      const gradnorm::v1::DeleteRunRequest& request, absl::Time deadline);

  // Reports one participant's partial and returns the round's result once all
  // participants reported. Errors are the coordinator's (see coordinator.proto)
  // or DEADLINE_EXCEEDED.
  absl::StatusOr<gradnorm::v1::RoundResult> Report(
      const gradnorm::v1::ReportRequest& request, absl::Time deadline);

  // Calls retried after UNAVAILABLE since creation (for tests and logs).
  uint64_t retries() const { return retries_.load(); }

  // ReportStreams opened since creation (for tests and logs).
  uint64_t streams_opened() const { return streams_opened_.load(); }

 private:
  CoordinatorClient(
      std::shared_ptr<grpc::ChannelInterface> channel,
      std::unique_ptr<gradnorm::v1::Coordinator::StubInterface> stub,
      const CoordinatorClientOptions& options);

  // Runs `call` with a fresh context until it succeeds, fails with another
  // code than UNAVAILABLE, or the deadline would pass during the next wait.
  absl::Status CallWithRetries(
      absl::string_view name, absl::Time deadline,
      const std::function<grpc::Status(grpc::ClientContext*)>& call);

  // A unary call retried like the others: `call(context, &response)`.
  template <typename Response, typename Call>
  absl::StatusOr<Response> Query(absl::string_view name, absl::Time deadline,
                                 Call call) {
    Response response;
    absl::Status status =
        CallWithRetries(name, deadline, [&](grpc::ClientContext* context) {
          response.Clear();
          return call(context, &response);
        });
    if (!status.ok()) return status;
    return response;
  }

  // One open ReportStream.
  struct Stream {
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientReaderWriterInterface<
        gradnorm::v1::ReportStreamRequest, gradnorm::v1::ReportStreamResponse>>
        stream;
  };

  // How one attempt on the stream ended.
  enum class StreamAttempt { kAnswered, kRetry, kFallBack };

  absl::StatusOr<gradnorm::v1::RoundResult> ReportOnStream(
      const gradnorm::v1::ReportRequest& request, absl::Time deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(stream_mu_);
  // One request and its answer on stream_ (opened first if needed). kAnswered:
  // *result holds the answer or the final error; kRetry: the stream broke with
  // *result's UNAVAILABLE; kFallBack: the coordinator has no ReportStream.
  StreamAttempt TryOnStream(const gradnorm::v1::ReportStreamRequest& request,
                            absl::Time deadline,
                            absl::StatusOr<gradnorm::v1::RoundResult>* result)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(stream_mu_);
  absl::StatusOr<gradnorm::v1::RoundResult> ReportByCall(
      const gradnorm::v1::ReportRequest& request, absl::Time deadline);
  // The jittered wait before retry `attempt` (1-based) after UNAVAILABLE, or
  // DEADLINE_EXCEEDED when it would end past the deadline.
  absl::StatusOr<absl::Duration> RetryWait(absl::string_view name, int attempt,
                                           absl::Time deadline,
                                           const absl::Status& last,
                                           std::optional<absl::BitGen>* rng,
                                           absl::Duration* backoff);

  // Waits `wait` before a retry, watching the channel's connectivity rather
  // than sleeping: gRPC advances a connection attempt only while some thread
  // polls the channel, and a client whose threads all slept between
  // fail-fast attempts would reach a coordinator that came back (or a
  // standby that took over) only at gRPC's 5-s backup poll. The wait ends
  // early when the channel becomes READY after being otherwise, so the retry
  // goes out on the new connection at once. Without a channel (CreateWithStub)
  // it sleeps.
  void PauseBeforeRetry(absl::Duration wait);

  // Null with CreateWithStub.
  const std::shared_ptr<grpc::ChannelInterface> channel_;
  const std::unique_ptr<gradnorm::v1::Coordinator::StubInterface> stub_;
  const CoordinatorClientOptions options_;
  std::atomic<uint64_t> retries_{0};
  std::atomic<uint64_t> streams_opened_{0};
  // Set for good when the coordinator turns out to have no ReportStream.
  std::atomic<bool> stream_unsupported_{false};

  // Held by the one Report using the stream.
  absl::Mutex stream_mu_;
  std::unique_ptr<Stream> stream_ ABSL_GUARDED_BY(stream_mu_);
  CallWatchdog watchdog_;
};

// The channel arguments Create uses: keepalive (time, timeout, permitted
// without calls, unlimited pings without data), reconnect backoff bounded by
// max_backoff so a restarted coordinator is found quickly. Exposed so tests
// can check them against the server's settings.
grpc::ChannelArguments CoordinatorChannelArguments(
    const CoordinatorClientOptions& options);

// The channel Create opens: options.target with options' security (TLS,
// mutual TLS, server name override) and `args` (by default
// CoordinatorChannelArguments), connecting lazily. For tools that make their
// own calls (gradnormctl). INVALID_ARGUMENT as Create.
absl::StatusOr<std::shared_ptr<grpc::Channel>> NewCoordinatorChannel(
    const CoordinatorClientOptions& options);
absl::StatusOr<std::shared_ptr<grpc::Channel>> NewCoordinatorChannel(
    const CoordinatorClientOptions& options, grpc::ChannelArguments args);

}  // namespace gradnorm

#endif  // GRADNORM_CLIENT_COORDINATOR_CLIENT_H_
