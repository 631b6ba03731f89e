#include "server/http/proto_json.h"

#include <cmath>
#include <cstdint>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/descriptor.h"
#include "server/core/number_format.h"

namespace gradnorm {
namespace server {
namespace {

using ::google::protobuf::FieldDescriptor;
using ::google::protobuf::Message;
using ::google::protobuf::Reflection;

constexpr int64_t kExactInDouble = int64_t{1} << 53;

void AppendDouble(double v, std::string* out) {
  if (std::isnan(v)) {
    out->append("\"NaN\"");
  } else if (std::isinf(v)) {
    out->append(v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
  } else {
    out->append(FormatNumber(v));
  }
}

void AppendInt64(int64_t v, std::string* out) {
  if (v >= -kExactInDouble && v <= kExactInDouble) {
    absl::StrAppend(out, v);
  } else {
    absl::StrAppend(out, "\"", v, "\"");
  }
}

void AppendUint64(uint64_t v, std::string* out) {
  if (v <= static_cast<uint64_t>(kExactInDouble)) {
    absl::StrAppend(out, v);
  } else {
    absl::StrAppend(out, "\"", v, "\"");
  }
}

void AppendMessage(const Message& message, std::string* out);

void AppendValue(const Message& message, const FieldDescriptor* field,
                 int index, std::string* out) {
  const Reflection* r = message.GetReflection();
  const bool repeated = field->is_repeated();
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      absl::StrAppend(out, repeated ? r->GetRepeatedInt32(message, field, index)
                                    : r->GetInt32(message, field));
      break;
    case FieldDescriptor::CPPTYPE_UINT32:
      absl::StrAppend(out, repeated
                               ? r->GetRepeatedUInt32(message, field, index)
                               : r->GetUInt32(message, field));
      break;
    case FieldDescriptor::CPPTYPE_INT64:
      AppendInt64(repeated ? r->GetRepeatedInt64(message, field, index)
                           : r->GetInt64(message, field),
                  out);
      break;
    case FieldDescriptor::CPPTYPE_UINT64:
      AppendUint64(repeated ? r->GetRepeatedUInt64(message, field, index)
                            : r->GetUInt64(message, field),
                   out);
      break;
    case FieldDescriptor::CPPTYPE_DOUBLE:
      AppendDouble(repeated ? r->GetRepeatedDouble(message, field, index)
                            : r->GetDouble(message, field),
                   out);
      break;
    case FieldDescriptor::CPPTYPE_FLOAT:
      AppendDouble(repeated ? r->GetRepeatedFloat(message, field, index)
                            : r->GetFloat(message, field),
                   out);
      break;
    case FieldDescriptor::CPPTYPE_BOOL:
      out->append((repeated ? r->GetRepeatedBool(message, field, index)
                            : r->GetBool(message, field))
                      ? "true"
                      : "false");
      break;
    case FieldDescriptor::CPPTYPE_ENUM: {
      const int number = repeated
                             ? r->GetRepeatedEnumValue(message, field, index)
                             : r->GetEnumValue(message, field);
      const auto* value = field->enum_type()->FindValueByNumber(number);
      if (value != nullptr) {
        out->append(JsonString(value->name()));
      } else {
        absl::StrAppend(out, number);
      }
      break;
    }
    case FieldDescriptor::CPPTYPE_STRING:
      out->append(JsonString(repeated
                                 ? r->GetRepeatedString(message, field, index)
                                 : r->GetString(message, field)));
      break;
    case FieldDescriptor::CPPTYPE_MESSAGE:
      AppendMessage(repeated ? r->GetRepeatedMessage(message, field, index)
                             : r->GetMessage(message, field),
                    out);
      break;
  }
}

void AppendMessage(const Message& message, std::string* out) {
  const auto* descriptor = message.GetDescriptor();
  const Reflection* r = message.GetReflection();
  out->push_back('{');
  bool first = true;
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const FieldDescriptor* field = descriptor->field(i);
    // A oneof member that is not the one set is left out; proto3 JSON has no
    // default for it.
    if (field->real_containing_oneof() != nullptr &&
        !r->HasField(message, field)) {
      continue;
    }
    if (!first) out->push_back(',');
    first = false;
    absl::StrAppend(out, JsonString(field->name()), ":");
    if (field->is_repeated()) {
      out->push_back('[');
      const int n = r->FieldSize(message, field);
      for (int k = 0; k < n; ++k) {
        if (k > 0) out->push_back(',');
        AppendValue(message, field, k, out);
      }
      out->push_back(']');
    } else {
      AppendValue(message, field, 0, out);
    }
  }
  out->push_back('}');
}

}  // namespace

std::string JsonString(const std::string& text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          out += absl::StrFormat("\\u%04x", c);
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  out.push_back('"');
  return out;
}

std::string ToJson(const Message& message) {
  std::string out;
  AppendMessage(message, &out);
  return out;
}

}  // namespace server
}  // namespace gradnorm
