// CUDA kernel of sign-concordant feedback B = |M| ⊙ sign(W). Plain CUDA C++ over raw pointers
// (runs under nvcc and in the CPU emulation); the per-entry formula is shared with the CPU
// kernel (fastcredit/sign_feedback.h), so both give the same bits.
#pragma once

#include "cuda/launchers.h"
#include "cuda/vector_io.cuh"
#include "fastcredit/macros.h"
#include "fastcredit/sign_feedback.h"

namespace fastcredit::cuda {

namespace sign_feedback_config {
constexpr int kThreads = 256;
constexpr int kBlocksMax = 4096;
}  // namespace sign_feedback_config

// Grid-stride, computing in OpMath<T> (float for half precision) like the CPU kernel. Seeded modes: one group of four consecutive entries of a row per thread and
// iteration (one Philox block each). Unseeded modes: over the flat array, one Pack16 of entries
// per thread and iteration when the pointers allow 16-byte accesses (then one entry each for
// the tail), else one entry (a warp reads and writes consecutive elements; no index division).
template <typename T>
__global__ void __launch_bounds__(sign_feedback_config::kThreads)
    sign_feedback_kernel(const T* __restrict__ w, const T* __restrict__ magnitude,
                         T* __restrict__ out, int64_t rows, int64_t cols, Magnitude kind,
                         uint64_t seed, Dist dist, double scale, bool vector) {
  using Acc = OpMath<T>;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (kind != Magnitude::kSeeded) {
    const int64_t count = rows * cols;
    int64_t scalar_begin = 0;
    if (vector) {
      using Pack = Pack16<T>;
      const bool stored = kind == Magnitude::kStored;
      const int64_t packs = count / Pack::kSize;
      for (int64_t p = first; p < packs; p += step) {
        const Pack wv = reinterpret_cast<const Pack*>(w)[p];
        Pack mv;
        if (stored) mv = reinterpret_cast<const Pack*>(magnitude)[p];
        Pack result;
#pragma unroll
        for (int j = 0; j < Pack::kSize; ++j) {
          result.v[j] = unseeded_sign_feedback<T, Acc>(wv.v, mv.v, j, kind, scale);
        }
        reinterpret_cast<Pack*>(out)[p] = result;
      }
      scalar_begin = packs * Pack::kSize;
    }
    for (int64_t i = scalar_begin + first; i < count; i += step) {
      out[i] = unseeded_sign_feedback<T, Acc>(w, magnitude, i, kind, scale);
    }
    return;
  }
  const int64_t groups = (cols + 3) / 4;
  const int64_t total = rows * groups;
  for (int64_t idx = first; idx < total; idx += step) {
    seeded_sign_feedback_group<T, Acc>(w, out, idx / groups, idx % groups, cols, seed, dist, scale);
  }
}

template <typename T>
cudaError_t launch_sign_feedback(const T* w, const T* magnitude, T* out, int64_t rows,
                                 int64_t cols, Magnitude kind, uint64_t seed, Dist dist,
                                 double scale, cudaStream_t stream) {
  using namespace sign_feedback_config;
  const bool vector = kind != Magnitude::kSeeded && all_aligned16(w, magnitude, out);
  const int64_t work = kind == Magnitude::kSeeded ? rows * ((cols + 3) / 4)
                       : vector ? (rows * cols + Pack16<T>::kSize - 1) / Pack16<T>::kSize
                                : rows * cols;
  if (work == 0) return cudaSuccess;
  const int64_t blocks = min(static_cast<int64_t>(kBlocksMax), (work + kThreads - 1) / kThreads);
  FC_LAUNCH(dim3(static_cast<unsigned>(blocks)), dim3(kThreads), 0, stream,
            sign_feedback_kernel<T>)
  (w, magnitude, out, rows, cols, kind, seed, dist, scale, vector);
  return cudaGetLastError();
}

}  // namespace fastcredit::cuda
