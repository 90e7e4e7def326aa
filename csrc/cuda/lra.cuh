// CUDA kernel of LRA-E's error units (csrc/fastcredit/lra_error.h): elementwise, grid-stride.
#pragma once

#include "cuda/launchers.h"
#include "fastcredit/convert.h"
#include "fastcredit/lra_error.h"
#include "fastcredit/macros.h"

namespace fastcredit::cuda {

namespace lra {
constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 4096;
}  // namespace lra

// Computed in OpMath<T> (float for half precision), rounded to T once, like the CPU kernel.
template <Activation A, LocalError E, typename T, typename Acc = OpMath<T>>
__global__ void __launch_bounds__(lra::kThreads)
    lra_error_kernel(const T* __restrict__ a, const T* __restrict__ d, T* __restrict__ out,
                     int64_t count, Acc beta, Acc slope, bool use_fprime,
                     Surrogate surrogate) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += step) {
    out[i] = value_as<T>(lra_error_unit<A, E, Acc>(value_as<Acc>(a[i]), value_as<Acc>(d[i]), beta,
                                                  slope, use_fprime, surrogate));
  }
}

template <typename T>
cudaError_t launch_lra_error(const T* a, const T* d, T* out, int64_t count, double beta,
                             Activation activation, LocalError error, bool use_fprime,
                             double negative_slope, Surrogate surrogate, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  const int64_t blocks = min(lra::kMaxBlocks, (count + lra::kThreads - 1) / lra::kThreads);
  dispatch_activation(activation, [&](auto act) {
    dispatch_local_error(error, [&](auto err) {
      // parentheses keep the template argument commas out of the macro's argument list
      FC_LAUNCH(dim3(static_cast<unsigned>(blocks)), dim3(lra::kThreads), 0, stream,
                (lra_error_kernel<decltype(act)::value, decltype(err)::value, T>))
      (a, d, out, count, static_cast<OpMath<T>>(beta), static_cast<OpMath<T>>(negative_slope),
       use_fprime, surrogate);
    });
  });
  return cudaGetLastError();
}

}  // namespace fastcredit::cuda
