#include "tests/demo/synthetic_model.h"

#include <cmath>
#include <cstring>
#include <limits>

namespace gradnorm {
namespace demo {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// The parameter that holds the planted NaN, and where.
constexpr int kNanParam = 3;
constexpr int64_t kNanIndex = 7;

}  // namespace

uint16_t FloatToBf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  if (std::isnan(value)) return static_cast<uint16_t>((bits >> 16) | 0x40);
  const uint32_t rounding = 0x7fff + ((bits >> 16) & 1);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float Bf16ToFloat(uint16_t bits) {
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &wide, sizeof(value));
  return value;
}

GradTensor Shard::View() {
  GradTensor view;
  if (dtype == DType::kBFloat16) {
    view = GradTensor::Cpu(half_values.data(),
                           static_cast<int64_t>(half_values.size()), dtype);
  } else {
    view = GradTensor::Cpu(values.data(), static_cast<int64_t>(values.size()));
  }
  view.tp_replicated = tp_replicated;
  return view;
}

SyntheticModel SyntheticModel::Gpt(int layers, int hidden, int vocab, int jobs,
                                   uint64_t seed, Plan plan) {
  std::vector<ParamSpec> params;
  auto add = [&](std::string name, int64_t rows, int64_t cols, DType dtype,
                 bool replicated, int job) {
    params.push_back(
        ParamSpec{std::move(name), rows, cols, dtype, replicated, job});
  };
  add("wte", vocab, hidden, DType::kFloat32, false, 0);
  add("wpe", 256, hidden, DType::kFloat32, false, 0);
  for (int layer = 0; layer < layers; ++layer) {
    const int job =
        static_cast<int>(static_cast<int64_t>(layer) * jobs / layers);
    const std::string h = "h." + std::to_string(layer) + ".";
    add(h + "ln_1.weight", 1, hidden, DType::kFloat32, true, job);
    add(h + "ln_1.bias", 1, hidden, DType::kFloat32, true, job);
    add(h + "attn.c_attn.weight", hidden, 3 * hidden, DType::kBFloat16, false,
        job);
    add(h + "attn.c_attn.bias", 1, 3 * hidden, DType::kFloat32, true, job);
    add(h + "attn.c_proj.weight", hidden, hidden, DType::kBFloat16, false, job);
    add(h + "attn.c_proj.bias", 1, hidden, DType::kFloat32, true, job);
    add(h + "ln_2.weight", 1, hidden, DType::kFloat32, true, job);
    add(h + "ln_2.bias", 1, hidden, DType::kFloat32, true, job);
    add(h + "mlp.c_fc.weight", hidden, 4 * hidden, DType::kBFloat16, false,
        job);
    add(h + "mlp.c_fc.bias", 1, 4 * hidden, DType::kFloat32, true, job);
    add(h + "mlp.c_proj.weight", 4 * hidden, hidden, DType::kBFloat16, false,
        job);
    add(h + "mlp.c_proj.bias", 1, hidden, DType::kFloat32, true, job);
  }
  add("ln_f.weight", 1, hidden, DType::kFloat32, true, jobs - 1);
  add("ln_f.bias", 1, hidden, DType::kFloat32, true, jobs - 1);
  return SyntheticModel(std::move(params), seed, plan);
}

int64_t SyntheticModel::total_elements() const {
  int64_t total = 0;
  for (const ParamSpec& param : params_) total += param.numel();
  return total;
}

std::vector<Shard> SyntheticModel::ShardsOf(const RankPlace& place) const {
  std::vector<Shard> shards;
  for (int p = 0; p < static_cast<int>(params_.size()); ++p) {
    const ParamSpec& spec = params_[p];
    if (spec.job != place.job) continue;
    // The TP slice: whole tensor when replicated, else a column range.
    std::vector<int64_t> slice;
    if (spec.tp_replicated || place.tp_size == 1) {
      slice.resize(spec.numel());
      for (int64_t i = 0; i < spec.numel(); ++i) slice[i] = i;
    } else {
      const int64_t c0 = spec.cols * place.tp_rank / place.tp_size;
      const int64_t c1 = spec.cols * (place.tp_rank + 1) / place.tp_size;
      slice.reserve(spec.rows * (c1 - c0));
      for (int64_t r = 0; r < spec.rows; ++r) {
        for (int64_t c = c0; c < c1; ++c) slice.push_back(r * spec.cols + c);
      }
    }
    const int64_t n = static_cast<int64_t>(slice.size());
    const int64_t b = n * place.dp_rank / place.dp_size;
    const int64_t e = n * (place.dp_rank + 1) / place.dp_size;
    Shard shard;
    shard.param = p;
    shard.dtype = spec.dtype;
    shard.tp_replicated = spec.tp_replicated;
    shard.indices.assign(slice.begin() + b, slice.begin() + e);
    if (spec.dtype == DType::kBFloat16) {
      shard.half_values.resize(e - b);
    } else {
      shard.values.resize(e - b);
    }
    shards.push_back(std::move(shard));
  }
  return shards;
}

double SyntheticModel::Value(int step, int param, int64_t index) const {
  if (step == plan_.nan_step && param == kNanParam && index == kNanIndex) {
    return std::numeric_limits<double>::quiet_NaN();
  }
  const uint64_t key =
      SplitMix64(seed_ ^ SplitMix64((static_cast<uint64_t>(step) << 40) ^
                                    (static_cast<uint64_t>(param) << 32) ^
                                    static_cast<uint64_t>(index)));
  // Uniform in [-1, 1) with 53 random bits.
  const double u = static_cast<double>(key >> 11) * 0x1.0p-52 - 1.0;
  // A slowly drifting scale, different per parameter.
  double scale = 0.02 * (1.0 + 0.5 * std::sin(0.21 * step)) *
                 (1.0 + step / 60.0) * (1.0 + 0.1 * (param % 5));
  if (step == plan_.spike_step) scale *= plan_.spike_factor;
  const float value = static_cast<float>(u * scale);
  if (params_[param].dtype == DType::kBFloat16) {
    return Bf16ToFloat(FloatToBf16(value));
  }
  return value;
}

void SyntheticModel::Fill(int step, Shard* shard) const {
  for (size_t i = 0; i < shard->indices.size(); ++i) {
    const double value = Value(step, shard->param, shard->indices[i]);
    if (shard->dtype == DType::kBFloat16) {
      shard->half_values[i] = FloatToBf16(static_cast<float>(value));
    } else {
      shard->values[i] = static_cast<float>(value);
    }
  }
}

long double SyntheticModel::FullPartial(int step, double p) const {
  long double acc = 0;
  bool nan = false;
  for (int param = 0; param < static_cast<int>(params_.size()); ++param) {
    for (int64_t i = 0; i < params_[param].numel(); ++i) {
      const long double a =
          std::fabs(static_cast<long double>(Value(step, param, i)));
      if (std::isnan(a)) {
        nan = true;
      } else if (std::isinf(p)) {
        acc = std::max(acc, a);
      } else if (p == 2.0) {
        acc += a * a;
      } else {
        acc += std::pow(a, static_cast<long double>(p));
      }
    }
  }
  return nan ? std::numeric_limits<long double>::quiet_NaN() : acc;
}

}  // namespace demo
}  // namespace gradnorm
