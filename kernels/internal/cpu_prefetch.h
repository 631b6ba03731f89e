// Software prefetching for the CPU kernels: a stream prefetched a fixed
// distance ahead of the line being read, and a window of small blocks (tensors
// or chunks of a few KiB) prefetched ahead of the one being worked on.
//
//   WithPrefetch(cursor, count, [&](size_t k, const Cursor& block) { ... });
//
// Plain functions, no SIMD: every Highway target of the kernels calls them.
#ifndef GRADNORM_KERNELS_INTERNAL_CPU_PREFETCH_H_
#define GRADNORM_KERNELS_INTERNAL_CPU_PREFETCH_H_

#include <cstddef>
#include <cstdint>

namespace gradnorm {
namespace kernels_internal {

// Software prefetch of a stream, kStreamPrefetchBytes ahead of the line being
// read, into L2. The hardware prefetcher alone keeps too few lines in flight
// for the fp64 loops, which issue loads more slowly than a plain sum does
// (//kernels/benchmark:partial_norm_benchmark shows the difference). Nothing
// past `end` (the end of the tensor) is prefetched, so small tensors do not
// pull in their neighbours' memory.
constexpr int64_t kStreamPrefetchBytes = int64_t{6} << 10;

inline void PrefetchAhead(const void* at, size_t bytes, const void* end) {
  const char* ahead = static_cast<const char*>(at) + kStreamPrefetchBytes;
  if (ahead >= static_cast<const char*>(end)) return;
  for (size_t off = 0; off < bytes; off += 64) {
    __builtin_prefetch(ahead + off, /*rw=*/0, /*locality=*/2);
  }
}

// Gradients of a few KiB (biases, norms, small layers) are separate heap
// blocks of about a page each. The hardware prefetcher stops at page
// boundaries and needs several misses to start again on the next block, so a
// run of them streams at half the bandwidth of one large tensor. The kernels
// therefore prefetch, into L2, every line of the small blocks within
// kPrefetchWindowBytes after the one being worked on, which keeps several
// blocks' lines in flight. (Into L2: prefetches into L1 are limited by its
// few miss buffers, and are slower than none.) Blocks larger than
// kPrefetchMaxBytes are streamed by the hardware prefetcher and only end the
// window.
constexpr int64_t kPrefetchWindowBytes = int64_t{16} << 10;
constexpr int64_t kPrefetchMaxBytes = int64_t{16} << 10;

inline void PrefetchLines(const void* data, int64_t bytes) {
  const uintptr_t begin = reinterpret_cast<uintptr_t>(data);
  const uintptr_t end = begin + static_cast<uintptr_t>(bytes);
  for (uintptr_t line = begin & ~uintptr_t{63}; line < end; line += 64) {
    __builtin_prefetch(reinterpret_cast<const void*>(line), /*rw=*/0,
                       /*locality=*/2);  // prefetcht1: into L2
  }
}

// Runs work(k, block) for the blocks k in [0, count) of a sequence, keeping
// the window after block k prefetched. `blocks` is a forward cursor at block
// 0: Settle() moves it onto the block it stands for, then data() and bytes()
// describe that block; Next() moves to the following one.
template <class Cursor, class Work>
inline void WithPrefetch(Cursor blocks, size_t count, const Work& work) {
  Cursor ahead = blocks;
  size_t next = 0;        // the first block not yet taken into the window
  int64_t in_window = 0;  // bytes of blocks k+1 .. next-1
  for (size_t k = 0; k < count; ++k) {
    blocks.Settle();
    if (next > k) {
      in_window -= blocks.bytes();
    } else {
      ++next;
      ahead.Next();
    }
    while (next < count && in_window < kPrefetchWindowBytes) {
      ahead.Settle();
      const int64_t bytes = ahead.bytes();
      if (bytes <= kPrefetchMaxBytes) PrefetchLines(ahead.data(), bytes);
      in_window += bytes;
      ++next;
      ahead.Next();
    }
    work(k, blocks);
    blocks.Next();
  }
}

}  // namespace kernels_internal
}  // namespace gradnorm

#endif  // GRADNORM_KERNELS_INTERNAL_CPU_PREFETCH_H_
