#include "kernels/internal/float_status.h"

#include "gtest/gtest.h"

#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

namespace gradnorm {
namespace kernels_internal {
namespace {

#if defined(__x86_64__)
constexpr unsigned kInexact = 0x20;
constexpr unsigned kDenormalsAreZero = 0x40;
constexpr unsigned kFlushToZero = 0x8000;

// Keeps the compiler from folding arithmetic on `x` at compile time.
double Opaque(double x) {
  asm volatile("" : "+x"(x));
  return x;
}

TEST(FloatStatusScopeTest, SumsWithDenormalsAndGivesTheCallerItsStatusBack) {
  const unsigned before = _mm_getcsr();
  const unsigned caller = before | kDenormalsAreZero | kFlushToZero | kInexact;
  _mm_setcsr(caller);
  {
    FloatStatusScope status;
    const unsigned inside = _mm_getcsr();
    EXPECT_EQ(inside & (kDenormalsAreZero | kFlushToZero), 0u);
    EXPECT_EQ(inside & 0x3fu, 0u);  // no flag set
    // A subnormal survives arithmetic (DAZ would read it as zero).
    EXPECT_EQ(Opaque(4.9406564584124654e-324) * 2.0, 9.8813129168249309e-324);
  }
  const unsigned after = _mm_getcsr();
  _mm_setcsr(before);
  EXPECT_EQ(after, caller);
}

TEST(FloatStatusScopeTest, NothingRoundedSeesAnInexactOperation) {
  FloatStatusScope status;
  const void* data = nullptr;
  status.Clean(data);
  const double exact = Opaque(0.5) + Opaque(0.25);
  EXPECT_TRUE(status.NothingRounded(exact, 0.0));
  const double rounded = Opaque(1.0) / Opaque(3.0);
  EXPECT_FALSE(status.NothingRounded(rounded, 0.0));
  // Clean clears the flag again, and undoes a mode set in between.
  _mm_setcsr(_mm_getcsr() | kDenormalsAreZero);
  status.Clean(data);
  EXPECT_EQ(_mm_getcsr() & kDenormalsAreZero, 0u);
  EXPECT_TRUE(status.NothingRounded(Opaque(2.0) * Opaque(3.0), 0.0));
}

TEST(FloatStatusScopeTest, ScopesNest) {
  const unsigned before = _mm_getcsr();
  {
    FloatStatusScope outer;
    const void* data = nullptr;
    outer.Clean(data);
    const double rounded = Opaque(1.0) / Opaque(3.0);
    {
      FloatStatusScope inner;
      EXPECT_TRUE(inner.NothingRounded(rounded, 0.0));
    }
    EXPECT_FALSE(outer.NothingRounded(rounded, 0.0));
  }
  EXPECT_EQ(_mm_getcsr(), before);
}
#else
TEST(FloatStatusScopeTest, NothingIsCheckedElsewhereThanX86) {
  FloatStatusScope status;
  EXPECT_FALSE(status.NothingRounded(1.0, 2.0));
}
#endif

}  // namespace
}  // namespace kernels_internal
}  // namespace gradnorm
