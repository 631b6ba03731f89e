#include "kernels/benchmark/bandwidth_probe.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

#include "kernels/internal/thread_pool.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/benchmark/bandwidth_probe.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace gradnorm {
namespace kernels_internal {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

float SumFloats(const float* HWY_RESTRICT p, int64_t n) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  auto a0 = hn::Zero(d), a1 = hn::Zero(d);
  int64_t i = 0;
  for (; i + 2 * lanes <= n; i += 2 * lanes) {
    const auto v0 = hn::LoadU(d, p + i);
    const auto v1 = hn::LoadU(d, p + i + lanes);
    a0 = hn::Add(a0, v0);
    a1 = hn::Add(a1, v1);
  }
  a0 = hn::Add(a0, a1);
  float sum = hn::GetLane(hn::SumOfLanes(d, a0));
  for (; i < n; ++i) sum += p[i];
  return sum;
}

void AddInPlace(float* HWY_RESTRICT p, int64_t n, float x) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const auto v = hn::Set(d, x);
  int64_t i = 0;
  for (; i + 2 * lanes <= n; i += 2 * lanes) {
    const auto r0 = hn::Add(hn::LoadU(d, p + i), v);
    const auto r1 = hn::Add(hn::LoadU(d, p + i + lanes), v);
    hn::StoreU(r0, d, p + i);
    hn::StoreU(r1, d, p + i + lanes);
  }
  for (; i < n; ++i) p[i] += x;
}

// NOLINTNEXTLINE(google-readability-namespace-comments)
}  // namespace HWY_NAMESPACE
}  // namespace kernels_internal
}  // namespace gradnorm
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace gradnorm {
namespace kernels_internal {

HWY_EXPORT(SumFloats);
HWY_EXPORT(AddInPlace);

namespace {

// Work per task: about eight tasks per thread, 256 KiB to 4 MiB each, as the
// kernels size theirs, so the probe pays no more scheduling than they do.
int64_t PieceFloats(int64_t floats, int parallelism) {
  return std::clamp<int64_t>(floats / (int64_t{8} * parallelism),
                             int64_t{1} << 16, int64_t{1} << 20);
}

template <typename F>
double BestSeconds(int runs, F&& f) {
  double best = 1e300;
  for (int r = 0; r < runs; ++r) {
    const auto start = std::chrono::steady_clock::now();
    f();
    const std::chrono::duration<double> elapsed =
        std::chrono::steady_clock::now() - start;
    best = std::min(best, elapsed.count());
  }
  return best;
}

}  // namespace

BandwidthProbe::BandwidthProbe(size_t bytes)
    : floats_((bytes + sizeof(float) - 1) / sizeof(float)),
      data_(new float[floats_]) {
  std::fill(data_.get(), data_.get() + floats_, 1.0f);
}

double BandwidthProbe::ReadOnce(int threads) {
  const int parallelism = threads > 0 ? threads : ThreadPool::HardwareThreads();
  const int64_t kPieceFloats =
      PieceFloats(static_cast<int64_t>(floats_), parallelism);
  const int64_t pieces =
      (static_cast<int64_t>(floats_) + kPieceFloats - 1) / kPieceFloats;
  std::vector<float> partial(pieces);
  const double seconds = BestSeconds(1, [&] {
    ThreadPool::Default().ParallelFor(pieces, parallelism, [&](int64_t i) {
      const int64_t begin = i * kPieceFloats;
      const int64_t n = std::min<int64_t>(
          kPieceFloats, static_cast<int64_t>(floats_) - begin);
      partial[i] = HWY_DYNAMIC_DISPATCH(SumFloats)(data_.get() + begin, n);
    });
  });
  last_sum_ = 0;
  for (float f : partial) last_sum_ += f;
  return seconds;
}

double BandwidthProbe::ReadWriteOnce(int threads) {
  const int parallelism = threads > 0 ? threads : ThreadPool::HardwareThreads();
  const int64_t kPieceFloats =
      PieceFloats(static_cast<int64_t>(floats_), parallelism);
  const int64_t pieces =
      (static_cast<int64_t>(floats_) + kPieceFloats - 1) / kPieceFloats;
  // Alternate +1/-1 so the buffer's values stay put.
  const float x = (read_write_runs_++ % 2 == 0) ? 1.0f : -1.0f;
  return BestSeconds(1, [&] {
    ThreadPool::Default().ParallelFor(pieces, parallelism, [&](int64_t i) {
      const int64_t begin = i * kPieceFloats;
      const int64_t n = std::min<int64_t>(
          kPieceFloats, static_cast<int64_t>(floats_) - begin);
      HWY_DYNAMIC_DISPATCH(AddInPlace)(data_.get() + begin, n, x);
    });
  });
}

double BandwidthProbe::ReadBytesPerSecond(int threads, int runs) {
  double best = 1e300;
  for (int r = 0; r < runs; ++r) best = std::min(best, ReadOnce(threads));
  return static_cast<double>(bytes()) / best;
}

double BandwidthProbe::ReadWriteBytesPerSecond(int threads, int runs) {
  double best = 1e300;
  for (int r = 0; r < runs; ++r) best = std::min(best, ReadWriteOnce(threads));
  return static_cast<double>(bytes()) / best;
}

}  // namespace kernels_internal
}  // namespace gradnorm
#endif  // HWY_ONCE
