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
template <>
FC_HOST_DEVICE FC_INLINE float value_as<float, __half>(__half v) {
  return __half2float(v);
}
template <>
FC_HOST_DEVICE FC_INLINE __half value_as<__half, float>(float v) {
  return __float2half_rn(v);
}
template <>
FC_HOST_DEVICE FC_INLINE float value_as<float, __nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <>
FC_HOST_DEVICE FC_INLINE __nv_bfloat16 value_as<__nv_bfloat16, float>(float v) {
  return __float2bfloat16_rn(v);
}
#endif

}  // namespace fastcredit
