// The CUDA kernels of every power_bert op: argument checks, output allocation and launches on the
// current stream (kernels in csrc/cuda/*.cu behind power_bert_kernels.h). Compiled only when
// torch has CUDA. Nothing here synchronises the host: in particular the data-dependent
// "[CLS] is real" check (check_cls_real) is left to the Python wrapper, and extract_backward
// does not validate index values (out-of-range ones are ignored by the kernel).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContextLight.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include <tuple>

#include "../checks.h"
#include "../op_table.h"
#include "../poison.h"
#include "power_bert_kernels.h"

namespace power_bert {
namespace cuda {
namespace {

DType to_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return DType::Float32;
    case at::kHalf: return DType::Float16;
    case at::kBFloat16: return DType::BFloat16;
    case at::kDouble: return DType::Float64;
    default: break;
  }
  TORCH_CHECK_TYPE(false, "power_bert: unsupported dtype ", t);
  return DType::Float32;  // unreachable
}

// uint8 [B, N], 1 = real token, contiguous (a bool mask is reinterpreted without a copy).
at::Tensor real_bytes(const at::Tensor& mask) { return real_tokens(mask).view(at::kByte); }

at::Tensor float_scores(const at::Tensor& scores) { return scores.to(at::kFloat).contiguous(); }

int sm_count() { return at::cuda::getCurrentDeviceProperties()->multiProcessorCount; }

// The row-wise selection keeps a row's N keys in one block's shared memory: N <= kMaxSelectN,
// and within the device's opt-in limit (e.g. 64 KB on sm_75, which N > 4096 exceeds).
void check_select_n(const at::Tensor& hidden, const char* op) {
  const int64_t N = hidden.size(1);
  TORCH_CHECK_VALUE(N <= kMaxSelectN, "power_bert.", op, ": the CUDA kernel supports N <= ", kMaxSelectN,
                    " positions per row, got N = ", N, "; use backend='triton' or 'reference'");
  const cudaDeviceProp* prop = at::cuda::getDeviceProperties(hidden.device().index());
  const int64_t need = select_shared_bytes(N);
  TORCH_CHECK_VALUE(need <= static_cast<int64_t>(prop->sharedMemPerBlockOptin), "power_bert.", op,
                    ": N = ", N, " needs ", need, " bytes of shared memory per block, more than ", prop->name,
                    " allows (", prop->sharedMemPerBlockOptin, "); use backend='triton' or 'reference'");
}

// attn [B,H,N,N] contiguous, real uint8 [B,N] contiguous -> float32 [B,N].
at::Tensor significance_scores(const at::Tensor& attn, const at::Tensor& real, bool exclude_self) {
  const int64_t B = attn.size(0), H = attn.size(1), N = attn.size(2);
  at::Tensor out = new_output({B, N}, attn.options().dtype(at::kFloat));
  if (out.numel() == 0) return out;
  const int sms = sm_count();
  at::Tensor workspace =
      at::empty({significance_workspace_elems(B, H, N, sms)}, attn.options().dtype(at::kFloat));
  C10_CUDA_CHECK(launch_significance(attn.const_data_ptr(), to_dtype(attn.scalar_type()),
                                     real.const_data_ptr<uint8_t>(), B, H, N, exclude_self,
                                     workspace.mutable_data_ptr<float>(), out.mutable_data_ptr<float>(),
                                     sms, c10::cuda::getCurrentCUDAStream()));
  return out;
}

// scores float32 [B,N] contiguous, real uint8 [B,N] contiguous.
std::tuple<at::Tensor, at::Tensor, at::Tensor> extract_from_scores(const at::Tensor& hidden,
                                                                   const at::Tensor& scores,
                                                                   const at::Tensor& real,
                                                                   const at::Tensor& mask, int64_t k,
                                                                   const c10::optional<at::Tensor>& row_k) {
  const int64_t B = hidden.size(0), N = hidden.size(1), D = hidden.size(2);
  const at::Tensor rk = row_k.has_value() ? row_k->contiguous() : at::Tensor();
  at::Tensor index = new_output({B, k}, hidden.options().dtype(at::kLong));
  at::Tensor out = new_output({B, k, D}, hidden.options());
  if (B > 0) {
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    C10_CUDA_CHECK(launch_select(scores.const_data_ptr<float>(), real.const_data_ptr<uint8_t>(), B, N, k,
                                 rk.defined() ? rk.const_data_ptr<int64_t>() : nullptr,
                                 index.mutable_data_ptr<int64_t>(), stream));
    const at::Tensor h = hidden.contiguous();
    C10_CUDA_CHECK(launch_gather_rows(h.const_data_ptr(), to_dtype(h.scalar_type()),
                                      index.const_data_ptr<int64_t>(), B, N, k, D, out.mutable_data_ptr(),
                                      stream));
  }
  return {out, index, extract_out_mask(mask, index, row_k)};
}

// rank and order int64 [B,N] of the rows of scores (B > 0).
std::tuple<at::Tensor, at::Tensor> rank_order(const at::Tensor& scores, const at::Tensor& mask,
                                              cudaStream_t stream) {
  const int64_t B = scores.size(0), N = scores.size(1);
  const at::Tensor s = float_scores(scores);
  const at::Tensor real = real_bytes(mask);
  at::Tensor rank = at::empty({B, N}, scores.options().dtype(at::kLong));
  at::Tensor order = at::empty({B, N}, scores.options().dtype(at::kLong));
  C10_CUDA_CHECK(launch_rank(s.const_data_ptr<float>(), real.const_data_ptr<uint8_t>(), B, N,
                             rank.mutable_data_ptr<int64_t>(), order.mutable_data_ptr<int64_t>(), stream));
  return {rank, order};
}

// ---- ops --------------------------------------------------------------------------------------

at::Tensor significance(const at::Tensor& attn, const at::Tensor& mask, bool exclude_self) {
  check_significance_args(attn, mask, "significance");
  const c10::cuda::CUDAGuard guard(attn.device());
  return significance_scores(attn.contiguous(), real_bytes(mask), exclude_self);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> extract(const at::Tensor& hidden, const at::Tensor& attn,
                                                       const at::Tensor& mask, int64_t k,
                                                       bool exclude_self, const c10::optional<at::Tensor>& row_k) {
  check_extract_args(hidden, attn, mask, k, row_k, "extract");
  check_select_n(hidden, "extract");
  const c10::cuda::CUDAGuard guard(hidden.device());
  const at::Tensor real = real_bytes(mask);
  const at::Tensor scores = significance_scores(attn.contiguous(), real, exclude_self);
  return extract_from_scores(hidden, scores, real, mask, k, row_k);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> extract_scored(const at::Tensor& hidden,
                                                              const at::Tensor& scores,
                                                              const at::Tensor& mask, int64_t k,
                                                              const c10::optional<at::Tensor>& row_k) {
  check_extract_scored_args(hidden, scores, mask, k, row_k, "extract_scored");
  check_select_n(hidden, "extract_scored");
  const c10::cuda::CUDAGuard guard(hidden.device());
  return extract_from_scores(hidden, float_scores(scores), real_bytes(mask), mask, k, row_k);
}

at::Tensor extract_backward(const at::Tensor& grad_out, const at::Tensor& index, int64_t n) {
  check_extract_backward_args(grad_out, index, n, "extract_backward");
  const int64_t B = grad_out.size(0), k = grad_out.size(1), D = grad_out.size(2);
  const c10::cuda::CUDAGuard guard(grad_out.device());
  at::Tensor grad_hidden = new_output({B, n, D}, grad_out.options());
  if (B == 0) return grad_hidden;
  const at::Tensor g = grad_out.contiguous();
  const at::Tensor idx = index.contiguous();
  at::Tensor workspace = at::empty({B, n}, grad_out.options().dtype(at::kInt));
  C10_CUDA_CHECK(launch_scatter_rows(g.const_data_ptr(), to_dtype(g.scalar_type()), idx.const_data_ptr<int64_t>(),
                                     B, n, k, D, grad_hidden.mutable_data_ptr(),
                                     workspace.mutable_data_ptr<int32_t>(), c10::cuda::getCurrentCUDAStream()));
  return grad_hidden;
}

at::Tensor soft_extract(const at::Tensor& hidden, const at::Tensor& scores, const at::Tensor& mask,
                        const at::Tensor& retention) {
  check_soft_extract_args(hidden, scores, mask, retention, "soft_extract");
  check_select_n(hidden, "soft_extract");
  const int64_t B = hidden.size(0), N = hidden.size(1), D = hidden.size(2);
  const c10::cuda::CUDAGuard guard(hidden.device());
  at::Tensor out = new_output({B, N, D}, hidden.options());
  if (B == 0) return out;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const auto [rank, order] = rank_order(scores, mask, stream);
  const at::Tensor h = hidden.contiguous();
  const at::Tensor r = retention.to(acc_dtype(hidden)).contiguous();
  C10_CUDA_CHECK(launch_soft_extract_forward(h.const_data_ptr(), to_dtype(h.scalar_type()),
                                             rank.const_data_ptr<int64_t>(), r.const_data_ptr(), B, N, D,
                                             out.mutable_data_ptr(), stream));
  return out;
}

std::tuple<at::Tensor, at::Tensor> soft_extract_backward(const at::Tensor& grad_out, const at::Tensor& hidden,
                                                         const at::Tensor& scores, const at::Tensor& mask,
                                                         const at::Tensor& retention) {
  check_soft_extract_backward_args(grad_out, hidden, scores, mask, retention, "soft_extract_backward");
  check_select_n(hidden, "soft_extract_backward");
  const int64_t B = hidden.size(0), N = hidden.size(1), D = hidden.size(2);
  const at::ScalarType acc = acc_dtype(hidden);
  const c10::cuda::CUDAGuard guard(hidden.device());
  at::Tensor grad_hidden = new_output({B, N, D}, hidden.options());
  at::Tensor grad_r = new_output({N}, retention.options().dtype(acc));
  if (B == 0) return {grad_hidden, grad_r.zero_().to(retention.scalar_type())};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const auto [rank, order] = rank_order(scores, mask, stream);
  const at::Tensor h = hidden.contiguous();
  const at::Tensor g = grad_out.to(hidden.scalar_type()).contiguous();
  const at::Tensor r = retention.to(acc).contiguous();
  at::Tensor workspace = at::empty({B, N}, hidden.options().dtype(acc));
  C10_CUDA_CHECK(launch_soft_extract_backward(
      g.const_data_ptr(), h.const_data_ptr(), to_dtype(h.scalar_type()), rank.const_data_ptr<int64_t>(),
      order.const_data_ptr<int64_t>(), r.const_data_ptr(), B, N, D, grad_hidden.mutable_data_ptr(),
      grad_r.mutable_data_ptr(), workspace.mutable_data_ptr(), stream));
  return {grad_hidden, grad_r.to(retention.scalar_type())};
}

}  // namespace
}  // namespace cuda
}  // namespace power_bert

TORCH_LIBRARY_IMPL(power_bert, CUDA, m) { POWER_BERT_IMPL_SELECTION_OPS(m, power_bert::cuda); }
