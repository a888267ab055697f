// Launchers of the CUDA kernels. Raw pointers and a stream in: this header and the .cu files
// that implement it need only CUDA's own headers (no torch), so CI can compile them with nvcc
// on a machine whose torch has no CUDA. The torch glue is csrc/cuda/ops_cuda.cpp.
//
// Conventions: every tensor is contiguous, row-major. `real` is uint8 [B, N], 1 = real token.
// "acc" is float for Float32/Float16/BFloat16 data and double for Float64 data.
// Every launcher writes every element of its outputs (callers may poison them first) and
// returns the first CUDA error it met (cudaSuccess otherwise). Nothing synchronises the host.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

namespace power_bert {
namespace cuda {

enum class DType : int { Float32 = 0, Float16 = 1, BFloat16 = 2, Float64 = 3 };

// Largest N the row-wise selection kernels accept (keys live in shared memory).
constexpr int64_t kMaxSelectN = 8192;
// Shared memory (dynamic + static bytes) one block of the selection kernels (launch_select,
// launch_rank) needs at N; callers compare it with the device's opt-in limit per block.
int64_t select_shared_bytes(int64_t N);

// ---- significance (SPEC 1.1) -------------------------------------------------------------
// Number of float elements of workspace launch_significance needs (sized for double partials,
// so valid for every dtype; depends on sm_count, which must match the launch's).
int64_t significance_workspace_elems(int64_t B, int64_t H, int64_t N, int sm_count);
// attn [B,H,N,N] (dtype dt) -> scores float [B,N]; -inf at padding keys. Reads attn once,
// split over enough blocks to fill `sm_count` SMs even at B = 1.
cudaError_t launch_significance(const void* attn, DType dt, const uint8_t* real, int64_t B,
                                int64_t H, int64_t N, bool exclude_self, float* workspace,
                                float* scores, int sm_count, cudaStream_t stream);

// ---- extract (SPEC 1.2) -----------------------------------------------------------------------
// scores float [B,N] -> index int64 [B,k]: position 0 plus the k-1 highest keys of the others
// (selection_key.h), ascending. 1 <= k <= N <= kMaxSelectN. row_k (int64 [B], or null for all
// k): row b's row_k[b] highest first (ascending), then the rest (ascending); clamped to [1, k].
cudaError_t launch_select(const float* scores, const uint8_t* real, int64_t B, int64_t N,
                          int64_t k, const int64_t* row_k, int64_t* index, cudaStream_t stream);
// out[b,i,:] = hidden[b,index[b,i],:]. hidden [B,N,D], out [B,k,D] (dtype dt).
cudaError_t launch_gather_rows(const void* hidden, DType dt, const int64_t* index, int64_t B,
                               int64_t N, int64_t k, int64_t D, void* out, cudaStream_t stream);
// grad_hidden [B,N,D] = 0 except grad_hidden[b,index[b,i],:] = grad_out[b,i,:] (indices unique,
// no atomics). Writes every element of grad_hidden. workspace: int32 [B,N] (overwritten: the
// inverse map n -> i, or -1). Index values outside [0, N) are ignored (their rows stay zero).
cudaError_t launch_scatter_rows(const void* grad_out, DType dt, const int64_t* index, int64_t B,
                                int64_t N, int64_t k, int64_t D, void* grad_hidden,
                                int32_t* workspace, cudaStream_t stream);

// ---- soft-extract (SPEC 1.3) --------------------------------------------------------------------
// scores float [B,N] -> rank int64 [B,N] (rank of each position, 0 = best, no [CLS] special
// case) and order int64 [B,N] (position at each rank). N <= kMaxSelectN.
cudaError_t launch_rank(const float* scores, const uint8_t* real, int64_t B, int64_t N,
                        int64_t* rank, int64_t* order, cudaStream_t stream);
// out[b,p,:] = hidden[b,p,:] * retention[rank[b,p]]; retention is acc [N].
cudaError_t launch_soft_extract_forward(const void* hidden, DType dt, const int64_t* rank,
                                        const void* retention, int64_t B, int64_t N, int64_t D,
                                        void* out, cudaStream_t stream);
// grad_hidden[b,p,:] = grad_out[b,p,:] * retention[rank[b,p]]
// grad_retention[t] = sum_b dot(grad_out[b,order[b,t],:], hidden[b,order[b,t],:]) (acc, summed
// over b in a fixed order: deterministic). workspace: acc [B,N].
cudaError_t launch_soft_extract_backward(const void* grad_out, const void* hidden, DType dt,
                                         const int64_t* rank, const int64_t* order,
                                         const void* retention, int64_t B, int64_t N, int64_t D,
                                         void* grad_hidden, void* grad_retention, void* workspace,
                                         cudaStream_t stream);

}  // namespace cuda
}  // namespace power_bert
