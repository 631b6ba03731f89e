#include "client/grpc_status.h"

#include "gtest/gtest.h"

namespace gradnorm {
namespace {

TEST(FromGrpcStatusTest, KeepsCodeAndPrefixesCall) {
  absl::Status status = FromGrpcStatus(
      grpc::Status(grpc::StatusCode::NOT_FOUND, "run 'x' is unknown"), "Report");
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(status.message(), "Report: run 'x' is unknown");
  EXPECT_EQ(FromGrpcStatus(grpc::Status(grpc::StatusCode::UNAVAILABLE, "down"))
                .message(),
            "down");
}

TEST(FromGrpcStatusTest, EveryCanonicalCodeMapsToItself) {
  for (int code = 1; code <= 16; ++code) {
    absl::Status status = FromGrpcStatus(
        grpc::Status(static_cast<grpc::StatusCode>(code), "m"));
    EXPECT_EQ(static_cast<int>(status.code()), code);
  }
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
  EXPECT_EQ(FromGrpcStatus(grpc::Status(static_cast<grpc::StatusCode>(42), "m"))
                .code(),
            absl::StatusCode::kUnknown);
}

}  // namespace
}  // namespace gradnorm
