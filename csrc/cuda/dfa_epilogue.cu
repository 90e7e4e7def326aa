// nvcc translation unit for the DFA backward epilogue: instantiates the launcher.
#include "cuda/dfa_epilogue.cuh"

namespace fastcredit::cuda {

#define FC_INSTANTIATE(T)                                                                      \
  template cudaError_t launch_dfa_backward_epilogue<T>(const T*, int64_t, int64_t, const T*,   \
                                                       int64_t, int64_t, int64_t, int64_t,     \
                                                       Activation, double, bool, T*, T*, T*,   \
                                                       cudaStream_t);
FC_INSTANTIATE(float)
FC_INSTANTIATE(double)
#undef FC_INSTANTIATE

}  // namespace fastcredit::cuda
