// nvcc translation unit for the DFA backward epilogue: instantiates the launcher.
#include "cuda/dfa_epilogue.cuh"
#include "cuda/half_types.h"

namespace fastcredit::cuda {

#define FC_INSTANTIATE(T)                                                                      \
  template cudaError_t launch_dfa_backward_epilogue<T>(const T*, int64_t, int64_t, const T*,   \
                                                       int64_t, int64_t, int64_t, int64_t,     \
                                                       Activation, double, bool, T*, T*,       \
                                                       OpMath<T>*, cudaStream_t, unsigned);
FC_FOR_EACH_KERNEL_TYPE(FC_INSTANTIATE)
#undef FC_INSTANTIATE

}  // namespace fastcredit::cuda
