// The coordinator process's wiring: store, Aggregator, metrics, auth, TLS, the
// gRPC server with the Coordinator and health services. server/main.cc
// turns flags into CoordinatorServerOptions and calls Create; tests start the
// same server in-process.
//
//   CoordinatorServerOptions options;
//   options.listen = "127.0.0.1:0";        // port 0: any free port
//   options.store = StoreKind::kMemory;
//   ASSIGN_OR_RETURN(auto server, CoordinatorServer::Create(options));
//   Connect(server->address());
//   ...
//   RETURN_IF_ERROR(server->Shutdown());   // graceful; also done by the
//   destructor
//
// Serving: gradnorm.v1.Coordinator (coordinator_service.h) and grpc.health.v1
// (SERVING for "" and "gradnorm.v1.Coordinator" while up). With health_listen,
// grpc.health.v1 alone, with the same statuses, is also served in plaintext on
// a port of its own: probes that cannot speak (mutual) TLS, as the kubelet's
// gRPC probe cannot, check it there, and nothing else is reachable through it.
// Requests larger than max_message_bytes fail with RESOURCE_EXHAUSTED before
// reaching a handler. Keepalive: clients may ping every 10 s, also without
// calls in flight; the server pings idle connections every 60 s and drops them
// after 20 s without an answer.
//
// Shutdown (SIGTERM in the binary): health NOT_SERVING, Aggregator::Shutdown
// (every waiting Report and WatchRun gets UNAVAILABLE, the store commits what
// it was given), then the gRPC server shuts down, cancelling whatever is left
// after shutdown_grace.
//
// Thread-safety: Shutdown and Wait may be called from any thread.
#ifndef GRADNORM_SERVER_RPC_COORDINATOR_SERVER_H_
#define GRADNORM_SERVER_RPC_COORDINATOR_SERVER_H_

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/server.h"
#include "server/core/aggregator.h"
#include "server/http/http_server.h"
#include "server/http/json_api.h"
#include "server/rpc/auth.h"
#include "server/rpc/coordinator_service.h"
#include "server/rpc/health_port.h"
#include "server/rpc/metrics.h"
#include "server/rpc/tls.h"
#include "server/store/telemetry_store.h"

namespace gradnorm {
namespace server {

enum class StoreKind { kSqlite, kMemory, kPostgres };

struct CoordinatorServerOptions {
  // host:port to listen on; port 0 picks a free port (see port()).
  std::string listen = "127.0.0.1:50051";
  StoreKind store = StoreKind::kSqlite;
  // SQLite database file (created if missing), for StoreKind::kSqlite.
  std::string db_path = "gradnorm.db";
  // SQLite PRAGMA synchronous=FULL (an acknowledged round also survives power
  // loss, at an fsync per commit) or NORMAL (the default: it survives a crash
  // or SIGKILL of the coordinator).
  bool sqlite_synchronous_full = false;
  // libpq connection string (or postgresql:// URI), for StoreKind::kPostgres.
  std::string postgres_dsn;
  // StoreKind::kPostgres: while another coordinator holds the database, wait
  // for it to go (Create returns only then, having listened on nothing)
  // instead of failing: a hot standby that takes over when it dies.
  bool postgres_standby = false;
  // StoreKind::kPostgres: replicas (replica_server.h) forward their calls to
  // this server, at advertise_host:port(), and relay HTTP connections to
  // advertise_host:http_port(), while it holds the database; it advertises
  // those addresses there once it serves. Empty: not advertised.
  std::string advertise_host;
  // host:port of the plaintext, health-only gRPC port (health_port.h); empty:
  // none.
  std::string health_listen;
  // Instead of health_listen: a health port the caller opened and keeps (the
  // binary's, which outlives a server so that probes get answers while it
  // stands by or restarts); the server sets its status. Not owned.
  HealthPort* health = nullptr;
  // host:port of the HTTP API (server/http/json_api.h: the queries as JSON,
  // event streams, the dashboard and /metrics), with the same tokens and the
  // same TLS as the gRPC port (HTTPS when `tls` is set); empty: none.
  std::string http_listen;
  // TLS / mutual TLS (tls.h); all empty: plaintext.
  TlsFiles tls;
  // Bearer tokens file (auth.h); empty: no authentication.
  std::string tokens_file;
  // Limits and the expiry interval (aggregator.h). on_round_committed is
  // taken by the server for its metrics.
  AggregatorOptions aggregator;
  // Largest request accepted, bytes.
  int max_message_bytes = 64 * 1024;
  // How long Shutdown lets calls finish before cancelling them.
  absl::Duration shutdown_grace = absl::Seconds(2);
  // The operational log (event_log.h): runs registered, rounds timed out,
  // authentication failures. Optional; not owned; must outlive the server.
  EventLog* log = nullptr;
};

class CoordinatorServer {
 public:
  // Opens the store, loads it into the Aggregator, and starts serving.
  // Errors: INVALID_ARGUMENT (bad options, TLS files, tokens file), NOT_FOUND
  // (unreadable files), UNAVAILABLE (cannot listen on `listen`,
  // `health_listen` or `http_listen`), or the store's error.
  static absl::StatusOr<std::unique_ptr<CoordinatorServer>> Create(
      CoordinatorServerOptions options);

  // Shuts down if that has not happened yet.
  ~CoordinatorServer();

  CoordinatorServer(const CoordinatorServer&) = delete;
  CoordinatorServer& operator=(const CoordinatorServer&) = delete;

  // The port the server listens on (the chosen one when options.listen had 0).
  int port() const { return port_; }
  // options.listen's host with port(): what clients connect to.
  const std::string& address() const { return address_; }
  // The health-only port (0 without health_listen).
  int health_port() const { return health_port_; }
  // The HTTP API's port (0 without http_listen).
  int http_port() const {
    return http_server_ != nullptr ? http_server_->port() : 0;
  }
  Aggregator* aggregator() { return aggregator_.get(); }
  PrometheusMetrics* metrics() { return metrics_.get(); }

  // Graceful shutdown (see above). Returns the store's flush status.
  // Idempotent: later calls return the first call's status.
  absl::Status Shutdown();

  // Blocks until Shutdown has completed (called by another thread).
  void Wait();

 private:
  CoordinatorServer() = default;
  // Health of both ports: "" and gradnorm.v1.Coordinator.
  void SetServing(bool serving);

  CoordinatorServerOptions options_;
  std::unique_ptr<TelemetryStore> store_;
  std::unique_ptr<PrometheusMetrics> metrics_;
  std::unique_ptr<Aggregator> aggregator_;
  std::unique_ptr<TokenAuthenticator> auth_;
  std::unique_ptr<CoordinatorService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::string address_;
  // The health port the server opened (health_listen), or null.
  std::unique_ptr<HealthPort> own_health_;
  // own_health_ or options.health; null: none.
  HealthPort* health_ = nullptr;
  int health_port_ = 0;
  std::unique_ptr<JsonApi> json_api_;
  std::unique_ptr<HttpServer> http_server_;

  absl::Mutex mu_;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status shutdown_status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_RPC_COORDINATOR_SERVER_H_
