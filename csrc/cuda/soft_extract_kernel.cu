// CUDA kernels of power_bert::soft_extract and its backward (SPEC 1.3).
//
// rank:     one block per row: selection_key of every position (no [CLS] special case) in
//           dynamic shared memory, padded with 0 keys to next_pow2(N), block bitonic sort
//           (descending); order[b,t] = position of the t-th key, rank[b,order[b,t]] = t.
// forward:  out[b,p,:] = hidden[b,p,:] * retention[rank[b,p]] in acc type. tx threads per row
//           (VEC elements each, one aligned vector access when D and the pointers allow), ty rows
//           per block (tx * ty = 256), grid-stride over the B*N rows.
// backward: same layout; each row also reduces dot(grad_out, hidden) over its tx threads in a
//           fixed order (shuffles, then shared memory across warps) into workspace[b,p]; a second
//           kernel sums workspace[b, order[b,t]] over b in a fixed order (ty lanes of ascending b
//           strided by ty, then lanes 0..ty-1): grad_retention is deterministic, no atomics.
#include <cuda_runtime.h>

#include <cstdint>

#include "../selection_key.h"
#include "device_utils.cuh"
#include "power_bert_kernels.h"

namespace power_bert {
namespace cuda {
namespace {

using detail::acc_t;
using detail::ceil_div;

constexpr int kThreads = 256;

// ---- rank -----------------------------------------------------------------------------------
__global__ void __launch_bounds__(1024) rank_kernel(const float* __restrict__ scores, const uint8_t* __restrict__ real, int N,
                            int P, int64_t* __restrict__ rank, int64_t* __restrict__ order) {
  extern __shared__ uint64_t keys[];
  const int64_t b = blockIdx.x;
  const float* s_row = scores + b * N;
  const uint8_t* r_row = real + b * N;
  for (int p = threadIdx.x; p < P; p += blockDim.x) {
    keys[p] = p < N ? selection_key(s_row[p], r_row[p] != 0, p) : 0ull;
  }
  detail::block_bitonic_sort_desc(keys, P);  // syncs before and after
  int64_t* rank_row = rank + b * N;
  int64_t* order_row = order + b * N;
  for (int t = threadIdx.x; t < N; t += blockDim.x) {
    const int64_t p = key_position(keys[t]);
    order_row[t] = p;
    rank_row[p] = t;
  }
}

// ---- row geometry -----------------------------------------------------------------------------
struct RowGeometry {
  int tx = 1, ty = kThreads;
};

RowGeometry row_geometry(int64_t groups) {
  RowGeometry g;
  int tx = 1;
  while (tx < groups && tx < kThreads) tx <<= 1;
  g.tx = tx;
  g.ty = kThreads / tx;
  return g;
}

unsigned row_blocks(const RowGeometry& g, int64_t rows) {
  const int64_t n = ceil_div(rows, g.ty);
  return static_cast<unsigned>(n < detail::kMaxGridX ? n : detail::kMaxGridX);
}

// ---- forward ----------------------------------------------------------------------------------
template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads)
soft_forward_kernel(const T* __restrict__ hidden, const int64_t* __restrict__ rank,
                    const acc_t<T>* __restrict__ retention, int64_t rows, int64_t D,
                    T* __restrict__ out) {
  using A = acc_t<T>;
  using V = detail::Vec<T, VEC>;
  const int64_t groups = D / VEC;  // VEC divides D
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.y) + threadIdx.y; r < rows;
       r += static_cast<int64_t>(gridDim.x) * blockDim.y) {
    const A f = retention[rank[r]];
    const V* src = reinterpret_cast<const V*>(hidden + r * D);
    V* dst = reinterpret_cast<V*>(out + r * D);
    for (int64_t j = threadIdx.x; j < groups; j += blockDim.x) {
      const V h = src[j];
      V o;
#pragma unroll
      for (int e = 0; e < VEC; ++e) o.v[e] = detail::from_acc<T>(detail::to_acc(h.v[e]) * f);
      dst[j] = o;
    }
  }
}

// ---- backward ---------------------------------------------------------------------------------
template <typename T, int VEC>
__global__ void __launch_bounds__(kThreads)
soft_backward_rows_kernel(const T* __restrict__ grad_out, const T* __restrict__ hidden,
                          const int64_t* __restrict__ rank, const acc_t<T>* __restrict__ retention,
                          int64_t rows, int64_t D, T* __restrict__ grad_hidden,
                          acc_t<T>* __restrict__ dots) {
  using A = acc_t<T>;
  using V = detail::Vec<T, VEC>;
  __shared__ A warp_dot[kThreads / 32];
  const int64_t groups = D / VEC;
  const int tx = blockDim.x;
  const int tid = threadIdx.y * tx + threadIdx.x;
  const int lane = tid & 31;
  // The loop is uniform over the block (shuffles and barriers below); rows past the end idle.
  for (int64_t base = blockIdx.x * static_cast<int64_t>(blockDim.y); base < rows;
       base += static_cast<int64_t>(gridDim.x) * blockDim.y) {
    const int64_t r = base + threadIdx.y;
    const bool active = r < rows;
    A dot = A(0);
    if (active) {
      const A f = retention[rank[r]];
      const V* g_row = reinterpret_cast<const V*>(grad_out + r * D);
      const V* h_row = reinterpret_cast<const V*>(hidden + r * D);
      V* gh_row = reinterpret_cast<V*>(grad_hidden + r * D);
      for (int64_t j = threadIdx.x; j < groups; j += tx) {
        const V g = g_row[j];
        const V h = h_row[j];
        V o;
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          const A gv = detail::to_acc(g.v[e]);
          o.v[e] = detail::from_acc<T>(gv * f);
          dot += gv * detail::to_acc(h.v[e]);
        }
        gh_row[j] = o;
      }
    }
    // Reduce over the tx threads of the row: butterfly within min(tx, 32) lanes ...
    const int width = tx < 32 ? tx : 32;
    for (int off = width >> 1; off > 0; off >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, off, width);
    if (tx <= 32) {
      if (active && threadIdx.x == 0) dots[r] = dot;
    } else {
      // ... then across the tx / 32 warps of the row, in ascending warp order.
      __syncthreads();  // warp_dot of the previous iteration consumed
      if (lane == 0) warp_dot[tid >> 5] = dot;
      __syncthreads();
      if (active && threadIdx.x == 0) {
        const int w0 = tid >> 5, nw = tx >> 5;
        A s = A(0);
        for (int w = 0; w < nw; ++w) s += warp_dot[w0 + w];
        dots[r] = s;
      }
    }
  }
}

// grad_retention[t] = sum_b dots[b, order[b,t]]. Block (32, 8): x over t, y over b (strided by 8).
template <typename A>
__global__ void retention_grad_kernel(const A* __restrict__ dots, const int64_t* __restrict__ order,
                                      int64_t B, int64_t N, A* __restrict__ grad_retention) {
  __shared__ A part[8][32];
  for (int64_t t0 = blockIdx.x * 32ll; t0 < N; t0 += static_cast<int64_t>(gridDim.x) * 32) {
    const int64_t t = t0 + threadIdx.x;
    A s = A(0);
    if (t < N) {
      for (int64_t b = threadIdx.y; b < B; b += blockDim.y) s += dots[b * N + order[b * N + t]];
    }
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && t < N) {
      A total = A(0);
      for (int y = 0; y < static_cast<int>(blockDim.y); ++y) total += part[y][threadIdx.x];
      grad_retention[t] = total;
    }
    __syncthreads();
  }
}

// ---- launch helpers ---------------------------------------------------------------------------
// Calls f(std::integral_constant-like VEC) for the vector width chosen at run time.
template <int VEC>
struct VecTag {
  static constexpr int value = VEC;
};

template <typename T, typename F>
cudaError_t dispatch_vec(int vec, F&& f) {
  if constexpr (sizeof(T) <= 2) {
    if (vec == 8) return f(VecTag<8>{});
  }
  if constexpr (sizeof(T) <= 4) {
    if (vec == 4) return f(VecTag<4>{});
  }
  if (vec == 2) return f(VecTag<2>{});
  return f(VecTag<1>{});
}

}  // namespace

cudaError_t launch_rank(const float* scores, const uint8_t* real, int64_t B, int64_t N,
                        int64_t* rank, int64_t* order, cudaStream_t stream) {
  if (B <= 0 || N <= 0) return cudaSuccess;
  if (N > kMaxSelectN) return cudaErrorInvalidValue;
  const int64_t P = detail::next_pow2(N);
  const size_t smem = static_cast<size_t>(P) * sizeof(uint64_t);
  cudaError_t err = detail::allow_smem(rank_kernel, smem);
  if (err != cudaSuccess) return err;
  rank_kernel<<<static_cast<unsigned>(B), detail::sort_threads(P), smem, stream>>>(
      scores, real, static_cast<int>(N), static_cast<int>(P), rank, order);
  return cudaGetLastError();
}

cudaError_t launch_soft_extract_forward(const void* hidden, DType dt, const int64_t* rank,
                                        const void* retention, int64_t B, int64_t N, int64_t D,
                                        void* out, cudaStream_t stream) {
  if (B <= 0 || N <= 0 || D <= 0) return cudaSuccess;
  return detail::dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    const int vec = detail::vec_width<T>(D, hidden, out);
    return dispatch_vec<T>(vec, [&](auto vtag) {
      constexpr int VEC = decltype(vtag)::value;
      const RowGeometry g = row_geometry(D / VEC);
      const int64_t rows = B * N;
      soft_forward_kernel<T, VEC><<<row_blocks(g, rows), dim3(g.tx, g.ty), 0, stream>>>(
          static_cast<const T*>(hidden), rank, static_cast<const A*>(retention), rows, D,
          static_cast<T*>(out));
      return cudaGetLastError();
    });
  });
}

cudaError_t launch_soft_extract_backward(const void* grad_out, const void* hidden, DType dt,
                                         const int64_t* rank, const int64_t* order,
                                         const void* retention, int64_t B, int64_t N, int64_t D,
                                         void* grad_hidden, void* grad_retention, void* workspace,
                                         cudaStream_t stream) {
  if (N <= 0) return cudaSuccess;
  return detail::dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    A* dots = static_cast<A*>(workspace);
    if (B > 0) {
      const int vec = detail::vec_width<T>(D, grad_out, hidden, grad_hidden);
      const cudaError_t err = dispatch_vec<T>(vec, [&](auto vtag) {
        constexpr int VEC = decltype(vtag)::value;
        const RowGeometry g = row_geometry(D / VEC);
        const int64_t rows = B * N;
        soft_backward_rows_kernel<T, VEC><<<row_blocks(g, rows), dim3(g.tx, g.ty), 0, stream>>>(
            static_cast<const T*>(grad_out), static_cast<const T*>(hidden), rank,
            static_cast<const A*>(retention), rows, D, static_cast<T*>(grad_hidden), dots);
        return cudaGetLastError();
      });
      if (err != cudaSuccess) return err;
    }
    const int64_t blocks = ceil_div(N, 32);
    retention_grad_kernel<A><<<static_cast<unsigned>(blocks < detail::kMaxGridX ? blocks : detail::kMaxGridX),
                               dim3(32, 8), 0, stream>>>(dots, order, B, N,
                                                         static_cast<A*>(grad_retention));
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace power_bert
