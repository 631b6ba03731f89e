// The memory-bandwidth limit the kernel benchmarks compare against, measured in
// the same process: the simplest loops that touch the same number of bytes,
// with all threads, SIMD and unrolling, best of several runs.
//
//   BandwidthProbe probe(bytes);
//   double read_limit = probe.ReadBytesPerSecond(threads);   // a plain sum
//   double rw_limit = probe.ReadWriteBytesPerSecond(threads); // in-place add
//   double seconds = probe.ReadOnce(threads);  // one pass, for interleaving
//
// Thread-safety: one probe per thread; it owns its buffer.
#ifndef GRADNORM_KERNELS_BENCHMARK_BANDWIDTH_PROBE_H_
#define GRADNORM_KERNELS_BENCHMARK_BANDWIDTH_PROBE_H_

#include <cstddef>
#include <memory>

namespace gradnorm {
namespace kernels_internal {

class BandwidthProbe {
 public:
  // A buffer of `bytes` bytes (rounded up to whole floats), touched once so
  // its pages exist.
  explicit BandwidthProbe(size_t bytes);

  // Bytes read per second by a SIMD sum of fp32 over the buffer (best of
  // `runs`). threads 0: one per hardware thread.
  double ReadBytesPerSecond(int threads, int runs = 7);

  // Bytes moved per second (each byte read and written, counted once, as the
  // clip benchmark counts them) by an in-place SIMD add (best of `runs`).
  double ReadWriteBytesPerSecond(int threads, int runs = 7);

  // One pass of each probe, in seconds (benchmarks interleave these with the
  // kernel under test so both see the same machine load).
  double ReadOnce(int threads);
  double ReadWriteOnce(int threads);

  size_t bytes() const { return floats_ * sizeof(float); }

  // The sum from the last read run (keeps the compiler from dropping it).
  double last_sum() const { return last_sum_; }

 private:
  size_t floats_;
  std::unique_ptr<float[]> data_;
  double last_sum_ = 0.0;
  int read_write_runs_ = 0;
};

}  // namespace kernels_internal
}  // namespace gradnorm

#endif  // GRADNORM_KERNELS_BENCHMARK_BANDWIDTH_PROBE_H_
