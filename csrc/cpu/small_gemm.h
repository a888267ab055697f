// Row-major matrix products on raw pointers for the CPU kernels' per-(batch row, head) loops,
// where each product is small (a few dozen rows) and ATen's mm (a tensor per operand, the
// dispatcher, its checks) would cost more than the arithmetic.
//
// The products go straight to the Fortran BLAS that torch links (sgemm_ / dgemm_, exported by
// libtorch_cpu on the x86-64 wheels, MKL there). The symbols are weak: on a torch build that
// exports no BLAS they are null and the product falls back to ATen's mm over the same memory.
// POWER_BERT_CPU_BLAS=aten in the environment when the library loads takes that fallback too
// (the tests run the kernels both ways).
#pragma once
#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>

extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const float* alpha,
            const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
            const int* ldc) __attribute__((weak));
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const double* alpha,
            const double* a, const int* lda, const double* b, const int* ldb, const double* beta, double* c,
            const int* ldc) __attribute__((weak));
}

namespace power_bert {
namespace cpu {

inline bool direct_blas_allowed() {
  static const bool on = [] {
    const char* v = std::getenv("POWER_BERT_CPU_BLAS");
    return v == nullptr || std::strcmp(v, "aten") != 0;
  }();
  return on;
}

// True when the direct BLAS path serves T (else small_gemm uses ATen's mm).
template <typename T>
inline bool has_direct_blas() {
  if (!direct_blas_allowed()) return false;
  if constexpr (std::is_same_v<T, float>) return sgemm_ != nullptr;
  if constexpr (std::is_same_v<T, double>) return dgemm_ != nullptr;
  return false;
}

// C[m, n] = op(A)[m, k] @ op(B)[k, n], every matrix row-major with a unit column stride.
// A is stored [m, k] (row stride lda), or [k, m] when trans_a (op(A) = A^T); likewise B is
// stored [k, n], or [n, k] when trans_b. C has row stride ldc and is overwritten.
template <typename T>
void small_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b,
                int64_t ldb, T* c, int64_t ldc, const at::TensorOptions& options) {
  if (m == 0 || n == 0) return;
  const int64_t a_cols = trans_a ? m : k, b_cols = trans_b ? k : n;
  // A one-row operand may carry any row stride; BLAS wants at least its row length.
  lda = std::max<int64_t>(lda, std::max<int64_t>(1, a_cols));
  ldb = std::max<int64_t>(ldb, std::max<int64_t>(1, b_cols));
  ldc = std::max<int64_t>(ldc, n);
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();
  const bool fits = std::max({m, n, k, lda, ldb, ldc}) <= kIntMax;
  if (has_direct_blas<T>() && fits && k > 0) {
    // Column-major BLAS sees each row-major matrix transposed: C^T = op(B)^T op(A)^T.
    const char ta = trans_b ? 'T' : 'N', tb = trans_a ? 'T' : 'N';
    const int mi = int(n), ni = int(m), ki = int(k), la = int(ldb), lb = int(lda), lc = int(ldc);
    const T one = 1, zero = 0;
    if constexpr (std::is_same_v<T, float>) {
      sgemm_(&ta, &tb, &mi, &ni, &ki, &one, b, &la, a, &lb, &zero, c, &lc);
    } else {
      dgemm_(&ta, &tb, &mi, &ni, &ki, &one, b, &la, a, &lb, &zero, c, &lc);
    }
    return;
  }
  const auto matrix = [&](const T* p, int64_t rows, int64_t cols, int64_t ld, bool trans) {
    at::Tensor t = at::from_blob(const_cast<T*>(p), {trans ? cols : rows, trans ? rows : cols}, {ld, 1}, options);
    return trans ? t.t() : t;
  };
  at::Tensor out = at::from_blob(c, {m, n}, {ldc, 1}, options);
  at::mm_out(out, matrix(a, m, k, lda, trans_a), matrix(b, k, n, ldb, trans_b));
}

}  // namespace cpu
}  // namespace power_bert
