// The gradnorm coordinator: parses flags, starts a CoordinatorServer, and
// shuts it down gracefully on SIGTERM or SIGINT (exit status 0 when the store
// flushed cleanly). When its store fails (the PostgreSQL database went away
// under a round being committed), it shuts the server down and starts it
// again once the database is back, without exiting.
//
//   coordinator --listen=0.0.0.0:50051 --db=/var/lib/gradnorm/gradnorm.db
//       --http_listen=0.0.0.0:9464 --tokens_file=/etc/gradnorm/tokens
//       --tls_cert=/etc/gradnorm/tls.crt --tls_key=/etc/gradnorm/tls.key
//   (one command line)
//
// Prints "listening on HOST:PORT" on stdout once serving (with --listen port 0
// the port is the one chosen), and writes PORT to --port_file if set.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/core/event_log.h"
#include "server/rpc/coordinator_server.h"
#include "server/rpc/health_port.h"
#include "server/rpc/protobuf_log.h"
#include "server/rpc/replica_server.h"
#include "server/rpc/tcp_relay.h"
#include "server/store/postgres_dsn.h"
#include "server/store/postgres_leader_directory.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50051",
          "host:port to serve gRPC on; port 0 picks a free port");
ABSL_FLAG(std::string, port_file, "",
          "If set, the chosen port is written to this file once serving");
ABSL_FLAG(std::string, store, "sqlite",
          "Telemetry store: sqlite, postgres or memory");
ABSL_FLAG(std::string, postgres_dsn, "",
          "PostgreSQL connection string or postgresql:// URI "
          "(--store=postgres); it may hold a password: prefer "
          "--postgres_dsn_file");
ABSL_FLAG(bool, postgres_standby, false,
          "With --store=postgres: while another coordinator holds the "
          "database, wait (not listening) and take over when it is gone, "
          "instead of exiting");
ABSL_FLAG(bool, replica, false,
          "With --store=postgres: one of several coordinators sharing the "
          "database, each serving clients on --listen. The one holding the "
          "database computes every round, on --peer_listen; the others "
          "forward their calls to it, and one of them takes over when it "
          "goes");
ABSL_FLAG(std::string, peer_listen, "0.0.0.0:50053",
          "With --replica: host:port where this coordinator, while it holds "
          "the database, serves the calls the replicas forward (port 0 "
          "picks one)");
ABSL_FLAG(std::string, peer_http_listen, "",
          "With --replica and --http_listen: host:port where this "
          "coordinator, while it holds the database, serves HTTP to the "
          "replicas, which relay their --http_listen connections there; "
          "empty: --peer_listen's host, any port");
ABSL_FLAG(std::string, advertise_host, "",
          "With --replica: the host other replicas reach --peer_listen at "
          "(e.g. the pod IP); empty: --peer_listen's host, unless it is a "
          "wildcard");
ABSL_FLAG(std::string, peer_tls_ca, "",
          "With --replica and --tls_cert: PEM CA of the coordinators' "
          "certificate, which replicas check when they forward to each "
          "other (with --tls_client_ca they present --tls_cert as their "
          "client certificate, so it must allow client authentication)");
ABSL_FLAG(std::string, peer_tls_server_name, "",
          "With --replica and --tls_cert: the name the coordinators' "
          "certificate is checked against when replicas forward to each "
          "other (they connect to IPs); empty: the advertised host");
ABSL_FLAG(std::string, postgres_dsn_file, "",
          "File holding the PostgreSQL connection string (--store=postgres), "
          "e.g. a mounted Kubernetes Secret");
ABSL_FLAG(std::string, log_level, "info",
          "Operational log on stderr (one logfmt line per event): info, "
          "warning, error or off");
ABSL_FLAG(std::string, db, "gradnorm.db",
          "SQLite database file (--store=sqlite)");
ABSL_FLAG(
    bool, sqlite_synchronous_full, false,
    "SQLite synchronous=FULL: acknowledged rounds also survive power loss "
    "(one fsync per group commit). Default NORMAL: they survive a crash "
    "or kill of the coordinator");
ABSL_FLAG(std::string, metrics_listen, "",
          "Deprecated: the HTTP port (--http_listen) serves /metrics. Given "
          "alone, it is taken as --http_listen");
ABSL_FLAG(std::string, http_listen, "",
          "host:port of the HTTP port: the dashboard (/), the JSON API of the "
          "norm history (/api/v1/...), live rounds as Server-Sent Events and "
          "Prometheus /metrics; same bearer tokens (viewer role or better) "
          "and the same TLS as the gRPC port; empty: none");
ABSL_FLAG(std::string, http_port_file, "",
          "File to write the HTTP port to once serving (with "
          "--http_listen=HOST:0)");
ABSL_FLAG(std::string, health_listen, "",
          "host:port of a plaintext port serving grpc.health.v1 only, for "
          "probes that cannot speak the main port's (mutual) TLS; empty: off");
ABSL_FLAG(std::string, tls_cert, "", "PEM server certificate chain (TLS)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle; turns on mutual TLS (client certificates required)");
ABSL_FLAG(
    std::string, tokens_file, "",
    "Bearer tokens file, lines '<token> <trainer|viewer>'; empty: no auth");
ABSL_FLAG(uint32_t, max_runs, 1000,
          "Unfinished runs this coordinator holds at once (finished runs do "
          "not count)");
ABSL_FLAG(uint32_t, max_open_rounds_per_run, 64,
          "Rounds of one run waiting for participants at once");
ABSL_FLAG(uint32_t, max_participants, 4096, "Largest participants per run");
ABSL_FLAG(
    absl::Duration, retain_finished_runs, absl::InfiniteDuration(),
    "Delete a finished run with its history this long after it was "
    "finished, e.g. 720h (checked every 10 minutes); inf keeps every run");
ABSL_FLAG(int32_t, max_message_bytes, 64 * 1024, "Largest request, bytes");
ABSL_FLAG(double, shutdown_grace_seconds, 2,
          "On SIGTERM, seconds calls get to finish before being cancelled");

namespace {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "coordinator: %s\n", status.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "gradnorm coordinator: combines the partial gradient norms of a run's "
      "jobs, decides clipping, records telemetry. See --help.");
  absl::FlagsUsageConfig usage;
  usage.version_string = [] {
    return std::string("gradnorm coordinator " GRADNORM_VERSION "\n");
  };
  absl::SetFlagsUsageConfig(usage);
  absl::ParseCommandLine(argc, argv);
  // Abseil's debug-build deadlock detection tracks every Mutex in a global
  // graph; lock ordering is checked by the annotations and tests instead.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);

  // Signals are taken synchronously by sigwait below; block them before any
  // thread starts so that every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGUSR2);  // the store failed (see below)
  // SIGUSR1 (a wait for the database ended, see below) too: blocked in every
  // thread, or one started before the wait (a replica's) would take it and
  // end the process.
  sigset_t blocked = signals;
  sigaddset(&blocked, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &blocked, nullptr);

  using gradnorm::server::CoordinatorServerOptions;
  using gradnorm::server::StoreKind;
  CoordinatorServerOptions options;
  absl::StatusOr<gradnorm::server::LogLevel> log_level =
      gradnorm::server::ParseLogLevel(absl::GetFlag(FLAGS_log_level));
  if (!log_level.ok()) return Fail(log_level.status());
  gradnorm::server::StreamEventLog log(stderr, *log_level);
  options.log = &log;
  // A client's request with a string that is not UTF-8 would otherwise make
  // libprotobuf print an ERROR line each time.
  gradnorm::server::RouteProtobufLogs(&log);
  options.listen = absl::GetFlag(FLAGS_listen);
  const std::string store = absl::GetFlag(FLAGS_store);
  if (absl::GetFlag(FLAGS_postgres_standby) && store != "postgres") {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--postgres_standby with --store=", store,
                     ": a standby waits for a PostgreSQL database; expected "
                     "--store=postgres")));
  }
  const bool replica = absl::GetFlag(FLAGS_replica);
  if (replica && store != "postgres") {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--replica with --store=", store,
                     ": replicas share a PostgreSQL database; expected "
                     "--store=postgres")));
  }
  if (store == "sqlite") {
    options.store = StoreKind::kSqlite;
  } else if (store == "memory") {
    options.store = StoreKind::kMemory;
  } else if (store == "postgres") {
    options.store = StoreKind::kPostgres;
    absl::StatusOr<std::string> dsn = gradnorm::server::PostgresDsnFromFlags(
        absl::GetFlag(FLAGS_postgres_dsn),
        absl::GetFlag(FLAGS_postgres_dsn_file));
    if (!dsn.ok()) return Fail(dsn.status());
    options.postgres_dsn = *dsn;
    options.postgres_standby = absl::GetFlag(FLAGS_postgres_standby) || replica;
  } else {
    return Fail(absl::InvalidArgumentError(absl::StrCat(
        "--store=", store, ", expected sqlite, postgres or memory")));
  }
  options.db_path = absl::GetFlag(FLAGS_db);
  options.sqlite_synchronous_full =
      absl::GetFlag(FLAGS_sqlite_synchronous_full);
  options.health_listen = absl::GetFlag(FLAGS_health_listen);
  options.http_listen = absl::GetFlag(FLAGS_http_listen);
  const std::string metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  if (!metrics_listen.empty()) {
    if (!options.http_listen.empty() && options.http_listen != metrics_listen) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "--metrics_listen=", metrics_listen,
          " and --http_listen=", options.http_listen,
          " name two ports; expected --http_listen alone (it serves "
          "/metrics)")));
    }
    std::fprintf(stderr,
                 "coordinator: --metrics_listen is deprecated; serving the "
                 "HTTP port (/metrics, the API and the dashboard) on %s\n",
                 metrics_listen.c_str());
    options.http_listen = metrics_listen;
  }
  options.tls.cert = absl::GetFlag(FLAGS_tls_cert);
  options.tls.key = absl::GetFlag(FLAGS_tls_key);
  options.tls.client_ca = absl::GetFlag(FLAGS_tls_client_ca);
  options.tokens_file = absl::GetFlag(FLAGS_tokens_file);
  options.aggregator.max_runs = absl::GetFlag(FLAGS_max_runs);
  options.aggregator.retain_finished_runs =
      absl::GetFlag(FLAGS_retain_finished_runs);
  options.aggregator.max_open_rounds_per_run =
      absl::GetFlag(FLAGS_max_open_rounds_per_run);
  options.aggregator.max_participants = absl::GetFlag(FLAGS_max_participants);
  options.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  options.shutdown_grace =
      absl::Seconds(absl::GetFlag(FLAGS_shutdown_grace_seconds));

  // The health-only port lives as long as the process: a standby, and a
  // coordinator waiting for its database, answer probes there (NOT_SERVING;
  // gradnorm.v1.Process SERVING), and each server it runs sets the status.
  std::unique_ptr<gradnorm::server::HealthPort> health;
  if (!options.health_listen.empty()) {
    absl::StatusOr<std::unique_ptr<gradnorm::server::HealthPort>> started =
        gradnorm::server::HealthPort::Start(options.health_listen);
    if (!started.ok()) return Fail(started.status());
    health = *std::move(started);
    options.health = health.get();
    options.health_listen.clear();
  }

  // --replica: the public port forwards every call to the coordinator that
  // holds the database, wherever it runs; this process's own server, once it
  // holds the database, serves on --peer_listen and advertises itself there.
  std::unique_ptr<gradnorm::server::PostgresLeaderDirectory> directory;
  std::unique_ptr<gradnorm::server::ReplicaServer> replica_server;
  std::unique_ptr<gradnorm::server::TcpRelay> http_relay;
  // The replica whose health follows the directory's (null before it starts
  // and once it stops). The directory's thread sets it under the mutex, so
  // it never touches a replica being destroyed, nor writes an old status
  // over a newer one.
  absl::Mutex serving_mu;
  gradnorm::server::ReplicaServer* serving_replica = nullptr;
  // Every way out of main, early returns included, detaches it first.
  absl::Cleanup detach_replica = [&] {
    absl::MutexLock lock(&serving_mu);
    serving_replica = nullptr;
  };
  if (replica) {
    absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> peer =
        gradnorm::server::PeerCredentials(options.tls,
                                          absl::GetFlag(FLAGS_peer_tls_ca));
    if (!peer.ok()) return Fail(peer.status());
    const std::string peer_listen = absl::GetFlag(FLAGS_peer_listen);
    const size_t colon = peer_listen.rfind(':');
    const std::string peer_host =
        colon == std::string::npos ? "" : peer_listen.substr(0, colon);
    std::string host = absl::GetFlag(FLAGS_advertise_host);
    if (host.empty()) {
      host = peer_host;
      if (host.empty() || host == "0.0.0.0" || host == "[::]" || host == "::") {
        return Fail(absl::InvalidArgumentError(absl::StrCat(
            "--replica with --peer_listen=", peer_listen,
            ", a wildcard address: expected --advertise_host, the address "
            "other replicas reach this one at (e.g. the pod IP)")));
      }
    }
    options.advertise_host = host;
    gradnorm::server::PostgresLeaderDirectoryOptions directory_options;
    directory_options.dsn = options.postgres_dsn;
    directory_options.on_known = [&serving_mu, &serving_replica](bool known) {
      absl::MutexLock lock(&serving_mu);
      if (serving_replica != nullptr) serving_replica->SetServing(known);
    };
    directory = std::make_unique<gradnorm::server::PostgresLeaderDirectory>(
        directory_options);
    gradnorm::server::ReplicaServerOptions replica_options;
    replica_options.listen = options.listen;
    replica_options.directory = directory.get();
    replica_options.max_message_bytes = options.max_message_bytes;
    replica_options.health = options.health;
    replica_options.tls = options.tls;
    replica_options.peer_credentials = *peer;
    replica_options.peer_server_name =
        absl::GetFlag(FLAGS_peer_tls_server_name);
    absl::StatusOr<std::unique_ptr<gradnorm::server::ReplicaServer>> started =
        gradnorm::server::ReplicaServer::Start(replica_options);
    if (!started.ok()) return Fail(started.status());
    replica_server = *std::move(started);
    {
      absl::MutexLock lock(&serving_mu);
      serving_replica = replica_server.get();
      replica_server->SetServing(directory->Known());
    }
    // The HTTP port relays to the holder's, which this process serves on
    // --peer_http_listen while it holds the database.
    if (!options.http_listen.empty()) {
      gradnorm::server::TcpRelayOptions relay_options;
      relay_options.listen = options.http_listen;
      relay_options.directory = directory.get();
      absl::StatusOr<std::unique_ptr<gradnorm::server::TcpRelay>> relay =
          gradnorm::server::TcpRelay::Start(relay_options);
      if (!relay.ok()) return Fail(relay.status());
      http_relay = *std::move(relay);
      options.http_listen = absl::GetFlag(FLAGS_peer_http_listen);
      if (options.http_listen.empty()) {
        options.http_listen = peer_host + ":0";
      }
    }
    // The replica port's health is the process's; its own server listens
    // on the peer ports only.
    options.health = nullptr;
    options.listen = peer_listen;
  }
  // Stops taking calls on the replica port, letting forwarded ones finish.
  auto stop_replica = [&] {
    if (replica_server == nullptr) return;
    {
      absl::MutexLock lock(&serving_mu);
      serving_replica = nullptr;
    }
    replica_server->Shutdown(options.shutdown_grace);
    http_relay.reset();
    directory.reset();
  };

  // A store that fails under a committing round (its database went away)
  // ends the aggregator's service for good; the server is then shut down and
  // created again, here, once the database is back: SIGUSR2 to the sigwait
  // below.
  absl::Mutex failure_mu;
  std::string store_failure;
  options.aggregator.on_store_failed = [&](const absl::Status& status) {
    {
      absl::MutexLock lock(&failure_mu);
      store_failure = status.ToString();
    }
    kill(getpid(), SIGUSR2);
  };

  // Written whole, then renamed: a reader never sees a partial port.
  auto write_port = [](const char* flag, const std::string& file,
                       int port) -> absl::Status {
    if (file.empty()) return absl::OkStatus();
    const std::string tmp = file + ".tmp";
    std::ofstream(tmp) << port << "\n";
    if (std::rename(tmp.c_str(), file.c_str()) != 0) {
      return absl::UnavailableError(
          absl::StrCat("cannot write --", flag, " '", file, "'"));
    }
    return absl::OkStatus();
  };

  if (replica_server != nullptr) {
    absl::Status written =
        write_port("http_port_file", absl::GetFlag(FLAGS_http_port_file),
                   http_relay != nullptr ? http_relay->port() : 0);
    written.Update(write_port("port_file", absl::GetFlag(FLAGS_port_file),
                              replica_server->port()));
    if (!written.ok()) return Fail(written);
    log.Log(gradnorm::server::LogLevel::kInfo, "replica",
            {{"version", GRADNORM_VERSION},
             {"listen", replica_server->address()},
             {"peer_listen", options.listen},
             {"advertise_host", options.advertise_host}});
    std::printf("listening on %s\n", replica_server->address().c_str());
    if (http_relay != nullptr) {
      std::printf("dashboard and HTTP API on port %d\n", http_relay->port());
    }
    std::fflush(stdout);
  }

  for (bool restarted = false;; restarted = true) {
    absl::StatusOr<std::unique_ptr<gradnorm::server::CoordinatorServer>>
        server = absl::UnknownError("not created");
    // A standby, and a coordinator starting again after its store failed,
    // wait for the database: Create blocks while another coordinator holds
    // it, and is retried every second while it cannot be reached.
    // Meanwhile SIGTERM or SIGINT ends the process at once (it serves
    // nothing yet). Create's end is SIGUSR1 to this thread's sigwait.
    const bool wait_for_database = options.postgres_standby || restarted;
    if (!wait_for_database) {
      server = gradnorm::server::CoordinatorServer::Create(options);
    } else {
      log.Log(gradnorm::server::LogLevel::kInfo,
              restarted ? "restart" : "standby",
              {{"store", store},
               {"waiting_for", options.postgres_standby
                                   ? "the database, and the coordinator "
                                     "holding it to end"
                                   : "the database"}});
      sigset_t waited = signals;
      sigaddset(&waited, SIGUSR1);
      std::thread creator([&] {
        for (int attempt = 0;; ++attempt) {
          server = gradnorm::server::CoordinatorServer::Create(options);
          if (server.ok() ||
              server.status().code() != absl::StatusCode::kUnavailable) {
            break;
          }
          if (attempt == 0) {
            log.Log(gradnorm::server::LogLevel::kWarning,
                    "database_unavailable",
                    {{"status", server.status().ToString()},
                     {"retry", "every second"}});
          }
          absl::SleepFor(absl::Seconds(1));
        }
        kill(getpid(), SIGUSR1);
      });
      int signal_number = 0;
      do {
        sigwait(&waited, &signal_number);
      } while (signal_number == SIGUSR2);  // a failure already handled
      if (signal_number != SIGUSR1) {
        stop_replica();
        log.Log(gradnorm::server::LogLevel::kInfo, "shutdown",
                {{"signal", absl::StrCat(signal_number)},
                 {"status", "stopped while waiting for the database"}});
        std::fflush(nullptr);
        std::_Exit(0);
      }
      creator.join();
    }
    if (!server.ok()) return Fail(server.status());

    // The HTTP port first: a reader that sees the main port sees both.
    // (A replica wrote its own ports once.)
    absl::Status written;
    if (replica_server == nullptr) {
      written.Update(write_port("http_port_file",
                                absl::GetFlag(FLAGS_http_port_file),
                                (*server)->http_port()));
      written.Update(write_port("port_file", absl::GetFlag(FLAGS_port_file),
                                (*server)->port()));
    }
    if (!written.ok()) return Fail(written);
    // A replica that took the database logs "holding" (its peer address);
    // a coordinator, "start".
    log.Log(gradnorm::server::LogLevel::kInfo,
            replica_server != nullptr ? "holding" : "start",
            {{"version", GRADNORM_VERSION},
             {"listen", (*server)->address()},
             {"store", store},
             {"db", store == "sqlite" ? options.db_path : ""},
             {"runs", absl::StrCat((*server)->aggregator()->Stats().runs)}});
    if (replica_server == nullptr) {
      std::printf("listening on %s\n", (*server)->address().c_str());
    } else {
      std::printf("holding the database; serving the replicas on %s\n",
                  (*server)->address().c_str());
    }
    if (replica_server == nullptr && (*server)->http_port() != 0) {
      std::printf("dashboard and HTTP API on port %d\n",
                  (*server)->http_port());
    }
    std::fflush(stdout);

    int signal_number = 0;
    sigwait(&signals, &signal_number);
    if (signal_number == SIGUSR2) {
      std::string failure;
      {
        absl::MutexLock lock(&failure_mu);
        failure = store_failure;
      }
      log.Log(gradnorm::server::LogLevel::kError, "store_failed",
              {{"status", failure},
               {"action", "restarting the server once the database is back"}});
      // Health NOT_SERVING, waiters UNAVAILABLE (clients retry), ports
      // closed; the flush reports the failure already logged.
      (*server)->Shutdown().IgnoreError();
      server->reset();
      continue;
    }
    std::printf("coordinator: signal %d, shutting down\n", signal_number);
    std::fflush(stdout);
    stop_replica();
    absl::Status status = (*server)->Shutdown();
    server->reset();
    log.Log(status.ok() ? gradnorm::server::LogLevel::kInfo
                        : gradnorm::server::LogLevel::kError,
            "shutdown",
            {{"signal", absl::StrCat(signal_number)},
             {"status", status.ok() ? "clean" : status.ToString()}});
    if (!status.ok()) return Fail(status);
    std::printf("coordinator: shut down cleanly\n");
    return 0;
  }
}
