// Op schemas of the power_bert library, defined once. The C++ kernels register per device next
// to their code (cpu/ops_cpu.cpp, cuda/ops_cuda.cpp); the Python kernels of the CUDA key (the
// Triton attention; Triton or plain PyTorch where the CUDA kernels were not built) are registered
// by power_bert_ops/_backend.py; each op's fake kernel and autograd by power_bert_ops/ops.py.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>
#ifdef WITH_CUDA
#include <cuda.h>
#endif

namespace power_bert {

int64_t cuda_version() {
#ifdef WITH_CUDA
  return CUDA_VERSION;
#else
  return -1;
#endif
}

TORCH_LIBRARY(power_bert, m) {
  m.def("significance(Tensor attn, Tensor mask, bool exclude_self=True) -> Tensor");
  // k is the output width (a SymInt: torch.compile and torch.export keep it symbolic; the C++
  // kernels take it as int64_t); row_k (int64 [B], 1 <= row_k[b] <= k), when given, the rows each
  // example keeps: its top row_k[b] positions fill the first slots (ascending), the next-ranked
  // positions the rest (ascending, out_mask 0). See power_bert_ops/reference.py select_positions.
  m.def(
      "extract(Tensor hidden, Tensor attn, Tensor mask, SymInt k, bool exclude_self=True, Tensor? row_k=None) "
      "-> (Tensor out, Tensor index, Tensor out_mask)");
  m.def(
      "extract_scored(Tensor hidden, Tensor scores, Tensor mask, SymInt k, Tensor? row_k=None) "
      "-> (Tensor out, Tensor index, Tensor out_mask)");
  m.def("extract_backward(Tensor grad_out, Tensor index, SymInt n) -> Tensor");
  m.def("soft_extract(Tensor hidden, Tensor scores, Tensor mask, Tensor retention) -> Tensor");
  m.def(
      "soft_extract_backward(Tensor grad_out, Tensor hidden, Tensor scores, Tensor mask, "
      "Tensor retention) -> (Tensor grad_hidden, Tensor grad_retention)");
  // Attention that also yields significance without materialising B*H*N*N probabilities
  // (q, k, v, out in scaled_dot_product_attention's layout [B, H, N, d]).
  m.def(
      "attention(Tensor q, Tensor k, Tensor v, Tensor mask, float dropout_p=0., "
      "bool need_significance=True, bool exclude_self=True) -> (Tensor out, Tensor significance)");
  // The differentiable core: `seed` is an int64 [1] tensor on q's device (dropout mask replayed
  // in the backward from it); lse [B, H, N] (float32; float64 for float64 q) is the row log-sum-exp the backward needs.
  m.def(
      "_attention_forward(Tensor q, Tensor k, Tensor v, Tensor mask, float dropout_p, "
      "bool need_significance, bool exclude_self, Tensor seed) -> (Tensor out, Tensor significance, Tensor lse)");
  m.def(
      "_attention_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "
      "Tensor mask, float dropout_p, Tensor seed) -> (Tensor grad_q, Tensor grad_k, Tensor grad_v)");
  // CUDA_VERSION the kernels were built with, -1 when built without CUDA.
  m.def("_cuda_version() -> int", &cuda_version);
}

// The public attention op: draws the dropout seed on q's device (no host synchronisation),
// then runs the differentiable core, whose kernels are per device.
std::tuple<at::Tensor, at::Tensor> attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                             const at::Tensor& mask, double dropout_p, bool need_significance,
                                             bool exclude_self) {
  const at::Tensor seed = dropout_p > 0.0
                              ? at::randint(2147483647LL, {1}, q.options().dtype(at::kLong))
                              : at::zeros({1}, q.options().dtype(at::kLong));
  static auto forward = c10::Dispatcher::singleton()
                            .findSchemaOrThrow("power_bert::_attention_forward", "")
                            .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                                const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, double,
                                bool, bool, const at::Tensor&)>();
  auto res = forward.call(q, k, v, mask, dropout_p, need_significance, exclude_self, seed);
  return {std::get<0>(res), std::get<1>(res)};
}

TORCH_LIBRARY_IMPL(power_bert, CompositeImplicitAutograd, m) {
  m.impl("attention", &attention);
}

}  // namespace power_bert
