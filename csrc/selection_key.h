// Ranking key shared by the CPU and CUDA kernels (needs no torch and no CUDA headers).
//
// Every op ranks the positions of a row by one total order (SPEC 1.1/1.2, reference.rank_order):
//   real tokens above padding; among real tokens larger float32 score first, NaN below every
//   number (-inf included), -0.0 == +0.0; ties toward the lower position.
// Encoding that order as one unsigned 64-bit integer makes "descending key" the whole rule:
//   bits 63..32: 0 for padding, 1 for NaN, else the order-preserving image of the float (>= 0x007FFFFF)
//   bits 31..0 : 0xFFFFFFFF - position (lower position, larger key)
// Keys are unique within a row, so selection and sorting are deterministic on every backend.
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define POWER_BERT_HD __host__ __device__ __forceinline__
#else
#define POWER_BERT_HD inline
#endif

namespace power_bert {

POWER_BERT_HD uint32_t float_order_bits(float s) {
  s = s + 0.0f;  // -0.0 -> +0.0
  uint32_t u;
#if defined(__CUDA_ARCH__)
  u = __float_as_uint(s);
#else
  std::memcpy(&u, &s, sizeof(u));
#endif
  if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x007FFFFFu) != 0u) return 1u;  // NaN
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

POWER_BERT_HD uint64_t selection_key(float score, bool real, int64_t position) {
  const uint64_t hi = real ? static_cast<uint64_t>(float_order_bits(score)) : 0ull;
  return (hi << 32) | static_cast<uint64_t>(0xFFFFFFFFu - static_cast<uint32_t>(position));
}

// Position 0 ([CLS]) is always kept by extract: it gets the largest key of all.
POWER_BERT_HD uint64_t cls_key() { return ~0ull; }

POWER_BERT_HD int64_t key_position(uint64_t key) {
  return static_cast<int64_t>(0xFFFFFFFFu - static_cast<uint32_t>(key & 0xFFFFFFFFull));
}

}  // namespace power_bert
