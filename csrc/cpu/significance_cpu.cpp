// CPU kernel of power_bert::significance (SPEC 1.1): one pass over the attention
// probabilities, summing the real query rows into per-key fp32 accumulators; with exclude_self
// each row's diagonal element is skipped (never summed then subtracted).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "../checks.h"
#include "../poison.h"
#include "cpu_kernels.h"
#include "simd.h"


namespace power_bert {
namespace cpu {
namespace {

// acc[j] += sum of the rows, four rows per pass so the accumulators are loaded and stored
// once per four rows. skip[i] is the column of row i that is left out (its diagonal element,
// for exclude_self), or -1: the diagonal is skipped, not summed and subtracted, so a non-finite
// diagonal (inf - inf = NaN) cannot reach its column. A column's sum is
// (r0 + r1) + (r2 + r3) per group of four, a skipped element counting as 0, whatever the
// column block: results do not depend on the thread count.
template <typename T, typename A>
inline void add_rows_impl(A* __restrict acc, const T* const* rows, const int64_t* skip, int64_t count, int64_t w) {
  int64_t i = 0;
  for (; i + 4 <= count; i += 4) {
    const T* __restrict r0 = rows[i];
    const T* __restrict r1 = rows[i + 1];
    const T* __restrict r2 = rows[i + 2];
    const T* __restrict r3 = rows[i + 3];
    // The skipped columns of the four rows that lie in [0, w), ascending, then w.
    int64_t cut[5];
    int n = 0;
    for (int t = 0; t < 4; ++t) {
      const int64_t c = skip[i + t];
      if (c < 0 || c >= w) continue;
      int at = n++;
      while (at > 0 && cut[at - 1] > c) {
        cut[at] = cut[at - 1];
        --at;
      }
      cut[at] = c;
    }
    cut[n] = w;
    int64_t j = 0;
    for (int e = 0; e <= n; ++e) {
      const int64_t stop = cut[e];
      for (; j < stop; ++j) {
        acc[j] += (static_cast<A>(r0[j]) + static_cast<A>(r1[j])) + (static_cast<A>(r2[j]) + static_cast<A>(r3[j]));
      }
      if (e == n || j > stop) continue;  // the end, or a column already done (two rows skip it)
      const A a0 = skip[i] == j ? A(0) : static_cast<A>(r0[j]);
      const A a1 = skip[i + 1] == j ? A(0) : static_cast<A>(r1[j]);
      const A a2 = skip[i + 2] == j ? A(0) : static_cast<A>(r2[j]);
      const A a3 = skip[i + 3] == j ? A(0) : static_cast<A>(r3[j]);
      acc[j] += (a0 + a1) + (a2 + a3);
      ++j;
    }
  }
  for (; i < count; ++i) {
    const T* __restrict r = rows[i];
    const int64_t c = skip[i] >= 0 && skip[i] < w ? skip[i] : w;
    for (int64_t j = 0; j < c; ++j) acc[j] += static_cast<A>(r[j]);
    for (int64_t j = c + 1; j < w; ++j) acc[j] += static_cast<A>(r[j]);
  }
}

POWER_BERT_CLONES void add_rows(float* acc, const float* const* rows, const int64_t* skip, int64_t count, int64_t w) {
  add_rows_impl(acc, rows, skip, count, w);
}
POWER_BERT_CLONES void add_rows(double* acc, const double* const* rows, const int64_t* skip, int64_t count,
                                int64_t w) {
  add_rows_impl(acc, rows, skip, count, w);
}
template <typename T>
void add_rows(float* acc, const T* const* rows, const int64_t* skip, int64_t count, int64_t w) {
  add_rows_impl(acc, rows, skip, count, w);
}

// Columns per task: whole rows when the batch alone keeps every thread busy, else narrower
// column blocks so B = 1 still uses all threads. The sum order per column is (h, q) ascending
// whatever the split, so results do not depend on the thread count.
int64_t column_block(int64_t B, int64_t N) {
  const int64_t threads = at::get_num_threads();
  if (B >= 2 * threads) return N;
  const int64_t want = (2 * threads + B - 1) / std::max<int64_t>(B, 1);
  return std::max<int64_t>(64, (N + want - 1) / want);
}

template <typename T>
void significance_kernel(const T* attn, const bool* real, int64_t B, int64_t H, int64_t N,
                         bool exclude_self, float* out) {
  using acc_t = at::opmath_type<T>;
  const int64_t cw = column_block(B, N);
  const int64_t blocks = (N + cw - 1) / cw;
  at::parallel_for(0, B * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(cw);
    std::vector<const T*> rows(H * N);
    std::vector<int64_t> skip(H * N);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / blocks;
      const int64_t c0 = (task % blocks) * cw;
      const int64_t w = std::min(cw, N - c0);
      const T* a = attn + b * H * N * N;
      const bool* r = real + b * N;
      std::fill(acc.begin(), acc.begin() + w, acc_t(0));
      int64_t count = 0;  // the real query rows of every head, in (h, q) order
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t q = 0; q < N; ++q) {
          if (!r[q]) continue;
          skip[count] = exclude_self ? q - c0 : -1;  // the diagonal A[h, q, q], relative to the block
          rows[count++] = a + (h * N + q) * N + c0;
        }
      }
      add_rows(acc.data(), rows.data(), skip.data(), count, w);
      for (int64_t j = 0; j < w; ++j) {
        const int64_t c = c0 + j;
        if (!r[c]) {
          out[b * N + c] = -std::numeric_limits<float>::infinity();
          continue;
        }
        out[b * N + c] = static_cast<float>(acc[j]);
      }
    }
  });
}

}  // namespace

at::Tensor significance_scores(const at::Tensor& attn, const at::Tensor& real, bool exclude_self) {
  const int64_t B = attn.size(0), H = attn.size(1), N = attn.size(2);
  at::Tensor out = new_output({B, N}, attn.options().dtype(at::kFloat));
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, attn.scalar_type(), "significance_cpu", [&] {
    significance_kernel<scalar_t>(attn.data_ptr<scalar_t>(), real.data_ptr<bool>(), B, H, N,
                                  exclude_self, out.data_ptr<float>());
  });
  return out;
}

at::Tensor significance(const at::Tensor& attn, const at::Tensor& mask, bool exclude_self) {
  check_significance_args(attn, mask, "significance");
  return significance_scores(attn.contiguous(), real_tokens(mask), exclude_self);
}

}  // namespace cpu
}  // namespace power_bert
