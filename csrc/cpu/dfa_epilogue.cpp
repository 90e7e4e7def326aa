// CPU kernel of the DFA backward epilogue: delta = grad * f'(a) and grad_bias = sum_n delta in
// one pass over grad and the saved tensor (a, or f(a) for activations whose f' follows from it).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <vector>

#include "cpu/kernels.h"

namespace fastcredit::cpu {
namespace {

// Work is split into fixed tiles of kRowChunk rows x kColBlock columns. Each tile writes the
// column sums of its rows to its own slot, and the slots are added in row order afterwards,
// so grad_bias does not depend on the thread count.
constexpr int64_t kRowChunk = 64;
constexpr int64_t kColBlock = 512;
constexpr int64_t kColumnGrain = 4096;

struct Strided2d {
  int64_t row, col;
};

// One tile; kUnit: both inputs have column stride 1, which lets the compiler vectorise.
template <typename Grad, bool kUnit, typename scalar_t, typename acc_t>
void epilogue_tile(const scalar_t* grad, Strided2d gs, const scalar_t* saved, Strided2d ss,
                   int64_t r0, int64_t r1, int64_t c0, int64_t c1, int64_t d, acc_t slope,
                   scalar_t* delta, acc_t* sums) {
  std::fill(sums + c0, sums + c1, acc_t(0));
  for (int64_t r = r0; r < r1; ++r) {
    const scalar_t* g_row = grad + r * gs.row;
    const scalar_t* s_row = saved + r * ss.row;
    scalar_t* d_row = delta + r * d;
    for (int64_t c = c0; c < c1; ++c) {
      const acc_t g = static_cast<acc_t>(g_row[kUnit ? c : c * gs.col]);
      const acc_t x = static_cast<acc_t>(s_row[kUnit ? c : c * ss.col]);
      const acc_t v = g * Grad::at(x, slope);
      d_row[c] = static_cast<scalar_t>(v);
      sums[c] += v;
    }
  }
}

template <typename Grad, typename scalar_t>
void epilogue(const at::Tensor& grad, const at::Tensor& saved, double negative_slope,
              at::Tensor& delta, at::Tensor& grad_bias) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t n = grad.size(0);
  const int64_t d = grad.size(1);
  const int64_t row_chunks = (n + kRowChunk - 1) / kRowChunk;
  const int64_t col_blocks = (d + kColBlock - 1) / kColBlock;
  std::vector<acc_t> partial(static_cast<size_t>(row_chunks * d));
  const Strided2d gs{grad.stride(0), grad.stride(1)};
  const Strided2d ss{saved.stride(0), saved.stride(1)};
  const bool unit = gs.col == 1 && ss.col == 1;
  const scalar_t* g = grad.const_data_ptr<scalar_t>();
  const scalar_t* s = saved.const_data_ptr<scalar_t>();
  scalar_t* out = delta.mutable_data_ptr<scalar_t>();
  const auto slope = static_cast<acc_t>(negative_slope);

  at::parallel_for(0, row_chunks * col_blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t rc = task / col_blocks;
      const int64_t c0 = (task % col_blocks) * kColBlock;
      const int64_t c1 = std::min(d, c0 + kColBlock);
      const int64_t r0 = rc * kRowChunk;
      const int64_t r1 = std::min(n, r0 + kRowChunk);
      acc_t* sums = partial.data() + rc * d;
      if (unit) {
        epilogue_tile<Grad, true>(g, gs, s, ss, r0, r1, c0, c1, d, slope, out, sums);
      } else {
        epilogue_tile<Grad, false>(g, gs, s, ss, r0, r1, c0, c1, d, slope, out, sums);
      }
    }
  });

  scalar_t* bias = grad_bias.mutable_data_ptr<scalar_t>();
  at::parallel_for(0, d, kColumnGrain, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      acc_t s = 0;
      for (int64_t rc = 0; rc < row_chunks; ++rc) s += partial[rc * d + c];
      bias[c] = static_cast<scalar_t>(s);
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> dfa_backward_epilogue(const at::Tensor& grad,
                                                         const at::Tensor& saved,
                                                         Activation activation,
                                                         double negative_slope,
                                                         bool saved_is_output) {
  at::Tensor delta = at::empty(grad.sizes(), grad.options());
  at::Tensor grad_bias = at::empty({grad.size(1)}, grad.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, grad.scalar_type(), "dfa_backward_epilogue", [&] {
        dispatch_activation_grad(activation, saved_is_output, [&](auto grad_tag) {
          epilogue<decltype(grad_tag), scalar_t>(grad, saved, negative_slope, delta, grad_bias);
        });
      });
  return {delta, grad_bias};
}

}  // namespace fastcredit::cpu
