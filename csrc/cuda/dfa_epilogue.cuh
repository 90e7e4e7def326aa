// CUDA kernels of the DFA backward epilogue: delta = grad * f'(a) and grad_bias = sum_n delta.
// Plain CUDA C++ over raw pointers, so the same source runs under nvcc and in the emulation.
#pragma once

#include "cuda/launchers.h"
#include "fastcredit/activations.h"
#include "fastcredit/macros.h"

namespace fastcredit::cuda {

namespace epilogue {
// A block covers kCols columns of one slab of kEpilogueSlabRows rows: a warp spans the 32
// columns (coalesced loads and stores of each row segment) and the kRowWarps warps take every
// kRowWarps-th row. Each thread sums its column over its rows; as a warp's lanes hold
// different columns, no shuffle is needed: the kRowWarps partials meet in shared memory and
// give one partial per (slab, column). Every sum runs in a fixed order, so results do not
// depend on scheduling (no atomics).
constexpr int kCols = 32;
constexpr int kRowWarps = 8;
constexpr int kThreads = kCols * kRowWarps;
// Explicit occupancy target (<= 64 registers per thread): without it, ptxas 13 capped some
// instantiations at 40 registers and spilled the unrolled row loop.
constexpr int kMinBlocksPerSm = 4;
constexpr int kMaxGridY = 65535;
constexpr int kSumThreads = 256;
constexpr int kSumBlocksMax = 4096;
static_assert(kEpilogueSlabRows % kRowWarps == 0);

// Compile-time derivative (an ActivationGrad) and scalar type in one template argument.
template <typename GradT, typename T>
struct Traits {
  using Grad = GradT;
  using Scalar = T;
};
}  // namespace epilogue

// sums[slab, c] = sum over the slab's rows r of delta[r, c] = grad[r, c] * f'(from saved[r, c]).
template <typename Traits, typename T = typename Traits::Scalar>
__global__ void __launch_bounds__(epilogue::kThreads, epilogue::kMinBlocksPerSm)
    dfa_backward_epilogue_kernel(const T* __restrict__ grad, int64_t grad_stride_n,
                                 int64_t grad_stride_d, const T* __restrict__ saved,
                                 int64_t saved_stride_n, int64_t saved_stride_d, int64_t n,
                                 int64_t d, T slope, T* __restrict__ delta, T* __restrict__ sums) {
  using namespace epilogue;
  __shared__ T warp_sums[kRowWarps][kCols];
  const int lane = threadIdx.x;
  const int warp = threadIdx.y;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kCols + lane;
  const int64_t slabs = (n + kEpilogueSlabRows - 1) / kEpilogueSlabRows;
  // gridDim.y may be smaller than the slab count; the loop bound is uniform over the block,
  // so every thread reaches both barriers equally often.
  for (int64_t slab = blockIdx.y; slab < slabs; slab += gridDim.y) {
    const int64_t row0 = slab * kEpilogueSlabRows;
    const int rows = static_cast<int>(min(static_cast<int64_t>(kEpilogueSlabRows), n - row0));
    T acc = T(0);
    if (c < d) {
      const T* g = grad + row0 * grad_stride_n + c * grad_stride_d;
      const T* s = saved + row0 * saved_stride_n + c * saved_stride_d;
      T* out = delta + row0 * d + c;
      for (int r = warp; r < rows; r += kRowWarps) {
        const T v = g[r * grad_stride_n] * Traits::Grad::at(s[r * saved_stride_n], slope);
        out[r * d] = v;
        acc += v;
      }
    }
    warp_sums[warp][lane] = acc;
    __syncthreads();
    if (warp == 0 && c < d) {
      T total = warp_sums[0][lane];
#pragma unroll
      for (int w = 1; w < kRowWarps; ++w) total += warp_sums[w][lane];
      sums[slab * d + c] = total;
    }
    __syncthreads();  // warp_sums is rewritten by the next slab
  }
}

// out[c] = sum over r < rows of partial[r, c], in row order.
template <typename T>
__global__ void __launch_bounds__(epilogue::kSumThreads)
    dfa_epilogue_column_sum_kernel(const T* __restrict__ partial, int64_t rows, int64_t d,
                                   T* __restrict__ out) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < d;
       c += step) {
    T s = T(0);
    for (int64_t r = 0; r < rows; ++r) s += partial[r * d + c];
    out[c] = s;
  }
}

template <typename T>
cudaError_t launch_dfa_backward_epilogue(const T* grad, int64_t grad_stride_n,
                                         int64_t grad_stride_d, const T* saved,
                                         int64_t saved_stride_n, int64_t saved_stride_d,
                                         int64_t n, int64_t d, Activation activation,
                                         double negative_slope, bool saved_is_output, T* delta,
                                         T* grad_bias, T* workspace, cudaStream_t stream) {
  using namespace epilogue;
  if (d == 0) return cudaSuccess;
  if (n == 0) return cudaMemsetAsync(grad_bias, 0, d * sizeof(T), stream);  // all-zero bits: 0.0
  const int64_t slabs = (n + kEpilogueSlabRows - 1) / kEpilogueSlabRows;
  const dim3 grid(static_cast<unsigned>((d + kCols - 1) / kCols),
                  static_cast<unsigned>(min(slabs, static_cast<int64_t>(kMaxGridY))));
  // One slab: the block's sums are the final ones.
  T* sums = slabs > 1 ? workspace : grad_bias;
  dispatch_activation_grad(activation, saved_is_output, [&](auto grad_tag) {
    using KernelTraits = Traits<decltype(grad_tag), T>;
    FC_LAUNCH(grid, dim3(kCols, kRowWarps), 0, stream, dfa_backward_epilogue_kernel<KernelTraits>)
    (grad, grad_stride_n, grad_stride_d, saved, saved_stride_n, saved_stride_d, n, d,
     static_cast<T>(negative_slope), delta, sums);
  });
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || slabs == 1) return err;
  const int64_t blocks =
      min(static_cast<int64_t>(kSumBlocksMax), (d + kSumThreads - 1) / kSumThreads);
  FC_LAUNCH(dim3(static_cast<unsigned>(blocks)), dim3(kSumThreads), 0, stream,
            dfa_epilogue_column_sum_kernel<T>)
  (workspace, slabs, d, grad_bias);
  return cudaGetLastError();
}

}  // namespace fastcredit::cuda
