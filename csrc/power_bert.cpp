// Op schemas of the power_bert library, defined once. Kernels register per device next to
// their code (cpu/*.cpp, cuda/ops_cuda.cpp); autograd and fake kernels are registered from
// Python (power_bert_ops/ops.py).
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
  m.def(
      "extract(Tensor hidden, Tensor attn, Tensor mask, int k, bool exclude_self=True) "
      "-> (Tensor out, Tensor index, Tensor out_mask)");
  m.def(
      "extract_scored(Tensor hidden, Tensor scores, Tensor mask, int k) "
      "-> (Tensor out, Tensor index, Tensor out_mask)");
  m.def("extract_backward(Tensor grad_out, Tensor index, int n) -> Tensor");
  m.def("soft_extract(Tensor hidden, Tensor scores, Tensor mask, Tensor retention) -> Tensor");
  m.def(
      "soft_extract_backward(Tensor grad_out, Tensor hidden, Tensor scores, Tensor mask, "
      "Tensor retention) -> (Tensor grad_hidden, Tensor grad_retention)");
  // CUDA_VERSION the kernels were built with, -1 when built without CUDA.
  m.def("_cuda_version() -> int", &cuda_version);
}

}  // namespace power_bert
