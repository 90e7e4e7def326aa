// nvcc translation unit for the sign-concordant feedback kernel: instantiates its launcher.
#include "cuda/sign_feedback.cuh"
#include "cuda/half_types.h"

namespace fastcredit::cuda {

#define FC_INSTANTIATE(T)                                                                       \
  template cudaError_t launch_sign_feedback<T>(const T*, const T*, T*, int64_t, int64_t, Magnitude, \
                                               uint64_t, Dist, double, cudaStream_t);
FC_FOR_EACH_KERNEL_TYPE(FC_INSTANTIATE)
#undef FC_INSTANTIATE

}  // namespace fastcredit::cuda
