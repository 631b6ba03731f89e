#include "tools/gradnormctl/parity.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace gradnorm {
namespace gradnormctl {
namespace {

uint64_t Bits(double x) {
  uint64_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  return bits;
}

bool SameBits(double a, double b) {
  return Bits(a) == Bits(b) || (std::isnan(a) && std::isnan(b));
}

// Shortest text that reads back as the same double.
std::string Exact(double x) { return absl::StrFormat("%.17g", x); }

}  // namespace

ParityReport CompareTotals(const std::vector<v1::RoundResult>& a,
                           const std::vector<v1::RoundResult>& b) {
  ParityReport report;
  size_t i = 0, j = 0;
  while (i < a.size() || j < b.size()) {
    if (j == b.size() || (i < a.size() && a[i].step() < b[j].step())) {
      ++report.only_a;
      ++i;
      continue;
    }
    if (i == a.size() || b[j].step() < a[i].step()) {
      ++report.only_b;
      ++j;
      continue;
    }
    ++report.compared;
    const double x = a[i].total_norm(), y = b[j].total_norm();
    if (!SameBits(x, y)) {
      ++report.differing;
      if (!report.first_difference.has_value()) {
        ParityDifference d;
        d.step = a[i].step();
        d.a = x;
        d.b = y;
        d.difference = y - x;
        d.relative = x != 0 ? std::fabs(y - x) / std::fabs(x) : INFINITY;
        if (std::isfinite(x) && std::isfinite(y) &&
            std::signbit(x) == std::signbit(y)) {
          const uint64_t bx = Bits(x), by = Bits(y);
          d.ulps = bx > by ? bx - by : by - bx;
        }
        report.first_difference = d;
      }
    }
    ++i;
    ++j;
  }
  return report;
}

std::string ParityText(const ParityReport& report, const std::string& a,
                       const std::string& b) {
  std::string out = absl::StrCat("runs ", a, " and ", b, ": ", report.compared,
                                 " common steps, ");
  if (report.equal()) {
    absl::StrAppend(&out, "bitwise equal");
  } else {
    const ParityDifference& d = *report.first_difference;
    absl::StrAppend(&out, "first differs at step ", d.step, ": ", Exact(d.a),
                    " vs ", Exact(d.b), " (",
                    absl::StrFormat("%+.3g", d.difference), ", ",
                    absl::StrFormat("%.3g", d.relative), " relative",
                    d.ulps > 0 ? absl::StrCat(", ", d.ulps, " ulp") : "", "); ",
                    report.differing,
                    report.differing == 1 ? " step differs" : " steps differ");
  }
  if (report.only_a > 0 || report.only_b > 0) {
    absl::StrAppend(&out, "; not compared: ", report.only_a, " steps only in ",
                    a, ", ", report.only_b, " only in ", b);
  }
  return out;
}

std::string ParityJson(const ParityReport& report, const std::string& a,
                       const std::string& b) {
  auto number = [](double x) {
    return std::isfinite(x) ? Exact(x)
                            : absl::StrCat("\"",
                                           std::isnan(x) ? "NaN"
                                           : x > 0       ? "Infinity"
                                                         : "-Infinity",
                                           "\"");
  };
  std::string out = absl::StrCat(
      "{\"run_a\":\"", a, "\",\"run_b\":\"", b,
      "\",\"equal\":", report.equal() ? "true" : "false",
      ",\"compared\":", report.compared, ",\"differing\":", report.differing,
      ",\"only_a\":", report.only_a, ",\"only_b\":", report.only_b,
      ",\"first_difference\":");
  if (report.equal()) {
    absl::StrAppend(&out, "null}");
  } else {
    const ParityDifference& d = *report.first_difference;
    absl::StrAppend(
        &out, "{\"step\":", d.step, ",\"a\":", number(d.a),
        ",\"b\":", number(d.b), ",\"difference\":", number(d.difference),
        ",\"relative\":", number(d.relative), ",\"ulps\":", d.ulps, "}}");
  }
  return out;
}

}  // namespace gradnormctl
}  // namespace gradnorm
