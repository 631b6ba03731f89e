#include "kernels/internal/exact_block_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#if defined(__x86_64__)
#include <xmmintrin.h>
#endif
#include "kernels/internal/half.h"

namespace gradnorm {
namespace kernels_internal {
namespace {

// Elements of one dtype as raw bits, with their exact fp64 values.
struct Block {
  DType dtype;
  std::vector<uint32_t> fp32;
  std::vector<uint16_t> bits16;
  std::vector<double> values;

  void Add(double v) {
    if (dtype == DType::kFloat32) {
      const float f = static_cast<float>(v);
      uint32_t b;
      std::memcpy(&b, &f, 4);
      fp32.push_back(b);
      values.push_back(f);
    } else if (dtype == DType::kBFloat16) {
      const uint16_t b =
          half_internal::FloatToBFloat16Bits(static_cast<float>(v));
      bits16.push_back(b);
      values.push_back(half_internal::BFloat16BitsToFloat(b));
    } else {
      const uint16_t b = half_internal::FloatToHalfBits(static_cast<float>(v));
      bits16.push_back(b);
      values.push_back(half_internal::HalfBitsToFloat(b));
    }
  }
  const void* data() const {
    return dtype == DType::kFloat32 ? static_cast<const void*>(fp32.data())
                                    : static_cast<const void*>(bits16.data());
  }
  int64_t size() const { return static_cast<int64_t>(values.size()); }
};

// The oracle: ExactSum's own fp64 path, element by element.
ExactSum OneByOne(const Block& block, bool squares) {
  ExactSum sum;
  for (double v : block.values) squares ? sum.AddSquare(v) : sum.AddAbs(v);
  return sum;
}

// Significand bits and the exponent range of normal numbers.
struct Range {
  int significand_bits;
  int min_exponent;  // of the smallest normal, as in 2^min_exponent
  int max_exponent;
};

Range RangeOf(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
    case DType::kBFloat16:
      return {dtype == DType::kFloat32 ? 24 : 8, -126, 127};
    default:
      return {11, -14, 15};
  }
}

const DType kDtypes[] = {DType::kFloat32, DType::kBFloat16, DType::kFloat16};

// Blocks whose exponents span 0 to 40 binades, of every size up to a whole
// block, each element with a random significand and sign, some zeros: every
// sum taken is bitwise the oracle's, and the narrow blocks are taken.
TEST(AddBlockExactTest, EqualsTheOracleForEverySpanOfExponents) {
  std::mt19937_64 random(7);
  for (DType dtype : kDtypes) {
    const Range r = RangeOf(dtype);
    for (bool squares : {false, true}) {
      for (int span = 0; span <= 40; ++span) {
        if (span > r.max_exponent - r.min_exponent) break;
        for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{100},
                          kExactBlockElements - 1, kExactBlockElements}) {
          Block block{dtype};
          const int top = std::min(r.max_exponent - 1, 3);
          std::uniform_int_distribution<int> exponent(top - span, top);
          std::uniform_real_distribution<double> significand(1.0, 2.0);
          for (int64_t i = 0; i < n; ++i) {
            double v = std::ldexp(significand(random), exponent(random));
            if (i % 2 == 1) v = -v;
            if (i % 13 == 5) v = 0.0;
            block.Add(v);
          }
          ExactSum fast;
          const bool taken = AddBlockExact(dtype, block.data(), block.size(),
                                           squares, nullptr, &fast);
          SCOPED_TRACE(testing::Message()
                       << "dtype " << static_cast<int>(dtype) << " squares "
                       << squares << " span " << span << " n " << n);
          if (taken) {
            EXPECT_EQ(fast, OneByOne(block, squares));
          } else {
            EXPECT_TRUE(fast.is_zero());  // nothing added
          }
          if (span <= 12) EXPECT_TRUE(taken);
        }
      }
    }
  }
}

// At the edge of each bound: a whole block of the largest significand at the
// top exponent, and one element of the smallest significand bit at the lowest
// exponent a bound admits (and one below it). Sums that would round anywhere
// show here.
TEST(AddBlockExactTest, ExactAtTheEdgesOfItsBounds) {
  for (DType dtype : kDtypes) {
    const Range r = RangeOf(dtype);
    const double largest =
        std::ldexp(2.0 - std::ldexp(1.0, 1 - r.significand_bits), 0);
    for (bool squares : {false, true}) {
      for (int span = 1; span < r.max_exponent - r.min_exponent; ++span) {
        Block block{dtype};
        for (int64_t i = 0; i + 1 < kExactBlockElements; ++i) {
          block.Add(i % 2 ? -largest : largest);
        }
        // 1.00...01 * 2^-span: its last significand bit is the block's unit.
        block.Add(
            std::ldexp(1.0 + std::ldexp(1.0, 1 - r.significand_bits), -span));
        ExactSum fast;
        if (AddBlockExact(dtype, block.data(), block.size(), squares, nullptr,
                          &fast)) {
          SCOPED_TRACE(testing::Message()
                       << "dtype " << static_cast<int>(dtype) << " squares "
                       << squares << " span " << span);
          EXPECT_EQ(fast, OneByOne(block, squares));
        }
      }
    }
  }
}

// Residuals below zero (the two-level path borrows from its high part) and
// subnormals.
TEST(AddBlockExactTest, NegativeResidualsAndSubnormals) {
  std::mt19937_64 random(11);
  for (DType dtype : kDtypes) {
    const Range r = RangeOf(dtype);
    for (bool squares : {false, true}) {
      Block block{dtype};
      std::uniform_real_distribution<double> significand(1.0, 2.0);
      for (int64_t i = 0; i < kExactBlockElements; ++i) {
        // Significands just below 2 round up to the next unit: residuals < 0.
        const double s = 2.0 - std::ldexp(significand(random) - 1.0, -3);
        block.Add(std::ldexp(s, -static_cast<int>(i % 9)));
      }
      ExactSum fast;
      ASSERT_TRUE(AddBlockExact(dtype, block.data(), block.size(), squares,
                                nullptr, &fast));
      EXPECT_EQ(fast, OneByOne(block, squares));

      Block tiny{dtype};
      for (int i = 0; i < 50; ++i) {
        tiny.Add(std::ldexp(1.0 + i / 64.0,
                            r.min_exponent - 1 - (i % 4)));  // subnormal
        tiny.Add(std::ldexp(1.5, r.min_exponent + i % 5));
      }
      ExactSum small;
      if (AddBlockExact(dtype, tiny.data(), tiny.size(), squares, nullptr,
                        &small)) {
        EXPECT_EQ(small, OneByOne(tiny, squares));
      }
    }
  }
}

// A block of gradient-like values with a few far below the rest (down to
// subnormals, of both signs, at any position, also in the scalar tail): up
// to kMaxOutliers of them are added one by one and the sum is the oracle's;
// one more and the block is left to the caller, with nothing added.
TEST(AddBlockExactTest, AFewOutliersFarBelowAreAddedOneByOne) {
  std::mt19937_64 random(13);
  for (DType dtype : kDtypes) {
    const Range r = RangeOf(dtype);
    for (bool squares : {false, true}) {
      for (int outliers : {1, 2, 7, kMaxOutliers, kMaxOutliers + 1}) {
        for (int64_t n :
             {int64_t{40}, kExactBlockElements - 3, kExactBlockElements}) {
          Block block{dtype};
          std::uniform_real_distribution<double> significand(1.0, 2.0);
          std::uniform_int_distribution<int> near(-6, 0);
          std::uniform_int_distribution<int> far(r.min_exponent - 8,
                                                 r.min_exponent + 20);
          std::uniform_int_distribution<int64_t> where(0, n - 1);
          std::vector<bool> low(n, false);
          for (int placed = 0; placed < outliers;) {
            const int64_t i = where(random);
            if (low[i]) continue;
            low[i] = true;
            ++placed;
          }
          low[n - 1] = outliers > 1 || low[n - 1];  // one in the tail
          int count = 0;
          for (int64_t i = 0; i < n; ++i) {
            if (low[i] && count < outliers) {
              ++count;
              block.Add((i % 2 ? -1 : 1) *
                        std::ldexp(significand(random), far(random)));
            } else {
              block.Add((i % 3 ? -1 : 1) *
                        std::ldexp(significand(random), near(random)));
            }
          }
          SCOPED_TRACE(testing::Message()
                       << "dtype " << static_cast<int>(dtype) << " squares "
                       << squares << " outliers " << outliers << " n " << n);
          ExactSum fast;
          const bool taken = AddBlockExact(dtype, block.data(), block.size(),
                                           squares, nullptr, &fast);
          if (dtype == DType::kFloat16 || outliers <= kMaxOutliers) {
            ASSERT_TRUE(taken);
            EXPECT_EQ(fast, OneByOne(block, squares));
          } else {
            EXPECT_FALSE(taken);
            EXPECT_TRUE(fast.is_zero());
          }
        }
      }
    }
  }
}

TEST(AddBlockExactTest, LeavesNonFiniteAndVeryWideBlocksToTheCaller) {
  for (DType dtype : kDtypes) {
    const Range r = RangeOf(dtype);
    for (double bad : {INFINITY, -INFINITY, NAN}) {
      Block block{dtype};
      block.Add(1.0);
      block.Add(bad);
      ExactSum sum;
      EXPECT_FALSE(AddBlockExact(dtype, block.data(), 2, true, nullptr, &sum));
      EXPECT_TRUE(sum.is_zero());
    }
    // fp16's whole range fits the two-level bound; fp32's and bf16's do not,
    // so there more than kMaxOutliers elements far below the largest are
    // left to the caller.
    Block wide{dtype};
    wide.Add(std::ldexp(1.0, r.max_exponent));
    for (int i = 0; i <= kMaxOutliers; ++i) {
      wide.Add(std::ldexp(1.0, r.min_exponent));
    }
    ExactSum sum;
    if (dtype == DType::kFloat16) {
      EXPECT_TRUE(
          AddBlockExact(dtype, wide.data(), wide.size(), true, nullptr, &sum));
      EXPECT_EQ(sum, OneByOne(wide, true));
    } else {
      EXPECT_FALSE(
          AddBlockExact(dtype, wide.data(), wide.size(), true, nullptr, &sum));
      EXPECT_TRUE(sum.is_zero());
    }
    Block zeros{dtype};
    for (int i = 0; i < 100; ++i) zeros.Add(i % 2 ? 0.0 : -0.0);
    ExactSum zero;
    EXPECT_TRUE(AddBlockExact(dtype, zeros.data(), 100, true, nullptr, &zero));
    EXPECT_TRUE(zero.is_zero());
  }
}

// A block of n elements of one dtype whose exponents span [top - span, top],
// of both signs, with zeros of both signs; kind < 10: a few subnormals as
// well, kind 10: a NaN, kind 11: an infinity.
Block RandomBlock(DType dtype, std::mt19937_64& random, int top, int span,
                  int64_t n, int kind) {
  const Range r = RangeOf(dtype);
  std::uniform_int_distribution<int> exponent(top - span, top);
  std::uniform_real_distribution<double> significand(1.0, 2.0);
  Block block{dtype};
  for (int64_t i = 0; i < n; ++i) {
    double v = std::ldexp(significand(random), exponent(random));
    if (i % 2 == 1) v = -v;
    if (i % 17 == 3) v = i % 34 == 3 ? 0.0 : -0.0;
    if (kind < 10 && i % 301 == 7) {
      v = std::ldexp(significand(random), r.min_exponent - 3);
    }
    if (kind == 10 && i == n / 2) v = NAN;
    if (kind == 11 && i == n - 1) v = -INFINITY;
    block.Add(v);
  }
  return block;
}

// The scale of a run of blocks: it moves from block to block, sometimes far
// (up or down 40 binades), and spans are narrow or wide.
struct Scale {
  int top = 0;
  int span = 0;

  void Next(DType dtype, std::mt19937_64& random) {
    const Range r = RangeOf(dtype);
    std::uniform_int_distribution<int> step(-3, 3), jump(-40, 40), pick(0, 99),
        span_of(0, 30);
    top += pick(random) < 10 ? jump(random) : step(random);
    top = std::clamp(top, r.min_exponent + 2, r.max_exponent - 1);
    span = pick(random) < 10 ? 40 : span_of(random);
  }
};

// Runs of blocks of one tensor share an ExactBlockRun, as ComputePartialNorm's
// do (RandomBlock and Scale above). Every block taken is bitwise the
// oracle's; one not taken adds nothing and is not taken without a run
// either.
TEST(AddBlockExactTest, RunsOfBlocksEqualTheOracle) {
  std::mt19937_64 random(17);
  for (DType dtype : kDtypes) {
    for (bool squares : {false, true}) {
      ExactBlockRun run;
      Scale scale;
      int taken_count = 0;
      std::uniform_int_distribution<int> pick(0, 99);
      for (int b = 0; b < 300; ++b) {
        scale.Next(dtype, random);
        const int64_t n = pick(random) < 20
                              ? std::uniform_int_distribution<int64_t>(
                                    1, kExactBlockElements)(random)
                              : kExactBlockElements;
        const Block block =
            RandomBlock(dtype, random, scale.top, scale.span, n, pick(random));
        SCOPED_TRACE(testing::Message()
                     << "dtype " << static_cast<int>(dtype) << " squares "
                     << squares << " block " << b << " top " << scale.top
                     << " span " << scale.span << " n " << n);
        ExactSum in_run;
        if (AddBlockExact(dtype, block.data(), block.size(), squares, &run,
                          &in_run)) {
          ++taken_count;
          EXPECT_EQ(in_run, OneByOne(block, squares));
        } else {
          EXPECT_TRUE(in_run.is_zero());
          ExactSum planned;
          EXPECT_FALSE(AddBlockExact(dtype, block.data(), block.size(), squares,
                                     nullptr, &planned));
        }
      }
      EXPECT_GT(taken_count, 150);
    }
  }
}

// Batches of 1 to kExactBatchBlocks blocks (the last one maybe short), each
// block of its own scale (often close to the one before, as in a tensor),
// some holding a NaN or an infinity: the mask names exactly the blocks left,
// which the plan leaves too, and the sum is the oracle's over the others.
TEST(AddBlocksExactTest, BatchesEqualTheOracleOverTheBlocksTaken) {
  std::mt19937_64 random(19);
  for (DType dtype : kDtypes) {
    for (bool squares : {false, true}) {
      ExactBlockRun run;
      Scale scale;
      int whole = 0;
      std::uniform_int_distribution<int> pick(0, 99), count_of(1, 4);
      for (int t = 0; t < 150; ++t) {
        const int count = count_of(random);
        std::vector<Block> blocks;
        Block batch{dtype};
        for (int b = 0; b < count; ++b) {
          if (pick(random) < 30) scale.Next(dtype, random);
          const int64_t n = b + 1 == count && pick(random) < 30
                                ? std::uniform_int_distribution<int64_t>(
                                      1, kExactBlockElements)(random)
                                : kExactBlockElements;
          blocks.push_back(RandomBlock(dtype, random, scale.top, scale.span, n,
                                       pick(random) < 90 ? 50 : pick(random)));
          for (double v : blocks.back().values) batch.Add(v);
        }
        SCOPED_TRACE(testing::Message()
                     << "dtype " << static_cast<int>(dtype) << " squares "
                     << squares << " batch " << t << " blocks " << count);
        ExactSum sum;
        const uint32_t left = AddBlocksExact(dtype, batch.data(), batch.size(),
                                             squares, &run, &sum);
        EXPECT_EQ(left >> count, 0u);
        ExactSum expected;
        for (int b = 0; b < count; ++b) {
          if ((left >> b) & 1) {
            ExactSum planned;
            EXPECT_FALSE(AddBlockExact(dtype, blocks[b].data(),
                                       blocks[b].size(), squares, nullptr,
                                       &planned))
                << "block " << b;
          } else {
            expected.Merge(OneByOne(blocks[b], squares));
          }
        }
        EXPECT_EQ(sum, expected);
        whole += left == 0;
      }
      EXPECT_GT(whole, 50);
    }
  }
}

// Gradient-like values: uniform in [-0.01, 0.01].
Block GradientLikeBlock(DType dtype, std::mt19937_64& random, int64_t n) {
  std::uniform_real_distribution<double> value(-0.01, 0.01);
  Block block{dtype};
  for (int64_t i = 0; i < n; ++i) block.Add(value(random));
  return block;
}

// Batches of gradient-like blocks are taken by the checked sums where the
// processor has them (not planned block by block after a failed check),
// bitwise as the oracle.
TEST(AddBlocksExactTest, TheCheckedSumsTakeGradientLikeBatches) {
  std::mt19937_64 random(23);
  for (DType dtype : kDtypes) {
    for (bool squares : {false, true}) {
      ExactBlockRun run;
      int64_t blocks = 0;
      for (int t = 0; t < 40; ++t) {
        const Block batch =
            GradientLikeBlock(dtype, random, kExactBatchElements);
        ExactSum sum;
        ASSERT_EQ(AddBlocksExact(dtype, batch.data(), batch.size(), squares,
                                 &run, &sum),
                  0u);
        EXPECT_EQ(sum, OneByOne(batch, squares));
        blocks += kExactBatchBlocks;
      }
      SCOPED_TRACE(testing::Message() << "dtype " << static_cast<int>(dtype)
                                      << " squares " << squares);
      if (ExactBlockChecksAvailable()) {
        EXPECT_GE(run.checked_blocks(), blocks * 9 / 10);
      } else {
        EXPECT_EQ(run.checked_blocks(), 0);
      }
    }
  }
}

// A NaN, an infinity or a signalling NaN anywhere in a batch (in a group, in
// the padded tail, in the first block, which sets the one-level split, or
// the last), after a run has a start: its block is left, with nothing added,
// and the other blocks are the oracle's.
TEST(AddBlocksExactTest, NonFiniteValuesAreNeverTakenAsExact) {
  std::mt19937_64 random(29);
  for (DType dtype : kDtypes) {
    const uint32_t signalling = dtype == DType::kFloat32    ? 0x7f800001u
                                : dtype == DType::kBFloat16 ? 0x7f81u
                                                            : 0x7c01u;
    for (bool squares : {false, true}) {
      for (int bad = 0; bad < 4; ++bad) {
        for (int where : {0, 1, 2, 3}) {
          for (int64_t at : {int64_t{100}, kExactBlockElements - 2}) {
            ExactBlockRun run;
            const Block warm =
                GradientLikeBlock(dtype, random, kExactBatchElements);
            ExactSum ignored;
            AddBlocksExact(dtype, warm.data(), warm.size(), squares, &run,
                           &ignored);
            Block batch =
                GradientLikeBlock(dtype, random, kExactBatchElements - 3);
            const int64_t i = where * kExactBlockElements + at;
            if (i >= batch.size()) continue;
            const double values[] = {NAN, INFINITY, -INFINITY, 0.0};
            if (bad < 3) {
              batch.values[i] = values[bad];
              Block one{dtype};
              one.Add(values[bad]);
              dtype == DType::kFloat32
                  ? (void)(batch.fp32[i] = one.fp32[0])
                  : (void)(batch.bits16[i] = one.bits16[0]);
            } else {
              dtype == DType::kFloat32
                  ? (void)(batch.fp32[i] = signalling)
                  : (void)(batch.bits16[i] = static_cast<uint16_t>(signalling));
              batch.values[i] = NAN;
            }
            SCOPED_TRACE(testing::Message()
                         << "dtype " << static_cast<int>(dtype) << " squares "
                         << squares << " bad " << bad << " block " << where
                         << " at " << at);
            ExactSum sum;
            const uint32_t left = AddBlocksExact(
                dtype, batch.data(), batch.size(), squares, &run, &sum);
            EXPECT_EQ(left, uint32_t{1} << where);
            ExactSum expected;
            for (int b = 0; b < kExactBatchBlocks; ++b) {
              if (b == where) continue;
              for (int64_t k = b * kExactBlockElements;
                   k < std::min<int64_t>(batch.size(),
                                         (b + 1) * kExactBlockElements);
                   ++k) {
                squares ? expected.AddSquare(batch.values[k])
                        : expected.AddAbs(batch.values[k]);
              }
            }
            EXPECT_EQ(sum, expected);
          }
        }
      }
    }
  }
}

// A batch whose first block (which sets the one-level split) is all zeros,
// or far smaller than the blocks after it.
TEST(AddBlocksExactTest, BatchesWhoseFirstBlockIsZeroOrSmall) {
  std::mt19937_64 random(31);
  for (DType dtype : kDtypes) {
    for (bool squares : {false, true}) {
      for (double first_scale : {0.0, 1e-3}) {
        Block batch{dtype};
        const Block rest =
            GradientLikeBlock(dtype, random, kExactBatchElements);
        for (int64_t i = 0; i < rest.size(); ++i) {
          batch.Add(i < kExactBlockElements ? rest.values[i] * first_scale
                                            : rest.values[i]);
        }
        ExactBlockRun run;
        ExactSum sum;
        const uint32_t left = AddBlocksExact(dtype, batch.data(), batch.size(),
                                             squares, &run, &sum);
        EXPECT_EQ(left, 0u);
        EXPECT_EQ(sum, OneByOne(batch, squares));
      }
    }
  }
}

// A block the plan leaves (more than kMaxOutliers values below the two-level
// range) but whose two-level sum rounds nothing from the start learnt from
// the block before (one such value, planned with it as an outlier): the
// checked sum takes it, exactly, where the processor has checked sums.
TEST(AddBlockExactTest, TheCheckedSumTakesWhatRoundsNothing) {
  for (DType dtype : {DType::kFloat32, DType::kBFloat16}) {
    SCOPED_TRACE(testing::Message() << "dtype " << static_cast<int>(dtype));
    const double tiny = std::ldexp(1.0, -45);
    Block before{dtype};
    for (int64_t i = 0; i < kExactBlockElements; ++i) {
      before.Add(i == 0 ? tiny : 1.0);
    }
    ExactBlockRun run;
    ExactSum first;
    ASSERT_TRUE(
        AddBlockExact(dtype, before.data(), before.size(), true, &run, &first));
    Block block{dtype};
    for (int64_t i = 0; i < kExactBlockElements; ++i) {
      block.Add(i % 40 == 0 ? tiny : 1.0);
    }
    ExactSum planned;
    EXPECT_FALSE(AddBlockExact(dtype, block.data(), block.size(), true, nullptr,
                               &planned));
    ExactSum checked;
    const bool taken =
        AddBlockExact(dtype, block.data(), block.size(), true, &run, &checked);
    EXPECT_EQ(taken, ExactBlockChecksAvailable());
    if (taken) EXPECT_EQ(checked, OneByOne(block, true));
  }
}

// One group of elements, one per SIMD lane, whose squares span 74 binades:
// each lane's sum is exact, their total is not. The lanes' sums are then
// added one by one.
TEST(AddBlockExactTest, LanesAddedOneByOneWhenOnlyTheirTotalRounds) {
  for (DType dtype : {DType::kBFloat16, DType::kFloat16}) {
    Block block{dtype};
    block.Add(dtype == DType::kBFloat16 ? std::ldexp(1.0, 20) : 1024.0);
    for (int i = 1; i < 32; ++i) {
      block.Add(
          std::ldexp(1.0 + i / 128.0, dtype == DType::kBFloat16 ? -10 : -6));
    }
    ExactBlockRun run;
    ExactSum sum;
    ASSERT_TRUE(
        AddBlockExact(dtype, block.data(), block.size(), true, &run, &sum));
    EXPECT_EQ(sum, OneByOne(block, true));
  }
}

#if defined(__x86_64__)
// Denormals-are-zero and flush-to-zero set by the caller (as some training
// frameworks do) do not turn subnormal gradients into zeros, and the
// caller's floating-point status, flags included, is as it was.
TEST(AddBlockExactTest, HonoursSubnormalsUnderTheCallersDenormalsAreZero) {
  for (DType dtype : kDtypes) {
    const Range r = RangeOf(dtype);
    for (bool squares : {false, true}) {
      Block block{dtype};
      for (int64_t i = 0; i < kExactBlockElements; ++i) {
        block.Add(std::ldexp(1.0 + (i % 7) / 8.0,
                             r.min_exponent - 1 - static_cast<int>(i % 3)));
      }
      const uint32_t before = _mm_getcsr();
      const uint32_t caller = before | 0x8040u | 0x20u;
      _mm_setcsr(caller);
      ExactSum first, second;
      bool taken_first, taken_second;
      {
        ExactBlockRun run;
        taken_first = AddBlockExact(dtype, block.data(), block.size(), squares,
                                    &run, &first);
        taken_second = AddBlockExact(dtype, block.data(), block.size(), squares,
                                     &run, &second);
      }
      ExactSum planned;
      const bool taken_planned = AddBlockExact(
          dtype, block.data(), block.size(), squares, nullptr, &planned);
      const uint32_t after = _mm_getcsr();
      _mm_setcsr(before);
      EXPECT_EQ(after, caller);
      SCOPED_TRACE(testing::Message() << "dtype " << static_cast<int>(dtype)
                                      << " squares " << squares);
      if (taken_first) EXPECT_EQ(first, OneByOne(block, squares));
      if (taken_second) EXPECT_EQ(second, OneByOne(block, squares));
      if (taken_planned) EXPECT_EQ(planned, OneByOne(block, squares));
      EXPECT_FALSE(OneByOne(block, squares).is_zero());
    }
  }
}

// The caller's rounding mode and exception masks do not reach the sums:
// rounding upward made a planned two-level sum inexact (its residuals reach
// a whole unit), and an unmasked invalid exception stopped the process at a
// NaN or an infinity in a checked batch.
TEST(AddBlockExactTest, IgnoresTheCallersRoundingModeAndUnmaskedExceptions) {
  Block block{DType::kFloat32};
  block.Add(1.0);
  block.Add(std::ldexp(1.0 + std::ldexp(1.0, -23), -59));
  for (int i = 0; i < 2046; ++i) {
    block.Add(std::ldexp(1.0 + std::ldexp(1.0, -23), -20));
  }
  std::mt19937_64 random(37);
  Block batch = GradientLikeBlock(DType::kFloat32, random, kExactBatchElements);
  batch.fp32[kExactBlockElements + 5] = 0x7f800000u;  // +Inf in block 1
  batch.values[kExactBlockElements + 5] = INFINITY;
  const uint32_t before = _mm_getcsr();
  // Round upward (0x4000) with the invalid exception unmasked (0x80 clear).
  const uint32_t caller = (before & ~0x6080u) | 0x4000u;
  _mm_setcsr(caller);
  ExactSum planned;
  const bool taken = AddBlockExact(DType::kFloat32, block.data(), block.size(),
                                   false, nullptr, &planned);
  ExactSum checked;
  uint32_t left;
  {
    ExactBlockRun run;
    ExactSum warm;
    for (int t = 0; t < 2; ++t) {
      AddBlocksExact(DType::kFloat32, block.data(), block.size(), true, &run,
                     &warm);
    }
    left = AddBlocksExact(DType::kFloat32, batch.data(), batch.size(), true,
                          &run, &checked);
  }
  const uint32_t after = _mm_getcsr();
  _mm_setcsr(before);
  EXPECT_EQ(after, caller);
  if (taken) EXPECT_EQ(planned, OneByOne(block, false));
  EXPECT_EQ(left, 2u);
  ExactSum expected;
  for (int64_t k = 0; k < batch.size(); ++k) {
    if (k / kExactBlockElements != 1) expected.AddSquare(batch.values[k]);
  }
  EXPECT_EQ(checked, expected);
}
#endif

}  // namespace
}  // namespace kernels_internal
}  // namespace gradnorm
