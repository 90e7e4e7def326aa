// Writing a rectangle of a seeded feedback matrix F(seed) into memory. Shared by the CPU
// kernels and the CUDA kernels so both produce the same entries.
#pragma once

#include <cstdint>

#include "macros.h"
#include "philox.h"

namespace fastcredit {

// Describes dst[i * stride_i + j * stride_j] = F(row0 + i, col0 + j) for i < rows, j < cols,
// or, when `transposed`, F(col0 + j, row0 + i) (a tile of F transposed).
struct FeedbackTile {
  uint64_t seed;
  Dist dist;
  double scale;
  int64_t row0, col0;
  int64_t rows, cols;
  bool transposed;
};

// Groups of four consecutive columns of F are the unit of generation. For the rows of F that
// the tile touches, this is the number of such groups that overlap its column range.
FC_HOST_DEVICE FC_INLINE int64_t feedback_tile_groups_per_row(const FeedbackTile& t) {
  const int64_t first = (t.transposed ? t.row0 : t.col0);
  const int64_t count = (t.transposed ? t.rows : t.cols);
  if (count <= 0) return 0;
  return (first + count - 1) / 4 - first / 4 + 1;
}

FC_HOST_DEVICE FC_INLINE int64_t feedback_tile_f_rows(const FeedbackTile& t) {
  return t.transposed ? t.cols : t.rows;
}

// Generates group `g` (0-based within the tile) of F-row `r` (0-based within the tile) and
// stores the entries that fall inside the tile.
template <typename T>
FC_HOST_DEVICE FC_INLINE void write_feedback_group(const FeedbackTile& t, int64_t r, int64_t g,
                                                   T* dst, int64_t stride_i, int64_t stride_j) {
  const int64_t f_row0 = t.transposed ? t.col0 : t.row0;
  const int64_t f_col0 = t.transposed ? t.row0 : t.col0;
  const int64_t f_cols = t.transposed ? t.rows : t.cols;
  const int64_t group = f_col0 / 4 + g;
  double values[4];
  feedback_group(t.seed, static_cast<uint64_t>(f_row0 + r), static_cast<uint64_t>(group), t.dist,
                 t.scale, values);
#pragma unroll
  for (int lane = 0; lane < 4; ++lane) {
    const int64_t c = group * 4 + lane - f_col0;  // F-column within the tile
    if (c < 0 || c >= f_cols) continue;
    const int64_t i = t.transposed ? c : r;
    const int64_t j = t.transposed ? r : c;
    dst[i * stride_i + j * stride_j] = static_cast<T>(values[lane]);
  }
}

}  // namespace fastcredit
