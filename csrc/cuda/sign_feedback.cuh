// CUDA kernel of sign-concordant feedback B = |M| ⊙ sign(W). Plain CUDA C++ over raw pointers
// (runs under nvcc and in the CPU emulation); the per-entry formula is shared with the CPU
// kernel (fastcredit/sign_feedback.h), so both give the same bits.
#pragma once

#include "cuda/launchers.h"
#include "fastcredit/macros.h"
#include "fastcredit/sign_feedback.h"

namespace fastcredit::cuda {

namespace sign_feedback_config {
constexpr int kThreads = 256;
constexpr int kBlocksMax = 4096;
}  // namespace sign_feedback_config

// Grid-stride over groups of four consecutive entries of a row of the [rows, cols] view of W:
// one Philox block per group in the seeded modes, a plain elementwise pass otherwise.
template <typename T>
__global__ void __launch_bounds__(sign_feedback_config::kThreads)
    sign_feedback_kernel(const T* __restrict__ w, const T* __restrict__ magnitude,
                         T* __restrict__ out, int64_t rows, int64_t cols, Magnitude kind,
                         uint64_t seed, Dist dist, double scale) {
  const int64_t groups = (cols + 3) / 4;
  const int64_t total = rows * groups;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += step) {
    sign_feedback_group<T, T>(w, magnitude, out, idx / groups, idx % groups, cols, kind, seed,
                              dist, scale);
  }
}

template <typename T>
cudaError_t launch_sign_feedback(const T* w, const T* magnitude, T* out, int64_t rows,
                                 int64_t cols, Magnitude kind, uint64_t seed, Dist dist,
                                 double scale, cudaStream_t stream) {
  using namespace sign_feedback_config;
  const int64_t total = rows * ((cols + 3) / 4);
  if (total == 0) return cudaSuccess;
  const int64_t blocks = min(static_cast<int64_t>(kBlocksMax), (total + kThreads - 1) / kThreads);
  FC_LAUNCH(dim3(static_cast<unsigned>(blocks)), dim3(kThreads), 0, stream,
            sign_feedback_kernel<T>)
  (w, magnitude, out, rows, cols, kind, seed, dist, scale);
  return cudaGetLastError();
}

}  // namespace fastcredit::cuda
