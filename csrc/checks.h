// Argument checks shared by the CPU and CUDA kernels. Each error names the op and the argument.
// The Python wrappers (power_bert_ops/_checks.py) raise the same messages before dispatch, so
// users of torch.ops.power_bert.* from C++ or TorchScript get the same errors as Python users.
#pragma once
#include <ATen/ATen.h>

namespace power_bert {

inline bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kHalf || t == at::kBFloat16 || t == at::kDouble;
}

inline void check_floating(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK_TYPE(is_supported_float(t.scalar_type()), "power_bert.", op, ": `", name,
              "` must be float32, float16, bfloat16 or float64, got ", t.scalar_type());
}

inline void check_hidden(const at::Tensor& hidden, const char* op) {
  TORCH_CHECK_VALUE(hidden.dim() == 3, "power_bert.", op, ": `hidden` must be [B, N, D], got shape ",
              hidden.sizes());
  check_floating(hidden, op, "hidden");
}

inline void check_mask(const at::Tensor& mask, int64_t B, int64_t N, const char* op) {
  TORCH_CHECK_VALUE(mask.dim() == 2 && mask.size(0) == B && mask.size(1) == N, "power_bert.", op,
              ": `mask` must be [B, N] = [", B, ", ", N, "], got shape ", mask.sizes());
  TORCH_CHECK_TYPE(!mask.is_complex(), "power_bert.", op, ": `mask` must be bool, integer or floating, got ",
              mask.scalar_type());
}

inline void check_attn(const at::Tensor& attn, int64_t B, int64_t N, const char* op) {
  TORCH_CHECK_VALUE(attn.dim() == 4 && attn.size(0) == B && attn.size(2) == N && attn.size(3) == N,
              "power_bert.", op, ": `attn` must be [B, H, N, N] with B = ", B, " and N = ", N,
              ", got shape ", attn.sizes());
  check_floating(attn, op, "attn");
}

inline void check_scores(const at::Tensor& scores, int64_t B, int64_t N, const char* op) {
  TORCH_CHECK_VALUE(scores.dim() == 2 && scores.size(0) == B && scores.size(1) == N, "power_bert.", op,
              ": `scores` must be [B, N] = [", B, ", ", N, "], got shape ", scores.sizes());
  check_floating(scores, op, "scores");
}

inline void check_retention(const at::Tensor& retention, int64_t N, const char* op) {
  TORCH_CHECK_VALUE(retention.dim() == 1 && retention.size(0) == N, "power_bert.", op,
                    ": `retention` must be [N] = [", N, "], got shape ", retention.sizes());
  check_floating(retention, op, "retention");
}

inline void check_k(int64_t k, int64_t N, const char* op) {
  TORCH_CHECK_VALUE(k >= 1 && k <= N, "power_bert.", op, ": `k` must satisfy 1 <= k <= N = ", N,
              ", got k = ", k);
}

// A per-row k of extract / extract_scored: int64 [B] on hidden's device. Its values (1 <= row_k[b]
// <= k) are checked by the kernels that read them (check_row_k_values).
inline void check_row_k(const c10::optional<at::Tensor>& row_k, const at::Tensor& hidden, const char* op);

inline void check_same_device(const at::Tensor& ref, const char* ref_name, const at::Tensor& t,
                              const char* name, const char* op) {
  TORCH_CHECK_VALUE(t.device() == ref.device(), "power_bert.", op, ": `", name, "` is on ", t.device(),
              " but `", ref_name, "` is on ", ref.device(), "; all tensors must be on one device");
}

// Data-dependent check (reads the mask): every row's position 0 ([CLS]) must be a real token.
// `real` is the bool [B, N] mask. On CUDA this would synchronise the host, so the CUDA kernels
// leave it to the Python wrapper (eager only) and keep position 0 regardless.
inline void check_cls_real(const at::Tensor& real, const char* op) {
  if (real.size(0) == 0) return;
  const bool ok = real.select(1, 0).all().item<bool>();
  TORCH_CHECK_VALUE(ok, "power_bert.", op,
              ": `mask` has a row whose position 0 ([CLS]) is padding (an all-padding or "
              "left-padded row); PoWER-BERT always keeps position 0, so it must be a real token");
}

// q, k, v [B, H, N, d], same shape, dtype and device; mask [B, N]; 0 <= dropout_p < 1.
inline void check_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& mask, double dropout_p, const char* op) {
  TORCH_CHECK_VALUE(q.dim() == 4, "power_bert.", op, ": `q` must be [B, H, N, d], got shape ", q.sizes());
  TORCH_CHECK_VALUE(k.sizes() == q.sizes(), "power_bert.", op, ": `k` must have q's shape ", q.sizes(),
                    ", got ", k.sizes());
  TORCH_CHECK_VALUE(v.sizes() == q.sizes(), "power_bert.", op, ": `v` must have q's shape ", q.sizes(),
                    ", got ", v.sizes());
  check_floating(q, op, "q");
  TORCH_CHECK_TYPE(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(), "power_bert.", op,
                   ": `q`, `k` and `v` must share one dtype, got ", q.scalar_type(), ", ", k.scalar_type(), ", ",
                   v.scalar_type());
  check_mask(mask, q.size(0), q.size(2), op);
  TORCH_CHECK_VALUE(dropout_p >= 0.0 && dropout_p < 1.0, "power_bert.", op,
                    ": `dropout_p` must be in [0, 1), got ", dropout_p);
  check_same_device(q, "q", k, "k", op);
  check_same_device(q, "q", v, "v", op);
  check_same_device(q, "q", mask, "mask", op);
}

// ---- Per-op argument checks (shape, dtype, device), shared by the CPU and CUDA kernels ----------

inline void check_significance_args(const at::Tensor& attn, const at::Tensor& mask, const char* op) {
  TORCH_CHECK_VALUE(attn.dim() == 4 && attn.size(2) == attn.size(3), "power_bert.", op,
                    ": `attn` must be [B, H, N, N], got shape ", attn.sizes());
  check_floating(attn, op, "attn");
  check_mask(mask, attn.size(0), attn.size(2), op);
  check_same_device(attn, "attn", mask, "mask", op);
}

// extract's and extract_scored's arguments; `source` is `attn` (check_attn) or `scores` (check_scores).
inline void check_selection_args(const at::Tensor& hidden, const at::Tensor& source, const char* source_name,
                                 void (*check_source)(const at::Tensor&, int64_t, int64_t, const char*),
                                 const at::Tensor& mask, int64_t k, const char* op) {
  check_hidden(hidden, op);
  const int64_t B = hidden.size(0), N = hidden.size(1);
  check_source(source, B, N, op);
  check_mask(mask, B, N, op);
  check_k(k, N, op);
  check_same_device(hidden, "hidden", source, source_name, op);
  check_same_device(hidden, "hidden", mask, "mask", op);
}

inline void check_extract_args(const at::Tensor& hidden, const at::Tensor& attn, const at::Tensor& mask, int64_t k,
                               const c10::optional<at::Tensor>& row_k, const char* op) {
  check_selection_args(hidden, attn, "attn", &check_attn, mask, k, op);
  check_row_k(row_k, hidden, op);
}

inline void check_extract_scored_args(const at::Tensor& hidden, const at::Tensor& scores, const at::Tensor& mask,
                                      int64_t k, const c10::optional<at::Tensor>& row_k, const char* op) {
  check_selection_args(hidden, scores, "scores", &check_scores, mask, k, op);
  check_row_k(row_k, hidden, op);
}

inline void check_extract_backward_args(const at::Tensor& grad_out, const at::Tensor& index, int64_t n,
                                        const char* op) {
  TORCH_CHECK_VALUE(grad_out.dim() == 3, "power_bert.", op, ": `grad_out` must be [B, k, D], got shape ",
                    grad_out.sizes());
  check_floating(grad_out, op, "grad_out");
  const int64_t B = grad_out.size(0), k = grad_out.size(1);
  TORCH_CHECK_VALUE(index.dim() == 2 && index.size(0) == B && index.size(1) == k, "power_bert.", op,
                    ": `index` must be [B, k] = [", B, ", ", k, "], got shape ", index.sizes());
  TORCH_CHECK_TYPE(index.scalar_type() == at::kLong, "power_bert.", op, ": `index` must be int64, got ",
                   index.scalar_type());
  check_k(k, n, op);
  check_same_device(grad_out, "grad_out", index, "index", op);
}

inline void check_soft_extract_args(const at::Tensor& hidden, const at::Tensor& scores, const at::Tensor& mask,
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

inline void check_soft_extract_backward_args(const at::Tensor& grad_out, const at::Tensor& hidden,
                                             const at::Tensor& scores, const at::Tensor& mask,
                                             const at::Tensor& retention, const char* op) {
  check_soft_extract_args(hidden, scores, mask, retention, op);
  TORCH_CHECK_VALUE(grad_out.sizes() == hidden.sizes(), "power_bert.", op, ": `grad_out` must have hidden's shape ",
                    hidden.sizes(), ", got ", grad_out.sizes());
  check_same_device(hidden, "hidden", grad_out, "grad_out", op);
}

// soft_extract computes in float32 (float64 for float64 hidden).
inline at::ScalarType acc_dtype(const at::Tensor& hidden) {
  return hidden.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// The bool mask of real tokens, contiguous, on mask's device.
inline at::Tensor real_tokens(const at::Tensor& mask) {
  return (mask.scalar_type() == at::kBool ? mask : mask.ne(0)).contiguous();
}

// out_mask = mask.gather(1, index) in mask's dtype, for every mask dtype: ATen's gather has no
// kernel for some (uint16/32/64, float8), so those are gathered as signed integers of their width.
inline void check_row_k(const c10::optional<at::Tensor>& row_k, const at::Tensor& hidden, const char* op) {
  if (!row_k.has_value()) return;
  const at::Tensor& r = *row_k;
  TORCH_CHECK_VALUE(r.dim() == 1 && r.size(0) == hidden.size(0), "power_bert.", op,
                    ": `row_k` must be [B] = [", hidden.size(0), "], got shape ", r.sizes());
  TORCH_CHECK_TYPE(r.scalar_type() == at::kLong, "power_bert.", op, ": `row_k` must be int64, got ",
                   r.scalar_type());
  check_same_device(hidden, "hidden", r, "row_k", op);
}

// Host-side value check of a CPU row_k: every 1 <= row_k[b] <= k.
inline void check_row_k_values(const int64_t* row_k, int64_t B, int64_t k, const char* op) {
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK_VALUE(row_k[b] >= 1 && row_k[b] <= k, "power_bert.", op, ": `row_k` must satisfy 1 <= row_k[b] <= k = ",
                      k, ", got row_k[", b, "] = ", row_k[b]);
  }
}

// The mask viewed as a dtype gather / masked_fill have kernels for (same bytes).
inline at::Tensor mask_as_supported(const at::Tensor& mask) {
  switch (mask.scalar_type()) {
    case at::kBool: case at::kByte: case at::kChar: case at::kShort: case at::kInt: case at::kLong:
    case at::kHalf: case at::kBFloat16: case at::kFloat: case at::kDouble:
      return mask;
    default: break;
  }
  switch (mask.element_size()) {
    case 1: return mask.view(at::kChar);
    case 2: return mask.view(at::kShort);
    case 4: return mask.view(at::kInt);
    case 8: return mask.view(at::kLong);
    default: TORCH_CHECK_TYPE(false, "power_bert: unsupported `mask` dtype ", mask.scalar_type());
  }
}

// out_mask of extract: mask gathered at index, 0 in the slots at or beyond row_k[b] when given.
inline at::Tensor extract_out_mask(const at::Tensor& mask, const at::Tensor& index,
                                   const c10::optional<at::Tensor>& row_k) {
  at::Tensor gathered = mask_as_supported(mask).gather(1, index);
  if (row_k.has_value()) {
    const at::Tensor slots = at::arange(index.size(1), index.options());
    gathered = gathered.masked_fill(slots.unsqueeze(0) >= row_k->unsqueeze(1), 0);
  }
  return gathered.view(mask.scalar_type());
}

}  // namespace power_bert
