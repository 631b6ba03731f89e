// The norm history as a terminal chart (`gradnormctl plot RUN`): one column
// per history bucket, the bucket's min..max band drawn as a bar with its mean
// as a full block, the run's max_norm as a dashed line, and a marker row
// under the chart: S where the bucket holds a skipped step (non-finite or
// spike), C where it holds clipped ones only.
//
//   v1::GetHistoryResponse history = ...;  // max_points = the chart's width
//   std::cout << RenderPlot(history, {.width = 80, .height = 20, .max_norm =
//   1});
#ifndef GRADNORM_TOOLS_GRADNORMCTL_PLOT_H_
#define GRADNORM_TOOLS_GRADNORMCTL_PLOT_H_

#include <string>

#include "gradnorm/v1/coordinator.pb.h"

namespace gradnorm {
namespace gradnormctl {

struct PlotOptions {
  // Characters per line, y-axis labels included (at least 20).
  int width = 80;
  // Lines of chart, the marker row and the step axis not included (at
  // least 3).
  int height = 16;
  // The threshold line; 0 or less: none.
  double max_norm = 0;
};

// Columns the chart has for buckets at `width`: what to ask GetHistory for.
int PlotColumns(int width);

// The chart, lines ending in '\n'; a one-line notice when there is nothing
// finite to plot.
std::string RenderPlot(const v1::GetHistoryResponse& history,
                       const PlotOptions& options);

// The terminal's size from stdout (or $COLUMNS / $LINES), else 80 x 24.
void TerminalSize(int* columns, int* lines);

}  // namespace gradnormctl
}  // namespace gradnorm

#endif  // GRADNORM_TOOLS_GRADNORMCTL_PLOT_H_
