// Device helpers shared by the CUDA kernel files: dtype traits and conversions, aligned vector
// loads, block-wide bitonic sort of uint64 keys, dtype dispatch. CUDA headers only (no torch).
// Conversions use explicit intrinsics only: torch builds extensions with
// -D__CUDA_NO_HALF_OPERATORS__ / -D__CUDA_NO_HALF_CONVERSIONS__ / -D__CUDA_NO_BFLOAT16_CONVERSIONS__.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "power_bert_kernels.h"

namespace power_bert {
namespace cuda {
namespace detail {

// ---- dtype traits ---------------------------------------------------------------------------
template <typename T>
struct AccOf { using type = float; };
template <>
struct AccOf<double> { using type = double; };
template <typename T>
using acc_t = typename AccOf<T>::type;

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_acc(acc_t<T> v);
template <>
__device__ __forceinline__ float from_acc<float>(float v) { return v; }
template <>
__device__ __forceinline__ double from_acc<double>(double v) { return v; }
template <>
__device__ __forceinline__ __half from_acc<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// VEC consecutive elements, loaded/stored as one aligned access.
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Vec {
  T v[VEC];
};

// Largest vector width (elements) with VEC * sizeof(T) <= 16 bytes such that every row of
// `row_elems` elements starting at each pointer is aligned to VEC * sizeof(T).
template <typename T>
inline int vec_width(int64_t row_elems, const void* p0, const void* p1 = nullptr,
                     const void* p2 = nullptr) {
  for (int vec = static_cast<int>(16 / sizeof(T)); vec > 1; vec /= 2) {
    const uintptr_t bytes = static_cast<uintptr_t>(vec) * sizeof(T);
    if (row_elems % vec != 0) continue;
    if (reinterpret_cast<uintptr_t>(p0) % bytes != 0) continue;
    if (p1 != nullptr && reinterpret_cast<uintptr_t>(p1) % bytes != 0) continue;
    if (p2 != nullptr && reinterpret_cast<uintptr_t>(p2) % bytes != 0) continue;
    return vec;
  }
  return 1;
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline int64_t next_pow2(int64_t n) {
  int64_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

// Grid dimensions are capped; kernels use grid-stride loops.
constexpr int64_t kMaxGridX = 2147483647;
constexpr int64_t kMaxGridY = 65535;

// ---- dtype dispatch -------------------------------------------------------------------------
// DISPATCH(dt, f) calls f(T{}) with T the element type of dt.
template <typename F>
inline cudaError_t dispatch_dtype(DType dt, F&& f) {
  switch (dt) {
    case DType::Float32: return f(float{});
    case DType::Float16: return f(__half{});
    case DType::BFloat16: return f(__nv_bfloat16{});
    case DType::Float64: return f(double{});
  }
  return cudaErrorInvalidValue;
}

// ---- block bitonic sort ----------------------------------------------------------------------
// Sorts keys[0, P) in shared memory into DESCENDING order. P must be a power of two; callers
// pad with 0 keys (below every real key). All threads of the block must call it; it begins and
// ends with __syncthreads().
__device__ inline void block_bitonic_sort_desc(uint64_t* keys, int P) {
  const int half = P >> 1;
  __syncthreads();
  for (int size = 2; size <= P; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = threadIdx.x; i < half; i += blockDim.x) {
        const int lo = 2 * i - (i & (stride - 1));
        const int hi = lo + stride;
        const bool desc = (lo & size) == 0;  // direction of this bitonic subsequence
        const uint64_t a = keys[lo];
        const uint64_t b = keys[hi];
        if ((a < b) == desc) {
          keys[lo] = b;
          keys[hi] = a;
        }
      }
      __syncthreads();
    }
  }
}

// Threads per block for the row-wise sorting kernels: one thread per compare-exchange of a
// pass, between one warp and 1024 threads.
inline int sort_threads(int64_t P) {
  int64_t t = P / 2;
  if (t < 32) t = 32;
  if (t > 1024) t = 1024;
  return static_cast<int>(t);
}

// Dynamic shared memory limit: set the opt-in attribute when a kernel needs more than 48 KB.
template <typename K>
inline cudaError_t allow_smem(K kernel, size_t bytes) {
  if (bytes <= 48 * 1024) return cudaSuccess;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(bytes));
}

}  // namespace detail
}  // namespace cuda
}  // namespace power_bert
