// CUDA kernels of power_bert::extract / extract_scored / extract_backward (SPEC 1.2).
//
// select:  one block per row b. Keys (selection_key.h; cls_key() at position 0) go to dynamic
//          shared memory, padded with 0 keys to P = next_pow2(N) (0 is below every real key), a
//          block bitonic sort puts them in descending order, the first k keys flag their
//          positions (flag 1 for the first kept = row_k[b] (or k), flag 2 for the rest), and a
//          block prefix scan over the flags (in position order, both counts packed in one int)
//          writes the flag-1 positions ascending to index[b, 0..kept) and the flag-2 positions
//          ascending to index[b, kept..k).
// gather:  out[b,i,:] = hidden[b,index[b,i],:]; scatter: grad_hidden[b,n,:] = the gradient row
//          selecting n, or zeros. Both are row copies of bytes: the widest unit (16/8/4/2 bytes)
//          dividing the row size and the pointer alignments is moved per thread, tx threads per
//          row and ty rows per block (tx * ty = 256), grid-stride in both grid dimensions.
//          scatter first builds inverse[b,n] = i (or -1) in the int32 workspace (memset + one
//          kernel), then writes every element of grad_hidden exactly once, no atomics.
#include <cuda_runtime.h>

#include <cstdint>

#include "../selection_key.h"
#include "device_utils.cuh"
#include "power_bert_kernels.h"

namespace power_bert {
namespace cuda {
namespace {

using detail::ceil_div;

// ---- select ---------------------------------------------------------------------------------
// Dynamic shared memory: P uint64 keys, then N uint8 flags.
__global__ void __launch_bounds__(1024) select_kernel(const float* __restrict__ scores, const uint8_t* __restrict__ real,
                              int N, int P, int k, const int64_t* __restrict__ row_k,
                              int64_t* __restrict__ index) {
  extern __shared__ uint64_t smem[];
  uint64_t* keys = smem;
  uint8_t* flags = reinterpret_cast<uint8_t*>(smem + P);
  __shared__ int warp_sums[32];

  const int64_t b = blockIdx.x;
  const float* s_row = scores + b * N;
  const uint8_t* r_row = real + b * N;
  for (int p = threadIdx.x; p < P; p += blockDim.x) {
    uint64_t key = 0;
    if (p == 0) {
      key = cls_key();
    } else if (p < N) {
      key = selection_key(s_row[p], r_row[p] != 0, p);
    }
    keys[p] = key;
  }
  for (int p = threadIdx.x; p < N; p += blockDim.x) flags[p] = 0;
  detail::block_bitonic_sort_desc(keys, P);  // syncs before and after
  // Out-of-range row_k values are clamped into [1, k] (the wrappers refuse them on the host).
  int kept = k;
  if (row_k != nullptr) {
    const int64_t r = row_k[b];
    kept = r < 1 ? 1 : (r > k ? k : static_cast<int>(r));
  }
  for (int i = threadIdx.x; i < k; i += blockDim.x) flags[key_position(keys[i])] = i < kept ? 1 : 2;
  __syncthreads();

  // Each thread owns a contiguous run of positions; exclusive scan of the per-thread counts
  // (flag-1 count in the low 16 bits, flag-2 count in the high bits: N <= kMaxSelectN < 2^15).
  const int per = (N + blockDim.x - 1) / blockDim.x;
  const int p0 = threadIdx.x * per;
  const int p1 = p0 + per < N ? p0 + per : N;
  int count = 0;
  for (int p = p0; p < p1; ++p) count += flags[p] == 1 ? 1 : (flags[p] == 2 ? (1 << 16) : 0);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int incl = count;
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const int v = __shfl_up_sync(0xffffffffu, incl, d);
    if (lane >= d) incl += v;
  }
  if (lane == 31) warp_sums[warp] = incl;
  __syncthreads();
  int offset = incl - count;
  for (int w = 0; w < warp; ++w) offset += warp_sums[w];
  int64_t* out = index + b * k;
  int first = offset & 0xFFFF, rest = kept + (offset >> 16);
  for (int p = p0; p < p1; ++p) {
    if (flags[p] == 1) out[first++] = p;
    else if (flags[p] == 2) out[rest++] = p;
  }
}

// ---- row copies -----------------------------------------------------------------------------
struct RowGeometry {
  int tx = 1, ty = 256;
  int64_t units = 0;  // units per row
};

RowGeometry row_geometry(int64_t units) {
  RowGeometry g;
  g.units = units;
  int tx = 1;
  while (tx < units && tx < 256) tx <<= 1;
  g.tx = tx;
  g.ty = 256 / tx;
  return g;
}

dim3 row_grid(const RowGeometry& g, int64_t rows) {
  const int64_t gx = ceil_div(rows, g.ty);
  const int64_t gy = ceil_div(g.units, g.tx);
  return dim3(static_cast<unsigned>(gx < detail::kMaxGridX ? gx : detail::kMaxGridX),
              static_cast<unsigned>(gy < detail::kMaxGridY ? gy : detail::kMaxGridY));
}

// dst row r (item b = r / dst_rows)  <-  src row b*src_rows + map[r], or zeros where map[r] < 0.
// Gather: src hidden (N rows per item), map index [B, k], dst out (k rows per item).
// Scatter: src grad_out (k rows per item), map inverse [B, N], dst grad_hidden (N rows per item).
template <typename U, typename I>
__global__ void copy_rows_kernel(const U* __restrict__ src, const I* __restrict__ map, int64_t src_rows,
                                 int64_t dst_rows, int64_t rows, int64_t units, U* __restrict__ dst) {
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.y) + threadIdx.y; r < rows;
       r += static_cast<int64_t>(gridDim.x) * blockDim.y) {
    const int64_t b = r / dst_rows;
    const int64_t i = map[r];
    U* out = dst + r * units;
    const U* in = i >= 0 ? src + (b * src_rows + i) * units : nullptr;
    const U zero{};
    for (int64_t u = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x; u < units;
         u += static_cast<int64_t>(gridDim.y) * blockDim.x) {
      out[u] = i >= 0 ? in[u] : zero;
    }
  }
}

// inverse[b*N + index[b,i]] = i for every valid index; the workspace was set to -1 first.
__global__ void inverse_kernel(const int64_t* __restrict__ index, int64_t N, int64_t k, int64_t total,
                               int32_t* __restrict__ inverse) {
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = t / k, i = t % k;
    const int64_t p = index[t];
    if (p >= 0 && p < N) inverse[b * N + p] = static_cast<int32_t>(i);
  }
}

// Widest copy unit (bytes) dividing the row size and both pointers' alignments.
int copy_unit(int64_t row_bytes, int elem_bytes, const void* a, const void* b) {
  for (int unit = 16; unit > elem_bytes; unit /= 2) {
    if (row_bytes % unit == 0 && reinterpret_cast<uintptr_t>(a) % unit == 0 &&
        reinterpret_cast<uintptr_t>(b) % unit == 0) {
      return unit;
    }
  }
  return elem_bytes;
}

int elem_size(DType dt) {
  switch (dt) {
    case DType::Float32: return 4;
    case DType::Float16: return 2;
    case DType::BFloat16: return 2;
    case DType::Float64: return 8;
  }
  return 0;
}

// Calls f(U{}) with U the unsigned type of `unit` bytes.
template <typename F>
cudaError_t dispatch_unit(int unit, F&& f) {
  switch (unit) {
    case 16: return f(uint4{});
    case 8: return f(uint2{});
    case 4: return f(uint32_t{});
    case 2: return f(uint16_t{});
  }
  return cudaErrorInvalidValue;
}

// Launches copy_rows_kernel over `rows` rows of D elements of es bytes, with the widest unsigned
// copy unit both pointers allow.
template <typename I>
cudaError_t launch_copy_rows(int64_t D, int es, const void* src, const I* map, int64_t src_rows, int64_t dst_rows,
                             int64_t rows, void* dst, cudaStream_t stream) {
  const int64_t row_bytes = D * es;
  const int unit = copy_unit(row_bytes, es, src, dst);
  const RowGeometry g = row_geometry(row_bytes / unit);
  return dispatch_unit(unit, [&](auto tag) {
    using U = decltype(tag);
    copy_rows_kernel<U, I><<<row_grid(g, rows), dim3(g.tx, g.ty), 0, stream>>>(
        static_cast<const U*>(src), map, src_rows, dst_rows, rows, g.units, static_cast<U*>(dst));
    return cudaGetLastError();
  });
}

// select_kernel's dynamic shared memory: P = next_pow2(N) keys, then N real flags (8-byte aligned).
size_t select_dynamic_bytes(int64_t N) {
  return static_cast<size_t>(detail::next_pow2(N)) * sizeof(uint64_t) + static_cast<size_t>(ceil_div(N, 8) * 8);
}

}  // namespace

int64_t select_shared_bytes(int64_t N) {
  return static_cast<int64_t>(select_dynamic_bytes(N)) + static_cast<int64_t>(sizeof(int) * 32);
}

cudaError_t launch_select(const float* scores, const uint8_t* real, int64_t B, int64_t N,
                          int64_t k, const int64_t* row_k, int64_t* index, cudaStream_t stream) {
  if (B <= 0) return cudaSuccess;
  if (N < 1 || N > kMaxSelectN || k < 1 || k > N) return cudaErrorInvalidValue;
  const int64_t P = detail::next_pow2(N);
  const size_t smem = select_dynamic_bytes(N);
  cudaError_t err = detail::allow_smem(select_kernel, smem);
  if (err != cudaSuccess) return err;
  const int threads = detail::sort_threads(P);
  select_kernel<<<static_cast<unsigned>(B), threads, smem, stream>>>(
      scores, real, static_cast<int>(N), static_cast<int>(P), static_cast<int>(k), row_k, index);
  return cudaGetLastError();
}

cudaError_t launch_gather_rows(const void* hidden, DType dt, const int64_t* index, int64_t B,
                               int64_t N, int64_t k, int64_t D, void* out, cudaStream_t stream) {
  const int es = elem_size(dt);
  if (es == 0) return cudaErrorInvalidValue;
  if (B <= 0 || k <= 0 || D <= 0) return cudaSuccess;
  const int64_t rows = B * k;
  return launch_copy_rows(D, es, hidden, index, N, k, rows, out, stream);
}

cudaError_t launch_scatter_rows(const void* grad_out, DType dt, const int64_t* index, int64_t B,
                                int64_t N, int64_t k, int64_t D, void* grad_hidden,
                                int32_t* workspace, cudaStream_t stream) {
  const int es = elem_size(dt);
  if (es == 0) return cudaErrorInvalidValue;
  if (B <= 0 || N <= 0 || D <= 0) return cudaSuccess;
  cudaError_t err = cudaMemsetAsync(workspace, 0xFF, static_cast<size_t>(B * N) * sizeof(int32_t), stream);
  if (err != cudaSuccess) return err;
  if (k > 0) {
    const int64_t total = B * k;
    const int64_t blocks = ceil_div(total, 256);
    inverse_kernel<<<static_cast<unsigned>(blocks < detail::kMaxGridX ? blocks : detail::kMaxGridX), 256, 0,
                     stream>>>(index, N, k, total, workspace);
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  const int64_t rows = B * N;
  return launch_copy_rows(D, es, grad_out, workspace, k, N, rows, grad_hidden, stream);
}

}  // namespace cuda
}  // namespace power_bert
