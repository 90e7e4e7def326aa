// nvcc translation unit for the seeded-feedback kernels: instantiates the launchers.
#include "cuda/projection.cuh"

namespace fastcredit::cuda {

#define FC_INSTANTIATE(T)                                                                      \
  template cudaError_t launch_feedback_fill<T>(T*, int64_t, int64_t, int64_t, int64_t, uint64_t, \
                                               Dist, double, cudaStream_t);                    \
  template cudaError_t launch_seeded_project<T>(const T*, int64_t, int64_t, int64_t, int64_t,  \
                                                T*, int64_t, uint64_t, Dist, double, bool,     \
                                                cudaStream_t, unsigned);
FC_INSTANTIATE(float)
FC_INSTANTIATE(double)
#undef FC_INSTANTIATE

}  // namespace fastcredit::cuda
