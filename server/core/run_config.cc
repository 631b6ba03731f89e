#include "server/core/run_config.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/norm_math.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "server/core/number_format.h"

namespace gradnorm {
namespace server {
namespace {

using ::google::protobuf::FieldDescriptor;
using ::google::protobuf::Message;
using ::google::protobuf::OneofDescriptor;
using ::google::protobuf::Reflection;

bool IsRunIdChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
         (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

absl::Status OutOfRange(absl::string_view field, double value,
                        absl::string_view expected) {
  return absl::InvalidArgumentError(absl::StrCat("run config field ", field,
                                                 " is ", FormatNumber(value),
                                                 "; expected ", expected));
}

absl::Status NormalizeAutoClip(v1::AutoClip* auto_clip) {
  double percentile = auto_clip->percentile();
  if (percentile == 0) percentile = kDefaultAutoClipPercentile;
  if (!(percentile > 0 && percentile <= 100)) {
    return OutOfRange("clip_policy.auto_clip.percentile", percentile,
                      "a percentile in (0, 100] (0 means the default 10)");
  }
  auto_clip->set_percentile(percentile);
  if (auto_clip->history_length() == 0) {
    auto_clip->set_history_length(kDefaultAutoClipHistoryLength);
  }
  if (auto_clip->history_length() > kMaxHistoryLength) {
    return OutOfRange("clip_policy.auto_clip.history_length",
                      auto_clip->history_length(),
                      absl::StrCat("at most ", kMaxHistoryLength));
  }
  if (auto_clip->warmup_steps() == 0) {
    auto_clip->set_warmup_steps(kDefaultAutoClipWarmupSteps);
  }
  return absl::OkStatus();
}

absl::Status NormalizeZClip(v1::ZClip* zclip) {
  double alpha = zclip->alpha() == 0 ? kDefaultZClipAlpha : zclip->alpha();
  if (!(alpha > 0 && alpha < 1)) {
    return OutOfRange(
        "clip_policy.zclip.alpha", alpha,
        "a smoothing factor in (0, 1) (0 means the default 0.97)");
  }
  zclip->set_alpha(alpha);
  double z = zclip->z_threshold() == 0 ? kDefaultZClipZThreshold
                                       : zclip->z_threshold();
  if (!(z > 0 && std::isfinite(z))) {
    return OutOfRange("clip_policy.zclip.z_threshold", z,
                      "a finite value > 0 (0 means the default 2.5)");
  }
  zclip->set_z_threshold(z);
  if (zclip->warmup_steps() == 0) {
    zclip->set_warmup_steps(kDefaultZClipWarmupSteps);
  }
  return absl::OkStatus();
}

absl::Status NormalizeSpikeRule(v1::SpikeRule* rule) {
  double sigma = rule->sigma() == 0 ? kDefaultSpikeSigma : rule->sigma();
  if (!(sigma > 0 && std::isfinite(sigma))) {
    return OutOfRange("spike_rule.sigma", sigma,
                      "a finite value > 0 (0 means the default 6)");
  }
  rule->set_sigma(sigma);
  if (rule->window() == 0) rule->set_window(kDefaultSpikeWindow);
  if (rule->window() > kMaxSpikeWindow) {
    return OutOfRange("spike_rule.window", rule->window(),
                      absl::StrCat("at most ", kMaxSpikeWindow));
  }
  if (rule->warmup_steps() == 0) {
    rule->set_warmup_steps(kDefaultSpikeWarmupSteps);
  }
  if (rule->warmup_steps() > rule->window()) {
    return OutOfRange(
        "spike_rule.warmup_steps", rule->warmup_steps(),
        absl::StrCat("at most spike_rule.window (", rule->window(),
                     ") since the window never holds more totals"));
  }
  return absl::OkStatus();
}

std::string FieldValue(const Message& message, const FieldDescriptor* field) {
  const Reflection* reflection = message.GetReflection();
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_DOUBLE:
      return FormatNumber(reflection->GetDouble(message, field));
    case FieldDescriptor::CPPTYPE_FLOAT:
      return FormatNumber(reflection->GetFloat(message, field));
    case FieldDescriptor::CPPTYPE_INT32:
      return absl::StrCat(reflection->GetInt32(message, field));
    case FieldDescriptor::CPPTYPE_INT64:
      return absl::StrCat(reflection->GetInt64(message, field));
    case FieldDescriptor::CPPTYPE_UINT32:
      return absl::StrCat(reflection->GetUInt32(message, field));
    case FieldDescriptor::CPPTYPE_UINT64:
      return absl::StrCat(reflection->GetUInt64(message, field));
    case FieldDescriptor::CPPTYPE_BOOL:
      return reflection->GetBool(message, field) ? "true" : "false";
    case FieldDescriptor::CPPTYPE_ENUM:
      return std::string(reflection->GetEnum(message, field)->name());
    case FieldDescriptor::CPPTYPE_STRING:
      return absl::StrCat("\"", reflection->GetString(message, field), "\"");
    case FieldDescriptor::CPPTYPE_MESSAGE:
      return reflection->GetMessage(message, field).ShortDebugString();
  }
  return "?";
}

// Walks both messages field by field (they share a type) so that a future
// RunConfig field takes part in the comparison without code here.
void DiffMessages(const Message& stored, const Message& requested,
                  const std::string& prefix, std::vector<std::string>* out) {
  const auto* descriptor = stored.GetDescriptor();
  const Reflection* reflection = stored.GetReflection();
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const FieldDescriptor* field = descriptor->field(i);
    const OneofDescriptor* oneof = field->real_containing_oneof();
    if (oneof != nullptr) {
      const FieldDescriptor* a =
          reflection->GetOneofFieldDescriptor(stored, oneof);
      const FieldDescriptor* b =
          reflection->GetOneofFieldDescriptor(requested, oneof);
      if (a != b) {
        // Report a changed oneof case once, at its first field.
        if (oneof->field(0) == field) {
          out->push_back(absl::StrCat(prefix, oneof->name(), ": ",
                                      a ? a->name() : "unset", " -> ",
                                      b ? b->name() : "unset"));
        }
        continue;
      }
      if (a != field) continue;
    }
    const std::string path = absl::StrCat(prefix, field->name());
    if (field->is_repeated()) {
      // RunConfig has no repeated fields; should one appear, a changed
      // length is still reported.
      if (reflection->FieldSize(stored, field) !=
          reflection->FieldSize(requested, field)) {
        out->push_back(absl::StrCat(
            path, ": ", reflection->FieldSize(stored, field), " elements -> ",
            reflection->FieldSize(requested, field), " elements"));
      }
      continue;
    }
    if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      DiffMessages(reflection->GetMessage(stored, field),
                   reflection->GetMessage(requested, field),
                   absl::StrCat(path, "."), out);
      continue;
    }
    std::string a = FieldValue(stored, field);
    std::string b = FieldValue(requested, field);
    if (a != b) out->push_back(absl::StrCat(path, ": ", a, " -> ", b));
  }
}

}  // namespace

absl::Status ValidateRunId(absl::string_view run_id) {
  if (run_id.empty()) {
    return absl::InvalidArgumentError(
        "run_id is empty; expected 1 to 128 characters of [A-Za-z0-9._-]");
  }
  if (run_id.size() > kMaxRunIdLength) {
    return absl::InvalidArgumentError(absl::StrCat(
        "run_id is ", run_id.size(),
        " characters long; expected 1 to 128 characters of [A-Za-z0-9._-]"));
  }
  for (size_t i = 0; i < run_id.size(); ++i) {
    if (!IsRunIdChar(run_id[i])) {
      unsigned char c = static_cast<unsigned char>(run_id[i]);
      std::string shown =
          (c >= 0x20 && c < 0x7f)
              ? absl::StrCat("'", std::string(1, c), "'")
              : absl::StrCat("byte 0x", absl::Hex(c, absl::kZeroPad2));
      return absl::InvalidArgumentError(
          absl::StrCat("run_id has ", shown, " at position ", i,
                       "; expected only characters of [A-Za-z0-9._-]"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::RunConfig> NormalizeRunConfig(const v1::RunConfig& config,
                                                 uint32_t max_participants) {
  v1::RunConfig out = config;
  double p = out.norm_type() == 0 ? kDefaultNormType : out.norm_type();
  if (!IsValidNormType(p)) {
    return OutOfRange("norm_type", p,
                      "p > 0, or +Infinity for the inf-norm (0 means the "
                      "default 2)");
  }
  out.set_norm_type(p);
  double max_norm = out.max_norm();
  if (!(max_norm >= 0) || !std::isfinite(max_norm)) {
    return OutOfRange("max_norm", max_norm, "a finite value >= 0");
  }
  out.set_max_norm(max_norm + 0.0);  // -0 reads back as 0.
  if (out.participants() < 1) {
    return OutOfRange("participants", out.participants(),
                      absl::StrCat("between 1 and ", max_participants));
  }
  // A valid count beyond what this server allows: its limit, like the
  // limits on runs and open rounds.
  if (out.participants() > max_participants) {
    return absl::ResourceExhaustedError(
        absl::StrCat("run config field participants is ", out.participants(),
                     "; this coordinator allows at most ", max_participants,
                     " (--max_participants)"));
  }
  switch (out.clip_policy().policy_case()) {
    case v1::ClipPolicy::POLICY_NOT_SET:
      out.mutable_clip_policy()->mutable_static_clip();
      break;
    case v1::ClipPolicy::kStaticClip:
      break;
    case v1::ClipPolicy::kAutoClip: {
      absl::Status status =
          NormalizeAutoClip(out.mutable_clip_policy()->mutable_auto_clip());
      if (!status.ok()) return status;
      break;
    }
    case v1::ClipPolicy::kZclip: {
      absl::Status status =
          NormalizeZClip(out.mutable_clip_policy()->mutable_zclip());
      if (!status.ok()) return status;
      break;
    }
  }
  // An adaptive policy clips at max_norm until its warm-up ends; 0 (also an
  // unset field) would zero every gradient of those steps.
  if (out.max_norm() == 0 &&
      out.clip_policy().policy_case() != v1::ClipPolicy::kStaticClip) {
    return OutOfRange("max_norm", 0,
                      "> 0 with an adaptive clip policy (AutoClip, ZClip): it "
                      "is the threshold of the policy's warm-up steps");
  }
  absl::Status spike = NormalizeSpikeRule(out.mutable_spike_rule());
  if (!spike.ok()) return spike;
  switch (out.nonfinite_policy()) {
    case v1::NON_FINITE_POLICY_UNSPECIFIED:
      out.set_nonfinite_policy(v1::NON_FINITE_POLICY_SKIP);
      break;
    case v1::NON_FINITE_POLICY_SKIP:
    case v1::NON_FINITE_POLICY_ERROR:
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "run config field nonfinite_policy is ",
          static_cast<int>(out.nonfinite_policy()),
          "; expected NON_FINITE_POLICY_SKIP (1) or NON_FINITE_POLICY_ERROR "
          "(2)"));
  }
  if (out.round_timeout_ms() == 0)
    out.set_round_timeout_ms(kDefaultRoundTimeoutMs);
  if (out.round_timeout_ms() > kMaxRoundTimeoutMs) {
    return absl::InvalidArgumentError(absl::StrCat(
        "run config field round_timeout_ms is ", out.round_timeout_ms(),
        "; expected at most ", kMaxRoundTimeoutMs, " (one day)"));
  }
  return out;
}

std::vector<std::string> DiffRunConfigs(const v1::RunConfig& stored,
                                        const v1::RunConfig& requested) {
  std::vector<std::string> out;
  DiffMessages(stored, requested, "", &out);
  return out;
}

}  // namespace server
}  // namespace gradnorm
