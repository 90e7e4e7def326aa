// CPU kernel of sign-concordant feedback: B = |M| ⊙ sign(W) in one pass over W (and over the
// stored magnitudes, or generating them from Philox), no intermediate weight-sized tensors.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cmath>

#include "cpu/feedback_rows.h"
#include "cpu/kernels.h"
#include "fastcredit/sign_feedback.h"

namespace fastcredit::cpu {
namespace {

// Entries per parallel task: a seeded entry costs a few ns (a quarter of a Philox block), a
// scalar or stored one well under one.
constexpr int64_t kSeededGrain = 4096;
constexpr int64_t kPlainGrain = 65536;

// The unseeded modes over one contiguous span; straight-line per entry, so the compiler
// vectorises the float and double loops.
template <typename T, typename Acc>
void unseeded_span(const T* __restrict__ w, const T* __restrict__ magnitude, T* __restrict__ out,
                   int64_t n, Magnitude kind, double scale) {
  for (int64_t i = 0; i < n; ++i) {
    out[i] = unseeded_sign_feedback<T, Acc>(w, magnitude, i, kind, scale);
  }
}

// The seeded modes over the entries [begin, end) of the [rows, cols] view: |scale * F(seed)|
// generated a row segment at a time.
template <typename T>
void signed_seeded(const T* w, T* out, int64_t begin, int64_t end, int64_t cols, uint64_t seed,
                   Dist dist, double scale) {
  double values[kSegmentColumns];
  for (int64_t idx = begin; idx < end;) {
    const int64_t row = idx / cols;
    const int64_t col = idx - row * cols;
    const int64_t count = std::min({kSegmentColumns, cols - col, end - idx});
    feedback_row_values(seed, dist, scale, static_cast<uint64_t>(row), col, count, values);
    for (int64_t j = 0; j < count; ++j) {
      out[idx + j] = signed_magnitude(w[idx + j], static_cast<T>(std::fabs(values[j])));
    }
    idx += count;
  }
}

}  // namespace

at::Tensor sign_feedback(const at::Tensor& weight, const at::Tensor& magnitude, Magnitude kind,
                         uint64_t seed, Dist dist, double scale) {
  const at::Tensor w = weight.contiguous();
  const at::Tensor m = kind == Magnitude::kStored ? magnitude.contiguous() : at::Tensor();
  at::Tensor out = at::empty(w.sizes(), w.options());
  const int64_t rows = w.size(0);
  if (rows == 0 || w.numel() == 0) return out;
  const int64_t cols = w.numel() / rows;
  const int64_t grain = kind == Magnitude::kSeeded ? kSeededGrain : kPlainGrain;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "sign_feedback", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* w_ptr = w.data_ptr<scalar_t>();
    const scalar_t* m_ptr = m.defined() ? m.data_ptr<scalar_t>() : nullptr;
    scalar_t* out_ptr = out.data_ptr<scalar_t>();
    at::parallel_for(0, w.numel(), grain, [&](int64_t begin, int64_t end) {
      if (kind == Magnitude::kSeeded) {
        signed_seeded(w_ptr, out_ptr, begin, end, cols, seed, dist, scale);
      } else {
        unseeded_span<scalar_t, acc_t>(w_ptr + begin, m_ptr ? m_ptr + begin : nullptr,
                                       out_ptr + begin, end - begin, kind, scale);
      }
    });
  });
  return out;
}

}  // namespace fastcredit::cpu
