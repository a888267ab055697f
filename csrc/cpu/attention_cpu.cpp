// CPU kernels of power_bert::_attention_forward / _attention_backward: softmax attention that
// also yields SPEC 1.1 significance without all B*H*N*N probabilities at once.
// - fp32/fp64 without dropout (inference, and training with attention dropout off): one task
//   per (batch row, head), in blocks of query rows whose scores stay in cache. A block costs
//   two BLAS calls on raw pointers (q k^T and P v, small_gemm.h: on short rows ATen's mm per
//   head cost more than the arithmetic) and three vectorised passes over its scores (scale +
//   mask + row max; exp + row sum; significance); the probabilities are computed once and feed
//   both the output and the significance. q, k, v are read through their strides (the usual
//   [B, N, H, d] projections viewed as [B, H, N, d] need no copy) and the output is written in
//   [B, N, H, d] memory, so merging its heads back is a view.
// - fp16/bf16 without dropout: the output and row log-sum-exp come from ATen's CPU flash
//   kernel; significance is one more pass over blocks of query rows that recomputes
//   P = exp(q k^T * scale + bias - lse) and sums its real query rows.
// - With dropout (training), everything runs in blocks of query rows with ATen matmuls; the
//   dropout mask of a block is drawn from a generator seeded by (seed, block) and so replayed
//   exactly by the backward.
// The backward of the paths without dropout is ATen's CPU flash backward (it needs only the
// row log-sum-exp). No path holds more than a fixed budget of scores at once.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../checks.h"
#include "../poison.h"
#include "cpu_kernels.h"
#include "simd.h"
#include "small_gemm.h"

namespace power_bert {
namespace cpu {
namespace {

// Query rows per block: the [B, H, rows, N] score block stays within kScoreBudget elements
// (at least 16 rows, at most N).
constexpr int64_t kScoreBudget = int64_t(1) << 22;  // 4M elements: 16 MB in fp32

int64_t block_rows(int64_t B, int64_t H, int64_t N) {
  const int64_t per_row = std::max<int64_t>(1, B * H * N);
  return std::min<int64_t>(N, std::max<int64_t>(16, kScoreBudget / per_row));
}

at::ScalarType acc_type(const at::Tensor& q) {
  return q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// keep mask [B, H, rows, N] of block starting at row q0, as acc-typed 0/1 scaled by 1/(1-p).
at::Tensor dropout_scale(const at::Tensor& like, double p, int64_t seed, int64_t q0) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(seed) * 1000003ull +
                                                      static_cast<uint64_t>(q0));
  at::Tensor keep = at::empty_like(like);
  keep.bernoulli_(1.0 - p, gen);
  return keep.mul_(1.0 / (1.0 - p));
}

// [B, 1, 1, N]: 0 at real keys, -inf at padding.
at::Tensor additive_key_bias(const at::Tensor& real, at::ScalarType dtype) {
  const int64_t B = real.size(0), N = real.size(1);
  return at::zeros({B, 1, 1, N}, real.options().dtype(dtype))
      .masked_fill_(real.logical_not().view({B, 1, 1, N}), -std::numeric_limits<double>::infinity());
}

// sig[b, n] += sum over heads and the block's real query rows of p[b, h, i, n], leaving out the
// diagonal p[b, h, i, q0 + i] when exclude_self (skipped, not subtracted: a non-finite diagonal
// must not turn its column into inf - inf).
void accumulate_significance(at::Tensor& sig, const at::Tensor& p, const at::Tensor& real_acc, int64_t q0,
                             int64_t q1, bool exclude_self) {
  const int64_t B = p.size(0), rows = q1 - q0;
  at::Tensor heads = p.sum(1);  // [B, rows, N]; its diagonal sums only diagonal elements
  if (exclude_self) heads.diagonal(q0, -2, -1).zero_();
  sig.add_(at::bmm(real_acc.slice(1, q0, q1).reshape({B, 1, rows}), heads).squeeze(1));
}

// ---- Per-(batch row, head) forward, fp32/fp64 without dropout ---------------------------------

// The row loops keep kLanes partial results (max / sum) so that they vectorise without
// -ffast-math; the partials are combined at the end of the row.
constexpr int64_t kLanes = 16;

// row[j] = row[j] * scale + bias[j]; returns the row's maximum.
template <typename T>
__attribute__((always_inline)) inline T scale_bias_max_impl(T* __restrict row, const T* __restrict bias, T scale, int64_t n) {
  T lane[kLanes];
  for (int64_t l = 0; l < kLanes; ++l) lane[l] = -std::numeric_limits<T>::infinity();
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) {
      const T x = row[j + l] * scale + bias[j + l];
      row[j + l] = x;
      lane[l] = x > lane[l] ? x : lane[l];
    }
  }
  T m = -std::numeric_limits<T>::infinity();
  for (; j < n; ++j) {
    const T x = row[j] * scale + bias[j];
    row[j] = x;
    m = x > m ? x : m;
  }
  for (int64_t l = 0; l < kLanes; ++l) m = lane[l] > m ? lane[l] : m;
  return m;
}
// row[j] = exp(row[j] - m); returns the row's sum.
template <typename T>
__attribute__((always_inline)) inline T exp_sum_impl(T* __restrict row, T m, int64_t n) {
  T lane[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) {
      const T e = exp_nonpositive(row[j + l] - m);
      row[j + l] = e;
      lane[l] += e;
    }
  }
  T z = 0;
  for (; j < n; ++j) {
    const T e = exp_nonpositive(row[j] - m);
    row[j] = e;
    z += e;
  }
  for (int64_t l = 0; l < kLanes; ++l) z += lane[l];
  return z;
}
// acc[j] += w * row[j]
template <typename T>
__attribute__((always_inline)) inline void axpy_impl(T* __restrict acc, const T* __restrict row, T w, int64_t n) {
  for (int64_t j = 0; j < n; ++j) acc[j] += w * row[j];
}
POWER_BERT_CLONES float scale_bias_max(float* row, const float* bias, float scale, int64_t n) {
  return scale_bias_max_impl(row, bias, scale, n);
}
POWER_BERT_CLONES double scale_bias_max(double* row, const double* bias, double scale, int64_t n) {
  return scale_bias_max_impl(row, bias, scale, n);
}
POWER_BERT_CLONES float exp_sum(float* row, float m, int64_t n) { return exp_sum_impl(row, m, n); }
POWER_BERT_CLONES double exp_sum(double* row, double m, int64_t n) { return exp_sum_impl(row, m, n); }
POWER_BERT_CLONES void axpy(float* acc, const float* row, float w, int64_t n) { axpy_impl(acc, row, w, n); }
POWER_BERT_CLONES void axpy(double* acc, const double* row, double w, int64_t n) { axpy_impl(acc, row, w, n); }

// Query rows per block: a [rows, N] score block of at most 64K elements (256 KB in fp32, so it
// stays in a core's L2), at least 16 rows.
int64_t head_block_rows(int64_t N) { return std::min<int64_t>(N, std::max<int64_t>(16, (int64_t(1) << 16) / N)); }

// out (q's shape, any strides; written), lse [B, H, N] contiguous (written), sig_part [B, H, N]
// contiguous (written when defined): per (b, h), sum over the real query rows i of P[i, :],
// leaving out P[i, i] when exclude_self. Keys past a row's last real token are not touched (their
// probabilities are 0): the matmuls and row passes run over the first `end` keys only.
template <typename T>
void attention_heads_forward(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                             const at::Tensor& real, at::Tensor& out, at::Tensor& lse, at::Tensor& sig_part,
                             bool exclude_self) {
  // Rows are read with a unit column stride (the model's projections have one; anything else is
  // copied once).
  const auto unit_cols = [](const at::Tensor& x) { return x.stride(3) == 1 ? x : x.contiguous(); };
  const at::Tensor q = unit_cols(q_in), k = unit_cols(k_in), v = unit_cols(v_in);
  TORCH_INTERNAL_ASSERT(out.stride(3) == 1);
  const int64_t B = q.size(0), H = q.size(1), N = q.size(2), d = q.size(3);
  const int64_t R = head_block_rows(N);
  const T scale = T(1) / std::sqrt(static_cast<T>(d));
  const bool* realp = real.data_ptr<bool>();
  T* lsep = lse.data_ptr<T>();
  T* sigp = sig_part.defined() ? sig_part.data_ptr<T>() : nullptr;
  const T* qp = q.data_ptr<T>();
  const T* kp = k.data_ptr<T>();
  const T* vp = v.data_ptr<T>();
  T* op = out.data_ptr<T>();
  const int64_t qs = q.stride(2), ks = k.stride(2), vs = v.stride(2), os = out.stride(2);
  const at::TensorOptions options = q.options();  // for small_gemm's ATen fallback
  at::parallel_for(0, B * H, 1, [&](int64_t t0, int64_t t1) {
    std::vector<T> scores(R * N), bias(N), inv_z(R);
    T* s = scores.data();
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / H, h = t % H;
      const bool* rb = realp + b * N;
      int64_t end = N;  // 1 + the last real key (every row has one: checked by the caller)
      while (end > 1 && !rb[end - 1]) --end;
      for (int64_t j = 0; j < end; ++j) bias[j] = rb[j] ? T(0) : -std::numeric_limits<T>::infinity();
      const T* qh = qp + b * q.stride(0) + h * q.stride(1);
      const T* kh = kp + b * k.stride(0) + h * k.stride(1);
      const T* vh = vp + b * v.stride(0) + h * v.stride(1);
      T* oh = op + b * out.stride(0) + h * out.stride(1);
      T* col = sigp ? sigp + t * N : nullptr;
      if (col) std::fill(col, col + N, T(0));
      for (int64_t q0 = 0; q0 < N; q0 += R) {
        const int64_t r = std::min(R, N - q0);
        // scores [r, end] = q rows [r, d] @ k^T (k stored [end, d])
        small_gemm<T>(false, true, r, end, d, qh + q0 * qs, qs, kh, ks, s, end, options);
        for (int64_t i = 0; i < r; ++i) {
          T* row = s + i * end;
          const T m = scale_bias_max(row, bias.data(), scale, end);
          const T z = exp_sum(row, m, end);
          lsep[t * N + q0 + i] = m + std::log(z);
          inv_z[i] = T(1) / z;
          if (col && rb[q0 + i]) {  // a real query row is below `end`, so its diagonal is too
            if (exclude_self) {  // every key but the diagonal q0 + i
              axpy(col, row, inv_z[i], q0 + i);
              axpy(col + q0 + i + 1, row + q0 + i + 1, inv_z[i], end - (q0 + i + 1));
            } else {
              axpy(col, row, inv_z[i], end);
            }
          }
        }
        // out rows [r, d] = (unnormalised rows) [r, end] @ v [end, d], then scaled by 1/z
        T* ob = oh + q0 * os;
        small_gemm<T>(false, false, r, d, end, s, end, vh, vs, ob, os, options);
        for (int64_t i = 0; i < r; ++i) {
          T* o = ob + i * os;
          for (int64_t c = 0; c < d; ++c) o[c] *= inv_z[i];
        }
      }
    }
  });
}

// sig (float32 [B, N]) = acc with -inf at padding positions (SPEC 1.1).
void write_significance(at::Tensor& sig, at::Tensor acc, const at::Tensor& real) {
  sig.copy_(acc.masked_fill_(real.logical_not(), -std::numeric_limits<double>::infinity()));
}

void check_rows_have_a_real_key(const at::Tensor& real, const char* op) {
  if (real.size(0) == 0) return;
  TORCH_CHECK_VALUE(real.any(1).all().item<bool>(), "power_bert.", op,
                    ": `mask` has a row with no real token (all padding); attention over it is undefined");
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_forward(const at::Tensor& q, const at::Tensor& k,
                                                                 const at::Tensor& v, const at::Tensor& mask,
                                                                 double dropout_p, bool need_significance,
                                                                 bool exclude_self, const at::Tensor& seed) {
  const char* op = "attention";
  check_attention(q, k, v, mask, dropout_p, op);
  const int64_t B = q.size(0), H = q.size(1), N = q.size(2), d = q.size(3);
  const at::ScalarType acc = acc_type(q);
  const at::Tensor real = real_tokens(mask);
  check_rows_have_a_real_key(real, op);
  // The output lives in [B, N, H, d] memory (viewed as [B, H, N, d]): merging heads is a view.
  at::Tensor out = new_output({B, N, H, d}, q.options()).transpose(1, 2);
  at::Tensor sig = need_significance ? new_output({B, N}, q.options().dtype(at::kFloat))
                                     : at::empty({0}, q.options().dtype(at::kFloat));
  if (B == 0 || N == 0) return {out, sig, at::empty({B, H, N}, q.options().dtype(acc))};

  const bool flash = dropout_p == 0.0;
  if (flash && (q.scalar_type() == at::kFloat || q.scalar_type() == at::kDouble)) {
    at::Tensor lse = new_output({B, H, N}, q.options().dtype(acc));
    at::Tensor part = need_significance ? at::empty({B, H, N}, q.options().dtype(acc)) : at::Tensor();
    if (q.scalar_type() == at::kFloat) {
      attention_heads_forward<float>(q, k, v, real, out, lse, part, exclude_self);
    } else {
      attention_heads_forward<double>(q, k, v, real, out, lse, part, exclude_self);
    }
    if (need_significance) write_significance(sig, part.sum(1), real);
    return {out, sig, lse};
  }
  at::Tensor lse = flash ? at::Tensor() : new_output({B, H, N}, q.options().dtype(acc));

  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  const at::Tensor key_bias = additive_key_bias(real, acc);
  // q and k made contiguous once, shared by the flash kernel and the significance pass. The
  // flash kernel reads v through its strides but assumes a unit last stride.
  const at::Tensor qc = q.contiguous(), kc = k.contiguous();
  if (flash) {
    const at::Tensor vc = v.stride(-1) == 1 ? v : v.contiguous();
    auto res = at::_scaled_dot_product_flash_attention_for_cpu(qc, kc, vc, 0.0, false, key_bias.to(q.scalar_type()),
                                                               scale);
    out.copy_(std::get<0>(res));
    lse = std::get<1>(res).contiguous();
    if (!need_significance) return {out, sig, lse};
  }
  const at::Tensor real_acc = real.to(acc);
  at::Tensor sig_acc = need_significance ? at::zeros({B, N}, q.options().dtype(acc)) : at::Tensor();
  const int64_t rows = block_rows(B, H, N);
  if (flash) {
    // Significance only: P = exp(q k^T * scale - lse) per block, one baddbmm and one exp; the
    // sum over heads and real query rows is one bmm with 0/1 weights. Padded key columns need
    // no bias: they are overwritten with -inf below, and columns never mix.
    const at::Tensor qs = qc.to(acc).view({B * H, N, d});
    const at::Tensor kT = kc.to(acc).view({B * H, N, d}).transpose(1, 2);  // a view: [BH, d, N]
    const at::Tensor neg_lse = lse.to(acc).neg().view({B * H, N, 1});
    for (int64_t q0 = 0; q0 < N; q0 += rows) {
      const int64_t q1 = std::min(N, q0 + rows), r = q1 - q0;
      const at::Tensor p =  // [BH, r, N]; the scale folded into the product
          at::baddbmm(neg_lse.slice(1, q0, q1), qs.slice(1, q0, q1), kT, /*beta=*/1, /*alpha=*/scale).exp_();
      if (exclude_self) p.view({B, H, r, N}).diagonal(q0, -2, -1).zero_();  // skipped, not subtracted
      const at::Tensor w = real_acc.slice(1, q0, q1).unsqueeze(1).expand({B, H, r}).reshape({B, 1, H * r});
      sig_acc.add_(at::bmm(w, p.view({B, H * r, N})).squeeze(1));
    }
  } else {
    const at::Tensor qf = qc.to(acc), kT = kc.to(acc).transpose(-1, -2), vf = v.to(acc);
    const int64_t seed_value = seed.item<int64_t>();
    for (int64_t q0 = 0; q0 < N; q0 += rows) {
      const int64_t q1 = std::min(N, q0 + rows);
      at::Tensor s = at::matmul(qf.slice(2, q0, q1), kT).mul_(scale).add_(key_bias);  // [B, H, r, N]
      const at::Tensor m = std::get<0>(s.max(-1, /*keepdim=*/true));
      const at::Tensor z = s.sub_(m).exp_().sum(-1, /*keepdim=*/true);
      at::Tensor p = s.div_(z);  // probabilities
      lse.slice(2, q0, q1).copy_(m.add_(z.log()).squeeze(-1));
      if (need_significance) accumulate_significance(sig_acc, p, real_acc, q0, q1, exclude_self);
      p.mul_(dropout_scale(p, dropout_p, seed_value, q0));
      out.slice(2, q0, q1).copy_(at::matmul(p, vf));
    }
  }
  if (need_significance) write_significance(sig, sig_acc, real);
  return {out, sig, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward(const at::Tensor& grad_out, const at::Tensor& q,
                                                                  const at::Tensor& k, const at::Tensor& v,
                                                                  const at::Tensor& out, const at::Tensor& lse,
                                                                  const at::Tensor& mask, double dropout_p,
                                                                  const at::Tensor& seed) {
  const char* op = "attention_backward";
  check_attention(q, k, v, mask, dropout_p, op);
  TORCH_CHECK_VALUE(grad_out.sizes() == q.sizes() && out.sizes() == q.sizes(), "power_bert.", op,
                    ": `grad_out` and `out` must have q's shape ", q.sizes());
  const int64_t B = q.size(0), H = q.size(1), N = q.size(2), d = q.size(3);
  TORCH_CHECK_VALUE(lse.dim() == 3 && lse.size(0) == B && lse.size(1) == H && lse.size(2) == N, "power_bert.", op,
                    ": `lse` must be [B, H, N] = [", B, ", ", H, ", ", N, "], got ", lse.sizes());
  const at::ScalarType acc = acc_type(q);
  at::Tensor grad_q = new_output({B, H, N, d}, q.options());
  if (B == 0 || N == 0) return {grad_q, at::zeros_like(k), at::zeros_like(v)};

  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  const at::Tensor key_bias = additive_key_bias(real_tokens(mask), acc);
  if (dropout_p == 0.0) {  // the forward ran ATen's flash kernel: so does the backward
    auto res = at::_scaled_dot_product_flash_attention_for_cpu_backward(
        grad_out.contiguous(), q.contiguous(), k.contiguous(), v.contiguous(), out.contiguous(), lse.contiguous(),
        0.0, false, key_bias.to(q.scalar_type()), scale);
    grad_q.copy_(std::get<0>(res));
    return {grad_q, std::get<1>(res), std::get<2>(res)};
  }
  const at::Tensor qf = q.to(acc), kf = k.to(acc), vf = v.to(acc), go = grad_out.to(acc);
  const at::Tensor kT = kf.transpose(-1, -2), vT = vf.transpose(-1, -2);
  const at::Tensor delta = (go * out.to(acc)).sum(-1, /*keepdim=*/true);  // [B, H, N, 1]
  const at::Tensor lse_acc = lse.to(acc).unsqueeze(-1);
  at::Tensor grad_k = at::zeros({B, H, N, d}, q.options().dtype(acc));
  at::Tensor grad_v = at::zeros({B, H, N, d}, q.options().dtype(acc));
  const int64_t rows = block_rows(B, H, N);
  const int64_t seed_value = dropout_p > 0.0 ? seed.item<int64_t>() : 0;

  for (int64_t q0 = 0; q0 < N; q0 += rows) {
    const int64_t q1 = std::min(N, q0 + rows);
    const at::Tensor qb = qf.slice(2, q0, q1), gb = go.slice(2, q0, q1);
    at::Tensor p = at::matmul(qb, kT).mul_(scale).add_(key_bias).sub_(lse_acc.slice(2, q0, q1)).exp_();
    at::Tensor dp = at::matmul(gb, vT);  // gradient of the dropped probabilities
    if (dropout_p > 0.0) {
      const at::Tensor keep = dropout_scale(p, dropout_p, seed_value, q0);
      grad_v.add_(at::matmul((p * keep).transpose(-1, -2), gb));
      dp.mul_(keep);
    } else {
      grad_v.add_(at::matmul(p.transpose(-1, -2), gb));
    }
    at::Tensor ds = p.mul_(dp.sub_(delta.slice(2, q0, q1)));  // softmax backward
    grad_q.slice(2, q0, q1).copy_(at::matmul(ds, kf).mul_(scale));
    grad_k.add_(at::matmul(ds.transpose(-1, -2), qb).mul_(scale));
  }
  return {grad_q, grad_k.to(k.scalar_type()), grad_v.to(v.scalar_type())};
}

}  // namespace cpu
}  // namespace power_bert
