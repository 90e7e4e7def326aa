// CPU kernel of sign-concordant feedback: B = |M| ⊙ sign(W) in one pass over W (and over the
// stored magnitudes, or generating them from Philox), no intermediate weight-sized tensors.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include "cpu/kernels.h"
#include "fastcredit/sign_feedback.h"

namespace fastcredit::cpu {
namespace {

// Groups of four entries per parallel task: a seeded group costs ~40 ns (one Philox block),
// a scalar or stored one a few ns.
constexpr int64_t kSeededGrain = 2048;
constexpr int64_t kPlainGrain = 32768;

}  // namespace

at::Tensor sign_feedback(const at::Tensor& weight, const at::Tensor& magnitude, Magnitude kind,
                         uint64_t seed, Dist dist, double scale) {
  const at::Tensor w = weight.contiguous();
  const at::Tensor m = kind == Magnitude::kStored ? magnitude.contiguous() : at::Tensor();
  at::Tensor out = at::empty(w.sizes(), w.options());
  const int64_t rows = w.size(0);
  if (rows == 0 || w.numel() == 0) return out;
  const int64_t cols = w.numel() / rows;
  const int64_t groups = (cols + 3) / 4;
  const int64_t grain = kind == Magnitude::kSeeded ? kSeededGrain : kPlainGrain;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "sign_feedback", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* w_ptr = w.data_ptr<scalar_t>();
    const scalar_t* m_ptr = m.defined() ? m.data_ptr<scalar_t>() : nullptr;
    scalar_t* out_ptr = out.data_ptr<scalar_t>();
    at::parallel_for(0, rows * groups, grain, [&](int64_t begin, int64_t end) {
      for (int64_t idx = begin; idx < end; ++idx) {
        sign_feedback_group<scalar_t, acc_t>(w_ptr, m_ptr, out_ptr, idx / groups, idx % groups,
                                             cols, kind, seed, dist, scale);
      }
    });
  });
  return out;
}

}  // namespace fastcredit::cpu
