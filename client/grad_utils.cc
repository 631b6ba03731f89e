#include "client/grad_utils.h"

#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/exact_sum.h"
#include "common/status_macros.h"

namespace gradnorm {
namespace {

// Reduces `values` over dp_cp, then over tp, always in that order, so every
// rank combines the same numbers in the same order.
absl::Status ReduceOverGroups(Communicator& dp_cp, Communicator& tp,
                              absl::Span<double> values, ReduceOp op) {
  RETURN_IF_ERROR(dp_cp.AllReduce(values, op));
  return tp.AllReduce(values, op);
}

struct LocalPartial {
  absl::Status status;
  double value = 0.0;
  double num_elements = 0.0;
  // With PartialNormOptions::exact (p = 1 or 2).
  ExactSum exact;
};

LocalPartial ComputeLocal(absl::Span<const GradTensor> grads, Communicator& tp,
                          double norm_type, const GradNormOptions& options) {
  LocalPartial local;
  local.status = ValidateNormType(norm_type);
  if (!local.status.ok()) return local;
  local.status = options.input_error;
  if (!local.status.ok()) return local;
  // Every view, also a replicated one this rank does not count: a bad one
  // must fail here, where the whole group learns of it, not later in the clip
  // on this rank alone. Indices in the message are the caller's.
  local.status = ValidateTensors(grads);
  if (!local.status.ok()) return local;
  // A tensor replicated across TP ranks holds the same values on each of them:
  // counting it on every TP rank would count it tp.size() times.
  std::vector<GradTensor> counted;
  counted.reserve(grads.size());
  for (const GradTensor& g : grads) {
    if (g.counted_elsewhere || (g.tp_replicated && tp.rank() != 0)) continue;
    counted.push_back(g);
    local.num_elements += static_cast<double>(g.numel);
  }
  absl::StatusOr<PartialNorm> partial =
      ComputePartialNorm(counted, norm_type, options.partial);
  if (!partial.ok()) {
    local.status = partial.status();
    local.num_elements = 0.0;
    return local;
  }
  local.value = partial->value;
  if (partial->exact.has_value()) local.exact = *partial->exact;
  return local;
}

}  // namespace

absl::Status ValidateMaxNorm(double max_norm) {
  if (std::isnan(max_norm) || max_norm < 0.0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_norm ", max_norm, " is invalid: expected a value >= 0"));
  }
  return absl::OkStatus();
}

absl::StatusOr<GradNormResult> GetGradNorm(absl::Span<const GradTensor> grads,
                                           Communicator& dp_cp,
                                           Communicator& tp, double norm_type,
                                           const GradNormOptions& options) {
  const LocalPartial local = ComputeLocal(grads, tp, norm_type, options);
  const double failed = local.status.ok() ? 0.0 : 1.0;
  const bool inf_norm = IsInfNorm(norm_type);

  // A rank that failed locally still joins every reduction (contributing 0 and
  // a failure count), so its peers learn of it instead of waiting for it.
  GradNormResult result;
  double failures = 0.0;
  if (inf_norm) {
    double max_value[1] = {local.value};
    double counts[2] = {local.num_elements, failed};
    RETURN_IF_ERROR(
        ReduceOverGroups(dp_cp, tp, absl::MakeSpan(max_value), ReduceOp::kMax));
    RETURN_IF_ERROR(
        ReduceOverGroups(dp_cp, tp, absl::MakeSpan(counts), ReduceOp::kSum));
    result.partial = max_value[0];
    result.total_norm = max_value[0];
    result.num_elements = static_cast<uint64_t>(counts[0]);
    failures = counts[1];
  } else if (options.partial.exact) {
    // The exact partials' digits, summed as doubles: integers below 2^53 in
    // any order, so the group's sum is exact too (ExactSum::ToReducible).
    constexpr int kDigitSums = ExactSum::kReducibleSize;
    std::vector<double> sums(kDigitSums + 2, 0.0);
    local.exact.ToReducible(absl::MakeSpan(sums).subspan(0, kDigitSums));
    sums[kDigitSums] = local.num_elements;
    sums[kDigitSums + 1] = failed;
    RETURN_IF_ERROR(
        ReduceOverGroups(dp_cp, tp, absl::MakeSpan(sums), ReduceOp::kSum));
    failures = sums[kDigitSums + 1];
    result.num_elements = static_cast<uint64_t>(sums[kDigitSums]);
    if (local.status.ok() && failures == 0) {
      ASSIGN_OR_RETURN(
          ExactSum group,
          ExactSum::FromReduced(absl::MakeSpan(sums).subspan(0, kDigitSums)));
      result.partial = group.RoundToDouble();
      result.total_norm = NormFromPartial(norm_type, result.partial);
      result.exact = std::move(group);
    }
  } else {
    double sums[3] = {local.value, local.num_elements, failed};
    RETURN_IF_ERROR(
        ReduceOverGroups(dp_cp, tp, absl::MakeSpan(sums), ReduceOp::kSum));
    result.partial = sums[0];
    result.total_norm = NormFromPartial(norm_type, sums[0]);
    result.num_elements = static_cast<uint64_t>(sums[1]);
    failures = sums[2];
  }
  if (!local.status.ok()) return local.status;
  if (failures > 0) {
    return absl::AbortedError(
        absl::StrCat(failures,
                     " rank(s) of the dp_cp x tp group failed to compute their "
                     "partial norm (see their logs); no result"));
  }
  result.nonfinite = !std::isfinite(result.total_norm);
  if (result.nonfinite && options.error_if_nonfinite) {
    return absl::FailedPreconditionError(
        absl::StrCat("the total gradient norm is ", result.total_norm,
                     " (non-finite gradients) and error_if_nonfinite is set"));
  }
  return result;
}

absl::StatusOr<ClipResult> ClipGradByTotalNorm(
    absl::Span<const GradTensor> grads, double max_norm, double total_norm,
    const ClipOptions& options) {
  RETURN_IF_ERROR(ValidateMaxNorm(max_norm));
  if (total_norm < 0.0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "total_norm ", total_norm, " is invalid: expected a value >= 0"));
  }
  // Also when nothing is scaled: a bad view is the caller's error whatever
  // this step's norm.
  RETURN_IF_ERROR(ValidateTensors(grads));
  ClipResult result;
  if (!std::isfinite(total_norm)) {
    if (options.error_if_nonfinite) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the total gradient norm is ", total_norm,
          " (non-finite gradients) and error_if_nonfinite is set; gradients "
          "left unchanged"));
    }
    result.nonfinite = true;
    return result;
  }
  const double coef = ClipCoefficient(max_norm, total_norm);
  if (coef < 1.0) {
    RETURN_IF_ERROR(ScaleInPlace(grads, coef, options.scale));
    result.clip_coef = coef;
    result.clipped = true;
  }
  return result;
}

}  // namespace gradnorm
