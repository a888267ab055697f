// CPU kernels of power_bert::soft_extract and its backward (SPEC 1.3): rank every position by
// selection_key (no [CLS] special case) and scale row p by retention[rank(p)].
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <functional>
#include <type_traits>
#include <vector>

#include "../checks.h"
#include "../poison.h"
#include "../selection_key.h"
#include "cpu_kernels.h"
#include "simd.h"

namespace power_bert {
namespace cpu {
namespace {

// rank[b, p] = rank of position p in row b (0 = largest selection_key).
at::Tensor ranks(const at::Tensor& scores, const at::Tensor& real) {
  const int64_t B = scores.size(0), N = scores.size(1);
  at::Tensor rank = new_output({B, N}, scores.options().dtype(at::kLong));
  const at::Tensor s = scores.to(at::kFloat).contiguous();
  const float* sp = s.data_ptr<float>();
  const bool* rp = real.data_ptr<bool>();
  int64_t* kp = rank.data_ptr<int64_t>();
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint64_t> keys(N);
    for (int64_t b = begin; b < end; ++b) {
      for (int64_t p = 0; p < N; ++p) keys[p] = selection_key(sp[b * N + p], rp[b * N + p], p);
      std::sort(keys.begin(), keys.end(), std::greater<uint64_t>());
      for (int64_t t = 0; t < N; ++t) kp[b * N + key_position(keys[t])] = t;
    }
  });
  return rank;
}

// dst = src * f, computed in A.
template <typename T, typename A>
inline void scale_row(T* __restrict dst, const T* __restrict src, A f, int64_t D) {
  for (int64_t d = 0; d < D; ++d) dst[d] = static_cast<T>(static_cast<A>(src[d]) * f);
}
POWER_BERT_CLONES void scale_row_f32(float* __restrict dst, const float* __restrict src, float f, int64_t D) {
  scale_row(dst, src, f, D);
}

// dst = g * f; returns dot(g, h), computed in A. The dot product keeps 16 lane-wise partial
// sums (vectorisable without reassociation), added in a fixed order: deterministic.
template <typename T, typename A>
inline A scale_and_dot(T* __restrict dst, const T* __restrict g, const T* __restrict h, A f, int64_t D) {
  constexpr int64_t L = 16;
  A part[L] = {};
  int64_t d = 0;
  for (; d + L <= D; d += L) {
    for (int64_t j = 0; j < L; ++j) {
      const A gv = static_cast<A>(g[d + j]);
      dst[d + j] = static_cast<T>(gv * f);
      part[j] += gv * static_cast<A>(h[d + j]);
    }
  }
  for (; d < D; ++d) {
    const A gv = static_cast<A>(g[d]);
    dst[d] = static_cast<T>(gv * f);
    part[0] += gv * static_cast<A>(h[d]);
  }
  A dot = 0;
  for (int64_t j = 0; j < L; ++j) dot += part[j];
  return dot;
}
POWER_BERT_CLONES float scale_and_dot_f32(float* __restrict dst, const float* __restrict g,
                                          const float* __restrict h, float f, int64_t D) {
  return scale_and_dot(dst, g, h, f, D);
}

template <typename T, typename A>
inline void scale_row_any(T* dst, const T* src, A f, int64_t D) {
  if constexpr (std::is_same_v<T, float>) {
    scale_row_f32(dst, src, f, D);
  } else {
    scale_row(dst, src, f, D);
  }
}

template <typename T, typename A>
inline A scale_and_dot_any(T* dst, const T* g, const T* h, A f, int64_t D) {
  if constexpr (std::is_same_v<T, float>) {
    return scale_and_dot_f32(dst, g, h, f, D);
  } else {
    return scale_and_dot(dst, g, h, f, D);
  }
}

}  // namespace

at::Tensor soft_extract(const at::Tensor& hidden, const at::Tensor& scores, const at::Tensor& mask,
                        const at::Tensor& retention) {
  check_soft_extract_args(hidden, scores, mask, retention, "soft_extract");
  const int64_t B = hidden.size(0), N = hidden.size(1), D = hidden.size(2);
  at::Tensor out = new_output({B, N, D}, hidden.options());
  if (B == 0) return out;
  const at::Tensor rank = ranks(scores, real_tokens(mask));
  const at::Tensor h = hidden.contiguous();
  const at::Tensor r = retention.to(acc_dtype(hidden)).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "soft_extract_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* hp = h.data_ptr<scalar_t>();
    const acc_t* rp = r.data_ptr<acc_t>();
    const int64_t* kp = rank.data_ptr<int64_t>();
    scalar_t* outp = out.data_ptr<scalar_t>();
    at::parallel_for(0, B * N, std::max<int64_t>(1, 4096 / std::max<int64_t>(D, 1)), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {  // rows in memory order
        scale_row_any<scalar_t, acc_t>(outp + row * D, hp + row * D, rp[kp[row]], D);
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> soft_extract_backward(const at::Tensor& grad_out, const at::Tensor& hidden,
                                                         const at::Tensor& scores, const at::Tensor& mask,
                                                         const at::Tensor& retention) {
  check_soft_extract_backward_args(grad_out, hidden, scores, mask, retention, "soft_extract_backward");
  const int64_t B = hidden.size(0), N = hidden.size(1), D = hidden.size(2);
  const at::ScalarType acc = acc_dtype(hidden);
  at::Tensor grad_hidden = new_output({B, N, D}, hidden.options());
  at::Tensor grad_r = new_output({N}, retention.options().dtype(acc));
  if (B == 0) return {grad_hidden, grad_r.zero_().to(retention.scalar_type())};
  const at::Tensor rank = ranks(scores, real_tokens(mask));
  const at::Tensor h = hidden.contiguous();
  const at::Tensor g = grad_out.to(hidden.scalar_type()).contiguous();
  const at::Tensor r = retention.to(acc).contiguous();
  at::Tensor dots = at::empty({B, N}, hidden.options().dtype(acc));  // dots[b, rank]
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "soft_extract_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* hp = h.data_ptr<scalar_t>();
    const scalar_t* gp = g.data_ptr<scalar_t>();
    const acc_t* rp = r.data_ptr<acc_t>();
    const int64_t* kp = rank.data_ptr<int64_t>();
    scalar_t* ghp = grad_hidden.data_ptr<scalar_t>();
    acc_t* dp = dots.data_ptr<acc_t>();
    at::parallel_for(0, B * N, std::max<int64_t>(1, 4096 / std::max<int64_t>(D, 1)), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {  // rows in memory order
        const int64_t b = row / N, t = kp[row];
        dp[b * N + t] = scale_and_dot_any<scalar_t, acc_t>(ghp + row * D, gp + row * D, hp + row * D, rp[t], D);
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
