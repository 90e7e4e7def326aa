// The 16-bit float types of the CUDA kernels, for the translation units that instantiate or
// call them with half precision (csrc/cuda/*.cu, csrc/device_ops.h). Kept out of the kernel
// headers so that torch-free emulated builds (tests/native) need neither CUDA's headers nor
// torch's.
#pragma once

#include "cuda/launchers.h"

#if defined(FC_CUDA_EMULATION)
// The emulation replaces CUDA's headers; torch's types have the same bits and round
// float -> half to nearest even like CUDA's __float2half_rn / __float2bfloat16_rn.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace fastcredit::cuda {

#if defined(FC_CUDA_EMULATION)
using Half = c10::Half;
using BFloat16 = c10::BFloat16;
#else
using Half = __half;
using BFloat16 = __nv_bfloat16;
#endif

template <>
struct OpMathOf<Half> {
  using type = float;
};
template <>
struct OpMathOf<BFloat16> {
  using type = float;
};

// X(T) for each element type of the kernels with native half precision (inside this namespace).
#define FC_FOR_EACH_KERNEL_TYPE(X) X(float) X(double) X(Half) X(BFloat16)

}  // namespace fastcredit::cuda
