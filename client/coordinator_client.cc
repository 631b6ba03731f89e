#include "client/coordinator_client.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

namespace gradnorm {
namespace {

absl::Status ValidateOptions(const CoordinatorClientOptions& options) {
  if (options.security == CoordinatorClientOptions::Security::kMutualTls &&
      (options.client_cert_pem.empty() || options.client_key_pem.empty())) {
    return absl::InvalidArgumentError(
        "mutual TLS needs client_cert_pem and client_key_pem");
  }
  if (options.initial_backoff <= absl::ZeroDuration() ||
      options.max_backoff < options.initial_backoff ||
      options.backoff_multiplier < 1.0 || options.jitter < 0.0 ||
      options.jitter >= 1.0) {
    return absl::InvalidArgumentError(
        "invalid retry backoff: expected 0 < initial_backoff <= max_backoff, "
        "backoff_multiplier >= 1 and 0 <= jitter < 1");
  }
  if (options.keepalive_time <= absl::ZeroDuration() ||
      options.keepalive_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "keepalive_time and keepalive_timeout must be > 0");
  }
  return absl::OkStatus();
}

std::shared_ptr<grpc::ChannelCredentials> Credentials(
    const CoordinatorClientOptions& options) {
  if (options.security == CoordinatorClientOptions::Security::kInsecure) {
    return grpc::InsecureChannelCredentials();
  }
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = options.root_certs_pem;
  if (options.security == CoordinatorClientOptions::Security::kMutualTls) {
    ssl.pem_cert_chain = options.client_cert_pem;
    ssl.pem_private_key = options.client_key_pem;
  }
  return grpc::SslCredentials(ssl);
}

int Millis(absl::Duration d) {
  return static_cast<int>(
      std::min<int64_t>(absl::ToInt64Milliseconds(d), INT32_MAX));
}

}  // namespace

grpc::ChannelArguments CoordinatorChannelArguments(
    const CoordinatorClientOptions& options) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, Millis(options.keepalive_time));
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, Millis(options.keepalive_timeout));
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // Reports are retried here, with knowledge of their idempotency; gRPC's own
  // retry machinery would only buffer every call for nothing.
  args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
  // A Report may wait long for other jobs without any data frames; without
  // this gRPC stops pinging after two pings and keepalive would lapse.
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // Reports and results are a few hundred bytes: no window to size, so no
  // bandwidth-delay probe pings (each one a frame and a wake-up each way).
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  // gRPC's default reconnect backoff grows to 120 s; a coordinator that
  // restarts in seconds must be found again within the retry schedule.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
              Millis(options.initial_backoff));
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS,
              Millis(options.initial_backoff));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, Millis(options.max_backoff));
  return args;
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> NewCoordinatorChannel(
    const CoordinatorClientOptions& options) {
  return NewCoordinatorChannel(options, CoordinatorChannelArguments(options));
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> NewCoordinatorChannel(
    const CoordinatorClientOptions& options, grpc::ChannelArguments args) {
  if (options.target.empty()) {
    return absl::InvalidArgumentError(
        "coordinator target is empty: expected host:port");
  }
  if (absl::Status s = ValidateOptions(options); !s.ok()) return s;
  if (!options.tls_server_name.empty()) {
    args.SetSslTargetNameOverride(options.tls_server_name);
  }
  return grpc::CreateCustomChannel(options.target, Credentials(options), args);
}

absl::StatusOr<std::unique_ptr<CoordinatorClient>> CoordinatorClient::Create(
    const CoordinatorClientOptions& options) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      NewCoordinatorChannel(options);
  if (!channel.ok()) return channel.status();
  return std::unique_ptr<CoordinatorClient>(new CoordinatorClient(
      *channel, gradnorm::v1::Coordinator::NewStub(*channel), options));
}

absl::StatusOr<std::unique_ptr<CoordinatorClient>>
CoordinatorClient::CreateWithStub(
    std::unique_ptr<gradnorm::v1::Coordinator::StubInterface> stub,
    const CoordinatorClientOptions& options) {
  if (stub == nullptr) return absl::InvalidArgumentError("stub is null");
  if (absl::Status s = ValidateOptions(options); !s.ok()) return s;
  return std::unique_ptr<CoordinatorClient>(
      new CoordinatorClient(nullptr, std::move(stub), options));
}

CoordinatorClient::CoordinatorClient(
    std::shared_ptr<grpc::ChannelInterface> channel,
    std::unique_ptr<gradnorm::v1::Coordinator::StubInterface> stub,
    const CoordinatorClientOptions& options)
    : channel_(std::move(channel)), stub_(std::move(stub)), options_(options) {}

CoordinatorClient::~CoordinatorClient() {
  absl::MutexLock lock(&stream_mu_);
  if (stream_ != nullptr) {
    // Cancelled rather than half-closed: a hung coordinator cannot hold this.
    stream_->context.TryCancel();
    (void)stream_->stream->Finish();
  }
}

absl::StatusOr<absl::Duration> CoordinatorClient::RetryWait(
    absl::string_view name, int attempt, absl::Time deadline,
    const absl::Status& last, std::optional<absl::BitGen>* rng,
    absl::Duration* backoff) {
  // Seeded only on a first retry: the common path makes one call.
  if (!rng->has_value()) rng->emplace();
  const absl::Duration wait =
      *backoff *
      absl::Uniform(**rng, 1.0 - options_.jitter, 1.0 + options_.jitter);
  const absl::Time now = absl::Now();
  if (now + wait >= deadline) {
    // Given up at the deadline, not before it: a caller that waits in slices
    // (GradNormClipper) would otherwise end each slice up to a backoff early.
    if (deadline > now) absl::SleepFor(deadline - now);
    return absl::DeadlineExceededError(absl::StrCat(
        name, ": the coordinator stayed unavailable until the deadline (",
        attempt, " attempts); last error: ", last.message()));
  }
  ++retries_;
  *backoff =
      std::min(*backoff * options_.backoff_multiplier, options_.max_backoff);
  return wait;
}

void CoordinatorClient::PauseBeforeRetry(absl::Duration wait) {
  if (channel_ == nullptr) {
    absl::SleepFor(wait);
    return;
  }
  const auto until = absl::ToChronoTime(absl::Now() + wait);
  grpc_connectivity_state state = channel_->GetState(/*try_to_connect=*/true);
  bool was_not_ready = state != GRPC_CHANNEL_READY;
  // WaitForStateChange polls the channel until its state changes or `until`.
  while (channel_->WaitForStateChange(state, until)) {
    state = channel_->GetState(/*try_to_connect=*/true);
    if (state == GRPC_CHANNEL_READY && was_not_ready) return;
    was_not_ready = was_not_ready || state != GRPC_CHANNEL_READY;
  }
}

absl::Status CoordinatorClient::CallWithRetries(
    absl::string_view name, absl::Time deadline,
    const std::function<grpc::Status(grpc::ClientContext*)>& call) {
  std::optional<absl::BitGen> rng;
  absl::Duration backoff = options_.initial_backoff;
  for (int attempt = 1;; ++attempt) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(deadline));
    if (!options_.bearer_token.empty()) {
      context.AddMetadata("authorization",
                          absl::StrCat("Bearer ", options_.bearer_token));
    }
    const absl::Status status = FromGrpcStatus(call(&context), name);
    if (status.code() != absl::StatusCode::kUnavailable) return status;
    absl::StatusOr<absl::Duration> wait =
        RetryWait(name, attempt, deadline, status, &rng, &backoff);
    if (!wait.ok()) return wait.status();
    PauseBeforeRetry(*wait);
  }
}

absl::StatusOr<gradnorm::v1::RegisterRunResponse>
CoordinatorClient::RegisterRun(const std::string& run_id,
                               const gradnorm::v1::RunConfig& config,
                               absl::Time deadline) {
  gradnorm::v1::RegisterRunRequest request;
  request.set_run_id(run_id);
  *request.mutable_config() = config;
  gradnorm::v1::RegisterRunResponse response;
  absl::Status status = CallWithRetries(
      "RegisterRun", deadline, [&](grpc::ClientContext* context) {
        response.Clear();
        return stub_->RegisterRun(context, request, &response);
      });
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<gradnorm::v1::RunInfo> CoordinatorClient::GetRun(
    const std::string& run_id, absl::Time deadline) {
  gradnorm::v1::GetRunRequest request;
  request.set_run_id(run_id);
  gradnorm::v1::GetRunResponse response;
  absl::Status status =
      CallWithRetries("GetRun", deadline, [&](grpc::ClientContext* context) {
        response.Clear();
        return stub_->GetRun(context, request, &response);
      });
  if (!status.ok()) return status;
  return response.run();
}

absl::StatusOr<gradnorm::v1::ListRunsResponse> CoordinatorClient::ListRuns(
    const gradnorm::v1::ListRunsRequest& request, absl::Time deadline) {
  return Query<gradnorm::v1::ListRunsResponse>(
      "ListRuns", deadline, [&](grpc::ClientContext* context, auto* response) {
        return stub_->ListRuns(context, request, response);
      });
}

absl::StatusOr<gradnorm::v1::GetHistoryResponse> CoordinatorClient::GetHistory(
    const gradnorm::v1::GetHistoryRequest& request, absl::Time deadline) {
  return Query<gradnorm::v1::GetHistoryResponse>(
      "GetHistory", deadline,
      [&](grpc::ClientContext* context, auto* response) {
        return stub_->GetHistory(context, request, response);
      });
}

absl::StatusOr<gradnorm::v1::GetSummaryResponse> CoordinatorClient::GetSummary(
    const gradnorm::v1::GetSummaryRequest& request, absl::Time deadline) {
  return Query<gradnorm::v1::GetSummaryResponse>(
      "GetSummary", deadline,
      [&](grpc::ClientContext* context, auto* response) {
        return stub_->GetSummary(context, request, response);
      });
}

absl::StatusOr<gradnorm::v1::FinishRunResponse> CoordinatorClient::FinishRun(
    const gradnorm::v1::FinishRunRequest& request, absl::Time deadline) {
  return Query<gradnorm::v1::FinishRunResponse>(
      "FinishRun", deadline, [&](grpc::ClientContext* context, auto* response) {
        return stub_->FinishRun(context, request, response);
      });
}

absl::StatusOr<gradnorm::v1::DeleteRunResponse> CoordinatorClient::DeleteRun(
    const gradnorm::v1::DeleteRunRequest& request, absl::Time deadline) {
  return Query<gradnorm::v1::DeleteRunResponse>(
      "DeleteRun", deadline, [&](grpc::ClientContext* context, auto* response) {
        return stub_->DeleteRun(context, request, response);
      });
}

absl::StatusOr<gradnorm::v1::RoundResult> CoordinatorClient::Report(
    const gradnorm::v1::ReportRequest& request, absl::Time deadline) {
  if (options_.report_stream && !stream_unsupported_.load() &&
      stream_mu_.TryLock()) {
    absl::StatusOr<gradnorm::v1::RoundResult> result =
        ReportOnStream(request, deadline);
    stream_mu_.Unlock();
    return result;
  }
  // Another thread's report holds the stream (and may wait for a round this
  // one completes), or streams are off: a call of its own.
  return ReportByCall(request, deadline);
}

absl::StatusOr<gradnorm::v1::RoundResult> CoordinatorClient::ReportByCall(
    const gradnorm::v1::ReportRequest& request, absl::Time deadline) {
  gradnorm::v1::ReportResponse response;
  absl::Status status =
      CallWithRetries("Report", deadline, [&](grpc::ClientContext* context) {
        response.Clear();
        return stub_->Report(context, request, &response);
      });
  if (!status.ok()) return status;
  return response.result();
}

absl::StatusOr<gradnorm::v1::RoundResult> CoordinatorClient::ReportOnStream(
    const gradnorm::v1::ReportRequest& request, absl::Time deadline) {
  gradnorm::v1::ReportStreamRequest message;
  *message.mutable_report() = request;
  std::optional<absl::BitGen> rng;
  absl::Duration backoff = options_.initial_backoff;
  for (int attempt = 1;; ++attempt) {
    if (deadline != absl::InfiniteFuture()) {
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) {
        return absl::DeadlineExceededError(
            "Report: the deadline passed before the report could be sent");
      }
      message.set_timeout_ms(static_cast<uint64_t>(
          std::max<int64_t>(1, absl::ToInt64Milliseconds(left))));
    }
    absl::StatusOr<gradnorm::v1::RoundResult> result;
    switch (TryOnStream(message, deadline, &result)) {
      case StreamAttempt::kAnswered:
        return result;
      case StreamAttempt::kFallBack:
        stream_unsupported_.store(true);
        return ReportByCall(request, deadline);
      case StreamAttempt::kRetry:
        break;
    }
    absl::StatusOr<absl::Duration> wait =
        RetryWait("Report", attempt, deadline, result.status(), &rng, &backoff);
    if (!wait.ok()) return wait.status();
    PauseBeforeRetry(*wait);
  }
}

CoordinatorClient::StreamAttempt CoordinatorClient::TryOnStream(
    const gradnorm::v1::ReportStreamRequest& request, absl::Time deadline,
    absl::StatusOr<gradnorm::v1::RoundResult>* result) {
  if (stream_ == nullptr) {
    auto opened = std::make_unique<Stream>();
    if (!options_.bearer_token.empty()) {
      opened->context.AddMetadata(
          "authorization", absl::StrCat("Bearer ", options_.bearer_token));
    }
    opened->stream = stub_->ReportStream(&opened->context);
    // Only a test double without streams returns none.
    if (opened->stream == nullptr) return StreamAttempt::kFallBack;
    ++streams_opened_;
    stream_ = std::move(opened);
  }
  const bool watched = deadline != absl::InfiniteFuture();
  if (watched) watchdog_.Arm(&stream_->context, deadline);
  gradnorm::v1::ReportStreamResponse response;
  const bool answered =
      stream_->stream->Write(request) && stream_->stream->Read(&response);
  const bool timed_out = watched && watchdog_.Disarm();
  const uint64_t step = request.report().step();
  if (answered && response.step() == step) {
    // The answer stands even when the watchdog fired after it was read (before
    // Disarm): the round is final, and dropping its result would fail every
    // rank with DEADLINE_EXCEEDED although the round completed.
    if (response.has_result()) {
      *result = response.result();
    } else if (response.has_error() && response.error().code() != 0) {
      *result = FromGrpcStatus(
          grpc::Status(static_cast<grpc::StatusCode>(response.error().code()),
                       response.error().message()),
          "Report");
    } else {
      *result = absl::InternalError(
          absl::StrCat("Report: the coordinator answered step ", step,
                       " with neither a result nor an error"));
    }
    if (timed_out) {
      // The watchdog cancelled the stream: it cannot carry another report.
      (void)stream_->stream->Finish();
      stream_.reset();
    }
    return StreamAttempt::kAnswered;
  }
  // The stream is done for: it broke, was cancelled at the deadline, or
  // answered out of order.
  if (answered) stream_->context.TryCancel();
  const grpc::Status status = stream_->stream->Finish();
  stream_.reset();
  if (timed_out) {
    *result = absl::DeadlineExceededError(
        absl::StrCat("Report: no answer for step ", step,
                     " before the deadline; the report stays in its round"));
    return StreamAttempt::kAnswered;
  }
  if (answered) {
    *result = absl::InternalError(
        absl::StrCat("Report: the coordinator answered step ", response.step(),
                     " to a report of step ", step));
    return StreamAttempt::kAnswered;
  }
  if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED) {
    return StreamAttempt::kFallBack;
  }
  *result = FromGrpcStatus(status, "Report");
  if (result->ok()) {
    // The coordinator closed the stream without answering.
    *result = absl::UnavailableError(absl::StrCat(
        "Report: the coordinator closed the stream before answering step ",
        step));
  }
  return result->status().code() == absl::StatusCode::kUnavailable
             ? StreamAttempt::kRetry
             : StreamAttempt::kAnswered;
}

}  // namespace gradnorm
