// CUDA kernels for seeded feedback. Plain CUDA C++ over raw pointers so that the same source
// runs under nvcc and in the CPU emulation used by the tests.
#pragma once

#include "cuda/launchers.h"
#include "fastcredit/feedback_tile.h"
#include "fastcredit/macros.h"

namespace fastcredit::cuda {

namespace projection {
constexpr int kThreads = 256;
constexpr int kFillBlocksMax = 4096;
// Block tile of the projection: kRows x kCols outputs, kDepth-deep steps along K. Each of
// the 16 x 16 threads owns a 4 x 4 strided patch of outputs.
constexpr int kRows = 64;
constexpr int kCols = 64;
constexpr int kDepth = 16;
constexpr int kThreadGrid = 16;
constexpr int kPerThread = 4;
// Explicit occupancy target (<= 128 registers per thread): without it, ptxas 13 capped the
// float projection at 64 registers on sm_90 and spilled inside the column-tile loop.
constexpr int kMinBlocksPerSm = 2;
}  // namespace projection

template <typename T>
__global__ void __launch_bounds__(projection::kThreads)
    feedback_fill_kernel(T* out, int64_t rows, int64_t cols, int64_t stride_r, int64_t stride_c,
                         uint64_t seed, Dist dist, double scale) {
  const FeedbackTile tile{seed, dist, scale, 0, 0, rows, cols, false};
  const int64_t groups = feedback_tile_groups_per_row(tile);
  const int64_t total = rows * groups;
  // Consecutive threads take consecutive groups of a row, or, when the output is column-major,
  // the same group of consecutive rows: either way a warp's stores cover contiguous memory.
  const bool down_columns = stride_r < stride_c;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += step) {
    const int64_t row = down_columns ? idx % rows : idx / groups;
    const int64_t group = down_columns ? idx / rows : idx % groups;
    write_feedback_group(tile, row, group, out, stride_r, stride_c);
  }
}

// One block computes out[row0 : row0 + 64, col0 : col0 + 64] for each of its column tiles:
// blockIdx.y, then every gridDim.y-th (grid.y is capped at 65535, cols is not). Per K step it
// stages a 64 x 16 slice of x and generates the matching 16 x 64 tile of F in shared memory
// (one Philox block per thread), so F never touches global memory.
template <typename T>
__global__ void __launch_bounds__(projection::kThreads, projection::kMinBlocksPerSm)
    seeded_project_kernel(const T* __restrict__ x, int64_t n, int64_t k, int64_t stride_n,
                          int64_t stride_k, T* __restrict__ out, int64_t cols, uint64_t seed,
                          Dist dist, double scale, bool transpose) {
  using namespace projection;
  // Transposed. A warp stores 16 depths of 2 rows: with a row pitch of 2 mod 32 words (float)
  // or odd in doubles (a double access is served per half-warp) the stores hit distinct banks.
  constexpr int kXPitch = kRows + (sizeof(T) == 4 ? 2 : 1);
  __shared__ T x_tile[kDepth][kXPitch];
  __shared__ T f_tile[kDepth][kCols];

  const int tid = threadIdx.x;
  const int tx = tid % kThreadGrid;
  const int ty = tid / kThreadGrid;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const int64_t col_tiles = (cols + kCols - 1) / kCols;
  // The loop bound is uniform over the block, so every thread reaches each barrier equally
  // often; the K loop ends with a barrier, so the next tile's stores cannot race its reads.
  for (int64_t col_tile = blockIdx.y; col_tile < col_tiles; col_tile += gridDim.y) {
    const int64_t col0 = col_tile * kCols;
    const int64_t tile_cols = min(static_cast<int64_t>(kCols), cols - col0);

    T acc[kPerThread][kPerThread];
#pragma unroll
    for (int i = 0; i < kPerThread; ++i)
#pragma unroll
      for (int j = 0; j < kPerThread; ++j) acc[i][j] = T(0);

    for (int64_t k0 = 0; k0 < k; k0 += kDepth) {
      const int depth = static_cast<int>(min(static_cast<int64_t>(kDepth), k - k0));
      for (int e = tid; e < kRows * kDepth; e += kThreads) {
        const int r = e / kDepth;
        const int d = e % kDepth;
        const int64_t gr = row0 + r;
        x_tile[d][r] = (gr < n && d < depth) ? x[gr * stride_n + (k0 + d) * stride_k] : T(0);
      }
      const FeedbackTile tile{seed, dist, scale, k0, col0, depth, tile_cols, transpose};
      const int64_t groups = feedback_tile_groups_per_row(tile);
      const int64_t total = feedback_tile_f_rows(tile) * groups;
      for (int64_t g = tid; g < total; g += kThreads) {
        write_feedback_group(tile, g / groups, g % groups, &f_tile[0][0], kCols, 1);
      }
      __syncthreads();
      // Only the generated part of f_tile is read: columns past tile_cols feed outputs that are
      // never stored, and rows past `depth` are skipped.
      for (int d = 0; d < depth; ++d) {
        T a[kPerThread], b[kPerThread];
#pragma unroll
        for (int i = 0; i < kPerThread; ++i) a[i] = x_tile[d][ty + i * kThreadGrid];
#pragma unroll
        for (int j = 0; j < kPerThread; ++j) {
          const int c = tx + j * kThreadGrid;
          b[j] = c < tile_cols ? f_tile[d][c] : T(0);
        }
#pragma unroll
        for (int i = 0; i < kPerThread; ++i)
#pragma unroll
          for (int j = 0; j < kPerThread; ++j) acc[i][j] += a[i] * b[j];
      }
      __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
      const int64_t r = row0 + ty + i * kThreadGrid;
      if (r >= n) continue;
#pragma unroll
      for (int j = 0; j < kPerThread; ++j) {
        const int64_t c = tx + j * kThreadGrid;
        if (c < tile_cols) out[r * cols + col0 + c] = acc[i][j];
      }
    }
  }
}

template <typename T>
cudaError_t launch_feedback_fill(T* out, int64_t rows, int64_t cols, int64_t stride_r,
                                 int64_t stride_c, uint64_t seed, Dist dist, double scale,
                                 cudaStream_t stream) {
  using namespace projection;
  const int64_t groups = (cols + 3) / 4;
  const int64_t total = rows * groups;
  if (total == 0) return cudaSuccess;
  const int64_t blocks = min(static_cast<int64_t>(kFillBlocksMax), (total + kThreads - 1) / kThreads);
  FC_LAUNCH(dim3(static_cast<unsigned>(blocks)), dim3(kThreads), 0, stream, feedback_fill_kernel<T>)
  (out, rows, cols, stride_r, stride_c, seed, dist, scale);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_seeded_project(const T* x, int64_t n, int64_t k, int64_t stride_n,
                                  int64_t stride_k, T* out, int64_t cols, uint64_t seed,
                                  Dist dist, double scale, bool transpose, cudaStream_t stream,
                                  unsigned max_grid_y) {
  using namespace projection;
  if (n == 0 || cols == 0) return cudaSuccess;
  const int64_t col_tiles = (cols + kCols - 1) / kCols;
  const dim3 grid(static_cast<unsigned>((n + kRows - 1) / kRows),
                  static_cast<unsigned>(min(col_tiles, static_cast<int64_t>(max_grid_y))));
  FC_LAUNCH(grid, dim3(kThreads), 0, stream, seeded_project_kernel<T>)
  (x, n, k, stride_n, stride_k, out, cols, seed, dist, scale, transpose);
  return cudaGetLastError();
}

}  // namespace fastcredit::cuda
