// nvcc translation unit for the sign-concordant feedback kernel: instantiates its launcher.
#include "cuda/sign_feedback.cuh"

namespace fastcredit::cuda {

template cudaError_t launch_sign_feedback<float>(const float*, const float*, float*, int64_t,
                                                 int64_t, Magnitude, uint64_t, Dist, double,
                                                 cudaStream_t);
template cudaError_t launch_sign_feedback<double>(const double*, const double*, double*, int64_t,
                                                  int64_t, Magnitude, uint64_t, Dist, double,
                                                  cudaStream_t);

}  // namespace fastcredit::cuda
