#include "tools/gradnormctl/output.h"

#include <algorithm>
#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "google/protobuf/util/json_util.h"

namespace gradnorm {
namespace gradnormctl {
namespace {

bool LooksNumeric(const std::string& cell) {
  if (cell.empty()) return true;
  double ignored;
  return absl::SimpleAtod(cell, &ignored) || cell == "nan" || cell == "inf";
}

void PrintRow(std::ostream& out, const std::vector<std::string>& row,
              const std::vector<size_t>& width,
              const std::vector<bool>& numeric) {
  std::string line;
  for (size_t c = 0; c < row.size() && c < width.size(); ++c) {
    if (c > 0) line += "  ";
    const std::string pad(width[c] - row[c].size(), ' ');
    line += numeric[c] ? pad + row[c] : row[c] + pad;
  }
  out << std::string(absl::StripTrailingAsciiWhitespace(line)) << "\n";
}

}  // namespace

void Table::Print(std::ostream& out) const {
  std::vector<size_t> width(header_.size());
  std::vector<bool> numeric(header_.size(), true);
  for (size_t c = 0; c < header_.size(); ++c) width[c] = header_[c].size();
  for (const auto& row : rows_) {
    for (size_t c = 0; c < row.size() && c < width.size(); ++c) {
      width[c] = std::max(width[c], row[c].size());
      if (!LooksNumeric(row[c])) numeric[c] = false;
    }
  }
  PrintRow(out, header_, width, numeric);
  for (const auto& row : rows_) PrintRow(out, row, width, numeric);
}

void PrintJson(const google::protobuf::Message& message, bool multiline) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = multiline;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  std::cout << out;
  if (out.empty() || out.back() != '\n') std::cout << "\n";
}

std::string Num(double value) { return absl::StrFormat("%.6g", value); }

std::string Time(int64_t unix_micros) {
  if (unix_micros == 0) return "-";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ",
                          absl::FromUnixMicros(unix_micros),
                          absl::UTCTimeZone());
}

std::string PolicyName(const gradnorm::v1::RunConfig& config) {
  switch (config.clip_policy().policy_case()) {
    case gradnorm::v1::ClipPolicy::kAutoClip:
      return absl::StrCat("autoclip(p",
                          Num(config.clip_policy().auto_clip().percentile()),
                          ")");
    case gradnorm::v1::ClipPolicy::kZclip:
      return absl::StrCat("zclip(z",
                          Num(config.clip_policy().zclip().z_threshold()), ")");
    default:
      return "static";
  }
}

std::string ActionName(gradnorm::v1::Action action) {
  switch (action) {
    case gradnorm::v1::ACTION_NONE:
      return "none";
    case gradnorm::v1::ACTION_CLIP:
      return "clip";
    case gradnorm::v1::ACTION_SKIP:
      return "skip";
    default:
      return "?";
  }
}

std::string ReasonName(gradnorm::v1::Reason reason) {
  switch (reason) {
    case gradnorm::v1::REASON_WITHIN_MAX_NORM:
      return "within_max_norm";
    case gradnorm::v1::REASON_ABOVE_MAX_NORM:
      return "above_max_norm";
    case gradnorm::v1::REASON_NONFINITE:
      return "nonfinite";
    case gradnorm::v1::REASON_SPIKE:
      return "spike";
    default:
      return "?";
  }
}

std::vector<std::string> RunRow(const gradnorm::v1::RunInfo& run) {
  return {run.run_id(),
          Num(run.config().norm_type()),
          Num(run.config().max_norm()),
          absl::StrCat(run.config().participants()),
          PolicyName(run.config()),
          absl::StrCat(run.rounds()),
          run.rounds() > 0 ? absl::StrCat(run.last_step()) : "-",
          absl::StrCat(run.open_rounds()),
          run.finished() ? "finished" : "running",
          Time(run.created_unix_micros())};
}

const std::vector<std::string> kRunHeader = {
    "RUN",    "P",         "MAX_NORM", "PARTICIPANTS", "POLICY",
    "ROUNDS", "LAST_STEP", "OPEN",     "STATE",        "CREATED"};

void PrintRun(const gradnorm::v1::RunInfo& run) {
  const auto& config = run.config();
  Table table({"FIELD", "VALUE"});
  table.Add({"run", run.run_id()});
  table.Add({"created", Time(run.created_unix_micros())});
  table.Add({"norm_type", Num(config.norm_type())});
  table.Add({"max_norm", Num(config.max_norm())});
  table.Add({"participants", absl::StrCat(config.participants())});
  table.Add({"clip_policy", PolicyName(config)});
  table.Add({"spike_rule",
             config.spike_rule().enabled()
                 ? absl::StrCat("sigma ", Num(config.spike_rule().sigma()),
                                ", window ", config.spike_rule().window(),
                                ", warmup ", config.spike_rule().warmup_steps())
                 : "off"});
  table.Add({"nonfinite_policy",
             config.nonfinite_policy() == gradnorm::v1::NON_FINITE_POLICY_ERROR
                 ? "error"
                 : "skip"});
  table.Add({"round_timeout_ms", absl::StrCat(config.round_timeout_ms())});
  table.Add({"partials", config.norm_type() != 1.0 && config.norm_type() != 2.0
                             ? "double (no exact partials for this p)"
                         : config.inexact() ? "exact or double (inexact run)"
                                            : "exact only"});
  table.Add({"rounds", absl::StrCat(run.rounds())});
  table.Add(
      {"last_step", run.rounds() > 0 ? absl::StrCat(run.last_step()) : "-"});
  table.Add({"open_rounds", absl::StrCat(run.open_rounds())});
  table.Add({"state", run.finished() ? "finished" : "running"});
  table.Add(
      {"finished", run.finished() ? Time(run.finished_unix_micros()) : "-"});
  table.Print(std::cout);
}

}  // namespace gradnormctl
}  // namespace gradnorm
