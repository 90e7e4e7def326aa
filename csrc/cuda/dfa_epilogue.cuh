// CUDA kernels of the DFA backward epilogue: delta = grad * f'(a) and grad_bias = sum_n delta.
// Plain CUDA C++ over raw pointers, so the same source runs under nvcc and in the emulation.
#pragma once

#include "cuda/launchers.h"
#include "fastcredit/activations.h"
#include "fastcredit/convert.h"
#include "fastcredit/macros.h"

namespace fastcredit::cuda {

namespace epilogue {
// A block covers kCols columns of one slab of kEpilogueSlabRows rows: a warp spans the 32
// columns (coalesced loads and stores of each row segment) and the kRowWarps warps take every
// kRowWarps-th row. Each thread sums its column over its rows; as a warp's lanes hold
// different columns, no shuffle is needed: the kRowWarps partials meet in shared memory and
// give one partial per (slab, column). The partials of the slabs are then summed by a second
// kernel of the same shape. Every sum runs in a fixed order, so results do not depend on
// scheduling (no atomics). Arithmetic is in OpMath<T> (float for half precision) and the
// sums add unrounded products, like the CPU kernel.
constexpr int kCols = 32;
constexpr int kRowWarps = 8;
constexpr int kThreads = kCols * kRowWarps;
// Explicit occupancy target (<= 64 registers per thread): without it, ptxas 13 capped some
// instantiations at 40 registers and spilled the unrolled row loop.
constexpr int kMinBlocksPerSm = 4;
static_assert(kEpilogueSlabRows % kRowWarps == 0);

// Compile-time derivative (an ActivationGrad) and scalar type in one template argument.
template <typename GradT, typename T>
struct Traits {
  using Grad = GradT;
  using Scalar = T;
};

// Thread (lane, warp) holds `acc`, its share of column `c`; warp 0 adds the kRowWarps shares
// in warp order and stores the column's total. Both barriers are reached by every thread.
template <typename Acc, typename Out>
__device__ FC_INLINE void combine_warps(Acc (&warp_sums)[kRowWarps][kCols], Acc acc, int lane,
                                        int warp, bool store, Out* out) {
  warp_sums[warp][lane] = acc;
  __syncthreads();
  if (warp == 0 && store) {
    Acc total = warp_sums[0][lane];
#pragma unroll
    for (int w = 1; w < kRowWarps; ++w) total += warp_sums[w][lane];
    *out = value_as<Out>(total);
  }
  __syncthreads();  // warp_sums is rewritten by the next round
}
}  // namespace epilogue

// Per slab: delta[r, c] = grad[r, c] * f'(from saved[r, c]) and the sum of the slab's rows of
// delta, into partial[slab, c] when there are several slabs, else into grad_bias[c].
template <typename Traits, typename T = typename Traits::Scalar, typename Acc = OpMath<T>>
__global__ void __launch_bounds__(epilogue::kThreads, epilogue::kMinBlocksPerSm)
    dfa_backward_epilogue_kernel(const T* __restrict__ grad, int64_t grad_stride_n,
                                 int64_t grad_stride_d, const T* __restrict__ saved,
                                 int64_t saved_stride_n, int64_t saved_stride_d, int64_t n,
                                 int64_t d, Acc slope, T* __restrict__ delta,
                                 Acc* __restrict__ partial, T* __restrict__ grad_bias) {
  using namespace epilogue;
  __shared__ Acc warp_sums[kRowWarps][kCols];
  const int lane = threadIdx.x;
  const int warp = threadIdx.y;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kCols + lane;
  const int64_t slabs = (n + kEpilogueSlabRows - 1) / kEpilogueSlabRows;
  // gridDim.y may be smaller than the slab count; the loop bound is uniform over the block,
  // so every thread reaches both barriers equally often.
  for (int64_t slab = blockIdx.y; slab < slabs; slab += gridDim.y) {
    const int64_t row0 = slab * kEpilogueSlabRows;
    const int rows = static_cast<int>(min(static_cast<int64_t>(kEpilogueSlabRows), n - row0));
    Acc acc = Acc(0);
    if (c < d) {
      const T* g = grad + row0 * grad_stride_n + c * grad_stride_d;
      const T* s = saved + row0 * saved_stride_n + c * saved_stride_d;
      T* out = delta + row0 * d + c;
      for (int r = warp; r < rows; r += kRowWarps) {
        const Acc v = value_as<Acc>(g[r * grad_stride_n]) *
                      Traits::Grad::at(value_as<Acc>(s[r * saved_stride_n]), slope);
        out[r * d] = value_as<T>(v);
        acc += v;
      }
    }
    if (slabs > 1) {
      combine_warps(warp_sums, acc, lane, warp, c < d, partial + slab * d + c);
    } else {
      combine_warps(warp_sums, acc, lane, warp, c < d, grad_bias + c);
    }
  }
}

// out[c] = sum over r < rows of partial[r, c]: thread (lane, warp) of a block adds rows warp,
// warp + kRowWarps, ... of its column in row order, then the warps' shares are added in warp
// order. The same two levels as the slab sums, so the order is fixed and loads coalesce.
template <typename T, typename Acc = OpMath<T>>
__global__ void __launch_bounds__(epilogue::kThreads)
    dfa_epilogue_column_sum_kernel(const Acc* __restrict__ partial, int64_t rows, int64_t d,
                                   T* __restrict__ out) {
  using namespace epilogue;
  __shared__ Acc warp_sums[kRowWarps][kCols];
  const int lane = threadIdx.x;
  const int warp = threadIdx.y;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kCols + lane;
  Acc acc = Acc(0);
  if (c < d) {
    for (int64_t r = warp; r < rows; r += kRowWarps) acc += partial[r * d + c];
  }
  combine_warps(warp_sums, acc, lane, warp, c < d, out + c);
}

template <typename T>
cudaError_t launch_dfa_backward_epilogue(const T* grad, int64_t grad_stride_n,
                                         int64_t grad_stride_d, const T* saved,
                                         int64_t saved_stride_n, int64_t saved_stride_d,
                                         int64_t n, int64_t d, Activation activation,
                                         double negative_slope, bool saved_is_output, T* delta,
                                         T* grad_bias, OpMath<T>* workspace, cudaStream_t stream,
                                         unsigned max_grid_y) {
  using namespace epilogue;
  if (d == 0) return cudaSuccess;
  if (n == 0) return cudaMemsetAsync(grad_bias, 0, d * sizeof(T), stream);  // all-zero bits: 0.0
  const int64_t slabs = (n + kEpilogueSlabRows - 1) / kEpilogueSlabRows;
  const unsigned column_blocks = static_cast<unsigned>((d + kCols - 1) / kCols);
  const dim3 grid(column_blocks,
                  static_cast<unsigned>(min(slabs, static_cast<int64_t>(max_grid_y))));
  dispatch_activation_grad(activation, saved_is_output, [&](auto grad_tag) {
    using KernelTraits = Traits<decltype(grad_tag), T>;
    FC_LAUNCH(grid, dim3(kCols, kRowWarps), 0, stream, dfa_backward_epilogue_kernel<KernelTraits>)
    (grad, grad_stride_n, grad_stride_d, saved, saved_stride_n, saved_stride_d, n, d,
     static_cast<OpMath<T>>(negative_slope), delta, workspace, grad_bias);
  });
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || slabs == 1) return err;
  FC_LAUNCH(dim3(column_blocks), dim3(kCols, kRowWarps), 0, stream,
            dfa_epilogue_column_sum_kernel<T>)
  (workspace, slabs, d, grad_bias);
  return cudaGetLastError();
}

}  // namespace fastcredit::cuda
