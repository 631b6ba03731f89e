#include "client/communicator.h"

#include "common/norm_math.h"

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
  return op == ReduceOp::kSum ? a + b : NanMax(a, b);
}

}  // namespace gradnorm
