// The CPU kernels' work items, each compiled for every SIMD target Highway
// supports and dispatched to the best one for the running CPU.
//
//   ReduceTask(tensors, task, chunk_elements, spec, chunk_values);
//   ScaleTask(pieces, begin, end, coef);
//
// partial_norm_cpu.cc cuts the work into these tasks and runs them on
// threads. Thread-safety: tasks write disjoint memory, so any number run
// concurrently.
#ifndef GRADNORM_KERNELS_INTERNAL_CPU_TASKS_H_
#define GRADNORM_KERNELS_INTERNAL_CPU_TASKS_H_

#include <cstddef>
#include <cstdint>

#include "kernels/grad_tensor.h"
#include "kernels/internal/partial_norm_cpu.h"

namespace gradnorm {
namespace kernels_internal {

// Reduces task.count chunks of chunk_elements elements (the last of a tensor
// shorter), starting at chunk task.chunk of tensors[task.tensor], into
// out[task.first_slot...]: one value per chunk (reduce_cpu.cc).
void ReduceTask(const GradTensor* tensors, const TaskSpan& task,
                int64_t chunk_elements, const ReduceSpec& spec, double* out);

// Scales pieces [begin, end) in place by coef, each in its own dtype, last
// piece first (scale_cpu.cc).
void ScaleTask(const ScalePiece* pieces, size_t begin, size_t end, double coef);

}  // namespace kernels_internal
}  // namespace gradnorm

#endif  // GRADNORM_KERNELS_INTERNAL_CPU_TASKS_H_
