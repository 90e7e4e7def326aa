// CPU kernels for seeded feedback: filling a matrix, and projecting through one that is
// generated a tile at a time and never stored whole.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>

#include <algorithm>

#include "cpu/kernels.h"
#include "fastcredit/feedback_tile.h"

namespace fastcredit::cpu {
namespace {

// Tile of F generated per GEMM call: 256 x 256 entries = 256 KiB in float32, 512 KiB in
// float64, small enough to stay in L2 while the GEMM library streams x past it.
constexpr int64_t kTileK = 256;
constexpr int64_t kTileCols = 256;
// Philox groups per parallel task; a group is ~40 ns of work.
constexpr int64_t kGroupGrain = 2048;

template <typename T>
void fill_tile(const FeedbackTile& tile, T* dst, int64_t stride_i, int64_t stride_j) {
  const int64_t groups = feedback_tile_groups_per_row(tile);
  const int64_t total = feedback_tile_f_rows(tile) * groups;
  at::parallel_for(0, total, kGroupGrain, [&](int64_t begin, int64_t end) {
    for (int64_t idx = begin; idx < end; ++idx) {
      write_feedback_group(tile, idx / groups, idx % groups, dst, stride_i, stride_j);
    }
  });
}

}  // namespace

void feedback_fill(at::Tensor& out, uint64_t seed, Dist dist, double scale) {
  const FeedbackTile tile{seed, dist, scale, 0, 0, out.size(0), out.size(1), false};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "feedback_fill_",
                                  [&] {
                                    fill_tile(tile, out.data_ptr<scalar_t>(), out.stride(0),
                                              out.stride(1));
                                  });
}

at::Tensor seeded_project(const at::Tensor& x, uint64_t seed, int64_t cols, Dist dist,
                          double scale, bool transpose) {
  const int64_t n = x.size(0);
  const int64_t k = x.size(1);
  // Half-precision inputs are computed in float32 and rounded once at the end.
  const auto acc_type = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor x_acc = x.to(acc_type);
  at::Tensor out = at::empty({n, cols}, x_acc.options());
  if (k == 0) return out.zero_().to(x.scalar_type());
  if (n == 0 || cols == 0) return out.to(x.scalar_type());

  at::Tensor tile_buffer = at::empty({std::min(k, kTileK), std::min(cols, kTileCols)},
                                     x_acc.options());
  for (int64_t c0 = 0; c0 < cols; c0 += kTileCols) {
    const int64_t tc = std::min(kTileCols, cols - c0);
    at::Tensor out_cols = out.narrow(1, c0, tc);
    for (int64_t k0 = 0; k0 < k; k0 += kTileK) {
      const int64_t tk = std::min(kTileK, k - k0);
      at::Tensor b_tile = tile_buffer.narrow(0, 0, tk).narrow(1, 0, tc);
      // Tile entry (i, j) multiplies x[:, k0 + i] into out[:, c0 + j].
      const FeedbackTile tile{seed, dist, scale, k0, c0, tk, tc, transpose};
      AT_DISPATCH_FLOATING_TYPES(acc_type, "seeded_project", [&] {
        fill_tile(tile, b_tile.data_ptr<scalar_t>(), b_tile.stride(0), b_tile.stride(1));
      });
      const at::Tensor x_slice = x_acc.narrow(1, k0, tk);
      if (k0 == 0) {
        at::mm_out(out_cols, x_slice, b_tile);
      } else {
        out_cols.addmm_(x_slice, b_tile);
      }
    }
  }
  return out.to(x.scalar_type());
}

}  // namespace fastcredit::cpu
