#include "kernels/internal/partial_norm_cuda.h"

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/strings/str_cat.h"
#include "common/exact_sum.h"
#include "common/status_macros.h"
#include "kernels/cuda_status.h"
#include "kernels/internal/exact_partial_cuda_kernels.h"
#include "kernels/internal/partial_norm_cuda_kernels.h"

namespace gradnorm {
namespace kernels_internal {
namespace {

// Makes the tensors' device current for the scope and restores the caller's.
class DeviceScope {
 public:
  static absl::StatusOr<DeviceScope> Enter(int device) {
    int previous = 0;
    RETURN_IF_CUDA_ERROR(cudaGetDevice(&previous));
    if (previous != device) RETURN_IF_CUDA_ERROR(cudaSetDevice(device));
    return DeviceScope(previous, device);
  }
  DeviceScope(DeviceScope&& other)
      : previous_(other.previous_), device_(other.device_) {
    other.previous_ = other.device_;
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;
  ~DeviceScope() {
    // No Status to return here; clear the error so no later check reports it.
    if (previous_ != device_ && cudaSetDevice(previous_) != cudaSuccess) {
      (void)cudaGetLastError();
    }
  }

 private:
  DeviceScope(int previous, int device)
      : previous_(previous), device_(device) {}
  int previous_;
  int device_;
};

// The CUDA path's one dtype switch (STYLE.md rule 12): the kernels' own
// dtype switch has no fallback, so a value outside the enum must never reach
// them (its chunks would be left unwritten).
absl::StatusOr<CudaDType> ToCudaDType(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return kCudaFloat32;
    case DType::kBFloat16:
      return kCudaBFloat16;
    case DType::kFloat16:
      return kCudaFloat16;
    case DType::kFloat64:
      return kCudaFloat64;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unknown dtype ", static_cast<int32_t>(dtype),
                       "; expected fp32 (0), bf16 (1), fp16 (2) or fp64 (3)"));
  }
}

CudaNormKind KindFor(double p) {
  if (p == 1.0) return CudaNormKind::kSumAbs;
  if (p == 2.0) return CudaNormKind::kSumSquares;
  if (std::isinf(p)) return CudaNormKind::kMaxAbs;
  return CudaNormKind::kSumPow;
}

int64_t NumChunks(int64_t numel) {
  return (numel + kCudaChunkElements - 1) / kCudaChunkElements;
}

// Packs every chunk of every tensor, in tensor order, into as few launches as
// the argument struct allows and calls `launch` for each; block b of a launch
// owns workspace slot args.first_chunk + b.
absl::Status ForEachLaunch(
    absl::Span<const GradTensor> tensors,
    absl::FunctionRef<absl::Status(const TensorListArgs&)> launch) {
  // Every dtype is checked before the first launch, so a bad one enqueues
  // nothing (and scales nothing).
  std::vector<int8_t> dtypes(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    absl::StatusOr<CudaDType> dtype = ToCudaDType(tensors[i].dtype);
    if (!dtype.ok()) return dtype.status();
    dtypes[i] = *dtype;
  }
  TensorListArgs args;
  std::memset(&args, 0, sizeof(args));
  int num_tensors = 0;
  int64_t next_chunk = 0;
  auto flush = [&]() -> absl::Status {
    if (args.num_blocks > 0) {
      absl::Status s = launch(args);
      if (!s.ok()) return s;
    }
    next_chunk += args.num_blocks;
    args.first_chunk = next_chunk;
    args.num_blocks = 0;
    num_tensors = 0;
    return absl::OkStatus();
  };
  for (size_t i = 0; i < tensors.size(); ++i) {
    const GradTensor& t = tensors[i];
    const int64_t chunks = NumChunks(t.numel);
    for (int64_t c = 0; c < chunks; ++c) {
      // A tensor takes a slot at its first chunk, and again in the next launch
      // when its chunks spill over.
      if (c == 0 || num_tensors == 0) {
        if (num_tensors == kMaxTensorsPerLaunch) {
          absl::Status s = flush();
          if (!s.ok()) return s;
        }
        args.data[num_tensors] = t.data;
        args.numel[num_tensors] = t.numel;
        args.dtype[num_tensors] = dtypes[i];
        ++num_tensors;
      }
      args.block_tensor[args.num_blocks] =
          static_cast<uint8_t>(num_tensors - 1);
      args.block_chunk[args.num_blocks] = static_cast<int32_t>(c);
      ++args.num_blocks;
      if (args.num_blocks == kMaxBlocksPerLaunch) {
        absl::Status s = flush();
        if (!s.ok()) return s;
      }
    }
  }
  return flush();
}

// The workspace slot of each tensor's first chunk, and the chunk count last.
absl::StatusOr<std::vector<int64_t>> FirstChunks(
    absl::Span<const GradTensor> tensors) {
  if (tensors.size() >
      static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return absl::InvalidArgumentError("more than 2^31-1 tensors in one call");
  }
  std::vector<int64_t> first_chunk(tensors.size() + 1);
  int64_t total_chunks = 0;
  for (size_t t = 0; t < tensors.size(); ++t) {
    first_chunk[t] = total_chunks;
    total_chunks += NumChunks(tensors[t].numel);
  }
  first_chunk[tensors.size()] = total_chunks;
  return first_chunk;
}

size_t RoundUp(size_t n) { return (n + 255) / 256 * 256; }

// Device workspace of one partial-norm call, carved from one allocation.
struct Workspace {
  void* base = nullptr;
  double* chunk_values = nullptr;
  int32_t* chunk_flags = nullptr;
  int64_t* first_chunk = nullptr;
  double* per_tensor = nullptr;
  double* result = nullptr;
  int32_t* result_flag = nullptr;
};

// Enqueues the whole partial norm; the result lands in *result (device
// memory). The caller frees ws->base (stream-ordered) once done with it.
absl::Status EnqueuePartialNorm(absl::Span<const GradTensor> tensors, double p,
                                cudaStream_t stream, double* result,
                                Workspace* ws) {
  const int64_t num_tensors = static_cast<int64_t>(tensors.size());
  ASSIGN_OR_RETURN(std::vector<int64_t> first_chunk, FirstChunks(tensors));
  const int64_t total_chunks = first_chunk[num_tensors];

  const size_t values_bytes = RoundUp(sizeof(double) * (total_chunks + 1));
  const size_t flags_bytes = RoundUp(sizeof(int32_t) * (total_chunks + 1));
  const size_t first_bytes = RoundUp(sizeof(int64_t) * (num_tensors + 1));
  const size_t per_tensor_bytes = RoundUp(sizeof(double) * (num_tensors + 1));
  const size_t total_bytes = values_bytes + flags_bytes + first_bytes +
                             per_tensor_bytes + RoundUp(sizeof(double)) +
                             RoundUp(sizeof(int32_t));
  RETURN_IF_CUDA_ERROR(cudaMallocAsync(&ws->base, total_bytes, stream));
  char* cursor = static_cast<char*>(ws->base);
  ws->chunk_values = reinterpret_cast<double*>(cursor);
  cursor += values_bytes;
  ws->chunk_flags = reinterpret_cast<int32_t*>(cursor);
  cursor += flags_bytes;
  ws->first_chunk = reinterpret_cast<int64_t*>(cursor);
  cursor += first_bytes;
  ws->per_tensor = reinterpret_cast<double*>(cursor);
  cursor += per_tensor_bytes;
  ws->result = reinterpret_cast<double*>(cursor);
  cursor += RoundUp(sizeof(double));
  ws->result_flag = reinterpret_cast<int32_t*>(cursor);

  // From pageable memory the copy is staged before cudaMemcpyAsync returns,
  // so `first_chunk` may go out of scope afterwards.
  RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(ws->first_chunk, first_chunk.data(),
                                       sizeof(int64_t) * (num_tensors + 1),
                                       cudaMemcpyHostToDevice, stream));
  const CudaNormKind kind = KindFor(p);
  absl::Status launched =
      ForEachLaunch(tensors, [&](const TensorListArgs& args) -> absl::Status {
        RETURN_IF_CUDA_ERROR(LaunchChunkPartials(
            args, kind, p, ws->chunk_values, ws->chunk_flags, stream));
        return absl::OkStatus();
      });
  if (!launched.ok()) return launched;
  RETURN_IF_CUDA_ERROR(LaunchFinalize(
      ws->chunk_values, ws->chunk_flags, ws->first_chunk,
      static_cast<int32_t>(num_tensors), kind, ws->per_tensor,
      result != nullptr ? result : ws->result, ws->result_flag, stream));
  return absl::OkStatus();
}

// Frees the workspace on every path (stream-ordered, after the kernels).
class WorkspaceGuard {
 public:
  WorkspaceGuard(Workspace* ws, cudaStream_t stream)
      : ws_(ws), stream_(stream) {}
  ~WorkspaceGuard() {
    if (ws_->base != nullptr &&
        cudaFreeAsync(ws_->base, stream_) != cudaSuccess) {
      (void)cudaGetLastError();  // as in ~DeviceScope
    }
  }
  WorkspaceGuard(const WorkspaceGuard&) = delete;
  WorkspaceGuard& operator=(const WorkspaceGuard&) = delete;

 private:
  Workspace* ws_;
  cudaStream_t stream_;
};

// The exact partial: per-chunk digits, summed per tensor and in all, copied
// back as ExactSum::FromReduced takes them. The caller holds the device scope.
absl::StatusOr<PartialNorm> ComputeExactPartialCuda(
    absl::Span<const GradTensor> tensors, double p,
    const CudaNormOptions& options) {
  const int64_t num_tensors = static_cast<int64_t>(tensors.size());
  ASSIGN_OR_RETURN(std::vector<int64_t> first_chunk, FirstChunks(tensors));
  const int64_t total_chunks = first_chunk[num_tensors];
  const int64_t sums = options.per_tensor ? num_tensors + 1 : 1;
  const size_t digits_bytes =
      RoundUp(sizeof(uint32_t) * kExactDigits * (total_chunks + 1));
  const size_t flags_bytes = RoundUp(sizeof(int32_t) * (total_chunks + 1));
  const size_t first_bytes = RoundUp(sizeof(int64_t) * (num_tensors + 1));
  const size_t reducible_bytes =
      RoundUp(sizeof(double) * kExactReducibleSize * sums);
  cudaStream_t stream = static_cast<cudaStream_t>(options.stream);
  Workspace ws;
  std::vector<double> reducible(kExactReducibleSize * sums);
  {
    WorkspaceGuard guard(&ws, stream);
    RETURN_IF_CUDA_ERROR(cudaMallocAsync(
        &ws.base, digits_bytes + flags_bytes + first_bytes + reducible_bytes,
        stream));
    char* cursor = static_cast<char*>(ws.base);
    uint32_t* chunk_digits = reinterpret_cast<uint32_t*>(cursor);
    int32_t* chunk_flags = reinterpret_cast<int32_t*>(cursor + digits_bytes);
    int64_t* device_first =
        reinterpret_cast<int64_t*>(cursor + digits_bytes + flags_bytes);
    double* device_reducible = reinterpret_cast<double*>(
        cursor + digits_bytes + flags_bytes + first_bytes);
    RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(device_first, first_chunk.data(),
                                         sizeof(int64_t) * (num_tensors + 1),
                                         cudaMemcpyHostToDevice, stream));
    const int k = p == 2.0 ? 2 : 1;
    absl::Status launched =
        ForEachLaunch(tensors, [&](const TensorListArgs& args) -> absl::Status {
          RETURN_IF_CUDA_ERROR(LaunchExactChunkPartials(args, k, chunk_digits,
                                                        chunk_flags, stream));
          return absl::OkStatus();
        });
    if (!launched.ok()) return launched;
    RETURN_IF_CUDA_ERROR(
        LaunchExactFinalize(chunk_digits, chunk_flags, device_first,
                            static_cast<int32_t>(num_tensors),
                            options.per_tensor, device_reducible, stream));
    RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(reducible.data(), device_reducible,
                                         sizeof(double) * reducible.size(),
                                         cudaMemcpyDeviceToHost, stream));
    RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(stream));
  }
  auto sum_at = [&](int64_t g) {
    return ExactSum::FromReduced(absl::MakeConstSpan(
        reducible.data() + g * kExactReducibleSize, kExactReducibleSize));
  };
  PartialNorm out;
  absl::StatusOr<ExactSum> total = sum_at(sums - 1);
  if (!total.ok()) {
    return absl::InternalError(absl::StrCat(
        "the GPU's exact partial is malformed: ", total.status().message()));
  }
  out.value = total->RoundToDouble();
  out.nonfinite = !total->finite();
  out.exact = *std::move(total);
  if (options.per_tensor) {
    for (int64_t t = 0; t < num_tensors; ++t) {
      absl::StatusOr<ExactSum> one = sum_at(t);
      if (!one.ok()) {
        return absl::InternalError(
            absl::StrCat("the GPU's exact partial of tensor ", t,
                         " is malformed: ", one.status().message()));
      }
      out.per_tensor.push_back(one->RoundToDouble());
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<PartialNorm> ComputePartialNormCuda(
    absl::Span<const GradTensor> tensors, double p,
    const CudaNormOptions& options) {
  PartialNorm out;
  if (tensors.empty()) {
    if (options.exact) out.exact = ExactSum();
    return out;
  }
  absl::StatusOr<DeviceScope> scope =
      DeviceScope::Enter(tensors[0].device.index);
  if (!scope.ok()) return scope.status();
  if (options.exact) return ComputeExactPartialCuda(tensors, p, options);
  cudaStream_t stream = static_cast<cudaStream_t>(options.stream);
  Workspace ws;
  {
    WorkspaceGuard guard(&ws, stream);
    absl::Status s = EnqueuePartialNorm(tensors, p, stream, nullptr, &ws);
    if (!s.ok()) return s;
    int32_t flag = 0;
    RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(&out.value, ws.result, sizeof(double),
                                         cudaMemcpyDeviceToHost, stream));
    RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(&flag, ws.result_flag, sizeof(int32_t),
                                         cudaMemcpyDeviceToHost, stream));
    if (options.per_tensor) {
      out.per_tensor.resize(tensors.size());
      RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(out.per_tensor.data(), ws.per_tensor,
                                           sizeof(double) * tensors.size(),
                                           cudaMemcpyDeviceToHost, stream));
    }
    RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(stream));
    out.nonfinite = flag != 0;
  }
  return out;
}

absl::Status ComputePartialNormOnDeviceCuda(
    absl::Span<const GradTensor> tensors, double p, double* device_result,
    const CudaNormOptions& options) {
  cudaStream_t stream = static_cast<cudaStream_t>(options.stream);
  if (tensors.empty()) {
    RETURN_IF_CUDA_ERROR(
        cudaMemsetAsync(device_result, 0, sizeof(double), stream));
    return absl::OkStatus();
  }
  absl::StatusOr<DeviceScope> scope =
      DeviceScope::Enter(tensors[0].device.index);
  if (!scope.ok()) return scope.status();
  Workspace ws;
  WorkspaceGuard guard(&ws, stream);
  return EnqueuePartialNorm(tensors, p, stream, device_result, &ws);
}

absl::Status ScaleInPlaceCuda(absl::Span<const GradTensor> tensors, double coef,
                              void* stream_handle) {
  if (tensors.empty()) return absl::OkStatus();
  absl::StatusOr<DeviceScope> scope =
      DeviceScope::Enter(tensors[0].device.index);
  if (!scope.ok()) return scope.status();
  cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  // As on the CPU: fp32 products with a float coefficient, unless the
  // coefficient does not fit a float.
  const bool fp64_product = coef > std::numeric_limits<float>::max();
  const float coef32 = fp64_product ? 0.0f : static_cast<float>(coef);
  return ForEachLaunch(
      tensors, [&](const TensorListArgs& args) -> absl::Status {
        RETURN_IF_CUDA_ERROR(
            LaunchScale(args, coef32, coef, fp64_product, stream));
        return absl::OkStatus();
      });
}

}  // namespace kernels_internal
}  // namespace gradnorm
