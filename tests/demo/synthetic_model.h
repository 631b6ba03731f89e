// A small GPT-2-like model whose gradients are generated deterministically, so
// every rank can materialize its own shards and an independent checker can
// recompute the full, unsharded gradient of any step.
//
//   SyntheticModel model = SyntheticModel::Gpt(/*layers=*/4, /*hidden=*/256,
//                                              /*vocab=*/2048, /*seed=*/7);
//   // Job 1 of 2, DP rank 0 of 2, TP rank 0 of 1:
//   std::vector<Shard> shards = model.ShardsOf({1, 2, 0, 2, 0, 1});
//   model.Fill(step, shards[i]);            // this rank's gradient values
//   long double s = model.FullPartial(step, 2.0);  // sum |g|^2, whole model
//
// Gradient values follow a distribution whose scale drifts with the step; a
// planted spike step multiplies every gradient by a large factor and a planted
// NaN step poisons one element. bf16 values are rounded to nearest even from
// the fp32 value, exactly as a trainer's bf16 gradients would hold them.
//
// Thread-safety: immutable after construction; Fill writes only its shard.
#ifndef GRADNORM_TESTS_DEMO_SYNTHETIC_MODEL_H_
#define GRADNORM_TESTS_DEMO_SYNTHETIC_MODEL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/grad_tensor.h"

namespace gradnorm {
namespace demo {

struct ParamSpec {
  std::string name;
  int64_t rows = 1;
  int64_t cols = 1;
  DType dtype = DType::kFloat32;
  // Layer norms and biases: replicated across TP ranks; matrices are split by
  // columns (or rows for embeddings) across TP ranks.
  bool tp_replicated = false;
  // The pipeline stage (job) that owns the parameter.
  int job = 0;
  int64_t numel() const { return rows * cols; }
};

// Where a rank sits: which job, and its DP and TP coordinates within the job.
struct RankPlace {
  int job = 0;
  int jobs = 1;
  int dp_rank = 0;
  int dp_size = 1;
  int tp_rank = 0;
  int tp_size = 1;
};

// One rank's piece of one parameter: the elements [begin, end) of the flattened
// parameter (in the parameter's own element order) held in `values` (fp32
// storage) or `half_values` (bf16 bit patterns).
struct Shard {
  int param = 0;
  std::vector<int64_t> indices;  // flattened element indices, ascending
  std::vector<float> values;
  std::vector<uint16_t> half_values;
  DType dtype = DType::kFloat32;
  bool tp_replicated = false;

  GradTensor View();
};

struct Plan {
  // Step whose gradients are scaled by spike_factor (-1: none).
  int spike_step = -1;
  double spike_factor = 40.0;
  // Step with one NaN gradient element (-1: none).
  int nan_step = -1;
};

class SyntheticModel {
 public:
  // GPT-2-like shapes: token and position embeddings, `layers` transformer
  // blocks (ln_1, c_attn, attn c_proj, ln_2, c_fc, mlp c_proj with biases),
  // ln_f. Blocks are assigned to `jobs` pipeline stages in contiguous ranges;
  // embeddings go to the first stage, ln_f to the last. Matrices are bf16,
  // embeddings, layer norms and biases fp32.
  static SyntheticModel Gpt(int layers, int hidden, int vocab, int jobs,
                            uint64_t seed, Plan plan);

  const std::vector<ParamSpec>& params() const { return params_; }
  int64_t total_elements() const;

  // The shards a rank holds: for each parameter of its job, the TP slice
  // (replicated tensors: the whole tensor) split into DP_size contiguous
  // pieces.
  std::vector<Shard> ShardsOf(const RankPlace& place) const;

  // Writes step `step`'s gradient values into `shard`.
  void Fill(int step, Shard* shard) const;

  // The gradient element (as stored: bf16-rounded where the dtype is bf16).
  double Value(int step, int param, int64_t index) const;

  // sum |g|^p over every element of the whole model (p finite), or max |g|
  // (p = inf), in long double; NaN if any element is NaN.
  long double FullPartial(int step, double p) const;

 private:
  SyntheticModel(std::vector<ParamSpec> params, uint64_t seed, Plan plan)
      : params_(std::move(params)), seed_(seed), plan_(plan) {}

  std::vector<ParamSpec> params_;
  uint64_t seed_;
  Plan plan_;
};

// Round-to-nearest-even fp32 -> bf16 bits, and back.
uint16_t FloatToBf16(float value);
float Bf16ToFloat(uint16_t bits);

}  // namespace demo
}  // namespace gradnorm

#endif  // GRADNORM_TESTS_DEMO_SYNTHETIC_MODEL_H_
