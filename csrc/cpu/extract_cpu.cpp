// CPU kernels of power_bert::extract, extract_scored and extract_backward (SPEC 1.2):
// per row, rank by selection_key, keep [CLS] + the k-1 best, gather rows in position order.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <vector>

#include "../checks.h"
#include "../poison.h"
#include "../selection_key.h"
#include "cpu_kernels.h"

namespace power_bert {
namespace cpu {
namespace {

// index[b, :k] = position 0 and the k-1 highest-keyed other positions, ascending; with a per-row
// row_k, the row_k[b] highest-keyed of them first (ascending), then the others (ascending).
void select_rows(const float* scores, const bool* real, int64_t B, int64_t N, int64_t k,
                 const int64_t* row_k, int64_t* index) {
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint64_t> keys(N);
    for (int64_t b = begin; b < end; ++b) {
      keys[0] = cls_key();
      for (int64_t p = 1; p < N; ++p) keys[p] = selection_key(scores[b * N + p], real[b * N + p], p);
      if (k < N) std::nth_element(keys.begin(), keys.begin() + (k - 1), keys.end(), std::greater<uint64_t>());
      const int64_t kept = row_k != nullptr ? row_k[b] : k;
      if (kept < k) {
        std::nth_element(keys.begin(), keys.begin() + (kept - 1), keys.begin() + k, std::greater<uint64_t>());
      }
      int64_t* row = index + b * k;
      // The k largest keys (cls_key() decodes to position 0), the `kept` largest first, each
      // group in ascending position order.
      for (int64_t i = 0; i < k; ++i) row[i] = key_position(keys[i]);
      std::sort(row, row + kept);
      std::sort(row + kept, row + k);
    }
  });
}

template <typename T>
void gather_rows(const T* hidden, const int64_t* index, int64_t B, int64_t N, int64_t k, int64_t D,
                 T* out) {
  at::parallel_for(0, B * k, std::max<int64_t>(1, 4096 / std::max<int64_t>(D, 1)), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / k;
      std::memcpy(out + r * D, hidden + (b * N + index[r]) * D, sizeof(T) * D);
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> extract_from_scores(const at::Tensor& hidden,
                                                                   const at::Tensor& scores,
                                                                   const at::Tensor& real,
                                                                   const at::Tensor& mask, int64_t k,
                                                                   const c10::optional<at::Tensor>& row_k,
                                                                   const char* op) {
  const int64_t B = hidden.size(0), N = hidden.size(1), D = hidden.size(2);
  const at::Tensor rk = row_k.has_value() ? row_k->contiguous() : at::Tensor();
  if (rk.defined()) check_row_k_values(rk.data_ptr<int64_t>(), B, k, op);
  at::Tensor index = new_output({B, k}, hidden.options().dtype(at::kLong));
  at::Tensor out = new_output({B, k, D}, hidden.options());
  if (B > 0) {
    select_rows(scores.data_ptr<float>(), real.data_ptr<bool>(), B, N, k,
                rk.defined() ? rk.data_ptr<int64_t>() : nullptr, index.data_ptr<int64_t>());
    const at::Tensor h = hidden.contiguous();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "extract_gather_cpu", [&] {
      gather_rows<scalar_t>(h.data_ptr<scalar_t>(), index.data_ptr<int64_t>(), B, N, k, D,
                            out.data_ptr<scalar_t>());
    });
  }
  return {out, index, extract_out_mask(mask, index, row_k)};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> extract(const at::Tensor& hidden, const at::Tensor& attn,
                                                       const at::Tensor& mask, int64_t k,
                                                       bool exclude_self, const c10::optional<at::Tensor>& row_k) {
  check_extract_args(hidden, attn, mask, k, row_k, "extract");
  const at::Tensor real = real_tokens(mask);
  check_cls_real(real, "extract");
  const at::Tensor scores = significance_scores(attn.contiguous(), real, exclude_self);
  return extract_from_scores(hidden, scores, real, mask, k, row_k, "extract");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> extract_scored(const at::Tensor& hidden,
                                                              const at::Tensor& scores,
                                                              const at::Tensor& mask, int64_t k,
                                                              const c10::optional<at::Tensor>& row_k) {
  check_extract_scored_args(hidden, scores, mask, k, row_k, "extract_scored");
  const at::Tensor real = real_tokens(mask);
  check_cls_real(real, "extract_scored");
  return extract_from_scores(hidden, scores.to(at::kFloat).contiguous(), real, mask, k, row_k, "extract_scored");
}

at::Tensor extract_backward(const at::Tensor& grad_out, const at::Tensor& index, int64_t n) {
  check_extract_backward_args(grad_out, index, n, "extract_backward");
  const int64_t B = grad_out.size(0), k = grad_out.size(1), D = grad_out.size(2);
  at::Tensor grad_hidden = new_output({B, n, D}, grad_out.options());
  if (B == 0) return grad_hidden;
  const at::Tensor g = grad_out.contiguous();
  const at::Tensor idx = index.contiguous();
  const int64_t* ip = idx.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "extract_backward_cpu", [&] {
    const scalar_t* gp = g.data_ptr<scalar_t>();
    scalar_t* out = grad_hidden.data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      std::vector<int64_t> source(n);
      for (int64_t b = begin; b < end; ++b) {
        std::fill(source.begin(), source.end(), -1);
        for (int64_t i = 0; i < k; ++i) {
          const int64_t p = ip[b * k + i];
          TORCH_CHECK_VALUE(p >= 0 && p < n, "power_bert.extract_backward: `index` holds ", p,
                            ", outside [0, n = ", n, ")");
          source[p] = i;
        }
        // Every element of grad_hidden written exactly once: a gradient row or zeros.
        for (int64_t p = 0; p < n; ++p) {
          scalar_t* dst = out + (b * n + p) * D;
          if (source[p] >= 0) {
            std::memcpy(dst, gp + (b * k + source[p]) * D, sizeof(scalar_t) * D);
          } else {
            std::fill(dst, dst + D, scalar_t(0));
          }
        }
      }
    });
  });
  return grad_hidden;
}

}  // namespace cpu
}  // namespace power_bert
