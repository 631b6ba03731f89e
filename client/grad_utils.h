// The seed API (NeMo Automodel's get_grad_norm / clip_grad_by_total_norm_) in
// C++: fp64 accumulation, each element counted once, NaN never lost.
//
//   // Each rank: its shards of the gradients; tensors replicated across TP
//   // ranks (layer norms, biases) are marked and counted on TP rank 0 only.
//   std::vector<GradTensor> grads = {GradTensor::Cpu(w.data(), w.size())};
//   GradTensor bias = GradTensor::Cpu(b.data(), b.size());
//   bias.tp_replicated = true;
//   grads.push_back(bias);
//   ASSIGN_OR_RETURN(GradNormResult norm,
//                    GetGradNorm(grads, *dp_cp, *tp, /*norm_type=*/2.0));
//   ASSIGN_OR_RETURN(ClipResult clip,
//                    ClipGradByTotalNorm(grads, /*max_norm=*/1.0,
//                    norm.total_norm));
//
// Thread-safety: the functions are reentrant; a communicator is used by one
// call at a time, and concurrent calls must not clip the same memory.
#ifndef GRADNORM_CLIENT_GRAD_UTILS_H_
#define GRADNORM_CLIENT_GRAD_UTILS_H_

#include <cstdint>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "client/communicator.h"
#include "common/exact_sum.h"
#include "common/norm_math.h"  // ClipCoefficient, kClipEpsilon
#include "common/norm_type.h"  // ValidateNormType
#include "kernels/grad_tensor.h"
#include "kernels/partial_norm.h"

namespace gradnorm {

struct GradNormOptions {
  // Fail with FAILED_PRECONDITION when the total is NaN or Inf (after every
  // rank has joined every reduction, so all ranks fail alike).
  bool error_if_nonfinite = false;
  // Threads, chunking and CUDA stream of the local partial; `exact` sums
  // exactly over the whole group too (the reductions carry each rank's exact
  // partial as integer digit sums, which a floating-point SUM adds exactly).
  PartialNormOptions partial;
  // An error this rank found in its own input before the call (a gradient
  // its caller could not describe as a GradTensor, say): the rank fails with
  // it, and the group learns of it as of a bad view (ABORTED elsewhere).
  absl::Status input_error;
};

struct GradNormResult {
  // The norm of all gradients of the dp_cp x tp group viewed as one vector:
  // partial^(1/p), or the max |g| for p = inf. NaN or +Inf when non-finite.
  double total_norm = 0.0;
  // The group's reduced partial: sum |g|^p, or max |g| for p = inf. What a job
  // reports to the coordinator.
  double partial = 0.0;
  // True when total_norm is NaN or +-Inf.
  bool nonfinite = false;
  // Gradient elements covered (replicated tensors counted once).
  uint64_t num_elements = 0;
  // With options.partial.exact (p = 1 or 2): the group's partial with no
  // rounding at all, the same bits for any sharding over dp_cp and tp;
  // `partial` is it rounded once, total_norm its square root (p = 2).
  std::optional<ExactSum> exact;
};

// The p-norm (norm_type > 0, or +Inf) of the gradients sharded over `dp_cp`
// (disjoint shards: partials are summed, or max-ed) and `tp` (replicated
// tensors counted on TP rank 0 only; tensors marked counted_elsewhere never
// counted). Every rank calls it with the same
// norm_type, also a rank without gradients; every rank joins every reduction
// even when its own arguments are bad, so no rank hangs another. All ranks
// get the bitwise same result.
//
// Errors: INVALID_ARGUMENT for norm_type <= 0 or NaN or a bad tensor (on the
// rank that has it; every view is checked, also a replicated one this rank
// does not count); ABORTED on the other ranks when some rank failed locally;
// FAILED_PRECONDITION for a non-finite total with error_if_nonfinite; the
// communicator's error when a reduction failed (DEADLINE_EXCEEDED,
// UNAVAILABLE).
absl::StatusOr<GradNormResult> GetGradNorm(absl::Span<const GradTensor> grads,
                                           Communicator& dp_cp,
                                           Communicator& tp, double norm_type,
                                           const GradNormOptions& options = {});

struct ClipOptions {
  // Fail with FAILED_PRECONDITION when total_norm is NaN or Inf.
  bool error_if_nonfinite = false;
  // Threads and CUDA stream of the in-place scaling.
  ScaleOptions scale;
};

struct ClipResult {
  // The factor the gradients were multiplied by: max_norm / (total + 1e-6)
  // when clipped, else 1.
  double clip_coef = 1.0;
  // True when the gradients were scaled (finite total and coef < 1).
  bool clipped = false;
  // True when total_norm was NaN or Inf: the gradients are untouched.
  bool nonfinite = false;
};

// Scales every gradient in place by max_norm / (total_norm + 1e-6) when
// total_norm is finite and that coefficient is < 1 (in each tensor's own
// dtype: bf16/fp16 gradients really are scaled); otherwise writes nothing.
//
// Errors: INVALID_ARGUMENT for max_norm < 0 or NaN, total_norm < 0, or a bad
// tensor (nothing is written); FAILED_PRECONDITION for a non-finite total_norm
// with error_if_nonfinite.
absl::StatusOr<ClipResult> ClipGradByTotalNorm(
    absl::Span<const GradTensor> grads, double max_norm, double total_norm,
    const ClipOptions& options = {});

// INVALID_ARGUMENT unless max_norm >= 0 (+Inf allowed: never clip).
absl::Status ValidateMaxNorm(double max_norm);

}  // namespace gradnorm

#endif  // GRADNORM_CLIENT_GRAD_UTILS_H_
