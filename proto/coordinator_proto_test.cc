// The contract compiles, every message survives a wire round trip with every
// field set, and the generated service (and its mock) has every rpc.
#include <memory>
#include <set>
#include <string>
#include <type_traits>

#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/dynamic_message.h"
#include "google/protobuf/util/message_differencer.h"
#include "gradnorm/v1/coordinator.grpc.pb.h"
#include "gradnorm/v1/coordinator_mock.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"

namespace gradnorm {
namespace {

using ::google::protobuf::Descriptor;
using ::google::protobuf::FieldDescriptor;
using ::google::protobuf::FileDescriptor;
using ::google::protobuf::Message;
using ::google::protobuf::Reflection;

// Sets every field of `message` to a non-default value (repeated fields get two
// elements), recursing into sub-messages. Returns the number of fields set.
int FillAllFields(Message* message, int depth) {
  const Descriptor* descriptor = message->GetDescriptor();
  const Reflection* reflection = message->GetReflection();
  int set = 0;
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const FieldDescriptor* field = descriptor->field(i);
    const int copies = field->is_repeated() ? 2 : 1;
    for (int c = 0; c < copies; ++c) {
      const int seed = 3 + i + c;
      switch (field->cpp_type()) {
        case FieldDescriptor::CPPTYPE_INT32:
          field->is_repeated() ? reflection->AddInt32(message, field, -seed)
                               : reflection->SetInt32(message, field, -seed);
          break;
        case FieldDescriptor::CPPTYPE_INT64:
          field->is_repeated()
              ? reflection->AddInt64(message, field, -(int64_t{1} << 40) - seed)
              : reflection->SetInt64(message, field,
                                     -(int64_t{1} << 40) - seed);
          break;
        case FieldDescriptor::CPPTYPE_UINT32:
          field->is_repeated() ? reflection->AddUInt32(message, field, seed)
                               : reflection->SetUInt32(message, field, seed);
          break;
        case FieldDescriptor::CPPTYPE_UINT64:
          field->is_repeated()
              ? reflection->AddUInt64(message, field,
                                      (uint64_t{1} << 40) + seed)
              : reflection->SetUInt64(message, field,
                                      (uint64_t{1} << 40) + seed);
          break;
        case FieldDescriptor::CPPTYPE_DOUBLE:
          field->is_repeated()
              ? reflection->AddDouble(message, field, seed + 0.25)
              : reflection->SetDouble(message, field, seed + 0.25);
          break;
        case FieldDescriptor::CPPTYPE_FLOAT:
          field->is_repeated()
              ? reflection->AddFloat(message, field, seed + 0.5f)
              : reflection->SetFloat(message, field, seed + 0.5f);
          break;
        case FieldDescriptor::CPPTYPE_BOOL:
          field->is_repeated() ? reflection->AddBool(message, field, true)
                               : reflection->SetBool(message, field, true);
          break;
        case FieldDescriptor::CPPTYPE_STRING:
          field->is_repeated()
              ? reflection->AddString(message, field,
                                      "value-" + std::to_string(seed))
              : reflection->SetString(message, field,
                                      "value-" + std::to_string(seed));
          break;
        case FieldDescriptor::CPPTYPE_ENUM: {
          const auto* enum_type = field->enum_type();
          const auto* value = enum_type->value(enum_type->value_count() - 1);
          field->is_repeated() ? reflection->AddEnum(message, field, value)
                               : reflection->SetEnum(message, field, value);
          break;
        }
        case FieldDescriptor::CPPTYPE_MESSAGE:
          if (depth < 4) {
            FillAllFields(field->is_repeated()
                              ? reflection->AddMessage(message, field)
                              : reflection->MutableMessage(message, field),
                          depth + 1);
          }
          break;
      }
    }
    ++set;
  }
  return set;
}

void ExpectEveryMessageRoundTrips(const FileDescriptor* file) {
  ASSERT_NE(file, nullptr);
  ASSERT_GT(file->message_type_count(), 0);
  google::protobuf::DynamicMessageFactory factory;
  for (int i = 0; i < file->message_type_count(); ++i) {
    const Descriptor* descriptor = file->message_type(i);
    SCOPED_TRACE(descriptor->full_name());
    const Message* prototype =
        google::protobuf::MessageFactory::generated_factory()->GetPrototype(
            descriptor);
    ASSERT_NE(prototype, nullptr) << "no generated class";
    std::unique_ptr<Message> original(prototype->New());
    EXPECT_EQ(FillAllFields(original.get(), 0), descriptor->field_count());

    std::string wire;
    ASSERT_TRUE(original->SerializeToString(&wire));
    if (descriptor->field_count() > 0) {
      EXPECT_FALSE(wire.empty());
    }
    std::unique_ptr<Message> parsed(prototype->New());
    ASSERT_TRUE(parsed->ParseFromString(wire));
    EXPECT_TRUE(
        google::protobuf::util::MessageDifferencer::Equals(*original, *parsed))
        << "original:\n"
        << original->DebugString() << "parsed:\n"
        << parsed->DebugString();
  }
}

TEST(CoordinatorProtoTest, EveryMessageRoundTrips) {
  ExpectEveryMessageRoundTrips(v1::RunConfig::descriptor()->file());
}

TEST(CoordinatorProtoTest, HealthMessagesRoundTrip) {
  ExpectEveryMessageRoundTrips(
      grpc::health::v1::HealthCheckRequest::descriptor()->file());
}

TEST(CoordinatorProtoTest, InfinityNormTypeSurvivesTheWire) {
  v1::RunConfig config;
  config.set_norm_type(std::numeric_limits<double>::infinity());
  v1::RunConfig parsed;
  ASSERT_TRUE(parsed.ParseFromString(config.SerializeAsString()));
  EXPECT_EQ(parsed.norm_type(), std::numeric_limits<double>::infinity());
}

TEST(CoordinatorProtoTest, ServiceHasEveryRpc) {
  const auto* service = v1::Coordinator::service_full_name();
  EXPECT_STREQ(service, "gradnorm.v1.Coordinator");
  const auto* descriptor =
      v1::RunConfig::descriptor()->file()->FindServiceByName("Coordinator");
  ASSERT_NE(descriptor, nullptr);
  std::set<std::string> methods;
  for (int i = 0; i < descriptor->method_count(); ++i) {
    methods.insert(descriptor->method(i)->name());
  }
  EXPECT_EQ(methods, (std::set<std::string>{
                         "RegisterRun", "Report", "ReportStream", "ListRuns",
                         "GetRun", "GetHistory", "GetSummary", "WatchRun",
                         "FinishRun", "DeleteRun"}));
  EXPECT_TRUE(descriptor->FindMethodByName("WatchRun")->server_streaming());
  EXPECT_TRUE(descriptor->FindMethodByName("ReportStream")->client_streaming());
  EXPECT_TRUE(descriptor->FindMethodByName("ReportStream")->server_streaming());
  EXPECT_FALSE(descriptor->FindMethodByName("Report")->server_streaming());

  // The generated stub and callback service expose each rpc.
  using Stub = v1::Coordinator::Stub;
  EXPECT_NE(&Stub::RegisterRun, nullptr);
  EXPECT_NE(&Stub::Report, nullptr);
  EXPECT_NE(&Stub::ListRuns, nullptr);
  EXPECT_NE(&Stub::GetRun, nullptr);
  EXPECT_NE(&Stub::GetHistory, nullptr);
  EXPECT_NE(&Stub::GetSummary, nullptr);
  EXPECT_NE(&Stub::WatchRun, nullptr);
  static_assert(
      std::is_base_of<grpc::Service, v1::Coordinator::CallbackService>::value,
      "the callback service is a grpc::Service");
}

TEST(CoordinatorProtoTest, GeneratedMockStubAnswersReport) {
  v1::MockCoordinatorStub stub;
  v1::ReportResponse canned;
  canned.mutable_result()->set_total_norm(5.477225575051661);
  canned.mutable_result()->set_action(v1::ACTION_CLIP);
  EXPECT_CALL(stub, Report(testing::_, testing::_, testing::_))
      .WillOnce(testing::DoAll(testing::SetArgPointee<2>(canned),
                               testing::Return(grpc::Status::OK)));
  grpc::ClientContext context;
  v1::ReportRequest request;
  v1::ReportResponse response;
  ASSERT_TRUE(stub.Report(&context, request, &response).ok());
  EXPECT_EQ(response.result().total_norm(), 5.477225575051661);
  EXPECT_EQ(response.result().action(), v1::ACTION_CLIP);
}

}  // namespace
}  // namespace gradnorm
