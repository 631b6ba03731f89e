#include "client/communicator.h"

#include <cmath>

namespace gradnorm {

absl::string_view ReduceOpName(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kMax:
      return "max";
  }
  return "unknown";
}

double CombineValues(ReduceOp op, double a, double b) {
  if (op == ReduceOp::kSum) return a + b;
  // std::fmax returns the non-NaN operand; a max that loses NaN would let a
  // NaN gradient through as a finite norm.
  if (std::isnan(a)) return a;
  if (std::isnan(b)) return b;
  return a < b ? b : a;
}

}  // namespace gradnorm
