// Internal declarations shared by the CPU kernel files; ops_cpu.cpp registers them.
#pragma once
#include <ATen/ATen.h>
#include <tuple>

namespace power_bert {
namespace cpu {

// attn [B,H,N,N] contiguous, real bool [B,N] contiguous -> float32 [B,N] (SPEC 1.1).
at::Tensor significance_scores(const at::Tensor& attn, const at::Tensor& real, bool exclude_self);

at::Tensor significance(const at::Tensor& attn, const at::Tensor& mask, bool exclude_self);
std::tuple<at::Tensor, at::Tensor, at::Tensor> extract(const at::Tensor& hidden, const at::Tensor& attn,
                                                       const at::Tensor& mask, int64_t k,
                                                       bool exclude_self, const c10::optional<at::Tensor>& row_k);
std::tuple<at::Tensor, at::Tensor, at::Tensor> extract_scored(const at::Tensor& hidden,
                                                              const at::Tensor& scores,
                                                              const at::Tensor& mask, int64_t k,
                                                              const c10::optional<at::Tensor>& row_k);
at::Tensor extract_backward(const at::Tensor& grad_out, const at::Tensor& index, int64_t n);
at::Tensor soft_extract(const at::Tensor& hidden, const at::Tensor& scores, const at::Tensor& mask,
                        const at::Tensor& retention);
std::tuple<at::Tensor, at::Tensor> soft_extract_backward(const at::Tensor& grad_out,
                                                         const at::Tensor& hidden,
                                                         const at::Tensor& scores,
                                                         const at::Tensor& mask,
                                                         const at::Tensor& retention);

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_forward(const at::Tensor& q, const at::Tensor& k,
                                                                 const at::Tensor& v, const at::Tensor& mask,
                                                                 double dropout_p, bool need_significance,
                                                                 bool exclude_self, const at::Tensor& seed);
std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward(const at::Tensor& grad_out, const at::Tensor& q,
                                                                  const at::Tensor& k, const at::Tensor& v,
                                                                  const at::Tensor& out, const at::Tensor& lse,
                                                                  const at::Tensor& mask, double dropout_p,
                                                                  const at::Tensor& seed);

}  // namespace cpu
}  // namespace power_bert
