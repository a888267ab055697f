// CPU kernels of power_bert::soft_extract and its backward (SPEC 1.3): rank every position by
// selection_key (no [CLS] special case) and scale row p by retention[rank(p)].
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <functional>
#include <vector>

#include "../checks.h"
#include "../poison.h"
#include "../selection_key.h"
#include "cpu_kernels.h"

namespace power_bert {
namespace cpu {
namespace {

void check_soft_args(const at::Tensor& hidden, const at::Tensor& scores, const at::Tensor& mask,
                     const at::Tensor& retention, const char* op) {
  check_hidden(hidden, op);
  const int64_t B = hidden.size(0), N = hidden.size(1);
  check_scores(scores, B, N, op);
  check_mask(mask, B, N, op);
  check_retention(retention, N, op);
  check_same_device(hidden, "hidden", scores, "scores", op);
  check_same_device(hidden, "hidden", mask, "mask", op);
  check_same_device(hidden, "hidden", retention, "retention", op);
}

// order[b, t] = position ranked t in row b (descending selection_key).
at::Tensor rank_order(const at::Tensor& scores, const at::Tensor& real) {
  const int64_t B = scores.size(0), N = scores.size(1);
  at::Tensor order = new_output({B, N}, scores.options().dtype(at::kLong));
  const at::Tensor s = scores.to(at::kFloat).contiguous();
  const float* sp = s.data_ptr<float>();
  const bool* rp = real.data_ptr<bool>();
  int64_t* op = order.data_ptr<int64_t>();
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint64_t> keys(N);
    for (int64_t b = begin; b < end; ++b) {
      for (int64_t p = 0; p < N; ++p) keys[p] = selection_key(sp[b * N + p], rp[b * N + p], p);
      std::sort(keys.begin(), keys.end(), std::greater<uint64_t>());
      for (int64_t t = 0; t < N; ++t) op[b * N + t] = key_position(keys[t]);
    }
  });
  return order;
}

at::ScalarType acc_dtype(const at::Tensor& hidden) {
  return hidden.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace

at::Tensor soft_extract(const at::Tensor& hidden, const at::Tensor& scores, const at::Tensor& mask,
                        const at::Tensor& retention) {
  check_soft_args(hidden, scores, mask, retention, "soft_extract");
  const int64_t B = hidden.size(0), N = hidden.size(1), D = hidden.size(2);
  at::Tensor out = new_output({B, N, D}, hidden.options());
  if (B == 0) return out;
  const at::Tensor order = rank_order(scores, real_tokens(mask));
  const at::Tensor h = hidden.contiguous();
  const at::Tensor r = retention.to(acc_dtype(hidden)).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "soft_extract_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* hp = h.data_ptr<scalar_t>();
    const acc_t* rp = r.data_ptr<acc_t>();
    const int64_t* op = order.data_ptr<int64_t>();
    scalar_t* outp = out.data_ptr<scalar_t>();
    at::parallel_for(0, B * N, std::max<int64_t>(1, 4096 / std::max<int64_t>(D, 1)), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {  // i = (b, t): the row of rank t
        const int64_t b = i / N, t = i % N;
        const int64_t row = b * N + op[i];
        const acc_t f = rp[t];
        for (int64_t d = 0; d < D; ++d) outp[row * D + d] = static_cast<scalar_t>(static_cast<acc_t>(hp[row * D + d]) * f);
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> soft_extract_backward(const at::Tensor& grad_out,
                                                         const at::Tensor& hidden,
                                                         const at::Tensor& scores,
                                                         const at::Tensor& mask,
                                                         const at::Tensor& retention) {
  check_soft_args(hidden, scores, mask, retention, "soft_extract_backward");
  TORCH_CHECK_VALUE(grad_out.sizes() == hidden.sizes(), "power_bert.soft_extract_backward: `grad_out` must have "
                    "hidden's shape ", hidden.sizes(), ", got ", grad_out.sizes());
  check_same_device(hidden, "hidden", grad_out, "grad_out", "soft_extract_backward");
  const int64_t B = hidden.size(0), N = hidden.size(1), D = hidden.size(2);
  const at::ScalarType acc = acc_dtype(hidden);
  at::Tensor grad_hidden = new_output({B, N, D}, hidden.options());
  at::Tensor grad_r = new_output({N}, retention.options().dtype(acc));
  if (B == 0) return {grad_hidden, grad_r.zero_().to(retention.scalar_type())};
  const at::Tensor order = rank_order(scores, real_tokens(mask));
  const at::Tensor h = hidden.contiguous();
  const at::Tensor g = grad_out.to(hidden.scalar_type()).contiguous();
  const at::Tensor r = retention.to(acc).contiguous();
  at::Tensor dots = at::empty({B, N}, hidden.options().dtype(acc));  // dots[b, t], t = rank
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "soft_extract_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* hp = h.data_ptr<scalar_t>();
    const scalar_t* gp = g.data_ptr<scalar_t>();
    const acc_t* rp = r.data_ptr<acc_t>();
    const int64_t* op = order.data_ptr<int64_t>();
    scalar_t* ghp = grad_hidden.data_ptr<scalar_t>();
    acc_t* dp = dots.data_ptr<acc_t>();
    at::parallel_for(0, B * N, std::max<int64_t>(1, 4096 / std::max<int64_t>(D, 1)), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t b = i / N, t = i % N;
        const int64_t row = b * N + op[i];
        const acc_t f = rp[t];
        acc_t dot = 0;
        for (int64_t d = 0; d < D; ++d) {
          const acc_t gv = static_cast<acc_t>(gp[row * D + d]);
          ghp[row * D + d] = static_cast<scalar_t>(gv * f);
          dot += gv * static_cast<acc_t>(hp[row * D + d]);
        }
        dp[i] = dot;
      }
    });
    // grad_retention[t] = sum over b in ascending order: deterministic.
    acc_t* grp = grad_r.data_ptr<acc_t>();
    for (int64_t t = 0; t < N; ++t) {
      acc_t s = 0;
      for (int64_t b = 0; b < B; ++b) s += dp[b * N + t];
      grp[t] = s;
    }
  });
  return {grad_hidden, grad_r.to(retention.scalar_type())};
}

}  // namespace cpu
}  // namespace power_bert
