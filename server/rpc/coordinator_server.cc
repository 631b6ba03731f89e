#include "server/rpc/coordinator_server.h"

#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/core/clock.h"
#include "server/rpc/server_settings.h"
#include "server/store/leader_directory.h"
#include "server/store/memory_telemetry_store.h"
#include "server/store/postgres_telemetry_store.h"
#include "server/store/sqlite_telemetry_store.h"

namespace gradnorm {
namespace server {
namespace {

constexpr const char* kServiceName = HealthService::kCoordinatorService;

// A store that cannot be read says which file and what to do about it.
absl::Status DamagedStore(const CoordinatorServerOptions& options,
                          const absl::Status& status) {
  if (status.code() != absl::StatusCode::kDataLoss ||
      options.store != StoreKind::kSqlite) {
    return status;
  }
  return absl::DataLossError(absl::StrCat(
      "the database ", options.db_path, " is damaged (", status.message(),
      "); restore it from a backup, or move it aside to start with an empty "
      "one"));
}

absl::StatusOr<std::unique_ptr<TelemetryStore>> OpenStore(
    const CoordinatorServerOptions& options) {
  if (options.store == StoreKind::kMemory) {
    return std::unique_ptr<TelemetryStore>(
        std::make_unique<MemoryTelemetryStore>());
  }
  if (options.store == StoreKind::kPostgres) {
    if (options.postgres_dsn.empty()) {
      return absl::InvalidArgumentError(
          "the PostgreSQL store needs a connection string (--postgres_dsn or "
          "--postgres_dsn_file)");
    }
    PostgresStoreOptions store_options;
    store_options.dsn = options.postgres_dsn;
    store_options.standby = options.postgres_standby;
    absl::StatusOr<std::unique_ptr<PostgresTelemetryStore>> store =
        PostgresTelemetryStore::Open(store_options);
    if (!store.ok()) return store.status();
    return std::unique_ptr<TelemetryStore>(*std::move(store));
  }
  if (options.db_path.empty()) {
    return absl::InvalidArgumentError(
        "the SQLite store needs a database path (--db), or use --store=memory");
  }
  SqliteStoreOptions store_options;
  store_options.path = options.db_path;
  store_options.synchronous_full = options.sqlite_synchronous_full;
  absl::StatusOr<std::unique_ptr<SqliteTelemetryStore>> store =
      SqliteTelemetryStore::Open(store_options);
  if (!store.ok()) return DamagedStore(options, store.status());
  return std::unique_ptr<TelemetryStore>(*std::move(store));
}

// "host:port" -> host; the host part may be a bracketed IPv6 address.
absl::StatusOr<std::string> HostOf(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  int port;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "listen address '", listen,
        "' is not host:port (e.g. 127.0.0.1:50051, 0.0.0.0:0, [::]:50051)"));
  }
  return listen.substr(0, colon);
}

}  // namespace

absl::StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Create(
    CoordinatorServerOptions options) {
  if (options.max_message_bytes <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_message_bytes is ", options.max_message_bytes, ", expected > 0"));
  }
  ASSIGN_OR_RETURN(std::string host, HostOf(options.listen));
  if (!options.health_listen.empty()) {
    RETURN_IF_ERROR(HostOf(options.health_listen).status());
  }
  std::unique_ptr<CoordinatorServer> server(new CoordinatorServer());
  server->options_ = options;

  // Everything that can fail on bad input is checked before the store opens.
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                   MakeServerCredentials(options.tls));
  if (!options.tokens_file.empty()) {
    ASSIGN_OR_RETURN(server->auth_,
                     TokenAuthenticator::FromFile(options.tokens_file));
  }
  server->metrics_ = PrometheusMetrics::Create();
  ASSIGN_OR_RETURN(server->store_, OpenStore(options));

  PrometheusMetrics* metrics = server->metrics_.get();
  AggregatorOptions aggregator_options = options.aggregator;
  aggregator_options.log = options.log;
  aggregator_options.on_round_committed =
      [metrics](const v1::RoundResult& result, absl::Duration commit_latency) {
        metrics->RecordRound(result.action());
        metrics->RecordStoreCommit(absl::ToDoubleSeconds(commit_latency));
      };
  absl::StatusOr<std::unique_ptr<Aggregator>> aggregator_or =
      Aggregator::Create(aggregator_options, server->store_.get(),
                         Clock::Real());
  if (!aggregator_or.ok()) return DamagedStore(options, aggregator_or.status());
  server->aggregator_ = *std::move(aggregator_or);
  // Read at each scrape; cleared in Shutdown, before the Aggregator goes.
  Aggregator* aggregator = server->aggregator_.get();
  metrics->SetActiveRunsSource([aggregator] {
    return static_cast<int64_t>(aggregator->Stats().active_runs);
  });

  server->service_ = std::make_unique<CoordinatorService>(
      server->aggregator_.get(), server->auth_.get(), metrics, options.log);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  ApplyServerSettings(builder, options.max_message_bytes);
  builder.AddListeningPort(options.listen, credentials, &server->port_);
  builder.RegisterService(server->service_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot serve on '", options.listen,
        "' (address in use, bad TLS certificate or key, or not a local "
        "address?)"));
  }
  server->address_ = absl::StrCat(host, ":", server->port_);
  // Health alone: no Coordinator rpc is reachable without the main port's
  // TLS and tokens.
  if (options.health != nullptr) {
    server->health_ = options.health;
  } else if (!options.health_listen.empty()) {
    ASSIGN_OR_RETURN(server->own_health_,
                     HealthPort::Start(options.health_listen));
    server->health_ = server->own_health_.get();
  }
  if (server->health_ != nullptr)
    server->health_port_ = server->health_->port();
  if (!options.http_listen.empty()) {
    PrometheusMetrics* metrics = server->metrics_.get();
    server->json_api_ = std::make_unique<JsonApi>(
        server->aggregator_.get(), server->auth_.get(),
        [metrics] { return metrics->TextSnapshot(); });
    HttpServerOptions http;
    http.listen = options.http_listen;
    // The same TLS as the gRPC port: HTTPS (mutual with a client CA).
    http.tls_cert = options.tls.cert;
    http.tls_key = options.tls.key;
    http.tls_client_ca = options.tls.client_ca;
    JsonApi* api = server->json_api_.get();
    ASSIGN_OR_RETURN(server->http_server_,
                     HttpServer::Start(http, [api](const HttpRequest& request) {
                       return api->Handle(request);
                     }));
  }
  if (!options.advertise_host.empty()) {
    auto* postgres =
        dynamic_cast<PostgresTelemetryStore*>(server->store_.get());
    if (postgres == nullptr) {
      return absl::InvalidArgumentError(
          "advertise_host is for replicas, which share a PostgreSQL store; "
          "expected StoreKind::kPostgres");
    }
    AdvertisedAddresses advertised;
    advertised.grpc = absl::StrCat(options.advertise_host, ":", server->port_);
    if (server->http_server_ != nullptr) {
      advertised.http = absl::StrCat(options.advertise_host, ":",
                                     server->http_server_->port());
    }
    RETURN_IF_ERROR(postgres->Advertise(FormatAdvertised(advertised)));
  }
  server->SetServing(true);
  return server;
}

CoordinatorServer::~CoordinatorServer() { (void)Shutdown(); }

void CoordinatorServer::SetServing(bool serving) {
  if (server_ != nullptr) {
    grpc::HealthCheckServiceInterface* health =
        server_->GetHealthCheckService();
    if (health != nullptr) {
      health->SetServingStatus(kServiceName, serving);
      health->SetServingStatus(serving);
    }
  }
  if (health_ != nullptr) health_->SetServing(serving);
}

absl::Status CoordinatorServer::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) {
      mu_.Await(absl::Condition(&shut_down_));
      return shutdown_status_;
    }
    shutting_down_ = true;
  }
  SetServing(false);
  // HTTP requests call the Aggregator: they end before it shuts down.
  if (http_server_ != nullptr) http_server_->Stop();
  // The Aggregator first: waiters get UNAVAILABLE (a retryable code) rather
  // than the CANCELLED a server shutdown would give them, and the store is
  // flushed while the server still answers.
  absl::Status status =
      aggregator_ != nullptr ? aggregator_->Shutdown() : absl::OkStatus();
  // Idle ReportStreams would hold the server's shutdown for its whole grace.
  if (service_ != nullptr) service_->ShutdownStreams();
  if (server_ != nullptr) {
    server_->Shutdown(
        absl::ToChronoTime(absl::Now() + options_.shutdown_grace));
  }
  // Last: probes see NOT_SERVING until the main server is gone (a health
  // port the caller keeps goes on answering NOT_SERVING).
  if (own_health_ != nullptr) {
    health_ = nullptr;
    own_health_.reset();
  }
  if (metrics_ != nullptr) {
    metrics_->SetActiveRuns(
        aggregator_ != nullptr
            ? static_cast<int64_t>(aggregator_->Stats().active_runs)
            : 0);
    metrics_->SetActiveRunsSource(nullptr);
  }
  absl::MutexLock lock(&mu_);
  shut_down_ = true;
  shutdown_status_ = status;
  return shutdown_status_;
}

void CoordinatorServer::Wait() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(&shut_down_));
}

}  // namespace server
}  // namespace gradnorm
