// Writes the fuzzers' seed corpus (server/fuzz/corpus/<fuzzer>/): valid
// inputs of every kind each fuzzer takes, from which libFuzzer mutates. Run
// from the repository root after changing the proto or the store's schema:
//
//   bazel run //server/fuzz:write_seed_corpus -- "$PWD/server/fuzz/corpus"
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gradnorm/v1/coordinator.pb.h"
#include "server/store/participant_codec.h"
#include "server/store/sqlite_telemetry_store.h"

namespace gradnorm {
namespace server {
namespace {

namespace fs = std::filesystem;

void Write(const fs::path& dir, const std::string& name,
           const std::string& bytes) {
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary) << bytes;
}

std::vector<v1::RunConfig> Configs() {
  std::vector<v1::RunConfig> configs(5);
  configs[0].set_participants(1);
  configs[1].set_participants(2);
  configs[1].set_norm_type(std::numeric_limits<double>::infinity());
  configs[1].set_max_norm(0.5);
  configs[1].set_nonfinite_policy(v1::NON_FINITE_POLICY_ERROR);
  configs[2].set_participants(3);
  configs[2].mutable_clip_policy()->mutable_auto_clip()->set_percentile(90);
  configs[2].mutable_clip_policy()->mutable_auto_clip()->set_history_length(
      100);
  configs[3].set_participants(4);
  configs[3].mutable_clip_policy()->mutable_zclip()->set_alpha(0.97);
  configs[3].mutable_clip_policy()->mutable_zclip()->set_z_threshold(2.5);
  configs[4].set_participants(2);
  configs[4].set_round_timeout_ms(50);
  configs[4].mutable_spike_rule()->set_enabled(true);
  configs[4].mutable_spike_rule()->set_sigma(6);
  configs[4].mutable_spike_rule()->set_window(10);
  configs[4].mutable_spike_rule()->set_warmup_steps(5);
  return configs;
}

// One input of coordinator_service_fuzzer: the rpc's index, then the request.
std::string ServiceInput(int rpc, const google::protobuf::Message& request) {
  return std::string(1, static_cast<char>(rpc)) + request.SerializeAsString();
}

void WriteServiceCorpus(const fs::path& dir) {
  int n = 0;
  auto write = [&](int rpc, const google::protobuf::Message& request) {
    Write(dir, absl::StrCat("seed", n++), ServiceInput(rpc, request));
  };
  for (const v1::RunConfig& config : Configs()) {
    v1::RegisterRunRequest r;
    r.set_run_id(absl::StrCat("fz-", n));
    *r.mutable_config() = config;
    write(0, r);
  }
  for (const char* run : {"solo", "pair"}) {
    v1::ReportRequest report;
    report.set_run_id(run);
    report.set_step(7);
    report.set_participant(1);
    report.set_partial(2.25);
    report.set_num_elements(1000);
    write(1, report);
    v1::ReportStreamRequest stream;
    *stream.mutable_report() = report;
    stream.set_timeout_ms(10);
    write(2, stream);
    v1::GetRunRequest get;
    get.set_run_id(run);
    write(4, get);
    v1::GetHistoryRequest history;
    history.set_run_id(run);
    history.set_from_step(1);
    history.set_to_step(9);
    history.set_max_points(2);
    write(5, history);
    v1::GetSummaryRequest summary;
    summary.set_run_id(run);
    summary.set_top_slowest(1);
    write(6, summary);
    v1::WatchRunRequest watch;
    watch.set_run_id(run);
    watch.set_from_step(3);
    write(7, watch);
  }
  write(3, v1::ListRunsRequest());
  v1::FinishRunRequest finish;
  finish.set_run_id("pair");
  write(8, finish);
  v1::DeleteRunRequest del;
  del.set_run_id("solo");
  write(9, del);
}

void WriteCodecCorpus(const fs::path& dir) {
  std::vector<ParticipantRecord> one = {{4.0, 0.0, 100}};
  std::vector<ParticipantRecord> three = {
      {0.5, 0.0, 1}, {std::nan(""), 0.25, 7}, {INFINITY, 1.5, 0}};
  Write(dir, "one", EncodeParticipants(one));
  Write(dir, "three", EncodeParticipants(three));
}

void WriteConfigCorpus(const fs::path& dir) {
  int n = 0;
  for (const v1::RunConfig& config : Configs()) {
    Write(dir, absl::StrCat("config", n++), config.SerializeAsString());
  }
}

int WriteStoreCorpus(const fs::path& dir) {
  fs::create_directories(dir);
  // No .db suffix: the repository ignores database files, not this seed.
  const fs::path path = dir / "store_v4";
  fs::remove(path);
  {
    SqliteStoreOptions options;
    options.path = path.string();
    auto store = SqliteTelemetryStore::Open(options);
    if (!store.ok()) {
      std::cerr << store.status() << "\n";
      return 1;
    }
    RunRecord run;
    run.run_id = "r";
    run.config = Configs()[3];
    run.created_unix_micros = 1700000000000000;
    if (!(*store)->PutRun(run).ok()) return 1;
    run.run_id = "done";
    run.config = Configs()[0];
    if (!(*store)->PutRun(run).ok()) return 1;
    for (uint64_t step = 0; step < 3; ++step) {
      RoundRecord record;
      record.sequence = step + 1;
      record.result.set_run_id("r");
      record.result.set_step(step);
      record.result.set_total_norm(1.5 * step);
      record.result.set_clip_coef(1);
      record.result.set_action(v1::ACTION_NONE);
      record.result.set_reason(v1::REASON_WITHIN_MAX_NORM);
      record.participants.assign(4, ParticipantRecord{0.5, 0.01, 10});
      (*store)->AppendRound(record, [](absl::Status) {});
    }
    if (!(*store)->PutAbandonedStep({"r", 5, "participant 2 missing"}).ok())
      return 1;
    if (!(*store)->FinishRun("done", 1700000000000001).ok()) return 1;
    if (!(*store)->Flush().ok()) return 1;
  }
  for (const char* suffix : {"-wal", "-shm"})
    fs::remove(path.string() + suffix);
  return 0;
}

}  // namespace
}  // namespace server
}  // namespace gradnorm

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: write_seed_corpus CORPUS_DIR\n";
    return 2;
  }
  namespace fs = std::filesystem;
  const fs::path root = argv[1];
  gradnorm::server::WriteServiceCorpus(root / "coordinator_service_fuzzer");
  gradnorm::server::WriteCodecCorpus(root / "participant_codec_fuzzer");
  gradnorm::server::WriteConfigCorpus(root / "run_config_fuzzer");
  return gradnorm::server::WriteStoreCorpus(root / "sqlite_store_fuzzer");
}
