// Value conversions between a storage type and its arithmetic type, host+device. A static_cast,
// except for CUDA's __half and __nv_bfloat16 under nvcc: torch's CUDA build disables their
// implicit conversions (-D__CUDA_NO_HALF_CONVERSIONS__), so they go through the intrinsics,
// which round to nearest even like c10::Half / c10::BFloat16 on the CPU.
#pragma once

#include "macros.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace fastcredit {

template <typename To, typename From>
FC_HOST_DEVICE FC_INLINE To value_as(From v) {
  return static_cast<To>(v);
}

#if defined(__CUDACC__)
#define FC_VALUE_AS_VIA_INTRINSICS(Half, to_float, from_float)  \
  template <>                                                    \
  FC_HOST_DEVICE FC_INLINE float value_as<float, Half>(Half v) { \
    return to_float(v);                                          \
  }                                                              \
  template <>                                                    \
  FC_HOST_DEVICE FC_INLINE Half value_as<Half, float>(float v) { \
    return from_float(v);                                        \
  }
FC_VALUE_AS_VIA_INTRINSICS(__half, __half2float, __float2half_rn)
FC_VALUE_AS_VIA_INTRINSICS(__nv_bfloat16, __bfloat162float, __float2bfloat16_rn)
#undef FC_VALUE_AS_VIA_INTRINSICS
#endif

}  // namespace fastcredit
