#include "tools/gradnormctl/plot.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace gradnorm {
namespace gradnormctl {
namespace {

constexpr int kLabelWidth = 10;          // "%9.3g " on the y axis.
constexpr char kBand[] = "\u2502";       // │
constexpr char kMean[] = "\u2588";       // █
constexpr char kThreshold[] = "\u254c";  // ╌

}  // namespace

int PlotColumns(int width) { return std::max(10, width - kLabelWidth); }

std::string RenderPlot(const v1::GetHistoryResponse& history,
                       const PlotOptions& options) {
  const int height = std::max(3, options.height);
  const int columns = PlotColumns(options.width);
  const int n = std::min(history.buckets_size(), columns);
  double lo = INFINITY, hi = -INFINITY;
  for (int c = 0; c < n; ++c) {
    const v1::HistoryBucket& b = history.buckets(c);
    if (std::isfinite(b.min_norm())) lo = std::min(lo, b.min_norm());
    if (std::isfinite(b.max_norm())) hi = std::max(hi, b.max_norm());
  }
  if (!(lo <= hi)) {
    return n == 0 ? "no finalized rounds in this range\n"
                  : "no finite total norm in this range\n";
  }
  if (options.max_norm > 0) {
    lo = std::min(lo, options.max_norm);
    hi = std::max(hi, options.max_norm);
  }
  lo = std::min(lo, 0.0);
  if (hi == lo) hi = lo + 1;
  // Row r (0 = top) covers values [top(r+1), top(r)).
  const double step = (hi - lo) / height;
  auto row_of = [&](double v) {
    const int r = static_cast<int>(std::floor((hi - v) / step));
    return std::clamp(r, 0, height - 1);
  };
  const int threshold_row =
      options.max_norm > 0 ? row_of(options.max_norm) : -1;
  std::string out;
  for (int r = 0; r < height; ++r) {
    const double label = hi - r * step;
    out += absl::StrFormat("%9.3g ", label);
    for (int c = 0; c < n; ++c) {
      const v1::HistoryBucket& b = history.buckets(c);
      const bool finite =
          std::isfinite(b.min_norm()) && std::isfinite(b.max_norm());
      if (finite && r >= row_of(b.max_norm()) && r <= row_of(b.min_norm())) {
        out += std::isfinite(b.mean_norm()) && r == row_of(b.mean_norm())
                   ? kMean
                   : kBand;
      } else if (r == threshold_row) {
        out += kThreshold;
      } else {
        out += ' ';
      }
    }
    out += '\n';
  }
  // Markers: S (a skipped step in the bucket) over C (a clipped one).
  out += std::string(kLabelWidth, ' ');
  for (int c = 0; c < n; ++c) {
    const v1::HistoryBucket& b = history.buckets(c);
    out += b.skipped() > 0 ? 'S' : b.clipped() > 0 ? 'C' : ' ';
  }
  out += '\n';
  if (n > 0) {
    const std::string first =
        absl::StrCat("step ", history.buckets(0).first_step());
    const std::string last = absl::StrCat(history.buckets(n - 1).last_step());
    const int gap = std::max<int>(
        1, n - static_cast<int>(first.size()) - static_cast<int>(last.size()));
    out += std::string(kLabelWidth, ' ') + first + std::string(gap, ' ') +
           last + '\n';
  }
  out += absl::StrCat(
      std::string(kLabelWidth, ' '), kBand, " min..max of a bucket  ", kMean,
      " its mean  ",
      options.max_norm > 0 ? absl::StrCat(kThreshold, " max_norm  ") : "",
      "S skipped  C clipped\n");
  return out;
}

void TerminalSize(int* columns, int* lines) {
  *columns = 80;
  *lines = 24;
  winsize size = {};
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 0 &&
      size.ws_row > 0) {
    *columns = size.ws_col;
    *lines = size.ws_row;
    return;
  }
  int value = 0;
  const char* env_columns = std::getenv("COLUMNS");
  if (env_columns != nullptr && absl::SimpleAtoi(env_columns, &value) &&
      value > 0) {
    *columns = value;
  }
  const char* env_lines = std::getenv("LINES");
  if (env_lines != nullptr && absl::SimpleAtoi(env_lines, &value) &&
      value > 0) {
    *lines = value;
  }
}

}  // namespace gradnormctl
}  // namespace gradnorm
