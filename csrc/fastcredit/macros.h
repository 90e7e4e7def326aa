// Portability macros shared by CPU and CUDA code. Kernels written with these compile
// unchanged under nvcc (real CUDA) and under a host compiler with the test-only emulation
// header (tests/cuda_emu/cuda_emu.h), which defines FC_CUDA_EMULATION.
#pragma once

#if defined(__CUDACC__) || defined(FC_CUDA_EMULATION)
#define FC_HOST_DEVICE __host__ __device__
#define FC_DEVICE __device__
#else
#define FC_HOST_DEVICE
#define FC_DEVICE
#endif

#if defined(__CUDACC__)
// FC_LAUNCH(grid, block, smem_bytes, stream, kernel)(args...)
#define FC_LAUNCH(grid, block, smem, stream, kernel) kernel<<<(grid), (block), (smem), (stream)>>>
// Declares the block's dynamic shared memory as `type name[]`.
#define FC_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#elif defined(FC_CUDA_EMULATION)
// Provided by the emulation header.
#endif

#if defined(__CUDA_ARCH__)
#define FC_INLINE __forceinline__
#else
#define FC_INLINE inline
#endif
