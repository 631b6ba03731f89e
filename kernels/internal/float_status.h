// The floating-point status the exact CPU kernels sum in, as a scope (x86:
// the MXCSR register). While a scope lives, its thread sums in the default
// status whatever the caller set: round to nearest, every exception masked,
// denormals honoured (DAZ and FTZ off, so that fp32 -> fp64 conversion keeps
// subnormals). The checked sums of exact_block_cpu.h read from the exception
// flags whether an operation rounded. The destructor gives the caller its
// status back, flags included.
//
//   FloatStatusScope status;
//   status.Clean(data);  // DAZ/FTZ off and no flag set, from here on
//   ... sum from data ...
//   if (status.NothingRounded(sum, 0.0)) { ... the sum is exact ... }
//
// Elsewhere than x86 the scope does nothing and NothingRounded is false.
//
// Thread-safety: the status is the calling thread's: a scope serves the
// thread that made it, and owns its status while it lives: nothing else may
// change it meanwhile (Clean trusts what it last saw). Scopes nest.
#ifndef GRADNORM_KERNELS_INTERNAL_FLOAT_STATUS_H_
#define GRADNORM_KERNELS_INTERNAL_FLOAT_STATUS_H_

#include <cstdint>

namespace gradnorm {
namespace kernels_internal {

class FloatStatusScope {
 public:
  FloatStatusScope(const FloatStatusScope&) = delete;
  FloatStatusScope& operator=(const FloatStatusScope&) = delete;

#if defined(__x86_64__)
  FloatStatusScope() {
    asm volatile("stmxcsr %0" : "=m"(saved_));
    asm volatile("ldmxcsr %0" : : "m"(kDefault) : "memory");
  }
  ~FloatStatusScope() { asm volatile("ldmxcsr %0" : : "m"(saved_) : "memory"); }

  // Makes the status clean again (no flag set, DAZ and FTZ off) unless it
  // is known to be: the scope owns its thread's status while it lives, and
  // reading the flags, like writing them, waits for the arithmetic before.
  // `data` comes back laundered, so that the compiler cannot move loads from
  // it (and the arithmetic on them) before.
  void Clean(const void*& data) {
    if (!known_clean_) {
      asm volatile("ldmxcsr %1" : "+r"(data) : "m"(kDefault) : "memory");
      known_clean_ = true;
    } else {
      asm volatile("" : "+r"(data) : : "memory");
    }
  }

  // Notes that arithmetic since Clean may have raised a flag on purpose.
  void Used() { known_clean_ = false; }

  // Whether no operation since Clean rounded, overflowed, underflowed,
  // divided by zero or was invalid. `a` and `b` are the results, which must
  // be computed before the flags are read.
  bool NothingRounded(double a, double b) {
    uint32_t now;
    asm volatile("stmxcsr %0" : "=m"(now) : "x"(a), "x"(b) : "memory");
    known_clean_ = (now & kFlags) == 0;
    return (now & kFlags & ~kDenormalFlag) == 0;
  }

  // The same once the SIMD vectors v0..v3 (with a .raw register) are
  // computed.
  template <class V>
  bool NothingRoundedFor(V& v0, V& v1, V& v2, V& v3) {
    asm volatile("" : "+v"(v0.raw), "+v"(v1.raw), "+v"(v2.raw), "+v"(v3.raw));
    return NothingRounded(0.0, 0.0);
  }

 private:
  static constexpr uint32_t kFlags = 0x3f;  // IE DE ZE OE UE PE
  static constexpr uint32_t kDenormalFlag = 0x02;
  // All exceptions masked, round to nearest, DAZ and FTZ off, no flag set.
  static constexpr uint32_t kDefault = 0x1f80;
  uint32_t saved_ = 0;
  bool known_clean_ = true;
#else
  FloatStatusScope() = default;
  void Clean(const void*&) {}
  void Used() {}
  bool NothingRounded(double, double) { return false; }
  template <class V>
  bool NothingRoundedFor(V&, V&, V&, V&) {
    return false;
  }
#endif
};

}  // namespace kernels_internal
}  // namespace gradnorm

#endif  // GRADNORM_KERNELS_INTERNAL_FLOAT_STATUS_H_
