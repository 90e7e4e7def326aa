// nvcc translation unit for the LRA-E error-unit kernel: instantiates the launchers.
#include "cuda/lra.cuh"
#include "cuda/half_types.h"

namespace fastcredit::cuda {

#define FC_INSTANTIATE(T)                                                                      \
  template cudaError_t launch_lra_error<T>(const T*, const T*, T*, int64_t, double, Activation, \
                                           LocalError, bool, double, Surrogate,                \
                                           cudaStream_t);
FC_FOR_EACH_KERNEL_TYPE(FC_INSTANTIATE)
#undef FC_INSTANTIATE

}  // namespace fastcredit::cuda
