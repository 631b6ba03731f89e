#include "server/rpc/coordinator_service.h"

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/grpc_status.h"
#include "server/rpc/call_deadline.h"
#include "server/rpc/report_reactor.h"
#include "server/rpc/report_stream_reactor.h"
#include "server/rpc/watch_reactor.h"
#include "server/rpc/wire_message.h"

namespace gradnorm {
namespace server {

CoordinatorService::CoordinatorService(Aggregator* aggregator,
                                       const TokenAuthenticator* auth,
                                       CoordinatorMetrics* metrics,
                                       EventLog* log)
    : aggregator_(aggregator),
      auth_(auth),
      metrics_(metrics),
      log_(log),
      streams_(std::make_unique<StreamRegistry>()) {}

CoordinatorService::~CoordinatorService() = default;

void CoordinatorService::ShutdownStreams() { streams_->ShutdownAll(); }

absl::Status CoordinatorService::Authorize(grpc::CallbackServerContext* context,
                                           Permission permission) const {
  if (auth_ == nullptr) return absl::OkStatus();
  const auto& metadata = context->client_metadata();
  auto it = metadata.find(std::string(kAuthorizationMetadataKey));
  absl::string_view header;
  if (it != metadata.end())
    header = absl::string_view(it->second.data(), it->second.size());
  absl::Status status = auth_->Authorize(header, permission);
  uint64_t suppressed = 0;
  if (!status.ok() && log_ != nullptr &&
      auth_failures_.Allow(absl::Now(), &suppressed)) {
    log_->Log(LogLevel::kWarning, "auth_failed",
              {{"code", absl::StatusCodeToString(status.code())},
               {"peer", context->peer()},
               {"why", std::string(status.message())},
               {"suppressed", absl::StrCat(suppressed)}});
  }
  return status;
}

template <typename Request, typename Response, typename Handle>
grpc::ServerUnaryReactor* CoordinatorService::Unary(
    absl::string_view rpc, Permission permission,
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request_bytes,
    grpc::ByteBuffer* response_bytes, Handle handle) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Request request;
  absl::Status status = Authorize(context, permission);
  if (status.ok()) status = ParseRequest(rpc, *request_bytes, &request);
  if (status.ok()) {
    absl::StatusOr<Response> response = handle(request);
    if (response.ok()) *response_bytes = SerializeMessage(*response);
    status = response.status();
  }
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

grpc::ServerUnaryReactor* CoordinatorService::RegisterRun(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return Unary<v1::RegisterRunRequest, v1::RegisterRunResponse>(
      "RegisterRun", Permission::kReport, context, request, response,
      [this](const v1::RegisterRunRequest& r) {
        return aggregator_->RegisterRun(r);
      });
}

grpc::ServerUnaryReactor* CoordinatorService::Report(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request_bytes,
    grpc::ByteBuffer* response) {
  v1::ReportRequest request;
  absl::Status status = Authorize(context, Permission::kReport);
  if (status.ok()) status = ParseRequest("Report", *request_bytes, &request);
  return NewReportReactor(aggregator_, metrics_, response, status, request,
                          AggregatorDeadline(DeadlineOf(context), absl::Now()));
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>*
CoordinatorService::ReportStream(grpc::CallbackServerContext* context) {
  return NewReportStreamReactor(aggregator_, metrics_, streams_.get(),
                                DeadlineOf(context),
                                Authorize(context, Permission::kReport));
}

grpc::ServerUnaryReactor* CoordinatorService::ListRuns(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return Unary<v1::ListRunsRequest, v1::ListRunsResponse>(
      "ListRuns", Permission::kQuery, context, request, response,
      [this](const v1::ListRunsRequest&) {
        return absl::StatusOr<v1::ListRunsResponse>(aggregator_->ListRuns());
      });
}

grpc::ServerUnaryReactor* CoordinatorService::GetRun(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return Unary<v1::GetRunRequest, v1::GetRunResponse>(
      "GetRun", Permission::kQuery, context, request, response,
      [this](const v1::GetRunRequest& r) -> absl::StatusOr<v1::GetRunResponse> {
        absl::StatusOr<v1::RunInfo> run = aggregator_->GetRun(r.run_id());
        if (!run.ok()) return run.status();
        v1::GetRunResponse answer;
        *answer.mutable_run() = *std::move(run);
        return answer;
      });
}

grpc::ServerUnaryReactor* CoordinatorService::GetHistory(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return Unary<v1::GetHistoryRequest, v1::GetHistoryResponse>(
      "GetHistory", Permission::kQuery, context, request, response,
      [this](const v1::GetHistoryRequest& r) {
        return aggregator_->GetHistory(r);
      });
}

grpc::ServerUnaryReactor* CoordinatorService::GetSummary(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return Unary<v1::GetSummaryRequest, v1::GetSummaryResponse>(
      "GetSummary", Permission::kQuery, context, request, response,
      [this](const v1::GetSummaryRequest& r) {
        return aggregator_->GetSummary(r);
      });
}

grpc::ServerUnaryReactor* CoordinatorService::FinishRun(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return Unary<v1::FinishRunRequest, v1::FinishRunResponse>(
      "FinishRun", Permission::kReport, context, request, response,
      [this](const v1::FinishRunRequest& r) {
        return aggregator_->FinishRun(r.run_id());
      });
}

grpc::ServerUnaryReactor* CoordinatorService::DeleteRun(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return Unary<v1::DeleteRunRequest, v1::DeleteRunResponse>(
      "DeleteRun", Permission::kAdmin, context, request, response,
      [this](const v1::DeleteRunRequest& r) {
        return aggregator_->DeleteRun(r.run_id());
      });
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* CoordinatorService::WatchRun(
    grpc::CallbackServerContext* context,
    const grpc::ByteBuffer* request_bytes) {
  v1::WatchRunRequest request;
  absl::Status status = Authorize(context, Permission::kQuery);
  if (status.ok()) status = ParseRequest("WatchRun", *request_bytes, &request);
  return NewWatchReactor(aggregator_, status, request);
}

}  // namespace server
}  // namespace gradnorm
