// Self-test kernels for the CUDA emulation header: a shared-memory tiled matmul and a
// shuffle + shared-memory block reduction, written as plain CUDA C++ like our real kernels.
// Planted bugs are switched on with -D (tests/test_cuda_emu_harness.py says what must catch
// each one):
//   FC_BUG_NO_SYNC_AFTER_LOAD     (a) matmul reads a tile before every thread has stored it
//   FC_BUG_NO_SYNC_AFTER_COMPUTE  (b) matmul overwrites a tile other threads still read
//   FC_BUG_BARRIER_IN_WARP0       (c) __syncthreads inside `if (warp == 0)`
//   FC_BUG_BARRIER_TWO_SITES      (c') warps wait at two different __syncthreads
//   FC_BUG_SHFL_AFTER_RETURN      (d) full-mask shuffles after an early return
//   FC_BUG_SHFL_IN_HALF_WARP      (e) full-mask shuffle inside `if (lane < 16)`
//   FC_BUG_SHARED_ONE_SHORT       (f) dynamic shared memory one element short
//   FC_BUG_READ_UNWRITTEN_SHARED  (f') reads dynamic shared memory nobody wrote
//   FC_BUG_1025_THREADS           (g) launch with 1025 threads per block
#pragma once

#include "fastcredit/macros.h"

namespace selftest {

constexpr int kTile = 16;
constexpr int kTileThreads = kTile * kTile;

// c[m, n] = a[m, k] @ b[k, n], row-major; one kTile x kTile tile of c per block.
template <typename T>
__global__ void __launch_bounds__(kTileThreads)
    matmul_tiled_kernel(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ c, int m,
                        int n, int k) {
  __shared__ T a_tile[kTile][kTile];
  __shared__ T b_tile[kTile][kTile];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int row = blockIdx.y * kTile + ty, col = blockIdx.x * kTile + tx;
  T acc = 0;
  for (int k0 = 0; k0 < k; k0 += kTile) {
    a_tile[ty][tx] = row < m && k0 + tx < k ? a[row * k + k0 + tx] : T(0);
    b_tile[ty][tx] = k0 + ty < k && col < n ? b[(k0 + ty) * n + col] : T(0);
#ifndef FC_BUG_NO_SYNC_AFTER_LOAD
    __syncthreads();
#endif
    for (int kk = 0; kk < kTile; ++kk) acc += a_tile[ty][kk] * b_tile[kk][tx];
#ifndef FC_BUG_NO_SYNC_AFTER_COMPUTE
    __syncthreads();
#endif
  }
  if (row < m && col < n) c[row * n + col] = acc;
}

template <typename T>
cudaError_t launch_matmul(const T* a, const T* b, T* c, int m, int n, int k, cudaStream_t stream) {
  const dim3 block(kTile, kTile);
  const dim3 grid((n + kTile - 1) / kTile, (m + kTile - 1) / kTile);
  FC_LAUNCH(grid, block, 0, stream, matmul_tiled_kernel<T>)(a, b, c, m, n, k);
  return cudaGetLastError();
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int offset = warpSize / 2; offset > 0; offset /= 2) {
#ifdef FC_BUG_SHFL_IN_HALF_WARP
    if (threadIdx.x % warpSize < 16)
#endif
      v += __shfl_down_sync(0xffffffffu, v, offset);
  }
  return v;
}

// *out += sum(x[0, n)): per-warp shuffles, per-block shared memory (one slot per warp), one
// atomicAdd per block. blockDim.x is a multiple of warpSize.
template <typename T>
__global__ void block_sum_kernel(const T* __restrict__ x, int n, T* __restrict__ out) {
  FC_DYNAMIC_SHARED(T, warp_sums);
  const int lane = threadIdx.x % warpSize, warp = threadIdx.x / warpSize;
  int i = blockIdx.x * blockDim.x + threadIdx.x;
#ifdef FC_BUG_SHFL_AFTER_RETURN
  if (i >= n) return;
#endif
  T v = 0;
  for (; i < n; i += gridDim.x * blockDim.x) v += x[i];
  v = warp_sum(v);
  if (lane == 0) warp_sums[warp] = v;
#if defined(FC_BUG_BARRIER_IN_WARP0)
  if (warp == 0) __syncthreads();
#elif defined(FC_BUG_BARRIER_TWO_SITES)
  if (warp == 0) {
    __syncthreads();
  } else {
    __syncthreads();
  }
#else
  __syncthreads();
#endif
  if (warp == 0) {
#ifdef FC_BUG_READ_UNWRITTEN_SHARED
    const int slots = warpSize;  // every lane reads a slot, written or not
#else
    const int slots = blockDim.x / warpSize;  // one per warp
#endif
    v = lane < slots ? warp_sums[lane] : T(0);
    v = warp_sum(v);
    if (lane == 0) atomicAdd(out, v);
  }
}

template <typename T>
cudaError_t launch_block_sum(const T* x, int n, T* out, int blocks, int threads,
                             cudaStream_t stream) {
#ifdef FC_BUG_1025_THREADS
  threads = 1025;
#endif
  std::size_t smem = threads / 32 * sizeof(T);
#ifdef FC_BUG_SHARED_ONE_SHORT
  smem -= sizeof(T);
#endif
#ifdef FC_BUG_READ_UNWRITTEN_SHARED
  smem = 32 * sizeof(T);  // room for every lane's read, but only `warps` slots are written
#endif
  FC_LAUNCH(blocks, threads, smem, stream, block_sum_kernel<T>)(x, n, out);
  return cudaGetLastError();
}

// Writes `value` to out[0] (and through the last of `smem_ints` ints of dynamic shared memory);
// the launch-validation checks use it to see whether a kernel ran.
__global__ void store_kernel(int* out, int value, int smem_ints) {
  FC_DYNAMIC_SHARED(int, scratch);
  if (threadIdx.x + threadIdx.y + threadIdx.z + blockIdx.x + blockIdx.y + blockIdx.z == 0) {
    if (smem_ints > 0) {
      scratch[smem_ints - 1] = value;
      value = scratch[smem_ints - 1];
    }
    out[0] = value;
  }
}

}  // namespace selftest
