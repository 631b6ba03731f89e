// Runs the CPU kernels' work items on an OpenMP runtime that the host
// process has loaded (the one torch's intra-op threads belong to), instead
// of gradnorm's own thread pool. Two pools on the same cores compete: right
// after a torch operation its OpenMP workers still spin for a few
// milliseconds, and gradnorm's threads would share the cores with them.
// Joining their runtime makes them do gradnorm's work instead.
//
//   ASSIGN_OR_RETURN(ParallelFor run, OpenMpParallelFor("libgomp.so.1"));
//   options.parallel_for = run;   // PartialNormOptions / ScaleOptions
//
// Any runtime with libgomp's entry points works: GNU libgomp (Debian's torch,
// pip torch's bundled copy), LLVM libomp and Intel libiomp5 (which provide
// them for GCC-compiled code). The team has the runtime's default size on
// the calling thread (what torch.set_num_threads sets).
//
// Thread-safety: the returned ParallelFor may be called from any thread.
#ifndef GRADNORM_CLIENT_C_API_INTERNAL_OPENMP_PARALLEL_FOR_H_
#define GRADNORM_CLIENT_C_API_INTERNAL_OPENMP_PARALLEL_FOR_H_

#include <string>

#include "absl/status/statusor.h"
#include "kernels/partial_norm.h"

namespace gradnorm {
namespace c_api_internal {

// NOT_FOUND when `library` cannot be loaded (dlopen's message);
// INVALID_ARGUMENT when it lacks GOMP_parallel, omp_get_thread_num or
// omp_get_num_threads. The library stays loaded for the process's life.
absl::StatusOr<ParallelFor> OpenMpParallelFor(const std::string& library);

}  // namespace c_api_internal
}  // namespace gradnorm

#endif  // GRADNORM_CLIENT_C_API_INTERNAL_OPENMP_PARALLEL_FOR_H_
