#include "kernels/grad_tensor.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gradnorm {
namespace {

TEST(DTypeTest, NamesAndSizes) {
  EXPECT_EQ(DTypeName(DType::kFloat32), "fp32");
  EXPECT_EQ(DTypeName(DType::kBFloat16), "bf16");
  EXPECT_EQ(DTypeName(DType::kFloat16), "fp16");
  EXPECT_EQ(DTypeName(DType::kFloat64), "fp64");
  EXPECT_EQ(DTypeName(static_cast<DType>(9)), "unknown");
  EXPECT_EQ(*DTypeSize(DType::kFloat32), 4u);
  EXPECT_EQ(*DTypeSize(DType::kBFloat16), 2u);
  EXPECT_EQ(*DTypeSize(DType::kFloat16), 2u);
  EXPECT_EQ(*DTypeSize(DType::kFloat64), 8u);
  static_assert(ElementSize(DType::kBFloat16) == 2, "a constant expression");
  EXPECT_EQ(ElementSize(static_cast<DType>(9)), 0u);
  const absl::StatusOr<size_t> bad = DTypeSize(static_cast<DType>(9));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      bad.status().message(),
      "unknown dtype 9; expected fp32 (0), bf16 (1), fp16 (2) or fp64 (3)");
}

TEST(ValidateTensorsTest, AcceptsGoodViews) {
  std::vector<float> w(4);
  std::vector<double> d(2);
  std::vector<uint16_t> h(3);
  std::vector<GradTensor> tensors = {
      GradTensor::Cpu(w.data(), 4), GradTensor::Cpu(d.data(), 2),
      GradTensor::Cpu(h.data(), 3, DType::kBFloat16),
      GradTensor{nullptr, 0, DType::kFloat16, Device::Cpu(), false}};
  EXPECT_TRUE(ValidateTensors(tensors).ok());
  EXPECT_TRUE(ValidateTensors({}).ok());
}

TEST(ValidateTensorsTest, NamesTheFirstBadTensor) {
  std::vector<float> w(4);
  GradTensor good = GradTensor::Cpu(w.data(), 4);

  GradTensor null_data = good;
  null_data.data = nullptr;
  absl::Status s = ValidateTensors({good, null_data});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "tensors[1]: data is null with numel 4; expected a non-null "
            "pointer when numel > 0");

  GradTensor negative = good;
  negative.numel = -1;
  s = ValidateTensors({negative, null_data});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "tensors[0]: numel is -1; expected >= 0");

  GradTensor unknown = good;
  unknown.dtype = static_cast<DType>(7);
  s = ValidateTensors({good, good, unknown});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "tensors[2]: unknown dtype 7; expected fp32 (0), bf16 (1), fp16 "
            "(2) or fp64 (3)");

  GradTensor on_gpu = good;
  on_gpu.device = Device::Cuda(0);
  s = ValidateTensors({good, on_gpu});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "tensors[1] is on cuda:0 but tensors[0] is on cpu; expected all "
            "tensors on one device");

  GradTensor on_gpu1 = on_gpu;
  on_gpu1.device = Device::Cuda(1);
  s = ValidateTensors({on_gpu, on_gpu1});
  EXPECT_EQ(s.message(),
            "tensors[1] is on cuda:1 but tensors[0] is on cuda:0; expected "
            "all tensors on one device");

  GradTensor bad_index = on_gpu;
  bad_index.device.index = -2;
  s = ValidateTensors({bad_index});
  EXPECT_EQ(s.message(), "tensors[0]: CUDA device index is -2; expected >= 0");

  // CUDA tensors must be element-aligned; CPU ones may be at any byte.
  alignas(8) static char bytes[64];
  GradTensor odd = on_gpu;
  odd.data = bytes + 2;
  odd.dtype = DType::kFloat32;
  s = ValidateTensors({on_gpu, odd});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            absl::StrCat("tensors[1]: CUDA data pointer ",
                         absl::Hex(reinterpret_cast<uintptr_t>(bytes + 2)),
                         " is not aligned to its 4-byte elements; expected an "
                         "element-aligned pointer"));
  odd.dtype = DType::kBFloat16;
  EXPECT_TRUE(ValidateTensors({on_gpu, odd}).ok());
  odd.numel = 0;
  odd.data = bytes + 1;
  EXPECT_TRUE(ValidateTensors({on_gpu, odd}).ok());
  GradTensor odd_cpu = good;
  odd_cpu.data = bytes + 1;
  EXPECT_TRUE(ValidateTensors({odd_cpu}).ok());
}

TEST(DeviceTest, Equality) {
  EXPECT_EQ(Device::Cpu(), Device::Cpu());
  EXPECT_EQ(Device::Cuda(1), Device::Cuda(1));
  EXPECT_NE(Device::Cuda(0), Device::Cuda(1));
  EXPECT_NE(Device::Cpu(), Device::Cuda(0));
}

}  // namespace
}  // namespace gradnorm
