// CPU kernels for seeded feedback: filling a matrix, and projecting through one that is
// generated a tile at a time and never stored whole.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>

#include <algorithm>

#include "cpu/kernels.h"
#include "cpu/feedback_rows.h"
#include "fastcredit/feedback_tile.h"

namespace fastcredit::cpu {
namespace {

// Tile of F generated per GEMM call: at most 256 rows (K) and 256 x 256 entries = 256 KiB in
// float32, 512 KiB in float64, small enough to stay in L2 while the GEMM library streams x
// past it. A shallower K gets proportionally wider tiles: DFA's e [N, 10] @ B [10, d] is then
// one GEMM per 6553 columns instead of one per 256.
constexpr int64_t kTileK = 256;
constexpr int64_t kTileEntries = 256 * 256;
// Row segments (kSegmentColumns entries of a row of F each) per parallel task: a segment is ~1 us of work.
constexpr int64_t kSegmentGrain = 8;

// dst[i * stride_i + j * stride_j] = tile entry (i, j), generated one row of F at a time.
template <typename T>
void fill_tile(const FeedbackTile& tile, T* dst, int64_t stride_i, int64_t stride_j) {
  const int64_t f_rows = tile.transposed ? tile.cols : tile.rows;
  const int64_t f_cols = tile.transposed ? tile.rows : tile.cols;
  const int64_t f_row0 = tile.transposed ? tile.col0 : tile.row0;
  const int64_t f_col0 = tile.transposed ? tile.row0 : tile.col0;
  // Strides that step along a row of F and from one row of F to the next, in dst.
  const int64_t along = tile.transposed ? stride_i : stride_j;
  const int64_t across = tile.transposed ? stride_j : stride_i;
  const int64_t chunks = (f_cols + kSegmentColumns - 1) / kSegmentColumns;
  at::parallel_for(0, f_rows * chunks, kSegmentGrain, [&](int64_t begin, int64_t end) {
    double values[kSegmentColumns];
    for (int64_t idx = begin; idx < end; ++idx) {
      const int64_t r = idx / chunks;
      const int64_t c0 = (idx % chunks) * kSegmentColumns;
      const int64_t count = std::min(kSegmentColumns, f_cols - c0);
      feedback_row_values(tile.seed, tile.dist, tile.scale, static_cast<uint64_t>(f_row0 + r),
                          f_col0 + c0, count, values);
      T* out = dst + r * across + c0 * along;
      for (int64_t j = 0; j < count; ++j) out[j * along] = static_cast<T>(values[j]);
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

  const int64_t tile_cols = std::min(cols, kTileEntries / std::min(k, kTileK));
  at::Tensor tile_buffer = at::empty({std::min(k, kTileK), tile_cols}, x_acc.options());
  for (int64_t c0 = 0; c0 < cols; c0 += tile_cols) {
    const int64_t tc = std::min(tile_cols, cols - c0);
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
