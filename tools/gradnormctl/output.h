// How gradnormctl prints: aligned tables, numbers, times, the names of
// policies, actions and reasons, and the proto3 JSON mapping.
//
//   Table table({"RUN", "ROUNDS"});
//   table.Add({"r", "12"});
//   table.Print(std::cout);   // numeric columns right-aligned
#ifndef GRADNORM_TOOLS_GRADNORMCTL_OUTPUT_H_
#define GRADNORM_TOOLS_GRADNORMCTL_OUTPUT_H_

#include <cstdint>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "google/protobuf/message.h"
#include "gradnorm/v1/coordinator.pb.h"

namespace gradnorm {
namespace gradnormctl {

// A table whose columns are as wide as their widest cell; numeric columns
// are right-aligned, text left-aligned.
class Table {
 public:
  explicit Table(std::vector<std::string> header)
      : header_(std::move(header)) {}
  void Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void Print(std::ostream& out) const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

// `multiline` pretty-prints; otherwise the object takes one line (for
// streams). Field names are the proto's in both.
void PrintJson(const google::protobuf::Message& message, bool multiline = true);

// "%.6g".
std::string Num(double value);
// RFC 3339 in UTC; "-" for 0.
std::string Time(int64_t unix_micros);
std::string PolicyName(const gradnorm::v1::RunConfig& config);
std::string ActionName(gradnorm::v1::Action action);
std::string ReasonName(gradnorm::v1::Reason reason);

// The `runs` table: its header and one run's row.
extern const std::vector<std::string> kRunHeader;
std::vector<std::string> RunRow(const gradnorm::v1::RunInfo& run);
// One run as a FIELD / VALUE table (`run`, and `register` after it
// registered).
void PrintRun(const gradnorm::v1::RunInfo& run);

}  // namespace gradnormctl
}  // namespace gradnorm

#endif  // GRADNORM_TOOLS_GRADNORMCTL_OUTPUT_H_
