// CUDA kernel of power_bert::significance (SPEC 1.1):
//   sig[b,k] = sum_h sum_{q real, q != k when exclude_self} A[b,h,q,k], -inf at padding.
// The diagonal is skipped, not summed and subtracted: a non-finite A[b,h,k,k] would make its
// column inf - inf = NaN.
//
// Pass 1 (significance_partial_kernel) reads every probability of the real query rows exactly
// once, coalesced: a block owns (b, a tile of columns, a chunk of consecutive (h,q) rows);
// threadIdx.x walks the columns (VEC consecutive columns per thread, one aligned vector load),
// threadIdx.y the rows. The H*N rows of a batch are split into S chunks so that the grid has
// about 4 blocks per SM even at B = 1. Each block writes its column sums to partial[s,b,:]
// (acc type), each row's diagonal element left out for exclude_self.
// Pass 2 (significance_finalize_kernel) sums the S partials of each (b,k) in a fixed order
// (strided over 16 threads, then those 16 sums in ascending order) and writes -inf at padding
// keys. No atomics: the result is bitwise reproducible for
// a given GPU (sm_count fixes the split).
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "device_utils.cuh"
#include "power_bert_kernels.h"

namespace power_bert {
namespace cuda {
namespace {

using detail::acc_t;
using detail::ceil_div;

constexpr int kThreads = 256;      // threads per block of pass 1
constexpr int kMinChunkRows = 32;  // fewest (h,q) rows per chunk (a block streams >= 32 rows)
constexpr int kMaxVec = 8;         // widest vector (16 bytes of 16-bit data)

// Launch geometry of pass 1 for a vector width `vec`.
struct Geometry {
  int tx = 32, ty = 8;       // block shape: tx column-threads x ty row-threads
  int64_t tiles = 1;         // column tiles of tx * vec columns
  int64_t chunks = 1;        // S
  int64_t chunk_rows = 0;    // (h,q) rows per chunk
};

Geometry make_geometry(int64_t B, int64_t H, int64_t N, int sm_count, int vec) {
  Geometry g;
  const int64_t groups = ceil_div(N, vec);  // column groups of vec columns
  int64_t tx = 32;
  while (tx < groups && tx < kThreads) tx <<= 1;
  g.tx = static_cast<int>(tx);
  g.ty = kThreads / g.tx;
  g.tiles = ceil_div(groups, tx);
  const int64_t rows = H * N;
  const int64_t target = 4 * static_cast<int64_t>(sm_count > 0 ? sm_count : 1);
  const int64_t base = g.tiles * B;
  int64_t want = base >= target ? 1 : ceil_div(target, base);
  if (rows <= 0) {
    g.chunks = 1;
    g.chunk_rows = 0;
    return g;
  }
  int64_t chunk_rows = ceil_div(rows, want);
  if (chunk_rows < kMinChunkRows) chunk_rows = kMinChunkRows;
  g.chunk_rows = chunk_rows;
  g.chunks = ceil_div(rows, chunk_rows);
  return g;
}

// grid.x = blocks over (b, s, tile), tile fastest. Block (tx, ty).
template <typename T, int VEC>
__global__ void
significance_partial_kernel(const T* __restrict__ attn, const uint8_t* __restrict__ real, int64_t B,
                            int64_t H, int64_t N, int64_t tiles, int64_t chunks, int64_t chunk_rows,
                            bool exclude_self, acc_t<T>* __restrict__ partial) {
  using A = acc_t<T>;
  __shared__ int rows_s[kThreads];  // row offsets (from r0) of the real rows of a batch
  __shared__ int q_s[kThreads];     // their query positions q
  __shared__ int warp_count[kThreads / 32];
  __shared__ A red[kThreads * VEC];

  const int64_t total_blocks = B * chunks * tiles;
  const int tid = threadIdx.y * blockDim.x + threadIdx.x;
  const int lane = tid & 31, warp = tid >> 5;
  const int nwarps = (blockDim.x * blockDim.y) >> 5;
  const int64_t rows = H * N;

  for (int64_t blk = blockIdx.x; blk < total_blocks; blk += gridDim.x) {
    const int64_t tile = blk % tiles;
    const int64_t s = (blk / tiles) % chunks;
    const int64_t b = blk / (tiles * chunks);
    const int64_t c0 = (tile * blockDim.x + threadIdx.x) * VEC;  // first column of this thread
    const bool col_ok = c0 < N;  // VEC > 1 only when N % VEC == 0: the whole group is in range
    const int64_t r_begin = s * chunk_rows;
    const int64_t r_end = r_begin + chunk_rows < rows ? r_begin + chunk_rows : rows;
    const T* a_b = attn + b * rows * N;
    const uint8_t* real_b = real + b * N;

    A acc[VEC];
#pragma unroll
    for (int j = 0; j < VEC; ++j) acc[j] = A(0);

    for (int64_t r0 = r_begin; r0 < r_end; r0 += kThreads) {
      // Compact the real rows of the next kThreads rows (ascending) into rows_s.
      const int64_t r = r0 + tid;
      const int64_t q = r % N;
      const bool keep = r < r_end && real_b[q] != 0;
      const unsigned ballot = __ballot_sync(0xffffffffu, keep);
      __syncthreads();  // rows_s / warp_count of the previous batch fully consumed
      if (lane == 0) warp_count[warp] = __popc(ballot);
      __syncthreads();
      int offset = 0, count = 0;
      for (int w = 0; w < nwarps; ++w) {
        const int c = warp_count[w];
        if (w < warp) offset += c;
        count += c;
      }
      if (keep) {
        const int slot = offset + __popc(ballot & ((1u << lane) - 1u));
        rows_s[slot] = static_cast<int>(r - r0);
        q_s[slot] = static_cast<int>(q);
      }
      __syncthreads();
      if (col_ok) {
#pragma unroll 4
        for (int j = threadIdx.y; j < count; j += blockDim.y) {
          const int64_t row = r0 + rows_s[j];
          const T* p = a_b + row * N + c0;
          const detail::Vec<T, VEC> v = *reinterpret_cast<const detail::Vec<T, VEC>*>(p);
          // The element of A[b,h,q,q] among this thread's columns, or -1: skipped for exclude_self.
          const int64_t skip = exclude_self ? q_s[j] - c0 : -1;
#pragma unroll
          for (int e = 0; e < VEC; ++e) {
            if (e != skip) acc[e] += detail::to_acc(v.v[e]);
          }
        }
      }
    }

    // Sum the ty row-threads of each column in ascending threadIdx.y.
    if (blockDim.y > 1) {
#pragma unroll
      for (int e = 0; e < VEC; ++e) red[tid * VEC + e] = acc[e];
      __syncthreads();
      if (threadIdx.y == 0) {
        for (int y = 1; y < static_cast<int>(blockDim.y); ++y) {
#pragma unroll
          for (int e = 0; e < VEC; ++e) acc[e] += red[(y * blockDim.x + threadIdx.x) * VEC + e];
        }
      }
      __syncthreads();  // red reusable by the next grid-stride iteration
    }
    if (threadIdx.y == 0 && col_ok) {
      A* out = partial + (s * B + b) * N + c0;
#pragma unroll
      for (int e = 0; e < VEC; ++e) out[e] = acc[e];
    }
  }
}

// Block (32, kFinalizeRows): threadIdx.x over 32 consecutive (b, k), threadIdx.y over the S
// partials (s = y, y + kFinalizeRows, ...), then row 0
// adds the kFinalizeRows per-thread sums in ascending y: a fixed order (deterministic), and S
// serial loads per (b, k) become S / kFinalizeRows (S is ~4 * SMs at B = 1).
constexpr int kFinalizeRows = 16;

template <typename A>
__global__ void __launch_bounds__(32 * kFinalizeRows)
significance_finalize_kernel(const A* __restrict__ partial, const uint8_t* __restrict__ real, int64_t B,
                             int64_t N, int64_t chunks, float* __restrict__ scores) {
  __shared__ A part_s[kFinalizeRows][32];
  const int64_t total = B * N;
  // Block-uniform loop (barriers inside); lanes past the end idle.
  for (int64_t i0 = blockIdx.x * 32ll; i0 < total; i0 += static_cast<int64_t>(gridDim.x) * 32) {
    const int64_t i = i0 + threadIdx.x;
    const bool live = i < total && real[i] != 0;
    A v = A(0);
    if (live) {
      for (int64_t s = threadIdx.y; s < chunks; s += kFinalizeRows) v += partial[s * total + i];
    }
    part_s[threadIdx.y][threadIdx.x] = v;
    __syncthreads();
    if (threadIdx.y == 0 && i < total) {
      if (!live) {
        scores[i] = -INFINITY;
      } else {
        A sv = A(0);
        for (int y = 0; y < kFinalizeRows; ++y) sv += part_s[y][threadIdx.x];
        scores[i] = static_cast<float>(sv);
      }
    }
    __syncthreads();  // part_s reusable by the next iteration
  }
}

template <typename T, int VEC>
cudaError_t launch_typed_vec(const T* attn, const uint8_t* real, int64_t B, int64_t H, int64_t N,
                             bool exclude_self, float* workspace, float* scores, int sm_count,
                             cudaStream_t stream) {
  using A = acc_t<T>;
  const Geometry g = make_geometry(B, H, N, sm_count, VEC);
  A* partial = reinterpret_cast<A*>(workspace);
  const int64_t blocks = B * g.chunks * g.tiles;
  const dim3 block(g.tx, g.ty);
  const dim3 grid(static_cast<unsigned>(blocks < detail::kMaxGridX ? blocks : detail::kMaxGridX));
  significance_partial_kernel<T, VEC><<<grid, block, 0, stream>>>(
      attn, real, B, H, N, g.tiles, g.chunks, g.chunk_rows, exclude_self, partial);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const int64_t fblocks = ceil_div(B * N, 32);
  significance_finalize_kernel<A><<<static_cast<unsigned>(fblocks < detail::kMaxGridX ? fblocks : detail::kMaxGridX),
                                    dim3(32, kFinalizeRows), 0, stream>>>(partial, real, B, N, g.chunks,
                                                                          scores);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_typed(const void* attn, const uint8_t* real, int64_t B, int64_t H, int64_t N,
                         bool exclude_self, float* workspace, float* scores, int sm_count,
                         cudaStream_t stream) {
  const T* a = static_cast<const T*>(attn);
  const int vec = detail::vec_width<T>(N, attn);
  if constexpr (sizeof(T) <= 2) {
    if (vec == 8)
      return launch_typed_vec<T, 8>(a, real, B, H, N, exclude_self, workspace, scores, sm_count, stream);
  }
  if constexpr (sizeof(T) <= 4) {
    if (vec == 4)
      return launch_typed_vec<T, 4>(a, real, B, H, N, exclude_self, workspace, scores, sm_count, stream);
  }
  if (vec == 2)
    return launch_typed_vec<T, 2>(a, real, B, H, N, exclude_self, workspace, scores, sm_count, stream);
  return launch_typed_vec<T, 1>(a, real, B, H, N, exclude_self, workspace, scores, sm_count, stream);
}

}  // namespace

int64_t significance_workspace_elems(int64_t B, int64_t H, int64_t N, int sm_count) {
  if (B <= 0 || N <= 0) return 0;
  // The widest vector gives the fewest column tiles, hence the most chunks: an upper bound for
  // every dtype and alignment. Partials [S,B,N] in acc type; two floats per element so that
  // double accumulators (Float64) fit too.
  const Geometry g = make_geometry(B, H, N, sm_count, kMaxVec);
  return 2 * g.chunks * B * N;
}

cudaError_t launch_significance(const void* attn, DType dt, const uint8_t* real, int64_t B,
                                int64_t H, int64_t N, bool exclude_self, float* workspace,
                                float* scores, int sm_count, cudaStream_t stream) {
  if (B <= 0 || N <= 0) return cudaSuccess;
  return detail::dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    return launch_typed<T>(attn, real, B, H, N, exclude_self, workspace, scores, sm_count, stream);
  });
}

}  // namespace cuda
}  // namespace power_bert
