#include "client/python/dlpack.h"

#include <cstdint>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gradnorm {
namespace python_internal {
namespace {

using ::testing::HasSubstr;

DLTensor Tensor(void* data, DLDataType dtype, int64_t* shape, int32_t ndim,
                int64_t* strides = nullptr) {
  DLTensor t{};
  t.data = data;
  t.device = DLDevice{kDLCPU, 0};
  t.ndim = ndim;
  t.dtype = dtype;
  t.shape = shape;
  t.strides = strides;
  t.byte_offset = 0;
  return t;
}

constexpr DLDataType kF32{kDLFloat, 32, 1};

TEST(GradTensorFromDLTensorTest, MapsEachFloatDType) {
  float data[6] = {};
  int64_t shape[2] = {2, 3};
  struct Case {
    DLDataType dtype;
    DType expected;
  } cases[] = {{{kDLFloat, 32, 1}, DType::kFloat32},
               {{kDLBfloat, 16, 1}, DType::kBFloat16},
               {{kDLFloat, 16, 1}, DType::kFloat16},
               {{kDLFloat, 64, 1}, DType::kFloat64}};
  for (const Case& c : cases) {
    absl::StatusOr<GradTensor> view =
        GradTensorFromDLTensor(Tensor(data, c.dtype, shape, 2));
    ASSERT_TRUE(view.ok()) << view.status();
    EXPECT_EQ(view->dtype, c.expected);
    EXPECT_EQ(view->numel, 6);
    EXPECT_EQ(view->data, data);
    EXPECT_EQ(view->device, Device::Cpu());
    EXPECT_FALSE(view->tp_replicated);
  }
}

TEST(GradTensorFromDLTensorTest, AppliesByteOffset) {
  float data[8] = {};
  int64_t shape[1] = {4};
  DLTensor t = Tensor(data, kF32, shape, 1);
  t.byte_offset = 4 * sizeof(float);
  absl::StatusOr<GradTensor> view = GradTensorFromDLTensor(t);
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_EQ(view->data, data + 4);
  EXPECT_EQ(view->numel, 4);
}

TEST(GradTensorFromDLTensorTest, ScalarHasOneElement) {
  float x = 3;
  absl::StatusOr<GradTensor> view =
      GradTensorFromDLTensor(Tensor(&x, kF32, nullptr, 0));
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_EQ(view->numel, 1);
}

TEST(GradTensorFromDLTensorTest, EmptyTensorHasNullData) {
  float x = 0;
  int64_t shape[2] = {0, 5};
  int64_t strides[2] = {7, 99};
  absl::StatusOr<GradTensor> view =
      GradTensorFromDLTensor(Tensor(&x, kF32, shape, 2, strides));
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_EQ(view->numel, 0);
  EXPECT_EQ(view->data, nullptr);
}

TEST(GradTensorFromDLTensorTest, MapsCudaDeviceWithOrdinal) {
  float data[2] = {};
  int64_t shape[1] = {2};
  DLTensor t = Tensor(data, kF32, shape, 1);
  t.device = DLDevice{kDLCUDA, 3};
  absl::StatusOr<GradTensor> view = GradTensorFromDLTensor(t);
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_EQ(view->device, Device::Cuda(3));
}

TEST(GradTensorFromDLTensorTest, AcceptsExplicitRowMajorStridesAndUnitExtents) {
  float data[6] = {};
  int64_t shape[3] = {2, 1, 3};
  int64_t strides[3] = {3, 12345, 1};
  absl::StatusOr<GradTensor> view =
      GradTensorFromDLTensor(Tensor(data, kF32, shape, 3, strides));
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_EQ(view->numel, 6);
}

TEST(GradTensorFromDLTensorTest, RejectsTransposedTensor) {
  float data[6] = {};
  int64_t shape[2] = {3, 2};
  int64_t strides[2] = {1, 3};
  absl::StatusOr<GradTensor> view =
      GradTensorFromDLTensor(Tensor(data, kF32, shape, 2, strides));
  EXPECT_EQ(view.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(view.status().message(), HasSubstr("strides [1, 3]"));
  EXPECT_THAT(view.status().message(), HasSubstr("expected a contiguous"));
}

TEST(GradTensorFromDLTensorTest, RejectsIntegerAndVectorDTypes) {
  float data[2] = {};
  int64_t shape[1] = {2};
  absl::StatusOr<GradTensor> ints =
      GradTensorFromDLTensor(Tensor(data, DLDataType{kDLInt, 32, 1}, shape, 1));
  EXPECT_EQ(ints.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ints.status().message(),
              HasSubstr("(code 0, bits 32, lanes 1) is not supported"));
  absl::StatusOr<GradTensor> lanes = GradTensorFromDLTensor(
      Tensor(data, DLDataType{kDLFloat, 32, 4}, shape, 1));
  EXPECT_EQ(lanes.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GradTensorFromDLTensorTest, RejectsOtherDevices) {
  float data[2] = {};
  int64_t shape[1] = {2};
  DLTensor t = Tensor(data, kF32, shape, 1);
  t.device = DLDevice{10, 0};  // ROCm
  absl::StatusOr<GradTensor> view = GradTensorFromDLTensor(t);
  EXPECT_EQ(view.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(view.status().message(), HasSubstr("device type 10"));
}

TEST(GradTensorFromDLTensorTest, RejectsNegativeExtent) {
  float data[2] = {};
  int64_t shape[2] = {2, -1};
  absl::StatusOr<GradTensor> view =
      GradTensorFromDLTensor(Tensor(data, kF32, shape, 2));
  EXPECT_EQ(view.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(view.status().message(), HasSubstr("shape [2, -1]"));
}

}  // namespace
}  // namespace python_internal
}  // namespace gradnorm
