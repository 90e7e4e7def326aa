// Host-side entry points of the CUDA kernels: raw pointers, sizes, strides and a stream, no
// torch types. Defined in the .cuh files; csrc/cuda/*.cu instantiates them for nvcc, and the
// emulated build (tests/cuda_emu) includes the .cuh files directly.
#pragma once

#include <cstdint>

#if !defined(FC_CUDA_EMULATION)
#include <cuda_runtime_api.h>
#endif

#include "fastcredit/lra_error.h"
#include "fastcredit/activations.h"
#include "fastcredit/philox.h"
#include "fastcredit/sign_feedback.h"

namespace fastcredit::cuda {

// Arithmetic type of a storage type: half precision computes in float, as the CPU kernels do
// (at::opmath_type); cuda/half_types.h specialises it for the 16-bit types.
template <typename T>
struct OpMathOf {
  using type = T;
};
template <typename T>
using OpMath = typename OpMathOf<T>::type;

// The hardware limit of gridDim.y (and z). Launchers take the limit as a parameter so that
// the emulated tests can lower it and reach their loops over grid.y with small shapes.
constexpr unsigned kMaxGridY = 65535;

// out[r * stride_r + c * stride_c] = scale * F(seed)[r, c] for r < rows, c < cols.
template <typename T>
cudaError_t launch_feedback_fill(T* out, int64_t rows, int64_t cols, int64_t stride_r,
                                 int64_t stride_c, uint64_t seed, Dist dist, double scale,
                                 cudaStream_t stream);

// out[n, cols] (contiguous) = x[n, k] (strided) @ scale * F(seed)[:k, :cols], or
// @ (scale * F(seed)[:cols, :k])^T when `transpose`. Column tiles beyond max_grid_y blocks
// are looped over inside the kernel, so cols has no limit of its own.
template <typename T>
cudaError_t launch_seeded_project(const T* x, int64_t n, int64_t k, int64_t stride_n,
                                  int64_t stride_k, T* out, int64_t cols, uint64_t seed,
                                  Dist dist, double scale, bool transpose, cudaStream_t stream,
                                  unsigned max_grid_y);

// out[r, c] = sign(w[r, c]) * |M|[r, c] over contiguous [rows, cols] buffers (W of any rank
// viewed as [out, rest]); |M| = scale, |magnitude| * scale, or |scale * F(seed)| by `kind`.
template <typename T>
cudaError_t launch_sign_feedback(const T* w, const T* magnitude, T* out, int64_t rows,
                                 int64_t cols, Magnitude kind, uint64_t seed, Dist dist,
                                 double scale, cudaStream_t stream);

// out[i] = LRA-E error unit of (a[i], d[i]) over `count` contiguous elements.
template <typename T>
cudaError_t launch_lra_error(const T* a, const T* d, T* out, int64_t count, double beta,
                             Activation activation, LocalError error, bool use_fprime,
                             double negative_slope, Surrogate surrogate, cudaStream_t stream);
// DFA backward epilogue over grad[n, d] and saved[n, d] (both strided): delta[n, d]
// (contiguous) = grad * f'(a), grad_bias[d] = sum over rows of delta, where `saved` is a or,
// when saved_is_output (grad_from_output_supported), f(a). Computed in OpMath<T>; the sums
// add the unrounded products in a fixed order (bit-reproducible). `workspace` holds
// dfa_epilogue_workspace_size(n, d) elements (none needed when it is 0).
template <typename T>
cudaError_t launch_dfa_backward_epilogue(const T* grad, int64_t grad_stride_n,
                                         int64_t grad_stride_d, const T* saved,
                                         int64_t saved_stride_n, int64_t saved_stride_d,
                                         int64_t n, int64_t d, Activation activation,
                                         double negative_slope, bool saved_is_output, T* delta,
                                         T* grad_bias, OpMath<T>* workspace, cudaStream_t stream,
                                         unsigned max_grid_y);

// Rows summed by one block of the epilogue; more rows need a workspace of partial sums.
constexpr int64_t kEpilogueSlabRows = 128;

constexpr int64_t dfa_epilogue_workspace_size(int64_t n, int64_t d) {
  const int64_t slabs = (n + kEpilogueSlabRows - 1) / kEpilogueSlabRows;
  return slabs > 1 ? slabs * d : 0;
}

}  // namespace fastcredit::cuda
