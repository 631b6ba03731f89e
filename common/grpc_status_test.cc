#include "common/grpc_status.h"

#include "gtest/gtest.h"

namespace gradnorm {
namespace {

TEST(GrpcStatusTest, OkMapsToOk) {
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
}

TEST(GrpcStatusTest, EveryCanonicalCodeKeepsCodeAndMessageBothWays) {
  for (int code = 1; code <= 16; ++code) {
    absl::Status in(static_cast<absl::StatusCode>(code), "what went wrong");
    grpc::Status out = ToGrpcStatus(in);
    EXPECT_EQ(static_cast<int>(out.error_code()), code);
    EXPECT_EQ(out.error_message(), "what went wrong");
    EXPECT_EQ(FromGrpcStatus(out), in);
  }
}

TEST(GrpcStatusTest, NamedCodesLineUp) {
  EXPECT_EQ(ToGrpcStatus(absl::NotFoundError("x")).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(ToGrpcStatus(absl::PermissionDeniedError("x")).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(ToGrpcStatus(absl::FailedPreconditionError("x")).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(ToGrpcStatus(absl::AbortedError("x")).error_code(),
            grpc::StatusCode::ABORTED);
}

TEST(GrpcStatusTest, FromGrpcPrefixesTheCallAndMapsUnknownCodes) {
  EXPECT_EQ(FromGrpcStatus(
                grpc::Status(grpc::StatusCode::NOT_FOUND, "run 'x' is unknown"),
                "Report"),
            absl::NotFoundError("Report: run 'x' is unknown"));
  EXPECT_EQ(FromGrpcStatus(grpc::Status(grpc::StatusCode::UNAVAILABLE, "down"))
                .message(),
            "down");
  EXPECT_EQ(FromGrpcStatus(grpc::Status(static_cast<grpc::StatusCode>(42), "m"))
                .code(),
            absl::StatusCode::kUnknown);
}

}  // namespace
}  // namespace gradnorm
