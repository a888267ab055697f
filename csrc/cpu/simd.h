// Helpers for the CPU kernels' hot loops.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

// A hot loop marked POWER_BERT_CLONES is compiled for several instruction sets and picked at
// load time (GCC ifunc), so one portable wheel uses AVX-512/AVX2 where the CPU has them.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define POWER_BERT_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define POWER_BERT_CLONES
#endif

namespace power_bert {
namespace cpu {

// exp(x) for x <= 0 in float, branch-free and without libm calls so that loops calling it
// vectorise (Cephes' expf polynomial; measured max relative error 8.3e-8, about 1.4 ulp, over
// [-87.3, 0]); x below -87.3 (including -inf) gives exactly 0. Rounding x*log2(e) to the nearest
// integer n by adding 1.5*2^23 also leaves n in the sum's low mantissa bits, which become the
// exponent of 2^n.
__attribute__((always_inline)) inline float exp_nonpositive(float x) {
  constexpr float kLowest = -87.33654f;
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  const float xc = x < kLowest ? kLowest : x;
  const float t = xc * 1.44269504088896341f + kMagic;
  const float n = t - kMagic;
  int32_t t_bits;
  std::memcpy(&t_bits, &t, sizeof(t_bits));
  const float r = xc - n * 0.693359375f + n * 2.12194440e-4f;  // x - n ln2, ln2 in two parts
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  const int32_t pow2n_bits = (t_bits - 0x4B400000 + 127) << 23;  // 0x4B400000: the bits of kMagic
  float pow2n;
  std::memcpy(&pow2n, &pow2n_bits, sizeof(pow2n));
  const float e = y * pow2n;
  return x < kLowest ? 0.0f : e;
}

__attribute__((always_inline)) inline double exp_nonpositive(double x) { return std::exp(x); }

}  // namespace cpu
}  // namespace power_bert
